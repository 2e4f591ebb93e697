"""How much of where people actually look does each cropping method keep?

For every test image and target aspect (1:1, 16:9, 9:16, 4:5 by default), each method picks the
largest window of that aspect (full height or full width, :func:`fastsal.cropping.window_size`),
and is scored by the share of all observers' recorded fixations inside it (each fixation at its
rounded pixel, clamped into the image, as :func:`fastsal.data.fixations.fixation_map` does);
the table gives the mean over images. Methods:

- ``fastsal``: the shipped default model; the box is searched on the network's own map
  (``fastsal.crop``'s path). ``fastsal_a`` (the paper's MobileNetV2 model) only if it has shipped
  weights, otherwise it is skipped with a note.
- ``centre``: the centred window.
- ``smartcrop``: PyPI ``smartcrop`` (edge, skin and saturation heuristics),
  ``SmartCrop().crop(image, w, h)`` with the same window size (``pip install smartcrop``).
- ``centre bias``: the crop of the centre-bias density (:mod:`fastsal.baselines`, fitted on the
  dataset's own train split), evaluated on a quarter-resolution grid (it is a smooth Gaussian).
- ``oracle``: the ceiling. For each observer, the crop of the other observers' fixation density
  (leave one observer out, :func:`fastsal.baselines.gold_standard`; blur 24 px at 800 px, scaled
  with the image's long side) scores that observer's own fixations; the mean over observers.

"gap closed" = (method - centre) / (oracle - centre): the share of the room above a centre crop
that a method takes. Time per image is wall clock for all the aspects of one image, measured in
the same run, with what each method needs (decoding the image for fastsal and smartcrop; the
network for fastsal). fastsal's cropping alone (the search on its map, all aspects) is reported
separately, as is the search on a full-resolution 1024x768 map.

    python benchmarks/crop_quality.py                       # OSIE test + MIT1003 test -> results/crop_quality.json
    python benchmarks/crop_quality.py --datasets osie --limit 10   # a quick look
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastsal import baselines as B
from fastsal import cpu
from fastsal.cropping import centre_window, crop_boxes, parse_aspects, window_size
from fastsal.data.datasets import Sample
from fastsal.data.fixations import OSIE_SIGMA_PX
from fastsal.files import write_json

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "crop_quality.json"
METHODS = ("fastsal", "fastsal_a", "centre", "smartcrop", "centre_bias", "oracle")
LABELS = {"fastsal": "fastsal (default)", "fastsal_a": "fastsal_a (paper)", "centre": "centre crop",
          "smartcrop": "smartcrop 0.5", "centre_bias": "centre bias", "oracle": "oracle (LOO humans)"}


# -- data ----------------------------------------------------------------------------------------

def _read_mit1003(root: Path, split: str) -> list[Sample]:
    """MIT1003 with OSIE's file layout (``eye/fixations.mat``: img, subjects.fix_x/fix_y, 1-based;
    ``splits.json``; ``stimuli/``), images of varying size read from the files' headers. Stands in
    until ``fastsal.data.datasets.load_dataset("mit1003", ...)`` exists."""
    from PIL import Image
    from scipy.io import loadmat

    from fastsal.data.datasets import read_split

    mat = loadmat(str(root / "eye" / "fixations.mat"), squeeze_me=True, struct_as_record=False)
    entries = {str(e.img): e for e in np.atleast_1d(mat["fixations"])}
    samples = []
    for name in read_split(root, split):
        e = entries[name]
        observers = []
        for s in np.atleast_1d(e.subjects):
            xs = np.atleast_1d(np.asarray(s.fix_x, dtype=np.float64))
            ys = np.atleast_1d(np.asarray(s.fix_y, dtype=np.float64))
            observers.append(np.stack([xs - 1.0, ys - 1.0], axis=1))
        path = root / "stimuli" / name
        with Image.open(path) as img:
            w, h = img.size
        samples.append(Sample(name, path, h, w, tuple(observers)))
    return samples


def load_samples(name: str, root: Path, split: str) -> list[Sample]:
    """The library's reader for ``name`` when it has one, else the stand-in above."""
    try:
        from fastsal.data.datasets import load_dataset  # type: ignore[attr-defined]

        return load_dataset(name, root, split)
    except ImportError:
        pass
    if name == "mit1003":
        return _read_mit1003(root, split)
    raise SystemExit(f"no reader for dataset {name!r}")


# -- scoring -------------------------------------------------------------------------------------

def _pixels(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fixations as integer (x, y) pixels: rounded, clamped into the image (non-finite dropped)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[np.isfinite(pts).all(axis=1)]
    h, w = shape
    return np.stack([np.clip(np.rint(pts[:, 0]), 0, w - 1), np.clip(np.rint(pts[:, 1]), 0, h - 1)], axis=1)


def share_inside(px: np.ndarray, box: Sequence[int]) -> float:
    """Share of the pixel fixations ``px`` inside ``box`` = (x, y, w, h); NaN without fixations."""
    if len(px) == 0:
        return math.nan
    x, y, w, h = box
    inside = (px[:, 0] >= x) & (px[:, 0] < x + w) & (px[:, 1] >= y) & (px[:, 1] < y + h)
    return float(inside.mean())


def _smartcrop_boxes(path: Path, shape: tuple[int, int], aspects: list) -> list[tuple[int, int, int, int]]:
    import smartcrop
    from PIL import Image

    with Image.open(path) as im:
        img = im.convert("RGB")
    sc = smartcrop.SmartCrop()
    boxes = []
    for a in aspects:
        h, w = window_size(shape, a)
        top = sc.crop(img, w, h)["top_crop"]
        boxes.append((int(top["x"]), int(top["y"]), int(top["width"]), int(top["height"])))
    return boxes


def evaluate_dataset(name: str, samples: list[Sample], train: list[Sample], aspects: list,
                     predictors: dict[str, Any], use_smartcrop: bool, progress: bool) -> dict[str, Any]:
    """Per-image shares and times for every method on one dataset."""
    from fastsal.cropping import small_density

    params = B.fit_centre_bias(train)
    labels = [a.label for a in aspects]
    methods = [*predictors, "centre", *(["smartcrop"] if use_smartcrop else []), "centre_bias", "oracle"]
    shares: dict[str, list[list[float]]] = {m: [] for m in methods}  # [image][aspect]
    seconds: dict[str, list[float]] = {m: [] for m in methods}
    crop_only: list[float] = []

    def timed(method: str, fn: Callable[[], list[tuple[int, int, int, int]]]) -> list[tuple[int, int, int, int]]:
        t0 = time.perf_counter()
        boxes = fn()
        seconds[method].append(time.perf_counter() - t0)
        return boxes

    for i, s in enumerate(samples):
        shape = s.shape
        px = _pixels(s.fixations, shape)
        for m, predictor in predictors.items():
            def fastsal_boxes(predictor: Any = predictor) -> list[tuple[int, int, int, int]]:
                dens, size = small_density(predictor, s.image_path)
                if size != shape:
                    raise SystemExit(f"{s.image_path}: decoded {size}, dataset says {shape}")
                t0 = time.perf_counter()
                boxes = [c.box for c in crop_boxes(dens, aspects, image_size=size)]
                if m == "fastsal":
                    crop_only.append(time.perf_counter() - t0)
                return boxes
            shares[m].append([share_inside(px, b) for b in timed(m, fastsal_boxes)])
        shares["centre"].append([share_inside(px, b) for b in timed(
            "centre", lambda: [centre_window(shape, a) for a in aspects])])
        if use_smartcrop:
            shares["smartcrop"].append([share_inside(px, b) for b in timed(
                "smartcrop", lambda: _smartcrop_boxes(s.image_path, shape, aspects))])

        def bias_boxes() -> list[tuple[int, int, int, int]]:
            grid = (max(1, shape[0] // 4), max(1, shape[1] // 4))
            return [c.box for c in crop_boxes(B.centre_bias_density(params, grid), aspects, image_size=shape)]
        shares["centre_bias"].append([share_inside(px, b) for b in timed("centre_bias", bias_boxes)])

        t0 = time.perf_counter()
        sigma = OSIE_SIGMA_PX * max(shape) / 800.0
        per_observer = []
        for k, obs in enumerate(s.observers):
            own = _pixels(obs, shape)
            if len(own) == 0:
                continue
            others = B.gold_standard(s, k, sigma)
            per_observer.append([share_inside(own, c.box) for c in crop_boxes(others, aspects)])
        seconds["oracle"].append(time.perf_counter() - t0)
        shares["oracle"].append(list(np.nanmean(np.array(per_observer), axis=0)))
        if progress:
            print(f"\r{name}: {i + 1}/{len(samples)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)

    summary: dict[str, Any] = {}
    for m in methods:
        arr = np.array(shares[m], dtype=np.float64)  # (images, aspects)
        n = np.sum(np.isfinite(arr), axis=0)
        summary[m] = {
            "mean": {a: float(np.nanmean(arr[:, j])) for j, a in enumerate(labels)},
            "se": {a: float(np.nanstd(arr[:, j], ddof=1) / math.sqrt(n[j])) for j, a in enumerate(labels)},
            "ms_per_image": 1e3 * float(np.median(seconds[m])),
        }
    centre, oracle = summary["centre"]["mean"], summary["oracle"]["mean"]
    for m in methods:
        summary[m]["gap_closed"] = {a: (summary[m]["mean"][a] - centre[a]) / (oracle[a] - centre[a])
                                    if oracle[a] > centre[a] else math.nan for a in labels}
    return {"dataset": name, "images": len(samples), "aspects": labels, "methods": summary,
            "fastsal_crop_ms_per_image": 1e3 * float(np.median(crop_only)) if crop_only else None,
            "per_image": {m: shares[m] for m in methods}, "names": [s.name for s in samples]}


def full_map_timing(aspects: list, repeats: int = 200) -> dict[str, float]:
    """Median ms to crop, all aspects, from a 192x256 map covering 1024x768 and from a full 1024x768 map."""
    rng = np.random.default_rng(0)
    small = rng.random((192, 256))
    full = rng.random((768, 1024)).astype(np.float32)
    out = {}
    for label, dens, size in (("map_192x256_image_1024x768", small, (768, 1024)),
                              ("map_1024x768", full, None)):
        crop_boxes(dens, aspects, image_size=size)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            crop_boxes(dens, aspects, image_size=size)
            times.append(time.perf_counter() - t0)
        out[label] = 1e3 * float(np.median(times))
    return out


def format_table(result: dict[str, Any]) -> str:
    labels = result["aspects"]
    head = "| method | " + " | ".join(labels) + " | gap closed (" + " / ".join(labels) + ") | ms/image |"
    rows = [f"**{result['dataset']}** `test`, {result['images']} images, share of fixations inside the crop "
            f"(mean over images)", "", head, "|---|" + "---:|" * (len(labels) + 2)]
    for m, r in result["methods"].items():
        cells = " | ".join(f"{100 * r['mean'][a]:.1f} %" for a in labels)
        gap = " / ".join("—" if m in ("centre", "oracle") else f"{100 * r['gap_closed'][a]:.0f} %" for a in labels)
        ms = f"{r['ms_per_image']:.1f}" if r["ms_per_image"] >= 0.1 else "< 0.1"
        rows.append(f"| {LABELS.get(m, m)} | {cells} | {gap} | {ms} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["osie", "mit1003"], choices=["osie", "mit1003"])
    parser.add_argument("--osie", type=Path, default=SHARED / "osie", help="OSIE folder")
    parser.add_argument("--mit1003", type=Path, default=SHARED / "mit1003", help="MIT1003 folder")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--aspects", default="1:1,16:9,9:16,4:5")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images (a quick look)")
    parser.add_argument("--no-smartcrop", action="store_true", help="skip smartcrop (pip install smartcrop)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="write the results here")
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)

    import fastsal
    from fastsal.models.registry import WEIGHTS

    aspects = parse_aspects(args.aspects)
    use_smartcrop = not args.no_smartcrop
    if use_smartcrop:
        try:
            import smartcrop  # noqa: F401
        except ImportError:
            raise SystemExit("smartcrop is not installed: pip install smartcrop (or pass --no-smartcrop)") from None
    notes = []
    predictors = {"fastsal": fastsal.load("default", threads=args.threads)}
    if "fastsal_a" in WEIGHTS:
        predictors["fastsal_a"] = fastsal.load("fastsal_a", threads=args.threads)
    else:
        notes.append("fastsal_a (the paper's MobileNetV2 model) has no shipped weights: skipped")
    machine = cpu.describe()
    cpu_line = f"CPU: {machine['name']} ({machine['cores']} cores) [{' '.join(machine['features'])}]"
    print(cpu_line)
    for note in notes:
        print(f"note: {note}")
    results = []
    for name in args.datasets:
        root = args.osie if name == "osie" else args.mit1003
        samples = load_samples(name, root, args.split)[: args.limit]
        train = load_samples(name, root, "train")
        res = evaluate_dataset(name, samples, train, aspects, predictors, use_smartcrop, not args.quiet)
        results.append(res)
        print(format_table(res))
        print(f"fastsal's crop search alone: {res['fastsal_crop_ms_per_image']:.3f} ms per image "
              f"({len(aspects)} aspects)\n")
    timing = full_map_timing(aspects)
    print(f"crop search, {len(aspects)} aspects: {timing['map_192x256_image_1024x768']:.3f} ms on the network's "
          f"192x256 map of a 1024x768 image, {timing['map_1024x768']:.3f} ms on a full 1024x768 map")
    print(cpu_line)
    report = {
        "command": "python benchmarks/crop_quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": machine, "predictor": predictors["fastsal"].settings(), "notes": notes,
        "aspects": [a.label for a in aspects], "split": args.split, "timing_ms": timing,
        "results": results,
    }
    if args.limit is None or args.json != DEFAULT_JSON:
        print(f"wrote {write_json(report, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
