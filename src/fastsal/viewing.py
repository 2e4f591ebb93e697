"""Looking at a saliency map: an 8-bit image of it, a colour map and an overlay on the photo.

Kept apart from :mod:`fastsal.predict` and free of PyTorch, so viewers, servers and the batch
writer threads can draw maps without loading the network stack.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from fastsal.images import ImageLike, as_rgb_array

__all__ = ["colormap", "overlay", "to_png"]


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


def to_png(prob_map: np.ndarray) -> np.ndarray:
    """(H, W) map -> (H, W) uint8, min-max scaled to 0..255: for viewing, not for metrics.

    Scaling discards the absolute level (two images' PNGs are not comparable); keep the float map
    (``.npy``) for analysis. A constant map gives all zeros.
    """
    m = np.asarray(prob_map)
    if m.dtype != np.float32:  # float32 maps (what predict returns) are scaled in float32: ~10x faster
        m = m.astype(np.float64)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {m.shape}")
    lo, hi = float(np.min(m)), float(np.max(m))
    if not hi > lo:
        return np.zeros(m.shape, dtype=np.uint8)
    scaled = (m - m.dtype.type(lo)) * m.dtype.type(255.0 / (hi - lo)) + m.dtype.type(0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def colormap(values: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 through the 'inferno' lookup table (no matplotlib needed)."""
    return _INFERNO[np.asarray(values, dtype=np.uint8)]


def overlay(image_rgb: ImageLike, prob_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image blended with the colour-mapped saliency map: (H, W, 3) uint8.

    ``(1 - alpha) * image + alpha * inferno(to_png(map))``: dark where nobody looks, bright
    yellow at the peaks. ``image_rgb`` is anything :func:`fastsal.images.as_rgb_array` accepts;
    a map of another size is resized (bilinear) to the image.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = as_rgb_array(image_rgb)
    m = np.ascontiguousarray(prob_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {m.shape}")
    h, w = rgb.shape[:2]
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m).resize((w, h), Image.BILINEAR), dtype=np.float32)
    heat = colormap(to_png(m)).astype(np.float32)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
