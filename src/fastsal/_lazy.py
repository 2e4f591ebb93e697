"""Package faces that import their names from submodules on first use (PEP 562).

Why: ``import fastsal`` and ``import fastsal.runtime`` must stay light (the command line's
``--help`` and ``fastsal cache`` run without PyTorch), yet ``fastsal.load`` and
``fastsal.runtime.load_runner`` should work as names of the package.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, table: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package``: ``table`` maps a name to the module that
    defines it; a name is imported once, then kept in the package's ``namespace``."""

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(table))

    return getattr_, dir_
