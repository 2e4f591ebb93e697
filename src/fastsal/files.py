"""Writing files atomically, and hashing them: one implementation for every output fastsal makes.

Outputs (maps, checkpoints, exported models, reports) are written to a temporary file in the
destination folder and renamed over the target, so readers never see half a file and an
interrupted run leaves no partial output. The temporary gets ordinary permissions (mkstemp makes
0600), so a written checkpoint can be shared like any other file.

A full disk must fail loudly, never leave a short file under the final name: temporaries are
``fsync``-ed before the rename (a write error can surface only then), and
:func:`atomic_write_bytes` also checks the size on disk. Encoders whose C code writes to a file
handle may drop a short write without an error (Pillow's JPEG encoder did on ENOSPC), so images
are encoded to memory first (:func:`encode_jpeg`, :func:`gray_png`) and written as bytes.

A process killed mid-write leaves its temporary behind (``.<name>.p<PID>-<host>.<random>.tmp<suffix>``);
:func:`remove_stale_temporaries` deletes such leftovers (at once when that PID no longer runs on
this host, else by age) and nothing else.

Atomic renames keep single files whole, but not a check-then-write of several files (an OpenVINO
``.xml`` + ``.bin`` pair, a blob and its sidecar) done by several processes at once: that is what
:func:`file_lock` is for.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import socket
import struct
import tempfile
import time
import zlib

try:  # POSIX only; elsewhere the cache is used unlocked, as before
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from fastsal.errors import FastSalError

# How old a leftover temporary must be before remove_stale_temporaries deletes it by default: far
# longer than any single write takes, so a live writer's temporary is never pulled from under it.
# The one place these ages live; callers that know their writes are short pass a shorter one:
STALE_TEMPORARY_AGE_S = 3600.0
# a job's output folders (``fastsal.jobs``): a live writer's temporaries exist for seconds, and
# shards of one job (other machines, other PIDs) may share a folder;
JOB_TEMPORARY_AGE_S = 300.0
# a training run's ``out`` (writing one checkpoint takes seconds; one run owns the folder).
CHECKPOINT_TEMPORARY_AGE_S = 60.0

# The names atomic_path gives its temporaries: "." + target name + "." + the writer's PID and
# host tag + "." + mkstemp's 8 random characters + ".tmp" + the target's suffix (checked against
# the name in _is_our_temporary). Names without the writer (older versions) are still recognised.
_TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+?)(?:\.p(?P<pid>[0-9]+)-(?P<host>[0-9a-f]{6}))?"
                             r"\.[A-Za-z0-9_]{8}\.tmp(?P<suffix>\.[^./]*)?$")


class OutputError(FastSalError, ValueError):
    """An output path cannot be written (a folder, under a file, read-only); the message says which."""


class DiskFullError(FastSalError, OSError):
    """No space left where an output was being written: one line naming the path.

    Also an ``OSError`` (errno ``ENOSPC``, ``filename`` the target), so code that handles I/O
    errors keeps handling it; the command line prints it as one line and exits 2, as for any I/O
    error on a named file.
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.path = Path(path)

    def __str__(self) -> str:
        return f"{self.path}: {os.strerror(errno.ENOSPC)}; free some space or write to another disk"


# Below this many free bytes a writer's failure that is not an OSError (torch's zip writer: a
# RuntimeError "unexpected pos"; OpenVINO's serialiser) is taken as a full disk: such writers
# stop at the last block that fitted.
_FULL_DISK_BYTES = 1 << 20


def _disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether a writer's exception means the disk (or quota) is full: ENOSPC / EDQUOT, or a
    non-OSError from a C writer while next to no space is left in ``folder``."""
    if isinstance(exc, DiskFullError):
        return False  # already translated by an inner writer
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    if not isinstance(exc, RuntimeError):
        return False
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # pragma: no cover - no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize < _FULL_DISK_BYTES


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    For writers that take a file name (``onnx.save``, ``fig.savefig``). On any error the
    temporary is removed and ``path`` is left as it was. A full disk, however the writer reports
    it (``OSError`` ENOSPC without a file name from onnx, a ``RuntimeError`` from torch's zip
    writer), becomes :class:`DiskFullError` naming ``path``: one owner for every output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=".tmp" + path.suffix, dir=path.parent)
    except OSError as exc:
        if _disk_full(exc, path.parent):
            raise DiskFullError(path) from None
        raise
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        full = _disk_full(exc, path.parent)  # before the temporary's blocks are freed
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFullError(path) from None
        raise


def _fsync_file(path: Path) -> None:
    """Force a finished temporary to disk: on some file systems a full disk is reported only here."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """``open(path, mode)`` that only replaces ``path`` once the block finishes without error.

    The handle is flushed and ``fsync``-ed before the rename, so a full disk raises here instead
    of leaving a short file. Writers in C that may ignore a failed ``write`` (Pillow's encoders)
    should encode to memory and use :func:`atomic_write_bytes` instead.
    """
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically, or raise ``OSError`` and leave ``path`` as it was.

    Temporary in the same folder, every byte written (``os.write`` may write fewer than asked),
    ``fsync``, size on disk checked against ``len(data)`` (an ``ENOSPC`` ``OSError`` if they
    differ), then renamed over ``path``. On any error the temporary is removed.
    """
    view = memoryview(data).cast("B")
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            done = 0
            while done < len(view):
                n = os.write(fd, view[done:])
                if n <= 0:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
                done += n
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if size != len(view):
            raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({size} of {len(view)} bytes on disk)", str(path))
    return Path(path)


@contextmanager
def file_lock(path: str | Path, *, shared: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold an advisory ``flock`` on ``path`` (created if missing) for the block; yields whether
    a lock is held (``wait=False``: False at once where another process holds it).

    Why: processes sharing the model cache (``fastsal predict --shard i/N`` started together)
    must not export or read the same artefact while another one is replacing it. Writers take the
    lock exclusively around check-then-write, readers ``shared`` around reading, so a reader sees
    one complete version of a set of files. The lock file is never deleted (deleting it would
    let two processes lock different files of the same name). Where it cannot be created or
    opened (a read-only folder, where nobody writes through fastsal either) or ``flock`` does not
    exist, the block runs unlocked. The lock goes with the file descriptor, so a killed process
    never leaves it held.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    path = Path(path)
    fd = -1
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):  # flock works on read-only handles too
        try:
            fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except OSError:
            continue
    if fd < 0:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def private_mode_problem(info: os.stat_result, *, write_only: bool = False) -> str | None:
    """Why a file or folder with ``info`` (``os.stat``) is open to other users, or None.

    Group- or world-writable, or (unless ``write_only``) world-readable: the API key file of
    ``fastsal serve`` and the model cache must be the user's own (other users could read the key,
    or replace the models in the cache). Always None off POSIX.
    """
    import stat

    if os.name != "posix":
        return None
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by other users" if write_only else "other users can read or change it"
    if not write_only and info.st_mode & stat.S_IRWXO:
        return "other users can read or change it"
    return None


def write_json(obj: Any, path: str | Path) -> Path:
    """JSON (indented, UTF-8) written atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode("utf-8"))


def encode_jpeg(rgb: Any, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 (or an RGB PIL image, encoded without a copy) -> JPEG bytes, encoded in
    memory so that writing them can be checked.

    Pillow's JPEG encoder, saving into an open file on a full disk, raised nothing and left a
    short file; encoding to ``BytesIO`` and writing with :func:`atomic_write_bytes` cannot.
    """
    from PIL import Image

    if isinstance(rgb, Image.Image) and rgb.mode == "RGB" and 0 not in rgb.size and 1 <= int(quality) <= 95:
        buf = io.BytesIO()
        rgb.save(buf, format="JPEG", quality=int(quality))
        return buf.getvalue()
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8 or 0 in arr.shape:
        raise ValueError(f"expected a non-empty (H, W, 3) uint8 array, got {arr.dtype} {arr.shape}")
    if not 1 <= int(quality) <= 95:
        raise ValueError(f"JPEG quality must be in 1..95, got {quality}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr), "RGB").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _host_tag() -> str:
    """6 hex digits naming this machine: a PID means nothing on another host sharing the folder."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def _writer_tag() -> str:
    """``p<PID>-<host tag>``: who writes a temporary, so a cleaner can tell a dead writer's."""
    return f"p{os.getpid()}-{_host_tag()}"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists here (one of another user counts: it may be writing)."""
    if pid <= 0:
        return True  # not a real writer's PID: leave it to the age rule
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _is_our_temporary(path: Path) -> bool:
    """Whether ``path``'s name is one :func:`atomic_path` makes
    (``.<name>.p<PID>-<host>.<8 random>.tmp<suffix>``, or without the writer as older versions did)."""
    return _temporary_name(path) is not None


def _temporary_name(path: Path) -> re.Match[str] | None:
    """The match of ``path``'s name against our temporaries' names (groups pid, host), or None."""
    m = _TEMPORARY_NAME.match(path.name)
    return m if m is not None and (m.group("suffix") or "") == Path(m.group("name")).suffix else None


def _writer_is_dead(name: re.Match[str]) -> bool:
    """Whether the temporary's writer is known to be gone: a process of this host that has exited
    (unknown for names without a writer, and off POSIX)."""
    if name.group("pid") is None or os.name != "posix":
        return False
    pid = int(name.group("pid"))
    return name.group("host") == _host_tag() and pid != os.getpid() and not _pid_alive(pid)


def remove_stale_temporaries(folder: str | Path, max_age_s: float = STALE_TEMPORARY_AGE_S, *,
                             recursive: bool = False) -> list[Path]:
    """Delete temporaries left in ``folder`` by killed writers; returns the removed paths.

    Only regular files named as :func:`atomic_path` names its temporaries are removed, and only
    when their writer is known to be dead (the PID in the name is of this host and no longer runs:
    a run killed a moment ago) or they were last modified more than ``max_age_s`` seconds ago (a
    younger one may belong to a writer still running, e.g. on another host sharing the folder, or
    a PID reused since); nothing else is touched. ``recursive`` also searches subfolders (without
    following links). A missing folder, or a file that vanishes meanwhile, is not an error.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for f in folder.rglob(".*") if recursive else folder.glob(".*"):
        try:
            name = _temporary_name(f)
            if (name is None or f.is_symlink() or not f.is_file()
                    or (now - f.stat().st_mtime < max_age_s and not _writer_is_dead(name))):
                continue
            f.unlink()
        except FileNotFoundError:
            continue
        removed.append(f)
    return removed


def ensure_writable_folder(folder: str | Path, what: str = "--out") -> Path:
    """Create ``folder`` (and parents) and prove a file can be written in it; else :class:`OutputError`.

    Called before long work (training, evaluation), so an unwritable destination fails in a second
    instead of after hours. The probe is a real temporary file: permission bits do not tell
    whether root can write, nor whether the file system is mounted read-only.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: is a file, not a folder; pass a folder path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".fastsal-probe.", dir=folder)
        os.close(fd)
        os.unlink(name)
    except (FileExistsError, NotADirectoryError):
        raise OutputError(f"{what} {folder}: a parent is a file, not a folder; pass another path") from None
    except OSError as exc:
        raise OutputError(f"{what} {folder}: cannot write there ({exc.strerror}); pass a writable folder") from None
    return folder


def check_writable_folder(folder: str | Path, what: str = "-o") -> Path:
    """Fail now (:class:`OutputError`) if ``folder`` could not be created and written later;
    creates nothing (a failed run leaves no empty output folder behind).

    ``folder`` must be a folder or not exist; the nearest existing ancestor must be a folder in
    which a file can be created (probed with a temporary file, removed at once).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder}: is a file, not a folder; pass a folder path")
    _probe_nearest_folder(folder, what, "a writable folder")
    return folder


def check_writable_file(path: str | Path, what: str) -> Path:
    """Fail now (:class:`OutputError`) if ``path`` could not be written later; creates nothing.

    The nearest existing ancestor must be a folder we can create files in (probed with a
    temporary file, removed at once), and ``path`` itself must not be a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; pass a file name such as {path / 'report.json'}")
    _probe_nearest_folder(path, what, "a writable path", start=path.parent)
    return path


def _probe_nearest_folder(target: Path, what: str, fix: str, start: Path | None = None) -> None:
    """The nearest existing ancestor of ``target`` (from ``start``) must be a folder in which a file
    can be created: probed with a real temporary file, removed at once (permission bits do not
    tell whether root can write, nor whether the file system is mounted read-only)."""
    parent = target if start is None else start
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {target}: {parent} is a file, not a folder; pass another path")
    try:
        fd, name = tempfile.mkstemp(prefix=".fastsal-probe.", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise OutputError(f"{what} {target}: cannot write in {parent} ({exc.strerror}); pass {fix}") from None


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def gray_png(values: np.ndarray, level: int = 1) -> bytes:
    """(H, W) uint8 -> the bytes of an 8-bit greyscale PNG.

    Why not PIL: its encoder tries a filter per row and costs about twice as long, and saving
    maps is a large share of folder prediction once the network is fast. Saliency maps are
    smooth, so the same 'Up' filter (difference to the row above) on every row compresses them
    as well as PIL's choice; zlib level 1 is ~5x faster than the default and only ~10 % larger.
    Rows are filtered and compressed a strip at a time, so a 48 MP map needs no full-size copy.
    """
    v = np.asarray(values)
    if v.ndim != 2 or v.dtype != np.uint8 or 0 in v.shape:
        raise ValueError(f"expected a non-empty (H, W) uint8 array, got {v.dtype} {v.shape}")
    h, w = v.shape
    z = zlib.compressobj(level)
    parts = []
    step = max(1, (1 << 20) // (w + 1))
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        rows = np.empty((r1 - r0, w + 1), dtype=np.uint8)
        rows[:, 0] = 2  # filter type 2 = Up
        if r0 == 0:
            rows[0, 1:] = v[0]  # the row above the first is zeros
            np.subtract(v[1:r1], v[:r1 - 1], out=rows[1:, 1:])  # wraps modulo 256, as PNG defines it
        else:
            np.subtract(v[r0:r1], v[r0 - 1:r1 - 1], out=rows[:, 1:])
        # numpy's stubs declare ndarray.__buffer__ only for Python >= 3.12 (the config checks 3.11)
        parts.append(z.compress(rows))  # type: ignore[arg-type]
    parts.append(z.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8-bit, greyscale, deflate, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))