"""Training: ``fastsal train`` (:func:`train`), on-the-fly distillation (:mod:`.distill`) and
``fastsal adapt`` (:mod:`.adapt`), all running the one :class:`Trainer`.

Modules: :mod:`.config` (:class:`TrainConfig` and its sections), :mod:`.data` (buckets and the
batch sampler), :mod:`.model` (the network and optimiser), :mod:`.augment`, :mod:`.checkpoint`
(``last.pt``), :mod:`.trainer` (the loop). Importing it loads PyTorch.
"""
from __future__ import annotations

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
from fastsal.training.trainer import Trainer, TrainInterrupted, train

__all__ = ["AugmentConfig", "DataConfig", "DistillConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "TrainError", "TrainInterrupted", "Trainer", "train"]
