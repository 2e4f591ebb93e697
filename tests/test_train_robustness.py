"""``fastsal train`` mistakes are one line before the data is loaded, interrupts exit 130/143 with
a resumable checkpoint, and resuming copes with a changed plan, a damaged file or another model."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import fastsal.training.config as config_mod
import fastsal.training.data as data_mod
import fastsal.training.trainer as train_mod
from fastsal.cli import main
from fastsal.errors import FastSalError
from fastsal.files import OutputError
from fastsal.training import TrainConfig, TrainError, TrainInterrupted, train

TINY = ["--model", "fastsal_bare", "--backbone-weights", "none", "--batch-size", "2", "--input-size", "64x96",
        "--limit", "4", "--threads", "1", "--no-progress"]


def _cfg(root, out, **kw):
    base = dict(model="fastsal_bare", root=str(root), out=str(out), epochs=1, batch_size=2,
                input_size=(64, 96), backbone_weights=None, limit=4, lr=1e-3)
    base.update(kw)
    return TrainConfig.from_flat(**base)


def _cli(capsys, *args):
    code = main(["train", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def no_data_loading(monkeypatch):
    """Checks that must run before the (slow) data loading: reading the data fails the test."""
    def fail(*args, **kwargs):
        raise AssertionError("the dataset was read before the check")

    monkeypatch.setattr(data_mod, "load_dataset", fail)


# ---- bounds at the command line and in TrainConfig -------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "argument --epochs: expected a whole number in 1..100000, got '0'"),
    (["--epochs", "two"], "argument --epochs: expected a whole number in 1..100000, got 'two'"),
    (["--batch-size", "0"], "argument --batch-size: expected a whole number in 1..4096, got '0'"),
    (["--limit", "0"], "argument --limit: expected a whole number >= 1, got '0'"),
    (["--limit", "-3"], "argument --limit: expected a whole number >= 1, got '-3'"),
    (["--threads", "0"], "argument --threads: expected a whole number in 1..1024, got '0'"),
    (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
    (["--lr", "0"], "argument --lr: expected a finite number > 0, got '0'"),
    (["--input-size", "16x64"], "argument --input-size: each side must be in 32..2048, got '16x64'"),
])
def test_cli_bounds(capsys, tmp_path, args, message):
    with pytest.raises(SystemExit) as info:
        main(["train", "--root", str(tmp_path), *args])
    assert info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"fastsal train: error: {message}"


def test_cli_bounds_match_the_library():
    from fastsal import defaults  # what the command line parses by (torch-free)

    assert (defaults.EPOCHS_RANGE, defaults.BATCH_SIZE_RANGE, defaults.INPUT_SIDE_RANGE,
            defaults.THREADS_RANGE) == (config_mod.EPOCHS_RANGE, config_mod.BATCH_SIZE_RANGE,
                                        config_mod.INPUT_SIDE_RANGE, config_mod.THREADS_RANGE)


@pytest.mark.parametrize("field, value, message", [
    ("epochs", 0, "epochs must be a whole number in 1..100000; got 0"),
    ("batch_size", 0, "batch_size must be a whole number in 1..4096; got 0"),
    ("limit", 0, "limit must be a whole number in >= 1; got 0"),
    ("epochs", 2.5, "epochs must be a whole number"),
    ("lr", float("inf"), "lr must be a finite number > 0; got inf"),
    ("input_size", (10, 64), r"input_size must be \(height, width\) with each side in 32..2048"),
    ("model", "fastsal_zz", "unknown model 'fastsal_zz'"),
])
def test_config_bounds(tmp_path, field, value, message):
    with pytest.raises(TrainError, match=message):
        _cfg(tmp_path, tmp_path / "out", **{field: value})
    cfg = _cfg(tmp_path, tmp_path / "out")
    setattr(getattr(cfg, config_mod.FLAT_FIELDS[field]), field, value)  # changed after construction: train() checks again
    with pytest.raises(TrainError, match=message):
        train(cfg, progress=False)


# ---- --out checked before the data is loaded -----------------------------------------------------

def test_out_is_a_file(tmp_path, capsys, no_data_loading):
    (tmp_path / "run").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):  # the library: a FastSalError
        train(_cfg(tmp_path, tmp_path / "run"), progress=False)
    code, out, err = _cli(capsys, "--root", str(tmp_path), "--out", str(tmp_path / "run"), *TINY)
    assert code == 2
    assert _error_line(err) == f"fastsal: error: --out {tmp_path / 'run'}: is a file, not a folder; pass a folder path"


def test_out_under_a_file(tmp_path, capsys, no_data_loading):
    (tmp_path / "f").write_text("x")
    code, out, err = _cli(capsys, "--root", str(tmp_path), "--out", str(tmp_path / "f" / "run"), *TINY)
    assert code == 2
    assert _error_line(err) == (f"fastsal: error: --out {tmp_path / 'f' / 'run'}: a parent is a file, not a folder; "
                                "pass another path")


def test_out_read_only(tmp_path, capsys, no_data_loading):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if shutil.which("mount") is None:
            pytest.skip("needs mount(8) to make a read-only folder as root")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], capture_output=True)
        if res.returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        ro.chmod(0o555)
    try:
        code, out, err = _cli(capsys, "--root", str(tmp_path), "--out", str(ro / "run"), *TINY)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)], check=False)
        else:
            ro.chmod(0o755)
    assert code == 2
    assert re.fullmatch(rf"fastsal: error: --out {re.escape(str(ro / 'run'))}: cannot write there "
                        r"\((Read-only file system|Permission denied)\); pass a writable folder", _error_line(err))


# ---- --backbone-weights ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["missing", "garbage", "tensor", "wrong_keys", "fastsal_ckpt"])
def test_bad_backbone_weights(tmp_path, capsys, no_data_loading, case):
    path = tmp_path / "bb.pth"
    if case == "garbage":
        path.write_bytes(b"not a checkpoint at all")
    elif case == "tensor":
        torch.save(torch.zeros(3), path)
    elif case == "wrong_keys":
        torch.save({"conv.weight": torch.zeros(3, 3, 1, 1)}, path)
    elif case == "fastsal_ckpt":
        torch.save({"format": "fastsal-checkpoint/1", "model": "fastsal_a", "state_dict": {}}, path)
    args = [a for a in TINY if a not in ("--backbone-weights", "none")]
    code, out, err = _cli(capsys, "--root", str(tmp_path), "--out", str(tmp_path / "run"), "--model", "fastsal_a",
                          "--backbone-weights", str(path), *args[2:])
    expected = {
        "missing": "no such file",
        "garbage": r"not a readable PyTorch checkpoint \(UnpicklingError\)",
        "tensor": "not a state dict of tensors",
        "wrong_keys": r"keys do not fit the mobilenet_v2 backbone of fastsal_a \(Missing key\(s\) in state_dict: ",
        "fastsal_ckpt": "a whole fastsal checkpoint, not a backbone",
    }[case]
    assert code == 2
    line = _error_line(err)
    assert line.startswith(f"fastsal: error: --backbone-weights {path}: ")
    assert re.search(expected, line) and line.endswith(
        "pass a torchvision/lukemelas backbone state dict, a MobileNetV2 .tflite file, 'imagenet' or 'none'")


# ---- resuming -----------------------------------------------------------------------------------

def test_damaged_last_pt_is_one_line(osie_root, tmp_path, capsys, no_data_loading):
    (tmp_path / "last.pt").write_bytes(b"PK\x03\x04 cut short")
    code, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), *TINY)
    assert code == 2
    assert re.fullmatch(rf"fastsal: error: {re.escape(str(tmp_path / 'last.pt'))}: damaged resume checkpoint "
                        r"\(\w+\); pass --restart to start over \(or delete the file\)", _error_line(err))


def test_truncated_real_last_pt_then_restart(osie_root, tmp_path, capsys):
    assert _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", *TINY)[0] == 0
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    code, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "2", *TINY)
    assert code == 2 and "damaged resume checkpoint" in _error_line(err)
    code, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", "--restart", *TINY)
    assert code == 0 and "epoch 1/1" in out
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 0


def test_other_model_into_same_out_is_refused(osie_root, tmp_path, capsys):
    assert _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", *TINY)[0] == 0
    other = ["--model", "fastsal_bare_effnet_lite0", *TINY[2:]]
    code, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "2", *other)
    assert code == 2
    assert _error_line(err) == (f"fastsal: error: {tmp_path}: holds a 'fastsal_bare' run, not --model "
                                "fastsal_bare_effnet_lite0; pass another --out, or --restart to replace it")
    assert _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "1", "--restart", *other)[0] == 0
    assert torch.load(tmp_path / "best.pt", weights_only=True)["model"] == "fastsal_bare_effnet_lite0"


def test_finished_run_extended_with_more_epochs(osie_root, tmp_path, capsys):
    log = train(_cfg(osie_root, tmp_path, epochs=1), progress=False)
    assert [e["epoch"] for e in log["epochs"]] == [1]
    capsys.readouterr()
    log = train(_cfg(osie_root, tmp_path, epochs=3), progress=False)
    cap = capsys.readouterr()
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3]
    assert "new one-cycle schedule over epochs 2..3" in cap.err
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["epoch"] == 2 and state["scheduler"]["total_steps"] == 2 * 2  # 2 epochs x 2 batches
    # Same plan again: nothing to do, said so, and the CLI still succeeds.
    code, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "3", *TINY)
    assert code == 0 and "already trained 3 epochs (--epochs 3); nothing to do" in err
    assert "best checkpoint" in out


def test_stale_temporaries_removed_at_start(osie_root, tmp_path):
    stale = tmp_path / ".last.pt.k2j3h4g5.tmp.pt"
    fresh = tmp_path / ".best.pt.abcdefgh.tmp.pt"
    user = tmp_path / ".notes.tmp"
    for f in (stale, fresh, user):
        f.write_bytes(b"partial")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(user, (old, old))
    train(_cfg(osie_root, tmp_path), progress=False)
    assert not stale.exists() and fresh.exists() and user.exists()


# ---- interrupts -----------------------------------------------------------------------------------

def _signal_at_batch(monkeypatch, signum, batch):
    calls = {"n": 0}
    real_loss = train_mod.saliency_loss

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batch:  # the installed handler, called directly (see test_train.py for why)
            signal.getsignal(signum)(signum, None)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "saliency_loss", loss)


@pytest.mark.parametrize("signum, code, what", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_cli_interrupt_exit_code_and_resume(osie_root, tmp_path, capsys, monkeypatch, signum, code, what):
    _signal_at_batch(monkeypatch, signum, 3)  # first batch of epoch 2
    got, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "3", *TINY)
    assert got == code
    assert f"{what} in epoch 2; rerun the same command to resume from epoch 2" in err
    assert "best checkpoint" not in out
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 0
    assert signal.getsignal(signum) in (signal.default_int_handler, signal.SIG_DFL)  # handlers restored
    monkeypatch.undo()
    got, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "3", *TINY)
    assert got == 0 and "resumed from" in out and "epoch 3/3" in out


def test_second_signal_stops_at_once(osie_root, tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real_loss = train_mod.saliency_loss

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            handler = signal.getsignal(signal.SIGINT)
            handler(signal.SIGINT, None)
            handler(signal.SIGINT, None)  # impatient: raises from the handler, mid-batch
            raise AssertionError("the second Ctrl-C did not stop the run")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_mod, "saliency_loss", loss)
    code, out, err = _cli(capsys, "--root", str(osie_root), "--out", str(tmp_path), "--epochs", "3", *TINY)
    assert code == 130
    assert ("interrupted again; stopped without finishing the batch in epoch 2; rerun the same command to resume "
            "from epoch 2") in err
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 0


def test_interrupt_during_validation_keeps_the_finished_epoch(osie_root, tmp_path, monkeypatch):
    real_validate = train_mod.validate

    def validate_then_signal(*args, **kwargs):
        signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "validate", validate_then_signal)
    with pytest.raises(TrainInterrupted, match="interrupted in epoch 1; rerun the same command to resume from epoch 2"):
        train(_cfg(osie_root, tmp_path, epochs=3), progress=False)
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] == 0


@pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals to a child process")
def test_sigterm_to_a_real_process(osie_root, tmp_path):
    cmd = [sys.executable, "-m", "fastsal", "train", "--root", str(osie_root), "--out", str(tmp_path),
           "--epochs", "1000", *TINY]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        first = proc.stdout.readline()
        while first.startswith("data: "):  # the data summary comes first
            first = proc.stdout.readline()
        # "epoch 1/1000 ...": last.pt of epoch 1 is on disk
        assert first.startswith("epoch 1/1000"), first
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM in epoch" in err and "rerun the same command to resume" in err
    assert "Traceback" not in err
    assert torch.load(tmp_path / "last.pt", weights_only=True)["epoch"] >= 0


def test_train_error_is_a_fastsal_error():
    assert issubclass(TrainError, FastSalError) and issubclass(TrainError, ValueError)
    assert issubclass(TrainInterrupted, KeyboardInterrupt)


def test_resume_continues_exactly(osie_root, tmp_path):
    """Interrupted after epoch 1 and resumed, a run ends with the weights of an uninterrupted one."""
    train(_cfg(osie_root, tmp_path / "straight", epochs=2), progress=False)
    cfg = _cfg(osie_root, tmp_path / "resumed", epochs=2)
    calls = {"n": 0}
    real_loss = train_mod.saliency_loss

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        return real_loss(*args, **kwargs)

    train_mod.saliency_loss = loss
    try:
        with pytest.raises(TrainInterrupted):
            train(cfg, progress=False)
    finally:
        train_mod.saliency_loss = real_loss
    train(cfg, progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 1
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, rtol=0, atol=0, msg=k)
