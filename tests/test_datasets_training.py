"""Datasets beside OSIE, aspect-preserving sizes, mixed-dataset training, augmentation, init/freeze,
and the weights registry."""
import json

import numpy as np
import pytest
import torch

from fastsal.cli import cli_message
from fastsal.data.datasets import DATASETS, DatasetError, Sample, dataset_info, load_dataset
from fastsal.data.fixations import fixation_density, fixation_map
from fastsal.images import fit_input_size
from fastsal.losses import nss
from fastsal.models import load_model, save_checkpoint
from fastsal.models.registry import ModelError, build, full_state_dict, read_checkpoint
from fastsal.training import TrainConfig, TrainError, train
from fastsal.training.augment import augment
from fastsal.training.data import build_buckets


# ---- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, expected", [
    ((600, 800), (192, 256)), ((768, 1024), (192, 256)), ((1024, 768), (256, 192)), ((500, 500), (224, 224)),
    ((512, 1024), (160, 320)),
])
def test_fit_input_size_keeps_aspect_at_the_budget(shape, expected):
    got = fit_input_size(shape, (192, 256))
    assert got == expected
    assert got[0] % 32 == 0 and got[1] % 32 == 0
    assert abs(got[0] * got[1] / (192 * 256) - 1) < 0.2


def test_fit_input_size_clamps_extreme_aspects():
    assert fit_input_size((1, 10000), (192, 256)) == fit_input_size((100, 400), (192, 256)) == (96, 448)
    assert fit_input_size((10000, 1), (192, 256)) == (448, 96)


def test_fit_input_size_rejects_empty_shapes():
    with pytest.raises(ValueError):
        fit_input_size((0, 10), (192, 256))


# ---- datasets ------------------------------------------------------------------------------
def test_registry_names_match_the_defaults():
    from fastsal import defaults

    assert tuple(DATASETS) == defaults.DATASET_NAMES


def test_unknown_dataset_and_missing_folder_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; choose one of osie, mit1003"):
        dataset_info("nope")
    with pytest.raises(DatasetError, match="no such folder; pass the mit1003 folder holding stimuli"):
        load_dataset("mit1003", tmp_path / "absent", "train")


def test_no_default_data_folder(tmp_path, monkeypatch, capsys):
    """A development path is no library default: a bare NAME needs data_dir (or $FASTSAL_DATA_DIR
    on the command line); the error names the keyword in Python and the flag on the command line."""
    from fastsal import defaults
    from fastsal.cli import main
    from fastsal.data.datasets import dataset_roots

    assert TrainConfig().data.data_dir is None
    with pytest.raises(DatasetError) as info:
        dataset_roots(["osie"], data_dir=None)
    assert info.value.option == "data_dir" and str(info.value).startswith("data_dir is not set")
    assert dataset_roots(["osie", f"mit1003={tmp_path}"], data_dir=tmp_path / "d") == [
        ("osie", tmp_path / "d" / "osie"), ("mit1003", tmp_path)]
    monkeypatch.delenv(defaults.DATA_DIR_ENV, raising=False)
    args = ["train", "--model", "fastsal_bare", "--backbone-weights", "none", "--data", "osie", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "--data-dir is not set, so dataset 'osie' has no folder; pass --data-dir" in capsys.readouterr().err
    monkeypatch.setenv(defaults.DATA_DIR_ENV, str(tmp_path / "data"))
    assert main(args) == 2
    assert f"{tmp_path / 'data' / 'osie'}: no such folder" in capsys.readouterr().err


def test_mit1003_reader(mit1003_root):
    test = load_dataset("mit1003", mit1003_root, "test")
    assert len(test) == 100 and len(load_dataset("mit1003", mit1003_root, "train")) == 803
    shapes = {s.shape for s in test}
    assert len(shapes) > 1 and any(h > w for h, w in shapes)  # several sizes, portraits among them
    s = test[0]
    assert s.pixels_per_degree == 35.0 and s.sigma_px() == 35.0 and s.sigma_px(0.5) == 17.5
    pts = s.fixations
    assert len(s.observers) >= 13 and (pts[:, 0] >= -0.5).all() and (pts[:, 0] < s.width).all()


def test_sample_sigma_defaults_when_geometry_unknown(tmp_path):
    s = Sample("x.jpg", tmp_path / "x.jpg", 10, 10, ())
    from fastsal import defaults

    assert s.sigma_px() == defaults.SIGMA_PX


def test_evaluate_uses_each_datasets_degree(mit1003_root):
    from fastsal import evaluate as E

    samples = load_dataset("mit1003", mit1003_root, "val")[:2]
    uniform = {"u": lambda s: np.full(s.shape, 1.0 / (s.shape[0] * s.shape[1]))}
    report = E.evaluate(samples, uniform, baselines=(), metrics=["cc"], progress=False)
    assert report["config"]["sigma_px"] == [35.0]
    report24 = E.evaluate(samples, uniform, baselines=(), metrics=["cc"], sigma=24.0, progress=False)
    assert report24["config"]["sigma_px"] == 24.0


# ---- augmentation --------------------------------------------------------------------------
def _tiny_bucket(n=4, size=(48, 64), seed=0):
    rng = np.random.default_rng(seed)
    pts = [np.stack([rng.uniform(5, size[1] - 5, 12), rng.uniform(5, size[0] - 5, 12)], axis=1) for _ in range(n)]
    dens = np.stack([fixation_density(p, size, 3.0) for p in pts]).astype(np.float32)
    fmaps = np.stack([fixation_map(p, size) for p in pts])
    x = torch.rand(n, 3, *size)
    return x, torch.from_numpy(dens), torch.from_numpy(fmaps), [torch.from_numpy(p.astype(np.float32)) for p in pts]


def test_augment_moves_density_and_fixations_together():
    x, d, f, pts = _tiny_bucket()
    cfg = TrainConfig.from_flat(model="fastsal_bare", backbone_weights=None, scale_aug=0.4, colour_aug=0.3)
    x2, d2, f2 = augment(x.clone(), d.clone(), pts, cfg.augment, torch.Generator().manual_seed(3))
    assert x2.shape == x.shape and d2.shape == d.shape and f2.dtype == torch.bool
    assert torch.allclose(d2.flatten(1).sum(1), torch.ones(len(d)), atol=1e-5)
    assert 0.0 <= float(x2.min()) and float(x2.max()) <= 1.0
    aligned = nss(d2, f2).mean()
    misaligned = nss(d2.flip(-1).flip(-2), f2).mean()
    assert aligned > 1.5 and aligned > misaligned + 1.0


def test_augment_without_scale_is_an_exact_flip():
    x, d, f, pts = _tiny_bucket()
    cfg = TrainConfig.from_flat(model="fastsal_bare", backbone_weights=None, flip=True)
    g = torch.Generator().manual_seed(0)
    flips = torch.rand(len(x), generator=torch.Generator().manual_seed(0)) < 0.5
    assert flips.any() and not flips.all()  # the seed exercises both branches
    x2, d2, f2 = augment(x.clone(), d.clone(), pts, cfg.augment, g)
    for i, flipped in enumerate(flips.tolist()):
        want_x, want_d, want_f = (x[i].flip(-1), d[i].flip(-1), f[i].flip(-1)) if flipped else (x[i], d[i], f[i])
        assert torch.equal(x2[i], want_x) and torch.equal(d2[i], want_d)
        assert torch.equal(f2[i], want_f)


# ---- training ------------------------------------------------------------------------------
def _cfg(tmp_path, osie_root, mit1003_root, **kw):
    base = dict(model="fastsal_bare", data=(f"osie={osie_root}", f"mit1003={mit1003_root}"), out=str(tmp_path),
                epochs=1, batch_size=4, input_size=(64, 96), backbone_weights=None, limit=6, lr=1e-3)
    base.update(kw)
    return TrainConfig.from_flat(**base)


def test_mixed_datasets_train_with_aspect_buckets(tmp_path, osie_root, mit1003_root):
    cfg = _cfg(tmp_path, osie_root, mit1003_root, scale_aug=0.2, colour_aug=0.1, optimizer="sgd", lr=1e-2)
    log = train(cfg, progress=False)
    last = log["epochs"][-1]
    for key in ("val_osie_nss", "val_mit1003_nss", "val_nss", "val_score"):
        assert np.isfinite(last[key]), key
    assert last["val_nss"] == pytest.approx((last["val_osie_nss"] + last["val_mit1003_nss"]) / 2)
    assert log["config"]["optimizer"] == "sgd"
    _, meta = load_model(tmp_path / "best.pt")
    assert meta["config"]["aspect"] is True


def test_buckets_keep_portraits_upright(mit1003_root):
    samples = [s for s in load_dataset("mit1003", mit1003_root, "val") if s.height > s.width][:2]
    samples += [s for s in load_dataset("mit1003", mit1003_root, "val") if s.height < s.width][:2]
    cfg = TrainConfig.from_flat(model="fastsal_bare", backbone_weights=None, input_size=(64, 96))
    buckets = build_buckets(cfg.data, samples)
    sizes = {b.size for b in buckets}
    assert any(h > w for h, w in sizes) and any(h < w for h, w in sizes)
    squashed = build_buckets(TrainConfig.from_flat(model="fastsal_bare", backbone_weights=None, input_size=(64, 96),
                                                   aspect=False).data, samples)
    assert [b.size for b in squashed] == [(64, 96)]


def test_bad_data_option_is_one_line():
    with pytest.raises(TrainError, match="^data: unknown dataset 'salicn'") as info:
        TrainConfig.from_flat(data=("salicn",))
    assert cli_message(info.value).startswith("--data: unknown dataset 'salicn'")
    with pytest.raises(TrainError, match="^root names the folder of one dataset") as info:
        TrainConfig.from_flat(data=("osie", "mit1003"), root="/x")
    assert cli_message(info.value).startswith("--root names the folder of one dataset")
    with pytest.raises(TrainError, match="unknown optimizer"):
        TrainConfig.from_flat(optimizer="adam")
    with pytest.raises(TrainError, match="scale_aug must be a number in"):
        TrainConfig.from_flat(scale_aug=1.5)


def test_init_from_checkpoint_and_frozen_encoder(tmp_path, osie_root):
    a = build("fastsal_a", backbone_weights=None)
    save_checkpoint(a, "fastsal_a", tmp_path / "a.pt")
    cfg = TrainConfig.from_flat(model="fastsal_c", data=(f"osie={osie_root}",), out=str(tmp_path / "c"), epochs=1,
                      batch_size=2, input_size=(64, 96), limit=4, init=str(tmp_path / "a.pt"), freeze_encoder=True)
    train(cfg, progress=False)
    c, _ = load_model(tmp_path / "c" / "best.pt")
    a_state, c_state = a.state_dict(), c.state_dict()
    enc = [k for k in c_state if k.startswith("encoder.")]
    assert enc and all(torch.equal(a_state[k], c_state[k]) for k in enc)  # frozen: BN statistics too
    wrong = TrainConfig.from_flat(model="fastsal_c_effnet_lite0", data=(f"osie={osie_root}",), out=str(tmp_path / "x"),
                        epochs=1, input_size=(64, 96), limit=2, init=str(tmp_path / "a.pt"))
    with pytest.raises(TrainError, match="whose encoder does not fit"):
        train(wrong, progress=False)


# ---- decoder-only checkpoints ----------------------------------------------------------------
def test_decoder_only_checkpoint_round_trip(tmp_path, monkeypatch):
    import fastsal.models.registry as R

    a = build("fastsal_a", backbone_weights=None)
    save_checkpoint(a, "fastsal_a", tmp_path / "fastsal_a.pt", half=True)
    spec = R.Weights("fastsal_a", "fastsal_a.pt", (64, 96), True, 0.0, (0.5,) * 3, (0.5,) * 3, "d", "r", "c",
                     0.1, 1, {}, "fastsal_a.md")
    monkeypatch.setattr(R, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setitem(R.WEIGHTS, "fastsal_a", spec)
    c = build("fastsal_c", backbone_weights=None)
    with pytest.raises(ModelError, match="its encoder is not fastsal_a's"):
        save_checkpoint(c, "fastsal_c", tmp_path / "c.pt", encoder_from="fastsal_a")
    c.encoder.load_state_dict(load_model(tmp_path / "fastsal_a.pt")[0].encoder.state_dict())
    save_checkpoint(c, "fastsal_c", tmp_path / "c.pt", half=True, encoder_from="fastsal_a")
    ckpt = read_checkpoint(tmp_path / "c.pt")
    assert not any(k.startswith("encoder.") for k in ckpt["state_dict"]) and ckpt["encoder_from"] == "fastsal_a"
    loaded, _ = load_model(tmp_path / "c.pt")
    for k, v in c.state_dict().items():
        want = v.half().float() if v.is_floating_point() else v
        assert torch.equal(loaded.state_dict()[k], want), k
    # The encoder changes under the decoder: refused, not silently paired.
    a2 = build("fastsal_a", backbone_weights=None)
    save_checkpoint(a2, "fastsal_a", tmp_path / "fastsal_a.pt", half=True)
    with pytest.raises(ModelError, match="has changed since it was trained"):
        full_state_dict(read_checkpoint(tmp_path / "c.pt"), tmp_path / "c.pt")


def test_a_model_without_weights_is_one_line(monkeypatch, capsys, tmp_path):
    import fastsal.models.registry as R
    from fastsal.cli import main
    from fastsal.predict import example_image

    monkeypatch.delitem(R.WEIGHTS, "fastsal_a")
    code = main(["predict", str(example_image()), "-o", str(tmp_path / "o"), "--model", "fastsal_a"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(err) == 1 and "no shipped weights for 'fastsal_a'" in err[0]


def test_shipped_specs_describe_their_files():
    from fastsal.models import WEIGHTS, catalogue, list_models

    assert WEIGHTS, "at least the default ships"
    listed = [n for n, _ in catalogue()]
    for name, spec in WEIGHTS.items():
        assert spec.name == name and spec.model in list_models() and name in listed
        assert spec.path.is_file() and spec.card_path.is_file()
        assert spec.input_size[0] % 32 == 0 and spec.input_size[1] % 32 == 0 and spec.gmacs > 0
        card = json.loads(spec.path.with_suffix(".json").read_text())
        assert card["model"] == spec.model and card.get("name", name) == name
        model, meta = load_model(spec.path)
        assert model.name == spec.model and meta["blur_sigma"] == spec.blur_sigma


# ---- aspect-preserving prediction ------------------------------------------------------------
def test_predictor_keeps_portraits_upright():
    import fastsal
    from fastsal.models import WEIGHTS, weights_for

    assert fastsal.load(backend="torch").aspect == weights_for("default").aspect  # as the weights were trained
    assert WEIGHTS
    p = fastsal.load(backend="torch", aspect=True)
    portrait = (np.random.default_rng(0).random((400, 300, 3)) * 255).astype(np.uint8)
    budget = p.input_size
    assert p.input_size_for(portrait.shape[:2]) == fit_input_size((400, 300), budget)
    m = p.predict(portrait)
    assert m.shape == (400, 300) and abs(float(m.sum()) - 1) < 1e-4
    landscape = portrait.transpose(1, 0, 2).copy()
    maps = p.predict_batch([portrait, landscape, portrait], batch_size=3)
    assert [mm.shape for mm in maps] == [(400, 300), (300, 400), (400, 300)]
    assert np.allclose(maps[0], m, atol=1e-6)
    squash = fastsal.load(backend="torch", aspect=False)
    assert squash.input_size_for((400, 300)) == squash.input_size
    assert not np.allclose(squash.predict(portrait), m, atol=1e-6)


def test_models_command_shows_weights_cost_and_scores(capsys):
    from fastsal.cli import main
    from fastsal.models import WEIGHTS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name, spec in WEIGHTS.items():
        line = next(ln for ln in out.splitlines() if ln.startswith(name + " ") or ln.startswith(name + "  "))
        assert spec.file in line and f"{spec.gmacs:.2f}" in line
    assert "none" in out or len(WEIGHTS) == 6


def test_every_shipped_name_loads_by_name():
    import fastsal
    from fastsal.models import WEIGHTS

    for name in WEIGHTS:
        p = fastsal.load(name, backend="torch")
        assert p.name == name and p.input_size == WEIGHTS[name].input_size


def test_evaluate_cli_on_mit1003(mit1003_root, capsys, tmp_path):
    from fastsal.cli import main

    code = main(["evaluate", "--dataset", "mit1003", "--root", str(mit1003_root), "--split", "val", "--limit", "3",
                 "--no-gold", "--backend", "torch", "--metrics", "nss", "information_gain", "-q",
                 "--json", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["dataset"] == "mit1003" and report["config"]["sigma_px"] == [35.0]
    assert report["config"]["predictor"]["aspect"] in (True, False)


def test_shipped_weights_stay_small_and_self_contained():
    """The wheel carries every shipped file: 40 MB in all is the budget (issue 19). A decoder-only
    file may lean on another model's encoder only if that model's weights are the ones it was
    trained on (the hash check); the MobileNetV2 C and bare decoders carry their own copy so that
    `fastsal_a` can be retrained without touching them."""
    from fastsal.models import WEIGHTS

    assert sum(spec.path.stat().st_size for spec in WEIGHTS.values()) < 40e6
    for name in ("fastsal_c", "fastsal_bare"):
        assert WEIGHTS[name].encoder_from is None
        assert any(k.startswith("encoder.") for k in read_checkpoint(WEIGHTS[name].path)["state_dict"])
