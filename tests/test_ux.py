"""Small things a user hits (issue 22 item 6): output names, messages, help, JSON, test hygiene,
third-party telemetry."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsal.cli import build_parser, main
from fastsal.predict import example_image

REPO = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--backend", "torch"]


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastsal: error: "), err
    return lines[0]


@pytest.mark.parametrize("name", ["photo.webp", "photo.bmp", "photo.TIFF", "photo.gif"])
def test_image_file_output_with_an_unwritable_suffix_is_refused(tmp_path, capsys, name):
    """`-o photo.webp` used to create a folder named photo.webp and write the map inside it."""
    out = tmp_path / name
    assert main(["predict", str(example_image()), "-o", str(out), *FAST]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert name in line and ".png" in line and ".npy" in line
    assert not out.exists()


def test_existing_folder_with_an_image_suffix_is_still_a_folder(tmp_path):
    out = tmp_path / "maps.webp"
    out.mkdir()
    assert main(["predict", str(example_image()), "-o", str(out), "-q", *FAST]) == 0
    assert (out / "example.png").is_file()


def test_video_to_an_image_file_says_video(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded: the options are refused first")
    assert main(["predict", str(clip), "-o", str(tmp_path / "x.png"), *FAST]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "video" in line and "x.mp4" in line and "exactly one input image" not in line


def test_verbose_states_the_aspect_rule(tmp_path, capsys):
    """-v printed `input 384x512` also for portrait photos, which run at another shape."""
    portrait = tmp_path / "portrait.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 60, 3), dtype=np.uint8)).save(portrait)
    assert main(["predict", str(portrait), "-o", str(tmp_path / "m.png"), "-v", *FAST]) == 0
    err = capsys.readouterr().err
    assert "pixel budget" in err and "aspect" in err
    assert main(["predict", str(portrait), "-o", str(tmp_path / "s.png"), "-v", "--squash", *FAST]) == 0
    assert "pixel budget" not in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino installed")
def test_torchscript_export_does_not_suggest_installing_openvino(tmp_path, capsys):
    from fastsal.export import export
    from fastsal.models import build

    path = export(build("fastsal_c").eval(), "fastsal_c", tmp_path / "c.pt", format="torchscript",
                  input_size=(64, 96))
    assert main(["predict", str(example_image()), "-o", str(tmp_path / "m.png"), "--weights", str(path),
                 "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert "pip install 'fastsal[openvino]'" not in err
    assert "TorchScript" in err and "--format openvino" in err


def test_train_has_short_out_and_quiet():
    args = build_parser().parse_args(["train", "-o", "runs/x", "-q"])
    assert args.out == "runs/x" and args.quiet is True
    args = build_parser().parse_args(["train"])
    assert args.quiet is False


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


@pytest.mark.parametrize("name", ["export", "models", "cost"])
def test_commands_have_help_text(name):
    p = _subparser(name)
    assert p.description and len(p.description) > 60
    undocumented = [a.option_strings or a.dest for a in p._actions
                    if not isinstance(a, argparse._HelpAction) and not a.help]
    assert not undocumented


def test_models_json(capsys):
    from fastsal.models import DEFAULT_MODEL, catalogue, list_models

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [name for name, _ in catalogue()]
    assert set(list_models()) <= {r["model"] for r in rows}  # every architecture, weights or not
    assert all(r["architecture"] in list_models() for r in rows)
    default = next(r for r in rows if r["default"])
    assert default["model"] == DEFAULT_MODEL and default["weights"].endswith(".pt")
    assert len(default["input_size"]) == 2 and default["metrics"]["osie_test"]["nss"] > 1
    assert any(r["weights"] is None for r in rows) or all(r["weights"] for r in rows)


def test_evaluate_refuses_colour_photos_as_maps(tmp_path, osie_root):
    """`evaluate --maps photos/` scored the photos themselves, converted to grey."""
    from fastsal.data import load_dataset
    from fastsal.data.datasets import DatasetError
    from fastsal.evaluate import maps_from_folder

    samples = load_dataset("osie", osie_root, "test")[:2]
    photos, greys = tmp_path / "photos", tmp_path / "greys"
    photos.mkdir()
    greys.mkdir()
    for s in samples:
        Image.open(s.image_path).convert("RGB").save(photos / (Path(s.name).stem + ".png"))
        grey = np.asarray(Image.open(s.image_path).convert("L"))
        Image.fromarray(np.stack([grey] * 3, axis=2)).save(greys / (Path(s.name).stem + ".jpg"), quality=85)
    with pytest.raises(DatasetError, match="colour image, not a saliency map"):
        maps_from_folder(photos, samples)(samples[0])
    m = maps_from_folder(greys, samples)(samples[0])  # grey maps stored as RGB JPEG are still maps
    assert m.shape == samples[0].shape[:2]


def test_test_session_removes_its_cache_folder(tmp_path):
    """Each test run left an ~800 MB fastsal-test-cache-* folder in the temporary directory."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "FASTSAL_TEST_CACHE"}
    env["TMPDIR"] = str(temp)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_ux.py"), "-k", "no_test_has_this_name"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 5, proc.stdout[-2000:] + proc.stderr[-2000:]  # conftest ran, no test selected
    assert not list(temp.glob("fastsal-test-cache-*"))


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino installed")
def test_openvino_conversion_writes_no_telemetry_to_the_home_folder(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    code = ("import fastsal, torch, openvino as ov\n"
            "ov.convert_model(torch.nn.Linear(2, 2), example_input=torch.zeros(1, 2))\n")
    env = {**os.environ, "HOME": str(home)}
    env.pop("FASTSAL_OPENVINO_TELEMETRY", None)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (home / "intel").exists(), sorted(p.name for p in home.rglob("*"))
