"""Issue 23, inputs: thread bounds, unreadable folders, 32-bit integer images, NaN batches, FIFOs
and blocked workers, odd-but-valid images, empty paths and the decoder allow-list. Each test
failed on the code before the fix."""
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image

import fastsal
from fastsal import batch, cpu
from fastsal.cli import main
from fastsal.errors import FastSalError
from fastsal.images import DECODE_FORMATS, ImageError, UnrecognisedImageError, as_rgb_array, find_images, load_rgb
from fastsal.predict import PredictError, example_image
from fastsal.runtime import EngineError, installed

FAST = ["--threads", "1", "--workers", "0", "-q"]


def jpg(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def cli(argv, capsys):
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


@pytest.fixture(scope="module")
def predictor():
    return fastsal.load(backend="torch", threads=1)


# -- 1. thread and worker counts ------------------------------------------------------------------
@pytest.fixture
def two_cpus(monkeypatch):
    monkeypatch.setattr(cpu, "available_cpus", lambda: 2)
    return cpu.THREADS_PER_CPU * 2


@pytest.mark.parametrize("flag", ["--threads", "--workers"])
def test_cli_refuses_thread_counts_above_the_bound(tmp_path, capsys, two_cpus, flag):
    rc, _, err = cli(["predict", example_image(), "-o", tmp_path / "o", flag, "100000", "-q"], capsys)
    assert rc == 2 and f"argument {flag}: 100000 exceeds {two_cpus}" in err and not (tmp_path / "o").exists()
    assert err.strip().splitlines()[-1].startswith("fastsal predict: error:")


def test_cli_accepts_counts_up_to_the_bound(tmp_path, capsys, two_cpus):
    rc, _, err = cli(["predict", example_image(), "-o", tmp_path / "o", "--workers", str(two_cpus), "--threads", "1",
                      "-q"], capsys)
    assert rc == 0, err


def test_api_and_server_refuse_thread_counts_above_the_bound(two_cpus, predictor, tmp_path):
    with pytest.raises(PredictError, match=f"threads 100000 exceeds {two_cpus}, the most this machine can use"):
        fastsal.load(threads=100000)
    from fastsal.serve.config import ServeConfig, ServeError

    with pytest.raises(ServeError, match="threads 9 exceeds 8"):
        ServeConfig(threads=9)
    assert ServeConfig(threads=8).threads == 8
    from fastsal.training import TrainConfig, TrainError

    with pytest.raises(TrainError, match="threads 100 exceeds 8"):
        TrainConfig.from_flat(threads=100)
    with pytest.raises(batch.BatchError, match="workers 1000 exceeds 8"):
        batch.run(predictor, [], tmp_path / "o", workers=1000, progress=False)
    with pytest.raises(FastSalError):
        cpu.check_threads(True)


def test_the_bound_follows_the_cpus_available():
    assert cpu.max_threads() == cpu.THREADS_PER_CPU * cpu.available_cpus() >= cpu.THREADS_PER_CPU
    assert cpu.available_cpus() <= (os.cpu_count() or 1)


# -- 5. an unreadable folder inside the input tree -----------------------------------------------
def _deny(monkeypatch, locked: Path) -> None:
    """``locked`` cannot be listed, as a chmod 000 folder for a normal user (tests run as root)."""
    real = os.scandir

    def scandir(path="."):
        if not isinstance(path, int) and Path(os.fsdecode(path)) == locked:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_folder_is_listed_as_a_failure(tmp_path, capsys, monkeypatch):
    jpg(tmp_path / "in" / "a.jpg")
    jpg(tmp_path / "in" / "locked" / "b.jpg")
    _deny(monkeypatch, tmp_path / "in" / "locked")
    assert [rel.as_posix() for _, rel in find_images([tmp_path / "in"])] == ["a.jpg", "locked"]
    out = tmp_path / "out"
    rc, _, err = cli(["predict", tmp_path / "in", "-o", out, "--threads", "1", "--workers", "0"], capsys)
    assert rc == 0 and "(1 failed" in err and "locked: cannot read this folder (Permission denied)" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert [Path(f["input"]).name for f in manifest["failed"]] == ["locked"]
    assert "Permission denied" in manifest["failed"][0]["error"] and (out / "a.png").is_file()
    rc, _, err = cli(["predict", tmp_path / "in", "-o", tmp_path / "strict", "--strict", *FAST], capsys)
    assert rc == 2 and "cannot read this folder" in err


def test_unreadable_input_folder_itself_exits_as_a_failed_input(tmp_path, capsys, monkeypatch):
    jpg(tmp_path / "in" / "b.jpg")
    _deny(monkeypatch, tmp_path / "in")
    rc, _, err = cli(["predict", tmp_path / "in", "-o", tmp_path / "out", "--threads", "1", "--workers", "0"], capsys)
    assert rc == 1 and "0 maps" in err and "cannot read this folder" in err


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/setpriv").exists(), reason="needs root and setpriv")
def test_chmod_000_folder_as_a_normal_user(request):
    """The real thing: a normal user and a chmod 000 folder (root can read every folder)."""
    import shutil
    import tempfile

    tmp_path = Path(tempfile.mkdtemp(prefix="fastsal-perm-", dir="/tmp"))  # pytest's own is 0700: no way in
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    jpg(tmp_path / "in" / "a.jpg")
    jpg(tmp_path / "in" / "locked" / "b.jpg")
    for p in (tmp_path, tmp_path / "in", tmp_path / "in" / "a.jpg"):
        os.chmod(p, 0o755)
    os.chmod(tmp_path / "in" / "locked", 0)
    script = textwrap.dedent("""
        import sys
        from fastsal.images import ImageError, find_images, load_rgb
        found = find_images([sys.argv[1]])
        print([r.as_posix() for _, r in found])
        try:
            load_rgb(found[-1][0])
        except ImageError as exc:
            print(exc)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(fastsal.__file__).parents[1])}
    try:
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                               script, str(tmp_path / "in")], capture_output=True, text=True, env=env, timeout=120)
    finally:
        os.chmod(tmp_path / "in" / "locked", 0o755)
    if proc.returncode != 0:
        pytest.skip(f"cannot run as another user here: {proc.stderr.strip()[-200:]}")
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "['a.jpg', 'locked']"
    assert lines[1].endswith("locked: cannot read this folder (Permission denied); the images in it were left out; "
                             "fix its permissions and rerun")


# -- 6. 32-bit integer images -------------------------------------------------------------------
def test_32_bit_tiff_is_scaled_by_its_range_not_clipped(tmp_path):
    ramp = np.linspace(0, 4_000_000, 40 * 30).reshape(30, 40).astype(np.int32)
    path = tmp_path / "deep32.tif"
    Image.fromarray(ramp, "I").save(path)
    with Image.open(path) as img:
        assert img.mode == "I"
    rgb = load_rgb(path)
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255
    assert abs(int(rgb[15, 20, 0]) - round(255 * ramp[15, 20] / ramp.max())) <= 1  # linear, not all white
    sixteen = np.linspace(0, 65535, 40 * 30).reshape(30, 40).astype(np.int32)  # 16-bit data in mode I (PNG)
    Image.fromarray(sixteen, "I").save(tmp_path / "deep16.tif")
    assert load_rgb(tmp_path / "deep16.tif")[15, 20, 0] == round(255 * sixteen[15, 20] / 65535)


def test_32_bit_arrays_are_scaled_by_their_range():
    data16 = np.linspace(0, 65535, 48).reshape(6, 8).astype(np.uint16)
    np.testing.assert_array_equal(as_rgb_array(data16.astype(np.uint32)), as_rgb_array(data16))
    np.testing.assert_array_equal(as_rgb_array(data16.astype(np.int64)), as_rgb_array(data16))
    big = (np.arange(48, dtype=np.uint32).reshape(6, 8) * 100_000)
    assert as_rgb_array(big)[-1, -1, 0] == 255 and as_rgb_array(big)[0, 0, 0] == 0
    eight = np.arange(48, dtype=np.int64).reshape(6, 8) * 5  # plain Python/NumPy ints of 8-bit data
    np.testing.assert_array_equal(as_rgb_array(eight)[..., 0], eight.astype(np.uint8))
    with pytest.raises(ImageError, match="negative values"):
        as_rgb_array(np.full((4, 4), -3, np.int32))
    tif = io.BytesIO()
    Image.fromarray(np.full((4, 4), -5, np.int32), "I").save(tif, format="TIFF")
    with pytest.raises(ImageError, match="32-bit integer image .* negative values"):
        as_rgb_array(io.BytesIO(tif.getvalue()))


# -- 7. non-finite batches are refused before any engine ------------------------------------------
@pytest.mark.parametrize("engine", ["torch", "onnxruntime", "openvino"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_every_engine_refuses_a_non_finite_batch(engine, bad):
    if not installed(engine):
        pytest.skip(f"{engine} not installed")
    model = fastsal.load("fastsal_a", backend=engine, threads=1, input_size=(64, 96))
    batch_ = np.full((2, 3, *model.runner.input_size), 0.5, np.float32)
    assert np.isfinite(model.runner(batch_)).all()
    batch_[1, 2, 3, 4] = bad
    with pytest.raises(EngineError, match="contains NaN or inf values"):
        model.runner(batch_)


# -- 8. FIFOs and blocked workers ---------------------------------------------------------------
def test_fifo_named_like_an_image_is_refused_without_opening_it(tmp_path):
    """Run in a child process: on the old code open() blocked forever and the timeout fails it."""
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "pipe.png")
    jpg(tmp_path / "in" / "a.jpg")
    proc = subprocess.run([sys.executable, "-m", "fastsal", "predict", str(tmp_path / "pipe.jpg"), "-o",
                           str(tmp_path / "o1"), *FAST], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 1 and "pipe.jpg: a FIFO (named pipe), not an image file" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "fastsal", "predict", str(tmp_path / "in"), "-o",
                           str(tmp_path / "o2"), "--threads", "1"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and "(1 failed" in proc.stderr and "a FIFO (named pipe)" in proc.stderr
    assert (tmp_path / "o2" / "a.png").is_file()


_BLOCKED = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    import fastsal.predict
    marker = Path(sys.argv[1])

    def blocked(*args, **kwargs):  # a decode that never returns (a hung network mount)
        marker.write_text("blocked")
        threading.Event().wait()

    fastsal.predict.load_resized = blocked  # what Predictor.read, the one decode step, calls
    sys.argv = ["fastsal", *sys.argv[2:]]
    from fastsal.cli import entry
    entry()
""")


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_a_batch_whose_worker_is_blocked(tmp_path, sig, code):
    for i in range(3):
        jpg(tmp_path / "in" / f"{i}.jpg")
    marker = tmp_path / "blocked"
    proc = subprocess.Popen([sys.executable, "-c", _BLOCKED, str(marker), "predict", str(tmp_path / "in"), "-o",
                             str(tmp_path / "out"), "--backend", "torch", "--threads", "1", "--workers", "2", "-q"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not marker.exists() and proc.poll() is None:
            time.sleep(0.05)
        assert marker.exists(), "the worker never started"
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)  # the old code waited for the blocked worker forever
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert not manifest["complete"] and manifest["written"] == []


# -- 9. odd but valid images and sizes --------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (1, 10000), (10000, 1)])
def test_crop_show_on_tiny_and_thin_images(tmp_path, capsys, size):
    Image.new("RGB", size, (9, 9, 9)).save(tmp_path / "x.png")
    rc, _, err = cli(["crop", tmp_path / "x.png", "-o", tmp_path / "c", "--show", "--threads", "1", "-q"], capsys)
    assert rc == 0, err
    with Image.open(tmp_path / "c" / "x_crops.jpg") as img:
        assert img.size == size


def test_premultiplied_alpha_image(predictor):
    img = Image.new("La", (20, 10), (128, 255))
    assert as_rgb_array(img).shape == (10, 20, 3)
    assert predictor.predict(img).shape == (10, 20)
    rgba = Image.new("RGBa", (20, 10), (10, 20, 30, 255))
    assert as_rgb_array(rgba)[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize("size", [(100000, 100000), (10**9, 32), (16, 64), (32.5, 64), ("a", 3), (64,)])
def test_load_refuses_input_sizes_outside_the_range(size):
    with pytest.raises(PredictError, match=r"each side a whole number in 32\.\.2048") as info:
        fastsal.load(input_size=size)
    assert "\n" not in str(info.value)


# -- 12. empty paths ----------------------------------------------------------------------------
@pytest.mark.parametrize("argv,name", [
    (["predict", ""], "PATH"), (["predict", "{img}", "-o", ""], "--out"), (["predict", "--list", ""], "--list"),
    (["predict", "{img}", "--weights", ""], "--weights"), (["crop", ""], "PATH"), (["crop", "{img}", "-o", ""], "--out"),
])
def test_cli_refuses_empty_paths(tmp_path, capsys, monkeypatch, argv, name):
    monkeypatch.chdir(tmp_path)
    jpg(tmp_path / "tree" / "a.jpg")
    argv = [a.replace("{img}", str(tmp_path / "tree" / "a.jpg")) for a in argv]
    rc, _, err = cli(argv, capsys)
    assert rc == 2 and f"fastsal: error: {name} is empty ('')" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tree"]  # nothing written from the working tree


def test_api_refuses_empty_paths(predictor):
    with pytest.raises(ImageError, match="image path is empty"):
        load_rgb("")
    with pytest.raises(ImageError, match="image path is empty"):
        predictor.predict(" ")
    with pytest.raises(ImageError, match="input path is empty"):
        batch.collect([""])
    with pytest.raises(fastsal.ModelError, match="weights path is empty"):
        fastsal.load("")


# -- 15. only the listed formats are decoded -------------------------------------------------------
EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
       b"newpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n")


def _other_formats() -> dict[str, bytes]:
    found = {"EPS": EPS, "PDF": b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n",
             "SVG": b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'}
    for fmt in ("PCX", "TGA", "ICO", "PPM", "SGI", "XBM", "DDS", "QOI"):
        buf = io.BytesIO()
        try:
            Image.new("RGB" if fmt != "XBM" else "1", (16, 16)).save(buf, format=fmt)
        except (KeyError, OSError, ValueError):
            continue
        found[fmt] = buf.getvalue()
    return found


@pytest.fixture
def no_foreign_decoder(monkeypatch):
    """Fails the test if the EPS plugin (Ghostscript) or any decoder outside the allow-list runs."""
    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append("Ghostscript"))
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: ran.append("EPS"))
    real_open = Image.open

    def spy(fp, mode="r", formats=None):
        img = real_open(fp, mode, formats)
        if img.format not in DECODE_FORMATS:
            ran.append(img.format)
        return img

    monkeypatch.setattr(Image, "open", spy)
    yield ran
    assert ran == []


@pytest.mark.parametrize("fmt", sorted(_other_formats()))
def test_other_formats_are_refused_before_any_decoder(tmp_path, fmt, no_foreign_decoder):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_other_formats()[fmt])
    with pytest.raises(UnrecognisedImageError, match="not a recognised image format"):
        load_rgb(path)
    with pytest.raises(UnrecognisedImageError):
        as_rgb_array(io.BytesIO(path.read_bytes()))


def test_eps_through_cli_predict_and_crop_is_refused(tmp_path, capsys, no_foreign_decoder):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(EPS)
    rc, _, err = cli(["predict", tmp_path / "in" / "x.jpg", "-o", tmp_path / "o.png", *FAST], capsys)
    assert rc == 2 and "not a recognised image format" in err
    jpg(tmp_path / "in" / "good.jpg")
    rc, _, err = cli(["crop", tmp_path / "in", "-o", tmp_path / "c", "--threads", "1"], capsys)
    assert rc == 0 and "(1 failed" in err


def test_lazily_opened_foreign_pil_image_is_refused(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: ran.append("Ghostscript"))
    (tmp_path / "x.eps").write_bytes(EPS)
    with Image.open(tmp_path / "x.eps") as img:  # the user's own open: all plugins
        assert img.format == "EPS"
        with pytest.raises(UnrecognisedImageError, match="a EPS image; fastsal decodes only JPEG"):
            as_rgb_array(img)
    assert ran == []


def test_allowed_formats_still_decode(tmp_path, no_foreign_decoder):
    for fmt, suffix in (("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif"),
                        ("GIF", "gif")):
        Image.new("RGB", (12, 8), (200, 10, 10)).save(tmp_path / f"a.{suffix}", format=fmt)
        assert load_rgb(tmp_path / f"a.{suffix}").shape == (8, 12, 3)
