"""Options from a function's signature and docstring, read from its source without importing it.

The synthesis modules import torch, seconds ``aras-synth --help`` should not wait for
(``docs/extending.md``). A re-exported name (``from .x import f``, ``from .x import *``) is
followed to where it is defined; if it cannot be found, the module is imported.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonargparse import ArgumentParser

__all__ = ["NOT_LITERAL", "NO_DEFAULT", "Parameter", "add_options", "source_signature"]

#: The default of a parameter that has none.
NO_DEFAULT: Any = inspect.Parameter.empty


class _NotLiteral:
    def __repr__(self) -> str:
        return "NOT_LITERAL"


#: The default of a parameter whose default is not a literal (a constant's name, a call).
NOT_LITERAL: Any = _NotLiteral()

#: Names an annotation may use to be turned into an option type (``Path`` is read as ``str``).
_TYPE_NAMES: dict[str, Any] = {"int": int, "float": float, "bool": bool, "str": str, "Path": str}


@dataclass(frozen=True)
class Parameter:
    """One parameter of a function, as its source shows it.

    Attributes:
        name: Parameter name.
        default: Its default (a literal), :data:`NO_DEFAULT` or :data:`NOT_LITERAL`.
        annotation: The annotation's source text (``""`` if none).
        help: Its description in the docstring's ``Args:`` section (``""`` if none).
    """

    name: str
    default: Any
    annotation: str
    help: str

    def option_type(self) -> Any:
        """The option type the annotation stands for: ``int``, ``str | None``, ... (``Path`` counts as ``str``).

        Raises:
            ValueError: If the annotation uses other names (give the option's type yourself).
        """
        try:
            return _evaluate(ast.parse(self.annotation, mode="eval").body)
        except (SyntaxError, KeyError, TypeError) as err:
            raise ValueError(f"give the option type of {self.name} (annotation {self.annotation!r})") from err


def _evaluate(node: ast.expr) -> Any:
    """``int``, ``str | Path | None``, ...: names of :data:`_TYPE_NAMES` joined by ``|``."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _evaluate(node.left) | _evaluate(node.right)
    if isinstance(node, ast.Name):
        return _TYPE_NAMES[node.id]
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    raise TypeError(ast.dump(node))


def _module_file(module: str) -> Path | None:
    """The source file of ``module``, found without importing it or its parent packages."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path: Path | None = Path(spec.origin)
    for part in rest:
        if path is None or path.name != "__init__.py":
            return None
        candidates = (path.parent / part / "__init__.py", path.parent / f"{part}.py")
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
    return path


def _absolute(module: str, origin: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module if origin.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _find(module: str, name: str, seen: set[str]) -> ast.FunctionDef | None:
    """The definition of ``name`` in ``module`` or in the modules it takes the name from."""
    if module in seen:
        return None
    seen.add(module)
    origin = _module_file(module)
    if origin is None:
        return None
    tree = ast.parse(origin.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    statements = [*tree.body, *(inner for node in tree.body if isinstance(node, ast.If) for inner in node.body)]
    for node in statements:  # with ``if TYPE_CHECKING:`` imports (a lazy package's names)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name == "*" or (alias.asname or alias.name) == name:
                    found = _find(_absolute(module, origin, node), name if alias.name == "*" else alias.name, seen)
                    if found is not None:
                        return found
    return None


def _descriptions(doc: str | None) -> dict[str, str]:
    import docstring_parser

    if not doc:
        return {}
    return {p.arg_name: " ".join((p.description or "").split()) for p in docstring_parser.parse(doc).params}


def _from_source(node: ast.FunctionDef) -> dict[str, Parameter]:
    arguments = node.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(arguments.defaults)) + list(arguments.defaults)
    pairs = [*zip(positional, defaults, strict=True), *zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)]
    helps = _descriptions(ast.get_docstring(node))
    found: dict[str, Parameter] = {}
    for arg, default in pairs:
        try:
            value = NO_DEFAULT if default is None else ast.literal_eval(default)
        except ValueError:
            value = NOT_LITERAL
        annotation = ast.unparse(arg.annotation) if arg.annotation is not None else ""
        found[arg.arg] = Parameter(arg.arg, value, annotation, helps.get(arg.arg, ""))
    return found


def _from_import(module: str, name: str) -> dict[str, Parameter]:
    function = getattr(importlib.import_module(module), name)
    helps = _descriptions(inspect.getdoc(function))
    found: dict[str, Parameter] = {}
    for param in inspect.signature(function).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = param.annotation
        if not isinstance(annotation, str):
            annotation = "" if annotation is param.empty else inspect.formatannotation(annotation)
        found[param.name] = Parameter(param.name, param.default, annotation, helps.get(param.name, ""))
    return found


@cache
def source_signature(module: str, name: str) -> dict[str, Parameter]:
    """The :class:`Parameter` by name, in signature order, of function ``name`` of ``module``, read from the source.

    E.g. ``source_signature("aras400k.synthesis_spade", "synthesize_conditional")``; nothing is imported.
    """
    node = _find(module, name, set())
    return _from_source(node) if node is not None else _from_import(module, name)


def add_options(
    parser: ArgumentParser,
    parameters: dict[str, Parameter],
    names: list[str],
    *,
    types: dict[str, Any] | None = None,
    aliases: dict[str, list[str]] | None = None,
    helps: dict[str, str] | None = None,
) -> None:
    """Add ``--NAME`` options with the defaults and help of the function's parameters.

    A parameter without a default becomes a required option.

    Args:
        parser: The parser.
        parameters: From :func:`source_signature`.
        names: Parameters to add, in this order.
        types: Option types where the annotation is not a plain one (``Sequence[int]``, ...).
        aliases: More option strings of a name (``{"per_mask": ["--per-mask"]}``).
        helps: Help texts that say more than the docstring for the command line.

    Raises:
        KeyError: If a name is not a parameter.
        ValueError: If a parameter's default is not a literal (give such options by hand).
    """
    types, aliases, helps = types or {}, aliases or {}, helps or {}
    for name in names:
        param = parameters[name]
        if param.default is NOT_LITERAL:
            raise ValueError(f"{name} has no literal default; add its option by hand")
        option_type = types[name] if name in types else param.option_type()
        given = {"required": True} if param.default is NO_DEFAULT else {"default": param.default}
        parser.add_argument(
            f"--{name}", *aliases.get(name, []), type=option_type, help=helps.get(name, param.help), **given
        )
