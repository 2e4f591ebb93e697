"""Saliency-aware cropping: the exact window search, aspect arithmetic, ``fastsal.crop`` and ``fastsal crop``."""
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import fastsal
from fastsal.cli import main
from fastsal.cropping import (
    Crop,
    CropError,
    best_window,
    centre_window,
    crop_box,
    crop_boxes,
    crop_image,
    parse_aspect,
    parse_aspects,
    window_size,
)

FAST = ["--threads", "1", "--quiet", "--backend", "torch"]
ASPECTS = ["16:9", "1:1", "9:16", "4:5"]


def brute_force(dens: np.ndarray, h: int, w: int) -> float:
    """The best h x w window's mass by a plain loop over every position."""
    H, W = dens.shape
    return max(dens[y:y + h, x:x + w].sum() for y in range(H - h + 1) for x in range(W - w + 1))


def make_image(path: Path, h: int = 45, w: int = 61, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


# -- aspects and window sizes ---------------------------------------------------------------------

@pytest.mark.parametrize("text,ratio,label,tag", [
    ("16:9", Fraction(16, 9), "16:9", "16x9"), ("16x9", Fraction(16, 9), "16:9", "16x9"),
    ((4, 5), Fraction(4, 5), "4:5", "4x5"), ("1.91:1", Fraction(191, 100), "1.91:1", "1.91x1"),
    (" 9 : 16 ", Fraction(9, 16), "9:16", "9x16"), (2, Fraction(2), "2:1", "2x1"),
])
def test_parse_aspect(text, ratio, label, tag):
    a = parse_aspect(text)
    assert (a.ratio, a.label, a.tag) == (ratio, label, tag)


@pytest.mark.parametrize("bad", ["0:1", "16:0", "abc", "16:9:1", "-4:5", "", (1, 2, 3), "1000:1", True])
def test_parse_aspect_refuses(bad):
    with pytest.raises(CropError, match="aspect"):
        parse_aspect(bad)


def test_parse_aspects_list_and_duplicates():
    assert [a.label for a in parse_aspects("16:9,1:1,4:5")] == ["16:9", "1:1", "4:5"]
    assert [a.label for a in parse_aspects(["16:9", "32:18", (1, 1)])] == ["16:9", "1:1"]  # same ratio once
    assert [a.label for a in parse_aspects((16, 9))] == ["16:9"]
    with pytest.raises(CropError, match="no aspect"):
        parse_aspects(",")


@pytest.mark.parametrize("size,aspect,expected", [
    ((601, 801), "16:9", (451, 801)),   # full width; 801 * 9 / 16 = 450.5625 -> 451
    ((601, 801), "1:1", (601, 601)),
    ((601, 801), "9:16", (601, 338)),   # 601 * 9 / 16 = 338.0625
    ((601, 801), "4:5", (601, 481)),    # 480.8 -> 481
    ((599, 799), "4:3", (599, 799)),    # 798.67 -> 799: the image is (nearly) 4:3 itself
    ((5, 7), "16:9", (4, 7)),           # 3.9375 -> 4
    ((7, 5), "16:9", (3, 5)),           # 2.8125 -> 3
    ((3, 3), "2:1", (2, 3)),            # 1.5: halves round up
    ((1, 1), "9:16", (1, 1)),           # never below one pixel
    ((1, 1000), "9:16", (1, 1)),
    ((1001, 1), "16:9", (1, 1)),
])
def test_window_size_exact_on_odd_sizes(size, aspect, expected):
    h, w = window_size(size, aspect)
    assert (h, w) == expected
    assert h <= size[0] and w <= size[1] and (h == size[0] or w == size[1])
    r = parse_aspect(aspect).ratio
    # the free side is the nearest whole pixel to the exact ratio (halves up), unless clamped to 1 or the image
    if h == size[0] and 1 < w < size[1]:
        assert abs(Fraction(w) - h * r) <= Fraction(1, 2)
    if w == size[1] and 1 < h < size[0]:
        assert abs(Fraction(h) - w / r) <= Fraction(1, 2)


def test_window_size_scale():
    assert window_size((600, 800), "1:1", 0.5) == (300, 300)
    assert window_size((601, 801), "16:9", 0.5) == (226, 401)  # 400.5 -> 401 wide, 401 * 9 / 16 = 225.56 -> 226
    for bad in (0.0, 1.5, -1, float("nan")):
        with pytest.raises(CropError, match="scale"):
            window_size((10, 10), "1:1", bad)


def test_centre_window_odd_leftover_goes_right_and_down():
    assert centre_window((601, 801), "1:1") == (100, 0, 601, 601)
    assert centre_window((600, 801), "1:1") == (100, 0, 600, 600)  # 201 left over: 100 left, 101 right
    assert centre_window((600, 800), "16:9") == (0, 75, 800, 450)


# -- the search on hand-made maps -----------------------------------------------------------------

@pytest.mark.parametrize("size", [(60, 100), (61, 101), (7, 13), (100, 60), (1, 9)])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_uniform_map_gives_the_centred_box(size, aspect):
    uniform = np.full(size, 1.0 / (size[0] * size[1]), dtype=np.float32)
    c = crop_box(uniform, aspect)
    assert c.box == centre_window(size, aspect)
    assert c.score == pytest.approx(c.w * c.h / (size[0] * size[1]))
    # also when the map is coarser than the image, and when it is block-summed first
    assert crop_box(np.ones((6, 10)), aspect, image_size=(size[0] * 10, size[1] * 10)).box == \
        centre_window((size[0] * 10, size[1] * 10), aspect)
    assert crop_box(uniform, aspect, max_side=4).box == centre_window(size, aspect)
    assert crop_box(uniform, aspect, scale=0.5).box == centre_window(size, aspect, 0.5)


def test_single_peak():
    dens = np.zeros((60, 100))
    dens[10, 95] = 1.0
    c = crop_box(dens, "1:1")
    assert c.box == (36, 0, 60, 60)  # every x in 36..40 keeps the peak; the centred x = 20 does not: 36 is closest
    assert c.score == pytest.approx(1.0)
    dens[:] = 0
    dens[30, 50] = 1.0  # a central peak: every window containing it ties, the centred one wins
    assert crop_box(dens, "1:1").box == (20, 0, 60, 60)


def test_two_peaks():
    dens = np.zeros((60, 200))
    dens[30, 10], dens[30, 180] = 0.3, 0.7
    c = crop_box(dens, "1:1")
    assert c.x <= 180 < c.x + c.w and c.score == pytest.approx(0.7)
    dens[30, 10], dens[30, 180] = 0.7, 0.3
    c = crop_box(dens, "1:1")
    assert c.x <= 10 < c.x + c.w and c.score == pytest.approx(0.7)
    # both fit in one 16:9 window of 60 x 107: it holds both, not just the heavier
    dens[:] = 0
    dens[30, 40], dens[30, 120] = 0.4, 0.6
    c = crop_box(dens, "16:9")
    assert (c.w, c.h) == (107, 60) and c.x <= 40 and 120 < c.x + c.w and c.score == pytest.approx(1.0)


def test_portrait_image_slides_vertically():
    dens = np.zeros((200, 60))
    dens[170, 30] = 1.0
    c = crop_box(dens, "16:9")
    assert (c.x, c.w, c.h) == (0, 60, 34) and c.y <= 170 < c.y + c.h and c.score == pytest.approx(1.0)


def test_sat_search_matches_brute_force_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(150):
        H, W = (int(v) for v in rng.integers(1, 13, 2))
        dens = rng.random((H, W)) ** 4
        h, w = int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1))
        x, y, mass = best_window(dens, (h, w))
        assert mass == pytest.approx(brute_force(dens, h, w), abs=1e-12)
        assert mass == pytest.approx(dens[y:y + h, x:x + w].sum(), abs=1e-12)


def test_coarse_map_search_is_exact_per_image_pixel():
    """A map coarser than the image: exact over every pixel position of the image, with each cell's
    mass spread evenly (the same as searching the nearest-neighbour upsampled map pixel by pixel)."""
    rng = np.random.default_rng(1)
    for _ in range(60):
        gh, gw, f = (int(v) for v in (*rng.integers(1, 8, 2), rng.integers(2, 6)))
        cells = rng.random((gh, gw)) ** 4
        full = np.kron(cells, np.ones((f, f))) / f**2
        h, w = int(rng.integers(1, gh * f + 1)), int(rng.integers(1, gw * f + 1))
        x, y, mass = best_window(cells, (h, w), image_size=(gh * f, gw * f))
        assert mass == pytest.approx(brute_force(full, h, w), abs=1e-12)
        assert mass == pytest.approx(full[y:y + h, x:x + w].sum(), abs=1e-12)


def overlap_mass(cells: np.ndarray, image: tuple, x: int, y: int, h: int, w: int) -> float:
    """Mass of a window over a map stretched to ``image`` pixels, by the cells' overlap areas."""
    (gh, gw), (H, W) = cells.shape, image
    ey, ex = np.arange(gh + 1) * H / gh, np.arange(gw + 1) * W / gw
    oy = np.clip(np.minimum(ey[1:], y + h) - np.maximum(ey[:-1], y), 0, None) / np.diff(ey)
    ox = np.clip(np.minimum(ex[1:], x + w) - np.maximum(ex[:-1], x), 0, None) / np.diff(ex)
    return float(oy @ cells @ ox)


def test_search_is_exact_for_maps_of_any_other_resolution():
    """Cells of fractional pixel size (the network's 192x256 map over an 801x601 photo): every
    position is checked by the overlap formula, independently of the SAT and the candidate rule."""
    rng = np.random.default_rng(4)
    for _ in range(40):
        gh, gw = (int(v) for v in rng.integers(1, 7, 2))
        H, W = (int(v) for v in rng.integers(1, 23, 2))
        cells = rng.random((gh, gw)) ** 4
        h, w = int(rng.integers(1, H + 1)), int(rng.integers(1, W + 1))
        best = max(overlap_mass(cells, (H, W), x, y, h, w) for y in range(H - h + 1) for x in range(W - w + 1))
        x, y, mass = best_window(cells, (h, w), image_size=(H, W))
        assert mass == pytest.approx(best, abs=1e-12)
        assert mass == pytest.approx(overlap_mass(cells, (H, W), x, y, h, w), abs=1e-12)


def test_block_summed_map_keeps_mass_and_is_exact_for_the_blocks():
    rng = np.random.default_rng(2)
    dens = rng.random((37, 53))
    c = crop_box(dens, "1:1", max_side=8)  # blocks of 7x7 cells, the last ones smaller
    assert 0 < c.score <= 1 and (c.w, c.h) == (37, 37)
    exact = crop_box(dens, "1:1", max_side=None)
    assert exact.score * dens.sum() == pytest.approx(brute_force(dens, 37, 37))


def test_batch_form_equals_one_at_a_time():
    dens = np.random.default_rng(3).random((48, 64))
    crops = crop_boxes(dens, ASPECTS, image_size=(480, 640))
    assert [c.aspect for c in crops] == ASPECTS
    assert crops == [crop_box(dens, a, image_size=(480, 640)) for a in ASPECTS]


def test_min_scale_zooms_in_on_a_compact_subject():
    dens = np.full((100, 100), 1e-6)
    dens[45:55, 45:55] = 1.0
    full = crop_box(dens, "1:1")
    tight = crop_box(dens, "1:1", min_scale=0.2, keep=0.95)
    assert full.box == (0, 0, 100, 100)
    assert tight.w == tight.h < 100 and tight.scale < 1
    assert tight.x <= 45 and tight.x + tight.w >= 55 and tight.score >= 0.95 * full.score
    # a flat map: the first step down (97.5 % of the side) already loses more than 1 - keep
    assert crop_box(np.ones((100, 100)), "1:1", min_scale=0.5, keep=0.99).box == (0, 0, 100, 100)
    assert crop_box(np.ones((100, 100)), "1:1", min_scale=0.5, keep=0.95).box == (1, 1, 98, 98)


@pytest.mark.parametrize("dens,match", [
    (np.full((4, 4), -1.0), "non-negative"), (np.full((4, 4), np.nan), "finite"), (np.zeros((4, 4)), "mass"),
    (np.zeros((0, 4)), "non-empty"), (np.zeros((2, 2, 2)), "non-empty"), (np.array([["a"]]), "numbers"),
])
def test_bad_maps_are_one_line_errors(dens, match):
    with pytest.raises(CropError, match=match):
        crop_box(dens, "1:1")


def test_bad_options():
    with pytest.raises(CropError, match="does not fit"):
        best_window(np.ones((4, 4)), (5, 2))
    with pytest.raises(CropError, match="min_scale"):
        crop_box(np.ones((4, 4)), "1:1", scale=0.5, min_scale=0.8)
    with pytest.raises(CropError, match="keep"):
        crop_box(np.ones((4, 4)), "1:1", min_scale=0.5, keep=0)


def test_crop_to_dict():
    c = Crop(1, 2, 3, 4, 0.123456789, "16:9")
    assert c.box == (1, 2, 3, 4) and c.pil_box == (1, 2, 4, 6)
    assert c.to_dict() == {"aspect": "16:9", "x": 1, "y": 2, "w": 3, "h": 4, "score": 0.123457, "scale": 1.0}


# -- from images ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictor():
    return fastsal.load(backend="torch", threads=1)


def test_fastsal_crop_on_the_example(predictor):
    path = fastsal.example_image()
    c = fastsal.crop(path, aspect=(16, 9), predictor=predictor)
    W, H = Image.open(path).size
    assert (c.w, c.h) == (W, round(W * 9 / 16)) and 0 <= c.y <= H - c.h and c.x == 0
    assert 0.5 < c.score <= 1.0
    crops = crop_image(path, ASPECTS, predictor=predictor)
    assert [x.aspect for x in crops] == ASPECTS and crops[0] == c
    # the same boxes from the array, and from the full-size map of Predictor.predict
    rgb = np.asarray(Image.open(path).convert("RGB"))
    assert crop_image(rgb, ASPECTS, predictor=predictor)[1].box[2:] == crops[1].box[2:]
    full = crop_boxes(predictor.predict(path), ASPECTS)
    for a, b in zip(full, crops):
        assert abs(a.x - b.x) <= 4 and abs(a.y - b.y) <= 4 and a.score == pytest.approx(b.score, abs=0.01)


def test_cropping_imports_no_torch():
    code = "import sys, fastsal, fastsal.cropping; print(fastsal.crop.__module__, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["fastsal.cropping", "False"]


# -- the command line -----------------------------------------------------------------------------

@pytest.fixture()
def tree(tmp_path):
    make_image(tmp_path / "in" / "sub" / "a.jpg", 45, 61, 0)
    make_image(tmp_path / "in" / "b.png", 80, 31, 1)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not an image")
    return tmp_path


def test_cli_round_trip_and_json_schema(tree, capsys):
    out = tree / "out"
    rc = main(["crop", str(tree / "in"), "-o", str(out), "--aspect", "16:9,1:1,4:5", "--show", *FAST])
    assert rc == 0
    err = capsys.readouterr().err
    assert "fastsal: skipped" in err and "broken.jpg" in err
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["b_16x9.jpg", "b_1x1.jpg", "b_4x5.jpg", "b_crops.jpg", "crops.json",
                     "sub/a_16x9.jpg", "sub/a_1x1.jpg", "sub/a_4x5.jpg", "sub/a_crops.jpg"]
    report = json.loads((out / "crops.json").read_text())
    assert report["format"] == "fastsal-manifest/2" and report["task"] == "crops" and report["complete"] is True
    assert report["aspects"] == ["16:9", "1:1", "4:5"] and report["shard"] == [0, 1]
    assert {"model", "weights_sha256", "input_size", "precision", "blur_sigma", "scale", "min_scale", "keep",
            "max_side"} <= set(report["settings"])
    assert report["assigned"] == 3 and report["skipped_existing"] == 0
    assert [Path(f["input"]).name for f in report["failed"]] == ["broken.jpg"]
    assert "not a recognised image" in report["failed"][0]["error"]
    assert len(report["written"]) == 2
    for entry in report["written"]:
        W, H = Image.open(entry["input"]).size
        assert (entry["width"], entry["height"]) == (W, H)
        assert Image.open(entry["show"]).size == (W, H)
        assert [c["aspect"] for c in entry["crops"]] == ["16:9", "1:1", "4:5"]
        for c in entry["crops"]:
            assert set(c) == {"aspect", "x", "y", "w", "h", "score", "scale", "output"}
            assert (c["h"], c["w"]) == window_size((H, W), c["aspect"])
            assert 0 <= c["x"] <= W - c["w"] and 0 <= c["y"] <= H - c["h"] and 0 < c["score"] <= 1
            assert Image.open(c["output"]).size == (c["w"], c["h"])
    assert not [p for p in out.rglob(".*")]  # no temporaries left

    # resumable: a rerun redoes nothing but the broken file, and keeps every box in the report
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    assert main(["crop", str(tree / "in"), "-o", str(out), "--aspect", "16:9,1:1,4:5", "--show", *FAST]) == 0
    again = json.loads((out / "crops.json").read_text())
    assert again["skipped_existing"] == 2 and len(again["written"]) == 2 and len(again["failed"]) == 1
    assert [e["crops"] for e in again["written"]] == [e["crops"] for e in report["written"]]
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    # a new aspect redoes the images (their boxes for it are missing); another scale is refused
    assert main(["crop", str(tree / "in"), "-o", str(out), "--aspect", "9:16", *FAST]) == 0
    assert (out / "sub" / "a_9x16.jpg").is_file()
    assert main(["crop", str(tree / "in"), "-o", str(out), "--scale", "0.8", *FAST]) == 2
    assert "other settings" in capsys.readouterr().err


def test_cli_strict_stops_at_a_bad_file(tree, capsys):
    out = tree / "out"
    assert main(["crop", str(tree / "in"), "-o", str(out), "--strict", *FAST]) == 2
    assert "broken.jpg" in capsys.readouterr().err
    assert [Path(f["input"]).name for f in json.loads((out / "crops.json").read_text())["failed"]] == ["broken.jpg"]


def test_cli_every_file_bad_exits_1(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    assert main(["crop", str(tmp_path / "x.jpg"), "-o", str(tmp_path / "out"), *FAST]) == 1


def test_cli_json_and_png_formats(tree):
    out = tree / "j"
    assert main(["crop", str(tree / "in" / "b.png"), "-o", str(out), "--format", "json", "--aspect", "1:1", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["crops.json"]
    entry = json.loads((out / "crops.json").read_text())["written"][0]
    assert "output" not in entry["crops"][0] and entry["crops"][0]["w"] == 31
    # json-only runs resume from the report alone
    assert main(["crop", str(tree / "in" / "b.png"), "-o", str(out), "--format", "json", "--aspect", "1:1", *FAST]) == 0
    assert json.loads((out / "crops.json").read_text())["skipped_existing"] == 1
    out = tree / "p"
    assert main(["crop", str(tree / "in" / "b.png"), "-o", str(out), "--format", "png", "--aspect", "1:1", *FAST]) == 0
    assert Image.open(out / "b_1x1.png").format == "PNG"


def test_cli_shards_are_disjoint_and_complete(tree):
    out = tree / "out"
    for i in range(2):
        assert main(["crop", str(tree / "in"), "-o", str(out), "--shard", f"{i}/2", "--aspect", "1:1",
                     "--format", "json", *FAST]) in (0, 1)
    done = []
    for i in range(2):
        rep = json.loads((out / f"crops-{i}-of-2.json").read_text())
        assert rep["shard"] == [i, 2]
        done += [e["input"] for e in rep["written"]] + [f["input"] for f in rep["failed"]]
    assert sorted(Path(p).name for p in done) == ["a.jpg", "b.png", "broken.jpg"]


@pytest.mark.parametrize("argv,match", [
    (["--aspect", "16:0"], "aspect"), (["--aspect", "wide"], "aspect"), (["--scale", "2"], "scale"),
    (["--format", "gif"], "format"),
])
def test_cli_bad_options_are_usage_errors(argv, match, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["crop", str(tmp_path), *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err


def test_cli_min_scale_above_scale(tmp_path, capsys):
    make_image(tmp_path / "a.jpg")
    assert main(["crop", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "o"), "--scale", "0.5", "--min-scale", "0.8",
                 *FAST]) == 2
    assert "--min-scale" in capsys.readouterr().err


def test_crop_report_binds_settings_before_the_first_crop(tree, monkeypatch, capsys):
    """A crop run killed (SIGKILL) after its first files must leave a report naming its settings, so
    a rerun with other settings is refused instead of keeping those crops (issue 23 item 4)."""
    from fastsal import jobs

    out = tree / "out"
    seen = []
    real = jobs.write_result

    def spy(result):
        report = out / "crops.json"
        if result.files:
            seen.append(json.loads(report.read_text())["settings"]["scale"] if report.is_file() else None)
        return real(result)

    monkeypatch.setattr(jobs, "write_result", spy)
    assert main(["crop", str(tree / "in"), "-o", str(out), "--scale", "0.8", *FAST]) == 0
    assert seen and seen[0] == 0.8
