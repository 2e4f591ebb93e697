"""Checkpoints are checked on load and resume (checksum of their tensors, no NaN/inf), a full disk
is one line naming the file with nothing half-written, a diverged run stops with one line, and
training from a checkpoint keeps its post-processing blur (issue 23 items 2, 10, 11; issue 22 item 4)."""
import errno
import os
import re
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from distill_util import SIZE, centre_teacher, teacher_checkpoint, write_images

import fastsal.files as files
import fastsal.training.trainer as train_mod
from fastsal.cli import cli_message, main
from fastsal.files import DiskFullError, atomic_path
from fastsal.models.registry import (
    CHECKSUM_KEY,
    WEIGHTS,
    ModelError,
    atomic_save,
    read_checkpoint,
    tensors_sha256,
)

TINY = ["--model", "fastsal_bare", "--backbone-weights", "none", "--batch-size", "2", "--input-size", "64x96",
        "--limit", "4", "--threads", "1", "--no-progress"]


def _one_line(err: str) -> str:
    """The one error line; a cache conversion's progress note ("fastsal: converting ...") may precede it."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("fastsal: converting ")]
    assert len(lines) == 1, err
    return lines[0]


def _flip_byte_in_largest_tensor(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch zip file, as a bad disk
    or copy would: the zip stays readable (torch does not check the records' CRCs)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2 + 1] ^= 0x10  # a mantissa/exponent bit of some float
    path.write_bytes(bytes(raw))


# ---- checksums and non-finite weights (issue 23 item 2) -------------------------------------------

def test_saved_checkpoint_carries_the_checksum_of_its_tensors(tmp_path):
    path = teacher_checkpoint(tmp_path / "a.pt")
    ckpt = torch.load(path, weights_only=True)
    # The one hash the shipped weights use for their encoder (registry.tensors_sha256), over every tensor.
    assert ckpt[CHECKSUM_KEY] == tensors_sha256({f"state_dict.{k}": v for k, v in ckpt["state_dict"].items()})
    assert read_checkpoint(path)["model"] == "fastsal_bare"


def test_shipped_weights_pass_the_checks():
    for spec in WEIGHTS.values():
        read_checkpoint(spec.path)  # older than the checksum: only the non-finite check applies


@pytest.mark.parametrize("damage", ["flip", "alter"])
def test_predict_refuses_a_damaged_checkpoint(tmp_path, capsys, damage):
    path = teacher_checkpoint(tmp_path / "best.pt")
    photo = write_images(tmp_path / "photos", 1)[0]
    if damage == "flip":
        _flip_byte_in_largest_tensor(path)
    else:  # a tensor changed and the file rewritten with the old checksum
        ckpt = torch.load(path, weights_only=True)
        key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
        ckpt["state_dict"][key].view(-1)[0] += 0.5
        torch.save(ckpt, path)
    code = main(["predict", str(photo), "--weights", str(path), "--backend", "torch", "-o", str(tmp_path / "m.npy")])
    err = capsys.readouterr().err
    assert code == 2
    assert _one_line(err) == (f"fastsal: error: {path}: damaged checkpoint (its tensors do not match the checksum "
                              "written with them); retrain it or restore the file from a copy")
    assert not (tmp_path / "m.npy").exists()


def test_old_checkpoint_without_checksum_loads_but_not_with_inf(tmp_path):
    path = teacher_checkpoint(tmp_path / "old.pt")
    ckpt = torch.load(path, weights_only=True)
    del ckpt[CHECKSUM_KEY]  # as written before checksums existed
    torch.save(ckpt, path)
    assert read_checkpoint(path)["model"] == "fastsal_bare"
    key = next(k for k, v in ckpt["state_dict"].items() if v.is_floating_point())
    ckpt["state_dict"][key].view(-1)[0] = float("inf")
    torch.save(ckpt, path)
    with pytest.raises(ModelError, match=rf"^{path}: damaged checkpoint \(non-finite values \(NaN or inf\) in "
                                         rf"{key}\); retrain it"):
        read_checkpoint(path)


@pytest.mark.parametrize("damage", ["flip", "inf_without_checksum"])
def test_train_refuses_to_resume_from_a_damaged_last_pt(osie_root, tmp_path, capsys, damage):
    assert main(["train", "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", *TINY]) == 0
    last = tmp_path / "last.pt"
    if damage == "flip":
        _flip_byte_in_largest_tensor(last)
        why = "its tensors do not match the checksum written with them"
    else:
        state = torch.load(last, weights_only=True)
        del state[CHECKSUM_KEY]
        key = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
        state["state_dict"][key].view(-1)[:3] = float("inf")
        torch.save(state, last)
        why = f"non-finite values (NaN or inf) in {key}"
    before = last.read_bytes()
    capsys.readouterr()
    code = main(["train", "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "2", *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert _one_line(err) == (f"fastsal: error: {last}: damaged resume checkpoint ({why}); pass --restart to start "
                              "over (or delete the file)")
    assert last.read_bytes() == before  # nothing trained on, nothing overwritten


# ---- a full disk (issue 23 item 10) ----------------------------------------------------------------

def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_atomic_path_turns_enospc_from_a_name_writer_into_one_line(tmp_path):
    target = tmp_path / "model.onnx"
    with pytest.raises(DiskFullError) as info:
        with atomic_path(target) as tmp:  # onnx.save on a full disk: OSError 28 without a file name
            tmp.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(info.value) == f"{target}: No space left on device; free some space or write to another disk"
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert _leftovers(tmp_path) == []


def test_atomic_path_runtime_error_is_a_full_disk_only_when_the_disk_is_full(tmp_path, monkeypatch):
    target = tmp_path / "model.xml"
    with pytest.raises(RuntimeError, match="unexpected pos"):  # plenty of space: not disguised
        with atomic_path(target):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    real = os.statvfs

    class Full:
        def __init__(self, st):
            self.f_frsize, self.f_bavail = st.f_frsize, 0

    monkeypatch.setattr(files.os, "statvfs", lambda p: Full(real(p)))
    with pytest.raises(DiskFullError, match=f"^{target}: No space left on device"):
        with atomic_path(target) as tmp:  # torch's zip writer / OpenVINO's serialiser on a full disk
            tmp.write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert _leftovers(tmp_path) == []


class _FullDiskOs:
    """``os`` as fastsal.files sees it, with every ``write`` after the first ``budget`` bytes
    failing with ENOSPC, as on a disk that fills up during the write."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def write(self, fd, data):
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, bytes(data[: min(len(data), self.budget)]))
        self.budget -= n
        return n

    def __getattr__(self, name):
        return getattr(os, name)


def test_train_checkpoint_on_a_full_disk_is_one_line(osie_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(files, "os", _FullDiskOs(budget=4096))
    code = main(["train", "--root", str(osie_root), "--out", str(tmp_path / "run"), "--epochs", "1", *TINY])
    cap = capsys.readouterr()
    assert code == 2
    line = _one_line(cap.err)
    assert line.startswith(f"fastsal: error: {tmp_path / 'run'}/") and "No space left on device" in line
    assert "best checkpoint" not in cap.out
    assert [n for n in _leftovers(tmp_path / "run") if n.endswith(".pt") or ".tmp" in n] == []


def test_train_on_a_real_full_disk(osie_root, tmp_path, capsys):
    """The same on a 160 KB tmpfs (root with mount rights only): torch's own writer fills it."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        code = main(["train", "--root", str(osie_root), "--out", str(disk / "run"), "--epochs", "1", *TINY])
        cap = capsys.readouterr()
        assert code == 2 and "best checkpoint" not in cap.out
        assert _one_line(cap.err) == (f"fastsal: error: {disk / 'run' / 'best.pt'}: No space left on device; free "
                                      "some space or write to another disk")
        assert _leftovers(disk / "run") == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_export_to_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnx")
    weights = teacher_checkpoint(tmp_path / "w.pt")
    out = tmp_path / "out" / "m.onnx"

    def full_disk_export(model, args, f, *a, **kw):  # torch.onnx.export / onnx.save on a full disk
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full_disk_export)
    code = main(["export", "--weights", str(weights), "--format", "onnx", "--input-size", "64x96", "-o", str(out)])
    assert code == 2
    assert _one_line(capsys.readouterr().err) == (f"fastsal: error: {out}: No space left on device; free some space "
                                                  "or write to another disk")
    assert _leftovers(out.parent) == []


def test_torchscript_export_to_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """torch.jit.save into a file on a full disk aborted the whole process (terminate from C++)."""
    weights = teacher_checkpoint(tmp_path / "w.pt")
    out = tmp_path / "out" / "m.pt"
    monkeypatch.setattr(files, "os", _FullDiskOs(budget=4096))
    code = main(["export", "--weights", str(weights), "--format", "torchscript", "--input-size", "64x96",
                 "-o", str(out)])
    assert code == 2
    assert _one_line(capsys.readouterr().err) == (f"fastsal: error: {out}: No space left on device; free some space "
                                                  "or write to another disk")
    assert _leftovers(out.parent) == []


def test_cache_export_on_a_full_disk_is_one_line(tmp_path, capsys, monkeypatch):
    """The compiled-model cache (an int8 or fp32 ONNX graph written into FASTSAL_CACHE_DIR)."""
    pytest.importorskip("onnxruntime")
    weights = teacher_checkpoint(tmp_path / "w.pt")
    photo = write_images(tmp_path / "photos", 1)[0]
    cache = tmp_path / "cache"
    monkeypatch.setenv("FASTSAL_CACHE_DIR", str(cache))

    def full_disk_export(model, args, f, *a, **kw):
        Path(f).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full_disk_export)
    code = main(["predict", str(photo), "--weights", str(weights), "--backend", "onnxruntime", "-o",
                 str(tmp_path / "m.npy")])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"fastsal: error: {cache}") and line.endswith(
        ".onnx: No space left on device; free some space or write to another disk")
    assert [p.name for p in cache.rglob("*") if p.suffix in (".onnx", ".tmp") or ".tmp" in p.name] == []


# ---- diverged training (issue 23 item 11) ------------------------------------------------------------

def test_diverged_training_stops_with_one_line(osie_root, tmp_path, capsys):
    code = main(["train", "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", "--lr", "1e30", *TINY])
    cap = capsys.readouterr()
    assert code == 2
    line = _one_line(cap.err)
    assert line.startswith("fastsal: error: training diverged in epoch 1: the training loss is ")
    assert line.endswith("nothing of this epoch was saved; lower --lr (now 1e+30) and rerun with --restart")
    assert "best checkpoint" not in cap.out
    assert not (tmp_path / "best.pt").exists() and not (tmp_path / "last.pt").exists()


def test_non_finite_validation_scores_stop_the_run(osie_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_mod, "validate_all",
                        lambda *a, **k: {"kld": float("nan"), "cc": 0.5, "nss": 1.0, "score": float("nan")})
    code = main(["train", "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", *TINY])
    cap = capsys.readouterr()
    assert code == 2 and "best checkpoint" not in cap.out
    assert _one_line(cap.err).startswith("fastsal: error: training diverged in epoch 1: the validation KLD is nan;")
    assert not (tmp_path / "best.pt").exists()


# ---- post-processing carried through --init / adapt / export (issue 22 item 4) ------------------------

def _blurred_source(tmp_path: Path, blur: float = 2.0) -> Path:
    path = teacher_checkpoint(tmp_path / "source.pt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"]["blur_sigma"] = blur  # as the shipped checkpoints carry it
    atomic_save(ckpt, path)
    return path


def test_train_init_and_adapt_keep_the_source_blur(tmp_path, capsys):
    import fastsal
    from fastsal.training import TrainConfig, train
    from fastsal.training.adapt import adapt

    write_images(tmp_path / "photos", 4)
    source = _blurred_source(tmp_path)
    teacher = centre_teacher(tmp_path)
    cfg = TrainConfig.from_flat(model="fastsal_bare", data=(), out=str(tmp_path / "init"), epochs=1, batch_size=2,
                      input_size=SIZE, backbone_weights=None, init=str(source), teacher=(teacher,),
                      distill_images=(str(tmp_path / "photos"),))
    train(cfg, progress=False)
    assert read_checkpoint(tmp_path / "init" / "best.pt")["meta"]["blur_sigma"] == 2.0
    adapt([tmp_path / "photos"], tmp_path / "adapted", teacher=[teacher], model=source, epochs=1, batch_size=2,
          progress=False)
    best = tmp_path / "adapted" / "best.pt"
    assert read_checkpoint(best)["meta"]["blur_sigma"] == 2.0
    assert fastsal.load(best, backend="torch").blur_sigma == 2.0
    # The exported file carries it too (the CLI passes the checkpoint's meta to the sidecar).
    assert main(["export", "--weights", str(best), "--format", "torchscript", "--input-size", "64x96",
                 "-o", str(tmp_path / "a.pt")]) == 0
    from fastsal.export import read_sidecar

    assert read_sidecar(tmp_path / "a.pt")["meta"]["blur_sigma"] == 2.0


def test_adapt_plans_at_once_and_times_after_a_warm_up(tmp_path, capsys, monkeypatch):
    import fastsal.training.adapt as A
    import fastsal.training.trainer as T
    from fastsal.training.adapt import adapt

    write_images(tmp_path / "photos", 4)
    student = teacher_checkpoint(tmp_path / "student.pt", 5)
    calls = []
    real = T.batch_loss

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(T, "batch_loss", counted)
    monkeypatch.setattr(A, "train", lambda cfg, **k: {"epochs": []})  # the plan only
    adapt([tmp_path / "photos"], tmp_path / "out", teacher=[centre_teacher(tmp_path)], model=student,
          budget_min=1e-5, batch_size=2, progress=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "adapt: 4 images; timing two training steps (after one warm-up) to fit the 1e-05-minute budget"
    assert out[1].startswith("adapt: 4 images, ") and "s per image and epoch here: 1 epoch" in out[1]
    assert len(calls) == 3  # one warm-up step, not timed, then two timed steps
    assert np.isfinite(__import__("json").loads((tmp_path / "out" / "adapt.json").read_text())["seconds_per_image"])


def test_adapt_and_train_init_refuse_a_damaged_checkpoint(tmp_path):
    from fastsal.training import TrainConfig, TrainError, train
    from fastsal.training.adapt import AdaptError, adapt

    write_images(tmp_path / "photos", 2)
    source = teacher_checkpoint(tmp_path / "source.pt")
    _flip_byte_in_largest_tensor(source)
    why = re.escape(f"{source}: damaged checkpoint (its tensors do not match the checksum written with them)")
    with pytest.raises(AdaptError, match=rf"^model {why}; retrain it or restore the file from a copy$") as info:
        adapt([tmp_path / "photos"], tmp_path / "out", model=source, epochs=1)
    assert cli_message(info.value).startswith(f"--model {source}: damaged checkpoint")
    cfg = TrainConfig.from_flat(model="fastsal_bare", data=(), out=str(tmp_path / "run"), epochs=1, batch_size=2,
                      input_size=SIZE, backbone_weights=None, init=str(source), teacher=(centre_teacher(tmp_path),),
                      distill_images=(str(tmp_path / "photos"),))
    with pytest.raises(TrainError, match=rf"^init {why}") as info:
        train(cfg, progress=False)
    assert cli_message(info.value).startswith(f"--init {source}: damaged checkpoint")
