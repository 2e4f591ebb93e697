"""Reading one uploaded image out of a multipart request, in memory, within limits.

Why not FastAPI's ``UploadFile``: Starlette spools parts larger than 1 MB to temporary files on
disk, and only checks sizes after reading. Here the body is parsed as it streams in (python-multipart's
low-level parser), only the wanted field is kept, nothing touches the disk, and a body over the
limit is refused at the first byte too many (or from its ``Content-Length`` before any is read).
"""
from __future__ import annotations

from typing import AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from fastsal.errors import FastSalError

#: Room for the multipart envelope (boundaries, part headers, small extra fields) above the
#: image's own size limit.
ENVELOPE_BYTES = 64 * 1024
#: Most parts one request may carry: a form with an image needs one; thousands are an attack.
MAX_PARTS = 16


class RequestError(FastSalError):
    """A request the server refuses, with the HTTP status to answer and one line saying why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def check_declared_length(content_length: str | None, max_bytes: int) -> None:
    """413 from the ``Content-Length`` header alone, before a byte of the body is read."""
    if content_length is None:
        return
    try:
        declared = int(content_length)
    except ValueError:
        raise RequestError(400, f"Content-Length {content_length[:40]!r} is not a number") from None
    if declared > max_bytes + ENVELOPE_BYTES:
        raise RequestError(413, f"the upload is {declared} bytes; this server takes images up to {max_bytes} bytes")


async def read_field(chunks: AsyncIterator[bytes], content_type: str | None, field: str, max_bytes: int) -> bytes:
    """The bytes of the multipart field ``field`` (exactly one), from a body arriving as ``chunks``.

    Raises :class:`RequestError`: 415 for a body that is not ``multipart/form-data``, 413 past
    ``max_bytes`` (the image) or ``max_bytes + ENVELOPE_BYTES`` (the body), 400 for broken
    framing, 422 when the field is missing, repeated or empty.
    """
    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        shown = (content_type or "none")[:60]
        raise RequestError(415, f"expected a multipart/form-data body with the image in field {field!r}, "
                                f"got Content-Type {shown}")
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise RequestError(400, "the multipart Content-Type has no usable boundary")

    wanted = field.encode()
    state: dict = {"parts": 0, "names": [], "name": None, "headers": {}, "field": b"", "value": b"",
                   "found": 0, "ended": False}
    image = bytearray()

    def on_part_begin() -> None:
        state["parts"] += 1
        if state["parts"] > MAX_PARTS:
            raise RequestError(400, f"more than {MAX_PARTS} form fields; send the image alone")
        state["headers"], state["name"] = {}, None

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        _, opts = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name")
        state["name"] = name
        state["names"].append((name or b"").decode("latin-1")[:40])
        if name == wanted:
            state["found"] += 1
            if state["found"] > 1:
                raise RequestError(422, f"the field {field!r} appears twice; send one image per request")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["name"] == wanted:
            image.extend(data[start:end])
            if len(image) > max_bytes:
                raise RequestError(413, f"the image is larger than this server's limit of {max_bytes} bytes")

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_end": on_end,
    })
    total = 0
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes + ENVELOPE_BYTES:
                raise RequestError(413, f"the upload is larger than this server's limit of {max_bytes} bytes")
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise RequestError(400, f"malformed multipart body ({str(exc)[:80]})") from None
    if not state["ended"]:
        raise RequestError(400, "the multipart body ended before its closing boundary (upload cut short?)")
    if not state["found"]:
        seen = ", ".join(repr(n) for n in state["names"]) or "none"
        raise RequestError(422, f"no field {field!r} in the form (fields sent: {seen}); "
                                f"send the image as multipart field {field!r}")
    if not image:
        raise RequestError(422, f"the field {field!r} is empty (0 bytes); pick an image file")
    return bytes(image)
