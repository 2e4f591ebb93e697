"""``fastsal export``."""
from __future__ import annotations

import argparse
from pathlib import Path

from fastsal.cli.options import add_model_source
from fastsal.cli.render import UsageError
from fastsal.cli.types import hxw, positive_int


def _cmd_export(args: argparse.Namespace) -> int:
    from fastsal.export import export
    from fastsal.files import check_writable_file
    from fastsal.images import find_images
    from fastsal.models import load_model
    from fastsal.models.registry import weights_for

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
            from fastsal.runtime.build import default_calibration_images

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


def add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32/int8) or TorchScript, with a JSON sidecar",
                       description="Write a model as one file for other runtimes: ONNX (fp32, or int8 calibrated "
                                   "on images), an OpenVINO IR (.xml + .bin) or TorchScript, each with a JSON "
                                   "sidecar (<file>.json) holding the input size, normalisation and "
                                   "post-processing. `fastsal predict --weights FILE` runs the file.")
    add_model_source(p, "model name with shipped weights (default: %(default)s)", "checkpoint file from `fastsal train`")
    p.add_argument("-o", "--out", default=None, help="output file (default: <model>[_int8].onnx / .xml / .pt)")
    p.add_argument("--format", choices=("onnx", "openvino", "torchscript"), default="onnx",
                   help="onnx (default), openvino (IR .xml + .bin) or torchscript")
    p.add_argument("--input-size", type=hxw, default=None, metavar="HxW",
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
    p.add_argument("--calibration-limit", type=positive_int, default=100, metavar="N", help="default: 100")
    p.set_defaults(func=_cmd_export)
