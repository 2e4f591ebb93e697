"""Pick the post-processing blur of a checkpoint on the val splits (never test).

    python scripts/select_blur.py runs/x/best.pt --blurs 0 1 2 3 4

Scores mean information gain (over the centre bias; the likelihood-based metric the blur moves
most) and NSS on each dataset's val split, prints them, and names the blur with the best mean IG.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import fastsal
from fastsal import evaluate as E
from fastsal.data.datasets import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--blurs", nargs="+", type=float, default=[0.0, 1.0, 2.0, 3.0, 4.0])
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--datasets", nargs="+", default=["osie", "mit1003"])
    args = ap.parse_args()
    data = {d: (load_dataset(d, Path(args.data_dir) / d, "val"), load_dataset(d, Path(args.data_dir) / d, "train"))
            for d in args.datasets}
    best = None
    for blur in args.blurs:
        p = fastsal.load(Path(args.weights), blur_sigma=blur, backend="torch")
        igs, cells = [], []
        for d, (val, train) in data.items():
            r = E.evaluate(val, {"m": E.maps_from_predictor(p)}, train_samples=train, baselines=("centre_bias",),
                           metrics=["nss", "information_gain"], progress=False)["results"]["m"]
            igs.append(r["information_gain"]["mean"])
            cells.append(f"{d} NSS {r['nss']['mean']:.3f} IG {r['information_gain']['mean']:.3f}")
        print(f"blur {blur:g}: " + "  ".join(cells), flush=True)
        if best is None or np.mean(igs) > best[1]:
            best = (blur, float(np.mean(igs)))
    print(f"best blur {best[0]:g} (mean val IG {best[1]:.3f})")


if __name__ == "__main__":
    main()
