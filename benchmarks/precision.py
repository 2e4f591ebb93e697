"""What each engine and precision costs and buys: latency, OSIE accuracy and the share of the
CPU's fp32 matmul peak, for the shipped default model at its own input size (384x512), in one run
on one machine.

    python benchmarks/precision.py                       # from the repository root; OSIE at ../shared/data/osie
    python benchmarks/precision.py --limit 5 --runs 3 --warmup 1 --json /tmp/precision.json   # smoke run

Every (engine, precision) this CPU offers is measured: fp32 on OpenVINO, ONNX Runtime and PyTorch
(the fused model), bf16 on OpenVINO and PyTorch where the CPU has native bf16
(:func:`fastsal.cpu.supports_bf16`), int8 on OpenVINO with both recipes of :mod:`fastsal.quantize`
(``openvino-int8``: NNCF; ``openvino-int8-ort``: the onnxruntime-quantised QDQ ONNX graph, chosen
with ``$FASTSAL_OPENVINO_INT8=onnxruntime``) and on ONNX Runtime (the QDQ graph; calibration on the
shipped OSIE *train* images for all), plus eager PyTorch (the model as defined, unfused) as the
naive baseline. Engines or recipes that are not installed are skipped.

- **Latency**: ms per image at batch 1 and batch 8 of ``Predictor.runner`` (the network alone: no
  decoding, resizing or post-processing) on a fixed random batch; the median of ``--runs`` timed
  calls after ``--warmup`` untimed ones. All configurations are timed round-robin (one call each
  per round, the order rotated every round), so a slow spell of the machine hits every
  configuration alike instead of whichever happened to run then. Each timed call is preceded by
  ``--pause`` seconds of idle: after a call, ONNX Runtime's worker threads keep spinning for
  tens of ms (and PyTorch's OpenMP threads briefly), and on a 2-core machine a PyTorch call
  started straight after an ONNX Runtime one took 4x as long (2x after a 20 ms pause, unaffected
  after 50 ms), so back-to-back timing would bill one engine for another's threads.
- **Accuracy**: the project's own ``fastsal evaluate --backend E --precision P --no-gold -q --json``
  on OSIE ``test`` (all 100 images unless ``--limit``), once per configuration: mean NSS, CC,
  AUC-Judd and KLD, and the relative change (%) of NSS and CC against PyTorch fp32. The PyTorch
  fp32 run keeps the gold standard, so the centre-bias and gold-standard rows come from it. Eager
  PyTorch computes the same maps as fused PyTorch fp32 and is not scored separately. The test
  split is only scored here, never used to choose anything.
- **Matmul peak**: the best GFLOP/s of ``torch.mm`` on fp32 square matrices (1024, 2048, 3072) with
  the engines' thread count, best of ``--mm-runs`` calls just before and as many just after the
  latency rounds (so one busy spell cannot lower it); for each fp32 configuration the model's achieved
  GFLOP/s = 2 * MACs / latency (MACs: :func:`fastsal.cost.count_macs` of the fused model, batch 1)
  and its ratio to that peak: how far a small depthwise-heavy network is from what the cores can do.

Prints a markdown table for the README, the matmul-peak lines and the CPU (name and the
instruction-set extensions that decide which precisions exist), and writes JSON
(``benchmarks/results/precision.json`` by default) atomically.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from io import StringIO
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

import fastsal
from fastsal import cpu, defaults, quantize
from fastsal.cli import main as fastsal_cli
from fastsal.cost import EAGER, count_macs, label_runner, parse_label, runner_labels
from fastsal.files import write_json
from fastsal.models import load_model, shipped_weights, weights_for
from fastsal.models.fuse import fuse
from fastsal.runtime import installed

OSIE = Path(__file__).resolve().parents[2] / "shared" / "data" / "osie"
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "precision.json"
INPUT_SIZE: tuple[int, int] = tuple(weights_for(defaults.MODEL).input_size)  # type: ignore[assignment]
#: Extra rows: label -> (engine, precision, $FASTSAL_OPENVINO_INT8 for the row)
RECIPE_ROWS: dict[str, tuple[str, str, str]] = {"openvino-int8": ("openvino", "int8", "nncf"),
                                                "openvino-int8-ort": ("openvino", "int8", "onnxruntime")}
BATCHES: tuple[int, ...] = (1, 8)
MATMUL_SIZES: tuple[int, ...] = (1024, 2048, 3072)
METRICS: tuple[str, ...] = ("nss", "cc", "auc_judd", "kld")
REFERENCE = ("torch", "fp32")  # what the speed-ups and accuracy changes are measured against
ENGINE_NAMES = {EAGER: "PyTorch eager (unfused)", "openvino": "OpenVINO", "onnxruntime": "ONNX Runtime",
                "torch": "PyTorch"}


@dataclass
class Config:
    """One (engine, precision) and what was measured for it."""

    label: str
    engine: str
    precision: str
    run: Callable[[np.ndarray], Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    times: dict[int, list[float]] = field(default_factory=dict)  # batch -> seconds per call
    recipe: str | None = None  # OpenVINO int8: which fastsal.quantize recipe (set while preparing and scoring)

    def ms_per_image(self, batch: int) -> float:
        """Median ms per image: the median resists the odd slow call on a shared machine."""
        return statistics.median(self.times[batch]) / batch * 1000.0


def usable_labels() -> tuple[list[str], list[str]]:
    """(labels of :func:`fastsal.cost.runner_labels` this machine can run, why the others cannot).

    bf16 is left out where the CPU would only emulate it (the engines refuse it there anyway), and
    engines whose package is missing are left out rather than silently replaced by another one.
    """
    keep, skipped = [], []
    labels = list(runner_labels())
    labels[labels.index("openvino-int8") + 1:1 + labels.index("openvino-int8")] = ["openvino-int8-ort"]
    for lab in labels:
        engine, precision = parse_label(lab) if lab not in RECIPE_ROWS else RECIPE_ROWS[lab][:2]
        if lab in RECIPE_ROWS and not quantize.installed(RECIPE_ROWS[lab][2]):
            skipped.append(f"{lab}: the {RECIPE_ROWS[lab][2]} int8 recipe's packages are not installed")
        elif precision == "bf16" and not cpu.supports_bf16():
            skipped.append(f"{lab}: this CPU has no native bf16 (AVX512_BF16/AMX)")
        elif engine != EAGER and not installed(engine):
            skipped.append(f"{lab}: {engine} is not installed")
        else:
            keep.append(lab)
    return keep, skipped


def prepare(labels: Sequence[str], threads: int) -> list[Config]:
    """A runner per label: ``fastsal.load(...).runner`` for the engines (exactly what ``fastsal
    predict`` runs, converted files from the cache), the unfused module for eager."""
    model, _ = load_model(shipped_weights(defaults.MODEL))
    configs = []
    for lab in labels:
        engine, precision = parse_label(lab) if lab not in RECIPE_ROWS else RECIPE_ROWS[lab][:2]
        cfg = Config(lab, engine, precision, recipe=RECIPE_ROWS[lab][2] if lab in RECIPE_ROWS else None)
        if engine == EAGER:
            cfg.run, _ = label_runner(model, defaults.MODEL, EAGER, INPUT_SIZE, threads=threads)
            cfg.settings = {"backend": EAGER, "precision": "fp32", "input_size": list(INPUT_SIZE)}
        else:
            with recipe_env(cfg.recipe):
                predictor = fastsal.load("default", input_size=INPUT_SIZE, backend=engine, precision=precision,
                                         threads=threads)
            got = (predictor.runner.backend, predictor.runner.precision)
            if got != (engine, precision):  # a fallback would put the wrong engine's figures in the table
                raise SystemExit(f"asked for {engine} {precision}, got {got[0]} {got[1]}")
            cfg.run, cfg.settings = predictor.runner, {**predictor.settings(), "int8_recipe": cfg.recipe}
        configs.append(cfg)
        print(f"prepared {lab}", flush=True)
    return configs


@contextmanager
def recipe_env(recipe: str | None) -> Iterator[None]:
    """``$FASTSAL_OPENVINO_INT8`` set to ``recipe`` (if any) for the block, then restored."""
    old = os.environ.get(quantize.ENV)
    if recipe is not None:
        os.environ[quantize.ENV] = recipe
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(quantize.ENV, None)
        else:
            os.environ[quantize.ENV] = old


def profile_openvino(cfg: Config, calls: int) -> dict[str, Any]:
    """Where an OpenVINO configuration spends its time: its model compiled again with
    ``PERF_COUNT`` (same config otherwise), ``calls`` batch-1 runs, the layers' own times summed
    by the precision the kernel ran in (``exec_type``'s suffix, e.g. I8 / FP32 / BF16) and by layer
    type within it; OpenVINO's counterpart of ``benchmark_app -pc``."""
    runner = cfg.run
    model = runner.model.clone()
    shape = model.input(0).get_partial_shape()
    shape[0] = 1
    model.reshape({model.input(0): shape})
    compiled = runner.core.compile_model(model, "CPU", {**runner.config, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    x = np.random.default_rng(0).random((1, 3, *runner.graph_size), dtype=np.float32)
    totals: dict[str, dict[str, float]] = {}
    for _ in range(calls):
        request.infer({0: x})
        for info in request.get_profiling_info():
            if info.status.name != "EXECUTED":
                continue
            kind = (info.exec_type.rsplit("_", 1)[-1] if "_" in info.exec_type else info.exec_type).upper()
            by_type = totals.setdefault(kind, {})
            by_type[info.node_type] = by_type.get(info.node_type, 0.0) + info.real_time.total_seconds() * 1e3 / calls
    return {k: dict(sorted(v.items(), key=lambda kv: -kv[1])) for k, v in sorted(totals.items())}


def time_round_robin(configs: list[Config], warmup: int, runs: int, pause: float) -> None:
    """Fill each config's ``times``: warm-up calls, then ``runs`` rounds of one timed call per
    (config, batch), the starting config rotated each round."""
    rng = np.random.default_rng(0)
    inputs = {b: rng.random((b, 3, *INPUT_SIZE), dtype=np.float32) for b in BATCHES}
    for cfg in configs:
        assert cfg.run is not None
        for b, x in inputs.items():
            for _ in range(warmup):
                cfg.run(x)
            cfg.times[b] = []
    for r in range(runs):
        order = configs[r % len(configs):] + configs[:r % len(configs)]
        for cfg in order:
            assert cfg.run is not None
            for b, x in inputs.items():
                time.sleep(pause)
                t0 = time.perf_counter()
                cfg.run(x)
                cfg.times[b].append(time.perf_counter() - t0)


def matmul_peak(threads: int, runs: int) -> dict[str, float]:
    """Best fp32 ``torch.mm`` GFLOP/s per square size with ``threads`` threads: the ceiling the
    model's achieved GFLOP/s is compared with."""
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    best = {}
    for n in MATMUL_SIZES:
        a = torch.rand(n, n, generator=gen)
        b = torch.rand(n, n, generator=gen)
        torch.mm(a, b)  # warm-up: page in, pick kernels
        fastest = min(_seconds(lambda: torch.mm(a, b)) for _ in range(runs))
        best[str(n)] = 2.0 * n ** 3 / fastest / 1e9
    return best


def _seconds(fn: Callable[[], Any]) -> float:
    """Wall time of one call (torch.mm is synchronous on the CPU)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def evaluate(engine: str, precision: str, root: Path, threads: int, limit: int | None, gold: bool,
             work: Path, recipe: str | None = None) -> dict[str, Any]:
    """``fastsal evaluate`` for one configuration (OpenVINO int8: with ``recipe``); returns its JSON report."""
    out = work / f"{engine}-{precision}-{recipe}.json"
    argv = ["evaluate", "--backend", engine, "--precision", precision, "--threads", str(threads),
            "--input-size", f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]}", "--root", str(root), "--split", "test",
            "--json", str(out), "-q"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if not gold:
        argv.append("--no-gold")
    print("$ " + (f"{quantize.ENV}={recipe} " if recipe else "") + "fastsal " + " ".join(argv), flush=True)
    buf = StringIO()
    with redirect_stdout(buf), recipe_env(recipe):
        rc = fastsal_cli(argv)
    print(buf.getvalue(), end="", flush=True)
    if rc != 0:
        raise SystemExit(f"fastsal evaluate failed with exit code {rc}")
    report = json.loads(out.read_text())
    used = report["config"]["predictor"]
    if (used["backend"], used["precision"]) != (engine, precision):
        raise SystemExit(f"fastsal evaluate ran {used['backend']} {used['precision']}, not {engine} {precision}")
    return report


def means(result: dict[str, Any]) -> dict[str, float]:
    """The means of the reported metrics from one row of an evaluate report (sem and n stay there)."""
    return {m: float(result[m]["mean"]) for m in METRICS}


def change_pct(value: float, reference: float) -> float:
    """Relative change in %, signed so that a drop shows as negative whatever the metric's scale."""
    return 100.0 * (value - reference) / abs(reference)


def version(module: str) -> str | None:
    """A package's version for the JSON (engine versions change the figures), None if absent."""
    try:
        return str(__import__(module).__version__)
    except Exception:  # not installed, or no version attribute: recorded as null
        return None


def fmt(value: float | None, spec: str) -> str:
    """A table cell: ``-`` where nothing was measured (eager's accuracy, --no-accuracy)."""
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for every engine and the matmul "
                    "(default: all cores)")
    ap.add_argument("--runs", type=int, default=30, help="timed rounds (default: 30)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per configuration and batch (default: 3)")
    ap.add_argument("--pause", type=float, default=0.1,
                    help="seconds of idle before each timed call (default: 0.1; see the module docstring)")
    ap.add_argument("--mm-runs", type=int, default=5, help="timed torch.mm calls per size; the best counts")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N test images (smoke runs)")
    ap.add_argument("--no-accuracy", action="store_true", help="latency and matmul peak only")
    ap.add_argument("--profile", type=int, default=10, metavar="N",
                    help="per-layer profile of each OpenVINO configuration over N batch-1 calls (0: none; default 10)")
    ap.add_argument("--root", type=Path, default=OSIE, help="OSIE folder (default: ../shared/data/osie)")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = ap.parse_args(argv)

    started = time.perf_counter()
    describe = cpu.describe()
    torch.set_num_threads(args.threads)
    labels, skipped = usable_labels()
    for note in skipped:
        print(f"skipped {note}", flush=True)
    configs = prepare(labels, args.threads)
    load_before = os.getloadavg()
    # the peak is taken before and after the latencies (best of both), so one busy spell cannot lower it
    peak_before = matmul_peak(args.threads, args.mm_runs)
    print(f"timing {len(configs)} configurations x batches {list(BATCHES)}: {args.warmup} warm-up, "
          f"{args.runs} rounds, threads={args.threads}", flush=True)
    time_round_robin(configs, args.warmup, args.runs, args.pause)
    peak_after = matmul_peak(args.threads, args.mm_runs)
    load_after = os.getloadavg()
    profiles = {c.label: profile_openvino(c, args.profile) for c in configs
                if c.engine == "openvino" and args.profile > 0}
    peak_by_size = {n: max(peak_before[n], peak_after[n]) for n in peak_before}
    peak = max(peak_by_size.values())
    model, _ = load_model(shipped_weights(defaults.MODEL))
    macs = count_macs(fuse(model), INPUT_SIZE)

    accuracy: dict[str, dict[str, float]] = {}
    baselines: dict[str, dict[str, float]] = {}
    n_images = None
    if not args.no_accuracy:
        with tempfile.TemporaryDirectory(prefix="fastsal-precision-") as tmp:
            for cfg in configs:
                if cfg.engine == EAGER:
                    continue
                gold = (cfg.engine, cfg.precision) == REFERENCE
                report = evaluate(cfg.engine, cfg.precision, args.root, args.threads, args.limit, gold, Path(tmp),
                                  cfg.recipe)
                results = report["results"]
                accuracy[cfg.label] = means(results[report["config"]["predictor"]["model"]])
                n_images = report["config"]["n_images"]
                if gold:
                    baselines = {name: means(results[name]) for name in ("centre bias", "gold standard")}

    by_label = {c.label: c for c in configs}
    ref = by_label["torch"]
    eager = by_label.get(EAGER)
    ref_acc = accuracy.get("torch")
    rows = []
    for cfg in configs:
        ms = {b: cfg.ms_per_image(b) for b in BATCHES}
        gflops = {b: 2.0 * macs / (ms[b] / 1000.0) / 1e9 for b in BATCHES}
        row: dict[str, Any] = {
            "label": cfg.label, "engine": cfg.engine, "precision": cfg.precision, "int8_recipe": cfg.recipe,
            "settings": cfg.settings,
            "ms_per_image": {str(b): ms[b] for b in BATCHES},
            "ms_per_image_min": {str(b): min(cfg.times[b]) / b * 1000.0 for b in BATCHES},
            "speedup_vs_torch_fp32": {str(b): ref.ms_per_image(b) / ms[b] for b in BATCHES},
            "speedup_vs_eager": {str(b): eager.ms_per_image(b) / ms[b] for b in BATCHES} if eager else None,
            # for bf16/int8 this is an fp32-equivalent rate; the ratio to the fp32 peak is only meaningful for fp32
            "achieved_gflops": {str(b): gflops[b] for b in BATCHES},
            "fraction_of_fp32_peak": {str(b): gflops[b] / peak for b in BATCHES} if cfg.precision == "fp32" else None,
        }
        if cfg.label in accuracy:
            row["accuracy"] = accuracy[cfg.label]
            if ref_acc:
                row["change_pct_vs_torch_fp32"] = {m: change_pct(accuracy[cfg.label][m], ref_acc[m])
                                                   for m in ("nss", "cc")}
        rows.append(row)

    lines = ["| engine | precision | ms (batch 1) | ms/img (batch 8) | x PyTorch fp32 | NSS | ΔNSS % | CC | ΔCC % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        acc, delta = row.get("accuracy"), row.get("change_pct_vs_torch_fp32")
        speed = row["speedup_vs_torch_fp32"]
        recipe = f" ({row['int8_recipe']})" if row["int8_recipe"] else ""
        lines.append(
            f"| {ENGINE_NAMES[row['engine']]} | {row['precision']}{recipe} | {row['ms_per_image']['1']:.1f} | "
            f"{row['ms_per_image']['8']:.1f} | {speed['1']:.2f} / {speed['8']:.2f} | "
            f"{fmt(acc['nss'] if acc else None, '.3f')} | {fmt(delta['nss'] if delta else None, '+.2f')} | "
            f"{fmt(acc['cc'] if acc else None, '.3f')} | {fmt(delta['cc'] if delta else None, '+.2f')} |")
    for name, values in baselines.items():
        lines.append(f"| {name} | - | - | - | - | {values['nss']:.3f} | - | {values['cc']:.3f} | - |")
    print()
    print("\n".join(lines))
    print(f"\n(x PyTorch fp32: batch 1 / batch 8; PyTorch = the fused model; eager PyTorch has the same maps "
          f"as PyTorch fp32; accuracy on {n_images if n_images is not None else 'no'} OSIE test images)")
    if accuracy:
        print("\n| configuration | NSS | CC | AUC-Judd | KLD |\n|---|---:|---:|---:|---:|")
        for lab, values in [*accuracy.items(), *baselines.items()]:
            print(f"| {lab} | {values['nss']:.3f} | {values['cc']:.3f} | {values['auc_judd']:.4f} | {values['kld']:.4f} |")
    if eager:
        print("\nspeed-up over eager PyTorch (batch 1 / batch 8): " + ", ".join(
            f"{r['label']} {r['speedup_vs_eager']['1']:.2f} / {r['speedup_vs_eager']['8']:.2f}" for r in rows))
    print(f"\nfp32 matmul peak (torch.mm, {args.threads} threads, best of {args.mm_runs} before and {args.mm_runs} "
          f"after the latencies): "
          + ", ".join(f"{n}: {g:.1f}" for n, g in peak_by_size.items()) + f" GFLOP/s; peak {peak:.1f} GFLOP/s")
    print(f"model: {macs / 1e9:.3f} GMACs (fused, batch 1, {INPUT_SIZE[0]}x{INPUT_SIZE[1]}); achieved fp32 "
          f"GFLOP/s (batch 1 / batch 8) and share of the peak:")
    for row in rows:
        if row["fraction_of_fp32_peak"]:
            g, f = row["achieved_gflops"], row["fraction_of_fp32_peak"]
            print(f"  {row['label']:<12} {g['1']:6.1f} / {g['8']:6.1f} GFLOP/s = {100 * f['1']:4.1f} % / "
                  f"{100 * f['8']:4.1f} % of peak")
    for lab, prof in profiles.items():
        print(f"\nOpenVINO profile of {lab} (ms per batch-1 call, layers' own times, by kernel precision):")
        for kind, by_type in prof.items():
            top = ", ".join(f"{t} {ms:.2f}" for t, ms in list(by_type.items())[:6])
            print(f"  {kind:<6} {sum(by_type.values()):7.2f} ms: {top}")
    features = ", ".join(describe["features"]) or "no AVX"  # type: ignore[arg-type]
    print(f"load average (1 min) before / after the latency rounds: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print(f"\nCPU: {describe['name']}, {describe['cores']} cores, {args.threads} threads, level {describe['level']}: "
          f"{features}")

    write_json({
        "benchmark": "precision",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "model": defaults.MODEL,
        "input_size": list(INPUT_SIZE),
        "threads": args.threads,
        "warmup": args.warmup,
        "runs": args.runs,
        "pause_s": args.pause,
        "split": "test",
        "n_images": n_images,
        "cpu": describe,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": version("onnxruntime"), "openvino": version("openvino")},
        "skipped": skipped,
        "macs_fused": macs,
        "matmul_peak_gflops": {"by_size": peak_by_size, "best": peak, "runs": args.mm_runs,
                               "before_latency": peak_before, "after_latency": peak_after},
        # 1-minute load average before and after the latency rounds: other work on the machine shows here
        "load_average": {"before": load_before[0], "after": load_after[0]},
        "rows": rows,
        "openvino_profiles_ms": profiles,
        "cpu_flags": sorted(f for f in cpu.cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4")) or "vnni" in f),
        "baselines": baselines,
        "seconds": time.perf_counter() - started,
    }, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
