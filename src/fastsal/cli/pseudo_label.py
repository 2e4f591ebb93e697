"""``fastsal pseudo-label``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsal import defaults
from fastsal.cli.options import add_ray_options, add_rerun_options, add_shard_option
from fastsal.cli.render import UsageError
from fastsal.cli.running import batch_summary, ray_run
from fastsal.cli.types import hxw, positive_int, threads, tta_spec


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
    loader, executor = ray_run(args, made, Teacher)  # actors make the teacher again (threads from their CPUs)
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
    return batch_summary(args, done, "label", f"written to {out}", len(rep["failed"]), rep["skipped_existing"],
                          shard=(index, count), rate=f", {rep['seconds'] / done:.2f} s/img" if done else "")


def add_pseudo_label(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--tta", type=tta_spec, default=None, metavar="SPEC",
                   help=f"test-time augmentation: {TTA_HELP} (default: the preset's, else none)")
    p.add_argument("--resolution", type=hxw, default=None, metavar="HxW",
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
    add_shard_option(p)
    add_ray_options(p)
    p.add_argument("--batch-size", type=positive_int, default=4, metavar="N",
                   help="images per teacher pass (default: 4)")
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="inference engine of the teacher's fastsal sources, fp32 (default: auto)")
    p.add_argument("--device", default=defaults.DEVICE, help="cpu (default), cuda or cuda:N (runs on PyTorch)")
    p.add_argument("--threads", type=threads(), default=None, metavar="N", help="CPU threads for the teacher")
    add_rerun_options(p, redo="relabel images already labelled by this teacher",
                      strict="stop with an error at the first unreadable image")
    p.set_defaults(func=_cmd_pseudo_label)
