"""On-the-fly distillation: the teacher labels every augmented view the student trains on.

"Patient and consistent" teaching (Beyer et al., *Knowledge distillation: A good teacher is
patient and consistent*, CVPR 2022): teacher and student see the *same* input, which is
augmented aggressively (crops, scales, flips from :func:`fastsal.training.augment.augment`, plus mixup of two
images with a random weight here), and the teacher labels it afresh at every step, for many
epochs. The student then matches the teacher's *function* on a far larger set of inputs than the
images themselves, rather than fixed labels of un-augmented images. No labels are stored.

Images come from folders of unlabelled images (``DistillConfig.distill_images``: a user's own
photos) and from registered datasets' ``train`` images (``DistillConfig.distill_data``; their
fixations are not used). In :func:`fastsal.training.train` they form buckets of kind
:data:`TEACHER_KIND`, drawn like any other; a batch of such a bucket goes through
:func:`teacher_views` and is learned with the distillation loss ``DistillConfig.distill_loss``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fastsal.data.datasets import DatasetError, DatasetWarning, Sample, dataset_roots, image_size, load_dataset
from fastsal.errors import FastSalError

if TYPE_CHECKING:
    from fastsal.training.config import TrainConfig

#: Kinds of training buckets: eye-tracking fixations, stored teacher densities (pseudo-labels),
#: and images the teacher labels at every step.
FIXATIONS_KIND = "fixations"
DENSITY_KIND = "density"
TEACHER_KIND = "teacher"


class DistillError(FastSalError, ValueError):
    """The distillation images or teacher cannot be used; one line naming the option and the fix."""


def build_teacher(cfg: TrainConfig) -> Any:
    """The :class:`fastsal.teacher.Teacher` of ``cfg.distill.teacher`` (with its ``teacher_tta``), or None.

    Loaded on ``cfg.run.device`` with ``cfg.distill.teacher_backend`` (PyTorch by default: mixing
    engines in one training process costs more than it saves).
    """
    distill = cfg.distill
    if not distill.teacher:
        return None
    from fastsal.teacher import Teacher, TeacherError

    try:
        return Teacher(list(distill.teacher), tta=distill.teacher_tta, backend=distill.teacher_backend,
                       device=cfg.run.device, threads=cfg.run.threads)
    except TeacherError as exc:  # the same message, still naming its parameter
        raise DistillError(exc.template, option=exc.option) from None


def distill_samples(cfg: TrainConfig) -> list[Sample]:
    """The images the teacher labels: every image under ``cfg.distill.distill_images`` folders, and
    the ``train`` images of ``cfg.distill.distill_data`` datasets (each source cut to ``cfg.data.limit``).

    An unreadable file in a folder is left out and named in one :class:`DatasetWarning` line (a
    photo folder is not curated data); a missing or empty folder is an error.
    """
    from fastsal.images import find_images

    samples: list[Sample] = []
    limit = cfg.data.limit
    for folder in map(Path, cfg.distill.distill_images):
        if not folder.is_dir():
            raise DistillError(f"{{option}} {folder}: no such folder; pass a folder of images", option="distill_images")
        found = find_images([folder])
        if not found:
            raise DistillError(f"{{option}} {folder}: no images (jpg, png, webp, bmp, tiff, gif) in it",
                               option="distill_images")
        bad, kept = [], []
        for path, rel in found[:limit]:
            try:
                kept.append(Sample(rel.as_posix(), path, *image_size(path), ()))
            except DatasetError:
                bad.append(rel.as_posix())
        if bad:
            warnings.warn(f"{folder}: {len(bad)} unreadable image(s) left out: {', '.join(bad[:5])}"
                          + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""), DatasetWarning, stacklevel=2)
        if not kept:
            raise DistillError(f"{{option}} {folder}: none of its {len(found)} image(s) is readable",
                               option="distill_images")
        samples += kept
    for entry in cfg.distill.distill_data:
        name, root = dataset_roots([entry], data_dir=cfg.data.data_dir)[0]
        try:
            samples += load_dataset(name, root, "train")[:limit]
        except DatasetError as exc:
            raise DistillError("{option}: " + str(exc), option="distill_data") from None
    return samples


def mixup(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each view, with probability ``p``, blended with another view of the batch: w x_i + (1 - w) x_j,
    w uniform in [0, 1]. The teacher labels the blend itself (not a blend of labels), so the
    student learns the teacher's function on images no dataset holds."""
    n = len(x)
    if n < 2 or p <= 0:
        return x
    mixed = torch.rand(n, generator=generator) < p
    weight = torch.where(mixed, torch.rand(n, generator=generator), torch.ones(n))
    partner = (torch.arange(n) + torch.randint(1, n, (n,), generator=generator)) % n  # never itself
    w = weight.to(x.dtype)[:, None, None, None]
    return w * x + (1.0 - w) * x[partner]


def teacher_views(x: torch.Tensor, teacher: Any, p_mixup: float, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Augmented views (N, 3, h, w) in [0, 1] -> (views after mixup, the teacher's densities of them)."""
    x = mixup(x, p_mixup, generator)
    return x, teacher.label_views(x).exp()


__all__ = ["DENSITY_KIND", "DistillError", "FIXATIONS_KIND", "TEACHER_KIND", "build_teacher", "distill_samples",
           "mixup", "teacher_views"]
