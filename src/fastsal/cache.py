"""The model cache: where converted and compiled models are kept, who may write it, how big it grows.

Graph engines need the model as a file (:mod:`fastsal.backends`): one OpenVINO IR or ONNX file
per weights, fastsal version and precision, with free spatial dimensions (any input size), and
OpenVINO's compiled models (``openvino/*.blob``), one per input shape and batch size. They live
in ``$FASTSAL_CACHE_DIR``, else ``$XDG_CACHE_HOME/fastsal``, else ``~/.cache/fastsal``.

**Who may write it.** A cached graph decides every map, so only the user running fastsal may
write the folder: one that other users can write (group- or world-writable, or owned by someone
else) is refused with one line (:class:`CacheError`), as ``fastsal serve`` refuses an API key
file others can read. fastsal creates the folder with mode 0700. On top of that each graph is bound
to the weights it came from: its file name carries a digest of the weights' SHA-256 and the
fastsal version, its sidecar records both and they are checked on load, and the engine's output on
a fixed probe is compared with PyTorch's on the in-memory weights before the graph is used (a file
changed together with its sidecar's SHA-256 is detected and rebuilt).

**How big.** At most :data:`fastsal.defaults.CACHE_MAX_MB` (``$FASTSAL_CACHE_MAX_MB`` overrides);
after each new file the least recently used entries go until the rest fits. An entry in use by
another process (its lock held) is kept. ``fastsal cache list`` shows the entries, ``fastsal cache
clear`` removes them.

Imports nothing heavy: ``fastsal cache --help`` and ``list`` run without PyTorch.
"""
from __future__ import annotations

import contextlib
import os
import stat
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from fastsal import defaults
from fastsal.errors import FastSalError
from fastsal.files import file_lock, private_mode_problem

#: The suffixes of an entry's main file: an export (IR ``.xml`` + ``.bin``, ``.onnx``) or a blob.
_MAIN_SUFFIXES = (".xml", ".onnx", ".blob")


class CacheError(FastSalError, ValueError):
    """A cache folder that must not be used (others may write it) or a bad cache setting."""


def cache_dir() -> Path:
    """The folder for converted and compiled models (see the module docstring)."""
    if os.environ.get("FASTSAL_CACHE_DIR"):
        return Path(os.environ["FASTSAL_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastsal"


def check_private(folder: Path) -> Path:
    """``folder`` if only this user can write it (or it does not exist yet), else :class:`CacheError`.

    Why: anyone who can write the cache can replace a graph and so every map fastsal makes."""
    try:
        info = folder.stat()
    except OSError:
        return folder
    problem = private_mode_problem(info, write_only=True)
    if problem:
        raise CacheError(f"cache folder {folder} {problem}, who could replace the models it holds; run "
                         f"chmod go-w {folder} or set FASTSAL_CACHE_DIR to a folder of your own")
    return folder


def writable_cache() -> Path | None:
    """:func:`cache_dir`, created (mode 0700) if needed and checked by :func:`check_private`, or
    None where it cannot be written."""
    folder = check_private(cache_dir())
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    check_private(folder)
    return folder if os.access(folder, os.W_OK | os.X_OK) else None


def max_bytes() -> int:
    """The cache's size limit in bytes: ``$FASTSAL_CACHE_MAX_MB`` or :data:`defaults.CACHE_MAX_MB`."""
    text = os.environ.get("FASTSAL_CACHE_MAX_MB")
    if not text:
        return int(defaults.CACHE_MAX_MB * 2**20)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise CacheError(f"FASTSAL_CACHE_MAX_MB={text!r}: must be a positive number of megabytes")
    return int(value * 2**20)


@dataclass
class Entry:
    """One cached model: its main file, the files that go with it, their size and last use."""

    main: Path
    files: list[Path]
    size: int
    used: float

    @property
    def lock(self) -> Path:
        return self.main.with_name(self.main.name + ".lock")

    @property
    def kind(self) -> str:
        return {"xml": "openvino-ir", "onnx": "onnx", "blob": "compiled"}[self.main.suffix[1:]]


def entries(folder: Path | None = None) -> list[Entry]:
    """The cache's entries, least recently used first (last use: the newest mtime of its files;
    loads touch the sidecar)."""
    folder = cache_dir() if folder is None else folder
    found = []
    for where in (folder, folder / "openvino"):
        if not where.is_dir():
            continue
        for main in sorted(where.iterdir()):
            if main.suffix not in _MAIN_SUFFIXES or main.name.startswith("."):
                continue
            files = [main, main.with_name(main.name + ".json")]
            if main.suffix == ".xml":
                files.append(main.with_suffix(".bin"))
            size, used = 0, 0.0
            for f in files:
                with contextlib.suppress(OSError):
                    info = f.lstat()
                    if stat.S_ISREG(info.st_mode):
                        size += info.st_size
                        used = max(used, info.st_mtime)
            found.append(Entry(main, files, size, used))
    return sorted(found, key=lambda e: (e.used, str(e.main)))


def touch(path: Path) -> None:
    """Mark the entry of ``path`` (a main file) as used now (its sidecar's mtime)."""
    with contextlib.suppress(OSError):
        os.utime(path.with_name(path.name + ".json"))


def _remove(entry: Entry) -> bool:
    """Delete ``entry``'s files unless another process holds its lock; whether it was removed.
    The lock file stays (see :func:`fastsal.files.file_lock`)."""
    with file_lock(entry.lock, wait=False) as held:
        if not held:
            return False
        for f in (entry.files[1], *entry.files[2:], entry.main):  # sidecar first: never a sidecar without its file
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
    return True


def prune(folder: Path, keep: Path | None = None, limit: int | None = None) -> list[Entry]:
    """Remove least recently used entries of ``folder`` until the rest fits in ``limit`` bytes
    (default :func:`max_bytes`); ``keep`` (the entry just made) is never removed. Returns the
    removed entries."""
    limit = max_bytes() if limit is None else limit
    found = entries(folder)
    total = sum(e.size for e in found)
    removed = []
    for entry in found:
        if total <= limit:
            break
        if keep is not None and entry.main == keep:
            continue
        if _remove(entry):
            total -= entry.size
            removed.append(entry)
    return removed


def clear(folder: Path | None = None) -> tuple[int, int]:
    """Remove every entry (and lock file) of the cache; (entries removed, bytes freed). Entries
    in use by a running fastsal are left and counted out."""
    folder = cache_dir() if folder is None else folder
    count = freed = 0
    for entry in entries(folder):
        if _remove(entry):
            count += 1
            freed += entry.size
            with contextlib.suppress(OSError):
                entry.lock.unlink()
    return count, freed


@contextlib.contextmanager
def converting(what: str) -> Iterator[None]:
    """One line on stderr while a slow conversion runs: ``fastsal: converting X ... done in 12 s``.

    Why: the first use of a model (or a new fastsal version) converts it, tens of seconds with
    nothing else to see."""
    print(f"fastsal: converting {what} (once per weights and fastsal version) ...", end="", file=sys.stderr,
          flush=True)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        print(" failed", file=sys.stderr, flush=True)
        raise
    print(f" done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)


def describe(folder: Path | None = None) -> list[str]:
    """``fastsal cache list``'s lines: one per entry (kind, size, last use, file), then the total."""
    folder = cache_dir() if folder is None else folder
    found = entries(folder)
    lines = []
    for e in reversed(found):  # most recently used first
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.used)) if e.used else "?"
        lines.append(f"{e.kind:<12} {e.size / 2**20:8.1f} MB  {when}  {e.main.relative_to(folder)}")
    total = sum(e.size for e in found)
    lines.append(f"{len(found)} entries, {total / 2**20:.1f} MB of {max_bytes() / 2**20:.0f} MB in {folder}")
    return lines


__all__ = ["CacheError", "Entry", "cache_dir", "check_private", "clear", "converting", "describe", "entries",
           "max_bytes", "prune", "touch", "writable_cache"]
