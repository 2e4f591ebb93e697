"""Saliency models: backbones (MobileNetV2, EfficientNet-Lite0), the FastSal encoder and decoders."""
from fastsal.models.fastsal import FastSal
from fastsal.models.registry import (
    DEFAULT_MODEL,
    WEIGHTS,
    ModelError,
    Weights,
    build,
    catalogue,
    list_models,
    load_model,
    model_choices,
    read_checkpoint,
    save_checkpoint,
    shipped_weights,
    weights_for,
)

__all__ = [
    "DEFAULT_MODEL",
    "FastSal",
    "ModelError",
    "build",
    "catalogue",
    "list_models",
    "load_model",
    "model_choices",
    "read_checkpoint",
    "save_checkpoint",
    "shipped_weights",
    "weights_for",
    "WEIGHTS",
    "Weights",
]
