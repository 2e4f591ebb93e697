"""``fastsal calibrate``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastsal import defaults
from fastsal.cli.options import add_model_source
from fastsal.cli.render import UsageError, cli_message
from fastsal.cli.types import number, threads
from fastsal.errors import FastSalError


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


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="fit a temperature and centre-bias prior on val; write a calibrated checkpoint",
                       description="Predict the val splits of --data once, fit the density's temperature and a "
                                   "centre-bias prior by the val fixations' log-likelihood (both forms with --form "
                                   "auto, the better kept), print val scores before and after, and write the "
                                   "checkpoint with the calibration in its meta (weights unchanged). Never fits on "
                                   "test. Export the calibrated checkpoint to use it on ONNX Runtime or OpenVINO.")
    add_model_source(p, "model name with shipped weights (default: %(default)s)",
                     "a fastsal checkpoint file (not an export)", weights_metavar=None)
    p.add_argument("--data", default="osie,mit1003,scene", metavar="NAME[=FOLDER],...",
                   help="datasets whose val splits to fit on; a bare NAME is DATA_DIR/NAME (default: %(default)s)")
    p.add_argument("--data-dir", default=defaults.data_dir(), metavar="DIR",
                   help=f"folder holding the datasets named in --data (default: ${defaults.DATA_DIR_ENV})")
    p.add_argument("--form", choices=("auto", "power", "mixture"), default="auto",
                   help="power: p^(1/T) * prior^w; mixture: (1-w) p^(1/T) + w prior; auto: the better on val")
    p.add_argument("-o", "--out", required=True, help="the calibrated checkpoint to write (.pt)")
    p.add_argument("--limit", type=number(int, 1), default=None, metavar="N",
                   help="fit on only the first N val images of each dataset (smoke test)")
    p.add_argument("--backend", choices=(defaults.AUTO, *defaults.ENGINES), default=defaults.AUTO,
                   help="engine for the val predictions (default: %(default)s)")
    p.add_argument("--threads", type=threads(), default=None, metavar="N", help="CPU threads for the network")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_calibrate)
