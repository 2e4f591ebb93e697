"""Library errors carry the parameter they are about as data (``option``), so the Python API names
the keyword and the command line names the flag, from one message."""
import pickle

import pytest

from fastsal.cli import cli_message, flag
from fastsal.errors import FastSalError
from fastsal.training import TrainConfig, TrainError


def test_python_message_names_the_keyword_and_cli_the_flag():
    with pytest.raises(TrainError) as info:
        TrainConfig.from_flat(input_size=(7, 9000))
    exc = info.value
    assert exc.option == "input_size"
    assert str(exc).startswith("input_size must be (height, width)") and "--" not in str(exc)
    assert cli_message(exc).startswith("--input-size must be (height, width)")


def test_message_without_option_is_unchanged_in_both_renderings():
    exc = FastSalError("photo.jpg: not an image; pass a JPEG or PNG")
    assert str(exc) == cli_message(exc) == "photo.jpg: not an image; pass a JPEG or PNG"


def test_flag_spelling():
    assert flag("input_size") == "--input-size" and flag("threads") == "--threads"


def test_the_parameter_survives_a_process_boundary():
    exc = pickle.loads(pickle.dumps(TrainError("{option} is empty", option="data_dir")))
    assert type(exc) is TrainError and exc.option == "data_dir"
    assert str(exc) == "data_dir is empty" and cli_message(exc) == "--data-dir is empty"


def test_an_error_that_is_also_an_oserror_keeps_its_fields(tmp_path):
    """DiskFullError is a FastSalError and an OSError(ENOSPC, strerror, filename): both bases' fields hold."""
    import errno

    from fastsal.files import DiskFullError

    exc = DiskFullError(tmp_path / "out.png")
    assert exc.errno == errno.ENOSPC and exc.filename == str(tmp_path / "out.png")
    assert str(exc).startswith(f"{tmp_path / 'out.png'}: ") and exc.option is None



@pytest.mark.parametrize("make, python, cli", [
    (lambda: __import__("fastsal.tta", fromlist=["TTA"]).TTA.parse("flop"),
     "tta 'flop': cannot read 'flop'", "--tta 'flop': cannot read 'flop'"),
    (lambda: __import__("fastsal.tta", fromlist=["TTA"]).TTA.parse("scales=16x16"),
     "tta 'scales=16x16': scale '16x16' needs each side in 32..2048",
     "--tta 'scales=16x16': scale '16x16' needs each side in 32..2048"),
])
def test_tta_errors_name_the_keyword_or_the_flag(make, python, cli):
    from fastsal.tta import TTAError

    with pytest.raises(TTAError) as info:
        make()
    assert str(info.value).startswith(python) and cli_message(info.value).startswith(cli)


def test_image_too_large_names_max_pixels_or_its_flag(tmp_path):
    from PIL import Image

    from fastsal.images import ImageTooLargeError, load_image

    path = tmp_path / "big.png"
    Image.new("RGB", (40, 30)).save(path)
    with pytest.raises(ImageTooLargeError) as info:
        load_image(path, max_pixels=1000)
    assert str(info.value).endswith("raise the limit with max_pixels (or FASTSAL_MAX_PIXELS)")
    assert cli_message(info.value).endswith("raise the limit with --max-pixels (or FASTSAL_MAX_PIXELS)")


def test_predict_plan_errors_name_out_and_camera(tmp_path):
    from fastsal.batch import BatchError, plan_predict

    with pytest.raises(BatchError) as info:
        plan_predict(["a.jpg", "b.jpg"], tmp_path / "clip.mp4")
    assert info.value.option == "out" and str(info.value).startswith(f"out {tmp_path / 'clip.mp4'}: a video file")
    assert cli_message(info.value).startswith(f"-o {tmp_path / 'clip.mp4'}: a video file output takes exactly one")
    with pytest.raises(BatchError) as info:
        plan_predict(["a.jpg"], camera=0)
    assert str(info.value) == "camera takes no other inputs (paths or a list file)"
    assert cli_message(info.value) == "--camera takes no other inputs (paths or a list file)"


def test_pseudo_label_dataset_error_names_dataset_or_its_flag(tmp_path, monkeypatch):
    from fastsal import pseudo_label
    from fastsal.data import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda name, root, split: [])
    with pytest.raises(pseudo_label.PseudoLabelError) as info:
        pseudo_label.dataset_jobs("osie", tmp_path, "val")
    assert str(info.value) == f"dataset osie (split val): no images in {tmp_path}"
    assert cli_message(info.value) == f"--dataset osie (split val): no images in {tmp_path}"


def test_flags_that_are_not_the_keyword_with_dashes():
    assert flag("out") == "-o" and flag("list_file") == "--list" and flag("budget_min") == "--budget"
    assert flag("allow_short") == "--allow-short-video" and flag("cors_origins") == "--cors-origin"
