"""Tests of fastsal.metrics: hand-computed cases, invariances, edge cases and ports of the benchmark.

Hand cases are small enough to check on paper; the arithmetic sits next to each one. The
``_judd_reference`` / ``_borji_reference`` functions are line-by-line ports of the MIT benchmark's
MATLAB loops (AUC_Judd.m, AUC_Borji.m), kept deliberately slow and literal.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from fastsal import metrics as M
from fastsal.data.fixations import fixation_map, points_from_map

OSIE = Path(os.environ.get("FASTSAL_OSIE", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "osie"))
RAMP = np.arange(1.0, 10.0).reshape(3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def _judd_reference(smap: np.ndarray, fmap: np.ndarray, rng: np.random.Generator | None) -> float:
    """AUC_Judd.m, with its rand/1e7 jitter when ``rng`` is given."""
    s = smap.astype(float).ravel()
    if rng is not None:
        s = s + rng.random(s.size) / 1e7
    s = (s - s.min()) / (s.max() - s.min())
    f = fmap.ravel() > 0
    sth = s[f]
    n_fix, n_pix = sth.size, s.size
    thresholds = np.sort(sth)[::-1]
    tp = np.zeros(n_fix + 2)
    fp = np.zeros(n_fix + 2)
    tp[-1] = fp[-1] = 1.0
    for i in range(1, n_fix + 1):
        above = np.sum(s >= thresholds[i - 1])
        tp[i] = i / n_fix
        fp[i] = (above - i) / (n_pix - n_fix)
    return float(np.sum(np.diff(fp) * (tp[1:] + tp[:-1]) / 2))


def _borji_reference(smap: np.ndarray, fmap: np.ndarray, negatives_index: np.ndarray, step: float) -> float:
    """AUC_Borji.m for given draws ``negatives_index`` (n_splits, n_fix) of flat pixel indices."""
    s = smap.astype(float).ravel()
    s = (s - s.min()) / (s.max() - s.min())
    sth = s[fmap.ravel() > 0]
    aucs = []
    for draw in negatives_index:
        cur = s[draw]
        top = max(sth.max(), cur.max())
        thresholds = [k * step for k in range(int(np.floor(top / step + 1e-9)) + 1)][::-1]
        tp = [0.0] + [np.mean(sth >= t) for t in thresholds] + [1.0]
        fp = [0.0] + [np.mean(cur >= t) for t in thresholds] + [1.0]
        aucs.append(sum((fp[i + 1] - fp[i]) * (tp[i + 1] + tp[i]) / 2 for i in range(len(tp) - 1)))
    return float(np.mean(aucs))


# ------------------------------------------------------------------------------------------
# Hand-computed cases
# ------------------------------------------------------------------------------------------


def test_nss_hand_2x2() -> None:
    # map [[1, 2], [3, 4]]: mean 2.5, deviations -1.5 -0.5 0.5 1.5, sum of squares 5,
    # sample std sqrt(5 / 3) = 1.290994; the fixation at (x=1, y=1) sees 4 -> 1.5 / 1.290994.
    smap = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert M.nss(smap, np.array([[1.0, 1.0]])) == pytest.approx(1.5 / math.sqrt(5 / 3), rel=1e-12)
    # fixations on 4 and 1: (1.5 - 1.5) / 2 = 0
    assert M.nss(smap, np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(0.0, abs=1e-12)


def test_cc_hand_2x2() -> None:
    # a = 1 2 3 4 -> centred -1.5 -0.5 0.5 1.5; b = 1 3 2 4 -> centred -1.5 0.5 -0.5 1.5
    # sum(ab) = 2.25 - 0.25 - 0.25 + 2.25 = 4; sum(a^2) = sum(b^2) = 5 -> CC = 4 / 5 = 0.8
    a = np.array([[1.0, 2.0], [3.0, 4.0]])
    b = np.array([[1.0, 3.0], [2.0, 4.0]])
    assert M.cc(a, b) == pytest.approx(0.8, rel=1e-12)


def test_sim_hand_2x2() -> None:
    # a = 0 1 1 2 -> min-max 0 .5 .5 1 -> /2 -> 0 .25 .25 .5
    # b = 0 2 1 1 -> min-max 0 1 .5 .5 -> /2 -> 0 .5 .25 .25
    # pixelwise min 0 .25 .25 .25 -> SIM = 0.75
    a = np.array([[0.0, 1.0], [1.0, 2.0]])
    b = np.array([[0.0, 2.0], [1.0, 1.0]])
    assert M.sim(a, b) == pytest.approx(0.75, rel=1e-12)


def test_kld_hand_2x2() -> None:
    # p = uniform .25 each; q = .5 0 0 .5 -> KL = 2 * .5 * log(.5 / .25) = log 2 nats
    # (eps = 2.2e-16 moves it by ~1e-15; the q = 0 pixels contribute 0 * log(eps) = 0).
    p = np.ones((2, 2))
    q = np.array([[2.0, 0.0], [0.0, 2.0]])
    assert M.kld(p, q) == pytest.approx(math.log(2.0), rel=1e-12)
    # swapped, the prediction is .5 0 0 .5 and the truth uniform: two pixels give .25 * log(.25 / .5)
    # and two give .25 * log(eps + .25 / eps): 0.5 * (log .5 + log(.25 / eps)) = 16.98 nats
    expected = 2 * 0.25 * math.log(M.EPS + 0.25 / (0.5 + M.EPS)) + 2 * 0.25 * math.log(M.EPS + 0.25 / M.EPS)
    assert M.kld(q, p) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.5 * (math.log(0.5) + math.log(0.25 / M.EPS)), rel=1e-12)


def test_auc_judd_hand_3x3() -> None:
    # map 1..9 row-major; fixations on the 9 (x=2, y=2) and the 5 (x=1, y=1); 7 other pixels.
    # thresholds 9, 5: at 9 one pixel >= 9 -> tp 1/2, fp (1-1)/7 = 0;
    # at 5 pixels 5..9 -> tp 1, fp (5-2)/7 = 3/7.
    # curve (0,0) (0,1/2) (3/7,1) (1,1): area 0 + 3/7 * 3/4 + 4/7 * 1 = 25/28.
    fix = np.array([[2.0, 2.0], [1.0, 1.0]])
    assert M.auc_judd(RAMP, fix) == pytest.approx(25 / 28, rel=1e-12)
    assert M.auc_judd(RAMP, fix) == pytest.approx(_judd_reference(RAMP, fixation_map(fix, (3, 3)), None), rel=1e-12)


def test_thresholded_auc_hand() -> None:
    # positives 1.0 and 0.5, one split of negatives 0.0 and 0.5, step 0.5 (thresholds 1, .5, 0):
    # tp 1/2, 1, 1; fp 0, 1/2, 1 -> curve (0,0) (0,.5) (.5,1) (1,1) (1,1)
    # area 0 + .5 * (.5 + 1) / 2 + .5 * 1 = 0.875
    assert M._thresholded_auc(np.array([1.0, 0.5]), np.array([[0.0, 0.5]]), 0.5) == pytest.approx(0.875)


def test_auc_shuffled_hand_2x2() -> None:
    # map 0 1 2 3 -> min-max 0 1/3 2/3 1. Fixations on 1/3 (x=1, y=0) and 1 (x=1, y=1); the other
    # images' fixations on 0 (x=0, y=0) and 2/3 (x=0, y=1): 2 of 2 drawn, so every split is equal.
    # thresholds .0 .1 ... 1: tp = 1 for t <= .3, else 1/2; fp = 1 at 0, 1/2 for .1-.6, 0 above.
    # curve (0,0) (0,.5) (.5,.5) (.5,1) (1,1): area .5 * .5 + .5 * 1 = .75 -- the Mann-Whitney
    # count too: of the pairs (1/3,0) (1/3,2/3) (1,0) (1,2/3) three are ordered right.
    smap = np.array([[0.0, 1.0], [2.0, 3.0]])
    fix = np.array([[1.0, 0.0], [1.0, 1.0]])
    other = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert M.auc_shuffled(smap, fix, other) == pytest.approx(0.75, rel=1e-12)


def test_information_gain_and_log_likelihood_hand_2x2() -> None:
    # map 3 1 0 0 -> density .75 .25 0 0; a fixation on (0, 0): LL = log2 .75 = -0.415 bits;
    # the uniform baseline gives log2 .25 = -2 -> IG = log2 .75 - log2 .25 = log2 3 = 1.585 bits.
    smap = np.array([[3.0, 1.0], [0.0, 0.0]])
    fix = np.array([[0.0, 0.0]])
    assert M.log_likelihood(smap, fix) == pytest.approx(math.log2(0.75), rel=1e-12)
    assert M.information_gain(smap, fix, np.ones((2, 2))) == pytest.approx(math.log2(3.0), rel=1e-12)


# ------------------------------------------------------------------------------------------
# Agreement with the benchmark's MATLAB loops
# ------------------------------------------------------------------------------------------


def test_auc_judd_equals_benchmark_without_ties() -> None:
    rng = np.random.default_rng(3)
    smap = rng.random((9, 11))
    fmap = rng.random((9, 11)) > 0.8
    assert M.auc_judd(smap, fmap) == pytest.approx(_judd_reference(smap, fmap, None), rel=1e-12)


def test_auc_judd_equals_benchmark_expectation_with_ties() -> None:
    # A map of three levels ties most pixels; the benchmark breaks ties with random jitter, so
    # our deterministic score must equal the jittered score's mean (4000 runs: s.e. ~ 1e-3).
    rng = np.random.default_rng(4)
    smap = rng.integers(0, 3, size=(5, 6)).astype(float)
    fmap = rng.random((5, 6)) > 0.7
    jittered = np.mean([_judd_reference(smap, fmap, rng) for _ in range(4000)])
    assert M.auc_judd(smap, fmap) == pytest.approx(jittered, abs=4e-3)


def test_auc_borji_equals_benchmark_loop_for_same_draws() -> None:
    rng = np.random.default_rng(5)
    smap = rng.random((8, 10)) ** 2
    fmap = rng.random((8, 10)) > 0.85
    n_fix = int(fmap.sum())
    draws = np.random.default_rng(11).integers(0, smap.size, size=(100, n_fix))
    assert M.auc_borji(smap, fmap, rng=11) == pytest.approx(_borji_reference(smap, fmap, draws, 0.1), rel=1e-12)


def test_random_split_metrics_are_reproducible() -> None:
    rng = np.random.default_rng(6)
    smap = rng.random((20, 30))
    fix = rng.random((15, 2)) * [29, 19]
    other = rng.random((40, 2)) * [29, 19]
    assert M.auc_borji(smap, fix) == M.auc_borji(smap, fix)
    assert M.auc_shuffled(smap, fix, other, rng=1) == M.auc_shuffled(smap, fix, other, rng=np.random.default_rng(1))


# ------------------------------------------------------------------------------------------
# Properties
# ------------------------------------------------------------------------------------------


@pytest.fixture
def random_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    smap = rng.random((30, 40))
    fix = np.column_stack([rng.uniform(0, 39, 25), rng.uniform(0, 29, 25)])
    return smap, fix


@pytest.mark.parametrize("metric", [M.nss, M.auc_judd, M.auc_borji])
def test_affine_invariance(metric, random_case) -> None:
    smap, fix = random_case
    assert metric(3.0 * smap + 7.0, fix) == pytest.approx(metric(smap, fix), rel=1e-9)


def test_auc_judd_monotone_invariance(random_case) -> None:
    # Only the order of values matters to AUC-Judd. (AUC-Borji/shuffled use fixed thresholds on
    # the min-max normalised map, so they are invariant to affine but not to monotone maps.)
    smap, fix = random_case
    for transformed in (np.exp(5 * smap), smap**3, np.log1p(smap)):
        assert M.auc_judd(transformed, fix) == pytest.approx(M.auc_judd(smap, fix), rel=1e-12)


def test_cc_symmetric_and_one_for_identical(random_case) -> None:
    a, _ = random_case
    b = np.random.default_rng(8).random(a.shape) + a
    assert M.cc(a, b) == pytest.approx(M.cc(b, a), rel=1e-12)
    assert M.cc(a, a) == pytest.approx(1.0, rel=1e-12)
    assert M.cc(a, 2 * a + 1) == pytest.approx(1.0, rel=1e-12)


def test_kld_zero_and_sim_one_for_identical_densities(random_case) -> None:
    p, _ = random_case
    assert M.kld(p, p) == pytest.approx(0.0, abs=1e-12)
    assert M.kld(p, 5 * p) == pytest.approx(0.0, abs=1e-12)  # both are normalised to sum 1
    assert M.sim(p, p) == pytest.approx(1.0, rel=1e-12)


def test_auc_judd_perfect_and_chance() -> None:
    rng = np.random.default_rng(9)
    fix = np.column_stack([rng.integers(0, 60, 50), rng.integers(0, 40, 50)]).astype(float)
    peaks = fixation_map(fix, (40, 60)).astype(float)
    assert M.auc_judd(peaks, fix) == 1.0
    # noise: Mann-Whitney 0.5 plus the benchmark's <= 1 / (2 * 50) curve term
    assert M.auc_judd(rng.random((40, 60)), fix) == pytest.approx(0.5, abs=0.06)


def test_information_gain_zero_for_baseline_itself(random_case) -> None:
    smap, fix = random_case
    assert M.information_gain(smap, fix, smap) == 0.0
    assert M.information_gain(smap, fix, 4 * smap) == pytest.approx(0.0, abs=1e-12)


def test_log_likelihood_uniform_is_minus_log2_pixels() -> None:
    assert M.log_likelihood(np.ones((30, 40)), np.array([[3.0, 4.0]])) == pytest.approx(-math.log2(1200))


# ------------------------------------------------------------------------------------------
# Fixations as points or maps, sizes, borders
# ------------------------------------------------------------------------------------------


def test_points_and_binary_map_agree(random_case) -> None:
    smap, fix = random_case
    fmap = fixation_map(fix, smap.shape)
    for metric in (M.nss, M.auc_judd, M.auc_borji, M.log_likelihood):
        assert metric(smap, fix) == metric(smap, fmap)
    # a count map is read as binary, like MATLAB's logical(fixationMap)
    assert M.nss(smap, 3 * fmap.astype(float)) == M.nss(smap, fmap)


def test_duplicate_fixations_count_once() -> None:
    smap = RAMP
    assert M.nss(smap, np.array([[2.0, 2.0], [2.0, 2.0], [0.0, 0.0]])) == M.nss(smap, np.array([[2.0, 2.0], [0.0, 0.0]]))


def test_border_fixations_are_clamped_not_dropped() -> None:
    # (2.4, 2.6) rounds to (2, 3) -> clamped to row 2; (-0.4, 0) rounds to (0, 0); so these are
    # the pixels 9 and 1 of the ramp: NSS = (4 - 4) / std = 0, AUC-Judd as for 9 and 1.
    fix = np.array([[2.4, 2.6], [-0.4, 0.0]])
    same = np.array([[2.0, 2.0], [0.0, 0.0]])
    assert M.nss(RAMP, fix) == pytest.approx(0.0, abs=1e-12)
    assert M.auc_judd(RAMP, fix) == M.auc_judd(RAMP, same)


def test_map_of_other_size_is_resized_to_fixations() -> None:
    # A horizontal ramp stays a horizontal ramp under bilinear resizing, so AUC-Judd of a coarse
    # ramp on fine fixations equals that of the fine ramp.
    rng = np.random.default_rng(10)
    fine_shape = (60, 80)
    fix = np.column_stack([rng.uniform(0, 79, 30), rng.uniform(0, 59, 30)])
    coarse = np.tile(np.arange(20.0), (15, 1))  # (15, 20)
    fine = np.tile(np.arange(80.0), (60, 1))
    assert M.auc_judd(coarse, fix, shape=fine_shape) == pytest.approx(M.auc_judd(fine, fix), rel=1e-12)
    # the map route and the points-with-shape route resize identically
    fmap = fixation_map(fix, fine_shape)
    smooth = rng.random((15, 20))
    assert M.nss(smooth, fix, shape=fine_shape) == M.nss(smooth, fmap)
    assert M.kld(smooth, rng.random(fine_shape)) > 0
    # a fixation map of width 2 must be passed as bool to be read as a map
    assert M.nss(np.arange(6.0).reshape(3, 2), np.array([[False, False], [False, False], [False, True]])) > 0


def test_resize_keeps_densities_non_negative() -> None:
    # Bilinear (not bicubic) resizing cannot overshoot: a spike stays >= 0 everywhere.
    spike = np.zeros((8, 8))
    spike[4, 4] = 1.0
    big = M._resize(spike, (50, 50))
    assert big.min() >= 0 and big.max() > 0
    assert np.isfinite(M.kld(spike, np.ones((50, 50))))


# ------------------------------------------------------------------------------------------
# Edge cases: defined numbers or one-line ValueErrors, never NaN
# ------------------------------------------------------------------------------------------


def test_constant_map_scores_no_information() -> None:
    flat = np.full((4, 5), 0.3)
    fix = np.array([[1.0, 1.0], [3.0, 2.0]])
    other = np.array([[0.0, 0.0], [4.0, 3.0], [2.0, 2.0]])
    gt = np.random.default_rng(12).random((4, 5))
    assert M.nss(flat, fix) == 0.0
    assert M.cc(flat, gt) == 0.0 and M.cc(gt, flat) == 0.0
    assert M.sim(flat, gt) == 0.0
    assert M.auc_borji(flat, fix) == 0.5
    assert M.auc_shuffled(flat, fix, other) == 0.5
    # benchmark expectation for 2 fixations: 0.5 + 0.5 / 3 (see auc_judd's docstring)
    assert M.auc_judd(flat, fix) == pytest.approx(0.5 + 0.5 / 3)
    assert M.kld(flat, flat) == pytest.approx(0.0, abs=1e-12)


def test_all_zero_map_is_defined() -> None:
    zero = np.zeros((4, 5))
    fix = np.array([[1.0, 1.0]])
    gt = np.ones((4, 5))
    results = M.score_all(zero, fix, gt_density=gt, baseline_density=gt, other_fixations=np.array([[2.0, 2.0]]))
    assert all(np.isfinite(v) for v in results.values())
    assert results["log_likelihood"] == pytest.approx(math.log2(M.EPS))
    # KLD of a zero prediction: 20 pixels of .05 * log(eps + .05 / eps)
    assert results["kld"] == pytest.approx(math.log(M.EPS + 0.05 / M.EPS), rel=1e-12)
    assert results["sim"] == 0.0


@pytest.mark.parametrize(
    "call",
    [
        lambda f: M.auc_judd(RAMP, f),
        lambda f: M.auc_borji(RAMP, f),
        lambda f: M.auc_shuffled(RAMP, f, np.array([[0.0, 0.0]])),
        lambda f: M.nss(RAMP, f),
        lambda f: M.log_likelihood(RAMP, f),
        lambda f: M.information_gain(RAMP, f, RAMP),
    ],
)
@pytest.mark.parametrize("empty", [np.zeros((0, 2)), np.zeros((3, 3), dtype=bool)])
def test_no_fixations_raise(call, empty) -> None:
    with pytest.raises(ValueError, match="no fixations"):
        call(empty)


def test_no_other_fixations_and_empty_gt_raise() -> None:
    with pytest.raises(ValueError, match="no other-image fixations"):
        M.auc_shuffled(RAMP, np.array([[1.0, 1.0]]), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="all zero"):
        M.cc(RAMP, np.zeros((3, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_raise(bad: float) -> None:
    smap = RAMP.copy()
    smap[1, 1] = bad
    fix = np.array([[0.0, 0.0]])
    for call in (
        lambda: M.auc_judd(smap, fix),
        lambda: M.nss(smap, fix),
        lambda: M.cc(smap, RAMP),
        lambda: M.cc(RAMP, smap),
        lambda: M.kld(smap, RAMP),
        lambda: M.information_gain(RAMP, fix, smap),
    ):
        with pytest.raises(ValueError, match="NaN or inf"):
            call()
    with pytest.raises(ValueError, match="NaN or inf"):
        M.nss(RAMP, np.array([[bad, 1.0]]))


def test_negative_density_and_bad_arguments_raise() -> None:
    fix = np.array([[0.0, 0.0]])
    with pytest.raises(ValueError, match="negative"):
        M.kld(RAMP - 5, RAMP)
    with pytest.raises(ValueError, match="negative"):
        M.log_likelihood(RAMP - 5, fix)
    with pytest.raises(ValueError, match="every pixel"):
        M.auc_judd(np.ones((1, 1)), np.array([[0.0, 0.0]]))
    with pytest.raises(ValueError, match="step"):
        M.auc_borji(RAMP, fix, step=0.0)
    with pytest.raises(ValueError, match="shape"):
        M.nss(RAMP, np.zeros((3, 3), dtype=bool), shape=(6, 6))
    with pytest.raises(ValueError, match="2-D"):
        M.nss(np.ones(5), fix)


# ------------------------------------------------------------------------------------------
# score_all
# ------------------------------------------------------------------------------------------


def test_score_all_matches_individual_metrics(random_case) -> None:
    smap, fix = random_case
    rng = np.random.default_rng(13)
    gt = rng.random(smap.shape)
    base = np.ones(smap.shape)
    other = np.column_stack([rng.uniform(0, 39, 60), rng.uniform(0, 29, 60)])
    out = M.score_all(smap, fix, gt_density=gt, baseline_density=base, other_fixations=other)
    assert tuple(out) == M.METRICS
    assert out["auc_judd"] == M.auc_judd(smap, fix)
    assert out["auc_borji"] == M.auc_borji(smap, fix)
    assert out["auc_shuffled"] == M.auc_shuffled(smap, fix, other)
    assert out["nss"] == M.nss(smap, fix)
    assert out["cc"] == M.cc(smap, gt)
    assert out["sim"] == M.sim(smap, gt)
    assert out["kld"] == M.kld(smap, gt)
    assert out["information_gain"] == M.information_gain(smap, fix, base)
    assert out["log_likelihood"] == M.log_likelihood(smap, fix)
    assert M.HIGHER_IS_BETTER["kld"] is False and all(M.HIGHER_IS_BETTER[m] for m in M.METRICS if m != "kld")


def test_score_all_picks_what_it_can_and_refuses_what_it_cannot(random_case) -> None:
    smap, fix = random_case
    assert set(M.score_all(smap, fix)) == {"auc_judd", "auc_borji", "nss", "log_likelihood"}
    assert set(M.score_all(smap, gt_density=smap)) == {"cc", "sim", "kld"}
    with pytest.raises(ValueError, match="needs baseline_density"):
        M.score_all(smap, fix, metrics=["information_gain"])
    with pytest.raises(ValueError, match="unknown metric"):
        M.score_all(smap, fix, metrics=["emd"])
    with pytest.raises(ValueError, match="needs fixations or gt_density"):
        M.score_all(smap)


# ------------------------------------------------------------------------------------------
# Real data: a centre-bias map is at chance on shuffled AUC
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not (OSIE / "eye" / "fixations.mat").is_file(), reason=f"OSIE not found at {OSIE}")
def test_shuffled_auc_of_centre_bias_is_near_chance_on_osie() -> None:
    from fastsal.baselines import other_image_fixations
    from fastsal.data.datasets import load_osie

    samples = load_osie(OSIE, "val")[:25]
    h, w = samples[0].shape
    yy, xx = np.mgrid[0:h, 0:w]
    centre = np.exp(-(((xx - w / 2) / (0.2 * w)) ** 2 + ((yy - h / 2) / (0.2 * h)) ** 2) / 2)
    shuffled, plain = [], []
    for i, s in enumerate(samples):
        other = other_image_fixations(samples, i, rng=i)
        shuffled.append(M.auc_shuffled(centre, s.fixations, other, shape=s.shape, n_splits=20))
        plain.append(M.auc_judd(centre, s.fixations, shape=s.shape))
    # the centre bias predicts fixations well (AUC-Judd) but not better than other images' do
    assert np.mean(plain) > 0.7
    assert np.mean(shuffled) == pytest.approx(0.5, abs=0.06)


def test_points_from_map_round_trip() -> None:
    # sanity check that the binary-map route in these tests uses the same pixels as points
    fmap = np.zeros((4, 5), dtype=bool)
    fmap[[0, 3], [4, 2]] = True
    smap = np.arange(20.0).reshape(4, 5)
    assert M.nss(smap, points_from_map(fmap)) == M.nss(smap, fmap)
