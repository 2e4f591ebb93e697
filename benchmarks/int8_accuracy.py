"""What int8 costs in accuracy: the shipped model fp32 vs its int8 export, scored by ``fastsal evaluate``.

    python benchmarks/int8_accuracy.py                      # OSIE test, 100 train calibration images

Steps, all through the command line a user has:

1. ``fastsal export --int8 --dynamic-batch --osie-root ROOT --calibration-limit N`` (calibration on
   OSIE ``train``; the recipe -- which layers stay float, 7-bit weights -- was chosen on ``val``);
2. maps for every image of ``--split`` as ``.npy``: fp32 with PyTorch, and the int8 file on ONNX
   Runtime and on OpenVINO (when installed). All three go through the same ``Predictor``
   pre- and post-processing; only the network call differs;
3. ``fastsal evaluate --maps DIR --root ROOT --split SPLIT --json ...`` on each folder, beside the
   centre bias and the human gold standard.

Prints the tables and the relative change of every metric against fp32, and writes JSON.
The split is only scored, never used to choose anything.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from contextlib import redirect_stdout
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path

import numpy as np
from tqdm import tqdm

import fastsal
from fastsal.backends import installed
from fastsal.cli import main
from fastsal.cost import cpu_name
from fastsal.data.datasets import load_osie
from fastsal.export import onnx_runner, openvino_runner
from fastsal.files import write_json

OSIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "osie"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "int8_accuracy.json"


def cli(argv: list[str]) -> str:
    """Run a ``fastsal`` command, echo it and its output, return the output."""
    print("$ fastsal " + " ".join(argv), flush=True)
    buf = StringIO()
    with redirect_stdout(buf):
        rc = main(argv)
    print(buf.getvalue(), flush=True)
    if rc != 0:
        raise SystemExit(f"fastsal {argv[0]} failed with exit code {rc}")
    return buf.getvalue()


def write_maps(predictor: fastsal.Predictor, samples, folder: Path, desc: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for s in tqdm(samples, desc=desc, leave=False):
        np.save(folder / f"{Path(s.name).stem}.npy", predictor.predict(s.image_path))


def main_() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=OSIE, help="OSIE folder (default: ../shared/data/osie)")
    ap.add_argument("--split", default="test", choices=("val", "test"))
    ap.add_argument("--calibration", type=int, default=100, help="OSIE train images for calibration (default: 100)")
    ap.add_argument("--work", type=Path, default=None, help="keep the export and maps here (default: a temp folder)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="fastsal-int8-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        onnx_path = work / "default_int8.onnx"
        cli(["export", "--int8", "--dynamic-batch", "--osie-root", str(args.root),
             "--calibration-limit", str(args.calibration), "-o", str(onnx_path)])

        samples = load_osie(args.root, args.split)
        folders = {"fp32 (PyTorch)": work / "maps_fp32"}
        write_maps(fastsal.load(backend="torch"), samples, folders["fp32 (PyTorch)"], "fp32")
        runtimes = [("onnxruntime", onnx_runner)] + ([("openvino", openvino_runner)] if installed("openvino") else [])
        for backend, runner in runtimes:
            predictor = fastsal.load(backend=backend)
            predictor._runners[predictor.input_size] = runner(onnx_path)  # the int8 graph replaces the fp32 one
            folders[f"int8 ({backend})"] = work / f"maps_int8_{backend}"
            write_maps(predictor, samples, folders[f"int8 ({backend})"], f"int8 {backend}")

        results = {}
        for i, (label, folder) in enumerate(folders.items()):
            report_path = work / f"{folder.name}.json"
            extra = [] if i == 0 else ["--no-gold"]  # the gold standard does not depend on the maps
            cli(["evaluate", "--maps", str(folder), "--root", str(args.root), "--split", args.split,
                 "--json", str(report_path), "-q", *extra])
            report = json.loads(report_path.read_text())
            results[label] = report["results"]

    fp32 = results["fp32 (PyTorch)"][folders["fp32 (PyTorch)"].name]
    change = {}
    for label, folder in folders.items():
        if label.startswith("int8"):
            ours = results[label][folder.name]
            change[label] = {m: 100.0 * (ours[m]["mean"] - fp32[m]["mean"]) / abs(fp32[m]["mean"]) for m in fp32}
    print("relative change against fp32, % (KLD: lower is better):")
    for label, row in change.items():
        print(f"  {label:20s} " + "  ".join(f"{m} {v:+.2f}" for m, v in row.items()))
    write_json({
        "benchmark": "int8_accuracy",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "split": args.split,
        "calibration_images": args.calibration,
        "machine": {"cpu": cpu_name()},
        "results": {label: results[label] for label in folders},
        "relative_change_percent": change,
    }, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main_()
