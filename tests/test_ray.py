"""fastsal.ray on an in-process Ray cluster (loopback-only namespace; tests/ray_util.py): rows from
``predict_dataset`` agree with the library run locally, read from paths or bytes, written as Parquet."""
from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ray_util import in_process_cluster, need_netns, need_ray

need_ray()

OSIE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "osie" / "stimuli"
ASPECTS = ["16:9", "1:1"]


@pytest.fixture(scope="module")
def cluster():
    need_netns()
    with in_process_cluster(num_cpus=2) as address:
        yield address


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Four OSIE stimuli (one a portrait crop, so aspects differ) and a file that is no image."""
    found = sorted(glob.glob(str(OSIE / "*.jpg")))[:3]
    if len(found) < 3:
        pytest.skip("OSIE stimuli (../shared/data/osie/stimuli) not present")
    folder = tmp_path_factory.mktemp("ray-images")
    paths = [Path(shutil.copy(p, folder)) for p in found]
    from PIL import Image

    with Image.open(paths[0]) as im:
        im.crop((100, 0, 400, 500)).save(folder / "portrait.jpg", quality=90)
    (folder / "broken.jpg").write_bytes(b"not an image at all")
    return [*paths, folder / "portrait.jpg", folder / "broken.jpg"]


@pytest.fixture(scope="module")
def local():
    import fastsal

    return fastsal.load("default", threads=1)


@pytest.fixture(scope="module")
def path_rows(cluster, images):
    import fastsal.ray

    ds = fastsal.ray.predict_dataset([str(p) for p in images], outputs=("peaks", "grid", "crops", "map"),
                                     aspects=ASPECTS, grid_size=8, actors=2, batch_size=2)
    return {row["path"]: row for row in ds.take_all()}


def test_rows_match_the_library_run_locally(path_rows, images, local):
    from fastsal.batch import write_map
    from fastsal.cropping import crop_image
    from fastsal.images import load_resized
    from fastsal.peaks import fixation_candidates, grid

    assert set(path_rows) == {str(p) for p in images}
    for path in images[:-1]:
        row = path_rows[str(path)]
        assert row["error"] is None
        small, size = load_resized(path, local.input_size_for)
        prob = local.predict_batch([small], sizes=[size])[0]
        assert (row["height"], row["width"]) == prob.shape
        peaks = fixation_candidates(prob, 5)
        assert [(p["x"], p["y"]) for p in row["peaks"]] == [(p["x"], p["y"]) for p in peaks]
        assert np.allclose([p["probability"] for p in row["peaks"]], [p["probability"] for p in peaks], atol=1e-6)
        assert np.allclose(np.array(row["grid"]), grid(prob, 8), atol=1e-7)
        crops = [c.to_dict() for c in crop_image(path, ASPECTS, predictor=local)]
        assert [(c["aspect"], c["x"], c["y"], c["w"], c["h"]) for c in row["crops"]] == \
            [(c["aspect"], c["x"], c["y"], c["w"], c["h"]) for c in crops]
        # the map column holds the very bytes `fastsal predict --format png` writes
        written = write_map(path.with_suffix(".map.png"), "png", prob).read_bytes()
        assert row["map"] == written


def test_an_unreadable_image_is_a_row_with_its_error(path_rows, images):
    row = path_rows[str(images[-1])]
    assert "broken.jpg" in row["error"]
    assert row["peaks"] is None and row["width"] is None and row["map"] is None


def test_bytes_input_gives_the_same_rows_and_writes_parquet(cluster, images, path_rows, tmp_path):
    import pyarrow.parquet as pq
    import ray

    import fastsal.ray

    ds = ray.data.read_binary_files([str(p) for p in images], include_paths=True)
    rows = fastsal.ray.predict_dataset(ds, outputs=("peaks", "crops"), aspects=ASPECTS, actors=1, batch_size=3)
    rows.write_parquet(str(tmp_path / "rows"))
    table = pq.read_table(tmp_path / "rows")
    assert "bytes" not in table.column_names
    assert {"path", "width", "height", "error", "peaks", "crops"} <= set(table.column_names)
    assert "grid" not in table.column_names and "map" not in table.column_names
    got = {os.path.basename(r["path"]): r for r in table.to_pylist()}
    assert len(got) == len(images)
    for path in images:
        want, row = path_rows[str(path)], got[path.name]
        assert row["crops"] == want["crops"]
        assert [(p["x"], p["y"]) for p in row["peaks"] or []] == [(p["x"], p["y"]) for p in want["peaks"] or []]
        assert (row["error"] is None) == (want["error"] is None)


@pytest.mark.parametrize("kwargs, words", [
    ({"outputs": ("peaks", "faces")}, "outputs must name"),
    ({"outputs": ()}, "outputs must name"),
    ({"map_format": "tiff"}, "map_format"),
    ({"actors": 0}, "actors"),
    ({"actors": (3, 1)}, "actors"),
    ({"cpus_per_actor": 0}, "cpus_per_actor"),
    ({"batch_size": 0}, "batch_size"),
    ({"k": 99}, "k must"),
    ({"grid_size": 0}, "grid_size"),
    ({"aspects": ["wide"]}, "wide"),
])
def test_bad_settings_are_refused_before_any_work(kwargs, words):
    import fastsal.ray
    from fastsal.errors import FastSalError

    with pytest.raises(FastSalError, match=words) as info:
        fastsal.ray.predict_dataset(["x.jpg"], **kwargs)
    assert "\n" not in str(info.value)


def test_a_dataset_without_images_is_refused(cluster):
    import ray

    import fastsal.ray

    with pytest.raises(fastsal.ray.RayError, match="no 'path' or 'bytes' column"):
        fastsal.ray.predict_dataset(ray.data.from_items([{"file": "a.jpg"}]))


def test_auto_without_ray_address_is_a_one_line_error(monkeypatch):
    import ray

    import fastsal.ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(fastsal.ray.RayError, match="RAY_ADDRESS"):
        fastsal.ray.connect("auto")


def test_threads_follow_the_actor_cpus():
    from fastsal.cpu import available_cpus, threads_for

    assert threads_for(None) == 1
    assert threads_for(0.5) == 1
    assert threads_for(1) == 1
    assert threads_for(2.0) == min(2, available_cpus())
    assert threads_for(10**6) == available_cpus()
