"""Calibration of a model's density: a temperature and a centre-bias prior, fitted on val.

Why: NSS and AUC only rank pixels, but information gain and log-likelihood score the density's
*values*; a student distilled from pseudo-labels ranks pixels well yet is too peaked or too flat and
under-weights the image centre (issue 19: 74 % of the NSS gain but 45 % of the IG gain). Two
parameters of form, fitted on the val fixations, recover much of that without touching the weights.

A calibration is a small dict in the checkpoint's ``meta["calibration"]`` (so exports carry it in
their sidecar and ``train --init`` / ``adapt`` keep it, :data:`~fastsal.models.registry.POSTPROCESS_META`):

- ``form`` ``"power"``: ``log p' = log normalise(p ** (1 / T) * prior ** w)``;
- ``form`` ``"mixture"``: ``p' = (1 - w) normalise(p ** (1 / T)) + w prior``;
- ``prior``: an axis-aligned Gaussian in relative image coordinates (pixel centres
  ``((x + 0.5) / W, (y + 0.5) / H)``), centre ``(x, y)`` and standard deviations ``(sx, sy)`` as
  fractions of the width and height, so it means the same at any input size and aspect;
- ``input_size`` / ``aspect``: the geometry it was fitted at (the blur and the temperature act on
  that grid), which a checkpoint written by ``fastsal calibrate`` then runs at by default.

:func:`apply` is the step :meth:`fastsal.predict.Predictor.small_log_density` runs after the blur
on every engine; without a calibration the maps are exactly those of before. :func:`fit` chooses
the parameters by maximising the mean log-likelihood of the val fixations; :func:`calibrate_checkpoint`
is ``fastsal calibrate``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fastsal.calibration import (
    FORMS,
    META_KEY,
    MIXTURE_WEIGHT_RANGE,
    POWER_WEIGHT_RANGE,
    PRIOR_CENTRE_RANGE,
    PRIOR_SIGMA_RANGE,
    TEMPERATURE_RANGE,
    Calibration,
    CalibrationError,
    _log_normalise,
    apply,
)


# -- the fit ------------------------------------------------------------------------------------
@dataclass
class _Group:
    """Images whose log-densities share one grid: stacked, with each fixation's bilinear corners."""

    logs: np.ndarray  # (n, h, w) float64 log-densities (uncalibrated)
    index: np.ndarray  # (4, F) flat indices into logs of each fixation's four neighbours
    weight: np.ndarray  # (4, F) bilinear weights
    image: np.ndarray  # (F,) position of each fixation's image in the fit's image list
    offset: np.ndarray  # (n,) log(h * w / (H * W)): the density per original pixel, per image


def _corners(fix: np.ndarray, shape: Sequence[int], grid: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices (4, F) and bilinear weights (4, F) of (x, y) fixations at ``shape`` on ``grid``.

    The bicubic resize of :func:`fastsal.predict.postprocess` is approximated by a bilinear one: the
    fit only ranks parameters; the before/after table uses the real maps.
    """
    (H, W), (h, w) = shape, grid
    u = np.clip((fix[:, 0] + 0.5) * w / W - 0.5, 0.0, w - 1.0)
    v = np.clip((fix[:, 1] + 0.5) * h / H - 0.5, 0.0, h - 1.0)
    x0, y0 = np.minimum(np.floor(u).astype(np.int64), w - 2 if w > 1 else 0), np.minimum(np.floor(v).astype(np.int64), h - 2 if h > 1 else 0)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = u - x0, v - y0
    index = np.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1])
    weight = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy])
    return index, weight


class FitData:
    """Val log-densities and fixations, grouped by grid, for :func:`objective` and :func:`fit`."""

    def __init__(self, logs: Sequence[np.ndarray], fixations: Sequence[np.ndarray], shapes: Sequence[Sequence[int]]):
        if not logs or not (len(logs) == len(fixations) == len(shapes)):
            raise CalibrationError("calibration needs one log-density, fixation list and image shape per image "
                                   f"(got {len(logs)}, {len(fixations)}, {len(shapes)})")
        by_grid: dict[tuple[int, int], list[int]] = {}
        for i, ls in enumerate(logs):
            by_grid.setdefault(tuple(ls.shape), []).append(i)
        self.n_images = len(logs)
        self.groups: list[_Group] = []
        for grid, members in by_grid.items():
            h, w = grid
            idx, wts, img = [], [], []
            for j, i in enumerate(members):
                fix = np.asarray(fixations[i], dtype=np.float64).reshape(-1, 2)
                if not len(fix):
                    continue
                k, b = _corners(fix, shapes[i], grid)
                idx.append(k + j * h * w)
                wts.append(b)
                img.append(np.full(len(fix), i))
            if not idx:
                continue
            offset = np.array([math.log(h * w / (shapes[i][0] * shapes[i][1])) for i in members])
            self.groups.append(_Group(np.stack([logs[i] for i in members]).astype(np.float64),
                                      np.concatenate(idx, axis=1), np.concatenate(wts, axis=1),
                                      np.concatenate(img), offset[np.searchsorted(members, np.concatenate(img))]))
        self.counts = np.bincount(np.concatenate([g.image for g in self.groups]), minlength=self.n_images)
        if not self.counts.any():
            raise CalibrationError("no fixations to calibrate on; pass datasets with eye fixations (val split)")


def objective(data: FitData, calib: Calibration | None) -> float:
    """Mean over images of the mean log2-likelihood of their fixations (bits per fixation) under
    the calibrated density, read at original-image pixels: what IG ranks, less the centre bias's
    (a constant of the fit)."""
    per_image = np.zeros(data.n_images)
    for g in data.groups:
        prob = np.exp(apply(g.logs, calib)).reshape(-1)
        ll = np.log(np.maximum((prob[g.index] * g.weight).sum(axis=0), 1e-300)) + g.offset
        per_image += np.bincount(g.image, weights=ll, minlength=data.n_images)
    used = data.counts > 0
    return float((per_image[used] / data.counts[used]).mean() / math.log(2.0))


def _group_gradient(g: _Group, c: Calibration) -> tuple[np.ndarray, np.ndarray]:
    """Per fixation of ``g``: (log-likelihood in nats, its gradient (6, F) in the fit's parameters
    log T, w, x, y, log sx, log sy). Analytic: finite differences cost seven passes, this ~two.

    The prior is separable (``-a^2/2 - b^2/2``, ``a`` of the column, ``b`` of the row), so its
    expectations need only the density's row and column marginals.
    """
    n, h, w = g.logs.shape
    T, wt = c.temperature, c.prior_weight
    x, y, sx, sy = c.prior
    a = ((np.arange(w) + 0.5) / w - x) / sx  # (w,)
    b = ((np.arange(h) + 0.5) / h - y) / sy  # (h,)
    lp = -0.5 * (b[:, None] ** 2 + a[None, :] ** 2)
    img, local = np.divmod(g.index, h * w)
    row, col = np.divmod(local, w)
    ak, bk, lk = a[col], b[row], g.logs.reshape(-1)[g.index]  # (4, F) each
    if c.form == "power":
        p = np.exp(_log_normalise(g.logs / T + wt * lp))
        pk = p.reshape(-1)[g.index]
        P = (pk * g.weight).sum(axis=0)
        r = g.weight * pk / P
        cm, rm = p.sum(axis=1), p.sum(axis=2)  # (n, w), (n, h) marginals
        e_l = (p * g.logs).sum(axis=(1, 2))[img[0]]
        e_a, e_a2 = (cm @ a)[img[0]], (cm @ a ** 2)[img[0]]
        e_b, e_b2 = (rm @ b)[img[0]], (rm @ b ** 2)[img[0]]
        grad = np.stack([
            ((r * -lk).sum(0) + e_l) / T,
            (r * -0.5 * (ak ** 2 + bk ** 2)).sum(0) + 0.5 * (e_a2 + e_b2),
            wt * ((r * ak).sum(0) - e_a) / sx,
            wt * ((r * bk).sum(0) - e_b) / sy,
            wt * ((r * ak ** 2).sum(0) - e_a2),
            wt * ((r * bk ** 2).sum(0) - e_b2),
        ])
        return np.log(np.maximum(P, 1e-300)), grad
    q = np.exp(_log_normalise(g.logs / T))
    px, py = np.exp(-0.5 * a ** 2), np.exp(-0.5 * b ** 2)
    px, py = px / px.sum(), py / py.sum()  # the prior is py (x) px
    qk, pik = q.reshape(-1)[g.index], py[row] * px[col]
    P = (g.weight * ((1 - wt) * qk + wt * pik)).sum(axis=0)
    e_l = (q * g.logs).sum(axis=(1, 2))[img]
    d = np.stack([
        (1 - wt) * qk * (e_l - lk) / T,
        pik - qk,
        wt * pik * (ak - px @ a) / sx,
        wt * pik * (bk - py @ b) / sy,
        wt * pik * (ak ** 2 - px @ a ** 2),
        wt * pik * (bk ** 2 - py @ b ** 2),
    ])  # (6, 4, F): the derivative of each corner's density
    return np.log(np.maximum(P, 1e-300)), (d * g.weight).sum(axis=1) / P


def objective_and_gradient(data: FitData, theta: np.ndarray, form: str) -> tuple[float, np.ndarray]:
    """:func:`objective` at the fit's parameters ``theta`` and its gradient (bits per fixation)."""
    c = _unpack(theta, form)
    per_image, grad = np.zeros(data.n_images), np.zeros((6, data.n_images))
    for g in data.groups:
        ll, dll = _group_gradient(g, c)
        per_image += np.bincount(g.image, weights=ll + g.offset, minlength=data.n_images)
        for k in range(6):
            grad[k] += np.bincount(g.image, weights=dll[k], minlength=data.n_images)
    used = data.counts > 0
    scale = 1.0 / (used.sum() * math.log(2.0))
    value = float((per_image[used] / data.counts[used]).sum() * scale)
    return value, (grad[:, used] / data.counts[used]).sum(axis=1) * scale


def _unpack(theta: np.ndarray, form: str) -> Calibration:
    t, w, x, y, sx, sy = (float(v) for v in theta)
    lo, hi = PRIOR_SIGMA_RANGE  # exp(log(bound)) may round just outside it

    def sd(v: float) -> float:
        return min(max(math.exp(v), lo), hi)

    return Calibration(form=form, temperature=min(max(math.exp(t), TEMPERATURE_RANGE[0]), TEMPERATURE_RANGE[1]),
                       prior_weight=w, prior=(x, y, sd(sx), sd(sy)))


def fit(data: FitData, form: str = "power", *, max_iter: int = 60) -> tuple[Calibration, float]:
    """(the calibration of ``form`` maximising :func:`objective` on ``data``, its objective).

    L-BFGS-B over six numbers (log T, the prior's weight, centre and log sds) within the bounds a
    valid calibration has, with the analytic gradient (:func:`objective_and_gradient`).
    """
    from scipy.optimize import minimize

    if form not in FORMS:
        raise CalibrationError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    weights = POWER_WEIGHT_RANGE if form == "power" else MIXTURE_WEIGHT_RANGE
    lo_s, hi_s = (math.log(v) for v in PRIOR_SIGMA_RANGE)
    bounds = [tuple(math.log(v) for v in TEMPERATURE_RANGE), weights, PRIOR_CENTRE_RANGE, PRIOR_CENTRE_RANGE,
              (lo_s, hi_s), (lo_s, hi_s)]
    start = np.array([0.0, 0.3 if form == "power" else 0.1, 0.5, 0.5, math.log(0.3), math.log(0.3)])
    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = objective_and_gradient(data, theta, form)
        return -value, -grad

    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": int(max_iter)})
    best = _unpack(result.x, form)
    return best, objective(data, best)


# -- fastsal calibrate --------------------------------------------------------------------------
REPORT_METRICS = ("information_gain", "log_likelihood", "nss", "cc", "kld")


def uncalibrated_logs(predictor: Any, samples: Sequence[Any], batch_size: int = 8) -> list[np.ndarray]:
    """Each sample's small log-density from ``predictor`` with its own calibration switched off
    (a calibration is always fitted afresh on the network's density), as float32 to halve memory."""
    saved, predictor.calibration = predictor.calibration, None
    try:
        out: list[np.ndarray] = []
        for start in range(0, len(samples), batch_size):
            inputs = [predictor.preprocess(*predictor.read(s.image_path)) for s in samples[start:start + batch_size]]
            out.extend(ls.astype(np.float32) for ls in predictor.small_log_densities(inputs))
        return out
    finally:
        predictor.calibration = saved


def fit_forms(data: FitData, form: str = "auto") -> dict[str, tuple[Calibration, float]]:
    """``form``'s fit, or with ``"auto"`` both forms' fits (the caller keeps the better)."""
    if form != "auto" and form not in FORMS:
        raise CalibrationError(f"form must be auto or one of {', '.join(FORMS)}, got {form!r}")
    return {f: fit(data, f) for f in (FORMS if form == "auto" else (form,))}


def val_reports(datasets: Sequence[tuple[str, Sequence[Any], Sequence[Any]]], logs: Sequence[np.ndarray],
                calibrations: Mapping[str, Calibration | None]) -> dict[str, dict[str, Any]]:
    """Per dataset (name, val samples, train samples), :func:`fastsal.evaluate.evaluate` of the
    real maps (bicubic, at each image's size) under each named calibration, beside the centre bias."""
    from fastsal.evaluate import evaluate
    from fastsal.predict import postprocess

    reports, at = {}, 0
    for name, val, train in datasets:
        mine = {s.name: ls for s, ls in zip(val, logs[at:at + len(val)])}
        at += len(val)

        def source(calib: Calibration | None, mine: dict = mine) -> Any:
            return lambda s: postprocess(apply(mine[s.name].astype(np.float64), calib), s.shape)

        reports[name] = evaluate(val, {label: source(c) for label, c in calibrations.items()}, train_samples=train,
                                 baselines=("centre_bias",), metrics=list(REPORT_METRICS), progress=False)
    return reports


def calibrate_checkpoint(source: str | Path, out: str | Path, *, data: Sequence[str], data_dir: str | Path,
                         form: str = "auto", threads: int | None = None, backend: str = "auto",
                         progress: Any = None, limit: int | None = None) -> dict[str, Any]:
    """Fit a calibration on the val splits of ``data`` and write ``source``'s checkpoint with it to ``out``.

    ``source``: a model name with shipped weights or a checkpoint file (not an export: export the
    calibrated checkpoint instead, its sidecar carries the calibration). The weights are copied
    unchanged (same ``tensors_sha256``); only ``meta["calibration"]`` is new, written atomically.
    Returns ``{"calibration", "fits", "val"}``: the chosen calibration, each form's (calibration,
    objective) and the val reports of the uncalibrated and each fitted density.
    ``progress``: a callable taking one line, told what is happening. ``limit``: only the first
    ``limit`` val images of each dataset (a smoke test).
    """
    from types import SimpleNamespace

    from fastsal.data.datasets import load_dataset
    from fastsal.models.registry import atomic_save, read_checkpoint
    from fastsal.predict import EXPORT_SUFFIXES, _resolve, load
    from fastsal.train import dataset_roots

    say = progress or (lambda line: None)
    path, _ = _resolve(source)
    if path.suffix.lower() in EXPORT_SUFFIXES or Path(f"{path}.json").is_file():
        raise CalibrationError(f"{path}: an exported file; calibrate the checkpoint it was exported from "
                               "(weights=CKPT), then export the calibrated checkpoint")
    out = Path(out)
    if out.suffix.lower() in EXPORT_SUFFIXES or out.resolve() == path.resolve():
        raise CalibrationError(f"{out}: out must be a new checkpoint file (e.g. calibrated.pt), not the source "
                               "or an export")
    if not data:
        raise CalibrationError("data is empty; name the datasets whose val splits to fit on (e.g. osie,mit1003,scene)")
    ckpt = read_checkpoint(path)
    # train's NAME[=FOLDER] rule; it reads only these three fields
    roots = dataset_roots(SimpleNamespace(data=tuple(data), root=None, data_dir=str(data_dir)))  # type: ignore[arg-type]
    datasets = [(name, load_dataset(name, root, "val")[:limit], load_dataset(name, root, "train")) for name, root in roots]
    predictor = load(source, threads=threads, backend=backend)  # a name runs at its shipped geometry
    samples = [s for _, val, _ in datasets for s in val]
    say(f"predicting {len(samples)} val images ({', '.join(n for n, *_ in datasets)}) on {predictor.backend}")
    logs = uncalibrated_logs(predictor, samples)
    fit_data = FitData(logs, [s.fixations for s in samples], [s.shape for s in samples])
    before = objective(fit_data, None)
    say(f"fitting ({form}); uncalibrated val log-likelihood {before:.4f} bits/fixation")
    fits = fit_forms(fit_data, form)
    chosen_form = max(fits, key=lambda f: fits[f][1])
    label = f"val of {'+'.join(n for n, *_ in datasets)} ({len(samples)} images)"
    calib = Calibration(**{**fits[chosen_form][0].__dict__, "input_size": tuple(predictor.input_size),
                           "aspect": predictor.aspect, "fitted_on": label,
                           "extra": {"val_bits_before": round(before, 4), "val_bits_after": round(fits[chosen_form][1], 4)}})
    ckpt["meta"] = {**dict(ckpt.get("meta") or {}), META_KEY: calib.to_dict()}
    say("scoring the val maps before and after")
    reports = val_reports(datasets, logs, {"uncalibrated": None, **{f"{f} fit": c for f, (c, _) in fits.items()}})
    atomic_save(ckpt, out)
    return {"calibration": calib, "chosen": chosen_form, "fits": fits, "val": reports, "objective_before": before}
