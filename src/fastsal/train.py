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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsal import defaults
from fastsal import files
from fastsal.augment import augment
from fastsal.data.datasets import DatasetError, Sample, dataset_info, load_dataset
from fastsal.densities import log_density_from_file
from fastsal.distill import FIXATIONS_KIND, TEACHER_KIND, DistillError, build_teacher, distill_samples, teacher_views
from fastsal.data.fixations import (
    fixation_density,
    fixation_map,
    rescale_points,
)
from fastsal.errors import FastSalError, first_line
from fastsal.cpu import check_threads
from fastsal.images import fit_input_size, load_rgb, resize_rgb
from fastsal.losses import DISTILLATION_LOSSES, cc, kld, log_density, nss, saliency_loss
from fastsal.models.layers import recalibrate_batchnorm
from fastsal.models.mobilenetv2 import TFLiteError, is_tflite
from fastsal.models.registry import (
    BACKBONES,
    ModelError,
    atomic_save,
    build,
    damaged_tensors,
    full_state_dict,
    list_models,
    postprocess_settings,
    read_checkpoint,
    save_checkpoint,
)
from fastsal.signals import install
from fastsal.tta import TTA, TTAError

# Bounds the command line and TrainConfig share: wide enough for any real run, narrow enough that
# a typo (--epochs 0, --batch-size -8) fails at once instead of after the data is loaded.
EPOCHS_RANGE = (1, 100_000)
BATCH_SIZE_RANGE = (1, 4096)
INPUT_SIDE_RANGE = defaults.INPUT_SIDE_RANGE
THREADS_RANGE = (1, 1024)
# Temporaries in ``out`` older than this are a killed run's leftovers (writing one checkpoint
# takes seconds), removed when a run starts.
STALE_TEMPORARY_AGE_S = 60.0
RESUME_FORMAT = "fastsal-train-state/1"
OPTIMIZERS = ("adamw", "sgd")
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
    """One training run. ``data`` names the datasets mixed for training (each ``NAME`` under
    ``data_dir``, or ``NAME=FOLDER``); ``root`` is the folder of a single dataset (``--root``).
    Each dataset's ``val`` split is scored every epoch; the mean of their scores selects ``best.pt``.

    ``input_size`` is the pixel budget: with ``aspect`` each image keeps its aspect at about that
    many pixels (sides multiples of 32; :func:`fastsal.images.fit_input_size`), else it is squashed
    to ``input_size``. The target density's sigma is ``sigma_deg`` degrees of visual angle in each
    dataset's pixels per degree, or ``sigma_px`` pixels at the image's native resolution.

    Knowledge transfer: a ``pseudo=LABELS`` entry of ``data`` brings a teacher's stored densities
    (``fastsal pseudo-label``), learned with ``distill_loss``. ``teacher`` (sources of
    :class:`fastsal.teacher.Teacher`, TTA ``teacher_tta``) turns on on-the-fly distillation
    (:mod:`fastsal.distill`): the teacher labels every augmented view of the ``distill_images``
    folders and ``distill_data`` datasets' train images, ``mixup`` of them blended in pairs.
    ``data`` may then be empty (``fastsal adapt``); without validation data every epoch is kept
    as ``best.pt``.
    """

    model: str = defaults.MODEL
    data: tuple[str, ...] = ("osie",)
    data_dir: str = "../shared/data"
    root: str | None = None
    out: str = "runs/default"
    epochs: int = 20
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 3e-4
    momentum: float = 0.9  # SGD only
    encoder_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    input_size: tuple[int, int] = defaults.INPUT_SIZE
    aspect: bool = True
    sigma_deg: float = defaults.SIGMA_DEG
    sigma_px: float | None = None  # at the dataset's native resolution; overrides sigma_deg
    loss_weights: tuple[float, float, float] = defaults.LOSS_WEIGHTS
    backbone_weights: str | None = "imagenet"
    init: str | None = None  # a fastsal checkpoint to start from (all weights, or the encoder's)
    freeze_encoder: bool = False
    flip: bool = True
    scale_aug: float = 0.0  # random crops keeping >= 1 - scale_aug of each side
    colour_aug: float = 0.0  # brightness / contrast / saturation factors in 1 +- colour_aug
    device: str = defaults.DEVICE
    seed: int = 0
    limit: int | None = None  # use only the first N train/val images of each dataset (smoke tests)
    threads: int | None = None
    teacher: tuple[str, ...] = ()  # on-the-fly distillation: the teacher's sources (or one preset)
    teacher_tta: str | None = None  # e.g. "flip"; None: the preset's, else none
    teacher_backend: str = "torch"
    distill_images: tuple[str, ...] = ()  # folders of unlabelled images the teacher labels
    distill_data: tuple[str, ...] = ()  # NAME[=FOLDER] datasets whose train images the teacher labels
    distill_loss: str = defaults.DISTILL_LOSS  # for pseudo-labels and on-the-fly labels alike
    mixup: float = defaults.MIXUP  # share of teacher-labelled views that blend two images
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
            check_threads(self.threads, error=TrainError)  # and no more than this machine's CPUs can use
        whole("seed", self.seed, 0, None)
        real("lr", self.lr, 0.0, True)
        real("encoder_lr_scale", self.encoder_lr_scale, 0.0, False)
        real("weight_decay", self.weight_decay, 0.0, False)
        real("sigma_deg", self.sigma_deg, 0.0, True)
        if self.sigma_px is not None:
            real("sigma_px", self.sigma_px, 0.0, True)
        real("momentum", self.momentum, 0.0, False)
        for name in ("scale_aug", "colour_aug"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
                raise TrainError(f"{name} must be a number in [0, 1); got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TrainError(f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        for name in ("data", "distill_data"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(p.strip() for p in value.split(",") if p.strip())
            setattr(self, name, tuple(value))
        self.teacher = (self.teacher,) if isinstance(self.teacher, str) else tuple(self.teacher)
        self.distill_images = ((self.distill_images,) if isinstance(self.distill_images, str)
                               else tuple(str(d) for d in self.distill_images))
        distilling = bool(self.distill_images or self.distill_data)
        if not self.data and not (self.teacher and distilling):
            raise TrainError("data names no dataset; pass e.g. --data osie,mit1003 (or --teacher with "
                             "--distill-images)")
        for option, entries in (("--data", self.data), ("--distill-data", self.distill_data)):
            for entry in entries:
                try:
                    dataset_info(entry.split("=", 1)[0])  # unknown names fail here, naming the known ones
                except DatasetError as exc:
                    raise TrainError(f"{option}: {exc}") from None
        if self.teacher and not distilling:
            raise TrainError("--teacher labels images on the fly: pass --distill-images DIR or --distill-data NAME "
                             "(for stored labels use --data pseudo=LABELS)")
        if distilling and not self.teacher:
            raise TrainError("--distill-images / --distill-data need a --teacher to label them")
        if self.distill_loss not in defaults.DISTILL_LOSSES:
            raise TrainError(f"unknown distill_loss {self.distill_loss!r}; choose one of "
                             f"{', '.join(defaults.DISTILL_LOSSES)}")
        if not (isinstance(self.mixup, (int, float)) and 0.0 <= self.mixup <= 1.0):
            raise TrainError(f"mixup must be a share in [0, 1]; got {self.mixup!r}")
        try:
            TTA.parse(self.teacher_tta)
        except TTAError as exc:
            raise TrainError(str(exc)) from None
        if self.root is not None and len(self.data) != 1:
            raise TrainError("--root names the folder of one dataset; with several, pass --data NAME=FOLDER,... "
                             "or --data-dir")
        size = tuple(self.input_size) if isinstance(self.input_size, (tuple, list)) else ()
        lo, hi = INPUT_SIDE_RANGE
        if len(size) != 2 or not all(isinstance(v, int) and lo <= v <= hi for v in size):
            raise TrainError(f"{{option}} must be (height, width) with each side in {lo}..{hi}; got {self.input_size!r}",
                             option="input_size")
        if self.model != "default" and self.model not in list_models():
            raise TrainError(f"unknown model {self.model!r}; choose one of: {', '.join(list_models())}")


def dataset_roots(cfg: TrainConfig) -> list[tuple[str, Path]]:
    """(name, folder) of each dataset in ``cfg.data``: ``NAME=FOLDER``, ``--root`` for a single
    dataset, else ``data_dir/NAME``."""
    out = []
    for entry in cfg.data:
        name, _, folder = entry.partition("=")
        if folder:
            out.append((name, Path(folder)))
        elif cfg.root is not None:
            out.append((name, Path(cfg.root)))
        else:
            out.append((name, Path(cfg.data_dir) / name))
    return out


def load_split(cfg: TrainConfig, split: str) -> list[tuple[str, list[Sample]]]:
    """Each dataset's samples of ``split`` (the first ``cfg.limit`` of each), named."""
    return [(name, load_dataset(name, root, split)[: cfg.limit]) for name, root in dataset_roots(cfg)]


def target_sigma(cfg: TrainConfig, sample: Sample) -> float:
    """The target density's sigma at the sample's native resolution, in pixels."""
    return float(cfg.sigma_px) if cfg.sigma_px is not None else sample.sigma_px(cfg.sigma_deg)


def input_size_for(cfg: TrainConfig, shape: tuple[int, int]) -> tuple[int, int]:
    """The network input for an image of ``shape``: its aspect at the budget, or the budget itself."""
    return fit_input_size(shape, cfg.input_size) if cfg.aspect else tuple(cfg.input_size)


def build_tensors(samples: list[Sample], size: tuple[int, int], sigmas: list[float],
                  kind: str = FIXATIONS_KIND) -> dict[str, Any]:
    """Images (uint8), target densities, binary fixation maps and fixation points at ``size``.

    ``sigmas[i]`` is sample i's density sigma at its native resolution; it is scaled with the
    image, so the target is the same density the metrics score, resampled. The points (at
    ``size``) let augmentation move fixations exactly instead of resampling a binary map.

    ``kind``: ``fixations`` (the above), ``density`` (the target is the sample's stored teacher
    density, resampled; no fixations) or ``teacher`` (images only: the teacher labels each
    augmented view during training, so the density is a shared placeholder of zeros).
    """
    h, w = size
    n = len(samples)
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    dens = np.empty((n, h, w), dtype=np.float32) if kind != TEACHER_KIND else np.zeros((1, h, w), dtype=np.float32)
    fmaps = np.zeros((n, h, w), dtype=bool)
    points = []
    for i, (s, sigma) in enumerate(zip(samples, sigmas)):
        images[i] = resize_rgb(load_rgb(s.image_path), (h, w))
        if kind == FIXATIONS_KIND:
            pts = rescale_points(s.fixations, s.shape, size)
            scale = math.sqrt((h / s.height) * (w / s.width))
            dens[i] = fixation_density(pts, size, sigma * scale)
            fmaps[i] = fixation_map(pts, size)
        else:
            pts = np.zeros((0, 2))
            if kind != TEACHER_KIND:
                try:
                    dens[i] = log_density_from_file(str(s.density_path), size)
                except (OSError, ValueError) as exc:
                    raise TrainError(f"{s.density_path}: not a readable label ({first_line(exc)}); rerun "
                                     "`fastsal pseudo-label` with --overwrite") from None
        points.append(torch.from_numpy(pts.astype(np.float32)))
    density = torch.from_numpy(dens)
    return {
        "images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        "density": density if kind != TEACHER_KIND else density.expand(n, h, w),
        "fixations": torch.from_numpy(fmaps),
        "points": points,
        "kind": kind,
    }


def build_buckets(cfg: TrainConfig, samples: list[Sample], kind: str | None = None) -> list[dict[str, Any]]:
    """Samples grouped by input size (one bucket per aspect class) and kind, each as :func:`build_tensors`.

    A batch is drawn from one bucket, so every image in it keeps its aspect and one loss fits the
    whole batch. The kind is each sample's own (:attr:`Sample.kind`: fixations or a stored
    density), or ``kind`` for all (``teacher``: images labelled on the fly).
    """
    groups: dict[tuple[tuple[int, int], str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((input_size_for(cfg, s.shape), kind or s.kind), []).append(s)
    buckets = []
    for size, k in sorted(groups):
        group = groups[(size, k)]
        bucket = build_tensors(group, size, [target_sigma(cfg, s) for s in group], k)
        bucket["size"] = size
        buckets.append(bucket)
    return buckets


def plan_batches(buckets: list[dict[str, Any]], batch_size: int, generator: torch.Generator) -> list[tuple[int, torch.Tensor]]:
    """One epoch's batches as (bucket index, sample indices), shuffled within and across buckets."""
    batches = []
    for b, bucket in enumerate(buckets):
        order = torch.randperm(len(bucket["images"]), generator=generator)
        batches += [(b, order[i:i + batch_size]) for i in range(0, len(order), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


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
def validate(model: nn.Module, buckets: list[dict[str, Any]], batch_size: int,
             device: torch.device = torch.device("cpu")) -> dict[str, float]:
    """Mean KLD / CC / NSS at the training resolution (model selection; not the reported figures)."""
    model.eval()
    sums = {"kld": 0.0, "cc": 0.0, "nss": 0.0}
    n = 0
    for data in buckets:
        if data.get("kind", FIXATIONS_KIND) != FIXATIONS_KIND:  # NSS needs fixations; labels do not score
            continue
        for i in range(0, len(data["images"]), batch_size):
            logits = model(_to_input(data["images"][i:i + batch_size].to(device)))
            logp = log_density(logits)
            p = logp.exp()
            d = data["density"][i:i + batch_size].to(device)
            f = data["fixations"][i:i + batch_size].to(device)
            sums["kld"] += kld(logp, d).sum().item()
            sums["cc"] += cc(p, d).sum().item()
            sums["nss"] += nss(p, f).sum().item()
            n += len(d)
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["score"] = out["kld"] - out["cc"] - defaults.NSS_WEIGHT * out["nss"]  # lower is better, as the loss
    return out


def validate_all(model: nn.Module, val_sets: list[tuple[str, list[dict[str, Any]]]], batch_size: int,
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


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def batch_loss(net: nn.Module, kind: str, x: torch.Tensor, density: torch.Tensor, fixations: torch.Tensor,
               cfg: TrainConfig, teacher: Any, g: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """The loss of one augmented batch (:func:`augment`'s output) from a bucket of ``kind``.

    Fixation batches: :func:`fastsal.losses.saliency_loss` on the target density and fixations.
    Density batches (stored pseudo-labels) and teacher batches (labelled here, on exactly the views
    the student sees, after mixup: :func:`fastsal.distill.teacher_views`): the distillation loss
    ``cfg.distill_loss``. One function for :func:`train` and for timing a step
    (:func:`fastsal.adapt.seconds_per_image`), so the timed step is the trained one.
    """
    if kind == TEACHER_KIND:
        x, density = teacher_views(x, teacher, cfg.mixup, g)
    out = net(x.to(device))
    if kind == FIXATIONS_KIND:
        return saliency_loss(out, density.to(device), fixations.to(device), cfg.loss_weights)
    return DISTILLATION_LOSSES[cfg.distill_loss](out, density.to(device))


def _check_finite(cfg: TrainConfig, epoch: int, what: str, value: float) -> None:
    """Stop a diverged run (:class:`TrainError`) before anything of this epoch is saved: NaN or inf
    weights would otherwise become ``best.pt`` / ``last.pt`` and a resume would train on them."""
    if not math.isfinite(value):
        raise TrainError(f"training diverged in epoch {epoch + 1}: {what} is {value}; nothing of this epoch was "
                         f"saved; lower --lr (now {cfg.lr:g}) and rerun with --restart")


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
    problem = damaged_tensors(state)
    if problem:
        raise TrainError(f"{path}: damaged resume checkpoint ({problem}); pass --restart to start over "
                         "(or delete the file)")
    previous = state.get("model") or (state["log"].get("config", {}).get("model") if isinstance(state["log"], dict) else None)
    if previous is not None and previous != model_name:
        raise TrainError(f"{path.parent}: holds a {previous!r} run, not --model {model_name}; pass another --out, "
                         f"or --restart to replace it")
    return state


def _build_model(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The model to train: from ``cfg.init`` when given, else with ``cfg.backbone_weights``; and
    the post-processing settings (blur) the saved checkpoints carry over from ``cfg.init``."""
    model, settings = _build_from_init(cfg) if cfg.init else (_build_with_backbone(cfg), {})
    if cfg.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    return model, settings


def _build_from_init(cfg: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """Start from a fastsal checkpoint: all of it for the same model, else its encoder; with its
    post-processing settings (:func:`fastsal.models.registry.postprocess_settings`).

    Taking the encoder of a trained model of the same backbone gives a new decoder variant
    features that already know saliency; the decoder starts fresh.
    """
    try:
        ckpt = read_checkpoint(cfg.init)
        full = full_state_dict(ckpt, Path(cfg.init))  # a decoder-only checkpoint gets its shipped encoder
    except ModelError as exc:
        raise TrainError(f"--init {exc}") from None
    model = build(cfg.model, backbone_weights=None)
    state = {k: v.float() if v.is_floating_point() else v for k, v in full.items()}
    settings = postprocess_settings(ckpt)
    if ckpt["model"] == cfg.model:
        model.load_state_dict(state)
        return model, settings
    ref = model.state_dict()
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.")}
    fits = encoder and all(k in ref and ref[k].shape == v.shape for k, v in encoder.items()) and \
        len(encoder) == sum(k.startswith("encoder.") for k in ref)
    if not fits:
        raise TrainError(f"--init {cfg.init}: a {ckpt['model']!r} checkpoint, whose encoder does not fit {cfg.model}; "
                         "pass a checkpoint of the same backbone")
    model.load_state_dict(encoder, strict=False)
    return model, settings


def _build_with_backbone(cfg: TrainConfig) -> nn.Module:
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


def _calibrate_folded_batchnorm(model: nn.Module, images_u8: torch.Tensor, batch_size: int, rank: int,
                                device: torch.device) -> None:
    """Give the encoder's BNs the statistics of the first training images before epoch 1.

    A TFLite backbone has its BNs folded into the convolutions; :func:`from_tflite` rebuilds them
    as identities, which train mode (batch statistics) would turn into another network at the
    first step. Eval-mode outputs do not change (see :func:`recalibrate_batchnorm`). Every rank
    sees the same images, so data-parallel replicas stay identical.
    """
    images = images_u8[:BN_CALIBRATION_IMAGES]
    batches = (_to_input(images[i:i + batch_size]).to(device) for i in range(0, len(images), batch_size))
    n_bn = recalibrate_batchnorm(model, batches, within=model.encoder)
    if rank == 0:
        print(f"backbone: {n_bn} batch norms folded into the TFLite file re-estimated on {len(images)} training images",
              flush=True)


# size-exception: one linear recipe read top to bottom; issue 21 splits it on its stages
def train(cfg: TrainConfig, *, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on the ``train`` splits of ``cfg.data``, select on their ``val``; returns the log.

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
    try:
        from fastsal.backends import check_device

        device = check_device(cfg.device)
    except FastSalError as exc:
        raise TrainError(f"--device: {exc}") from None
    torch.manual_seed(cfg.seed)  # before building: the initial weights depend on it
    model, carried = _build_model(cfg)
    model = model.to(device)
    try:
        teacher = build_teacher(cfg)  # before the data: a bad --teacher fails in a second
    except DistillError as exc:
        raise TrainError(str(exc)) from None
    groups = param_groups(model, cfg.lr, cfg.encoder_lr_scale, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.AdamW(groups)
    max_lrs = [g["lr"] for g in opt.param_groups]  # this run's --lr, also for a warm restart
    if state is not None:
        try:
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainError(f"{last_path}: does not fit this run ({first_line(exc)[:200]}); pass --restart to start over "
                             "or another --out") from None

    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    t0 = time.time()
    train_sets = load_split(cfg, "train")
    val_sets = load_split(cfg, "val")
    try:
        distilled = distill_samples(cfg)
    except DistillError as exc:
        raise TrainError(str(exc)) from None
    labelled = [s for _, samples in train_sets for s in samples]  # fixations or stored densities
    if distilled:
        train_sets.append(("teacher-labelled", distilled))
    if not labelled and not distilled:
        raise TrainError(f"--data {','.join(cfg.data)}: no training images; check the datasets' splits.json")
    train_b = build_buckets(cfg, labelled) + build_buckets(cfg, distilled, kind=TEACHER_KIND)
    val_b = [(name, build_buckets(cfg, samples)) for name, samples in val_sets if samples]
    prep_s = time.time() - t0
    if rank == 0:
        sizes = ", ".join(f"{b['size'][0]}x{b['size'][1]}{'' if b['kind'] == FIXATIONS_KIND else ' ' + b['kind']}: "
                          f"{len(b['images'])}" for b in train_b)
        print(f"data: {' + '.join(f'{name} {len(s)}' for name, s in train_sets)} train images ({sizes}); "
              f"prepared in {prep_s:.0f}s", flush=True)
    if state is None and cfg.backbone_weights not in (None, "imagenet") and is_tflite(cfg.backbone_weights):
        _calibrate_folded_batchnorm(model, max(train_b, key=lambda b: len(b["images"]))["images"], cfg.batch_size, rank, device)

    # Equal steps on every rank: the batch plan is shared, each rank takes every world-th batch.
    steps_per_epoch = len(plan_batches(train_b, cfg.batch_size, torch.Generator().manual_seed(0))) // world
    steps_per_epoch = max(1, steps_per_epoch)

    def one_cycle(epochs: int) -> torch.optim.lr_scheduler.OneCycleLR:
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lrs,
            total_steps=epochs * steps_per_epoch, pct_start=0.1, anneal_strategy="cos", div_factor=10.0,
            final_div_factor=100.0)

    sched = one_cycle(cfg.epochs)
    log: dict[str, Any] = {"config": asdict(cfg), "epochs": [], "prep_seconds": prep_s}
    if teacher is not None:
        log["teacher"] = teacher.identity()  # the hash of what taught it, as a label manifest records
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
    restore = install(_stop, (signal.SIGINT, signal.SIGTERM))
    try:
        for epoch in range(start_epoch, cfg.epochs):
            stop["epoch"] = epoch + 1
            model.train()
            if cfg.freeze_encoder:
                model.encoder.eval()  # frozen: batch-norm statistics stay those it was trained with
            g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
            plan = plan_batches(train_b, cfg.batch_size, g)[rank::world][:steps_per_epoch]
            t_epoch = time.time()
            by_kind: dict[str, list[float]] = {}  # kind -> [loss sum, images]: the losses differ in scale
            bar = tqdm(plan, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress or rank != 0, leave=False)
            for b, idx in bar:
                bucket = train_b[b]
                x, d, f = augment(_to_input(bucket["images"][idx]), bucket["density"][idx].clone(),
                                  [bucket["points"][i] for i in idx.tolist()], cfg, g)
                loss = batch_loss(net, bucket["kind"], x, d, f, cfg, teacher, g, device)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                value = loss.item()
                _check_finite(cfg, epoch, "the training loss", value)  # before the step spreads it
                opt.step()
                sched.step()
                kind_sum = by_kind.setdefault(bucket["kind"], [0.0, 0])
                kind_sum[0] += value * len(idx)
                kind_sum[1] += len(idx)
                bar.set_postfix(loss=f"{value:.3f}")
                if stop["signum"] is not None:
                    break
            if stop["signum"] is not None:
                raise _interrupted()
            val = validate_all(model, val_b, cfg.batch_size * 2, device) if val_b else {}
            for key in ("kld", "cc", "nss"):
                _check_finite(cfg, epoch, f"the validation {key.upper()}", val.get(key, 0.0))
            total, seen = (sum(v[i] for v in by_kind.values()) for i in (0, 1))
            entry = {"epoch": epoch + 1, "train_loss": total / max(seen, 1), "seconds": time.time() - t_epoch,
                     **{f"val_{k}": v for k, v in val.items()}}
            if len(by_kind) > 1:  # ground truth and teacher densities mixed: each loss on its own
                entry.update({f"train_loss_{k}": v[0] / max(v[1], 1) for k, v in by_kind.items()})
            log["epochs"].append(entry)
            if rank == 0:
                improved = not val or val["score"] < best  # no validation data: the latest epoch is kept
                if improved:
                    best = val["score"] if val else best
                    meta = {"epoch": epoch + 1, **{f"val_{k}": v for k, v in val.items()}, "config": asdict(cfg),
                            **carried}  # maps made as --init's were (its blur)
                    if teacher is not None:
                        meta["teacher"] = log["teacher"]
                    save_checkpoint(model, cfg.model, best_path, meta=meta)
                atomic_save({"format": RESUME_FORMAT, "model": cfg.model, "state_dict": model.state_dict(),
                             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                             "log": log, "best": best}, last_path)
                files.write_json(log, out / "log.json")
                stop["resume_at"] = epoch + 2
                scores = (f"val kld {val['kld']:.4f} cc {val['cc']:.4f} nss {val['nss']:.4f} {'*' if improved else ''}"
                          if val else "(no validation data: best.pt = this epoch)")
                print(f"epoch {epoch + 1}/{cfg.epochs} loss {entry['train_loss']:.4f} {scores} "
                      f"({entry['seconds']:.0f}s)", flush=True)
            if stop["signum"] is not None and epoch + 1 < cfg.epochs:
                stop["resume_at"] = epoch + 2  # also on ranks that do not write (last.pt is rank 0's)
                raise _interrupted()
    finally:
        restore()
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return log
