"""FastSal: backbone encoder + decoder, from RGB in [0, 1] to one channel of saliency logits.

Normalisation lives inside the model (as non-persistent buffers) so that every caller — the
predictor, ONNX export, training — feeds the same thing and cannot pair a backbone with the wrong
mean/std (EfficientNet-Lite's TF weights expect [-1, 1], MobileNetV2's ImageNet mean/std).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastsal.geometry import STRIDE, network_size
from fastsal.models.encoder import FastSalEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
__all__ = ["FastSal", "IMAGENET_MEAN", "IMAGENET_STD", "STRIDE", "network_size"]  # the size rule: fastsal.geometry


class FastSal(nn.Module):
    """``forward(x)``: (N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) logits.

    ``name`` is the registry name the model was built under (set by
    :func:`fastsal.models.build`), so a loaded model says what it is without its checkpoint.
    Sizes that are not multiples of 32 are resized to the nearest multiple on the way in and the
    logits resized back, so any input size works (the map is then slightly smoother).
    """

    mean: Tensor  # buffers (register_buffer), declared for type checkers
    std: Tensor

    def __init__(
        self,
        encoder: FastSalEncoder,
        decoder: nn.Module,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.name = ""
        self.encoder = encoder
        self.decoder = decoder
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB input of shape (N, 3, H, W); got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        th, tw = network_size((h, w))
        resized = (th, tw) != (h, w)
        if resized:
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        logits = self.decoder(self.encoder((x - self.mean) / self.std))
        if resized:
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits
