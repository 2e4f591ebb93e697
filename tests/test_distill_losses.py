"""Distillation losses on cases computed by hand (2x2 maps, natural logs)."""
import math

import pytest
import torch

from fastsal.losses import (
    DISTILLATION_LOSSES,
    cosine_similarity,
    cross_entropy_distillation_loss,
    paper_distillation_loss,
    teacher_bce,
    teacher_cross_entropy,
    teacher_kl,
)

# Teacher: half the mass on each of the top two pixels; student: uniform (all logits 0).
TEACHER = torch.tensor([[[0.5, 0.5], [0.0, 0.0]]])
UNIFORM_LOGITS = torch.zeros(1, 1, 2, 2)
LOG_UNIFORM = torch.full((1, 2, 2), math.log(0.25))


def test_cross_entropy_kl_and_their_identity():
    # H(T, S) = -2 * 0.5 * log(1/4) = log 4; KL = 2 * 0.5 * log(0.5 / 0.25) = log 2; H(T) = log 2.
    assert teacher_cross_entropy(LOG_UNIFORM, TEACHER).item() == pytest.approx(math.log(4), abs=1e-6)
    assert teacher_kl(LOG_UNIFORM, TEACHER).item() == pytest.approx(math.log(2), abs=1e-6)
    # A student equal to the teacher: KL 0, cross-entropy = the teacher's entropy.
    p = torch.tensor([[[0.1, 0.2], [0.3, 0.4]]])
    entropy = -(0.1 * math.log(0.1) + 0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.4 * math.log(0.4))
    assert entropy == pytest.approx(1.279854, abs=1e-6)
    assert teacher_kl(p.log(), p).item() == pytest.approx(0.0, abs=1e-6)
    assert teacher_cross_entropy(p.log(), p).item() == pytest.approx(entropy, abs=1e-6)
    # H = KL + H(T) for any pair.
    q = torch.softmax(torch.tensor([0.3, -1.0, 2.0, 0.5]), 0).reshape(1, 2, 2)
    assert teacher_cross_entropy(q.log(), p).item() == pytest.approx(teacher_kl(q.log(), p).item() + entropy, abs=1e-6)


def test_cosine_and_bce_terms():
    # <S, T> = 2 * 0.25 * 0.5 = 0.25; |S| = 0.5; |T| = sqrt(0.5): cos = 1 / sqrt 2.
    assert cosine_similarity(torch.full((1, 2, 2), 0.25), TEACHER).item() == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    # Targets min-max scaled to [1, 1, 0, 0]; sigmoid(0) = 1/2: every pixel costs log 2.
    assert teacher_bce(UNIFORM_LOGITS, TEACHER).item() == pytest.approx(math.log(2), abs=1e-6)
    # Logits +-log 3 give sigmoids 3/4 and 1/4: BCE = -log(3/4) on every pixel.
    logits = torch.tensor([[[[math.log(3), math.log(3)], [-math.log(3), -math.log(3)]]]])
    assert teacher_bce(logits, TEACHER).item() == pytest.approx(-math.log(0.75), abs=1e-6)


def test_paper_loss_and_cross_entropy_loss():
    # 0.5 log 2 + 0.3 log 2 + 0.2 (1 - 1/sqrt 2) = 0.613097
    want = 0.5 * math.log(2) + 0.3 * math.log(2) + 0.2 * (1 - 1 / math.sqrt(2))
    assert want == pytest.approx(0.613097, abs=1e-6)
    assert paper_distillation_loss(UNIFORM_LOGITS, TEACHER).item() == pytest.approx(want, abs=1e-6)
    assert cross_entropy_distillation_loss(UNIFORM_LOGITS, TEACHER).item() == pytest.approx(math.log(4), abs=1e-6)
    # Batch mean; an unnormalised teacher map is renormalised; shift of logits does not matter to H.
    two = torch.cat([TEACHER, 3 * TEACHER])
    shifted = torch.zeros(2, 1, 2, 2) + 5.0
    assert cross_entropy_distillation_loss(shifted, two).item() == pytest.approx(math.log(4), abs=1e-5)
    assert set(DISTILLATION_LOSSES) == {"cross_entropy", "paper"}


def test_losses_have_finite_gradients_at_zero_teacher_mass():
    logits = torch.randn(2, 1, 4, 6, requires_grad=True)
    teacher = torch.zeros(2, 4, 6)
    teacher[:, 1, 2] = 1.0  # all mass on one pixel: log 0 terms must not produce NaN
    for loss in DISTILLATION_LOSSES.values():
        logits.grad = None
        loss(logits, teacher).backward()
        assert torch.isfinite(logits.grad).all()
