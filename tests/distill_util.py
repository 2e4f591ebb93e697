"""Tiny teachers and image folders for the knowledge-transfer tests (nothing is downloaded)."""
from pathlib import Path

import numpy as np
import torch
from helpers import randomise
from PIL import Image

from fastsal.models.registry import build, save_checkpoint

SIZE = (64, 96)


def write_images(folder: Path, n: int = 4, size: tuple[int, int] = SIZE, seed: int = 0,
                 nested: bool = True) -> list[Path]:
    """``n`` PNG photos (a bright blob on a noisy gradient, so maps differ between images); with
    ``nested`` the last one lies in a subfolder, so outputs must mirror the tree."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    paths = []
    for i in range(n):
        cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.12 * w) ** 2))
        base = 60 + 80 * xx / w + rng.normal(0, 12, (h, w))
        rgb = np.stack([base + 150 * blob, base + 40 * blob * (i % 2), base + 90 * (1 - blob)], axis=-1)
        where = folder / ("sub" if nested and i == n - 1 else "") / f"img{i}.png"
        where.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(where)
        paths.append(where)
    return paths


def teacher_checkpoint(path: Path, seed: int = 0, aspect: bool = True, input_size: tuple[int, int] = SIZE) -> Path:
    """A random ``fastsal_bare`` (non-trivial maps) saved as if trained at ``input_size``; the same
    for the same ``seed``."""
    torch.manual_seed(seed)
    model = randomise(build("fastsal_bare", backbone_weights=None), seed)
    save_checkpoint(model, "fastsal_bare", path, meta={"config": {"input_size": list(input_size), "aspect": aspect}})
    return path


CENTRE_TEACHER = """import numpy as np


def centre(rgb):
    \"\"\"A sharp centred Gaussian (log, unnormalised): a teacher whose labels a student learns fast.\"\"\"
    h, w = rgb.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    return -(((yy - h / 2) / (0.15 * h)) ** 2 + ((xx - w / 2) / (0.15 * w)) ** 2) / 2
"""


def centre_teacher(folder: Path) -> str:
    """``py:FILE.py:centre``: a callable teacher from a file, as a user's adapter would be."""
    path = folder / "centre_teacher.py"
    path.write_text(CENTRE_TEACHER)
    return f"py:{path}:centre"
