"""What commands share when they run: loading the model, engine imports, summary lines."""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from fastsal import defaults
from fastsal.cli.render import UsageError
from fastsal.errors import Terminated


def need(module: str, extra: str, what: str) -> None:
    """One line naming the extra to install, before any long work starts."""
    if importlib.util.find_spec(module) is None:
        raise UsageError(f"{what} needs {module}: pip install 'fastsal[{extra}]'")


def load_predictor(args: argparse.Namespace, **kw):
    """``fastsal.load`` from the common options; backend notes printed as ``fastsal: note:`` lines."""
    import warnings

    from fastsal.predict import load
    from fastsal.runtime.engines import EngineNotice as BackendNotice

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BackendNotice)
        predictor = load(**load_kwargs(args, **kw))
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
              f"{st['backend']}, precision {st['precision']}, input {input_rule(h, w, st['aspect'])}, "
              f"blur {st['blur_sigma']:g}, "
              + (f"{predictor.calibration.describe()}, " if predictor.calibration is not None else "")
              + f"device {predictor.device}; CPU {cpu_name()} [{' '.join(cpu_features())}]", file=sys.stderr)
    return predictor


def load_kwargs(args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
    """``fastsal.load``'s keywords from the common options."""
    source = Path(args.weights) if getattr(args, "weights", None) else args.model
    return {"name_or_path": source, "threads": args.threads, "backend": args.backend, "precision": args.precision,
            "device": args.device, "aspect": False if getattr(args, "squash", False) else None,
            "calibrated": not getattr(args, "uncalibrated", False), **kw}


def ray_run(args: argparse.Namespace, made: dict[str, Any] | None = None, factory: Any = None,
            **kw: Any) -> tuple[Callable[[], Any] | None, Any]:
    """(loader, executor) for ``--ray``: a picklable loader actors call, ``factory(**made)``
    (default: ``fastsal.load`` with the model options and ``kw``; threads from their CPUs unless
    --threads), and :class:`fastsal.ray.RayExecutor`; (None, None) without ``--ray``."""
    if not getattr(args, "ray", None):
        return None, None
    from fastsal.ray import ActorLoader, RayExecutor

    loader = ActorLoader(made if made is not None else load_kwargs(args, **kw), factory=factory)
    return loader, RayExecutor(args.ray, actors=args.ray_actors)


def predictor_loader(args: argparse.Namespace, **kw: Any) -> Callable[[], Any]:
    """A callable that loads the predictor (:func:`load_predictor`) on its first call, then keeps it."""
    loaded: list[Any] = []

    def load() -> Any:
        if not loaded:
            import_engines()  # signals held back during the C++ imports, as main() does for other commands
            loaded.append(load_predictor(args, **kw))
        return loaded[0]

    return load


def requested(args: argparse.Namespace, **kw: Any) -> dict[str, Any]:
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


def input_rule(h: int, w: int, aspect: bool) -> str:
    """How images reach the network: a portrait photo does not run at 384x512 when the aspect is kept."""
    if not aspect:
        return f"{h}x{w} (every image resized to it)"
    return f"{h}x{w} pixel budget (each image keeps its aspect, sides multiples of 32)"


def batch_summary(args: argparse.Namespace, done: int, noun: str, where: str, failed: int, skipped: int, *,
                   shard: tuple[int, int] = (0, 1), rate: str = "", tail: str = "") -> int:
    """Print a batch command's one-line summary (unless --quiet) and return its exit status: 1 when
    every assigned item failed, else 0 (an empty or already finished shard is a success)."""
    if not args.quiet:
        index, count = shard
        shard_note = f" [shard {index}/{count}]" if count > 1 else ""
        print(f"{done} {noun}{'s' if done != 1 else ''} {where}{shard_note} ({failed} failed, {skipped} already done"
              f"{rate}){tail}", file=sys.stderr)
    return 1 if failed and not done and not skipped else 0


def rate_note(done: int, seconds: float) -> str:
    """", N img/s" for a summary line, or nothing when nothing was timed."""
    return f", {done / seconds:.1f} img/s" if done and seconds > 0 else ""



def import_engines() -> None:
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
