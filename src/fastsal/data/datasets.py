"""Eye-tracking datasets: one notion (images, per-observer fixations, pixels per degree, canonical
splits) and one reader per public file layout.

A dataset is registered once in :data:`DATASETS` with its reader, its viewing geometry and a
description of the layout it expects. Everything downstream (``fastsal train --data``,
``fastsal evaluate --dataset``) looks datasets up there by name, so a new reader is one entry.

Readers: OSIE and MIT1003 (``fixations.mat``), Scene (a cell array of ``[y, x]`` per observer),
CAT2000 and SALICON in their public release layouts, and ``folder`` for one's own data (images plus a CSV of points or binary fixation maps).

Every reader validates what it reads and fails with one line naming the file and the fix, since
a malformed fixation file otherwise surfaces much later as a silently wrong score. What a reader
leaves out on purpose (points outside their image, images without fixations) is reported in one
:class:`DatasetWarning` line per kind, with the count, rather than silently.
"""
# size-exception: the readers share private validation helpers; splitting them out waits for issue 21's data package
from __future__ import annotations

import csv
import hashlib
import json
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsal import defaults
from fastsal.data.fixations import points_from_map
from fastsal.errors import FastSalError, FastSalWarning, first_line

SPLITS = defaults.SPLITS


class DatasetError(FastSalError, ValueError):
    """A dataset file is missing or malformed; the message names the file and the fix."""


class DatasetWarning(FastSalWarning):
    """A reader left something out (points outside their image, images without fixations); the
    message is one line naming the file, how many and which."""


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
    #: A target density instead of fixations: a teacher's float16 log-density (``.npy``) from
    #: ``fastsal pseudo-label``. Training learns it with a distillation loss (no fixations, no NSS).
    density_path: Path | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def kind(self) -> str:
        """``"fixations"`` (eye-tracking ground truth) or ``"density"`` (a teacher's label)."""
        return "density" if self.density_path is not None else "fixations"

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

    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; pass --root pointing at the {what} folder (stimuli/, eye/, splits.json)")
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


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header alone (no decoding): reading 1000 sizes takes a fraction of a second.

    The size is that of the upright image, after its EXIF orientation, since that is the image
    :func:`fastsal.images.load_rgb` gives the model and the frame fixations were recorded in.
    """
    from PIL import UnidentifiedImageError

    from fastsal.images import open_header

    try:
        with open_header(path) as im:
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # a quarter turn: width and height swap
                w, h = h, w
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


#: Scene (NUS, Liang et al. 2015) publishes no viewing geometry. We assume one degree is 3 % of the
#: image's long side: OSIE's 24 px at 800 px, a comparable free-viewing set-up from the same lab.
#: Every Scene figure we report says so; pass --sigma-px where another assumption is wanted.
SCENE_DEGREE_SHARE = 0.03
SCENE_LAYOUT = "stimuli/NNN.jpg, eye/fixations.mat (cell array fixations, image x observer, [y, x, onset, duration]), splits.json"


def load_scene(root: str | Path, split: str | None = None) -> list[Sample]:
    """Scene (NUS-VIP, SUN2012 photos): 500 images of mixed sizes, 10-12 observers each.

    ``eye/fixations.mat`` holds one (images x observers) cell array ``fixations``, rows in image
    name order; each cell is an (n, 4) array ``[y, x, onset_s, duration_s]`` in the image's own
    pixels, or empty for an observer without data. Coordinates are continuous in (0, H] x (0, W]
    (none is 0, none exceeds the side), so a pixel-centre point is the value less half a pixel.
    Image sizes come from the headers; ``pixels_per_degree`` is :data:`SCENE_DEGREE_SHARE` of each
    image's long side (an assumption: no geometry is published).
    """
    root = Path(root)
    _check_split(split)
    mat_path = root / "eye" / "fixations.mat"
    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; pass --root pointing at the Scene folder ({SCENE_LAYOUT})")
    restore = "restore the Scene fixations file"
    cells = np.asarray(read_mat(mat_path, "fixations", restore, restore)["fixations"], dtype=object)
    stimuli = root / "stimuli"
    names = sorted(p.name for p in stimuli.glob("*.jpg")) if stimuli.is_dir() else []
    if cells.ndim != 2 or cells.shape[0] != len(names):
        raise DatasetError(f"{mat_path}: fixations is {cells.shape} but {stimuli} holds {len(names)} images; "
                           "restore the matching stimuli and fixations files")
    wanted = set(read_split(root, split, dataset="Scene")) if split is not None else set(names)
    by_name, outside = {}, 0
    for row, img in enumerate(names):
        if img not in wanted:
            continue
        path = stimuli / img
        shape = image_size(path)
        observers = []
        for cell in cells[row]:
            a = np.asarray(cell, dtype=np.float64)
            if a.size == 0:
                continue
            if a.ndim != 2 or a.shape[1] < 2:
                raise DatasetError(f"{mat_path}: image {img} has a cell of shape {a.shape}, not (n, 4); restore the file")
            pts, n_out = _inside(a[:, [1, 0]] - 0.5, shape)
            outside += n_out
            observers.append(pts)
        by_name[img] = Sample(img, path, *shape, tuple(observers), SCENE_DEGREE_SHARE * max(shape))
    if outside:
        _warn(f"{mat_path}: {outside} fixation(s) outside their image were dropped")
    return _keep_fixated(_select(by_name, root, split, mat_path, "Scene"), mat_path)


def read_mat(mat_path: Path, name: str, missing_fix: str, unreadable_fix: str, **options: Any) -> dict[str, Any]:
    """A MATLAB file's variables (``scipy.io.loadmat(**options)``) if it holds ``name``, else a
    one-line :class:`DatasetError` naming the file and the fix: ``missing_fix`` when the variable
    is absent, ``unreadable_fix`` when the file cannot be read (scipy raises several types for
    damaged files)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(mat_path), **options)
    except Exception as exc:  # noqa: BLE001 - scipy's many error types for damaged files
        raise DatasetError(f"{mat_path}: cannot read MATLAB file ({first_line(exc)}); {unreadable_fix}") from None
    if name not in mat:
        raise DatasetError(f"{mat_path}: no variable '{name}'; {missing_fix}")
    return mat


def _some(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` names and how many more: keeps a listing to one readable line."""
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _warn(message: str) -> None:
    warnings.warn(message, DatasetWarning, stacklevel=4)


def _inside(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The points whose rounded pixel lies in an image of ``shape``, and how many did not.

    A point outside its image is a recording or conversion error; clamping it to the border (what
    :func:`fastsal.data.fixation_map` does) would pile such points onto edge pixels.
    """
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    ok = np.isfinite(points).all(axis=1) & (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
    return points[ok], int(len(points) - ok.sum())


def _keep_fixated(samples: list[Sample], where: Path) -> list[Sample]:
    """``samples`` less those without a single fixation, named in one warning: such an image has
    no ground truth (its density would be uniform), so it can neither train nor be scored."""
    empty = [s.name for s in samples if not any(len(o) for o in s.observers)]
    if not empty:
        return samples
    _warn(f"{where}: {len(empty)} image(s) have no fixations and are left out: {_some(empty)}")
    dropped = set(empty)
    return [s for s in samples if s.name not in dropped]


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


# --- CAT2000 -------------------------------------------------------------------------------------

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
    raise DatasetError(f"{root / 'trainSet'}: no Stimuli/ and FIXATIONLOCS/ folders; pass --root pointing at the "
                       f"CAT2000 folder holding {CAT2000_LAYOUT}")


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
    _check_split(split)
    base = _cat2000_base(root)
    stimuli = base / "Stimuli"
    from fastsal.images import IMAGE_SUFFIXES

    names = sorted(f"{c.name}/{f.name}" for c in stimuli.iterdir() if c.is_dir() and not c.name.startswith(".")
                   for f in c.iterdir()
                   if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
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
    return _keep_fixated(samples, base / "FIXATIONLOCS")


# --- SALICON -------------------------------------------------------------------------------------

#: 19 pixels per degree: SALICON is mouse tracking, with no physical viewing geometry. SALICON's own
#: API blurs fixations with a Gaussian of sigma 19 px at 640x480 (``salicon.buildFixMap``), so taking
#: 19 px as one degree makes the default one-degree density the maps SALICON publishes and scores.
SALICON_PPD = 19.0
SALICON_LAYOUT = "images/{train,val,test}/COCO_*.jpg and fixations/{train,val}/COCO_*.mat (2017 release)"


def _salicon_observers(mat_path: Path) -> tuple[list[np.ndarray], bool, tuple[int, int] | None]:
    """(per-observer 0-based points, whether raw mouse ``location`` stood in for ``fixations``, the
    ``resolution`` (H, W) the file states, if any)."""

    mat = read_mat(mat_path, "gaze", "restore the file from SALICON's 2017 fixations", "restore it from SALICON",
                   squeeze_me=True, struct_as_record=False)
    gaze = np.atleast_1d(mat["gaze"])
    observers, used_location = [], False
    for i, entry in enumerate(gaze):
        fields = getattr(entry, "_fieldnames", None) or []
        key = "fixations" if "fixations" in fields else "location" if "location" in fields else None
        if key is None:
            raise DatasetError(f"{mat_path}: gaze entry {i + 1} has neither 'fixations' nor 'location'; restore the "
                               "file from SALICON's 2017 fixations")
        used_location |= key == "location"
        try:
            pts = np.asarray(getattr(entry, key), dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError(f"{mat_path}: gaze entry {i + 1} has non-numeric {key}; restore the file") from None
        if pts.size == 0:
            pts = np.zeros((0, 2))
        elif pts.shape == (2,):  # MATLAB's 1 x 2 matrix: one fixation, squeezed
            pts = pts.reshape(1, 2)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise DatasetError(f"{mat_path}: gaze entry {i + 1} has {key} of shape {pts.shape}, expected N x 2 "
                               "([x, y]); restore the file")
        observers.append(pts - 1.0)  # MATLAB's 1-based [x, y]
    resolution = np.asarray(mat.get("resolution", []), dtype=np.float64).ravel()
    stated = (int(resolution[0]), int(resolution[1])) if resolution.size == 2 else None
    return observers, used_location, stated


def load_salicon(root: str | Path, split: str | None = None) -> list[Sample]:
    """SALICON (Jiang et al., CVPR 2015): MS COCO photos, 640x480; 10,000 ``train``, 5,000 ``val``.

    **Mouse tracking, not eye tracking**: observers moved a mouse over a blurred image that was
    sharp around the cursor, and "fixations" were derived from the mouse path. It correlates
    with eye fixations but is not the same data; use it for pre-training or beside an eye-tracking
    set, and report its scores as SALICON's.

    Reads the 2017 release (the LSUN 2017 challenge): ``images/{train,val,test}/COCO_*.jpg`` and
    one ``fixations/{train,val}/COCO_*.mat`` per image, whose ``gaze`` struct array has one entry
    per observer with ``location`` (mouse samples), ``timestamp`` and ``fixations`` (M x 2,
    1-based ``[x, y]``). The ``fixations`` are used; a file without that field falls back to its
    raw ``location`` samples, with a warning. Points outside the image are dropped and counted.

    SALICON's own ``train`` and ``val`` are our ``train`` and ``val``; its ``test`` has no public
    fixations (the challenge scores it on its server), so ``split="test"`` is an error.
    ``split=None`` gives ``train`` and ``val``. Names are the image file names, which are unique.
    About 19 pixels per degree (:data:`SALICON_PPD`), by convention.
    """
    root = Path(root)
    _check_split(split)
    if split == "test":
        raise DatasetError(f"{root}: SALICON's test split has no public fixations (its challenge server scores it); "
                           "use --split val")
    if not (root / "fixations").is_dir():
        raise DatasetError(f"{root / 'fixations'}: no such folder; pass --root pointing at the SALICON folder "
                           f"holding {SALICON_LAYOUT}")
    samples: list[Sample] = []
    outside = 0
    from_location: list[str] = []
    for part in (split,) if split else ("train", "val"):
        fix_dir = root / "fixations" / part
        mats = sorted(fix_dir.glob("*.mat")) if fix_dir.is_dir() else []
        if not mats:
            raise DatasetError(f"{fix_dir}: no .mat fixation files; restore SALICON's fixations/{part}/ (2017 release, "
                               f"{SALICON_LAYOUT})")
        for mat_path in mats:
            image = root / "images" / part / f"{mat_path.stem}.jpg"
            if not image.is_file():
                raise DatasetError(f"{image}: not found; the fixations {mat_path.name} need their image: restore "
                                   f"images/{part}/ from SALICON")
            shape = image_size(image)
            observers, used_location, stated = _salicon_observers(mat_path)
            if stated is not None and stated != shape:
                raise DatasetError(f"{mat_path}: recorded at {stated[0]}x{stated[1]} (HxW) but its image {image} is "
                                   f"{shape[0]}x{shape[1]}; restore the original SALICON images")
            if used_location:
                from_location.append(mat_path.name)
            kept = []
            for pts in observers:
                pts, n_out = _inside(pts, shape)
                kept.append(pts)
                outside += n_out
            samples.append(Sample(image.name, image, *shape, tuple(kept), SALICON_PPD))
    where = root / "fixations"
    if from_location:
        _warn(f"{where}: {len(from_location)} file(s) have no 'fixations' field, so their raw mouse 'location' "
              f"samples were used: {_some(from_location)}")
    if outside:
        _warn(f"{where}: {outside} fixation(s) outside their image were dropped")
    return _keep_fixated(samples, where)


# --- Generic folder ------------------------------------------------------------------------------

FOLDER_LAYOUT = ("images/** plus fixations.csv (header image,x,y[,observer]) or maps/**.png (binary fixation maps), "
                 "optional splits.json and dataset.json")
_FOLDER_CONFIG_KEYS = ("pixels_per_degree", "coordinates")
_SPLITS_EXAMPLE = '{"train": ["a.jpg", ...], "val": [...], "test": [...]}'


def _folder_config(root: Path) -> tuple[float | None, float]:
    """(pixels per degree or None, the offset that makes CSV coordinates 0-based) from ``dataset.json``."""
    path = root / "dataset.json"
    if not path.is_file():
        return None, 0.0
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DatasetError(f"{path}: not valid JSON{where}; write e.g. {{\"pixels_per_degree\": 35}}") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object such as {{\"pixels_per_degree\": 35}}")
    unknown = [k for k in data if k not in _FOLDER_CONFIG_KEYS]
    if unknown:
        raise DatasetError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(_FOLDER_CONFIG_KEYS)}")
    ppd = data.get("pixels_per_degree")
    if ppd is not None and (isinstance(ppd, bool) or not isinstance(ppd, (int, float))
                            or not math.isfinite(ppd) or ppd <= 0):
        raise DatasetError(f"{path}: pixels_per_degree must be a positive number; got {ppd!r}")
    coordinates = data.get("coordinates", "0-based")
    if coordinates not in ("0-based", "1-based"):
        raise DatasetError(f"{path}: coordinates must be \"0-based\" or \"1-based\"; got {coordinates!r}")
    return (float(ppd) if ppd is not None else None), (1.0 if coordinates == "1-based" else 0.0)


def _folder_images(images_dir: Path) -> dict[str, Path]:
    from fastsal.images import IMAGE_SUFFIXES

    if not images_dir.is_dir():
        raise DatasetError(f"{images_dir}: no such folder; pass --root pointing at a folder holding {FOLDER_LAYOUT}")
    found = {}
    for f in sorted(images_dir.rglob("*")):
        rel = f.relative_to(images_dir)
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not any(p.startswith(".") for p in rel.parts):
            found[rel.as_posix()] = f
    if not found:
        raise DatasetError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}); put the stimuli there")
    return found


def _csv_number(text: str, column: str, path: Path, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"{path} line {line}: {column} {text.strip()!r} is not a number; fix the row") from None
    if not math.isfinite(value):
        raise DatasetError(f"{path} line {line}: {column} is {text.strip()!r}, not a finite number; fix the row")
    return value


def _read_fixations_csv(path: Path, images: dict[str, Path], offset: float) -> dict[str, dict[str, list]]:
    """image name -> observer label -> [(x, y), ...] (0-based), in file order.

    Every malformed row is an error with its line number; so is a name that is no image under
    ``images/`` (a typo there would otherwise silently lose that image's fixations).
    """
    out: dict[str, dict[str, list]] = {}
    unknown: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: a BOM from spreadsheet exports
            reader = csv.reader(fh)
            header = next(reader, None)
            cols = [c.strip().lower() for c in header or []]
            missing = [c for c in ("image", "x", "y") if c not in cols]
            if missing or len(set(cols)) != len(cols):
                what = f"lacks {', '.join(missing)}" if missing else "repeats a column"
                raise DatasetError(f"{path} line 1: the header {','.join(header or [])!r} {what}; the first line must "
                                   "name the columns image,x,y[,observer] (x, y: 0-based pixels)")
            ii, xi, yi = cols.index("image"), cols.index("x"), cols.index("y")
            oi = cols.index("observer") if "observer" in cols else None
            for row in reader:
                line = reader.line_num
                if not any(c.strip() for c in row):
                    continue
                if len(row) != len(cols):
                    raise DatasetError(f"{path} line {line}: {len(row)} fields, expected {len(cols)} "
                                       f"({','.join(cols)}); fix the row")
                name = row[ii].strip().replace("\\", "/").removeprefix("./")
                if not name:
                    raise DatasetError(f"{path} line {line}: empty image name; fix the row")
                x = _csv_number(row[xi], "x", path, line) - offset
                y = _csv_number(row[yi], "y", path, line) - offset
                if name not in images:
                    unknown.setdefault(name, line)
                observer = row[oi].strip() if oi is not None else ""
                out.setdefault(name, {}).setdefault(observer, []).append((x, y))
    except csv.Error as exc:
        raise DatasetError(f"{path}: not a readable CSV ({first_line(exc)}); save it as comma-separated text") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; save the CSV as UTF-8") from None
    if unknown:
        first, line = next(iter(unknown.items()))
        raise DatasetError(f"{path}: {len(unknown)} image name(s) are not under images/, e.g. {first!r} (line {line}); "
                           "names are paths relative to images/, such as a.jpg or sub/b.png")
    return out


def _map_points(map_path: Path, image: Path, shape: tuple[int, int]) -> np.ndarray:
    from PIL import UnidentifiedImageError

    from fastsal.images import open_header

    try:
        with open_header(map_path) as im:
            multi_band = im.mode == "P" or len(im.getbands()) > 1
            arr = np.asarray(im.convert("RGB")).any(axis=-1) if multi_band else np.asarray(im) != 0
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{map_path}: not a readable PNG ({type(exc).__name__}); re-save the fixation map") from None
    if arr.shape != shape:
        raise DatasetError(f"{map_path}: fixation map is {arr.shape[0]}x{arr.shape[1]} (HxW) but its image {image} is "
                           f"{shape[0]}x{shape[1]}; save each map at its image's size")
    return points_from_map(arr)


def _folder_maps(maps_dir: Path, images: dict[str, Path]) -> dict[str, Path]:
    """image name -> its map ``maps/<name without suffix>.png``; a map without an image, or two
    images that would share one map, is an error."""
    by_stem: dict[str, str] = {}
    for name in images:
        stem = name.rsplit(".", 1)[0]
        if stem in by_stem:
            raise DatasetError(f"{maps_dir}: images {by_stem[stem]} and {name} would share the map {stem}.png; "
                               "rename one of them")
        by_stem[stem] = name
    found, orphans = {}, []
    for f in sorted(maps_dir.rglob("*")):
        rel = f.relative_to(maps_dir)
        if not f.is_file() or f.suffix.lower() != ".png" or any(p.startswith(".") for p in rel.parts):
            continue
        stem = rel.with_suffix("").as_posix()
        if stem in by_stem:
            found[by_stem[stem]] = f
        else:
            orphans.append(rel.as_posix())
    if orphans:
        raise DatasetError(f"{maps_dir}: {len(orphans)} map(s) have no image under images/, e.g. {orphans[0]}; "
                           "name each map after its image's path, with .png (images/sub/a.jpg -> maps/sub/a.png)")
    return found


def load_folder(root: str | Path, split: str | None = None) -> list[Sample]:
    """Your own data: a folder of images with fixations as a CSV of points or as binary maps.

    Layout (``root`` = the folder):

    * ``images/``: the stimuli, any format :mod:`fastsal.images` reads, of any size and aspect,
      in nested folders if you like. A sample's name is its path relative to ``images/``
      (``sub/a.jpg``).
    * Either ``fixations.csv``: a header row naming the columns ``image,x,y`` and optionally
      ``observer`` (other columns are ignored), then one fixation per row; ``image`` is the name
      above and ``x``, ``y`` are **0-based pixel coordinates** of the image as stored (column, row;
      ``"coordinates": "1-based"`` in ``dataset.json`` for MATLAB-style data). With an ``observer``
      column each observer's fixations stay apart (the gold standard can be computed); without
      it an image's fixations are one pooled observer.
    * Or ``maps/``: one binary fixation map per image, ``maps/<name without suffix>.png`` (any
      non-zero pixel is a fixation), of the image's size. One pooled observer per image.
    * Optional ``splits.json``: ``{"train": [...], "val": [...], "test": [...]}`` of names. Without
      it only ``split=None`` (every image) works: there is no split to guess for your data.
    * Optional ``dataset.json``: ``{"pixels_per_degree": 35}`` (the one-degree density sigma in
      pixels; without it :data:`fastsal.defaults.SIGMA_PX` is used), and ``"coordinates"``.

    Malformed CSV rows (with their line number), CSV names that are no image, maps without an
    image and maps of the wrong size are errors. Points outside their image are dropped and
    images without any fixation are left out, each reported in one :class:`DatasetWarning` line.
    """
    root = Path(root)
    _check_split(split)
    images = _folder_images(root / "images")
    ppd, offset = _folder_config(root)
    csv_path, maps_dir = root / "fixations.csv", root / "maps"
    if csv_path.is_file() and maps_dir.is_dir():
        raise DatasetError(f"{root}: both fixations.csv and maps/ present; keep the one that holds the fixations")
    if not csv_path.is_file() and not maps_dir.is_dir():
        raise DatasetError(f"{csv_path}: not found (nor maps/); pass --root pointing at a folder holding {FOLDER_LAYOUT}")
    if split is None:
        names = list(images)
    else:
        if not (root / "splits.json").is_file():
            raise DatasetError(f"{root / 'splits.json'}: not found, so there is no {split!r} split; add one such as "
                               f"{_SPLITS_EXAMPLE} (names relative to images/)")
        names = read_split(root, split, dataset="folder")
        missing = [n for n in names if n not in images]
        if missing:
            raise DatasetError(f"{root / 'splits.json'}: {len(missing)} name(s) of {split!r} are not under images/, "
                               f"e.g. {missing[0]!r}; names are paths relative to images/")
    samples = []
    if csv_path.is_file():
        where = csv_path
        table = _read_fixations_csv(csv_path, images, offset)
        outside = 0
        for name in names:
            observers = []
            shape = image_size(images[name])
            for points in table.get(name, {}).values():
                kept, n_out = _inside(np.asarray(points, dtype=np.float64).reshape(-1, 2), shape)
                observers.append(kept)
                outside += n_out
            samples.append(Sample(name, images[name], *shape, tuple(observers), ppd))
        if outside:
            _warn(f"{csv_path}: {outside} fixation(s) outside their image were dropped")
    else:
        where = maps_dir
        maps = _folder_maps(maps_dir, images)
        for name in names:
            shape = image_size(images[name])
            observers = (_map_points(maps[name], images[name], shape),) if name in maps else ()
            samples.append(Sample(name, images[name], *shape, observers, ppd))
    return _keep_fixated(samples, where)


# --- Pseudo-labels ------------------------------------------------------------------------------

PSEUDO_LAYOUT = "<name>.npy float16 log-densities and manifest*.json, as written by `fastsal pseudo-label`"


def _load_pseudo(root: Path, split: str | None = None) -> list[Sample]:
    """:func:`fastsal.data.pseudo.load_pseudo` (its own module: the labels' manifest format lives there)."""
    from fastsal.data.pseudo import load_pseudo

    return load_pseudo(root, split)


DATASETS: dict[str, DatasetInfo] = {
    "osie": DatasetInfo("osie", load_osie, "stimuli/*.jpg, eye/fixations.mat, splits.json", OSIE_PPD,
                        "Xu et al., JoV 2014"),
    "mit1003": DatasetInfo("mit1003", load_mit1003, "stimuli/*.jpg, eye/fixations.mat, splits.json",
                           MIT1003_PPD, "Judd et al., ICCV 2009"),
    "scene": DatasetInfo("scene", load_scene, SCENE_LAYOUT, None, "NUS Scene (Liang et al., 2015); sigma assumed"),
    "cat2000": DatasetInfo("cat2000", load_cat2000, CAT2000_LAYOUT, CAT2000_PPD, "Borji & Itti, CVPR workshops 2015"),
    "salicon": DatasetInfo("salicon", load_salicon, SALICON_LAYOUT, SALICON_PPD, "Jiang et al., CVPR 2015"),
    "folder": DatasetInfo("folder", load_folder, FOLDER_LAYOUT, None, "your own recordings"),
    "pseudo": DatasetInfo("pseudo", _load_pseudo, PSEUDO_LAYOUT, None, "a teacher's labels (fastsal pseudo-label)"),
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
