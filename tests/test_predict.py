"""Inference API: shapes, normalisation, post-processing, loading, viewing helpers.

Runs with whatever weights ship (a placeholder during development): these tests check the
contract (sizes, dtypes, sums, consistency), not the quality of the maps.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import fastsal
import fastsal.runtime
from fastsal.images import ImageError
from fastsal.models import ModelError, build, save_checkpoint
from fastsal.predict import Predictor, example_image, load
from fastsal.runtime import candidates
from fastsal.viewing import colormap, overlay, to_png

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return fastsal.load(threads=1)


@pytest.fixture(scope="module")
def example_rgb() -> np.ndarray:
    return np.asarray(Image.open(example_image()).convert("RGB"))


def random_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def assert_density(m: np.ndarray, shape: tuple[int, int]) -> None:
    assert m.shape == shape
    assert m.dtype == np.float32
    assert np.isfinite(m).all()
    assert m.min() >= 0.0
    assert m.sum(dtype=np.float64) == pytest.approx(1.0, abs=1e-5)


def test_load_default(predictor):
    assert predictor.name == fastsal.models.DEFAULT_MODEL
    assert predictor.backend == candidates("auto")[0][0]  # the fastest installed runtime
    assert predictor.precision == "fp32"
    spec = fastsal.models.weights_for("default")
    assert predictor.input_size == spec.input_size and predictor.aspect == spec.aspect  # as the weights say
    assert predictor.weights_path is not None and predictor.weights_path.is_file()
    assert "Predictor(" in repr(predictor)


def test_predict_path_pil_and_array_agree(predictor, example_rgb):
    path = example_image()
    from_path = predictor.predict(path)
    from_str = predictor.predict(str(path))
    from_pil = predictor.predict(Image.open(path))
    from_array = predictor.predict(example_rgb)
    h, w = example_rgb.shape[:2]
    for m in (from_path, from_str, from_pil, from_array):
        assert_density(m, (h, w))
    np.testing.assert_array_equal(from_path, from_str)
    np.testing.assert_allclose(from_path, from_pil, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(from_path, from_array, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("shape", [(37, 53), (600, 800), (1, 7), (301, 17), (192, 256), (64, 64)])
def test_predict_any_size(predictor, shape):
    assert_density(predictor.predict(random_rgb(*shape)), shape)


def test_predict_grayscale_rgba_and_float_arrays(predictor):
    gray = random_rgb(40, 30)[..., 0]
    rgba = np.dstack([random_rgb(40, 30), np.full((40, 30), 128, np.uint8)])
    floats = random_rgb(40, 30).astype(np.float32) / 255.0
    for image in (gray, rgba, floats):
        assert_density(predictor.predict(image), (40, 30))


def test_bad_array_raises_image_error(predictor):
    with pytest.raises(ImageError):
        predictor.predict(np.zeros((10, 10, 2), np.uint8))


def test_log_density_is_log_of_predict(predictor):
    img = random_rgb(71, 97, seed=3)
    logd = predictor.log_density(img)
    assert logd.shape == (71, 97) and logd.dtype == np.float32
    assert np.isfinite(logd).all()
    np.testing.assert_allclose(np.exp(logd), predictor.predict(img), rtol=1e-5, atol=1e-30)


def test_predict_batch_equals_predict(predictor):
    images = [random_rgb(50, 70, 1), random_rgb(120, 90, 2), random_rgb(33, 33, 3)]
    batched = predictor.predict_batch(images, batch_size=2)
    assert len(batched) == 3
    for img, m in zip(images, batched):
        assert_density(m, img.shape[:2])
        np.testing.assert_allclose(m, predictor.predict(img), rtol=1e-4, atol=1e-9)
    assert predictor.predict_batch([]) == []
    with pytest.raises(ValueError):
        predictor.predict_batch(images, batch_size=0)


def test_input_size_is_settable():
    p = load(input_size=(96, 128), threads=1)
    assert p.input_size == (96, 128)
    assert_density(p.predict(random_rgb(45, 61)), (45, 61))
    p.input_size = (100, 150)  # not multiples of 32: the model adapts
    assert_density(p.predict(random_rgb(45, 61)), (45, 61))
    for bad in [(0, 10), (10,), "big"]:
        with pytest.raises(ValueError):
            p.input_size = bad


class ConstantRunner:
    """Stands in for an engine: any object with the Runner protocol's attributes and call."""

    backend = "constant"
    precision = "fp32"

    def __init__(self, logits_small: np.ndarray) -> None:
        self.logits_small = logits_small
        self.input_size = logits_small.shape

    def __call__(self, batch):
        assert batch.dtype == np.float32 and batch.shape[1:] == (3, *self.input_size)
        assert 0.0 <= batch.min() and batch.max() <= 1.0
        return np.broadcast_to(self.logits_small, (batch.shape[0], 1, *self.input_size)).copy()


def ConstantBackend(logits_small: np.ndarray) -> Predictor:
    runner = ConstantRunner(logits_small)
    assert isinstance(runner, fastsal.runtime.Runner)
    return Predictor(runner, "constant", blur_sigma=0.0)


def test_post_processing_uniform_logits_give_uniform_map():
    p = ConstantBackend(np.zeros((24, 32), np.float32))
    m = p.predict(random_rgb(45, 61))
    np.testing.assert_allclose(m, 1.0 / (45 * 61), rtol=1e-5)


def test_post_processing_keeps_the_peak_and_clamps_undershoot():
    logits = np.full((24, 32), -30.0, np.float32)
    logits[6, 24] = 10.0  # a single-pixel spike: bicubic undershoots around it
    p = ConstantBackend(logits)
    m = p.predict(random_rgb(240, 320))
    assert_density(m, (240, 320))
    y, x = np.unravel_index(np.argmax(m), m.shape)
    assert abs(y - 65) <= 5 and abs(x - 245) <= 5
    logd = p.log_density(random_rgb(240, 320))
    assert np.isfinite(logd).all()  # clamped zeros get a finite floor, not -inf


def test_load_errors(tmp_path, monkeypatch):
    import fastsal.models.registry as R

    monkeypatch.delitem(R.WEIGHTS, "fastsal_c")  # every model ships weights: pretend one does not
    with pytest.raises(ModelError, match="unknown model"):
        load("no_such_model")
    with pytest.raises(ModelError, match="no shipped weights.*checkpoint file"):
        load("fastsal_c")
    with pytest.raises(ModelError, match="not found"):
        load(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="not found"):
        load("runs/missing/best.pt")
    with pytest.raises(ModelError, match="folder"):
        load(tmp_path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError):
        load(junk)


def test_load_checkpoint_file(tmp_path):
    path = save_checkpoint(build("fastsal_bare"), "fastsal_bare", tmp_path / "bare.pt", meta={"note": "x"})
    for arg in (path, str(path)):
        p = load(arg, input_size=(64, 96), threads=1)
        assert p.name == "fastsal_bare"
        assert p.meta == {"note": "x"}
        assert_density(p.predict(random_rgb(20, 30)), (20, 30))


def test_to_png():
    m = np.array([[0.0, 0.5], [0.25, 1.0]], np.float32)
    png = to_png(m)
    assert png.dtype == np.uint8 and png.shape == (2, 2)
    assert png.min() == 0 and png.max() == 255 and png[1, 0] == 64
    assert (to_png(np.full((3, 4), 0.1)) == 0).all()
    with pytest.raises(ValueError):
        to_png(np.zeros((2, 2, 2)))


def test_colormap_is_inferno():
    lut = colormap(np.arange(256, dtype=np.uint8))
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert tuple(lut[0]) == (0, 0, 4) and tuple(lut[255]) == (252, 255, 164)
    luminance = lut.astype(float) @ [0.2126, 0.7152, 0.0722]
    assert (np.diff(luminance) > -0.5).all()  # perceptually ordered: dark -> bright
    mpl = pytest.importorskip("matplotlib")
    ref = np.array([mpl.colormaps["inferno"](i)[:3] for i in range(256)]) * 255
    assert np.abs(lut - ref).max() <= 2


def test_overlay(example_rgb):
    h, w = example_rgb.shape[:2]
    m = np.zeros((h, w), np.float32)
    m[h // 2, w // 2] = 1.0
    out = overlay(example_rgb, m)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(overlay(example_rgb, m, alpha=0.0), example_rgb)
    np.testing.assert_array_equal(overlay(example_rgb, m, alpha=1.0), colormap(to_png(m)))
    small = overlay(example_rgb, np.ones((6, 8), np.float32))  # other sizes are resized
    assert small.shape == (h, w, 3)
    assert overlay(example_image(), m).shape == (h, w, 3)  # paths work too
    with pytest.raises(ValueError):
        overlay(example_rgb, m, alpha=1.5)


def test_import_is_light_and_lazy():
    code = ("import sys, fastsal; assert 'torch' not in sys.modules; "
            "assert fastsal.__version__ == '0.1.0'; assert callable(fastsal.load); "
            "assert {'load', 'Predictor', 'to_png', 'overlay'} <= set(dir(fastsal))")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(AttributeError):
        fastsal.no_such_name  # noqa: B018


def test_blur_smooths_the_density_and_keeps_its_mass():
    logits = np.full((24, 32), -30.0, np.float32)
    logits[12, 16] = 10.0
    sharp = ConstantBackend(logits)
    blurred = ConstantBackend(logits)
    blurred.blur_sigma = 2.0
    a, b = sharp.predict(random_rgb(24, 32)), blurred.predict(random_rgb(24, 32))
    assert_density(b, (24, 32))
    assert b.max() < 0.2 * a.max()  # a sigma-2 Gaussian holds ~4 % of its mass in the peak pixel
    assert np.unravel_index(np.argmax(b), b.shape) == (12, 16)
