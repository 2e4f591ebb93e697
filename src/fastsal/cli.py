"""Command line: ``fastsal <command>``. Each command only parses arguments and calls the library.

Errors the user can fix (bad paths, unknown models, malformed files) print one line starting
with ``fastsal: error:`` and exit with status 2; nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import IO, Callable

from fastsal import __version__


class UsageError(ValueError):
    """An error the user can fix; printed as one line."""


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 192x256, got {text!r}") from None
    if h <= 0 or w <= 0:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def _cmd_train(args: argparse.Namespace) -> int:
    from fastsal.train import TrainConfig, train

    cfg = TrainConfig(
        model=args.model, root=args.root, out=args.out, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, encoder_lr_scale=args.encoder_lr_scale, input_size=args.input_size,
        backbone_weights=None if args.backbone_weights == "none" else args.backbone_weights,
        seed=args.seed, limit=args.limit, threads=args.threads,
    )
    train(cfg, resume=not args.restart, progress=not args.no_progress)
    print(f"best checkpoint: {cfg.out}/best.pt")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on OSIE eye fixations (resumable)",
                       description="Train on the OSIE train split, select on val; checkpoints every epoch. "
                                   "Run under torchrun for data-parallel training.")
    p.add_argument("--model", default="fastsal_a_effnet_lite0", help="model name (see `fastsal models`)")
    p.add_argument("--root", required=True, help="OSIE folder holding stimuli/, eye/fixations.mat, splits.json")
    p.add_argument("--out", default="runs/default", help="output folder for last.pt, best.pt, log.json")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--encoder-lr-scale", type=float, default=0.3)
    p.add_argument("--input-size", type=_size, default=(192, 256), metavar="HxW")
    p.add_argument("--backbone-weights", default="imagenet",
                   help="'imagenet' (packaged EfficientNet-Lite0 weights), a local backbone checkpoint, or 'none'")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="use only the first N images per split (smoke test)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_train)


def _cmd_models(args: argparse.Namespace) -> int:
    from fastsal.models import DEFAULT_MODEL, list_models
    from fastsal.models.registry import SHIPPED

    for name in list_models():
        tags = [t for t, on in (("default", name == DEFAULT_MODEL), ("shipped weights", name in SHIPPED)) if on]
        print(name + (f"  ({', '.join(tags)})" if tags else ""))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model names")
    p.set_defaults(func=_cmd_models)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write via a temporary file in the same folder, then rename (see :mod:`fastsal.files`)."""
    from fastsal.files import atomic_write

    with atomic_write(path) as fh:
        write(fh)


def _output_stems(rels: list[Path]) -> list[Path]:
    """Output path stems mirroring the inputs' relative paths, never two alike.

    ``a/x.jpg`` -> ``a/x``; if ``a/x.jpg`` and ``a/x.png`` both exist they keep their suffix
    (``a/x.jpg``, ``a/x.png``) so neither map overwrites the other; the same relative path under
    two input folders is numbered (``x``, ``x-2``).
    """
    base = [r.with_suffix("") for r in rels]
    counts = Counter(base)
    stems = [r if counts[b] > 1 else b for r, b in zip(rels, base)]
    seen: set[Path] = set()
    result = []
    for stem in stems:
        cand, i = stem, 2
        while cand in seen:
            cand, i = stem.with_name(f"{stem.name}-{i}"), i + 1
        seen.add(cand)
        result.append(cand)
    return result


def _collect_inputs(paths: list[str], out: Path) -> list[tuple[Path, Path]]:
    """Expand PATH arguments; skip folder contents inside OUT (earlier outputs are not inputs)."""
    from fastsal.images import IMAGE_SUFFIXES, find_images

    out_res = out.resolve()
    items: list[tuple[Path, Path]] = []
    for arg in paths:
        p = Path(arg)
        if not p.exists():
            raise UsageError(f"{p}: no such file or folder")
        found = find_images([p])
        if p.is_dir():
            found = [(f, rel) for f, rel in found if not f.resolve().is_relative_to(out_res)]
        items += found
    if not items:
        kinds = "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES)
        raise UsageError(f"no images found in {', '.join(map(str, paths))} (looked for {kinds} files)")
    return items


def _cmd_predict(args: argparse.Namespace) -> int:
    import warnings

    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from fastsal.images import ImageError, load_rgb
    from fastsal.predict import example_image, load, overlay, to_png

    out = Path(args.out)
    paths = args.paths or [str(example_image())]
    items = _collect_inputs(paths, out)
    kw = {"input_size": args.input_size} if args.input_size else {}
    predictor = load(Path(args.weights) if args.weights else args.model, threads=args.threads, **kw)

    formats = ("png", "overlay", "npy") if args.format == "all" else (args.format,)
    stems = _output_stems([rel for _, rel in items])
    written = failed = 0
    last_primary: Path | None = None

    def save(path: Path, write: Callable[[IO[bytes]], None]) -> None:
        try:
            _atomic_write(path, write)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None

    bar = tqdm(total=len(items), unit="img", file=sys.stderr, dynamic_ncols=True,
               disable=args.quiet or not sys.stderr.isatty())
    with warnings.catch_warnings(), bar:
        # PIL warns (e.g. "Truncated File Read") on files that then fail to decode anyway; the
        # one-line skip message says it better.
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        for start in range(0, len(items), args.batch_size):
            good: list[tuple[np.ndarray, Path]] = []
            for (path, _), stem in zip(items[start:start + args.batch_size], stems[start:start + args.batch_size]):
                try:
                    good.append((load_rgb(path), stem))
                except ImageError as exc:
                    if args.strict:
                        raise
                    failed += 1
                    bar.update(1)
                    tqdm.write(f"fastsal: skipped {exc}", file=sys.stderr)
            if not good:
                continue
            maps = predictor.predict_batch([rgb for rgb, _ in good], batch_size=len(good))
            for (rgb, stem), prob in zip(good, maps):
                outputs = []
                if "png" in formats:
                    target = out / stem.with_name(stem.name + ".png")
                    img = Image.fromarray(to_png(prob))
                    save(target, lambda fh, img=img: img.save(fh, format="PNG"))
                    outputs.append(target)
                if "overlay" in formats:
                    target = out / stem.with_name(stem.name + "_overlay.jpg")
                    img = Image.fromarray(overlay(rgb, prob))
                    save(target, lambda fh, img=img: img.save(fh, format="JPEG", quality=90))
                    outputs.append(target)
                if "npy" in formats:
                    target = out / stem.with_name(stem.name + ".npy")
                    save(target, lambda fh, prob=prob: np.save(fh, prob))
                    outputs.append(target)
                written += 1
                last_primary = outputs[0]
                bar.update(1)

    if len(items) == 1 and last_primary is not None:
        print(last_primary)
    if not args.quiet:
        print(f"{written} map{'s' if written != 1 else ''} written to {out} ({failed} failed)", file=sys.stderr)
    return 1 if written == 0 else 0


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="saliency maps for images or folders",
        description="Predict where people look. Writes, for each input, a map at the image's own size: "
                    "OUT/<relative path>.png (min-max scaled for viewing), <name>_overlay.jpg and/or "
                    "<name>.npy (float32 probabilities summing to 1). With no PATH, runs on the bundled "
                    "example image. Unreadable images are reported and skipped (see --strict).",
    )
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="image files or folders (searched recursively for jpg/png/webp/bmp/tiff)")
    p.add_argument("-o", "--out", default="saliency", help="output folder (default: saliency/)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default",
                       help="model with shipped weights (default: the shipped default; see `fastsal models`)")
    which.add_argument("--weights", metavar="FILE", help="checkpoint file from `fastsal train` (e.g. runs/x/best.pt)")
    p.add_argument("--format", choices=("png", "overlay", "npy", "all"), default="png",
                   help="what to write (default: png)")
    p.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                   help="network input size (default: 192x256, the training size)")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="N", help="images per forward pass (default: 8)")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N", help="CPU threads (default: PyTorch's)")
    p.add_argument("--strict", action="store_true", help="stop with an error at the first unreadable image")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=_cmd_predict)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fastsal import evaluate as E

    samples = E.load_dataset(args.dataset, args.root, args.split)[: args.limit]
    train = E.load_dataset(args.dataset, args.root, "train") if args.split != "train" else None
    if args.maps:
        name, source = Path(args.maps).name or "maps", E.maps_from_folder(args.maps, samples)
    else:
        from fastsal.predict import load

        predictor = load(args.weights or args.model, input_size=args.input_size, threads=args.threads,
                         blur_sigma=args.blur)
        name, source = predictor.name, E.maps_from_predictor(predictor)
    baselines = [b for b in E.BASELINES if not (b == "gold_standard" and args.no_gold)]
    try:
        report = E.evaluate(samples, {name: source}, train_samples=train, baselines=baselines,
                            metrics=args.metrics, progress=not args.quiet)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report["config"].update({"dataset": args.dataset, "split": args.split, "source": args.maps or args.weights or args.model})
    print(E.format_table(report))
    if args.json:
        print(f"wrote {E.write_json(report, args.json)}")
    if args.plot:
        print(f"wrote {E.plot_examples(samples, source, args.plot)}")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    from fastsal.metrics import METRICS

    p = sub.add_parser("evaluate", help="score a model or a folder of maps on a dataset split, beside the baselines",
                       description="Score on every standard metric (MIT benchmark conventions), next to the "
                                   "centre bias (fitted on train), uniform and the human gold standard.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default="default", help="model name with shipped weights (default: %(default)s)")
    src.add_argument("--weights", help="a fastsal checkpoint file")
    src.add_argument("--maps", help="folder of another model's maps (PNG or .npy), named after the image stems")
    p.add_argument("--dataset", default="osie", help="dataset reader (default: %(default)s)")
    p.add_argument("--root", required=True, help="dataset folder (OSIE: stimuli/, eye/fixations.mat, splits.json)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=None, help="default: all")
    p.add_argument("--limit", type=int, default=None, help="score only the first N images")
    p.add_argument("--no-gold", action="store_true", help="skip the gold standard (the slowest baseline)")
    p.add_argument("--blur", type=float, default=None, metavar="SIGMA",
                   help="override the model's post-processing blur (px at input size; 0 = none)")
    p.add_argument("--input-size", type=_size, default=(192, 256), metavar="HxW")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", help="write the full report (per image too) here")
    p.add_argument("--plot", help="write a PNG grid: image | fixations | ground truth | prediction")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_export(args: argparse.Namespace) -> int:
    from fastsal.export import export
    from fastsal.images import find_images
    from fastsal.models import load_model
    from fastsal.models.registry import shipped_weights

    ckpt_path = Path(args.weights) if args.weights else shipped_weights(args.model)
    model, meta = load_model(ckpt_path)
    name = model.name
    calib = None
    if args.int8:
        if args.osie_root:
            from fastsal.data.datasets import read_split

            calib = [Path(args.osie_root) / "stimuli" / n for n in read_split(args.osie_root, "train")]
        else:
            calib = [p for p, _ in find_images(args.calibrate or [])]
        if not calib:
            raise UsageError("--int8 needs calibration images: --osie-root ROOT (OSIE train split) or --calibrate PATH...")
        calib = calib[: args.calibration_limit]
    suffix = ".onnx" if args.format == "onnx" else ".pt"
    out = Path(args.out) if args.out else Path(f"{name}{'_int8' if args.int8 else ''}{suffix}")
    path = export(model, name, out, format=args.format, input_size=args.input_size,
                  dynamic_batch=args.dynamic_batch, int8=args.int8, calibration_images=calib,
                  meta=meta)
    print(f"wrote {path} and {path.name}.json")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32/int8) or TorchScript, with a JSON sidecar")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", default="default", help="model name with shipped weights (default: %(default)s)")
    which.add_argument("--weights", metavar="FILE", help="checkpoint file from `fastsal train`")
    p.add_argument("-o", "--out", default=None, help="output file (default: <model>[_int8].onnx / .pt)")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    p.add_argument("--input-size", type=_size, default=(192, 256), metavar="HxW", help="multiples of 32 (default: 192x256)")
    p.add_argument("--dynamic-batch", action="store_true", help="free batch dimension (default: batch 1)")
    p.add_argument("--int8", action="store_true", help="static int8 quantisation (ONNX only; needs calibration images)")
    p.add_argument("--osie-root", metavar="ROOT", help="calibrate on the OSIE train split (stimuli/, splits.json)")
    p.add_argument("--calibrate", nargs="+", metavar="PATH", help="calibration images or folders")
    p.add_argument("--calibration-limit", type=_positive_int, default=200, metavar="N", help="default: 200")
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
    from fastsal.cost import BACKENDS

    p = sub.add_parser("cost", help="parameters, GMACs, file sizes and CPU latency of models")
    p.add_argument("models", nargs="*", default=["fastsal_a", "fastsal_c", "salgan", "deepgaze2"],
                   help="FastSal names (see `fastsal models`) or salgan / deepgaze2 (random weights, for counting)")
    p.add_argument("--input-size", type=_size, default=(192, 256), metavar="HxW")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=["torch"])
    p.add_argument("--no-latency", action="store_true", help="count only (no timing)")
    p.add_argument("--runs", type=_positive_int, default=5)
    p.add_argument("--threads", type=_positive_int, default=None)
    p.add_argument("--json", help="write the rows here")
    p.set_defaults(func=_cmd_cost)


# Each entry adds one subcommand; modules register here, in the order shown by --help.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_predict, _add_evaluate, _add_models, _add_train, _add_export, _add_cost]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsal", description="Fast visual saliency prediction.")
    parser.add_argument("--version", action="version", version=f"fastsal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from fastsal.data.datasets import DatasetError
    from fastsal.export import ExportError
    from fastsal.images import ImageError
    from fastsal.models.registry import ModelError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UsageError, ModelError, DatasetError, ImageError, ExportError, FileNotFoundError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastsal: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fastsal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
