"""The light commands keep their option names, defaults and required options.

``option_snapshot.json`` was written from the parsers before they were rebuilt from
signatures (``python tests/cli/test_cli_options.py > tests/cli/option_snapshot.json``);
a rebuilt parser must accept every old option string with the same default. Options
only added since are listed in :data:`ADDED`.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

import pytest

SNAPSHOT = Path(__file__).with_name("option_snapshot.json")

#: Command -> its module in ``aras400k.cli`` (not aras / aras-fit: their options are Lightning's).
COMMANDS = {
    "aras-ablate": "ablate",
    "aras-caption": "caption",
    "aras-data": "data",
    "aras-eval": "eval",
    "aras-map": "map",
    "aras-pipeline": "pipeline",
    "aras-synth": "synth",
}

#: Options added after the snapshot (command or ``command subcommand`` -> option strings).
ADDED: dict[str, set[str]] = {
    # aras-caption's groups come from class signatures: each takes a YAML file of its own
    # (``--openai openai.yaml``), and the template backend's ``model_name`` became an option.
    "aras-caption": {"--batch_file", "--openai", "--template", "--template.model_name", "--transformers"},
    # aras-map processes the scene in column strips of bounded memory (docs/map.md).
    "aras-map": {"--strip_width"},
}


def _plain(value: Any) -> Any:
    """A JSON-comparable form of a default (tuples as lists, namespaces as dicts)."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def options(parser: Any) -> dict[str, Any]:
    """Option strings, defaults and required options of a parser and its subcommands.

    Args:
        parser: A jsonargparse parser.

    Returns:
        ``{"options": [...], "defaults": {dest: default}, "required": [...], "subcommands": {...}}``.
    """
    found: dict[str, Any] = {"options": [], "required": [], "subcommands": {}}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found["subcommands"] = {name: options(sub) for name, sub in action.choices.items()}
            continue
        if action.dest == "help":
            continue
        found["options"].extend(action.option_strings or [action.dest])
        if action.required:
            found["required"].append(action.dest)
    found["options"].sort()
    found["required"].sort()
    defaults = parser.get_defaults().as_dict() if not found["subcommands"] else {}
    defaults.pop("__default_config__", None)
    found["defaults"] = {k: _plain(v) for k, v in sorted(defaults.items()) if k != "config"}
    return found


def snapshot() -> dict[str, Any]:
    """The options of every light command, as stored in ``option_snapshot.json``."""
    return {
        command: options(importlib.import_module(f"aras400k.cli.{module}").build_parser())
        for command, module in COMMANDS.items()
    }


def _dotted(defaults: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested defaults as ``{"openai.model": None, ...}`` (a group may gain an option)."""
    flat: dict[str, Any] = {}
    for key, value in defaults.items():
        if isinstance(value, dict) and value:
            flat |= _dotted(value, f"{prefix}{key}.")
        else:
            flat[prefix + key] = value
    return flat


def _flatten(name: str, found: dict[str, Any]) -> dict[str, dict[str, Any]]:
    flat = {name: found}
    for sub, inner in found["subcommands"].items():
        flat |= _flatten(f"{name} {sub}", inner)
    return flat


def _flat(commands: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for command, found in commands.items() for k, v in _flatten(command, found).items()}


OLD = _flat(json.loads(SNAPSHOT.read_text())) if SNAPSHOT.exists() else {}
NEW = _flat(snapshot())


def test_same_commands_and_subcommands() -> None:
    assert sorted(NEW) == sorted(OLD)


@pytest.mark.parametrize("command", sorted(OLD))
def test_every_old_option_is_still_accepted(command: str) -> None:
    old, new = set(OLD[command]["options"]), set(NEW[command]["options"])
    assert old <= new, f"options gone: {sorted(old - new)}"
    assert new - old <= ADDED.get(command, set()), f"new options not listed in ADDED: {sorted(new - old)}"


@pytest.mark.parametrize("command", sorted(OLD))
def test_defaults_and_required_options_unchanged(command: str) -> None:
    old, new = OLD[command], NEW[command]
    assert new["required"] == old["required"]
    old_defaults, new_defaults = _dotted(old["defaults"]), _dotted(new["defaults"])
    assert {k: new_defaults.get(k, "<missing>") for k in old_defaults} == old_defaults


if __name__ == "__main__":
    print(json.dumps(snapshot(), indent=1, sort_keys=True))
