"""Backends: every engine gives PyTorch's maps at fp32 on any CPU; reduced precision only when asked;
auto falls back with a note; exported files load; a fresh machine with an empty cache works."""
import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import randomise

import fastsal
from fastsal import defaults, quantize
from fastsal.cpu import isa_level, supports_bf16
from fastsal.export import ExportError, export, read_sidecar
from fastsal.models import build, save_checkpoint
from fastsal.predict import example_image
from fastsal.runtime import EngineError, EngineNotice, Runner, cache_dir, candidates, load_runner
from fastsal.runtime import build as runtime_build
from fastsal.runtime import engines as runtime_engines

RUNTIMES = [b for b in ("onnxruntime", "openvino") if runtime_engines.installed(b)]
# fp32 maps from every engine equal PyTorch's to float32 rounding: the largest difference measured,
# relative to the map's peak, is ~2e-6 (fp32 arithmetic in another order), on AVX2 and AVX-512-BF16
# CPUs alike. bf16 (OpenVINO's default on BF16 CPUs) moved them by 2e-2: 200x the tolerance.
MAP_RTOL = defaults.FP32_MAP_RTOL


@pytest.fixture(scope="module")
def torch_predictor():
    return fastsal.load(backend="torch", threads=1)


def images():
    return [example_image(), np.random.default_rng(0).integers(0, 256, (61, 83, 3), dtype=np.uint8)]


@pytest.mark.parametrize("backend", RUNTIMES)
@pytest.mark.parametrize("size", [(192, 256), (100, 150)])  # 100x150: resized to 96x160 around the graph
def test_runtime_maps_match_torch(backend, size, torch_predictor):
    runtime = fastsal.load(backend=backend, threads=1, input_size=size)
    assert runtime.backend == backend and runtime.precision == "fp32"
    assert isinstance(runtime.runner, Runner)
    torch_predictor.input_size = size
    for ref, got in zip(torch_predictor.predict_batch(images()), runtime.predict_batch(images(), batch_size=2)):
        assert got.shape == ref.shape and got.dtype == np.float32
        assert np.abs(got - ref).max() < MAP_RTOL * ref.max(), f"{backend} on a {isa_level()} CPU"


@pytest.mark.skipif(not runtime_engines.installed("openvino"), reason="openvino not installed")
def test_openvino_is_compiled_in_f32_whatever_the_cpu():
    """OpenVINO's CPU plugin defaults to bf16 on BF16/AMX CPUs; fp32 must be asked for and kept."""
    p = fastsal.load(backend="openvino", threads=1)
    request, _ = p.runner.compiled[1]
    hint = str(request.get_compiled_model().get_property("INFERENCE_PRECISION_HINT")).lower()
    assert "f32" in hint or "float32" in hint


def test_candidates_and_fallback_order(monkeypatch):
    assert candidates("auto")[0] == [b for b in defaults.ENGINES if runtime_engines.installed(b)]
    assert candidates("torch") == (["torch"], [])
    with pytest.raises(EngineError, match="unknown backend 'tensorrt'"):
        candidates("tensorrt")
    with pytest.raises(EngineError, match="no bf16 mode"):
        candidates("onnxruntime", "bf16")
    with pytest.raises(EngineError, match="unknown precision"):
        candidates("auto", "fp8")
    monkeypatch.setattr(runtime_engines, "installed", lambda b: b == "torch")
    assert candidates("auto") == (["torch"], [])
    engines, notes = candidates("openvino")
    assert engines == ["torch"] and "pip install 'fastsal[openvino]'" in notes[0] and "\n" not in notes[0]
    with pytest.raises(EngineError, match="no other engine runs int8"):
        candidates("openvino", "int8")


def test_missing_backend_falls_back_with_notice(monkeypatch):
    monkeypatch.setattr(runtime_engines, "installed", lambda b: b == "torch")
    with pytest.warns(EngineNotice, match="'onnxruntime' is not installed; using 'torch'"):
        p = fastsal.load(backend="onnxruntime", threads=1)
    assert p.backend == "torch"


@pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")
def test_auto_moves_on_when_an_engine_cannot_prepare_the_model(monkeypatch):
    first = candidates("auto")[0][0]
    real = runtime_build.make_runner

    def broken(model, engine, *a, **k):
        if engine == first:
            raise RuntimeError(f"{engine} exploded\nsecond line")
        return real(model, engine, *a, **k)

    monkeypatch.setattr(runtime_build, "make_runner", broken)
    with pytest.warns(EngineNotice) as caught:
        p = fastsal.load(threads=1)
    assert p.backend != first
    note = str(caught[0].message)
    assert f"{first} could not prepare the model ({first} exploded)" in note and "\n" not in note
    assert f"using {p.backend} instead" in note
    with pytest.raises(RuntimeError, match="exploded"):  # a named engine reports its own failure
        fastsal.load(backend=first, threads=1)


@pytest.mark.skipif(supports_bf16(), reason="this CPU has bf16: the refusal is tested by monkeypatching below")
def test_bf16_is_refused_on_cpus_without_it():
    with pytest.raises(EngineError, match="AVX512_BF16 or AMX"):
        fastsal.load(precision="bf16")


def test_bf16_refusal_names_the_cpu(monkeypatch):
    monkeypatch.setattr(runtime_engines, "supports_bf16", lambda: False)
    with pytest.raises(EngineError, match=r"precision 'bf16' needs a CPU with AVX512_BF16 or AMX \(this one has"):
        fastsal.load(precision="bf16", backend="torch")


@pytest.mark.skipif(not supports_bf16(), reason="needs a CPU with AVX512_BF16 or AMX")
@pytest.mark.parametrize("backend", ["torch", *(["openvino"] if runtime_engines.installed("openvino") else [])])
def test_bf16_is_close_but_not_exact(backend, torch_predictor):
    p = fastsal.load(backend=backend, precision="bf16", threads=1)
    torch_predictor.input_size = p.input_size
    assert p.precision == "bf16"
    ref, got = torch_predictor.predict(example_image()), p.predict(example_image())
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.99
    assert np.abs(got - ref).max() > MAP_RTOL * ref.max()  # it really computed in bf16


@pytest.mark.parametrize("backend", RUNTIMES)
def test_int8_uses_the_shipped_calibration(backend, torch_predictor):
    if not (runtime_engines.installed("onnxruntime") and importlib.util.find_spec("onnx")) \
            and not (backend == "openvino" and quantize.installed("nncf")):
        pytest.skip("int8 needs NNCF (OpenVINO) or onnxruntime's quantiser")
    p = fastsal.load(backend=backend, precision="int8", threads=1)
    torch_predictor.input_size = p.input_size
    assert p.precision == "int8" and p.settings()["precision"] == "int8"
    ref, got = torch_predictor.predict(example_image()), p.predict(example_image())
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.98
    with pytest.raises(EngineError, match="no int8 mode"):
        fastsal.load(backend="torch", precision="int8")


def test_device_errors_are_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(EngineError, match="no CUDA GPU is available"):
        fastsal.load(device="cuda")
    with pytest.raises(EngineError, match="unknown device"):
        fastsal.load(device="tpu:x")


def test_engine_errors_name_the_keyword_and_the_command_line_names_the_flag(monkeypatch):
    """The runtime's errors carry their parameter (option=): Python callers read the keyword, the
    command line the flag it renders (fastsal.cli.cli_message)."""
    from fastsal.cli import cli_message

    with pytest.raises(EngineError) as info:
        candidates("openvino", "int8", "cuda:0" if not torch.cuda.is_available() else "mps")
    assert info.value.option in ("device", "backend")
    assert f"use {info.value.option} " in str(info.value) and f"use --{info.value.option} " in cli_message(info.value)
    monkeypatch.setattr(runtime_engines, "supports_bf16", lambda: True)  # past the CPU check, to the engine's
    with pytest.raises(EngineError) as info:
        candidates("onnxruntime", "bf16")
    assert "use backend openvino or torch for bf16" in str(info.value)
    assert "use --backend openvino or torch for bf16" in cli_message(info.value)


@pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")
def test_cache_is_reused_and_keyed_by_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    backend = RUNTIMES[0]
    model = randomise(build("fastsal_bare"), seed=1)
    ckpt = save_checkpoint(model, "fastsal_bare", tmp_path / "m.pt")
    fastsal.load(ckpt, backend=backend, threads=1, input_size=(64, 96))
    files = sorted(p for p in (tmp_path / "cache").glob("fastsal_bare-*") if p.suffix in (".onnx", ".xml"))
    assert len(files) == 1 and files[0].name.endswith("-fp32" + files[0].suffix)
    stamp = files[0].stat().st_mtime_ns
    fastsal.load(ckpt, backend=backend, threads=1, input_size=(64, 96))   # same weights: reused
    fastsal.load(ckpt, backend=backend, threads=1, input_size=(96, 64))   # another size: the same free-size file
    assert files[0].stat().st_mtime_ns == stamp
    assert len([p for p in (tmp_path / "cache").glob("fastsal_bare-*") if p.suffix in (".onnx", ".xml")]) == 1
    with torch.no_grad():
        model.decoder.head.bias += 1.0
    fastsal.load(save_checkpoint(model, "fastsal_bare", tmp_path / "m.pt"), backend=backend, threads=1, input_size=(64, 96))
    again = [p for p in (tmp_path / "cache").glob("fastsal_bare-*") if p.suffix in (".onnx", ".xml")]
    assert len(again) == 2  # new weights: a new file, never a stale one
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]  # no temporaries left


@pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")
def test_unwritable_cache_still_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(EngineNotice, match="not writable"):
        p = fastsal.load(backend=RUNTIMES[0], threads=1)
    assert p.predict(example_image()).shape == (600, 800)


@pytest.mark.skipif(not runtime_engines.installed("openvino"), reason="openvino not installed")
def test_openvino_ir_export_round_trip(tmp_path):
    model = randomise(build("fastsal_c"), seed=2)
    path = export(model, "fastsal_c", tmp_path / "c.xml", format="openvino", input_size=(64, 96))
    side = read_sidecar(path)
    assert side["export_format"] == "openvino" and list(side["extra_files"]) == ["c.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.bin", "c.xml", "c.xml.json"]
    run = load_runner(path, threads=1)
    assert run.backend == "openvino" and run.precision == "fp32"
    x = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    assert np.abs(run(x) - ref).max() < 1e-4 * np.abs(ref).max()
    with pytest.raises(EngineError, match=r"runs on openvino, not 'onnxruntime'"):
        load_runner(path, backend="onnxruntime")
    with open(tmp_path / "c.bin", "ab") as fh:  # the weights file is covered by the sidecar too
        fh.write(b"\0")
    with pytest.raises(ExportError, match="c.bin: SHA-256"):
        read_sidecar(path)
    with pytest.raises(ExportError, match=r"\.xml"):
        export(model, "fastsal_c", tmp_path / "c.onnx", format="openvino", input_size=(64, 96))


@pytest.mark.skipif(not (runtime_engines.installed("openvino") and runtime_engines.installed("onnxruntime")), reason="needs both")
def test_onnx_file_runs_on_openvino(tmp_path):
    model = randomise(build("fastsal_a"), seed=3)
    path = export(model, "fastsal_a", tmp_path / "a.onnx", input_size=(64, 96), dynamic_batch=True)
    x = np.random.default_rng(1).random((3, 3, 64, 96), dtype=np.float32)
    ort_out = load_runner(path, "onnxruntime", threads=1)(x)
    ov_out = load_runner(path, "openvino", threads=1)(x)
    assert np.abs(ov_out - ort_out).max() < 1e-4 * np.abs(ort_out).max()


@pytest.mark.skipif(not RUNTIMES, reason="no graph runtime installed")
@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("openvino", ".xml")])
def test_exported_file_loads_like_a_checkpoint(tmp_path, fmt, suffix, torch_predictor):
    if fmt == "onnx" and not runtime_engines.installed("onnxruntime") or fmt == "openvino" and not runtime_engines.installed("openvino"):
        pytest.skip(f"{fmt} runtime not installed")
    from fastsal.models import load_model, shipped_weights

    model, meta = load_model(shipped_weights(defaults.MODEL))
    path = export(model, model.name, tmp_path / f"m{suffix}", format=fmt, dynamic_batch=True, meta=meta)
    p = fastsal.load(path, threads=1)
    assert p.name == defaults.MODEL and p.blur_sigma == meta["blur_sigma"] and p.input_size == defaults.INPUT_SIZE
    torch_predictor.input_size = p.input_size
    ref, got = torch_predictor.predict(example_image()), p.predict(example_image())
    assert np.abs(got - ref).max() < MAP_RTOL * ref.max()
    assert p.settings()["weights_sha256"] == torch_predictor.settings()["weights_sha256"]


def test_predictor_repr_and_threads_validation():
    with pytest.raises(ValueError, match="threads"):
        fastsal.load(threads=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EngineNotice)  # auto never warns when the first engine works
        p = fastsal.load(threads=1)
    assert f"backend={p.backend!r}" in repr(p) and "precision='fp32'" in repr(p)
    assert Path(os.environ["FASTSAL_CACHE_DIR"]).is_dir() or p.backend == "torch"


def test_default_predict_works_with_an_empty_home_and_cache(tmp_path):
    """The README quickstart on a fresh account: nothing cached, nothing in HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTSAL_", "XDG_"))}
    for var in ("HOME", "XDG_CACHE_HOME", "FASTSAL_CACHE_DIR"):
        (tmp_path / var).mkdir()
        env[var] = str(tmp_path / var)
    out = tmp_path / "maps"
    res = subprocess.run([sys.executable, "-m", "fastsal", "predict", "-o", str(out), "-q"], env=env,
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    png = Path(res.stdout.strip().splitlines()[-1])
    assert png.is_file() and png.stat().st_size > 1000
    cached = list((tmp_path / "FASTSAL_CACHE_DIR").iterdir())
    assert cached or candidates("auto")[0][0] == "torch"  # the graph engine converted into the empty cache
