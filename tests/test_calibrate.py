"""Calibration (issue 19 item 3): a temperature and centre-bias prior fitted on val, applied after
the blur on every engine, carried by checkpoints, exports and ``train --init``."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from distill_util import SIZE, centre_teacher, teacher_checkpoint, write_images
from PIL import Image
from scipy import ndimage
from test_scene import write_scene

import fastsal
from fastsal import calibration as C
from fastsal.calibration import log_prior
from fastsal.cli import main
from fastsal.models.registry import CHECKSUM_KEY, atomic_save, postprocess_settings, read_checkpoint

CALIB = {"form": "power", "temperature": 1.6, "prior_weight": 1.5, "prior": {"x": 0.45, "y": 0.55, "sx": 0.2, "sy": 0.3}}


def _calibrated(tmp_path: Path, calib: dict = CALIB, name: str = "cal.pt") -> Path:
    """A random fastsal_bare checkpoint (trained at SIZE) with ``calib`` in its meta."""
    path = teacher_checkpoint(tmp_path / "plain.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"]["calibration"] = calib
    atomic_save(ckpt, tmp_path / name)
    return tmp_path / name


def _image(seed: int = 3, size=(90, 120)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_no_calibration_gives_exactly_the_old_maps():
    """Weights without a calibration (fastsal_c ships none): small_log_density is still log-softmax + blur, bit for bit."""
    p = fastsal.load("fastsal_c", backend="torch", threads=1, input_size=(64, 96), aspect=False)
    assert p.calibration is None and p.settings()["calibration"] is None
    x = p.preprocess(_image())[None]
    with torch.inference_mode():
        logits = p.runner(x).reshape(1, -1).astype(np.float64)
    flat = logits - logits.max()
    flat = flat - np.log(np.exp(flat).sum())
    prob = ndimage.gaussian_filter(np.exp(flat.reshape(1, 64, 96)), sigma=(0, p.blur_sigma, p.blur_sigma), mode="nearest")
    prob /= prob.sum()
    old = np.log(np.maximum(prob, np.finfo(np.float64).tiny))
    assert np.array_equal(p.small_log_density(x), old)


def test_calibration_is_applied_and_reported(tmp_path):
    path = _calibrated(tmp_path)
    plain = fastsal.load(tmp_path / "plain.pt", backend="torch", threads=1)
    cal = fastsal.load(path, backend="torch", threads=1)
    assert cal.calibration == C.Calibration.from_dict(CALIB)
    assert cal.settings()["calibration"]["temperature"] == 1.6 and plain.settings()["calibration"] is None
    x = plain.preprocess(_image())[None]
    expected = C.apply(plain.small_log_density(x), cal.calibration)
    got = cal.small_log_density(x)
    assert np.allclose(got, expected) and not np.allclose(got, plain.small_log_density(x), atol=1e-3)
    assert np.allclose(np.exp(got).sum(axis=(1, 2)), 1.0)
    # T > 1 flattens: the calibrated density's peak is lower at zero prior weight
    flat = C.apply(plain.small_log_density(x), C.Calibration(temperature=2.0))
    assert np.exp(flat).max() < np.exp(plain.small_log_density(x)).max()


def test_prior_is_size_and_aspect_independent():
    prior = (0.4, 0.6, 0.1, 0.15)
    for shape in [(48, 64), (64, 48), (256, 256), (33, 190)]:
        h, w = shape
        p = np.exp(C._log_normalise(log_prior(shape, prior)))
        u, v = (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h
        mx, my = (p.sum(0) * u).sum(), (p.sum(1) * v).sum()
        sx, sy = np.sqrt((p.sum(0) * (u - mx) ** 2).sum()), np.sqrt((p.sum(1) * (v - my) ** 2).sum())
        assert abs(mx - 0.4) < 0.01 and abs(my - 0.6) < 0.01, shape
        assert abs(sx - 0.1) < 0.01 and abs(sy - 0.15) < 0.01, shape
    # the calibrated density on a flat input is the prior itself, at any size
    for form, weight in (("power", 1.0), ("mixture", 0.95)):
        calib = C.Calibration(form=form, prior_weight=weight, prior=prior)
        a = C.apply(np.full((1, 40, 60), -np.log(2400.0)), calib)[0]
        b = C.apply(np.full((1, 80, 120), -np.log(9600.0)), calib)[0]
        assert np.unravel_index(a.argmax(), a.shape) == (23, 23) and np.unravel_index(b.argmax(), b.shape) == (47, 47)


def _synthetic(true_t: float, n_images: int = 40, seed: int = 0):
    """Log-densities that are a true density q sharpened by ``true_t``, and fixations drawn from q."""
    rng = np.random.default_rng(seed)
    logs, fixs, shapes = [], [], []
    for _ in range(n_images):
        lq = C._log_normalise(ndimage.gaussian_filter(rng.normal(size=(24, 32)), 3) * 8)
        k = rng.choice(lq.size, size=60, p=np.exp(lq).ravel() / np.exp(lq).sum())
        y, x = np.divmod(k, 32)
        fixs.append(np.stack([(x + rng.random(60)) * 2 - 0.5, (y + rng.random(60)) * 2 - 0.5], axis=1))
        logs.append(C._log_normalise(lq * true_t))
        shapes.append((48, 64))
    return C.FitData(logs, fixs, shapes)


@pytest.mark.parametrize("form", C.FORMS)
def test_fit_recovers_a_known_temperature(form):
    data = _synthetic(2.0)
    calib, bits = C.fit(data, form)
    assert abs(calib.temperature - 2.0) < 0.15
    assert bits > C.objective(data, None) + 0.1  # the fit improves what it maximises
    sharp, _ = C.fit(_synthetic(0.5, seed=1), form)
    assert abs(sharp.temperature - 0.5) < 0.05


def test_fit_finds_a_missing_centre_bias():
    """A model blind to the centre (flat density) facing central fixations gets a prior at the centre."""
    rng = np.random.default_rng(2)
    fix = [np.clip(rng.normal([40, 20], [6, 4], (50, 2)), 0, [79, 59]) for _ in range(20)]
    data = C.FitData([np.full((30, 40), -np.log(1200.0))] * 20, fix, [(60, 80)] * 20)
    calib, _ = C.fit(data, "power")
    x, y, sx, sy = calib.prior
    assert calib.prior_weight > 0.5 and abs(x - 0.5) < 0.05 and abs(y - 0.33) < 0.05


def test_train_init_keeps_the_calibration(tmp_path):
    from fastsal.training import TrainConfig, train

    source = _calibrated(tmp_path)
    assert postprocess_settings(read_checkpoint(source))["calibration"] == CALIB
    write_images(tmp_path / "photos", 4)
    cfg = TrainConfig.from_flat(model="fastsal_bare", data=(), out=str(tmp_path / "init"), epochs=1, batch_size=2,
                      input_size=SIZE, backbone_weights=None, init=str(source), teacher=(centre_teacher(tmp_path),),
                      distill_images=(str(tmp_path / "photos"),))
    train(cfg, progress=False)
    assert read_checkpoint(tmp_path / "init" / "best.pt")["meta"]["calibration"] == CALIB


ENGINES = [e for e, mod in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")) if importlib.util.find_spec(mod)]


@pytest.mark.skipif(not ENGINES, reason="no ONNX Runtime or OpenVINO")
def test_export_of_a_calibrated_checkpoint_gives_its_maps(tmp_path):
    path = _calibrated(tmp_path)
    ref = fastsal.load(path, backend="torch", threads=1, aspect=False)
    rgb = _image(7)
    want = ref.predict(rgb)
    for engine, fmt, suffix in (("onnxruntime", "onnx", "onnx"), ("openvino", "openvino", "xml")):
        if engine not in ENGINES:
            continue
        out = tmp_path / f"cal.{suffix}"
        assert main(["export", "--weights", str(path), "--format", fmt, "-o", str(out)]) == 0
        exported = fastsal.load(out, backend=engine, threads=1, aspect=False)
        assert exported.calibration == ref.calibration
        got = exported.predict(rgb)
        assert np.abs(got - want).max() < 1e-4 * want.max(), engine


def test_cli_calibrate_writes_a_checkpoint_with_the_same_weights(tmp_path, capsys):
    write_scene(tmp_path / "scene")
    source = teacher_checkpoint(tmp_path / "plain.pt")
    out = tmp_path / "out" / "cal.pt"
    assert main(["calibrate", "--weights", str(source), "--data", f"scene={tmp_path / 'scene'}", "--form", "power",
                 "--backend", "torch", "--threads", "1", "-o", str(out), "-q"]) == 0
    text = capsys.readouterr().out
    assert "scene val" in text and "uncalibrated" in text and "power fit" in text and f"wrote {out}" in text
    before, after = read_checkpoint(source), read_checkpoint(out)
    assert after[CHECKSUM_KEY] == before[CHECKSUM_KEY]
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before["state_dict"].items())
    calib = C.Calibration.from_dict(after["meta"]["calibration"])
    assert calib.input_size == SIZE and calib.aspect is True and "scene" in calib.fitted_on
    assert fastsal.load(out, backend="torch").calibration == calib


def test_cli_calibrate_errors_are_one_line(tmp_path, capsys):
    source = teacher_checkpoint(tmp_path / "plain.pt")
    write_scene(tmp_path / "scene")
    cases = [
        (["--weights", str(source), "--data", f"scene={tmp_path / 'scene'}", "-o", str(source)], "not the source"),
        (["--weights", str(source), "--data", f"scene={tmp_path / 'nowhere'}", "-o", str(tmp_path / "a.pt")], "nowhere"),
        (["--weights", str(tmp_path / "missing.pt"), "--data", "scene", "-o", str(tmp_path / "a.pt")], "missing.pt"),
        (["--weights", str(source), "--data", ",", "-o", str(tmp_path / "a.pt")], "data is empty"),
    ]
    for args, needle in cases:
        code = main(["calibrate", *args, "--backend", "torch", "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.startswith("fastsal: error:") and "\n" not in err and needle in err, err
    assert not (tmp_path / "a.pt").exists()


def test_malformed_calibration_is_a_one_line_error(tmp_path):
    path = _calibrated(tmp_path, {**CALIB, "temperature": float("nan")}, "bad.pt")
    with pytest.raises(C.CalibrationError, match=r"meta\['calibration'\]\['temperature'\]"):
        fastsal.load(path, backend="torch")
    bad_form = _calibrated(tmp_path, {**CALIB, "form": "cubic"}, "bad2.pt")
    with pytest.raises(C.CalibrationError, match="form"):
        fastsal.load(bad_form, backend="torch")


def test_teacher_hash_holds_for_uncalibrated_sources_and_tracks_a_calibration(tmp_path):
    from fastsal.teacher import Teacher

    _calibrated(tmp_path)  # writes plain.pt and cal.pt (the same weights)
    plain = Teacher([str(tmp_path / "plain.pt")], backend="torch", threads=1)
    assert "calibration" not in plain.identity()["sources"][0]  # hashes of earlier labels unchanged
    cal = Teacher([str(tmp_path / "cal.pt")], backend="torch", threads=1)
    assert cal.identity()["sources"][0]["calibration"]["temperature"] == 1.6


@pytest.mark.parametrize("form", C.FORMS)
def test_analytic_gradient_matches_finite_differences(form):
    data = _synthetic(2.0, n_images=6)
    theta = np.array([0.2, 0.3, 0.45, 0.55, np.log(0.2), np.log(0.35)])
    _, grad = C.objective_and_gradient(data, theta, form)
    for k in range(6):
        step = np.zeros(6)
        step[k] = 1e-6
        fd = (C.objective(data, C._unpack(theta + step, form)) - C.objective(data, C._unpack(theta - step, form))) / 2e-6
        assert abs(grad[k] - fd) < 1e-5 * max(1.0, abs(fd)), (k, grad[k], fd)


def test_calibrated_false_gives_the_networks_own_density(tmp_path):
    """The shipped default carries a calibration; ``calibrated=False`` (``--uncalibrated``) leaves it
    out: log-softmax + blur, exactly, and a different map from the calibrated one."""
    kw = dict(backend="torch", threads=1, input_size=(64, 96), aspect=False)
    cal, raw = fastsal.load("default", **kw), fastsal.load("default", calibrated=False, **kw)
    assert cal.calibration is not None and raw.calibration is None and raw.settings()["calibration"] is None
    x = raw.preprocess(_image())[None]
    with torch.inference_mode():
        logits = raw.runner(x).reshape(1, -1).astype(np.float64)
    flat = logits - logits.max()
    flat = flat - np.log(np.exp(flat).sum())
    prob = ndimage.gaussian_filter(np.exp(flat.reshape(1, 64, 96)), sigma=(0, raw.blur_sigma, raw.blur_sigma),
                                   mode="nearest")
    prob /= prob.sum()
    assert np.array_equal(raw.small_log_density(x), np.log(np.maximum(prob, np.finfo(np.float64).tiny)))
    assert not np.allclose(cal.small_log_density(x), raw.small_log_density(x), atol=1e-3)
    # the command line: --uncalibrated writes the same map as the Python keyword
    img = tmp_path / "a.png"
    Image.fromarray(_image()).save(img)
    for flag_on, name in ((True, "raw.npy"), (False, "cal.npy")):
        argv = ["predict", str(img), "-o", str(tmp_path / name), "--backend", "torch", "--threads", "1",
                "--input-size", "64x96", "--squash", *(["--uncalibrated"] if flag_on else [])]
        assert main(argv) == 0
    assert np.allclose(np.load(tmp_path / "raw.npy"), raw.predict(_image()), atol=1e-7)
    assert np.allclose(np.load(tmp_path / "cal.npy"), cal.predict(_image()), atol=1e-7)
