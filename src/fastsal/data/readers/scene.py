"""Scene (NUS-VIP, Liang et al. 2015): a MATLAB cell array of ``[y, x, onset, duration]`` per
image and observer, with no published viewing geometry."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fastsal.data.base import (
    DatasetError,
    Sample,
    check_split,
    image_size,
    inside,
    keep_fixated,
    read_mat,
    read_split,
    select,
    warn,
)

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
    check_split(split)
    mat_path = root / "eye" / "fixations.mat"
    if not mat_path.is_file():
        raise DatasetError(f"{mat_path}: not found; pass {{option}} pointing at the Scene folder ({SCENE_LAYOUT})",
                           option="root")
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
            pts, n_out = inside(a[:, [1, 0]] - 0.5, shape)
            outside += n_out
            observers.append(pts)
        by_name[img] = Sample(img, path, *shape, tuple(observers), SCENE_DEGREE_SHARE * max(shape))
    if outside:
        warn(f"{mat_path}: {outside} fixation(s) outside their image were dropped")
    return keep_fixated(select(by_name, root, split, mat_path, "Scene"), mat_path)

