"""Image decoding: the odd files users have (EXIF rotation, grayscale, alpha, CMYK, 16-bit,
palette) become 8-bit RGB; broken files raise ImageError with a one-line reason."""
import numpy as np
import pytest
import torch
from PIL import Image

from fastsal.images import (
    ImageError,
    as_rgb_array,
    find_images,
    load_image,
    load_rgb,
    resize_rgb,
    to_rgb,
)

torch.set_num_threads(1)


def gradient(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full((h, w), 90)]).astype(np.uint8)


def test_exif_rotated_jpeg_is_transposed(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(gradient(20, 40)).save(path, exif=exif)
    assert Image.open(path).size == (40, 20)  # stored landscape
    rgb = load_rgb(path)
    assert rgb.shape == (40, 20, 3)  # shown portrait
    assert as_rgb_array(Image.open(path)).shape == (40, 20, 3)


def test_exif_rotated_jpeg_prediction_has_displayed_shape(tmp_path):
    import fastsal

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(gradient(20, 40)).save(path, exif=exif)
    assert fastsal.load(threads=1).predict(path).shape == (40, 20)


def test_grayscale(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(gradient(16, 24)[..., 0]).save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (16, 24, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_rgba_composited_over_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 0] = 200
    arr[:, 4:, 3] = 255  # right half opaque red, left half fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    rgb = load_rgb(path)
    assert rgb.shape == (8, 8, 3)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[0, 7]) == (200, 0, 0)
    np.testing.assert_array_equal(as_rgb_array(arr), rgb)


def test_grayscale_alpha_and_transparency_key(tmp_path):
    la = Image.fromarray(np.dstack([np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)]), "LA")
    assert tuple(np.asarray(to_rgb(la))[0, 0]) == (255, 255, 255)
    path = tmp_path / "trns.png"  # grayscale PNG with a tRNS colour key: black is transparent
    arr = np.zeros((4, 4), np.uint8)
    arr[0, 0] = 50
    Image.fromarray(arr, "L").save(path, transparency=0)
    rgb = load_rgb(path)
    assert tuple(rgb[0, 0]) == (50, 50, 50)
    assert tuple(rgb[1, 1]) == (255, 255, 255)


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 10), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    assert Image.open(path).mode == "CMYK"
    rgb = load_rgb(path)
    assert rgb.shape == (10, 12, 3)
    r, g, b = rgb[5, 6].astype(int)
    assert r > 240 and g < 15 and b < 15


def test_16bit_png(tmp_path):
    arr = np.linspace(0, 65535, 10 * 20).reshape(10, 20).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = load_rgb(path)
    assert rgb.shape == (10, 20, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert abs(int(rgb[5, 10, 0]) - round(arr[5, 10] / 257)) <= 1
    dark = tmp_path / "dark16.png"  # a dark 16-bit image stays dark (scaled by 65535, not its max)
    Image.fromarray(np.full((4, 4), 1000, np.uint16)).save(dark)
    assert load_rgb(dark)[0, 0, 0] == 4


def test_palette_png(tmp_path):
    img = Image.fromarray(gradient(12, 16)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    path = tmp_path / "palette.png"
    img.save(path)
    assert Image.open(path).mode == "P"
    rgb = load_rgb(path)
    assert rgb.shape == (12, 16, 3)
    np.testing.assert_array_equal(rgb, np.asarray(img.convert("RGB")))


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([10, 20, 30, 200, 0, 0] + [0] * 762)
    img.putpixel((3, 3), 1)
    path = tmp_path / "ptrns.png"
    img.save(path, transparency=0)
    rgb = load_rgb(path)
    assert tuple(rgb[0, 0]) == (255, 255, 255)
    assert tuple(rgb[3, 3]) == (200, 0, 0)


@pytest.mark.parametrize("fmt, suffix", [("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tiff")])
def test_other_formats(tmp_path, fmt, suffix):
    path = tmp_path / f"img{suffix}"
    Image.fromarray(gradient(9, 13)).save(path, format=fmt)
    assert load_rgb(path).shape == (9, 13, 3)


def test_broken_files_raise_one_line_image_error(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(gradient(64, 64)).save(good, quality=95)
    data = good.read_bytes()
    cases = {
        "empty.jpg": (b"", "empty file"),
        "garbage.jpg": (bytes(range(256)) * 20, "not a recognised image"),
        "truncated.jpg": (data[: len(data) // 2], "corrupt or truncated"),
    }
    for name, (content, reason) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ImageError, match=reason) as info:
            load_image(tmp_path / name)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="is a folder"):
        load_image(folder)


def test_decompression_bomb_is_an_image_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.fromarray(gradient(40, 40)).save(path)
    monkeypatch.setenv("FASTSAL_MAX_PIXELS", "100")  # fastsal's own limit, not Pillow's, applies
    with pytest.raises(ImageError, match="exceeds the 0.0001 MP limit"):
        load_image(path)


def test_as_rgb_array_conversions():
    base = gradient(5, 6)
    np.testing.assert_array_equal(as_rgb_array(base), base)
    np.testing.assert_array_equal(as_rgb_array(base.astype(np.float32) / 255.0), base)
    np.testing.assert_array_equal(as_rgb_array(base.astype(np.uint16) * 257), base)
    gray = as_rgb_array(base[..., 0])
    assert gray.shape == (5, 6, 3) and (gray[..., 2] == base[..., 0]).all()
    np.testing.assert_array_equal(as_rgb_array(Image.fromarray(base)), base)
    for bad in (np.zeros((5, 6, 2)), np.zeros((0, 6, 3)), np.zeros(5)):
        with pytest.raises(ImageError):
            as_rgb_array(bad)


def test_resize_rgb():
    img = gradient(30, 40)
    assert resize_rgb(img, (30, 40)) is img
    out = resize_rgb(img, (12, 16))
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8


def test_find_images_recursive_and_relative(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ["x.jpg", "a/y.PNG", "a/b/z.webp", "a/notes.txt", "a/.hidden.jpg"]:
        (tmp_path / rel).write_bytes(b"")
    found = find_images([tmp_path])
    assert [rel.as_posix() for _, rel in found] == ["a/b/z.webp", "a/y.PNG", "x.jpg"]
    assert all(f.is_file() for f, _ in found)
    single = find_images([tmp_path / "a" / "notes.txt"])  # explicit files are kept as given
    assert single == [(tmp_path / "a" / "notes.txt", tmp_path.joinpath("notes.txt").relative_to(tmp_path))]
