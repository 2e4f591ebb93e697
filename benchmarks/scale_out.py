"""One machine, three ways to split a folder: ``fastsal predict`` alone, ``--shard i/2`` in two
processes, and ``--ray`` with two actors, in the same run on the same images.

    python benchmarks/scale_out.py                      # 240 OSIE + MIT1003 stimuli, png maps
    python benchmarks/scale_out.py -n 400 --modes local ray

For each mode, the command line as a user types it, from a cold start (new processes; the
engine's compiled model is cached on disk beforehand by a warm-up run, as on any second run):

- ``wall_s``: launch to the last process's exit;
- ``cpu_s_per_image``: CPU seconds of every process the mode started (the CLI, its shards, and
  for Ray the local cluster's GCS, raylet and actor processes), sampled every 0.2 s with psutil
  (a process's last 0.2 s can be missed), divided by the images;
- ``startup_s``: launch to the first map on disk (imports, model loads, for Ray the cluster and
  actors), and ``steady_images_per_s``: the rate after it.

Outputs of every mode are compared byte for byte with the single process's (``identical``). The
CPU's name and extensions are printed and stored with the figures, and so is the load average
before the run (the machine may be shared: say so beside the table).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "scale_out.json"
MODES = ("local", "shards", "ray")


def make_folder(folder: Path, n: int) -> int:
    """``n`` stimuli linked into ``folder``: OSIE's (800x600) then MIT1003's (varied sizes)."""
    found = sorted((SHARED / "osie" / "stimuli").glob("*.jpg")) + sorted((SHARED / "mit1003" / "stimuli").glob("*.jp*g"))
    if len(found) < n:
        raise SystemExit(f"need {n} stimuli under {SHARED}/osie|mit1003/stimuli, found {len(found)}")
    folder.mkdir(parents=True)
    for i, src in enumerate(found[:n]):
        os.symlink(src, folder / f"{i:05d}{src.suffix}")
    return n


def commands(mode: str, images: Path, out: Path, actors: int) -> list[list[str]]:
    base = [sys.executable, "-m", "fastsal", "predict", str(images), "-o", str(out), "-q"]
    if mode == "local":
        return [base]
    if mode == "shards":
        return [[*base, "--shard", f"{i}/2", "--threads", "1"] for i in range(2)]
    return [[*base, "--ray", "local", "--ray-actors", str(actors)]]


def run_mode(cmds: list[list[str]], out: Path, n: int, env: dict[str, str]) -> dict[str, float]:
    """Run ``cmds`` side by side; wall, CPU of their whole process trees, time to the first map."""
    import psutil

    cpu: dict[tuple[int, float], float] = {}  # (pid, create time) -> latest user+system seconds
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    roots = [psutil.Process(p.pid) for p in procs]
    first = None
    while any(p.poll() is None for p in procs):
        for root in roots:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for proc in tree:
                try:
                    t = proc.cpu_times()
                    cpu[(proc.pid, proc.create_time())] = t.user + t.system
                except psutil.Error:
                    pass
        if first is None and any(out.rglob("*.png")):
            first = time.perf_counter() - t0
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    for p in procs:
        err = p.stderr.read().decode(errors="replace") if p.stderr else ""
        if p.wait() != 0:
            raise SystemExit(f"{' '.join(p.args)} failed ({p.returncode}):\n{err[-3000:]}")
    written = len(list(out.rglob("*.png")))
    if written != n:
        raise SystemExit(f"{out}: {written} maps for {n} images")
    first = wall if first is None else first
    return {"wall_s": round(wall, 2), "cpu_s": round(sum(cpu.values()), 2),
            "cpu_s_per_image": round(sum(cpu.values()) / n, 4), "startup_s": round(first, 2),
            "steady_images_per_s": round((n - 1) / max(wall - first, 1e-9), 2), "images_per_s": round(n / wall, 2)}


def identical(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    return files == sorted(p.relative_to(b) for p in b.rglob("*.png")) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--images", type=int, default=240)
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)
    from fastsal import cpu

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    work = Path(tempfile.mkdtemp(prefix="fastsal-scale-"))
    try:
        images = work / "images"
        n = make_folder(images, args.images)
        # warm the engine's on-disk cache (a first run converts the model), outside every timing
        subprocess.run([sys.executable, "-m", "fastsal", "predict", str(next(images.iterdir())), "-o",
                        str(work / "warm.png")], env=env, check=True, capture_output=True)
        load = os.getloadavg()
        results: dict[str, dict[str, object]] = {}
        for mode in args.modes:
            out = work / mode
            figures: dict[str, object] = run_mode(commands(mode, images, out, args.actors), out, n, env)
            if mode != args.modes[0]:
                figures["identical"] = identical(work / args.modes[0], out)
            figures["command"] = " ; ".join(" ".join(c[2:]) for c in commands(mode, Path("IMAGES"), Path("OUT"),
                                                                               args.actors))
            results[mode] = figures
            print(f"{mode:7s} {json.dumps(figures)}", flush=True)
        report = {"cpu": cpu.describe(), "images": n, "load_average_before": [round(v, 2) for v in load],
                  "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "modes": results}
        print(f"CPU: {report['cpu']}  load average before: {report['load_average_before']}")
        from fastsal.files import write_json

        write_json(report, args.json)
        print(f"wrote {args.json}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
