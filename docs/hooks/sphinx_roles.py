"""Griffe extension: render the reStructuredText bits of aras400k's docstrings as Markdown.

The docstrings are Google style, but cite other objects Sphinx-style
(``:class:`Generator```, ``:func:`~aras400k.checkpoints.read_checkpoint```), end a
paragraph before a literal block with ``::`` and lay out a few two-column lists as
RST simple tables. mkdocstrings reads Markdown and would print those verbatim, so
before rendering this extension rewrites them:

* a role becomes a link to the object's entry in the API reference
  (``[`Generator`][path]``) when the name resolves to an object of ``aras400k`` that
  the reference renders, and inline code otherwise (objects of other libraries,
  private names, the ``cli`` modules); a leading ``~`` shows the last component only;
* ``text::`` becomes ``text:`` and a lone ``::`` line is dropped (the indented block
  after it is a code block in Markdown too);
* a simple table (``====  ====`` borders) becomes a bullet list ``- first: second``.

The source files are not changed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

PACKAGE = "aras400k"
#: ``:role:`target``` or ``:py:role:`~target```, for the roles the docstrings use.
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(?P<tilde>~?)(?P<name>[^`<>]+)`")


#: A simple-table border: runs of ``=`` separated by spaces.
BORDER = re.compile(r"^\s*=+(?:\s+=+)+\s*$")
#: A table row starting in the first column: the first cell, two or more spaces, the rest.
ROW = re.compile(r"^(?P<first>\S.*?)(?:\s{2,}(?P<rest>.*))?$")


def _tables_to_lists(text: str) -> str:
    """Turn RST simple tables (no header row) into ``- first: rest`` bullet lists."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        if not BORDER.match(lines[i]):
            out.append(lines[i])
            i += 1
            continue
        rows: list[list[str]] = []
        i += 1
        while i < len(lines) and not BORDER.match(lines[i]):
            # The first column ends at the first run of two spaces (not at the border's
            # column, which a long first cell may overrun).
            cells = ROW.match(lines[i])
            if cells:
                rows.append([cells["first"], cells["rest"].strip()])
            elif rows and lines[i].strip():  # a continuation line of the last column
                rows[-1][1] = f"{rows[-1][1]} {lines[i].strip()}".strip()
            i += 1
        i += 1  # the closing border
        out += [f"- {first}: {rest}" for first, rest in rows]
    return "\n".join(out)


def _literal_markers(text: str) -> str:
    """``paragraph::`` -> ``paragraph:``; a line holding only ``::`` is dropped."""
    text = re.sub(r"(?m)^[ \t]*::[ \t]*\n", "", text)
    return re.sub(r"(?m)(\S)::[ \t]*$", r"\1:", text)


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
    """Rewrite the RST bits of every docstring of the ``aras400k`` package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        """Rewrite roles, literal-block markers and simple tables in every docstring of the package.

        Args:
            pkg: The loaded package.
            **kwargs: Other arguments griffe passes to extensions.
        """
        if pkg.name != PACKAGE:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None:
                value = _literal_markers(_tables_to_lists(obj.docstring.value))
                obj.docstring.value = ROLE.sub(lambda m, obj=obj: _replace(m, obj, pkg), value)
