"""Reading one uploaded image out of a multipart request, in memory, within limits.

Why not FastAPI's ``UploadFile``: Starlette spools parts larger than 1 MB to temporary files on
disk, and only checks sizes after reading. Here the body is parsed as it streams in (python-multipart's
low-level parser), only the wanted field is kept, nothing touches the disk, and a body over the
limit is refused at the first byte too many (or from its ``Content-Length`` before any is read).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from fastsal.errors import FastSalError

if TYPE_CHECKING:  # a TypedDict python-multipart defines for type checkers only
    from python_multipart.multipart import MultipartCallbacks

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
    reader = _FieldReader(field, max_bytes)
    parser = MultipartParser(boundary, reader.callbacks())
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
    return reader.result()


class _FieldReader:
    """The parser's callbacks for one body: keeps the wanted field's bytes (refusing a second copy,
    too many parts, an image past the limit as the bytes arrive) and the other fields' names, for
    the message when the wanted one is missing."""

    def __init__(self, field: str, max_bytes: int) -> None:
        self.field, self.wanted, self.max_bytes = field, field.encode(), max_bytes
        self.parts = self.found = 0
        self.names: list[str] = []
        self.name: bytes | None = None
        self.headers: dict[bytes, bytes] = {}
        self.header_field = self.header_value = b""
        self.ended = False
        self.image = bytearray()

    def callbacks(self) -> MultipartCallbacks:
        return {"on_part_begin": self.on_part_begin, "on_part_data": self.on_part_data,
                "on_header_field": self.on_header_field, "on_header_value": self.on_header_value,
                "on_header_end": self.on_header_end, "on_headers_finished": self.on_headers_finished,
                "on_end": self.on_end}

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise RequestError(400, f"more than {MAX_PARTS} form fields; send the image alone")
        self.headers, self.name = {}, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = opts.get(b"name")
        self.name = name
        self.names.append((name or b"").decode("latin-1")[:40])
        if name == self.wanted:
            self.found += 1
            if self.found > 1:
                raise RequestError(422, f"the field {self.field!r} appears twice; send one image per request")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name == self.wanted:
            self.image.extend(data[start:end])
            if len(self.image) > self.max_bytes:
                raise RequestError(413, f"the image is larger than this server's limit of {self.max_bytes} bytes")

    def on_end(self) -> None:
        self.ended = True

    def result(self) -> bytes:
        """The field's bytes once the body has ended, or the 400/422 saying what is wrong."""
        field = self.field
        if not self.ended:
            raise RequestError(400, "the multipart body ended before its closing boundary (upload cut short?)")
        if not self.found:
            seen = ", ".join(repr(n) for n in self.names) or "none"
            raise RequestError(422, f"no field {field!r} in the form (fields sent: {seen}); "
                                    f"send the image as multipart field {field!r}")
        if not self.image:
            raise RequestError(422, f"the field {field!r} is empty (0 bytes); pick an image file")
        return bytes(self.image)
