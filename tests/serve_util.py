"""Helpers for the ``fastsal serve`` tests: a real server in a subprocess, and a fake model."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

SERVE_MODULES = ("fastapi", "pydantic", "uvicorn", "python_multipart", "swagger_ui_bundle")


def need_serve_extra() -> None:
    """Skip the calling module when the [serve] extra is not installed (pip install 'fastsal[serve]')."""
    for module in SERVE_MODULES:
        pytest.importorskip(module, reason=f"the [serve] extra is not installed ({module}): pip install 'fastsal[serve]'")


@contextlib.contextmanager
def running_server(*args: str, env: dict[str, str] | None = None, startup_s: float = 120.0) -> Iterator[str]:
    """``fastsal serve --port 0 ARGS`` on 127.0.0.1 in a subprocess; yields its URL, stops it after."""
    cmd = [sys.executable, "-m", "fastsal", "serve", "--port", "0", "--threads", "1", "-q", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + startup_s
        url = None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            m = re.search(r"serving (http://\S+/) ", line)
            if m:
                url = m.group(1)
                break
        if url is None:
            proc.kill()
            raise AssertionError(f"server did not start: {proc.stderr.read()[-2000:]}")
        yield url
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen) -> str:
    """Stop a server started by a test, by its PID (SIGTERM, then SIGKILL after 20 s); its stderr."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    return err


def get_status(url: str, timeout: float = 10.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


class FakePredictor:
    """Stands in for a Predictor: a centred Gaussian map, and a network step that takes ``delay`` s."""

    input_size = (24, 32)

    def __init__(self, name: str = "fake_model", delay: float = 0.0) -> None:
        self.name = name
        self.delay = delay
        self.calls = 0

    def settings(self) -> dict:
        return {"model": self.name, "weights_sha256": None, "input_size": list(self.input_size),
                "backend": "fake", "precision": "fp32", "blur_sigma": 0.0}

    def input_size_for(self, shape) -> tuple[int, int]:
        return self.input_size

    def read(self, image, *, max_pixels=None):
        from fastsal.predict import Predictor

        return Predictor.read(self, image, max_pixels=max_pixels)  # the real decoding step

    def preprocess(self, rgb: np.ndarray, shape=None) -> np.ndarray:
        from fastsal.images import resize_rgb

        return resize_rgb(rgb, self.input_size).transpose(2, 0, 1).astype(np.float32) / 255.0

    def small_log_density(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        time.sleep(self.delay)
        h, w = self.input_size
        yy, xx = np.mgrid[:h, :w]
        logit = -((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / 40.0
        logp = logit - np.log(np.exp(logit).sum())
        return np.repeat(logp[None], len(batch), axis=0)

    @staticmethod
    def postprocess(log_small: np.ndarray, size) -> np.ndarray:
        from PIL import Image

        h, w = (int(v) for v in size)
        prob = np.asarray(Image.fromarray(np.exp(log_small).astype(np.float32)).resize((w, h), Image.BILINEAR))
        prob = np.maximum(prob, 0).astype(np.float32)
        return prob / prob.sum()


def example_bytes() -> bytes:
    return (Path(__file__).resolve().parents[1] / "src" / "fastsal" / "assets" / "example.jpg").read_bytes()
