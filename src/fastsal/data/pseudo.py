"""A folder of pseudo-labels (``fastsal pseudo-label``) read as a dataset: ``--data pseudo=LABELS``.

The folder holds one ``<name>.npy`` per image (a teacher's float16 natural-log density at the
teacher resolution, mirroring the image tree) and the manifests that say which teacher made each
label, for which image (its path and size) and whether it succeeded. A sample carries its label
as :attr:`~fastsal.data.base.Sample.density_path` instead of fixations, so training learns it
with a distillation loss.

Pseudo-labels are training data only: ``val`` and ``test`` are empty, since choosing checkpoints
or reporting scores needs real fixations. Labels of different teachers are never mixed: the
newest manifest entry of each image counts, and if those name several teachers the folder is
refused (relabel it with one teacher, or use another folder).

This module is the manifest format's single definition: the writer (:mod:`fastsal.pseudo_label`)
uses :func:`latest_entries` to decide what to skip when resuming. Torch-free.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastsal.data.base import DatasetError, Sample, check_split

MANIFEST_FORMAT = "fastsal-pseudo-labels/1"  # written until the job layer's fastsal-manifest/2 (task "labels")
MANIFEST_GLOB = "manifest*.json"
PSEUDO_LAYOUT = "<name>.npy float16 log-densities and manifest*.json, as written by `fastsal pseudo-label`"
OK = "ok"
FAILED = "failed"


def read_manifest(path: Path) -> dict[str, Any]:
    """One manifest as a dict, its entries (labelled and failed) under ``images`` whichever format
    wrote it (``fastsal-pseudo-labels/1``, or the job layer's manifest of task ``labels``);
    :class:`DatasetError` if it is unreadable or not ours."""
    from fastsal.jobs import MANIFEST_FORMAT as JOB_FORMAT

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable pseudo-label manifest ({type(exc).__name__}); rerun "
                           "`fastsal pseudo-label` into this folder to rewrite it") from None
    if (isinstance(data, dict) and data.get("format") == JOB_FORMAT and data.get("task") == "labels"
            and isinstance(data.get("written"), list) and isinstance(data.get("failed"), list)):
        return {**data, "images": [*data["written"], *data["failed"]]}
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a pseudo-label manifest ({MANIFEST_FORMAT}); pass a folder written by "
                           "`fastsal pseudo-label`")
    return data


def latest_entries(root: Path, *, skip_unreadable: bool = False) -> dict[str, dict[str, Any]]:
    """Label path (relative, ``a/b.npy``) -> its newest manifest entry, over every manifest in ``root``.

    Shards write one manifest each (``manifest-<i>-of-<n>.json``) and reruns rewrite theirs, so an
    image may be listed more than once; the manifest updated last wins. ``skip_unreadable``
    ignores damaged manifests (the writer then relabels their images) instead of raising.
    """
    manifests = []
    for path in sorted(Path(root).glob(MANIFEST_GLOB)):
        try:
            manifests.append(read_manifest(path))
        except DatasetError:
            if not skip_unreadable:
                raise
    entries: dict[str, dict[str, Any]] = {}
    for data in sorted(manifests, key=lambda d: str(d.get("updated", ""))):
        for entry in data["images"]:
            if isinstance(entry, dict) and isinstance(entry.get("label"), str):
                entries[entry["label"]] = entry
    return entries


def _input_path(entry: dict[str, Any]) -> Path:
    """The labelled image: ``input``, or its exact bytes (``input_hex``) for names that are not UTF-8
    (:func:`fastsal.batch.input_entry` writes both)."""
    raw = entry.get("input_hex")
    if isinstance(raw, str):
        try:
            return Path(os.fsdecode(bytes.fromhex(raw)))
        except ValueError:
            pass
    return Path(str(entry.get("input", "")))


def load_pseudo(root: str | Path, split: str | None = None) -> list[Sample]:
    """The labelled images of a ``fastsal pseudo-label`` folder as samples with a target density.

    ``split``: ``train`` or ``None`` give every successfully labelled image (sorted by name);
    ``val`` and ``test`` give none (see the module docstring). Labels whose file or image is
    missing, and a folder mixing teachers, are one-line errors.
    """
    root = Path(root)
    check_split(split)
    if split in ("val", "test"):
        return []
    if not any(root.glob(MANIFEST_GLOB)):
        raise DatasetError(f"{root}: no manifest.json; pass a folder written by `fastsal pseudo-label`")
    done = {label: e for label, e in latest_entries(root).items() if e.get("status") == OK}
    if not done:
        raise DatasetError(f"{root}: its manifests list no finished label; run `fastsal pseudo-label` into it first")
    teachers = sorted({str(e.get("teacher_sha256")) for e in done.values()})
    if len(teachers) > 1:
        raise DatasetError(f"{root}: holds labels of {len(teachers)} teachers ({', '.join(t[:12] for t in teachers)}); "
                           "relabel the folder with one teacher or pass another folder")
    samples, missing_labels, missing_images = [], [], []
    for label in sorted(done):
        entry = done[label]
        path, image = root / label, _input_path(entry)
        if not path.is_file():
            missing_labels.append(label)
            continue
        if not image.is_file():
            missing_images.append(str(image))
            continue
        try:
            height, width = (int(v) for v in entry["shape"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(f"{root}: the manifest entry of {label} has no image shape; rerun `fastsal "
                               "pseudo-label` with {option}", option="overwrite") from None
        samples.append(Sample(label.removesuffix(".npy"), image, height, width, (), None, density_path=path))
    if missing_labels:
        raise DatasetError(f"{root}: {len(missing_labels)} label file(s) its manifest lists are missing, e.g. "
                           f"{missing_labels[0]}; rerun `fastsal pseudo-label` into it to restore them")
    if missing_images:
        raise DatasetError(f"{root}: {len(missing_images)} labelled image(s) are gone, e.g. {missing_images[0]}; "
                           "restore them (labels point at the images they were made from)")
    return samples


__all__ = ["FAILED", "MANIFEST_FORMAT", "OK", "PSEUDO_LAYOUT", "latest_entries", "load_pseudo", "read_manifest"]
