"""int8 for OpenVINO with OpenVINO's own quantiser, NNCF: what ``pip install 'fastsal[openvino]'``
alone runs for ``--precision int8`` (no ``onnx`` or ``onnxruntime`` needed).

Two int8 recipes exist (:data:`RECIPES`):

- ``nncf`` (OpenVINO's default): the fp32 OpenVINO IR converted straight from the PyTorch module
  (:func:`fastsal.export._save_openvino_ir`), quantised by ``nncf.quantize`` with the settings in
  :data:`NNCF_SETTINGS` on the calibration images (preprocessed exactly as for prediction);
- ``onnxruntime``: the calibrated QDQ ONNX graph of :mod:`fastsal.export` (needs ``[onnx]``), the
  only one ONNX Runtime runs; OpenVINO runs it too.

Which one OpenVINO uses: ``$FASTSAL_OPENVINO_INT8`` if set, else
:data:`fastsal.defaults.OPENVINO_INT8`, falling back to the other where that one's package is
missing (:func:`openvino_recipe`). The README's precision section has both measured side by side
(``benchmarks/precision.py``); the default is the better of the two there.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from fastsal import defaults
from fastsal.errors import FastSalError

RECIPES: tuple[str, ...] = ("nncf", "onnxruntime")
ENV = "FASTSAL_OPENVINO_INT8"
#: What ``nncf.quantize`` is told; written to the export sidecar. PERFORMANCE = symmetric int8
#: activations and weights (per output channel), the fastest kernels on CPUs; fast bias correction
#: re-centres each quantised layer's output on the calibration set.
NNCF_SETTINGS: dict[str, Any] = {"preset": "PERFORMANCE", "fast_bias_correction": True, "model_type": None}
#: Bumped whenever NNCF_SETTINGS or the ignored layers change: part of the cached file's name, so a
#: cache never serves a graph quantised the old way.
NNCF_RECIPE_VERSION = 1


class QuantizeError(FastSalError, ValueError):
    """int8 on OpenVINO cannot be made here (a missing package or a bad recipe setting)."""


def _error(message: str) -> Exception:
    return QuantizeError(message)


def installed(recipe: str) -> bool:
    """Whether ``recipe``'s packages can be imported (without importing them)."""
    needs = {"nncf": ("nncf", "openvino"), "onnxruntime": ("onnx", "onnxruntime")}[recipe]
    return all(importlib.util.find_spec(p) is not None for p in needs)


def openvino_recipe() -> str:
    """The int8 recipe OpenVINO runs here: ``$FASTSAL_OPENVINO_INT8``, else the default, else the
    other one where the chosen one's packages are missing; :class:`QuantizeError`
    naming what to install where neither can run."""
    wanted = os.environ.get(ENV) or defaults.OPENVINO_INT8
    if wanted not in RECIPES:
        raise _error(f"${ENV}={wanted!r} is not an int8 recipe; use one of: {', '.join(RECIPES)}")
    for recipe in (wanted, *(r for r in RECIPES if r != wanted)):
        if installed(recipe):
            return recipe
    raise _error("precision 'int8' on OpenVINO needs NNCF: pip install 'fastsal[openvino]' (or pip install nncf)")


def ignored_layers() -> list[str]:
    """Regular expressions of the OpenVINO layers kept in float (none today: the measured loss
    of quantising every layer is within the README's budget)."""
    return []


def quantize_model(model: Any, calibration: Sequence[str | Path], input_size: tuple[int, int]) -> Any:
    """An ``openvino.Model`` (fp32) -> the same model quantised to int8 by NNCF, calibrated on
    ``calibration`` (image paths) preprocessed at ``input_size`` as for prediction.

    NNCF's progress bars go to stderr (never into a command's stdout, which may carry JSON) and
    its INFO lines are silenced."""
    try:
        import nncf
    except ImportError:
        raise _error("int8 on OpenVINO needs NNCF: pip install 'fastsal[openvino]' (or pip install nncf)") from None
    from fastsal.images import load_input

    paths = [Path(p) for p in calibration]
    size = (int(input_size[0]), int(input_size[1]))
    data = nncf.Dataset(paths, lambda p: load_input(p, size)[None])
    patterns = ignored_layers()
    scope = nncf.IgnoredScope(patterns=patterns, validate=False) if patterns else None
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return nncf.quantize(model, data, preset=getattr(nncf.QuantizationPreset, NNCF_SETTINGS["preset"]),
                                 model_type=NNCF_SETTINGS["model_type"], subset_size=len(paths),
                                 fast_bias_correction=NNCF_SETTINGS["fast_bias_correction"], ignored_scope=scope)
    finally:
        logger.setLevel(level)


def sidecar_entry(recipe: str, n_images: int, digest: str) -> dict[str, Any]:
    """The export sidecar's ``quantization`` block for ``recipe``."""
    if recipe == "nncf":
        import nncf

        return {"tool": f"nncf.quantize (NNCF {nncf.__version__})", "recipe": "nncf", "version": NNCF_RECIPE_VERSION,
                "settings": {k: (v if v is None else str(v)) for k, v in NNCF_SETTINGS.items()},
                "weights": "int8, per output channel, symmetric", "activations": "int8, per tensor, symmetric",
                "not_quantized": ignored_layers(), "calibration_images": n_images, "calibration_sha256": digest}
    return {
        "tool": "onnxruntime.quantization.quantize_static", "recipe": "onnxruntime", "format": "QDQ",
        "weights": "int8 with 7-bit range (reduce_range), per output channel, symmetric",
        "activations": "int8, per tensor, MinMax calibration",
        "not_quantized": ["Concat", "encoder.features.0-2 (stem and first two blocks)"],
        "calibration_images": n_images, "calibration_sha256": digest,
    }


__all__ = ["ENV", "NNCF_SETTINGS", "QuantizeError", "RECIPES", "installed", "openvino_recipe", "quantize_model", "sidecar_entry"]
