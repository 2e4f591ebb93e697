"""Engines and precisions: which engine runs here, at which precision, on which device.

The engine table (:data:`ENGINES`, :data:`ENGINE_PRECISIONS`, from :mod:`fastsal.defaults`), the
checks of a request (:func:`candidates`, :func:`check_precision`, :func:`check_device`) and the
errors and notices of the runtime. "Engine" is the runtime's word for OpenVINO / ONNX Runtime /
PyTorch; the command line keeps its ``--backend`` flag and runners their ``backend`` attribute.

Imports nothing heavy (PyTorch is imported by the checks that need a device), so the command line
can read the table without PyTorch.
"""
from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Sequence

from fastsal import defaults, geometry
from fastsal.cpu import cpu_features, supports_bf16
from fastsal.errors import FastSalError

if TYPE_CHECKING:
    import torch

ENGINES: tuple[str, ...] = defaults.ENGINES
AUTO = defaults.AUTO
PRECISIONS: tuple[str, ...] = defaults.PRECISIONS

#: Which precisions each engine offers.
ENGINE_PRECISIONS: dict[str, tuple[str, ...]] = defaults.ENGINE_PRECISIONS

#: The package each engine needs, and the pip extra that installs it.
PACKAGES = {"openvino": "openvino", "onnxruntime": "onnxruntime", "torch": "torch"}
EXTRAS = {"openvino": "openvino", "onnxruntime": "onnx"}


class EngineError(FastSalError, ValueError):
    """An engine, precision or device that cannot be used here; the message says what to use instead."""


class EngineNotice(UserWarning):
    """Another engine than the one asked for is used (not installed, or it could not prepare the model)."""


def installed(engine: str) -> bool:
    """Whether ``engine``'s runtime package can be imported (without importing it)."""
    return importlib.util.find_spec(PACKAGES[engine]) is not None


def check_precision(precision: str) -> str:
    """``precision`` if this CPU can run it, else :class:`EngineError` saying what to use."""
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if precision == "bf16" and not supports_bf16():
        have = ", ".join(cpu_features()) or "no AVX"
        raise EngineError(f"precision 'bf16' needs a CPU with AVX512_BF16 or AMX (this one has: {have}); "
                          "use {option} int8 for speed or fp32", option="precision")
    return precision


def candidates(requested: str = AUTO, precision: str = defaults.PRECISION,
               device: str | torch.device = "cpu") -> tuple[list[str], list[str]]:
    """(engines to try in order, notes) for a request of ``auto`` or an engine name.

    ``auto``: the installed engines offering ``precision``, fastest first. A named engine that is
    not installed is followed by the installed ones after it (with a note naming the extra to
    install); one that lacks the precision is an error. Non-CPU devices: PyTorch only.
    """
    import torch

    if requested != AUTO and requested not in ENGINES:
        raise EngineError(f"unknown backend {requested!r}; choose one of: {AUTO}, {', '.join(ENGINES)}")
    check_device(device)
    if precision not in PRECISIONS:
        raise EngineError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    if torch.device(device).type != "cpu":
        if requested not in (AUTO, "torch"):
            raise EngineError(f"backend {requested!r} runs on the CPU only; use {{option}} torch for device {device}",
                              option="backend")
        if precision == "int8":
            raise EngineError(f"precision 'int8' runs on the CPU engines only; use fp32 or bf16 on device {device}")
        return ["torch"], []
    check_precision(precision)
    offering = [e for e in ENGINES if precision in ENGINE_PRECISIONS[e]]
    if requested == AUTO:
        found = [e for e in offering if installed(e)]
        if not found:
            raise EngineError(f"no installed engine runs precision {precision!r}: pip install 'fastsal[openvino]'")
        return found, []
    if precision not in ENGINE_PRECISIONS[requested]:
        raise EngineError(f"backend {requested!r} has no {precision} mode; use {{option}} "
                          f"{' or '.join(offering)} for {precision}", option="backend")
    if installed(requested):
        return [requested], []
    rest = [e for e in offering[offering.index(requested) + 1:] if installed(e)]
    if not rest:
        raise EngineError(f"backend {requested!r} is not installed and no other engine runs {precision}: "
                           f"pip install 'fastsal[{EXTRAS[requested]}]'")
    return rest, [f"backend {requested!r} is not installed; using {rest[0]!r} instead "
                  f"(pip install 'fastsal[{EXTRAS[requested]}]')"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device if it exists here, else :class:`EngineError` in one line."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise EngineError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EngineError(f"device {str(device)!r}: no CUDA GPU is available to this PyTorch build; "
                              "use {option} cpu", option="device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EngineError(f"device {str(device)!r}: only {torch.cuda.device_count()} CUDA device(s); "
                               f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise EngineError(f"device {str(device)!r} is not available here; use {{option}} cpu", option="device")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise EngineError(f"device {str(device)!r} is not supported; use cpu or cuda")
    return dev


def size_pair(size: Sequence[int]) -> tuple[int, int]:
    """``size`` as a positive (H, W), or :class:`EngineError` (:func:`fastsal.geometry.size_pair`)."""
    return geometry.size_pair(size, EngineError)



__all__ = ["AUTO", "ENGINES", "ENGINE_PRECISIONS", "EXTRAS", "EngineError", "EngineNotice", "PACKAGES", "PRECISIONS",
           "candidates", "check_device", "check_precision", "installed", "size_pair"]
