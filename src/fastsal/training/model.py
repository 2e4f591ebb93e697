"""The network a run trains and its optimiser: built from ``init`` or with backbone weights (checked
first, so a bad file is one line), parameter groups, and the BN re-estimate a TFLite backbone needs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastsal.models.layers import recalibrate_batchnorm
from fastsal.models.mobilenetv2 import TFLiteError, is_tflite
from fastsal.models.registry import BACKBONES, ModelError, build, full_state_dict, postprocess_settings, read_checkpoint
from fastsal.training.config import ModelConfig, OptimConfig, TrainError

# Training images whose statistics replace the BN statistics a TFLite backbone folded away.
BN_CALIBRATION_IMAGES = 64
_BACKBONE_HINT = "pass a torchvision/lukemelas backbone state dict, a MobileNetV2 .tflite file, 'imagenet' or 'none'"


def to_input(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> the network's float input in [0, 1]."""
    return images_u8.float().div_(255.0)


def encoder_of(model: nn.Module) -> nn.Module:
    """The model's ``encoder`` (typed: ``nn.Module.__getattr__`` promises a tensor or a module)."""
    encoder = model.encoder
    assert isinstance(encoder, nn.Module)
    return encoder


def build_model(cfg: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The model to train: from ``cfg.init`` when given, else with ``cfg.backbone_weights``; and
    the post-processing settings (blur) the saved checkpoints carry over from ``cfg.init``."""
    model, settings = _build_from_init(cfg) if cfg.init else (_build_with_backbone(cfg), {})
    if cfg.freeze_encoder:
        for p in encoder_of(model).parameters():
            p.requires_grad_(False)
    return model, settings


def _build_from_init(cfg: ModelConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Start from a fastsal checkpoint: all of it for the same model, else its encoder; with its
    post-processing settings (:func:`fastsal.models.registry.postprocess_settings`).

    Taking the encoder of a trained model of the same backbone gives a new decoder variant
    features that already know saliency; the decoder starts fresh.
    """
    assert cfg.init is not None
    try:
        ckpt = read_checkpoint(cfg.init)
        full = full_state_dict(ckpt, Path(cfg.init))  # a decoder-only checkpoint gets its shipped encoder
    except ModelError as exc:
        raise TrainError("{option} " + str(exc), option="init") from None
    model = build(cfg.model, backbone_weights=None)
    state = {k: v.float() if v.is_floating_point() else v for k, v in full.items()}
    settings = postprocess_settings(ckpt)
    if ckpt["model"] == cfg.model:
        model.load_state_dict(state)
        return model, settings
    ref = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    fits = encoder and all(k in ref and ref[k].shape == v.shape for k, v in encoder.items()) and \
        len(encoder) == sum(k.startswith("encoder.") for k in ref)
    if not fits:
        raise TrainError(f"{{option}} {cfg.init}: a {ckpt['model']!r} checkpoint, whose encoder does not fit "
                         f"{cfg.model}; pass a checkpoint of the same backbone", option="init")
    model.load_state_dict(encoder, strict=False)
    return model, settings


def _build_with_backbone(cfg: ModelConfig) -> nn.Module:
    """The model to train, with ``cfg.backbone_weights`` checked first so a bad file is one line."""
    weights = cfg.backbone_weights
    if weights is None or str(weights) == "imagenet":
        try:
            return build(cfg.model, backbone_weights=weights)
        except ImportError as exc:  # the packaged ImageNet weights are an optional dependency
            raise TrainError(str(exc).splitlines()[0]) from None
    path = Path(weights)
    if not path.is_file():
        raise TrainError(f"{{option}} {path}: no such file; {_BACKBONE_HINT}", option="backbone_weights")
    backbone = next((b for b in BACKBONES if cfg.model.endswith(f"_{b}")), "mobilenet_v2")
    if is_tflite(path):
        return _build_from_tflite(cfg, path, backbone)
    _check_backbone_state(path)
    try:
        return build(cfg.model, backbone_weights=path)
    except (RuntimeError, KeyError) as exc:
        # load_state_dict's first line is a generic heading; the next says which keys are wrong.
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        first = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        first = first if len(first) <= 120 else first[:117] + "..."
        raise TrainError(f"{{option}} {path}: keys do not fit the {backbone} backbone of {cfg.model} "
                         f"({first}); {_BACKBONE_HINT}", option="backbone_weights") from None


def _build_from_tflite(cfg: ModelConfig, path: Path, backbone: str) -> nn.Module:
    if backbone != "mobilenet_v2":
        raise TrainError(f"{{option}} {path}: a TFLite file converts to MobileNetV2 only, not the "
                         f"{backbone} backbone of {cfg.model}; pass --model {cfg.model.removesuffix('_' + backbone)}",
                         option="backbone_weights")
    try:
        return build(cfg.model, backbone_weights=path)
    except TFLiteError as exc:  # already one line: the file, what is wrong, the fix
        raise TrainError("{option} " + str(exc), option="backbone_weights") from None


def _check_backbone_state(path: Path) -> None:
    """A backbone file must be a state dict of tensors, not a whole fastsal checkpoint."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainError(f"{{option}} {path}: not a readable PyTorch checkpoint ({type(exc).__name__}); "
                         f"{_BACKBONE_HINT}", option="backbone_weights") from None
    if isinstance(state, dict) and "state_dict" in state and "format" in state:
        raise TrainError(f"{{option}} {path}: a whole fastsal checkpoint, not a backbone; {_BACKBONE_HINT}",
                         option="backbone_weights")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainError(f"{{option}} {path}: not a state dict of tensors; {_BACKBONE_HINT}", option="backbone_weights")


def calibrate_folded_batchnorm(model: nn.Module, images_u8: torch.Tensor, batch_size: int, rank: int,
                               device: torch.device) -> None:
    """Give the encoder's BNs the statistics of the first training images before epoch 1.

    A TFLite backbone has its BNs folded into the convolutions; :func:`from_tflite` rebuilds them
    as identities, which train mode (batch statistics) would turn into another network at the
    first step. Eval-mode outputs do not change (see :func:`recalibrate_batchnorm`). Every rank
    sees the same images, so data-parallel replicas stay identical.
    """
    images = images_u8[:BN_CALIBRATION_IMAGES]
    batches = (to_input(images[i:i + batch_size]).to(device) for i in range(0, len(images), batch_size))
    n_bn = recalibrate_batchnorm(model, batches, within=encoder_of(model))
    if rank == 0:
        print(f"backbone: {n_bn} batch norms folded into the TFLite file re-estimated on {len(images)} training images",
              flush=True)


def param_groups(model: nn.Module, lr: float, encoder_scale: float, weight_decay: float) -> list[dict[str, Any]]:
    """Encoder at a smaller learning rate (pretrained features move slowly); no decay on biases/BN."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_encoder = name.startswith("encoder.")
        no_decay = p.ndim <= 1
        groups.setdefault((is_encoder, no_decay), []).append(p)
    return [
        {"params": ps, "lr": lr * (encoder_scale if enc else 1.0), "weight_decay": 0.0 if nd else weight_decay}
        for (enc, nd), ps in groups.items()
    ]


def make_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """``cfg.optimizer`` over :func:`param_groups` of ``model``."""
    groups = param_groups(model, cfg.lr, cfg.encoder_lr_scale, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups)


__all__ = ["BN_CALIBRATION_IMAGES", "build_model", "calibrate_folded_batchnorm", "encoder_of", "make_optimizer",
           "param_groups", "to_input"]
