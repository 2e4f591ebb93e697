"""Reference predictions that bracket every saliency model: the centre bias and the gold standard.

* The **centre bias** says where people look on *any* image (mostly near the centre). A model
  that does not beat it has learnt nothing about the image itself, so it is the baseline of
  information gain and the floor every reported score should be read against.
* The **gold standard** predicts one observer from all the others (leave one observer out). No
  model can expect to predict a person better than other people do, so it estimates the ceiling,
  i.e. how much of a metric's range is attainable on a dataset.
* The **uniform** density claims nothing; it is the zero of information gain over "no model".

Everything here returns plain numpy densities (H, W) that sum to 1, ready for
:mod:`fastsal.metrics`.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from . import metrics as _metrics
from .data.datasets import Sample
from .data.fixations import OSIE_SIGMA_PX, fixation_density, rescale_points

Shape = tuple[int, int]


@dataclass(frozen=True)
class CentreBiasParams:
    """A Gaussian plus a uniform floor over normalised image coordinates ``(x / W, y / H)``.

    Coordinates are those of pixel centres, ``((x + 0.5) / W, (y + 0.5) / H)``, so one fit serves
    images of any size or aspect ratio. ``gaussian_weight`` is the Gaussian's share of the
    fixations; the rest is spread uniformly over the image. :meth:`to_dict` gives a JSON-ready
    dict and :meth:`from_dict` reads it back.
    """

    mean_x: float
    mean_y: float
    var_x: float
    var_y: float
    cov_xy: float
    gaussian_weight: float
    n_fixations: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, float | int]) -> CentreBiasParams:
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"centre-bias parameters lack {missing[0]!r}; expected keys {', '.join(names)}")
        values: dict[str, Any] = {n: (int(data[n]) if n == "n_fixations" else float(data[n])) for n in names}
        params = cls(**values)
        if not (params.var_x > 0 and params.var_y > 0 and params.var_x * params.var_y > params.cov_xy**2):
            raise ValueError("centre-bias covariance is not positive definite; refit the parameters")
        if not 0 <= params.gaussian_weight <= 1:
            raise ValueError(f"gaussian_weight must be in [0, 1]; got {params.gaussian_weight}")
        return params


def _normalised_points(samples: Sequence[Sample]) -> np.ndarray:
    """All fixations of ``samples`` in pixel-centre normalised coordinates, clipped into [0, 1]."""
    parts = []
    for s in samples:
        pts = s.fixations
        if len(pts):
            pts = pts[np.isfinite(pts).all(axis=1)]
            parts.append(np.stack([(pts[:, 0] + 0.5) / s.width, (pts[:, 1] + 0.5) / s.height], axis=1))
    return np.clip(np.concatenate(parts), 0.0, 1.0) if parts else np.zeros((0, 2))


def _gaussian_pdf(xy: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Bivariate normal density at points ``xy`` (..., 2)."""
    d = xy - mean
    inv = np.linalg.inv(cov)
    maha = ((d @ inv) * d).sum(axis=-1)
    return np.exp(-0.5 * maha) / (2 * math.pi * math.sqrt(np.linalg.det(cov)))


def fit_centre_bias(samples: Sequence[Sample], *, n_iter: int = 500, tol: float = 1e-8) -> CentreBiasParams:
    """Fit the centre bias to the fixations of ``samples`` (use the *training* split only).

    Maximum likelihood by EM for a mixture of one anisotropic Gaussian and a uniform density on
    the unit square. The uniform part matters: fixations on the periphery are rare but not
    absent, and a pure Gaussian would give them almost zero probability, which KLD, information
    gain and log-likelihood punish heavily. The fit is closed-form per EM step over all
    fixations at once (about 5 ms per step for the 70k OSIE training fixations). EM stops when
    the mean log-likelihood per fixation gains less than ``tol`` nats, or after ``n_iter`` steps.
    """
    xy = _normalised_points(samples)
    if len(xy) < 3:
        raise ValueError(f"fit_centre_bias needs at least 3 fixations; got {len(xy)}")
    ridge = 1e-6 * np.eye(2)  # keeps the covariance invertible for degenerate inputs
    mean = xy.mean(axis=0)
    cov = np.cov(xy, rowvar=False) + ridge
    weight = 0.9
    prev = -np.inf
    for _ in range(int(n_iter)):
        g = weight * _gaussian_pdf(xy, mean, cov)
        resp = g / (g + (1.0 - weight))  # the uniform density is 1 on the unit square
        loglik = float(np.log(g + (1.0 - weight)).mean())
        weight = float(resp.mean())
        mean = (resp[:, None] * xy).sum(axis=0) / resp.sum()
        d = xy - mean
        cov = (resp[:, None] * d).T @ d / resp.sum() + ridge
        if loglik - prev < tol:
            break
        prev = loglik
    return CentreBiasParams(
        mean_x=float(mean[0]),
        mean_y=float(mean[1]),
        var_x=float(cov[0, 0]),
        var_y=float(cov[1, 1]),
        cov_xy=float(cov[0, 1]),
        gaussian_weight=weight,
        n_fixations=int(len(xy)),
    )


def centre_bias_density(params: CentreBiasParams, shape: Shape) -> np.ndarray:
    """The fitted centre bias as an (H, W) density summing to 1, evaluated at pixel centres."""
    h, w = int(shape[0]), int(shape[1])
    gx = (np.arange(w) + 0.5) / w
    gy = (np.arange(h) + 0.5) / h
    xy = np.stack(np.meshgrid(gx, gy), axis=-1)  # (H, W, 2) as (x, y)
    mean = np.array([params.mean_x, params.mean_y])
    cov = np.array([[params.var_x, params.cov_xy], [params.cov_xy, params.var_y]])
    dens = params.gaussian_weight * _gaussian_pdf(xy, mean, cov) + (1.0 - params.gaussian_weight)
    return dens / dens.sum()


def uniform_density(shape: Shape) -> np.ndarray:
    """The uniform (H, W) density: the prediction that claims nothing (information gain zero)."""
    h, w = int(shape[0]), int(shape[1])
    return np.full((h, w), 1.0 / (h * w))


def gold_standard(
    sample: Sample,
    observer_index: int,
    sigma: float = OSIE_SIGMA_PX,
    *,
    uniform_weight: float = 0.0,
) -> np.ndarray:
    """Leave-one-observer-out density: all observers but ``observer_index``, blurred by ``sigma``.

    This is how well other people predict the left-out person, the empirical ceiling for models
    (Kümmerer et al., PNAS 2015). ``uniform_weight`` mixes in a uniform density: the Gaussian
    blur is truncated at 4 sigma, so a fixation far from everyone else's has probability exactly
    zero, which costs log-likelihood and information gain about 52 bits at that fixation; a small
    weight (say 0.01) turns that into a bounded penalty. Mixing with a constant is a positive
    affine map, so AUC, NSS and CC do not change with it.
    """
    n = len(sample.observers)
    if n < 2:
        raise ValueError(f"{sample.name}: the gold standard needs at least 2 observers; got {n}")
    if not -n <= observer_index < n:
        raise ValueError(f"{sample.name}: observer_index {observer_index} out of range for {n} observers")
    if not 0 <= uniform_weight <= 1:
        raise ValueError(f"uniform_weight must be in [0, 1]; got {uniform_weight}")
    left_out = observer_index % n
    others = [obs for i, obs in enumerate(sample.observers) if i != left_out]
    dens = fixation_density(np.concatenate(others, axis=0), sample.shape, sigma)
    if uniform_weight:
        dens = (1.0 - uniform_weight) * dens + uniform_weight * uniform_density(sample.shape)
    return dens


def score_gold_standard(
    sample: Sample,
    sigma: float = OSIE_SIGMA_PX,
    *,
    metrics: Sequence[str] | None = None,
    baseline_density: np.ndarray | None = None,
    other_fixations: np.ndarray | None = None,
    uniform_weight: float = 0.0,
    rng: int | np.random.Generator | None = 0,
) -> dict[str, float]:
    """Mean score of the gold standard over all observers of ``sample``, each left out in turn.

    Each observer's fixations are predicted by :func:`gold_standard` of the others and scored
    with :func:`fastsal.metrics.score_all`; observers without fixations are skipped. CC, SIM and
    KLD compare with the left-out observer's own density (blurred by ``sigma``); with ~10
    fixations per observer that ground truth is noisy, so those ceilings are conservative.
    ``metrics=None`` computes every metric whose inputs are given (IG needs ``baseline_density``,
    sAUC ``other_fixations``).
    """
    rows: list[dict[str, float]] = []
    for i, obs in enumerate(sample.observers):
        if len(obs) == 0:
            continue
        pred = gold_standard(sample, i, sigma, uniform_weight=uniform_weight)
        rows.append(
            _metrics.score_all(
                pred,
                obs,
                shape=sample.shape,
                gt_density=fixation_density(obs, sample.shape, sigma),
                baseline_density=baseline_density,
                other_fixations=other_fixations,
                metrics=metrics,
                rng=rng,
            )
        )
    if not rows:
        raise ValueError(f"{sample.name}: no observer has fixations to predict")
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def other_image_fixations(
    samples: Sequence[Sample],
    index: int,
    n_images: int = 10,
    rng: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """Fixations of ``n_images`` other randomly chosen samples, in the grid of ``samples[index]``.

    The negatives of shuffled AUC (the benchmark's ``otherMap``, built from 10 other images as
    Borji et al. do). Points are rescaled to the target image's size, so datasets with mixed
    image sizes work.
    """
    if len(samples) < 2:
        raise ValueError("other_image_fixations needs at least 2 samples")
    if not -len(samples) <= index < len(samples):
        raise ValueError(f"index {index} out of range for {len(samples)} samples")
    index %= len(samples)
    gen = np.random.default_rng(rng)
    candidates = np.array([i for i in range(len(samples)) if i != index])
    chosen = gen.choice(candidates, size=min(int(n_images), len(candidates)), replace=False)
    target = samples[index].shape
    parts = [rescale_points(samples[i].fixations, samples[i].shape, target) for i in sorted(chosen)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 2))
