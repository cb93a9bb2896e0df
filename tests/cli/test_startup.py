"""Commands start without the heavy libraries their parser does not need (see docs/extending.md).

Timings are not asserted (the machine is shared); the measured figures are in the docs.
What is asserted is what each command imports to build its parser and print ``--help``,
in a fresh interpreter, so that a module-level ``import torch`` added to a light module
shows up here.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

#: Libraries that take seconds to import on a busy 2-core machine.
HEAVY = (
    "torch",
    "lightning",
    "transformers",
    "matplotlib",
    "sklearn",
    "scipy",
    "kornia",
    "segmentation_models_pytorch",
    "torchmetrics",
    "webdataset",
)

#: Every command module whose parser needs none of HEAVY.
LIGHT_COMMANDS = ("data", "eval", "ablate", "caption", "synth", "pipeline", "map")

#: Packages whose heavy names load on first access.
LAZY_PACKAGES = ("aras400k.data", "aras400k.models", "aras400k.evaluation", "aras400k.captioning")


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _heavy_after(statements: str) -> list[str]:
    code = f"import json, sys\n{statements}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    return json.loads(_python(code))


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_command_module_imports_nothing_heavy(command: str) -> None:
    assert _heavy_after(f"import aras400k.cli.{command}") == []


@pytest.mark.parametrize("command", LIGHT_COMMANDS)
def test_help_completes_and_imports_nothing_heavy(command: str) -> None:
    help_call = (
        f"import contextlib, io\nimport aras400k.cli.{command} as c\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n        c.main(['--help'])\n    except SystemExit as exit:\n        assert exit.code in (0, None)\n"
        "assert 'usage' in out.getvalue().lower(), out.getvalue()[:200]"
    )
    assert _heavy_after(help_call) == []


def test_lightning_cli_module_imports_nothing_heavy() -> None:
    """``aras`` / ``aras-fit`` import Lightning only when the real parser runs (see aras400k.cli.fast)."""
    assert _heavy_after("import aras400k.cli.main\nassert 'ArasCLI' in dir(aras400k.cli.main)") == []


def test_argument_error_imports_nothing_heavy() -> None:
    call = (
        "import contextlib, io\nimport aras400k.cli.data as c\n"
        "with contextlib.redirect_stderr(io.StringIO()) as err:\n"
        "    try:\n        c.main(['stats'])\n    except SystemExit as exit:\n        assert exit.code == 2\n"
        "assert 'stats.dirs' in err.getvalue(), err.getvalue()"
    )
    assert _heavy_after(call) == []


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_lazy_package_imports_nothing_heavy(package: str) -> None:
    assert _heavy_after(f"import {package}") == []


def test_lazy_name_loads_on_first_access() -> None:
    loaded = _heavy_after("from aras400k.data import ShardDataset\nassert ShardDataset.__name__ == 'ShardDataset'")
    assert "torch" in loaded


@pytest.mark.parametrize("package", [*LAZY_PACKAGES, "aras400k.captioning.backends", "aras400k.cli.main"])
def test_dir_lists_the_public_api(package: str) -> None:
    module = importlib.import_module(package)
    names = dir(module)
    assert set(module.__all__) <= set(names)
    assert not {"annotations", "Any", "importlib", "lazy_attributes", "public_dir"} & set(names)
    assert names == sorted(names)


def test_dir_lists_imported_submodules() -> None:
    import aras400k.data
    import aras400k.data.shards

    assert "shards" in dir(aras400k.data)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_public_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, name


def test_unknown_name_is_an_attribute_error() -> None:
    import aras400k.data

    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        aras400k.data.NoSuchThing  # noqa: B018


def _run_help(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    code = f"import sys; from aras400k.cli.{module} import main; sys.exit(main())"
    command = [sys.executable, "-c", code, *args, "--help"]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("args", [(), ("fit",)])
def test_lightning_cli_help_completes(args: tuple[str, ...]) -> None:
    done = _run_help("main", *args)
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout
