"""Training on eye fixations: cached data, flip augmentation, checkpoints every epoch, resume, DDP.

Targets are built at the training resolution: fixations are rescaled to it and blurred with the
one-degree Gaussian scaled by the same factor, so the model learns the density the metrics score.
Launch several processes with ``torchrun`` and the loop runs data-parallel (gloo on CPU, NCCL on
GPU); nothing here is cluster-specific.

Everything that can be checked in a second is checked before the data is loaded (minutes on the
full dataset): the configuration, that ``out`` is a writable folder, the resume checkpoint and the
backbone weights. Mistakes raise :class:`TrainError` (a :class:`~fastsal.errors.FastSalError`)
with one line naming the argument and the fix.

Resuming (the default when ``out/last.pt`` exists) continues the same run. A run of another model
is refused; a damaged ``last.pt`` is refused (``--restart`` starts over). When the plan changed
since ``last.pt`` was written (a larger ``--epochs`` after a finished run, another batch size or
``--limit``) training continues from the saved weights and optimiser state with a fresh one-cycle
schedule over the epochs still to do: a warm restart, the usual way to extend a finished cosine
schedule, rather than a traceback from the old schedule running out of steps.

Stopping: Ctrl-C (SIGINT) or SIGTERM finishes the current batch and raises
:class:`TrainInterrupted` (a ``KeyboardInterrupt``) after the last completed epoch's checkpoint is
on disk; rerunning the same command resumes. The command line exits 128 + the signal number (130
for Ctrl-C, 143 for SIGTERM), as a shell does for a process killed by that signal. A second signal
stops at once.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsal import defaults
from fastsal import files
from fastsal.data.datasets import Sample, load_osie
from fastsal.data.fixations import (
    OSIE_SIGMA_PX,
    fixation_density,
    fixation_map,
    rescale_points,
)
from fastsal.errors import FastSalError
from fastsal.images import load_rgb, resize_rgb
from fastsal.losses import cc, kld, log_density, nss, saliency_loss
from fastsal.models.layers import recalibrate_batchnorm
from fastsal.models.mobilenetv2 import TFLiteError, is_tflite
from fastsal.models.registry import BACKBONES, atomic_save, build, list_models, save_checkpoint

# Bounds the command line and TrainConfig share: wide enough for any real run, narrow enough that
# a typo (--epochs 0, --batch-size -8) fails at once instead of after the data is loaded.
EPOCHS_RANGE = (1, 100_000)
BATCH_SIZE_RANGE = (1, 4096)
INPUT_SIDE_RANGE = (32, 2048)
THREADS_RANGE = (1, 1024)
# Temporaries in ``out`` older than this are a killed run's leftovers (writing one checkpoint
# takes seconds), removed when a run starts.
STALE_TEMPORARY_AGE_S = 60.0
RESUME_FORMAT = "fastsal-train-state/1"
# Training images whose statistics replace the BN statistics a TFLite backbone folded away.
BN_CALIBRATION_IMAGES = 64


class TrainError(FastSalError, ValueError):
    """A training run cannot start or resume; the message names the argument or file and the fix."""


class TrainInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM after the last finished epoch was checkpointed.

    A ``KeyboardInterrupt``, so code that handles Ctrl-C keeps working. ``exit_code`` is
    128 + the signal number, what the command line exits with; ``log`` is the log so far.
    """

    def __init__(self, message: str, signum: int, log: dict[str, Any]) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.log = log


@dataclass
class TrainConfig:
    model: str = defaults.MODEL
    root: str = "../shared/data/osie"
    out: str = "runs/default"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 3e-4
    encoder_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    input_size: tuple[int, int] = defaults.INPUT_SIZE
    sigma_px: float = OSIE_SIGMA_PX  # at the dataset's native resolution
    loss_weights: tuple[float, float, float] = defaults.LOSS_WEIGHTS
    backbone_weights: str | None = "imagenet"
    flip: bool = True
    seed: int = 0
    limit: int | None = None  # use only the first N train/val images (smoke tests)
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first field out of range (called again by :func:`train`,
        since fields may be changed after construction)."""
        def whole(name: str, value: Any, lo: int, hi: int | None) -> None:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
            if not ok:
                span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
                raise TrainError(f"{name} must be a whole number in {span}; got {value!r}")

        def real(name: str, value: Any, lo: float, strict: bool) -> None:
            ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > lo if strict else value >= lo)
            if not ok:
                raise TrainError(f"{name} must be a finite number {'>' if strict else '>='} {lo:g}; got {value!r}")

        whole("epochs", self.epochs, *EPOCHS_RANGE)
        whole("batch_size", self.batch_size, *BATCH_SIZE_RANGE)
        if self.limit is not None:
            whole("limit", self.limit, 1, None)
        if self.threads is not None:
            whole("threads", self.threads, *THREADS_RANGE)
        whole("seed", self.seed, 0, None)
        real("lr", self.lr, 0.0, True)
        real("encoder_lr_scale", self.encoder_lr_scale, 0.0, False)
        real("weight_decay", self.weight_decay, 0.0, False)
        real("sigma_px", self.sigma_px, 0.0, True)
        size = tuple(self.input_size) if isinstance(self.input_size, (tuple, list)) else ()
        lo, hi = INPUT_SIDE_RANGE
        if len(size) != 2 or not all(isinstance(v, int) and lo <= v <= hi for v in size):
            raise TrainError(f"input_size must be (height, width) with each side in {lo}..{hi}; got {self.input_size!r}")
        if self.model != "default" and self.model not in list_models():
            raise TrainError(f"unknown model {self.model!r}; choose one of: {', '.join(list_models())}")


def build_tensors(samples: list[Sample], size: tuple[int, int], sigma_px: float) -> dict[str, torch.Tensor]:
    """Images (uint8), target densities and binary fixation maps at ``size``, for all samples."""
    h, w = size
    images = np.empty((len(samples), h, w, 3), dtype=np.uint8)
    dens = np.empty((len(samples), h, w), dtype=np.float32)
    fmaps = np.empty((len(samples), h, w), dtype=bool)
    for i, s in enumerate(samples):
        images[i] = resize_rgb(load_rgb(s.image_path), (h, w))
        pts = rescale_points(s.fixations, s.shape, size)
        scale = math.sqrt((h / s.height) * (w / s.width))
        dens[i] = fixation_density(pts, size, sigma_px * scale)
        fmaps[i] = fixation_map(pts, size)
    return {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "density": torch.from_numpy(dens),
        "fixations": torch.from_numpy(fmaps),
    }


def _to_input(images_u8: torch.Tensor) -> torch.Tensor:
    return images_u8.float().div_(255.0)


def param_groups(model: nn.Module, lr: float, encoder_scale: float, weight_decay: float) -> list[dict[str, Any]]:
    """Encoder at a smaller learning rate (pretrained features move slowly); no decay on biases/BN."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_encoder = name.startswith("encoder.")
        no_decay = p.ndim <= 1
        groups.setdefault((is_encoder, no_decay), []).append(p)
    return [
        {"params": ps, "lr": lr * (encoder_scale if enc else 1.0), "weight_decay": 0.0 if nd else weight_decay}
        for (enc, nd), ps in groups.items()
    ]


@torch.no_grad()
def validate(model: nn.Module, data: dict[str, torch.Tensor], batch_size: int) -> dict[str, float]:
    """Mean KLD / CC / NSS at the training resolution (model selection; not the reported figures)."""
    model.eval()
    sums = {"kld": 0.0, "cc": 0.0, "nss": 0.0}
    n = len(data["images"])
    for i in range(0, n, batch_size):
        logits = model(_to_input(data["images"][i:i + batch_size]))
        logp = log_density(logits)
        p = logp.exp()
        d = data["density"][i:i + batch_size]
        f = data["fixations"][i:i + batch_size]
        sums["kld"] += kld(logp, d).sum().item()
        sums["cc"] += cc(p, d).sum().item()
        sums["nss"] += nss(p, f).sum().item()
    out = {k: v / n for k, v in sums.items()}
    out["score"] = out["kld"] - out["cc"] - defaults.NSS_WEIGHT * out["nss"]  # lower is better, as the loss
    return out


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def _epochs_span(first: int, last: int) -> str:
    return f"epoch {first}" if first == last else f"epochs {first}..{last}"


def _read_resume_state(path: Path, model_name: str) -> dict[str, Any]:
    """``last.pt`` as a dict, or :class:`TrainError` if it is damaged or holds another model's run.

    Read with weights-only unpickling: the file is ours, but a shared run folder is not a reason
    to execute code from it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise TrainError(f"{path}: damaged resume checkpoint ({type(exc).__name__}); pass --restart to start over "
                         "(or delete the file)") from None
    needed = ("state_dict", "optimizer", "scheduler", "epoch", "log", "best")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise TrainError(f"{path}: not a fastsal resume checkpoint; pass --restart to start over or another --out")
    previous = state.get("model") or (state["log"].get("config", {}).get("model") if isinstance(state["log"], dict) else None)
    if previous is not None and previous != model_name:
        raise TrainError(f"{path.parent}: holds a {previous!r} run, not --model {model_name}; pass another --out, "
                         f"or --restart to replace it")
    return state


def _build_model(cfg: TrainConfig) -> nn.Module:
    """The model to train, with ``cfg.backbone_weights`` checked first so a bad file is one line."""
    weights = cfg.backbone_weights
    if weights is None or str(weights) == "imagenet":
        try:
            return build(cfg.model, backbone_weights=weights)
        except ImportError as exc:  # the packaged ImageNet weights are an optional dependency
            raise TrainError(str(exc).splitlines()[0]) from None
    path = Path(weights)
    hint = "pass a torchvision/lukemelas backbone state dict, a MobileNetV2 .tflite file, 'imagenet' or 'none'"
    if not path.is_file():
        raise TrainError(f"--backbone-weights {path}: no such file; {hint}")
    backbone = next((b for b in BACKBONES if cfg.model.endswith(f"_{b}")), "mobilenet_v2")
    if is_tflite(path):
        if backbone != "mobilenet_v2":
            raise TrainError(f"--backbone-weights {path}: a TFLite file converts to MobileNetV2 only, not the "
                             f"{backbone} backbone of {cfg.model}; pass --model {cfg.model.removesuffix('_' + backbone)}")
        try:
            return build(cfg.model, backbone_weights=path)
        except TFLiteError as exc:  # already one line: the file, what is wrong, the fix
            raise TrainError(f"--backbone-weights {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TrainError(f"--backbone-weights {path}: not a readable PyTorch checkpoint ({type(exc).__name__}); {hint}") from None
    if isinstance(state, dict) and "state_dict" in state and "format" in state:
        raise TrainError(f"--backbone-weights {path}: a whole fastsal checkpoint, not a backbone; {hint}")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TrainError(f"--backbone-weights {path}: not a state dict of tensors; {hint}")
    try:
        return build(cfg.model, backbone_weights=path)
    except (RuntimeError, KeyError) as exc:
        # load_state_dict's first line is a generic heading; the next says which keys are wrong.
        lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
        first = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
        first = first if len(first) <= 120 else first[:117] + "..."
        raise TrainError(f"--backbone-weights {path}: keys do not fit the {backbone} backbone of {cfg.model} "
                         f"({first}); {hint}") from None


def _calibrate_folded_batchnorm(model: nn.Module, images_u8: torch.Tensor, batch_size: int, rank: int) -> None:
    """Give the encoder's BNs the statistics of the first training images before epoch 1.

    A TFLite backbone has its BNs folded into the convolutions; :func:`from_tflite` rebuilds them
    as identities, which train mode (batch statistics) would turn into another network at the
    first step. Eval-mode outputs do not change (see :func:`recalibrate_batchnorm`). Every rank
    sees the same images, so data-parallel replicas stay identical.
    """
    images = images_u8[:BN_CALIBRATION_IMAGES]
    batches = (_to_input(images[i:i + batch_size]) for i in range(0, len(images), batch_size))
    n_bn = recalibrate_batchnorm(model, batches, within=model.encoder)
    if rank == 0:
        print(f"backbone: {n_bn} batch norms folded into the TFLite file re-estimated on {len(images)} training images",
              flush=True)


def train(cfg: TrainConfig, *, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on OSIE ``train``, select on ``val``; returns the training log.

    Writes ``last.pt`` (resumable: model, optimiser, scheduler, epoch) and ``best.pt`` (lowest val
    score) under ``cfg.out`` after every epoch, atomically. Ctrl-C or SIGTERM stops after the
    current batch and raises :class:`TrainInterrupted`; the last finished epoch's ``last.pt`` is
    kept, so rerunning resumes (see the module docstring for what resuming accepts).
    """
    from tqdm import tqdm

    cfg.validate()
    out = Path(cfg.out)
    rank, world = _dist_info()
    if rank == 0:
        files.ensure_writable_folder(out, "--out")
        files.remove_stale_temporaries(out, STALE_TEMPORARY_AGE_S)
    last_path, best_path = out / "last.pt", out / "best.pt"
    state = _read_resume_state(last_path, cfg.model) if resume and last_path.is_file() else None
    if state is not None and int(state["epoch"]) + 1 >= cfg.epochs:  # before minutes of data loading
        if rank == 0:
            print(f"{last_path}: already trained {int(state['epoch']) + 1} epochs (--epochs {cfg.epochs}); nothing "
                  "to do. Pass a larger --epochs to continue or --restart to start over", file=sys.stderr, flush=True)
        return state["log"]
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)  # before building: the initial weights depend on it
    model = _build_model(cfg)
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.encoder_lr_scale, cfg.weight_decay))
    max_lrs = [g["lr"] for g in opt.param_groups]  # this run's --lr, also for a warm restart
    if state is not None:
        try:
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise TrainError(f"{last_path}: does not fit this run ({first[:200]}); pass --restart to start over "
                             "or another --out") from None

    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    train_s = load_osie(cfg.root, "train")[: cfg.limit]
    val_s = load_osie(cfg.root, "val")[: cfg.limit]
    t0 = time.time()
    train_d = build_tensors(train_s, cfg.input_size, cfg.sigma_px)
    val_d = build_tensors(val_s, cfg.input_size, cfg.sigma_px)
    prep_s = time.time() - t0
    if state is None and cfg.backbone_weights not in (None, "imagenet") and is_tflite(cfg.backbone_weights):
        _calibrate_folded_batchnorm(model, train_d["images"], cfg.batch_size, rank)

    n = len(train_s)
    steps_per_epoch = math.ceil(n / (cfg.batch_size * world))

    def one_cycle(epochs: int) -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lrs,
            total_steps=epochs * steps_per_epoch, pct_start=0.1, anneal_strategy="cos", div_factor=10.0,
            final_div_factor=100.0)

    sched = one_cycle(cfg.epochs)
    log: dict[str, Any] = {"config": asdict(cfg), "epochs": [], "prep_seconds": prep_s}
    start_epoch = 0
    best = math.inf
    if state is not None:
        start_epoch = int(state["epoch"]) + 1
        log, best = state["log"], float(state["best"])
        log["config"] = asdict(cfg)  # the plan now in force (--epochs may have grown)
        if state["scheduler"].get("total_steps") == sched.total_steps:
            # Creating the scheduler reset the learning rates and betas: the saved ones win again.
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        else:
            # The plan changed (more epochs, another batch size or --limit): a warm restart over
            # the epochs still to do, from the saved weights and optimiser moments.
            sched = one_cycle(cfg.epochs - start_epoch)
            if rank == 0:
                print(f"{last_path}: the schedule changed since it was written (--epochs, --batch-size or --limit); "
                      f"continuing with a new one-cycle schedule over {_epochs_span(start_epoch + 1, cfg.epochs)}",
                      file=sys.stderr, flush=True)
        if rank == 0:
            print(f"resumed from {last_path} at epoch {start_epoch}")

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)

    # The signal received, the epoch running and the epoch a rerun would start at (after last.pt).
    stop: dict[str, Any] = {"signum": None, "epoch": start_epoch + 1, "resume_at": start_epoch + 1}

    def _interrupted(again: bool = False) -> TrainInterrupted:
        signum = stop["signum"]
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        how = " again; stopped without finishing the batch" if again else ""
        message = (f"{what}{how} in epoch {stop['epoch']}; rerun the same command to resume from epoch "
                   f"{stop['resume_at']}")
        if rank == 0:
            print(message, file=sys.stderr, flush=True)
        return TrainInterrupted(message, signum, log)

    def _stop(signum: int, frame: Any) -> None:  # finish the batch, keep the checkpoint, stop
        if stop["signum"] is not None:  # a second signal: the user does not want to wait for the batch
            raise _interrupted(again=True)
        stop["signum"] = signum

    # signal.signal works only in the main thread; a run started from another thread keeps Python's
    # default Ctrl-C behaviour (and no checkpoint of the unfinished epoch, as before).
    handled = (signal.SIGINT, signal.SIGTERM) if threading.current_thread() is threading.main_thread() else ()
    previous = {sig: signal.getsignal(sig) for sig in handled}
    for sig in handled:
        signal.signal(sig, _stop)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            stop["epoch"] = epoch + 1
            model.train()
            g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            order = torch.randperm(n, generator=g)[rank::world]
            t_epoch = time.time()
            total = 0.0
            bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not progress or rank != 0, leave=False)
            for i in bar:
                idx = order[i:i + cfg.batch_size]
                x = _to_input(train_d["images"][idx])
                d = train_d["density"][idx]
                f = train_d["fixations"][idx]
                if cfg.flip:
                    flip = torch.rand(len(idx), generator=g) < 0.5
                    x[flip] = x[flip].flip(-1)
                    d[flip] = d[flip].flip(-1)
                    f[flip] = f[flip].flip(-1)
                loss = saliency_loss(net(x), d, f, cfg.loss_weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                if stop["signum"] is not None:
                    break
            if stop["signum"] is not None:
                raise _interrupted()
            val = validate(model, val_d, cfg.batch_size * 2)
            entry = {"epoch": epoch + 1, "train_loss": total / len(order), "seconds": time.time() - t_epoch, **{f"val_{k}": v for k, v in val.items()}}
            log["epochs"].append(entry)
            if rank == 0:
                improved = val["score"] < best
                if improved:
                    best = val["score"]
                    save_checkpoint(model, cfg.model, best_path, meta={"epoch": epoch + 1, **{f"val_{k}": v for k, v in val.items()}, "config": asdict(cfg)})
                atomic_save({"format": RESUME_FORMAT, "model": cfg.model, "state_dict": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                             "log": log, "best": best}, last_path)
                files.write_json(log, out / "log.json")
                stop["resume_at"] = epoch + 2
                print(f"epoch {epoch + 1}/{cfg.epochs} loss {entry['train_loss']:.4f} val kld {val['kld']:.4f} "
                      f"cc {val['cc']:.4f} nss {val['nss']:.4f} {'*' if improved else ''} ({entry['seconds']:.0f}s)", flush=True)
            if stop["signum"] is not None and epoch + 1 < cfg.epochs:
                stop["resume_at"] = epoch + 2  # also on ranks that do not write (last.pt is rank 0's)
                raise _interrupted()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return log
