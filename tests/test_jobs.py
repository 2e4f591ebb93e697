"""The job layer (fastsal.jobs): shard sources, the compute/write split, reruns that load nothing, manifests."""
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastsal
from fastsal import batch, jobs
from fastsal.cli import main
from fastsal.jobs import JobError, shard_spec

FAST = ["--threads", "1", "--quiet"]


def make_images(root: Path, n: int = 4) -> list[Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = root / f"img{i}.jpg"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40 + i, 60, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def predictor():
    return fastsal.load(threads=1)


# -- --shard sources -------------------------------------------------------------------------------

def test_shard_from_text_and_torchrun():
    assert shard_spec("1/4", {}) == (1, 4)
    assert shard_spec(None, {}) == (0, 1)
    assert shard_spec(None, {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)
    assert shard_spec("auto", {"RANK": "2", "WORLD_SIZE": "3"}) == (2, 3)


def test_shard_from_slurm_array():
    assert shard_spec("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    # --array=1-4: ids 1..4 are shards 0..3
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "4"}
    assert shard_spec("auto", env) == (0, 4)
    # --array=0-10:5: ids 0, 5, 10
    env = {"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "10",
           "SLURM_ARRAY_TASK_STEP": "5"}
    assert shard_spec("auto", env) == (2, 3)
    assert shard_spec("auto/8", {"SLURM_ARRAY_TASK_ID": "7"}) == (7, 8)
    # a SLURM array does not split a run that did not ask for it
    assert shard_spec(None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (0, 1)


def test_shard_from_kubernetes_indexed_job():
    assert shard_spec("auto/5", {"JOB_COMPLETION_INDEX": "4"}) == (4, 5)
    assert shard_spec("auto", {"JOB_COMPLETION_INDEX": "0", jobs.K8S_COUNT_VARIABLE: "2"}) == (0, 2)


@pytest.mark.parametrize("text, env, match", [
    ("auto", {}, "none of SLURM_ARRAY_TASK_ID"),
    ("auto", {"JOB_COMPLETION_INDEX": "1"}, "auto/N or set FASTSAL_SHARD_COUNT"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT or _MAX"),
    ("auto/3", {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "4"}, "disagrees with the environment"),
    ("auto/2", {"JOB_COMPLETION_INDEX": "2"}, "must be in 0..1"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "SLURM_ARRAY_TASK_ID='x' is not a whole"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, "grid"),
    (None, {"RANK": "4", "WORLD_SIZE": "4"}, "RANK/WORLD_SIZE must be in 0..3"),
    ("auto/0", {}, "auto/COUNT"),
    ("2/2", {}, "0..COUNT-1"),
])
def test_inconsistent_shard_sources_are_one_line_errors(text, env, match):
    with pytest.raises(JobError, match=match) as info:
        shard_spec(text, env)
    assert "\n" not in str(info.value)


def test_cli_shard_auto_reads_kubernetes(tmp_path, monkeypatch):
    make_images(tmp_path / "in", 3)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--shard", "auto/2", *FAST]) == 0
    manifest = json.loads((out / "manifest-1-of-2.json").read_text())
    assert manifest["shard"] == [1, 2] and [Path(e["input"]).name for e in manifest["written"]] == ["img1.jpg"]


# -- the compute / write split -----------------------------------------------------------------------

def test_remote_style_compute_writes_the_same_bytes_as_a_local_run(tmp_path, predictor):
    """A task pickled to a 'worker' computes results whose bytes the driver writes: byte-identical
    to the local pipelined run, for every format."""
    make_images(tmp_path / "in", 3)
    todo = batch.collect([tmp_path / "in"])
    formats = ("png", "overlay", "npy", "saliency_jpg", "log_density")
    batch.run(predictor, todo, tmp_path / "local", formats, progress=False)

    calls = []

    def remote(task, items, emit, *, batch_size, workers):
        worker_task = pickle.loads(pickle.dumps(task))  # what a Ray actor receives
        assert not worker_task.loaded or worker_task.loader is None
        for i in range(0, len(items), batch_size):
            for result in pickle.loads(pickle.dumps(worker_task.compute_batch(items[i:i + batch_size]))):
                calls.append(result.key)
                emit(result)

    import functools

    task = batch.MapsTask(tmp_path / "remote", formats, loader=functools.partial(fastsal.load, threads=1))
    rep = jobs.run(task, todo, progress=False, batch_size=2, executor=remote)
    assert len(calls) == 3 and rep["complete"] and len(rep["written"]) == 3
    local = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert len(local) == 3 * len(formats)
    for rel in local:
        assert (tmp_path / "remote" / rel).read_bytes() == (tmp_path / "local" / rel).read_bytes(), rel


def test_a_pickled_task_drops_its_loaded_model(tmp_path, predictor):
    import functools

    task = batch.MapsTask(tmp_path, ("png",), loader=functools.partial(fastsal.load, threads=1))
    task._model = predictor  # as if loaded on the driver
    assert pickle.loads(pickle.dumps(task))._model is None


# -- reruns -------------------------------------------------------------------------------------------

def test_rerun_of_a_finished_job_loads_no_model(tmp_path, monkeypatch, capsys):
    make_images(tmp_path / "in", 3)
    out = tmp_path / "out"
    cmd = ["predict", str(tmp_path / "in"), "-o", str(out), "--threads", "1"]
    assert main(cmd) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.png")}
    capsys.readouterr()

    def no_load(*a, **k):
        raise AssertionError("a model was loaded for a finished job")

    monkeypatch.setattr(fastsal.predict, "load", no_load)
    assert main(cmd) == 0
    assert "0 maps written" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.png")} == before  # nothing recomputed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["skipped_existing"] == 3 and manifest["settings"]["model"]
    # another model asked for: loaded (the monkeypatched load says so), not silently taken as done
    with pytest.raises(AssertionError, match="a model was loaded"):
        main([*cmd, "--model", "fastsal_a"])


def test_rerun_summary_of_a_finished_job(tmp_path, capsys):
    make_images(tmp_path / "in", 2)
    cmd = ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--threads", "1"]
    assert main(cmd) == 0
    capsys.readouterr()
    assert main(cmd) == 0
    assert "0 maps written" in capsys.readouterr().err


# -- manifest merge ---------------------------------------------------------------------------------

def test_manifest_merge_of_two_real_shards(tmp_path, capsys):
    make_images(tmp_path / "in", 5)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    for i in range(2):
        main(["predict", str(tmp_path / "in"), "-o", str(out), "--shard", f"{i}/2", *FAST])
    merged_file = tmp_path / "merged.json"
    capsys.readouterr()
    assert main(["manifest", "merge", str(out / "manifest-0-of-2.json"), str(out / "manifest-1-of-2.json"),
                 "-o", str(merged_file)]) == 0
    assert "2 shards of maps merged" in capsys.readouterr().err
    merged = json.loads(merged_file.read_text())
    assert merged["format"] == jobs.MANIFEST_FORMAT and merged["task"] == "maps" and merged["complete"]
    assert merged["shards"] == [[0, 2], [1, 2]] and merged["missing_shards"] == [] and merged["assigned"] == 6
    assert sorted(Path(e["input"]).name for e in merged["written"]) == [f"img{i}.jpg" for i in range(5)]
    assert [Path(e["input"]).name for e in merged["failed"]] == ["broken.jpg"]
    # a folder stands for its shard manifests; one shard alone is reported incomplete
    assert main(["manifest", "merge", str(out), "-o", str(tmp_path), "-q"]) == 0
    assert json.loads((tmp_path / "manifest-merged.json").read_text())["written"] == merged["written"]
    assert main(["manifest", "merge", str(out / "manifest-1-of-2.json"), "-o", str(merged_file)]) == 0
    assert "missing shards [0]" in capsys.readouterr().err
    assert json.loads(merged_file.read_text())["complete"] is False


def test_manifest_merge_refuses_shards_of_other_jobs(tmp_path, capsys):
    make_images(tmp_path / "in", 2)
    out = tmp_path / "out"
    for i in range(2):
        assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--shard", f"{i}/2", *FAST]) == 0
    m1 = out / "manifest-1-of-2.json"
    data = json.loads(m1.read_text())
    data["settings"]["model"] = "another"
    m1.write_text(json.dumps(data))
    before = set(tmp_path.rglob("*"))
    assert main(["manifest", "merge", str(out), "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "settings differ" in err[0] and "manifest-1-of-2.json" in err[0]
    assert set(tmp_path.rglob("*")) == before  # nothing written
    assert main(["manifest", "merge", str(out / "manifest-0-of-2.json"), str(out / "manifest-0-of-2.json"),
                 "-o", str(tmp_path / "m.json")]) == 2
    assert "given twice" in capsys.readouterr().err
    (tmp_path / "x.json").write_text('{"format": "something"}')
    assert main(["manifest", "merge", str(tmp_path / "x.json"), "-o", str(tmp_path / "m.json")]) == 2
    assert "not a fastsal manifest" in capsys.readouterr().err


@pytest.mark.parametrize("old", [
    {"format": "fastsal-manifest/1", "shard": [0, 1], "settings": {"model": "m"}, "written": [{"input": "a.jpg"}],
     "failed": [], "complete": True},
    {"format": "fastsal-crops/1", "shard": [0, 1], "settings": {"model": "m"}, "images": [{"input": "a.jpg"}],
     "failed": [], "complete": True},
    {"format": "fastsal-video-manifest/1", "shard": [0, 1], "settings": {"model": "m"},
     "written": [{"input": "a.jpg"}], "failed": [], "complete": True},
    {"format": "fastsal-pseudo-labels/1", "shard": [0, 1], "teacher": {"sha256": "ab"}, "failed": 1,
     "images": [{"input": "a.jpg", "status": "ok"}, {"input": "b.jpg", "status": "failed"}], "complete": True},
])
def test_old_manifests_are_read_as_the_one_schema(tmp_path, old):
    from fastsal.manifests import merge_manifests, read_manifest

    path = tmp_path / "manifest.json"
    path.write_text(json.dumps(old))
    data = read_manifest(path)
    assert data["format"] == jobs.MANIFEST_FORMAT and data["converted_from"] == old["format"]
    assert [e["input"] for e in data["written"]] == ["a.jpg"] and isinstance(data["failed"], list)
    assert merge_manifests([path])["complete"] is True


def test_manifest_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom fastsal.cli import main\ntry:\n    main(['manifest', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.stdout.strip().splitlines()[-1] == "False"


def test_finished_crop_job_rerun_with_other_crop_options_is_refused(tmp_path, capsys):
    """The request that lets a finished job skip loading includes the task's own settings: a rerun
    of a finished crop job with another --scale is refused, not taken as done."""
    make_images(tmp_path / "in", 2)
    cmd = ["crop", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--aspect", "1:1", "--format", "json", *FAST]
    assert main(cmd) == 0
    assert main(cmd) == 0  # finished: nothing to do
    assert main([*cmd, "--scale", "0.8"]) == 2
    assert "other settings" in capsys.readouterr().err
