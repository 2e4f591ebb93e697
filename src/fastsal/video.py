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
the input size (the weights' training size), where it costs nothing next to the network.

Outputs are written atomically (:func:`fastsal.files.atomic_path`): an error or Ctrl-C on a file
leaves no partial video. A camera runs until ``max_frames`` or Ctrl-C, and Ctrl-C there ends the
recording cleanly with a valid output. Output paths are checked before the first frame is decoded,
so an unwritable destination fails in a second, not after the whole video.

Damaged files. OpenCV ends a damaged or truncated video early without an error, which would pass a
short result off as the whole video. Where the container states a frame count, fewer decoded frames
(beyond the few that healthy files miss, :func:`lost_frames`) raise :class:`ShortVideoError` and
nothing is written, so a rerun tries the file again; ``allow_short=True`` writes the short result
and records its counts instead (a rerun then keeps it: the user accepted it).

Many videos. :func:`run_videos` runs a list of :class:`VideoJob`: an unreadable or damaged video
(:class:`VideoSourceError`) is recorded and skipped (or stops the run with ``strict``), outputs that
exist are kept, and a manifest (JSON, written atomically, also when stopped) lists what was written
and what failed. SIGTERM during it raises :class:`Terminated`, which unwinds like Ctrl-C: a file's
partial outputs are removed, a camera keeps its recording.

``import fastsal.video`` is cheap (no OpenCV, NumPy or PyTorch until used), so the command line can
call :func:`is_video` to route its inputs.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator, Sequence, Union

from fastsal.errors import FastSalError, Terminated

if TYPE_CHECKING:
    import numpy as np

    from fastsal.predict import Predictor

__all__ = [
    "DEFAULT_FPS", "VIDEO_MANIFEST_FORMAT", "VIDEO_SUFFIXES", "ShortVideoError", "Terminated", "VideoError",
    "VideoFrame", "VideoJob", "VideoReport", "VideoSourceError", "is_video", "iter_video", "lost_frames", "mp4_codec",
    "predict_video", "run_videos", "video_manifest_path",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")

# Written when the source reports no frame rate (0 from many cameras, some broken files).
DEFAULT_FPS = 30.0

VideoSource = Union[str, Path, int]


VIDEO_MANIFEST_FORMAT = "fastsal-video-manifest/1"

# A container's frame count (CAP_PROP_FRAME_COUNT) is a header fact, and healthy files often decode
# a frame or two fewer (edit lists, counts estimated from the duration in Matroska/WebM, variable
# frame rates); only a larger shortfall is taken for frames lost to damage.
SHORT_TOLERANCE_FRAMES = 2
SHORT_TOLERANCE_FRACTION = 0.02


class VideoError(FastSalError, ValueError):
    """A video that cannot be read or written; the message is one line naming the file and the fix."""


class VideoSourceError(VideoError):
    """The input video or camera cannot be read, or not fully: a run over many videos records it and
    goes on with the next, as it does for an unreadable image (output problems stop the run instead)."""


class ShortVideoError(VideoSourceError):
    """Fewer frames decoded than the container states: a damaged or truncated file whose short result
    would otherwise pass for the whole video. ``frames`` were decoded of ``expected``."""

    def __init__(self, message: str, frames: int, expected: int, *, option: str | None = None) -> None:
        super().__init__(message, option=option)
        self.frames, self.expected = frames, expected




def lost_frames(frames: int, expected: int | None) -> int:
    """How many of ``expected`` frames are missing when ``frames`` were decoded, or 0 when no count is
    known or the shortfall is within what healthy files show (a frame or two, see the constants)."""
    if expected is None:
        return 0
    missing = expected - frames
    return missing if missing > max(SHORT_TOLERANCE_FRAMES, SHORT_TOLERANCE_FRACTION * expected) else 0


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
    interrupted: bool = False  # a camera session ended by Ctrl-C or SIGTERM (its outputs are complete and valid)
    expected: int | None = None  # frames the container states (capped at max_frames); None: not stated, or a camera
    stopped_by: str | None = None  # "Ctrl-C" or "SIGTERM" when interrupted

    @property
    def lost(self) -> int:
        """Frames the container states but that could not be decoded (0: complete, see :func:`lost_frames`)."""
        return lost_frames(self.frames, self.expected)


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
    if "cv2" not in sys.modules:
        # FFmpeg's decoder chatter ("[mjpeg @ 0x..] overread 8") on a damaged file would bury the one
        # line that says what is wrong; who wants it sets OPENCV_FFMPEG_LOGLEVEL (read at import).
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
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
        if isinstance(source, int):  # self.camera
            if source < 0:
                raise VideoSourceError(f"camera {source}: camera indices start at 0")
            self.name = f"camera {source}"
            self.cap = _open_camera(cv2, source)
            if not self.cap.isOpened():
                self.cap.release()
                raise VideoSourceError(f"{self.name}: cannot open (no such camera, in use, or no permission); "
                                 f"check the device or try another index")
        else:
            path = Path(source)
            self.name = str(path)
            if not path.exists():
                raise VideoSourceError(f"{path}: no such file")
            if path.is_dir():
                raise VideoSourceError(f"{path}: is a folder; pass a video file")
            if path.stat().st_size == 0:
                raise VideoSourceError(f"{path}: is empty (0 bytes); copy or export it again")
            self.cap = cv2.VideoCapture(str(path))
            if not self.cap.isOpened():
                self.cap.release()
                raise VideoSourceError(f"{path}: OpenCV cannot open it as a video (not a video, or a codec it lacks); "
                                 f"convert it, e.g. ffmpeg -i {path} -c:v libx264 out.mp4")
        fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        # Cameras often report 0, broken files 0 or absurd values; the writer needs a sane rate.
        self.fps = fps if 0.0 < fps <= 1000.0 else DEFAULT_FPS
        count = 0 if self.camera else int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.count: int | None = count if count > 0 else None  # what the container states (see lost_frames)

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


def _open_camera(cv2: Any, index: int) -> Any:
    """``cv2.VideoCapture(index)`` without OpenCV's warning lines for a missing camera: the caller
    reports that in one line of its own."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:  # an OpenCV build without the logging module
        return cv2.VideoCapture(index)
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        return cv2.VideoCapture(index)
    finally:
        logging.setLogLevel(level)


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
        raise VideoSourceError(f"{capture.name}: no frames could be decoded (empty or corrupt video, or a codec "
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


# Containers whose browsers' codec is H.264 ("avc1"); OpenCV's pip wheels often cannot encode it.
H264_SUFFIXES = (".mp4", ".m4v", ".mov")
_CODEC_CACHE: dict[str, tuple[str, str | None]] = {}


def mp4_codec() -> tuple[str, str | None]:
    """``("avc1", None)`` where this OpenCV writes H.264 (what browsers play), else ``("mp4v", note)``.

    Why: MPEG-4 Part 2 ("mp4v", in every OpenCV wheel) plays in desktop players but not in
    browsers. Whether H.264 works is only known by writing a frame (a build may list an encoder
    that cannot open, such as a hardware one), so a tiny clip is written once per process to a
    temporary folder; FFmpeg's complaints while probing are kept off the terminal.
    """
    if "mp4" not in _CODEC_CACHE:
        _CODEC_CACHE["mp4"] = ("avc1", None) if _can_write("avc1") else (
            "mp4v", "this OpenCV has no working H.264 encoder, so .mp4 videos are MPEG-4 Part 2 (mp4v), which "
                    "browsers do not play; re-encode with `ffmpeg -i IN.mp4 -c:v libx264 OUT.mp4` to share them")
    return _CODEC_CACHE["mp4"]


def _can_write(fourcc: str) -> bool:
    """Whether OpenCV writes a readable ``fourcc`` .mp4 here: two frames written and read back."""
    import tempfile

    import numpy as np

    cv2 = _cv2()
    with tempfile.TemporaryDirectory(prefix="fastsal-codec-") as folder, _quiet_stderr():
        path = str(Path(folder) / "probe.mp4")
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), 10.0, (64, 48))
        try:
            if not writer.isOpened():
                return False
            for _ in range(2):
                writer.write(np.zeros((48, 64, 3), np.uint8))
        finally:
            writer.release()
        cap = cv2.VideoCapture(path)
        try:
            return bool(cap.isOpened() and cap.read()[0])
        finally:
            cap.release()


class _quiet_stderr:
    """Redirect file descriptor 2 to /dev/null for a block (FFmpeg logs from C, past sys.stderr)."""

    saved: int | None = None

    def __enter__(self) -> None:
        try:
            sys.stderr.flush()
            self.saved = os.dup(2)
            null = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError):  # no descriptor 2 (a daemon): nothing to keep quiet
            return
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc: object) -> None:
        if self.saved is not None:
            os.dup2(self.saved, 2)
            os.close(self.saved)


def default_fourcc(out: str | Path) -> str:
    """The codec for a video file by its suffix: H.264 for .mp4/.m4v/.mov where it works, else "mp4v"."""
    return mp4_codec()[0] if Path(out).suffix.lower() in H264_SUFFIXES else "mp4v"


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
    fourcc: str | None = None,
    progress: bool = True,
    alpha: float = 0.5,
    allow_short: bool = False,
) -> VideoReport:
    """Saliency for every frame of a video file or camera; writes a heat-map video and/or the maps.

    ``source``: a video file, or an int camera index (runs until ``max_frames`` or Ctrl-C, which
    ends it cleanly). ``out``: a video (.mp4, .avi, ...) of each frame's map in the 'inferno'
    colours, or with ``overlay=True`` blended onto the frame with ``alpha``; same size and frame
    rate as the source (:data:`DEFAULT_FPS` where the source reports none). ``fourcc`` picks the
    codec; by default H.264 ("avc1") for .mp4 where this OpenCV can write it (:func:`mp4_codec`),
    else "mp4v" (every OpenCV wheel has it, browsers do not play it); "MJPG" suits .avi.

    ``npy``: a (T, h, w) float32 array of the per-frame densities (each sums to 1) at the model's
    *input* size: 190 KB a frame at 192x256, against megabytes at 1080p, and the model has no finer
    detail to store (:func:`fastsal.predict.postprocess` resizes one exactly as the video's frames were).
    Not float16: typical values (~1 / (h * w) = 2e-5) fall below its normal range and lose precision.

    ``smoothing`` in [0, 1): EMA weight of the previous frames' log-densities (module docstring);
    0 is off. ``batch_size`` frames go through the model at once (speed only; same results).

    A file that decodes to fewer frames than its container states (:func:`lost_frames`: damaged or
    truncated) raises :class:`ShortVideoError` and writes nothing, unless ``allow_short``: then the
    short result is written and :attr:`VideoReport.lost` says how many frames are missing.

    Raises :class:`VideoSourceError` (a :class:`VideoError`, a ``ValueError``) for unreadable sources
    and videos with no decodable frame, :class:`VideoError` for outputs OpenCV cannot write and
    :class:`fastsal.files.OutputError` for output paths that cannot be written (checked before any
    frame is decoded); nothing is left behind then, nor on Ctrl-C (or :class:`Terminated`) on a file.
    """
    _check_options(smoothing, batch_size, max_frames)
    out, npy, fourcc = _checked_outputs(source, out, npy, alpha, fourcc)
    from tqdm import tqdm

    from fastsal.files import atomic_path, atomic_write

    cv2 = _cv2()
    capture = _Capture(source)
    # What the container states (a camera states nothing); compared with what decodes at the end.
    expected = None if capture.count is None else capture.count if max_frames is None else min(capture.count, max_frames)
    start = time.perf_counter()
    with ExitStack() as stack:
        stack.callback(capture.release)
        sink = _Outputs(cv2, stack, capture.fps, out, stack.enter_context(atomic_path(out)) if out is not None else None,
                        stack.enter_context(atomic_write(npy)) if npy is not None else None,
                        fourcc=fourcc, overlay=overlay, alpha=alpha)
        bar = stack.enter_context(tqdm(total=expected, unit="frame", file=sys.stderr, dynamic_ncols=True,
                                       disable=not progress, desc=Path(capture.name).name))
        frames, stopped_by = _stream(_maps(predictor, capture, smoothing, batch_size, max_frames), sink.steps,
                                     capture.camera, bar.update)
        lost = lost_frames(frames, expected)
        # lost > 0 implies a known count; raised inside the stack: atomic_path removes the short outputs
        if lost and expected is not None and not allow_short:
            raise ShortVideoError(
                f"{capture.name}: decoded only {frames} of the {expected} frames its container states "
                f"(damaged or truncated); nothing written; repair or re-encode it, or allow short "
                f"results ({{option}})", frames, expected, option="allow_short")
        sink.finish()
    seconds = time.perf_counter() - start
    return VideoReport(frames=frames, fps_in=capture.fps, seconds=seconds, fps=frames / max(seconds, 1e-9),
                       out=out, npy=npy, interrupted=stopped_by is not None, expected=expected, stopped_by=stopped_by)


def _checked_outputs(source: VideoSource, out: str | Path | None, npy: str | Path | None, alpha: float,
                     fourcc: str | None) -> tuple[Path | None, Path | None, str]:
    """(out, npy, fourcc) checked before the first frame is decoded: a read-only disk, a parent
    that is a file or an output that is the input fails now, naming the path, not after the video."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if fourcc is None:
        fourcc = default_fourcc(out) if out is not None else "mp4v"
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
    if npy is not None and npy.is_dir():
        raise VideoError(f"{npy}: is a folder; pass a .npy file name such as {npy / 'maps.npy'}")
    from fastsal.files import check_writable_file

    for target, what in ((out, "output video"), (npy, "maps file")):
        if target is not None:
            check_writable_file(target, what)
    return out, npy, fourcc


class _Outputs:
    """Where each frame goes: the heat-map video (opened at the first frame, whose size it takes)
    and/or the ``.npy`` stack; :attr:`steps` writes one frame to each in turn."""

    def __init__(self, cv2: Any, stack: ExitStack, fps: float, out: Path | None, out_tmp: Path | None,
                 npy_fh: IO[bytes] | None, *, fourcc: str, overlay: bool, alpha: float) -> None:
        self.cv2, self.stack, self.fps, self.out, self.out_tmp, self.npy_fh = cv2, stack, fps, out, out_tmp, npy_fh
        self.fourcc, self.overlay, self.alpha = fourcc, overlay, alpha
        self.writer: Any = None
        self.npy_frames: _NpyFrames | None = None
        self.size = (0, 0)
        self.steps: list[Callable[[VideoFrame], None]] = [
            step for step, wanted in ((self.write_video, out_tmp is not None), (self.write_npy, npy_fh is not None))
            if wanted]

    def write_video(self, item: VideoFrame) -> None:
        from fastsal.viewing import colormap, to_png  # imported once, then a dictionary look-up per frame
        from fastsal.viewing import overlay as blend

        cv2 = self.cv2
        h, w = item.rgb.shape[:2]
        if self.writer is None:
            self.size = (w, h)
            self.writer = cv2.VideoWriter(str(self.out_tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, self.size)
            self.stack.callback(self.writer.release)  # runs before atomic_path renames the file
            if not self.writer.isOpened():
                out = self.out
                raise VideoError(f"{out}: OpenCV cannot write {self.fourcc!r} video to a "
                                 f"'{out.suffix if out else ''}' file; use .mp4 with fourcc 'mp4v' or .avi with 'MJPG'")
        prob = item.map
        img = blend(item.rgb, prob, self.alpha) if self.overlay else colormap(to_png(prob))
        if (w, h) != self.size:  # a camera that changed resolution mid-stream
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))

    def write_npy(self, item: VideoFrame) -> None:
        import numpy as np

        if self.npy_frames is None:
            assert self.npy_fh is not None
            self.npy_frames = _NpyFrames(self.npy_fh, item.log_density.shape)
        self.npy_frames.append(np.exp(item.log_density))

    def finish(self) -> None:
        """Complete the ``.npy`` header with the real frame count (the video needs nothing)."""
        if self.npy_frames is not None:
            self.npy_frames.finish()


def _stream(maps: Iterator[VideoFrame], steps: Sequence[Callable[[VideoFrame], None]], camera: bool,
            advance: Callable[[int], Any]) -> tuple[int, str | None]:
    """(frames written, what stopped a camera session: "Ctrl-C", "SIGTERM" or None).

    Each frame goes to every output or to none: Ctrl-C or SIGTERM can land between the video
    write and the .npy append, and the part still owed is then written before stopping, so that a
    stopped camera session leaves outputs with equal frame counts. A camera session ends with
    Ctrl-C (or SIGTERM, see Terminated): keep what was written (frames of the batch in flight are
    dropped). A file re-raises, and atomic_path removes the partial outputs.
    """
    item: VideoFrame | None = None
    frames = done = counted = 0  # outputs that have the current frame; frames before it
    try:
        for item in maps:
            counted, done = frames, 0
            for step in steps:
                step(item)
                done += 1
            frames += 1
            advance(1)
    except KeyboardInterrupt as exc:
        if not camera or frames == 0:
            raise
        if item is not None and frames == counted and done > 0:  # stopped inside a frame: finish it
            for step in steps[done:]:
                step(item)
            frames += 1
        return frames, exc.name if isinstance(exc, Terminated) else "Ctrl-C"
    return frames, None


@dataclass(frozen=True)
class VideoJob:
    """One video file (or camera index) and what it writes: ``out`` the heat-map video, ``npy`` the maps."""

    source: Path | int
    out: Path | None
    npy: Path | None = None

    @property
    def name(self) -> str:
        """How messages and the manifest name the input."""
        return f"camera {self.source}" if isinstance(self.source, int) else str(self.source)


def video_manifest_path(out: str | Path, index: int = 0, count: int = 1) -> Path:
    """``OUT/manifest-videos.json``, or ``OUT/manifest-videos-<i>-of-<n>.json`` for one of several shards.

    Beside the images' ``manifest.json`` (:func:`fastsal.batch.manifest_path`), not in it: an image
    run rewrites that file whole. Its ``settings`` take part in the check that refuses to resume a
    folder made with other settings (:func:`fastsal.batch.bind_settings` reads ``manifest*.json``
    and writes this file before the first video).
    """
    return Path(out) / ("manifest-videos.json" if count == 1 else f"manifest-videos-{index}-of-{count}.json")


def _video_task_class() -> type:
    """:class:`fastsal.jobs.Task` for videos, made on first use: ``import fastsal.video`` stays cheap
    (the command line calls :func:`is_video` to route its inputs)."""
    from fastsal.jobs import Item, Result, Task, input_entry

    class _VideoTask(Task[VideoJob]):
        """Videos on the job layer: each writes its own outputs, streaming frames (local only)."""

        kind, noun, manifest_name = "videos", "maps and videos", "manifest-videos"
        writes_own_outputs = True
        input_errors = (VideoSourceError,)

        def __init__(self, out: Path, options: dict[str, Any], *, progress: bool, bind: bool, **kw: Any) -> None:
            super().__init__(out, **kw)
            self.options, self.progress = options, progress
            if not bind:
                self.settings_keys = ()

        def item(self, job: VideoJob) -> Item:
            outputs = {k: p for k, p in (("video", job.out), ("npy", job.npy)) if p is not None}
            stem = Path(job.name) if isinstance(job.source, int) else Path(job.source).with_suffix("")
            return Item(job.name, job.source, stem, outputs)

        def header(self, settings: dict[str, Any]) -> dict[str, Any]:
            return {"model": settings.get("model"), "backend": settings.get("backend"),
                    "precision": settings.get("precision"), "input_size": settings.get("input_size"),
                    "options": {k: self.options[k] for k in ("overlay", "smoothing", "max_frames", "allow_short")}}

        def failure(self, item: Item, exc: BaseException) -> Result:
            result = super().failure(item, exc)
            result.entry["input"] = item.key
            if isinstance(exc, ShortVideoError):
                result.entry.update(frames=exc.frames, expected=exc.expected)
            return result

        def run_item(self, item: Item) -> Result:
            rep = predict_video(self.model, item.source, item.outputs.get("video"), npy=item.outputs.get("npy"),
                                progress=self.progress, **self.options)
            entry = {**input_entry(item.source), "input": item.key, "outputs": [str(p) for p in item.outputs.values()],
                     "frames": rep.frames, "expected": rep.expected, "complete": rep.lost == 0,
                     "stopped_by": rep.stopped_by, "interrupted": rep.interrupted, "seconds": round(rep.seconds, 3),
                     "fps": round(rep.fps, 2)}
            return Result(item.key, entry)

    return _VideoTask


def run_videos(
    predictor: Predictor | None,
    jobs: Sequence[VideoJob],
    *,
    overlay: bool = False,
    smoothing: float = 0.0,
    batch_size: int = 4,
    max_frames: int | None = None,
    fourcc: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    strict: bool = False,
    allow_short: bool = False,
    manifest: str | Path | None = None,
    shard_info: tuple[int, int] = (0, 1),
    on_skip: Callable[[str], None] | None = None,
    on_done: Callable[[Any, dict[str, Any], bool], None] | None = None,
    loader: Callable[[], Predictor] | None = None,
    request: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run :func:`predict_video` over ``jobs`` on the job layer (:func:`fastsal.jobs.run`), going on
    past bad videos; returns the manifest.

    Why: one unreadable file in a folder of videos must not cost the others. A job whose source
    cannot be read, or is damaged (:class:`VideoSourceError`, :class:`ShortVideoError` unless
    ``allow_short``), is recorded under ``"failed"`` with its one-line reason, passed to ``on_skip``
    and skipped; ``strict`` raises it instead (after recording it). Output problems (an unwritable
    path, a codec OpenCV cannot write) concern every job and are raised. A job whose outputs all
    exist is kept unless ``overwrite``. ``on_done(item, entry, earlier)`` follows every written or
    kept video (its manifest entry: frames, expected, seconds, fps, stopped_by). Other arguments
    as for :func:`predict_video`; ``predictor`` may be None with a ``loader`` (and ``request``,
    see :class:`fastsal.jobs.Task`: a finished folder then reruns without loading it).

    ``manifest`` (a path) gets the record, bound to the folder's settings before the first video
    and written atomically at the end, also when the run stops on an error, Ctrl-C or SIGTERM
    (the job layer's one handler raises :class:`Terminated` in the main thread).
    """
    from fastsal.files import check_writable_file
    from fastsal.jobs import run as run_task

    manifest = Path(manifest) if manifest is not None else None
    if manifest is not None:
        check_writable_file(manifest, "manifest")
    options = {"overlay": overlay, "smoothing": smoothing, "batch_size": batch_size, "max_frames": max_frames,
               "fourcc": fourcc, "allow_short": allow_short}
    task = _video_task_class()(manifest.parent if manifest is not None else Path("."), options, progress=progress,
                               bind=manifest is not None, model=predictor, loader=loader,
                               request=request if manifest is not None else None)
    return run_task(task, jobs, overwrite=overwrite, strict=strict, progress=False, manifest=manifest,
                    shard_info=shard_info, on_skip=on_skip, on_done=on_done)
