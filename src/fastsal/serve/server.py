"""Running the application under uvicorn: bind first, then load the model, then serve.

The socket is bound before the model loads, so a taken port or a bad ``--host`` is a one-line
error in a second rather than after a model load; ``--port 0`` takes a free port, and the URL
printed on standard output names the real one (tests and scripts read it from there).
"""
from __future__ import annotations

import errno
import socket
import sys
from typing import Any, Callable

from fastsal.serve.config import ServeConfig, ServeError
from fastsal.serve.runner import announce, run_uvicorn

#: Connections waiting to be accepted (uvicorn's own default).
BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket for ``host:port``, or :class:`ServeError` saying what to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ServeError(f"{{option}} {host}: not an address of this machine; use 127.0.0.1 (default) or 0.0.0.0",
                         option="host") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(f"port {port} on {host} is in use; pass another {{option}} (0 picks a free one)",
                             option="port") from None
        if exc.errno == errno.EACCES:
            raise ServeError(f"port {port} needs more privileges; pass a {{option}} above 1023", option="port") from None
        raise ServeError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another {{option}} or port",
                         option="host") from None
    sock.listen(BACKLOG)  # now: clients that connect as soon as the URL is printed wait instead of being refused
    sock.set_inheritable(True)
    return sock


def serve(config: ServeConfig, *, access_log: bool = True, load: Callable[[str], Any] | None = None) -> None:
    """Bind, load the model (once per process), print ``fastsal: serving URL ...`` and serve until
    Ctrl-C/SIGTERM; with ``config.workers`` > 1, in that many worker processes on the one socket
    (:mod:`fastsal.serve.workers`; ``load`` must then be picklable, and a script that calls this
    must do so under ``if __name__ == "__main__":``, since each worker imports the script again)."""
    sock = bind(config.host, config.port)
    try:
        if not config.loopback and config.api_key is None:
            print(f"fastsal: note: listening on {config.host} without --api-key-file: anyone who can reach this "
                  f"machine can use the server", file=sys.stderr)
        if config.workers > 1:
            from fastsal.serve.workers import run_workers

            run_workers(config, sock, access_log=access_log, load=load)
            return
        from fastsal.serve.app import create_app

        app = create_app(config, load=load)
        announce(config, sock, app.state.models.default, app.state.models.describe()[0])
        run_uvicorn(app, sock, config, access_log=access_log)
    finally:
        sock.close()
