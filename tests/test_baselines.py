"""Tests of fastsal.baselines: centre bias, uniform density, gold standard, shuffled-AUC negatives."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from fastsal import baselines as B
from fastsal import metrics as M
from fastsal.data.datasets import Sample
from fastsal.data.fixations import fixation_density

OSIE = Path(os.environ.get("FASTSAL_OSIE", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "osie"))
needs_osie = pytest.mark.skipif(not (OSIE / "eye" / "fixations.mat").is_file(), reason=f"OSIE not found at {OSIE}")


def _sample(observers: list[list[tuple[float, float]]], shape: tuple[int, int] = (40, 50), name: str = "synthetic") -> Sample:
    obs = tuple(np.array(o, dtype=float).reshape(-1, 2) for o in observers)
    return Sample(name, Path(f"{name}.jpg"), shape[0], shape[1], obs)


# ------------------------------------------------------------------------------------------
# Synthetic data
# ------------------------------------------------------------------------------------------


def test_fit_recovers_a_known_gaussian_plus_uniform_mixture() -> None:
    # 4000 fixations from N((0.3, 0.6), diag(0.01, 0.02)) and 1000 uniform ones (weight 0.8),
    # in pixel coordinates of a 100 x 200 (H x W) image.
    rng = np.random.default_rng(0)
    g = rng.multivariate_normal([0.3, 0.6], [[0.01, 0.0], [0.0, 0.02]], size=4000)
    u = rng.random((1000, 2))
    xy = np.clip(np.concatenate([g, u]), 0, 1)
    pts = np.column_stack([xy[:, 0] * 200 - 0.5, xy[:, 1] * 100 - 0.5])
    params = B.fit_centre_bias([_sample([pts.tolist()], shape=(100, 200))])
    assert params.mean_x == pytest.approx(0.3, abs=0.01)
    assert params.mean_y == pytest.approx(0.6, abs=0.01)
    assert params.var_x == pytest.approx(0.01, rel=0.1)
    assert params.var_y == pytest.approx(0.02, rel=0.15)
    assert params.gaussian_weight == pytest.approx(0.8, abs=0.05)
    assert params.n_fixations == 5000


def test_centre_bias_density_sums_to_one_and_round_trips_json() -> None:
    params = B.CentreBiasParams(0.5, 0.45, 0.04, 0.03, 0.001, 0.9, 123)
    for shape in [(60, 80), (7, 3), (1, 1)]:
        dens = B.centre_bias_density(params, shape)
        assert dens.shape == shape and dens.min() > 0
        assert dens.sum() == pytest.approx(1.0, rel=1e-12)
    again = B.CentreBiasParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert again == params
    with pytest.raises(ValueError, match="lack"):
        B.CentreBiasParams.from_dict({"mean_x": 0.5})
    with pytest.raises(ValueError, match="positive definite"):
        B.CentreBiasParams.from_dict({**params.to_dict(), "var_x": -1.0})


def test_centre_bias_too_few_fixations() -> None:
    with pytest.raises(ValueError, match="at least 3"):
        B.fit_centre_bias([_sample([[(1, 1)]])])


def test_uniform_density() -> None:
    u = B.uniform_density((3, 4))
    assert u.shape == (3, 4) and u.sum() == pytest.approx(1.0) and np.ptp(u) == 0


def test_gold_standard_excludes_the_left_out_observer() -> None:
    # Three observers, far apart on a 40 x 50 image; with sigma 2 (truncated at 4 sigma = 8 px)
    # the left-out observer's spot gets exactly no mass from the others.
    s = _sample([[(5, 5), (6, 5)], [(40, 30)], [(25, 20), (26, 21)]])
    gs = B.gold_standard(s, 0, sigma=2.0)
    assert gs.sum() == pytest.approx(1.0)
    assert gs[5, 5] == 0.0 and gs[30, 40] > 0 and gs[20, 25] > 0
    np.testing.assert_allclose(gs, fixation_density(np.concatenate([s.observers[1], s.observers[2]]), s.shape, 2.0))
    # the same with a uniform floor: positive everywhere, same ranking
    floored = B.gold_standard(s, 0, sigma=2.0, uniform_weight=0.01)
    assert floored.min() > 0 and floored.sum() == pytest.approx(1.0)
    assert M.auc_judd(floored, s.observers[2]) == M.auc_judd(gs, s.observers[2])
    assert B.gold_standard(s, -1, sigma=2.0)[20, 25] == 0.0  # negative index = last observer


def test_gold_standard_rejects_bad_arguments() -> None:
    s = _sample([[(5, 5)], [(40, 30)]])
    with pytest.raises(ValueError, match="out of range"):
        B.gold_standard(s, 2)
    with pytest.raises(ValueError, match="at least 2 observers"):
        B.gold_standard(_sample([[(5, 5)]]), 0)
    with pytest.raises(ValueError, match="uniform_weight"):
        B.gold_standard(s, 0, uniform_weight=2.0)


def test_score_gold_standard_averages_over_left_out_observers() -> None:
    # Observers who agree (all near (20, 15)) make a gold standard that predicts each one well.
    rng = np.random.default_rng(1)
    observers = [[(20 + dx, 15 + dy) for dx, dy in rng.normal(0, 1.5, (3, 2))] for _ in range(5)]
    s = _sample(observers)
    scores = B.score_gold_standard(s, sigma=3.0, baseline_density=B.uniform_density(s.shape))
    assert set(scores) == {"auc_judd", "auc_borji", "nss", "cc", "sim", "kld", "information_gain", "log_likelihood"}
    assert scores["auc_judd"] > 0.95 and scores["nss"] > 2 and scores["information_gain"] > 2
    by_hand = np.mean([M.nss(B.gold_standard(s, i, 3.0), s.observers[i]) for i in range(5)])
    assert scores["nss"] == pytest.approx(by_hand, rel=1e-12)
    only = B.score_gold_standard(s, sigma=3.0, metrics=["nss"])
    assert only == {"nss": scores["nss"]}


def test_other_image_fixations_excludes_the_image_and_rescales() -> None:
    a = _sample([[(1, 1)]], shape=(10, 10), name="a")
    b = _sample([[(9, 9)]], shape=(20, 20), name="b")
    c = _sample([[(3, 4)]], shape=(10, 10), name="c")
    pts = B.other_image_fixations([a, b, c], 0, n_images=10)
    # b's (9, 9) on 20 x 20 -> ((9 + .5) / 2 - .5) = 4.25 on 10 x 10; a itself is left out
    np.testing.assert_allclose(sorted(map(tuple, pts)), [(3.0, 4.0), (4.25, 4.25)])
    assert len(B.other_image_fixations([a, b, c], 1, n_images=1, rng=3)) == 1


# ------------------------------------------------------------------------------------------
# OSIE
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def osie_centre_bias() -> tuple[B.CentreBiasParams, list[Sample]]:
    from fastsal.data.datasets import load_osie

    return B.fit_centre_bias(load_osie(OSIE, "train")), load_osie(OSIE, "val")


@needs_osie
def test_osie_centre_bias_peaks_near_the_centre(osie_centre_bias) -> None:
    params, _ = osie_centre_bias
    dens = B.centre_bias_density(params, (600, 800))
    assert dens.sum() == pytest.approx(1.0)
    row, col = np.unravel_index(dens.argmax(), dens.shape)
    # near the centre (300, 400), a little above it as usual for photographs
    assert abs(col - 400) < 40 and abs(row - 300) < 60
    assert 0.5 < params.gaussian_weight < 1 and params.n_fixations > 50_000


@needs_osie
def test_osie_centre_bias_beats_uniform_on_val(osie_centre_bias) -> None:
    params, val = osie_centre_bias
    cb = B.centre_bias_density(params, val[0].shape)
    uni = B.uniform_density(val[0].shape)
    nss_cb = [M.nss(cb, s.fixations, shape=s.shape) for s in val]
    nss_uni = [M.nss(uni, s.fixations, shape=s.shape) for s in val]
    ig = [M.information_gain(cb, s.fixations, uni, shape=s.shape) for s in val]
    assert np.mean(nss_cb) > 0.5 > np.mean(nss_uni) == 0.0
    assert np.mean(ig) > 0.2  # bits per fixation over "no model"
