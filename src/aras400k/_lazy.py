"""Lazy package attributes: names whose module is imported on first access.

A package that re-exports a heavy module (one importing torch, Lightning, smp,
transformers, ...) lists it here instead of importing it, so that ``import
aras400k.data`` and the commands' ``--help`` start in a fraction of a second (see
``docs/extending.md``, "Start-up time")::

    __getattr__, __dir__ = lazy_attributes(__name__, {"ShardDataset": "aras400k.data.datasets"}, __all__)

The returned ``__getattr__`` imports the module, stores the value in the package (the
next access is a plain attribute lookup) and returns it; ``__dir__`` lists the
package's public API (``__all__`` and its submodules already imported), not the
helper names (``Any``, ``annotations``, ``importlib``) a module's globals hold.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["lazy_attributes", "public_dir"]


def public_dir(package: str, public: Iterable[str]) -> list[str]:
    """The names ``dir(package)`` shows: ``public`` plus the submodules imported so far.

    Args:
        package: The package's ``__name__``.
        public: Its public names (usually ``__all__``).

    Returns:
        The names, sorted.
    """
    module = sys.modules[package]
    prefix = f"{package}."
    submodules = {
        name
        for name, value in vars(module).items()
        if isinstance(value, ModuleType) and value.__name__ == prefix + name and not name.startswith("_")
    }
    return sorted(set(public) | submodules)


def lazy_attributes(
    package: str, lazy: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module-level ``__getattr__`` and ``__dir__`` (PEP 562).

    Args:
        package: The package's ``__name__``.
        lazy: Attribute name -> module that defines it, imported on first access.
        public: The package's public names (usually ``__all__``), shown by ``dir()``.

    Returns:
        ``(__getattr__, __dir__)``, to assign at the package's top level.
    """
    names = tuple(public)
    unknown = sorted(set(lazy) - set(names))
    if unknown:
        raise ValueError(f"lazy names of {package} missing from its __all__: {', '.join(unknown)}")

    def __getattr__(name: str) -> Any:
        if name not in lazy:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(lazy[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return public_dir(package, names)

    return __getattr__, __dir__
