"""Score saliency predictions on a dataset split, always next to the baselines that frame them.

A number alone says little: NSS 2 is excellent on one dataset and poor on another. So every
evaluation reports the model beside the centre bias (fitted on the *train* split: what any model
must beat), the uniform density (no information) and the human gold standard (each observer
predicted from the others: the attainable ceiling). Information gain is measured against the
centre bias, as on the MIT/Tübingen benchmark, so IG > 0 means knowledge about the image itself.

Every model map is checked before it is scored (:func:`check_map`): NaN or inf, negative values,
an empty or all-zero map, or a map whose aspect ratio differs from the image's (a transposed or
cropped map) is an error naming the file, since each would otherwise give a plausible but
meaningless score (an all-zero map scored KLD 24.7). A map of the image's aspect at another
resolution is resized, as the benchmark does.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from fastsal import baselines as B
from fastsal import defaults, files
from fastsal import metrics as M
from fastsal.data.base import DatasetError, Sample
from fastsal.data.fixations import fixation_density
from fastsal.errors import FastSalError, first_line
from fastsal.images import open_header, walk_images

__all__ = ["evaluate", "check_map", "format_table", "write_json", "plot_examples",
           "maps_from_folder", "maps_from_predictor", "sample_sigma", "gold_standard_note"]
BASELINES = ("centre_bias", "uniform", "gold_standard")
# The uniform weight mixed into the gold standard: bounds the log-likelihood cost of a fixation
# that no other observer made (see baselines.gold_standard); AUC, NSS and CC are unaffected.
GOLD_UNIFORM_WEIGHT = 0.01
MAP_SUFFIXES = (".npy", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")

# A map is accepted (and resized) if its width/height ratio is within this fraction of the
# image's: rounding a downscaled size (800x600 -> 267x200) moves the ratio by well under 1 %.
ASPECT_TOLERANCE = 0.01

MapSource = Callable[[Sample], np.ndarray]


class EvaluateError(FastSalError, ValueError):
    """An evaluation request cannot be met (unknown metric or baseline); the message says which."""


def check_map(arr: np.ndarray, shape: tuple[int, int], label: str) -> np.ndarray:
    """``arr`` as a float64 (H, W) map fit to score against an image of ``shape``; else DatasetError.

    ``label`` starts the message (the map's file, or the model and image): the user must know which
    of hundreds of files to fix.
    """
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise DatasetError(f"{label}: saliency map must be 2-D (H, W); got shape {arr.shape}")
    if arr.size == 0:
        raise DatasetError(f"{label}: saliency map is empty (shape {arr.shape}); re-save it at the image's size")
    if not np.isfinite(arr).all():
        raise DatasetError(f"{label}: saliency map contains NaN or inf; re-save it with finite values")
    low = float(arr.min())
    if low < 0:
        raise DatasetError(f"{label}: saliency map has negative values (min {low:.4g}); save non-negative "
                           "saliency (probabilities or 0..255), not log-densities")
    if not arr.any():
        raise DatasetError(f"{label}: saliency map is all zeros, so it predicts nothing; re-export it")
    h, w = arr.shape
    H, W = int(shape[0]), int(shape[1])
    if abs((w / h) / (W / H) - 1.0) > ASPECT_TOLERANCE:
        hint = " (transposed?)" if (h, w) == (W, H) else ""
        raise DatasetError(f"{label}: map shape {h}x{w} (HxW) does not fit the image's {H}x{W}{hint}; "
                           "save maps at the image's size or aspect ratio")
    return arr


def sample_sigma(sample: Sample, sigma: float | None, degrees: float = defaults.SIGMA_DEG) -> float:
    """The ground-truth density's sigma for ``sample``: ``sigma`` px if given, else ``degrees`` of
    visual angle in the sample's own pixels (one degree: 35 px on MIT1003, 24 px on OSIE)."""
    return sample.sigma_px(degrees, override_px=sigma)


def _map_key(name: str) -> str:
    """A sample's or map's name without its suffix, as a relative POSIX path (``Action/001``)."""
    return PurePosixPath(name).with_suffix("").as_posix()


def maps_from_folder(folder: str | Path, samples: Sequence[Sample]) -> MapSource:
    """Saliency maps of another model, saved as PNG/JPEG (grayscale) or .npy, matched by name.

    A map matches a sample by its path relative to ``folder`` without suffix (``Action/001.png``
    for the CAT2000 image ``Action/001.jpg``), or by its bare stem (``001.png``) where that stem
    names one sample only: datasets with nested names repeat stems across folders, and a flat
    folder of maps must never score one map against several images.
    Every sample must have a map; otherwise one error lists the missing names, so a misnamed
    folder is caught before minutes of scoring. Each map is checked as it is read
    (:func:`check_map`), with the file named in the error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder of saliency maps; pass {{option}} DIR", option="maps")
    by_key: dict[str, Path] = {}
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(walk_images(folder, MAP_SUFFIXES, unreadable=False)):
        if f.is_file():
            key = _map_key(f.relative_to(folder).as_posix())
            if key not in by_key:  # .npy sorts before .png: the lossless one wins
                by_key[key] = f
                by_stem.setdefault(f.stem, []).append(f)
    stem_counts: dict[str, int] = {}
    for s in samples:
        stem = PurePosixPath(s.name).stem
        stem_counts[stem] = stem_counts.get(stem, 0) + 1

    def find(sample: Sample) -> Path | None:
        found = by_key.get(_map_key(sample.name))
        stem = PurePosixPath(sample.name).stem
        if found is None and stem_counts[stem] == 1 and len(by_stem.get(stem, [])) == 1:
            found = by_stem[stem][0]
        return found

    paths = {s.name: find(s) for s in samples}
    missing = [_map_key(n) for n, p in paths.items() if p is None]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetError(f"{folder}: no saliency map for {len(missing)} of {len(samples)} images ({shown}); "
                           "name maps after the images (e.g. 1002.png or 1002.npy; Action/001.png for nested names)")

    def read(sample: Sample) -> np.ndarray:
        path = paths[sample.name]
        assert path is not None  # every sample has a map (missing ones raised above)
        try:
            if path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False)
            else:
                with open_header(path) as img:
                    arr = _grey_map(img, str(path))
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"{path}: cannot read saliency map ({first_line(exc)}); re-save it as PNG or .npy") from None
        if arr.dtype.kind not in "uif":
            raise DatasetError(f"{path}: saliency map has dtype {arr.dtype}; save float or integer values")
        return check_map(arr, sample.shape, str(path))

    return read


# Mean distance of a pixel's channels from their mean (0..255) above which an image is in colour:
# grey maps saved as RGB (JPEG's chroma rounding included) stay far below, photos far above.
COLOUR_SPREAD = 2.0


def _grey_map(img: Image.Image, path: str) -> np.ndarray:
    """A map image's values as float64; grey maps saved as RGB are fine, colour images are refused.

    Why: ``--maps photos/`` (the stimuli instead of the maps) would otherwise be scored as maps,
    converted to grey, and give plausible-looking numbers.
    """
    colour = [b for b in img.getbands() if b not in ("A", "a")]
    if len(colour) > 1 or img.mode in ("P", "PA"):
        rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
        spread = float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).mean())
        if spread > COLOUR_SPREAD:
            raise DatasetError(f"{path}: a colour image, not a saliency map; pass {{option}} a folder of grey maps "
                               "(PNG or .npy, e.g. from `fastsal predict --format png`)", option="maps")
        return np.asarray(img.convert("L"), dtype=np.float64)
    return np.asarray(img.convert("F"), dtype=np.float64)


def maps_from_predictor(predictor: Any) -> MapSource:
    """Probability maps of a fastsal Predictor at each image's original size."""
    return lambda sample: predictor.predict(sample.image_path)


def maps_from_teacher(teacher: Any) -> MapSource:
    """Probability maps of a :class:`fastsal.teacher.Teacher` at each image's original size: its
    label (ensemble and TTA included), post-processed as a predictor's map is, so a teacher is
    scored exactly as the students it teaches."""
    from fastsal.predict import postprocess

    return lambda sample: postprocess(teacher.log_density(sample.image_path), sample.shape)


def gold_standard_note(samples: Sequence[Sample]) -> str | None:
    """Why the gold standard cannot be computed on ``samples``, or None if it can.

    It predicts each observer from the others, so every image needs fixations of at least two
    observers. Datasets that pool all observers into one (CAT2000's public maps, a folder without
    an ``observer`` column) cannot give it; a ceiling over only some images would not be
    comparable with the model's score over all of them, so it is left out entirely.
    """
    lacking = [s.name for s in samples if sum(1 for o in s.observers if len(o)) < 2]
    if not lacking:
        return None
    return (f"gold standard left out: {len(lacking)} of {len(samples)} images (e.g. {lacking[0]}) have fixations "
            "of fewer than 2 observers, so no observer can be predicted from the others")


def _summary(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Mean and standard error of the mean (ddof=1) over images, per metric."""
    out = {}
    for name in rows[0]:
        vals = np.array([r[name] for r in rows], dtype=np.float64)
        sem = float(vals.std(ddof=1) / math.sqrt(len(vals))) if len(vals) > 1 else 0.0
        out[name] = {"mean": float(vals.mean()), "sem": sem, "n": int(len(vals))}
    return out


def evaluate(
    samples: Sequence[Sample],
    models: dict[str, MapSource],
    *,
    train_samples: Sequence[Sample] | None = None,
    baselines: Iterable[str] = BASELINES,
    metrics: Sequence[str] | None = None,
    sigma: float | None = None,
    sigma_deg: float = defaults.SIGMA_DEG,
    progress: bool = True,
) -> dict[str, Any]:
    """Score each model (name -> map source) and the chosen baselines on ``samples``.

    ``train_samples`` fit the centre bias (and IG needs it); without them centre bias and
    information gain are left out. Per image, the ground-truth density blurs all observers'
    fixations by ``sigma`` px (None: one degree of visual angle in each sample's own pixels,
    :meth:`Sample.sigma_px`, the MIT benchmark convention); shuffled-AUC negatives are the fixations of 10 other images of the
    split (seeded by the image index, so every model gets the same negatives).
    The gold standard is left out, with a line in ``notes``, where images lack two observers
    (:func:`gold_standard_note`).
    Returns ``{"results": {name: {metric: {mean, sem, n}}}, "per_image": {...}, "config": {...},
    "notes": [...]}``.
    """
    from tqdm import tqdm

    metrics, baselines, notes, cb_params = _choose(samples, train_samples, baselines, metrics)
    sources: dict[str, MapSource] = dict(models)
    if "centre_bias" in baselines:
        sources["centre bias"] = lambda s: B.centre_bias_density(cb_params, s.shape)
    if "uniform" in baselines:
        sources["uniform"] = lambda s: B.uniform_density(s.shape)
    per_image: dict[str, list[dict[str, float]]] = {name: [] for name in sources}
    if "gold_standard" in baselines:
        per_image["gold standard"] = []

    for i, s in enumerate(tqdm(samples, desc="evaluating", disable=not progress, leave=False)):
        inputs = {
            "fixations": s.fixations,
            "shape": s.shape,
            "gt_density": fixation_density(s.fixations, s.shape, sample_sigma(s, sigma, sigma_deg)),
            "baseline_density": B.centre_bias_density(cb_params, s.shape) if cb_params else None,
            "other_fixations": B.other_image_fixations(samples, i, n_images=10, rng=i) if len(samples) > 1 else None,
        }
        wanted = [m for m in metrics if not (m == "auc_shuffled" and inputs["other_fixations"] is None)]
        for name, source in sources.items():
            smap = source(s)
            if name in models:  # baselines are ours; a model's map (any source) is checked first
                smap = check_map(smap, s.shape, f"{name}: map for {s.name}")
            per_image[name].append(M.score_all(smap, metrics=wanted, rng=i, **inputs))
        if "gold_standard" in baselines:
            per_image["gold standard"].append(B.score_gold_standard(
                s, sample_sigma(s, sigma, sigma_deg), metrics=wanted, baseline_density=inputs["baseline_density"],
                other_fixations=inputs["other_fixations"], uniform_weight=GOLD_UNIFORM_WEIGHT, rng=i))

    return {
        "results": {name: _summary(rows) for name, rows in per_image.items()},
        "per_image": {name: {s.name: row for s, row in zip(samples, rows)} for name, rows in per_image.items()},
        "config": {"n_images": len(samples),
                   "sigma_px": sigma if sigma is not None else sorted({sample_sigma(s, None, sigma_deg) for s in samples}),
                   "sigma": f"{sigma:g} px" if sigma is not None else f"{sigma_deg:g} degree(s) of visual angle", "metrics": metrics,
                   "information_gain_baseline": "centre bias (fitted on train)" if cb_params else None,
                   "centre_bias": cb_params.to_dict() if cb_params else None,
                   "gold_standard_uniform_weight": GOLD_UNIFORM_WEIGHT},
        "notes": notes,
    }


def format_table(report: dict[str, Any]) -> str:
    """Rows = models and baselines, columns = metrics, cells = mean ± standard error."""
    results = report["results"]
    names = list(results)
    metrics = [m for m in M.METRICS if any(m in r for r in results.values())]
    head = {"auc_judd": "AUC-Judd", "auc_borji": "AUC-Borji", "auc_shuffled": "sAUC", "nss": "NSS",
            "cc": "CC", "sim": "SIM", "kld": "KLD↓", "information_gain": "IG (bits)",
            "log_likelihood": "LL (bits)"}
    width = max(len(n) for n in names) + 2
    cells = [[f"{results[n][m]['mean']:.3f} ± {results[n][m]['sem']:.3f}" if m in results[n] else "—"
              for m in metrics] for n in names]
    cw = [max(len(head[m]), *(len(row[j]) for row in cells)) + 2 for j, m in enumerate(metrics)]
    lines = ["".ljust(width) + "".join(head[m].rjust(cw[j]) for j, m in enumerate(metrics))]
    for n, row in zip(names, cells):
        lines.append(n.ljust(width) + "".join(c.rjust(cw[j]) for j, c in enumerate(row)))
    lines.append(f"({report['config']['n_images']} images; mean ± standard error; IG against the centre bias)")
    return "\n".join(lines)


def _choose(samples: Sequence[Sample], train_samples: Sequence[Sample] | None, baselines: Iterable[str],
            metrics: Sequence[str] | None) -> tuple[list[str], list[str], list[str], Any]:
    """(metrics, baselines, notes, centre-bias parameters or None) that can be computed: unknown
    names are refused before any scoring; the gold standard goes (with a note) where images lack
    two observers, the centre bias and information gain where there is no training split."""
    metrics = list(M.METRICS if metrics is None else metrics)
    unknown = [m for m in metrics if m not in M.METRICS]
    if unknown:
        raise EvaluateError(f"unknown metric {unknown[0]!r}; choose from {', '.join(M.METRICS)}")
    if not samples:
        raise DatasetError("no images to evaluate; check the split")
    baselines = [b for b in baselines]
    bad = [b for b in baselines if b not in BASELINES]
    if bad:
        raise EvaluateError(f"unknown baseline {bad[0]!r}; choose from {', '.join(BASELINES)}")
    notes = []
    if "gold_standard" in baselines and (note := gold_standard_note(samples)):
        baselines.remove("gold_standard")
        notes.append(note)
    cb_params = B.fit_centre_bias(train_samples) if train_samples else None
    if cb_params is None:
        baselines = [b for b in baselines if b != "centre_bias"]
        metrics = [m for m in metrics if m != "information_gain"]
    return metrics, baselines, notes, cb_params


def write_json(report: dict[str, Any], path: str | Path) -> Path:
    """Write the report atomically."""
    return files.write_json(report, path)


def plot_examples(samples: Sequence[Sample], source: MapSource, path: str | Path, *, n: int = 4,
                  sigma: float | None = None) -> Path:
    """Grid of image | fixations | ground-truth density | prediction for the first ``n`` images."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plot_examples needs matplotlib: pip install 'fastsal[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fastsal.images import load_rgb

    chosen = list(samples[:n])
    fig, axes = plt.subplots(len(chosen), 4, figsize=(12, 2.4 * len(chosen)), squeeze=False)
    for row, s in zip(axes, chosen):
        img = load_rgb(s.image_path)
        fx = s.fixations
        panels = [("image", img), ("fixations", img), ("ground truth", fixation_density(fx, s.shape, sample_sigma(s, sigma))),
                  ("prediction", source(s))]
        for ax, (title, data) in zip(row, panels):
            ax.imshow(data, cmap=None if data.ndim == 3 else "inferno")
            if title == "fixations":
                ax.scatter(fx[:, 0], fx[:, 1], s=4, c="lime")
            ax.set_title(f"{s.name}: {title}" if title == "image" else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    with files.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)
