"""The web application: one page, a small REST API and its OpenAPI description.

Routes (``/v1/*`` need the key when the server has one; the rest reveal nothing and run nothing):

- ``GET /``: the page (package files, no CDN); ``GET /static/...``: its script and style.
- ``POST /v1/predict``: multipart field ``image`` -> a PNG map, a JPEG overlay or JSON.
- ``GET /v1/models``, ``GET /v1/colormap``, ``GET /healthz``.
- ``GET /docs``: Swagger UI from the installed ``swagger-ui-bundle-v2`` files; ``GET /openapi.json``.

Answers to refused requests are JSON ``{"detail": "one line"}`` with the status saying what kind
of refusal it is (table in the README), so clients can tell "fix your input" (4xx) from "retry
later" (503).
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from fastsal._version import __version__
from fastsal.peaks import MAX_CANDIDATES, MAX_GRID
from fastsal.serve.config import MAX_HEADER_BYTES, ServeConfig
from fastsal.serve.upload import RequestError, check_declared_length, read_field
from fastsal.serve.work import Jobs, Models, Params

STATIC_DIR = Path(__file__).resolve().parent / "static"
FIELD = "image"
_CONNECTION_CLOSE = {"Connection": "close"}  # after refusing a body we did not read
#: Headers a request may have (the bytes they may take: MAX_HEADER_BYTES; uvicorn's h11 lets a head
#: of up to ~64 KB through when it arrives at once, so the app checks both).
MAX_HEADERS = 100
_log = logging.getLogger("fastsal.serve")


# -- documented shapes (for OpenAPI; answers are built directly, not validated, to stay fast) --
class Error(BaseModel):
    detail: str = Field(description="one line saying what is wrong and what to do")


class CandidateOut(BaseModel):
    x: int = Field(description="column in the original image, 0-based, to the right")
    y: int = Field(description="row in the original image, 0-based, down")
    probability: float = Field(description="the map's mass within r of the candidate (r = 5 % of the diagonal)")


class GridOut(BaseModel):
    rows: int
    cols: int
    values: list[list[float]] = Field(description="probability mass per cell, row-major, summing to 1")


class PredictOut(BaseModel):
    model: str
    width: int
    height: int
    settings: dict[str, Any] = Field(description="input size, engine, precision and blur that made the map")
    candidates: list[CandidateOut] = Field(description="top-k fixation candidates, most probable first")
    grid: GridOut | None = Field(None, description="with map=grid (the default)")
    npy: str | None = Field(None, description="with map=npy: base64 of a .npy file, (height, width) float32 "
                                              "summing to 1")
    timing_ms: dict[str, float] = Field(description="upload, queue, decode, network, encode and total")


class ModelOut(BaseModel):
    name: str
    default: bool
    loaded: bool
    input_size: list[int] | None = None
    backend: str | None = None
    precision: str | None = None
    blur_sigma: float | None = None


class ModelsOut(BaseModel):
    default: str
    models: list[ModelOut]


class HealthOut(BaseModel):
    status: Literal["ok"]
    version: str
    model: str
    queue: dict[str, int] = Field(description="pending (admitted, not yet answered) and capacity")
    pid: int = Field(description="the answering process (one of the workers with `fastsal serve --workers N`)")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Error, "description": "malformed multipart body or headers"},
    401: {"model": Error, "description": "missing or wrong API key (servers started with --api-key-file)"},
    408: {"model": Error, "description": "the upload took longer than the request timeout"},
    413: {"model": Error, "description": "upload larger than --max-upload-mb, or more pixels than --max-pixels"},
    415: {"model": Error, "description": "not multipart/form-data, or the content is no supported image"},
    422: {"model": Error, "description": "missing/repeated/empty field, corrupt image, bad parameter"},
    503: {"model": Error, "description": "queue full or request timed out: retry after Retry-After seconds"},
}


class _Guard:
    """Pure ASGI middleware: refuse oversized heads (431), foreign Host headers on a loopback
    server (400) and requests past ``max_requests`` in flight (503; ``/healthz`` is always
    answered, it costs nothing), add safe headers and ``X-Fastsal-Worker`` (the answering PID).

    A page on another site can make a browser send requests to ``127.0.0.1`` under a hostname it
    controls (DNS rebinding) and read the answers; checking the Host header closes that on the
    default, unauthenticated loopback server. ``nosniff`` and a strict Content-Security-Policy
    on the page keep uploaded or returned bytes from ever being run as script.
    """

    _LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1"}
    _PAGE_CSP = (b"default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
                 b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

    def __init__(self, app: Any, loopback_only: bool, max_requests: int) -> None:
        self.app = app
        self.loopback_only = loopback_only
        self.max_requests = max_requests
        self.in_flight = 0
        self.pid = str(os.getpid()).encode()  # which process answered (fastsal serve --workers N)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        if len(headers) > MAX_HEADERS or sum(len(k) + len(v) + 4 for k, v in headers) > MAX_HEADER_BYTES:
            return await _refuse(send, 431, "request headers too large or too many; send fewer or smaller headers",
                                 (b"connection", b"close"))
        if self.loopback_only:
            host = dict(headers).get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.lower() not in self._LOOPBACK_HOSTS:
                return await _refuse(send, 400, "this server only answers requests addressed to 127.0.0.1 or localhost")
        path = scope.get("path", "")
        if self.in_flight >= self.max_requests and path != "/healthz":
            return await _refuse(send, 503, "busy: too many requests in flight; retry in a second",
                                 (b"retry-after", b"1"))

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-fastsal-worker", self.pid)]
                if path == "/" or path.startswith("/static/"):
                    headers.append((b"content-security-policy", self._PAGE_CSP))
                message = {**message, "headers": headers}
            await send(message)

        self.in_flight += 1
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.in_flight -= 1


async def _refuse(send: Callable, status: int, detail: str, *headers: tuple[bytes, bytes]) -> None:
    """Answer ``{"detail": detail}`` with ``status`` straight from the middleware (no route runs)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


def default_loader(config: ServeConfig) -> Callable[[str], Any]:
    """``fastsal.load`` with the server's engine settings: backend, precision, device and the
    threads of one worker (engine notes go to the log). Picklable, so worker processes get it."""
    return functools.partial(_load_with, config)


def _load_with(config: ServeConfig, source: str) -> Any:
    import fastsal

    return fastsal.load(source, backend=config.backend, precision=config.precision, device=config.device,
                        threads=config.worker_threads)


def create_app(config: ServeConfig | None = None, *, load: Callable[[str], Any] | None = None) -> FastAPI:
    """The ASGI application for ``config``; loads the served model now (once per process).

    ``load(source)`` returns a predictor; tests pass fakes, the server passes
    :func:`default_loader`.
    """
    config = config or ServeConfig()
    models = Models(config, load or default_loader(config))
    jobs = Jobs(config, models)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        jobs.close()

    app = FastAPI(
        title="fastsal", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Fixation-density (visual saliency) maps, fast on CPUs. Upload an image to "
                    "`POST /v1/predict`; see the README for limits and status codes.",
    )
    app.state.config, app.state.models, app.state.jobs = config, models, jobs
    app.add_exception_handler(RequestError, _refused)  # type: ignore[arg-type]
    app.include_router(_page_router())
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _mount_docs(app)
    app.include_router(_service_router(models, jobs))
    app.include_router(_maps_router(config, models, jobs, _key_guard(config)))
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["X-API-Key", "Authorization", "Content-Type"],
                           expose_headers=["Server-Timing", "X-Fastsal-Model", "X-Fastsal-Worker"])
    app.add_middleware(_Guard, loopback_only=config.loopback, max_requests=config.max_requests)
    return app


async def _refused(_: Request, exc: RequestError) -> JSONResponse:
    """A refused request's answer: ``{"detail": "one line"}`` with its status and headers."""
    return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)


def _key_guard(config: ServeConfig) -> list[Any]:
    """The dependencies of ``/v1/*`` routes: the API key check when the server has a key, else none."""
    if config.api_key is None:
        return []
    key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's API key")
    bearer = HTTPBearer(auto_error=False, description="the server's API key as a Bearer token")
    expected = config.api_key.encode()

    async def require_key(key: str | None = Security(key_header),
                          token: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        given = key if key is not None else (token.credentials if token is not None else None)
        if given is None or not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            raise RequestError(401, "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                               {"WWW-Authenticate": "Bearer"})

    return [Depends(require_key)]


def _page_router() -> APIRouter:
    """``GET /``: the page (its script and style are the ``/static`` mount)."""
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    return router


def _service_router(models: Models, jobs: Jobs) -> APIRouter:
    """``GET /healthz``: liveness, never behind the key (it reveals nothing and runs nothing)."""
    router = APIRouter()

    @router.get("/healthz", response_model=HealthOut, tags=["service"],
                summary="Liveness: answers while maps are being computed (no key needed)")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "model": models.default,
                "queue": {"pending": jobs.pending, "capacity": jobs.capacity}, "pid": os.getpid()}

    return router


_PREDICT_DESCRIPTION = (
    "Multipart field `image`: a JPEG, PNG, GIF (first frame), WebP, BMP or TIFF file, identified by its "
    "content. `output=json` (default): size, top-k fixation candidates (local maxima of the density "
    "with non-maximum suppression; `probability` is the map's mass within 5 % of the diagonal) and the "
    "map as a coarse grid (`map=grid`, default) or as base64 `.npy` float32 summing to 1 (`map=npy`). "
    "`output=png`: the map as an 8-bit greyscale PNG at the image's size (min-max scaled, as "
    "`fastsal predict` writes it). `output=overlay`: a JPEG of the image blended with the colour map.")


def _maps_router(config: ServeConfig, models: Models, jobs: Jobs, guarded: list[Any]) -> APIRouter:
    """``/v1/models``, ``/v1/colormap`` and ``POST /v1/predict``, each behind ``guarded`` (the key)."""
    router = APIRouter(tags=["maps"], dependencies=guarded)

    @router.get("/v1/models", response_model=ModelsOut,
                summary="Models a request may name (those with weights); the first is the default")
    async def list_models() -> dict[str, Any]:
        return {"default": models.default, "models": models.describe()}

    @router.get("/v1/colormap", summary="The 256 colours (inferno) maps and overlays are drawn with, low to high")
    async def colormap() -> dict[str, Any]:
        import numpy as np

        from fastsal.viewing import colormap as lut

        return {"name": "inferno", "colors": lut(np.arange(256, dtype=np.uint8)).tolist()}

    @router.post(
        "/v1/predict", summary="Saliency map of one uploaded image", description=_PREDICT_DESCRIPTION,
        responses={200: {"model": PredictOut, "content": {"image/png": {}, "image/jpeg": {}}}, **_ERRORS},
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": [FIELD],
            "properties": {FIELD: {"type": "string", "format": "binary", "description": "the image file"}}}}}}},
    )
    async def predict(
        request: Request,
        output: Literal["json", "png", "overlay"] = Query("json", description="what to return"),
        map_format: Literal["grid", "npy", "none"] = Query("grid", alias="map", description="json: how the map is sent"),
        grid: int = Query(32, ge=1, le=MAX_GRID, description="json, map=grid: cells on the long side"),
        top_k: int = Query(5, ge=0, le=MAX_CANDIDATES, description="json: fixation candidates to return"),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay: weight of the colour map"),
        model: str | None = Query(None, description="a name from /v1/models (default: the served model)"),
    ) -> Response:
        name = model or models.default
        params = Params(model=name, output=output, map=map_format, grid=grid, top_k=top_k, alpha=alpha)
        return await _predict(request, params, config, models, jobs)

    return router


async def _predict(request: Request, params: Params, config: ServeConfig, models: Models, jobs: Jobs) -> Response:
    """One ``POST /v1/predict``: checks before the upload is read, the upload, a queue slot, the
    map; the answer carries ``Server-Timing`` (upload, queue and each stage) and the model's name."""
    start = time.monotonic()
    deadline = start + config.timeout_s
    name = params.model
    if name not in models.names():
        raise RequestError(422, f"unknown model {name[:60]!r}; choose one of: {', '.join(models.names())}")
    try:
        check_declared_length(request.headers.get("content-length"), config.max_upload_bytes)
    except RequestError as exc:
        exc.headers.update(_CONNECTION_CLOSE)
        raise
    jobs.check_room()  # a full queue answers 503 before the upload is read, as before
    data = await _read_upload(request, jobs, config)
    if data is None:
        return Response(status_code=400)  # the client is gone: nobody reads this
    jobs.admit()  # a slot only once the whole body is here: slow uploads hold none
    uploaded = time.monotonic()
    answer = await jobs.run(data, params, deadline)
    done = time.monotonic()
    work = sum(answer.timing.values())
    ms = {"upload": uploaded - start, "queue": max(0.0, done - uploaded - work), **answer.timing,
          "total": done - start}
    ms = {k: round(v * 1000.0, 2) for k, v in ms.items()}
    headers = {"Server-Timing": ", ".join(f"{k};dur={v}" for k, v in ms.items()), "X-Fastsal-Model": name}
    if isinstance(answer.body, dict):
        return JSONResponse({**answer.body, "timing_ms": ms}, headers=headers)
    return Response(answer.body, media_type=answer.media_type, headers=headers)


class _HungUp(Exception):
    """The client closed the connection before its upload was complete."""


async def _read_upload(request: Request, jobs: Jobs, config: ServeConfig) -> bytes | None:
    """The image field of ``request``'s body, read within ``config.timeout_s`` and the shared
    upload memory budget (:meth:`Jobs.buffered`), holding no queue slot; None when the client hung
    up (logged as one line: an everyday event, not a server error)."""
    read = 0

    async def counted() -> AsyncIterator[bytes]:  # request.stream(), counted, with hang-ups as _HungUp
        nonlocal read
        more = True
        while more:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                raise _HungUp()
            chunk, more = message.get("body", b""), message.get("more_body", False)
            jobs.buffer(len(chunk))
            read += len(chunk)
            yield chunk

    try:
        return await asyncio.wait_for(
            read_field(counted(), request.headers.get("content-type"), FIELD, config.max_upload_bytes),
            timeout=config.timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the upload took longer than {config.timeout_s:g} s; send it faster or "
                                f"smaller", _CONNECTION_CLOSE) from None
    except RequestError as exc:
        if exc.status in (400, 413, 503):
            exc.headers.update(_CONNECTION_CLOSE)
        raise
    except _HungUp:
        client = request.client
        who = f"{client.host}:{client.port}" if client else "a client"
        _log.warning("%s hung up during the upload after %d bytes; request dropped", who, read)
        return None
    finally:
        jobs.unbuffer(read)


def _mount_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from local package files (FastAPI's own page loads it from a CDN,
    which a closed network cannot reach)."""
    from fastapi.openapi.docs import get_swagger_ui_html

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the [serve] extra installs it; without it, point at the spec
        swagger_ui_path = None

    if swagger_ui_path is not None:
        app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        if swagger_ui_path is None:
            return HTMLResponse("<p>Swagger UI is not installed (pip install 'fastsal[serve]'); the API is "
                                "described by <a href='/openapi.json'>/openapi.json</a>.</p>")
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title="fastsal API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg")
