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
import warnings
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["lazy_attributes", "moved_attributes", "public_dir", "warn_moved_module"]


def public_dir(package: str, public: Iterable[str]) -> list[str]:
    """The names ``dir(package)`` shows, sorted: ``public`` (usually ``__all__``) and the submodules imported."""
    module = sys.modules[package]
    prefix = f"{package}."
    submodules = {
        name
        for name, value in vars(module).items()
        if isinstance(value, ModuleType) and value.__name__ == prefix + name and not name.startswith("_")
    }
    return sorted(set(public) | submodules)


def lazy_attributes(
    package: str, lazy: Mapping[str, str], public: Iterable[str], moved: Mapping[str, str] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module-level ``__getattr__`` and ``__dir__`` (PEP 562).

    Args:
        package: The package's ``__name__``.
        lazy: Attribute name -> module that defines it, imported on first access.
        public: The package's public names (usually ``__all__``), shown by ``dir()``.
        moved: Names that moved to another module, returned with a warning
            (see :func:`moved_attributes`); not shown by ``dir()``.

    Returns:
        ``(__getattr__, __dir__)``, to assign at the package's top level.
    """
    names = tuple(public)
    unknown = sorted(set(lazy) - set(names))
    if unknown:
        raise ValueError(f"lazy names of {package} missing from its __all__: {', '.join(unknown)}")

    old_names = moved_attributes(package, moved or {})

    def __getattr__(name: str) -> Any:
        if name not in lazy:
            return old_names(name)
        value = getattr(importlib.import_module(lazy[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return public_dir(package, names)

    return __getattr__, __dir__


def moved_attributes(module: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for names that moved elsewhere: it warns, then returns them.

    Old import paths keep working for one release after a move; each access says where
    the name lives now (a ``FutureWarning``, shown by default, so users see it)::

        __getattr__ = moved_attributes(__name__, {"SegmenterFeatures": "aras400k.models.features"})

    Args:
        module: The old module's ``__name__``.
        moved: Attribute name -> the module that defines it now.
    """

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(
            f"{module}.{name} moved to {moved[name]}.{name}; the old path will be removed in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__


def warn_moved_module(module: str, new: str) -> None:
    """Warn, from a module kept at its old path (``module``) for one release, that it moved to ``new``."""
    warnings.warn(
        f"{module} moved to {new}; the old path will be removed in the next release", FutureWarning, stacklevel=3
    )
