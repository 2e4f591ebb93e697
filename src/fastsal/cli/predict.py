"""``fastsal predict``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fastsal import defaults
from fastsal.cli.options import add_batch_size_option, add_engine_options, add_job_options, add_model_source
from fastsal.cli.render import UsageError
from fastsal.cli.running import batch_summary, import_engines, need, predictor_loader, rate_note, ray_run, requested
from fastsal.cli.types import MAX_INPUT_SIDE, MIN_INPUT_SIDE, hxw, nonnegative_int, number, positive_int, threads

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
        import_engines()  # fastsal.predict imports PyTorch
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
        need("cv2", "video", "video input")
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
    ray_loader, executor = ray_run(args, **kw)
    loader = ray_loader or predictor_loader(args, **kw)  # loaded when first needed: not at all for a finished job
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
        jobs, out, formats, loader=loader, request=requested(args, **kw), video_file=out if video_out else None,
        video_options=video_options, shard_info=(index, count), overwrite=args.overwrite, strict=args.strict,
        batch_size=args.batch_size, workers=args.workers, progress=progress, on_skip=on_skip, on_video=video_done,
        executor=executor)
    statuses = []
    if reports["videos"] is not None:
        written, failed, skipped = jobs_summary(reports["videos"])
        if video_out:  # one video: its own progress said it all
            statuses.append(1 if failed and not written and not skipped else 0)
        else:
            statuses.append(batch_summary(args, written, "video", f"written to {out}", failed, skipped))
    if reports["maps"] is not None:
        rep = reports["maps"]
        written, failed, skipped = jobs_summary(rep)
        if len(jobs) == 1 and rep["written"]:  # its map, also when an earlier run already wrote it
            print(rep["written"][0]["outputs"][0])
        statuses.append(batch_summary(args, written, "map", f"written to {out}", failed, skipped,
                                       shard=(index, count), rate=rate_note(written, rep["seconds"])))
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
