"""fastsal: fast visual saliency prediction (where people look), built for CPUs.

    import fastsal
    predictor = fastsal.load()                  # shipped default, its trained input size and aspect
    density = predictor.predict("photo.jpg")    # (H, W) float32, sums to 1
    box = fastsal.crop("photo.jpg", aspect=(16, 9)).box   # (x, y, w, h) keeping the most attention

The heavy names (``load``, ``Predictor``, ...) are imported on first use, so ``import fastsal``
and the command line start quickly without importing PyTorch.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from fastsal._lazy import lazy_exports
from fastsal._version import __version__

# OpenVINO's model converter (and NNCF) send usage data to Intel and keep an id file in ~/intel unless
# their `openvino_telemetry` package fails to import; both then use a silent stub. fastsal imports
# OpenVINO only after this line, so converting a model sends nothing and writes nothing to the home
# folder. FASTSAL_OPENVINO_TELEMETRY=1 leaves OpenVINO's own choice in place.
if os.environ.get("FASTSAL_OPENVINO_TELEMETRY") != "1" and "openvino_telemetry" not in sys.modules:
    sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]

_LAZY = {
    "load": "fastsal.predict",
    "Predictor": "fastsal.predict",
    "to_png": "fastsal.viewing",
    "overlay": "fastsal.viewing",
    "colormap": "fastsal.viewing",
    "example_image": "fastsal.predict",
    "list_models": "fastsal.models",
    "ModelError": "fastsal.models",
    "ImageError": "fastsal.images",
    "crop": "fastsal.cropping",
}

__all__ = [  # = ["__version__", *_LAZY], spelled out for linters
    "__version__", "load", "Predictor", "to_png", "overlay", "colormap", "example_image", "list_models", "ModelError",
    "ImageError", "crop",
]

if TYPE_CHECKING:
    from fastsal.cropping import crop
    from fastsal.images import ImageError
    from fastsal.models import ModelError, list_models
    from fastsal.predict import Predictor, example_image, load
    from fastsal.viewing import colormap, overlay, to_png


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
