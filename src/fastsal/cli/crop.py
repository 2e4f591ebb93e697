"""``fastsal crop``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsal import defaults
from fastsal.cli.options import _add_engine_options, _add_ray_options, _add_shard_option
from fastsal.cli.render import UsageError
from fastsal.cli.running import _batch_summary, _import_engines, _predictor_loader, _rate, _ray_run, _request
from fastsal.cli.types import _aspects, _finite_range, _positive_int


def _cmd_crop(args: argparse.Namespace) -> int:
    from fastsal import batch, cropping
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
    rep = cropping.run(None, jobs, out, args.aspect, args.format, show=args.show, overwrite=args.overwrite,
                       strict=args.strict, batch_size=args.batch_size,
                       progress=not args.quiet and sys.stderr.isatty(),
                       report=cropping.report_path(out, index, count), shard_info=(index, count),
                       on_skip=lambda msg: tqdm.write(f"fastsal: skipped {msg}", file=sys.stderr),
                       scale=args.scale, min_scale=args.min_scale, keep=args.keep,
                       loader=ray_loader or _predictor_loader(args), request=_request(args), executor=executor)
    written = sum(1 for e in rep["written"] if not e.get("earlier_run"))
    return _batch_summary(args, written, "image", f"cropped into {out}", len(rep["failed"]), rep["skipped_existing"],
                          shard=(index, count), rate=_rate(written, rep["seconds"]),
                          tail=f"; boxes in {cropping.report_path(out, index, count)}")


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
