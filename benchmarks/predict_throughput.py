"""End-to-end folder prediction vs the network alone: does decoding and writing hide behind it?

    python benchmarks/predict_throughput.py                       # 100 OSIE val JPEGs, default + torch
    python benchmarks/predict_throughput.py --backends openvino openvino-int8 onnxruntime torch --workers 0 2

``--backends`` takes ``auto`` (what ``fastsal predict`` picks) and the engine labels of
:func:`fastsal.cost.runner_labels` (``ENGINE`` for fp32, ``ENGINE-PRECISION`` otherwise; not
``eager``, which is no Predictor); labels this machine cannot run (bf16 without native bf16, an
engine that is not installed) are skipped with a note rather than silently replaced. The CPU's
name and extensions (:func:`fastsal.cpu.describe`) are printed and stored with the figures.

For each backend, in one run on the same 100 JPEGs (800x600 OSIE ``val`` images, or copies of the
bundled example when OSIE is absent) with the shipped model:

- ``model_s``: the network alone, batches of ``--batch-size`` already-preprocessed inputs
  (the floor: what a perfect pipeline would cost);
- ``e2e_s[w]``: ``fastsal.batch.run`` writing PNG maps with ``w`` worker threads (0: decode,
  network and writing one after another on one thread; 2: the ``fastsal predict`` default);
- ``naive_s``: full-resolution decode + ``Predictor.predict_batch`` + PNG writes, serially (what
  a straightforward script does).

Each figure is the fastest of ``--repeat`` rounds (the machine is shared; the minimum is the least
disturbed). Reports seconds, images/s and ``e2e / model`` ratios (goal: <= 1.5 with workers) and
writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

import fastsal
from fastsal import batch, cpu, defaults
from fastsal.cost import EAGER, parse_label, runner_labels
from fastsal.files import write_json
from fastsal.images import load_resized, load_rgb
from fastsal.predict import example_image
from fastsal.runtime import AUTO, installed
from fastsal.viewing import to_png

OSIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "osie"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "predict_throughput.json"


def make_folder(folder: Path, n: int) -> str:
    """n JPEGs in ``folder``: OSIE val images when present, else flipped/cropped example copies."""
    folder.mkdir(parents=True, exist_ok=True)
    split = OSIE / "splits.json"
    if split.is_file():
        names = json.loads(split.read_text())["val"][:n]
        for name in names:
            shutil.copy(OSIE / "stimuli" / name, folder / name)
        return f"OSIE val ({len(names)} images, 800x600 JPEG)"
    base = Image.open(example_image()).convert("RGB")
    for i in range(n):
        img = base.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else base
        img.save(folder / f"{i:04d}.jpg", quality=90)
    return f"bundled example x{n} (800x600 JPEG)"


LABELS = (AUTO, *(b for b in runner_labels() if b != EAGER))


def why_not(label: str) -> str | None:
    """None if this machine can run ``label``, else why not (no native bf16, engine not installed)."""
    if label == AUTO:
        return None
    engine, precision = parse_label(label)
    if precision == "bf16" and not cpu.supports_bf16():
        return "this CPU has no native bf16 (AVX512_BF16/AMX)"
    if not installed(engine):
        return f"{engine} is not installed"
    return None


def model_seconds(predictor: fastsal.Predictor, paths: list[Path], batch_size: int) -> float:
    """The network alone (``predictor.runner``) on already-preprocessed batches: the floor."""
    x = [predictor.preprocess(load_resized(p, predictor.input_size)[0]) for p in paths]
    predictor.runner(np.stack(x[:batch_size]))  # warm-up
    t0 = time.perf_counter()
    for i in range(0, len(x), batch_size):
        predictor.runner(np.stack(x[i:i + batch_size]))
    return time.perf_counter() - t0


def naive_seconds(predictor: fastsal.Predictor, paths: list[Path], out: Path, batch_size: int) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        chunk = paths[i:i + batch_size]
        maps = predictor.predict_batch([load_rgb(p) for p in chunk], batch_size=len(chunk))
        for p, m in zip(chunk, maps):
            Image.fromarray(to_png(m)).save(out / (p.stem + ".png"))
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", nargs="+", default=[AUTO, "torch"], choices=LABELS,
                    help="auto and/or engine labels (default: auto torch)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3, help="rounds per figure; the fastest is kept")
    ap.add_argument("--note", default="")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)

    machine_cpu = cpu.describe()
    features = ", ".join(machine_cpu["features"]) or "no AVX"  # type: ignore[arg-type]
    cpu_line = f"CPU: {machine_cpu['name']}, {machine_cpu['cores']} cores, level {machine_cpu['level']}: {features}"
    print(cpu_line, flush=True)
    rows = []
    skipped = {}
    with tempfile.TemporaryDirectory(prefix="fastsal-bench-") as tmp:
        tmp = Path(tmp)
        source = make_folder(tmp / "in", args.images)
        paths = sorted((tmp / "in").glob("*.jpg"))
        jobs = batch.collect([tmp / "in"])
        for backend in args.backends:
            why = why_not(backend)
            if why is not None:
                print(f"{backend:>12} skipped: {why}", file=sys.stderr, flush=True)
                skipped[backend] = why
                continue
            engine, precision = (AUTO, "fp32") if backend == AUTO else parse_label(backend)
            predictor = fastsal.load(backend=engine, precision=precision, threads=args.threads)
            row = {"backend": predictor.backend, "precision": predictor.precision, "requested": backend,
                   "images": len(paths)}
            row["model_s"] = row["naive_s"] = float("inf")
            row["e2e_s"] = {str(w): float("inf") for w in args.workers}
            for _ in range(args.repeat):  # interleaved rounds: slow spells hit every variant alike
                row["model_s"] = min(row["model_s"], model_seconds(predictor, paths, args.batch_size))
                naive = tmp / f"naive-{backend}"
                row["naive_s"] = min(row["naive_s"], naive_seconds(predictor, paths, naive, args.batch_size))
                shutil.rmtree(naive)
                for w in args.workers:
                    out = tmp / f"out-{backend}-{w}"
                    t0 = time.perf_counter()
                    batch.run(predictor, jobs, out, ("png",), batch_size=args.batch_size, workers=w, progress=False)
                    row["e2e_s"][str(w)] = min(row["e2e_s"][str(w)], time.perf_counter() - t0)
                    shutil.rmtree(out)
            rows.append(row)
            e2e = "  ".join(f"w{w}: {s:.2f} s ({s / row['model_s']:.2f}x)" for w, s in row["e2e_s"].items())
            print(f"{backend:>16} -> {row['backend']:<11} {row['precision']:<4}  model {row['model_s']:.2f} s "
                  f"({len(paths) / row['model_s']:.1f} img/s)  naive {row['naive_s']:.2f} s "
                  f"({row['naive_s'] / row['model_s']:.2f}x)  e2e {e2e}", flush=True)

    report = {
        "benchmark": "predict_throughput",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu": machine_cpu["name"], "cores": os.cpu_count(), "cpu_level": machine_cpu["level"],
        "cpu_features": machine_cpu["features"], "threads": args.threads, "python": platform.python_version(),
        "source": source, "batch_size": args.batch_size, "repeat": args.repeat,
        "input_size": list(defaults.INPUT_SIZE), "note": args.note, "rows": rows, "skipped": skipped,
    }
    write_json(report, args.json)
    print(cpu_line)
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
