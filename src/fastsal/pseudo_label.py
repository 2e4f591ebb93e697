"""``fastsal pseudo-label``: a teacher's density for every image of a folder, for training students.

    teacher = Teacher(["runs/teacher/best.pt"], tta="flip,scales=192x256+288x384")
    jobs = shard(collect(["photos/"]), *shard_spec("0/4"))        # fastsal.batch's pieces
    report = run(teacher, jobs, "labels/", manifest=manifest_path("labels/", 0, 4))

Writes ``LABELS/<relative path without suffix>.npy`` per image (the input tree mirrored, as
``fastsal predict`` does): the teacher's natural-log density at the teacher resolution, float16
(half the bytes of float32; its ~3 significant digits are far finer than any teacher's accuracy),
and a manifest (:mod:`fastsal.data.pseudo` reads both) with the teacher's identity and hash, its
input sizes, TTA and centre-bias handling, the fastsal version, and every image's status.

Resumable: an image is skipped when its label exists and its newest manifest entry says it was
made by a teacher with the same hash; anything else is labelled (again). Labels and manifests
are written atomically, and the manifest every few images as well as at the end, so a run killed
at any point resumes losing at most those few. Sharded with ``--shard i/n`` or torchrun's
``RANK``/``WORLD_SIZE`` (each shard writes ``manifest-<i>-of-<n>.json``). Unreadable images are
listed as failed and skipped, or stop the run with ``strict``.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastsal import __version__
from fastsal.batch import Job, input_entry
from fastsal.data.pseudo import FAILED, MANIFEST_FORMAT, OK, latest_entries
from fastsal.errors import FastSalError
from fastsal.files import atomic_write, remove_stale_temporaries, write_json
from fastsal.images import ImageError, load_rgb

# Temporaries older than this are a killed run's leftovers (a label is written in milliseconds).
STALE_TEMPORARY_AGE_S = 300.0
# The manifest is rewritten after this many newly labelled images or seconds, whichever first.
MANIFEST_EVERY_IMAGES = 32
MANIFEST_EVERY_S = 60.0
LABEL_DTYPE = np.float16


class PseudoLabelError(FastSalError, ValueError):
    """Pseudo-labelling cannot go on (an unwritable label, a bad input option); one line."""


def label_name(stem: Path) -> str:
    """The label's path relative to the output folder: ``a/b.jpg`` (stem ``a/b``) -> ``a/b.npy``."""
    return stem.with_name(stem.name + ".npy").as_posix()


def dataset_jobs(name: str, root: str | Path, split: str) -> list[Job]:
    """The images of a registered dataset's split as jobs (``--dataset mit1003 --split train``):
    labelling a split, never its test images by accident."""
    from fastsal.data.datasets import load_dataset

    samples = load_dataset(name, root, split)
    if not samples:
        raise PseudoLabelError(f"--dataset {name} --split {split}: no images in {root}")
    return [Job(s.image_path, Path(s.name).with_suffix("")) for s in samples]


def run(
    teacher: Any,
    jobs: Sequence[Job],
    out: str | Path,
    *,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int = 4,
    progress: bool = True,
    manifest: str | Path | None = None,
    shard_info: tuple[int, int] = (0, 1),
    on_skip: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Label ``jobs`` with ``teacher`` (a :class:`fastsal.teacher.Teacher`) into ``out``; returns the manifest.

    ``overwrite`` relabels images already done. An unreadable image is listed as failed and
    skipped (``on_skip`` gets the one-line reason), or raised with ``strict`` (after the manifest
    is written). ``batch_size`` images go through the teacher at a time.
    """
    from tqdm import tqdm

    if not isinstance(batch_size, int) or batch_size < 1:
        raise PseudoLabelError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    out = Path(out)
    identity = teacher.identity()
    sha = identity["sha256"]
    out.mkdir(parents=True, exist_ok=True)
    for folder in sorted({(out / label_name(j.stem)).parent for j in jobs} | {out}):
        remove_stale_temporaries(folder, STALE_TEMPORARY_AGE_S)
    prior = {} if overwrite else latest_entries(out, skip_unreadable=True)

    def finished(job: Job) -> bool:
        entry = prior.get(label_name(job.stem))
        return (entry is not None and entry.get("status") == OK and entry.get("teacher_sha256") == sha
                and (out / label_name(job.stem)).is_file())

    entries: dict[str, dict[str, Any]] = {}
    todo = []
    for job in jobs:
        if finished(job):
            entries[label_name(job.stem)] = {**prior[label_name(job.stem)], "earlier_run": True}
        else:
            todo.append(job)
    report: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "fastsal_version": __version__,
        "teacher": identity,
        "label": {"dtype": np.dtype(LABEL_DTYPE).name, "values": "natural-log density over the label's pixels "
                  "(logsumexp 0), at the image's aspect and the teacher resolution's pixel count"},
        "shard": list(shard_info),
        "out": str(out),
        "assigned": len(jobs),
        "skipped_existing": len(jobs) - len(todo),
        "labelled": 0,
        "failed": 0,
        "complete": False,
        "started": _now(),
        "images": [],
    }

    def save() -> None:
        if manifest is None:
            return
        report["images"] = list(entries.values())
        report["updated"] = _now()
        try:
            write_json(report, manifest)
        except OSError as exc:
            raise PseudoLabelError(f"cannot write {manifest}: {exc.strerror or exc}; free space or choose another "
                                   "-o folder") from None

    bar = tqdm(total=len(todo), unit="img", disable=not progress, dynamic_ncols=True)
    start = last_save = time.perf_counter()
    since_save = 0
    stopped: BaseException | None = None
    try:
        for i in range(0, len(todo), batch_size):
            good: list[tuple[Job, np.ndarray]] = []
            for job in todo[i:i + batch_size]:
                try:
                    good.append((job, load_rgb(job.source)))
                except ImageError as exc:
                    entries[label_name(job.stem)] = {**input_entry(job.source), "label": label_name(job.stem),
                                                     "status": FAILED, "error": str(exc)}
                    report["failed"] += 1
                    bar.update(1)
                    if strict:
                        raise
                    if on_skip is not None:
                        on_skip(str(exc))
            if good:
                labels = teacher.log_densities([rgb for _, rgb in good])
                for (job, rgb), logp in zip(good, labels):
                    name = label_name(job.stem)
                    _write_label(out / name, logp)
                    entries[name] = {**input_entry(job.source.absolute()), "label": name, "status": OK,
                                     "shape": list(rgb.shape[:2]), "label_shape": list(logp.shape),
                                     "teacher_sha256": sha}
                    report["labelled"] += 1
                    since_save += 1
                    bar.update(1)
            if since_save >= MANIFEST_EVERY_IMAGES or time.perf_counter() - last_save > MANIFEST_EVERY_S:
                save()
                since_save, last_save = 0, time.perf_counter()
        report["complete"] = True
    except BaseException as exc:
        stopped = exc
        raise
    finally:
        bar.close()
        report["seconds"] = round(time.perf_counter() - start, 3)
        if stopped is not None:
            report["stopped_by"] = str(stopped) or type(stopped).__name__
        try:
            save()
        except PseudoLabelError:
            if stopped is None:
                raise
    report["images"] = list(entries.values())
    return report


def _write_label(path: Path, logp: np.ndarray) -> None:
    try:
        with atomic_write(path) as fh:
            np.save(fh, np.asarray(logp, dtype=np.float64).astype(LABEL_DTYPE))
    except OSError as exc:
        raise PseudoLabelError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another -o") from None


def _now() -> str:
    """UTC time to the microsecond: manifests are ordered by it (:func:`latest_entries`)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


__all__ = ["LABEL_DTYPE", "PseudoLabelError", "dataset_jobs", "label_name", "run"]
