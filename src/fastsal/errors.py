"""One base class for every error a user can fix, so callers (and ``fastsal``'s command line)
catch one type.

Each module keeps its own subclass (``ImageError``, ``ModelError``, ...) whose message is one line
naming the file or argument and the fix. They also derive from ``ValueError`` for code written
against earlier releases. A plain ``ValueError`` or ``TypeError`` raised inside the library is a
bug, not a user mistake: the command line lets it show as a traceback instead of disguising it.

This module imports nothing, so the command line can use it before it decides whether to load
PyTorch.
"""
from __future__ import annotations

from collections.abc import Callable


class FastSalError(Exception):
    """An error the user can fix; ``str(error)`` is one line naming the file or argument and the fix.

    An error about a parameter carries the parameter's name as data instead of spelling it one
    way: the message writes ``{option}`` where the name goes and passes ``option="input_size"``.
    ``str(error)`` (what Python callers see) names the keyword, ``input_size``; the command line
    renders the same error with its flag, ``--input-size`` (:meth:`render`). So one message serves
    both front ends and the library never speaks in flags.
    """

    def __init__(self, *args: object, option: str | None = None) -> None:
        # Positional arguments pass through unchanged when there is no option, so a subclass that
        # is also an OSError (errno, strerror, filename) keeps OSError's fields.
        self.template = str(args[0]) if args else ""
        self.option = option
        if option is None:
            super().__init__(*args)
        else:
            super().__init__(self.render())

    def render(self, spell: Callable[[str], str] | None = None) -> str:
        """The message with ``{option}`` spelled by ``spell`` (default: the parameter's own name)."""
        if self.option is None:
            return str(self)  # a subclass's own __str__ (DiskFullError's) included
        return self.template.replace("{option}", spell(self.option) if spell else self.option)

    def __reduce__(self):
        # Errors cross process boundaries (worker pools, Ray); keep the parameter, not just the text.
        if self.option is None:
            return super().__reduce__()
        return (_rebuild, (type(self), self.template, self.option))


def _rebuild(cls: type[FastSalError], template: str, option: str | None) -> FastSalError:
    error = cls.__new__(cls)
    FastSalError.__init__(error, template, option=option)
    return error


class FastSalWarning(UserWarning):
    """Something the user should know but need not fix (data left out, a slower path taken);
    ``str(warning)`` is one line. The command line prints it as ``fastsal: warning: ...``."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised where the program is, so that it unwinds exactly like Ctrl-C
    (atomic writers remove partial outputs, manifests and checkpoints are written).

    ``exit_code`` is 128 + the signal number (143), what a shell reports for a process killed by it.
    """

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.name}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none: what a
    one-line error quotes of a library's (often multi-line) complaint."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["FastSalError", "FastSalWarning", "Terminated", "first_line"]
