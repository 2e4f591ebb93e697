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
