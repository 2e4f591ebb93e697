"""Log-densities over pixels: renormalise them and move them between resolutions.

A teacher's label is a natural-log density whose ``logsumexp`` is 0. Views at different input
sizes must be brought to one resolution before they are combined, and a stored label to the
student's input size before it is learned. Both resample the *probabilities* (antialiased
bilinear, so a reduction averages rather than skips pixels) and renormalise: mass is what a
density is about, and bilinear weights of a log would not conserve it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.nn import functional as F

# The floor for log-probabilities: log of float32's smallest normal, so that exp() of a stored label
# is finite and positive in float32 and log-likelihood scores stay finite. Pixels reach it after
# resampling (an all-zero neighbourhood gives exactly 0) and in fastsal.predict's maps (bicubic
# undershoot clamped to 0).
LOG_FLOOR = float(np.log(np.finfo(np.float32).tiny))


def normalise_log_density(logp: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (H, W) log-values -> the same minus their logsumexp over pixels (sums to 1)."""
    flat = logp.reshape(-1, logp.shape[-2] * logp.shape[-1])
    return (flat - torch.logsumexp(flat, dim=1, keepdim=True)).reshape(logp.shape)


def resample_log_densities(logp: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(N, h, w) log-densities -> (N, H, W) at ``size``, renormalised, floored at :data:`LOG_FLOOR`.

    Works in the input's dtype (float64 for labels). The same size returns a renormalised copy.
    """
    h, w = int(size[0]), int(size[1])
    if tuple(logp.shape[-2:]) == (h, w):
        return normalise_log_density(logp.clamp_min(LOG_FLOOR))
    shift = logp.flatten(1).amax(dim=1)[:, None, None]  # exp() without overflow; undone by normalising
    p = torch.exp(logp - shift)[:, None]
    q = F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[:, 0]
    logq = torch.log(q.clamp_min(0.0)).clamp_min(LOG_FLOOR)
    return normalise_log_density(logq)


def resample_log_density(logp: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """:func:`resample_log_densities` for one (h, w) array; float64 in, float64 out."""
    t = torch.from_numpy(np.ascontiguousarray(logp, dtype=np.float64))[None]
    return resample_log_densities(t, size)[0].numpy()


def log_density_from_file(path: str, size: Sequence[int]) -> np.ndarray:
    """A stored label (``.npy``, any float dtype) as an (H, W) float32 *density* at ``size``, summing to 1.

    :class:`ValueError` if the file does not hold a finite 2-D array (the caller names the file).
    """
    arr = np.load(path, allow_pickle=False)
    if arr.ndim != 2 or arr.dtype.kind != "f" or 0 in arr.shape or not np.isfinite(arr).all():
        raise ValueError(f"expected a finite 2-D float array, got {arr.dtype} {arr.shape}")
    logq = resample_log_density(arr.astype(np.float64), size)
    return np.exp(logq).astype(np.float32)


__all__ = ["LOG_FLOOR", "log_density_from_file", "normalise_log_density", "resample_log_densities",
           "resample_log_density"]
