"""Options from a function's source (aras400k.cli.signatures): defaults and help without importing it."""

from __future__ import annotations

import inspect
import sys
import textwrap
from argparse import ArgumentError

import pytest
from jsonargparse import ArgumentParser

from aras400k.cli.signatures import NO_DEFAULT, NOT_LITERAL, Parameter, add_options, source_signature

IMPL = '''
from pathlib import Path

import no_such_heavy_library  # never imported: the source is only read

SCALE = 3


def make(src: str | Path, out_dir: str | Path, n: int | None = None, rate: float = 0.5, *, name: str = "x",
         flags: tuple[int, ...] = (1, 2), scale: int = SCALE, quiet: bool = False) -> None:
    """Make things.

    Args:
        src: Where from.
        out_dir: Where to.
        n: How many
            (wrapped over two lines).
        rate: How fast.
        name: What to call it.
        flags: Bits.
        scale: Not a literal default.
        quiet: Say nothing.
    """
'''


@pytest.fixture
def package(tmp_path, monkeypatch):
    """``sigpkg.impl`` defines ``make``; ``sigpkg`` re-exports it, ``sigpkg.star`` star-imports it, ``sigpkg.lazy``
    imports it for type checkers only (as a lazy package does)."""
    root = tmp_path / "sigpkg"
    root.mkdir()
    (root / "impl.py").write_text(textwrap.dedent(IMPL))
    (root / "__init__.py").write_text("from .impl import make as make\n")
    (root / "star.py").write_text("from sigpkg.impl import *  # noqa\n")
    (root / "lazy.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .impl import make\n")
    (tmp_path / "sigassigned.py").write_text("def _make(a: int = 4) -> None:\n    pass\n\n\nmake = _make\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source_signature.cache_clear()
    yield "sigpkg"
    source_signature.cache_clear()
    for name in [m for m in sys.modules if m.startswith(("sigpkg", "sigassigned"))]:
        del sys.modules[name]


@pytest.mark.parametrize("module", ["sigpkg.impl", "sigpkg", "sigpkg.star", "sigpkg.lazy"])
def test_defaults_annotations_and_help_from_source(package, module):
    found = source_signature(module, "make")
    assert list(found) == ["src", "out_dir", "n", "rate", "name", "flags", "scale", "quiet"]
    assert found["src"] == Parameter("src", NO_DEFAULT, "str | Path", "Where from.")
    assert found["n"] == Parameter("n", None, "int | None", "How many (wrapped over two lines).")
    assert (found["rate"].default, found["name"].default, found["flags"].default) == (0.5, "x", (1, 2))
    assert found["scale"].default is NOT_LITERAL  # a name, not a literal
    assert "no_such_heavy_library" not in sys.modules


def test_a_name_not_defined_in_source_is_imported(package):
    assert source_signature("sigassigned", "make")["a"].default == 4


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [("int", int), ("int | None", int | None), ("str | Path", str), ("str | Path | None", str | None), ("bool", bool)],
)
def test_option_types(annotation, expected):
    assert Parameter("p", None, annotation, "").option_type() == expected


@pytest.mark.parametrize("annotation", ["Sequence[float]", "type[Foo] | None", "", "int | Foo"])
def test_other_annotations_need_a_type(annotation):
    with pytest.raises(ValueError, match="give the option type of p"):
        Parameter("p", None, annotation, "").option_type()


def test_add_options(package):
    found = source_signature("sigpkg", "make")
    parser = ArgumentParser(exit_on_error=False)
    add_options(parser, found, ["n", "rate", "quiet"], aliases={"rate": ["--the-rate"]}, helps={"quiet": "shh"})
    add_options(parser, found, ["src"])  # no default: required
    add_options(parser, found, ["flags"], types={"flags": tuple[int, ...]})
    cfg = parser.parse_args(["--the-rate", "2", "--n", "7", "--src", "a"])
    assert (cfg.n, cfg.rate, cfg.quiet, cfg.flags, cfg.src) == (7, 2.0, False, (1, 2), "a")
    with pytest.raises(ArgumentError, match="required: src"):
        parser.parse_args([])
    actions = {a.dest: a for a in parser._actions}
    assert actions["n"].help == "How many (wrapped over two lines)." and actions["quiet"].help == "shh"
    with pytest.raises(ValueError, match="scale has no literal default"):
        add_options(parser, found, ["scale"])
    with pytest.raises(KeyError):
        add_options(parser, found, ["nope"])


SYNTHESIS = [
    ("aras400k.synthesis.label", "label_shards"),
    ("aras400k.synthesis.conditional", "synthesize_conditional"),
    ("aras400k.synthesis.unconditional", "synthesize_unconditional"),
    ("aras400k.mapping", "map_scene"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("module", "name"), SYNTHESIS)
def test_source_defaults_equal_the_imported_signature(module, name):
    """What aras-synth and aras-map read from source is what Python sees (imports torch: slow)."""
    import importlib

    source_signature.cache_clear()
    read = source_signature(module, name)
    real = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    assert list(read) == list(real)
    for param in real.values():
        if read[param.name].default is NO_DEFAULT:
            assert param.default is param.empty, param.name
        elif read[param.name].default is not NOT_LITERAL:
            assert read[param.name].default == param.default, param.name
