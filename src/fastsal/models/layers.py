"""Small building blocks shared by the backbones and decoders (torchvision module layout)."""
from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor`` without losing more than 10 % (MobileNet rule)."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU(nn.Sequential):
    """Conv -> BatchNorm -> ReLU6, keyed ``0``/``1``/``2`` like torchvision's Conv2dNormActivation.

    ``same_pad`` reproduces TensorFlow's "SAME" padding for strided convolutions (one more pixel
    right/bottom than left/top on even inputs), which TF-trained weights such as EfficientNet-Lite
    expect; it is applied by a parameter-free ZeroPad2d, so the state_dict keys do not change.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        *,
        activation: bool = True,
        bn_eps: float = 1e-5,
        same_pad: bool = False,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel_size, stride, _symmetric_padding(kernel_size, stride, same_pad),
                      groups=groups, bias=False),
            nn.BatchNorm2d(out_ch, eps=bn_eps),
        ]
        if activation:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)
        # A plain tuple, not a module: a child module would join the Sequential's forward.
        self.pad = _tf_same_pad(kernel_size, stride) if same_pad else None

    def forward(self, x: Tensor) -> Tensor:
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return super().forward(x)


def _symmetric_padding(kernel_size: int, stride: int, same_pad: bool) -> int:
    if same_pad and stride > 1:
        return 0  # padded explicitly and asymmetrically in forward
    return (kernel_size - 1) // 2


def _tf_same_pad(kernel_size: int, stride: int) -> tuple[int, int, int, int] | None:
    """TF 'SAME' padding (left, right, top, bottom) for an even-sized input.

    Every size the encoders accept is a multiple of 32, so every strided layer sees an even size
    and the padding is static (exportable to ONNX as a constant Pad).
    """
    if stride == 1:
        return None
    total = max(kernel_size - stride, 0)
    left = total // 2
    return (left, total - left, left, total - left)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> depthwise kxk -> 1x1 linear projection (+ identity).

    Layout and keys follow torchvision (``conv.0`` … ``conv.3``) so its checkpoints load strictly.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        expand_ratio: float,
        kernel_size: int = 3,
        *,
        bn_eps: float = 1e-5,
        same_pad: bool = False,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = int(round(in_ch * expand_ratio))
        self.use_res_connect = stride == 1 and in_ch == out_ch
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_ch, hidden, 1, bn_eps=bn_eps))
        layers += [
            ConvBNReLU(hidden, hidden, kernel_size, stride, groups=hidden, bn_eps=bn_eps, same_pad=same_pad),
            nn.Conv2d(hidden, out_ch, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_ch, eps=bn_eps),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_ch

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor], *, within: nn.Module | None = None) -> int:
    """Give every BatchNorm in ``within`` (default: all of ``model``) the running statistics its
    input has on ``batches``, re-splitting its affine map so that eval mode computes exactly what
    it computed before. Returns how many BNs changed.

    Why: in train mode a BN normalises by the batch's own mean and variance, so it only computes
    what it does in eval mode when its running statistics describe its input. Weights whose BN was
    folded away (TFLite files: :func:`fastsal.models.mobilenetv2.from_tflite` makes identity BNs
    with mean 0 and variance 1) break that, and fine-tuning them in train mode would start from a
    network unlike the pretrained one. Measured for ``fastsal_a`` from the TFLite file on a batch of
    8 OSIE images at 192x256: the cosine between train- and eval-mode encoder features at its four
    taps is 0.07, 0.12, 0.07, 0.01 with identity BNs, and 0.99, 0.98, 0.96, 0.77 after
    recalibrating on 64 other images (what is left is the noise of small-batch statistics).

    The maths: an eval-mode BN is ``y -> a * y + c`` with ``a = w / sqrt(v + eps)`` and
    ``c = b - a * m``. With ``mu`` and ``s2`` the per-channel mean and (biased) variance of ``y``
    over ``batches`` (``model`` run in eval mode), setting ``m = mu``, ``v = s2``,
    ``w = a * sqrt(s2 + eps)`` and ``b = c + a * mu`` keeps ``a`` and ``c``.
    """
    scope = model if within is None else within
    bns = [m for m in scope.modules() if isinstance(m, nn.BatchNorm2d) and m.affine and m.track_running_stats]
    # per BN: [per-channel sum, sum of squares] (0.0 until the first batch adds a Tensor), values per channel
    sums: dict[nn.Module, list[Any]] = {}

    def collect(module: nn.Module, args: tuple[Tensor, ...]) -> None:
        y = args[0].detach().double()
        acc = sums.setdefault(module, [0.0, 0.0, 0])  # per-channel sum, sum of squares; values per channel
        acc[0] = acc[0] + y.sum((0, 2, 3))
        acc[1] = acc[1] + (y * y).sum((0, 2, 3))
        acc[2] += y.numel() // y.shape[1]

    hooks = [bn.register_forward_pre_hook(collect) for bn in bns]
    was_training = model.training
    try:
        model.eval()
        for x in batches:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    for bn in bns:
        if bn not in sums:  # not reached by the forward pass
            continue
        total, squares, count = sums[bn]
        # affine and tracking running stats (how bns was chosen): both buffers exist
        assert bn.running_mean is not None and bn.running_var is not None
        mu = total / count
        s2 = (squares / count - mu * mu).clamp_(min=0.0)
        a = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        c = bn.bias.double() - a * bn.running_mean.double()
        bn.running_mean.copy_(mu)
        bn.running_var.copy_(s2)
        bn.weight.copy_(a * torch.sqrt(s2 + bn.eps))
        bn.bias.copy_(c + a * mu)
    return len(sums)
