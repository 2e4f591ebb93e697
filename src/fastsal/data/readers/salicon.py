"""SALICON (Jiang et al., CVPR 2015), 2017 release: mouse-tracking "fixations" per MS COCO image."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastsal.data.base import DatasetError, Sample, check_split, image_size, inside, keep_fixated, read_mat, some, warn

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
    check_split(split)
    if split == "test":
        raise DatasetError(f"{root}: SALICON's test split has no public fixations (its challenge server scores it); "
                           "use {option} val", option="split")
    if not (root / "fixations").is_dir():
        raise DatasetError(f"{root / 'fixations'}: no such folder; pass {{option}} pointing at the SALICON folder "
                           f"holding {SALICON_LAYOUT}", option="root")
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
                pts, n_out = inside(pts, shape)
                kept.append(pts)
                outside += n_out
            samples.append(Sample(image.name, image, *shape, tuple(kept), SALICON_PPD))
    where = root / "fixations"
    if from_location:
        warn(f"{where}: {len(from_location)} file(s) have no 'fixations' field, so their raw mouse 'location' "
              f"samples were used: {some(from_location)}")
    if outside:
        warn(f"{where}: {outside} fixation(s) outside their image were dropped")
    return keep_fixated(samples, where)


