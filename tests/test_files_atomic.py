"""Atomic writes cannot hide a full disk; leftovers of killed writers are cleaned, nothing else."""
import errno
import io
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastsal import files


@pytest.fixture
def tiny_disk(tmp_path):
    """A 160 KiB tmpfs mounted at a fresh folder (root only); skipped where mounting is not allowed."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root and mount(8)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_full_disk_raises_and_leaves_nothing(tiny_disk):
    target = tiny_disk / "big.bin"
    with pytest.raises(OSError) as info:
        files.atomic_write_bytes(target, os.urandom(400_000))
    assert info.value.errno == errno.ENOSPC
    assert _leftovers(tiny_disk) == []


def test_full_disk_keeps_the_previous_file(tiny_disk):
    target = tiny_disk / "report.json"
    files.write_json({"ok": 1}, target)
    with pytest.raises(OSError):
        files.write_json({"blob": "x" * 400_000}, target)
    assert _leftovers(tiny_disk) == ["report.json"]
    assert target.read_text().strip().startswith("{")


def test_full_disk_with_file_handle_writer_raises(tiny_disk):
    with pytest.raises(OSError):
        with files.atomic_write(tiny_disk / "x.npy") as fh:
            np.save(fh, np.zeros(100_000))
    assert _leftovers(tiny_disk) == []


def test_full_disk_jpeg_encoded_in_memory_raises(tiny_disk):
    noise = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
    data = files.encode_jpeg(noise, quality=95)
    assert len(data) > 200_000  # larger than the disk
    with pytest.raises(OSError):
        files.atomic_write_bytes(tiny_disk / "overlay.jpg", data)
    assert _leftovers(tiny_disk) == []


def test_short_write_is_detected(tmp_path, monkeypatch):
    real_write = os.write

    def short_then_zero(fd, data):  # a short write, then a device that accepts nothing
        return real_write(fd, bytes(data[:10])) if len(data) == 1000 else 0

    monkeypatch.setattr(os, "write", short_then_zero)
    with pytest.raises(OSError) as info:
        files.atomic_write_bytes(tmp_path / "a.bin", b"x" * 1000)
    assert info.value.errno == errno.ENOSPC
    assert _leftovers(tmp_path) == []


def test_write_error_removes_temporary(tmp_path, monkeypatch):
    def failing_write(fd, data):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "write", failing_write)
    (tmp_path / "a.bin").write_bytes(b"old")
    with pytest.raises(OSError, match="Input/output"):
        files.atomic_write_bytes(tmp_path / "a.bin", b"new data")
    assert _leftovers(tmp_path) == ["a.bin"] and (tmp_path / "a.bin").read_bytes() == b"old"


@pytest.mark.parametrize("writer", ["bytes", "handle", "path"])
def test_fsync_failure_removes_temporary(tmp_path, monkeypatch, writer):
    def failing_fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    target = tmp_path / "out.bin"
    with pytest.raises(OSError, match="No space"):
        if writer == "bytes":
            files.atomic_write_bytes(target, b"abc")
        elif writer == "handle":
            with files.atomic_write(target) as fh:
                fh.write(b"abc")
        else:
            with files.atomic_path(target) as tmp:
                tmp.write_bytes(b"abc")
    assert _leftovers(tmp_path) == []


def test_atomic_write_bytes_roundtrip_and_permissions(tmp_path):
    target = tmp_path / "sub" / "m.png"
    data = files.gray_png(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert files.atomic_write_bytes(target, data) == target
    assert target.read_bytes() == data
    assert target.stat().st_mode & 0o044  # readable by others under the usual umask, unlike mkstemp's 0600
    assert np.asarray(Image.open(target)).tolist() == np.arange(12).reshape(3, 4).tolist()


def test_encode_jpeg_decodes_to_the_image():
    rgb = np.zeros((16, 24, 3), dtype=np.uint8)
    rgb[:, 12:] = (200, 50, 10)
    data = files.encode_jpeg(rgb, quality=90)
    decoded = np.asarray(Image.open(io.BytesIO(data)))
    assert decoded.shape == (16, 24, 3) and np.abs(decoded.astype(int) - rgb).mean() < 4
    with pytest.raises(ValueError):
        files.encode_jpeg(np.zeros((4, 4), dtype=np.uint8))


def test_remove_stale_temporaries_only_removes_ours(tmp_path):
    with files.atomic_path(tmp_path / "last.pt") as tmp:  # a real temporary name, as a killed run leaves it
        ours = tmp
    ours.write_bytes(b"partial")
    young = tmp_path / ".log.json.abcd1234.tmp.json"
    young.write_text("{")
    others = [".bashrc", ".last.pt.abcd1234.tmp", "notes.tmp", ".x.png.abcdefgh.tmp.jpg", "last.pt"]
    for name in others:
        (tmp_path / name).write_text("user file")
    (tmp_path / ".dir.abcd1234.tmp").mkdir()  # a folder with our pattern is not ours
    sub = tmp_path / "sub"
    sub.mkdir()
    nested = sub / ".best.pt.zzzz9999.tmp.pt"
    nested.write_bytes(b"partial")
    old = time.time() - 7200
    for p in [ours, young, nested, *(tmp_path / n for n in others)]:
        os.utime(p, (old, old))
    os.utime(young, None)  # written just now: a live writer may own it

    removed = files.remove_stale_temporaries(tmp_path)
    assert removed == [ours]
    assert not ours.exists() and young.exists() and nested.exists()
    assert all((tmp_path / n).exists() for n in others) and (tmp_path / ".dir.abcd1234.tmp").is_dir()
    assert files.remove_stale_temporaries(tmp_path, recursive=True) == [nested]
    assert files.remove_stale_temporaries(tmp_path, max_age_s=0) == [young]
    assert files.remove_stale_temporaries(tmp_path / "missing") == []


def test_temporaries_of_a_killed_writer_are_removed_by_an_immediate_rerun(tmp_path):
    """A run killed mid-write (here: os._exit inside atomic_path, as SIGKILL leaves it) leaves a
    temporary naming its PID; the next start removes it at once, with the usual 300 s age rule,
    while a young temporary of a live writer (this process), of another host, or of an older
    version (no writer in the name) stays. Before, all of them stayed for 300 s."""
    import sys

    code = ("import os, sys; from fastsal import files\n"
            "with files.atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'partial'); print(os.getpid(), tmp.name, flush=True); os._exit(9)\n")
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "maps" / "a.png")], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 9, run.stderr
    pid, name = run.stdout.split()
    dead = tmp_path / "maps" / name
    assert dead.exists() and f".p{pid}-" in dead.name
    with files.atomic_path(tmp_path / "maps" / "b.png") as tmp:  # a live writer: this process
        tmp.write_bytes(b"partial")
        assert files.remove_stale_temporaries(tmp_path / "maps", 300.0) == [dead]
        assert tmp.exists()
    other_host = "0" * 6 if files._host_tag() != "0" * 6 else "1" * 6
    remote = tmp_path / "maps" / f".d.png.p{pid}-{other_host}.abcd1234.tmp.png"  # that PID means nothing here
    remote.write_bytes(b"partial")
    old_style = tmp_path / "maps" / ".e.png.abcd1234.tmp.png"
    old_style.write_bytes(b"partial")
    assert files.remove_stale_temporaries(tmp_path / "maps", 300.0) == []
    assert remote.exists() and old_style.exists()


def test_writability_checks(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(files.OutputError, match="is a file"):
        files.ensure_writable_folder(tmp_path / "file")
    with pytest.raises(files.OutputError, match="parent is a file"):
        files.ensure_writable_folder(tmp_path / "file" / "run")
    with pytest.raises(files.OutputError, match="is a folder"):
        files.check_writable_file(tmp_path, "--json")
    with pytest.raises(files.OutputError, match="is a file, not a folder"):
        files.check_writable_file(tmp_path / "file" / "r.json", "--json")
    assert files.check_writable_file(tmp_path / "new" / "r.json", "--json") == tmp_path / "new" / "r.json"
    assert not (tmp_path / "new").exists()  # checking creates nothing
    assert files.ensure_writable_folder(tmp_path / "a" / "b").is_dir()
    assert _leftovers(tmp_path) == ["a", "file"]
