"""The training loop: :class:`Trainer` (``step``, ``validate``, ``save``, ``resume``, ``fit``) and
:func:`train`, the recipe ``fastsal train`` runs.

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

Launch several processes with ``torchrun`` and the loop runs data-parallel (gloo on CPU, NCCL on
GPU); nothing here is cluster-specific.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsal import defaults, files
from fastsal.errors import FastSalError, first_line
from fastsal.losses import DISTILLATION_LOSSES, cc, kld, log_density, nss, saliency_loss
from fastsal.models.mobilenetv2 import is_tflite
from fastsal.models.registry import save_checkpoint
from fastsal.signals import install
from fastsal.training.augment import augment
from fastsal.training.checkpoint import read_resume_state, write_resume_state
from fastsal.training.config import TrainConfig, TrainError
from fastsal.training.data import Bucket, BucketBatchSampler, build_buckets, load_split
from fastsal.training.distill import (
    FIXATIONS_KIND,
    TEACHER_KIND,
    DistillError,
    build_teacher,
    distill_samples,
    teacher_views,
)
from fastsal.training.model import build_model, calibrate_folded_batchnorm, encoder_of, make_optimizer, to_input


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


@torch.no_grad()
def validate(model: nn.Module, buckets: list[Bucket], batch_size: int,
             device: torch.device | None = None) -> dict[str, float]:
    """Mean KLD / CC / NSS at the training resolution (model selection; not the reported figures)."""
    device = device if device is not None else torch.device("cpu")
    model.eval()
    sums = {"kld": 0.0, "cc": 0.0, "nss": 0.0}
    n = 0
    for data in buckets:
        if data.kind != FIXATIONS_KIND:  # NSS needs fixations; labels do not score
            continue
        for i in range(0, len(data.images), batch_size):
            logits = model(to_input(data.images[i:i + batch_size].to(device)))
            logp = log_density(logits)
            p = logp.exp()
            d = data.density[i:i + batch_size].to(device)
            f = data.fixations[i:i + batch_size].to(device)
            sums["kld"] += kld(logp, d).sum().item()
            sums["cc"] += cc(p, d).sum().item()
            sums["nss"] += nss(p, f).sum().item()
            n += len(d)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["score"] = out["kld"] - out["cc"] - defaults.NSS_WEIGHT * out["nss"]  # lower is better, as the loss
    return out


def validate_all(model: nn.Module, val_sets: list[tuple[str, list[Bucket]]], batch_size: int,
                 device: torch.device) -> dict[str, float]:
    """Each dataset's :func:`validate` (keys ``NAME_kld`` ...) and their means (``kld`` ... ``score``).

    Averaging per dataset, not per image, keeps a large dataset from deciding alone which epoch
    is best.
    """
    per = {name: validate(model, buckets, batch_size, device) for name, buckets in val_sets}
    out = {k: float(np.mean([v[k] for v in per.values()])) for k in ("kld", "cc", "nss", "score")}
    if len(per) > 1:
        for name, v in per.items():
            out.update({f"{name}_{k}": v[k] for k in ("kld", "cc", "nss")})
    return out


def batch_loss(net: nn.Module, kind: str, x: torch.Tensor, density: torch.Tensor, fixations: torch.Tensor,
               cfg: TrainConfig, teacher: Any, g: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """The loss of one augmented batch (:func:`augment`'s output) from a bucket of ``kind``.

    Fixation batches: :func:`fastsal.losses.saliency_loss` on the target density and fixations.
    Density batches (stored pseudo-labels) and teacher batches (labelled here, on exactly the views
    the student sees, after mixup: :func:`fastsal.training.distill.teacher_views`): the distillation
    loss ``cfg.distill.distill_loss``.
    """
    if kind == TEACHER_KIND:
        x, density = teacher_views(x, teacher, cfg.distill.mixup, g)
    out = net(x.to(device))
    if kind == FIXATIONS_KIND:
        return saliency_loss(out, density.to(device), fixations.to(device), cfg.optim.loss_weights)
    return DISTILLATION_LOSSES[cfg.distill.distill_loss](out, density.to(device))


def check_finite(cfg: TrainConfig, epoch: int, what: str, value: float) -> None:
    """Stop a diverged run (:class:`TrainError`) before anything of this epoch is saved: NaN or inf
    weights would otherwise become ``best.pt`` / ``last.pt`` and a resume would train on them."""
    if not math.isfinite(value):
        raise TrainError(f"training diverged in epoch {epoch + 1}: {what} is {value}; nothing of this epoch was "
                         f"saved; lower {{option}} (now {cfg.optim.lr:g}) and rerun with resume=False", option="lr")


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process under ``torchrun`` (0, 1 without it)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _epochs_span(first: int, last: int) -> str:
    return f"epoch {first}" if first == last else f"epochs {first}..{last}"


class StopSignals:
    """Ctrl-C / SIGTERM during training: the first finishes the batch (the loop polls
    :attr:`signum`), a second stops at once. Tracks the epoch running and the epoch a rerun would
    start at (after the last ``last.pt``) for the message."""

    def __init__(self, rank: int, log: dict[str, Any], start_epoch: int) -> None:
        self.rank, self.log = rank, log
        self.signum: int | None = None
        self.epoch = self.resume_at = start_epoch + 1

    def interrupted(self, again: bool = False) -> TrainInterrupted:
        signum = self.signum
        assert signum is not None
        what = "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"
        how = " again; stopped without finishing the batch" if again else ""
        message = (f"{what}{how} in epoch {self.epoch}; rerun the same command to resume from epoch "
                   f"{self.resume_at}")
        if self.rank == 0:
            print(message, file=sys.stderr, flush=True)
        return TrainInterrupted(message, signum, self.log)

    def _handle(self, signum: int, frame: Any) -> None:  # finish the batch, keep the checkpoint, stop
        if self.signum is not None:  # a second signal: the user does not want to wait for the batch
            raise self.interrupted(again=True)
        self.signum = signum

    @contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Handle SIGINT and SIGTERM inside the block, restoring the previous handlers after it.

        signal.signal works only in the main thread; a run started from another thread keeps
        Python's default Ctrl-C behaviour (and no checkpoint of the unfinished epoch).
        """
        restore = install(self._handle, (signal.SIGINT, signal.SIGTERM))  # fastsal.signals: main thread only
        try:
            yield self
        finally:
            restore()


class Trainer:
    """One run of ``cfg``: the model, optimiser and teacher (built at once, so a bad file fails in
    a second), then the data (:meth:`prepare`, minutes), then epochs of :meth:`step` with
    :meth:`validate` and :meth:`save` after each (:meth:`fit`).

    ``fastsal train`` (:func:`train`) and ``fastsal adapt`` (timing its steps) run the same
    :meth:`step`. ``teacher``: an already built :class:`fastsal.teacher.Teacher` (else built from
    ``cfg.distill``).
    """

    def __init__(self, cfg: TrainConfig, *, progress: bool = True, teacher: Any = None) -> None:
        self.cfg, self.progress = cfg, progress
        self.rank, self.world = dist_info()
        self.out = Path(cfg.run.out)
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        try:
            from fastsal.runtime.engines import check_device

            self.device = check_device(cfg.run.device)
        except FastSalError as exc:
            raise TrainError("{option}: " + str(exc), option="device") from None
        torch.manual_seed(cfg.optim.seed)  # before building: the initial weights depend on it
        model, self.carried = build_model(cfg.model)
        self.model: nn.Module = model.to(self.device)
        self.net: nn.Module = self.model  # DistributedDataParallel around it when data-parallel
        try:
            self.teacher = teacher if teacher is not None else build_teacher(cfg)  # before the data
        except DistillError as exc:  # the same message, still naming its parameter
            raise TrainError(exc.template, option=exc.option) from None
        self.optimizer = make_optimizer(self.model, cfg.optim)
        self.max_lrs = [g["lr"] for g in self.optimizer.param_groups]  # this run's lr, also for a warm restart
        self.scheduler: torch.optim.lr_scheduler.OneCycleLR | None = None
        self.epoch = 0  # the epoch running (0-based)
        self.start_epoch, self.best = 0, math.inf
        self.log: dict[str, Any] = {}
        self.train_buckets: list[Bucket] = []
        self.val_sets: list[tuple[str, list[Bucket]]] = []
        self.sampler = BucketBatchSampler([], cfg.optim.batch_size, self.rank, self.world)  # until prepare()
        self.prep_seconds = 0.0

    def load_state(self, state: dict[str, Any]) -> None:
        """Weights and optimiser moments of a resume checkpoint (:func:`read_resume_state`)."""
        try:
            self.model.load_state_dict(state["state_dict"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainError(f"{self.last_path}: does not fit this run ({first_line(exc)[:200]}); pass resume=False "
                             "to start over or another {option}", option="out") from None

    def prepare(self) -> None:
        """Load the data into buckets (after joining the process group when data-parallel)."""
        cfg = self.cfg
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        t0 = time.time()
        train_sets = load_split(cfg.data, "train")
        val_sets = load_split(cfg.data, "val")
        try:
            distilled = distill_samples(cfg)
        except DistillError as exc:  # the same message, still naming its parameter
            raise TrainError(exc.template, option=exc.option) from None
        labelled = [s for _, samples in train_sets for s in samples]  # fixations or stored densities
        if distilled:
            train_sets.append(("teacher-labelled", distilled))
        if not labelled and not distilled:
            raise TrainError(f"{{option}} {','.join(cfg.data.data)}: no training images; check the datasets' "
                             "splits.json", option="data")
        self.train_buckets = (build_buckets(cfg.data, labelled)
                              + build_buckets(cfg.data, distilled, kind=TEACHER_KIND))
        self.val_sets = [(name, build_buckets(cfg.data, samples)) for name, samples in val_sets if samples]
        self.prep_seconds = time.time() - t0
        if self.rank == 0:
            sizes = ", ".join(f"{b.size[0]}x{b.size[1]}{'' if b.kind == FIXATIONS_KIND else ' ' + b.kind}: "
                              f"{len(b)}" for b in self.train_buckets)
            print(f"data: {' + '.join(f'{name} {len(s)}' for name, s in train_sets)} train images ({sizes}); "
                  f"prepared in {self.prep_seconds:.0f}s", flush=True)
        # Equal steps on every rank: the batch plan is shared, each rank takes every world-th batch.
        self.sampler = BucketBatchSampler([len(b) for b in self.train_buckets], cfg.optim.batch_size,
                                          self.rank, self.world)

    def _one_cycle(self, epochs: int) -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=self.max_lrs, total_steps=epochs * len(self.sampler), pct_start=0.1,
            anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)

    def resume(self, state: dict[str, Any] | None) -> None:
        """Start the schedule and the log: fresh, or where ``state`` (``last.pt``) left off; a changed
        plan gets a warm restart over the epochs still to do (see the module docstring)."""
        cfg = self.cfg
        self.scheduler = self._one_cycle(cfg.optim.epochs)
        self.log = {"config": cfg.to_flat(), "epochs": [], "prep_seconds": self.prep_seconds}
        if self.teacher is not None:
            self.log["teacher"] = self.teacher.identity()  # the hash of what taught it, as a label manifest records
        if state is None:
            return
        self.start_epoch = int(state["epoch"]) + 1
        self.log, self.best = state["log"], float(state["best"])
        self.log["config"] = cfg.to_flat()  # the plan now in force (epochs may have grown)
        if state["scheduler"].get("total_steps") == self.scheduler.total_steps:
            # Creating the scheduler reset the learning rates and betas: the saved ones win again.
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self.scheduler = self._one_cycle(cfg.optim.epochs - self.start_epoch)
            if self.rank == 0:
                print(f"{self.last_path}: the schedule changed since it was written (--epochs, --batch-size or "
                      f"--limit); continuing with a new one-cycle schedule over "
                      f"{_epochs_span(self.start_epoch + 1, cfg.optim.epochs)}", file=sys.stderr, flush=True)
        if self.rank == 0:
            print(f"resumed from {self.last_path} at epoch {self.start_epoch}")

    def step(self, bucket: Bucket, indices: torch.Tensor, generator: torch.Generator) -> float:
        """One optimiser step on images ``indices`` of ``bucket``, augmented with ``generator``;
        returns the loss (checked finite before the step spreads it)."""
        x, d, f = augment(to_input(bucket.images[indices]), bucket.density[indices].clone(),
                          [bucket.points[i] for i in indices.tolist()], self.cfg.augment, generator)
        loss = batch_loss(self.net, bucket.kind, x, d, f, self.cfg, self.teacher, generator, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.item()
        check_finite(self.cfg, self.epoch, "the training loss", value)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return value

    def train_epoch(self, stop: StopSignals) -> dict[str, list[float]]:
        """One epoch of :meth:`step` over this rank's share of the plan; returns kind -> [loss sum,
        images] (the losses of fixations and teacher densities differ in scale)."""
        from tqdm import tqdm

        cfg, epoch = self.cfg, self.epoch
        self.model.train()
        if cfg.model.freeze_encoder:
            encoder_of(self.model).eval()  # frozen: batch-norm statistics stay those it was trained with
        g = torch.Generator().manual_seed(cfg.optim.seed * 1000 + epoch)
        self.sampler.set_generator(g)
        plan = list(self.sampler)
        by_kind: dict[str, list[float]] = {}
        bar = tqdm(plan, desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", disable=not self.progress or self.rank != 0,
                   leave=False)
        for batch in bar:
            bucket = self.train_buckets[batch.bucket]
            value = self.step(bucket, batch.indices, g)
            kind_sum = by_kind.setdefault(bucket.kind, [0.0, 0])
            kind_sum[0] += value * len(batch.indices)
            kind_sum[1] += len(batch.indices)
            bar.set_postfix(loss=f"{value:.3f}")
            if stop.signum is not None:
                break
        return by_kind

    def validate(self) -> dict[str, float]:
        """:func:`validate_all` on the val splits (empty without validation data), checked finite."""
        val = validate_all(self.model, self.val_sets, self.cfg.optim.batch_size * 2, self.device) if self.val_sets else {}
        for key in ("kld", "cc", "nss"):
            check_finite(self.cfg, self.epoch, f"the validation {key.upper()}", val.get(key, 0.0))
        return val

    def save(self, val: dict[str, float]) -> bool:
        """``best.pt`` when ``val`` improved (or without validation data), ``last.pt`` and ``log.json``;
        returns whether it improved. Rank 0 only."""
        improved = not val or val["score"] < self.best  # no validation data: the latest epoch is kept
        if improved:
            self.best = val["score"] if val else self.best
            meta = {"epoch": self.epoch + 1, **{f"val_{k}": v for k, v in val.items()}, "config": self.cfg.to_flat(),
                    **self.carried}  # maps made as init's were (its blur)
            if self.teacher is not None:
                meta["teacher"] = self.log["teacher"]
            save_checkpoint(self.model, self.cfg.model.model, self.best_path, meta=meta)
        assert self.scheduler is not None
        write_resume_state(self.last_path, self.cfg.model.model, self.model, self.optimizer, self.scheduler,
                           self.epoch, self.log, self.best)
        files.write_json(self.log, self.out / "log.json")
        return improved

    def _finish_epoch(self, by_kind: dict[str, list[float]], seconds: float, stop: StopSignals) -> None:
        """Validate, log, save and report the epoch just trained."""
        val = self.validate()
        total, seen = (sum(v[i] for v in by_kind.values()) for i in (0, 1))
        entry = {"epoch": self.epoch + 1, "train_loss": total / max(seen, 1), "seconds": seconds,
                 **{f"val_{k}": v for k, v in val.items()}}
        if len(by_kind) > 1:  # ground truth and teacher densities mixed: each loss on its own
            entry.update({f"train_loss_{k}": v[0] / max(v[1], 1) for k, v in by_kind.items()})
        self.log["epochs"].append(entry)
        if self.rank == 0:
            improved = self.save(val)
            stop.resume_at = self.epoch + 2
            scores = (f"val kld {val['kld']:.4f} cc {val['cc']:.4f} nss {val['nss']:.4f} {'*' if improved else ''}"
                      if val else "(no validation data: best.pt = this epoch)")
            print(f"epoch {self.epoch + 1}/{self.cfg.optim.epochs} loss {entry['train_loss']:.4f} {scores} "
                  f"({entry['seconds']:.0f}s)", flush=True)

    def fit(self) -> dict[str, Any]:
        """The epochs still to do (after :meth:`prepare` and :meth:`resume`); returns the log.
        Ctrl-C / SIGTERM: :class:`TrainInterrupted` once the last finished epoch is on disk."""
        epochs = self.cfg.optim.epochs
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(self.model)
        stop = StopSignals(self.rank, self.log, self.start_epoch)
        try:
            with stop.installed():
                for epoch in range(self.start_epoch, epochs):
                    self.epoch, stop.epoch = epoch, epoch + 1
                    t_epoch = time.time()
                    by_kind = self.train_epoch(stop)
                    if stop.signum is not None:
                        raise stop.interrupted()
                    self._finish_epoch(by_kind, time.time() - t_epoch, stop)
                    if stop.signum is not None and epoch + 1 < epochs:
                        stop.resume_at = epoch + 2  # also on ranks that do not write (last.pt is rank 0's)
                        raise stop.interrupted()
        finally:
            if self.world > 1:
                import torch.distributed as dist

                dist.destroy_process_group()
        return self.log


def _open_run(cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """Check ``out`` and read its ``last.pt`` when resuming: before the model and the data."""
    out = Path(cfg.run.out)
    if dist_info()[0] == 0:
        files.ensure_writable_folder(out, "--out")
        files.remove_stale_temporaries(out, files.CHECKPOINT_TEMPORARY_AGE_S)
    last_path = out / "last.pt"
    return read_resume_state(last_path, cfg.model.model) if resume and last_path.is_file() else None


def train(cfg: TrainConfig, *, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on the ``train`` splits of ``cfg.data``, select on their ``val``; returns the log.

    Writes ``last.pt`` (resumable: model, optimiser, scheduler, epoch) and ``best.pt`` (lowest val
    score) under ``cfg.run.out`` after every epoch, atomically. Ctrl-C or SIGTERM stops after the
    current batch and raises :class:`TrainInterrupted`; the last finished epoch's ``last.pt`` is
    kept, so rerunning resumes (see the module docstring for what resuming accepts).
    """
    cfg.validate()
    state = _open_run(cfg, resume)
    epochs = cfg.optim.epochs
    if state is not None and int(state["epoch"]) + 1 >= epochs:  # before minutes of data loading
        if dist_info()[0] == 0:
            print(f"{Path(cfg.run.out) / 'last.pt'}: already trained {int(state['epoch']) + 1} epochs (--epochs "
                  f"{epochs}); nothing to do. Pass a larger --epochs to continue or --restart to start over",
                  file=sys.stderr, flush=True)
        return state["log"]
    trainer = Trainer(cfg, progress=progress)
    if state is not None:
        trainer.load_state(state)
    trainer.prepare()
    weights = cfg.model.backbone_weights
    if state is None and weights not in (None, "imagenet") and is_tflite(weights):
        biggest = max(trainer.train_buckets, key=len)
        calibrate_folded_batchnorm(trainer.model, biggest.images, cfg.optim.batch_size, trainer.rank, trainer.device)
    trainer.resume(state)
    return trainer.fit()


__all__ = ["StopSignals", "TrainInterrupted", "Trainer", "batch_loss", "check_finite",
           "dist_info", "train", "validate", "validate_all"]
