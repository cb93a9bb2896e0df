"""Griffe extension: turn the Sphinx roles of aras400k's docstrings into API cross-references.

The docstrings cite other objects Sphinx-style (``:class:`Generator```,
``:func:`~aras400k.synthesis.read_checkpoint```). mkdocstrings does not read those
roles and would print them verbatim, so before rendering this extension rewrites each
one: to a link to the object's entry in the API reference (``[`Generator`][path]``)
when the name resolves to an object of ``aras400k`` that the reference renders, and to
inline code otherwise (objects of other libraries, private names, the ``cli`` modules).
A leading ``~`` shows the last component only, as in Sphinx. The source files are not
changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

PACKAGE = "aras400k"
#: ``:role:`target``` or ``:py:role:`~target```, for the roles the docstrings use.
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<name>[^`<>]+)`")


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    """The object and every object defined under it (aliases, i.e. re-exports, excluded)."""
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)  # type: ignore[arg-type]


def _lookup(pkg: griffe.Module, path: str) -> griffe.Object | None:
    """The object at a dotted path inside the package, following re-exports; ``None`` if absent."""
    if path == PACKAGE:
        return pkg
    if not path.startswith(PACKAGE + "."):
        return None
    try:
        found: Any = pkg[path[len(PACKAGE) + 1 :]]
        return found.final_target if found.is_alias else found
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _rendered(target: griffe.Object) -> bool:
    """Whether the API reference renders the object (so a link to it resolves)."""
    parts = target.path.split(".")
    if parts[0] != PACKAGE or (len(parts) > 1 and parts[1] == "cli"):
        return False
    if any(part.startswith("_") for part in parts):
        return False
    if target.is_module:
        return True
    return bool(target.docstring and target.docstring.value.strip())


def _replace(match: re.Match[str], obj: griffe.Object, pkg: griffe.Module) -> str:
    name = match["name"].strip()
    text = name.rsplit(".", 1)[-1] if match["tilde"] else name
    first, _, rest = name.partition(".")
    try:
        base = name if first == PACKAGE else obj.resolve(first) + (f".{rest}" if rest else "")
    except griffe.NameResolutionError:
        base = ""
    target = _lookup(pkg, base) if base else None
    if target is not None and _rendered(target):
        return f"[`{text}`][{target.path}]"
    return f"`{text}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the Sphinx roles of every docstring of the ``aras400k`` package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite the roles of every docstring in the package.

        Args:
            pkg: The loaded package.
            **kwargs: Other arguments griffe passes to extensions.
        """
        if pkg.name != PACKAGE:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None:
                value = obj.docstring.value
                obj.docstring.value = ROLE.sub(lambda m, obj=obj: _replace(m, obj, pkg), value)
