"""Saliency-aware cropping: the window of a given aspect ratio that keeps the most predicted attention.

    import fastsal
    c = fastsal.crop("photo.jpg", aspect=(16, 9))     # Crop(x, y, w, h, score=0.93, ...)
    x, y, w, h = c.box                                 # original pixels; score: share of the map inside

    from fastsal.cropping import crop_boxes
    crops = crop_boxes(my_density, ["16:9", "1:1", "4:5"])   # any map, e.g. your own model's

Why a window search and not a heuristic: a crop is only as good as the share of what people look
at that it keeps, and a fixation-density map says exactly that share for every window. So the box
is the one that maximises the map's mass inside it, found by an **exact** search over every
integer position, not sampled or refined greedily.

How the search stays exact and fast (well under 1 ms per aspect at 1024 px):

- The map is read as piecewise constant: each cell's mass is spread evenly over the image pixels
  it covers. A map at the image's own size is then exactly itself; the network's own map (288x384 for the default; what
  :func:`crop` searches, skipping the full-size resize) covers 4x4-pixel blocks of a 1024x768
  photo; a map larger than ``max_side`` is first summed into blocks of whole cells (mass kept).
- The mass of every window comes from the map's summed-area table (SAT), interpolated bilinearly
  between cell corners: for a piecewise-constant map that interpolation is the exact integral, so
  the mass of a window at any pixel position is exact. The table is built separably and only where
  needed: cumulative sums along one axis, then along the other for the candidate bands alone.
- Under that model the mass is a piecewise-bilinear function of the window's position, whose
  pieces change only where a window edge crosses a cell edge. A bilinear piece takes its largest
  value over whole pixels at a corner, so only positions next to those crossings (plus the image's
  edges and centre, for the tie rule) can win: the search evaluates all of them, which is every
  position when cells are a pixel or two wide and far fewer when they are larger.
- At full height or full width (the default ``scale=1``) the window can slide one way only and the
  search is one-dimensional.

Ties (a uniform map, a flat region) go to the most centred window, so a map with nothing to say
gives the centre crop, the conventional default.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable, Sequence

import numpy as np

from fastsal.errors import FastSalError

__all__ = [
    "Aspect", "Crop", "CropError", "DEFAULT_MAX_SIDE", "aspect_label", "best_window", "centre_window", "crop",
    "crop_box", "crop_boxes", "crop_image", "parse_aspect", "parse_aspects", "small_density", "window_size",
]

#: Maps larger than this (long side, cells) are summed into blocks before the search: 256 keeps the
#: search far below a millisecond and is finer than the network's own output.
DEFAULT_MAX_SIDE = 256
#: Widest accepted aspect ratio either way (100:1): anything longer is a typo, not a thumbnail.
MAX_ASPECT = 100
# Masses within this share of the map's total count as equal (float64 round-off in the SAT is
# ~1e-16): so a uniform map ties everywhere and the centred window wins.
_TIE = 1e-12
# Scales tried between ``scale`` and ``min_scale`` when zooming (see crop_boxes).
_ZOOM_STEPS = 20


class CropError(FastSalError, ValueError):
    """An unusable crop request (bad aspect, scale or map); one line naming the value and the fix."""


@dataclass(frozen=True)
class Aspect:
    """A target aspect ratio, width:height, kept exact (``Fraction``) and with the user's spelling.

    ``label`` is how the user wrote it (``"16:9"``); ``tag`` is the file-name form (``"16x9"``).
    """

    ratio: Fraction
    label: str

    @property
    def tag(self) -> str:
        return self.label.replace(":", "x")


@dataclass(frozen=True)
class Crop:
    """One crop: the box ``(x, y, w, h)`` in original image pixels and the map's share inside it.

    ``score`` is the share (0..1) of the density map's mass inside the box: with a fastsal map,
    the predicted share of where people look that the crop keeps. ``scale`` is the window's side
    relative to the largest window of this aspect that fits the image.
    """

    x: int
    y: int
    w: int
    h: int
    score: float
    aspect: str
    scale: float = 1.0

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x, y, w, h)``: left, top, width, height in the image's pixels."""
        return (self.x, self.y, self.w, self.h)

    @property
    def pil_box(self) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)``, what ``PIL.Image.crop`` takes."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)

    def to_dict(self) -> dict[str, Any]:
        return {"aspect": self.aspect, "x": self.x, "y": self.y, "w": self.w, "h": self.h,
                "score": round(float(self.score), 6), "scale": round(float(self.scale), 6)}


# -- aspects and window sizes -------------------------------------------------------------------

_ASPECT_TEXT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*[:xX/]\s*([0-9]*\.?[0-9]+)\s*$")


def parse_aspect(value: Any) -> Aspect:
    """``"16:9"``, ``"16x9"``, ``(16, 9)``, ``1.91`` or an :class:`Aspect` -> :class:`Aspect`.

    Numbers are read as exact decimals (``"1.91:1"`` is 191/100), so the window arithmetic in
    :func:`window_size` is exact rational arithmetic, not floating point.
    """
    if isinstance(value, Aspect):
        return value
    try:
        if isinstance(value, str):
            m = _ASPECT_TEXT.match(value)
            if m is None:
                raise ValueError
            w, h = Fraction(m.group(1)), Fraction(m.group(2))
            label = f"{_num(w)}:{_num(h)}"
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            w, h = Fraction(str(value[0])), Fraction(str(value[1]))
            label = f"{_num(w)}:{_num(h)}"
        elif isinstance(value, (int, float, Fraction)) and not isinstance(value, bool):
            w, h = Fraction(str(value)), Fraction(1)
            label = f"{_num(w)}:1"
        else:
            raise ValueError
    except (ValueError, ZeroDivisionError):
        raise CropError(f"aspect {value!r}: expected WIDTH:HEIGHT such as 16:9, 1:1 or 4:5") from None
    if w <= 0 or h <= 0:
        raise CropError(f"aspect {value!r}: both sides must be positive, e.g. 16:9")
    ratio = w / h
    if not Fraction(1, MAX_ASPECT) <= ratio <= MAX_ASPECT:
        raise CropError(f"aspect {value!r}: ratio must be between 1:{MAX_ASPECT} and {MAX_ASPECT}:1")
    return Aspect(ratio, label)


def _num(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{float(v):g}"


def parse_aspects(values: str | Any | Iterable[Any]) -> list[Aspect]:
    """Several aspects: ``"16:9,1:1,4:5"``, a list of anything :func:`parse_aspect` takes, or one aspect.
    Duplicates (the same ratio however spelt) are dropped: they would write the same file twice."""
    if isinstance(values, str):
        items: list[Any] = [v for v in values.split(",") if v.strip()]
    elif isinstance(values, (Aspect, Fraction, int, float)) or (
            isinstance(values, tuple) and len(values) == 2 and all(isinstance(v, (int, float)) for v in values)):
        items = [values]
    else:
        items = list(values)
    if not items:
        raise CropError("no aspect given; pass one or more such as 16:9,1:1,4:5")
    seen: dict[Fraction, Aspect] = {}
    for item in items:
        a = parse_aspect(item)
        seen.setdefault(a.ratio, a)
    return list(seen.values())


def aspect_label(aspect: Any) -> str:
    """The canonical ``"W:H"`` text of an aspect (as given by the user)."""
    return parse_aspect(aspect).label


def _round_half_up(v: Fraction | float) -> int:
    return math.floor(v + Fraction(1, 2)) if isinstance(v, Fraction) else math.floor(v + 0.5)


def window_size(image_size: Sequence[int], aspect: Any, scale: float = 1.0) -> tuple[int, int]:
    """(h, w) in pixels of the window of ``aspect`` at ``scale`` in an image of (H, W) pixels.

    At ``scale=1`` it is the largest window of the aspect that fits: the side the aspect makes
    binding is the image's own (full height for an aspect wider than the image, else full width)
    and the other is the nearest whole number of pixels to the exact ratio, halves rounded up,
    never beyond the image and at least 1 (so on an odd size the box's ratio is off by under half
    a pixel on one side: 16:9 of 801x601 is 801x451, 450.5625 exactly). At ``scale < 1`` the
    binding side is ``scale`` times the full side, rounded the same way, and the other follows.
    """
    H, W = (int(v) for v in image_size)
    if H < 1 or W < 1:
        raise CropError(f"image size must be positive, got {H}x{W}")
    if not (isinstance(scale, (int, float)) and 0.0 < scale <= 1.0):
        raise CropError(f"scale must be in (0, 1], got {scale!r}")
    r = parse_aspect(aspect).ratio  # w / h
    if H * r <= W:  # the aspect is narrower than (or as wide as) the image: full height binds
        h = H if scale == 1.0 else max(1, min(H, _round_half_up(H * scale)))
        w = max(1, min(W, _round_half_up(h * r)))
    else:  # wider than the image: full width binds
        w = W if scale == 1.0 else max(1, min(W, _round_half_up(W * scale)))
        h = max(1, min(H, _round_half_up(w / r)))
    return h, w


def centre_window(image_size: Sequence[int], aspect: Any, scale: float = 1.0) -> tuple[int, int, int, int]:
    """The centre crop ``(x, y, w, h)``: the window of :func:`window_size`, centred (an odd leftover
    pixel goes to the right and bottom: ``x = (W - w) // 2``)."""
    H, W = (int(v) for v in image_size)
    h, w = window_size((H, W), aspect, scale)
    return (W - w) // 2, (H - h) // 2, w, h


# -- the search ----------------------------------------------------------------------------------

class _Grid:
    """A density prepared for searching: the (block-summed) map, its cell edges in image pixels and
    its cumulative sums along each axis, made when first needed and shared by every aspect."""

    def __init__(self, cells: np.ndarray, ys: np.ndarray, xs: np.ndarray, image_size: tuple[int, int]) -> None:
        self.cells = cells              # (gh, gw) float64 masses
        self.ys, self.xs = ys, xs       # (gh + 1,), (gw + 1,) cell edges in image pixels, 0 .. H and 0 .. W
        self.total = float(cells.sum())
        self.image_size = image_size
        self._rows: np.ndarray | None = None
        self._cols: np.ndarray | None = None

    def cumulative(self, transposed: bool) -> np.ndarray:
        """Cumulative sums along x with a leading 0, (gh, gw + 1); of the transposed map if asked.
        Why rows: numpy's cumsum along the contiguous axis is several times faster than along the other."""
        cached = self._cols if transposed else self._rows
        if cached is None:
            m = np.ascontiguousarray(self.cells.T) if transposed else self.cells
            cached = np.zeros((m.shape[0], m.shape[1] + 1))
            np.cumsum(m, axis=1, out=cached[:, 1:])
            if transposed:
                self._cols = cached
            else:
                self._rows = cached
        return cached


def _check_density(density: Any) -> np.ndarray:
    d = np.asarray(density)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2 or 0 in d.shape:
        raise CropError(f"expected a non-empty (H, W) density map, got shape {d.shape}")
    if d.dtype.kind not in "uif":
        raise CropError(f"density map must hold numbers, got dtype {d.dtype}")
    return d


def _block_sum(d: np.ndarray, f: int) -> np.ndarray:
    """Sums of f x f blocks (the last row and column of blocks may be smaller), float64.
    Strided adds, one pass over the map: several times faster than reshape-sum or reduceat."""
    mh, mw = d.shape
    rows = np.zeros((-(-mh // f), mw))
    for k in range(min(f, mh)):
        part = d[k::f]
        rows[: len(part)] += part
    out = np.zeros((rows.shape[0], -(-mw // f)))
    for k in range(min(f, mw)):
        part = rows[:, k::f]
        out[:, : part.shape[1]] += part
    return out


def _prepare(density: Any, image_size: Sequence[int] | None, max_side: int | None) -> _Grid:
    d = _check_density(density)
    mh, mw = d.shape
    H, W = (mh, mw) if image_size is None else (int(image_size[0]), int(image_size[1]))
    if H < 1 or W < 1:
        raise CropError(f"image size must be positive, got {H}x{W}")
    if max_side is not None and int(max_side) < 1:
        raise CropError(f"max_side must be a positive number of cells or None, got {max_side!r}")
    f = 1 if max_side is None else max(1, -(-max(mh, mw) // int(max_side)))
    if f > 1:  # sum whole blocks of f x f cells: mass kept, search small
        cells = _block_sum(d, f)
        ey = np.minimum(np.arange(cells.shape[0] + 1) * f, mh).astype(np.float64)
        ex = np.minimum(np.arange(cells.shape[1] + 1) * f, mw).astype(np.float64)
    else:
        cells = np.asarray(d, dtype=np.float64)
        ey, ex = np.arange(mh + 1, dtype=np.float64), np.arange(mw + 1, dtype=np.float64)
    grid = _Grid(cells, ey * (H / mh), ex * (W / mw), (H, W))
    if not math.isfinite(grid.total) or grid.total <= 0 or float(cells.min()) < 0:
        raise CropError("density map must be finite and non-negative with some mass; pass probabilities "
                        "(e.g. Predictor.predict's map), not log-densities")
    return grid


def _candidates(edges: np.ndarray, length: int, n: int) -> np.ndarray:
    """Whole-pixel window starts in 0..length-n that can hold the best window (module docstring):
    next to each cell edge crossing of either window edge, the two ends and the centre."""
    last = length - n
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    if len(edges) >= last:  # cells about a pixel wide: every position is a candidate anyway
        return np.arange(last + 1, dtype=np.int64)
    at = np.concatenate([edges, edges - n, [last / 2]])
    c = np.concatenate([np.floor(at), np.ceil(at), [0, last]]).astype(np.int64)
    return np.unique(np.clip(c, 0, last))


def _interp(cum: np.ndarray, edges: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``cum`` (.., len(edges)) read at positions ``at`` along its last axis, linearly between edges:
    for cumulative sums of a piecewise-constant map, the exact integral up to ``at``."""
    i = np.clip(np.searchsorted(edges, at, side="right") - 1, 0, len(edges) - 2)
    frac = np.clip((at - edges[i]) / (edges[i + 1] - edges[i]), 0.0, 1.0)
    return cum[..., i] * (1.0 - frac) + cum[..., i + 1] * frac


def _window_sums(cum: np.ndarray, edges: np.ndarray, starts: np.ndarray, n: int, length: int) -> np.ndarray:
    """Mass of [s, s + n) for each start s, along the last axis of the cumulative table ``cum``."""
    if n == length:  # one window over the whole axis: the total, without interpolation
        return cum[..., -1:] - cum[..., :1]
    at = starts.astype(np.float64)
    return _interp(cum, edges, at + n) - _interp(cum, edges, at)


def _masses(grid: _Grid, ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    """(len(ys), len(xs)) masses of the h x w windows at every (y, x) pair, exact for the
    piecewise-constant map. The axis with fewer candidate starts is collapsed first (on the map or
    its transpose), so the full-height or full-width case costs one pass over the cells."""
    H, W = grid.image_size
    if len(xs) <= len(ys):  # collapse x first: per-row masses of [x, x + w), then along y
        if w == W:
            band = grid.cells.sum(axis=1)[:, None]  # (gh, 1)
        else:
            band = _window_sums(grid.cumulative(False), grid.xs, xs, w, W)  # (gh, nx)
        cum = np.zeros((band.shape[1], band.shape[0] + 1))
        np.cumsum(np.ascontiguousarray(band.T), axis=1, out=cum[:, 1:])
        return _window_sums(cum, grid.ys, ys, h, H).T  # (ny, nx)
    if h == H:
        band = grid.cells.sum(axis=0)[:, None]  # (gw, 1)
    else:
        band = _window_sums(grid.cumulative(True), grid.ys, ys, h, H)  # (gw, ny)
    cum = np.zeros((band.shape[1], band.shape[0] + 1))
    np.cumsum(np.ascontiguousarray(band.T), axis=1, out=cum[:, 1:])
    return _window_sums(cum, grid.xs, xs, w, W)  # (ny, nx)


def _search(grid: _Grid, h: int, w: int) -> tuple[int, int, float]:
    """(x, y, mass) of the best h x w window; ties within _TIE of the total go to the most centred."""
    H, W = grid.image_size
    ys = _candidates(grid.ys, H, h)
    xs = _candidates(grid.xs, W, w)
    m = _masses(grid, ys, xs, h, w)
    best = float(m.max())
    tied = m >= best - _TIE * grid.total
    if np.count_nonzero(tied) > 1:
        dy = (ys - (H - h) / 2.0) ** 2
        dx = (xs - (W - w) / 2.0) ** 2
        dist = np.where(tied, dy[:, None] + dx[None, :], np.inf)
        iy, ix = np.unravel_index(int(np.argmin(dist)), dist.shape)  # first = lowest y, then x
    else:
        iy, ix = np.unravel_index(int(np.argmax(m)), m.shape)
    return int(xs[ix]), int(ys[iy]), float(m[iy, ix])


def best_window(density: Any, size: Sequence[int], *, image_size: Sequence[int] | None = None,
                max_side: int | None = None) -> tuple[int, int, float]:
    """``(x, y, mass)`` of the ``size`` = (h, w) window (image pixels) holding the most of ``density``.

    Exact over every whole-pixel position of an image of ``image_size`` (default: the map's own
    size) that the map covers, each cell's mass spread evenly over its pixels. ``mass`` is the
    absolute mass inside (divide by the map's sum for a share). ``max_side=None`` searches the map
    at its own resolution; an integer sums it into blocks first (see :func:`crop_boxes`).
    """
    grid = _prepare(density, image_size, max_side)
    h, w = (int(v) for v in size)
    H, W = grid.image_size
    if not (1 <= h <= H and 1 <= w <= W):
        raise CropError(f"window {h}x{w} does not fit the image {H}x{W}")
    return _search(grid, h, w)


def _check_scales(scale: float, min_scale: float | None, keep: float) -> None:
    if not (isinstance(scale, (int, float)) and 0.0 < scale <= 1.0):
        raise CropError(f"scale must be in (0, 1], got {scale!r}")
    if min_scale is not None and not (isinstance(min_scale, (int, float)) and 0.0 < min_scale <= scale):
        raise CropError(f"min_scale must be in (0, scale={scale:g}], got {min_scale!r}")
    if not (isinstance(keep, (int, float)) and 0.0 < keep <= 1.0):
        raise CropError(f"keep must be in (0, 1], got {keep!r}")


def crop_boxes(
    density: Any,
    aspects: Any,
    *,
    image_size: Sequence[int] | None = None,
    scale: float = 1.0,
    min_scale: float | None = None,
    keep: float = 0.9,
    max_side: int | None = DEFAULT_MAX_SIDE,
) -> list[Crop]:
    """The best crop for each of several aspects from one density map (its cumulative sums are
    computed once and shared by every aspect).

    ``density``: an (h, w) non-negative map, any resolution (it need not sum to 1): a fastsal
    prediction, the network's small map, or any other model's. ``image_size`` = (H, W): the image
    the map covers, when the map has another resolution; boxes are in its pixels. The map is
    stretched over the whole image, as the network's map is over a photo of any aspect.

    ``scale`` (0, 1]: the window's side relative to the largest window of the aspect (1: full
    height or width). ``min_scale``: allow tighter crops down to this scale. Since a smaller window
    can never hold more mass, "tighter" needs a stated trade-off: the smallest window (scales from
    ``scale`` down to ``min_scale`` in 20 steps) whose best position still keeps at least ``keep``
    of the mass that the best window at ``scale`` keeps.

    ``max_side``: maps longer than this (cells) are summed into square blocks of whole cells first,
    so a full-resolution 1024 px map is searched in well under a millisecond; the search is then
    exact for the block-summed map (each block's mass spread evenly over its pixels), not for the
    map's single pixels. ``None`` searches the map as given: exact per pixel.
    ``score`` is the share of the map's mass inside each box, under the same reading.
    """
    _check_scales(scale, min_scale, keep)
    grid = _prepare(density, image_size, max_side)
    result = []
    for aspect in parse_aspects(aspects):
        h, w = window_size(grid.image_size, aspect, scale)
        x, y, mass = _search(grid, h, w)
        chosen = (x, y, w, h, mass, scale)
        if min_scale is not None and min_scale < scale:
            floor = keep * mass
            for s in np.linspace(scale, min_scale, _ZOOM_STEPS + 1)[1:]:
                hs, ws = window_size(grid.image_size, aspect, float(s))
                if (ws, hs) == (chosen[2], chosen[3]):
                    continue  # rounds to the window already chosen
                xs_, ys_, ms = _search(grid, hs, ws)
                if ms < floor:
                    break  # smaller windows hold no more than this one
                chosen = (xs_, ys_, ws, hs, ms, float(s))
        x, y, w, h, mass, s = chosen
        result.append(Crop(x, y, w, h, min(1.0, mass / grid.total), aspect.label, round(float(s), 6)))
    return result


def crop_box(density: Any, aspect: Any = (16, 9), **options: Any) -> Crop:
    """The best crop of one aspect from a density map: :func:`crop_boxes` with a single aspect."""
    return crop_boxes(density, [parse_aspect(aspect)], **options)[0]


# -- from an image -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def _cached_predictor(model: str) -> Any:
    from fastsal.predict import load

    return load(model)


def small_density(predictor: Any, image: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """(the network's density at its input size, the image's (H, W)): what the crop search needs.

    Cropping needs no full-size map: the network's own output (288x384) holds all it knows, and
    skipping the resize to the image's size saves more time than the whole search takes.
    """
    small, size = predictor.read(image)
    log_small = predictor.small_log_density(predictor.preprocess(small, size)[None])[0]
    return np.exp(log_small), (int(size[0]), int(size[1]))


def crop_image(image: Any, aspects: Any = ("16:9",), *, predictor: Any = None, model: str = "default",
               **options: Any) -> list[Crop]:
    """Predict where people look in ``image`` (a path, PIL image or array) and crop for each aspect.

    ``predictor``: a loaded :class:`fastsal.Predictor` (else ``model`` is loaded once and kept).
    ``options`` go to :func:`crop_boxes` (``scale``, ``min_scale``, ``keep``, ``max_side``).
    """
    predictor = predictor if predictor is not None else _cached_predictor(str(model))
    dens, size = small_density(predictor, image)
    return crop_boxes(dens, aspects, image_size=size, **options)


def crop(image: Any, aspect: Any = (16, 9), *, predictor: Any = None, model: str = "default",
         **options: Any) -> Crop:
    """``fastsal.crop(image, aspect=(16, 9))``: the box keeping the most predicted attention.

    Predicts with the default model (or ``model`` / ``predictor``) and returns a :class:`Crop`:
    ``.box`` = (x, y, w, h) in the image's pixels, ``.score`` = the predicted share of fixations
    inside. For several aspects at once use :func:`crop_image`; for your own map, :func:`crop_box`.
    """
    return crop_image(image, [parse_aspect(aspect)], predictor=predictor, model=model, **options)[0]
