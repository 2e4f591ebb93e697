"""The runtime's former import path, kept because the benchmarks (``benchmarks/*.py``) and user
scripts import from it: everything lives in :mod:`fastsal.runtime` now ("engine" is its word;
``BackendError`` / ``BackendNotice`` are the same classes as ``EngineError`` / ``EngineNotice``)."""
from __future__ import annotations

from fastsal.runtime.build import build_runner, default_calibration_images, load_runner, make_runner
from fastsal.runtime.cache import cache_dir, writable_cache
from fastsal.runtime.engines import (
    AUTO,
    ENGINE_PRECISIONS,
    ENGINES,
    PRECISIONS,
    EngineError as BackendError,
    EngineNotice as BackendNotice,
    candidates,
    check_device,
    check_precision,
    installed,
)
from fastsal.runtime.openvino import OpenVINORunner
from fastsal.runtime.runners import GraphRunner, OnnxRuntimeRunner, Runner, TorchRunner

__all__ = [
    "AUTO", "BackendError", "BackendNotice", "ENGINES", "ENGINE_PRECISIONS", "GraphRunner", "OnnxRuntimeRunner",
    "OpenVINORunner", "PRECISIONS", "Runner", "TorchRunner", "build_runner", "cache_dir", "candidates", "check_device",
    "check_precision", "default_calibration_images", "installed", "load_runner", "make_runner", "writable_cache",
]
