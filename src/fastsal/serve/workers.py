"""``fastsal serve --workers N``: N worker processes accepting on one listening socket.

Why one shared socket (the pre-fork model of gunicorn and of uvicorn's own ``--workers``)
rather than one ``SO_REUSEPORT`` socket per worker: the port is bound once, by this supervisor,
before any model loads, so a taken port is a one-line error in a second and ``--port 0`` gives
every worker the same free port; a worker that dies leaves no accept queue of its own whose
waiting connections the kernel would reset; and ``SO_REUSEPORT`` would let any other process of
the same user bind the port and take a share of the traffic (and does not balance on macOS).

Why not uvicorn's ``workers=``: it re-imports the application from an import string in each
worker, so the settings, the engine options and the ``load`` function would have to travel
through environment variables; it prints the URL before any worker has its model, and
restarts a worker whose model cannot load forever. Here each worker is a ``spawn`` process (no
``fork`` of a process that may hold engine threads) that gets the :class:`ServeConfig`, the
socket and ``load`` pickled, loads its model once, says "ready" on a pipe and runs the same
application and uvicorn protocol as one process does, so every protection (head deadline,
connection cap, request limits, API key, ``/healthz``) holds in each. The first worker starts
alone, so it fills the engine cache that the others then read instead of converting the model
N times at once. The URL is printed once all are ready; a model that fails to load is one
error line; a worker that dies later is replaced (up to :data:`MAX_RESTARTS` a minute).

SIGTERM or Ctrl-C to the supervisor: each worker gets SIGTERM (uvicorn finishes the requests in
flight), and any still alive after the request timeout plus :data:`STOP_GRACE_S` is killed.
Workers run in their own process group, so a terminal's Ctrl-C reaches only the supervisor and
each worker is stopped once; on Linux a worker also gets SIGTERM if the supervisor itself is
killed, so none is left holding the port.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import socket
import sys
import time
from typing import Any, Callable

from fastsal.errors import FastSalError, first_line
from fastsal.serve.config import ServeConfig, ServeError
from fastsal.signals import handled, install, raise_terminated

#: Seconds a worker may take to load its model and say it is ready (a first engine conversion included).
START_TIMEOUT_S = 600.0
#: Workers that may die and be replaced within :data:`RESTART_WINDOW_S` before the server stops.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
#: Seconds past the request timeout that stopping workers get to finish before SIGKILL.
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


def run_workers(config: ServeConfig, sock: socket.socket, *, access_log: bool,
                load: Callable[[str], Any] | None) -> None:
    """Serve on ``sock`` with ``config.workers`` processes until SIGTERM/Ctrl-C (then re-raised)."""
    from fastsal.serve.app import default_loader
    from fastsal.serve.runner import announce

    load = load or default_loader(config)
    try:
        pickle.dumps(load)
    except Exception:  # noqa: BLE001 - pickle raises several types for unpicklable objects
        raise ServeError(f"load: with workers > 1 it must be picklable (a module-level function or a "
                         f"functools.partial of one), got {load!r}") from None
    ctx = multiprocessing.get_context("spawn")
    started: list[Any] = []

    def start(n: int) -> list[tuple[Any, Any]]:
        new = []
        for _ in range(n):
            ours, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker_main, args=(config, sock, access_log, load, theirs, os.getpid()),
                               name="fastsal-serve-worker", daemon=False)
            proc.start()
            theirs.close()
            started.append(proc)
            new.append((proc, ours))
        return new

    restore = _catch_sigterm()
    try:
        first = _await_ready(start(1))
        workers = [first[0][0]] + [proc for proc, _ in _await_ready(start(config.workers - 1))]
        _, model, settings = first[0][1]
        announce(config, sock, model, settings, [p.pid for p in workers])
        _supervise(workers, lambda: _await_ready(start(1))[0][0])
    finally:
        with handled(signal.SIG_IGN, (signal.SIGINT, signal.SIGTERM)):  # a second signal cannot leave them running
            _stop(started, config.timeout_s + STOP_GRACE_S)
        restore()


def _supervise(workers: list[Any], replace: Callable[[], Any]) -> None:
    """Wait for signals; replace a worker that dies, unless too many died lately."""
    deaths: list[float] = []
    while True:
        by_sentinel = {p.sentinel: i for i, p in enumerate(workers)}
        for sentinel in multiprocessing.connection.wait(list(by_sentinel), timeout=1.0):
            i = by_sentinel[sentinel]
            dead = workers[i]
            dead.join()
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < RESTART_WINDOW_S] + [now]
            if len(deaths) > MAX_RESTARTS:
                raise ServeError(f"{len(deaths)} workers died within {RESTART_WINDOW_S:g} s (the last, PID "
                                 f"{dead.pid}, {_how(dead.exitcode)}); see the lines above")
            print(f"fastsal: warning: worker PID {dead.pid} {_how(dead.exitcode)}; starting another",
                  file=sys.stderr, flush=True)
            workers[i] = replace()
            print(f"fastsal: worker PID {workers[i].pid} ready", file=sys.stderr, flush=True)


def _await_ready(new: list[tuple[Any, Any]]) -> list[tuple[Any, tuple]]:
    """Each new worker with its ``("ready", pid, model, settings)`` message, or :class:`ServeError`
    when one reports an error, exits or takes longer than :data:`START_TIMEOUT_S`."""
    deadline = time.monotonic() + START_TIMEOUT_S
    done: dict[int, tuple] = {}
    while len(done) < len(new):
        waiting = [(p, c) for p, c in new if p.pid not in done]
        left = deadline - time.monotonic()
        if left <= 0:
            raise ServeError(f"workers {', '.join(str(p.pid) for p, _ in waiting)} did not load the model within "
                             f"{START_TIMEOUT_S:g} s")
        multiprocessing.connection.wait([c for _, c in waiting] + [p.sentinel for p, _ in waiting], min(left, 1.0))
        for proc, conn in waiting:
            message = None
            try:
                if conn.poll():
                    message = conn.recv()
            except (EOFError, OSError):
                pass
            if message is not None and message[0] == "error":
                raise ServeError(message[1])
            if message is not None:
                done[proc.pid] = message
            elif not proc.is_alive():
                raise ServeError(f"worker PID {proc.pid} {_how(proc.exitcode)} while loading the model; see the "
                                 f"lines above")
    for _, conn in new:
        conn.close()
    return [(p, done[p.pid]) for p, _ in new]


def _worker_main(config: ServeConfig, sock: socket.socket, access_log: bool, load: Callable[[str], Any],
                 conn: Any, parent: int) -> None:
    """One worker: load the model, say ready, serve until SIGTERM."""
    _follow_parent(parent)
    from fastsal.serve.app import create_app
    from fastsal.serve.runner import run_uvicorn

    try:
        app = create_app(config, load=load)
    except FastSalError as exc:
        conn.send(("error", str(exc)))
        sys.exit(1)
    except Exception as exc:
        conn.send(("error", f"worker PID {os.getpid()} could not load the model ({type(exc).__name__}: "
                            f"{first_line(exc)}); see its traceback above"))
        raise
    models = app.state.models
    conn.send(("ready", models.default, models.describe()[0]))
    conn.close()
    try:
        run_uvicorn(app, sock, config, access_log=access_log)
    except KeyboardInterrupt:  # uvicorn finished its requests and passed the SIGTERM on: done
        pass


def _follow_parent(parent: int) -> None:
    """Leave the terminal's process group (Ctrl-C goes to the supervisor, which stops each worker
    once) and, on Linux, get SIGTERM when the supervisor dies, even by SIGKILL."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the supervisor died before the line above
        os._exit(1)


def _stop(processes: list[Any], grace_s: float) -> None:
    """SIGTERM every live worker by PID, wait up to ``grace_s`` in all, then SIGKILL what is left."""
    for proc in processes:
        _signal(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
    for proc in processes:
        if proc.is_alive():
            print(f"fastsal: warning: worker PID {proc.pid} did not stop within {grace_s:g} s; killed",
                  file=sys.stderr)
            _signal(proc, signal.SIGKILL)
            proc.join(10.0)


def _signal(proc: Any, signum: int) -> None:
    if proc.pid is not None and proc.exitcode is None:
        try:
            os.kill(proc.pid, signum)
        except ProcessLookupError:
            pass


def _how(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    return f"exited with code {exitcode}"


def _catch_sigterm() -> Callable[[], None]:
    """Make SIGTERM unwind like Ctrl-C (so the workers are stopped) where nobody handles it yet
    (the Python API; the command line already does); returns the undo."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return lambda: None
    return install(raise_terminated)
