"""How long fastsal.metrics takes to score a dataset split on every metric.

The map scored is the centre bias fitted on the train split (the baseline every model is compared
with), at the images' full size, so no resizing is timed. Per image: fixations of all observers,
a ground-truth density (sigma 24 px) for CC/SIM/KLD, the uniform density as the information-gain
baseline (IG of the centre bias over itself would be 0 by definition), and the fixations of 10
other images of the split as shuffled-AUC negatives. Building those inputs is timed separately
from scoring. Timings are wall-clock ``time.perf_counter`` over one pass.

    PYTHONPATH=src python benchmarks/metrics_speed.py --root ../shared/data/osie --json speed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from fastsal import baselines as B
from fastsal import metrics as M
from fastsal.data.datasets import load_osie
from fastsal.data.fixations import OSIE_SIGMA_PX, fixation_density

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "osie"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="OSIE folder (stimuli/, eye/, splits.json)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to score (default: test)")
    parser.add_argument("--n-splits", type=int, default=100, help="random splits of AUC-Borji / shuffled AUC")
    parser.add_argument("--sigma", type=float, default=OSIE_SIGMA_PX, help="ground-truth blur in pixels")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the results here")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    params = B.fit_centre_bias(load_osie(args.root, "train"))
    samples = load_osie(args.root, args.split)
    t_fit = time.perf_counter() - t0

    t0 = time.perf_counter()
    maps: dict[tuple[int, int], np.ndarray] = {}
    inputs = []
    for i, s in enumerate(samples):
        if s.shape not in maps:
            maps[s.shape] = B.centre_bias_density(params, s.shape)
        inputs.append(
            {
                "saliency_map": maps[s.shape],
                "fixations": s.fixations,
                "shape": s.shape,
                "gt_density": fixation_density(s.fixations, s.shape, args.sigma),
                "baseline_density": B.uniform_density(s.shape),
                "other_fixations": B.other_image_fixations(samples, i, n_images=10, rng=i),
            }
        )
    t_inputs = time.perf_counter() - t0

    n = len(samples)
    rows = []
    for metric in M.METRICS:
        t0 = time.perf_counter()
        scores = [M.score_all(**x, metrics=(metric,), n_splits=args.n_splits)[metric] for x in inputs]
        rows.append({"metric": metric, "seconds": time.perf_counter() - t0, "mean_score": float(np.mean(scores))})
    t0 = time.perf_counter()
    for x in inputs:
        M.score_all(**x, n_splits=args.n_splits)
    t_all = time.perf_counter() - t0

    print(f"fastsal.metrics on OSIE {args.split}: {n} images of {samples[0].width}x{samples[0].height}, centre-bias map")
    print(f"{'metric':<18}{'total s':>9}{'ms/image':>10}{'mean score':>12}")
    for r in rows:
        print(f"{r['metric']:<18}{r['seconds']:>9.3f}{1000 * r['seconds'] / n:>10.2f}{r['mean_score']:>12.4f}")
    print(f"{'score_all (all 9)':<18}{t_all:>9.3f}{1000 * t_all / n:>10.2f}")
    print(f"(fit centre bias + load: {t_fit:.2f} s; build gt densities and negatives: {t_inputs:.2f} s; not in the above)")

    if args.json is not None:
        result = {
            "dataset": "OSIE",
            "split": args.split,
            "n_images": n,
            "image_size": [samples[0].height, samples[0].width],
            "map": "centre bias fitted on train",
            "n_splits": args.n_splits,
            "sigma_px": args.sigma,
            "score_all_seconds": t_all,
            "score_all_ms_per_image": 1000 * t_all / n,
            "per_metric": rows,
            "fit_and_load_seconds": t_fit,
            "inputs_seconds": t_inputs,
            "centre_bias": params.to_dict(),
            "environment": {
                "python": sys.version.split()[0],
                "numpy": np.__version__,
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
            },
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
