"""Model names -> builders, shipped weights and checkpoints.

Names read ``fastsal_<decoder>[_<backbone>]``: ``fastsal_a`` and ``fastsal_c`` are the paper's
MobileNetV2 models, ``fastsal_bare`` the trivial-decoder control, and ``_effnet_lite0`` swaps in the
EfficientNet-Lite0 backbone. ``default`` names the shipped model.
"""
from __future__ import annotations

from fastsal.errors import FastSalError

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from fastsal import defaults
from fastsal.files import atomic_write
from fastsal.models.decoders import DECODERS
from fastsal.models.efficientnet import efficientnet_lite0
from fastsal.models.encoder import FastSalEncoder
from fastsal.models.fastsal import FastSal
from fastsal.models.mobilenetv2 import TF_MEAN, TF_STD, mobilenet_v2

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
CHECKPOINT_FORMAT = "fastsal-checkpoint/1"
DEFAULT_INPUT_SIZE = defaults.INPUT_SIZE


class ModelError(FastSalError, ValueError):
    """Unknown model name or unusable weights file; the message says how to fix it."""


@dataclass(frozen=True)
class Backbone:
    build: Callable[[Any], nn.Module]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _mobilenet(weights: Any) -> nn.Module:
    """MobileNetV2 with TF padding: its one ImageNet init here, the TFLite file, is TF-trained.

    A torchvision checkpoint still loads (same keys); it then starts one pixel off at the strided
    layers and sees [-1, 1] inputs, both of which fine-tuning absorbs (a BN follows every conv).
    """
    if weights == "imagenet":
        raise ModelError(
            "MobileNetV2 ImageNet weights are not packaged; pass backbone_weights=PATH to Google's "
            "mobilenet_v2_1.0_224_quant.tflite or a torchvision mobilenet_v2 checkpoint (or None to train from scratch)"
        )
    return mobilenet_v2(weights, tf_padding=True)


# MobileNetV2 uses the TF input convention ([-1, 1]) of the TFLite weights, its only ImageNet init
# that can be had without a download; EfficientNet-Lite0's packaged TF weights want the same.
BACKBONES: dict[str, Backbone] = {
    "mobilenet_v2": Backbone(_mobilenet, TF_MEAN, TF_STD),
    "effnet_lite0": Backbone(efficientnet_lite0, (127 / 255,) * 3, (128 / 255,) * 3),
}

# Weights shipped inside the package (file names under fastsal/weights/).
SHIPPED: dict[str, str] = {"fastsal_a_effnet_lite0": "fastsal_a_effnet_lite0_osie.pt"}
DEFAULT_MODEL = defaults.MODEL


def _parse(name: str) -> tuple[str, str]:
    for decoder in DECODERS:
        for backbone in BACKBONES:
            suffix = "" if backbone == "mobilenet_v2" else f"_{backbone}"
            if name == f"fastsal_{decoder}{suffix}":
                return decoder, backbone
    raise ModelError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


def list_models() -> list[str]:
    """Every buildable model name (``default`` aliases the shipped one)."""
    names = []
    for backbone in BACKBONES:
        suffix = "" if backbone == "mobilenet_v2" else f"_{backbone}"
        names += [f"fastsal_{d}{suffix}" for d in DECODERS]
    return names


def build(name: str, weights: str | Path | None = None, *, backbone_weights: str | Path | None = None) -> FastSal:
    """Build a model by name.

    ``weights``: None (random decoder; backbone from ``backbone_weights``), ``"shipped"`` (the
    packaged checkpoint for this name), or a path to a fastsal checkpoint. ``backbone_weights``:
    ``"imagenet"`` for packaged ImageNet weights (EfficientNet-Lite0), a local backbone
    checkpoint in torchvision / lukemelas layout, or (MobileNetV2) a TFLite MobileNetV2 file,
    converted by :func:`fastsal.models.mobilenetv2.from_tflite`.
    """
    if name == "default":
        name = DEFAULT_MODEL
    decoder_name, backbone_name = _parse(name)
    spec = BACKBONES[backbone_name]
    backbone = spec.build(backbone_weights if weights is None else None)
    encoder = FastSalEncoder(backbone.features, backbone.feature_strides)
    model = FastSal(encoder, DECODERS[decoder_name](encoder.out_channels), spec.mean, spec.std)
    model.name = name
    if weights is not None:
        path = shipped_weights(name) if str(weights) == "shipped" else Path(weights)
        ckpt = read_checkpoint(path)
        if ckpt["model"] != name:
            raise ModelError(f"{path}: holds a {ckpt['model']!r} model, not {name!r}; pass --model {ckpt['model']}")
        _load_state(model, ckpt["state_dict"], path)
    return model


def shipped_weights(name: str) -> Path:
    """Path of the checkpoint shipped for ``name``; error if none ships."""
    if name == "default":
        name = DEFAULT_MODEL
    if name not in SHIPPED:
        raise ModelError(f"no shipped weights for {name!r} (shipped: {', '.join(SHIPPED)}); pass --weights FILE")
    path = WEIGHTS_DIR / SHIPPED[name]
    if not path.is_file():
        raise ModelError(f"{path}: shipped weights missing; reinstall fastsal")
    return path


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    ref = model.state_dict()
    state = {k: v.to(ref[k].dtype) if k in ref and v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"{path}: weights do not fit the model ({first}); check --model") from None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a fastsal checkpoint (weights-only unpickling: safe on untrusted files)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found; pass an existing --weights FILE")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__}); pass a file written by fastsal") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT or "state_dict" not in ckpt:
        raise ModelError(f"{path}: not a fastsal checkpoint (no '{CHECKPOINT_FORMAT}' header); pass a file written by fastsal")
    return ckpt


def load_model(path: str | Path) -> tuple[FastSal, dict[str, Any]]:
    """Build the model a checkpoint names and load it; returns (model in eval mode, metadata).

    The checkpoint is read once; ``model.name`` tells which model it held.
    """
    ckpt = read_checkpoint(path)
    model = build(ckpt["model"])
    _load_state(model, ckpt["state_dict"], Path(path))
    return model.eval(), dict(ckpt.get("meta", {}))


def save_checkpoint(
    model: nn.Module, name: str, path: str | Path, *, meta: dict[str, Any] | None = None,
    half: bool = False, extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file.

    ``half`` stores floating tensors as fp16 (half the size; loading casts back to fp32).
    ``extra`` holds training state (optimiser, epoch) for resuming.
    """
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().clone()
             for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "model": name, "state_dict": state, "meta": meta or {}}
    if extra:
        payload.update(extra)
    atomic_save(payload, path)
    return path


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    with atomic_write(path) as fh:
        torch.save(obj, fh)
