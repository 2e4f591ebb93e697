"""The Scene reader on a fixture in the exact layout of ``../shared/data/scene`` (a MATLAB cell
array ``fixations``, image x observer, each cell ``[y, x, onset, duration]``), and on the real
data where it is present."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from fastsal.cli import main
from fastsal.data import DatasetError, load_dataset, load_scene
from fastsal.data.datasets import SCENE_DEGREE_SHARE

SHARED_SCENE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scene"
SHAPES = [(32, 32), (48, 64), (64, 40), (32, 32), (40, 56), (32, 48)]  # mixed sizes, portrait and landscape


def _cells(n_images: int, n_observers: int) -> np.ndarray:
    return np.empty((n_images, n_observers), dtype=object)


def write_scene(root: Path, cells: np.ndarray | None = None) -> np.ndarray:
    """stimuli/NNN.jpg, eye/fixations.mat (cells), eye/imgInfo.mat and splits.json, as in the release."""
    rng = np.random.default_rng(5)
    (root / "stimuli").mkdir(parents=True)
    (root / "eye").mkdir()
    names = [f"{i + 1:03d}.jpg" for i in range(len(SHAPES))]
    for name, (h, w) in zip(names, SHAPES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "stimuli" / name)
    if cells is None:
        cells = _cells(len(SHAPES), 3)
        for i, (h, w) in enumerate(SHAPES):
            for j in range(3):
                n = int(rng.integers(2, 6))
                ys, xs = rng.uniform(0.05, h, n), rng.uniform(0.05, w, n)
                cells[i, j] = np.stack([ys, xs, np.linspace(0.1, 2.5, n), np.full(n, 0.2)], axis=1)
        cells[1, 2] = np.zeros((0, 0))  # an observer without data, as in 52 cells of the release
    savemat(root / "eye" / "fixations.mat", {"fixations": cells})
    savemat(root / "eye" / "imgInfo.mat", {"imgInfo": {"size": np.array(SHAPES, dtype=np.uint16)}})
    (root / "splits.json").write_text(json.dumps({"train": names[:3], "val": names[3:4], "test": names[4:]}))
    return cells


@pytest.fixture(scope="module")
def scene_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("scene")
    write_scene(root)
    return root


def test_scene_reads_yx_cells_per_observer(tmp_path):
    cells = write_scene(tmp_path)
    samples = load_scene(tmp_path)
    assert [s.name for s in samples] == [f"{i + 1:03d}.jpg" for i in range(len(SHAPES))]
    for s, shape, row in zip(samples, SHAPES, cells):
        assert s.shape == shape
        assert s.pixels_per_degree == pytest.approx(SCENE_DEGREE_SHARE * max(shape))
        given = [c for c in row if np.asarray(c).size]
        assert len(s.observers) == len(given)  # the empty cell is no observer
        for pts, cell in zip(s.observers, given):
            # [y, x] in the file -> (x, y) points, continuous coordinates -> pixel centres
            np.testing.assert_allclose(pts, cell[:, [1, 0]] - 0.5)
    assert samples[1].sigma_px() == pytest.approx(0.03 * 64)


def test_scene_splits_follow_splits_json(scene_root):
    assert [s.name for s in load_dataset("scene", scene_root, "train")] == ["001.jpg", "002.jpg", "003.jpg"]
    assert [s.name for s in load_dataset("scene", scene_root, "test")] == ["005.jpg", "006.jpg"]


def test_scene_bad_files_are_one_line_errors(tmp_path):
    cells = _cells(len(SHAPES) - 1, 2)  # one row short of the stimuli
    for i in range(len(SHAPES) - 1):
        cells[i, 0] = cells[i, 1] = np.ones((2, 4))
    write_scene(tmp_path / "short", cells)
    with pytest.raises(DatasetError, match=r"fixations\.mat: fixations is \(5, 2\) but .* holds 6 images"):
        load_scene(tmp_path / "short")
    bad = _cells(len(SHAPES), 1)
    for i in range(len(SHAPES)):
        bad[i, 0] = np.ones((3, 4))
    bad[2, 0] = np.ones((3, 1))  # one column: no [y, x]
    write_scene(tmp_path / "bad", bad)
    with pytest.raises(DatasetError, match="image 003.jpg has a cell of shape"):
        load_scene(tmp_path / "bad")
    from fastsal.cli import cli_message

    with pytest.raises(DatasetError, match="not found; pass root pointing at the Scene folder") as info:
        load_scene(tmp_path / "missing")
    assert "not found; pass --root pointing at the Scene folder" in cli_message(info.value)


def test_scene_points_outside_are_dropped_and_empty_images_left_out(tmp_path):
    cells = _cells(len(SHAPES), 1)
    for i, (h, w) in enumerate(SHAPES):
        cells[i, 0] = np.array([[h / 2, w / 2, 0.1, 0.2], [h + 5.0, w / 2, 0.3, 0.2]])
    cells[3, 0] = np.zeros((0, 4))
    write_scene(tmp_path, cells)
    with pytest.warns(UserWarning) as caught:
        samples = load_scene(tmp_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "5 fixation(s) outside their image were dropped" in messages
    assert "1 image(s) have no fixations and are left out: 004.jpg" in messages
    assert len(samples) == 5 and all(len(s.fixations) == 1 for s in samples)


def test_cli_evaluate_dataset_scene(scene_root, tmp_path):
    report = tmp_path / "r.json"
    assert main(["evaluate", "--model", "fastsal_a", "--backend", "torch", "--input-size", "64x96",
                 "--dataset", "scene", "--root", str(scene_root), "--split", "test", "--metrics", "nss",
                 "--threads", "1", "--json", str(report), "-q"]) == 0
    res = json.loads(report.read_text())
    assert res["config"]["dataset"] == "scene" and res["config"]["n_images"] == 2
    assert "gold standard" in res["results"]


@pytest.mark.skipif(not (SHARED_SCENE / "eye" / "fixations.mat").is_file(), reason="../shared/data/scene not present")
def test_real_scene_release_counts():
    counts = {split: len(load_scene(SHARED_SCENE, split)) for split in ("train", "val", "test")}
    assert counts == {"train": 350, "val": 50, "test": 100}
    everything = load_scene(SHARED_SCENE)
    assert sum(len(s.fixations) for s in everything) == 43894  # the release's count: none dropped
    assert all(1 <= len(s.observers) <= 12 for s in everything)
