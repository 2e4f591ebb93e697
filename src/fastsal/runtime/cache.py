"""The model cache: where converted and compiled models are kept, who may write it, how big it grows.

Graph engines need the model as a file (:mod:`fastsal.runtime`): one OpenVINO IR or ONNX file
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

This module is the cache's one owner: the folder and its rules, the cached model files
(:func:`cached_export`, :func:`cached_openvino_ir`, :func:`cached_int8_ir`, made by
:func:`fastsal.export.export` when missing) and the lock beside each. OpenVINO's compiled models are
kept by :class:`fastsal.runtime.openvino.BlobCache` in the ``openvino/`` folder it gives.

Imports nothing heavy: ``fastsal cache --help`` and ``list`` run without PyTorch (the exporter is
imported when a model file has to be made).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from fastsal import defaults
from fastsal.errors import FastSalError
from fastsal.files import file_lock, private_mode_problem, remove_stale_temporaries
from fastsal.runtime.engines import EngineNotice

if TYPE_CHECKING:
    from torch import nn

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


# -- cached model files --------------------------------------------------------------------------
@contextlib.contextmanager
def artefact_folder() -> Iterator[tuple[Path, Path | None]]:
    """(folder for model files, folder for OpenVINO's compiled models or None) for one build."""
    folder = writable_cache()
    if folder is not None:
        for where in (folder, folder / "openvino"):  # leftovers of killed conversions (ours, over an hour old)
            remove_stale_temporaries(where)
        yield folder, folder / "openvino"
        return
    warnings.warn(f"cache folder {cache_dir()} is not writable (set FASTSAL_CACHE_DIR); "
                  "converting the model in a temporary folder on every load", EngineNotice, stacklevel=4)
    # the engines hold the model in memory once built, so the folder may go
    with tempfile.TemporaryDirectory(prefix="fastsal-") as tmp:
        yield Path(tmp), None


def cached_export(
    model: nn.Module,
    name: str,
    folder: str | Path,
    input_size: tuple[int, int],
    *,
    int8: bool = False,
    calibration_images: Iterable[str | Path] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """An ONNX export of ``model`` in ``folder`` with free batch and spatial dimensions, made only
    if not already there: one file serves every input size (``input_size``: the size traced, and
    int8's calibration size).

    The file name carries a digest of :func:`state_dict_sha256` and the fastsal version (the
    cache key) and the precision (for int8 also a digest of the calibration images' contents and
    their size), and an existing file is reused only if its sidecar confirms them (and its
    SHA-256): changed weights, fastsal or calibration can never be served a stale graph.
    Processes filling the cache together take turns (a lock file beside the artefact): one
    exports, the others reuse its file.
    """
    from fastsal.export import calibration_digest

    calibration = [Path(p) for p in calibration_images] if calibration_images is not None else None
    h, w = (int(v) for v in input_size)
    tag = (f"int8-{calibration_digest(calibration)[:12]}-{h}x{w}" if int8 and calibration
           else ("int8" if int8 else "fp32"))
    return _cached(model, name, folder, input_size, f"{tag}.onnx", "onnx", int8=int8,
                   calibration_images=calibration, meta=meta)


def cached_openvino_ir(model: nn.Module, name: str, folder: str | Path, input_size: tuple[int, int]) -> Path:
    """An fp32 OpenVINO IR of ``model`` in ``folder`` (``.xml`` + ``.bin``) with free batch and
    spatial dimensions, converted from the PyTorch module only if not already there; keyed and
    checked like :func:`cached_export`."""
    return _cached(model, name, folder, input_size, "fp32.xml", "openvino")


def cached_int8_ir(model: nn.Module, name: str, folder: str | Path, input_size: tuple[int, int],
                   calibration_images: Sequence[str | Path]) -> Path:
    """A dynamic-batch int8 OpenVINO IR of ``model`` in ``folder`` quantised by NNCF
    (:mod:`fastsal.quantize`), made only if not already there; keyed and checked like
    :func:`cached_export` (the name also carries the NNCF recipe's version)."""
    from fastsal.export import calibration_digest
    from fastsal.quantize import NNCF_RECIPE_VERSION

    calibration = [Path(p) for p in calibration_images]
    tail = f"int8-nncf{NNCF_RECIPE_VERSION}-{calibration_digest(calibration)[:12]}.xml"
    return _cached(model, name, folder, input_size, tail, "openvino", int8=True, calibration_images=calibration,
                   int8_recipe="nncf")


def cached_model_file(model: nn.Module, name: str, folder: str | Path, engine: str, graph: tuple[int, int],
                      precision: str, calibration: Sequence[str | Path] | None = None) -> Path:
    """The file ``engine`` runs ``model`` from at ``precision``: OpenVINO IR for OpenVINO's fp32 and
    bf16 (and int8 where NNCF quantises), ONNX otherwise; made by :func:`fastsal.export.export`
    when missing. int8 is calibrated on ``calibration`` at the shipped calibration images' size,
    whatever the input size (the graph's spatial dimensions are free)."""
    if precision == "int8":
        from fastsal.quantize import openvino_recipe

        if engine == "openvino" and openvino_recipe() == "nncf":
            return cached_int8_ir(model, name, folder, defaults.INPUT_SIZE, list(calibration or ()))
        return cached_export(model, name, folder, defaults.INPUT_SIZE, int8=True, calibration_images=calibration)
    if engine == "openvino":
        return cached_openvino_ir(model, name, folder, graph)
    return cached_export(model, name, folder, graph)


def lock_path(path: str | Path) -> Path:
    """``model.xml`` -> ``model.xml.lock``: the lock file that guards an artefact in the cache."""
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _cached(model: nn.Module, name: str, folder: str | Path, input_size: tuple[int, int], tail: str,
            format: str, **kw: Any) -> Path:
    """The check-then-export behind :func:`cached_export` and :func:`cached_openvino_ir`.

    Held under an exclusive :func:`fastsal.files.file_lock` on ``<artefact>.lock``: processes that
    start on an empty cache together (``--shard i/N``) would otherwise all export, and a reader
    could meet an ``.xml`` from one export beside the ``.bin`` of another. One process exports;
    the others wait, then find the files valid and reuse them. The sidecar check (SHA-256 of every
    file) runs on every load, so a damaged file is exported again, never used.
    """
    from fastsal._version import __version__
    from fastsal.export import ExportError, export, read_sidecar, state_dict_sha256

    sha = state_dict_sha256(model)
    h, w = (int(v) for v in input_size)
    key = hashlib.sha256(f"{sha} {__version__}".encode()).hexdigest()
    path = Path(folder) / f"{name}-{key[:16]}-{tail}"
    precision = "int8" if kw.get("int8") else "fp32"
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock_path(path)):
        try:
            side = read_sidecar(path)
            if side["weights_sha256"] == sha and side["fastsal_version"] == __version__ \
                    and side.get("dynamic_size") and side["dynamic_batch"] \
                    and side["precision"] == precision and side["export_format"] == format \
                    and side.get("meta", {}) == dict(kw.get("meta") or {}):
                touch(path)
                return path
        except ExportError:
            pass
        engine = "OpenVINO" if format == "openvino" else "ONNX"
        with converting(f"{name} to {engine} ({precision})"):
            return export(model, name, path, format, (h, w), dynamic_batch=True, dynamic_size=True, **kw)


def discard_export(path: Path) -> None:
    """Delete a cached export (model files and sidecar) under its exclusive lock."""
    with file_lock(lock_path(path)):
        for f in (path.with_name(path.name + ".json"), path, path.with_suffix(".bin") if path.suffix == ".xml" else None):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.unlink()



__all__ = ["CacheError", "Entry", "artefact_folder", "cache_dir", "cached_export", "cached_int8_ir",
           "cached_model_file", "cached_openvino_ir", "check_private", "clear", "converting", "describe", "discard_export", "entries",
           "lock_path", "max_bytes", "prune", "touch", "writable_cache"]
