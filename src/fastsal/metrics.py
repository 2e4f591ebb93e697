"""Saliency metrics with the conventions of the MIT saliency benchmark, in plain numpy.

The definitions follow the benchmark's MATLAB code (Bylinskii, Judd, Oliva, Torralba, Durand,
"What do different evaluation metrics tell us about saliency models?", TPAMI 2018) so that our
numbers can be put next to published ones; information gain and log-likelihood follow Kümmerer,
Wallis and Bethge (PNAS 2015; ECCV 2018), who score a saliency map as a probability density.
Every function documents where it departs from those references and why.

Shared conventions
------------------
* **Fixations** are either 0-based ``(x, y)`` points of shape (N, 2) (column, row; as
  :mod:`fastsal.data.fixations`) or a binary fixation map (H, W). Points are rasterised with
  :func:`fastsal.data.fixations.fixation_map` (rounded, clamped into the image), so, as in the
  benchmark's binary ``fixationMap``, several fixations on one pixel count once. A boolean array
  is always a map; any other array of shape (N, 2) is read as points (pass a map of width 2 as
  ``bool``). Points live in an image of ``shape`` (H, W); without ``shape`` they are taken to be
  in the saliency map's own pixel grid.
* **Resizing.** A saliency map whose size differs from the fixations' (or the ground truth's)
  is resized to that size, as the benchmark does with ``imresize``. The benchmark's ``imresize``
  is bicubic; we use Pillow's *bilinear* filter (pixel-centre aligned, and anti-aliased when
  shrinking, like ``imresize``) because bicubic overshoots and would turn a non-negative density
  negative near sharp peaks, which KLD, IG and log-likelihood cannot take. Scores of a resized map
  therefore agree with the benchmark's to within interpolation differences, not bit for bit.
* **Degenerate inputs** give a defined number or a one-line :class:`ValueError`, never a silent
  NaN: NaN/inf in a map, no fixations, or a negative density raise; a constant map carries no
  spatial information and scores the "no information" value of each metric (NSS 0, CC 0, SIM 0,
  AUC-Borji/shuffled 0.5, AUC-Judd its benchmark expectation; see :func:`auc_judd`), where the
  MATLAB code returns NaN.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from PIL import Image

from .data.fixations import fixation_map

#: MATLAB's ``eps``, the benchmark's regulariser in KLD and information gain.
EPS: float = float(np.finfo(np.float64).eps)

#: Names accepted by :func:`score_all`, in the order the benchmark's tables use.
METRICS: tuple[str, ...] = (
    "auc_judd",
    "auc_borji",
    "auc_shuffled",
    "nss",
    "cc",
    "sim",
    "kld",
    "information_gain",
    "log_likelihood",
)

#: Direction of each metric: only KLD (a divergence) is better when lower.
HIGHER_IS_BETTER: Mapping[str, bool] = {name: name != "kld" for name in METRICS}

Shape = tuple[int, int]
RngLike = np.random.Generator | int | None

# Metrics that need, beyond the saliency map: fixations / a ground-truth density / a baseline /
# fixations of other images. score_all uses this to pick what it can compute.
_NEEDS: Mapping[str, tuple[str, ...]] = {
    "auc_judd": ("fixations",),
    "auc_borji": ("fixations",),
    "auc_shuffled": ("fixations", "other_fixations"),
    "nss": ("fixations",),
    "cc": ("gt_density",),
    "sim": ("gt_density",),
    "kld": ("gt_density",),
    "information_gain": ("fixations", "baseline_density"),
    "log_likelihood": ("fixations",),
}


# --------------------------------------------------------------------------------------------
# Input handling, shared by every metric
# --------------------------------------------------------------------------------------------


def _as_map(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` as a finite float64 (H, W) array, or a one-line ValueError naming ``name``."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (H, W) array; got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; replace them before scoring")
    return arr


def _resize(arr: np.ndarray, shape: Shape) -> np.ndarray:
    """Bilinear resize to ``shape`` (H, W); a no-op when the size already matches.

    Pillow resamples float images in float32, so the map is scaled to unit peak first: float32
    then keeps ~7 significant digits of every value whatever the map's units.
    """
    h, w = int(shape[0]), int(shape[1])
    if arr.shape == (h, w):
        return arr
    scale = float(np.abs(arr).max())
    if scale == 0.0:
        return np.zeros((h, w))
    img = Image.fromarray((arr / scale).astype(np.float32))
    out = np.asarray(img.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float64)
    return out * scale


def _normalise(x: np.ndarray, method: Literal["range", "std", "sum"]) -> np.ndarray:
    """The three normalisations the benchmark applies, with defined results for flat maps.

    ``range``: min-max to [0, 1] (AUC thresholds, SIM); ``std``: zero mean, unit sample standard
    deviation with ``ddof=1`` like MATLAB's ``std`` (NSS, CC); ``sum``: divide by the total
    (densities; the caller checks non-negativity). A constant map becomes all zeros under
    ``range`` and ``std`` (no spatial information, where MATLAB divides 0 by 0), and an all-zero
    map stays zero under ``sum`` (the benchmark's ``if any(map(:))``). Constancy is tested as
    ``max == min``, not ``std == 0``: the float mean of a constant map can be off by one ulp, and
    dividing that rounding noise by its own tiny std would give an arbitrary NSS.
    """
    if method in ("range", "std"):
        lo, hi = x.min(), x.max()
        if not hi > lo:
            return np.zeros_like(x)
        if method == "range":
            return (x - lo) / (hi - lo)
        return (x - x.mean()) / x.std(ddof=1)
    if method == "sum":
        total = x.sum()
        return x / total if total > 0 else np.zeros_like(x)
    raise ValueError(f"unknown normalisation {method!r}; use 'range', 'std' or 'sum'")


def _density(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` normalised to sum 1 (all-zero stays zero); negative values raise, as log p needs p >= 0."""
    if (x < 0).any():
        raise ValueError(f"{name} has negative values; a density must be non-negative (clip or exponentiate it)")
    return _normalise(x, "sum")


def _fixation_mask(fixations: np.ndarray, shape: Shape | None, default_shape: Shape, name: str = "fixations") -> np.ndarray:
    """Boolean (H, W) fixation map from points or a map; raises if there is no fixation."""
    arr = np.asarray(fixations)
    is_map = arr.dtype == bool or (arr.ndim == 2 and arr.shape[1] != 2)
    if is_map:
        if arr.ndim != 2:
            raise ValueError(f"{name} map must be 2-D (H, W); got shape {arr.shape}")
        if shape is not None and tuple(int(s) for s in shape) != arr.shape:
            raise ValueError(f"{name} map has shape {arr.shape} but shape={tuple(shape)} was given; drop one")
        if arr.dtype == bool:
            mask = arr
        else:
            vals = np.asarray(arr, dtype=np.float64)
            if not np.isfinite(vals).all():
                raise ValueError(f"{name} map contains NaN or inf")
            mask = vals != 0
    else:
        pts = np.asarray(arr, dtype=np.float64)
        if pts.size == 0:
            pts = pts.reshape(0, 2)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"{name} must be (N, 2) (x, y) points or an (H, W) map; got shape {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError(f"{name} points contain NaN or inf; drop those fixations first")
        target = default_shape if shape is None else (int(shape[0]), int(shape[1]))
        mask = fixation_map(pts, target)
    if not mask.any():
        raise ValueError(f"no {name} to score: a metric of fixations needs at least one")
    return mask


def _prepare(saliency_map: np.ndarray, fixations: np.ndarray, shape: Shape | None) -> tuple[np.ndarray, np.ndarray]:
    """Checked map resized to the fixations' grid, and the boolean fixation map."""
    smap = _as_map(saliency_map, "saliency map")
    mask = _fixation_mask(fixations, shape, smap.shape)
    return _resize(smap, mask.shape), mask


def _prepare_pair(saliency_map: np.ndarray, gt_density: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checked map resized to the ground truth's grid, and the ground truth (which must have mass)."""
    gt = _as_map(gt_density, "ground-truth density")
    if not gt.any():
        raise ValueError("ground-truth density is all zero: there are no fixations to compare with")
    return _resize(_as_map(saliency_map, "saliency map"), gt.shape), gt


# --------------------------------------------------------------------------------------------
# Metric kernels on prepared arrays (score_all shares the preparation between them)
# --------------------------------------------------------------------------------------------


def _auc_judd(s: np.ndarray, mask: np.ndarray) -> float:
    pos = s[mask]
    neg = np.sort(s[~mask])  # one sort, then every count below is a binary search of a few values
    n_pos, n_neg = pos.size, neg.size
    if n_neg == 0:
        raise ValueError("every pixel is fixated: AUC needs at least one non-fixated pixel")
    below = np.searchsorted(neg, pos, side="left")  # non-fixated pixels below each fixation
    at_or_below = np.searchsorted(neg, pos, side="right")
    # Mann-Whitney count of (fixation, non-fixated pixel) pairs ranked right, ties counting 1/2.
    pairs = below.sum() + 0.5 * (at_or_below - below).sum()
    # Judd's curve joins its points by straight lines from (0, 0), which credits half a pair to
    # every non-fixated pixel ranked above the lowest fixation. Under the benchmark's random
    # jitter a pixel tied with the k lowest fixations lies above one of them with chance k/(k+1).
    t_min = pos.min()
    k = np.count_nonzero(pos == t_min)
    lo = int(np.searchsorted(neg, t_min, side="left"))
    hi = int(np.searchsorted(neg, t_min, side="right"))
    above_lowest = (n_neg - hi) + k / (k + 1) * (hi - lo)
    return float((pairs + 0.5 * above_lowest) / (n_pos * n_neg))


def _thresholded_auc(pos: np.ndarray, negatives: np.ndarray, step: float) -> float:
    """Mean over splits of the benchmark's fixed-step ROC area (AUC-Borji and AUC-shuffled).

    ``pos``: map values in [0, 1] at fixations; ``negatives``: (n_splits, m) values at sampled
    locations. Thresholds are 0, step, 2 step, ... <= 1 for every split: those above a split's
    maximum, which the MATLAB loop leaves out, only add points at (0, 0) and no area.
    """
    n_thr = int(np.floor(1.0 / step + 1e-9)) + 1
    thresholds = np.arange(n_thr) * step
    tp = (pos.size - np.searchsorted(np.sort(pos), thresholds, side="left")) / pos.size
    n_splits, m = negatives.shape
    # Index of the highest threshold each negative reaches; a histogram of it, cumulated from the
    # top, counts the negatives at or above every threshold for all splits at once.
    idx = np.searchsorted(thresholds, negatives, side="right") - 1
    flat = (idx + n_thr * np.arange(n_splits)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_splits * n_thr).reshape(n_splits, n_thr)
    fp = np.cumsum(counts[:, ::-1], axis=1) / m  # thresholds descending
    fp_curve = np.concatenate([np.zeros((n_splits, 1)), fp, np.ones((n_splits, 1))], axis=1)
    tp_curve = np.concatenate([[0.0], tp[::-1], [1.0]])
    area = (np.diff(fp_curve, axis=1) * (tp_curve[1:] + tp_curve[:-1]) / 2).sum(axis=1)
    return float(area.mean())


def _check_splits(n_splits: int, step: float) -> None:
    if int(n_splits) < 1:
        raise ValueError(f"n_splits must be >= 1; got {n_splits}")
    if not 0 < step <= 1:
        raise ValueError(f"step must be in (0, 1]; got {step}")


def _auc_borji(s01: np.ndarray, mask: np.ndarray, n_splits: int, step: float, rng: RngLike) -> float:
    """``s01``: the map min-max normalised (shared with sAUC by score_all)."""
    _check_splits(n_splits, step)
    s01 = s01.ravel()
    pos = s01[mask.ravel()]
    gen = np.random.default_rng(rng)
    negatives = s01[gen.integers(0, s01.size, size=(int(n_splits), pos.size))]
    return _thresholded_auc(pos, negatives, step)


def _auc_shuffled(s01: np.ndarray, mask: np.ndarray, other: np.ndarray, n_splits: int, step: float, rng: RngLike) -> float:
    _check_splits(n_splits, step)
    s01 = s01.ravel()
    pos = s01[mask.ravel()]
    pool = s01[other.ravel()]
    m = min(pos.size, pool.size)
    gen = np.random.default_rng(rng)
    picks = np.stack([gen.choice(pool.size, size=m, replace=False) for _ in range(int(n_splits))])
    return _thresholded_auc(pos, pool[picks], step)


def _nss(s: np.ndarray, mask: np.ndarray) -> float:
    return float(_normalise(s, "std")[mask].mean())


def _cc(s: np.ndarray, gt: np.ndarray) -> float:
    if s.size < 2:
        return 0.0
    r = (_normalise(s, "std") * _normalise(gt, "std")).sum() / (s.size - 1)
    return float(np.clip(r, -1.0, 1.0))


def _sim(s: np.ndarray, gt: np.ndarray) -> float:
    p = _normalise(_normalise(s, "range"), "sum")
    q = _normalise(_normalise(gt, "range"), "sum")
    return float(np.minimum(p, q).sum())


def _kld(s: np.ndarray, gt: np.ndarray) -> float:
    p = _density(s, "saliency map")
    q = _density(gt, "ground-truth density")
    nz = q > 0  # pixels without ground-truth mass add exactly 0 * log(eps + 0); skipping them is faster
    return float((q[nz] * np.log(EPS + q[nz] / (p[nz] + EPS))).sum())


def _log_likelihood(p: np.ndarray, mask: np.ndarray) -> float:
    """``p``: the map as a density (from :func:`_density`, shared with IG by score_all)."""
    return float(np.log2(EPS + p[mask]).mean())


def _baseline_log_likelihood(baseline_density: np.ndarray, mask: np.ndarray) -> float:
    """Log-likelihood of the IG baseline, checked and resized to the fixations' grid like a map."""
    base = _resize(_as_map(baseline_density, "baseline density"), mask.shape)
    return _log_likelihood(_density(base, "baseline density"), mask)


# --------------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------------


def auc_judd(saliency_map: np.ndarray, fixations: np.ndarray, *, shape: Shape | None = None) -> float:
    """AUC-Judd: area under the ROC of fixated against all non-fixated pixels (benchmark ``AUC_Judd.m``).

    Thresholds are the map's values at the fixations; the true-positive rate is the share of
    fixated pixels at or above a threshold, the false-positive rate that of non-fixated pixels,
    and the points are joined by the trapezoid rule. That curve equals the Mann-Whitney AUC plus
    ``fp(lowest fixation) / (2 N_fix)``, a small optimistic term of the benchmark kept here so
    that scores are comparable with published ones.

    Ties: the benchmark adds ``rand/1e7`` to every pixel so that equal values are ordered at
    random. We add no noise and return the *expected* benchmark score instead, exactly: tied
    (fixation, pixel) pairs count one half, and a pixel tied with the k lowest fixations gets
    the k/(k+1) chance of lying above one of them. For maps without ties this is the benchmark's
    score; a constant map gets 0.5 + 0.5 / (N_fix + 1). (The benchmark's absolute jitter would
    also reorder maps whose values differ by less than 1e-7, such as raw densities; ours cannot.)

    Monotone transformations of the map leave it unchanged. 1 is perfect, 0.5 chance.
    """
    s, mask = _prepare(saliency_map, fixations, shape)
    return _auc_judd(s, mask)


def auc_borji(
    saliency_map: np.ndarray,
    fixations: np.ndarray,
    *,
    shape: Shape | None = None,
    n_splits: int = 100,
    step: float = 0.1,
    rng: RngLike = 0,
) -> float:
    """AUC-Borji: fixations against uniformly random pixels, averaged over ``n_splits`` draws.

    As the benchmark's ``AUC_Borji.m``: the map is min-max normalised to [0, 1]; each split
    draws as many pixels as there are fixated pixels, uniformly with replacement from the whole
    image (fixated pixels included); the ROC uses thresholds 0, ``step``, 2 ``step``, ... and the
    trapezoid rule. ``rng`` (a seed or a Generator) makes the draws reproducible; the default
    seed 0 gives the same score on every call. A constant map scores 0.5.
    """
    s, mask = _prepare(saliency_map, fixations, shape)
    return _auc_borji(_normalise(s, "range"), mask, n_splits, step, rng)


def auc_shuffled(
    saliency_map: np.ndarray,
    fixations: np.ndarray,
    other_fixations: np.ndarray,
    *,
    shape: Shape | None = None,
    n_splits: int = 100,
    step: float = 0.1,
    rng: RngLike = 0,
) -> float:
    """Shuffled AUC: fixations against fixations made on *other* images (benchmark ``AUC_shuffled.m``).

    Negatives are drawn from the fixated pixels of other images, so the observers' centre bias
    sits in both classes and a pure centre-bias map scores about 0.5: sAUC rewards what a model
    knows about *this* image. ``other_fixations`` are points in the same (H, W) grid as
    ``fixations`` (rescale them with :func:`fastsal.data.fixations.rescale_points` if the other
    images differ in size) or a map of that shape (the benchmark's union of the fixation maps of
    10 other images). Each split draws ``min(N_fix, N_other)`` of those pixels without
    replacement; the map is min-max normalised and scored with fixed ``step`` thresholds as in
    :func:`auc_borji`.
    """
    s, mask = _prepare(saliency_map, fixations, shape)
    other = _fixation_mask(other_fixations, mask.shape, mask.shape, "other-image fixations")
    return _auc_shuffled(_normalise(s, "range"), mask, other, n_splits, step, rng)


def nss(saliency_map: np.ndarray, fixations: np.ndarray, *, shape: Shape | None = None) -> float:
    """Normalised scanpath saliency: mean of the standardised map over fixated pixels (``NSS.m``).

    The map is shifted to zero mean and divided by its sample standard deviation (``ddof=1``,
    MATLAB's ``std``), so NSS is in units of standard deviations above the map's average and
    invariant to positive affine rescaling. 0 is chance (and the score of a constant map).
    """
    s, mask = _prepare(saliency_map, fixations, shape)
    return _nss(s, mask)


def cc(saliency_map: np.ndarray, gt_density: np.ndarray) -> float:
    """Pearson's linear correlation between the map and a ground-truth density (``CC.m``).

    Symmetric in its two maps and invariant to positive affine rescaling of either; 1 means
    identical up to such a rescaling. A constant map (either one) has no linear relation to
    anything and scores 0. The map is resized to the ground truth's size.
    """
    s, gt = _prepare_pair(saliency_map, gt_density)
    return _cc(s, gt)


def sim(saliency_map: np.ndarray, gt_density: np.ndarray) -> float:
    """Similarity (histogram intersection): sum of the pixelwise minimum of the two maps (``similarity.m``).

    Each map is first min-max normalised, so that a map cannot gain by adding a constant floor,
    then divided by its sum; SIM is 1 for identical maps and 0 for disjoint ones (and for a
    constant map, which min-max normalisation flattens to zero).
    """
    s, gt = _prepare_pair(saliency_map, gt_density)
    return _sim(s, gt)


def kld(saliency_map: np.ndarray, gt_density: np.ndarray) -> float:
    """KL divergence of the prediction from the ground truth, in nats; lower is better (``KLdiv.m``).

    Both maps are divided by their sums and ``KL = sum q * log(eps + q / (p + eps))`` with
    ``eps = 2.2204e-16`` (MATLAB's eps), which keeps a zero prediction under a fixation finite
    but heavily penalised. 0 for identical densities. Negative values raise.
    """
    s, gt = _prepare_pair(saliency_map, gt_density)
    return _kld(s, gt)


def log_likelihood(saliency_map: np.ndarray, fixations: np.ndarray, *, shape: Shape | None = None) -> float:
    """Mean ``log2`` of the map, normalised to a density, at fixated pixels: bits per fixation.

    The map is read as a probability distribution over pixels (Kümmerer et al., PNAS 2015), so
    it must be non-negative; it is divided by its sum and ``log2(eps + p)`` is averaged over the
    fixated pixels (``eps`` keeps a zero under a fixation finite: about -52 bits). Equals
    :func:`fastsal.losses.log_likelihood` on ``log(p)``. The absolute value depends on the image
    size (a uniform map scores ``-log2(H * W)``); compare models with :func:`information_gain`.
    """
    s, mask = _prepare(saliency_map, fixations, shape)
    return _log_likelihood(_density(s, "saliency map"), mask)


def information_gain(
    saliency_map: np.ndarray,
    fixations: np.ndarray,
    baseline_density: np.ndarray,
    *,
    shape: Shape | None = None,
) -> float:
    """Information gain over a baseline, bits per fixation (Kümmerer et al., PNAS 2015).

    ``log_likelihood(map) - log_likelihood(baseline)`` at the same fixated pixels; both are read
    as densities (divided by their sums). The usual baseline is the centre bias
    (:mod:`fastsal.baselines`), so IG > 0 means the model knows more than where people look on
    average. Unlike the benchmark's ``InfoGain.m``, the maps are *not* min-max normalised first:
    that step would give the least salient pixel probability 0 and make the score depend on the
    map's floor rather than on the density it states. The baseline is resized like the map.
    """
    s, mask = _prepare(saliency_map, fixations, shape)
    return _log_likelihood(_density(s, "saliency map"), mask) - _baseline_log_likelihood(baseline_density, mask)


def score_all(
    saliency_map: np.ndarray,
    fixations: np.ndarray | None = None,
    shape: Shape | None = None,
    gt_density: np.ndarray | None = None,
    baseline_density: np.ndarray | None = None,
    other_fixations: np.ndarray | None = None,
    metrics: Sequence[str] | None = None,
    *,
    n_splits: int = 100,
    step: float = 0.1,
    rng: RngLike = 0,
) -> dict[str, float]:
    """Score one map on several metrics, checking and resizing the inputs only once.

    With ``metrics=None`` every metric whose inputs are given is computed (fixation metrics need
    ``fixations``, CC/SIM/KLD ``gt_density``, IG also ``baseline_density``, sAUC also
    ``other_fixations``); naming a metric whose input is missing raises. Results follow the order
    of :data:`METRICS`; see :data:`HIGHER_IS_BETTER` for each one's direction.
    """
    given = {
        "fixations": fixations is not None,
        "gt_density": gt_density is not None,
        "baseline_density": baseline_density is not None,
        "other_fixations": other_fixations is not None,
    }
    if not (given["fixations"] or given["gt_density"]):
        raise ValueError("score_all needs fixations or gt_density to score against")
    if metrics is None:
        wanted = [m for m in METRICS if all(given[need] for need in _NEEDS[m])]
    else:
        unknown = [m for m in metrics if m not in _NEEDS]
        if unknown:
            raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(METRICS)}")
        for m in metrics:
            missing = [need for need in _NEEDS[m] if not given[need]]
            if missing:
                raise ValueError(f"metric {m!r} needs {missing[0]}; pass it to score_all")
        wanted = [m for m in METRICS if m in set(metrics)]

    smap = _as_map(saliency_map, "saliency map")
    out: dict[str, float] = {}
    if fixations is not None and any("fixations" in _NEEDS[m] for m in wanted):
        mask = _fixation_mask(fixations, shape, smap.shape)
        s = _resize(smap, mask.shape)
        if "auc_judd" in wanted:
            out["auc_judd"] = _auc_judd(s, mask)
        if "auc_borji" in wanted or "auc_shuffled" in wanted:
            s01 = _normalise(s, "range")
            if "auc_borji" in wanted:
                out["auc_borji"] = _auc_borji(s01, mask, n_splits, step, rng)
            if "auc_shuffled" in wanted:
                assert other_fixations is not None  # "auc_shuffled" is wanted only when given (above)
                other = _fixation_mask(other_fixations, mask.shape, mask.shape, "other-image fixations")
                out["auc_shuffled"] = _auc_shuffled(s01, mask, other, n_splits, step, rng)
        if "nss" in wanted:
            out["nss"] = _nss(s, mask)
        if "information_gain" in wanted or "log_likelihood" in wanted:
            ll = _log_likelihood(_density(s, "saliency map"), mask)
            if "information_gain" in wanted:
                assert baseline_density is not None  # wanted only when given (above)
                out["information_gain"] = ll - _baseline_log_likelihood(baseline_density, mask)
            if "log_likelihood" in wanted:
                out["log_likelihood"] = ll
    if gt_density is not None and any("gt_density" in _NEEDS[m] for m in wanted):
        s_gt, gt = _prepare_pair(smap, gt_density)
        for name, fn in (("cc", _cc), ("sim", _sim), ("kld", _kld)):
            if name in wanted:
                out[name] = fn(s_gt, gt)
    return {m: out[m] for m in METRICS if m in out}
