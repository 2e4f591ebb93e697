"""What a ``fastsal serve`` process is allowed to do: the settings and their limits.

Kept free of FastAPI and PyTorch, so the command line can check every setting (and the API key
file) in a second, before it loads a model or imports the web stack.
"""
from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from fastsal import defaults
from fastsal.cpu import available_cpus, check_threads, max_threads
from fastsal.errors import FastSalError
from fastsal.files import private_mode_problem

#: Upload size limit in MB: a 12 MP JPEG is ~5 MB, a 12 MP PNG up to ~25 MB.
DEFAULT_MAX_UPLOAD_MB = 25.0
#: Pixel limit for uploads: a 48 MP camera frame passes; the library's 100 MP would let each of
#: a few concurrent requests hold ~1 GB (the RGB image, the float map and its renderings).
DEFAULT_MAX_PIXELS = 50_000_000
#: Requests admitted at once (waiting or running, once their upload is in); one more gets 503.
DEFAULT_QUEUE = 64
#: Seconds one request may take from its head to its answer (upload included).
DEFAULT_TIMEOUT_S = 30.0
#: Seconds a connection may take to send a whole request head, counted from when it opens (or
#: from its previous answer): idle and trickling connections are closed after this.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Uploads being read (not yet admitted to the queue) may buffer this many times the upload limit
#: together; past it, a request gets 503 instead of piling up memory.
UPLOAD_BUFFERS = 8
#: Shortest API key accepted: shorter ones can be guessed by trying.
MIN_KEY_LENGTH = 16
LOOPBACK = "127.0.0.1"
#: Largest request head, in bytes: the app answers 431 to a bigger one that arrives whole, and
#: uvicorn's h11 parser gives up (400, connection closed) on a bigger one that is still incomplete.
MAX_HEADER_BYTES = 16 * 1024
#: Environment variable ``fastsal serve`` reads the API key from when there is no ``--api-key-file``
#: (a Kubernetes Secret is handed to a container this way; deploy/kubernetes uses it).
API_KEY_ENV = "FASTSAL_API_KEY"


class ServeError(FastSalError, ValueError):
    """A server setting that cannot work (unreadable key file, bad limit); one line with the fix."""


@dataclass(frozen=True)
class ServeConfig:
    """Settings of a server; :func:`fastsal.serve.create_app` takes one.

    ``workers``: processes :func:`fastsal.serve.serve` runs on the one socket, each with its own
    model and ``threads`` engine threads (default: the CPUs shared out, :attr:`worker_threads`).
    ``device``: where the model runs, as for :func:`fastsal.load` (``"cpu"``, ``"cuda"``,
    ``"cuda:N"``).
    """

    host: str = LOOPBACK
    port: int = 8000
    model: str = "default"
    backend: str = defaults.AUTO
    precision: str = defaults.PRECISION
    device: str = defaults.DEVICE
    threads: int | None = None
    workers: int = 1
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1024 * 1024)
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_size: int = DEFAULT_QUEUE
    timeout_s: float = DEFAULT_TIMEOUT_S
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    api_key: str | None = field(default=None, repr=False)  # never printed
    cors_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1024:
            raise ServeError(f"the upload limit must be at least 1 KB, got {self.max_upload_bytes} bytes")
        if self.max_pixels < 1:
            raise ServeError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.threads is not None:
            check_threads(self.threads, error=ServeError)
        check_threads(self.workers, "workers", error=ServeError)
        if self.threads is not None and self.workers * self.threads > max_threads():
            raise ServeError(f"workers {self.workers} x threads {self.threads} = {self.workers * self.threads} "
                             f"threads exceeds {max_threads()}, the most this machine can use; lower workers or "
                             f"threads (workers x threads = {available_cpus()}, the CPUs available, is usually fastest)")
        if not isinstance(self.device, str) or not self.device.strip():
            raise ServeError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.queue_size < 1:
            raise ServeError(f"the queue must hold at least 1 request, got {self.queue_size}")
        if not 0 < self.timeout_s <= 3600:
            raise ServeError(f"the timeout must be in (0, 3600] seconds, got {self.timeout_s}")
        if not 0 < self.header_timeout_s <= 600:
            raise ServeError(f"header_timeout_s must be in (0, 600] seconds, got {self.header_timeout_s}")
        if self.api_key is not None and len(self.api_key) < MIN_KEY_LENGTH:
            raise ServeError(f"the API key must have at least {MIN_KEY_LENGTH} characters; "
                             f"make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        for origin in self.cors_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ServeError(f"{{option}} {origin!r}: expected an origin such as https://example.org (or *)",
                                 option="cors_origins")

    @property
    def worker_threads(self) -> int | None:
        """Threads each worker process's engine uses: ``threads`` when set; with several workers
        and no setting, the available CPUs shared out (at least 1 each), since N engines that each
        take every core slow each other down; one process keeps the engine's own choice (None)."""
        if self.threads is not None or self.workers == 1:
            return self.threads
        return max(1, available_cpus() // self.workers)

    @property
    def max_requests(self) -> int:
        """Requests in flight at once (uploading, queued or running); more get 503, except ``/healthz``."""
        return 2 * self.queue_size + 32

    @property
    def upload_buffer_bytes(self) -> int:
        """Bytes all uploads still being read may hold together (see :data:`UPLOAD_BUFFERS`)."""
        return UPLOAD_BUFFERS * self.max_upload_bytes

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect (the default): then no key is not a hole."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def api_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The key in :data:`API_KEY_ENV`, or None when it is unset. Set but blank is refused: a
    server meant to have a key (a Secret that lost its value) must not run open."""
    value = (os.environ if environ is None else environ).get(API_KEY_ENV)
    if value is None:
        return None
    if not value.strip():
        raise ServeError(f"{API_KEY_ENV} is set but empty; put the key in it, or unset it to serve without a key")
    return value.strip()


def read_api_key(path: str | Path) -> str:
    """The key in ``path`` (its first line, surrounding spaces removed).

    Refuses an empty or unreadable file (a server that silently runs without its key is open to
    anyone), and one that other users can read or write (they could read or change the key).
    """
    path = Path(path)
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServeError(f"{{option}} {path}: no such file", option="api_key_file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"{{option}} {path}: cannot read it ({getattr(exc, 'strerror', None) or exc})",
                         option="api_key_file") from None
    if private_mode_problem(info):
        raise ServeError(f"{{option}} {path}: other users can read or change it; run chmod 600 {path}",
                         option="api_key_file")
    lines = text.strip().splitlines()
    key = lines[0].strip() if lines else ""
    if not key:
        raise ServeError(f"{{option}} {path}: the file is empty; put the key on its first line", option="api_key_file")
    return key
