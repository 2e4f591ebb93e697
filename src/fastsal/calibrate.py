"""``fastsal calibrate``: predict the val splits once, fit a calibration
(:mod:`fastsal.calibration`) and write the checkpoint with it.

Its own module because it runs the predictor and the evaluation, while the predictor itself needs
:mod:`fastsal.calibration` (applying a checkpoint's calibration): keeping the two apart is what
keeps ``predict`` and the calibration free of an import cycle.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fastsal.calibration import FORMS, META_KEY, Calibration, CalibrationError, FitData, apply, fit, objective

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
            return lambda sample: postprocess(apply(mine[sample.name].astype(np.float64), calib), sample.shape)

        reports[name] = evaluate(val, {label: source(c) for label, c in calibrations.items()}, train_samples=train,
                                 baselines=("centre_bias",), metrics=list(REPORT_METRICS), progress=False)
    return reports


def calibrate_checkpoint(source: str | Path, out: str | Path, *, data: Sequence[str], data_dir: str | Path | None,
                         form: str = "auto", threads: int | None = None, backend: str = "auto",
                         progress: Any = None, limit: int | None = None) -> dict[str, Any]:
    """Fit a calibration on the val splits of ``data`` and write ``source``'s checkpoint with it to ``out``.

    ``source``: a model name with shipped weights or a checkpoint file (not an export: export the
    calibrated checkpoint instead, its sidecar carries the calibration). The weights are copied
    unchanged (same ``tensors_sha256``); only ``meta["calibration"]`` is new, written atomically.
    Returns ``{"calibration", "fits", "val"}``: the chosen calibration, each form's (calibration,
    objective) and the val reports of the uncalibrated and each fitted density.
    ``progress``: a callable taking one line, told what is happening. ``limit``: only the first
    ``limit`` val images of each dataset (a smoke test). ``data_dir``: the folder holding each bare
    ``NAME`` of ``data`` (:func:`fastsal.data.datasets.dataset_roots`; ``None`` if every entry is
    ``NAME=FOLDER``).
    """
    from fastsal.data.datasets import dataset_roots, load_dataset
    from fastsal.models.registry import atomic_save, read_checkpoint
    from fastsal.predict import EXPORT_SUFFIXES, _resolve, load

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
    roots = dataset_roots(data, data_dir=data_dir)
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
