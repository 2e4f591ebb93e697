"""Training: ``fastsal train`` (:func:`train`), on-the-fly distillation (:mod:`.distill`) and
``fastsal adapt`` (:mod:`.adapt`), all running the one :class:`Trainer`.

Modules: :mod:`.config` (:class:`TrainConfig` and its sections, with the bounds the command line
shares), :mod:`.data` (buckets and the batch sampler), :mod:`.model` (the network and optimiser),
:mod:`.augment`, :mod:`.checkpoint` (``last.pt``), :mod:`.trainer` (the loop). The config loads no
PyTorch (``fastsal --help`` may read its bounds); :class:`Trainer`, :func:`train` and
:class:`TrainInterrupted` load it when first used.
"""
from __future__ import annotations

from typing import Any

from fastsal.training.config import (
    AugmentConfig,
    DataConfig,
    DistillConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    TrainConfig,
    TrainError,
)

_LOOP = ("Trainer", "TrainInterrupted", "train")


def __getattr__(name: str) -> Any:
    if name in _LOOP:  # the loop imports PyTorch: only when asked for
        from fastsal.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'fastsal.training' has no attribute {name!r}")


__all__ = ["AugmentConfig", "DataConfig", "DistillConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "TrainError", "TrainInterrupted", "Trainer", "train"]
