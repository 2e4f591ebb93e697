"""The differentiable metrics of fastsal.losses agree with fastsal.metrics and have finite gradients.

Agreement is checked per sample on random batches. In float64 the two implementations differ
only by summation order and by the ``eps`` that metrics.log_likelihood adds inside ``log2``
(relative effect ~1e-13 here), so the tolerance is 1e-9; in float32 it is 1e-4 (float32 has ~7
significant digits and the sums run over a few hundred pixels).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastsal import losses as L
from fastsal import metrics as M

N, H, W = 3, 12, 16


def _batch(dtype: torch.dtype, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(N, H, W, generator=gen, dtype=torch.float64) * 2
    fix = torch.rand(N, H, W, generator=gen) > 0.85
    fix[:, 0, 0] = True  # at least one fixation per sample
    return {
        "logits": logits.to(dtype),
        "log_pred": L.log_density(logits).to(dtype),
        "pred": torch.rand(N, H, W, generator=gen, dtype=torch.float64).to(dtype),
        "gt": torch.rand(N, H, W, generator=gen, dtype=torch.float64).to(dtype),
        "fix": fix,
    }


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


# (torch call, numpy call) per metric, both on the same batch b and sample i.
PAIRS = {
    "kld": (lambda b: L.kld(b["log_pred"], b["gt"]), lambda b, i: M.kld(np.exp(_np(b["log_pred"][i])), _np(b["gt"][i]))),
    "cc": (lambda b: L.cc(b["pred"], b["gt"]), lambda b, i: M.cc(_np(b["pred"][i]), _np(b["gt"][i]))),
    "sim": (lambda b: L.sim(b["pred"], b["gt"]), lambda b, i: M.sim(_np(b["pred"][i]), _np(b["gt"][i]))),
    "nss": (lambda b: L.nss(b["pred"], b["fix"].to(b["pred"].dtype)), lambda b, i: M.nss(_np(b["pred"][i]), b["fix"][i].numpy())),
    "log_likelihood": (
        lambda b: L.log_likelihood(b["log_pred"], b["fix"].to(b["log_pred"].dtype)),
        lambda b, i: M.log_likelihood(np.exp(_np(b["log_pred"][i])), b["fix"][i].numpy()),
    ),
}


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-4)])
def test_torch_metric_equals_numpy_metric(name: str, dtype: torch.dtype, tol: float) -> None:
    torch_fn, numpy_fn = PAIRS[name]
    for seed in range(3):
        b = _batch(dtype, seed)
        got = torch_fn(b)
        assert got.shape == (N,)
        want = [numpy_fn(b, i) for i in range(N)]
        np.testing.assert_allclose(_np(got), want, rtol=tol, atol=tol)


def test_metric_definitions_agree_on_identical_maps() -> None:
    b = _batch(torch.float64)
    p = b["log_pred"].exp()
    np.testing.assert_allclose(_np(L.cc(p, p)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(_np(L.sim(p, p)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(_np(L.kld(b["log_pred"], p)), 0.0, atol=1e-12)


def _loss_terms(logits: torch.Tensor, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    logp = L.log_density(logits)
    p = logp.exp()
    f = b["fix"].to(logits.dtype)
    return {
        "kld": L.kld(logp, b["gt"]).sum(),
        "cc": L.cc(p, b["gt"]).sum(),
        "sim": L.sim(p, b["gt"]).sum(),
        "nss": L.nss(p, f).sum(),
        "log_likelihood": L.log_likelihood(logp, f).sum(),
        "saliency_loss": L.saliency_loss(logits.unsqueeze(1), b["gt"], f),
    }


@pytest.mark.parametrize("name", ["kld", "cc", "sim", "nss", "log_likelihood", "saliency_loss"])
def test_gradients_are_finite_and_non_zero(name: str) -> None:
    b = _batch(torch.float32)
    logits = b["logits"].clone().requires_grad_(True)
    _loss_terms(logits, b)[name].backward()
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("fn", [L.cc, L.nss, L.sim])
def test_gradcheck_on_maps(fn) -> None:
    # Finite differences agree with autograd (float64, a small batch away from ties).
    b = _batch(torch.float64, seed=5)
    pred = b["pred"][:1, :4, :5].clone().requires_grad_(True)
    other = b["fix"][:1, :4, :5].to(torch.float64) if fn is L.nss else b["gt"][:1, :4, :5]
    if fn is L.nss:
        other[0, 0, 0] = 1.0
    assert torch.autograd.gradcheck(lambda x: fn(x, other), (pred,), eps=1e-6, atol=1e-5)


def test_gradcheck_on_log_densities() -> None:
    b = _batch(torch.float64, seed=6)
    logits = b["logits"][:1, :4, :5].clone().requires_grad_(True)
    gt = b["gt"][:1, :4, :5]
    f = b["fix"][:1, :4, :5].to(torch.float64)
    f[0, 0, 0] = 1.0
    assert torch.autograd.gradcheck(lambda x: L.kld(L.log_density(x), gt), (logits,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda x: L.log_likelihood(L.log_density(x), f), (logits,), eps=1e-6, atol=1e-5)


def test_cc_gradient_is_finite_for_a_constant_prediction() -> None:
    # 0.25 is a power of two, so the mean is exact and the centred map is exactly zero.
    b = _batch(torch.float64)
    pred = torch.full((N, H, W), 0.25, dtype=torch.float64, requires_grad=True)
    L.cc(pred, b["gt"]).sum().backward()
    assert torch.isfinite(pred.grad).all()
