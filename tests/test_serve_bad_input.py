"""Malformed and hostile uploads to ``POST /v1/predict``: each gets the right 4xx or a valid map, the
server keeps serving (``/healthz`` after every case), and nothing is ever answered with a 5xx.

Most cases go through FastAPI's TestClient on the real model; those that need real sockets (a slow
upload, a huge header, a lying Content-Length, a client that hangs up) go to ``fastsal serve`` in a
subprocess.
"""
from __future__ import annotations

import io
import socket
import struct
import time
import urllib.parse
import warnings
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from PIL import Image
from serve_util import example_bytes, get_status, need_serve_extra, running_server

need_serve_extra()

with warnings.catch_warnings():  # Starlette's note that a newer httpx exists: not about fastsal
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from fastsal.serve import ServeConfig, create_app  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning:PIL.*")]  # Pillow remarks on damaged TIFFs
MAX_UPLOAD = 2 * 1024 * 1024  # small, so the oversize cases stay cheap
MAX_PIXELS = 50_000_000  # the server's default


# -- building bad files -------------------------------------------------------------------------
def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, len(mode)), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if len(mode) == 1 else arr, mode)


def png_chunks(w: int, h: int, idat: bytes, depth: int = 8, colour: int = 2) -> bytes:
    """A PNG assembled by hand: its header may claim any size, whatever its data holds."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    head = struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def deflate_bomb(w: int, h: int) -> bytes:
    """A greyscale PNG of w x h zeros: tiny on the wire, w*h bytes once decoded."""
    z = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    return png_chunks(w, h, idat, colour=0)


def jpeg_claiming(w: int, h: int) -> bytes:
    """A small real JPEG whose frame header is patched to claim w x h."""
    data = bytearray(encode(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def bmp_claiming(w: int, h: int) -> bytes:
    head = b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return head + info + b"\x00" * 16


def exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return encode(noise(80, 40), "JPEG", exif=exif.tobytes())


def animated_gif() -> bytes:
    frames = [noise(40, 30, seed=i).convert("P") for i in range(4)]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


def float_tiff_with_nan() -> bytes:
    arr = np.ones((20, 30), np.float32)
    arr[3, 4] = np.nan
    return encode(Image.fromarray(arr, "F"), "TIFF")


def png_bad_crc() -> bytes:
    data = bytearray(encode(noise(32, 32), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 10] ^= 0xFF  # corrupt the compressed data, keep the old CRC
    return bytes(data)


# -- the cases ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[TestClient], object]  # returns an httpx Response
    status: int
    size: tuple[int, int] | None = None  # (width, height) of the map, for the 200s


def image(data: bytes, name: str = "upload.jpg", ctype: str = "image/jpeg", query: str = "") -> Callable:
    return lambda c: c.post(f"/v1/predict{query}", files={"image": (name, data, ctype)})


def raw(body: bytes, ctype: str | None, query: str = "") -> Callable:
    headers = {"Content-Type": ctype} if ctype else {}
    return lambda c: c.post(f"/v1/predict{query}", content=body, headers=headers)


def multipart(parts: list[tuple[str, str, bytes]], boundary: str = "XyZ", close: bool = True) -> bytes:
    out = b""
    for field, filename, data in parts:
        out += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return out + (f"--{boundary}--\r\n".encode() if close else b"")


MP = "multipart/form-data; boundary=XyZ"
JPG = example_bytes()
SMALL = encode(noise(64, 48), "JPEG")

CASES = [
    Case("zero_bytes", image(b""), 422),
    Case("truncated_jpeg", image(JPG[: len(JPG) // 2]), 422),
    Case("truncated_jpeg_header_only", image(JPG[:300]), 422),
    Case("truncated_png", image(encode(noise(64, 64), "PNG")[:400], "a.png", "image/png"), 422),
    Case("png_bad_crc", image(png_bad_crc(), "a.png", "image/png"), 422),
    Case("text_named_jpg", image(b"just some text, not an image\n" * 20, "photo.jpg"), 415),
    Case("html_posing_as_png", image(b"<!doctype html><html><script>alert(1)</script></html>", "x.png", "image/png"), 415),
    Case("svg_named_png", image(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', "x.png", "image/png"), 415),
    Case("pdf_named_jpg", image(b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF", "x.jpg"), 415),
    Case("zip_named_jpg", image(b"PK\x03\x04" + b"\x00" * 100, "x.jpg"), 415),
    Case("jpeg_magic_then_garbage", image(b"\xff\xd8\xff" + bytes(range(256)) * 8), 422),
    Case("gif_magic_then_html", image(b"GIF89a<html><script>alert(1)</script></html>", "x.gif", "image/gif"), 422),
    Case("webp_header_only", image(b"RIFF\x10\x00\x00\x00WEBPVP8 ", "x.webp", "image/webp"), 422),
    Case("tiff_magic_then_garbage", image(b"II*\x00" + b"\x07" * 64, "x.tif", "image/tiff"), 422),
    Case("one_by_one", image(encode(noise(1, 1), "PNG"), "1.png", "image/png"), 200, (1, 1)),
    Case("one_by_10000", image(encode(noise(1, 10000), "PNG"), "tall.png", "image/png"), 200, (1, 10000)),
    Case("10000_by_one", image(encode(noise(10000, 1), "PNG"), "wide.png", "image/png"), 200, (10000, 1)),
    Case("bomb_png_header_30000x30000", image(png_chunks(30000, 30000, zlib.compress(b"\x00" * 64)), "b.png"), 413),
    Case("deflate_bomb_png_8000x7500", image(deflate_bomb(8000, 7500), "z.png", "image/png"), 413),
    Case("bomb_jpeg_header_65000x65000", image(jpeg_claiming(65000, 65000)), 413),
    Case("bomb_bmp_header_100000x100000", image(bmp_claiming(100000, 100000), "b.bmp", "image/bmp"), 413),
    Case("png_header_claims_more_than_its_data", image(png_chunks(400, 300, zlib.compress(b"\x00" * 50)), "p.png"), 422),
    Case("cmyk_jpeg", image(encode(noise(60, 40, "CMYK"), "JPEG")), 200, (60, 40)),
    Case("png_16bit", image(encode(Image.fromarray(np.arange(2400, dtype=np.uint16).reshape(40, 60) * 27), "PNG"),
                            "16.png", "image/png"), 200, (60, 40)),
    Case("animated_gif", image(animated_gif(), "a.gif", "image/gif"), 200, (40, 30)),
    Case("exif_rotated_jpeg", image(exif_rotated()), 200, (40, 80)),
    Case("rgba_png", image(encode(noise(50, 30, "RGBA"), "PNG"), "a.png", "image/png"), 200, (50, 30)),
    Case("palette_png_transparency", image(encode(noise(50, 30).convert("P"), "PNG", transparency=0), "p.png"), 200, (50, 30)),
    Case("grayscale_jpeg", image(encode(noise(50, 30, "L"), "JPEG")), 200, (50, 30)),
    Case("float_tiff_with_nan", image(float_tiff_with_nan(), "f.tif", "image/tiff"), 422),
    Case("webp_named_txt", image(encode(noise(40, 30), "WEBP"), "notes.txt", "text/plain"), 200, (40, 30)),
    Case("path_traversal_filename", image(SMALL, "../../../../etc/passwd"), 200, (64, 48)),
    Case("wrong_field_name", lambda c: c.post("/v1/predict", files={"file": ("x.jpg", SMALL, "image/jpeg")}), 422),
    Case("field_name_case", lambda c: c.post("/v1/predict", files={"Image": ("x.jpg", SMALL, "image/jpeg")}), 422),
    Case("missing_field_text_only", lambda c: c.post("/v1/predict", data={"note": "hi"},
                                                     files={"other": ("a.txt", b"x", "text/plain")}), 422),
    Case("two_image_fields", raw(multipart([("image", "a.jpg", SMALL), ("image", "b.jpg", SMALL)]), MP), 422),
    Case("twenty_parts", raw(multipart([(f"f{i}", "x", b"x") for i in range(20)]), MP), 400),
    Case("empty_multipart", raw(b"--XyZ--\r\n", MP), 422),
    Case("multipart_without_boundary", raw(multipart([("image", "a.jpg", SMALL)]), "multipart/form-data"), 400),
    Case("multipart_cut_short", raw(multipart([("image", "a.jpg", SMALL)], close=False)[:-300], MP), 400),
    Case("multipart_garbage", raw(b"\x00\x01garbage" * 100, MP), 400),
    Case("huge_part_header", raw(multipart([("image", "a" * 20000 + ".jpg", SMALL)]), MP), 400),
    Case("raw_jpeg_body_not_multipart", raw(SMALL, "image/jpeg"), 415),
    Case("json_body", raw(b'{"image": "aGVsbG8="}', "application/json"), 415),
    Case("no_content_type", raw(SMALL, None), 415),
    Case("upload_over_the_limit", image(b"\xff\xd8\xff" + bytes(MAX_UPLOAD + 10)), 413),
    Case("unknown_model", image(SMALL, query="?model=../../etc/passwd"), 422),
    Case("top_k_too_large", image(SMALL, query="?top_k=100000"), 422),
    Case("grid_zero", image(SMALL, query="?grid=0"), 422),
    Case("alpha_nan", image(SMALL, query="?output=overlay&alpha=nan"), 422),
    Case("unknown_output", image(SMALL, query="?output=gif"), 422),
]


@pytest.fixture(scope="module")
def api() -> TestClient:
    config = ServeConfig(threads=1, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as c:
        yield c


def test_there_are_at_least_30_cases():
    assert len(CASES) + len(SOCKET_CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_upload(api, case):
    r = case.send(api)
    assert r.status_code == case.status, f"{case.name}: {r.status_code} {r.text[:300]}"
    if case.status == 200:
        j = r.json()
        assert (j["width"], j["height"]) == case.size
        values = np.array(j["grid"]["values"])
        assert np.isfinite(values).all() and (values >= 0).all() and abs(values.sum() - 1) < 1e-4
        assert 1 <= len(j["candidates"]) <= 5
    else:
        detail = r.json()["detail"]
        assert isinstance(detail, (str, list)) and detail  # one line (or FastAPI's list for a bad parameter)
        if isinstance(detail, str):
            assert "\n" not in detail and "Traceback" not in detail
    assert api.get("/healthz").status_code == 200
    assert api.get("/healthz").json()["queue"]["pending"] == 0


def test_mutated_images_never_get_a_5xx(api):
    """A small fixed-seed fuzz: 150 valid files of six formats with bytes flipped, cut or inserted."""
    import random

    rng = random.Random(12)
    seeds = [encode(noise(32, 24), fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")]
    seen: dict[int, int] = {}
    for _ in range(150):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.5:
                data[pos] = rng.randrange(256)
            elif op < 0.75:
                del data[pos:pos + rng.randint(1, 40)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        r = api.post("/v1/predict?grid=4", files={"image": ("m", bytes(data), "image/jpeg")})
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code in (200, 413, 415, 422), (r.status_code, r.text[:200])
    assert api.get("/healthz").status_code == 200
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0, seen


# -- through real sockets ----------------------------------------------------------------------------
def _send(url: str, raw_request: bytes, pause_after: int | None = None, read_s: float = 15.0) -> bytes:
    u = urllib.parse.urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=read_s) as s:
        try:
            s.sendall(raw_request)
        except OSError:  # the server may close as soon as it has seen enough
            pass
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


def _status(response: bytes) -> int | None:
    line = response.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


def _post_head(extra: str = "", length: int | None = None) -> bytes:
    cl = f"Content-Length: {length}\r\n" if length is not None else ""
    return (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {MP}\r\n{cl}{extra}\r\n").encode()


def slow_upload(url: str) -> int | None:
    """Headers, then a byte every 0.2 s of a 100 KB body: the 2 s timeout answers 408."""
    u = urllib.parse.urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=15) as s:
        s.sendall(_post_head(length=100_000) + b"--XyZ\r\n")
        t0 = time.monotonic()
        s.setblocking(False)
        got = b""
        while time.monotonic() - t0 < 10:
            try:
                s.send(b"a")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(0.2)
            try:
                got += s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            if b"\r\n\r\n" in got:
                break
    return _status(got)


def disconnect_mid_upload(url: str) -> int | None:
    u = urllib.parse.urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(_post_head(length=len(JPG) + 200) + multipart([("image", "a.jpg", JPG)])[:5000])
    time.sleep(0.3)
    return None  # nothing to read: the point is that the server goes on


def chunked_over_limit(url: str) -> int | None:
    body = multipart([("image", "a.jpg", b"\xff\xd8\xff" + bytes(MAX_UPLOAD + 100))])
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536]) for i in range(0, len(body), 65536))
    return _status(_send(url, _post_head("Transfer-Encoding: chunked\r\n") + chunked + b"0\r\n\r\n"))


SOCKET_CASES: list[tuple[str, Callable[[str], int | None], int | None]] = [
    ("slow_upload", slow_upload, 408),
    ("huge_header_100kb", lambda url: _status(_send(url, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                                                    + b"a" * 100_000 + b"\r\n\r\n")), 431),
    ("huge_header_1mb", lambda url: _status(_send(url, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                                                  + b"a" * 1_000_000 + b"\r\n\r\n")), 400),
    ("thousands_of_headers", lambda url: _status(_send(url, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(3000)) + b"\r\n")), 431),
    ("content_length_1tb", lambda url: _status(_send(url, _post_head(length=10 ** 12) + b"--XyZ\r\n")), 413),
    ("content_length_not_a_number", lambda url: _status(_send(url, _post_head("Content-Length: lots\r\n"))), 400),
    ("chunked_body_over_the_limit", chunked_over_limit, 413),
    ("client_hangs_up_mid_upload", disconnect_mid_upload, None),
    ("request_line_garbage", lambda url: _status(_send(url, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20)), 400),
]


@pytest.fixture(scope="module")
def server() -> str:
    with running_server("--timeout", "2", "--max-upload-mb", str(MAX_UPLOAD / 1024 / 1024)) as url:
        yield url


@pytest.mark.parametrize("name,send,status", SOCKET_CASES, ids=[c[0] for c in SOCKET_CASES])
def test_bad_request_over_a_socket(server, name, send, status):
    got = send(server)
    assert got == status, f"{name}: {got}"
    assert get_status(server + "healthz") == 200


def test_server_still_predicts_after_the_socket_cases(server):
    import json
    import urllib.request

    body = multipart([("image", "a.jpg", SMALL)])
    req = urllib.request.Request(server + "v1/predict", data=body, headers={"Content-Type": MP})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and json.loads(r.read())["width"] == 64
