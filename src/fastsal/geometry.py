"""The network's size rule, in one place: every input side is a multiple of the encoder's output
stride (32), and a size that is not is rounded to the nearest multiple (at least one stride).

The model (:func:`fastsal.models.fastsal.FastSal.forward`), the predictor's pixel budget
(:func:`fastsal.images.fit_input_size`), the engines' graph sizes and export's size check all
call these functions, so the rule cannot drift between them. Torch-free: ``--help`` and the
image layer import it.
"""
from __future__ import annotations

from collections.abc import Sequence

#: The encoder's output stride: network inputs are multiples of it.
STRIDE = 32


def round_to_stride(side: float, stride: int = STRIDE) -> int:
    """``side`` rounded to the nearest multiple of ``stride``, at least one ``stride``."""
    return max(stride, int(round(side / stride)) * stride)


def network_size(size: Sequence[int]) -> tuple[int, int]:
    """The size the network actually runs at for an input of ``size`` (H, W): each side rounded to
    the nearest multiple of the stride (at least one stride)."""
    return round_to_stride(int(size[0])), round_to_stride(int(size[1]))


def size_pair(size: object, error: type[Exception] = ValueError, what: str = "input size") -> tuple[int, int]:
    """``size`` as a positive whole (H, W), or ``error`` naming ``what`` (each module passes its own
    one-line error class and parameter name)."""
    try:
        h, w = (int(v) for v in size)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise error(f"{what} must be (H, W); got {size!r}") from None
    if h <= 0 or w <= 0:
        raise error(f"{what} must be positive; got {h}x{w}")
    return h, w


def is_network_size(size: Sequence[int]) -> bool:
    """Whether ``size`` (H, W) runs as it is: both sides positive multiples of the stride."""
    return all(int(s) > 0 for s in size) and network_size(size) == (int(size[0]), int(size[1]))


__all__ = ["STRIDE", "is_network_size", "network_size", "round_to_stride", "size_pair"]
