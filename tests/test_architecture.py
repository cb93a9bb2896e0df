"""The house rules of docs/architecture.md, checked on the source: layers, no loops, no private imports.

The layer of each top-level part mirrors the table in ``docs/architecture.md``
("Layers"); a module may import its own layer and the ones below, never one above,
whether at the top of the file or lazily inside a function. Imports for type checkers
only (under ``if TYPE_CHECKING:``) count too: an annotation naming a higher layer is a
dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Top-level part of ``aras400k`` -> its layer (docs/architecture.md, "Layers").
LAYERS = {
    **dict.fromkeys(["classes", "errors", "files", "locking", "threads", "checkpoints", "plotting", "_lazy"], 0),
    "data": 1,
    "metrics": 2,
    **dict.fromkeys(["models", "callbacks", "prediction", "budget"], 3),
    **dict.fromkeys(["synthesis", "synthesis_spade", "synthesis_stylegan3", "mapping"], 4),
    **dict.fromkeys(["captioning", "evaluation", "ablation"], 4),
    **dict.fromkeys(["pipeline", "cli"], 5),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], bool]]:
    """``(module imported, names imported from it, at the module's top level?)`` for every aras400k import."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body if isinstance(node, ast.Import | ast.ImportFrom)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                stem = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*stem, *([node.module] if node.module else [])])
            if base == "aras400k" or base.startswith("aras400k."):
                found.append((base, [alias.name for alias in node.names], id(node) in top_level))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aras400k."):
                    found.append((alias.name, [], id(node) in top_level))
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


FILES = sorted((SRC / "aras400k").rglob("*.py"))
GRAPH = {_module_name(path): _imports(path) for path in FILES}


def test_every_part_of_the_package_has_a_layer():
    parts = {_module_name(path).split(".")[1] for path in FILES if _module_name(path) != "aras400k"}
    assert sorted(parts - set(LAYERS)) == [], "add new top-level modules to LAYERS and to docs/architecture.md"


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, imports in GRAPH.items()
        for target, _, _ in imports
        if _layer(module) is not None and _layer(target) is not None and _layer(target) > _layer(module)
    ]
    assert upward == []


def test_no_module_imports_another_modules_private_names():
    private = [
        f"{module} imports {name} from {target}"
        for module, imports in GRAPH.items()
        for target, names, _ in imports
        for name in names
        if target != module and name.startswith("_") and not name.startswith("__")
    ]
    assert private == []


def test_module_level_imports_have_no_loop():
    edges: dict[str, set[str]] = defaultdict(set)
    for module, imports in GRAPH.items():
        for target, names, top in imports:
            if not top or target == module:
                continue
            # ``from aras400k.pkg import sub`` imports the submodule when ``sub`` is one
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in GRAPH]
            for dest in subs or [target]:
                if not module.startswith(dest + "."):  # a package's modules import their package first anyway
                    edges[module].add(dest)
    seen: dict[str, int] = {}  # 1: on the current path, 2: done
    loops: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if seen.get(nxt) == 1:
                loops.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in seen:
                visit(nxt, [*path, nxt])
        seen[node] = 2

    for start in sorted(GRAPH):
        if start not in seen:
            visit(start, [start])
    assert loops == []


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("aras400k.synthesis", "read_checkpoint", "aras400k.checkpoints"),
        ("aras400k.synthesis", "load_segmentation_task", "aras400k.models.segmentation"),
        ("aras400k.metrics", "feature_extractor", "aras400k.models.features"),
    ],
)
def test_moved_names_keep_working_with_a_warning(old, name, new):
    import importlib

    module, home = importlib.import_module(old), importlib.import_module(new)
    with pytest.warns(FutureWarning, match=rf"{old}\.{name} moved to {new}\.{name}"):
        assert getattr(module, name) is getattr(home, name)


@pytest.mark.parametrize(("old", "new"), [("synthesis_spade", "conditional"), ("synthesis_stylegan3", "unconditional")])
def test_old_synthesis_modules_import_with_a_warning(old, new):
    import importlib
    import sys

    sys.modules.pop(f"aras400k.{old}", None)
    with pytest.warns(FutureWarning, match=rf"aras400k\.{old} moved to aras400k\.synthesis\.{new}"):
        shim = importlib.import_module(f"aras400k.{old}")
    home = importlib.import_module(f"aras400k.synthesis.{new}")
    assert all(getattr(shim, name) is getattr(home, name) for name in shim.__all__)
