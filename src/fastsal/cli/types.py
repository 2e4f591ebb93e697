"""argparse types: numbers in a range, HxW sizes, TTA specs, aspects. Torch-free.

Every number an option takes goes through :func:`number`, so each option's error names what it
wanted in the same words (``expected a whole number in 1..4096, got '0'``). Bounds that the library
checks too are read from :mod:`fastsal.defaults`, never copied.
"""
from __future__ import annotations

import argparse
import math
from typing import Callable, TypeVar

from fastsal import defaults

N = TypeVar("N", int, float)

MIN_INPUT_SIDE, MAX_INPUT_SIDE = defaults.INPUT_SIDE_RANGE  # network input sides accepted


def _wanted(kind: type, lo: float, hi: float | None, above: bool, below: bool) -> str:
    """What :func:`number` says it expected, in the words each option has always used."""
    if kind is int:
        return f"a whole number in {lo}..{hi}" if hi is not None else f"a whole number >= {lo}"
    if hi is not None:
        return f"a number in [{lo:g}, {hi:g}{')' if below else ']'}"
    return f"a finite number {'>' if above else '>='} {lo:g}"


def number(kind: type[N], lo: N, hi: N | None = None, *, above: bool = False, below: bool = False,
           wanted: str | None = None) -> Callable[[str], N]:
    """An argparse type: a finite ``kind`` (int or float) in lo..hi (no upper bound when ``hi`` is
    None; ``above``/``below`` exclude lo/hi), naming ``wanted`` (or the range) when it is not.

    The one factory for every numeric option, so ranges and messages are spelt one way.
    """
    says = wanted or _wanted(kind, lo, hi, above, below)

    def parse(text: str) -> N:
        try:
            value: float | None = kind(text)
        except ValueError:
            value = None
        ok = (value is not None and math.isfinite(value) and (value > lo if above else value >= lo)
              and (hi is None or (value < hi if below else value <= hi)))
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {says}, got {text!r}")
        return value  # type: ignore[return-value]
    return parse


positive_int = number(int, 1, wanted="a positive integer")
nonnegative_int = number(int, 0, wanted="an integer >= 0")


def hxw(text: str) -> tuple[int, int]:
    """An argparse type: ``HxW`` with each side in :data:`fastsal.defaults.INPUT_SIDE_RANGE`."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 192x256, got {text!r}") from None
    if not (MIN_INPUT_SIDE <= h <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= w <= MAX_INPUT_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE}, got {text!r}")
    return h, w


def threads(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type for a thread or worker count: a whole number in lo..hi, and never more
    than :func:`fastsal.cpu.max_threads` (a few per CPU available), so that one typo cannot
    exhaust the host's processes."""
    whole = number(int, lo, hi)

    def parse(text: str) -> int:
        from fastsal.cpu import ThreadCountError, check_threads

        try:
            return check_threads(whole(text), "", minimum=lo)
        except ThreadCountError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def tta_spec(text: str) -> str:
    """An argparse type: a TTA spec, checked (torch-free) and kept as text."""
    from fastsal.tta import TTA, TTAError

    try:
        TTA.parse(text)
    except TTAError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return text


def aspects(text: str) -> list:
    """An argparse type: ``16:9,1:1,4:5`` -> the parsed aspects (parsing is torch-free)."""
    from fastsal.cropping import CropError, parse_aspects

    try:
        return parse_aspects(text)
    except CropError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
