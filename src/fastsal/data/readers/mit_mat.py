"""OSIE and MIT1003: the ``fixations.mat`` layout they share (a struct array ``fixations`` of
``img`` and per-observer ``subjects`` with 1-based ``fix_x``, ``fix_y``), under ``stimuli/``,
``eye/fixations.mat`` and ``splits.json``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fastsal.data.base import DatasetError, Sample, image_size, read_mat, read_split, select


def _observer_points(subject: Any, mat_path: Path, img: str) -> np.ndarray:
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

    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; pass {{option}} pointing at the {what} folder (stimuli/, eye/, "
                           "splits.json)", option="root")
    restore = f"restore the {what} fixations file"
    entries = np.atleast_1d(read_mat(mat_path, "fixations", restore, restore, squeeze_me=True,
                                     struct_as_record=False)["fixations"])
    out: dict[str, tuple[np.ndarray, ...]] = {}
    for entry in entries:
        img = str(getattr(entry, "img", ""))
        if not img:
            raise DatasetError(f"{mat_path}: an entry has no 'img' name; restore the {what} fixations file")
        subjects = np.atleast_1d(getattr(entry, "subjects", np.array([])))
        out[img] = tuple(_observer_points(s, mat_path, img) for s in subjects)
    return out


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
    return select(by_name, root, split, mat_path, "OSIE")


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
    return select(by_name, root, split, mat_path, "MIT1003")

