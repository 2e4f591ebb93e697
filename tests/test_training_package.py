"""The training package's seams (issue 21): the sectioned config and its flat record, checkpoints
the flat-config code wrote, the bucket sampler's data-parallel split, and the Trainer's step."""
import json

import pytest
import torch

from fastsal.cli import cli_message
from fastsal.models.registry import read_checkpoint
from fastsal.training import TrainConfig, Trainer, TrainError, train
from fastsal.training.config import FLAT_FIELDS, DataConfig, OptimConfig
from fastsal.training.data import BucketBatchSampler, build_buckets, load_split

# What checkpoints and log.json keep under "config": flat, in this order, as the single flat
# TrainConfig wrote it before the sections existed. Readers (predict's training geometry, --init,
# resume) look these names up, so they stay.
FLAT_CONFIG_KEYS = [
    "model", "data", "data_dir", "root", "out", "epochs", "batch_size", "optimizer", "lr", "momentum",
    "encoder_lr_scale", "weight_decay", "input_size", "aspect", "sigma_deg", "sigma_px", "loss_weights",
    "backbone_weights", "init", "freeze_encoder", "flip", "scale_aug", "colour_aug", "device", "seed", "limit",
    "threads", "teacher", "teacher_tta", "teacher_backend", "distill_images", "distill_data", "distill_loss",
    "mixup", "extra",
]
RESUME_KEYS = ["best", "epoch", "format", "log", "model", "optimizer", "scheduler", "state_dict", "tensors_sha256"]


def _flat(osie_root, out, **kw):
    base = dict(model="fastsal_bare", root=str(osie_root), out=str(out), epochs=1, batch_size=2,
                input_size=(64, 96), backbone_weights=None, limit=4, lr=1e-3)
    return {**base, **kw}


def test_flat_keywords_fill_the_sections_and_come_back_in_order(tmp_path):
    cfg = TrainConfig.from_flat(model="fastsal_bare", data="osie,mit1003", lr=2e-4, scale_aug=0.2, threads=1,
                                teacher_tta="flip", extra={"note": 1})
    assert (cfg.model.model, cfg.data.data, cfg.optim.lr, cfg.augment.scale_aug, cfg.run.threads,
            cfg.distill.teacher_tta) == ("fastsal_bare", ("osie", "mit1003"), 2e-4, 0.2, 1, "flip")
    flat = cfg.to_flat()
    assert list(flat) == FLAT_CONFIG_KEYS and set(FLAT_FIELDS) | {"extra"} == set(FLAT_CONFIG_KEYS)
    assert TrainConfig.from_flat(**flat) == cfg  # the record rebuilds the run
    with pytest.raises(TypeError, match="lr_max"):
        TrainConfig.from_flat(lr_max=1.0)


def test_each_section_validates_and_names_its_parameter():
    with pytest.raises(TrainError) as info:
        OptimConfig(batch_size=0).validate()
    assert str(info.value) == "batch_size must be a whole number in 1..4096; got 0"
    assert cli_message(info.value) == "--batch-size must be a whole number in 1..4096; got 0"
    with pytest.raises(TrainError) as info:
        DataConfig(sigma_deg=0.0).validate()
    assert info.value.option == "sigma_deg"
    with pytest.raises(TrainError) as info:
        TrainConfig.from_flat(data=())
    assert str(info.value).startswith("data names no dataset") and "--" not in str(info.value)
    assert cli_message(info.value).startswith("--data names no dataset")


def test_checkpoints_keep_the_flat_record_and_old_runs_resume(osie_root, tmp_path):
    log = train(TrainConfig.from_flat(**_flat(osie_root, tmp_path)), progress=False)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert sorted(state) == RESUME_KEYS and state["format"] == "fastsal-train-state/1"
    assert list(state["log"]["config"]) == FLAT_CONFIG_KEYS == list(log["config"])
    assert list(json.loads((tmp_path / "log.json").read_text())["config"]) == FLAT_CONFIG_KEYS
    assert list(read_checkpoint(tmp_path / "best.pt")["meta"]["config"]) == FLAT_CONFIG_KEYS
    # A last.pt as the flat-config code wrote it, down to the oldest (no "format" or "model": the
    # model is read from the log's flat config), resumes: here it is extended by one epoch.
    old = {k: v for k, v in state.items() if k not in ("format", "model", "tensors_sha256")}
    torch.save(old, tmp_path / "last.pt")
    log = train(TrainConfig.from_flat(**_flat(osie_root, tmp_path, epochs=2)), progress=False)
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    # and another model's flat-config run is still refused, naming the parameter
    old["log"]["config"]["model"] = "fastsal_a"
    torch.save(old, tmp_path / "last.pt")
    with pytest.raises(TrainError, match="holds a 'fastsal_a' run, not model fastsal_bare") as info:
        train(TrainConfig.from_flat(**_flat(osie_root, tmp_path, epochs=3)), progress=False)
    assert "not --model fastsal_bare; pass another --out, or --restart to replace it" in cli_message(info.value)
    assert str(info.value).endswith("or resume=False to replace it")  # the Python API's keyword for --restart


def test_sampler_splits_one_shared_plan_between_ranks():
    sizes, batch = [5, 3, 4], 2  # 3 + 2 + 2 = 7 batches
    shared = BucketBatchSampler(sizes, batch)
    plan = shared.plan(torch.Generator().manual_seed(7))
    assert len(plan) == 7 == len(shared)
    for b, n in enumerate(sizes):  # every image of every bucket exactly once
        got = sorted(i for p in plan if p.bucket == b for i in p.indices.tolist())
        assert got == list(range(n))
    ranks = [BucketBatchSampler(sizes, batch, rank=r, world=2) for r in range(2)]
    for r, sampler in enumerate(ranks):
        sampler.set_generator(torch.Generator().manual_seed(7))
        mine = list(sampler)
        assert len(mine) == len(sampler) == 3  # equal steps on every rank: 7 // 2
        want = plan[r::2][:3]
        assert [(p.bucket, p.indices.tolist()) for p in mine] == [(p.bucket, p.indices.tolist()) for p in want]
    assert len(BucketBatchSampler([1], 8, rank=1, world=4)) == 1  # never an epoch of no steps


def test_trainer_step_updates_the_model(osie_root, tmp_path):
    cfg = TrainConfig.from_flat(**_flat(osie_root, tmp_path))
    trainer = Trainer(cfg, progress=False)
    [(_, samples)] = load_split(cfg.data, "train")
    [bucket] = build_buckets(cfg.data, samples)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.model.train()
    loss = trainer.step(bucket, torch.arange(2), torch.Generator().manual_seed(0))
    assert loss == pytest.approx(loss) and loss > 0  # finite
    after = trainer.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_the_config_and_its_bounds_load_no_torch():
    """The command line may read the bounds (and build the config) without waiting for PyTorch."""
    import subprocess
    import sys

    code = ("import sys; from fastsal.training import TrainConfig; from fastsal.training.config import EPOCHS_RANGE; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stderr[-2000:]
