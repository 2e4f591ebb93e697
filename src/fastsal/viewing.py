"""Looking at a saliency map: an 8-bit image of it, a colour map and an overlay on the photo.

Kept apart from :mod:`fastsal.predict` and free of PyTorch, so viewers, servers and the batch
writer threads can draw maps without loading the network stack.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from fastsal.errors import FastSalError
from fastsal.images import ImageLike, as_rgb_array

__all__ = ["STRIP_PIXELS", "ViewError", "blend", "colormap", "overlay", "to_png"]


# Matplotlib's 'inferno' (perceptually uniform, readable in grayscale and by colour-blind viewers),
# sampled at 33 points; linear interpolation reproduces the 256 entries to within 1.5/255.
_INFERNO_ANCHORS = np.array([
    (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (33, 12, 74), (46, 10, 90),
    (60, 9, 101), (74, 12, 107), (87, 16, 109), (99, 20, 110), (112, 25, 110), (125, 30, 109),
    (137, 34, 106), (150, 39, 102), (163, 43, 97), (175, 49, 92), (187, 55, 85), (198, 62, 77),
    (209, 70, 68), (219, 79, 59), (227, 89, 50), (235, 101, 40), (241, 113, 30), (246, 127, 20),
    (249, 141, 10), (251, 156, 6), (252, 171, 15), (251, 186, 31), (249, 202, 50), (245, 217, 73),
    (242, 232, 101), (243, 245, 134), (252, 255, 164),
], dtype=np.float64)
_INFERNO = np.stack(
    [np.interp(np.arange(256), np.linspace(0, 255, len(_INFERNO_ANCHORS)), _INFERNO_ANCHORS[:, c]) for c in range(3)],
    axis=1,
).round().astype(np.uint8)


class ViewError(FastSalError, ValueError):
    """A map or image that cannot be drawn (wrong shape, bad alpha); one line saying what was expected."""


# Rows per strip when drawing: full-resolution maps of camera photos (8000x6000 = 48 MP) are drawn a
# strip at a time, so no full-size float temporary (192 MB per float32 copy, 576 MB for RGB) exists.
STRIP_PIXELS = 1 << 20


def _strips(h: int, w: int):
    rows = max(1, STRIP_PIXELS // max(w, 1))
    for r0 in range(0, h, rows):
        yield r0, min(h, r0 + rows)


def to_png(prob_map: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W) uint8, min-max scaled to 0..255: for viewing, not for metrics.

    Scaling discards the absolute level (two images' PNGs are not comparable); keep the float map
    (``.npy``) for analysis. A constant map gives all zeros. float32 maps (what predict returns)
    are scaled in float32 (~10x faster), others in float64, a strip of rows at a time.
    """
    m = np.asarray(prob_map)
    if m.ndim != 2:
        raise ViewError(f"expected an (H, W) map, got shape {m.shape}")
    kind: type[np.floating[Any]] = np.float32 if m.dtype == np.float32 else np.float64
    out = np.zeros(m.shape, dtype=np.uint8)
    if m.size == 0:
        return out
    lo, hi = float(np.min(m)), float(np.max(m))
    if not hi > lo:  # constant, or NaN somewhere (min/max propagate it): nothing to show
        return out
    lo_k, scale, half = kind(lo), kind(255.0 / (hi - lo)), kind(0.5)
    for r0, r1 in _strips(*m.shape):
        scaled = (m[r0:r1].astype(kind, copy=False) - lo_k) * scale + half
        np.clip(scaled, 0, 255, out=scaled)
        out[r0:r1] = scaled
    return out


def colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 through the 'inferno' lookup table (no matplotlib needed)."""
    return _INFERNO[np.asarray(values, dtype=np.uint8)]


def blend(image: np.ndarray | Image.Image, values: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """``(1 - alpha) * image + alpha * inferno(values)`` as an RGB PIL image, a strip at a time.

    ``image``: (H, W, 3) uint8, or an RGB PIL image, which is blended *in place* and returned:
    for a 48 MP photo that saves the 144 MB array copy and a second 192 MB image. ``values``:
    (H, W) uint8 (:func:`to_png` of the map at the image's size).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ViewError(f"alpha must be in [0, 1], got {alpha}")
    if isinstance(image, Image.Image):  # blended in place
        if image.mode != "RGB":
            raise ViewError(f"expected an RGB image, got mode {image.mode!r}")
        w, h = image.size
    else:
        w, h = image.shape[1], image.shape[0]
    if values.shape != (h, w):
        raise ViewError(f"values {values.shape} do not match the image {(h, w)}")
    out = image if isinstance(image, Image.Image) else Image.new("RGB", (w, h))
    a, b = np.float32(1.0 - alpha), np.float32(alpha)
    for r0, r1 in _strips(h, w):
        rows = np.asarray(image.crop((0, r0, w, r1))) if isinstance(image, Image.Image) else image[r0:r1]
        mixed = rows.astype(np.float32) * a + colormap(values[r0:r1]).astype(np.float32) * b
        mixed += np.float32(0.5)
        np.clip(mixed, 0, 255, out=mixed)
        out.paste(Image.fromarray(mixed.astype(np.uint8), "RGB"), (0, r0))
    return out


def overlay(image_rgb: ImageLike, prob_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the colour-mapped saliency map: (H, W, 3) uint8.

    ``(1 - alpha) * image + alpha * inferno(to_png(map))``: dark where nobody looks, bright
    yellow at the peaks. ``image_rgb`` is anything :func:`fastsal.images.as_rgb_array` accepts;
    a map of another size is resized (bilinear) to the image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ViewError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_rgb_array(image_rgb)
    m = np.ascontiguousarray(prob_map, dtype=np.float32)
    if m.ndim != 2:
        raise ViewError(f"expected an (H, W) map, got shape {m.shape}")
    h, w = rgb.shape[:2]
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
    return np.asarray(blend(rgb, to_png(m), alpha))
