"""Training-time augmentation of a batch: flips, scale/crop and colour jitter, with the target
densities and fixation points moved exactly as the images.

Kept apart from the loop (:mod:`fastsal.training.trainer`) so it stays readable. ``cfg`` is an
:class:`fastsal.training.config.AugmentConfig` (its ``flip``, ``scale_aug`` and ``colour_aug``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def augment(x: torch.Tensor, density: torch.Tensor, points: list[torch.Tensor], cfg: Any,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flip, scale/crop and colour jitter of a batch; returns (images, densities, fixation maps).

    Geometry moves image and density together (one affine grid, bilinear) and the fixation points
    exactly, so the binary map is drawn afresh rather than resampled. A crop zooms in: the
    density's blur grows with the image, as one degree of visual angle does. Mass cropped away is
    dropped and the density renormalised.
    """
    n, _, h, w = x.shape
    flip = (torch.rand(n, generator=generator) < 0.5) if cfg.flip else torch.zeros(n, dtype=torch.bool)
    if cfg.scale_aug > 0:
        scale = 1.0 - cfg.scale_aug * torch.rand(n, generator=generator)
    else:
        scale = torch.ones(n)
    # Crop centre offsets in normalised coordinates, inside the image.
    tx = (1.0 - scale) * (2.0 * torch.rand(n, generator=generator) - 1.0)
    ty = (1.0 - scale) * (2.0 * torch.rand(n, generator=generator) - 1.0)
    fmaps = torch.zeros(n, h, w, dtype=torch.bool)
    for i, pts in enumerate(points):
        if not len(pts):
            continue
        # Pixel-edge coordinates e = p + 0.5; the grid maps output e_out to input
        # e_in = s * e_out + (t + 1 - s) * side / 2 (affine_grid, align_corners=False).
        s = float(scale[i])
        ex = (pts[:, 0] + 0.5 - (float(tx[i]) + 1.0 - s) * w / 2.0) / s
        ey = (pts[:, 1] + 0.5 - (float(ty[i]) + 1.0 - s) * h / 2.0) / s
        if flip[i]:
            ex = w - ex
        keep = (ex >= 0) & (ex < w) & (ey >= 0) & (ey < h)
        fmaps[i, ey[keep].long().clamp(0, h - 1), ex[keep].long().clamp(0, w - 1)] = True
    if cfg.scale_aug > 0:
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = scale
        theta[:, 1, 1] = scale
        theta[:, 0, 2] = tx
        theta[:, 1, 2] = ty
        grid = nn.functional.affine_grid(theta, [n, 1, h, w], align_corners=False)
        x = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        density = nn.functional.grid_sample(density[:, None], grid, mode="bilinear", padding_mode="zeros",
                                            align_corners=False)[:, 0]
        total = density.flatten(1).sum(1).clamp_min(1e-12)
        density = density / total[:, None, None]
    if flip.any():
        x[flip] = x[flip].flip(-1)
        density[flip] = density[flip].flip(-1)
    if cfg.colour_aug > 0:
        c = cfg.colour_aug

        def factor() -> torch.Tensor:
            return (1.0 + c * (2.0 * torch.rand(n, generator=generator) - 1.0))[:, None, None, None]

        x = x * factor()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * factor() + grey
        x = x.clamp_(0.0, 1.0)
    # A crop can leave an image without a fixation, and NSS then has nothing to score: mark the
    # density's peak pixel instead (the density still holds the blurred mass near the border).
    empty = ~fmaps.flatten(1).any(1)
    for i in torch.nonzero(empty).flatten().tolist():
        peak = int(density[i].flatten().argmax())
        fmaps[i].view(-1)[peak] = True
    return x, density, fmaps


__all__ = ["augment"]
