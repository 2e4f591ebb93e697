"""uvicorn's h11 protocol with the two limits it lacks: a deadline for each request head, and a
cap on open connections that sheds idle ones first.

Why: uvicorn arms its keep-alive timer only after a response, so a connection that never sends
a byte, or sends one header line every few seconds, is kept forever; and its
``limit_concurrency`` counts *connections*, so 50 such sockets made every ``/healthz`` and
``/v1/predict`` answer 503. Here a connection must deliver a whole request head within
``head_timeout_s`` of opening (or of its previous answer), or it is closed; requests are limited
by the application (:class:`fastsal.serve.app._Guard`, ``/healthz`` exempt), not by counting
sockets; and past :data:`MAX_CONNECTIONS` the connection that has waited longest for a head is
closed to make room, so idle sockets cannot lock real clients out. The body is the
application's business: it reads it under the request's own deadline (``--timeout``).

Imports uvicorn (and its h11, through it): loaded only by :func:`fastsal.serve.runner.run_uvicorn`.
"""
from __future__ import annotations

import asyncio
import logging
import resource
from typing import Any

from uvicorn.protocols.http import h11_impl
from uvicorn.protocols.http.h11_impl import H11Protocol

#: Most connections open at once (also bounded by half the process's file-descriptor limit).
MAX_CONNECTIONS = 1024
_log = logging.getLogger("fastsal.serve")


def connection_cap() -> int:
    """:data:`MAX_CONNECTIONS`, or half the soft file-descriptor limit if that is lower (models,
    logs and the listening socket need descriptors too)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return MAX_CONNECTIONS if soft == resource.RLIM_INFINITY else max(16, min(MAX_CONNECTIONS, soft // 2))


def protocol_class(head_timeout_s: float, max_connections: int | None = None) -> type[H11Protocol]:
    """An :class:`H11Protocol` subclass closing connections without a whole head within
    ``head_timeout_s`` seconds, and shedding the longest-waiting one past ``max_connections``."""
    cap = connection_cap() if max_connections is None else max_connections

    class HeadDeadlineProtocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._head_timer: asyncio.TimerHandle | None = None
            self._waiting_since = self.loop.time()
            super().connection_made(transport)
            if len(self.connections) > cap:
                _shed(self)
            if not transport.is_closing():
                self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._await_head()

        def _await_head(self) -> None:
            """(Re)start the deadline for the next request head on this connection."""
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._waiting_since = self.loop.time()
            self._head_timer = self.loop.call_later(head_timeout_s, self._head_overdue, self.cycle)

        def _head_overdue(self, cycle: Any) -> None:
            self._head_timer = None
            if self.cycle is cycle and _waiting_for_head(self) and not self.transport.is_closing():
                _log.debug("closed a connection that sent no whole request head in %g s", head_timeout_s)
                self.transport.close()

    return HeadDeadlineProtocol


def _waiting_for_head(p: Any) -> bool:
    """Whether ``p`` has no request in progress: between requests, or its head is incomplete."""
    return p.conn.their_state is h11_impl.h11.IDLE and (p.cycle is None or p.cycle.response_complete)


def _shed(newcomer: Any) -> None:
    """Over the cap: close the connection that has waited longest for a head (the newcomer when
    every other one is busy with a request)."""
    idle = [p for p in newcomer.connections if p is not newcomer and _waiting_for_head(p)
            and not p.transport.is_closing()]
    victim = min(idle, key=lambda p: p._waiting_since) if idle else newcomer
    _log.debug("over %d connections: closed one waiting for a request head", len(newcomer.connections) - 1)
    victim.transport.close()
