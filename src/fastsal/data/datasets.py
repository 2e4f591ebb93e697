"""Eye-tracking datasets: one notion (images, per-observer fixations, pixels per degree, canonical
splits) and one reader per public file layout.

A dataset is registered once in :data:`DATASETS` with its reader, its viewing geometry and a
description of the layout it expects. Everything downstream (``fastsal train --data``,
``fastsal evaluate --dataset``) looks datasets up there by name, so a new reader is one entry.

Every reader validates what it reads and fails with one line naming the file and the fix, since
a malformed fixation file otherwise surfaces much later as a silently wrong score.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastsal import defaults
from fastsal.errors import FastSalError

SPLITS = defaults.SPLITS


class DatasetError(FastSalError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class Sample:
    """One stimulus with its eye fixations, per observer, as 0-based (x, y) pixel points.

    ``pixels_per_degree`` is the viewing geometry at the image's own resolution: the density
    sigma of one degree of visual angle is that many pixels (:meth:`sigma_px`). ``None`` means
    the dataset does not know it; :data:`fastsal.defaults.SIGMA_PX` is used then.
    """

    name: str
    image_path: Path
    height: int
    width: int
    observers: tuple[np.ndarray, ...] = field(repr=False)
    pixels_per_degree: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def fixations(self) -> np.ndarray:
        """All observers' fixations stacked, shape (N, 2)."""
        if not self.observers:
            return np.zeros((0, 2))
        return np.concatenate(self.observers, axis=0)

    def sigma_px(self, degrees: float = defaults.SIGMA_DEG) -> float:
        """The density's Gaussian sigma in pixels of this image for ``degrees`` of visual angle."""
        ppd = self.pixels_per_degree
        return float(degrees * ppd) if ppd else float(defaults.SIGMA_PX * degrees / defaults.SIGMA_DEG)


Reader = Callable[[Path, "str | None"], list[Sample]]


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: how to read it, and what a user must have on disk.

    ``layout`` is printed when the root does not look right, so the fix is in the error.
    ``pixels_per_degree`` is the nominal geometry (per sample where sizes vary); ``citation``
    names the paper whose conventions the reader follows.
    """

    name: str
    reader: Reader
    layout: str
    pixels_per_degree: float | None
    citation: str


def read_split(root: str | Path, split: str, *, dataset: str = "dataset") -> list[str]:
    """Image names of a split from ``root/splits.json`` (``{"train": [...], "val": [...], "test": [...]}``)."""
    path = Path(root) / "splits.json"
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found; pass --root pointing at the {dataset} folder (holding splits.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DatasetError(f"{path}: not valid JSON{where}; restore the file") from None
    names = data.get(split) if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{path}: no list of image names under {split!r}; restore the file")
    return names


def _observer_points(subject, mat_path: Path, img: str) -> np.ndarray:
    try:
        xs = np.atleast_1d(np.asarray(subject.fix_x, dtype=np.float64))
        ys = np.atleast_1d(np.asarray(subject.fix_y, dtype=np.float64))
    except AttributeError:
        raise DatasetError(f"{mat_path}: entry {img} lacks fix_x/fix_y; restore the fixations file") from None
    except (TypeError, ValueError):
        raise DatasetError(f"{mat_path}: entry {img} has non-numeric fix_x/fix_y; restore the fixations file") from None
    if xs.shape != ys.shape:
        raise DatasetError(f"{mat_path}: entry {img} has fix_x and fix_y of different lengths; restore the file")
    # MATLAB coordinates are 1-based.
    return np.stack([xs - 1.0, ys - 1.0], axis=1)


def read_fixations_mat(mat_path: Path, what: str) -> dict[str, tuple[np.ndarray, ...]]:
    """``fixations.mat`` (struct array ``fixations`` -> ``img``, ``subjects`` -> ``fix_x``, ``fix_y``)
    as image name -> per-observer 0-based points.

    The layout OSIE and the ksvd-saliency copy of MIT1003 share. ``what`` names the dataset in
    errors ("OSIE", "MIT1003").
    """
    from scipy.io import loadmat

    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; pass --root pointing at the {what} folder (stimuli/, eye/, splits.json)")
    try:
        mat = loadmat(str(mat_path), squeeze_me=True, struct_as_record=False)
        entries = np.atleast_1d(mat["fixations"])
    except KeyError:
        raise DatasetError(f"{mat_path}: no variable 'fixations'; restore the {what} fixations file") from None
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetError(f"{mat_path}: cannot read MATLAB file ({exc}); restore the {what} fixations file") from None
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for entry in entries:
        img = str(getattr(entry, "img", ""))
        if not img:
            raise DatasetError(f"{mat_path}: an entry has no 'img' name; restore the {what} fixations file")
        subjects = np.atleast_1d(getattr(entry, "subjects", np.array([])))
        out[img] = tuple(_observer_points(s, mat_path, img) for s in subjects)
    return out


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header alone (no decoding): reading 1000 sizes takes a fraction of a second."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: image not found; restore the dataset's stimuli folder") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable image ({type(exc).__name__}); restore the file") from None
    return int(h), int(w)


def _select(names_available: dict[str, Sample], root: Path, split: str | None, where: Path,
            dataset: str) -> list[Sample]:
    names = read_split(root, split, dataset=dataset) if split is not None else sorted(names_available)
    missing = [n for n in names if n not in names_available]
    if missing:
        raise DatasetError(f"{where}: no fixations for {len(missing)} image(s) of the split, e.g. {missing[0]}; "
                           "check splits.json")
    return [names_available[n] for n in names]


OSIE_SIZE = (600, 800)
OSIE_PPD = 24.0
MIT1003_PPD = 35.0


def load_osie(root: str | Path, split: str | None = None) -> list[Sample]:
    """OSIE (Xu et al., JoV 2014): 700 images of 800x600, 15 observers, 3 s free viewing.

    ``root`` holds ``stimuli/``, ``eye/fixations.mat`` and ``splits.json``. With ``split`` only
    that split is returned, in the order of ``splits.json``; otherwise all images, sorted. All
    images are 800x600, so no image header is read.
    """
    root = Path(root)
    mat_path = root / "eye" / "fixations.mat"
    fix = read_fixations_mat(mat_path, "OSIE")
    by_name = {img: Sample(img, root / "stimuli" / img, *OSIE_SIZE, obs, OSIE_PPD) for img, obs in fix.items()}
    return _select(by_name, root, split, mat_path, "OSIE")


def load_mit1003(root: str | Path, split: str | None = None) -> list[Sample]:
    """MIT1003 (Judd et al., ICCV 2009): 1003 images up to 1024 px on the long side, 15 observers.

    The layout of OSIE (``stimuli/``, ``eye/fixations.mat``, ``splits.json``); image sizes vary
    (142 of them, landscape and portrait), so each is read from its file's header. About 35 pixels
    per degree at 1024 px (Judd et al.), the same for every image since all were shown at that scale.
    """
    root = Path(root)
    mat_path = root / "eye" / "fixations.mat"
    fix = read_fixations_mat(mat_path, "MIT1003")
    names = read_split(root, split, dataset="MIT1003") if split is not None else sorted(fix)
    by_name = {}
    for img in names:
        if img in fix:
            path = root / "stimuli" / img
            by_name[img] = Sample(img, path, *image_size(path), fix[img], MIT1003_PPD)
    return _select(by_name, root, split, mat_path, "MIT1003")


DATASETS: dict[str, DatasetInfo] = {
    "osie": DatasetInfo("osie", load_osie, "stimuli/*.jpg, eye/fixations.mat, splits.json", OSIE_PPD,
                        "Xu et al., JoV 2014"),
    "mit1003": DatasetInfo("mit1003", load_mit1003, "stimuli/*.jpg, eye/fixations.mat, splits.json",
                           MIT1003_PPD, "Judd et al., ICCV 2009"),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registered dataset ``name``, or a one-line error listing the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


def load_dataset(name: str, root: str | Path, split: str | None = None) -> list[Sample]:
    """Samples of dataset ``name`` under ``root`` (one split, or all images when ``split`` is None).

    A root that does not exist is reported with the layout the reader expects.
    """
    info = dataset_info(name)
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder; pass the {name} folder holding {info.layout}")
    return info.reader(root, split)
