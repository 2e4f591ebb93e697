"""Differentiable saliency metrics for training, with the definitions of :mod:`fastsal.metrics`.

Each function takes batched tensors of shape (N, H, W) and returns one value per sample (N,), so
a caller can weight or average them; ``saliency_loss`` combines them the way the trainer uses.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from fastsal import defaults

EPS = 2.220446049250313e-16  # MATLAB's eps, the MIT benchmark's regulariser


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def log_density(logits: Tensor) -> Tensor:
    """Log-softmax over all pixels: (N, 1, H, W) or (N, H, W) logits -> (N, H, W) log-density."""
    if logits.dim() == 4:
        logits = logits[:, 0]
    n, h, w = logits.shape
    return torch.log_softmax(logits.reshape(n, -1), dim=1).reshape(n, h, w)


def kld(log_pred: Tensor, gt: Tensor) -> Tensor:
    """KL(gt || pred) in nats, as the benchmark: sum gt * log(eps + gt / (pred + eps)).

    ``log_pred`` is a log-density (from :func:`log_density`); ``gt`` is normalised to sum to 1.
    """
    q = _flat(gt)
    q = q / q.sum(dim=1, keepdim=True).clamp_min(EPS)
    p = _flat(log_pred).exp()
    return (q * torch.log(EPS + q / (p + EPS))).sum(dim=1)


def cc(pred: Tensor, gt: Tensor) -> Tensor:
    """Pearson linear correlation coefficient between two maps."""
    a = _flat(pred)
    b = _flat(gt)
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = torch.sqrt(((a * a).sum(dim=1) * (b * b).sum(dim=1)).clamp_min(EPS * EPS))  # clamp first: finite grads
    return (a * b).sum(dim=1) / denom


def nss(pred: Tensor, fixation_map: Tensor) -> Tensor:
    """Normalised scanpath saliency: mean of the standardised map at fixated pixels.

    The standard deviation is the sample one (ddof=1), as MATLAB's ``std`` in the benchmark code.
    """
    s = _flat(pred)
    f = (_flat(fixation_map) > 0).to(s.dtype)  # fixated or not, as the benchmark's binary map
    s = (s - s.mean(dim=1, keepdim=True)) / s.std(dim=1, keepdim=True).clamp_min(EPS)
    return (s * f).sum(dim=1) / f.sum(dim=1).clamp_min(1.0)


def sim(pred: Tensor, gt: Tensor) -> Tensor:
    """Similarity (histogram intersection) of the two maps, each min-max scaled and normalised."""

    def norm(x: Tensor) -> Tensor:
        x = _flat(x)
        lo = x.min(dim=1, keepdim=True).values
        hi = x.max(dim=1, keepdim=True).values
        x = (x - lo) / (hi - lo).clamp_min(EPS)
        return x / x.sum(dim=1, keepdim=True).clamp_min(EPS)

    return torch.minimum(norm(pred), norm(gt)).sum(dim=1)


def log_likelihood(log_pred: Tensor, fixation_map: Tensor) -> Tensor:
    """Mean log-density at fixated pixels, in bits per fixation (Kümmerer et al., PNAS 2015)."""
    f = (_flat(fixation_map) > 0).to(log_pred.dtype)
    return (_flat(log_pred) * f).sum(dim=1) / f.sum(dim=1).clamp_min(1.0) / math.log(2.0)


def saliency_loss(
    logits: Tensor,
    density: Tensor,
    fixation_map: Tensor,
    weights: tuple[float, float, float] = defaults.LOSS_WEIGHTS,
) -> Tensor:
    """Scalar training loss: w_kld * KLD - w_cc * CC - w_nss * NSS, averaged over the batch.

    KLD fits the distribution, CC its shape and NSS the fixated pixels themselves; together they
    train towards the metrics the field reports rather than a per-pixel proxy.
    """
    logp = log_density(logits)
    p = logp.exp()
    w_kld, w_cc, w_nss = weights
    loss = w_kld * kld(logp, density)
    if w_cc:
        loss = loss - w_cc * cc(p, density)
    if w_nss:
        loss = loss - w_nss * nss(p, fixation_map)
    return loss.mean()
