"""Where a dataset named on the command line lives: the ``NAME[=FOLDER]`` rule of ``--data``,
``--distill-data`` and ``fastsal calibrate``, in one place (no torch; imports nothing of fastsal)."""
from __future__ import annotations

from pathlib import Path


def dataset_root(entry: str, data_dir: str | Path, root: str | Path | None = None) -> tuple[str, Path]:
    """``(name, folder)`` of ``NAME=FOLDER``; a bare ``NAME`` is ``root`` when given (the folder of a
    single dataset), else ``data_dir/NAME``."""
    name, _, folder = entry.partition("=")
    if folder:
        return name, Path(folder)
    return name, Path(root) if root is not None else Path(data_dir) / name


__all__ = ["dataset_root"]
