"""The one owner of signal handlers: SIGTERM unwinds like Ctrl-C, and every handler put in place
is put back afterwards.

Why one module: the command line, the job layer, the server's worker supervisor, training and
the Ray connection each need "SIGTERM raises :class:`~fastsal.errors.Terminated` here" or "keep
these handlers as they are"; written four times, each got the main-thread rule or the restore
slightly differently. Python lets only the main thread set handlers, so everything here does
nothing elsewhere (a library call from a worker thread keeps the process's handlers).

This module imports only the standard library and :mod:`fastsal.errors`, so the command line can
use it before it decides whether to load PyTorch.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from fastsal.errors import Terminated

Handler = Any  # a callable(signum, frame), signal.SIG_IGN or signal.SIG_DFL

__all__ = ["handled", "install", "kept", "main_thread", "raise_terminated", "sigterm_raises"]


def main_thread() -> bool:
    """True where handlers may be set (Python allows it in the main thread only)."""
    return threading.current_thread() is threading.main_thread()


def raise_terminated(signum: int, frame: object) -> None:
    """A handler: SIGTERM raises :class:`Terminated` where the program is, to unwind like Ctrl-C."""
    raise Terminated(signum)


def install(handler: Handler, signals: Iterable[int] = (signal.SIGTERM,)) -> Callable[[], None]:
    """Set ``handler`` for ``signals`` and return the undo, which puts the previous handlers back.

    Off the main thread nothing is set and the undo does nothing. A previous handler not set from
    Python (``None``) comes back as the default one, the only one Python can set in its place.
    """
    if not main_thread():
        return lambda: None
    previous = {s: signal.signal(s, handler) for s in signals}

    def restore() -> None:
        for s, old in previous.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
    return restore


@contextmanager
def handled(handler: Handler, signals: Iterable[int] = (signal.SIGTERM,)) -> Iterator[bool]:
    """``handler`` for ``signals`` inside the block (main thread only; yields whether it was set),
    the previous handlers after it, however it ends."""
    restore = install(handler, signals)
    try:
        yield main_thread()
    finally:
        restore()


@contextmanager
def sigterm_raises(once: bool = True) -> Iterator[bool]:
    """SIGTERM raises :class:`Terminated` inside the block (main thread only; yields whether it
    does), so that it unwinds exactly like Ctrl-C: atomic writers remove partial outputs,
    manifests are written. With ``once`` only the first SIGTERM raises: a second one, sent while
    the first is being cleaned up after, cannot break that clean-up."""
    fired: list[int] = []

    def on_sigterm(signum: int, frame: object) -> None:
        if once and fired:
            return
        fired.append(signum)
        raise Terminated(signum)

    with handled(on_sigterm) as active:
        yield active


@contextmanager
def kept(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Whatever the block does to the handlers of ``signals`` (a library that installs its own, as
    ``ray.init`` does) is undone after it; a handler not set from Python cannot be put back and is
    left as the block left it. Main thread only."""
    ours = {s: signal.getsignal(s) for s in signals} if main_thread() else {}
    try:
        yield
    finally:
        for s, handler in ours.items():
            if handler is not None:
                signal.signal(s, handler)
