"""Training data in memory: samples grouped into :class:`Bucket` s of one input size and kind, and
the :class:`BucketBatchSampler` that plans each epoch's batches over them.

Targets are built at the training resolution: fixations are rescaled to it and blurred with the
one-degree Gaussian scaled by the same factor, so the model learns the density the metrics score.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from fastsal.data.datasets import Sample, load_dataset
from fastsal.data.datasets import dataset_roots as roots_of
from fastsal.data.fixations import fixation_density, fixation_map, rescale_points
from fastsal.densities import log_density_from_file
from fastsal.errors import first_line
from fastsal.images import fit_input_size, load_rgb, resize_rgb
from fastsal.training.config import DataConfig, TrainError
from fastsal.training.distill import FIXATIONS_KIND, TEACHER_KIND


@dataclass
class Bucket:
    """Samples of one input ``size`` and one ``kind``, as tensors: a batch is drawn from one bucket,
    so every image in it keeps its aspect and one loss fits the whole batch.

    ``images`` (N, 3, h, w) uint8; ``density`` (N, h, w) target densities (for ``teacher`` buckets a
    shared placeholder of zeros: the teacher labels each view during training); ``fixations`` (N,
    h, w) bool maps; ``points`` the fixations at ``size`` (N tensors of (x, y)), so augmentation
    moves them exactly instead of resampling a binary map.
    """

    images: torch.Tensor
    density: torch.Tensor
    fixations: torch.Tensor
    points: list[torch.Tensor]
    kind: str
    size: tuple[int, int]

    def __len__(self) -> int:
        return len(self.images)


def dataset_roots(data: DataConfig) -> list[tuple[str, Path]]:
    """(name, folder) of each dataset in ``data.data``: ``NAME=FOLDER``, ``root`` for a single
    dataset, else ``data_dir/NAME`` (:func:`fastsal.data.datasets.dataset_roots`)."""
    return roots_of(data.data, data_dir=data.data_dir, root=data.root)


def load_split(data: DataConfig, split: str) -> list[tuple[str, list[Sample]]]:
    """Each dataset's samples of ``split`` (the first ``data.limit`` of each), named."""
    return [(name, load_dataset(name, root, split)[: data.limit]) for name, root in dataset_roots(data)]


def target_sigma(data: DataConfig, sample: Sample) -> float:
    """The target density's sigma at the sample's native resolution, in pixels."""
    return sample.sigma_px(data.sigma_deg, override_px=data.sigma_px)


def input_size_for(data: DataConfig, shape: tuple[int, int]) -> tuple[int, int]:
    """The network input for an image of ``shape``: its aspect at the budget, or the budget itself."""
    return fit_input_size(shape, data.input_size) if data.aspect else (int(data.input_size[0]), int(data.input_size[1]))


def build_bucket(samples: list[Sample], size: tuple[int, int], sigmas: list[float],
                 kind: str = FIXATIONS_KIND) -> Bucket:
    """Images (uint8), target densities, binary fixation maps and fixation points at ``size``.

    ``sigmas[i]`` is sample i's density sigma at its native resolution; it is scaled with the
    image, so the target is the same density the metrics score, resampled. ``kind``:
    ``fixations`` (the above), ``density`` (the target is the sample's stored teacher density,
    resampled; no fixations) or ``teacher`` (images only; see :class:`Bucket`).
    """
    h, w = size
    n = len(samples)
    images = np.empty((n, h, w, 3), dtype=np.uint8)
    dens = np.empty((n, h, w), dtype=np.float32) if kind != TEACHER_KIND else np.zeros((1, h, w), dtype=np.float32)
    fmaps = np.zeros((n, h, w), dtype=bool)
    points = []
    for i, (s, sigma) in enumerate(zip(samples, sigmas)):
        images[i] = resize_rgb(load_rgb(s.image_path), (h, w))
        pts = np.zeros((0, 2))
        if kind == FIXATIONS_KIND:
            pts = rescale_points(s.fixations, s.shape, size)
            scale = math.sqrt((h / s.height) * (w / s.width))
            dens[i] = fixation_density(pts, size, sigma * scale)
            fmaps[i] = fixation_map(pts, size)
        elif kind != TEACHER_KIND:
            try:
                dens[i] = log_density_from_file(str(s.density_path), size)
            except (OSError, ValueError) as exc:
                raise TrainError(f"{s.density_path}: not a readable label ({first_line(exc)}); rerun "
                                 "`fastsal pseudo-label` with --overwrite") from None
        points.append(torch.from_numpy(pts.astype(np.float32)))
    density = torch.from_numpy(dens)
    return Bucket(images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
                  density=density if kind != TEACHER_KIND else density.expand(n, h, w),
                  fixations=torch.from_numpy(fmaps), points=points, kind=kind, size=size)


def build_buckets(data: DataConfig, samples: list[Sample], kind: str | None = None) -> list[Bucket]:
    """Samples grouped by input size (one bucket per aspect class) and kind, each a :class:`Bucket`.

    The kind is each sample's own (:attr:`Sample.kind`: fixations or a stored density), or
    ``kind`` for all (``teacher``: images labelled on the fly).
    """
    groups: dict[tuple[tuple[int, int], str], list[Sample]] = {}
    for s in samples:
        groups.setdefault((input_size_for(data, s.shape), kind or s.kind), []).append(s)
    return [build_bucket(groups[(size, k)], size, [target_sigma(data, s) for s in groups[(size, k)]], k)
            for size, k in sorted(groups)]


@dataclass(frozen=True)
class Batch:
    """One batch of an epoch's plan: ``indices`` into bucket number ``bucket``."""

    bucket: int
    indices: torch.Tensor


class BucketBatchSampler(Sampler[Batch]):
    """Each epoch's batches over buckets of ``sizes`` images: shuffled within and across buckets.

    Data-parallel: every rank draws the same shared plan (same generator seed) and takes every
    ``world``-th batch from its ``rank``, cut to :meth:`__len__` so that every rank makes the same
    number of steps. Iterating uses the generator of :meth:`set_generator` (the epoch's, which the
    training step goes on drawing augmentations from, so a resumed run draws the same numbers).
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, rank: int = 0, world: int = 1) -> None:
        self.sizes = list(sizes)
        self.batch_size = batch_size
        self.rank, self.world = rank, world
        self.generator = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        """Steps per epoch on each rank (at least one)."""
        total = sum(-(-n // self.batch_size) for n in self.sizes)
        return max(1, total // self.world)

    def set_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    def plan(self, generator: torch.Generator) -> list[Batch]:
        """The shared plan of one epoch: every rank's batches."""
        batches = []
        for b, n in enumerate(self.sizes):
            order = torch.randperm(n, generator=generator)
            batches += [Batch(b, order[i:i + self.batch_size]) for i in range(0, len(order), self.batch_size)]
        perm = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in perm]

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.plan(self.generator)[self.rank::self.world][:len(self)])


__all__ = ["Batch", "Bucket", "BucketBatchSampler", "build_bucket", "build_buckets", "dataset_roots",
           "input_size_for", "load_split", "target_sigma"]
