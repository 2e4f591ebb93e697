"""``fastsal crop``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsal.cli.options import add_batch_size_option, add_engine_options, add_job_options, add_model_source
from fastsal.cli.render import UsageError
from fastsal.cli.running import batch_summary, import_engines, predictor_loader, rate_note, ray_run, requested
from fastsal.cli.types import aspects, number


def _cmd_crop(args: argparse.Namespace) -> int:
    from fastsal import batch, crop_jobs
    from fastsal.files import check_writable_folder
    from fastsal.images import IMAGE_SUFFIXES

    out = Path(args.out)
    if args.min_scale is not None and args.min_scale > args.scale:
        raise UsageError(f"--min-scale {args.min_scale:g} is larger than --scale {args.scale:g}; pass a smaller one")
    if not args.paths and not args.list:
        import_engines()  # fastsal.predict imports PyTorch
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

    ray_loader, executor = ray_run(args)
    rep = crop_jobs.run(None, jobs, out, args.aspect, args.format, show=args.show, overwrite=args.overwrite,
                       strict=args.strict, batch_size=args.batch_size,
                       progress=not args.quiet and sys.stderr.isatty(),
                       report=crop_jobs.report_path(out, index, count), shard_info=(index, count),
                       on_skip=lambda msg: tqdm.write(f"fastsal: skipped {msg}", file=sys.stderr),
                       scale=args.scale, min_scale=args.min_scale, keep=args.keep,
                       loader=ray_loader or predictor_loader(args), request=requested(args), executor=executor)
    written = sum(1 for e in rep["written"] if not e.get("earlier_run"))
    return batch_summary(args, written, "image", f"cropped into {out}", len(rep["failed"]), rep["skipped_existing"],
                          shard=(index, count), rate=rate_note(written, rep["seconds"]),
                          tail=f"; boxes in {crop_jobs.report_path(out, index, count)}")


def add_crop(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--aspect", type=aspects, default="16:9,1:1,4:5", metavar="W:H,...",
                   help="aspect ratios, comma-separated (default: %(default)s)")
    p.add_argument("--format", choices=("jpg", "png", "json"), default="jpg",
                   help="cropped images as jpg (default) or png, or json: only the boxes in crops.json")
    p.add_argument("--show", action="store_true",
                   help="also write <name>_crops.jpg: the saliency overlay with every crop box drawn")
    p.add_argument("--scale", type=number(float, 0.05, 1.0), default=1.0, metavar="S",
                   help="window side relative to the largest window of the aspect (default: 1 = full height or width)")
    p.add_argument("--min-scale", type=number(float, 0.05, 1.0), default=None, metavar="S",
                   help="allow tighter crops down to this scale: the smallest that keeps --keep of the best "
                        "full-scale crop's predicted attention")
    p.add_argument("--keep", type=number(float, 0.01, 1.0), default=0.9, metavar="F",
                   help="with --min-scale: the share of attention a tighter crop must keep (default: %(default)s)")
    p.add_argument("--list", metavar="FILE", help="text file of image paths, one per line (relative to the file)")
    add_model_source(p, "model with shipped weights (default: the shipped default; see `fastsal models`)",
                     "checkpoint from `fastsal train` or a file from `fastsal export`")
    add_engine_options(p)
    add_batch_size_option(p)
    add_job_options(p, redo="redo images already done", strict="stop with an error at the first unreadable image")
    p.set_defaults(func=_cmd_crop, engines=False)  # imported by the loader, only if a model is needed
