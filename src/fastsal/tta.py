"""Test-time augmentation settings of a teacher: horizontal flips and input scales.

``flip,scales=192x256+288x384`` runs every teacher source on the image and on its mirror image
(whose map is flipped back), each at two pixel budgets (each image keeping its aspect, as the
models are trained). A teacher's labels depend on these settings, so they are part of its identity
(:meth:`fastsal.teacher.Teacher.identity`).

Torch-free: the command line parses ``--tta`` with it while building ``--help``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastsal import defaults
from fastsal.errors import FastSalError

TTA_HELP = "none, flip, scales=HxW+HxW..., or flip,scales=... (e.g. flip,scales=192x256+288x384)"


class TTAError(FastSalError, ValueError):
    """A test-time augmentation spec that cannot be parsed; the message shows the accepted form."""


@dataclass(frozen=True)
class TTA:
    """``flip``: also run the mirrored image. ``scales``: pixel budgets (H, W) each source runs at;
    empty means each source's own input size (the size its weights were trained at)."""

    flip: bool = False
    scales: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> TTA:
        """``none`` / ``flip`` / ``scales=HxW+HxW`` / ``flip,scales=...`` (order free); :class:`TTAError`."""
        if text is None or not str(text).strip() or str(text).strip().lower() == "none":
            return cls()
        flip, scales = False, []
        for part in (p.strip() for p in str(text).split(",")):
            key, sep, value = part.partition("=")
            key = key.strip().lower()
            if key == "flip" and not sep:
                flip = True
            elif key == "scales" and sep:
                for item in value.split("+"):
                    scales.append(_scale(item, text))
            else:
                raise TTAError(f"{{option}} {text!r}: cannot read {part!r}; expected {TTA_HELP}", option="tta")
        if len(set(scales)) != len(scales):
            raise TTAError(f"{{option}} {text!r}: a scale is repeated; name each once", option="tta")
        return cls(flip, tuple(scales))

    def __str__(self) -> str:
        parts = (["flip"] if self.flip else []) + (
            ["scales=" + "+".join(f"{h}x{w}" for h, w in self.scales)] if self.scales else [])
        return ",".join(parts) or "none"

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings (manifests, the teacher hash)."""
        return {"flip": self.flip, "scales": [list(s) for s in self.scales] or "each source's own input size"}

    @property
    def views(self) -> int:
        """Views per source and image: (flips) x (scales, or the one native size)."""
        return (2 if self.flip else 1) * max(1, len(self.scales))


def _scale(item: str, text: str) -> tuple[int, int]:
    lo, hi = defaults.INPUT_SIDE_RANGE
    try:
        h, w = (int(v) for v in item.strip().lower().split("x"))
    except ValueError:
        raise TTAError(f"{{option}} {text!r}: scale {item.strip()!r} is not HxW such as 192x256",
                       option="tta") from None
    if not (lo <= h <= hi and lo <= w <= hi):
        raise TTAError(f"{{option}} {text!r}: scale {item.strip()!r} needs each side in {lo}..{hi}", option="tta")
    return h, w


__all__ = ["TTA", "TTAError", "TTA_HELP"]
