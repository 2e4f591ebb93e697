"""Where the network runs: one :class:`Runner` protocol, three engines (OpenVINO, ONNX Runtime,
PyTorch), three precisions (fp32, bf16, int8).

A runner is called on an (N, 3, H, W) float32 RGB batch in [0, 1] at its ``input_size`` and
returns (N, 1, H, W) float32 saliency logits; it names its ``backend`` (the engine) and its
``precision``. Everything above it (pre- and post-processing in :mod:`fastsal.predict`, folders in
:mod:`fastsal.batch`, video, the cost table and the benchmarks) is the same for every engine.

**The numerical contract.** By default every engine computes in fp32 and reproduces PyTorch's
maps within :data:`fastsal.defaults.FP32_MAP_RTOL` of the peak on every x86 CPU. This has to be
asked for: OpenVINO computes in bfloat16 by default on CPUs with AVX512_BF16 or AMX, which moves
the maps by 2-5 % of the peak, so it is compiled with ``INFERENCE_PRECISION_HINT=f32`` and the
compiled model's hint is checked. ONNX Runtime's CPU provider computes in fp32 unless a graph is
quantised. Reduced precision is a choice (``precision="bf16"`` or ``"int8"``) with a measured cost
(README): bf16 runs on OpenVINO and PyTorch where the CPU has native bf16 (refused elsewhere,
where it would only be emulated); int8 runs on OpenVINO as NNCF quantised it
(:mod:`fastsal.quantize`, in the ``[openvino]`` extra), and on ONNX Runtime as the calibrated QDQ
graph of :mod:`fastsal.export` (``[onnx]``).

**Choosing an engine.** ``auto`` takes the fastest installed engine that offers the precision
(OpenVINO, then ONNX Runtime, then PyTorch); when one cannot prepare the model (a missing package,
a conversion or compile failure) the next one is tried and a one-line note says why and what would
fix it. A named engine that is not installed falls back the same way. Devices other than the CPU
run on PyTorch.

**The cache** (:mod:`fastsal.cache`: where, who may write it, size limit). Graph engines need
the model as a file: OpenVINO IR converted straight from the PyTorch module (no ``onnx`` package
needed), ONNX for ONNX Runtime and for int8
(OpenVINO's int8 is the IR quantised by NNCF, :mod:`fastsal.quantize`, unless only the
``onnxruntime`` recipe is installed). Files are made once per weights (SHA-256 of the
state_dict), fastsal version and precision, with free spatial dimensions, so every input size
uses the same file (one conversion, not one per image shape); written atomically and kept in
``$FASTSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastsal``, else ``~/.cache/fastsal`` (safe to
delete: ``fastsal cache clear``); OpenVINO's compiled models, one per input shape and batch size
(static shapes compile to faster kernels, in a fraction of a second), are kept in its
``openvino/`` folder, each checked against its SHA-256 before use (:class:`_BlobCache`). Before a
cached graph is used, its output on a probe is compared with PyTorch's on the weights in memory
(:func:`_check_graph`): a graph that does not come from these weights is rebuilt. Several
processes may share the cache (e.g. ``fastsal predict --shard i/N`` started together): lock files
beside the artefacts make them take turns, so one converts or compiles and the others reuse its
files. An unwritable cache falls back to a temporary folder, with a notice.
"""
# size-exception: issue 21 splits this module (runtime/ and cli/ packages)
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastsal import defaults
from fastsal.cache import CacheError, cache_dir, prune, touch, writable_cache
from fastsal.cpu import cpu_features, cpu_flags, cpu_name, supports_bf16
from fastsal.errors import FastSalError
from fastsal.files import atomic_write_bytes, file_lock, file_sha256, remove_stale_temporaries, write_json
from fastsal.quantize import openvino_recipe

ENGINES: tuple[str, ...] = defaults.ENGINES
BACKENDS = ENGINES  # the name earlier releases used
AUTO = defaults.AUTO
PRECISIONS: tuple[str, ...] = defaults.PRECISIONS

#: Which precisions each engine offers.
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = defaults.ENGINE_PRECISIONS
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "torch"}
_EXTRAS = {"openvino": "openvino", "onnxruntime": "onnx"}
# OpenVINO's name for each precision's INFERENCE_PRECISION_HINT (int8 graphs keep their float
# parts in f32: the QDQ nodes decide what is int8, nothing else may be reduced)
_OV_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


class BackendError(FastSalError, ValueError):
    """An engine, precision or device that cannot be used here; the message says what to use instead."""


class BackendNotice(UserWarning):
    """Another engine than the one asked for is used (not installed, or it could not prepare the model)."""


@runtime_checkable
class Runner(Protocol):
    """The network on one engine: ``runner(batch) -> logits``.

    ``batch``: (N, 3, H, W) float32 RGB in [0, 1] with (H, W) = ``input_size``; returns (N, 1, H, W)
    float32 logits (density = softmax over the H*W pixels). Not for concurrent calls from several
    threads.
    """

    backend: str
    precision: str
    input_size: tuple[int, int]

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


# -- engines and precisions -------------------------------------------------------------------
def installed(engine: str) -> bool:
    """Whether ``engine``'s runtime package can be imported (without importing it)."""
    return importlib.util.find_spec(_PACKAGES[engine]) is not None


def check_precision(precision: str) -> str:
    """``precision`` if this CPU can run it, else :class:`BackendError` saying what to use."""
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and not supports_bf16():
        have = ", ".join(cpu_features()) or "no AVX"
        raise BackendError(f"precision 'bf16' needs a CPU with AVX512_BF16 or AMX (this one has: {have}); "
                           f"use --precision int8 for speed or fp32")
    return precision


def candidates(requested: str = AUTO, precision: str = defaults.PRECISION,
               device: str | torch.device = "cpu") -> tuple[list[str], list[str]]:
    """(engines to try in order, notes) for a request of ``auto`` or an engine name.

    ``auto``: the installed engines offering ``precision``, fastest first. A named engine that is
    not installed is followed by the installed ones after it (with a note naming the extra to
    install); one that lacks the precision is an error. Non-CPU devices: PyTorch only.
    """
    if requested != AUTO and requested not in ENGINES:
        raise BackendError(f"unknown backend {requested!r}; choose one of: {AUTO}, {', '.join(ENGINES)}")
    check_device(device)
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if torch.device(device).type != "cpu":
        if requested not in (AUTO, "torch"):
            raise BackendError(f"backend {requested!r} runs on the CPU only; use --backend torch for device {device}")
        if precision == "int8":
            raise BackendError(f"precision 'int8' runs on the CPU engines only; use fp32 or bf16 on device {device}")
        return ["torch"], []
    check_precision(precision)
    offering = [e for e in ENGINES if precision in ENGINE_PRECISIONS[e]]
    if requested == AUTO:
        found = [e for e in offering if installed(e)]
        if not found:
            raise BackendError(f"no installed engine runs precision {precision!r}: pip install 'fastsal[openvino]'")
        return found, []
    if precision not in ENGINE_PRECISIONS[requested]:
        raise BackendError(f"backend {requested!r} has no {precision} mode; use --backend "
                           f"{' or '.join(offering)} for {precision}")
    if installed(requested):
        return [requested], []
    rest = [e for e in offering[offering.index(requested) + 1:] if installed(e)]
    if not rest:
        raise BackendError(f"backend {requested!r} is not installed and no other engine runs {precision}: "
                           f"pip install 'fastsal[{_EXTRAS[requested]}]'")
    return rest, [f"backend {requested!r} is not installed; using {rest[0]!r} instead "
                  f"(pip install 'fastsal[{_EXTRAS[requested]}]')"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device if it exists here, else :class:`BackendError` in one line."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise BackendError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device {str(device)!r}: no CUDA GPU is available to this PyTorch build; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackendError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s); "
                               f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise BackendError(f"device {str(device)!r} is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise BackendError(f"device {str(device)!r} is not supported; use cpu or cuda")
    return dev


# -- the cache ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _artefact_folder() -> Iterator[tuple[Path, Path | None]]:
    """(folder for model files, folder for OpenVINO's compiled models or None) for one build."""
    folder = writable_cache()
    if folder is not None:
        for where in (folder, folder / "openvino"):  # leftovers of killed conversions (ours, over an hour old)
            remove_stale_temporaries(where)
        yield folder, folder / "openvino"
        return
    warnings.warn(f"cache folder {cache_dir()} is not writable (set FASTSAL_CACHE_DIR); "
                  "converting the model in a temporary folder on every load", BackendNotice, stacklevel=4)
    # the engines hold the model in memory once built, so the folder may go
    with tempfile.TemporaryDirectory(prefix="fastsal-") as tmp:
        yield Path(tmp), None


# -- runners --------------------------------------------------------------------------------------
def _check_batch(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != tuple(size):
        h, w = size
        raise BackendError(f"the network expects an (N, 3, {h}, {w}) float32 batch; got shape {tuple(np.shape(batch))}")
    # Here, before any engine, so all refuse alike: OpenVINO turned an all-NaN batch into finite,
    # plausible logits where ONNX Runtime and PyTorch gave NaN.
    if not np.isfinite(x).all():
        raise BackendError(f"the network's input batch (shape {x.shape}) contains NaN or inf values; "
                           "pass finite values in [0, 1]")
    return x


class TorchRunner:
    """The model on PyTorch (CPU or GPU): the exactly equivalent fused rewrite
    (:func:`fastsal.models.fuse.fuse`: batch norm folded, FastSal-C's head reduced before
    upsampling; ~10x faster for C), in fp32 or, where the hardware has it, under bf16 autocast."""

    backend = "torch"

    def __init__(self, model: nn.Module, input_size: Sequence[int] = defaults.INPUT_SIZE, precision: str = "fp32",
                 *, device: str | torch.device = "cpu", fused: nn.Module | None = None, fuse_model: bool = True) -> None:
        from fastsal.models.fuse import fuse

        if precision not in ENGINE_PRECISIONS["torch"]:
            raise BackendError(f"backend 'torch' has no {precision} mode; use --backend openvino or onnxruntime")
        self.device = check_device(device)
        if precision == "bf16" and self.device.type == "cpu":
            check_precision(precision)
        self.precision = precision
        self.input_size = _size_pair(input_size)
        net = fused if fused is not None else (fuse(model.eval()) if fuse_model else model.eval())
        self.net = net.to(self.device)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(_check_batch(batch, self.input_size)).to(self.device)
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.net(x).float().cpu().numpy()

    def __repr__(self) -> str:
        return f"TorchRunner({self.precision}, {self.input_size[0]}x{self.input_size[1]}, {self.device})"


class GraphRunner:
    """Shared part of the file-based engines: the graph has a fixed spatial size (multiples of
    32); other input sizes are resized on the way in and out exactly as
    :class:`~fastsal.models.FastSal` does internally, so every engine gives the same map."""

    backend = ""

    def __init__(self, input_size: Sequence[int], graph_size: Sequence[int], precision: str) -> None:
        self.input_size = _size_pair(input_size)
        self.graph_size = _size_pair(graph_size)
        self.precision = precision

    def run_graph(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, self.input_size)
        if self.graph_size == self.input_size:
            return self.run_graph(x)
        t = F.interpolate(torch.from_numpy(x), size=self.graph_size, mode="bilinear", align_corners=False,
                          antialias=True)
        y = torch.from_numpy(self.run_graph(np.ascontiguousarray(t.numpy())))
        return F.interpolate(y, size=self.input_size, mode="bilinear", align_corners=False).numpy()

    def __repr__(self) -> str:
        h, w = self.input_size
        return f"{type(self).__name__}({self.precision}, {h}x{w})"


class OnnxRuntimeRunner(GraphRunner):
    """An ONNX file on ONNX Runtime's CPU provider (fp32, or int8 for a quantised QDQ graph)."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, input_size: Sequence[int], graph_size: Sequence[int] | None = None,
                 precision: str = "fp32", *, threads: int | None = None) -> None:
        super().__init__(input_size, graph_size or input_size, precision)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("backend 'onnxruntime' needs onnxruntime: pip install 'fastsal[onnx]'") from None
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise BackendError(f"{path}: ONNX Runtime cannot load this model ({_first_line(exc)})") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: x})[0]


class OpenVINORunner(GraphRunner):
    """An OpenVINO IR (``.xml``) or ONNX file on OpenVINO's CPU plugin.

    Compiled with the latency hint, ``threads`` inference threads and the precision hint of
    ``precision`` (f32 unless bf16 is asked for; checked after compiling or importing).
    Dynamic-batch graphs are compiled once per batch size met: static shapes compile to faster
    kernels. ``cache_dir`` keeps the compiled models there (see :class:`_BlobCache`), so later
    loads import instead of compiling. ``compiled`` maps a batch size to (infer request, output);
    ``imported`` holds the batch sizes that came from the blob cache.
    """

    backend = "openvino"

    def __init__(self, path: str | Path, input_size: Sequence[int], graph_size: Sequence[int] | None = None,
                 precision: str = "fp32", *, threads: int | None = None, cache_dir: str | Path | None = None,
                 reference: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__(input_size, graph_size or input_size, precision)
        self.reference = reference
        try:
            import openvino as ov
        except ImportError:
            raise BackendError("backend 'openvino' needs openvino: pip install 'fastsal[openvino]'") from None
        if precision == "bf16":
            check_precision(precision)
        self.path = Path(path)
        self.core = ov.Core()
        # The whole config goes to compile_model and import_model alike: OpenVINO applies the
        # precision hint at import too, and an import without it runs in bf16 on BF16 CPUs.
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": _OV_HINT[precision]}
        if threads is not None:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.model = self.core.read_model(str(self.path))
        except RuntimeError as exc:
            raise BackendError(f"{path}: OpenVINO cannot read this model ({_first_line(exc)})") from None
        self.blobs = (_BlobCache(Path(cache_dir), self.path, self.config, ov.__version__, self.graph_size)
                      if cache_dir is not None else None)
        self.compiled: dict[int, tuple[Any, Any]] = {}
        self.imported: set[int] = set()
        self._compile(1)  # errors surface here, not at the first call

    def _compile(self, n: int) -> tuple[Any, Any]:
        """The model at batch ``n``: imported from the blob cache when a valid blob is there, else
        compiled (and the blob published for the next load)."""
        if self.blobs is None:
            compiled = self._compile_now(n)
        else:
            with self.blobs.locked(n):
                compiled = self.blobs.load(n, self.core, self.config, self._precision_ok)
                if compiled is not None and self.reference is not None \
                        and not _check_graph(compiled, n, self.graph_size, self.precision, self.reference):
                    self.blobs.discard(n)
                    warnings.warn(f"cached compiled model {self.blobs.path(n)} did not reproduce the weights' "
                                  f"output (changed after it was written?); rebuilt it", BackendNotice, stacklevel=5)
                    compiled = None
                if compiled is not None:
                    self.imported.add(n)
                else:
                    compiled = self._compile_now(n)
                    self.blobs.publish(n, compiled, self._hint_of(compiled))
        self.compiled[n] = (compiled.create_infer_request(), compiled.output(0))
        return self.compiled[n]

    def _compile_now(self, n: int) -> Any:
        model = self.model
        shape = model.input(0).get_partial_shape()
        if shape.is_dynamic:  # free batch and/or spatial dimensions: compile this one shape
            model = model.clone()
            fixed = (n, 3, *self.graph_size)
            for i in range(4):
                if shape[i].is_dynamic:
                    shape[i] = fixed[i]
            model.reshape({model.input(0): shape})
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except RuntimeError as exc:
            raise BackendError(f"{self.path}: OpenVINO cannot compile this model ({_first_line(exc)})") from None
        if not self._precision_ok(self._hint_of(compiled)):
            raise BackendError(f"{self.path}: OpenVINO compiled in {self._hint_of(compiled)} instead of "
                               f"{self.config['INFERENCE_PRECISION_HINT']}; use --backend onnxruntime or torch for exact maps")
        return compiled

    @staticmethod
    def _hint_of(compiled: Any) -> str:
        return str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()

    def _precision_ok(self, got: str) -> bool:
        want = self.config["INFERENCE_PRECISION_HINT"]
        return want in got or (want == "f32" and "float32" in got) or (want == "bf16" and "bfloat16" in got)

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        request, output = self.compiled.get(n) or self._compile(n)
        return request.infer({0: x})[output]  # share_outputs=False (default): a fresh array per call


_BLOB_FORMAT = "fastsal-openvino-blob/1"


class _BlobCache:
    """Compiled OpenVINO models kept as ``<folder>/<key>.blob`` + ``<key>.blob.json``.

    Why not OpenVINO's own ``CACHE_DIR``: it is not safe across processes (three ``--shard``
    runs on an empty cache failed with "cannot set permissions: No such file or directory
    [...blob]", once with a Bus error) and it imports a blob damaged in the middle without a check
    (wrong maps, exit 0). Here:

    - the key is a SHA-256 over everything the compiled code depends on: the model files'
      SHA-256, the batch size, the whole compile config (precision hint and threads included),
      the OpenVINO version and the CPU (name and feature flags);
    - the sidecar records the blob's SHA-256 and size, the key's inputs and the precision the
      compiled model reported; a blob is imported only when all of them match, otherwise it is
      rebuilt (a damaged blob with a one-line :class:`BackendNotice`);
    - blob and sidecar are written atomically (temporary, fsync, rename) under an exclusive lock
      on ``<key>.blob.lock``, and read under it: processes compiling the same batch size take
      turns, the later ones import what the first published;
    - anything that goes wrong with the cache (unreadable, import error, full disk) falls back to
      compiling: the cache can only save time, never fail a load.
    """

    def __init__(self, folder: Path, model_path: Path, config: dict[str, Any], openvino_version: str,
                 graph_size: Sequence[int] = (0, 0)) -> None:
        from fastsal._version import __version__

        self.folder = folder
        model_files = [model_path] + ([model_path.with_suffix(".bin")] if model_path.suffix == ".xml" else [])
        self.inputs: dict[str, Any] = {
            "model_sha256": [file_sha256(f) for f in model_files],
            "input_hw": [int(v) for v in graph_size],
            "fastsal_version": __version__,
            "config": {k: (v if isinstance(v, (int, float, bool)) else str(v)) for k, v in sorted(config.items())},
            "device": "CPU",
            "openvino_version": str(openvino_version),
            "cpu": {"name": cpu_name(), "features": cpu_features(), "flags_sha256": _flags_digest(cpu_flags())},
        }

    def key(self, n: int) -> dict[str, Any]:
        """The key's inputs for batch ``n`` (what the sidecar records)."""
        return {**self.inputs, "batch": int(n)}

    def path(self, n: int) -> Path:
        digest = hashlib.sha256(json.dumps(self.key(n), sort_keys=True).encode()).hexdigest()
        return self.folder / f"{digest[:32]}.blob"

    @contextlib.contextmanager
    def locked(self, n: int) -> Iterator[None]:
        """Exclusive use of batch ``n``'s blob: one process imports or compiles-and-publishes at a time."""
        blob = self.path(n)
        try:
            blob.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # publish will fail quietly and the model is compiled every time
        with file_lock(blob.with_name(blob.name + ".lock")):
            yield

    def load(self, n: int, core: Any, config: dict[str, Any], precision_ok: Callable[[str], bool]) -> Any | None:
        """The compiled model from batch ``n``'s blob, or None to compile (missing, stale, damaged,
        or not importable; a damaged blob is deleted and reported)."""
        blob = self.path(n)
        side = self._sidecar(blob, n)
        if side is None:
            return None
        try:
            data = blob.read_bytes()
        except OSError:
            return None
        if len(data) != side["size"] or hashlib.sha256(data).hexdigest() != side["sha256"]:
            self.discard(n)
            warnings.warn(f"cached compiled model {blob} was damaged; rebuilt it", BackendNotice, stacklevel=6)
            return None
        try:
            compiled = core.import_model(data, "CPU", config)
        except Exception:  # noqa: BLE001 - whatever OpenVINO raises, compiling again is the answer
            self.discard(n)
            return None
        hint = OpenVINORunner._hint_of(compiled)
        if not precision_ok(hint) or hint != side["precision_hint"]:
            self.discard(n)
            return None
        touch(blob)
        return compiled

    def publish(self, n: int, compiled: Any, hint: str) -> None:
        """Write batch ``n``'s blob and then its sidecar (each atomically); a failure only costs the
        next load a compile, so it is reported once as a notice, never raised."""

        blob = self.path(n)
        try:
            data = compiled.export_model()
            data = data.getvalue() if hasattr(data, "getvalue") else bytes(data)
            atomic_write_bytes(blob, data)
            write_json({"format": _BLOB_FORMAT, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                        "batch": int(n), "precision_hint": hint, "key": self.key(n)},
                       blob.with_name(blob.name + ".json"))
            prune(self.folder.parent, keep=blob)
        except (OSError, RuntimeError) as exc:
            warnings.warn(f"could not save the compiled model to {blob} ({_first_line(exc)}); "
                          f"later loads will compile again (check that {self.folder} is writable)",
                          BackendNotice, stacklevel=6)

    def _sidecar(self, blob: Path, n: int) -> dict[str, Any] | None:
        """The sidecar of ``blob`` if it is ours, whole and for exactly this key; else None."""
        try:
            side = json.loads(blob.with_name(blob.name + ".json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not (isinstance(side, dict) and side.get("format") == _BLOB_FORMAT and side.get("key") == self.key(n)
                and isinstance(side.get("sha256"), str) and isinstance(side.get("size"), int)
                and isinstance(side.get("precision_hint"), str)):
            return None
        return side

    def discard(self, n: int) -> None:
        """Delete batch ``n``'s blob and sidecar (the caller holds its lock)."""
        blob = self.path(n)
        for f in (blob, blob.with_name(blob.name + ".json")):
            with contextlib.suppress(OSError):
                f.unlink()


def _flags_digest(flags: frozenset[str]) -> str:
    return hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16]


# -- building runners for a model ------------------------------------------------------------------
def default_calibration_images() -> list[Path]:
    """The int8 calibration set shipped with the package: the first 100 OSIE ``train`` images,
    reduced to 192x256 (MIT licence, ``assets/LICENSE-OSIE.txt``). The same images the
    README's int8 figures were calibrated on; pass your own for another domain."""
    folder = Path(__file__).resolve().parent / "assets" / "calibration"
    paths = sorted(folder.glob("*.jpg"))
    if not paths:
        raise BackendError(f"{folder}: the int8 calibration images are missing; reinstall fastsal")
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
    from fastsal.models.fastsal import network_size

    size = _size_pair(input_size)
    if engine == "torch":
        return TorchRunner(model, size, precision, device=device, fused=fused)
    if engine not in ENGINES:
        raise BackendError(f"unknown backend {engine!r}; choose one of: {', '.join(ENGINES)}")
    if precision not in ENGINE_PRECISIONS[engine]:
        raise BackendError(f"backend {engine!r} has no {precision} mode")
    if torch.device(device).type != "cpu":
        raise BackendError(f"backend {engine!r} runs on the CPU only; use --backend torch for device {device}")
    graph = network_size(size)
    if folder is not None:
        return _graph_runner(model, engine, size, graph, precision, threads, calibration_images, Path(folder), None)
    with _artefact_folder() as (where, blobs):
        return _graph_runner(model, engine, size, graph, precision, threads, calibration_images, where, blobs)


def _graph_runner(model: nn.Module, engine: str, size: tuple[int, int], graph: tuple[int, int], precision: str,
                  threads: int | None, calibration: Sequence[str | Path] | None, folder: Path,
                  blobs: Path | None) -> Runner:
    """The runner for a graph from the cache; a graph that does not reproduce ``model`` on a probe
    (:func:`_check_graph`) is deleted and converted again once."""
    from fastsal import export as E

    name = getattr(model, "name", type(model).__name__)
    reference = _reference(model)
    for attempt in range(2):
        if precision == "int8":  # calibrated at the shipped calibration images' size, whatever the input size
            calibration = list(calibration) if calibration is not None else default_calibration_images()
            if engine == "openvino" and openvino_recipe() == "nncf":  # fastsal.quantize
                path = E.cached_int8_ir(model, name, folder, defaults.INPUT_SIZE, calibration)
            else:
                path = E.cached_export(model, name, folder, defaults.INPUT_SIZE, int8=True,
                                       calibration_images=calibration)
        elif engine == "openvino":
            path = E.cached_openvino_ir(model, name, folder, graph)
        else:
            path = E.cached_export(model, name, folder, graph)
        # Read under a shared lock: an exporter replacing a damaged file holds it exclusively, so the
        # engine reads one whole export (never an .xml from one and a .bin from another).
        with file_lock(E.lock_path(path), shared=True):
            runner: OnnxRuntimeRunner | OpenVINORunner
            side = E.read_sidecar(path, verify=False)
            key = (str(path), (side["file_sha256"], *sorted((side.get("extra_files") or {}).values())))
            try:
                if engine == "onnxruntime":
                    runner = OnnxRuntimeRunner(path, size, graph, precision, threads=threads)
                else:
                    runner = OpenVINORunner(path, size, graph, precision, threads=threads, cache_dir=blobs,
                                            reference=reference)
                ok = key in _VERIFIED or _check_graph(
                    runner._compile_now(1) if isinstance(runner, OpenVINORunner) else runner.session,
                    1, graph, precision, reference)
            except BackendError:
                if attempt or key in _VERIFIED:  # made just now, or checked before: not the file's fault
                    raise
                ok = False  # a cached file the engine cannot read: convert it again
        if ok:
            _VERIFIED.add(key)
            if blobs is not None:
                prune(folder, keep=path)
            return runner
        _discard_export(path)
        if attempt == 0:
            warnings.warn(f"cached model {path} did not reproduce the weights' output (changed after it was "
                          f"written?); converted it again", BackendNotice, stacklevel=5)
    raise BackendError(f"{path}: the converted model does not reproduce the weights' output; "
                       f"try --backend torch and report this")


# Graph files checked against their weights in this process: (path, file SHA-256s).
_VERIFIED: set[tuple[str, tuple[str, ...]]] = set()
# How far a graph's logits on the probe may be from PyTorch's, as a share of their range: fp32 agrees
# to ~1e-6 everywhere. Reduced precision is checked loosely, for a different or damaged graph, not its
# rounding: on average within 5 % of the range and correlated >= 0.95 (measured with the default model
# on an AVX-512 VNNI CPU: int8 mean 1.6 %, max 9.3 %, correlation 0.996; bf16 mean 0.3 %, 0.9998).
_PROBE_RTOL = 1e-3
_PROBE_MEAN_RTOL, _PROBE_MIN_CORR = 0.05, 0.95


def _reference(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch's logits for a probe batch at a graph size (a multiple of 32, where the model's own
    resize is the identity), memoised per shape."""
    memo: dict[tuple[int, ...], np.ndarray] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in memo:
            training = model.training
            try:
                with torch.inference_mode():
                    memo[x.shape] = model.eval()(torch.from_numpy(x)).float().numpy()
            finally:
                model.train(training)
        return memo[x.shape]

    return run


def _check_graph(compiled: Any, n: int, graph: Sequence[int], precision: str,
                 reference: Callable[[np.ndarray], np.ndarray]) -> bool:
    """Whether a compiled OpenVINO model or an ONNX Runtime session gives ``reference``'s logits on
    a fixed probe at batch ``n``: what binds a cached graph to the weights in memory (a graph file
    and its sidecar can be changed together; the weights the user loaded cannot)."""
    probe = np.random.default_rng(0).random((1, 3, *graph), dtype=np.float32)
    want = reference(probe)
    batch = np.ascontiguousarray(np.repeat(probe, n, axis=0))
    if hasattr(compiled, "create_infer_request"):
        got = compiled.create_infer_request().infer({0: batch})[compiled.output(0)]
    else:
        got = compiled.run(None, {compiled.get_inputs()[0].name: batch})[0]
    if got.shape != (n, *want.shape[1:]) or not np.isfinite(got).all():
        return False
    spread = float(want.max() - want.min()) or 1.0
    err = np.abs(got - want)
    if precision == "fp32":
        return bool(err.max() <= _PROBE_RTOL * spread)
    corr = np.corrcoef(got[:1].ravel(), want.ravel())[0, 1]
    return bool(err.mean() <= _PROBE_MEAN_RTOL * spread and corr >= _PROBE_MIN_CORR)


def _discard_export(path: Path) -> None:
    """Delete a cached export (model files and sidecar) under its exclusive lock."""
    from fastsal import export as E

    with file_lock(E.lock_path(path)):
        for f in (E.sidecar_path(path), path, path.with_suffix(".bin") if path.suffix == ".xml" else None):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.unlink()


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
    size = _size_pair(input_size)
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
            notes.append(f"{engine} could not prepare the model ({_first_line(exc)}); using {nxt} instead "
                         f"({_fix_for(engine, exc)})")
    raise AssertionError("unreachable")  # candidates() never returns an empty list


def _fix_for(engine: str, exc: BaseException) -> str:
    text = str(exc)
    if "pip install" in text:
        return "install what the message names"
    if isinstance(exc, ImportError):
        return f"pip install 'fastsal[{_EXTRAS.get(engine, engine)}]'"
    if isinstance(exc, OSError):
        return f"check that {cache_dir()} is writable, or set FASTSAL_CACHE_DIR"
    return f"pass --backend {engine} to see the full error, or upgrade {_PACKAGES[engine]}"


# -- exported files -------------------------------------------------------------------------------
def load_runner(path: str | Path, backend: str | None = None, precision: str | None = None, *,
                threads: int | None = None, input_size: Sequence[int] | None = None) -> Runner:
    """A runner for a file written by :func:`fastsal.export.export` (``.onnx``, OpenVINO ``.xml``,
    TorchScript ``.pt``), checked against its sidecar; the runner's ``sidecar`` holds the metadata.

    ONNX files run on ONNX Runtime (default) or OpenVINO, IR files on OpenVINO, TorchScript on
    torch. ``precision`` defaults to the file's (fp32 or int8); bf16 may be asked of a float file
    on OpenVINO. ``input_size`` defaults to the exported size; another one is resized around a
    fixed-size graph, and fed as it is (to a multiple of 32) to a free-size one (``dynamic_size``).
    """
    from fastsal.export import read_sidecar, sidecar_path

    path = Path(path)
    if path.suffix == ".json":
        path = path.with_suffix("")
    side = read_sidecar(path)
    model_file = sidecar_path(path).with_name(side["file"])
    kind = side["export_format"]
    allowed = {"onnx": ("onnxruntime", "openvino"), "openvino": ("openvino",), "torchscript": ("torch",)}[kind]
    if backend in (None, AUTO):
        backend = next((b for b in allowed if installed(b)), allowed[0])
    if backend not in allowed:
        raise BackendError(f"{model_file}: a {kind} export runs on {' or '.join(allowed)}, not {backend!r}")
    file_precision = side["precision"]
    precision = precision or file_precision
    if (file_precision == "int8") != (precision == "int8"):
        raise BackendError(f"{model_file}: this file is {file_precision}; it cannot run at {precision} "
                           f"(export another with fastsal export{' --int8' if precision == 'int8' else ''})")
    size = _size_pair(input_size) if input_size is not None else tuple(side["input_size"])
    if side["dynamic_size"]:  # free H and W: run each size as it is (multiples of 32), as the checkpoint does
        from fastsal.models.fastsal import network_size

        graph = network_size(size)
    else:
        graph = tuple(side["input_size"])
    runner: Any
    if backend == "onnxruntime":
        if precision == "bf16":
            raise BackendError("backend 'onnxruntime' has no bf16 mode; use --backend openvino")
        runner = _StaticBatch(OnnxRuntimeRunner(model_file, size, graph, precision, threads=threads), side)
    elif backend == "openvino":
        runner = _StaticBatch(OpenVINORunner(model_file, size, graph, precision, threads=threads), side)
    else:
        runner = _TorchScriptRunner(model_file, size, graph, precision, threads=threads)
        runner = _StaticBatch(runner, side)
    runner.sidecar = side
    return runner


class _StaticBatch:
    """Runs a static-batch-1 export one image at a time, so any N works; passes the rest through."""

    def __init__(self, inner: GraphRunner, sidecar: dict[str, Any]) -> None:
        self.inner = inner
        self.sidecar = sidecar
        self.backend, self.precision, self.input_size = inner.backend, inner.precision, inner.input_size
        self.name = sidecar["model"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = _check_batch(batch, self.input_size)
        if self.sidecar["dynamic_batch"] or x.shape[0] == 1:
            return self.inner(x)
        return np.concatenate([self.inner(x[i:i + 1]) for i in range(x.shape[0])])

    def __repr__(self) -> str:
        return f"{self.inner!r} for {self.name!r}"


class _TorchScriptRunner(GraphRunner):
    backend = "torch"

    def __init__(self, path: Path, input_size: Sequence[int], graph_size: Sequence[int], precision: str, *,
                 threads: int | None = None) -> None:
        super().__init__(input_size, graph_size, precision)
        if precision == "bf16":
            check_precision(precision)
        if threads is not None:
            torch.set_num_threads(int(threads))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                self.module = torch.jit.load(str(path), map_location="cpu").eval()
            except RuntimeError as exc:
                raise BackendError(f"{path}: not a loadable TorchScript file ({_first_line(exc)})") from None

    def run_graph(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.module(torch.from_numpy(x)).float().numpy()


# -- helpers ----------------------------------------------------------------------------------------
def _size_pair(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise BackendError(f"input size must be (H, W); got {size!r}") from None
    if h <= 0 or w <= 0:
        raise BackendError(f"input size must be positive; got {h}x{w}")
    return h, w


def _first_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return text[:200]



__all__ = [
    "AUTO", "BACKENDS", "BackendError", "BackendNotice", "ENGINES", "ENGINE_PRECISIONS", "GraphRunner",
    "OnnxRuntimeRunner", "OpenVINORunner", "PRECISIONS", "Runner", "TorchRunner", "build_runner", "cache_dir",
    "candidates", "check_device", "check_precision", "default_calibration_images", "installed", "load_runner",
    "make_runner", "writable_cache",
]
