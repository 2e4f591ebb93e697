"""``fastsal predict --format benchmark``: a folder in the MIT/Tuebingen saliency benchmark's layout.

MIT300 and CAT2000 take one JPEG saliency map per stimulus, with the stimulus's name and size and
(CAT2000) its category folders; the Tuebingen benchmark's probabilistic evaluation takes per-stimulus
natural-log densities (pysaliency's ``ModelFromDirectory`` matches files to stimuli by path stem and
checks that logsumexp is within 0.01 of 0).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.special import logsumexp

import fastsal
from fastsal.cli import main
from fastsal.viewing import to_png

FAST = ["--threads", "1", "--quiet", "--backend", "torch"]
# CAT2000-like category folders, a MIT300-like name, a portrait and a PNG stimulus
STIMULI = {"Action/001.jpg": (60, 80), "Art/002.jpg": (90, 50), "i3.jpg": (48, 64), "i4.png": (50, 50)}


@pytest.fixture(scope="module")
def submission(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bench")
    stimuli = root / "Stimuli"
    for i, (rel, (h, w)) in enumerate(STIMULI.items()):
        path = stimuli / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    out = root / "sub"
    assert main(["predict", str(stimuli), "-o", str(out), "--format", "benchmark", *FAST]) == 0
    return stimuli, out


def test_one_jpeg_map_per_stimulus_with_its_name_size_and_folders(submission):
    stimuli, out = submission
    maps = sorted(p.relative_to(out / "saliency_maps").as_posix() for p in (out / "saliency_maps").rglob("*"))
    assert [m for m in maps if m.endswith(".jpg")] == sorted(str(Path(r).with_suffix(".jpg")) for r in STIMULI)
    for rel, (h, w) in STIMULI.items():
        with Image.open(out / "saliency_maps" / Path(rel).with_suffix(".jpg")) as im:
            assert im.format == "JPEG" and im.mode == "L" and im.size == (w, h)


def test_log_densities_are_natural_logs_summing_to_one(submission):
    stimuli, out = submission
    model = fastsal.load(backend="torch", threads=1)
    for rel, (h, w) in STIMULI.items():
        logp = np.load(out / "log_densities" / Path(rel).with_suffix(".npy"))
        assert logp.shape == (h, w) and logp.dtype == np.float32 and np.isfinite(logp).all()
        assert abs(logsumexp(logp.astype(np.float64))) < 1e-4  # pysaliency accepts |.| <= 0.01
        expected = model.log_density(stimuli / rel)  # the Python API's density of the same stimulus
        np.testing.assert_allclose(np.exp(logp), np.exp(expected), rtol=1e-3, atol=1e-9)
        with Image.open(out / "saliency_maps" / Path(rel).with_suffix(".jpg")) as im:  # the JPEG shows the same map
            shown = np.asarray(im, dtype=np.float64)
        assert np.abs(shown - to_png(np.exp(logp))).mean() < 3.0


def test_manifest_records_the_benchmark_outputs_and_a_rerun_skips(submission, capsys):
    stimuli, out = submission
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["formats"] == ["saliency_jpg", "log_density"] and not manifest["failed"]
    assert len(manifest["written"]) == len(STIMULI)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert main(["predict", str(stimuli), "-o", str(out), "--format", "benchmark", *FAST]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == before
