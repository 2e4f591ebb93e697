"""Load on ``fastsal serve``: N concurrent clients on loopback, against ``fastsal predict`` on the same images.

    python benchmarks/serve_load.py                        # 50 clients, 20 s, PNG maps, 100 OSIE val JPEGs
    python benchmarks/serve_load.py --clients 10 --duration 10 --output json
    python benchmarks/serve_load.py --workers 2                   # the server with --workers 2
    python benchmarks/serve_load.py --compare 2                   # 1 process vs 2 workers vs 2 replicas

Starts ``fastsal serve --port 0`` on 127.0.0.1 (only loopback: there is no option to aim it
elsewhere), warms it up, then runs ``--clients`` threads, each sending ``POST /v1/predict`` with the
next image, one request at a time on a keep-alive connection, until ``--duration`` seconds or
``--max-requests`` requests in all, whichever comes first. Reports:

- requests/s (answered requests over the load's wall time) and images/s of valid maps;
- latency p50/p95/p99/max over all answered requests, in ms;
- the share of valid answers (200 with a PNG / JSON of the image's size) and every status seen;
- the server's peak memory: its process's peak resident set (``VmHWM``) and RSS sampled during the load;
- CPU milliseconds per map, of the server process and of ``fastsal predict`` (start-up excluded):
  unlike the rates, hardly moved by other work on a shared machine;
- ``fastsal predict`` on the same images, same engine, in the same run (its own images/s, model
  load excluded, and its wall time), and the server's throughput as a share of it; ``--rounds``
  alternates the two (default 2), so both meet the same background load on a shared machine.

The clients run in this process, on the same cores as the server, as they would on a 2-core box
serving its own users; the CPU's name and extensions (:func:`fastsal.cpu.describe`) are printed
and stored. JSON goes to ``benchmarks/results/serve_load.json``.

``--compare N`` measures, in one run and alternated over ``--rounds``, the same load against one
process (``--threads T``, T = the CPUs available unless ``--threads`` says), ``--workers N``
(T/N threads each) and N replicas (N one-process servers on N ports, T/N threads each, behind a
round-robin client: request i goes to server i mod N); memory and CPU are summed over every
process of a setup (a supervisor and its workers included). It prints the CPU's flags and the
load average around each measurement (other work on the machine moves the rates) and a markdown
table, and writes ``benchmarks/results/serve_scale.json``; ``fastsal predict`` is not run.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from fastsal import cpu
from fastsal.files import write_json

OSIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "osie"
EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "fastsal" / "assets" / "example.jpg"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "serve_load.json"
SCALE_JSON = Path(__file__).resolve().parent / "results" / "serve_scale.json"
MAX_CLIENTS, MAX_DURATION_S, MAX_REQUESTS = 256, 120.0, 20_000


def images(n: int) -> tuple[list[tuple[str, bytes, tuple[int, int]]], str]:
    """(name, JPEG bytes, (width, height)) for n images: OSIE val when present, else example variants."""
    split = OSIE / "splits.json"
    out = []
    if split.is_file():
        for name in json.loads(split.read_text())["val"][:n]:
            data = (OSIE / "stimuli" / name).read_bytes()
            out.append((name, data, Image.open(io.BytesIO(data)).size))
        return out, f"OSIE val ({len(out)} JPEGs, 800x600)"
    base = Image.open(EXAMPLE).convert("RGB")
    for i in range(n):
        buf = io.BytesIO()
        (base.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else base).save(buf, "JPEG", quality=90 - i % 5)
        out.append((f"{i:04d}.jpg", buf.getvalue(), base.size))
    return out, f"bundled example variants ({n} JPEGs, 800x600)"


def start_server(args: argparse.Namespace, workers: int | None = None,
                 threads: int | None = None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "fastsal", "serve", "--host", "127.0.0.1", "--port", "0", "-q",
           "--queue", str(args.queue), "--backend", args.backend, "--precision", args.precision,
           "--workers", str(workers or args.workers)]
    if threads or args.threads:
        cmd += ["--threads", str(threads or args.threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:\d+/) ", line or "")
        if m:
            return proc, m.group(1)
        if not line:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {proc.stderr.read()[-2000:]}")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB, from /proc."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (a ``--workers`` supervisor's workers), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    out, todo = [pid], [pid]
    while todo:
        parent = todo.pop()
        kids = [c for c, pp in parents.items() if pp == parent]
        out += kids
        todo += kids
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (/proc/PID/stat), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body_for(data: bytes, boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()


def valid(status: int, payload: bytes, output: str, size: tuple[int, int]) -> bool:
    if status != 200:
        return False
    try:
        if output == "json":
            j = json.loads(payload)
            return (j["width"], j["height"]) == size and abs(sum(map(sum, j["grid"]["values"])) - 1) < 1e-3
        return Image.open(io.BytesIO(payload)).size == size
    except Exception:  # noqa: BLE001 - anything unparsable is simply not a valid answer
        return False


def run_load(urls: list[str], pids: list[int], imgs: list, args: argparse.Namespace) -> dict:
    """``args.clients`` clients for ``args.duration`` s; request i goes to ``urls[i % len(urls)]``
    (round robin over replicas); memory and CPU summed over ``pids``."""
    addrs = [(h, int(p)) for h, p in (re.match(r"http://([\d.]+):(\d+)/", u).groups() for u in urls)]
    boundary = uuid.uuid4().hex
    bodies = [body_for(data, boundary) for _, data, _ in imgs]
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    path = f"/v1/predict?output={args.output}"
    lock = threading.Lock()
    results: list[tuple[float, int, bool]] = []
    counter = iter(range(10 ** 9))
    stop_at = time.monotonic() + args.duration
    rss_samples: list[int] = []

    def client() -> None:
        conns = [http.client.HTTPConnection(h, p, timeout=60) for h, p in addrs]
        while time.monotonic() < stop_at:
            with lock:
                i = next(counter)
            if i >= args.max_requests:
                break
            k = i % len(bodies)
            s = i % len(addrs)
            conn = conns[s]
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=bodies[k], headers=headers)
                r = conn.getresponse()
                payload = r.read()
                status = r.status
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
                    conns[s] = http.client.HTTPConnection(*addrs[s], timeout=60)
            except (OSError, http.client.HTTPException):
                status, payload = 0, b""
                conn.close()
                conns[s] = http.client.HTTPConnection(*addrs[s], timeout=60)
            dt = time.perf_counter() - t0
            ok = valid(status, payload, args.output, imgs[k][2])
            with lock:
                results.append((dt, status, ok))
        for conn in conns:
            conn.close()

    def mem(key: str) -> int:
        return sum(memory_kb(pid)[key] for pid in pids)

    def sample() -> None:
        while time.monotonic() < stop_at + 1:
            try:
                rss_samples.append(mem("VmRSS"))
            except (OSError, KeyError):
                return
            time.sleep(0.2)

    mem_before = {k: mem(k) for k in ("VmRSS", "VmHWM")}
    cpu_before = sum(cpu_seconds(pid) for pid in pids)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    mem_after = {k: mem(k) for k in ("VmRSS", "VmHWM")}
    cpu_used = sum(cpu_seconds(pid) for pid in pids) - cpu_before
    lat = np.array([r[0] for r in results]) * 1000.0
    statuses: dict[str, int] = {}
    for _, s, _ in results:
        statuses[str(s)] = statuses.get(str(s), 0) + 1
    n_valid = sum(1 for r in results if r[2])
    return {
        "clients": args.clients, "duration_s": round(wall, 2), "requests": len(results),
        "requests_per_s": round(len(results) / wall, 2), "valid_maps_per_s": round(n_valid / wall, 2),
        "valid_share": round(n_valid / max(1, len(results)), 4), "statuses": statuses,
        "server_cpu_ms_per_map": round(1000.0 * cpu_used / max(1, n_valid), 2),
        "latency_ms": {q: round(float(np.percentile(lat, p)), 1) for q, p in
                       (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))} if len(lat) else {},
        "server_rss_mb": {"before_load": round(mem_before["VmRSS"] / 1024, 1),
                          "peak_during_load": round(max(rss_samples + [mem_after["VmRSS"]]) / 1024, 1),
                          "peak_of_process_VmHWM": round(mem_after["VmHWM"] / 1024, 1)},
    }


def _predict_once(imgs: list, args: argparse.Namespace, repeat: int) -> tuple[int, float, float, float]:
    """(maps written, its own img/s, wall s, CPU s of the whole process) for one ``fastsal predict``."""
    with tempfile.TemporaryDirectory(prefix="fastsal-serve-load-") as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for r in range(repeat):
            for name, data, _ in imgs:
                (src / f"{r:02d}_{name}").write_bytes(data)
        cmd = [sys.executable, "-m", "fastsal", "predict", str(src), "-o", str(Path(tmp) / "out"), "--format", "png",
               "--backend", args.backend, "--precision", args.precision]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if res.returncode != 0:
            raise SystemExit(f"fastsal predict failed: {res.stderr[-2000:]}")
        m = re.search(r"(\d+) maps? written .*?([\d.]+) img/s", res.stderr)
        n = int(m.group(1)) if m else repeat * len(imgs)
        rate = float(m.group(2)) if m else n / wall
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return n, rate, wall, cpu_s


def run_predict(imgs: list, args: argparse.Namespace, repeat: int) -> dict:
    """``fastsal predict`` over the same images (``repeat`` copies each), PNG maps, same engine.

    CPU per map leaves start-up out: a one-image run measures the start-up (imports, model load)
    and is subtracted, so the figure compares with the server's, whose model is already loaded.
    """
    _, _, _, startup_cpu = _predict_once(imgs[:1], args, 1)
    n, rate, wall, cpu_s = _predict_once(imgs, args, repeat)
    return {"images": n, "images_per_s": rate, "wall_s_with_startup": round(wall, 2),
            "cpu_ms_per_map": round(1000.0 * max(0.0, cpu_s - startup_cpu) / max(1, n - 1), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=50, help=f"concurrent clients, 1..{MAX_CLIENTS} (default: 50)")
    ap.add_argument("--duration", type=float, default=20.0, help=f"seconds of load, at most {MAX_DURATION_S:g}")
    ap.add_argument("--max-requests", type=int, default=5000, help=f"requests in all, at most {MAX_REQUESTS}")
    ap.add_argument("--images", type=int, default=100, help="distinct images (default: 100)")
    ap.add_argument("--output", choices=("png", "json", "overlay"), default="png",
                    help="what the server returns (default: png, what `fastsal predict` writes)")
    ap.add_argument("--queue", type=int, default=64, help="the server's --queue (default: 64)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1, help="the server's --workers (default: 1)")
    ap.add_argument("--compare", type=int, default=None, metavar="N",
                    help="1 process vs N workers vs N replicas instead (no predict); JSON to serve_scale.json")
    ap.add_argument("--rounds", type=int, default=2, help="alternated server/predict rounds, 1..3 (default: 2)")
    ap.add_argument("--json", type=Path, default=None, help="where the JSON goes (default: benchmarks/results/"
                                                            "serve_load.json, or serve_scale.json with --compare)")
    args = ap.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.duration <= MAX_DURATION_S
            and 1 <= args.max_requests <= MAX_REQUESTS and 1 <= args.images <= 1000 and 1 <= args.rounds <= 3
            and 1 <= args.workers <= 16 and (args.compare is None or 2 <= args.compare <= 16)):
        ap.error(f"bounds: clients 1..{MAX_CLIENTS}, duration (0, {MAX_DURATION_S:g}], max-requests "
                 f"1..{MAX_REQUESTS}, images 1..1000, rounds 1..3, workers 1..16, compare 2..16")

    info = cpu.describe()
    print(f"CPU: {info['name']} ({info['cores']} cores) [{' '.join(info['features'])}]")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
    imgs, source = images(args.images)
    print(f"images: {source}; server output: {args.output}; {args.clients} clients for {args.duration:g} s")
    if args.compare:
        return compare(args, imgs, source, info)

    proc, url = start_server(args)
    rounds: list[dict] = []
    try:
        pid = proc.pid
        warm = argparse.Namespace(**{**vars(args), "clients": 2, "duration": 3.0, "max_requests": 20})
        pids = tree(pid)
        run_load([url], pids, imgs, warm)
        for r in range(args.rounds):  # alternated, so both see the same background load on a shared machine
            load = run_load([url], pids, imgs, args)
            repeat = max(1, min(10, round(load["requests"] / max(1, len(imgs)))))
            predict = run_predict(imgs, args, repeat)
            load["share_of_predict_throughput"] = round(load["valid_maps_per_s"] / predict["images_per_s"], 3)
            rounds.append({"server": load, "predict": predict})
            lat, mem = load["latency_ms"], load["server_rss_mb"]
            print(f"round {r + 1}/{args.rounds}")
            print(f"  server:  {load['requests']} requests in {load['duration_s']} s = {load['requests_per_s']} req/s, "
                  f"{load['valid_share'] * 100:.1f} % valid ({load['statuses']}); latency ms p50 {lat.get('p50')} "
                  f"p95 {lat.get('p95')} p99 {lat.get('p99')} max {lat.get('max')}")
            print(f"  memory:  server RSS {mem['before_load']} MB before, {mem['peak_during_load']} MB peak during "
                  f"load (VmHWM {mem['peak_of_process_VmHWM']} MB)")
            print(f"  predict: {predict['images']} images at {predict['images_per_s']:.1f} img/s (wall with start-up "
                  f"{predict['wall_s_with_startup']} s); the server delivers "
                  f"{load['share_of_predict_throughput'] * 100:.0f} % of that")
            print(f"  CPU per map: server {load['server_cpu_ms_per_map']} ms, predict {predict['cpu_ms_per_map']} ms "
                  f"(less sensitive to other work on the machine than the rates)")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
        "cpu": info, "images": source, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "settings": {k: v for k, v in vars(args).items() if k != "json"}, "rounds": rounds,
        "cpu_count": os.cpu_count(), "machine_note": "clients run on the same cores as the server",
    }
    print(f"wrote {write_json(report, args.json or DEFAULT_JSON)}")


def compare(args: argparse.Namespace, imgs: list, source: str, info: dict) -> None:
    """1 process vs ``args.compare`` workers vs as many replicas, same load, alternated rounds."""
    n = args.compare
    total = args.threads or cpu.available_cpus()
    each = max(1, total // n)
    setups = [("1 process", 1, 1, total), (f"{n} workers", 1, n, each), (f"{n} replicas", n, 1, each)]
    servers: dict[str, list[tuple[subprocess.Popen, str]]] = {}
    rows: list[dict] = []
    try:
        for name, copies, workers, threads in setups:  # all started up front; idle ones cost no CPU
            servers[name] = [start_server(args, workers, threads) for _ in range(copies)]
        warm = argparse.Namespace(**{**vars(args), "clients": 2 * n, "duration": 3.0, "max_requests": 40})
        for name, *_ in setups:
            run_load([u for _, u in servers[name]], [q for p, _ in servers[name] for q in tree(p.pid)], imgs, warm)
        for r in range(args.rounds):
            for name, copies, workers, threads in setups:
                pids = [q for p, _ in servers[name] for q in tree(p.pid)]
                before = os.getloadavg()[0]
                load = run_load([u for _, u in servers[name]], pids, imgs, args)
                row = {"round": r + 1, "setup": name, "servers": copies, "workers": workers,
                       "threads_each": threads, "processes": len(pids),
                       "load_average_1min": [round(before, 2), round(os.getloadavg()[0], 2)], **load}
                rows.append(row)
                lat, mem = load["latency_ms"], load["server_rss_mb"]
                print(f"round {r + 1} {name:>11}: {load['valid_maps_per_s']} maps/s, p50/p95/p99 {lat.get('p50')}/"
                      f"{lat.get('p95')}/{lat.get('p99')} ms, {load['valid_share'] * 100:.1f} % valid, RSS peak "
                      f"{mem['peak_during_load']} MB ({len(pids)} processes), CPU {load['server_cpu_ms_per_map']} "
                      f"ms/map, load average {row['load_average_1min'][0]} -> {row['load_average_1min'][1]}")
    finally:
        for procs in servers.values():
            for proc, _ in procs:
                proc.terminate()
        for procs in servers.values():
            for proc, _ in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(table(rows))
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "python": platform.python_version(),
        "cpu": info, "images": source, "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows,
        "cpu_count": os.cpu_count(), "machine_note": "clients run on the same cores as the servers",
    }
    print(f"wrote {write_json(report, args.json or SCALE_JSON)}")


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (what the README shows)."""
    out = ["| round | setup | threads each | maps/s | latency p50 / p95 / p99 (ms) | valid | RSS peak, all "
           "processes | CPU ms per map | load average (1 min) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_ms"]
        out.append(f"| {r['round']} | {r['setup']} | {r['threads_each']} | {r['valid_maps_per_s']} | {lat.get('p50')} / "
                   f"{lat.get('p95')} / {lat.get('p99')} | {r['valid_share'] * 100:.1f} % | "
                   f"{r['server_rss_mb']['peak_during_load']:.0f} MB | {r['server_cpu_ms_per_map']} | "
                   f"{r['load_average_1min'][0]} -> {r['load_average_1min'][1]} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
