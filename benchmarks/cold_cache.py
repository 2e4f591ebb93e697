"""Images per second from an empty model cache: the default model on the 100 MIT1003 ``test``
images (12 input shapes at the default's 384x512 budget, each keeping its aspect), as a first run
of ``fastsal predict`` meets them.

    python benchmarks/cold_cache.py --root ../shared/data/mit1003
    python benchmarks/cold_cache.py --root ../shared/data/mit1003 --json before.json   # on another checkout

Times ``fastsal.load()`` plus one ``predict`` per image (decode, network, post-processing), in one
process, with ``FASTSAL_CACHE_DIR`` set to a new empty folder. Records wall seconds, the process's
CPU seconds (comparable on a shared machine, where wall time depends on the other load), the load
average before and after, and the size and file count of the cache left behind.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="MIT1003 folder (stimuli/, splits.json)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "cold_cache.json"))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    splits = json.loads((Path(args.root) / "splits.json").read_text())
    names = splits[args.split]
    with tempfile.TemporaryDirectory(prefix="fastsal-cold-") as tmp:
        os.environ["FASTSAL_CACHE_DIR"] = tmp
        load_before = os.getloadavg()
        wall, cpu = time.perf_counter(), time.process_time()
        import fastsal
        from fastsal import cpu as cpu_info
        from fastsal.images import load_rgb

        predictor = fastsal.load(threads=args.threads)
        shapes = set()
        for name in names:
            rgb = load_rgb(Path(args.root) / "stimuli" / name)
            shapes.add(predictor.input_size_for(rgb.shape[:2]))
            predictor.predict(rgb)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        files = [p for p in Path(tmp).rglob("*") if p.is_file()]
        report = {
            "benchmark": "cold_cache", "images": len(names), "input_shapes": len(shapes),
            "fastsal": fastsal.__file__, "backend": predictor.backend, "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "images_per_s": round(len(names) / wall, 3),
            "cpu_s_per_image": round(cpu / len(names), 3),
            "cache_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1), "cache_files": len(files),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "cpu": cpu_info.describe(), "note": args.note,
        }
    print(json.dumps(report, indent=1))
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
