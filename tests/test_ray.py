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


def test_rows_match_the_library_run_locally(path_rows, images, local, tmp_path):
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
        written = write_map(tmp_path / f"{path.stem}.png", "png", prob).read_bytes()
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


# -- the job layer on Ray: `--ray` and fastsal.ray.predict_files --------------------------------------

COMMANDS = {
    "predict": lambda folder: ["predict", str(folder), "--format", "all"],
    "crop": lambda folder: ["crop", str(folder), "--aspect", "16:9,1:1", "--show"],
    "pseudo-label": lambda folder: ["pseudo-label", "--images", str(folder), "--teacher", "default", "--tta", "flip"],
}


def _files(root: Path) -> dict[str, bytes]:
    """Every output file under ``root`` but the manifests/reports (they hold times), by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix != ".json"}


def _records(root: Path) -> list[Path]:
    return sorted(root.glob("*.json"))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_ray_run_is_the_local_run_byte_for_byte(cluster, images, tmp_path, monkeypatch, command):
    from fastsal.cli import main

    monkeypatch.setenv("RAY_ADDRESS", cluster)
    folder = images[0].parent
    common = ["--threads", "1", "-q", "--batch-size", "2"]
    assert main([*COMMANDS[command](folder), "-o", str(tmp_path / "local"), *common]) == 0
    assert main([*COMMANDS[command](folder), "-o", str(tmp_path / "ray"), *common, "--ray", "auto",
                 "--ray-actors", "2"]) == 0
    local, remote = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert len(local) >= len(images) - 1 and list(local) == list(remote)
    assert all(local[name] == remote[name] for name in local), [n for n in local if local[n] != remote[n]]
    assert not [n for n in remote if ".tmp" in n]
    [record] = _records(tmp_path / "ray")  # one manifest, written by the driver
    import json

    manifest = json.loads(record.read_text())
    assert manifest["complete"] is True
    assert len(manifest["failed"]) == 1 and "broken.jpg" in manifest["failed"][0]["input"]


def test_rerun_of_a_finished_ray_job_computes_nothing_and_loads_no_model(cluster, images, tmp_path, monkeypatch):
    import fastsal.predict
    import fastsal.ray
    from fastsal.cli import main

    good = [str(p) for p in images[:-1]]  # a failed image is retried by a rerun: not a finished job
    args = ["predict", *good, "-o", str(tmp_path / "maps"), "--threads", "1", "-q", "--ray", cluster]
    assert main(args) == 0
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "maps").rglob("*.png")}
    assert len(before) == len(images) - 1

    def refuse(*a, **k):
        raise AssertionError("a finished job loaded a model or reached the cluster")

    monkeypatch.setattr(fastsal.predict, "load", refuse)
    monkeypatch.setattr(fastsal.ray, "connect", refuse)
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "maps").rglob("*.png")} == before


def test_predict_files_keeps_the_command_line_layout(cluster, images, tmp_path):
    import fastsal.ray
    from fastsal.cli import main

    folder = images[0].parent
    assert main(["predict", str(folder), "-o", str(tmp_path / "cli"), "--threads", "1", "-q", "--format", "npy"]) == 0
    report = fastsal.ray.predict_files([folder], tmp_path / "api", formats=("npy",), threads=1, actors=1,
                                       address=cluster)
    assert report["complete"] and len(report["written"]) == len(images) - 1 and len(report["failed"]) == 1
    assert _files(tmp_path / "cli") == _files(tmp_path / "api")


def test_an_unreachable_cluster_is_a_one_line_error(tmp_path, images, monkeypatch, capsys):
    import ray

    from fastsal.cli import main

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(ConnectionError("could not connect")))
    code = main(["predict", str(images[0]), "-o", str(tmp_path / "maps"), "-q", "--ray", "10.255.255.1:6379"])
    err = capsys.readouterr().err
    assert code != 0 and "fastsal: error: cannot join the Ray cluster at 10.255.255.1:6379" in err
    assert len(err.strip().splitlines()) == 1
