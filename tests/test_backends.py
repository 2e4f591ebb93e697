"""Backends: OpenVINO and ONNX Runtime give PyTorch's maps; backend choice, fallback and the cache."""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsal
from fastsal import backends
from fastsal.backends import BackendNotice, cache_dir, resolve_backend
from fastsal.export import ExportError, export, load_exported, read_sidecar
from fastsal.models import build, save_checkpoint
from fastsal.predict import example_image

from helpers import randomise

RUNTIMES = [b for b in ("onnxruntime", "openvino") if backends.installed(b)]
# Density maps from the graph runtimes equal PyTorch's to float32 rounding: relative to the map's
# peak, the largest difference measured is ~2e-6 (fp32 arithmetic in another order).
MAP_RTOL = 1e-4


@pytest.fixture(scope="module")
def torch_predictor():
    return fastsal.load(backend="torch", threads=1)


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("size", [(192, 256), (100, 150)])  # 100x150: resized to 96x160 around the graph
def test_runtime_maps_match_torch(backend, size, torch_predictor):
    runtime = fastsal.load(backend=backend, threads=1, input_size=size)
    assert runtime.backend == backend
    torch_predictor.input_size = size
    images = [example_image(), np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)]
    for ref, got in zip(torch_predictor.predict_batch(images), runtime.predict_batch(images, batch_size=2)):
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() < MAP_RTOL * ref.max()


def test_resolve_backend(monkeypatch):
    assert resolve_backend("auto")[0] == next(b for b in backends.BACKENDS if backends.installed(b))
    assert resolve_backend("torch") == ("torch", None)
    assert resolve_backend("auto", device="cuda") == ("torch", None)
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("openvino", device="cuda")
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        resolve_backend("tensorrt")
    monkeypatch.setattr(backends, "installed", lambda b: b == "torch")
    assert resolve_backend("auto") == ("torch", None)
    chosen, notice = resolve_backend("openvino")
    assert chosen == "torch" and "pip install 'fastsal[openvino]'" in notice and "\n" not in notice


def test_missing_backend_falls_back_with_notice(monkeypatch):
    monkeypatch.setattr(backends, "installed", lambda b: b == "torch")
    with pytest.warns(BackendNotice, match="'onnxruntime' is not installed; using 'torch'"):
        p = fastsal.load(backend="onnxruntime", threads=1)
    assert p.backend == "torch"


@pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")
def test_cache_is_reused_and_keyed_by_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    backend = RUNTIMES[0]
    model = randomise(build("fastsal_bare"), seed=1)
    ckpt = save_checkpoint(model, "fastsal_bare", tmp_path / "m.pt")
    fastsal.load(ckpt, backend=backend, threads=1, input_size=(64, 96))
    onnx_files = sorted((tmp_path / "cache").glob("*.onnx"))
    assert [p.name.split("-")[0] for p in onnx_files] == ["fastsal_bare"] and "64x96-fp32" in onnx_files[0].name
    stamp = onnx_files[0].stat().st_mtime_ns
    fastsal.load(ckpt, backend=backend, threads=1, input_size=(64, 96))   # same weights and size: reused
    assert sorted((tmp_path / "cache").glob("*.onnx")) == onnx_files and onnx_files[0].stat().st_mtime_ns == stamp
    with torch.no_grad():
        model.decoder.head.bias += 1.0
    fastsal.load(save_checkpoint(model, "fastsal_bare", tmp_path / "m.pt"), backend=backend, threads=1, input_size=(64, 96))
    assert len(list((tmp_path / "cache").glob("*.onnx"))) == 2  # new weights: a new export, never a stale one
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")
def test_unwritable_cache_still_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(BackendNotice, match="not writable"):
        p = fastsal.load(backend=RUNTIMES[0], threads=1)
    assert p.predict(example_image()).shape == (600, 800)


@pytest.mark.skipif(not backends.installed("openvino"), reason="openvino not installed")
def test_openvino_ir_export_round_trip(tmp_path):
    torch.manual_seed(0)
    model = randomise(build("fastsal_c"), seed=2)
    path = export(model, "fastsal_c", tmp_path / "c.xml", format="openvino", input_size=(64, 96))
    side = read_sidecar(path)
    assert side["export_format"] == "openvino" and list(side["extra_files"]) == ["c.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bin", "c.xml", "c.xml.json"]
    run = load_exported(path, threads=1)
    assert run.backend == "openvino"
    x = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(run(x) - ref).max() < 1e-3 * np.abs(ref).max()
    with pytest.raises(ExportError, match=r"runs on openvino, not 'onnxruntime'"):
        load_exported(path, backend="onnxruntime")
    with open(tmp_path / "c.bin", "ab") as fh:  # the weights file is covered by the sidecar too
        fh.write(b"\0")
    with pytest.raises(ExportError, match="c.bin: SHA-256"):
        read_sidecar(path)
    with pytest.raises(ExportError, match=r"\.xml"):
        export(model, "fastsal_c", tmp_path / "c.onnx", format="openvino", input_size=(64, 96))


@pytest.mark.skipif(not backends.installed("openvino"), reason="openvino not installed")
def test_onnx_file_runs_on_openvino(tmp_path):
    model = randomise(build("fastsal_a"), seed=3)
    path = export(model, "fastsal_a", tmp_path / "a.onnx", input_size=(64, 96), dynamic_batch=True)
    x = np.random.default_rng(1).random((3, 3, 64, 96), dtype=np.float32)
    ort_out = load_exported(path, threads=1)(x)
    ov_out = load_exported(path, threads=1, backend="openvino")(x)
    assert np.abs(ov_out - ort_out).max() < 1e-3 * np.abs(ort_out).max()


def test_predictor_repr_and_threads_validation():
    with pytest.raises(ValueError, match="threads"):
        fastsal.load(threads=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendNotice)  # auto never warns
        p = fastsal.load(threads=1)
    assert f"backend={p.backend!r}" in repr(p)
    assert Path(os.environ["FASTSAL_CACHE_DIR"]).is_dir() or p.backend == "torch"
