"""Saliency on video files and cameras: frames in, a heat-map video and/or a stack of maps out.

Frames are decoded with OpenCV (an optional dependency: ``pip install 'fastsal[video]'``, which
installs ``opencv-python-headless``), batched through the model at its input size and written
frame by frame, so memory stays flat however long the video or camera session runs.

Temporal smoothing. A per-frame model flickers: small changes between frames move the peaks. With
``smoothing=a`` each frame's log-density is an exponential moving average of the frames so far,
``s_t = a * s_{t-1} + (1 - a) * l_t``, renormalised to sum to 1. Averaging *log*-densities is a
weighted geometric mean of the distributions: mass survives only where recent frames agree, so
jitter is suppressed while a peak that moves simply travels (at a lag of about ``1 / (1 - a)``
frames) instead of smearing into the double image an average of probabilities gives. It runs at
the input size (192x256 by default), where it costs nothing next to the network.

Outputs are written atomically (:func:`fastsal.files.atomic_path`): an error or Ctrl-C on a file
leaves no partial video. A camera runs until ``max_frames`` or Ctrl-C, and Ctrl-C there ends the
recording cleanly with a valid output.

``import fastsal.video`` is cheap (no OpenCV, NumPy or PyTorch until used), so the command line can
call :func:`is_video` to route its inputs.
"""
from __future__ import annotations

from fastsal.errors import FastSalError

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterator, Union

if TYPE_CHECKING:
    import numpy as np

    from fastsal.predict import Predictor

__all__ = ["DEFAULT_FPS", "VIDEO_SUFFIXES", "VideoError", "VideoFrame", "VideoReport", "is_video", "iter_video", "predict_video"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

# Written when the source reports no frame rate (0 from many cameras, some broken files).
DEFAULT_FPS = 30.0

VideoSource = Union[str, Path, int]


class VideoError(FastSalError, ValueError):
    """A video that cannot be read or written; the message is one line naming the file and the fix."""


def is_video(path: str | Path) -> bool:
    """True if ``path`` has a video suffix (:data:`VIDEO_SUFFIXES`, any case); the file is not opened."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class VideoReport:
    """What :func:`predict_video` did. ``fps`` is processing speed (frames per second of wall time,
    decoding and writing included); ``fps_in`` the source's frame rate, also used for the output."""

    frames: int
    fps_in: float
    seconds: float
    fps: float
    out: Path | None
    npy: Path | None
    interrupted: bool = False  # a camera session ended by Ctrl-C (its outputs are complete and valid)


@dataclass
class VideoFrame:
    """One frame and its map, as :func:`iter_video` yields them.

    ``log_density`` is at the model's input size (smoothed if asked, normalised); :attr:`map`
    brings it to the frame's size with the same post-processing as :meth:`Predictor.predict`,
    computed on first access only, so callers that keep input-size maps skip the resize.
    """

    index: int
    rgb: np.ndarray = field(repr=False)  # (H, W, 3) uint8
    log_density: np.ndarray = field(repr=False)  # (h, w) float64, logsumexp == 0

    @cached_property
    def map(self) -> np.ndarray:
        """(H, W) float32 fixation-probability map at the frame's size; sums to 1."""
        from fastsal.predict import postprocess

        return postprocess(self.log_density, self.rgb.shape[:2])


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise VideoError(
            "video needs OpenCV: pip install 'fastsal[video]' (or: pip install opencv-python-headless)"
        ) from None
    return cv2


class _Capture:
    """An opened ``cv2.VideoCapture`` with the facts the writers need; frames come out as RGB."""

    def __init__(self, source: VideoSource) -> None:
        if isinstance(source, bool) or not isinstance(source, (str, Path, int)):
            raise TypeError(f"source must be a video path or a camera index (int), got {source!r}")
        cv2 = _cv2()
        self.camera = isinstance(source, int)
        if self.camera:
            if source < 0:
                raise VideoError(f"camera {source}: camera indices start at 0")
            self.name = f"camera {source}"
            self.cap = cv2.VideoCapture(source)
            if not self.cap.isOpened():
                self.cap.release()
                raise VideoError(f"{self.name}: cannot open (no such camera, in use, or no permission); "
                                 f"check the device or try another index")
        else:
            path = Path(source)
            self.name = str(path)
            if not path.exists():
                raise VideoError(f"{path}: no such file")
            if path.is_dir():
                raise VideoError(f"{path}: is a folder; pass a video file")
            self.cap = cv2.VideoCapture(str(path))
            if not self.cap.isOpened():
                self.cap.release()
                raise VideoError(f"{path}: OpenCV cannot open it as a video (not a video, or a codec it lacks); "
                                 f"convert it, e.g. ffmpeg -i {path} -c:v libx264 out.mp4")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # Cameras often report 0, broken files 0 or absurd values; the writer needs a sane rate.
        self.fps = fps if 0.0 < fps <= 1000.0 else DEFAULT_FPS
        count = 0 if self.camera else int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count: int | None = count if count > 0 else None  # a container's estimate: for progress only

    def frames(self, max_frames: int | None) -> Iterator[np.ndarray]:
        """RGB frames until the stream ends (or a camera stops delivering) or ``max_frames``."""
        cv2 = _cv2()
        n = 0
        while max_frames is None or n < max_frames:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                return
            code = cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB
            yield cv2.cvtColor(bgr, code)
            n += 1

    def release(self) -> None:
        self.cap.release()


def _check_options(smoothing: float, batch_size: int, max_frames: int | None) -> None:
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1) (0 = off, 0.9 = heavy), got {smoothing}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")


def _maps(predictor: Predictor, capture: _Capture, smoothing: float, batch_size: int,
          max_frames: int | None) -> Iterator[VideoFrame]:
    """Frames in order with their (smoothed) input-size log-densities, ``batch_size`` per model call."""
    import numpy as np

    state: np.ndarray | None = None
    index = 0
    frames = capture.frames(max_frames)
    while True:
        chunk = [rgb for _, rgb in zip(range(batch_size), frames)]
        if not chunk:
            break
        logs = predictor.small_log_density(np.stack([predictor.preprocess(rgb) for rgb in chunk]))
        for rgb, log in zip(chunk, logs):
            if smoothing > 0.0 and state is not None:
                # Geometric mean of the distributions, renormalised (log-sum-exp) to sum to 1.
                state = smoothing * state + (1.0 - smoothing) * log
                top = state.max()
                state = state - (top + np.log(np.exp(state - top).sum()))
            else:
                state = log
            yield VideoFrame(index, rgb, state)
            index += 1
    if index == 0:
        raise VideoError(f"{capture.name}: no frames could be decoded (empty or corrupt video, or a codec "
                         f"OpenCV lacks); check it plays, or re-encode it with ffmpeg")


def iter_video(predictor: Predictor, source: VideoSource, *, smoothing: float = 0.0, batch_size: int = 4,
               max_frames: int | None = None) -> Iterator[VideoFrame]:
    """Yield a :class:`VideoFrame` per frame of a video file or camera (an int index), in order.

    For custom loops (live display, tracking, your own writer); :func:`predict_video` is this plus
    writing. Arguments mean the same as there. The capture is released when the iteration ends or
    the generator is closed; frames of a batch in flight when it is closed early are dropped.
    """
    _check_options(smoothing, batch_size, max_frames)
    capture = _Capture(source)
    try:
        yield from _maps(predictor, capture, smoothing, batch_size, max_frames)
    finally:
        capture.release()


class _NpyFrames:
    """Appends (h, w) float32 frames to an open ``.npy`` file without holding them in memory.

    The header is written for 0 frames and rewritten with the real count at the end; NumPy pads
    headers so the leading dimension can grow in place (``numpy.lib.format``), and that is checked.
    """

    def __init__(self, fh: IO[bytes], hw: tuple[int, int]) -> None:
        self.fh, self.hw, self.n = fh, hw, 0
        self.header_len = self._header(0)

    def _header(self, n: int) -> int:
        from numpy.lib import format as npy_format

        self.fh.seek(0)
        npy_format.write_array_header_1_0(self.fh, {"descr": "<f4", "fortran_order": False, "shape": (n, *self.hw)})
        return self.fh.tell()

    def append(self, frame: np.ndarray) -> None:
        import numpy as np

        self.fh.write(np.ascontiguousarray(frame, dtype="<f4").tobytes())
        self.n += 1

    def finish(self) -> None:
        end = self.fh.tell()
        if self._header(self.n) != self.header_len:  # cannot happen for < 10**21 frames
            raise VideoError("internal error: .npy header changed size")
        self.fh.seek(end)


def predict_video(
    predictor: Predictor,
    source: VideoSource,
    out: str | Path | None = None,
    *,
    overlay: bool = False,
    npy: str | Path | None = None,
    smoothing: float = 0.0,
    batch_size: int = 4,
    max_frames: int | None = None,
    fourcc: str = "mp4v",
    progress: bool = True,
    alpha: float = 0.5,
) -> VideoReport:
    """Saliency for every frame of a video file or camera; writes a heat-map video and/or the maps.

    ``source``: a video file, or an int camera index (runs until ``max_frames`` or Ctrl-C, which
    ends it cleanly). ``out``: a video (.mp4, .avi, ...) of each frame's map in the 'inferno'
    colours, or with ``overlay=True`` blended onto the frame with ``alpha``; same size and frame
    rate as the source (:data:`DEFAULT_FPS` where the source reports none). ``fourcc`` picks the
    codec: "mp4v" for .mp4 ships with every OpenCV wheel, "MJPG" suits .avi.

    ``npy``: a (T, h, w) float32 array of the per-frame densities (each sums to 1) at the model's
    *input* size: 190 KB a frame at 192x256, against megabytes at 1080p, and the model has no finer
    detail to store (:func:`fastsal.predict.postprocess` resizes one exactly as the video's frames were).
    Not float16: typical values (~1 / (h * w) = 2e-5) fall below its normal range and lose precision.

    ``smoothing`` in [0, 1): EMA weight of the previous frames' log-densities (module docstring);
    0 is off. ``batch_size`` frames go through the model at once (speed only; same results).

    Raises :class:`VideoError` (a ``ValueError``) for unreadable sources, videos with no decodable
    frame and outputs OpenCV cannot write; nothing is left behind then, nor on Ctrl-C on a file.
    """
    _check_options(smoothing, batch_size, max_frames)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if len(fourcc) != 4:
        raise ValueError(f"fourcc must be 4 characters (e.g. 'mp4v', 'MJPG'), got {fourcc!r}")
    out = Path(out) if out is not None else None
    npy = Path(npy) if npy is not None else None
    if out is not None and npy is not None and out.resolve() == npy.resolve():
        raise VideoError(f"{out}: out and npy are the same file; give them different names")
    if not isinstance(source, int):
        for target in (out, npy):
            if target is not None and target.resolve() == Path(source).resolve():
                raise VideoError(f"{target}: is the input video; choose another output path")
    if out is not None and out.is_dir():
        raise VideoError(f"{out}: is a folder; pass an output file such as {out / 'saliency.mp4'}")

    import numpy as np
    from tqdm import tqdm

    from fastsal.files import atomic_path, atomic_write
    from fastsal.viewing import colormap, to_png
    from fastsal.viewing import overlay as blend

    cv2 = _cv2()
    capture = _Capture(source)
    total = capture.count if max_frames is None or capture.count is None else min(capture.count, max_frames)
    interrupted = False
    frames = 0
    start = time.perf_counter()
    with ExitStack() as stack:
        stack.callback(capture.release)
        out_tmp = stack.enter_context(atomic_path(out)) if out is not None else None
        npy_fh = stack.enter_context(atomic_write(npy)) if npy is not None else None
        bar = stack.enter_context(tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True,
                                       disable=not progress, desc=Path(capture.name).name))
        writer: Any = None
        npy_frames: _NpyFrames | None = None
        try:
            for item in _maps(predictor, capture, smoothing, batch_size, max_frames):
                h, w = item.rgb.shape[:2]
                if out_tmp is not None:
                    if writer is None:
                        size = (w, h)
                        writer = cv2.VideoWriter(str(out_tmp), cv2.VideoWriter_fourcc(*fourcc), capture.fps, size)
                        stack.callback(writer.release)  # runs before atomic_path renames the file
                        if not writer.isOpened():
                            raise VideoError(f"{out}: OpenCV cannot write {fourcc!r} video to a "
                                             f"'{out.suffix}' file; use .mp4 with fourcc 'mp4v' or .avi with 'MJPG'")
                    prob = item.map
                    img = blend(item.rgb, prob, alpha) if overlay else colormap(to_png(prob))
                    if (w, h) != size:  # a camera that changed resolution mid-stream
                        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
                    writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                if npy_fh is not None:
                    if npy_frames is None:
                        npy_frames = _NpyFrames(npy_fh, item.log_density.shape)
                    npy_frames.append(np.exp(item.log_density))
                frames += 1
                bar.update(1)
        except KeyboardInterrupt:
            # A camera session ends with Ctrl-C: keep what was written (frames of the batch in
            # flight are dropped). A file re-raises, and atomic_path removes the partial outputs.
            if not capture.camera or frames == 0:
                raise
            interrupted = True
        if npy_frames is not None:
            npy_frames.finish()
    seconds = time.perf_counter() - start
    return VideoReport(frames=frames, fps_in=capture.fps, seconds=seconds, fps=frames / max(seconds, 1e-9),
                       out=out, npy=npy, interrupted=interrupted)
