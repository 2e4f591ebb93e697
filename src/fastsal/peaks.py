"""Summaries of a fixation-density map that fit in a JSON answer: a coarse grid and the top-k
fixation candidates.

A full map is as large as its photo (a 12 MP photo gives 48 MB of float32); clients that crop
thumbnails or check layouts want a handful of numbers instead. Both summaries work on probability
*mass* (sums of the map over regions), not on density values at single pixels, so they mean the
same thing at every image size: "the chance that a fixation lands in this cell / near this point".

**Fixation candidates** (:func:`fixation_candidates`), defined precisely:

1. The map is summed into cells, at most :data:`PEAK_GRID` on the long side (the network itself
   sees a few hundred pixels a side, so a finer search finds little new, and it stays fast on camera photos).
2. Candidates are the cells that are local maxima of that mass (no larger value among their 8
   neighbours), taken largest first (ties in row-major order).
3. Non-maximum suppression: a candidate closer than ``2 * r`` to one already taken is dropped,
   where ``r = radius * diagonal`` (default 5 % of the image's diagonal, at least 1 pixel).
4. Each kept candidate reports the map's highest pixel inside its cell as (x, y) (pixels of the
   original image, x to the right, y down, 0-based) and, as ``probability``, the map's mass within
   ``r`` of that cell's centre. The discs are disjoint (centres >= ``2 r`` apart), so the
   probabilities of all candidates add up to at most 1.

Pure NumPy/SciPy: no PyTorch, so servers and viewers can use it.
"""
from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
from scipy import ndimage

from fastsal.errors import FastSalError

#: Long side, in cells, of the grid the candidates are searched on.
PEAK_GRID = 256
#: Default disc radius as a fraction of the image diagonal.
PEAK_RADIUS = 0.05
#: Most candidates one call returns (a map has few meaningful peaks; this bounds the answer size).
MAX_CANDIDATES = 50
#: Most cells on a grid's long side (a 256x256 grid of floats is ~1 MB of JSON).
MAX_GRID = 256

__all__ = ["MAX_CANDIDATES", "MAX_GRID", "PEAK_GRID", "PEAK_RADIUS", "Candidate", "PeakError", "fixation_candidates",
           "grid", "grid_shape"]


class PeakError(FastSalError, ValueError):
    """A map or parameter the summaries cannot use; one line saying what was expected."""


class Candidate(TypedDict):
    """One fixation candidate: pixel position in the original image and the mass near it."""

    x: int
    y: int
    probability: float


def _check_map(prob: np.ndarray) -> np.ndarray:
    m = np.asarray(prob)
    if m.ndim != 2 or 0 in m.shape:
        raise PeakError(f"expected a non-empty (H, W) map, got shape {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise PeakError("the map has NaN, inf or negative values; pass a probability map (fastsal's predict output)")
    return m


def grid_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(rows, cols) of a grid with ``long_side`` cells on the image's long side, same aspect, each
    side between 1 and the image's own pixel count (a 1x10000 image gets a 1xN grid)."""
    if not 1 <= long_side <= MAX_GRID:
        raise PeakError(f"grid size must be in 1..{MAX_GRID}, got {long_side}")
    scale = long_side / max(height, width)
    rows = min(height, max(1, round(height * scale)))
    cols = min(width, max(1, round(width * scale)))
    return rows, cols


def _edges(n: int, cells: int) -> np.ndarray:
    """Integer boundaries splitting ``n`` pixels into ``cells`` non-empty runs (cells <= n)."""
    return np.floor(np.arange(cells + 1) * (n / cells)).astype(np.int64)


def _pool(m: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(cell sums (rows, cols) float64, row edges, column edges): every pixel in exactly one cell."""
    re, ce = _edges(m.shape[0], rows), _edges(m.shape[1], cols)
    sums = np.add.reduceat(np.add.reduceat(m.astype(np.float64, copy=False), re[:-1], axis=0), ce[:-1], axis=1)
    return sums, re, ce


def grid(prob: np.ndarray, long_side: int = 32) -> np.ndarray:
    """The map's probability mass per cell, (rows, cols) float64 summing to the map's total (1 for
    fastsal's maps); ``long_side`` cells on the long side (:func:`grid_shape`)."""
    m = _check_map(prob)
    rows, cols = grid_shape(m.shape[0], m.shape[1], long_side)
    return _pool(m, rows, cols)[0]


def fixation_candidates(prob: np.ndarray, k: int = 5, radius: float = PEAK_RADIUS) -> list[Candidate]:
    """Up to ``k`` fixation candidates, most probable first (definition in the module docstring)."""
    m = _check_map(prob)
    if not 0 <= k <= MAX_CANDIDATES:
        raise PeakError(f"k must be in 0..{MAX_CANDIDATES}, got {k}")
    if not (math.isfinite(radius) and 0.0 < radius <= 1.0):
        raise PeakError(f"radius must be a fraction of the diagonal in (0, 1], got {radius}")
    if k == 0:
        return []
    h, w = m.shape
    rows, cols = grid_shape(h, w, min(PEAK_GRID, max(h, w)))
    mass, re, ce = _pool(m, rows, cols)
    cy = (re[:-1] + re[1:] - 1) / 2.0  # cell centres in pixels
    cx = (ce[:-1] + ce[1:] - 1) / 2.0
    r = max(1.0, radius * math.hypot(h, w))
    peak = (mass == ndimage.maximum_filter(mass, size=3, mode="constant", cval=-1.0)) & (mass > 0)
    idx = np.flatnonzero(peak)
    order = idx[np.argsort(-mass.ravel()[idx], kind="stable")]  # largest first, ties row-major
    kept: list[tuple[int, int]] = []
    for flat in order:
        i, j = divmod(int(flat), cols)
        if all((cy[i] - cy[a]) ** 2 + (cx[j] - cx[b]) ** 2 >= (2 * r) ** 2 for a, b in kept):
            kept.append((i, j))
            if len(kept) == k:
                break
    yy, xx = cy[:, None], cx[None, :]
    out: list[Candidate] = []
    for i, j in kept:
        cell = m[re[i]:re[i + 1], ce[j]:ce[j + 1]]
        di, dj = np.unravel_index(int(np.argmax(cell)), cell.shape)
        near = (yy - cy[i]) ** 2 + (xx - cx[j]) ** 2 <= r * r
        out.append({"x": int(ce[j] + dj), "y": int(re[i] + di), "probability": float(mass[near].sum())})
    return out
