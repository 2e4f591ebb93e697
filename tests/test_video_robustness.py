"""Video runs that meet bad inputs, bad outputs and signals: a bad video in a folder is skipped and
listed, a damaged one is not passed off as whole, unwritable outputs fail in one line before any
frame is decoded, SIGTERM cleans up. Clips are synthesised here (tiny MJPG .avi files); every
output that exists afterwards must decode."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

import fastsal  # noqa: E402
from fastsal.cli import main  # noqa: E402
from fastsal.files import OutputError  # noqa: E402
from fastsal.predict import Predictor  # noqa: E402
from fastsal.video import (  # noqa: E402
    ShortVideoError,
    VideoError,
    VideoJob,
    lost_frames,
    predict_video,
    run_videos,
)

torch.set_num_threads(1)

T, H, W, FPS = 10, 48, 64, 10.0


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return fastsal.load(threads=1)


def make_clip(path: Path, frames: int = T, size: tuple[int, int] = (H, W)) -> Path:
    """A bright square moving over a textured background, as MJPG in an .avi (every OpenCV wheel writes it)."""
    h, w = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    if not writer.isOpened():
        pytest.skip("OpenCV here cannot write MJPG .avi")
    background = np.random.default_rng(0).integers(0, 40, (h, w, 3), dtype=np.uint8)
    for t in range(frames):
        frame = background.copy()
        x = (4 + 3 * t) % max(w - 16, 1)
        frame[h // 4:h // 4 + 16, x:x + 16] = (40, 220, 250)
        writer.write(frame)
    writer.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def stated_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    cap.release()
    return n


def short_clip(folder: Path, name: str = "damaged.avi") -> Path:
    """A truncated MJPG .avi: the header states T frames, about half decode. Skips where OpenCV
    decodes such a file otherwise (refuses it, or finds all frames)."""
    whole = make_clip(folder / f".whole-{name}")
    data = whole.read_bytes()
    whole.unlink()
    path = folder / name
    path.write_bytes(data[: len(data) // 2])
    decoded, stated = count_frames(path), stated_frames(path)
    if stated != T or decoded == 0 or not lost_frames(decoded, stated):
        pytest.skip(f"this OpenCV decodes a half-truncated MJPG .avi as {decoded} of {stated} frames, not short")
    return path


def all_outputs_decode(folder: Path) -> None:
    """Every file left under ``folder`` is a complete output: videos decode, .npy loads, JSON parses;
    no temporaries."""
    for f in folder.rglob("*"):
        if f.is_dir():
            continue
        assert ".tmp" not in f.name, f"temporary left behind: {f}"
        if f.suffix in (".mp4", ".avi"):
            assert count_frames(f) > 0, f"{f} does not decode"
        elif f.suffix == ".npy":
            assert np.load(f).ndim == 3
        elif f.suffix == ".json":
            json.loads(f.read_text())


def error_lines(err: str) -> list[str]:
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("fastsal: error:")]


# 1. one unreadable video in a folder


@pytest.fixture()
def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "good.avi")
    (folder / "junk.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    (folder / "empty.avi").write_bytes(b"")
    return folder


def test_bad_videos_in_folder_are_skipped_and_listed(bad_folder: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(bad_folder), "-o", str(out), "--npy", "--threads", "1", "-q"]) == 0
    cap = capsys.readouterr()
    assert count_frames(out / "good.mp4") == T and np.load(out / "good.npy").shape[0] == T
    skipped = [ln for ln in cap.err.splitlines() if ln.startswith("fastsal: skipped ")]
    assert len(skipped) == 2 and "Traceback" not in cap.err
    assert any("junk.mp4: " in ln for ln in skipped) and any("empty.avi: " in ln for ln in skipped)
    manifest = json.loads((out / "manifest-videos.json").read_text())
    assert [Path(w["input"]).name for w in manifest["written"]] == ["good.avi"]
    assert manifest["written"][0]["complete"] and manifest["written"][0]["frames"] == T
    assert sorted(Path(f["input"]).name for f in manifest["failed"]) == ["empty.avi", "junk.mp4"]
    assert manifest["complete"] and manifest["settings"]["model"]
    all_outputs_decode(out)

    # a rerun keeps the written one and tries the bad ones again
    stamp = (out / "good.mp4").stat().st_mtime_ns
    assert main(["predict", str(bad_folder), "-o", str(out), "--npy", "--threads", "1", "-q"]) == 0
    assert (out / "good.mp4").stat().st_mtime_ns == stamp
    manifest = json.loads((out / "manifest-videos.json").read_text())
    assert manifest["skipped_existing"] == 1 and len(manifest["failed"]) == 2


def test_all_videos_bad_exits_1(bad_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (bad_folder / "good.avi").unlink()
    out = tmp_path / "out"
    assert main(["predict", str(bad_folder), "-o", str(out), "--threads", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert err.count("fastsal: skipped ") == 2 and not error_lines(err)
    assert len(json.loads((out / "manifest-videos.json").read_text())["failed"]) == 2
    all_outputs_decode(out)


def test_strict_stops_at_first_bad_video(bad_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["predict", str(bad_folder), "-o", str(out), "--strict", "--threads", "1", "-q"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "empty.avi" in lines[0]  # sorted: empty.avi comes first
    manifest = json.loads((out / "manifest-videos.json").read_text())
    assert not manifest["complete"] and [Path(f["input"]).name for f in manifest["failed"]] == ["empty.avi"]
    assert not (out / "good.mp4").exists()
    all_outputs_decode(out)


def test_bad_video_beside_good_image(bad_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """At least one input written: exit 0, whether it is a video or an image."""
    from PIL import Image

    (bad_folder / "good.avi").unlink()
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(bad_folder / "photo.png")
    out = tmp_path / "out"
    assert main(["predict", str(bad_folder), "-o", str(out), "--threads", "1"]) == 0
    err = capsys.readouterr().err
    assert err.count("fastsal: skipped ") == 2 and "0 videos written" in err and "Traceback" not in err
    assert (out / "photo.png").is_file() and (out / "manifest.json").is_file()
    all_outputs_decode(out)


def test_run_videos_api(predictor: Predictor, bad_folder: Path, tmp_path: Path) -> None:
    skipped: list[str] = []
    jobs = [VideoJob(bad_folder / n, tmp_path / f"{n}.mp4") for n in ("junk.mp4", "good.avi")]
    report = run_videos(predictor, jobs, progress=False, manifest=tmp_path / "m.json", on_skip=skipped.append)
    assert len(report["written"]) == 1 and len(report["failed"]) == 1 and len(skipped) == 1
    assert json.loads((tmp_path / "m.json").read_text()) == json.loads(json.dumps(report))
    with pytest.raises(VideoError, match="junk.mp4"):
        run_videos(predictor, jobs, progress=False, strict=True, overwrite=True)


# 2. a damaged video


def test_short_video_raises_and_writes_nothing(predictor: Predictor, tmp_path: Path) -> None:
    clip = short_clip(tmp_path)
    decoded = count_frames(clip)
    out = tmp_path / "out"
    with pytest.raises(ShortVideoError, match=rf"decoded only {decoded} of the {T} frames") as info:
        predict_video(predictor, clip, out / "s.mp4", npy=out / "s.npy", progress=False)
    assert (info.value.frames, info.value.expected) == (decoded, T)
    assert info.value.option == "allow_short" and "(allow_short)" in str(info.value)  # the CLI: --allow-short-video
    assert not out.exists() or list(out.iterdir()) == []

    report = predict_video(predictor, clip, out / "s.mp4", npy=out / "s.npy", progress=False, allow_short=True)
    assert (report.frames, report.expected, report.lost) == (decoded, T, T - decoded)
    assert count_frames(out / "s.mp4") == decoded and np.load(out / "s.npy").shape[0] == decoded


def test_short_video_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = short_clip(tmp_path)
    decoded = count_frames(clip)
    target = tmp_path / "out" / "s.mp4"
    assert main(["predict", str(clip), "-o", str(target), "--npy", "--threads", "1", "-q"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"{decoded} of the {T} frames" in lines[0] and "--allow-short-video" in lines[0]
    assert not target.exists() and not target.with_suffix(".npy").exists()

    assert main(["predict", str(clip), "-o", str(target), "--npy", "--threads", "1", "-q",
                 "--allow-short-video"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"warning: {clip}: decoded only {decoded} of the {T} frames" in err
    assert count_frames(target) == decoded and np.load(target.with_suffix(".npy")).shape[0] == decoded
    all_outputs_decode(tmp_path / "out")


def test_short_video_in_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    short_clip(folder, "a_damaged.avi")
    make_clip(folder / "b_good.avi")
    out = tmp_path / "out"
    assert main(["predict", str(folder), "-o", str(out), "--threads", "1", "-q"]) == 0
    err = capsys.readouterr().err
    assert err.count("fastsal: skipped ") == 1 and "a_damaged.avi: decoded only" in err
    manifest = json.loads((out / "manifest-videos.json").read_text())
    assert manifest["failed"][0]["expected"] == T and manifest["failed"][0]["frames"] < T
    assert not (out / "a_damaged.mp4").exists() and count_frames(out / "b_good.mp4") == T

    assert main(["predict", str(folder), "-o", str(out), "--threads", "1", "-q", "--allow-short-video"]) == 0
    written = json.loads((out / "manifest-videos.json").read_text())["written"]
    assert [e.get("earlier_run", False) for e in written] == [True, False]  # b_good kept, a_damaged written
    entry = written[1]
    assert Path(entry["input"]).name == "a_damaged.avi" and entry["complete"] is False and entry["expected"] == T
    all_outputs_decode(out)


def test_lost_frames_tolerance() -> None:
    assert lost_frames(10, None) == 0 and lost_frames(10, 10) == 0 and lost_frames(12, 10) == 0
    assert lost_frames(998, 1000) == 0 and lost_frames(5, 10) == 5 and lost_frames(900, 1000) == 100


# 3. unwritable outputs


@pytest.fixture()
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records every cv2.VideoCapture opened: an output error must come before any."""
    opened: list = []
    real = cv2.VideoCapture

    def capture(*args):
        opened.append(args)
        return real(*args)

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    return opened


@pytest.mark.parametrize("case", ["folder", "under_file", "npy_folder"])
def test_unwritable_output(case: str, tmp_path: Path, capsys: pytest.CaptureFixture, no_decoding: list) -> None:
    clip = make_clip(tmp_path / "clip.avi")
    no_decoding.clear()
    extra: list[str] = []
    if case == "folder":
        target = tmp_path / "dir.mp4"
        target.mkdir()
        named = "dir.mp4: is a folder"
    elif case == "under_file":
        (tmp_path / "afile").write_text("x")
        target = tmp_path / "afile" / "clip.mp4"
        named = "afile is a file"
    else:
        target = tmp_path / "sal.mp4"
        (tmp_path / "sal.npy").mkdir()
        extra = ["--npy"]
        named = "sal.npy: is a folder"
    assert main(["predict", str(clip), "-o", str(target), *extra, "--threads", "1", "-q"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and named in lines[0], lines
    assert no_decoding == []
    assert not (tmp_path / "sal.mp4").exists()
    all_outputs_decode(tmp_path)


@pytest.fixture()
def read_only_dir(tmp_path: Path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.parametrize("target", ["ro/clip.mp4", "ro", "ro/sub/clip.mp4"])
def test_read_only_output(target: str, read_only_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                          no_decoding: list) -> None:
    clip = make_clip(tmp_path / "clip.avi")
    no_decoding.clear()
    assert main(["predict", str(clip), "-o", str(tmp_path / target), "--npy", "--threads", "1", "-q"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "Read-only file system" in lines[0] and str(read_only_dir) in lines[0]
    assert ".tmp" not in lines[0]  # names the user's path, not a temporary
    assert no_decoding == [] and list(read_only_dir.iterdir()) == []


def test_output_checked_before_decoding_api(predictor: Predictor, tmp_path: Path, no_decoding: list) -> None:
    clip = make_clip(tmp_path / "clip.avi")
    (tmp_path / "afile").write_text("x")
    no_decoding.clear()
    with pytest.raises(OutputError, match="afile is a file"):
        predict_video(predictor, clip, tmp_path / "ok.mp4", npy=tmp_path / "afile" / "m.npy", progress=False)
    assert no_decoding == [] and not (tmp_path / "ok.mp4").exists()


# 4. a camera that does not exist


def test_missing_camera(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    class NoCamera:
        def __init__(self, *args) -> None:
            pass

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return False

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", NoCamera)
    assert main(["predict", "--camera", "7", "-o", str(tmp_path / "cam.mp4"), "--threads", "1", "-q"]) == 2
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and "camera 7: cannot open" in err
    assert list(tmp_path.iterdir()) == []


# 5. SIGTERM

_CHILD = """
import sys

import cv2

if {camera!r}:  # camera 0 reads the clip, as if it were live
    real = cv2.VideoCapture
    cv2.VideoCapture = lambda src, *a: real({clip!r}) if isinstance(src, int) else real(src, *a)
from fastsal.cli import main

sys.exit(main({argv!r}))
"""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed into place between glob and stat
        return 0


def run_until_writing(argv: list[str], watch: Path, name: str, clip: str = "", camera: bool = False,
                      timeout: float = 240.0) -> tuple[int, str]:
    """Start ``fastsal`` in a subprocess, send SIGTERM once the temporary of ``watch/name`` (a .npy)
    holds a frame (the run is mid-video), and return its exit status and stderr."""
    script = textwrap.dedent(_CHILD.format(camera=camera, clip=clip, argv=argv))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while True:
            temps = [f for f in watch.glob(f".{name}.*.tmp.npy") if _size(f) > 200_000] if watch.is_dir() else []
            if temps:
                break
            if proc.poll() is not None:
                pytest.fail(f"finished before SIGTERM could be sent: {proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                pytest.fail("no frame written within the timeout")
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode()


def test_sigterm_file_run_removes_partial_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    make_clip(folder / "a.avi", frames=3)
    make_clip(folder / "b.avi", frames=3000)
    out = tmp_path / "out"
    argv = ["predict", str(folder), "-o", str(out), "--npy", "--threads", "1", "-q", "--backend", "torch"]
    code, err = run_until_writing(argv, out, "b.npy")
    assert code == 143, err
    assert "Traceback" not in err and "fastsal: stopped by SIGTERM" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.mp4", "a.npy", "manifest-videos.json"]
    manifest = json.loads((out / "manifest-videos.json").read_text())
    assert manifest["stopped_by"] == "SIGTERM" and not manifest["complete"] and len(manifest["written"]) == 1
    all_outputs_decode(out)


def test_sigterm_camera_keeps_recording(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "live.avi", frames=3000)
    out = tmp_path / "out"
    argv = ["predict", "--camera", "0", "-o", str(out / "cam.mp4"), "--npy", "--threads", "1", "--backend", "torch"]
    code, err = run_until_writing(argv, out, "cam.npy", clip=str(clip), camera=True)
    assert code == 0, err
    assert "Traceback" not in err and "(stopped by SIGTERM)" in err
    assert sorted(p.name for p in out.iterdir()) == ["cam.mp4", "cam.npy"]
    frames = count_frames(out / "cam.mp4")
    assert 0 < frames < 3000 and np.load(out / "cam.npy").shape[0] == frames
