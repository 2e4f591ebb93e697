"""Fixation points <-> binary fixation maps <-> continuous fixation densities.

Conventions follow the MIT saliency benchmark (Bylinskii et al., TPAMI 2018): points are 0-based
``(x, y)`` pixel coordinates (column, row); a binary fixation map marks the pixel each fixation
rounds to, clamped into the image; a fixation density is that map blurred with a Gaussian of about
one degree of visual angle and normalised to sum to 1.
"""
from __future__ import annotations

import numpy as np

# About one degree of visual angle for OSIE at 800x600 (the benchmark's usual choice).
OSIE_SIGMA_PX = 24.0  # = defaults.SIGMA_PX; OSIE's one degree


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return pts.reshape(0, 2)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"fixation points must have shape (N, 2) as (x, y); got {pts.shape}")
    return pts


def fixation_map(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Binary fixation map of ``shape`` (H, W) with a 1 at each fixation's rounded pixel.

    Points outside the image are clamped to the border, as the benchmark does, so that no recorded
    fixation is silently dropped.
    """
    h, w = int(shape[0]), int(shape[1])
    pts = _as_points(points)
    fmap = np.zeros((h, w), dtype=bool)
    if len(pts):
        pts = pts[np.isfinite(pts).all(axis=1)]
        xs = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, w - 1)
        ys = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, h - 1)
        fmap[ys, xs] = True
    return fmap


def points_from_map(fmap: np.ndarray) -> np.ndarray:
    """0-based (x, y) points of the non-zero pixels of a binary fixation map."""
    ys, xs = np.nonzero(np.asarray(fmap))
    return np.stack([xs, ys], axis=1).astype(np.float64)


def rescale_points(points: np.ndarray, from_shape: tuple[int, int], to_shape: tuple[int, int]) -> np.ndarray:
    """Map (x, y) points from an image of ``from_shape`` (H, W) to one of ``to_shape``.

    Pixel centres are aligned (x' = (x + 0.5) * W'/W - 0.5), matching how images are resized.
    """
    pts = _as_points(points).copy()
    sy = to_shape[0] / from_shape[0]
    sx = to_shape[1] / from_shape[1]
    pts[:, 0] = (pts[:, 0] + 0.5) * sx - 0.5
    pts[:, 1] = (pts[:, 1] + 0.5) * sy - 0.5
    return pts


def _gaussian_kernel_rows(centres: np.ndarray, length: int, sigma: float) -> np.ndarray:
    """(N, length) rows: the truncated, normalised 1-D Gaussian of ``scipy.ndimage`` at each centre.

    The same sampled kernel as ``gaussian_filter(..., truncate=4.0)`` (radius int(4 sigma + 0.5),
    weights summing to 1) with zero padding outside the image.
    """
    radius = int(4.0 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    d = np.arange(length)[None, :] - centres[:, None]
    rows = np.zeros((len(centres), length))
    inside = np.abs(d) <= radius
    rows[inside] = kernel[d[inside] + radius]
    return rows


def _blur_points(ys: np.ndarray, xs: np.ndarray, weights: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian blur of a sparse histogram as a sum of separable Gaussians: (H x N) @ (N x W).

    Equals ``ndimage.gaussian_filter(hist, sigma, mode="constant")`` to rounding, at a small
    fraction of its cost for the tens to hundreds of fixations an image has (the gold standard
    blurs once per observer, so this dominates evaluation time otherwise).
    """
    gy = _gaussian_kernel_rows(ys, shape[0], sigma)
    gx = _gaussian_kernel_rows(xs, shape[1], sigma)
    return gy.T @ (weights[:, None] * gx)


def fixation_density(
    points: np.ndarray,
    shape: tuple[int, int],
    sigma: float = OSIE_SIGMA_PX,
    *,
    counts: bool = True,
) -> np.ndarray:
    """Continuous fixation density (H, W), float64, summing to 1.

    Each fixation contributes a Gaussian of standard deviation ``sigma`` pixels (about one degree
    of visual angle). With ``counts`` repeated fixations on one pixel add up; the binary map of the
    benchmark (``counts=False``) keeps one. Blurring uses zero padding, then renormalises, so mass
    near the border is not reflected back into the image. With no fixations the uniform density
    is returned, the only density that claims nothing.
    """
    h, w = int(shape[0]), int(shape[1])
    pts = _as_points(points)
    pts = pts[np.isfinite(pts).all(axis=1)] if len(pts) else pts
    if len(pts) == 0:
        return np.full((h, w), 1.0 / (h * w))
    xs = np.clip(np.rint(pts[:, 0]).astype(np.int64), 0, w - 1)
    ys = np.clip(np.rint(pts[:, 1]).astype(np.int64), 0, h - 1)
    if not counts:  # the binary map: each fixated pixel once
        ys, xs = np.unique(np.stack([ys, xs]), axis=1)
    weights = np.ones(len(xs))
    if sigma > 0:
        hist = _blur_points(ys, xs, weights, (h, w), sigma)
    else:
        hist = np.zeros((h, w), dtype=np.float64)
        np.add.at(hist, (ys, xs), weights)
    total = hist.sum()
    if not total > 0:
        return np.full((h, w), 1.0 / (h * w))
    return hist / total
