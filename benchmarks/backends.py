"""CPU inference engines side by side: every label of :func:`fastsal.cost.runner_labels` this
machine can run (eager PyTorch, fused PyTorch fp32 / bf16, ONNX Runtime fp32 / int8, OpenVINO
fp32 / bf16 / int8), for FastSal models at one input size.

    python benchmarks/backends.py                                  # fastsal_a, fastsal_c, 192x256, batch 1 and 8
    python benchmarks/backends.py --threads 1 --runs 20 --note "idle machine"

bf16 labels run only where the CPU has native bf16 (:func:`fastsal.cpu.supports_bf16`; elsewhere
it would be emulated and the engines refuse it) and engines that are not installed are skipped,
so the default set is what this machine offers. The CPU's name and instruction-set extensions
(:func:`fastsal.cpu.describe`) are printed and stored beside the figures: a latency means little
without them.

Weights are random (latency does not depend on them); int8 ranges are calibrated on OSIE
training images when ../shared/data/osie is present, else on the packaged example image. Each
(model, backend, batch) is warmed up, then timed ``--runs`` times; the median is reported as
ms per image and images per second, with the speed-up over eager PyTorch at the same batch.
``max_abs_diff`` is the largest |logit| difference from eager PyTorch on the timed input, with
the head rescaled to unit-variance logits (a correctness check: ~1e-5 for the fp32 backends;
bf16 and int8 differ by rounding and quantisation error).
Times cover the network only, not image decoding, resizing or post-processing.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from fastsal import cpu
from fastsal.cost import EAGER, label_runner, parse_label, runner_labels, time_runner
from fastsal.errors import FastSalError
from fastsal.files import write_json
from fastsal.models import build
from fastsal.runtime import installed

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "backends.json"
OSIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "osie"


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def usable(label: str) -> str | None:
    """None if this machine can run ``label``, else why not (no native bf16, engine not installed)."""
    engine, precision = parse_label(label)
    if precision == "bf16" and not cpu.supports_bf16():
        return "this CPU has no native bf16 (AVX512_BF16/AMX)"
    if engine != EAGER and not installed(engine):
        return f"{engine} is not installed"
    return None


def default_backends() -> list[str]:
    """Every runner label this machine can run, in :func:`fastsal.cost.runner_labels` order."""
    return [b for b in runner_labels() if usable(b) is None]


def calibration_images(n: int) -> list[Path]:
    split = OSIE / "splits.json"
    if split.is_file():
        names = json.loads(split.read_text())["train"][:n]
        return [OSIE / "stimuli" / f for f in names]
    return [Path(__file__).resolve().parents[1] / "src" / "fastsal" / "assets" / "example.jpg"]


def cpu_line(info: dict[str, object]) -> str:
    """The CPU as one line: name, cores and the extensions that decide speed and precisions."""
    features = ", ".join(info["features"]) or "no AVX"  # type: ignore[arg-type]
    return f"CPU: {info['name']}, {info['cores']} cores, level {info['level']}: {features}"


def version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["fastsal_a", "fastsal_c"])
    ap.add_argument("--backends", nargs="+", default=None, choices=runner_labels(),
                    help="default: all this machine can run (bf16 only with native bf16, installed engines only)")
    ap.add_argument("--size", type=parse_size, default=(192, 256), metavar="HxW")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads for every backend (default: all cores)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--calibration", type=int, default=16, help="number of OSIE train images for int8 calibration")
    ap.add_argument("--note", default="", help="free text stored in the JSON (e.g. machine load)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)

    backends = args.backends or default_backends()
    machine_cpu = cpu.describe()
    torch.set_num_threads(args.threads)
    calib = calibration_images(args.calibration)
    tmp = tempfile.TemporaryDirectory(prefix="fastsal-backends-")
    workdir = Path(tmp.name)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{args.size[0]}x{args.size[1]}, threads={args.threads}, warmup={args.warmup}, runs={args.runs}", flush=True)
    print(cpu_line(machine_cpu), flush=True)
    for name in args.models:
        torch.manual_seed(0)
        model = build(name).eval()
        inputs = {b: rng.random((b, 3, *args.size), dtype=np.float32) for b in args.batches}
        with torch.inference_mode():  # unit-scale logits, so max_abs_diff means something
            scale = model(torch.from_numpy(inputs[args.batches[0]])).std().item()
            model.decoder.head.weight /= scale
            model.decoder.head.bias /= scale
            reference = {b: model(torch.from_numpy(x)).numpy() for b, x in inputs.items()}
        for backend in backends:
            why = usable(backend)
            if why is not None:  # asked for explicitly, but not runnable here
                print(f"{name:<12} {backend:<17} skipped: {why}", file=sys.stderr, flush=True)
                rows.append({"model": name, "backend": backend, "skipped": why})
                continue
            try:
                run, info = label_runner(model, name, backend, args.size, threads=args.threads,
                                        workdir=workdir, calibration_images=calib)
            except FastSalError as exc:
                print(f"{name:<12} {backend:<17} skipped: {exc}", file=sys.stderr, flush=True)
                rows.append({"model": name, "backend": backend, "skipped": str(exc)})
                continue
            for b, x in inputs.items():
                out = np.asarray(run(x))
                times = time_runner(run, x, args.warmup, args.runs)
                per_image = statistics.median(times) / b * 1000.0
                row = {
                    "model": name, "backend": backend, "batch": b,
                    "ms_per_image": per_image, "images_per_s": 1000.0 / per_image,
                    "ms_per_batch_median": statistics.median(times) * 1000.0,
                    "ms_per_batch_min": min(times) * 1000.0,
                    "max_abs_diff": float(np.abs(out - reference[b]).max()),
                    "runs": args.runs,
                }
                if info.get("file_bytes"):  # the converted model file (ONNX, or OpenVINO IR weights)
                    row["file_mb"] = info["file_bytes"] / 1e6
                rows.append(row)
                print(f"{name:<12} {backend:<17} batch {b:<2} {per_image:8.1f} ms/image", flush=True)

    tmp.cleanup()
    eager = {(r["model"], r["batch"]): r["ms_per_image"] for r in rows if r.get("backend") == EAGER and "batch" in r}
    for r in rows:
        if "batch" in r and (r["model"], r["batch"]) in eager:
            r["speedup_vs_eager"] = eager[(r["model"], r["batch"])] / r["ms_per_image"]

    header = f"{'model':<12} {'backend':<17} {'batch':>5} {'ms/image':>9} {'images/s':>9} {'speed-up':>9} {'max|diff|':>10}"
    print("\n" + header + "\n" + "-" * len(header))
    for r in rows:
        if "batch" not in r:
            continue
        print(f"{r['model']:<12} {r['backend']:<17} {r['batch']:>5} {r['ms_per_image']:>9.1f} "
              f"{r['images_per_s']:>9.1f} {r.get('speedup_vs_eager', float('nan')):>8.2f}x {r['max_abs_diff']:>10.2e}")
    print(cpu_line(machine_cpu))

    result = {
        "benchmark": "backends",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "input_size": list(args.size),
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "calibration_images": len(calib),
        "note": args.note,
        "machine": {
            "cpu": machine_cpu["name"], "cores": os.cpu_count(), "cpu_level": machine_cpu["level"],
            "cpu_features": machine_cpu["features"], "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": version("onnxruntime"), "openvino": version("openvino"),
        },
        "rows": rows,
    }
    write_json(result, args.json)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
