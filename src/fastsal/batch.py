"""Prediction over many images: resumable, shardable across processes and hosts, pipelined.

    jobs = collect(["photos/"])                       # or collect([], list_file="all.txt")
    mine = shard(jobs, *shard_spec("1/4"))            # this process's quarter (RANK/WORLD_SIZE too)
    report = run(predictor, mine, "maps/", ("png",), manifest=manifest_path("maps/", 1, 4))

Three properties make a run over millions of images practical:

- **Deterministic jobs.** Inputs are expanded and sorted, and output names are fixed from the whole
  list *before* sharding, so every process agrees on which output belongs to which input.
  :func:`shard` takes every n-th job (round robin, so folders spread evenly over shards); shards
  are disjoint and together complete whatever the number of hosts.
- **Resumable.** Outputs are written atomically (temporary file + rename), so an output that exists
  is complete; a rerun skips inputs whose outputs all exist (unless ``overwrite``). Kill a run at any
  point and start it again.
- **Pipelined.** Worker threads decode and resize the next images (JPEGs decoded at a reduced DCT
  scale, :func:`fastsal.images.load_resized`) and encode and write finished maps while the main
  thread runs the network, so the total time approaches the network's own.

Each run writes a manifest (JSON, atomically; also when interrupted or failing): the shard, model,
backend, settings, counts, every written input with its outputs and every failure with its reason.
"""
from __future__ import annotations

from fastsal.errors import FastSalError

import errno
import io
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image

from fastsal import defaults
from fastsal.cpu import check_threads
from fastsal.files import (
    atomic_write,
    atomic_write_bytes,
    gray_png,
    remove_stale_temporaries,
    write_json,
)
from fastsal.viewing import blend, to_png
from fastsal.images import IMAGE_SUFFIXES, ImageError, check_not_empty, find_images, load_image, load_resized

FORMATS = defaults.OUTPUT_FORMATS + defaults.BENCHMARK_FORMATS
# Temporaries older than this in an output folder are leftovers of a killed run (a live writer's
# exist for at most seconds; shards of one job may share a folder) and are removed at start.
STALE_TEMPORARY_AGE_S = 300.0
MANIFEST_FORMAT = "fastsal-manifest/1"


class BatchError(FastSalError, ValueError):
    """Unusable batch input (no images, a bad list file or shard); one line naming the fix."""


@dataclass(frozen=True)
class Job:
    """One input and the output stem (relative to the output folder, without suffix) it maps to."""

    source: Path
    stem: Path


def output_paths(out: str | Path, stem: Path, formats: Sequence[str]) -> dict[str, Path]:
    """{format: file} for one input: ``<stem>.png``, ``<stem>_overlay.jpg``, ``<stem>.npy``; the
    benchmark formats in their own folders, ``saliency_maps/<stem>.jpg`` and ``log_densities/<stem>.npy``."""
    suffix = {"png": ".png", "overlay": "_overlay.jpg", "npy": ".npy", "saliency_jpg": ".jpg", "log_density": ".npy"}
    folder = {"saliency_jpg": "saliency_maps", "log_density": "log_densities"}
    return {f: Path(out) / folder.get(f, "") / stem.with_name(stem.name + suffix[f]) for f in formats}


def read_list(list_file: str | Path) -> list[Path]:
    """Paths in a list file: one per line, ``#`` comments and blank lines ignored; relative paths
    are relative to the list file's folder, so a list travels with the data it names."""
    list_file = Path(list_file)
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"{list_file}: cannot read list file ({exc}); pass a UTF-8 text file, one path per line") \
            from None
    paths = [Path(ln.strip()) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    if not paths:
        raise BatchError(f"{list_file}: list file names no images; put one image path per line")
    return [p if p.is_absolute() else list_file.parent / p for p in paths]


def collect(
    paths: Iterable[str | Path], list_file: str | Path | None = None, exclude: str | Path | None = None,
    suffixes: Sequence[str] = IMAGE_SUFFIXES,
) -> list[Job]:
    """Jobs for files and folders (searched recursively, sorted) and the entries of ``list_file``.

    Output stems mirror each input's path below its folder argument; list entries mirror their
    path below the entries' common folder. Folder contents inside ``exclude`` (the output folder:
    earlier outputs are not inputs) are left out. Files in a list need not exist yet: a missing
    one is reported when it is reached, like any unreadable image, so one bad line cannot stop a
    million-image run.
    """
    found: list[tuple[Path, Path]] = []
    excluded = Path(exclude).resolve() if exclude is not None else None
    for raw in paths:
        check_not_empty(raw, "input path")
        arg = Path(raw)
        if not arg.exists():
            raise BatchError(f"{arg}: no such file or folder")
        items = find_images([arg], suffixes)
        if arg.is_dir() and excluded is not None:
            # realpath, not resolve(): a looping link must reach decoding (and be reported), not raise here
            items = [(f, rel) for f, rel in items if not Path(os.path.realpath(f)).is_relative_to(excluded)]
        found += items
    if list_file is not None:
        listed = [p.absolute() for p in read_list(list_file)]
        root = Path(os.path.commonpath([p.parent for p in listed]))
        found += [(p, p.relative_to(root)) for p in listed]
    if not found:
        kinds = "/".join(s.lstrip(".") for s in suffixes)
        where = ", ".join([*map(str, paths), *([str(list_file)] if list_file else [])])
        raise BatchError(f"no images found in {where} (looked for {kinds} files)")
    stems = _unique_stems([rel for _, rel in found])
    return [Job(src, stem) for (src, _), stem in zip(found, stems)]


def _unique_stems(rels: list[Path]) -> list[Path]:
    """Output stems mirroring the inputs' relative paths, never two alike.

    ``a/x.jpg`` -> ``a/x``; if ``a/x.jpg`` and ``a/x.png`` both exist they keep their suffix
    (``a/x.jpg``, ``a/x.png``) so neither map overwrites the other; the same relative path under
    two input folders is numbered (``x``, ``x-2``).
    """
    from collections import Counter

    base = [r.with_suffix("") for r in rels]
    counts = Counter(base)
    stems = [r if counts[b] > 1 else b for r, b in zip(rels, base)]
    seen: set[Path] = set()
    result = []
    for stem in stems:
        cand, i = stem, 2
        while cand in seen:
            cand, i = stem.with_name(f"{stem.name}-{i}"), i + 1
        seen.add(cand)
        result.append(cand)
    return result


# The settings that change a map's values (the engine does not, within the fp32 contract).
MAP_SETTINGS = ("model", "weights_sha256", "input_size", "aspect", "precision", "blur_sigma", "calibration")


def check_settings(out: str | Path, settings: dict[str, Any], keys: Sequence[str] = MAP_SETTINGS, *,
                   records: str = "manifest*.json", noun: str = "maps") -> None:
    """Refuse to resume into ``out`` if its records (``records``, a glob in ``out``) say its
    outputs were made with other ``keys`` settings, or by an ``--overwrite`` run that stopped.

    A rerun skips inputs whose outputs exist; if those were made by another model, size,
    precision or blur they would be kept silently beside new ones. One line says what differs
    and that ``--overwrite`` recomputes them (or pick another output folder). Every runner that
    resumes into a folder (maps, videos, crops) calls this, through :func:`bind_settings`.
    """
    import json

    new = json.loads(json.dumps({k: settings.get(k) for k in keys}))  # tuples -> lists, as read back
    for record in sorted(Path(out).glob(records)):
        try:
            data = json.loads(record.read_text(encoding="utf-8"))
            old = data.get("settings")
        except (OSError, ValueError, AttributeError):
            continue  # unreadable record: nothing known about the outputs; a new one replaces it
        if not isinstance(old, dict):
            continue
        diff = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
        if diff:
            raise BatchError(f"{out}: holds {noun} made with other settings ({'; '.join(diff)}, see {record.name}); "
                             f"pass --overwrite to recompute them, or choose another -o folder")
        if data.get("overwrite") is True and data.get("complete") is False:
            raise BatchError(f"{out}: an --overwrite run stopped before it replaced all earlier {noun} (see "
                             f"{record.name}); pass --overwrite again to finish it, or choose another -o folder")


def bind_settings(out: str | Path, record: str | Path | None, report: dict[str, Any], *, overwrite: bool,
                  keys: Sequence[str] = MAP_SETTINGS, records: str = "manifest*.json", noun: str = "maps") -> None:
    """Check ``out`` against ``report["settings"]`` (:func:`check_settings`, unless ``overwrite``),
    then write ``report`` to ``record`` before the first output.

    Why: outputs are bound to the settings that made them from the first file on. A run killed
    (even by SIGKILL) before its final record is written still leaves a record naming its model,
    so a rerun with another model is refused instead of keeping the killed run's files as its own.
    ``report`` should say ``"overwrite"`` and ``"complete": False``: an ``--overwrite`` run that
    stops leaves a mix of old and new outputs, and a plain rerun is refused too.
    """
    if not overwrite:
        check_settings(out, report.get("settings") or {}, keys, records=records, noun=noun)
    if record is None:
        return
    try:
        write_json(report, record)
    except OSError as exc:
        raise BatchError(f"cannot write {record}: {exc.strerror or exc}; free space or choose another -o folder") \
            from None


def shard_spec(text: str | None = None) -> tuple[int, int]:
    """(index, count) from ``"i/n"`` (0-based: ``0/2`` and ``1/2``), else from torchrun's
    ``RANK`` / ``WORLD_SIZE`` environment, else ``(0, 1)`` (everything)."""
    if text is None:
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
            text = f"{os.environ['RANK']}/{os.environ['WORLD_SIZE']}"
        else:
            return 0, 1
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise BatchError(f"shard must be INDEX/COUNT such as 0/4 (0-based), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise BatchError(f"shard index must be in 0..COUNT-1 (0-based), got {text!r}")
    return i, n


def shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """Every ``count``-th job starting at ``index``: disjoint shards whose union is all jobs."""
    return list(jobs[index::count])


def manifest_path(out: str | Path, index: int = 0, count: int = 1) -> Path:
    """``OUT/manifest.json``, or ``OUT/manifest-<i>-of-<n>.json`` for one of several shards."""
    return Path(out) / ("manifest.json" if count == 1 else f"manifest-{index}-of-{count}.json")


@dataclass
class _Decoded:
    job: Job
    small: np.ndarray | None = None      # (h, w, 3) uint8 at the input size
    size: tuple[int, int] = (0, 0)       # the image's own (H, W)
    error: ImageError | None = None


#: After Ctrl-C, how long running writes (each atomic and quick) may take before the run stops without them.
WRITE_GRACE_S = 30.0

# size-exception: one job loop per command until issue 20's job layer / issue 21's split gives it a seam
def run(
    predictor: Any,
    jobs: Sequence[Job],
    out: str | Path,
    formats: Sequence[str] = ("png",),
    *,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int = 8,
    workers: int = 2,
    progress: bool = True,
    manifest: str | Path | None = None,
    shard_info: tuple[int, int] = (0, 1),
    on_skip: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Predict ``jobs`` with ``predictor`` and write ``formats`` under ``out``; returns the manifest.

    ``overwrite=False`` skips inputs whose outputs all exist. An unreadable input is recorded
    and skipped (``on_skip`` gets the one-line reason), or raises with ``strict``. ``workers``
    threads decode ahead and write behind the network (0: everything on the calling thread).
    """
    from tqdm import tqdm

    from fastsal.predict import postprocess

    for f in formats:
        if f not in FORMATS:
            raise BatchError(f"unknown output format {f!r}; choose from: {', '.join(FORMATS)}")
    if batch_size < 1:
        raise BatchError(f"batch_size must be >= 1, got {batch_size}")
    check_threads(workers, "workers", minimum=0, error=BatchError)
    out = Path(out)
    settings = predictor.settings()
    todo = [j for j in jobs if overwrite or not all(p.is_file() for p in output_paths(out, j.stem, formats).values())]
    report: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "shard": list(shard_info),
        "model": predictor.name,
        "backend": predictor.backend,
        "precision": predictor.precision,
        "input_size": list(predictor.input_size),
        "settings": settings,
        "overwrite": overwrite,
        "formats": list(formats),
        "out": str(out),
        "assigned": len(jobs),
        "skipped_existing": len(jobs) - len(todo),
        "written": [],
        "failed": [],
        "complete": False,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    size = predictor.input_size_for  # each image's network size, from its header (its aspect kept)
    alpha = 0.5
    pending = set(todo)
    for job in jobs:
        if job not in pending:  # done by an earlier run: listed, so `written` covers every output on disk
            report["written"].append({**input_entry(job.source), "outputs": [str(p) for p in output_paths(
                out, job.stem, formats).values()], "earlier_run": True})
    bind_settings(out, manifest, report, overwrite=overwrite)  # before the first output: a SIGKILL cannot unbind them
    for folder in sorted({output_paths(out, j.stem, formats)[formats[0]].parent for j in jobs}):
        remove_stale_temporaries(folder, STALE_TEMPORARY_AGE_S)  # leftovers of killed runs: ours only

    def decode(job: Job) -> _Decoded:
        try:  # only what the network needs: overlays decode the full image again when written
            small, original = load_resized(job.source, size)
            return _Decoded(job, small=small, size=original)
        except ImageError as exc:
            return _Decoded(job, error=exc)

    def write(job: Job, log_small: np.ndarray, original: tuple[int, int]) -> list[str]:
        paths = output_paths(out, job.stem, formats)
        prob = postprocess(log_small, original)  # resizing runs here, off the network's thread
        if "npy" in paths:
            write_map(paths["npy"], "npy", prob)
        if "log_density" in paths:
            write_map(paths["log_density"], "log_density", prob)
        values = to_png(prob) if ({"png", "overlay", "saliency_jpg"} & paths.keys()) else None
        del prob  # a 48 MP map is 192 MB: gone before the overlay decodes the photo
        if "png" in paths:
            _save_bytes(paths["png"], gray_png(values))
        if "saliency_jpg" in paths:
            _save_bytes(paths["saliency_jpg"], encode_jpeg_image(Image.fromarray(values), quality=95))
        if "overlay" in paths:
            try:
                full = load_image(job.source)  # a PIL image, blended in place: no array copy
            except ImageError as exc:  # it decoded a moment ago: changed or removed since
                raise BatchError(f"{exc}; it changed while the run was going") from None
            if full.size[::-1] != values.shape:
                raise BatchError(f"{job.source}: changed size while the run was going; rerun")
            _save_bytes(paths["overlay"], encode_jpeg_image(blend(full, values, alpha)))
        return [str(paths[f]) for f in formats]

    start = time.perf_counter()
    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 0 else None
    writes: deque[tuple[Job, Future]] = deque()

    def finish_writes(keep: int) -> None:
        while len(writes) > keep:
            job, fut = writes.popleft()
            report["written"].append({**input_entry(job.source), "outputs": fut.result()})
            bar.update(1)

    first_error: BaseException | None = None
    try:
        decoded = _ordered(pool, decode, todo, ahead=2 * batch_size)
        while True:
            chunk = [d for _, d in zip(range(batch_size), decoded)]
            if not chunk:
                break
            good = []
            for d in chunk:
                if d.error is None:
                    good.append(d)
                    continue
                report["failed"].append({**input_entry(d.job.source), "error": str(d.error)})
                if strict:
                    raise d.error
                bar.update(1)
                if on_skip is not None:
                    on_skip(str(d.error))
            if not good:
                continue
            # what Predictor.predict_batch does, minus the resize; one forward pass per input size
            logs = predictor.small_log_densities([predictor.preprocess(d.small, d.size) for d in good])
            for d, log_small in zip(good, logs):
                if pool is None:
                    done: Future = Future()
                    done.set_result(write(d.job, log_small, d.size))
                else:
                    done = pool.submit(write, d.job, log_small, d.size)
                writes.append((d.job, done))
            finish_writes(keep=4 * batch_size)  # bounded: maps waiting to be written hold memory
        finish_writes(keep=0)
        report["complete"] = True
    except BaseException as exc:
        first_error = exc
        raise
    finally:
        # On an error or Ctrl-C: maps already computed are still written (each write is atomic
        # and quick) and recorded, so the manifest matches the files on disk; decoding stops.
        # After Ctrl-C or SIGTERM nothing waits for a worker that may never return (a decode
        # blocked in a read): queued work is cancelled, writes already running finish, and the
        # command line ends the process without joining the threads left.
        interrupted = isinstance(first_error, KeyboardInterrupt)
        if pool is not None and interrupted:
            for _, fut in writes:  # pending writes never start (a running one cannot be cancelled)
                fut.cancel()
            pool.shutdown(wait=False, cancel_futures=True)
        wait([fut for _, fut in writes], timeout=WRITE_GRACE_S if interrupted else None)
        if pool is not None and not interrupted:
            pool.shutdown(wait=True, cancel_futures=True)
        for job, fut in writes:
            if fut.cancelled() or not fut.done():  # never started, or still stuck: the rerun makes that map
                continue
            if fut.exception() is None:
                report["written"].append({**input_entry(job.source), "outputs": fut.result()})
            elif not isinstance(fut.exception(), KeyboardInterrupt):
                report["failed"].append({**input_entry(job.source), "error": str(fut.exception())})
        bar.close()
        report["seconds"] = round(time.perf_counter() - start, 3)
        report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if first_error is not None:
            report["stopped_by"] = str(first_error) or type(first_error).__name__
        if manifest is not None:
            try:
                write_json(report, manifest)
            except OSError as exc:
                if first_error is None:  # the run itself went well: this is the error to report
                    raise BatchError(f"cannot write {manifest}: {exc.strerror or exc}; free space or choose "
                                     f"another -o folder") from None
                # otherwise the first error (a full disk, Ctrl-C) is what the user must see
    return report


def input_entry(path: Path) -> dict[str, Any]:
    """A manifest's ``input`` entry: the path as text that any JSON reader accepts.

    File names are bytes on Linux; one that is not UTF-8 arrives as a str with surrogate escapes,
    which strict UTF-8 JSON readers (other languages, ``jq``) reject. Such names are written with
    the odd bytes as ``\\xNN`` and the exact bytes in ``input_hex``.
    """
    text = str(path)
    try:
        text.encode("utf-8")
        return {"input": text}
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return {"input": raw.decode("utf-8", "backslashreplace"), "input_hex": raw.hex()}


def _ordered(pool: ThreadPoolExecutor | None, fn: Callable[[Job], _Decoded], jobs: Sequence[Job], ahead: int):
    """``map(fn, jobs)`` in order, with up to ``ahead`` calls running in ``pool`` in advance."""
    if pool is None:
        yield from map(fn, jobs)
        return
    queue: deque[Future] = deque()
    it = iter(jobs)
    for job in it:
        queue.append(pool.submit(fn, job))
        if len(queue) >= ahead:
            break
    while queue:
        result = queue.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            queue.append(pool.submit(fn, nxt))
        yield result


def write_map(path: str | Path, fmt: str, prob: np.ndarray, image: np.ndarray | None = None) -> Path:
    """Write one map atomically as ``fmt``: ``png`` (min-max scaled greyscale), ``overlay`` (JPEG of
    the map blended onto ``image``, the (H, W, 3) uint8 photo), ``npy`` (the float32 probabilities) or
    ``log_density`` (float32 natural logs, floored at ``LOG_FLOOR`` and renormalised in float64 so
    that ``logsumexp`` is 0, as pysaliency's ``ModelFromDirectory`` checks)."""
    path = Path(path)
    if fmt == "png":
        _save_bytes(path, gray_png(to_png(prob)))
    elif fmt == "log_density":
        from fastsal.densities import LOG_FLOOR

        with np.errstate(divide="ignore"):
            logp = np.maximum(np.log(prob, dtype=np.float64), LOG_FLOOR)
        top = float(logp.max())
        logp -= top + np.log(np.exp(logp - top).sum())
        _save(path, lambda fh: np.save(fh, logp.astype(np.float32)))
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
    "BatchError", "FORMATS", "Job", "MAP_SETTINGS", "bind_settings", "check_settings", "collect", "input_entry",
    "manifest_path", "output_paths", "read_list", "run", "shard",
    "shard_spec", "write_map",
]
