"""``fastsal serve``: the API's answers, access control, CORS, the bounded queue, timeouts,
offline docs, the fixation candidates, and the command line's errors."""
from __future__ import annotations

import ast
import base64
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tomllib
from PIL import Image
from serve_util import FakePredictor, example_bytes, get_status, need_serve_extra, running_server

need_serve_extra()

with warnings.catch_warnings():  # Starlette's note that a newer httpx exists: not about fastsal
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient  # noqa: E402

from fastsal.peaks import PeakError, fixation_candidates, grid  # noqa: E402
from fastsal.serve import REQUIREMENTS, ServeConfig, ServeError, create_app, read_api_key  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
KEY = "k" * 24


def client(config: ServeConfig | None = None, predictor: FakePredictor | None = None) -> TestClient:
    """A TestClient on an app with a fake model (or the real one when ``predictor`` is None and
    ``config`` asks for it by leaving ``load`` out)."""
    fake = predictor or FakePredictor()
    app = create_app(config or ServeConfig(), load=lambda source: fake if source == (config or ServeConfig()).model
                     else FakePredictor(name=source))
    return TestClient(app, base_url="http://127.0.0.1")


def jpeg(w: int = 64, h: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def post(c: TestClient, data: bytes, query: str = "", **kw):
    return c.post(f"/v1/predict{query}", files={"image": ("x.jpg", data, "image/jpeg")}, **kw)


# -- the real model -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real() -> TestClient:
    with TestClient(create_app(ServeConfig(threads=1)), base_url="http://127.0.0.1") as c:
        yield c


def test_real_model_json_png_overlay_and_npy(real):
    data = example_bytes()
    j = post(real, data).json()
    assert (j["width"], j["height"]) == (800, 600) and j["model"] == "fastsal_a_effnet_lite0"
    g = np.array(j["grid"]["values"])
    assert g.shape == (24, 32) and abs(g.sum() - 1) < 1e-4
    assert 1 <= len(j["candidates"]) <= 5 and sum(c["probability"] for c in j["candidates"]) <= 1 + 1e-6
    assert set(j["timing_ms"]) >= {"upload", "queue", "decode", "network", "encode", "total"}

    npy = np.load(io.BytesIO(base64.b64decode(post(real, data, "?map=npy&top_k=0").json()["npy"])))
    assert npy.shape == (600, 800) and npy.dtype == np.float32 and abs(float(npy.sum()) - 1) < 1e-4
    # the same map fastsal.load gives (uploads decode as `fastsal predict` does: JPEG DCT scaling)
    import fastsal
    from fastsal.images import load_resized

    p = fastsal.load(threads=1)
    small, size = load_resized(io.BytesIO(data), p.input_size)
    ref = p.predict_batch([small], sizes=[size])[0]
    assert np.abs(npy - ref).max() <= 1e-4 * ref.max()

    r = post(real, data, "?output=png")
    assert r.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(r.content)).size == (800, 600)
    r = post(real, data, "?output=overlay&alpha=0.7")
    assert r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (800, 600)
    assert "network;dur=" in r.headers["server-timing"]


def test_models_healthz_colormap(real):
    m = real.get("/v1/models").json()
    assert m["default"] == "fastsal_a_effnet_lite0" and m["models"][0]["loaded"] and m["models"][0]["default"]
    h = real.get("/healthz").json()
    assert h["status"] == "ok" and h["queue"]["pending"] == 0
    colors = real.get("/v1/colormap").json()["colors"]
    assert len(colors) == 256 and colors[0] == [0, 0, 4] and colors[-1] == [252, 255, 164]


def test_docs_are_served_offline(real):
    html = real.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in html and "http://" not in html and "https://" not in html
    assert real.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    assert real.get("/docs-assets/swagger-ui.css").status_code == 200
    spec = real.get("/openapi.json").json()
    body = spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["image"] and {"/v1/models", "/healthz"} <= set(spec["paths"])
    page = real.get("/")
    assert "content-security-policy" in page.headers and "http" not in page.text.replace("http-equiv", "")
    for asset in ("app.js", "style.css", "favicon.svg"):
        text = real.get(f"/static/{asset}").text
        assert "//cdn" not in text and "https://" not in text


def test_requests_write_no_files(real, tmp_path, monkeypatch):
    """Uploads are parsed in memory: nothing appears in the temp folder or the working folder."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(tmp_path)
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (900, 1200, 3), dtype=np.uint8)).save(big, "PNG")
    assert len(big.getvalue()) > 2 * 1024 * 1024  # above Starlette's 1 MB spooling threshold
    r = real.post("/v1/predict?output=png", files={"image": ("../../evil.png", big.getvalue(), "image/png")})
    assert r.status_code == 200
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["tmp"]


# -- access ---------------------------------------------------------------------------------------
def test_api_key_guards_v1_only():
    c = client(ServeConfig(api_key=KEY))
    assert c.get("/v1/models").status_code == 401
    assert post(c, jpeg()).status_code == 401
    assert c.get("/v1/models", headers={"X-API-Key": "wrong" * 5}).status_code == 401
    assert c.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200
    assert c.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert post(c, jpeg(), headers={"X-API-Key": KEY}).status_code == 200
    for public in ("/", "/healthz", "/static/app.js", "/docs", "/openapi.json"):
        assert c.get(public).status_code == 200, public
    spec = c.get("/openapi.json").json()
    assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])


def test_loopback_server_refuses_foreign_host_headers():
    c = client()
    assert c.get("/healthz", headers={"Host": "attacker.example:8000"}).status_code == 400
    assert c.get("/healthz", headers={"Host": "localhost:8000"}).status_code == 200
    wide = TestClient(create_app(ServeConfig(host="0.0.0.0"), load=lambda s: FakePredictor()),
                      base_url="http://server.lan")
    assert wide.get("/healthz").status_code == 200


def test_cors_is_off_unless_asked():
    pre = {"Origin": "https://site.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client().options("/v1/predict", headers=pre).headers
    on = client(ServeConfig(cors_origins=("https://site.example",)))
    r = on.options("/v1/predict", headers={**pre, "Access-Control-Request-Headers": "X-API-Key"})
    assert r.headers["access-control-allow-origin"] == "https://site.example"
    other = on.options("/v1/predict", headers={**pre, "Origin": "https://other.example"})
    assert other.headers.get("access-control-allow-origin") != "https://other.example"


def test_read_api_key(tmp_path):
    f = tmp_path / "key"
    f.write_text(f"  {KEY}  \nsecond line\n")
    f.chmod(0o600)
    assert read_api_key(f) == KEY
    f.chmod(0o644)
    with pytest.raises(ServeError, match="chmod 600"):
        read_api_key(f)
    f.write_text("\n")
    f.chmod(0o600)
    with pytest.raises(ServeError, match="empty"):
        read_api_key(f)
    with pytest.raises(ServeError, match="no such file"):
        read_api_key(tmp_path / "missing")
    with pytest.raises(ServeError, match="at least 16"):
        ServeConfig(api_key="short")


def test_serve_errors_name_the_keyword_and_the_cli_the_flag(tmp_path):
    from fastsal.cli import cli_message

    with pytest.raises(ServeError) as info:
        read_api_key(tmp_path / "missing")
    assert str(info.value).startswith("api_key_file ") and "--" not in str(info.value)
    assert cli_message(info.value).startswith("--api-key-file ")
    with pytest.raises(ServeError) as info:
        ServeConfig(cors_origins=("example.org",))
    assert str(info.value).startswith("cors_origins 'example.org': expected an origin")
    assert cli_message(info.value).startswith("--cors-origin 'example.org': expected an origin")


# -- load: queue, timeouts, a free event loop -------------------------------------------------------
def test_healthz_answers_while_a_map_is_computed():
    slow = FakePredictor(delay=2.0)
    with client(predictor=slow) as c:
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", post(c, jpeg())))
        t.start()
        while slow.calls == 0:
            time.sleep(0.01)
        t0 = time.monotonic()
        h = c.get("/healthz").json()
        assert time.monotonic() - t0 < 1.0 and h["queue"]["pending"] == 1  # not after the 2 s map
        t.join()
        assert result["r"].status_code == 200


def test_full_queue_answers_503_and_recovers():
    slow = FakePredictor(delay=0.6)
    with client(ServeConfig(queue_size=2), predictor=slow) as c:
        codes: list[int] = []
        threads = [threading.Thread(target=lambda: codes.append(post(c, jpeg()).status_code)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(codes).count(200) >= 2 and 503 in codes and set(codes) <= {200, 503}
        assert c.get("/healthz").json()["queue"]["pending"] == 0
        assert post(c, jpeg()).status_code == 200


def test_request_timeout_answers_503_and_frees_the_slot_when_the_job_ends():
    slow = FakePredictor(delay=1.5)
    with client(ServeConfig(timeout_s=0.5, queue_size=1), predictor=slow) as c:
        r = post(c, jpeg())
        assert r.status_code == 503 and "timed out" in r.json()["detail"] and r.headers["retry-after"] == "1"
        assert c.get("/healthz").json()["queue"]["pending"] == 1  # the job still holds the CPU
        for _ in range(100):  # freed once the job's thread lets go (~1 s later)
            if c.get("/healthz").json()["queue"]["pending"] == 0:
                break
            time.sleep(0.05)
        assert c.get("/healthz").json()["queue"]["pending"] == 0


def test_other_shipped_model_is_named_and_unknown_is_422():
    c = client()
    from fastsal.models import WEIGHTS

    assert [m["name"] for m in c.get("/v1/models").json()["models"]] == ["fake_model", *WEIGHTS]
    r = post(c, jpeg(), "?model=fastsal_a_effnet_lite0")
    assert r.status_code == 200 and r.json()["model"] == "fastsal_a_effnet_lite0"
    r = post(c, jpeg(), "?model=nope")
    assert r.status_code == 422 and "choose one of" in r.json()["detail"]


# -- fixation candidates ----------------------------------------------------------------------------
def test_candidates_are_suppressed_local_maxima():
    h, w = 300, 400
    yy, xx = np.mgrid[:h, :w]
    blob = lambda y, x, s, a: a * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s))  # noqa: E731
    m = blob(100, 100, 10, 3.0) + blob(104, 108, 10, 2.0) + blob(200, 300, 12, 1.0) + 1e-6
    m = (m / m.sum()).astype(np.float32)
    cands = fixation_candidates(m, k=5)
    top_y, top_x = np.unravel_index(int(np.argmax(m)), m.shape)  # the twins' joint peak
    assert abs(cands[0]["x"] - top_x) <= 2 and abs(cands[0]["y"] - top_y) <= 2
    assert abs(cands[1]["x"] - 300) <= 2 and abs(cands[1]["y"] - 200) <= 2  # the near twin was suppressed
    r = 0.05 * np.hypot(h, w)
    for a in cands:
        for b in cands:
            if a is not b:
                assert np.hypot(a["x"] - b["x"], a["y"] - b["y"]) >= 2 * r - 2 * np.hypot(h / 256, w / 256) - 2
    assert sum(c["probability"] for c in cands) <= 1 + 1e-9 and cands[0]["probability"] > cands[1]["probability"]
    assert fixation_candidates(np.ones((1, 1), np.float32)) == [{"x": 0, "y": 0, "probability": 1.0}]
    assert abs(grid(m, 8).sum() - 1) < 1e-6 and grid(np.ones((1, 10000)), 32).shape == (1, 32)
    with pytest.raises(PeakError):
        fixation_candidates(np.full((4, 4), np.nan))


# -- packaging and the command line -------------------------------------------------------------------
def test_serve_extra_installs_every_import():
    stdlib = set(sys.stdlib_module_names)
    core = {"fastsal", "numpy", "scipy", "PIL", "torch"}
    used: set[str] = set()
    for path in (ROOT / "src" / "fastsal" / "serve").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                used |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                used.add(node.module.split(".")[0])
    third_party = used - stdlib - core
    assert third_party <= set(REQUIREMENTS), third_party - set(REQUIREMENTS)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["serve"]
    names = {e.split(">")[0].split("=")[0].strip() for e in extra}
    assert set(REQUIREMENTS.values()) <= names
    static = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["fastsal"]
    assert "serve/static/*" in static


def _cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastsal", *argv], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_cli_serve_without_the_extra_names_it(monkeypatch, capsys):
    import importlib.util

    from fastsal.cli import main

    real_find = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real_find(name, *a))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["fastsal: error: fastsal serve needs fastapi: pip install 'fastsal[serve]'"]


def test_cli_serve_errors_are_one_line(tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o644)
    res = _cli("serve", "--api-key-file", str(key))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"fastsal: error: --api-key-file {key}: other users can read or change it; run chmod 600 {key}"]
    res = _cli("serve", "--cors-origin", "example.org")
    assert res.returncode == 2 and "expected an origin" in res.stderr
    res = _cli("serve", "--max-upload-mb", "0")
    assert res.returncode == 2 and "--max-upload-mb" in res.stderr


def test_cli_serve_port_in_use_and_the_real_server(tmp_path):
    key = tmp_path / "key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    with running_server("--api-key-file", str(key)) as url:
        assert get_status(url + "healthz") == 200
        assert get_status(url + "v1/models") == 401
        port = url.rstrip("/").rsplit(":", 1)[1]
        res = _cli("serve", "--port", port)
        assert res.returncode == 2
        assert res.stderr.strip().splitlines()[-1] == (
            f"fastsal: error: port {port} on 127.0.0.1 is in use; pass another --port (0 picks a free one)")
