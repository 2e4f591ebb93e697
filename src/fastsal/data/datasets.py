"""Dataset readers: each returns plain :class:`Sample` records, one per stimulus.

Every reader validates what it reads and fails with one line naming the file and the fix, since
a malformed fixation file otherwise surfaces much later as a silently wrong score.
"""
from __future__ import annotations

from fastsal.errors import FastSalError

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


class DatasetError(FastSalError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    """One stimulus with its eye fixations, per observer, as 0-based (x, y) pixel points."""

    name: str
    image_path: Path
    height: int
    width: int
    observers: tuple[np.ndarray, ...] = field(repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def fixations(self) -> np.ndarray:
        """All observers' fixations stacked, shape (N, 2)."""
        if not self.observers:
            return np.zeros((0, 2))
        return np.concatenate(self.observers, axis=0)


def read_split(root: str | Path, split: str) -> list[str]:
    """Image names of a split from ``root/splits.json``."""
    path = Path(root) / "splits.json"
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found; pass --root pointing at the OSIE folder (holding splits.json)") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); restore the file") from None
    names = data.get(split) if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{path}: no list of image names under {split!r}; restore the file")
    return names


def _observer_points(subject, mat_path: Path, img: str) -> np.ndarray:
    try:
        xs = np.atleast_1d(np.asarray(subject.fix_x, dtype=np.float64))
        ys = np.atleast_1d(np.asarray(subject.fix_y, dtype=np.float64))
    except AttributeError:
        raise DatasetError(f"{mat_path}: entry {img} lacks fix_x/fix_y; restore the OSIE fixations file") from None
    if xs.shape != ys.shape:
        raise DatasetError(f"{mat_path}: entry {img} has fix_x and fix_y of different lengths; restore the file")
    # MATLAB coordinates are 1-based.
    return np.stack([xs - 1.0, ys - 1.0], axis=1)


def load_osie(root: str | Path, split: str | None = None) -> list[Sample]:
    """OSIE (Xu et al., JoV 2014): 700 images of 800x600, 15 observers, 3 s free viewing.

    ``root`` holds ``stimuli/``, ``eye/fixations.mat`` and ``splits.json``. With ``split`` only
    that split is returned, in the order of ``splits.json``; otherwise all images, sorted.
    """
    from scipy.io import loadmat

    root = Path(root)
    mat_path = root / "eye" / "fixations.mat"
    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; pass --root pointing at the OSIE folder (stimuli/, eye/, splits.json)")
    try:
        mat = loadmat(str(mat_path), squeeze_me=True, struct_as_record=False)
        entries = np.atleast_1d(mat["fixations"])
    except KeyError:
        raise DatasetError(f"{mat_path}: no variable 'fixations'; restore the OSIE fixations file") from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetError(f"{mat_path}: cannot read MATLAB file ({exc}); restore the OSIE fixations file") from None

    by_name: dict[str, Sample] = {}
    for entry in entries:
        img = str(getattr(entry, "img", ""))
        if not img:
            raise DatasetError(f"{mat_path}: an entry has no 'img' name; restore the OSIE fixations file")
        subjects = np.atleast_1d(getattr(entry, "subjects", np.array([])))
        observers = tuple(_observer_points(s, mat_path, img) for s in subjects)
        by_name[img] = Sample(img, root / "stimuli" / img, 600, 800, observers)

    names = read_split(root, split) if split is not None else sorted(by_name)
    missing = [n for n in names if n not in by_name]
    if missing:
        raise DatasetError(f"{mat_path}: no fixations for {len(missing)} image(s) of the split, e.g. {missing[0]}; check splits.json")
    return [by_name[n] for n in names]
