"""FastSal decoders over the encoder's (E1, E2, E3, E4): A (addition), C (concatenation), bare.

Every decoder returns one channel of logits at the input resolution; densities come from a
softmax over pixels (:func:`fastsal.losses.log_density`), so no activation is applied here.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from fastsal.models.layers import InvertedResidual


class Adapter(nn.Sequential):
    """1x1 convolution with bias + ReLU: brings an encoder output to the decoder's width."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(nn.Conv2d(in_ch, out_ch, 1, bias=True), nn.ReLU(inplace=True))


class AdditionBlock(nn.Module):
    """y = x + skip, then y + IR(y): an inverted residual (expansion 2) refines the sum.

    IR keeps its own identity shortcut, so the block returns 2y + F(y) as in the authors' model.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.ir = InvertedResidual(channels, channels, stride=1, expand_ratio=2)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        y = x if skip is None else x + skip
        return y + self.ir(y)


class DecoderA(nn.Module):
    """FastSal-A: coarse-to-fine addition; PixelShuffle(2) between levels (512→128→32→8→2)."""

    widths = (8, 32, 128, 512)

    def __init__(self, in_channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(Adapter(c, w) for c, w in zip(in_channels, self.widths))
        self.blocks = nn.ModuleList(AdditionBlock(w) for w in self.widths)
        self.shuffle = nn.PixelShuffle(2)
        self.head = init_head(nn.Conv2d(self.widths[0] // 4, 1, 3, padding=1))

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        a = [adapt(f) for adapt, f in zip(self.adapters, feats)]
        f = self.shuffle(self.blocks[3](a[3]))
        for level in (2, 1, 0):
            f = self.shuffle(self.blocks[level](a[level], f))
        return self.head(f)


class DecoderC(nn.Module):
    """FastSal-C: adapt, upsample all to stride 2, concatenate, PixelShuffle(2), 3x3 conv."""

    widths = (128, 256, 512, 512)

    def __init__(self, in_channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(Adapter(c, w) for c, w in zip(in_channels, self.widths))
        self.shuffle = nn.PixelShuffle(2)
        self.head = init_head(nn.Conv2d(sum(self.widths) // 4, 1, 3, padding=1))

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        a = [adapt(f) for adapt, f in zip(self.adapters, feats)]
        size = a[0].shape[-2:]
        ups = [a[0]] + [F.interpolate(x, size=size, mode="bilinear", align_corners=True) for x in a[1:]]
        return self.head(self.shuffle(torch.cat(ups, dim=1)))


class DecoderBare(nn.Module):
    """The "no complex decoder" control: 1x1 conv on E4, bilinear upsampling to the input size.

    It measures how much of FastSal's accuracy the encoder carries on its own.
    """

    def __init__(self, in_channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.head = init_head(nn.Conv2d(in_channels[3], 1, 1))

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        e4 = feats[3]  # stride 16
        return F.interpolate(self.head(e4), scale_factor=16, mode="bilinear", align_corners=False)


def init_head(conv: nn.Conv2d) -> nn.Conv2d:
    """Near-zero logits at initialisation: the first density is almost uniform, so training starts
    from a finite, small KL divergence instead of a spike on one pixel."""
    nn.init.normal_(conv.weight, std=1e-3)
    assert conv.bias is not None  # every caller builds the head with a bias (nn.Conv2d's default)
    nn.init.zeros_(conv.bias)
    return conv


DECODERS: dict[str, type[nn.Module]] = {"a": DecoderA, "c": DecoderC, "bare": DecoderBare}
