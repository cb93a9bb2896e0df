"""``aras`` / ``aras-fit`` answer ``--help`` and plain argument errors without Lightning (aras400k.cli.fast)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aras400k.cli import fast

SRC = Path(__file__).resolve().parents[2] / "src"

#: Recorded options as :func:`fast.record_options` writes them (a few of the real ones).
OPTIONS = {
    "root": ["--config", "--help", "--print_config", "-c", "-h"],
    "subcommands": {
        name: ["--config", "-c", "--help", "--model", "--model.help", "--trainer.max_epochs", "--trainer.callbacks"]
        for name in fast.SUBCOMMANDS
    },
}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ARAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(fast.CACHE_VARIABLE, raising=False)
    fast.environment_key.cache_clear()
    yield
    fast.environment_key.cache_clear()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--help"], True),
        (["-h"], True),
        (["fit", "--help"], True),
        (["predict", "-h"], True),
        (["fit", "--config", "x.yaml", "--help"], False),
        (["fit"], False),
        (["nope", "--help"], False),
        ([], False),
    ],
)
def test_help_requests(args, expected):
    assert fast.is_help_request(args) is expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--nonsense"], "unrecognized arguments: --nonsense"),
        (["fit", "--nonsense", "3", "--trainer.max_epochs", "2"], "unrecognized arguments: --nonsense 3"),
        (["fit", "--trainer.max_epochs=2", "--a=1", "--b"], "unrecognized arguments: --a=1 --b"),
        (["test", "--trainer.max_epochs", "2"], None),
        (["fit", "--model.init_args.arch", "unet"], None),  # under a known option: the parser decides
        (["fit", "--trainer.callbacks+=X"], None),
        (["fit", "--trainer.max_ep", "3", "--zz"], None),  # an abbreviation: the parser decides
        (["fit", "--zz", "--help"], None),
        (["fit", "--zz", "--print_config"], None),
        (["fit", "--", "--zz"], None),
        ([], 'expected "subcommand" to be one of {fit,validate,test,predict}, but it was not provided.'),
        (["nope"], "argument subcommand: invalid choice: 'nope' (choose from 'fit', 'validate', 'test', 'predict')"),
        (["--config", "x.yaml", "fit"], None),  # root options: the parser decides
        (["fit", "--config", "/no/such.yaml"], "Parser key \"config\": File does not exist: '/no/such.yaml'"),
        (["fit", "-c=/no/such.yml", "--zz"], "Parser key \"config\": File does not exist: '/no/such.yml'"),
        (["fit", "--config", "{trainer: {max_epochs: 1}}"], None),  # an inline config
    ],
)
def test_check_arguments(args, message):
    assert fast.check_arguments(args, OPTIONS) == message


def test_existing_config_file_passes(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("trainer: {}\n")
    assert fast.check_arguments(["fit", "--config", str(config)], OPTIONS) is None


def test_nothing_is_answered_without_a_cache(capsys):
    assert fast.answer("aras", ["fit", "--help"]) is None
    assert fast.answer("aras-fit", ["fit", "--nonsense"]) is None
    assert capsys.readouterr() == ("", "")


def test_cached_help_is_printed_byte_for_byte(capsys):
    text = "usage: aras fit [-h]\n\n  ünïcode   and trailing spaces   \n"
    path = fast.help_path(["fit", "--help"])
    path.parent.mkdir(parents=True)
    path.write_text(text, encoding="utf-8")
    assert fast.answer("aras", ["fit", "--help"]) == 0
    assert capsys.readouterr().out == text
    assert fast.answer("aras", ["test", "--help"]) is None  # another request, another file


def test_recorded_options_refuse_an_unknown_option(capsys):
    path = fast.options_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(OPTIONS))
    with pytest.raises(SystemExit) as stop:
        fast.answer("aras-fit", ["fit", "--nonsense"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "aras-fit: error: unrecognized arguments: --nonsense\n"
    assert fast.answer("aras-fit", ["fit", "--trainer.max_epochs", "1"]) is None


def test_cache_can_be_turned_off(monkeypatch):
    path = fast.options_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(OPTIONS))
    monkeypatch.setenv(fast.CACHE_VARIABLE, "0")
    assert fast.answer("aras-fit", ["fit", "--nonsense"]) is None


def _real_help(text: str, code: int | None = 0) -> None:
    """Stands in for the LightningCLI parser: print the help, exit."""
    sys.stdout.write(text)
    raise SystemExit(code)


def test_capture_help_stores_what_the_parser_printed(capsys):
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--help"]):
        _real_help("usage: aras fit\n  --trainer.max_epochs\n")
    assert capsys.readouterr().out == "usage: aras fit\n  --trainer.max_epochs\n"  # passed through
    assert fast.help_path(["fit", "--help"]).read_text() == "usage: aras fit\n  --trainer.max_epochs\n"


def test_capture_help_stores_nothing_else(capsys):
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--help"]):
        _real_help("half a help", code=2)
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--trainer.max_epochs", "1"]):
        _real_help("not a help request")
    assert not fast.cache_dir().exists()


def test_unwritable_cache_is_skipped(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("ARAS_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(SystemExit), fast.capture_help(["--help"]):
        _real_help("usage: aras\n")
    assert capsys.readouterr().out == "usage: aras\n"
    assert fast.answer("aras", ["--help"]) is None


def test_a_changed_key_regenerates(monkeypatch, capsys):
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--help"]):
        _real_help("old help\n")
    old = fast.help_path(["fit", "--help"])
    monkeypatch.setattr(fast, "_version", lambda name: "99.0")  # another Lightning, jsonargparse, ...
    fast.environment_key.cache_clear()
    new = fast.help_path(["fit", "--help"])
    assert new != old and old.is_file()
    assert fast.answer("aras", ["fit", "--help"]) is None  # a miss: the real parser runs
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--help"]):
        _real_help("new help\n")
    capsys.readouterr()
    assert fast.answer("aras", ["fit", "--help"]) == 0
    assert capsys.readouterr().out == "new help\n"


def test_key_follows_sources_env_and_width(monkeypatch):
    key = fast.environment_key()
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")
    fast.environment_key.cache_clear()
    assert fast.environment_key() != key
    narrow = fast.help_path(["--help"])
    monkeypatch.setenv("COLUMNS", "37")
    assert fast.help_path(["--help"]) != narrow
    assert fast.help_path(["--help"], prog="aras") != fast.help_path(["--help"], prog="aras-fit")


def test_record_options_of_a_parser_with_subcommands():
    from jsonargparse import ArgumentParser

    root = ArgumentParser(prog="aras")
    root.add_argument("-c", "--config")
    commands = root.add_subcommands(dest="subcommand")
    for name in fast.SUBCOMMANDS:
        sub = ArgumentParser()
        sub.add_argument("--trainer.max_epochs", type=int)
        commands.add_subcommand(name, sub)
    fast.record_options(root)
    recorded = json.loads(fast.options_path().read_text())
    assert {"-c", "--config", "-h", "--help"} <= set(recorded["root"])
    assert sorted(recorded["subcommands"]) == sorted(fast.SUBCOMMANDS)
    assert "--trainer.max_epochs" in recorded["subcommands"]["fit"]


def _run(code: str, *args: str, cache: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(SRC), "ARAS_CACHE_DIR": str(cache), **env}
    full.pop(fast.CACHE_VARIABLE, None)
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=full, timeout=600, check=False
    )


_HEAVY = "import sys; assert 'lightning' not in sys.modules and 'torch' not in sys.modules, 'heavy import'"


def test_cached_answers_import_no_lightning(tmp_path):
    """With a cache in place, ``aras-fit --help`` and ``aras-fit --nonsense`` import neither Lightning nor torch."""
    cache = tmp_path / "cache"
    seed = (
        "import json, sys; sys.argv[0] = 'aras-fit'; from aras400k.cli import fast;"
        "p = fast.help_path(['fit', '--help']); p.parent.mkdir(parents=True); p.write_text('cached help\\n');"
        f"fast.options_path().write_text(json.dumps({OPTIONS!r}))"
    )
    assert _run(seed, cache=cache).returncode == 0
    entry = f"import sys, atexit; sys.argv[0] = 'aras-fit'; atexit.register(lambda: exec({_HEAVY!r}));" + (
        "from aras400k.cli.main import fit_main; fit_main()"
    )
    done = _run(entry, "--help", cache=cache)
    assert (done.returncode, done.stdout, done.stderr) == (0, "cached help\n", "")
    done = _run(entry, "--nonsense", cache=cache)
    assert (done.returncode, done.stderr) == (2, "aras-fit: error: unrecognized arguments: --nonsense\n")


MAIN = "import sys; sys.argv[0] = 'aras'; from aras400k.cli.main import main; main()"
#: ``MAIN``, failing (a traceback on stderr) if Lightning or torch was imported by the time it exits.
LIGHT_MAIN = f"import atexit; atexit.register(lambda: exec({_HEAVY!r}));" + MAIN


@pytest.mark.slow
def test_cached_help_equals_the_real_parsers(tmp_path):
    """The real ``aras fit --help``, then the cached one: the same bytes; a fresh real one agrees too."""
    cache = tmp_path / "cache"
    first = _run(MAIN, "fit", "--help", cache=cache)
    assert first.returncode == 0 and "--trainer.max_epochs" in first.stdout, first.stderr
    assert len(list(cache.glob("*/help-*.txt"))) == 1 and list(cache.glob("*/options.json"))
    cached = _run(LIGHT_MAIN, "fit", "--help", cache=cache)
    assert cached.returncode == 0 and cached.stdout == first.stdout
    fresh = _run(MAIN, "fit", "--help", cache=tmp_path / "other", **{fast.CACHE_VARIABLE: "0"})
    assert fresh.stdout == first.stdout
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [(), ("nope",), ("fit", "--nonsense"), ("fit", "--nonsense", "3"), ("fit", "--config", "/no/such/run.yaml")],
)
def test_fast_errors_equal_the_real_parsers(tmp_path, args):
    cache = tmp_path / "cache"
    real = _run(MAIN, *args, cache=cache, **{fast.CACHE_VARIABLE: "0"})
    assert real.returncode == 2 and real.stderr.count("\n") == 1, real.stderr
    seed = _run(MAIN, "fit", "--trainer.max_epochs", "x", cache=cache)  # builds the parser: records the options
    assert seed.returncode == 2 and list(cache.glob("*/options.json")), seed.stderr
    quick = _run(LIGHT_MAIN, *args, cache=cache)
    assert (quick.returncode, quick.stderr) == (2, real.stderr)
