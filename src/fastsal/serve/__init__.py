"""``fastsal serve``: a web page and a REST API for saliency maps (``pip install 'fastsal[serve]'``).

    from fastsal.serve import ServeConfig, create_app
    app = create_app(ServeConfig(model="default"))   # an ASGI app; or: fastsal serve --port 8000

Modules: :mod:`~fastsal.serve.config` (settings and limits; imports nothing heavy),
:mod:`~fastsal.serve.upload` (multipart parsing in memory, within limits),
:mod:`~fastsal.serve.work` (models loaded once, the bounded job queue and worker threads),
:mod:`~fastsal.serve.app` (routes, access, documentation), :mod:`~fastsal.serve.protocol`
(uvicorn's HTTP protocol with a request-head deadline and a connection cap),
:mod:`~fastsal.serve.server` (binding, then one process or the workers),
:mod:`~fastsal.serve.runner` (one serving process: its URL line and uvicorn) and
:mod:`~fastsal.serve.workers` (``--workers N`` processes on one socket). ``create_app`` and ``serve`` import FastAPI on first use, so this package
can be imported (and its settings checked) without the extra.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastsal.serve.config import API_KEY_ENV, ServeConfig, ServeError, api_key_from_env, read_api_key

__all__ = ["API_KEY_ENV", "ServeConfig", "ServeError", "api_key_from_env", "create_app", "read_api_key", "serve"]

#: Module each extra-requiring name lives in: the modules the [serve] extra must make importable.
_LAZY = {"create_app": "fastsal.serve.app", "serve": "fastsal.serve.server"}
#: Import name -> distribution of everything the server imports beyond fastsal's own dependencies.
REQUIREMENTS = {"fastapi": "fastapi", "pydantic": "pydantic", "uvicorn": "uvicorn", "python_multipart": "python-multipart",
                "swagger_ui_bundle": "swagger-ui-bundle-v2"}

if TYPE_CHECKING:
    from fastsal.serve.app import create_app
    from fastsal.serve.server import serve


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastsal.serve' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
