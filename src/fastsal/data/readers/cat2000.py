"""CAT2000 (Borji & Itti, 2015) in its public release layout: category folders of stimuli and
binary fixation maps (``FIXATIONLOCS``), with a seeded split where no ``splits.json`` is given."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from fastsal.data.base import DatasetError, Sample, check_split, image_size, keep_fixated, read_mat, read_split
from fastsal.data.fixations import points_from_map

#: About 38 pixels per degree: an assumption, not a figure the dataset states. CAT2000's 1920x1080
#: stimuli filled a large screen viewed from about a metre (Borji & Itti 2015), some 45-50 degrees
#: wide; 1920 px over ~50.4 degrees is 38 px per degree. It may be off by 10 %; pass --sigma-px
#: (or --sigma-deg) where an exact sigma matters.
CAT2000_PPD = 38.0
#: The deterministic split of ``trainSet`` when ``splits.json`` is absent: per category, images
#: ordered by SHA-256 of this key and their name; the first 80 % ``train``, 10 % ``val``, 10 % ``test``.
CAT2000_SPLIT_KEY = "fastsal-cat2000-split-v1"
CAT2000_SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
CAT2000_LAYOUT = ("trainSet/Stimuli/<Category>/<NNN>.jpg and trainSet/FIXATIONLOCS/<Category>/<NNN>.mat "
                  "(variable fixLocs), optional splits.json")


def _cat2000_base(root: Path) -> Path:
    for base in (root / "trainSet", root):
        if (base / "Stimuli").is_dir() and (base / "FIXATIONLOCS").is_dir():
            return base
    raise DatasetError(f"{root / 'trainSet'}: no Stimuli/ and FIXATIONLOCS/ folders; pass {{option}} pointing at the "
                       f"CAT2000 folder holding {CAT2000_LAYOUT}", option="root")


def _cat2000_split(names: Iterable[str], split: str) -> list[str]:
    """The images of ``split`` in the seeded split of :data:`CAT2000_SPLIT_KEY`, sorted.

    A hash rather than a random generator: the assignment is the same on every machine and
    NumPy version, and each category (20 of 100 images each) is split in the same proportions.
    """
    by_category: dict[str, list[str]] = {}
    for name in names:
        by_category.setdefault(name.split("/", 1)[0], []).append(name)
    cut_val = CAT2000_SPLIT_FRACTIONS[0]
    cut_test = CAT2000_SPLIT_FRACTIONS[0] + CAT2000_SPLIT_FRACTIONS[1]
    chosen = []
    for members in by_category.values():
        ordered = sorted(members, key=lambda n: hashlib.sha256(f"{CAT2000_SPLIT_KEY}:{n}".encode()).hexdigest())
        a, b = round(cut_val * len(ordered)), round(cut_test * len(ordered))
        chosen += {"train": ordered[:a], "val": ordered[a:b], "test": ordered[b:]}[split]
    return sorted(chosen)


def _cat2000_points(mat_path: Path, image: Path, shape: tuple[int, int]) -> np.ndarray:

    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; every stimulus needs its FIXATIONLOCS file: restore "
                           "trainSet/FIXATIONLOCS from CAT2000")
    fix = np.asarray(read_mat(mat_path, "fixLocs", "restore the file from CAT2000's FIXATIONLOCS",
                              "restore it from CAT2000")["fixLocs"])
    if fix.ndim != 2 or fix.dtype.kind not in "biuf":
        raise DatasetError(f"{mat_path}: fixLocs is not a 2-D fixation map (shape {fix.shape}, dtype {fix.dtype}); "
                           "restore the file from CAT2000")
    if fix.shape != shape:
        raise DatasetError(f"{mat_path}: fixation map is {fix.shape[0]}x{fix.shape[1]} (HxW) but its image {image} is "
                           f"{shape[0]}x{shape[1]}; restore the matching Stimuli and FIXATIONLOCS files")
    return points_from_map(fix != 0)


def load_cat2000(root: str | Path, split: str | None = None) -> list[Sample]:
    """CAT2000 (Borji & Itti, 2015): the 2000 ``trainSet`` images of 20 categories, 1920x1080.

    Reads the public release: ``trainSet/Stimuli/<Category>/<NNN>.jpg`` and the binary fixation
    map ``trainSet/FIXATIONLOCS/<Category>/<NNN>.mat`` (variable ``fixLocs``, H x W, non-zero
    where someone fixated; ``FIXATIONMAPS/``, the blurred maps, and the ``Output/`` folders are
    not used). ``root`` is the folder holding ``trainSet/`` (or ``trainSet/`` itself). Names are
    ``Category/NNN.jpg``.

    **One pooled observer.** The release's per-observer data (``allFixData.mat``) is a MATLAB
    ``containers.Map`` that only MATLAB or Octave can read, so each sample carries all observers'
    fixations as one "observer", and a pixel fixated by several people counts once. The
    leave-one-observer-out gold standard cannot be computed (``fastsal evaluate`` says so and
    leaves it out); models, the centre bias and every metric are unaffected.

    **Splits.** CAT2000's ``testSet`` has no public fixations, so there is no canonical split with
    ground truth. ``root/splits.json`` (OSIE's format, ``Category/NNN.jpg`` names) is used if
    present; otherwise a fixed split of ``trainSet``: per category, 80 % ``train``, 10 % ``val``,
    10 % ``test``, by the SHA-256 of :data:`CAT2000_SPLIT_KEY` and the name, identical on every
    run and machine. ``split=None`` gives all images.

    About 38 pixels per degree (:data:`CAT2000_PPD`). Stimulus sizes are read from the image
    headers, and every fixation map must have its image's size.
    """
    root = Path(root)
    check_split(split)
    base = _cat2000_base(root)
    stimuli = base / "Stimuli"
    from fastsal.images import is_image_name

    names = sorted(f"{c.name}/{f.name}" for c in stimuli.iterdir() if c.is_dir() and not c.name.startswith(".")
                   for f in c.iterdir() if f.is_file() and is_image_name(f.name))
    if not names:
        raise DatasetError(f"{stimuli}: no images in category folders; restore CAT2000's {CAT2000_LAYOUT}")
    if split is None:
        chosen = names
    elif (root / "splits.json").is_file():
        chosen = read_split(root, split, dataset="CAT2000")
        missing = sorted(set(chosen) - set(names))
        if missing:
            raise DatasetError(f"{root / 'splits.json'}: {len(missing)} image(s) of {split!r} not under "
                               f"{stimuli}, e.g. {missing[0]}; names are Category/NNN.jpg")
    else:
        chosen = _cat2000_split(names, split)
    samples = []
    for name in chosen:
        image = stimuli / name
        shape = image_size(image)
        mat_path = (base / "FIXATIONLOCS" / name).with_suffix(".mat")
        points = _cat2000_points(mat_path, image, shape)
        samples.append(Sample(name, image, *shape, (points,), CAT2000_PPD))
    return keep_fixated(samples, base / "FIXATIONLOCS")


