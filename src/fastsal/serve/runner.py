"""One serving process: the ``fastsal: serving URL`` line and uvicorn on an already bound socket.

Why its own module: the single-process server (:mod:`fastsal.serve.server`) and each worker of a
multi-process one (:mod:`fastsal.serve.workers`) both run this, and the server starts the workers;
kept in either of them, the two would import each other.
"""
from __future__ import annotations

import socket
from typing import Any

from fastsal.serve.config import MAX_HEADER_BYTES, ServeConfig

#: Seconds an idle keep-alive connection is kept after an answer.
KEEP_ALIVE_S = 5


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def announce(config: ServeConfig, sock: socket.socket, model: str, settings: dict[str, Any],
             pids: list[int] | None = None) -> None:
    """Print the ``fastsal: serving URL`` line (scripts and tests read the URL from it)."""
    url = url_of(sock)
    workers = f"; {len(pids)} workers, PIDs {' '.join(map(str, pids))}" if pids else ""
    print(f"fastsal: serving {url} (model {model}, engine {settings.get('backend')}, precision "
          f"{settings.get('precision')}{workers}; API docs at {url}docs); Ctrl-C stops", flush=True)


def run_uvicorn(app: Any, sock: socket.socket, config: ServeConfig, *, access_log: bool) -> None:
    """Serve ``app`` on the bound ``sock`` under uvicorn until Ctrl-C/SIGTERM (then re-raised)."""
    import uvicorn

    from fastsal.serve.protocol import protocol_class

    # No limit_concurrency: uvicorn counts open sockets there, so idle ones would turn every
    # request away; the app limits requests in flight instead (and always answers /healthz).
    uv = uvicorn.Config(
        app, http=protocol_class(config.header_timeout_s), lifespan="on",
        log_level="info" if access_log else "warning", access_log=access_log,
        timeout_keep_alive=KEEP_ALIVE_S, h11_max_incomplete_event_size=MAX_HEADER_BYTES, server_header=False,
    )
    uvicorn.Server(uv).run(sockets=[sock])
