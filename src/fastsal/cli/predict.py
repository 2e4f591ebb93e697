"""``fastsal predict``."""
from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from fastsal import defaults
from fastsal.cli.options import add_batch_size_option, add_engine_options, add_job_options, add_model_source
from fastsal.cli.render import UsageError
from fastsal.cli.running import batch_summary, import_engines, need, predictor_loader, rate_note, ray_run, requested
from fastsal.cli.types import MAX_INPUT_SIDE, MIN_INPUT_SIDE, hxw, nonnegative_int, number, positive_int, threads


def _cmd_predict(args: argparse.Namespace) -> int:
    from fastsal import batch
    from fastsal.files import check_writable_file, check_writable_folder

    if args.camera is None and not args.paths and not args.list:
        import_engines()  # the bundled example image comes from fastsal.predict, which imports PyTorch
    plan = batch.plan_predict(args.paths, args.out, list_file=args.list, camera=args.camera,
                              shard_text=args.shard)
    if plan.has_video:
        need("cv2", "video", "video input")
    # fail on an unwritable destination now, not after loading the model
    (check_writable_folder if plan.kind == "folder" else check_writable_file)(plan.out, "-o")
    index, count = plan.shard_info
    if plan.camera is None and not plan.jobs:
        print(f"fastsal: shard {index}/{count} has no inputs ({plan.total} inputs split {count} ways); "
              f"nothing to do", file=sys.stderr)
    kw = {"input_size": args.input_size} if args.input_size else {}
    if args.ray and plan.local_only:
        raise UsageError("--ray computes maps of images into a folder; videos, --camera and -o FILE run on this "
                         "machine: drop --ray for them")
    ray_loader, executor = ray_run(args, **kw)
    loader = ray_loader or predictor_loader(args, **kw)  # loaded when first needed: not at all for a finished job
    if plan.kind == "file":
        target, written = batch.predict_file(loader(), plan.paths[0], plan.out, plan.file_format,
                                             overwrite=args.overwrite)
        if not written:
            print(f"fastsal: {target} exists; skipped (--overwrite to redo)", file=sys.stderr)
        print(target)
        return 0
    from tqdm import tqdm

    note = None if args.quiet else plan.codec_note()  # H.264 where this OpenCV writes it; said when it cannot
    if note:
        print(f"fastsal: note: {note}", file=sys.stderr)
    reports = batch.run_plan(
        plan, batch.output_formats(args.format, args.overlay, args.npy), loader=loader,
        video_options={"smoothing": args.smoothing, "max_frames": args.max_frames,
                       "allow_short": args.allow_short_video, "batch_size": args.batch_size},
        on_video=_video_done(args.quiet), request=requested(args, **kw), overwrite=args.overwrite,
        strict=args.strict, batch_size=args.batch_size, workers=args.workers,
        progress=not args.quiet and sys.stderr.isatty(), executor=executor,
        on_skip=lambda msg: tqdm.write(f"fastsal: skipped {msg}", file=sys.stderr))
    return _status(args, plan, reports)


def _video_done(quiet: bool) -> Callable[[Any, dict, bool], None]:
    """What a finished (or earlier) video prints: its file, a short-video warning, its speed."""
    from tqdm import tqdm

    def done(item: Any, entry: dict, earlier: bool) -> None:
        if earlier:
            tqdm.write(f"fastsal: {entry['outputs'][0]} exists; skipped (--overwrite to redo)", file=sys.stderr)
            return
        print(entry["outputs"][0], flush=True)
        frames, expected = entry["frames"], entry["expected"]
        if not entry["complete"]:  # only with --allow-short-video; shown even with -q
            tqdm.write(f"fastsal: warning: {item.key}: decoded only {frames} of the {expected} frames its "
                       f"container states (damaged or truncated); wrote the {frames}", file=sys.stderr)
        if not quiet:
            counts = f"{frames} of {expected}" if expected is not None else f"{frames}"
            stop = f" (stopped by {entry['stopped_by']})" if entry["interrupted"] else ""
            tqdm.write(f"{counts} frames in {entry['seconds']:.1f} s: {entry['fps']:.1f} frames/s{stop}",
                       file=sys.stderr)
    return done


def _status(args: argparse.Namespace, plan: Any, reports: dict[str, Any]) -> int:
    """The summary lines of a predict run and its exit status (see :func:`batch_summary`)."""
    from fastsal.jobs import summary as jobs_summary

    statuses = []
    if reports["videos"] is not None:
        written, failed, skipped = jobs_summary(reports["videos"])
        if plan.kind == "video":  # one video: its own progress said it all
            statuses.append(1 if failed and not written and not skipped else 0)
        else:
            statuses.append(batch_summary(args, written, "video", f"written to {plan.out}", failed, skipped))
    if reports["maps"] is not None:
        rep = reports["maps"]
        written, failed, skipped = jobs_summary(rep)
        if len(plan.jobs) == 1 and rep["written"]:  # its map, also when an earlier run already wrote it
            print(rep["written"][0]["outputs"][0])
        statuses.append(batch_summary(args, written, "map", f"written to {plan.out}", failed, skipped,
                                      shard=plan.shard_info, rate=rate_note(written, rep["seconds"])))
    return min(statuses, default=0)


def add_predict(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--camera", type=nonnegative_int, metavar="INDEX", help="read from a camera (0: the first) until Ctrl-C")
    add_model_source(p, "model with shipped weights (default: the shipped default; see `fastsal models`)",
                     "checkpoint from `fastsal train` (e.g. runs/x/best.pt) or a file from `fastsal export`")
    add_engine_options(p)
    p.add_argument("--format", choices=(*defaults.OUTPUT_FORMATS, "all", "benchmark"), default=defaults.OUTPUT_FORMAT,
                   help="what to write for images (default: png); benchmark: a MIT/Tuebingen saliency benchmark "
                        "submission, OUT/saliency_maps/<name>.jpg and OUT/log_densities/<name>.npy (natural-log "
                        "density) per stimulus; videos: overlay/all blend the map onto the frames, npy/all also "
                        "store the maps")
    p.add_argument("--overlay", action="store_true", help="also write overlays (videos: an overlay video)")
    p.add_argument("--npy", action="store_true", help="also write .npy maps (videos: (T, h, w) at input size)")
    p.add_argument("--smoothing", type=number(float, 0.0, 1.0, below=True), default=0.0, metavar="A",
                   help="videos: temporal smoothing in [0, 1), an EMA of log-densities (default: 0 = off)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="videos/camera: stop after N")
    p.add_argument("--allow-short-video", action="store_true",
                   help="videos: write the frames of a damaged video that decodes to fewer frames than its container "
                        "states, with a warning (default: an error for that video, nothing written, so a rerun "
                        "retries it). Unreadable or damaged videos in a folder are listed in manifest-videos.json "
                        "and skipped (see --strict); SIGTERM removes a file's partial outputs and exits 143")
    p.add_argument("--input-size", type=hxw, default=None, metavar="HxW",
                   help=f"network input size (a pixel budget unless --squash), each side {MIN_INPUT_SIDE}.."
                        f"{MAX_INPUT_SIDE} (default: the size the weights were trained at)")
    add_batch_size_option(p)
    p.add_argument("--workers", type=threads(0), default=defaults.WORKERS, metavar="N",
                   help=f"threads decoding and writing beside the network (default: {defaults.WORKERS}; 0 = none)")
    add_job_options(p, redo="redo inputs whose outputs already exist",
                    strict="stop with an error at the first unreadable image or video")
    p.set_defaults(func=_cmd_predict, engines=False)  # imported by the loader, only if a model is needed
