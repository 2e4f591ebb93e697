"""Batch prediction: shards are complete and disjoint, reruns resume, list files, manifests."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastsal
from fastsal import batch
from fastsal.batch import BatchError
from fastsal.cli import cli_message, main

FAST = ["--threads", "1", "--quiet"]


def make_tree(root: Path, n: int = 7) -> list[Path]:
    """n small JPEGs over two subfolders (sizes differ, so maps do too)."""
    paths = []
    for i in range(n):
        p = root / ("a" if i % 2 else "b") / f"img{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        arr = np.random.default_rng(i).integers(0, 256, (40 + i, 50 + 2 * i, 3), dtype=np.uint8)
        Image.fromarray(arr).save(p)
        paths.append(p)
    return paths


def maps_in(out: Path) -> set[str]:
    return {p.relative_to(out).as_posix() for p in out.rglob("*.npy")}


@pytest.fixture(scope="module")
def predictor():
    return fastsal.load(threads=1)


def test_two_shards_are_complete_and_disjoint(tmp_path, monkeypatch):
    make_tree(tmp_path / "in")
    expected = {f"{'a' if i % 2 else 'b'}/img{i}.npy" for i in range(7)}
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--format", "npy", "--shard", f"{i}/2", *FAST]) == 0
        outs.append(out)
    a, b = maps_in(outs[0]), maps_in(outs[1])
    assert a and b and not a & b and a | b == expected
    m0 = json.loads((outs[0] / "manifest-0-of-2.json").read_text())
    m1 = json.loads((outs[1] / "manifest-1-of-2.json").read_text())
    assert m0["complete"] and m1["complete"] and m0["shard"] == [0, 2] and m1["shard"] == [1, 2]
    assert m0["assigned"] + m1["assigned"] == 7 and len(m0["written"]) == m0["assigned"]
    assert {Path(e["outputs"][0]).relative_to(outs[0]).as_posix() for e in m0["written"]} == a
    # torchrun's RANK / WORLD_SIZE select the same shard as --shard
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "env"), "--format", "npy", *FAST]) == 0
    assert maps_in(tmp_path / "env") == b


def test_shards_in_one_folder_and_maps_equal_unsharded(tmp_path, predictor):
    paths = make_tree(tmp_path / "in", n=5)
    out = tmp_path / "out"
    for i in range(3):
        assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--format", "npy", "--shard", f"{i}/3", *FAST]) == 0
    assert sorted(p.name for p in out.glob("manifest-*.json")) == [f"manifest-{i}-of-3.json" for i in range(3)]
    for p in paths:
        got = np.load(out / p.parent.name / (p.stem + ".npy"))
        assert np.allclose(got, predictor.predict(p), rtol=1e-4, atol=1e-9)


def test_rerun_resumes_and_overwrite_redoes(tmp_path):
    make_tree(tmp_path / "in", n=4)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), *FAST]) == 0
    done = out / "b" / "img0.png"
    stamp = done.stat().st_mtime_ns
    (out / "a" / "img1.png").unlink()  # as if the first run had been killed before this one
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), *FAST]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped_existing"] == 3
    assert [Path(e["input"]).name for e in manifest["written"] if not e.get("earlier_run")] == ["img1.jpg"]
    assert sorted(Path(e["input"]).name for e in manifest["written"]) == [f"img{i}.jpg" for i in range(4)]
    assert done.stat().st_mtime_ns == stamp and (out / "a" / "img1.png").is_file()
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--overwrite", *FAST]) == 0
    assert json.loads((out / "manifest.json").read_text())["skipped_existing"] == 0
    # asking for another format is not "done": the npy files are made for every input
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--format", "npy", *FAST]) == 0
    assert len(maps_in(out)) == 4


def test_list_file(tmp_path):
    paths = make_tree(tmp_path / "data", n=3)
    lst = tmp_path / "data" / "todo.txt"
    lst.write_text(f"# images to do\n{paths[0].relative_to(lst.parent)}\n\n{paths[2]}\nmissing.jpg\n")
    out = tmp_path / "out"
    assert main(["predict", "--list", str(lst), "-o", str(out), "--format", "npy", *FAST]) == 0
    assert maps_in(out) == {"b/img0.npy", "b/img2.npy"}  # mirrored below the entries' common folder
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(f["input"]).name for f in manifest["failed"]] == ["missing.jpg"]
    assert "no such file" in manifest["failed"][0]["error"]
    with pytest.raises(BatchError, match="names no images"):
        batch.read_list(tmp_path / "empty.txt") if (tmp_path / "empty.txt").write_text("# nothing\n") else None


def test_shard_spec_and_shard():
    assert batch.shard_spec("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0", "1-2"):
        with pytest.raises(BatchError, match="shard"):
            batch.shard_spec(bad)
    jobs = [batch.Job(Path(f"{i}.jpg"), Path(str(i))) for i in range(10)]
    parts = [batch.shard(jobs, i, 3) for i in range(3)]
    assert sorted(j.source.name for p in parts for j in p) == sorted(j.source.name for j in jobs)
    assert [len(p) for p in parts] == [4, 3, 3]


def test_pipeline_without_workers_gives_same_maps(tmp_path, predictor):
    make_tree(tmp_path / "in", n=5)
    jobs = batch.collect([tmp_path / "in"])
    r1 = batch.run(predictor, jobs, tmp_path / "w0", ("npy",), workers=0, batch_size=2, progress=False)
    r2 = batch.run(predictor, jobs, tmp_path / "w3", ("npy",), workers=3, batch_size=3, progress=False)
    assert len(r1["written"]) == len(r2["written"]) == 5 and r1["complete"] and r2["complete"]
    for p in (tmp_path / "w0").rglob("*.npy"):
        assert np.array_equal(np.load(p), np.load(tmp_path / "w3" / p.relative_to(tmp_path / "w0")))


def _ctrl_c_at_second_batch(predictor, monkeypatch) -> None:
    """The network raises KeyboardInterrupt on its second call, as Ctrl-C during it would."""
    calls = {"n": 0}
    real = predictor.small_log_density

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(predictor, "small_log_density", flaky)


def test_interrupted_run_writes_incomplete_manifest(tmp_path, predictor, monkeypatch):
    make_tree(tmp_path / "in", n=4)
    jobs = batch.collect([tmp_path / "in"])
    _ctrl_c_at_second_batch(predictor, monkeypatch)
    manifest = tmp_path / "out" / "manifest.json"
    with pytest.raises(KeyboardInterrupt):
        batch.run(predictor, jobs, tmp_path / "out", ("png",), batch_size=2, progress=False, manifest=manifest)
    report = json.loads(manifest.read_text())
    assert report["complete"] is False and len(report["written"]) == 2
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]


def test_ctrl_c_records_every_map_computed_when_writes_queue_behind_slow_decodes(tmp_path, predictor, monkeypatch):
    """The cause of the old flaky Ctrl-C test: writes shared one pool with decodes, so after Ctrl-C a
    write still queued behind a decode was cancelled (or waited for): maps computed but not written,
    or a stop that hung. Writes have their own threads now and are all written and recorded."""
    import time

    make_tree(tmp_path / "in", n=6)
    jobs = batch.collect([tmp_path / "in"])
    import fastsal.predict

    real_decode = fastsal.predict.load_resized  # what Predictor.read, the one decode step, calls

    def slow_decode(*a, **k):
        time.sleep(0.3)
        return real_decode(*a, **k)

    monkeypatch.setattr(fastsal.predict, "load_resized", slow_decode)
    _ctrl_c_at_second_batch(predictor, monkeypatch)
    manifest = tmp_path / "out" / "manifest.json"
    with pytest.raises(KeyboardInterrupt):
        batch.run(predictor, jobs, tmp_path / "out", ("png",), batch_size=2, workers=1, progress=False,
                  manifest=manifest)
    report = json.loads(manifest.read_text())
    assert report["complete"] is False and report["stopped_by"] == "Ctrl-C" and len(report["written"]) == 2
    assert len(list((tmp_path / "out").rglob("*.png"))) == 2


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (7, 1), (37, 53), (3000, 700)])  # 3000x700: three strips
def test_gray_png_decodes_to_the_same_pixels(shape):
    import io

    from fastsal.files import gray_png

    values = np.random.default_rng(shape[0] * 100 + shape[1]).integers(0, 256, shape, dtype=np.uint8)
    values[0, 0], values[-1, -1] = 0, 255  # 'Up' differences must wrap modulo 256
    with Image.open(io.BytesIO(gray_png(values))) as img:  # PIL as the reference decoder (checks CRCs too)
        assert img.mode == "L" and img.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(img), values)
    with pytest.raises(ValueError, match="uint8"):
        gray_png(values.astype(np.float32))


def test_png_output_is_the_scaled_npy_map(tmp_path):
    make_tree(tmp_path / "in", n=3)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--format", "png", "--npy", *FAST]) == 0
    for npy in out.rglob("*.npy"):
        prob = np.load(npy)
        with Image.open(npy.with_suffix(".png")) as img:
            np.testing.assert_array_equal(np.asarray(img), fastsal.to_png(prob))


def test_killed_run_binds_its_settings_before_the_first_map(tmp_path, capsys):
    """Issue 23 item 4: `predict big/ -o mix --model fastsal_a` killed with SIGKILL after a few maps
    (before any end-of-run manifest), then rerun with another model: refused with one line, not
    "N already done" beside maps of the other model."""
    import os
    import signal
    import subprocess
    import sys
    import time

    big = tmp_path / "big"
    big.mkdir()
    rng = np.random.default_rng(0)
    for i in range(400):  # far more than are done before the kill
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(big / f"img{i:03d}.png")
    mix = tmp_path / "mix"
    cmd = [sys.executable, "-m", "fastsal", "predict", str(big), "-o", str(mix), "--model", "fastsal_a",
           "--backend", "torch", "--batch-size", "1", "--workers", "0", *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 240
        while len(list(mix.glob("img*.png"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode(errors="replace")[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(mix.glob("img*.png"))
    assert 3 <= len(done) < 400
    manifest = json.loads((mix / "manifest.json").read_text())
    assert manifest["settings"]["model"] == "fastsal_a" and manifest["complete"] is False

    before = {p: p.read_bytes() for p in done}
    assert main(["predict", str(big), "-o", str(mix), "--backend", "torch", *FAST]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsal: error: ") and "other settings" in err[0]
    assert "fastsal_a" in err[0] and "--overwrite" in err[0]
    assert {p: p.read_bytes() for p in done} == before  # nothing touched
    batch.check_settings(mix, manifest["settings"])  # the same settings resume where the killed run stopped


def test_a_stopped_overwrite_run_is_not_resumed_as_done(tmp_path, predictor, monkeypatch):
    """An --overwrite run stopped midway leaves old and new maps side by side; a plain rerun must
    not take the old ones as done."""
    jobs = batch.collect([p.parent.parent for p in make_tree(tmp_path / "in")[:1]])
    out = tmp_path / "out"
    batch.run(predictor, jobs, out, ("png",), progress=False, manifest=batch.manifest_path(out))
    calls = []

    def stop(*a, **k):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "gray_png", stop)
    with pytest.raises(KeyboardInterrupt):
        batch.run(predictor, jobs, out, ("png",), overwrite=True, progress=False, workers=0,
                  manifest=batch.manifest_path(out))
    assert calls
    monkeypatch.undo()
    with pytest.raises(BatchError, match="an overwrite run stopped") as info:
        batch.run(predictor, jobs, out, ("png",), progress=False, manifest=batch.manifest_path(out))
    assert "an --overwrite run stopped" in cli_message(info.value)  # the command line names the flag
    batch.run(predictor, jobs, out, ("png",), overwrite=True, progress=False, manifest=batch.manifest_path(out))
    assert batch.run(predictor, jobs, out, ("png",), progress=False,
                     manifest=batch.manifest_path(out))["skipped_existing"] == len(jobs)
