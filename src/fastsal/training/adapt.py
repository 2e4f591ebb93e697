"""``fastsal adapt``: tune a small model to your own photos by distillation from a teacher.

Eye tracking on product photos or a camera's frames is rarely available; the photos are. Adapting
fine-tunes a student (by default the shipped model) on them with on-the-fly distillation
(:mod:`fastsal.training.distill`): at every step the teacher (by default ``default-ensemble``: the shipped
model, here with flips only: :data:`fastsal.defaults.ADAPT_TTA`) labels the augmented, mixed views the student sees, so the student
learns what the stronger, slower teacher would predict on this domain. No fixations are needed and
no labels are stored.

The budget is wall-clock: before training, training steps (teacher labelling and student update)
are timed on these images after an untimed warm-up (engines compile once per run, not per step),
and the number of epochs is what fits in ``budget_min`` minutes (at least
one, at most :data:`fastsal.defaults.ADAPT_MAX_EPOCHS`), unless ``epochs`` is given. The plan is
kept in ``OUT/adapt.json``, so a rerun after Ctrl-C resumes the same schedule.

The result, ``OUT/best.pt``, is a normal fastsal checkpoint: ``fastsal predict --weights
OUT/best.pt``. With no eye tracking there is nothing to select epochs on, so it is the last epoch.
It makes maps as the student did: its post-processing (the blur) is carried over by ``train``'s
``init`` (:func:`fastsal.models.registry.postprocess_settings`), and ``fastsal export`` keeps it.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastsal import defaults, files
from fastsal.errors import FastSalError
from fastsal.training.config import TrainConfig
from fastsal.training.data import build_bucket, input_size_for
from fastsal.training.distill import TEACHER_KIND, DistillError, build_teacher, distill_samples
from fastsal.training.trainer import Trainer, train

PLAN_FILE = "adapt.json"
# Fine-tuning a trained model: a third of training's learning rate, aggressive geometry (the
# teacher labels whatever the crop shows), mild colour changes.
LR = defaults.ADAPT_LR
SCALE_AUG = 0.3
COLOUR_AUG = 0.1


class AdaptError(FastSalError, ValueError):
    """``fastsal adapt`` cannot start; one line naming the option and the fix."""


def student_checkpoint(model: str | Path) -> tuple[str, Path, tuple[int, int], bool]:
    """(model name, checkpoint, input size, aspect) of the student to adapt: a model name with
    shipped weights (``default``) or a checkpoint from ``fastsal train`` / ``fastsal adapt``."""
    from fastsal.models.registry import (
        ALIASES,
        WEIGHTS,
        DamagedCheckpointError,
        ModelError,
        read_checkpoint,
        weights_for,
    )
    from fastsal.predict import training_geometry

    text = str(model)
    if not isinstance(model, Path) and (text in ALIASES or text in WEIGHTS):
        try:
            spec = weights_for(text)
        except ModelError as exc:
            raise AdaptError("{option} " + str(exc), option="model") from None
        return spec.model, spec.path, tuple(spec.input_size), bool(spec.aspect)  # type: ignore[return-value]
    path = Path(text)
    try:
        ckpt = read_checkpoint(path)
    except ModelError as exc:
        hint = ("" if path.is_file() or path.suffix else
                f" (a model name needs shipped weights: {', '.join([*ALIASES, *WEIGHTS])})")
        if isinstance(exc, DamagedCheckpointError):  # a fastsal checkpoint whose tensors fail their checks
            raise AdaptError("{option} " + str(exc), option="model") from None
        raise AdaptError("{option} " + f"{exc}{hint}; adapt trains a checkpoint, not an exported file",
                         option="model") from None
    size, aspect = training_geometry(dict(ckpt.get("meta", {})))
    return str(ckpt["model"]), path, size, aspect


def seconds_per_image(cfg: TrainConfig, teacher: Any, samples: Sequence[Any], batches: int = 2,
                      warmup: int = 1) -> float:
    """Measured seconds per image of one training step (:meth:`Trainer.step`: augmentation, mixup,
    teacher labels, student forward, backward and optimiser step) on the first batch of images,
    with the run's threads and the student in train mode.

    ``warmup`` steps run first and are not timed (engines compile, allocators grow: a cost paid
    once per run, not per step); then ``batches`` steps are timed together and divided by the
    images they saw. Timing the one step after the first instead planned twice the time an
    epoch then took. The trainer is a throw-away copy: timing must not train the real run's start.
    """
    batch = list(samples[: cfg.optim.batch_size])
    size = input_size_for(cfg.data, batch[0].shape)
    bucket = build_bucket(batch, size, [0.0] * len(batch), TEACHER_KIND)  # images only: the teacher labels
    trainer = Trainer(cfg, progress=False, teacher=teacher)
    trainer.model.train()
    g = torch.Generator().manual_seed(cfg.optim.seed)
    indices = torch.arange(len(batch))
    start = 0.0
    for step in range(warmup + max(1, batches)):
        if step == warmup:
            start = time.perf_counter()
        trainer.step(bucket, indices, g)
    return (time.perf_counter() - start) / (max(1, batches) * len(batch))


def adapt(
    images: Sequence[str | Path],
    out: str | Path,
    *,
    teacher: Sequence[str] = (defaults.TEACHER,),
    tta: str | None = defaults.ADAPT_TTA,
    model: str | Path = "default",
    epochs: int | None = None,
    budget_min: float = defaults.ADAPT_BUDGET_MIN,
    batch_size: int = 8,
    lr: float = LR,
    distill_loss: str = defaults.DISTILL_LOSS,
    device: str = defaults.DEVICE,
    threads: int | None = None,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Adapt ``model`` to the photos under ``images`` (folders) into ``out``; returns the training log.

    ``epochs`` overrides the plan that fits ``budget_min`` minutes (see the module docstring).
    ``tta`` is the teacher's (:data:`fastsal.defaults.ADAPT_TTA`; ``None``: the preset's own).
    Errors the user can fix are one line (:class:`AdaptError`, :class:`fastsal.training.TrainError`).
    """
    if not images:
        raise AdaptError("{option}: pass at least one folder of your photos", option="images")
    if not (isinstance(budget_min, (int, float)) and math.isfinite(budget_min) and budget_min > 0):
        raise AdaptError(f"{{option}} must be a positive number of minutes; got {budget_min!r}", option="budget_min")
    name, init, size, aspect = student_checkpoint(model)
    out = Path(out)
    cfg = TrainConfig.from_flat(
        model=name, data=(), out=str(out), epochs=epochs or 1, batch_size=batch_size, lr=lr, input_size=size,
        aspect=aspect, backbone_weights=None, init=str(init), scale_aug=SCALE_AUG, colour_aug=COLOUR_AUG,
        device=device, seed=seed, threads=threads, teacher=tuple(teacher), teacher_tta=tta,
        distill_images=tuple(str(p) for p in images), distill_loss=distill_loss,
    )
    plan_path = out / PLAN_FILE
    plan = _read_plan(plan_path) if resume and (out / "last.pt").is_file() else None
    if epochs is None and plan is not None:
        cfg.optim.epochs = int(plan["epochs"])
    elif epochs is None:
        files.ensure_writable_folder(out, "-o")
        try:
            samples = distill_samples(cfg)
            print(f"adapt: {len(samples)} images; timing two training steps (after one warm-up) to fit the "
                  f"{budget_min:g}-minute budget", flush=True)  # the teacher's first step can take a minute
            if threads:
                torch.set_num_threads(threads)
            spi = seconds_per_image(cfg, build_teacher(cfg), samples)
        except DistillError as exc:  # the same message, still naming its parameter
            raise AdaptError(exc.template, option=exc.option) from None
        fits = int(budget_min * 60.0 / (spi * len(samples)))
        cfg.optim.epochs = max(1, min(defaults.ADAPT_MAX_EPOCHS, fits))
        plan = {"epochs": cfg.optim.epochs, "images": len(samples), "seconds_per_image": round(spi, 4),
                "budget_min": budget_min, "teacher": list(teacher), "tta": tta, "model": name, "init": str(init)}
        files.write_json(plan, plan_path)
        epochs_planned = cfg.optim.epochs
        print(f"adapt: {len(samples)} images, {spi:.2f} s per image and epoch here: {epochs_planned} epoch"
              f"{'s' if epochs_planned != 1 else ''} (~{epochs_planned * spi * len(samples) / 60:.1f} min) in the "
              f"{budget_min:g}-minute budget", flush=True)
    return train(cfg, resume=resume, progress=progress)


def _read_plan(path: Path) -> dict[str, Any] | None:
    try:
        plan = json.loads(path.read_text(encoding="utf-8"))
        int(plan["epochs"])
        return plan
    except (OSError, ValueError, KeyError, TypeError):
        return None


__all__ = ["AdaptError", "COLOUR_AUG", "LR", "PLAN_FILE", "SCALE_AUG", "adapt", "seconds_per_image",
           "student_checkpoint"]
