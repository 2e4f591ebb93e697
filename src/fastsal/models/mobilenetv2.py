"""MobileNetV2 (Sandler et al., CVPR 2018) with torchvision's module layout and state_dict keys.

Keeping torchvision's keys (``features.0.0.weight`` … ``classifier.1.bias``) lets a user load a
torchvision ImageNet checkpoint with ``strict=True`` without torchvision installed.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from fastsal.models.layers import ConvBNReLU, InvertedResidual, make_divisible

# t (expansion), c (channels), n (repeats), s (first stride)
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class MobileNetV2(nn.Module):
    """``features`` (indices 0–18) and a ``classifier`` (dropout + linear), as torchvision.

    ``feature_strides[i]`` is the output stride of ``features[i]``; the FastSal encoder groups its
    taps by it.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        layers: list[nn.Module] = [ConvBNReLU(3, in_ch, stride=2)]
        strides = [2]
        stride = 2
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            out_ch = make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                stride *= s if i == 0 else 1
                strides.append(stride)
                in_ch = out_ch
        layers.append(ConvBNReLU(in_ch, last, kernel_size=1))
        strides.append(stride)
        self.features = nn.Sequential(*layers)
        self.feature_strides = tuple(strides)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _init_weights(model: nn.Module) -> None:
    """torchvision's initialisation, so training from scratch starts where theirs does."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def mobilenet_v2(weights: str | Path | None = None, *, width_mult: float = 1.0, num_classes: int = 1000) -> MobileNetV2:
    """Build MobileNetV2; ``weights`` is a local torchvision-layout checkpoint (never downloaded)."""
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    if weights is not None:
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model
