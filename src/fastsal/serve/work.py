"""Where the server's CPU time goes: models loaded once, and a bounded queue of prediction jobs.

The event loop only reads uploads and writes answers; decoding, the network and encoding run on
:data:`WORKERS` threads, so ``/healthz`` and the page keep answering while maps are computed. The
network itself runs one call at a time (:attr:`Jobs.network_lock`): the engines already use every
core for one image, and not all of them allow concurrent calls. A second thread still pays off:
it decodes the next upload and encodes the last answer while the network runs.

The queue is bounded: at most ``queue_size`` requests are admitted at once (waiting or running;
a request is admitted once its whole upload is in memory, so slow uploads hold no slot), and one
more is answered 503 at once rather than piling up memory and latency. Uploads still arriving
share a memory budget (:meth:`Jobs.buffer`) instead. A request
that passes its deadline is answered 503; its job stops at the next step boundary, and its slot
is freed only when its thread really lets go, so the bound holds for the CPU as well.
"""
from __future__ import annotations

import asyncio
import base64
import ctypes
import functools
import io
import logging
import platform
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from fastsal import defaults
from fastsal.files import encode_jpeg, gray_png
from fastsal.images import ImageError, ImageTooLargeError, UnrecognisedImageError, load_image, sniff_format
from fastsal.peaks import fixation_candidates, grid
from fastsal.serve.config import ServeConfig
from fastsal.serve.upload import RequestError
from fastsal.viewing import blend, to_png

#: Threads decoding, predicting and encoding (the network one at a time among them).
WORKERS = defaults.WORKERS
RETRY_AFTER = {"Retry-After": "1"}
_log = logging.getLogger("fastsal.serve")


class Overdue(Exception):
    """The request's deadline passed while its job waited or ran: stop, nobody reads the answer."""


@dataclass(frozen=True)
class Params:
    """What one ``POST /v1/predict`` asks for (validated by the route)."""

    model: str
    output: str = "json"
    map: str = "grid"
    grid: int = 32
    top_k: int = 5
    alpha: float = 0.5


@dataclass
class Answer:
    """A finished job: the body, its media type and the seconds each step took."""

    body: bytes | dict[str, Any]
    media_type: str
    timing: dict[str, float] = field(default_factory=dict)


class Models:
    """Each model's predictor, loaded once per process: the served one at start, others on first use.

    ``load(source)`` makes a predictor (``fastsal.load`` with the server's engine settings); the
    served model's source is what ``--model`` named (a shipped name or a weights file), the others
    are the shipped models, by name.
    """

    def __init__(self, config: ServeConfig, load: Callable[[str], Any]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._loaded: dict[str, Any] = {}
        first = load(config.model)
        self.default = str(first.name)
        self._loaded[self.default] = first
        self._sources = {self.default: config.model}
        from fastsal.models.registry import WEIGHTS

        for name in WEIGHTS:
            self._sources.setdefault(name, name)

    def names(self) -> list[str]:
        """Every model a request may name: the served one first, then the other shipped ones."""
        return list(self._sources)

    def describe(self) -> list[dict[str, Any]]:
        """For ``GET /v1/models``: name, whether it is the default, and settings once loaded."""
        out = []
        for name in self._sources:
            p = self._loaded.get(name)
            entry: dict[str, Any] = {"name": name, "default": name == self.default, "loaded": p is not None}
            if p is not None:
                st = p.settings()
                entry.update({k: st[k] for k in ("input_size", "backend", "precision", "blur_sigma")})
            out.append(entry)
        return out

    def get(self, name: str) -> Any:
        """The predictor for ``name``, loading it the first time (call from a worker thread)."""
        p = self._loaded.get(name)
        if p is not None:
            return p
        if name not in self._sources:
            raise RequestError(422, f"unknown model {name[:60]!r}; choose one of: {', '.join(self._sources)}")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._load(self._sources[name])
            return self._loaded[name]


class Jobs:
    """The bounded queue and the worker threads (see the module docstring)."""

    def __init__(self, config: ServeConfig, models: Models) -> None:
        self.config = config
        self.models = models
        self.capacity = config.queue_size
        self.pending = 0  # admitted and not yet released; touched only on the event loop's thread
        self.buffered = 0  # bytes of uploads being read (not admitted yet); event loop's thread only
        self.network_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="fastsal-serve")

    def check_room(self) -> None:
        """Raise 503 if the queue is full now (before reading an upload that could not be admitted)."""
        if self.pending >= self.capacity:
            raise RequestError(503, f"busy: {self.capacity} requests already queued; retry in a second",
                               RETRY_AFTER)

    def admit(self) -> None:
        """Take a slot, or raise 503 when the queue is full. Called once the whole upload is in
        memory, so a slow upload holds no slot (only its connection, under its deadline)."""
        self.check_room()
        self.pending += 1

    def buffer(self, n: int) -> None:
        """Count ``n`` more bytes held by uploads still being read; 503 past the budget
        (``ServeConfig.upload_buffer_bytes``): memory stays bounded while no slot is held."""
        if self.buffered + n > self.config.upload_buffer_bytes:
            raise RequestError(503, "busy: too many uploads arriving at once; retry in a second", RETRY_AFTER)
        self.buffered += n

    def unbuffer(self, n: int) -> None:
        self.buffered -= n

    def release(self) -> None:
        self.pending -= 1

    async def run(self, data: bytes, params: Params, deadline: float) -> Answer:
        """Run one job on a worker thread; the slot taken by :meth:`admit` is released when the
        thread finishes, even if the request has timed out before."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._pool, self._job, data, params, deadline)
        future.add_done_callback(self._finished)
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, Overdue):
            raise RequestError(503, f"timed out after {self.config.timeout_s:g} s (server busy); retry later",
                               RETRY_AFTER) from None

    def _finished(self, future: asyncio.Future) -> None:
        self.release()
        if not future.cancelled():
            future.exception()  # retrieved: a timed-out job's error is expected, not worth a log line

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- on a worker thread -------------------------------------------------------------------
    def _job(self, data: bytes, params: Params, deadline: float) -> Answer:
        """:meth:`_compute`, then hand freed memory back to the system (see :func:`release_memory`)."""
        try:
            return self._compute(data, params, deadline)
        finally:
            release_memory()

    def _compute(self, data: bytes, params: Params, deadline: float) -> Answer:
        """Decode, predict and encode one upload. Peak memory is about 9 bytes a pixel beyond the
        upload (the decoded image, the float map, its 8-bit rendering), so ``max_pixels`` bounds
        it: the overlay is blended into the decoded image in place and encoded from it, and the
        float map is dropped before the blend."""
        timing: dict[str, float] = {}
        t0 = time.perf_counter()
        _check(deadline)
        kind = sniff_format(data[:16])
        if kind is None:
            raise RequestError(415, "the upload is not a JPEG, PNG, GIF, WebP, BMP or TIFF image "
                                    "(judged by its content, not its name)")
        predictor = self.models.get(params.model)
        stream = io.BytesIO(data)
        stream.name = "image"  # error messages say "image: ...", not "<BytesIO image stream>"
        image = None
        try:
            # the network's input as every entry point makes it (Predictor.read), so an upload gets the
            # map `fastsal predict` gives the file; the overlay also needs every pixel, decoded after
            small, size = predictor.read(stream, max_pixels=self.config.max_pixels)
            x = predictor.preprocess(small, size)
            if params.output == "overlay":
                stream.seek(0)
                image = load_image(stream, max_pixels=self.config.max_pixels)
        except ImageTooLargeError as exc:
            raise RequestError(413, f"{str(exc).split('; ')[0]}; downscale it") from None
        except UnrecognisedImageError:  # a supported type by its first bytes, but damaged beyond them
            raise RequestError(422, f"image: starts like a {kind} file but is not a readable one; re-export it") from None
        except ImageError as exc:
            raise RequestError(422, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a decoder tripped by hostile bytes: the client's 422,
            # logged with its traceback for the operator (a fuzz of 6000 mutated files raised none)
            _log.warning("decoder failed on an upload", exc_info=True)
            raise RequestError(422, f"image: cannot be decoded ({type(exc).__name__}); re-export it") from None
        timing["decode"] = time.perf_counter() - t0
        _check(deadline)
        t1 = time.perf_counter()
        with self.network_lock:
            _check(deadline)
            log_small = predictor.small_log_density(x[None])[0]
        timing["network"] = time.perf_counter() - t1
        _check(deadline)
        t2 = time.perf_counter()
        prob = predictor.postprocess(log_small, size)
        if image is not None:
            values = to_png(prob)
            del prob  # 4 bytes a pixel that the blend does not need
            answer = Answer(encode_jpeg(blend(image, values, params.alpha)), "image/jpeg")
        else:
            answer = self._encode(prob, params, predictor)
        timing["encode"] = time.perf_counter() - t2
        answer.timing = timing
        return answer

    def _encode(self, prob: np.ndarray, params: Params, predictor: Any) -> Answer:
        if params.output == "png":
            return Answer(gray_png(to_png(prob)), "image/png")
        h, w = prob.shape
        body: dict[str, Any] = {
            "model": predictor.name, "width": w, "height": h,
            "settings": {k: v for k, v in predictor.settings().items() if k != "weights_sha256"},
            "candidates": fixation_candidates(prob, params.top_k),
        }
        if params.map == "grid":
            cells = grid(prob, params.grid)
            body["grid"] = {"rows": cells.shape[0], "cols": cells.shape[1],
                            "values": np.round(cells, 7).tolist()}
        elif params.map == "npy":
            buf = io.BytesIO()
            np.save(buf, prob.astype(np.float32, copy=False))
            body["npy"] = base64.b64encode(buf.getvalue()).decode("ascii")
        return Answer(body, "application/json")


def release_memory() -> None:
    """Give freed heap memory back to the system after a job (glibc only; elsewhere nothing).

    A large image's buffers are freed when its job ends, but glibc keeps the freed pages of the
    worker threads' arenas mapped, so a server that once decoded a few 50 MP images would keep
    their peak resident for good; ``malloc_trim(0)`` returns them (cheap next to a job; the
    README's serve section has the figures). The last upload's bytes, freed after its answer is
    sent, go back at the next job's trim."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise Overdue()
