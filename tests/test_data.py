"""Fixation points, maps and densities, and the OSIE reader (including malformed files)."""
import json

import numpy as np
import pytest
from scipy.io import savemat

from fastsal.data import (
    fixation_density,
    fixation_map,
    load_osie,
    points_from_map,
    read_split,
    rescale_points,
)
from fastsal.data.datasets import DatasetError


def test_fixation_map_rounds_and_clamps():
    # (0.4, 0.6) -> pixel (x=0, y=1); (9.7, -3) is clamped to (x=4, y=0); (2.5, 2.5) rounds half to even -> (2, 2)
    fmap = fixation_map(np.array([[0.4, 0.6], [9.7, -3.0], [2.5, 2.5]]), (3, 5))
    assert fmap.dtype == bool and fmap.shape == (3, 5)
    assert set(map(tuple, np.argwhere(fmap))) == {(1, 0), (0, 4), (2, 2)}


def test_points_round_trip_through_map():
    pts = np.array([[1.0, 2.0], [3.0, 0.0]])
    back = points_from_map(fixation_map(pts, (4, 4)))
    assert sorted(map(tuple, back)) == sorted(map(tuple, pts))


def test_density_sums_to_one_and_peaks_at_fixation():
    d = fixation_density(np.array([[10.0, 5.0]]), (20, 30), sigma=2.0)
    assert d.shape == (20, 30)
    assert d.sum() == pytest.approx(1.0)
    assert np.unravel_index(d.argmax(), d.shape) == (5, 10)


def test_density_counts_repeated_fixations():
    pts = np.array([[2.0, 2.0], [2.0, 2.0], [7.0, 2.0]])
    with_counts = fixation_density(pts, (5, 10), sigma=0.0)
    binary = fixation_density(pts, (5, 10), sigma=0.0, counts=False)
    assert with_counts[2, 2] == pytest.approx(2 / 3) and binary[2, 2] == pytest.approx(1 / 2)


@pytest.mark.parametrize("counts", [True, False])
def test_density_equals_blurred_fixation_histogram(counts):
    """The fast separable sum equals scipy's Gaussian filter of the (count or binary) map."""
    from scipy import ndimage

    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform([-3, -3], [83, 63], (30, 2)), [[5.0, 5.0], [5.2, 4.9]]])
    hist = np.zeros((60, 80))
    xs = np.clip(np.rint(pts[:, 0]).astype(int), 0, 79)
    ys = np.clip(np.rint(pts[:, 1]).astype(int), 0, 59)
    if counts:
        np.add.at(hist, (ys, xs), 1.0)
    else:
        hist[ys, xs] = 1.0
    ref = ndimage.gaussian_filter(hist, sigma=6.0, mode="constant", truncate=4.0)
    ref /= ref.sum()
    assert np.allclose(fixation_density(pts, (60, 80), sigma=6.0, counts=counts), ref, rtol=0, atol=1e-15)


def test_density_without_fixations_is_uniform():
    d = fixation_density(np.zeros((0, 2)), (4, 5))
    assert np.allclose(d, 1 / 20)


def test_rescale_points_aligns_pixel_centres():
    # x' = (x + 0.5) * 2 - 0.5: 0 -> 0.5, 3.5 -> 7.5; y' = (y + 0.5) * 0.5 - 0.5: 1 -> 0.25
    out = rescale_points(np.array([[0.0, 1.0], [3.5, 1.0]]), (4, 4), (2, 8))
    assert np.allclose(out, [[0.5, 0.25], [7.5, 0.25]])


def test_bad_points_shape():
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        fixation_map(np.zeros((3, 3)), (4, 4))


def test_osie_reader(osie_root):
    test = load_osie(osie_root, "test")
    assert len(test) == 100 and test[0].name == read_split(osie_root, "test")[0]
    everything = load_osie(osie_root)
    assert len(everything) == 700
    assert sum(len(s.fixations) for s in everything) == 98_321
    s = everything[0]
    assert s.shape == (600, 800) and len(s.observers) == 15
    allpts = np.concatenate([x.fixations for x in everything])
    # MATLAB 1-based 1.2..799.2 becomes 0-based 0.2..798.2
    assert allpts[:, 0].min() == pytest.approx(0.2, abs=1e-6) and allpts[:, 0].max() == pytest.approx(798.2, abs=1e-6)
    assert s.image_path.is_file()
    names = {n for split in ("train", "val", "test") for n in read_split(osie_root, split)}
    assert len(names) == 700


def _write_osie(root, entries, splits):
    (root / "eye").mkdir(parents=True)
    savemat(root / "eye" / "fixations.mat", {"fixations": entries})
    (root / "splits.json").write_text(json.dumps(splits))


def test_osie_single_fixation_observer(tmp_path):
    subj = np.empty((2,), dtype=[("fix_x", object), ("fix_y", object), ("fix_duration", object)])
    subj[0] = (np.array([10.0, 20.0]), np.array([5.0, 6.0]), np.array([100.0, 200.0]))
    subj[1] = (11.0, 7.0, 300.0)  # one fixation: MATLAB stores scalars
    entries = np.empty((1,), dtype=[("img", object), ("subjects", object)])
    entries[0] = ("1.jpg", subj)
    _write_osie(tmp_path, entries, {"train": ["1.jpg"], "val": [], "test": []})
    (s,) = load_osie(tmp_path, "train")
    assert [len(o) for o in s.observers] == [2, 1]
    assert np.allclose(s.observers[1], [[10.0, 6.0]])


def test_osie_missing_folder_is_clear(tmp_path):
    from fastsal.cli import cli_message

    with pytest.raises(DatasetError, match="fixations.mat.*pass root pointing") as info:
        load_osie(tmp_path)
    assert info.value.option == "root" and "pass --root pointing" in cli_message(info.value)


def test_osie_malformed_files(tmp_path):
    (tmp_path / "eye").mkdir()
    (tmp_path / "eye" / "fixations.mat").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="cannot read MATLAB file"):
        load_osie(tmp_path)
    (tmp_path / "splits.json").write_text("{not json")
    with pytest.raises(DatasetError, match="splits.json.*not valid JSON"):
        read_split(tmp_path, "train")
    (tmp_path / "splits.json").write_text(json.dumps({"train": "oops"}))
    with pytest.raises(DatasetError, match="no list of image names"):
        read_split(tmp_path, "train")
    with pytest.raises(DatasetError, match="unknown split"):
        read_split(tmp_path, "dev")


def test_osie_split_naming_unknown_image(tmp_path):
    subj = np.empty((1,), dtype=[("fix_x", object), ("fix_y", object), ("fix_duration", object)])
    subj[0] = (np.array([1.0]), np.array([1.0]), np.array([1.0]))
    entries = np.empty((1,), dtype=[("img", object), ("subjects", object)])
    entries[0] = ("1.jpg", subj)
    _write_osie(tmp_path, entries, {"train": ["2.jpg"], "val": [], "test": []})
    with pytest.raises(DatasetError, match="2.jpg"):
        load_osie(tmp_path, "train")


def test_first_line_quotes_one_line_of_a_message():
    from fastsal.errors import first_line

    assert first_line(ValueError("  bad header\n  at byte 12\n")) == "bad header"
    assert first_line(KeyError()) == "KeyError"  # no message: the type says what happened
    assert first_line(OSError("")) == "OSError"
