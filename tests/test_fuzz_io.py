"""Odd inputs to the image readers: every one is a one-line ImageError (or works), never a
traceback or a plausible-looking map from meaningless pixels."""
import io
import re
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from fastsal import images
from fastsal.cli import cli_message
from fastsal.errors import FastSalError
from fastsal.images import ImageError, as_rgb_array, load_image, load_resized


def _jpeg_bytes(h: int = 48, w: int = 64) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory):
    """12000x12000 = 144 MP of zeros: about 140 KB as a PNG, 432 MB once decoded as RGB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (12000, 12000)).save(path)
    assert path.stat().st_size < 1_000_000
    return path


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    assert isinstance(exc, FastSalError) and isinstance(exc, ValueError)
    return text


def test_bomb_refused_from_the_header_without_pillow_warning(bomb_png, monkeypatch):
    def no_decoding(self):
        raise AssertionError("pixel data decoded before the size check")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for reader in (load_image, as_rgb_array, lambda p: load_resized(p, (192, 256))):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail the test
            with pytest.raises(ImageError) as info:
                reader(bomb_png)
        assert cli_message(info.value) == (  # the command line names the flag, Python the keyword
            f"{bomb_png}: 12000x12000 = 144 MP exceeds the 100 MP limit; "
            "downscale it or raise the limit with --max-pixels (or FASTSAL_MAX_PIXELS)")
        assert _one_line(info.value).endswith("raise the limit with max_pixels (or FASTSAL_MAX_PIXELS)")
    with open(bomb_png, "rb") as fh, pytest.raises(ImageError, match="144 MP exceeds"):
        as_rgb_array(fh)
    assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3)  # Pillow's guard restored


def test_lazily_opened_bomb_is_refused(bomb_png, monkeypatch):
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Image.open here is the caller's, with Pillow's guard on
        lazy = Image.open(bomb_png)
    with lazy, pytest.raises(ImageError, match="144 MP exceeds the 100 MP limit"):
        as_rgb_array(lazy)


def test_pixel_limit_per_call_setter_and_env(tmp_path, monkeypatch):
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 30)).save(path)  # 1200 px
    assert load_image(path).size == (40, 30)
    with pytest.raises(ImageError, match="40x30 = 0.0012 MP exceeds the 0.001 MP limit"):
        load_image(path, max_pixels=1000)
    assert load_image(path, max_pixels=1200).size == (40, 30)

    monkeypatch.setenv("FASTSAL_MAX_PIXELS", "1000")
    assert images.max_pixels() == 1000
    with pytest.raises(ImageError, match="exceeds"):
        as_rgb_array(path)
    images.set_max_pixels(5000)  # the setter wins over the environment
    try:
        assert images.max_pixels() == 5000 and as_rgb_array(path).shape == (30, 40, 3)
    finally:
        images.set_max_pixels(None)
    assert images.max_pixels() == 1000
    monkeypatch.setenv("FASTSAL_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="FASTSAL_MAX_PIXELS: expected a positive whole number"):
        load_image(path)
    monkeypatch.delenv("FASTSAL_MAX_PIXELS")
    assert images.max_pixels() == images.DEFAULT_MAX_PIXELS == 100_000_000
    for bad in (0, -5, 2.5, "x"):
        with pytest.raises(ImageError, match="positive whole number"):
            images.set_max_pixels(bad)


def test_lazily_opened_truncated_pil_image(tmp_path):
    path = tmp_path / "cut.jpg"
    data = _jpeg_bytes()
    path.write_bytes(data[: len(data) // 2])
    lazy = Image.open(path)  # the header is intact: opening succeeds, decoding would not
    with pytest.raises(ImageError) as info:
        as_rgb_array(lazy)
    assert _one_line(info.value).startswith(f"{path}: corrupt or truncated image (image file is truncated")


def test_closed_pil_image(tmp_path):
    path = tmp_path / "a.jpg"
    path.write_bytes(_jpeg_bytes())
    with Image.open(path) as img:
        pass
    with pytest.raises(ImageError, match="closed before it was decoded; call .load"):
        as_rgb_array(img)


def test_empty_pil_image():
    with pytest.raises(ImageError) as info:
        as_rgb_array(Image.new("RGB", (0, 0)))
    assert _one_line(info.value) == "PIL image: image has no pixels (0x0); pass an image of at least 1x1"
    with pytest.raises(ImageError, match=r"no pixels \(5x0\)"):
        as_rgb_array(Image.new("L", (5, 0)))


@pytest.mark.parametrize("value, message", [
    (None, "image is None; pass a file path, a PIL image, a NumPy array or a binary file object"),
    (b"/tmp/x.jpg", re.escape("got bytes (10 bytes); pass a path as str or pathlib.Path, or encoded image data as io.BytesIO(data)")),
    (bytearray(b"ab"), re.escape("got bytearray (2 bytes)")),
    ({"a": 1}, "image array has dtype object"),
    (np.zeros((4, 4, 3), dtype=bool), "image array has dtype bool"),
    (np.zeros((4, 4, 3), dtype=complex), "image array has dtype complex128"),
    (np.array([[object(), object()]]), "image array has dtype object"),
    (np.array([["a", "b"]]), "image array has dtype <U1"),
    (np.zeros((0, 0)), r"image array is empty \(shape \(0, 0\)\)"),
    (np.zeros((0, 5, 3), dtype=np.uint8), "image array is empty"),
    (np.array([]), "image array is empty"),
    (np.zeros((4, 4, 2), dtype=np.uint8), "must be"),
    ([[1, 2], [3]], "cannot read a list as an image array"),
])
def test_bad_api_inputs(value, message):
    with pytest.raises(ImageError, match=message) as info:
        as_rgb_array(value)
    _one_line(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_non_finite_float_arrays(bad, dtype):
    arr = np.full((6, 8, 3), 0.5, dtype=dtype)
    arr[2, 3, 1] = bad
    with pytest.raises(ImageError, match="contains NaN or inf") as info:
        as_rgb_array(arr)
    _one_line(info.value)
    with pytest.raises(ImageError, match="NaN or inf"):
        as_rgb_array(arr[..., 1])  # grayscale too


def test_bytesio_and_file_objects_are_decoded(tmp_path):
    data = _jpeg_bytes(48, 64)
    from_path = tmp_path / "a.jpg"
    from_path.write_bytes(data)
    expected = as_rgb_array(from_path)
    np.testing.assert_array_equal(as_rgb_array(io.BytesIO(data)), expected)
    with open(from_path, "rb") as fh:
        np.testing.assert_array_equal(as_rgb_array(fh), expected)
    small, original = load_resized(io.BytesIO(data), (24, 32))
    assert small.shape == (24, 32, 3) and original == (48, 64)
    with pytest.raises(ImageError) as info:
        as_rgb_array(io.BytesIO(b"not an image"))
    assert _one_line(info.value) == "<BytesIO image stream>: not a recognised image format; convert it to JPEG or PNG"
    with pytest.raises(ImageError, match="<BytesIO image stream>: corrupt or truncated"):
        as_rgb_array(io.BytesIO(data[: len(data) // 2]))


def test_pathlike_and_bad_path_types(tmp_path):
    import os

    class Custom(os.PathLike):
        def __fspath__(self):
            return str(tmp_path / "a.jpg")

    (tmp_path / "a.jpg").write_bytes(_jpeg_bytes())
    assert as_rgb_array(Custom()).shape == (48, 64, 3)
    with pytest.raises(ImageError, match="got bytes"):
        load_image(b"/some/path.jpg")
    with pytest.raises(ImageError, match="cannot use a int as an image"):
        load_image(3)


def test_float_tiff_with_nan(tmp_path):
    arr = np.full((8, 10), 0.5, dtype=np.float32)
    arr[3, 4] = np.nan
    path = tmp_path / "f.tif"
    Image.fromarray(arr, "F").save(path)
    with pytest.raises(ImageError) as info:
        load_image(path)
    assert _one_line(info.value) == f"{path}: float image has NaN or inf pixels; replace them before use"
    with pytest.raises(ImageError, match=r"^PIL image: float image has NaN"):
        as_rgb_array(Image.fromarray(arr, "F"))


def test_integer_and_premultiplied_modes(tmp_path):
    """32-bit integers by their real range (not clipped to white), 16-bit data in uint32, mode La."""
    big = np.linspace(0, 3e6, 30 * 40).reshape(30, 40).astype(np.int32)
    Image.fromarray(big, "I").save(tmp_path / "i32.tif")
    assert 0 < as_rgb_array(tmp_path / "i32.tif")[15, 20, 0] < 255
    sixteen = np.linspace(0, 65535, 12).reshape(3, 4)
    np.testing.assert_array_equal(as_rgb_array(sixteen.astype(np.uint32)), as_rgb_array(sixteen.astype(np.uint16)))
    assert as_rgb_array(Image.new("La", (5, 4), (100, 255))).shape == (4, 5, 3)


def test_non_regular_files_and_empty_paths(tmp_path):
    import os

    os.mkfifo(tmp_path / "p.png")
    with pytest.raises(ImageError) as info:
        load_image(tmp_path / "p.png")  # the old code blocked here for ever
    assert _one_line(info.value).endswith("p.png: a FIFO (named pipe), not an image file; pass a regular image file")
    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match="image path is empty"):
        load_image("")
