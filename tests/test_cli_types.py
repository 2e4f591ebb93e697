"""The command line's argparse types: one number factory, so every numeric option says what it
wanted in the same words, and no command module writes its own."""
import argparse
import re
from pathlib import Path

import pytest

from fastsal.cli import types


@pytest.mark.parametrize("parse, text, message", [
    (types.number(int, 1, 4096), "0", "expected a whole number in 1..4096, got '0'"),
    (types.number(int, 1), "x", "expected a whole number >= 1, got 'x'"),
    (types.number(float, 0.0, 1.0, below=True), "1", "expected a number in [0, 1), got '1'"),
    (types.number(float, 0.05, 10.0), "nan", "expected a number in [0.05, 10], got 'nan'"),
    (types.number(float, 0.0, above=True), "0", "expected a finite number > 0, got '0'"),
    (types.number(float, 0.0), "inf", "expected a finite number >= 0, got 'inf'"),
    (types.positive_int, "0", "expected a positive integer, got '0'"),
    (types.nonnegative_int, "-1", "expected an integer >= 0, got '-1'"),
    (types.hxw, "16x64", "each side must be in 32..2048, got '16x64'"),
    (types.hxw, "big", "expected HxW such as 192x256, got 'big'"),
])
def test_refusals_name_what_was_wanted(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError, match="^" + re.escape(message) + "$"):
        parse(text)


def test_values_in_range_pass_through():
    assert types.number(int, 0, 65535)("8000") == 8000
    assert types.number(float, 0.0, 1.0, below=True)("0.5") == 0.5
    assert types.hxw("192X256") == (192, 256)


def test_no_command_module_writes_its_own_argparse_type():
    package = Path(types.__file__).parent
    own = [p.name for p in package.glob("*.py")
           if p.name not in ("types.py", "__init__.py") and "ArgumentTypeError" in p.read_text()]
    assert not own, f"argparse types belong in fastsal/cli/types.py: {own}"
