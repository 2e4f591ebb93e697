"""``fastsal evaluate``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsal import defaults
from fastsal.cli.options import add_engine_options, add_model_source, add_sigma_options
from fastsal.cli.render import UsageError, cli_message
from fastsal.cli.running import load_predictor
from fastsal.cli.types import MAX_INPUT_SIDE, MIN_INPUT_SIDE, hxw, number, tta_spec
from fastsal.errors import FastSalError


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
        from fastsal.data import datasets as D

        if args.max_pixels is not None:
            images.set_max_pixels(args.max_pixels)
        samples = D.load_dataset(args.dataset, args.root, args.split)[: args.limit]
        train = D.load_dataset(args.dataset, args.root, "train") if args.split != "train" else None
        if args.maps:
            name, source = Path(args.maps).name or "maps", E.maps_from_folder(args.maps, samples)
        elif args.teacher:  # an ensemble with TTA, scored as the maps it labels
            from fastsal.teacher import Teacher

            teacher = Teacher(args.teacher, tta=args.tta, backend=args.backend, device=args.device,
                              threads=args.threads)
            name, source = teacher.name, E.maps_from_teacher(teacher)
        else:
            predictor = load_predictor(args, input_size=args.input_size, blur_sigma=args.blur)
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


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    from fastsal.metrics import METRICS

    max_blur = 50.0

    blur = number(float, 0.0, max_blur, wanted=f"a number of pixels in 0..{max_blur:g}")

    p = sub.add_parser("evaluate", help="score a model or a folder of maps on a dataset split, beside the baselines",
                       description="Score on every standard metric (MIT benchmark conventions), next to the "
                                   "centre bias (fitted on train), uniform and the human gold standard. Maps "
                                   "with NaN, negative values, no signal or another aspect ratio than the "
                                   "image are refused, naming the file.")
    src = add_model_source(p, "model name with shipped weights (default: %(default)s)",
                           "a fastsal checkpoint file, or a file from `fastsal export`", weights_metavar=None)
    src.add_argument("--maps", help="folder of another model's maps (PNG or .npy), named after the images "
                          "(1002.png; Action/001.png for nested names)")
    src.add_argument("--teacher", action="append", metavar="T",
                     help="score a teacher (repeat for an ensemble; see `fastsal pseudo-label --help`): its labels, "
                          "resized to each image as a model's map is")
    p.add_argument("--tta", type=tta_spec, default=None, metavar="SPEC",
                   help="with --teacher: its test-time augmentation (default: the preset's, else none)")
    p.add_argument("--dataset", default="osie", metavar="NAME",
                   help=f"dataset reader: {', '.join(defaults.DATASET_NAMES)} (default: %(default)s)")
    p.add_argument("--root", required=True, help="the dataset's folder, in the layout of its reader (README: Datasets)")
    add_sigma_options(p, deg_help="ground-truth density sigma in degrees of visual angle, in each dataset's own "
                                  "pixels per degree (default: %(default)s, the MIT benchmark convention)",
                      px_help="ground-truth density sigma in image pixels instead")
    p.add_argument("--split", default=defaults.EVAL_SPLIT, choices=defaults.SPLITS)
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=None, help="default: all")
    p.add_argument("--limit", type=number(int, 1), default=None, metavar="N", help="score only the first N images")
    p.add_argument("--no-gold", action="store_true", help="skip the gold standard (the slowest baseline)")
    p.add_argument("--blur", type=blur, default=None, metavar="SIGMA",
                   help=f"override the model's post-processing blur (px at input size, 0..{max_blur:g}; 0 = none)")
    p.add_argument("--input-size", type=hxw, default=None, metavar="HxW",
                   help=f"each side {MIN_INPUT_SIDE}..{MAX_INPUT_SIDE} (default: the size the weights were trained at)")
    p.add_argument("--max-pixels", type=number(int, 1), default=None, metavar="N",
                   help="refuse images larger than N pixels (default: 100000000, or FASTSAL_MAX_PIXELS)")
    add_engine_options(p)
    p.add_argument("--json", help="write the full report (per image too) here")
    p.add_argument("--plot", help="write a PNG grid: image | fixations | ground truth | prediction (needs matplotlib)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_evaluate)
