"""Image decoding that accepts what users actually have, and one resize used everywhere.

Every odd input is turned into 8-bit RGB the same way, here, so prediction, training and
evaluation never disagree: EXIF orientation is applied, grayscale is replicated, alpha is
composited over white (how transparent images are usually shown), CMYK and palette images are
converted, and 16-bit or float images are scaled to 8 bits.

Decompression bombs: an image whose header declares more than :func:`max_pixels` pixels (default
:data:`DEFAULT_MAX_PIXELS`, 100 megapixels) is refused from its header, before a byte of pixel
data is decoded, with an :class:`ImageError` naming the file, its size and the limit. The limit is
set per call (``max_pixels=``), for the process with :func:`set_max_pixels`, or with the
environment variable ``FASTSAL_MAX_PIXELS`` (a whole number of pixels). Pillow's own guard (a
warning above ~89 MP, an error above ~179 MP) is switched off while *we* open a file, so users see
our one-line error, not Pillow's raw warning.
"""
from __future__ import annotations

import errno
import math
import os
import stat
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Union, cast

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fastsal.errors import FastSalError
from fastsal.geometry import STRIDE, round_to_stride

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")  # GIF: the first frame
#: The only Pillow decoders fastsal runs, whatever a file's name says: the formats the README lists.
#: Pillow would otherwise try every plugin it has, and its EPS plugin runs Ghostscript on the
#: file's content (PDF, SVG-like and other plugins are as little needed and as little trusted).
DECODE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

#: What every image-taking function accepts: a path, a PIL image or an (H, W[, 3|4]) array.
ImageLike = Union[str, Path, Image.Image, np.ndarray]

# Ten times a 36 MP camera frame: larger inputs are almost surely bombs or scans that would need
# gigabytes of memory; 100 MP of RGB is 300 MB once decoded.
DEFAULT_MAX_PIXELS = 100_000_000
MAX_PIXELS_ENV = "FASTSAL_MAX_PIXELS"

_max_pixels_override: int | None = None
# Pillow's MAX_IMAGE_PIXELS is one global: swapped only under this lock, and only for the short
# header parse (and the rare load above Pillow's own threshold), so parallel decoding stays parallel.
_PIL_LIMIT_LOCK = threading.Lock()


class ImageError(FastSalError, ValueError):
    """An input image cannot be used; the message names the file and what to do."""


class ImageTooLargeError(ImageError):
    """The image declares more pixels than the limit (a decompression bomb, or a huge scan).

    A subclass so that a server can answer 413 (too large) rather than 422 (damaged) without
    reading messages; everything else still catches it as an :class:`ImageError`.
    """


class UnrecognisedImageError(ImageError):
    """The bytes are no image format Pillow knows (text, HTML, a video...): a server's 415."""


# Leading bytes of the formats in IMAGE_SUFFIXES: how uploads are identified without trusting a
# file name or a client's Content-Type. WebP is "RIFF" + 4 size bytes + "WEBP".
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)


def sniff_format(head: bytes) -> str | None:
    """The image format the first bytes announce (``'JPEG'``, ``'PNG'``, ``'GIF'``, ``'WEBP'``,
    ``'BMP'``, ``'TIFF'``), or None: what a server checks before handing bytes to a decoder, since a
    name like ``photo.jpg`` says nothing about the content. 12 bytes are enough."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    return None


def _check_limit(value: Any, where: str) -> int:
    try:
        limit = int(value)
    except (TypeError, ValueError):
        limit = 0
    if isinstance(value, float) and value != limit or limit < 1:
        raise ImageError(f"{where}: expected a positive whole number of pixels such as 200000000, got {value!r}")
    return limit


def set_max_pixels(limit: int | None) -> None:
    """Set the process-wide pixel limit (``None``: back to ``FASTSAL_MAX_PIXELS`` or the default)."""
    global _max_pixels_override
    _max_pixels_override = None if limit is None else _check_limit(limit, "max_pixels")


def max_pixels() -> int:
    """The pixel limit in force: :func:`set_max_pixels`, else ``FASTSAL_MAX_PIXELS``, else the default."""
    if _max_pixels_override is not None:
        return _max_pixels_override
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    return _check_limit(env, MAX_PIXELS_ENV) if env else DEFAULT_MAX_PIXELS


def _megapixels(n: int) -> str:
    """144000000 -> '144', 100500000 -> '100.5', 1600 -> '0.0016' (limits below 1 MP appear in tests)."""
    v = n / 1e6
    return f"{v:.1f}".removesuffix(".0") if v >= 1 else f"{v:.2g}"


def _refuse_if_too_large(size: tuple[int, int], label: str, limit: int | None) -> None:
    limit = max_pixels() if limit is None else _check_limit(limit, "max_pixels")
    w, h = size
    if w * h > limit:
        raise ImageTooLargeError(f"{label}: {w}x{h} = {_megapixels(w * h)} MP exceeds the {_megapixels(limit)} MP limit; "
                                 f"downscale it or raise the limit with {{option}} (or {MAX_PIXELS_ENV})", option="max_pixels")


def open_header(source: str | Path | IO[bytes]) -> Image.Image:
    """``Image.open`` (header only) with only :data:`DECODE_FORMATS` tried: what every reader of
    image files outside this module calls instead of ``Image.open`` (dataset sizes, saliency maps),
    so that no other Pillow plugin ever sees untrusted bytes."""
    return Image.open(source, formats=DECODE_FORMATS)


def _open_unguarded(source: str | Path | IO[bytes]) -> Image.Image:
    """:func:`open_header` with Pillow's own pixel guard off: ours runs right after."""
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return open_header(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _load_unguarded(img: Image.Image) -> None:
    """``img.load()``; under the lock with Pillow's guard off only where Pillow would warn."""
    threshold = Image.MAX_IMAGE_PIXELS
    if threshold is None or img.size[0] * img.size[1] <= threshold:
        img.load()
        return
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            img.load()
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> 8-bit RGB (see the module docstring for the rules)."""
    # exif_transpose copies even an upright image (192 MB for a 48 MP photo): only call it when
    # the orientation tag asks for a turn
    if img.getexif().get(0x0112, 1) not in (None, 1):
        img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        img = Image.fromarray(_integers_to_uint8(np.asarray(img), 65535), "L")
    elif img.mode == "I":  # 32-bit: 8- or 16-bit data (16-bit PNGs open as I), or a real 32-bit range
        img = Image.fromarray(_integers_to_uint8(np.asarray(img, dtype=np.int64), None, "32-bit integer image"), "L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():  # float TIFFs may hold NaN: it would become arbitrary bytes
            raise ImageError("float image has NaN or inf pixels; replace them before use")
        hi = max(float(arr.max()), 1e-12) if arr.max() > 1.0 else 1.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    elif img.mode == "La":  # premultiplied alpha: Pillow converts it only to LA
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode in ("RGB", "L") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB") if img.mode != "RGB" else img


def _integers_to_uint8(arr: np.ndarray, full_scale: int | None, what: str = "integer image array") -> np.ndarray:
    """Integer pixels -> uint8 by their real range, one rule for files and arrays.

    ``full_scale``: the value that means white when the type says so (65535 for 16-bit data).
    Otherwise the values decide: up to 255 they are 8-bit, up to 65535 16-bit (how 16-bit data
    arrives in 32-bit containers: PNGs opened as mode ``I``, ``uint32`` arrays), and beyond that
    the largest value is white, as for float images above 1. Clipping them to 8 or 16 bits
    instead made a plausible all-white image. Negative values have no agreed meaning: refused.
    """
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        raise ImageError(f"{what} ({arr.dtype}) has negative values (min {lo}); pass values >= 0, "
                         "e.g. 8-bit (0..255) or 16-bit (0..65535)")
    scale = full_scale or (255 if hi <= 255 else 65535 if hi <= 65535 else hi)
    if scale == 255:
        return arr.astype(np.uint8)
    return (arr.astype(np.float64) * (255.0 / scale) + 0.5).astype(np.uint8)


def load_image(path: str | Path | IO[bytes], *, max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode ``path`` (or a binary file object) as RGB; :class:`ImageError` otherwise."""
    return _decode(path, None, max_pixels)[0]


def load_rgb(path: str | Path | IO[bytes], *, max_pixels: int | None = None) -> np.ndarray:
    """``load_image`` as an (H, W, 3) uint8 array."""
    return np.asarray(load_image(path, max_pixels=max_pixels))


def load_resized(path: str | Path | IO[bytes],
                 size: tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]], *,
                 max_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(image resized to ``size`` = (h, w) as (h, w, 3) uint8, the image's own (H, W)).

    ``size`` may be a function of the image's (H, W) (read from the header before decoding):
    :meth:`fastsal.predict.Predictor.input_size_for`, which keeps the image's aspect.

    For prediction, which needs the pixels only at the network's size and the original size only
    as numbers. JPEGs are decoded straight to a reduced scale (libjpeg DCT scaling, PIL ``draft``)
    no smaller than ``size``, before the usual antialiased resize: about 5x faster on 800x600
    photos and far more on camera-sized ones, with maps that differ from a full decode by far
    less than the model's own error (DCT scaling is itself a proper low-pass reduction).
    """
    # tuple(): ``size`` may arrive as a list; it is an (h, w) pair either way
    img, original = _decode(path, size if callable(size) else cast("tuple[int, int]", tuple(size)), max_pixels)
    target = cast("tuple[int, int]", tuple(size(original)) if callable(size) else tuple(size))
    return resize_rgb(img, target), original


_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations that rotate by 90 degrees


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(H, W) of ``img`` once its EXIF orientation is applied, from the header alone: the size of
    the upright image that decoding gives the model and that fixations were recorded in. The one
    owner of the quarter-turn rule (datasets read sizes with it too)."""
    w, h = img.size
    return (w, h) if img.getexif().get(0x0112, 1) in _SWAPS_AXES else (h, w)


def _stream_label(stream: Any) -> str:
    name = getattr(stream, "name", None)
    return str(name) if isinstance(name, (str, Path)) else f"<{type(stream).__name__} image stream>"


def _decode(source: str | Path | IO[bytes],
            draft: tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]] | None,
            limit: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(RGB image, original oriented (H, W)); decoded at a reduced JPEG scale if ``draft`` = (h, w).

    ``source`` is a path or a readable binary file object (servers hand over uploads as streams).
    """
    if hasattr(source, "read"):
        label = _stream_label(source)
    else:
        if not isinstance(source, (str, Path)):
            raise ImageError(_not_an_image_message(source))
        check_not_empty(source)
        path = Path(source)
        label = str(path)
        if not path.exists():
            if path.is_symlink():
                try:
                    path.resolve(strict=True)
                    target = "a missing file"
                except RuntimeError:  # Python < 3.13 reports a loop this way
                    target = "itself (a loop)"
                except OSError as exc:
                    target = "itself (a loop)" if exc.errno == errno.ELOOP else f"a missing file ({os.readlink(path)})"
                raise ImageError(f"{path}: a symbolic link to {target}; fix or remove the link")
            raise ImageError(f"{path}: no such file")
        _refuse_non_regular(path)
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: empty file (0 bytes); re-export or remove it")
        source = path
    try:
        with _open_unguarded(source) as img:
            _refuse_if_too_large(img.size, label, limit)
            h, w = oriented_size(img)
            if draft is not None and img.format == "JPEG":
                draft_size = draft((h, w)) if callable(draft) else draft
                side = max(draft_size)  # either orientation must still cover the target size
                img.draft("RGB", (side, side))
            _load_unguarded(img)
            if 0 in img.size:
                raise ImageError(f"{label}: image has no pixels ({img.size[0]}x{img.size[1]}); re-export it")
            return _labelled(to_rgb, img, label), (h, w)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise UnrecognisedImageError(f"{label}: not a recognised image format; convert it to JPEG or PNG") from None
    except Image.DecompressionBombError as exc:  # a frame or tile larger than the header said
        raise ImageTooLargeError(f"{label}: image too large to decode safely ({exc}); downscale it") from None
    except (PermissionError, IsADirectoryError) as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror}); check the path and its permissions") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({exc}); re-export it") from None


def check_not_empty(path: str | os.PathLike[str], what: str = "image path") -> None:
    """Refuse an empty path: ``Path('')`` is the current folder, so an unset shell variable
    (``fastsal predict "$IMAGES"``) would otherwise run over the whole working tree."""
    if isinstance(path, str) and not path.strip():
        raise ImageError(f"{what} is empty ({path!r}); pass a file or folder (an unset variable?)")


def _refuse_non_regular(path: Path) -> None:
    """Refuse what is not a regular file before it is opened: a FIFO named like an image blocks
    ``open()`` forever, a device may never end; a folder is either an unreadable folder of an
    input tree (listed by :func:`find_images` so that its loss is reported, with the reason)
    or a folder passed where an image was expected."""
    mode = path.stat().st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            raise ImageError(f"{path}: cannot read this folder ({exc.strerror}); the images in it were left out; "
                             "fix its permissions and rerun") from None
        raise ImageError(f"{path}: is a folder, not an image; pass an image file")
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise ImageError(f"{path}: {kind}, not an image file; pass a regular image file")


def _not_an_image_message(image: Any) -> str:
    if image is None:
        return "image is None; pass a file path, a PIL image, a NumPy array or a binary file object"
    if isinstance(image, (bytes, bytearray, memoryview)):
        return (f"got {type(image).__name__} ({len(image)} bytes); pass a path as str or pathlib.Path, "
                "or encoded image data as io.BytesIO(data)")
    return (f"cannot use a {type(image).__name__} as an image; pass a file path, a PIL image, "
            "a NumPy array or a binary file object")


def _pil_to_rgb(image: Image.Image, limit: int | None) -> np.ndarray:
    """A PIL image (perhaps opened lazily and never loaded) -> (H, W, 3) uint8, or :class:`ImageError`."""
    label = str(getattr(image, "filename", "") or "PIL image")
    w, h = image.size
    if w == 0 or h == 0:
        raise ImageError(f"{label}: image has no pixels ({w}x{h}); pass an image of at least 1x1")
    if getattr(image, "tile", None):  # opened but not decoded yet: the header's size is all we trust
        if image.format not in (None, *DECODE_FORMATS):  # decoding would run that plugin (EPS: Ghostscript)
            raise UnrecognisedImageError(f"{label}: a {image.format} image; fastsal decodes only "
                                         f"{', '.join(DECODE_FORMATS)}; convert it to JPEG or PNG")
        _refuse_if_too_large(image.size, label, limit)
        if getattr(image, "fp", None) is None:  # Pillow would fail an internal assert
            raise ImageError(f"{label}: the PIL image was closed before it was decoded; "
                             "call .load() inside the `with Image.open(...)` block")
        try:
            _load_unguarded(image)
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{label}: image too large to decode safely ({exc}); downscale it") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageError(f"{label}: corrupt or truncated image ({exc}); re-export it") from None
    return np.asarray(_labelled(to_rgb, image, label))


def _labelled(convert: Any, image: Image.Image, label: str) -> Image.Image:
    """``convert(image)`` with ``label`` (the file) put in front of an :class:`ImageError` it raises."""
    try:
        return convert(image)
    except ImageError as exc:
        raise ImageError(f"{label}: {exc}") from None


_ARRAY_KINDS = "uif"  # unsigned, signed integers and floats; bool, complex, object, strings are refused


def as_rgb_array(image: Any, *, max_pixels: int | None = None) -> np.ndarray:
    """Path, binary file object, PIL image or array (H, W), (H, W, 3), (H, W, 4) -> (H, W, 3) uint8.

    Anything else, and arrays that would give a plausible-looking but meaningless map (NaN or inf,
    bool, complex, empty), raise :class:`ImageError` with one line saying what to pass instead.
    ``max_pixels`` applies to what is decoded here (files, streams, lazily opened PIL images).
    """
    if image is None or isinstance(image, (bytes, bytearray, memoryview)):
        raise ImageError(_not_an_image_message(image))
    if isinstance(image, (str, Path)) or hasattr(image, "read"):
        return load_rgb(image, max_pixels=max_pixels)
    if isinstance(image, os.PathLike):
        return as_rgb_array(os.fspath(image), max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image, max_pixels)
    try:
        arr = np.asarray(image)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"cannot read a {type(image).__name__} as an image array ({exc}); pass an (H, W, 3) uint8 array") from None
    if arr.dtype.kind not in _ARRAY_KINDS:
        raise ImageError(f"image array has dtype {arr.dtype}; pass uint8 (0..255), uint16 or float (0..1 or 0..255) values")
    if arr.size == 0:
        raise ImageError(f"image array is empty (shape {arr.shape}); pass an image of at least 1x1")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageError(f"image array must be (H, W), (H, W, 3) or (H, W, 4); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise ImageError(f"image array ({arr.dtype}, shape {arr.shape}) contains NaN or inf; "
                                 "replace them (e.g. np.nan_to_num) first")
            arr = np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0) + 0.5, 0, 255).astype(np.uint8)
        else:
            arr = _integers_to_uint8(arr, 65535 if arr.dtype == np.uint16 else None)
    if arr.shape[2] == 4:
        return np.asarray(to_rgb(Image.fromarray(arr, "RGBA")))
    return np.ascontiguousarray(arr)


def resize_rgb(image: np.ndarray | Image.Image, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image (or an RGB PIL image) to ``size`` = (H, W) as (H, W, 3) uint8.

    Antialiased bilinear filtering. A PIL image is resized as it is: converting it to an array
    and back first costs as much as the resize itself.
    """
    h, w = size
    if not isinstance(image, Image.Image):
        if image.shape[:2] == (h, w):
            return image
        image = Image.fromarray(image)
    return np.asarray(image if image.size == (w, h) else image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None))


def to_input(rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (3, h, w) float32 RGB in [0, 1], resized to ``size`` = (h, w) when given.

    The one conversion from a decoded image to the network's input (the predictor, the teachers,
    int8 calibration and exported graphs' callers all use it), so every path feeds the same numbers.
    """
    small = resize_rgb(rgb, size) if size is not None else rgb
    return np.ascontiguousarray(small.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def load_input(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An image file -> (3, h, w) float32 in [0, 1] at ``size``, fully decoded as for prediction
    (:func:`load_rgb`, then :func:`to_input`): what int8 calibration feeds the graph."""
    return to_input(load_rgb(path), (int(size[0]), int(size[1])))


#: The most elongated network input: a panorama or a 1x10000 strip beyond 4:1 is squashed to 4:1,
#: since a 32 x 7000 input would cost many times the budget and hold one row of features.
MAX_INPUT_ASPECT = 4.0


def fit_input_size(shape: Sequence[int], budget: Sequence[int], multiple: int = STRIDE) -> tuple[int, int]:
    """The network input (H, W) for an image of ``shape`` (H, W): its aspect, about the pixel count
    of ``budget`` (H, W), each side a multiple of ``multiple``.

    Squashing a portrait photo into a landscape input distorts every object the network knows;
    keeping the aspect at the same pixel budget costs the same. Sides are rounded to the nearest
    multiple (the encoder's output stride), at least one multiple. A 4:3 image with budget
    192x256 gets exactly 192x256; a 3:4 portrait gets 256x192. Aspects beyond
    :data:`MAX_INPUT_ASPECT` are clamped to it.
    """
    h, w = float(shape[0]), float(shape[1])
    if not (h > 0 and w > 0):
        raise ValueError(f"image shape must be positive; got {tuple(shape)}")
    pixels = float(budget[0]) * float(budget[1])
    aspect = min(max(w / h, 1.0 / MAX_INPUT_ASPECT), MAX_INPUT_ASPECT)
    side_h = math.sqrt(pixels / aspect)
    side_w = pixels / side_h
    return round_to_stride(side_h, multiple), round_to_stride(side_w, multiple)


def find_images(paths: list[str | Path], suffixes: tuple[str, ...] | list[str] = IMAGE_SUFFIXES) -> list[tuple[Path, Path]]:
    """Expand files and folders (recursively) into (image path, path relative to its input root).

    The relative path lets outputs mirror the input tree. Files given explicitly are kept even if
    their suffix is unusual (they will be reported if they fail to decode); folder contents are
    filtered by ``suffixes``. Sorted for a deterministic order (and deterministic sharding).

    Nothing found may vanish silently: a dangling or looping link, a FIFO or a device with an
    image name is kept (decoding refuses it by name), and so is a folder that cannot be listed
    (``chmod 000``): decoding it reports the reason, so the run lists it among its failures.
    """
    found: list[tuple[Path, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for f in sorted(walk_images(p, suffixes)):  # p itself when it cannot be listed: named as a file would be
                found.append((f, f.relative_to(p) if f != p else Path(p.name)))
        else:
            found.append((p, Path(p.name)))
    return found


def is_image_name(name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> bool:
    """Whether a file called ``name`` counts as an image in a folder: one of ``suffixes`` (any case)
    and not hidden (no leading ``.``: editors' and file managers' side files)."""
    return not name.startswith(".") and Path(name).suffix.lower() in suffixes


def walk_images(root: Path, suffixes: Sequence[str] = IMAGE_SUFFIXES, *, hidden_folders: bool = True,
                unreadable: bool = True) -> list[Path]:
    """Entries below ``root`` that are not folders, named with one of ``suffixes`` (any case) and
    not starting with ``.``; unsorted. The one folder walk (predict's inputs, dataset readers,
    evaluated maps), so the suffix and dot-file rules cannot drift between them.

    Links to folders are not followed. ``hidden_folders=False`` also skips everything under a
    folder whose name starts with ``.`` (a dataset's ``.cache/``). ``unreadable``: every folder
    that could not be listed is returned too, so a caller can name it (``Path.rglob`` skipped those
    silently); a caller that only reads what is there passes False.
    """
    failed: list[Path] = []
    found: list[Path] = []
    for folder, dirs, names in os.walk(root, onerror=lambda exc: failed.append(Path(exc.filename))):
        if not hidden_folders:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(folder, n) for n in names if is_image_name(n, suffixes)]
    return found + failed if unreadable else found
