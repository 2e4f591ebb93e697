"""Eye-tracking datasets: one notion (images, per-observer fixations, pixels per degree, canonical
splits) and one reader per public file layout; this module is the registry.

A dataset is registered once in :data:`DATASETS` with its reader, its viewing geometry and a
description of the layout it expects. Everything downstream (``fastsal train --data``,
``fastsal evaluate --dataset``) looks datasets up there by name, so a new reader is one module
under :mod:`fastsal.data.readers` and one entry here.

Readers: OSIE and MIT1003 (``fixations.mat``), Scene (a cell array of ``[y, x]`` per observer),
CAT2000 and SALICON in their public release layouts, ``folder`` for one's own data (images plus
a CSV of points or binary fixation maps) and ``pseudo`` for a teacher's labels.

This module also re-exports the readers' public names (``load_osie``, ``Sample``,
``read_split``, ``SCENE_DEGREE_SHARE``, ...): ``fastsal.data.datasets`` is the import path the
benchmarks, scripts and weight cards use.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastsal import defaults
from fastsal.data.base import (
    SPLITS,
    DatasetError,
    DatasetInfo,
    DatasetWarning,
    Reader,
    Sample,
    check_split,
    image_size,
    read_mat,
    read_split,
)
from fastsal.data.pseudo import PSEUDO_LAYOUT, load_pseudo
from fastsal.data.readers.cat2000 import CAT2000_LAYOUT, CAT2000_PPD, CAT2000_SPLIT_KEY, load_cat2000
from fastsal.data.readers.folder import FOLDER_LAYOUT, load_folder
from fastsal.data.readers.mit_mat import MIT1003_PPD, OSIE_PPD, OSIE_SIZE, load_mit1003, load_osie, read_fixations_mat
from fastsal.data.readers.salicon import SALICON_LAYOUT, SALICON_PPD, load_salicon
from fastsal.data.readers.scene import SCENE_DEGREE_SHARE, SCENE_LAYOUT, load_scene

MAT_LAYOUT = "stimuli/*.jpg, eye/fixations.mat, splits.json"

_ENTRIES = (
    DatasetInfo("osie", load_osie, MAT_LAYOUT, OSIE_PPD, "Xu et al., JoV 2014"),
    DatasetInfo("mit1003", load_mit1003, MAT_LAYOUT, MIT1003_PPD, "Judd et al., ICCV 2009"),
    DatasetInfo("scene", load_scene, SCENE_LAYOUT, None, "NUS Scene (Liang et al., 2015); sigma assumed"),
    DatasetInfo("cat2000", load_cat2000, CAT2000_LAYOUT, CAT2000_PPD, "Borji & Itti, CVPR workshops 2015"),
    DatasetInfo("salicon", load_salicon, SALICON_LAYOUT, SALICON_PPD, "Jiang et al., CVPR 2015"),
    DatasetInfo("folder", load_folder, FOLDER_LAYOUT, None, "your own recordings"),
    DatasetInfo("pseudo", load_pseudo, PSEUDO_LAYOUT, None, "a teacher's labels (fastsal pseudo-label)"),
)
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _ENTRIES}
# defaults.DATASET_NAMES is the torch-free copy ``--help`` lists: the two must never drift apart.
if tuple(DATASETS) != defaults.DATASET_NAMES:  # pragma: no cover - a development error
    raise AssertionError(f"defaults.DATASET_NAMES {defaults.DATASET_NAMES} != registered {tuple(DATASETS)}")


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


def dataset_roots(entries: Sequence[str], *, data_dir: str | Path | None,
                  root: str | Path | None = None) -> list[tuple[str, Path]]:
    """(name, folder) of each ``NAME[=FOLDER]`` entry: ``FOLDER``, else ``root`` (the folder of a
    single dataset), else ``data_dir/NAME``.

    The one reading of that rule (training, distillation and calibration use it). There is no
    default data folder, since a path that exists on one development machine is no library
    default: a bare ``NAME`` without ``data_dir`` is a one-line error naming ``data_dir``.
    """
    out = []
    for entry in entries:
        name, _, folder = entry.partition("=")
        if folder:
            out.append((name, Path(folder)))
        elif root is not None:
            out.append((name, Path(root)))
        elif data_dir is None or not str(data_dir):
            raise DatasetError(f"{{option}} is not set, so dataset {name!r} has no folder; pass {{option}} (the "
                               f"folder holding {name}/) or name the folder as {name}=FOLDER", option="data_dir")
        else:
            out.append((name, Path(data_dir) / name))
    return out


__all__ = [
    "CAT2000_LAYOUT", "CAT2000_PPD", "CAT2000_SPLIT_KEY", "DATASETS", "FOLDER_LAYOUT", "MAT_LAYOUT", "MIT1003_PPD",
    "OSIE_PPD", "OSIE_SIZE", "PSEUDO_LAYOUT", "SALICON_LAYOUT", "SALICON_PPD", "SCENE_DEGREE_SHARE", "SCENE_LAYOUT",
    "SPLITS", "DatasetError", "DatasetInfo", "DatasetWarning", "Reader", "Sample", "check_split", "dataset_info", "dataset_roots",
    "image_size", "load_cat2000", "load_dataset", "load_folder", "load_mit1003", "load_osie", "load_pseudo",
    "load_salicon", "load_scene", "read_fixations_mat", "read_mat", "read_split",
]
