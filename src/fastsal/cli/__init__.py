"""Command line: ``fastsal <command>``. Each command only parses arguments and calls the library.

Errors the user can fix (bad paths, unknown models, malformed files: every
:class:`~fastsal.errors.FastSalError`, and operating-system errors on a named file) print one line
starting with ``fastsal: error:`` and exit with status 2; nothing half-written is left behind.
Anything else is a bug and shows its traceback.

``fastsal --help``, ``--version`` and argument errors import no PyTorch: parsers read
:mod:`fastsal.defaults`, and each command imports what it needs when it runs.

Layout: one module per command or small family (``predict``, ``crop``, ``evaluate``, ``models``
(+ ``cost``), ``train`` (+ ``adapt``), ``pseudo_label``, ``calibrate``, ``export``, ``serve``,
``cache``, ``manifest``), each with ``add_<command>(subparsers)`` and ``_cmd_<command>(args)``;
:mod:`~fastsal.cli.types` (argparse types: one number factory), :mod:`~fastsal.cli.options`
(option groups several commands share), :mod:`~fastsal.cli.running` (loading the model, summary
lines) and :mod:`~fastsal.cli.render` (library errors with their parameter as a flag). A new
command is a module with ``add_<command>`` listed in :data:`COMMANDS`.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Callable, TextIO

from fastsal import __version__
from fastsal.cli.cache import add_cache
from fastsal.cli.calibrate import add_calibrate
from fastsal.cli.crop import add_crop
from fastsal.cli.evaluate import add_evaluate
from fastsal.cli.export import add_export
from fastsal.cli.manifest import add_manifest
from fastsal.cli.models import add_cost, add_models
from fastsal.cli.predict import add_predict
from fastsal.cli.pseudo_label import add_pseudo_label
from fastsal.cli.render import UsageError, cli_message, flag
from fastsal.cli.running import import_engines
from fastsal.cli.serve import add_serve
from fastsal.cli.train import add_adapt, add_train
from fastsal.errors import FastSalError, FastSalWarning, Terminated

__all__ = ["COMMANDS", "UsageError", "build_parser", "cli_message", "entry", "flag", "main"]


# Each entry adds one subcommand; modules register here, in the order shown by --help.
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_predict, add_crop, add_evaluate, add_models, add_train, add_pseudo_label, add_adapt, add_calibrate,
    add_export, add_cost, add_serve, add_cache, add_manifest]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastsal", description="Fast visual saliency prediction.")
    parser.add_argument("--version", action="version", version=f"fastsal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return parser



@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each :class:`~fastsal.errors.FastSalWarning` as one ``fastsal: warning:`` line.

    The library warns (a dataset reader that left images out); Python's default rendering adds
    the file and line of the code that warned, which tells a user nothing. Other warnings are
    shown as usual.
    """
    import warnings

    with warnings.catch_warnings():
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if issubclass(category, FastSalWarning):
                print(f"fastsal: warning: {message}", file=sys.stderr)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _refuse_empty_arguments(args: argparse.Namespace) -> None:
    """No argument may be an empty string: as a path it means the current folder, so an unset
    shell variable (``fastsal predict "$IMAGES" -o out``) would run over the whole working tree."""
    for dest, value in vars(args).items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.strip():
                name = "PATH" if dest == "paths" else f"--{dest.replace('_', '-')}"
                raise UsageError(f"{name} is empty ({v!r}); pass a path or value (an unset shell variable?)")


def main(argv: list[str] | None = None) -> int:
    from fastsal.signals import install, raise_terminated

    restore = install(raise_terminated)  # SIGTERM unwinds like Ctrl-C; main thread only
    try:
        args = build_parser().parse_args(argv)
        _refuse_empty_arguments(args)
        engines = getattr(args, "engines", True)  # `fastsal cache` runs without PyTorch; predict and crop import
        if engines(args) if callable(engines) else engines:  # it when they load a model (a finished job reruns without)
            import_engines()
        with _one_line_warnings():
            return int(args.func(args) or 0)
    except Terminated as exc:
        print(f"fastsal: stopped by {exc.name}; rerun the same command to resume", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fastsal: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except FastSalError as exc:
        msg = cli_message(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"fastsal: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.filename is None:  # not about a file the user named: a bug or the machine, show it all
            raise
        print(f"fastsal: error: {exc.filename}: {exc.strerror or exc}; check the path and its permissions",
              file=sys.stderr)
        return 2
    finally:
        restore()


def entry() -> None:
    """The ``fastsal`` program: :func:`main`, then exit with its status.

    After Ctrl-C or SIGTERM (130, 143) everything is already written and reported, so the process
    ends at once: a signal that landed inside a C extension's import (PyTorch loads for about a
    second) otherwise makes the interpreter re-raise it at shutdown and die by SIGINT (-2)
    instead of exiting 130.
    """
    code = main()
    if code in (130, 143):
        import os

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)

