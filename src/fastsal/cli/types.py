"""argparse types: numbers in a range, HxW sizes, TTA specs, aspects. Torch-free."""
from __future__ import annotations

import argparse
import math
from typing import Callable

from fastsal import defaults

MIN_INPUT_SIDE, MAX_INPUT_SIDE = defaults.INPUT_SIDE_RANGE  # network input sides accepted


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 192x256, got {text!r}") from None
    if not (MIN_INPUT_SIDE <= h <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= w <= MAX_INPUT_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE}, got {text!r}")
    return h, w


def _finite_range(lo: float, hi: float, *, hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in [lo, hi] (or [lo, hi) with ``hi_open``), naming the range."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}, got {text!r}")
        return value
    return parse


def _whole(lo: int, hi: int | None) -> Callable[[str], int]:
    """An argparse type: an integer in lo..hi (or >= lo), naming the range when it is not."""
    wanted = f"a whole number in {lo}..{hi}" if hi is not None else f"a whole number >= {lo}"

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


def _threads(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type for a thread or worker count: a whole number in lo..hi, and never more
    than :func:`fastsal.cpu.max_threads` (a few per CPU available), so that one typo cannot
    exhaust the host's processes."""
    whole = _whole(lo, hi)

    def parse(text: str) -> int:
        from fastsal.cpu import ThreadCountError, check_threads

        try:
            return check_threads(whole(text), "", minimum=lo)
        except ThreadCountError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _tta(text: str) -> str:
    """An argparse type: a TTA spec, checked (torch-free) and kept as text."""
    from fastsal.tta import TTA, TTAError

    try:
        TTA.parse(text)
    except TTAError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _aspects(text: str) -> list:
    """An argparse type: ``16:9,1:1,4:5`` -> the parsed aspects (parsing is torch-free)."""
    from fastsal.cropping import CropError, parse_aspects

    try:
        return parse_aspects(text)
    except CropError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
