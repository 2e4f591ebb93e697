"""What a model costs: parameters, multiply-accumulates, file sizes and CPU latency.

    from fastsal.cost import cost_table, format_table
    rows = cost_table(["fastsal_a", "fastsal_c", "salgan", "deepgaze2"])
    print(format_table(rows))

Models are built with random weights (cost does not depend on them): any registered FastSal name
and the reference models of :mod:`fastsal.models.reference` (``salgan``, ``deepgaze2``).

- ``params``: ``sum(p.numel() for p in model.parameters())`` of the model as built (unfused).
- ``gmacs``: multiply-accumulates of one forward pass at ``input_size``, batch 1, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; MACs =
  FLOPs / 2). Element-wise ops, pooling and interpolation are not counted. ``gmacs_fused`` is the
  same count for :func:`fastsal.models.fuse.fuse` of the model (FastSal-C's fused head is
  cheaper; elsewhere folding BatchNorm changes nothing countable).
- ``size_fp32_mb`` / ``size_fp16_mb``: bytes of ``torch.save(state_dict)`` with float tensors in
  fp32 / fp16 (MB = 1e6 bytes). ``size_int8_mb``: measured size of the int8 ONNX file when the
  ``onnxruntime-int8`` backend is requested for a FastSal model (``size_int8_source`` says
  "measured"), otherwise an estimate of 1 byte per parameter ("estimate").
- ``latency_ms``: {label: median ms per image at batch 1 over ``runs`` timed runs after
  ``warmup``}. Labels (:func:`runner_labels`): ``eager`` (PyTorch, the model as defined) and the
  runners of :mod:`fastsal.runtime`, ``ENGINE`` at fp32 and ``ENGINE-PRECISION`` otherwise
  (``torch``, ``torch-bf16``, ``onnxruntime``, ``onnxruntime-int8``, ``openvino``,
  ``openvino-bf16``, ``openvino-int8``): exactly what ``fastsal predict`` runs. Only ``eager`` and
  ``torch`` apply to the reference models (None for the others).
"""
from __future__ import annotations

import io
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from fastsal import defaults
from fastsal.cpu import check_threads, cpu_name
from fastsal.errors import FastSalError
from fastsal.runtime.engines import ENGINE_PRECISIONS, EngineError

# Runner labels: "eager" (PyTorch, the model as defined, unfused) and every engine at every
# precision of fastsal.runtime, spelt ENGINE for fp32 and ENGINE-PRECISION otherwise.
EAGER = "eager"


def runner_labels() -> tuple[str, ...]:
    """Every label :func:`label_runner` accepts, in the engine vocabulary of :mod:`fastsal.runtime`."""
    return (EAGER, *(label(e, p) for e, ps in ENGINE_PRECISIONS.items() for p in ps))


def label(engine: str, precision: str = "fp32") -> str:
    """``openvino`` for fp32, ``openvino-int8`` otherwise."""
    return engine if precision == "fp32" else f"{engine}-{precision}"


def parse_label(text: str) -> tuple[str, str]:
    """(engine, precision) of a label; ``eager`` -> ("eager", "fp32")."""
    engine, _, precision = text.partition("-")
    return engine, precision or "fp32"


def build_any(name: str) -> nn.Module:
    """A FastSal model (registry name) or a reference model (``salgan``, ``deepgaze2``): random
    weights, eval mode."""
    from fastsal.models import build
    from fastsal.models.reference import REFERENCES, build_reference

    if name in REFERENCES:
        return build_reference(name)
    return build(name).eval()


def is_fastsal(model: nn.Module) -> bool:
    from fastsal.models import FastSal

    return isinstance(model, FastSal)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int] = defaults.INPUT_SIZE, batch: int = 1) -> int:
    """Multiply-accumulates of one forward pass (FlopCounterMode FLOPs / 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, *input_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(x)
    return counter.get_total_flops() // 2


def state_dict_bytes(model: nn.Module, half: bool = False) -> int:
    """Size of ``torch.save(model.state_dict())``, float tensors cast to fp16 if ``half``."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.tell()


def label_runner(
    model: nn.Module,
    name: str,
    backend: str,
    input_size: tuple[int, int] = defaults.INPUT_SIZE,
    *,
    threads: int | None = None,
    workdir: str | Path | None = None,
    calibration_images: Sequence[str | Path] | None = None,
) -> tuple[Callable[[np.ndarray], Any], dict[str, Any]]:
    """A runner for ``model`` under the label ``backend`` (:func:`runner_labels`), and facts about
    it (``file_bytes``: the converted file's size). Graph engines convert into ``workdir``
    (default: a temporary folder, removed once the engine holds the model); int8 calibrates on
    ``calibration_images`` (default: the shipped set). ``threads``: the engine's threads."""
    from fastsal.runtime.build import make_runner
    from fastsal.runtime.runners import TorchRunner

    engine, precision = parse_label(backend)
    if backend not in runner_labels():
        raise EngineError(f"unknown backend {backend!r}; choose from: {', '.join(runner_labels())}")
    if threads is not None:
        torch.set_num_threads(check_threads(threads))
    if engine == EAGER:
        return TorchRunner(model, input_size, fuse_model=False), {}
    if not is_fastsal(model):
        if engine != "torch":
            raise EngineError(f"backend {backend!r} is only available for FastSal models")
        return TorchRunner(model, input_size, precision, fuse_model=False), {}
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fastsal-cost-") as tmp:
            return label_runner(model, name, backend, input_size, threads=threads, workdir=tmp,
                               calibration_images=calibration_images)
    if not hasattr(model, "name"):
        # torch's stubs type Module.__setattr__ for Tensor / Module values; any value is stored
        model.name = name  # type: ignore[assignment]
    run = make_runner(model, engine, input_size, precision, threads=threads, folder=workdir,
                      calibration_images=calibration_images)
    return run, {"file_bytes": _weights_file_bytes(run)}


def _weights_file_bytes(run: Any) -> int | None:
    """The size of the file holding a graph runner's weights (an IR's ``.bin``, else the ONNX file),
    as the runner names it: the cache's file names are the cache's business."""
    path = getattr(run, "path", None)
    if path is None:
        return None
    path = Path(path)
    weights = path.with_suffix(".bin") if path.suffix == ".xml" else path
    return weights.stat().st_size if weights.is_file() else None


def time_runner(run: Callable[[np.ndarray], Any], x: np.ndarray, warmup: int = 1, runs: int = 5) -> list[float]:
    """Seconds per call of ``run(x)`` for ``runs`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t0)
    return times


def cost_table(
    names: Iterable[str],
    input_size: tuple[int, int] = defaults.INPUT_SIZE,
    backends: Sequence[str] = (EAGER,),
    measure_latency: bool = True,
    *,
    threads: int | None = None,
    warmup: int = 1,
    runs: int = 5,
    calibration_images: Sequence[str | Path] | None = None,
    workdir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """One row per model name; see the module docstring for the fields."""
    for b in backends:
        if b not in runner_labels():
            raise EngineError(f"unknown backend {b!r}; choose from: {', '.join(runner_labels())}")
    h, w = (int(v) for v in input_size)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="fastsal-cost-") as tmp:
            return cost_table(names, (h, w), backends, measure_latency, threads=threads, warmup=warmup,
                              runs=runs, calibration_images=calibration_images, workdir=tmp)
    workdir = Path(workdir)
    x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
    rows = []
    for name in names:
        model = build_any(name)
        fastsal = is_fastsal(model)
        params = count_params(model)
        row: dict[str, Any] = {
            "name": name,
            "input_size": [h, w],
            "params": params,
            "gmacs": count_macs(model, (h, w)) / 1e9,
            "gmacs_fused": None,
            "size_fp32_mb": state_dict_bytes(model) / 1e6,
            "size_fp16_mb": state_dict_bytes(model, half=True) / 1e6,
            "size_int8_mb": params / 1e6,
            "size_int8_source": "estimate: 1 byte/parameter",
            "latency_ms": {},
        }
        if fastsal:
            from fastsal.models.fuse import fuse

            row["gmacs_fused"] = count_macs(fuse(model), (h, w)) / 1e9
        for backend in backends:
            if backend not in (EAGER, "torch") and not fastsal:
                if measure_latency:
                    row["latency_ms"][backend] = None
                continue
            if not (measure_latency or backend == "onnxruntime-int8"):
                continue
            try:
                run, info = label_runner(model, name, backend, (h, w), threads=threads, workdir=workdir,
                                        calibration_images=calibration_images)
            except FastSalError as exc:  # e.g. openvino not installed
                if measure_latency:
                    row["latency_ms"][backend] = None
                row.setdefault("notes", []).append(str(exc))
                continue
            if backend == "onnxruntime-int8" and info.get("file_bytes"):
                row["size_int8_mb"] = info["file_bytes"] / 1e6
                row["size_int8_source"] = "measured: quantised ONNX file"
            if measure_latency:
                row["latency_ms"][backend] = statistics.median(time_runner(run, x, warmup, runs)) * 1000.0
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of :func:`cost_table` rows."""
    backends: list[str] = []
    for r in rows:
        backends += [b for b in r["latency_ms"] if b not in backends]
    head = ["model", "params", "GMACs", "GMACs fused", "fp32 MB", "fp16 MB", "int8 MB"] + [f"{b} ms" for b in backends]
    lines = []
    for r in rows:
        cells = [
            r["name"], f"{r['params']:,}", f"{r['gmacs']:.3f}",
            "-" if r["gmacs_fused"] is None else f"{r['gmacs_fused']:.3f}",
            f"{r['size_fp32_mb']:.1f}", f"{r['size_fp16_mb']:.1f}",
            f"{r['size_int8_mb']:.1f}{'' if r['size_int8_source'].startswith('measured') else '*'}",
        ]
        for b in backends:
            v = r["latency_ms"].get(b)
            cells.append("-" if v is None else f"{v:.1f}")
        lines.append(cells)
    widths = [max(len(str(c)) for c in col) for col in zip(head, *lines)]
    fmt = "  ".join("{:<%d}" % widths[0] if i == 0 else "{:>%d}" % wd for i, wd in enumerate(widths))
    out = [fmt.format(*head)] + [fmt.format(*c) for c in lines]
    if any(not r["size_int8_source"].startswith("measured") for r in rows):
        out.append("* int8 size estimated at 1 byte/parameter")
    return "\n".join(out)


__all__ = [
    "EAGER", "build_any", "cpu_name", "label", "parse_label", "runner_labels", "cost_table", "count_macs", "count_params", "format_table", "label_runner",
    "state_dict_bytes", "time_runner",
]
