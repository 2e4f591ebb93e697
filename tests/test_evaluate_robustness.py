"""``fastsal evaluate``: meaningless maps are refused naming the file, options are bounded, and
unwritable outputs or a missing matplotlib fail before the scoring starts."""
import importlib.util
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

import fastsal.data.datasets
import fastsal.evaluate as E
from fastsal.cli import main
from fastsal.data.datasets import DatasetError, load_osie


@pytest.fixture(scope="module")
def val2(osie_root):
    return load_osie(osie_root, "val")[:2]


def _write_maps(folder, samples, bad_map, bad_suffix=".npy"):
    """A good map for the first sample, ``bad_map`` for the second; returns the bad file's path."""
    folder.mkdir(exist_ok=True)
    yy, xx = np.mgrid[0:600, 0:800]
    np.save(folder / f"{samples[0].name[:-4]}.npy", np.exp(-((xx - 400) ** 2 + (yy - 300) ** 2) / 2e4))
    bad = folder / f"{samples[1].name[:-4]}{bad_suffix}"
    if bad_suffix == ".npy":
        np.save(bad, bad_map)
    else:
        Image.fromarray(bad_map).save(bad)
    return bad


def _run(capsys, *args):
    code = main(["evaluate", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _error_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _centre(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / (2 * (w / 6) ** 2))


def _with_nan():
    m = _centre(600, 800)
    m[10, 10] = np.nan
    return m


def _with_negative():
    m = _centre(600, 800)
    m[5, 5] = -0.25
    return m


BAD_MAPS = {
    "nan": (_with_nan(), ".npy", "saliency map contains NaN or inf; re-save it with finite values"),
    "inf": (np.full((600, 800), np.inf), ".npy", "saliency map contains NaN or inf"),
    "negative": (_with_negative(), ".npy",
                 "saliency map has negative values (min -0.25); save non-negative saliency (probabilities or 0..255), "
                 "not log-densities"),
    "empty": (np.zeros((0, 0)), ".npy", "saliency map is empty (shape (0, 0)); re-save it at the image's size"),
    "zeros_npy": (np.zeros((600, 800)), ".npy", "saliency map is all zeros, so it predicts nothing; re-export it"),
    "zeros_png": (np.zeros((600, 800), dtype=np.uint8), ".png", "saliency map is all zeros"),
    "transposed": (_centre(800, 600), ".npy",
                   "map shape 800x600 (HxW) does not fit the image's 600x800 (transposed?); "
                   "save maps at the image's size or aspect ratio"),
    "aspect": (_centre(600, 600), ".npy", "map shape 600x600 (HxW) does not fit the image's 600x800; "),
    "aspect_png": ((_centre(300, 420) * 255).astype(np.uint8), ".png", "map shape 300x420 (HxW) does not fit"),
    "complex": (np.ones((600, 800), dtype=complex), ".npy", "saliency map has dtype complex128"),
}


@pytest.mark.parametrize("case", sorted(BAD_MAPS))
def test_bad_maps_name_the_file(osie_root, val2, tmp_path, capsys, case):
    bad_map, suffix, message = BAD_MAPS[case]
    bad = _write_maps(tmp_path / "maps", val2, bad_map, suffix)
    with pytest.raises(DatasetError) as info:  # the library
        E.evaluate(val2, {"m": E.maps_from_folder(tmp_path / "maps", val2)}, baselines=["uniform"],
                   metrics=["nss", "kld"], progress=False)
    assert str(info.value).startswith(f"{bad}: {message}")
    code, out, err = _run(capsys, "--maps", str(tmp_path / "maps"), "--root", str(osie_root), "--split", "val",
                          "--limit", "2", "--no-gold", "--metrics", "nss", "kld", "-q")
    assert code == 2 and _error_line(err).startswith(f"fastsal: error: {bad}: {message}")


def test_same_aspect_other_resolution_is_resized(val2, tmp_path):
    folder = tmp_path / "maps"
    _write_maps(folder, val2, _centre(600, 800))
    np.save(folder / f"{val2[1].name[:-4]}.npy", _centre(200, 267))  # 800x600 / 3, rounded: 0.1 % off
    report = E.evaluate(val2, {"m": E.maps_from_folder(folder, val2)}, baselines=["uniform"], metrics=["nss", "cc"],
                        progress=False)
    assert report["results"]["m"]["nss"]["mean"] > report["results"]["uniform"]["nss"]["mean"]


def test_check_map_for_any_source(val2):
    zeros = {"zeros": lambda s: np.zeros(s.shape)}
    with pytest.raises(DatasetError, match=rf"^zeros: map for {val2[0].name}: saliency map is all zeros"):
        E.evaluate(val2, zeros, baselines=["uniform"], metrics=["kld"], progress=False)
    with pytest.raises(E.EvaluateError, match="unknown metric 'nope'"):
        E.evaluate(val2, {}, metrics=["nope"], progress=False)
    with pytest.raises(E.EvaluateError, match="unknown baseline 'nope'"):
        E.evaluate(val2, {}, baselines=["nope"], progress=False)


@pytest.mark.parametrize("args, message", [
    (["--limit", "0"], "argument --limit: expected a whole number >= 1, got '0'"),
    (["--limit", "-1"], "argument --limit: expected a whole number >= 1, got '-1'"),
    (["--blur", "nan"], "argument --blur: expected a number of pixels in 0..50, got 'nan'"),
    (["--blur", "-1"], "argument --blur: expected a number of pixels in 0..50, got '-1'"),
    (["--blur", "1e9"], "argument --blur: expected a number of pixels in 0..50, got '1e9'"),
    (["--input-size", "16x16"], "argument --input-size: each side must be in 32..2048, got '16x16'"),
    (["--input-size", "192x4096"], "argument --input-size: each side must be in 32..2048, got '192x4096'"),
    (["--threads", "0"], "argument --threads: expected a whole number >= 1, got '0'"),
    (["--threads", "99999"], "argument --threads: 99999 exceeds"),
    (["--max-pixels", "0"], "argument --max-pixels: expected a whole number >= 1, got '0'"),
])
def test_cli_bounds(capsys, tmp_path, args, message):
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "--root", str(tmp_path), *args])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"fastsal evaluate: error: {message}")


@pytest.fixture
def no_evaluation(monkeypatch):
    """Output checks must come before the dataset is read (minutes on a full split)."""
    def fail(*args, **kwargs):
        raise AssertionError("the dataset was read before the output check")

    monkeypatch.setattr(fastsal.data.datasets, "load_dataset", fail)


@pytest.mark.parametrize("option", ["--json", "--plot"])
def test_unwritable_outputs_fail_first(tmp_path, capsys, no_evaluation, option):
    (tmp_path / "file").write_text("x")
    base = ["--maps", str(tmp_path), "--root", str(tmp_path)]
    code, _, err = _run(capsys, *base, option, str(tmp_path))
    assert code == 2 and _error_line(err) == (f"fastsal: error: {option} {tmp_path}: is a folder; "
                                              f"pass a file name such as {tmp_path / 'report.json'}")
    code, _, err = _run(capsys, *base, option, str(tmp_path / "file" / "r.out"))
    assert code == 2 and _error_line(err) == (f"fastsal: error: {option} {tmp_path / 'file' / 'r.out'}: "
                                              f"{tmp_path / 'file'} is a file, not a folder; pass another path")


def test_read_only_output_fails_first(tmp_path, capsys, no_evaluation):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None:
            pytest.skip("needs mount(8) to make a read-only folder as root")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)]).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro.chmod(0o555)
    try:
        code, _, err = _run(capsys, "--maps", str(tmp_path), "--root", str(tmp_path), "--json", str(ro / "r.json"))
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)
        else:
            ro.chmod(0o755)
    assert code == 2
    assert re.fullmatch(rf"fastsal: error: --json {re.escape(str(ro / 'r.json'))}: cannot write in "
                        rf"{re.escape(str(ro))} \((Read-only file system|Permission denied)\); pass a writable path",
                        _error_line(err))


def test_plot_without_matplotlib_fails_first(tmp_path, capsys, monkeypatch, no_evaluation):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    code, _, err = _run(capsys, "--maps", str(tmp_path), "--root", str(tmp_path), "--plot", str(tmp_path / "g.png"))
    assert code == 2
    assert _error_line(err) == "fastsal: error: --plot needs matplotlib: pip install 'fastsal[plot]'"


def test_max_pixels_option_applies_and_is_reset(osie_root, val2, tmp_path, capsys):
    from fastsal import images

    _write_maps(tmp_path / "maps", val2, _centre(600, 800))
    code, _, err = _run(capsys, "--maps", str(tmp_path / "maps"), "--root", str(osie_root), "--split", "val",
                        "--limit", "2", "--no-gold", "--metrics", "nss", "--max-pixels", "1000", "-q",
                        "--plot", str(tmp_path / "g.png"))
    assert code == 2 and "800x600 = 0.48 MP exceeds the 0.001 MP limit" in _error_line(err)
    assert images.max_pixels() == images.DEFAULT_MAX_PIXELS
