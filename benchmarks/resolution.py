"""Accuracy and cost of one set of weights across inference resolutions, with and without aspect.

    python benchmarks/resolution.py --weights runs/x/best.pt            # val splits of OSIE and MIT1003
    python benchmarks/resolution.py --model default --sizes 192x256 288x384 384x512

For each input size (a pixel budget when the aspect is kept) and each of aspect / squash, the
weights are scored with ``fastsal.evaluate`` on the ``val`` splits (never ``test``: this picks the
shipped defaults) of each dataset, and on MIT1003's portrait photos alone, where squashing a 3:4
photo into a 4:3 input distorts it most. The centre bias is fitted on each dataset's ``train``.
Cost: GMACs at the size and the median PyTorch ms per image (batch 1, this machine, its CPU flags
printed). Results go to ``benchmarks/results/resolution.json``.
"""
from __future__ import annotations

import argparse
import statistics
from datetime import datetime, timezone
from pathlib import Path

import torch

import fastsal
from fastsal import cpu
from fastsal import evaluate as E
from fastsal.cost import count_macs, time_runner
from fastsal.data.datasets import load_dataset
from fastsal.files import write_json

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "resolution.json"
METRICS = ["nss", "cc", "kld", "information_gain", "auc_judd"]


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def ms_per_image(model: torch.nn.Module, size: tuple[int, int], runs: int = 7) -> float:
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return statistics.median(time_runner(model, x, warmup=1, runs=runs)) * 1000.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", default="default")
    src.add_argument("--weights")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=[(192, 256), (288, 384), (384, 512)])
    ap.add_argument("--split", default="val", choices=("train", "val"), help="never test: this selects defaults")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=str(DEFAULT_JSON))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    source = Path(args.weights) if args.weights else args.model
    data = {}
    for name in ("osie", "mit1003"):
        root = Path(args.data_dir) / name
        data[name] = (load_dataset(name, root, args.split)[: args.limit], load_dataset(name, root, "train"))
    mit_val, mit_train = data["mit1003"]
    data["mit1003 portraits"] = ([s for s in mit_val if s.height > s.width], mit_train)

    info = cpu.describe()
    print(f"CPU: {info['name']} ({info['cores']} cores) [{' '.join(info['features'])}]")
    rows = []
    for size in args.sizes:
        for aspect in (True, False):
            predictor = fastsal.load(source, input_size=size, aspect=aspect, backend="torch")
            model = getattr(predictor.runner, "net", None)  # the network PyTorch runs (batch norm folded)
            row = {"input_size": list(size), "aspect": aspect, "model": predictor.name}
            if model is not None:
                row["gmacs"] = count_macs(model, size) / 1e9
                row["torch_ms_per_image"] = ms_per_image(model, size)
            for name, (samples, train) in data.items():
                report = E.evaluate(samples, {predictor.name: E.maps_from_predictor(predictor)}, train_samples=train,
                                    baselines=("centre_bias",), metrics=METRICS, progress=False)
                res = report["results"][predictor.name]
                row[name] = {m: res[m]["mean"] for m in METRICS} | {"n": len(samples)}
            rows.append(row)
            cells = "  ".join(f"{name}: NSS {row[name]['nss']:.3f} IG {row[name]['information_gain']:.3f}"
                              for name in data)
            cost = f"{row.get('gmacs', float('nan')):.2f} GMAC {row.get('torch_ms_per_image', float('nan')):.1f} ms"
            print(f"{size[0]}x{size[1]} {'aspect' if aspect else 'squash'}  {cost}  {cells}", flush=True)
    write_json({"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu": info,
                "source": str(source), "split": args.split, "rows": rows,
                "command": "python benchmarks/resolution.py " + " ".join(argv or [])}, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
