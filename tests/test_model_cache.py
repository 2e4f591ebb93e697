"""The model cache and exported files (issue 22 items 1-2, issue 23 item 16).

- an exported file runs like the checkpoint: the weights' own size, free H/W, the aspect rule in
  its sidecar (it used to be 192x256, stretched: OSIE-test NSS 2.41 against 3.28);
- one conversion per weights, not one per input shape, announced on stderr; the cache has a
  size limit (least recently used out) and ``fastsal cache list|clear``;
- a cached graph is bound to the weights: a file changed together with its sidecar's SHA-256 is
  detected; a cache folder other users can write is refused.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomise

import fastsal
from fastsal.cli import main
from fastsal.export import read_sidecar
from fastsal.files import file_lock, file_sha256
from fastsal.models import build, save_checkpoint
from fastsal.predict import example_image
from fastsal.runtime import EngineNotice, cache, engines, runners

RUNTIMES = [e for e in ("openvino", "onnxruntime") if engines.installed(e)]
needs_runtime = pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")


@pytest.fixture
def own_cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(folder))
    monkeypatch.delenv("FASTSAL_CACHE_MAX_MB", raising=False)
    return folder


def _graph_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if p.suffix in (".onnx", ".xml"))


# -- issue 22 item 1: an exported file runs like the checkpoint ---------------------------------------
@pytest.mark.skipif(not engines.installed("openvino"), reason="openvino not installed")
def test_exported_file_scores_like_the_checkpoint_on_osie_test(tmp_path, osie_root, own_cache, capsys):
    """`fastsal export --format openvino` (defaults) and the checkpoint: the same NSS on a fixed
    subset of OSIE test (the full split is measured in the README), within 0.5 %."""
    from fastsal import evaluate as E
    from fastsal.data import load_dataset

    out = tmp_path / "default.xml"
    assert main(["export", "--format", "openvino", "-o", str(out)]) == 0
    side = read_sidecar(out)
    assert side["input_size"] == [384, 512] and side["aspect"] is True and side["dynamic_size"] is True
    assert side["input"]["shape"] == [1, 3, "H", "W"] and "fit_input_size" in side["input"]["resize"]
    samples = load_dataset("osie", osie_root, "test")[::10]  # 10 images, every 10th: deterministic
    ckpt = fastsal.load(backend="openvino", threads=1)
    exported = fastsal.load(out, threads=1)
    assert exported.aspect and exported.input_size == ckpt.input_size == (384, 512)
    scores = {}
    for name, predictor in (("ckpt", ckpt), ("export", exported)):
        report = E.evaluate(samples, {name: E.maps_from_predictor(predictor)}, baselines=(), metrics=["nss"],
                            progress=False)
        scores[name] = report["results"][name]["nss"]["mean"]
    assert scores["ckpt"] > 2.5  # the shipped model, not a stretched or broken one
    assert abs(scores["export"] - scores["ckpt"]) <= 0.005 * scores["ckpt"], scores


def test_fixed_size_export_is_still_available(tmp_path):
    """--static keeps the old contract (one size, stretched) for runtimes that need it."""
    model = randomise(build("fastsal_bare"), seed=3)
    ckpt = save_checkpoint(model, "fastsal_bare", tmp_path / "m.pt")
    if not engines.installed("onnxruntime"):
        pytest.skip("onnxruntime not installed")
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(ckpt), "--static", "--input-size", "64x96", "-o", str(out)]) == 0
    side = read_sidecar(out)
    assert side["dynamic_size"] is False and side["aspect"] is False and side["input"]["shape"] == [1, 3, 64, 96]
    assert fastsal.load(out, threads=1).aspect is False


# -- issue 22 item 2: one conversion for every shape, a note, a bounded cache ----------------------------
@needs_runtime
@pytest.mark.parametrize("engine", RUNTIMES)
def test_one_conversion_serves_every_input_shape(tmp_path, own_cache, engine, capfd, monkeypatch):
    """Images of three aspects: one graph file in the cache (there used to be one per shape),
    maps equal to PyTorch's, and a note on stderr while the one conversion runs."""
    from fastsal import export as E

    calls = []
    real = E.export
    monkeypatch.setattr(E, "export", lambda *a, **k: calls.append(a[3] if len(a) > 3 else k.get("format")) or real(*a, **k))
    model = randomise(build("fastsal_bare"), seed=4)
    ckpt = save_checkpoint(model, "fastsal_bare", tmp_path / "m.pt")
    p = fastsal.load(ckpt, backend=engine, threads=1, input_size=(64, 96), aspect=True)
    ref = fastsal.load(ckpt, backend="torch", threads=1, input_size=(64, 96), aspect=True)
    rng = np.random.default_rng(0)
    for shape in ((60, 80), (80, 60), (45, 160)):
        rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        got, want = p.predict(rgb), ref.predict(rgb)
        assert np.abs(got - want).max() <= 1e-4 * want.max()
    assert len(p._by_size) == 2  # three input shapes were run
    assert len(calls) == 1 and len(_graph_files(own_cache)) == 1
    err = capfd.readouterr().err
    assert err.count("fastsal: converting fastsal_bare") == 1 and " done in " in err


def _fake_entry(folder: Path, name: str, mb: float, age_s: float) -> Path:
    main_file = folder / name
    main_file.parent.mkdir(parents=True, exist_ok=True)
    main_file.write_bytes(b"\0" * int(mb * 2**20))
    side = main_file.with_name(main_file.name + ".json")
    side.write_text("{}")
    stamp = time.time() - age_s
    for f in (main_file, side):
        os.utime(f, (stamp, stamp))
    return main_file


def test_cache_keeps_under_its_limit_least_recently_used_out(own_cache, monkeypatch):
    monkeypatch.setenv("FASTSAL_CACHE_MAX_MB", "3.5")  # four entries of 1 MB: one must go
    busy = _fake_entry(own_cache, "openvino/abc.blob", 1, age_s=400)
    old = _fake_entry(own_cache, "m-1-fp32.onnx", 1, age_s=300)
    mid = _fake_entry(own_cache, "m-2-fp32.onnx", 1, age_s=200)
    new = _fake_entry(own_cache, "m-3-fp32.onnx", 1, age_s=100)
    cache.touch(mid)  # used just now: the most recent
    with file_lock(busy.with_name(busy.name + ".lock")):  # another process is reading it: kept
        removed = cache.prune(own_cache, keep=new)
    assert [e.main for e in removed] == [old]
    assert not old.exists() and not old.with_name(old.name + ".json").exists()
    assert busy.exists() and mid.exists() and new.exists()
    monkeypatch.setenv("FASTSAL_CACHE_MAX_MB", "2.5")
    removed = cache.prune(own_cache, keep=new)  # the lock is free now: the least recently used goes
    assert [e.main for e in removed] == [busy] and mid.exists()
    monkeypatch.setenv("FASTSAL_CACHE_MAX_MB", "-1")
    with pytest.raises(cache.CacheError, match="FASTSAL_CACHE_MAX_MB"):
        cache.prune(own_cache)


@needs_runtime
def test_a_real_cache_is_pruned_after_a_conversion(tmp_path, own_cache, monkeypatch):
    monkeypatch.setenv("FASTSAL_CACHE_MAX_MB", "0.001")  # smaller than any graph: only the newest stays
    stale = _fake_entry(own_cache, "old-0-fp32.onnx", 0.01, age_s=1000)
    ckpt = save_checkpoint(randomise(build("fastsal_bare"), seed=5), "fastsal_bare", tmp_path / "m.pt")
    p = fastsal.load(ckpt, backend=RUNTIMES[0], threads=1, input_size=(64, 96))
    assert not stale.exists() and len(_graph_files(own_cache)) == 1
    assert p.predict(example_image()).shape == (600, 800)


def test_cache_list_and_clear(own_cache, capsys):
    _fake_entry(own_cache, "m-1-fp32.xml", 0.5, age_s=50)
    weights = own_cache / "m-1-fp32.bin"
    weights.write_bytes(b"\0" * 2**20)
    os.utime(weights, (time.time() - 50, time.time() - 50))
    _fake_entry(own_cache, "openvino/abc.blob", 0.25, age_s=10)
    assert main(["cache", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("compiled") and "openvino/abc.blob" in lines[0]  # most recently used first
    assert lines[1].startswith("openvino-ir") and "1.5 MB" in lines[1]
    assert lines[-1].startswith("2 entries, 1.8 MB of 1024 MB")
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out.startswith("removed 2 entries (1.8 MB)")
    assert not [p for p in own_cache.rglob("*") if p.is_file()]


@pytest.mark.parametrize("argv", [["cache", "--help"], ["cache", "list"]])
def test_cache_command_runs_without_torch(argv, tmp_path):
    code = ("import sys\nfrom fastsal.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(rc, ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'openvino', 'onnxruntime'))))")
    env = {**os.environ, "FASTSAL_CACHE_DIR": str(tmp_path / "c")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    rc, _, mods = res.stdout.strip().splitlines()[-1].partition(" ")
    assert int(rc) == 0 and not mods.split(), res.stdout + res.stderr


# -- issue 23 item 16: the cache is bound to the weights and private -----------------------------------
def _tamper(path: Path) -> None:
    """Scale the largest float32 weights of a cached graph by 1.5, a valid graph still, and record
    the new SHA-256 in its sidecar, as someone who can write the cache could."""
    side_path = path.with_name(path.name + ".json")
    side = json.loads(side_path.read_text())
    if path.suffix == ".xml":  # the IR names each constant's bytes in the .bin
        import xml.etree.ElementTree as ET

        consts = [d.attrib for d in ET.parse(path).iter("data") if d.attrib.get("element_type") == "f32"
                  and "offset" in d.attrib]
        big = max(consts, key=lambda a: int(a["size"]))
        start, size = int(big["offset"]), int(big["size"])
        weights = path.with_suffix(".bin")
        data = bytearray(weights.read_bytes())
        data[start:start + size] = (np.frombuffer(bytes(data[start:start + size]), np.float32) * 1.5).tobytes()
        weights.write_bytes(bytes(data))
        side["extra_files"][weights.name] = file_sha256(weights)
    else:
        import onnx
        from onnx import numpy_helper

        model = onnx.load(str(path))
        big = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else 0)
        big.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(big) * np.float32(1.5), big.name))
        onnx.save(model, str(path))
        side["file_sha256"] = file_sha256(path)
    side_path.write_text(json.dumps(side))
    read_sidecar(path)  # the sidecar check alone is satisfied


@needs_runtime
@pytest.mark.parametrize("engine", RUNTIMES)
def test_a_graph_changed_with_its_sidecar_is_detected(tmp_path, own_cache, engine):
    ckpt = save_checkpoint(randomise(build("fastsal_bare"), seed=6), "fastsal_bare", tmp_path / "m.pt")
    ref = fastsal.load(ckpt, backend="torch", threads=1, input_size=(64, 96)).predict(example_image())
    fastsal.load(ckpt, backend=engine, threads=1, input_size=(64, 96))
    (graph,) = _graph_files(own_cache)
    _tamper(graph)
    with pytest.warns(EngineNotice, match=r"did not reproduce the weights' output .* converted it again"):
        p = fastsal.load(ckpt, backend=engine, threads=1, input_size=(64, 96))
    got = p.predict(example_image())
    assert np.abs(got - ref).max() <= 1e-4 * ref.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineNotice)  # the rebuilt file is used as it is
        fastsal.load(ckpt, backend=engine, threads=1, input_size=(64, 96))


@needs_runtime
def test_a_cache_folder_others_can_write_is_refused(tmp_path, own_cache, capsys):
    if os.name != "posix":
        pytest.skip("POSIX permissions")
    own_cache.mkdir()
    own_cache.chmod(0o777)
    with pytest.raises(cache.CacheError, match=r"cache folder .* is writable by other users.*chmod go-w"):
        fastsal.load(backend=RUNTIMES[0], threads=1)
    assert main(["predict", str(example_image()), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsal: error: cache folder") and "chmod go-w" in err[0]
    assert not list(own_cache.iterdir())  # nothing was read from it or written to it
    own_cache.chmod(0o700)
    assert fastsal.load(backend="torch", threads=1).predict(example_image()).shape == (600, 800)


def test_a_new_cache_folder_is_private(own_cache):
    folder = cache.writable_cache()
    assert folder == own_cache and (own_cache.stat().st_mode & 0o077) == 0


def test_the_torch_reference_of_the_probe_leaves_the_model_in_its_mode():
    model = randomise(build("fastsal_bare"), seed=7).train()
    ref = runners.reference_logits(model)
    out = ref(np.zeros((1, 3, 64, 64), np.float32))
    assert model.training and out.shape == (1, 1, 64, 64)
    assert torch.is_grad_enabled()


@pytest.mark.skipif(not engines.installed("openvino"), reason="openvino not installed")
def test_a_compiled_model_swapped_with_its_sidecar_is_detected(tmp_path, own_cache):
    """A valid compiled model of other weights under this one's name, its SHA-256 and size in the
    sidecar: the probe against the weights in memory catches it and the blob is rebuilt."""
    a = save_checkpoint(randomise(build("fastsal_bare"), seed=8), "fastsal_bare", tmp_path / "a.pt")
    b = save_checkpoint(randomise(build("fastsal_bare"), seed=9), "fastsal_bare", tmp_path / "b.pt")
    blobs = own_cache / "openvino"
    fastsal.load(a, backend="openvino", threads=1, input_size=(64, 96))
    (blob_a,) = blobs.glob("*.blob")
    fastsal.load(b, backend="openvino", threads=1, input_size=(64, 96))
    (blob_b,) = set(blobs.glob("*.blob")) - {blob_a}
    blob_a.write_bytes(blob_b.read_bytes())
    side_path = blob_a.with_name(blob_a.name + ".json")
    side = json.loads(side_path.read_text())
    side.update(sha256=file_sha256(blob_a), size=blob_a.stat().st_size)
    side_path.write_text(json.dumps(side))
    ref = fastsal.load(a, backend="torch", threads=1, input_size=(64, 96)).predict(example_image())
    with pytest.warns(EngineNotice, match=r"cached compiled model .*\.blob did not reproduce the weights' output"):
        p = fastsal.load(a, backend="openvino", threads=1, input_size=(64, 96))
    assert 1 not in p.runner.imported
    assert np.abs(p.predict(example_image()) - ref).max() <= 1e-4 * ref.max()
