"""Free-size graphs (what the model cache keeps since one conversion serves every input shape)
against fixed-size graphs, on CPU, for the default model at its own input size.

    python benchmarks/dynamic_shapes.py                       # 384x512 and 512x384, batch 1, 2 threads
    python benchmarks/dynamic_shapes.py --runs 30 --note "idle machine"

Rows (each timed interleaved with the others, so a busy machine slows them alike; the minimum
over ``--runs`` is reported, the least disturbed by other load):

- ``openvino static``: an IR converted at exactly this size (what the cache kept before: one
  conversion per shape);
- ``openvino free->static``: the free-size IR reshaped to this size and compiled (what the cache
  does now; compiling takes a fraction of a second, ``compile_s``);
- ``openvino free``: the free-size IR compiled with free dimensions (OpenVINO's dynamic shapes);
- ``onnxruntime static`` / ``onnxruntime free``: an ONNX file at this size / with free H and W;
  ``onnxruntime free->static``: the free one with H and W fixed per session
  (``add_free_dimension_override_by_name``: tried, no faster; the cache runs the free graph).

Also records ``convert_s`` (the one conversion) and the largest |logit| difference from PyTorch.
Writes ``benchmarks/results/dynamic_shapes.json`` with the CPU's name and flags.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from fastsal import cpu, defaults
from fastsal.export import export
from fastsal.models import load_model
from fastsal.models.registry import weights_for


def _timed(fn, x: np.ndarray) -> float:
    start = time.perf_counter()
    fn(x)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["384x512", "512x384"])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--note", default="")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dynamic_shapes.json"))
    args = ap.parse_args()
    import onnxruntime as ort
    import openvino as ov

    torch.set_num_threads(args.threads)
    model, _ = load_model(weights_for(defaults.MODEL).path)
    core = ov.Core()
    cfg = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": args.threads}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        free_xml = export(model, defaults.MODEL, Path(tmp) / "free.xml", "openvino", (384, 512), dynamic_size=True)
        convert_s = time.perf_counter() - t
        free_onnx = export(model, defaults.MODEL, Path(tmp) / "free.onnx", "onnx", (384, 512), dynamic_size=True)
        free_ir = core.read_model(str(free_xml))
        for text in args.sizes:
            h, w = (int(v) for v in text.split("x"))
            x = np.random.default_rng(0).random((1, 3, h, w), dtype=np.float32)
            with torch.inference_mode():
                ref = model(torch.from_numpy(x)).numpy()
            static_xml = export(model, defaults.MODEL, Path(tmp) / f"s{h}x{w}.xml", "openvino", (h, w))
            static_onnx = export(model, defaults.MODEL, Path(tmp) / f"s{h}x{w}.onnx", "onnx", (h, w))
            reshaped = free_ir.clone()
            reshaped.reshape({reshaped.input(0): ov.PartialShape([1, 3, h, w])})
            t = time.perf_counter()
            compiled_fs = core.compile_model(reshaped, "CPU", cfg)
            compile_s = time.perf_counter() - t
            runners = {}
            for label, compiled in (("openvino static", core.compile_model(str(static_xml), "CPU", cfg)),
                                    ("openvino free->static", compiled_fs),
                                    ("openvino free", core.compile_model(free_ir, "CPU", cfg))):
                req, out = compiled.create_infer_request(), compiled.output(0)
                runners[label] = lambda a, req=req, out=out: req.infer({0: a})[out]
            fixed = ort.SessionOptions()
            fixed.intra_op_num_threads, fixed.inter_op_num_threads = args.threads, 1
            fixed.add_free_dimension_override_by_name("H", h)
            fixed.add_free_dimension_override_by_name("W", w)
            for label, path, o in (("onnxruntime static", static_onnx, opts), ("onnxruntime free", free_onnx, opts),
                                   ("onnxruntime free->static", free_onnx, fixed)):
                sess = ort.InferenceSession(str(path), sess_options=o, providers=["CPUExecutionProvider"])
                runners[label] = lambda a, sess=sess: sess.run(None, {"image": a})[0]
            times: dict[str, list[float]] = {k: [] for k in runners}
            for fn in runners.values():
                fn(x)  # warm-up
            for _ in range(args.runs):
                for label, fn in runners.items():
                    times[label].append(_timed(fn, x))
            for label, fn in runners.items():
                rows.append({"size": [h, w], "runner": label, "min_ms": round(1000 * min(times[label]), 2),
                             "median_ms": round(1000 * float(np.median(times[label])), 2),
                             "max_abs_diff": float(np.abs(fn(x) - ref).max()),
                             **({"compile_s": round(compile_s, 3)} if label == "openvino free->static" else {})})
                print(f"{h}x{w}  {label:<22} min {rows[-1]['min_ms']:7.2f} ms  median {rows[-1]['median_ms']:7.2f} ms")
    report = {"benchmark": "dynamic_shapes", "model": defaults.MODEL, "threads": args.threads, "runs": args.runs,
              "convert_s": round(convert_s, 2), "rows": rows, "cpu": cpu.describe(),
              "load_average": list(os.getloadavg()), "note": args.note,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
