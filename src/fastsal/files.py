"""Writing files atomically, and hashing them: one implementation for every output fastsal makes.

Outputs (maps, checkpoints, exported models, reports) are written to a temporary file in the
destination folder and renamed over the target, so readers never see half a file and an
interrupted run leaves no partial output. The temporary gets ordinary permissions (mkstemp makes
0600), so a written checkpoint can be shared like any other file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    For writers that take a file name (``onnx.save``, ``fig.savefig``). On any error the
    temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that only replaces ``path`` once the block finishes without error."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def write_json(obj: Any, path: str | Path) -> Path:
    """JSON (indented, UTF-8) written atomically."""
    with atomic_write(path, "w") as fh:
        json.dump(obj, fh, indent=1)
        fh.write("\n")
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
