"""Video and camera inference: round trip through real containers, agreement with per-image
predict, smoothing, Ctrl-C handling and error messages. Clips are tiny (12 frames of 96x128)."""
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

import fastsal  # noqa: E402
from fastsal import video  # noqa: E402
from fastsal.predict import Predictor  # noqa: E402
from fastsal.video import VideoError, is_video, iter_video, predict_video  # noqa: E402

torch.set_num_threads(1)

T, H, W, FPS = 12, 96, 128, 10.0


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return fastsal.load(threads=1)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bright square moving left to right on a dark, slightly textured background."""
    folder = tmp_path_factory.mktemp("clip")
    rng = np.random.default_rng(0)
    background = rng.integers(0, 40, (H, W, 3), dtype=np.uint8)
    for name, fourcc in (("clip.mp4", "mp4v"), ("clip.avi", "MJPG")):
        path = folder / name
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), FPS, (W, H))
        if not writer.isOpened():
            continue
        for t in range(T):
            frame = background.copy()
            x = 8 + t * 8
            frame[30:62, x:x + 32] = (40, 220, 250)
            writer.write(frame)
        writer.release()
        if decode(path):
            return path
    pytest.skip("OpenCV here can write neither mp4v .mp4 nor MJPG .avi")


def decode(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


def mean_flicker(maps: np.ndarray) -> float:
    return float(np.abs(np.diff(maps.astype(np.float64), axis=0)).mean())


def test_is_video() -> None:
    assert is_video("a/b.MP4") and is_video(Path("x.webm")) and is_video("clip.mpeg")
    assert not is_video("photo.jpg") and not is_video("mp4") and not is_video("maps.npy")


def test_round_trip(predictor: Predictor, clip: Path, tmp_path: Path) -> None:
    out, npy = tmp_path / "sal.mp4", tmp_path / "maps.npy"
    report = predict_video(predictor, clip, out, npy=npy, progress=False)
    assert report.frames == T and report.out == out and report.npy == npy and not report.interrupted
    assert report.fps_in == pytest.approx(FPS, rel=0.01) and report.fps > 0 and report.seconds > 0

    cap = cv2.VideoCapture(str(out))
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(FPS, rel=0.01)
    cap.release()
    written = decode(out)
    assert len(written) == T and written[0].shape == (H, W, 3)

    maps = np.load(npy)
    assert maps.shape == (T, *predictor.input_size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-4)
    assert leftovers(tmp_path, {"sal.mp4", "maps.npy"}) == []


def test_overlay_avi_and_max_frames(predictor: Predictor, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "sal.avi"
    report = predict_video(predictor, clip, out, overlay=True, fourcc="MJPG", max_frames=5, progress=False)
    assert report.frames == 5 and report.npy is None
    written = decode(out)
    assert len(written) == 5 and written[0].shape == (H, W, 3)
    # Overlay keeps the scene: the frame and its overlay are correlated, the plain heat map is not the frame.
    frame = decode(clip)[0].astype(np.float64)
    assert np.corrcoef(frame.ravel(), written[0].astype(np.float64).ravel())[0, 1] > 0.3


def test_maps_match_predict_and_batching(predictor: Predictor, clip: Path, tmp_path: Path) -> None:
    frames = decode(clip)
    items = list(iter_video(predictor, clip, batch_size=4))
    assert [it.index for it in items] == list(range(T))
    for item, rgb in zip(items, frames):
        np.testing.assert_array_equal(item.rgb, rgb)  # decoding is deterministic
        expected = predictor.predict(rgb)
        np.testing.assert_allclose(item.map, expected, rtol=1e-4, atol=1e-4 * expected.max())

    one, four = tmp_path / "b1.npy", tmp_path / "b4.npy"
    predict_video(predictor, clip, npy=one, batch_size=1, progress=False)
    predict_video(predictor, clip, npy=four, batch_size=4, progress=False)
    a, b = np.load(one), np.load(four)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * a.max())
    np.testing.assert_allclose(a, np.stack([np.exp(it.log_density) for it in items]), rtol=1e-5, atol=1e-9)


def test_smoothing(predictor: Predictor, clip: Path) -> None:
    a = 0.7
    raw = [it.log_density for it in iter_video(predictor, clip)]
    smooth = [it.log_density for it in iter_video(predictor, clip, smoothing=a)]
    np.testing.assert_allclose(smooth[0], raw[0])
    state = raw[0]
    for t in range(1, T):
        state = a * state + (1 - a) * raw[t]
        state = state - np.log(np.exp(state).sum())
        np.testing.assert_allclose(smooth[t], state, atol=1e-8)
        assert np.exp(smooth[t]).sum() == pytest.approx(1.0)
    assert not np.allclose(smooth[-1], raw[-1])
    assert mean_flicker(np.exp(np.stack(smooth))) < mean_flicker(np.exp(np.stack(raw)))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_smoothing_range(predictor: Predictor, clip: Path, tmp_path: Path, bad: float) -> None:
    with pytest.raises(ValueError, match="smoothing"):
        predict_video(predictor, clip, tmp_path / "x.mp4", smoothing=bad, progress=False)
    assert leftovers(tmp_path, set()) == []


def test_bad_sources(predictor: Predictor, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    with pytest.raises(VideoError, match="missing.mp4: no such file"):
        predict_video(predictor, missing, tmp_path / "x.mp4", progress=False)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    with pytest.raises(VideoError, match="notes.mp4") as info:
        predict_video(predictor, text, tmp_path / "x.mp4", npy=tmp_path / "x.npy", progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(VideoError, match="folder"):
        predict_video(predictor, tmp_path, progress=False)
    with pytest.raises(VideoError, match="camera 99"):
        predict_video(predictor, 99, tmp_path / "x.mp4", progress=False)
    assert leftovers(tmp_path, {"notes.mp4"}) == []


def test_bad_outputs(predictor: Predictor, clip: Path, tmp_path: Path) -> None:
    with pytest.raises(VideoError, match=r"sal\.xyz.*\.mp4"):
        predict_video(predictor, clip, tmp_path / "sal.xyz", npy=tmp_path / "m.npy", progress=False)
    with pytest.raises(VideoError, match="input video"):
        predict_video(predictor, clip, clip, progress=False)
    with pytest.raises(ValueError, match="fourcc"):
        predict_video(predictor, clip, tmp_path / "a.mp4", fourcc="h264x", progress=False)
    assert leftovers(tmp_path, set()) == []


def test_missing_opencv(monkeypatch: pytest.MonkeyPatch, predictor: Predictor, clip: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def no_cv2(name, *args, **kwargs):
        if name == "cv2":
            raise ImportError("No module named 'cv2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cv2)
    with pytest.raises(VideoError, match=r"fastsal\[video\]"):
        predict_video(predictor, clip, progress=False)


class _Interrupting:
    """A predictor whose model call raises KeyboardInterrupt on call ``at`` (as Ctrl-C would)."""

    def __init__(self, real: Predictor, at: int) -> None:
        self.real, self.at, self.calls = real, at, 0
        self.preprocess = real.preprocess

    def small_log_density(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.real.small_log_density(batch)


def test_ctrl_c_camera_keeps_output(monkeypatch: pytest.MonkeyPatch, predictor: Predictor, clip: Path,
                                    tmp_path: Path) -> None:
    class FakeCamera(video._Capture):  # the clip, read as if it were a live camera
        def __init__(self, source) -> None:
            super().__init__(source)
            self.camera, self.count, self.name = True, None, "camera 0"

    monkeypatch.setattr(video, "_Capture", FakeCamera)
    out, npy = tmp_path / "cam.mp4", tmp_path / "cam.npy"
    report = predict_video(_Interrupting(predictor, at=3), clip, out, npy=npy, batch_size=2, progress=False)
    assert report.interrupted and report.frames == 4
    assert len(decode(out)) == 4
    assert np.load(npy).shape == (4, *predictor.input_size)
    assert leftovers(tmp_path, {"cam.mp4", "cam.npy"}) == []


def test_stop_between_outputs_finishes_the_frame(monkeypatch: pytest.MonkeyPatch, predictor: Predictor,
                                                 clip: Path, tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM) after a frame went into the video but before its .npy append: the frame
    is finished, so both outputs hold the same frames (it once left the video one frame ahead)."""
    class FakeCamera(video._Capture):
        def __init__(self, source) -> None:
            super().__init__(source)
            self.camera, self.count, self.name = True, None, "camera 0"

    real_append = video._NpyFrames.append
    calls = []

    def append(self, frame: np.ndarray) -> None:
        calls.append(1)
        if len(calls) == 3:  # the signal lands once: the handler raises, then the frame is finished
            calls.append(1)
            raise KeyboardInterrupt
        real_append(self, frame)

    monkeypatch.setattr(video, "_Capture", FakeCamera)
    monkeypatch.setattr(video._NpyFrames, "append", append)
    out, npy = tmp_path / "cam.mp4", tmp_path / "cam.npy"
    report = predict_video(predictor, clip, out, npy=npy, batch_size=2, progress=False)
    assert report.interrupted and report.frames == 3
    assert len(decode(out)) == 3 and np.load(npy).shape == (3, *predictor.input_size)
    assert leftovers(tmp_path, {"cam.mp4", "cam.npy"}) == []


def test_ctrl_c_file_leaves_nothing(predictor: Predictor, clip: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt):
        predict_video(_Interrupting(predictor, at=2), clip, tmp_path / "x.mp4", npy=tmp_path / "x.npy",
                      batch_size=2, progress=False)
    assert leftovers(tmp_path, set()) == []


def test_cli_video_round_trip_and_resume(clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fastsal.cli import main

    out = tmp_path / "sal.mp4"
    args = ["predict", str(clip), "-o", str(out), "--overlay", "--npy", "--smoothing", "0.5", "--threads", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert len(decode(out)) == T and decode(out)[0].shape == (H, W, 3)
    maps = np.load(tmp_path / "sal.npy")
    assert maps.shape[0] == T and np.allclose(maps.sum(axis=(1, 2)), 1.0, atol=1e-4)
    stamp = out.stat().st_mtime_ns
    assert main(args) == 0  # outputs exist: skipped, not redone
    assert out.stat().st_mtime_ns == stamp and "skipped" in capsys.readouterr().err
    # a folder output mirrors the video's name; a video file output needs exactly one video input
    assert main(["predict", str(clip), "-o", str(tmp_path / "folder"), "--threads", "1", "-q"]) == 0
    assert (tmp_path / "folder" / (clip.stem + ".mp4")).is_file()
    assert main(["predict", str(clip), str(clip), "-o", str(tmp_path / "x.mp4"), "-q"]) == 2
    assert "exactly one video" in capsys.readouterr().err


def test_video_folder_binds_settings_before_the_first_video(clip: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture) -> None:
    """Videos in a folder output are bound to their settings before the first one is written
    (a SIGKILL later cannot unbind them): a rerun with another model is refused, not skipped."""
    import json

    from fastsal.cli import main

    out = tmp_path / "folder"
    seen = []
    real = video.predict_video

    def spy(*a, **k):
        record = out / "manifest-videos.json"
        seen.append(json.loads(record.read_text())["settings"]["model"] if record.is_file() else None)
        return real(*a, **k)

    monkeypatch.setattr(video, "predict_video", spy)
    args = ["predict", str(clip), "-o", str(out), "--threads", "1", "-q", "--backend", "torch"]
    assert main([*args, "--model", "fastsal_a"]) == 0
    assert seen == ["fastsal_a"]
    stamp = (out / (clip.stem + ".mp4")).stat().st_mtime_ns
    assert main(args) == 2  # the default model
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other settings" in err[0] and "fastsal_a" in err[0]
    assert (out / (clip.stem + ".mp4")).stat().st_mtime_ns == stamp


def test_mp4_is_h264_where_opencv_writes_it_and_said_when_not(clip: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    """MPEG-4 Part 2 does not play in browsers: H.264 ("avc1") where this OpenCV can encode it
    (checked by writing frames), else mp4v with a note saying so."""
    from fastsal.cli import main

    fourcc, note = video.mp4_codec()
    assert fourcc in ("avc1", "mp4v") and (note is None) == (fourcc == "avc1")
    out = tmp_path / "folder"
    assert main(["predict", str(clip), "-o", str(out), "--threads", "1", "--backend", "torch"]) == 0
    err = capsys.readouterr().err
    cap = cv2.VideoCapture(str(out / (clip.stem + ".mp4")))
    code = int(cap.get(cv2.CAP_PROP_FOURCC))
    cap.release()
    h264 = code.to_bytes(4, "little").decode("ascii", "replace").lower() in ("avc1", "h264")
    assert h264 == (fourcc == "avc1")
    assert ("H.264" in err) == (fourcc == "mp4v")
    assert "h264_v4l2m2m" not in err and "VideoWriter" not in err  # the probe's FFmpeg noise stays hidden
