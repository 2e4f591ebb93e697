"""Training on eye fixations: cached data, flip augmentation, checkpoints every epoch, resume, DDP.

Targets are built at the training resolution: fixations are rescaled to it and blurred with the
one-degree Gaussian scaled by the same factor, so the model learns the density the metrics score.
Launch several processes with ``torchrun`` and the loop runs data-parallel (gloo on CPU, NCCL on
GPU); nothing here is cluster-specific.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsal.data.datasets import Sample, load_osie
from fastsal.data.fixations import (
    OSIE_SIGMA_PX,
    fixation_density,
    fixation_map,
    rescale_points,
)
from fastsal.images import load_rgb, resize_rgb
from fastsal.losses import cc, kld, log_density, nss, saliency_loss
from fastsal.models.registry import atomic_save, build, save_checkpoint


@dataclass
class TrainConfig:
    model: str = "fastsal_a_effnet_lite0"
    root: str = "../shared/data/osie"
    out: str = "runs/default"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 3e-4
    encoder_lr_scale: float = 0.3
    weight_decay: float = 1e-4
    input_size: tuple[int, int] = (192, 256)
    sigma_px: float = OSIE_SIGMA_PX  # at the dataset's native resolution
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.1)
    backbone_weights: str | None = "imagenet"
    flip: bool = True
    seed: int = 0
    limit: int | None = None  # use only the first N train/val images (smoke tests)
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


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
    out["score"] = out["kld"] - out["cc"] - 0.1 * out["nss"]  # lower is better, as the loss
    return out


def _dist_info() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world


def train(cfg: TrainConfig, *, resume: bool = True, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on OSIE ``train``, select on ``val``; returns the training log.

    Writes ``last.pt`` (resumable: model, optimiser, scheduler, epoch) and ``best.pt`` (lowest val
    score) under ``cfg.out`` after every epoch, atomically. Ctrl-C stops after the current batch
    with a resumable checkpoint.
    """
    from tqdm import tqdm

    rank, world = _dist_info()
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    train_s = load_osie(cfg.root, "train")[: cfg.limit]
    val_s = load_osie(cfg.root, "val")[: cfg.limit]
    t0 = time.time()
    train_d = build_tensors(train_s, cfg.input_size, cfg.sigma_px)
    val_d = build_tensors(val_s, cfg.input_size, cfg.sigma_px)
    prep_s = time.time() - t0

    model = build(cfg.model, backbone_weights=cfg.backbone_weights)
    opt = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.encoder_lr_scale, cfg.weight_decay))
    n = len(train_s)
    steps_per_epoch = math.ceil(n / (cfg.batch_size * world))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=cfg.epochs * steps_per_epoch,
        pct_start=0.1, anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0)

    log: dict[str, Any] = {"config": asdict(cfg), "epochs": [], "prep_seconds": prep_s}
    start_epoch = 0
    best = math.inf
    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.is_file():
        ckpt = torch.load(last_path, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        start_epoch = ckpt["epoch"] + 1
        log = ckpt["log"]
        best = ckpt["best"]
        if rank == 0:
            print(f"resumed from {last_path} at epoch {start_epoch}")

    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model)

    stop = {"now": False}
    previous = signal.getsignal(signal.SIGINT)

    def _interrupt(signum, frame):  # finish the batch, write a resumable checkpoint, exit
        stop["now"] = True

    signal.signal(signal.SIGINT, _interrupt)
    try:
        for epoch in range(start_epoch, cfg.epochs):
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
                if stop["now"]:
                    break
            if stop["now"]:
                if rank == 0:
                    print(f"interrupted in epoch {epoch + 1}; rerun the same command to resume from epoch {epoch + 1}")
                break
            val = validate(model, val_d, cfg.batch_size * 2)
            entry = {"epoch": epoch + 1, "train_loss": total / len(order), "seconds": time.time() - t_epoch, **{f"val_{k}": v for k, v in val.items()}}
            log["epochs"].append(entry)
            if rank == 0:
                improved = val["score"] < best
                if improved:
                    best = val["score"]
                    save_checkpoint(model, cfg.model, best_path, meta={"epoch": epoch + 1, **{f"val_{k}": v for k, v in val.items()}, "config": asdict(cfg)})
                atomic_save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": epoch, "log": log, "best": best}, last_path)
                (out / "log.json").write_text(json.dumps(log, indent=1))
                print(f"epoch {epoch + 1}/{cfg.epochs} loss {entry['train_loss']:.4f} val kld {val['kld']:.4f} "
                      f"cc {val['cc']:.4f} nss {val['nss']:.4f} {'*' if improved else ''} ({entry['seconds']:.0f}s)", flush=True)
    finally:
        signal.signal(signal.SIGINT, previous)
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
    return log
