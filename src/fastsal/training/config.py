"""One training run's settings: :class:`TrainConfig`, made of small sections that validate themselves.

The sections group what belongs together (which model, which data, how to optimise, how to
augment, what teaches it, where it runs), so a reader finds a setting by what it is about and each
section checks its own bounds. :meth:`TrainConfig.from_flat` takes the flat keyword names of the
command line (``lr=``, ``data=``, ...) and :meth:`TrainConfig.to_flat` gives them back: the flat
dict is what checkpoints and ``log.json`` record under ``config`` (the same keys, in the same order,
as before the sections existed), so old checkpoints and readers of ``meta["config"]`` keep working.

Errors name the parameter as data (:class:`~fastsal.errors.FastSalError` ``option=``): the Python
API says ``lr``, the command line ``--lr``.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

from fastsal import defaults
from fastsal.cpu import check_threads
from fastsal.errors import FastSalError

# Bounds the command line and TrainConfig share: wide enough for any real run, narrow enough that
# a typo (--epochs 0, --batch-size -8) fails at once instead of after the data is loaded.
# The bounds have one owner, fastsal.defaults (torch-free: the command line parses by them too).
EPOCHS_RANGE = defaults.EPOCHS_RANGE
BATCH_SIZE_RANGE = defaults.BATCH_SIZE_RANGE
INPUT_SIDE_RANGE = defaults.INPUT_SIDE_RANGE
THREADS_RANGE = defaults.THREADS_RANGE
OPTIMIZERS = ("adamw", "sgd")


class TrainError(FastSalError, ValueError):
    """A training run cannot start or resume; the message names the argument or file and the fix."""


def _whole(name: str, value: Any, lo: int, hi: int | None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if not ok:
        span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise TrainError(f"{{option}} must be a whole number in {span}; got {value!r}", option=name)


def _real(name: str, value: Any, lo: float, strict: bool) -> None:
    ok = isinstance(value, (int, float)) and math.isfinite(value) and (value > lo if strict else value >= lo)
    if not ok:
        raise TrainError(f"{{option}} must be a finite number {'>' if strict else '>='} {lo:g}; got {value!r}",
                         option=name)


def _names(value: Any) -> tuple[str, ...]:
    """``"a,b"`` or a sequence -> a tuple of names (the command line passes one string)."""
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(",") if p.strip())
    return tuple(value)


def _check_dataset_names(option: str, entries: tuple[str, ...]) -> None:
    from fastsal.data.datasets import DatasetError, dataset_info

    for entry in entries:
        try:
            dataset_info(entry.split("=", 1)[0])  # unknown names fail here, naming the known ones
        except DatasetError as exc:
            raise TrainError("{option}: " + str(exc), option=option) from None


@dataclass
class ModelConfig:
    """What is trained: ``model`` from ``init`` (a fastsal checkpoint: all weights, or its encoder)
    or with ``backbone_weights``; ``freeze_encoder`` trains the decoder only."""

    model: str = defaults.MODEL
    init: str | None = None
    backbone_weights: str | None = "imagenet"
    freeze_encoder: bool = False

    def validate(self) -> None:
        from fastsal.models.registry import list_models

        if self.model != "default" and self.model not in list_models():
            raise TrainError(f"unknown {{option}} {self.model!r}; choose one of: {', '.join(list_models())}",
                             option="model")


@dataclass
class DataConfig:
    """What it learns from: ``data`` names the datasets mixed for training (each ``NAME`` under
    ``data_dir``, or ``NAME=FOLDER``); ``root`` is the folder of a single dataset. Each dataset's
    ``val`` split is scored every epoch; the mean of their scores selects ``best.pt``.

    ``input_size`` is the pixel budget: with ``aspect`` each image keeps its aspect at about that
    many pixels (sides multiples of 32; :func:`fastsal.images.fit_input_size`), else it is squashed
    to ``input_size``. The target density's sigma is ``sigma_deg`` degrees of visual angle in each
    dataset's pixels per degree, or ``sigma_px`` pixels at the image's native resolution.
    ``limit``: only the first N train/val images of each dataset (smoke tests).
    """

    data: tuple[str, ...] = ("osie",)
    data_dir: str | None = None
    root: str | None = None
    input_size: tuple[int, int] = defaults.INPUT_SIZE
    aspect: bool = True
    sigma_deg: float = defaults.SIGMA_DEG
    sigma_px: float | None = None  # at the dataset's native resolution; overrides sigma_deg
    limit: int | None = None

    def validate(self) -> None:
        if self.limit is not None:
            _whole("limit", self.limit, 1, None)
        _real("sigma_deg", self.sigma_deg, 0.0, True)
        if self.sigma_px is not None:
            _real("sigma_px", self.sigma_px, 0.0, True)
        self.data = _names(self.data)
        _check_dataset_names("data", self.data)

    def validate_input_size(self) -> None:
        size = tuple(self.input_size) if isinstance(self.input_size, (tuple, list)) else ()
        lo, hi = INPUT_SIDE_RANGE
        if len(size) != 2 or not all(isinstance(v, int) and lo <= v <= hi for v in size):
            raise TrainError(f"{{option}} must be (height, width) with each side in {lo}..{hi}; got {self.input_size!r}",
                             option="input_size")


@dataclass
class OptimConfig:
    """How it learns: ``epochs`` of one-cycle schedule over batches of ``batch_size``, ``optimizer``
    at ``lr`` (the encoder at ``lr * encoder_lr_scale``), the loss's ``loss_weights`` and the ``seed``
    of initial weights and shuffles."""

    epochs: int = 20
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 3e-4
    momentum: float = 0.9  # SGD only
    encoder_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    loss_weights: tuple[float, float, float] = defaults.LOSS_WEIGHTS
    seed: int = 0

    def validate(self) -> None:
        _whole("epochs", self.epochs, *EPOCHS_RANGE)
        _whole("batch_size", self.batch_size, *BATCH_SIZE_RANGE)
        _whole("seed", self.seed, 0, None)
        _real("lr", self.lr, 0.0, True)
        _real("encoder_lr_scale", self.encoder_lr_scale, 0.0, False)
        _real("weight_decay", self.weight_decay, 0.0, False)
        _real("momentum", self.momentum, 0.0, False)
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"unknown {{option}} {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}",
                             option="optimizer")


@dataclass
class AugmentConfig:
    """Training-time augmentation (:func:`fastsal.training.augment.augment`): horizontal ``flip``,
    random crops keeping >= 1 - ``scale_aug`` of each side, brightness / contrast / saturation
    factors in 1 +- ``colour_aug``."""

    flip: bool = True
    scale_aug: float = 0.0
    colour_aug: float = 0.0

    def validate(self) -> None:
        for name in ("scale_aug", "colour_aug"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise TrainError(f"{{option}} must be a number in [0, 1); got {value!r}", option=name)


@dataclass
class DistillConfig:
    """Knowledge transfer. ``teacher`` (sources of :class:`fastsal.teacher.Teacher`, TTA
    ``teacher_tta``) turns on on-the-fly distillation (:mod:`fastsal.training.distill`): the teacher
    labels every augmented view of the ``distill_images`` folders and ``distill_data`` datasets'
    train images, ``mixup`` of them blended in pairs. Stored pseudo-labels (a ``pseudo=LABELS``
    entry of the data) and on-the-fly labels are both learned with ``distill_loss``.
    """

    teacher: tuple[str, ...] = ()  # the teacher's sources (or one preset)
    teacher_tta: str | None = None  # e.g. "flip"; None: the preset's, else none
    teacher_backend: str = "torch"
    distill_images: tuple[str, ...] = ()  # folders of unlabelled images the teacher labels
    distill_data: tuple[str, ...] = ()  # NAME[=FOLDER] datasets whose train images the teacher labels
    distill_loss: str = defaults.DISTILL_LOSS
    mixup: float = defaults.MIXUP  # share of teacher-labelled views that blend two images

    @property
    def distilling(self) -> bool:
        """Whether there are images for a teacher to label."""
        return bool(self.distill_images or self.distill_data)

    def validate(self) -> None:
        from fastsal.tta import TTA, TTAError

        self.distill_data = _names(self.distill_data)
        self.teacher = (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)
        self.distill_images = ((self.distill_images,) if isinstance(self.distill_images, str)
                               else tuple(str(d) for d in self.distill_images))
        _check_dataset_names("distill_data", self.distill_data)
        if self.teacher and not self.distilling:
            raise TrainError("{option} labels images on the fly: also name folders of images or datasets for it to "
                             "label (stored labels are a data entry pseudo=LABELS)", option="teacher")
        if self.distilling and not self.teacher:
            raise TrainError("folders or datasets to distil on need a {option} to label them", option="teacher")
        if self.distill_loss not in defaults.DISTILL_LOSSES:
            raise TrainError(f"unknown {{option}} {self.distill_loss!r}; choose one of "
                             f"{', '.join(defaults.DISTILL_LOSSES)}", option="distill_loss")
        if not (isinstance(self.mixup, (int, float)) and 0.0 <= self.mixup <= 1.0):
            raise TrainError(f"{{option}} must be a share in [0, 1]; got {self.mixup!r}", option="mixup")
        try:
            TTA.parse(self.teacher_tta)
        except TTAError as exc:
            raise TrainError(str(exc)) from None


@dataclass
class RunConfig:
    """Where the run writes (``out``: ``last.pt``, ``best.pt``, ``log.json``) and what it runs on."""

    out: str = "runs/default"
    device: str = defaults.DEVICE
    threads: int | None = None

    def validate(self) -> None:
        if self.threads is not None:
            _whole("threads", self.threads, *THREADS_RANGE)
            check_threads(self.threads, error=TrainError)  # and no more than this machine's CPUs can use


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "optim": OptimConfig, "augment": AugmentConfig,
             "distill": DistillConfig, "run": RunConfig}
# The flat names in the order checkpoints and log.json have always recorded them, and their sections.
FLAT_FIELDS: dict[str, str] = {
    "model": "model", "data": "data", "data_dir": "data", "root": "data", "out": "run", "epochs": "optim",
    "batch_size": "optim", "optimizer": "optim", "lr": "optim", "momentum": "optim", "encoder_lr_scale": "optim",
    "weight_decay": "optim", "input_size": "data", "aspect": "data", "sigma_deg": "data", "sigma_px": "data",
    "loss_weights": "optim", "backbone_weights": "model", "init": "model", "freeze_encoder": "model",
    "flip": "augment", "scale_aug": "augment", "colour_aug": "augment", "device": "run", "seed": "optim",
    "limit": "data", "threads": "run", "teacher": "distill", "teacher_tta": "distill", "teacher_backend": "distill",
    "distill_images": "distill", "distill_data": "distill", "distill_loss": "distill", "mixup": "distill",
}


@dataclass
class TrainConfig:
    """One training run, in sections: :class:`ModelConfig` ``model``, :class:`DataConfig` ``data``,
    :class:`OptimConfig` ``optim``, :class:`AugmentConfig` ``augment``, :class:`DistillConfig`
    ``distill`` and :class:`RunConfig` ``run``; ``extra`` is free-form and recorded as is.

    ``data`` may name no dataset when a teacher labels images (``fastsal adapt``); without
    validation data every epoch is kept as ``best.pt``. Built from flat keywords with
    :meth:`from_flat`; validated on construction and again by :func:`fastsal.training.train` (fields
    may change in between).
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    run: RunConfig = field(default_factory=RunConfig)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def from_flat(cls, extra: dict[str, Any] | None = None, **flat: Any) -> TrainConfig:
        """A config from the flat keyword names (``model=``, ``lr=``, ``distill_images=``, ...) the
        command line passes and checkpoints record (:meth:`to_flat`); unknown names are a TypeError."""
        unknown = sorted(set(flat) - set(FLAT_FIELDS))
        if unknown:
            raise TypeError(f"TrainConfig.from_flat() got unexpected keyword arguments: {', '.join(unknown)}")
        parts = {name: section(**{k: v for k, v in flat.items() if FLAT_FIELDS[k] == name})
                 for name, section in _SECTIONS.items()}
        return cls(**parts, extra=dict(extra or {}))

    def to_flat(self) -> dict[str, Any]:
        """The flat ``{name: value}`` record of this run (what ``log.json`` and checkpoints keep under
        ``config``), keys in their historical order, values copied."""
        flat = {name: copy.deepcopy(getattr(getattr(self, section), name)) for name, section in FLAT_FIELDS.items()}
        flat["extra"] = copy.deepcopy(self.extra)
        return flat

    def validate(self) -> None:
        """Raise :class:`TrainError` naming the first setting out of range, section by section, then
        what spans sections."""
        for section in (self.optim, self.run, self.augment, self.data, self.distill):
            section.validate()
        if not self.data.data and not (self.distill.teacher and self.distill.distilling):
            raise TrainError("{option} names no dataset; name at least one, e.g. osie,mit1003 (or a teacher and "
                             "images for it to label)", option="data")
        if self.data.root is not None and len(self.data.data) != 1:
            raise TrainError("{option} names the folder of one dataset; with several, give each as NAME=FOLDER "
                             "or use a folder of datasets", option="root")
        self.data.validate_input_size()
        self.model.validate()


__all__ = ["AugmentConfig", "BATCH_SIZE_RANGE", "DataConfig", "DistillConfig", "EPOCHS_RANGE", "FLAT_FIELDS",
           "INPUT_SIDE_RANGE", "ModelConfig", "OPTIMIZERS", "OptimConfig", "RunConfig", "THREADS_RANGE",
           "TrainConfig", "TrainError"]
