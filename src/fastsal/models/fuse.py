"""Exact inference-time rewrites of a FastSal model: BatchNorm folding and a fused FastSal-C head.

Both rewrites change how the output is computed, never what it is (up to float rounding, ~1e-6
relative). They are for inference and export only: the fused modules have no BatchNorm left to
train and the fused C decoder's weights are derived from (not shared with) the original head.

BatchNorm folding
-----------------
In eval mode ``BN(conv(x)) = g * (W x + b - mu) / sqrt(var + eps) + beta`` is itself a conv with
``W' = W * g / sqrt(var + eps)`` (per output channel) and ``b' = (b - mu) * g / sqrt(var + eps) + beta``.
:func:`fold_batchnorm` replaces every ``Conv2d`` immediately followed by a ``BatchNorm2d`` inside
an ``nn.Sequential`` (the layout of every backbone and inverted-residual block here) with the
folded conv and turns the BatchNorm into ``nn.Identity`` (state_dict keys of the convs survive).

The FastSal-C decoder rewrite
-----------------------------
DecoderC computes, with adapters ``a_i = ReLU(conv1x1(E_i))`` (128/256/512/512 channels; a_1 at
stride 2, size h x w) and ``U_i`` = bilinear upsampling (align_corners=True) to h x w (U_1 = id)::

    X   = cat(U_1 a_1, U_2 a_2, U_3 a_3, U_4 a_4)           1408 ch @ /2
    out = conv3x3_{352->1, pad 1}(PixelShuffle2(X))          1 ch @ /1

Everything after the ReLUs is linear, so it can be reordered exactly:

1. *3x3 conv after PixelShuffle(2) = 3x3 conv before it, with 4 output phases.* PixelShuffle
   puts ``X[4c + 2dy + dx, y, x]`` at full-resolution pixel ``(2y+dy, 2x+dx)``. The output pixel
   ``(2y+py, 2x+px)`` (phase ``p = 2py + px``) reads row ``2y + py + ky`` for ky in {-1, 0, 1};
   writing ``py + ky = 2*oy + dy`` with dy in {0, 1} that is stride-2 row ``y + oy`` and sub-row
   dy, where ``oy = floor((py + ky) / 2)`` is in {-1, 0} for py = 0 and in {0, 1} for py = 1 (same
   for columns). Zero padding of the full-resolution map is zero padding of the stride-2 map. So
   ``out = PixelShuffle2(conv3x3_{1408->4, pad 1}(X) )`` with kernel
   ``K[p, 4c+2dy+dx, oy+1, ox+1] = W[c, py+ky+1, px+kx+1]`` (bias b on all four phases), and
   each phase uses only a 2x2 window of the 3x3 offsets: 4 phases x 4 offsets = 16 non-zero
   (phase, offset) slices ``K[p, :, o]``, each a linear functional of the 1408 channels.

2. *Split the 3x3 conv into a 1x1 projection and a fixed shift-and-sum.* ``conv3x3_K(X)[p] =
   sum_o shift_o(K[p, :, o] . X)``: project X to 16 channels (one per non-zero (p, o) slice),
   then shift each to its offset and sum into its phase: a fixed grouped 3x3 conv
   ``S`` (4 groups of 4 channels, one-hot kernels).

3. *Push the projection through the concatenation and the upsampling.* The projection of a
   concatenation is the sum of per-branch projections ``P_i`` (16 x C_i slices of K), and a 1x1
   conv commutes with per-channel bilinear upsampling: ``P_i U_i a_i = U_i P_i a_i``. Hence::

       Z   = P_1 a_1 + U_2(P_2 a_2) + U_3(P_3 a_3) + U_4(P_4 a_4)        16 ch @ /2
       out = PixelShuffle2(S(Z) + b)                                      exact

   Instead of upsampling 1280 channels to stride 2, concatenating 1408 channels and running a
   352-channel 3x3 conv at full resolution (~155 M MAC at 192x256), the fused head projects each
   branch to 16 channels at its own resolution, upsamples 16 channels, and shifts-and-sums.
   The ReLU adapters are untouched (they are not linear). The spatial 3x3 structure survives in
   ``S`` after the upsampling, which is why the kernel itself cannot be moved before ``U_i``.
"""
from __future__ import annotations

import copy
from typing import cast

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fastsal.models.decoders import Adapter, DecoderC

# (phase p = 2*py + px, offset oy, ox in {-1, 0, 1}) of the 16 non-zero slices, grouped by phase.
_SLICES = tuple(
    (2 * py + px, oy, ox)
    for py in (0, 1)
    for px in (0, 1)
    for oy in ((-1, 0) if py == 0 else (0, 1))
    for ox in ((-1, 0) if px == 0 else (0, 1))
)


def head_as_phase_conv(head: nn.Conv2d) -> tuple[Tensor, Tensor]:
    """Rewrite a 3x3 conv (C -> 1, pad 1) applied after PixelShuffle(2) as a 3x3 conv
    (4C -> 4 phases, pad 1) applied before it. Returns (kernel (4, 4C, 3, 3), bias (4,))."""
    if head.kernel_size != (3, 3) or head.padding != (1, 1) or head.out_channels != 1 or head.groups != 1 \
            or head.stride != (1, 1) or head.dilation != (1, 1):
        raise ValueError(f"expected a 3x3 conv with padding 1 and one output channel; got {head}")
    w = head.weight.detach()[0]  # (C, 3, 3)
    c = w.shape[0]
    k = w.new_zeros(4, 4 * c, 3, 3)
    for py in (0, 1):
        for px in (0, 1):
            for ky in (-1, 0, 1):
                for kx in (-1, 0, 1):
                    oy, dy = divmod(py + ky, 2)
                    ox, dx = divmod(px + kx, 2)
                    k[2 * py + px, 2 * dy + dx::4, oy + 1, ox + 1] = w[:, ky + 1, kx + 1]
    bias = head.bias.detach() if head.bias is not None else w.new_zeros(())
    return k, bias.expand(4).clone()


class FusedDecoderC(nn.Module):
    """FastSal-C decoder rewritten exactly (see the module docstring): per-branch 1x1 projection
    to 16 channels, upsampling of 16 channels, sum, fixed grouped 3x3 shift-and-sum to 4 phases,
    PixelShuffle(2)."""

    shift: Tensor  # buffers (register_buffer), declared for type checkers
    bias: Tensor

    def __init__(self, adapters: nn.ModuleList, projections: list[Tensor], bias: Tensor) -> None:
        super().__init__()
        self.adapters = adapters
        self.projections = nn.ModuleList()
        for w in projections:
            conv = nn.Conv2d(w.shape[1], w.shape[0], 1, bias=False)
            conv.weight.data.copy_(w[:, :, None, None])
            self.projections.append(conv)
        n = len(_SLICES)
        shift = torch.zeros(4, n // 4, 3, 3)  # grouped: 4 groups (phases) of 4 input channels
        for j, (p, oy, ox) in enumerate(_SLICES):
            shift[p, j % (n // 4), oy + 1, ox + 1] = 1.0
        self.register_buffer("shift", shift)
        self.register_buffer("bias", bias.detach().clone().reshape(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, feats: tuple[Tensor, ...]) -> Tensor:
        z = self.projections[0](self.adapters[0](feats[0]))
        size = z.shape[-2:]
        for adapt, project, f in zip(list(self.adapters)[1:], list(self.projections)[1:], feats[1:]):
            z = z + F.interpolate(project(adapt(f)), size=size, mode="bilinear", align_corners=True)
        return self.shuffle(F.conv2d(z, self.shift, self.bias, padding=1, groups=4))


def fuse_decoder_c(decoder: DecoderC) -> FusedDecoderC:
    """Exact fused equivalent of a FastSal-C decoder (a copy; ``decoder`` is not modified)."""
    if not isinstance(decoder, DecoderC):
        raise TypeError(f"expected a DecoderC, got {type(decoder).__name__}")
    k, bias = head_as_phase_conv(decoder.head)  # (4, 1408, 3, 3)
    rows = torch.stack([k[p, :, oy + 1, ox + 1] for p, oy, ox in _SLICES])  # (16, 1408)
    # an Adapter is Sequential(Conv2d, ReLU); ModuleList and Sequential are typed to yield Module
    widths = [cast(nn.Conv2d, cast(Adapter, a)[0]).out_channels for a in decoder.adapters]
    projections = list(torch.split(rows, widths, dim=1))
    return FusedDecoderC(copy.deepcopy(decoder.adapters), projections, bias)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold every eval-mode Conv2d -> BatchNorm2d pair inside nn.Sequential containers, in place.

    The BatchNorm becomes ``nn.Identity``; the conv gains a bias. Returns ``module``.
    """
    for seq in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq.named_children())
        for (first, conv), (second, bn) in zip(children, children[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                setattr(seq, first, fuse_conv_bn_eval(conv.eval(), bn.eval()))
                setattr(seq, second, nn.Identity())
    return module


def fuse(model: nn.Module) -> nn.Module:
    """An equivalent copy of a FastSal model for inference / export: BatchNorm folded everywhere,
    and a FastSal-C decoder replaced by :class:`FusedDecoderC`. Other decoders keep their layout.

    The copy is in eval mode; ``model`` is not modified.
    """
    fused = copy.deepcopy(model).eval()
    fold_batchnorm(fused)
    decoder = getattr(fused, "decoder", None)
    if isinstance(decoder, DecoderC):
        fused.decoder = fuse_decoder_c(decoder)
    return fused.eval()


__all__ = ["FusedDecoderC", "fold_batchnorm", "fuse", "fuse_decoder_c", "head_as_phase_conv"]
