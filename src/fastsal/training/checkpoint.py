"""A run's resume checkpoint, ``out/last.pt``: what it holds, how it is read back and refused.

``last.pt`` holds the model, optimiser and scheduler states, the epoch just finished, the log so
far (its ``config`` the flat record of :meth:`fastsal.training.config.TrainConfig.to_flat`) and
the best validation score. Checkpoints written before the training package existed have the same
layout, so they resume unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fastsal.models.registry import atomic_save, damaged_tensors
from fastsal.training.config import TrainError

RESUME_FORMAT = "fastsal-train-state/1"
RESUME_KEYS = ("state_dict", "optimizer", "scheduler", "epoch", "log", "best")


def read_resume_state(path: Path, model_name: str) -> dict[str, Any]:
    """``last.pt`` as a dict, or :class:`TrainError` if it is damaged or holds another model's run.

    Read with weights-only unpickling: the file is ours, but a shared run folder is not a reason
    to execute code from it.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise TrainError(f"{path}: damaged resume checkpoint ({type(exc).__name__}); pass resume=False to start "
                         "over (or delete the file)") from None
    if not isinstance(state, dict) or any(k not in state for k in RESUME_KEYS):
        raise TrainError(f"{path}: not a fastsal resume checkpoint; pass resume=False to start over or another "
                         "{option}", option="out")
    problem = damaged_tensors(state)
    if problem:
        raise TrainError(f"{path}: damaged resume checkpoint ({problem}); pass resume=False to start over "
                         "(or delete the file)")
    log = state["log"]
    previous = state.get("model") or (log.get("config", {}).get("model") if isinstance(log, dict) else None)
    if previous is not None and previous != model_name:
        raise TrainError(f"{path.parent}: holds a {previous!r} run, not {{option}} {model_name}; pass another --out, "
                         "or resume=False to replace it", option="model")
    return state


def write_resume_state(path: Path, model_name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       scheduler: Any, epoch: int, log: dict[str, Any], best: float) -> None:
    """Write ``last.pt`` atomically (a killed run leaves the previous one)."""
    atomic_save({"format": RESUME_FORMAT, "model": model_name, "state_dict": model.state_dict(),
                 "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "epoch": epoch,
                 "log": log, "best": best}, path)


__all__ = ["RESUME_FORMAT", "RESUME_KEYS", "read_resume_state", "write_resume_state"]
