"""One decode path: the same large JPEG gives the same map through every entry point (issue 21).

A 3000x2000 photo stored sideways (EXIF orientation 6, so 2000 wide and 3000 high as shown) goes
through ``fastsal predict FILE -o x.npy``, ``fastsal predict FOLDER`` (the job layer's MapTask),
the crop search's density, the server's ``/v1/predict?map=npy`` and ``Predictor.predict``: all
decode with :meth:`fastsal.predict.Predictor.read`, so their maps agree to float rounding
(:data:`SAME`). Video frames are arrays, so the video pipeline shares the array -> network input
step: its map of the decoded frame equals ``Predictor.predict`` of that array (:data:`SAME`); a
file is decoded at a reduced JPEG scale where an array is not, so array and file maps agree to
:data:`DECODER` (measured: 1.9 % of the peak at most, correlation 0.9997).
"""
from __future__ import annotations

import base64
import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastsal
from fastsal.cli import main
from fastsal.images import load_rgb

# Largest |difference| between two maps as a share of the first map's peak: float rounding only
# (the same pixels through the same network; batching and the engine's threads may reorder sums).
SAME = 1e-5
# A JPEG decoded at a reduced DCT scale (a file) against a full decode then resized (an array):
# measured 1.9 % of the peak at most and a correlation of 0.9997 on this photo.
DECODER = 0.05
DECODER_MIN_CC = 0.999


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory) -> Path:
    """3000x2000 pixels stored, EXIF orientation 6 (rotate 90 degrees clockwise to view)."""
    h, w = 2000, 3000
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rng = np.random.default_rng(21)
    rgb = np.stack([
        128 + 100 * np.sin(xx / 170.0) * np.cos(yy / 230.0),
        128 + 90 * np.cos((xx + yy) / 310.0),
        np.full((h, w), 90.0),
    ], axis=2)
    for _ in range(6):  # a few bright blobs, so the map has places to look at
        cy, cx, r = rng.integers(200, h - 200), rng.integers(200, w - 200), rng.integers(60, 180)
        rgb[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = tmp_path_factory.mktemp("big")
    path = folder / "photo.jpg"
    img.save(path, "JPEG", quality=92, exif=exif)
    return path


@pytest.fixture(scope="module")
def predictor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fastsal.load("default", backend="torch", threads=1)


@pytest.fixture(scope="module")
def reference(predictor, big_jpeg) -> np.ndarray:
    prob = predictor.predict(big_jpeg)
    assert prob.shape == (3000, 2000)  # oriented as shown, not as stored
    return prob


def _close(got: np.ndarray, want: np.ndarray, tol: float) -> None:
    assert got.shape == want.shape
    err = float(np.abs(got.astype(np.float64) - want).max()) / float(want.max())
    assert err <= tol, f"maps differ by {err:.2e} of the peak (allowed {tol:.0e})"


def test_read_is_what_predict_decodes(predictor, big_jpeg, reference):
    small, size = predictor.read(big_jpeg)
    assert size == (3000, 2000) and small.shape[:2] == predictor.input_size_for(size)
    with open(big_jpeg, "rb") as fh:  # a stream (an upload) decodes the same
        small2, size2 = predictor.read(fh)
    assert size2 == size and np.array_equal(small, small2)
    _close(predictor.predict_batch([big_jpeg])[0], reference, SAME)


def test_cli_predict_one_file(big_jpeg, reference, tmp_path):
    out = tmp_path / "one.npy"
    assert main(["predict", str(big_jpeg), "-o", str(out), "--backend", "torch", "--threads", "1"]) == 0
    _close(np.load(out), reference, SAME)


def test_cli_predict_folder_job_layer(big_jpeg, reference, tmp_path):
    out = tmp_path / "maps"
    assert main(["predict", str(big_jpeg.parent), "-o", str(out), "--format", "npy", "--backend", "torch",
                 "--threads", "1"]) == 0
    _close(np.load(next(out.rglob("photo*.npy"))), reference, SAME)


def test_crop_density(predictor, big_jpeg, reference):
    from fastsal.cropping import small_density
    from fastsal.predict import postprocess

    density, size = small_density(predictor, big_jpeg)
    assert size == (3000, 2000)
    _close(postprocess(np.log(np.maximum(density, np.finfo(np.float64).tiny)), size), reference, SAME)


def test_server_npy(predictor, big_jpeg, reference):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from fastsal.serve import ServeConfig, create_app

    config = ServeConfig(threads=1)
    with TestClient(create_app(config, load=lambda source: predictor), base_url="http://127.0.0.1") as c:
        r = c.post("/v1/predict?map=npy&top_k=0", files={"image": ("p.jpg", big_jpeg.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    _close(np.load(io.BytesIO(base64.b64decode(r.json()["npy"]))), reference, SAME)


def test_video_frames_share_the_array_step(predictor, big_jpeg, reference):
    """A frame (an array) through the video pipeline gives ``Predictor.predict`` of that array; that
    and the file's map differ only by the file's reduced-scale JPEG decode."""
    from fastsal.video import _maps

    rgb = load_rgb(big_jpeg)  # as a lossless video would hand it over: oriented, fully decoded

    class Frames:  # the capture's interface: RGB frames in order
        def frames(self, max_frames):
            yield rgb

    video_map = next(_maps(predictor, Frames(), 0.0, 1, None)).map
    _close(video_map, predictor.predict(rgb), SAME)
    _close(video_map, reference, DECODER)
    assert np.corrcoef(video_map.ravel(), reference.ravel())[0, 1] >= DECODER_MIN_CC
