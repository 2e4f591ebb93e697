"""What the processor can do: its name and the instruction-set extensions that decide speed and
which reduced precisions exist (bf16 needs AVX512_BF16 or AMX; int8 is fast with VNNI or AMX).

Benchmarks print this next to their figures (a latency means little without the CPU), and
``precision="bf16"`` is refused on CPUs that would only emulate it. Imports nothing heavy.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

from fastsal.errors import FastSalError

#: Threads allowed per CPU available to the process: engines gain nothing beyond one per CPU, and
#: I/O-bound decoding workers little beyond a few; far larger counts only exhaust the host (a
#: ``--threads 100000`` run once took the machine's whole PID space).
THREADS_PER_CPU = 4


class ThreadCountError(FastSalError, ValueError):
    """A thread or worker count this machine cannot sensibly run; the message gives the bound."""

# /proc/cpuinfo flag -> the name people use, in the order a summary lists them
_FEATURES = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "avx512_fp16": "AVX512-FP16",
    "amx_tile": "AMX",
    "amx_bf16": "AMX-BF16",
    "amx_int8": "AMX-INT8",
}


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``/proc/cpuinfo``); empty elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    """The processor's model name, for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_features() -> list[str]:
    """The speed-relevant extensions this CPU has, e.g. ``['AVX2', 'FMA', 'AVX-512', 'AVX512-BF16']``."""
    flags = cpu_flags()
    return [name for flag, name in _FEATURES.items() if flag in flags]


def supports_bf16() -> bool:
    """True where bfloat16 arithmetic is native (AVX512_BF16 or AMX-BF16), not emulated."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def isa_level() -> str:
    """One word for the CPU's tier: ``amx``, ``avx512-bf16``, ``avx512-vnni``, ``avx512``, ``avx2`` or
    ``baseline``: how test reports and benchmark JSON tell machines apart."""
    flags = cpu_flags()
    for level, needs in (("amx", "amx_tile"), ("avx512-bf16", "avx512_bf16"), ("avx512-vnni", "avx512_vnni"),
                         ("avx512", "avx512f"), ("avx2", "avx2")):
        if needs in flags:
            return level
    return "baseline"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. under ``taskset`` or a container's
    cpuset), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most threads (or workers) any one setting may ask for: :data:`THREADS_PER_CPU` per CPU available."""
    return THREADS_PER_CPU * available_cpus()


def check_threads(value: object, name: str = "threads", *, minimum: int = 1,
                  error: type[FastSalError] = ThreadCountError) -> int:
    """``value`` as an int in ``minimum``..:func:`max_threads`, else ``error`` (the caller's own
    error class, so existing ``except PredictError`` code still catches it) naming ``name`` and
    the bound: what every thread and worker setting (command line, ``fastsal.load``, training,
    the server) goes through."""
    limit = max_threads()
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be a whole number in {minimum}..{limit}, got {value!r}")
    if value > limit:
        n = available_cpus()
        raise error(f"{name + ' ' if name else ''}{value} exceeds {limit}, the most this machine can use "
                               f"({THREADS_PER_CPU} per CPU, {n} available); pass {limit} or fewer ({n} is usually fastest)")
    return value


def threads_for(cpus: float | None) -> int:
    """Engine threads for a worker granted ``cpus`` CPUs (a Ray actor's ``num_cpus``, a container's
    quota): one per whole CPU, at least 1, at most :func:`available_cpus`. A worker that takes the
    engine's own default (every CPU of the machine) beside others only makes them fight for cores."""
    whole = int(cpus) if cpus is not None and cpus >= 1 else 1
    return max(1, min(whole, available_cpus()))


def describe() -> dict[str, object]:
    """The CPU facts a benchmark JSON records beside its figures."""
    return {"name": cpu_name(), "level": isa_level(), "features": cpu_features(), "cores": os.cpu_count()}


__all__ = ["THREADS_PER_CPU", "ThreadCountError", "available_cpus", "check_threads", "cpu_features", "cpu_flags",
           "cpu_name", "describe", "isa_level", "max_threads", "supports_bf16", "threads_for"]
