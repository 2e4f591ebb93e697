"""How a library error reads on the command line: its parameter as a flag."""
from __future__ import annotations

from fastsal.errors import FastSalError


class UsageError(FastSalError, ValueError):
    """An error the user can fix; printed as one line."""


# Library errors name keyword parameters; where one reaches the command line, it names the flag.
_PARAM_FLAGS = {"backbone_weights=None": "--backbone-weights none", "backbone_weights=": "--backbone-weights ",
                "resume=False": "--restart"}
# Parameters whose flag is not ``--`` + the name with dashes (see :func:`flag`).
_OPTION_FLAGS: dict[str, str] = {
    "out": "-o",  # every command spells its output -o (also --out)
    "list_file": "--list", "budget_min": "--budget", "allow_short": "--allow-short-video",
    "cors_origins": "--cors-origin", "name_or_path": "--weights",
}


def flag(option: str) -> str:
    """The command line's spelling of a library parameter: ``input_size`` -> ``--input-size``."""
    return _OPTION_FLAGS.get(option, "--" + option.replace("_", "-"))


def cli_message(exc: FastSalError) -> str:
    """A library error as the command line shows it: its parameter (``exc.option``) as a flag, and
    the library's ``param=VALUE`` spellings as flags."""
    message = exc.render(flag)
    for param, text in _PARAM_FLAGS.items():
        message = message.replace(param, text)
    return message
