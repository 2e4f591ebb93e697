"""Students: on-the-fly distillation, ground truth mixed with pseudo-labels, `fastsal adapt`."""
import json

import numpy as np
import pytest
import torch
from distill_util import SIZE, centre_teacher, teacher_checkpoint, write_images

import fastsal.training.trainer as train_mod
from fastsal.cli import cli_message
from fastsal.images import load_rgb
from fastsal.losses import DISTILLATION_LOSSES, teacher_kl
from fastsal.models import load_model
from fastsal.teacher import CallableTeacher, Teacher
from fastsal.training import TrainConfig, TrainError, train
from fastsal.training.distill import mixup, teacher_views


def _distill_cfg(tmp_path, teacher, **kw):
    base = dict(model="fastsal_bare", data=(), out=str(tmp_path / "run"), epochs=1, batch_size=2, input_size=SIZE,
                backbone_weights=None, teacher=(teacher,), distill_images=(str(tmp_path / "photos"),), lr=1e-3,
                scale_aug=0.2, seed=0)
    base.update(kw)
    return TrainConfig.from_flat(**base)


@pytest.mark.parametrize("loss", ["cross_entropy", "paper"])
def test_on_the_fly_distillation_lowers_the_distillation_loss(tmp_path, loss):
    photos = write_images(tmp_path / "photos", 4)
    teacher = centre_teacher(tmp_path)  # a user's adapter file, as --teacher py:FILE.py:FUNCTION
    student = teacher_checkpoint(tmp_path / "student.pt", 5)
    cfg = _distill_cfg(tmp_path, teacher, init=str(student), teacher_tta="flip", distill_loss=loss)
    log = train(cfg, progress=False)  # 4 images, batch 2, 1 epoch: 2 steps
    assert len(log["epochs"]) == 1 and np.isfinite(log["epochs"][0]["train_loss"])
    # The same batch before and after: the four un-augmented photos, labelled by the same teacher.
    x = torch.from_numpy(np.stack([load_rgb(p) for p in photos])).permute(0, 3, 1, 2).float() / 255
    target = Teacher([teacher], tta="flip").label_views(x).exp()
    scores = {}
    for when, path in (("before", student), ("after", tmp_path / "run" / "best.pt")):
        model, meta = load_model(path)
        with torch.no_grad():
            logits = model(x)
        scores[when] = (DISTILLATION_LOSSES[loss](logits, target).item(),
                        teacher_kl(torch.log_softmax(logits.flatten(1), 1), target).mean().item())
    assert scores["after"][0] < scores["before"][0] and scores["after"][1] < scores["before"][1], scores
    assert tuple(meta["config"]["teacher"]) == (teacher,) and meta["config"]["distill_loss"] == loss
    assert meta["teacher"]["sha256"] == Teacher([teacher], tta="flip").sha256 == log["teacher"]["sha256"]


def test_teacher_labels_the_mixed_view_the_student_sees():
    seen = []

    def record(rgb):
        seen.append(rgb.copy())
        return np.zeros(rgb.shape[:2])

    teacher = Teacher([CallableTeacher(record, name="rec", version="1")], resolution=SIZE)
    x = torch.rand(3, 3, *SIZE)
    mixed, density = teacher_views(x.clone(), teacher, 1.0, torch.Generator().manual_seed(0))
    assert density.shape == (3, *SIZE) and torch.allclose(density.sum(dim=(1, 2)), torch.ones(3))
    assert not torch.allclose(mixed, x)  # every view blended with another image
    for view, rgb in zip(mixed, seen):  # the teacher saw exactly the blended views (to uint8 rounding)
        assert np.abs(view.permute(1, 2, 0).numpy() * 255 - rgb).max() <= 0.5 + 1e-3
    assert torch.equal(mixup(x, 0.0, torch.Generator()), x) and torch.equal(mixup(x[:1], 1.0, torch.Generator()), x[:1])
    g = torch.Generator().manual_seed(1)
    a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
    blend = mixup(torch.cat([a, b]), 1.0, g)  # w a + (1 - w) b: constant images in between
    assert ((blend >= 0) & (blend <= 1)).all() and blend[0].std() < 1e-6 and blend[1].std() < 1e-6
    assert 0 < blend[0].mean() < 1 and 0 < blend[1].mean() < 1


def test_ground_truth_mixed_with_pseudo_labels(tmp_path, osie_root, monkeypatch):
    from fastsal import pseudo_label
    from fastsal.batch import collect

    write_images(tmp_path / "photos", 4)
    teacher = Teacher([str(teacher_checkpoint(tmp_path / "t.pt", 3))], tta="flip", backend="torch")
    pseudo_label.run(teacher, collect([tmp_path / "photos"]), tmp_path / "labels", progress=False,
                     manifest=tmp_path / "labels" / "manifest.json")
    calls = {"fixations": 0, "density": 0}
    real_gt, real_distill = train_mod.saliency_loss, DISTILLATION_LOSSES["cross_entropy"]

    def gt_loss(*args, **kw):
        calls["fixations"] += 1
        return real_gt(*args, **kw)

    def distill_loss(*args, **kw):
        calls["density"] += 1
        return real_distill(*args, **kw)

    monkeypatch.setattr(train_mod, "saliency_loss", gt_loss)
    monkeypatch.setitem(DISTILLATION_LOSSES, "cross_entropy", distill_loss)
    cfg = TrainConfig.from_flat(model="fastsal_bare", data=(f"osie={osie_root}", f"pseudo={tmp_path / 'labels'}"),
                      out=str(tmp_path / "run"), epochs=1, batch_size=2, input_size=SIZE, backbone_weights=None,
                      limit=4, lr=1e-3)
    log = train(cfg, progress=False)
    assert calls == {"fixations": 2, "density": 2}  # 4 OSIE + 4 labelled images, one loss per bucket kind
    assert np.isfinite(log["epochs"][0]["val_nss"])  # selected on OSIE's fixations only
    assert {"train_loss_fixations", "train_loss_density"} <= set(log["epochs"][0])
    assert load_model(tmp_path / "run" / "best.pt")[1]["config"]["data"][1].startswith("pseudo=")


def test_distillation_options_are_checked_first(tmp_path):
    cases = [
        (dict(teacher=("x",)), "^teacher labels images on the fly"),
        (dict(distill_images=("photos",)), "need a teacher"),
        (dict(data=()), "data names no dataset"),
        (dict(teacher=("x",), distill_images=("p",), distill_loss="mse"), "unknown distill_loss 'mse'"),
        (dict(teacher=("x",), distill_images=("p",), mixup=1.5), "mixup must be a share"),
        (dict(teacher=("x",), distill_images=("p",), teacher_tta="flop"), "cannot read 'flop'"),
        (dict(teacher=("x",), distill_data=("nope",)), "^distill_data: unknown dataset 'nope'"),
    ]
    for kw, message in cases:
        with pytest.raises(TrainError, match=message):
            TrainConfig.from_flat(model="fastsal_bare", backbone_weights=None, **kw)
    # The command line renders the same errors with flags.
    for kw, line in [(dict(teacher=("x",)), "--teacher labels images on the fly"),
                     (dict(distill_images=("photos",)), "need a --teacher"),
                     (dict(teacher=("x",), distill_data=("nope",)), "--distill-data: unknown dataset 'nope'")]:
        with pytest.raises(TrainError) as info:
            TrainConfig.from_flat(model="fastsal_bare", backbone_weights=None, **kw)
        assert line in cli_message(info.value)
    cfg = _distill_cfg(tmp_path, "no_such_model")
    with pytest.raises(TrainError, match="^teacher no_such_model: unknown model") as info:
        train(cfg, progress=False)
    assert cli_message(info.value).startswith("--teacher no_such_model: unknown model")
    cfg = _distill_cfg(tmp_path, centre_teacher(tmp_path))
    with pytest.raises(TrainError, match="photos: no such folder"):
        train(cfg, progress=False)


def test_adapt_writes_a_checkpoint_predict_can_use(tmp_path, capsys):
    from fastsal.cli import main
    from fastsal.training.adapt import AdaptError, adapt

    photos = write_images(tmp_path / "photos", 4)
    student = teacher_checkpoint(tmp_path / "student.pt", 5)
    teacher = centre_teacher(tmp_path)
    # A tiny budget: one batch is timed, the plan (at least one epoch) kept in adapt.json.
    log = adapt([tmp_path / "photos"], tmp_path / "out", teacher=[teacher], model=student, budget_min=1e-5,
                batch_size=2, progress=False)
    plan = json.loads((tmp_path / "out" / "adapt.json").read_text())
    assert plan["epochs"] == len(log["epochs"]) == 1 and plan["images"] == 4 and plan["seconds_per_image"] > 0
    assert main(["adapt", "--images", str(tmp_path / "photos"), "-o", str(tmp_path / "cli"), "--teacher", teacher,
                 "--model", str(student), "--epochs", "1", "--batch-size", "2", "--no-progress"]) == 0
    best = tmp_path / "cli" / "best.pt"
    assert f"adapted checkpoint: {best}" in capsys.readouterr().out
    assert main(["predict", str(photos[0]), "--weights", str(best), "--backend", "torch", "-o",
                 str(tmp_path / "map.npy")]) == 0
    prob = np.load(tmp_path / "map.npy")
    assert prob.shape == SIZE and abs(prob.sum() - 1) < 1e-4
    with pytest.raises(AdaptError, match="not a readable checkpoint .*adapt trains a checkpoint"):
        adapt([tmp_path / "photos"], tmp_path / "x", model=photos[0], epochs=1)
    with pytest.raises(AdaptError, match="pass at least one folder"):
        adapt([], tmp_path / "x")


def test_train_command_distils_on_the_fly(tmp_path, capsys):
    from fastsal.cli import main

    write_images(tmp_path / "photos", 4)
    argv = ["train", "--model", "fastsal_bare", "--data", "none", "--teacher", centre_teacher(tmp_path),
            "--teacher-tta", "flip", "--distill-images", str(tmp_path / "photos"), "--distill-loss", "paper",
            "--mixup", "1", "--scale-aug", "0.3", "--out", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "2",
            "--input-size", "64x96", "--backbone-weights", "none", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "teacher-labelled 4 train images (64x96 teacher: 4)" in out and "no validation data" in out
    config = load_model(tmp_path / "run" / "best.pt")[1]["config"]
    assert not config["data"] and config["distill_loss"] == "paper" and config["mixup"] == 1.0
