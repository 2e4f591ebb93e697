"""Eager PyTorch CPU latency of every registered model: ms per image at batch 1 and batch N.

    python benchmarks/latency.py                       # all models, 192x256, batch 1 and 8
    python benchmarks/latency.py --threads 1 --runs 50 --json out.json

Weights are random (latency does not depend on them). Each configuration is warmed up, then
timed ``--runs`` times; the median is reported (robust to the odd slow run when the machine is
busy). Times cover the network forward only (``model(x)`` under ``torch.inference_mode``), not
decoding, resizing or post-processing.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from fastsal.cost import cpu_name
from fastsal.files import write_json
from fastsal.models import build, list_models

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latency.json"


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def time_model(model: torch.nn.Module, batch: int, size: tuple[int, int], warmup: int, runs: int) -> dict:
    x = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    per_image = [t / batch * 1000.0 for t in times]
    return {
        "batch": batch,
        "ms_per_image_median": statistics.median(per_image),
        "ms_per_image_min": min(per_image),
        "ms_per_batch_median": statistics.median(times) * 1000.0,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=None, help="model names (default: all registered)")
    ap.add_argument("--size", type=parse_size, default=(192, 256), metavar="HxW")
    ap.add_argument("--batch", type=int, default=8, help="the larger batch size (batch 1 is always timed)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: os.cpu_count())")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"output JSON (default: {DEFAULT_JSON})")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.models or list_models()
    batches = sorted({1, args.batch})
    h, w = args.size
    header = f"{'model':<28} {'params':>8} " + " ".join(f"{f'b={b} ms/img':>12}" for b in batches)
    print(f"eager PyTorch {torch.__version__}, {args.threads} thread(s), input {h}x{w}, median of {args.runs}")
    print(header)
    print("-" * len(header), flush=True)
    results = []
    for name in names:  # rows print as they finish: a long run interrupted still shows something
        model = build(name).eval()
        params = sum(p.numel() for p in model.parameters())
        row = {"model": name, "params": params, "timings": []}
        for b in batches:
            row["timings"].append(time_model(model, b, args.size, args.warmup, args.runs))
        results.append(row)
        cells = " ".join(f"{t['ms_per_image_median']:>12.1f}" for t in row["timings"])
        print(f"{row['model']:<28} {row['params'] / 1e6:>7.2f}M {cells}", flush=True)

    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "backend": "torch-eager",
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "processor": cpu_name(),
        "input_size": [h, w],
        "warmup": args.warmup,
        "runs": args.runs,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "results": results,
    }
    write_json(report, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
