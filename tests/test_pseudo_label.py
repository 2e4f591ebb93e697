"""`fastsal pseudo-label`: labels and manifest, resume, corrupt images, shards, and the `pseudo` reader."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from distill_util import teacher_checkpoint, write_images
from scipy.special import logsumexp

from fastsal.cli import main
from fastsal.data.datasets import DATASETS, DatasetError, load_dataset
from fastsal.data.pseudo import latest_entries
from fastsal.pseudo_label import labelled

TTA = "flip,scales=64x96+96x128"


@pytest.fixture()
def setup(tmp_path):
    write_images(tmp_path / "photos", 3)  # img0, img1, sub/img2
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    return {"teacher": str(teacher_checkpoint(tmp_path / "teacher.pt", 2)), "photos": tmp_path / "photos",
            "out": tmp_path / "labels"}


def _label(s, *extra, tta=TTA):
    return main(["pseudo-label", "--teacher", s["teacher"], "--tta", tta, "--images", str(s["photos"]), "-o",
                 str(s["out"]), "--backend", "torch", "-q", *extra])


def test_round_trip_resume_and_corrupt_images(setup, capsys):
    s, out = setup, setup["out"]
    assert _label(s) == 0
    assert "fastsal: skipped" in capsys.readouterr().err and "broken.jpg" not in os.listdir(out)
    labels = {p.relative_to(out).as_posix() for p in out.rglob("*.npy")}
    assert labels == {"img0.npy", "img1.npy", "sub/img2.npy"}  # the input tree, mirrored
    label = np.load(out / "sub" / "img2.npy")
    assert label.dtype == np.float16 and label.shape == (96, 128)  # the 64x96 images at the largest budget
    assert abs(logsumexp(label.astype(np.float64))) < 0.02  # float16 rounding of a logsumexp-0 map
    manifest = json.loads((out / "manifest.json").read_text())
    teacher = manifest["teacher"]
    assert manifest["format"] == "fastsal-manifest/2" and manifest["task"] == "labels" and manifest["complete"] and manifest["fastsal_version"]
    assert teacher["name"] == "teacher" and len(teacher["sha256"]) == 64 and teacher["centre_bias"].startswith("none")
    assert teacher["tta"] == {"flip": True, "scales": [[64, 96], [96, 128]]}
    assert teacher["input_sizes"] == {"teacher": [[64, 96], [96, 128]]}
    status = {e["label"]: e for e in manifest["written"] + manifest["failed"]}
    assert {k: v["status"] for k, v in status.items()} == {"img0.npy": "ok", "img1.npy": "ok", "sub/img2.npy": "ok",
                                                           "broken.npy": "failed"}
    assert "broken.jpg" in status["broken.npy"]["error"] and status["img0.npy"]["shape"] == [64, 96]
    assert all(v["teacher_sha256"] == teacher["sha256"] for v in status.values() if v["status"] == "ok")

    # Resume: finished images are skipped (files untouched), the broken one is tried again.
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert _label(s) == 0
    again = json.loads((out / "manifest.json").read_text())
    assert again["skipped_existing"] == 3 and labelled(again) == 0 and len(again["failed"]) == 1
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == stamp
    (out / "img1.npy").unlink()  # a lost label is made again, alone
    assert _label(s) == 0
    assert labelled(json.loads((out / "manifest.json").read_text())) == 1
    # Another teacher (other TTA, so another hash) relabels everything.
    assert _label(s, tta="flip") == 0
    other = json.loads((out / "manifest.json").read_text())
    assert labelled(other) == 3 and other["teacher"]["sha256"] != teacher["sha256"]
    assert np.load(out / "img0.npy").shape == (64, 96)
    # --strict: the corrupt image stops the run with one line and a non-zero status.
    capsys.readouterr()
    assert _label(s, "--strict", tta="none") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastsal: error:") and "broken.jpg" in err[0]


def test_shards_and_the_pseudo_dataset(setup, tmp_path):
    s, out = setup, setup["out"]
    assert [_label(s, "--shard", f"{i}/2") for i in (0, 1)] == [0, 0]
    assert sorted(p.name for p in out.glob("manifest*.json")) == ["manifest-0-of-2.json", "manifest-1-of-2.json"]
    assert len(latest_entries(out)) == 4
    samples = load_dataset("pseudo", out, "train")
    assert [x.name for x in samples] == ["img0", "img1", "sub/img2"]
    assert all(x.kind == "density" and x.density_path.is_file() and x.shape == (64, 96) for x in samples)
    assert samples[2].image_path == s["photos"] / "sub" / "img2.png" and not samples[0].observers
    assert load_dataset("pseudo", out, "val") == [] == load_dataset("pseudo", out, "test")
    assert "pseudo" in DATASETS
    # One shard relabelled by another teacher: the folder now mixes teachers and is refused.
    assert _label(s, "--shard", "0/2", tta="flip") == 0
    with pytest.raises(DatasetError, match="holds labels of 2 teachers"):
        load_dataset("pseudo", out, "train")
    with pytest.raises(DatasetError, match="no manifest.json; pass a folder written by `fastsal pseudo-label`"):
        load_dataset("pseudo", s["photos"], "train")


def test_labelling_a_dataset_split(tmp_path):
    root = tmp_path / "mine"
    write_images(root / "images", 4, nested=False)
    (root / "fixations.csv").write_text("image,x,y\n" + "".join(f"img{i}.png,{x},{y}\n" for i in range(4)
                                                                 for x, y in ((10, 10), (40, 30), (70, 50))))
    (root / "splits.json").write_text(json.dumps({"train": ["img0.png", "img2.png"], "val": ["img1.png"],
                                                  "test": ["img3.png"]}))
    teacher = str(teacher_checkpoint(tmp_path / "t.pt", 4))
    out = tmp_path / "labels"
    assert main(["pseudo-label", "--teacher", teacher, "--dataset", "folder", "--root", str(root), "-o", str(out),
                 "--backend", "torch", "-q"]) == 0
    assert sorted(p.name for p in out.glob("*.npy")) == ["img0.npy", "img2.npy"]  # train only: never test
    assert np.load(out / "img0.npy").shape == (64, 96)  # the source's own input size
    # The teacher (ensemble and TTA) is scored on the test split like any model.
    report = tmp_path / "report.json"
    assert main(["evaluate", "--teacher", teacher, "--tta", "flip", "--dataset", "folder", "--root", str(root),
                 "--split", "test", "--backend", "torch", "--no-gold", "--metrics", "nss", "cc", "-q",
                 "--json", str(report)]) == 0
    config = json.loads(report.read_text())["config"]
    assert config["teacher"]["tta"]["flip"] and config["teacher"]["name"] == "t"


@pytest.mark.parametrize("argv, message", [
    (["pseudo-label", "--teacher", "t.pt", "-o", "x"], "pass the images to label"),
    (["pseudo-label", "--teacher", "no_such_model", "--images", ".", "-o", "{tmp}/x"], "--teacher no_such_model"),
    (["pseudo-label", "--teacher", "t.pt", "--tta", "flop", "--images", ".", "-o", "x"], "cannot read 'flop'"),
    (["pseudo-label", "--teacher", "t.pt", "--dataset", "osie", "-o", "x"], "--dataset osie needs --root"),
    (["adapt", "--images", "{tmp}/none", "-o", "{tmp}/o", "--epochs", "1"], "no such folder"),
])
def test_bad_options_are_one_line(argv, message, tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "error:" in err[-1] and message in err[-1]


@pytest.mark.parametrize("argv", [["pseudo-label", "--help"], ["adapt", "--help"], ["train", "--help"],
                                  ["pseudo-label", "--tta", "flop", "--teacher", "x", "-o", "y"]])
def test_new_commands_start_without_torch(argv):
    code = ("import sys\nfrom fastsal.cli import main\n"
            f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
            "print(rc, ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'openvino'))))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    rc, _, mods = res.stdout.strip().splitlines()[-1].partition(" ")
    assert int(rc) in (0, 2) and not mods.strip(), mods


def test_labels_of_a_killed_run_are_not_taken_by_another_teacher(setup):
    """Issue 23 item 4 for pseudo-labels (a guard, not a fix): a label counts as done only through a
    manifest entry with the same teacher hash, so labels left by a run killed before its first
    manifest write are made again by a rerun with another teacher, never kept as its own."""
    s, out = setup, setup["out"]
    assert _label(s) == 0
    for m in out.glob("manifest*.json"):
        m.unlink()  # what a SIGKILL before the first manifest write leaves: labels, no manifest
    assert _label(s, tta="flip") == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped_existing"] == 0 and labelled(manifest) == 3
    assert {e["teacher_sha256"] for e in manifest["written"]} == {manifest["teacher"]["sha256"]}


def test_old_v1_manifests_still_load_and_resume(setup, capsys):
    """Folders labelled before the job layer (fastsal-pseudo-labels/1) still train and resume."""
    s, out = setup, setup["out"]
    assert _label(s) == 0
    path = out / "manifest.json"
    new = json.loads(path.read_text())
    old = {k: v for k, v in new.items() if k not in ("written", "failed", "task")}
    old.update(format="fastsal-pseudo-labels/1", images=new["written"] + new["failed"], labelled=3, failed=1)
    path.write_text(json.dumps(old))
    assert [x.name for x in load_dataset("pseudo", out, "train")] == ["img0", "img1", "sub/img2"]
    assert {k: e["status"] for k, e in latest_entries(out).items()} == {
        "img0.npy": "ok", "img1.npy": "ok", "sub/img2.npy": "ok", "broken.npy": "failed"}
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")}
    assert _label(s) == 0
    again = json.loads(path.read_text())
    assert again["format"] == "fastsal-manifest/2" and again["skipped_existing"] == 3 and labelled(again) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.npy")} == stamp
