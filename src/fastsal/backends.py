"""Where the network runs: OpenVINO, ONNX Runtime or PyTorch, behind one ``logits(batch)`` call.

On CPUs the graph runtimes are 2-3x faster than eager PyTorch for the same model and the same
numbers (``benchmarks/backends.py``: FastSal-A 192x256 batch 1 on 2 cores, eager 38.6 ms, fused
eager 29.3, ONNX Runtime 18.3, OpenVINO 15.6), so prediction uses the fastest one installed
(``backend="auto"``): OpenVINO, then ONNX Runtime, then PyTorch. PyTorch stays the backend for
training and GPUs.

The graph runtimes need the model as a file: it is exported once (ONNX, dynamic batch, fused) into
the user cache folder and reused. The file name and sidecar carry the weights' SHA-256, the input
size and the precision, so changed weights or another size give a new file, never a stale one;
writes are atomic, so concurrent processes cannot corrupt the cache. OpenVINO additionally keeps
its compiled blob there (its own ``CACHE_DIR`` mechanism). The cache is
``$FASTSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastsal``, else ``~/.cache/fastsal``; deleting it
is always safe.
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fastsal.models.fastsal import network_size

BACKENDS = ("openvino", "onnxruntime", "torch")  # fastest first on CPUs (benchmarks/backends.py)
AUTO = "auto"
_PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "torch"}
_EXTRAS = {"openvino": "openvino", "onnxruntime": "onnx"}

Logits = Callable[[np.ndarray], np.ndarray]


class BackendNotice(UserWarning):
    """A requested backend is not installed and another one is used instead."""


def installed(backend: str) -> bool:
    """Whether ``backend``'s runtime package can be imported (without importing it)."""
    return importlib.util.find_spec(_PACKAGES[backend]) is not None


def resolve_backend(requested: str = AUTO, device: str | torch.device = "cpu") -> tuple[str, str | None]:
    """(backend to use, one-line notice or None) for a request of ``auto`` or a backend name.

    ``auto`` takes the fastest installed CPU runtime, silently. A named backend that is not
    installed falls back to the next one installed, with a notice saying what to install. Devices
    other than the CPU (CUDA, MPS) run on PyTorch.
    """
    if requested != AUTO and requested not in BACKENDS:
        raise ValueError(f"unknown backend {requested!r}; choose one of: {AUTO}, {', '.join(BACKENDS)}")
    if torch.device(device).type != "cpu":
        if requested not in (AUTO, "torch"):
            raise ValueError(f"backend {requested!r} runs on the CPU only; use backend='torch' for device {device}")
        return "torch", None
    if requested == AUTO:
        return next(b for b in BACKENDS if installed(b)), None
    if installed(requested):
        return requested, None
    chosen = next(b for b in BACKENDS[BACKENDS.index(requested):] if installed(b))
    return chosen, (f"backend {requested!r} is not installed; using {chosen!r} instead "
                    f"(pip install 'fastsal[{_EXTRAS[requested]}]')")


def cache_dir() -> Path:
    """The folder for exported and compiled models (see the module docstring)."""
    if os.environ.get("FASTSAL_CACHE_DIR"):
        return Path(os.environ["FASTSAL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastsal"


def _writable_cache() -> Path | None:
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


def logits_runner(
    model: nn.Module,
    backend: str,
    input_size: tuple[int, int],
    *,
    threads: int | None = None,
    fused: nn.Module | None = None,
) -> Logits:
    """``run((N, 3, H, W) float32 in [0, 1]) -> (N, 1, H, W) float32 logits`` on ``backend``.

    ``model``: the FastSal model as trained (the export and cache key start from its weights).
    ``fused``: its :func:`~fastsal.models.fuse.fuse` rewrite, which the ``torch`` backend runs
    (pass one to share it; made here otherwise). ``input_size`` fixes the graph size for the
    graph runtimes; sizes that are not multiples of 32 are resized on the way in and out exactly
    as :class:`~fastsal.models.FastSal` does, so every backend gives the same map.
    """
    if backend == "torch":
        from fastsal.models.fuse import fuse

        net = fused if fused is not None else fuse(model.eval())
        device = next(net.parameters()).device

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return net(torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)).float().cpu().numpy()

        return run_torch
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    from fastsal.export import cached_export, onnx_runner, openvino_runner

    size = network_size(input_size)
    folder = _writable_cache()
    if folder is None:
        warnings.warn(f"cache folder {cache_dir()} is not writable (set FASTSAL_CACHE_DIR); "
                      "exporting to a temporary folder on every load", BackendNotice, stacklevel=2)
    # runtimes hold the model in memory, so a temporary folder may go once they are built
    with nullcontext(folder) if folder is not None else tempfile.TemporaryDirectory(prefix="fastsal-") as where:
        path = cached_export(model, model.name, where, size)
        inner = (onnx_runner(path, threads) if backend == "onnxruntime"
                 else openvino_runner(path, threads, cache_dir=folder / "openvino" if folder is not None else None))
    if size == tuple(input_size):
        return lambda x: inner(np.ascontiguousarray(x, dtype=np.float32))

    def run_resized(x: np.ndarray) -> np.ndarray:
        # FastSal.forward's resize, outside the fixed-size graph
        t = F.interpolate(torch.from_numpy(np.ascontiguousarray(x, np.float32)), size=size, mode="bilinear",
                          align_corners=False, antialias=True)
        y = torch.from_numpy(inner(t.numpy()))
        return F.interpolate(y, size=tuple(input_size), mode="bilinear", align_corners=False).numpy()

    return run_resized


__all__ = ["AUTO", "BACKENDS", "BackendNotice", "cache_dir", "installed", "logits_runner", "resolve_backend"]
