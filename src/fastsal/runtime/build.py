"""Building runners: a model in memory (:func:`make_runner`, :func:`build_runner` with its
fallbacks) or a file from ``fastsal export`` (:func:`load_runner`).

The path from ``fastsal.load`` to a ready runner is linear: :mod:`fastsal.predict` -> here ->
(:mod:`~fastsal.runtime.engines` for the choice, :mod:`~fastsal.runtime.cache` for the model file,
which asks :mod:`fastsal.export` to write it when missing, then the engine's runner in
:mod:`~fastsal.runtime.runners` or :mod:`~fastsal.runtime.openvino`).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fastsal import defaults
from fastsal.errors import FastSalError, first_line
from fastsal.export import read_sidecar, sidecar_path
from fastsal.files import file_lock
from fastsal.models.fastsal import network_size
from fastsal.runtime import cache
from fastsal.runtime.cache import CacheError
from fastsal.runtime.engines import (
    AUTO,
    ENGINE_PRECISIONS,
    ENGINES,
    EXTRAS,
    PACKAGES,
    EngineError,
    EngineNotice,
    candidates,
    installed,
    size_pair,
)
from fastsal.runtime.openvino import OpenVINORunner
from fastsal.runtime.runners import (
    GraphRunner,
    OnnxRuntimeRunner,
    Runner,
    StaticBatch,
    TorchRunner,
    TorchScriptRunner,
    check_graph,
    reference_logits,
)

#: Which engines run each export format, the first where it is installed by default.
ENGINES_FOR_FORMAT = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",), "torchscript": ("torch",)}
# Graph files checked against their weights in this process: (path, file SHA-256s).
_VERIFIED: set[tuple[str, tuple[str, ...]]] = set()


def default_calibration_images() -> list[Path]:
    """The int8 calibration set shipped with the package: the first 100 OSIE ``train`` images,
    reduced to 192x256 (MIT licence, ``assets/LICENSE-OSIE.txt``). The same images the
    README's int8 figures were calibrated on; pass your own for another domain."""
    folder = Path(__file__).resolve().parent.parent / "assets" / "calibration"
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        raise EngineError(f"{folder}: the int8 calibration images are missing; reinstall fastsal")
    return paths


def make_runner(
    model: nn.Module,
    engine: str,
    input_size: Sequence[int] = defaults.INPUT_SIZE,
    precision: str = defaults.PRECISION,
    *,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    fused: nn.Module | None = None,
    calibration_images: Sequence[str | Path] | None = None,
    folder: str | Path | None = None,
) -> Runner:
    """``model`` (a FastSal model as trained) on ``engine`` at ``precision``.

    Graph engines convert the model into ``folder`` (default: the cache, see the module
    docstring) unless a file for these weights, size and precision is already there. int8
    calibrates on ``calibration_images`` (default: :func:`default_calibration_images`).
    ``fused``: the model's fused rewrite, if the caller has one (the torch engine runs it).
    """
    size = size_pair(input_size)
    if engine == "torch":
        return TorchRunner(model, size, precision, device=device, fused=fused)
    if engine not in ENGINES:
        raise EngineError(f"unknown backend {engine!r}; choose one of: {', '.join(ENGINES)}")
    if precision not in ENGINE_PRECISIONS[engine]:
        raise EngineError(f"backend {engine!r} has no {precision} mode")
    if torch.device(device).type != "cpu":
        raise EngineError(f"backend {engine!r} runs on the CPU only; use {{option}} torch for device {device}",
                          option="backend")
    graph = network_size(size)
    if folder is not None:
        return _graph_runner(model, engine, size, graph, precision, threads, calibration_images, Path(folder), None)
    with cache.artefact_folder() as (where, blobs):
        return _graph_runner(model, engine, size, graph, precision, threads, calibration_images, where, blobs)


def _graph_runner(model: nn.Module, engine: str, size: tuple[int, int], graph: tuple[int, int], precision: str,
                  threads: int | None, calibration: Sequence[str | Path] | None, folder: Path,
                  blobs: Path | None) -> Runner:
    """The runner for a graph from the cache; a graph that does not reproduce ``model`` on a probe
    (:func:`check_graph`) is deleted and converted again once."""
    name = getattr(model, "name", type(model).__name__)
    reference = reference_logits(model)
    if precision == "int8" and calibration is None:
        calibration = default_calibration_images()
    for attempt in range(2):
        path = cache.cached_model_file(model, name, folder, engine, graph, precision, calibration)
        # Read under a shared lock: an exporter replacing a damaged file holds it exclusively, so the
        # engine reads one whole export (never an .xml from one and a .bin from another).
        with file_lock(cache.lock_path(path), shared=True):
            runner: OnnxRuntimeRunner | OpenVINORunner
            side = read_sidecar(path, verify=False)
            key = (str(path), (side["file_sha256"], *sorted((side.get("extra_files") or {}).values())))
            try:
                if engine == "onnxruntime":
                    runner = OnnxRuntimeRunner(path, size, graph, precision, threads=threads)
                else:
                    runner = OpenVINORunner(path, size, graph, precision, threads=threads, cache_dir=blobs,
                                            reference=reference)
                ok = key in _VERIFIED or check_graph(
                    runner.compile_batch(1) if isinstance(runner, OpenVINORunner) else runner.session,
                    1, graph, precision, reference)
            except EngineError:
                if attempt or key in _VERIFIED:  # made just now, or checked before: not the file's fault
                    raise
                ok = False  # a cached file the engine cannot read: convert it again
        if ok:
            _VERIFIED.add(key)
            if blobs is not None:
                cache.prune(folder, keep=path)
            return runner
        cache.discard_export(path)
        if attempt == 0:
            warnings.warn(f"cached model {path} did not reproduce the weights' output (changed after it was "
                          f"written?); converted it again", EngineNotice, stacklevel=5)
    raise EngineError(f"{path}: the converted model does not reproduce the weights' output; "
                      "try {option} torch and report this", option="backend")


def build_runner(
    model: nn.Module,
    backend: str = AUTO,
    input_size: Sequence[int] = defaults.INPUT_SIZE,
    precision: str = defaults.PRECISION,
    *,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    fused: nn.Module | None = None,
    calibration_images: Sequence[str | Path] | None = None,
) -> tuple[Runner, list[str]]:
    """(a working runner, notes) for ``backend`` (``auto`` or an engine name) at ``precision``.

    Each candidate engine (:func:`candidates`) is built and run once on a zero batch; when one
    fails, the next is tried and a note names the engine, the cause and the fix. Only when the
    last candidate fails too is its error raised.
    """
    engines, notes = candidates(backend, precision, device)
    size = size_pair(input_size)
    for i, engine in enumerate(engines):
        try:
            runner = make_runner(model, engine, size, precision, threads=threads, device=device, fused=fused,
                                 calibration_images=calibration_images)
            runner(np.zeros((1, 3, *size), np.float32))  # compile and run now: errors surface at load
            return runner, notes
        except CacheError:  # the same folder for every engine: say so, not the next engine's fallback
            raise
        except (FastSalError, ImportError, RuntimeError, OSError) as exc:
            if i + 1 == len(engines):
                raise
            nxt = engines[i + 1]
            notes.append(f"{engine} could not prepare the model ({first_line(exc)[:200]}); using {nxt} instead "
                         f"({_fix_for(engine, exc)})")
    raise AssertionError("unreachable")  # candidates() never returns an empty list


def _fix_for(engine: str, exc: BaseException) -> str:
    text = str(exc)
    if "pip install" in text:
        return "install what the message names"
    if isinstance(exc, ImportError):
        return f"pip install 'fastsal[{EXTRAS.get(engine, engine)}]'"
    if isinstance(exc, OSError):
        return f"check that {cache.cache_dir()} is writable, or set FASTSAL_CACHE_DIR"
    return f"pass --backend {engine} to see the full error, or upgrade {PACKAGES[engine]}"


# -- exported files -------------------------------------------------------------------------------
def load_runner(path: str | Path, backend: str | None = None, precision: str | None = None, *,
                threads: int | None = None, input_size: Sequence[int] | None = None) -> StaticBatch:
    """A runner for a file written by :func:`fastsal.export.export` (``.onnx``, OpenVINO ``.xml``,
    TorchScript ``.pt``), checked against its sidecar; the runner's ``sidecar`` holds the metadata.

    ONNX files run on ONNX Runtime (default) or OpenVINO, IR files on OpenVINO, TorchScript on
    torch. ``precision`` defaults to the file's (fp32 or int8); bf16 may be asked of a float file
    on OpenVINO. ``input_size`` defaults to the exported size; another one is resized around a
    fixed-size graph, and fed as it is (to a multiple of 32) to a free-size one (``dynamic_size``).
    """
    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix("")
    side = read_sidecar(path)
    model_file = sidecar_path(path).with_name(side["file"])
    kind = side["export_format"]
    allowed = ENGINES_FOR_FORMAT[kind]
    if backend in (None, AUTO):
        backend = next((b for b in allowed if installed(b)), allowed[0])
    if backend not in allowed:
        raise EngineError(f"{model_file}: a {kind} export runs on {' or '.join(allowed)}, not {backend!r}")
    file_precision = side["precision"]
    precision = precision or file_precision
    if (file_precision == "int8") != (precision == "int8"):
        raise EngineError(f"{model_file}: this file is {file_precision}; it cannot run at {precision} "
                           f"(export another with fastsal export{' --int8' if precision == 'int8' else ''})")
    size = size_pair(input_size) if input_size is not None else tuple(side["input_size"])
    if side["dynamic_size"]:  # free H and W: run each size as it is (multiples of 32), as the checkpoint does
        graph = network_size(size)
    else:
        graph = tuple(side["input_size"])
    inner: GraphRunner
    if backend == "onnxruntime":
        if precision == "bf16":
            raise EngineError("backend 'onnxruntime' has no bf16 mode; use {option} openvino", option="backend")
        inner = OnnxRuntimeRunner(model_file, size, graph, precision, threads=threads)
    elif backend == "openvino":
        inner = OpenVINORunner(model_file, size, graph, precision, threads=threads)
    else:
        inner = TorchScriptRunner(model_file, size, graph, precision, threads=threads)
    return StaticBatch(inner, side)



__all__ = ["build_runner", "default_calibration_images", "load_runner", "make_runner"]
