"""``fastsal serve``."""
from __future__ import annotations

import argparse
import sys

from fastsal.cli.options import add_engine_options, add_model_source
from fastsal.cli.running import load_predictor, need
from fastsal.cli.types import number, threads
from fastsal.errors import Terminated


def _cmd_serve(args: argparse.Namespace) -> int:
    import functools

    from fastsal.serve import REQUIREMENTS, ServeConfig, api_key_from_env, read_api_key

    for module in REQUIREMENTS:  # every import of the [serve] extra, before the model loads
        need(module, "serve", "fastsal serve")
    config = ServeConfig(
        host=args.host, port=args.port, model=args.weights or args.model, backend=args.backend,
        precision=args.precision, device=args.device, threads=args.threads, workers=args.workers,
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels, queue_size=args.queue, timeout_s=args.timeout,
        header_timeout_s=args.header_timeout,
        api_key=read_api_key(args.api_key_file) if args.api_key_file else api_key_from_env(),
        cors_origins=tuple(args.cors_origin or ()),
    )
    from fastsal.serve.server import serve

    # picklable (module-level function + Namespace): worker processes get it
    load = functools.partial(_serve_load, argparse.Namespace(**{**vars(args), "threads": config.worker_threads}),
                             config.model)
    try:
        serve(config, access_log=not args.quiet, load=load)
    except KeyboardInterrupt as exc:  # uvicorn shut down cleanly, then passed Ctrl-C / SIGTERM on
        how = exc.name if isinstance(exc, Terminated) else "Ctrl-C"
        print(f"fastsal: server stopped ({how})", file=sys.stderr)
    return 0


def _serve_load(args: argparse.Namespace, served: str, source: str):
    """fastsal.load with the engine options; fallbacks printed as notes, as for predict."""
    weights = args.weights if args.weights and source == served else None
    return load_predictor(argparse.Namespace(**{**vars(args), "model": source, "weights": weights}))


def add_serve(sub: argparse._SubParsersAction) -> None:
    from fastsal.serve import config as C

    p = sub.add_parser(
        "serve", help="a web page and a REST API for saliency maps (pip install 'fastsal[serve]')",
        description="Serve a page (drop an image, see the map) and a REST API (POST /v1/predict, GET /v1/models, "
                    "GET /healthz; OpenAPI docs at /docs) on FastAPI + uvicorn. Binds to 127.0.0.1 unless --host "
                    "says otherwise. Uploads are decoded in memory; oversized uploads and images get 413, "
                    "non-images 415, damaged images 422; a full queue or a request past --timeout gets 503.")
    p.add_argument("--host", default=C.LOOPBACK, help="address to listen on (default: %(default)s, this machine only)")
    p.add_argument("--port", type=number(int, 0, 65535), default=8000, help="TCP port (default: %(default)s; 0: a free one)")
    add_model_source(p, "model with shipped weights served by default (default: the shipped default; see "
                        "`fastsal models`)", "a checkpoint or exported file to serve instead")
    add_engine_options(p)
    p.add_argument("--workers", type=threads(), default=1, metavar="N",
                   help="worker processes sharing the port, each with its own model (default: %(default)s); "
                        "without --threads each gets CPUs/N threads")
    p.add_argument("--max-upload-mb", type=number(float, 0.01, 1024.0), default=C.DEFAULT_MAX_UPLOAD_MB, metavar="N",
                   help="largest upload in MB (default: %(default)s); larger ones get 413")
    p.add_argument("--max-pixels", type=number(int, 1), default=C.DEFAULT_MAX_PIXELS, metavar="N",
                   help="largest image in pixels (default: %(default)s); larger ones (decompression bombs) get 413")
    p.add_argument("--queue", type=number(int, 1, 100_000), default=C.DEFAULT_QUEUE, metavar="N",
                   help="requests admitted at once (default: %(default)s); one more gets 503 at once")
    p.add_argument("--timeout", type=number(float, 0.1, 3600.0), default=C.DEFAULT_TIMEOUT_S, metavar="S",
                   help="seconds per request, upload included (default: %(default)s): 408 for slow uploads, 503 "
                        "for slow answers")
    p.add_argument("--header-timeout", type=number(float, 0.1, 600.0), default=C.DEFAULT_HEADER_TIMEOUT_S,
                   metavar="S", help="seconds a connection may take to send a request's headers (default: "
                                     "%(default)s); idle or slower connections are closed")
    p.add_argument("--api-key-file", metavar="FILE",
                   help="require the key on this file's first line for /v1/* (header X-API-Key or Authorization: "
                        "Bearer); the page asks for it. The file must not be readable by other users. Without "
                        f"it, the key in ${C.API_KEY_ENV} if set (e.g. from a Kubernetes Secret)")
    p.add_argument("--cors-origin", action="append", metavar="ORIGIN",
                   help="allow browser pages from ORIGIN (e.g. https://example.org; repeat for more; * for any) to "
                        "call the API (default: none)")
    p.add_argument("-q", "--quiet", action="store_true", help="no access log or engine notes")
    p.set_defaults(func=_cmd_serve, engines=_serve_loads_here)


def _serve_loads_here(args: argparse.Namespace) -> bool:
    """Whether this process loads a model (and so imports the engines): not a --workers supervisor."""
    return bool(args.workers == 1)
