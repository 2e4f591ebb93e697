"""What the processor can do: its name and the instruction-set extensions that decide speed and
which reduced precisions exist (bf16 needs AVX512_BF16 or AMX; int8 is fast with VNNI or AMX).

Benchmarks print this next to their figures (a latency means little without the CPU), and
``precision="bf16"`` is refused on CPUs that would only emulate it. Imports nothing heavy.
"""
from __future__ import annotations

import functools
import platform
from pathlib import Path

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


def describe() -> dict[str, object]:
    """The CPU facts a benchmark JSON records beside its figures."""
    import os

    return {"name": cpu_name(), "level": isa_level(), "features": cpu_features(), "cores": os.cpu_count()}


__all__ = ["cpu_features", "cpu_flags", "cpu_name", "describe", "isa_level", "supports_bf16"]
