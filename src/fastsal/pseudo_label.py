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

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastsal.data.pseudo import FAILED, OK, latest_entries
from fastsal.errors import FastSalError
from fastsal.images import ImageError, load_rgb
from fastsal.jobs import Item, Job, Result, Task, image_source, input_entry

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
        raise PseudoLabelError(f"{{option}} {name} (split {split}): no images in {root}", option="dataset")
    return [Job(s.image_path, Path(s.name).with_suffix("")) for s in samples]


class LabelTask(Task[Job]):
    """``fastsal pseudo-label`` as a job: the teacher's float16 log-density per image.

    Not bound to settings like maps: a label is done only through a manifest entry made by a
    teacher with the same hash, so another teacher relabels (never keeps) what it finds.
    """

    kind, noun = "labels", "labels"
    settings_keys = ()
    input_errors = (ImageError,)

    def __init__(self, out: str | Path, **kw: Any) -> None:
        super().__init__(out, **kw)
        self._prior: dict[str, dict[str, Any]] | None = None

    def outputs(self, job: Job) -> dict[str, Path]:
        return {"label": self.out / label_name(job.stem)}

    def settings(self) -> dict[str, Any]:
        return {"teacher_sha256": self.model.sha256}

    def header(self, settings: dict[str, Any]) -> dict[str, Any]:
        return {"teacher": self.model.identity(),
                "label": {"dtype": np.dtype(LABEL_DTYPE).name, "values": "natural-log density over the label's "
                          "pixels (logsumexp 0), at the image's aspect and the teacher resolution's pixel count"}}

    def earlier(self, item: Item) -> dict[str, Any] | None:
        if self._prior is None:
            self._prior = latest_entries(self.out, skip_unreadable=True)
        entry = self._prior.get(label_name(item.stem))
        if (entry is not None and entry.get("status") == OK and entry.get("teacher_sha256") == self.model.sha256
                and item.outputs["label"].is_file()):
            return {k: v for k, v in entry.items() if k != "earlier_run"}
        return None

    def decode(self, item: Item) -> np.ndarray:
        return load_rgb(Path(image_source(item)))

    def infer(self, decoded: list[Any]) -> list[Any]:
        return self.model.log_densities(decoded)

    def encode(self, item: Item, rgb: Any, logp: Any) -> Result:
        import io

        name, buf = label_name(item.stem), io.BytesIO()
        np.save(buf, np.asarray(logp, dtype=np.float64).astype(LABEL_DTYPE))
        entry = {**input_entry(Path(image_source(item)).absolute()), "label": name, "status": OK,
                 "shape": list(rgb.shape[:2]), "label_shape": list(logp.shape), "teacher_sha256": self.model.sha256}
        return Result(item.key, entry, {str(item.outputs["label"]): buf.getvalue()})

    def failure(self, item: Item, exc: BaseException) -> Result:
        result = super().failure(item, exc)
        result.entry.update(label=label_name(item.stem), status=FAILED)
        return result


def run(teacher: Any, jobs: Sequence[Job], out: str | Path, *, batch_size: int = 4,
        loader: Callable[[], Any] | None = None, **options: Any) -> dict[str, Any]:
    """Label ``jobs`` with ``teacher`` (a :class:`fastsal.teacher.Teacher`) into ``out``; returns the manifest.

    ``options`` are :func:`fastsal.jobs.run`'s: ``overwrite`` relabels images already done; an
    unreadable image is listed as failed and skipped (``on_skip`` gets the one-line reason), or
    raised with ``strict`` (after the manifest is written). ``batch_size`` images go through the
    teacher at a time.

    ``loader``: makes the teacher again where the task is sent (an ``executor``'s remote workers).
    """
    from fastsal.jobs import run as run_task

    if not isinstance(batch_size, int) or batch_size < 1:
        raise PseudoLabelError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    Path(out).mkdir(parents=True, exist_ok=True)
    return run_task(LabelTask(out, model=teacher, loader=loader), jobs, batch_size=batch_size, **options)


def labelled(report: dict[str, Any]) -> int:
    """Images newly labelled by the run a manifest describes."""
    return sum(1 for e in report.get("written", []) if not e.get("earlier_run"))


__all__ = ["LABEL_DTYPE", "LabelTask", "PseudoLabelError", "dataset_jobs", "label_name", "labelled", "run"]
