"""The FastSal encoder: taps after every backbone layer, fused by stride into E1..E4.

Layers are grouped by their output stride; each group is concatenated and PixelShuffle(2) moves
it one stride finer (channels / 4), trading channels for resolution at no parameter cost:

    E1 = cat(taps@/2, PS(cat(taps@/4)))   E2 = PS(cat(taps@/8))
    E3 = PS(cat(taps@/16))                E4 = PS(cat(taps@/32))

For MobileNetV2 this gives 28@/2, 24@/4, 136@/8, 520@/16 (Hu & McGuinness, ICPR 2020). The
stem (``features[0]``) is not tapped.
"""
from __future__ import annotations

from torch import Tensor, nn

GROUP_STRIDES = (2, 4, 8, 16, 32)


def _layer_channels(layer: nn.Module) -> int:
    convs = [m for m in layer.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


class FastSalEncoder(nn.Module):
    """Wraps a backbone's ``features``; ``forward`` returns (E1, E2, E3, E4)."""

    def __init__(self, features: nn.Sequential, feature_strides: tuple[int, ...]) -> None:
        super().__init__()
        if tuple(sorted(set(feature_strides[1:]))) != GROUP_STRIDES:
            raise ValueError(f"backbone must reach strides {GROUP_STRIDES}; got {sorted(set(feature_strides))}")
        self.features = features
        self.feature_strides = tuple(feature_strides)
        self.shuffle = nn.PixelShuffle(2)
        group = {s: sum(_layer_channels(features[i]) for i in range(1, len(features)) if feature_strides[i] == s)
                 for s in GROUP_STRIDES}
        self.out_channels = (
            group[2] + group[4] // 4,
            group[8] // 4,
            group[16] // 4,
            group[32] // 4,
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        taps: dict[int, list[Tensor]] = {s: [] for s in GROUP_STRIDES}
        x = self.features[0](x)
        for layer, stride in zip(list(self.features)[1:], self.feature_strides[1:]):
            x = layer(x)
            taps[stride].append(x)
        ps = self.shuffle
        cat = _cat
        e1 = cat([cat(taps[2]), ps(cat(taps[4]))])
        return e1, ps(cat(taps[8])), ps(cat(taps[16])), ps(cat(taps[32]))


def _cat(tensors: list[Tensor]) -> Tensor:
    import torch

    return tensors[0] if len(tensors) == 1 else torch.cat(tensors, dim=1)
