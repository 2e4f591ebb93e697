"""What every dataset reader shares: the :class:`Sample`, the registry entry :class:`DatasetInfo`,
the one-line :class:`DatasetError` / :class:`DatasetWarning`, and the validating helpers (splits,
MATLAB files, image headers, points outside their image, images without fixations).

The readers (:mod:`fastsal.data.readers`, :mod:`fastsal.data.pseudo`) import only this module,
and the registry (:mod:`fastsal.data.datasets`) imports them: the layers point one way, so no
reader needs the registry and there is no import cycle.

Every reader validates what it reads and fails with one line naming the file and the fix, since
a malformed fixation file otherwise surfaces much later as a silently wrong score. What a reader
leaves out on purpose (points outside their image, images without fixations) is reported in one
:class:`DatasetWarning` line per kind, with the count, rather than silently.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastsal import defaults
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

    def sigma_px(self, degrees: float = defaults.SIGMA_DEG, override_px: float | None = None) -> float:
        """The density's Gaussian sigma in pixels of this image for ``degrees`` of visual angle, or
        ``override_px`` where the caller fixed one (``sigma_px=`` of training and evaluation): the
        one rule both use, so a model is scored against the targets it was trained on."""
        if override_px is not None:
            return float(override_px)
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


def check_split(split: str | None) -> None:
    """A one-line :class:`DatasetError` unless ``split`` is None or one of :data:`SPLITS`: every
    reader checks it here, before touching the disk."""
    if split is not None and split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def read_split(root: str | Path, split: str, *, dataset: str = "dataset") -> list[str]:
    """Image names of a split from ``root/splits.json`` (``{"train": [...], "val": [...], "test": [...]}``)."""
    path = Path(root) / "splits.json"
    check_split(split)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found; pass {{option}} pointing at the {dataset} folder (holding splits.json)",
                           option="root") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise DatasetError(f"{path}: not valid JSON{where}; restore the file") from None
    names = data.get(split) if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DatasetError(f"{path}: no list of image names under {split!r}; restore the file")
    return names

def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header alone (no decoding): reading 1000 sizes takes a fraction of a second.

    The size is that of the upright image, after its EXIF orientation, since that is the image
    :func:`fastsal.images.load_rgb` gives the model and the frame fixations were recorded in.
    """
    from PIL import UnidentifiedImageError

    from fastsal.images import open_header, oriented_size

    try:
        with open_header(path) as im:
            h, w = oriented_size(im)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image not found; restore the dataset's stimuli folder") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable image ({type(exc).__name__}); restore the file") from None
    return int(h), int(w)


def select(names_available: dict[str, Sample], root: Path, split: str | None, where: Path,
            dataset: str) -> list[Sample]:
    names = read_split(root, split, dataset=dataset) if split is not None else sorted(names_available)
    missing = [n for n in names if n not in names_available]
    if missing:
        raise DatasetError(f"{where}: no fixations for {len(missing)} image(s) of the split, e.g. {missing[0]}; "
                           "check splits.json")
    return [names_available[n] for n in names]


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


def some(names: Sequence[str], n: int = 5) -> str:
    """The first ``n`` names and how many more: keeps a listing to one readable line."""
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def warn(message: str) -> None:
    warnings.warn(message, DatasetWarning, stacklevel=4)


def inside(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, int]:
    """The points whose rounded pixel lies in an image of ``shape``, and how many did not.

    A point outside its image is a recording or conversion error; clamping it to the border (what
    :func:`fastsal.data.fixation_map` does) would pile such points onto edge pixels.
    """
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    ok = np.isfinite(points).all(axis=1) & (x >= -0.5) & (x < w - 0.5) & (y >= -0.5) & (y < h - 0.5)
    return points[ok], int(len(points) - ok.sum())


def keep_fixated(samples: list[Sample], where: Path) -> list[Sample]:
    """``samples`` less those without a single fixation, named in one warning: such an image has
    no ground truth (its density would be uniform), so it can neither train nor be scored."""
    empty = [s.name for s in samples if not any(len(o) for o in s.observers)]
    if not empty:
        return samples
    warn(f"{where}: {len(empty)} image(s) have no fixations and are left out: {some(empty)}")
    dropped = set(empty)
    return [s for s in samples if s.name not in dropped]

