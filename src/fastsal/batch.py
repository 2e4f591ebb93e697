"""Saliency maps over many images: the maps task on the job layer (:mod:`fastsal.jobs`).

    jobs = collect(["photos/"])                       # or collect([], list_file="all.txt")
    mine = shard(jobs, *shard_spec("1/4"))            # this process's quarter (SLURM/K8s/RANK too)
    report = run(predictor, mine, "maps/", ("png",), manifest=manifest_path("maps/", 1, 4))

Collecting, sharding, resuming, failures, signals and the manifest are :mod:`fastsal.jobs`'s
(re-exported here); this module defines what a map is: the output files of an input
(:func:`output_paths`), and :class:`MapsTask`, which decodes (:meth:`fastsal.predict.Predictor.read`, the one decode step), runs the network and encodes every format in memory, so a
remote worker's bytes are the local run's.
"""
from __future__ import annotations

import errno
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Sequence

import numpy as np
from PIL import Image

from fastsal import defaults
from fastsal.files import atomic_write, atomic_write_bytes, gray_png
from fastsal.images import ImageError, load_image, load_rgb
from fastsal.jobs import (
    MAP_SETTINGS,
    Item,
    Job,
    Result,
    Task,
    bind_settings,
    check_settings,
    collect,
    image_source,
    input_entry,
    manifest_path,
    read_list,
    shard,
    shard_spec,
)
from fastsal.jobs import JobError as BatchError
from fastsal.jobs import run as run_task
from fastsal.viewing import blend, to_png

FORMATS = defaults.OUTPUT_FORMATS + defaults.BENCHMARK_FORMATS
MANIFEST_FORMAT = "fastsal-manifest/1"  # the v1 maps manifest; new ones are fastsal.jobs.MANIFEST_FORMAT


def output_paths(out: str | Path, stem: Path, formats: Sequence[str]) -> dict[str, Path]:
    """{format: file} for one input: ``<stem>.png``, ``<stem>_overlay.jpg``, ``<stem>.npy``; the
    benchmark formats in their own folders, ``saliency_maps/<stem>.jpg`` and ``log_densities/<stem>.npy``."""
    suffix = {"png": ".png", "overlay": "_overlay.jpg", "npy": ".npy", "saliency_jpg": ".jpg", "log_density": ".npy"}
    folder = {"saliency_jpg": "saliency_maps", "log_density": "log_densities"}
    return {f: Path(out) / folder.get(f, "") / stem.with_name(stem.name + suffix[f]) for f in formats}


def check_formats(formats: Sequence[str]) -> None:
    for f in formats:
        if f not in FORMATS:
            raise BatchError(f"unknown output format {f!r}; choose from: {', '.join(FORMATS)}")
    if not formats:
        raise BatchError(f"no output format given; choose from: {', '.join(FORMATS)}")


class MapsTask(Task[Job]):
    """``fastsal predict`` on images: a map per input in ``formats`` (see :func:`output_paths`)."""

    kind, noun = "maps", "maps"
    input_errors = (ImageError,)

    def __init__(self, out: str | Path, formats: Sequence[str] = ("png",), **kw: Any) -> None:
        check_formats(formats)
        super().__init__(out, **kw)
        self.formats = tuple(formats)

    def outputs(self, job: Job) -> dict[str, Path]:
        return output_paths(self.out, job.stem, self.formats)

    def header(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {"model": settings.get("model"), "backend": settings.get("backend"),
                "precision": settings.get("precision"), "input_size": settings.get("input_size"),
                "formats": list(self.formats)}

    def decode(self, item: Item) -> tuple[np.ndarray, tuple[int, int]]:
        # only what the network needs (Predictor.read): overlays decode the full image again when encoded
        return self.model.read(Path(image_source(item)))

    def infer(self, decoded: list[Any]) -> list[Any]:
        # what Predictor.predict_batch does, minus the resize; one forward pass per input size
        return self.model.small_log_densities([self.model.preprocess(small, size) for small, size in decoded])

    def encode(self, item: Item, decoded: Any, log_small: Any) -> Result:
        from fastsal.predict import postprocess

        paths, original = item.outputs, decoded[1]
        files: dict[str, bytes] = {}
        prob = postprocess(log_small, original)  # resizing runs here, off the network's thread
        if "npy" in paths:
            files[str(paths["npy"])] = _npy_bytes(prob)
        if "log_density" in paths:
            files[str(paths["log_density"])] = _npy_bytes(log_density(prob))
        values = to_png(prob) if ({"png", "overlay", "saliency_jpg"} & paths.keys()) else None
        del prob  # a 48 MP map is 192 MB: gone before the overlay decodes the photo
        if "png" in paths:
            assert values is not None  # made above for png, overlay and saliency_jpg
            files[str(paths["png"])] = gray_png(values)
        if "saliency_jpg" in paths:
            assert values is not None
            files[str(paths["saliency_jpg"])] = encode_jpeg_image(Image.fromarray(values), quality=95)
        if "overlay" in paths:
            assert values is not None
            try:
                full = load_image(Path(image_source(item)))  # a PIL image, blended in place: no array copy
            except ImageError as exc:  # it decoded a moment ago: changed or removed since
                raise ImageError(f"{exc}; it changed while the run was going") from None
            if full.size[::-1] != values.shape:
                raise ImageError(f"{item.source}: changed size while the run was going; rerun")
            files[str(paths["overlay"])] = encode_jpeg_image(blend(full, values, 0.5))
        entry = {**input_entry(item.source), "outputs": [str(paths[f]) for f in self.formats]}
        return Result(item.key, entry, files)


def run(predictor: Any, jobs: Sequence[Job], out: str | Path, formats: Sequence[str] = ("png",), *,
        loader: Callable[[], Any] | None = None, request: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
    """Predict ``jobs`` with ``predictor`` (or the one ``loader`` gives, loaded only if something is
    left to do) and write ``formats`` under ``out``; returns the manifest.

    ``options`` are :func:`fastsal.jobs.run`'s: ``overwrite=False`` skips inputs whose outputs all
    exist; an unreadable input is recorded and skipped (``on_skip`` gets the one-line reason), or
    raises with ``strict``; ``workers`` threads decode ahead and write behind the network (0:
    everything on the calling thread); ``batch_size``, ``progress``, ``manifest``, ``shard_info``,
    ``executor``.
    """
    return run_task(MapsTask(out, formats, model=predictor, loader=loader, request=request), jobs, **options)


def predict_inputs(
    jobs: Sequence[Job],
    out: str | Path,
    formats: Sequence[str] = ("png",),
    *,
    loader: Callable[[], Any],
    request: dict[str, Any] | None = None,
    video_file: str | Path | None = None,
    video_options: dict[str, Any] | None = None,
    shard_info: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
    on_skip: Callable[[str], None] | None = None,
    on_video: Callable[[Any, dict[str, Any], bool], None] | None = None,
    executor: Any = None,
) -> dict[str, dict[str, Any] | None]:
    """What ``fastsal predict`` runs on a mix of images and videos: each input goes to its task.

    Videos (by suffix, :func:`fastsal.video.is_video`) run first as the videos task, into
    ``OUT/<stem>.mp4`` (and ``.npy`` with the ``npy`` format) with ``OUT/manifest-videos*.json``,
    or into ``video_file`` for a single video (then a bad video is an error, not skipped);
    ``video_options`` go to :func:`fastsal.video.predict_video`. Images run as :class:`MapsTask`
    with ``OUT/manifest*.json`` (also for an empty shard, so its manifest says so). The model
    comes from ``loader``, once, and only if something is left to do; ``executor`` computes the
    images elsewhere (:class:`fastsal.ray.RayExecutor`; videos stay here). Returns the manifests,
    ``{"videos": ..., "maps": ...}`` (None where a kind had no inputs).
    """
    from fastsal.video import VideoJob, is_video, run_videos, video_manifest_path

    index, count = shard_info
    videos = [j for j in jobs if is_video(j.source)]
    images = [j for j in jobs if not is_video(j.source)]
    reports: dict[str, dict[str, Any] | None] = {"videos": None, "maps": None}
    if videos:
        def target(job: Job) -> Path:
            return Path(video_file) if video_file is not None else Path(out) / job.stem.with_suffix(".mp4")

        vjobs = [VideoJob(j.source, target(j), target(j).with_suffix(".npy") if "npy" in formats else None)
                 for j in videos]
        options = {"overlay": "overlay" in formats, **(video_options or {})}
        reports["videos"] = run_videos(
            None, vjobs, loader=loader, request=request, progress=progress, overwrite=overwrite,
            strict=strict or video_file is not None,
            manifest=None if video_file is not None else video_manifest_path(out, index, count),
            shard_info=shard_info, on_skip=on_skip, on_done=on_video, **options)
    if images or not jobs:
        reports["maps"] = run(None, images, out, formats, loader=loader, request=request, overwrite=overwrite,
                              strict=strict, batch_size=batch_size, workers=workers, progress=progress,
                              manifest=manifest_path(out, index, count), shard_info=shard_info, on_skip=on_skip,
                              executor=executor)
    return reports


#: An output file for one input image (``fastsal predict photo.jpg -o map.png``): its suffix says
#: which format it holds.
SINGLE_OUTPUT = {".png": "png", ".npy": "npy", ".jpg": "overlay", ".jpeg": "overlay"}


def output_formats(format: str = defaults.OUTPUT_FORMAT, overlay: bool = False, npy: bool = False) -> tuple[str, ...]:
    """The formats ``format`` names (one of :data:`FORMATS`, ``all`` or ``benchmark``), plus the
    overlay and ``.npy`` maps when asked, each once and in that order."""
    named = {"all": defaults.OUTPUT_FORMATS, "benchmark": defaults.BENCHMARK_FORMATS}.get(format, (format,))
    return tuple(dict.fromkeys([*named, *(["overlay"] if overlay else []), *(["npy"] if npy else [])]))


@dataclass(frozen=True)
class PredictPlan:
    """What a predict run was asked to do, decided and checked before any model loads (so a
    mistake costs a second, not a model load): where it writes, and this shard's inputs.

    ``kind`` is ``"folder"`` (maps and videos under ``out``, with manifests), ``"file"`` (one
    image's map in ``out``, nothing else) or ``"video"`` (one video, or the camera, into ``out``).
    """

    out: Path
    kind: str
    jobs: list[Job]
    total: int
    shard_info: tuple[int, int] = (0, 1)
    camera: int | None = None
    paths: tuple[str, ...] = ()  # the inputs as named (a file plan's one image is paths[0])

    @property
    def has_video(self) -> bool:
        from fastsal.video import is_video

        return self.camera is not None or any(is_video(j.source) for j in self.jobs)

    @property
    def file_format(self) -> str:
        """The format of a ``"file"`` plan's output, from its suffix."""
        return SINGLE_OUTPUT[self.out.suffix.lower()]

    @property
    def local_only(self) -> bool:
        """Whether it must run on this machine: videos, a camera and file outputs are not spread."""
        return self.kind != "folder" or self.has_video

    def codec_note(self) -> str | None:
        """Why the videos it writes will not be H.264 (this OpenCV cannot write it), else None."""
        from fastsal.video import H264_SUFFIXES, mp4_codec

        target = self.out if self.kind == "video" else self.out / "x.mp4"
        if not self.has_video or target.suffix.lower() not in H264_SUFFIXES:
            return None
        return mp4_codec()[1]


def plan_predict(paths: Sequence[str | Path] = (), out: str | Path | None = None, *, list_file: str | Path | None = None,
                 camera: int | None = None, shard_text: str | None = None) -> PredictPlan:
    """The :class:`PredictPlan` for ``paths`` (images, videos, folders) or ``list_file`` or
    ``camera`` into ``out`` (default ``saliency/``): a folder, an image file (``.png``, ``.jpg``,
    ``.npy``) for one image, or a video file for one video or the camera. ``shard_text`` is
    :func:`shard_spec`'s text. With no inputs at all, the bundled example image. Raises
    :class:`BatchError` naming ``out`` or ``camera``."""
    from fastsal.images import IMAGE_SUFFIXES
    from fastsal.video import VIDEO_SUFFIXES, is_video

    target = Path(out or "saliency")
    if out is not None and is_video(target) and paths and (len(paths) != 1 or not is_video(paths[0])):
        raise BatchError(f"{{option}} {target}: a video file output takes exactly one video input (or a camera)",
                         option="out")
    if camera is None and not paths and not list_file:  # nothing named: the bundled example image
        from fastsal.predict import example_image

        paths = [str(example_image())]
    kind = _output_kind(paths, out, list_file, camera)
    index, count = shard_spec(shard_text)
    if camera is not None:
        return PredictPlan(target, kind, [], 0, (index, count), camera)
    everything = collect(paths, list_file, target if kind == "folder" else None, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    return PredictPlan(target, kind, shard(everything, index, count), len(everything), (index, count),
                       paths=tuple(str(p) for p in paths))


def _output_kind(paths: Sequence[str | Path], out: str | Path | None, list_file: str | Path | None,
                 camera: int | None) -> str:
    """:attr:`PredictPlan.kind` for these inputs, or the error naming what does not fit."""
    from fastsal.images import IMAGE_SUFFIXES
    from fastsal.video import is_video

    target = Path(out or "saliency")
    suffix = target.suffix.lower()
    if camera is not None and (paths or list_file):
        raise BatchError("{option} takes no other inputs (paths or a list file)", option="camera")
    if out is not None and is_video(target):  # one video (or the camera) to one file
        return "video"
    if out is not None and suffix in SINGLE_OUTPUT:
        if camera is None and not list_file and len(paths) == 1 and not Path(paths[0]).is_dir() \
                and not is_video(paths[0]):
            return "file"
        if camera is not None or any(is_video(p) for p in paths):
            raise BatchError(f"{{option}} {target}: an image file holds one image's map, not a video's; pass a video "
                             f"file such as {target.with_suffix('.mp4')} or a folder", option="out")
        raise BatchError(f"{{option}} {target}: a file output takes exactly one input image; pass a folder for several",
                         option="out")
    if out is not None and suffix in IMAGE_SUFFIXES and not target.is_dir():  # photo.webp is not meant as a folder
        raise BatchError(f"{{option}} {target}: maps are written as .png (greyscale), .jpg (overlay) or .npy files; "
                         f"pass one of those, or a folder", option="out")
    return "folder"


def run_plan(plan: PredictPlan, formats: Sequence[str] = ("png",), *, loader: Callable[[], Any],
             video_options: dict[str, Any] | None = None, on_video: Callable[[Any, dict[str, Any], bool], None] | None = None,
             **options: Any) -> dict[str, dict[str, Any] | None]:
    """Run a folder or video :class:`PredictPlan` (a file plan is :func:`predict_file`): the
    camera into its video file, else :func:`predict_inputs` with ``options`` (``request``,
    ``overwrite``, ``strict``, ``batch_size``, ``workers``, ``progress``, ``on_skip``,
    ``executor``). Returns :func:`predict_inputs`'s manifests (both None for the camera)."""
    video_file = plan.out if plan.kind == "video" else None
    if plan.camera is None:
        return predict_inputs(plan.jobs, plan.out, formats, loader=loader, video_file=video_file,
                              video_options=video_options, shard_info=plan.shard_info, on_video=on_video, **options)
    from fastsal.video import VideoJob, run_videos

    dest = video_file or plan.out / f"camera{plan.camera}.mp4"
    run_videos(None, [VideoJob(plan.camera, dest, dest.with_suffix(".npy") if "npy" in formats else None)],
               loader=loader, overlay="overlay" in formats, progress=options.get("progress", True),
               overwrite=options.get("overwrite", False), strict=True, on_done=on_video, **(video_options or {}))
    return {"videos": None, "maps": None}


def predict_file(predictor: Any, source: str | Path, target: str | Path, fmt: str, *,
                 overwrite: bool = False) -> tuple[Path, bool]:
    """One image's map into ``target`` in ``fmt``, nothing else (no folder, no manifest); an
    existing ``target`` is kept unless ``overwrite``. Returns (the file, whether it was written now)."""
    target = Path(target)
    if target.is_file() and not overwrite:
        return target, False
    prob = predictor.predict(source)  # decoded as every entry point does (Predictor.read)
    # the full-size photo is decoded a second time only where it is drawn on: the overlay
    return write_map(target, fmt, prob, load_rgb(source) if fmt == "overlay" else None), True


def log_density(prob: np.ndarray) -> np.ndarray:
    """float32 natural logs of a map, floored at ``LOG_FLOOR`` and renormalised in float64 so that
    ``logsumexp`` is 0, as pysaliency's ``ModelFromDirectory`` checks."""
    from fastsal.densities import LOG_FLOOR

    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(prob, dtype=np.float64), LOG_FLOOR)
    top = float(logp.max())
    logp -= top + np.log(np.exp(logp - top).sum())
    return logp.astype(np.float32)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def write_map(path: str | Path, fmt: str, prob: np.ndarray, image: np.ndarray | None = None) -> Path:
    """Write one map atomically as ``fmt``: ``png`` (min-max scaled greyscale), ``overlay`` (JPEG of
    the map blended onto ``image``, the (H, W, 3) uint8 photo), ``npy`` (the float32 probabilities) or
    ``log_density`` (float32 natural logs, floored at ``LOG_FLOOR`` and renormalised in float64 so
    that ``logsumexp`` is 0, as pysaliency's ``ModelFromDirectory`` checks)."""
    path = Path(path)
    if fmt == "png":
        _save_bytes(path, gray_png(to_png(prob)))
    elif fmt == "log_density":
        logp = log_density(prob)
        _save(path, lambda fh: np.save(fh, logp))
    elif fmt == "overlay":
        if image is None:
            raise BatchError(f"{path}: an overlay needs the image")
        _save_bytes(path, encode_jpeg_image(blend(image, to_png(prob))))
    elif fmt == "npy":
        _save(path, lambda fh: np.save(fh, prob))
    else:
        raise BatchError(f"unknown output format {fmt!r}; choose from: {', '.join(FORMATS)}")
    return path


def _save(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Stream into ``path`` atomically (for arrays too large to copy into memory first); the size
    on disk is checked against what was written, so a full disk cannot leave a short file."""
    try:
        with atomic_write(path) as fh:
            write(fh)
            fh.flush()
            if os.fstat(fh.fileno()).st_size != fh.tell():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    except OSError as exc:
        raise BatchError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another -o") from None


def _save_bytes(path: Path, data: bytes) -> None:
    """Encoded in memory, then written, fsynced and size-checked (Pillow's JPEG encoder writing into
    a file raised nothing on a full disk)."""
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise BatchError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another -o") from None


def encode_jpeg_image(img: Any, quality: int = 90) -> bytes:
    """An RGB PIL image -> JPEG bytes in memory."""
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


__all__ = [
    "BatchError", "FORMATS", "Job", "MAP_SETTINGS", "MapsTask", "bind_settings",
    "check_settings", "collect", "input_entry", "log_density", "manifest_path", "output_paths", "predict_inputs",
    "read_list", "run",
    "shard", "shard_spec", "write_map",
]
