"""Seconds to rerun a finished ``fastsal predict`` job: what a resumed or repeated job array task costs.

    python benchmarks/rerun.py                         # 200 small images -> results/rerun.json
    python benchmarks/rerun.py --src ../main/src --json results/rerun_before.json   # another checkout

Makes ``--images`` random JPEGs in a temporary folder, runs ``fastsal predict`` over them once
(untimed), then reruns the same command ``--repeats`` times, each a new process, and records wall
seconds and the child's CPU seconds (comparable on a shared machine, where wall time depends on
the other load), the load average, and the CPU's name and flags. Since the job layer a finished
job loads no model and imports no PyTorch on rerun.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--src", default=str(Path(__file__).resolve().parents[1] / "src"), help="the fastsal to run")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "rerun.json"))
    args = ap.parse_args()
    import numpy as np
    from PIL import Image

    from fastsal import cpu as cpu_info

    env = {**os.environ, "PYTHONPATH": args.src}
    with tempfile.TemporaryDirectory(prefix="fastsal-rerun-") as tmp:
        rng = np.random.default_rng(0)
        (Path(tmp) / "in").mkdir()
        for i in range(args.images):
            Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(Path(tmp) / "in" / f"{i:04d}.jpg")
        cmd = [sys.executable, "-m", "fastsal", "predict", str(Path(tmp) / "in"), "-o", str(Path(tmp) / "out"),
               "--threads", "1", "-q"]
        first = _timed(cmd, env)
        load_before = os.getloadavg()
        reruns = [_timed(cmd, env) for _ in range(args.repeats)]
    report = {
        "benchmark": "rerun", "images": args.images, "src": args.src, "command": "fastsal predict IN -o OUT "
        "--threads 1 -q (a finished job, rerun)", "first_run_wall_s": round(first[0], 2),
        "rerun_wall_s": [round(w, 2) for w, _ in reruns], "rerun_cpu_s": [round(c, 2) for _, c in reruns],
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()], "cpu": cpu_info.describe(),
    }
    print(json.dumps(report, indent=1))
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
