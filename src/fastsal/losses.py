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


# ---- learning a teacher's density (knowledge transfer) ------------------------------------------
# ``teacher`` below is a density: (N, H, W), non-negative, each map summing to 1 (a label of
# ``fastsal pseudo-label`` or a teacher's on-the-fly label, exponentiated). It is renormalised
# again here so that resampled or mixed maps cannot shift the losses.

#: The FastSal paper's weights on its DeepGaze II pseudo-labels: 0.5 KL + 0.3 BCE + 0.2 (1 - cos).
PAPER_DISTILL_WEIGHTS: tuple[float, float, float] = (0.5, 0.3, 0.2)


def _density(teacher: Tensor) -> Tensor:
    q = _flat(teacher).clamp_min(0.0)
    return q / q.sum(dim=1, keepdim=True).clamp_min(EPS)


def _logits(logits: Tensor) -> Tensor:
    return logits[:, 0] if logits.dim() == 4 else logits


def teacher_cross_entropy(log_student: Tensor, teacher: Tensor) -> Tensor:
    """H(teacher, student) = -sum_x p_T(x) log p_S(x), in nats, per sample.

    The information-theoretic distillation loss: the expected negative log-likelihood, under the
    student, of fixations drawn from the teacher. It equals KL(teacher || student) + H(teacher),
    so it has KL's gradient and its minimum (the teacher's density itself: a proper scoring rule)
    and differs by the teacher's entropy, a constant per label. That is also why a student trained
    on it learns calibrated densities, which is what IG and KLD score.
    """
    return -(_density(teacher) * _flat(log_student)).sum(dim=1)


def teacher_kl(log_student: Tensor, teacher: Tensor) -> Tensor:
    """KL(teacher || student) = sum_x p_T (log p_T - log p_S), in nats, per sample; exact (0 log 0
    = 0, no benchmark epsilon), since both maps are proper densities here."""
    q = _density(teacher)
    return (torch.xlogy(q, q) - q * _flat(log_student)).sum(dim=1)


def cosine_similarity(a: Tensor, b: Tensor) -> Tensor:
    """<a, b> / (|a| |b|) of two maps flattened, per sample (CC without removing the means)."""
    a, b = _flat(a), _flat(b)
    denom = torch.sqrt(((a * a).sum(dim=1) * (b * b).sum(dim=1)).clamp_min(EPS * EPS))
    return (a * b).sum(dim=1) / denom


def teacher_bce(logits: Tensor, teacher: Tensor) -> Tensor:
    """Mean binary cross-entropy between sigmoid(student logits) and the teacher's map scaled to
    [0, 1] (divided by its min-max range), per sample: the paper's BCE term, which reads the
    teacher as a per-pixel "salient" probability. It ties the logits' level (softmax alone
    ignores it), harmlessly: the density is the softmax."""
    q = _flat(teacher)
    lo, hi = q.min(dim=1, keepdim=True).values, q.max(dim=1, keepdim=True).values
    target = (q - lo) / (hi - lo).clamp_min(EPS)
    x = _flat(_logits(logits))
    return torch.nn.functional.binary_cross_entropy_with_logits(x, target, reduction="none").mean(dim=1)


def paper_distillation_loss(logits: Tensor, teacher: Tensor,
                            weights: tuple[float, float, float] = PAPER_DISTILL_WEIGHTS) -> Tensor:
    """Scalar: w_kl KL(teacher || student) + w_bce BCE + w_cos (1 - cos(student, teacher)), batch mean.

    The FastSal paper's loss to DeepGaze II pseudo-labels (0.5 / 0.3 / 0.2). KL fits the
    distribution; BCE (:func:`teacher_bce`) and cosine similarity fit the map's shape.
    """
    logp = log_density(logits)
    w_kl, w_bce, w_cos = weights
    loss = w_kl * teacher_kl(logp, teacher) + w_bce * teacher_bce(logits, teacher)
    return (loss + w_cos * (1.0 - cosine_similarity(logp.exp(), _density(teacher)))).mean()


def cross_entropy_distillation_loss(logits: Tensor, teacher: Tensor) -> Tensor:
    """Scalar: H(teacher, student) (:func:`teacher_cross_entropy`), batch mean."""
    return teacher_cross_entropy(log_density(logits), teacher).mean()


#: Distillation losses by the names of :data:`fastsal.defaults.DISTILL_LOSSES`.
DISTILLATION_LOSSES = {"cross_entropy": cross_entropy_distillation_loss, "paper": paper_distillation_loss}
