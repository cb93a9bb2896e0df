"""``aras`` / ``aras-fit`` answer ``--help`` and plain argument errors without Lightning (aras400k.cli.fast)."""

from __future__ import annotations

import gzip
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


#: The answers shipped with the package, before the fixture below hides them.
SHIPPED = fast.SHIPPED


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """An empty cache, and no shipped answers (tests that want them point ``fast.SHIPPED`` back)."""
    monkeypatch.setenv("ARAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(fast, "SHIPPED", tmp_path / "no_answers.json.gz")
    for name in list(os.environ):
        if name.startswith(("JSONARGPARSE_", "PL_", "LIGHTNING_")):  # e.g. PL_GLOBAL_SEED from seed_everything
            monkeypatch.delenv(name)
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


def test_key_follows_env_program_and_arguments(monkeypatch):
    key = fast.environment_key()
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")
    fast.environment_key.cache_clear()
    assert fast.environment_key() != key
    narrow = fast.help_path(["--help"])
    monkeypatch.setenv("COLUMNS", "37")
    assert fast.help_path(["--help"]) == narrow  # help is always HELP_WIDTH wide
    assert fast.help_path(["-h"]) == narrow  # -h prints what --help prints
    assert fast.help_path(["--help"], prog="aras") != fast.help_path(["--help"], prog="aras-fit")
    assert fast.help_path(["fit", "--help"]) != fast.help_path(["test", "--help"])


def test_help_is_formatted_at_a_fixed_width(monkeypatch):
    import shutil

    monkeypatch.setenv("COLUMNS", "150")
    seen = []
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--help"]):
        seen.append(shutil.get_terminal_size().columns)
        _real_help("help\n")
    assert seen == [fast.HELP_WIDTH] and os.environ["COLUMNS"] == "150"


def _ship(path: Path, modules: list[str], **changes: object) -> Path:
    """Write shipped answers for this installation (``changes`` override parts of the key)."""
    key = fast._shipped_key(modules) | changes
    answers = {"key": key, "help": {"aras-fit\0fit\0--help": "shipped help\n"}, "options": OPTIONS}
    path.write_bytes(gzip.compress(json.dumps(answers).encode()))
    return path


def test_shipped_answers_serve_an_empty_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fast, "SHIPPED", _ship(tmp_path / "answers.json.gz", ["classes.py", "cli/fast.py"]))
    monkeypatch.setattr(sys, "argv", ["/venv/bin/aras-fit"])  # argparse shows this program name
    assert fast.answer("aras-fit", ["fit", "-h"]) == 0
    assert capsys.readouterr().out == "shipped help\n"
    monkeypatch.setattr(sys, "argv", ["/venv/bin/aras"])
    assert fast.answer("aras", ["fit", "--help"]) is None  # another program: not in these answers
    with pytest.raises(SystemExit) as stop:
        fast.answer("aras-fit", ["fit", "--nonsense"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == "aras-fit: error: unrecognized arguments: --nonsense\n"
    assert not fast.cache_dir().exists()  # the shipped answers are read, never copied


@pytest.mark.parametrize(
    "changes",
    [
        {"versions": {"lightning": "0.0.1"}},  # another Lightning (or jsonargparse, torch, ...)
        {"python": [2, 7]},
        {"aras400k": "0.0.0"},
        {"files": {"classes.py": "0" * 64}},  # an edited module the parser imports
    ],
)
def test_shipped_answers_are_ignored_when_anything_differs(tmp_path, monkeypatch, changes):
    monkeypatch.setattr(fast, "SHIPPED", _ship(tmp_path / "answers.json.gz", ["classes.py"], **changes))
    monkeypatch.setattr(sys, "argv", ["aras-fit"])
    assert fast.shipped_answers() is None
    assert fast.answer("aras-fit", ["fit", "--help"]) is None


def test_shipped_answers_are_ignored_with_parser_variables_or_a_broken_file(tmp_path, monkeypatch):
    path = _ship(tmp_path / "answers.json.gz", ["classes.py"])
    monkeypatch.setattr(fast, "SHIPPED", path)
    assert fast.shipped_answers() is not None
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")
    assert fast.shipped_answers() is None
    monkeypatch.delenv("JSONARGPARSE_DEFAULT_ENV")
    path.write_bytes(path.read_bytes()[:40])
    assert fast.shipped_answers() is None


def test_the_cache_comes_before_the_shipped_answers(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fast, "SHIPPED", _ship(tmp_path / "answers.json.gz", ["classes.py"]))
    monkeypatch.setattr(sys, "argv", ["aras-fit"])
    with pytest.raises(SystemExit), fast.capture_help(["fit", "--help"]):
        _real_help("cached help\n")
    capsys.readouterr()
    assert fast.answer("aras-fit", ["fit", "--help"]) == 0
    assert capsys.readouterr().out == "cached help\n"


def test_the_shipped_answers_are_current():
    """The package's answers match this installation; if not, rewrite them: ``python -m aras400k.cli.fast``."""
    data = json.loads(gzip.decompress(SHIPPED.read_bytes()))
    key = data["key"]
    if key["versions"] != fast._shipped_key([])["versions"] or key["python"] != list(sys.version_info[:2]):
        pytest.skip(f"shipped answers are for {key['versions']} on Python {key['python']}, not this installation")
    now = fast._file_hashes(list(key["files"]))
    stale = sorted(name for name, digest in now.items() if key["files"][name] != digest)
    assert not stale, f"modules changed since the answers were made: {stale}; run python -m aras400k.cli.fast"
    assert fast.shipped_answers(SHIPPED) == data
    assert {tuple(k.split("\0")) for k in data["help"]} == {(prog, *args) for prog, args in fast.HELP_FORMS}
    assert all(text.startswith("usage: ") for text in data["help"].values())


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
#: ``MAIN`` without the shipped answers (as with another Lightning version).
UNSHIPPED_MAIN = "from pathlib import Path; from aras400k.cli import fast; fast.SHIPPED = Path('/no/such');" + MAIN


@pytest.mark.slow
def test_cached_help_equals_the_real_parsers(tmp_path):
    """The real ``aras fit --help``, then the cached one: the same bytes; a fresh real one agrees too."""
    cache = tmp_path / "cache"
    first = _run(UNSHIPPED_MAIN, "fit", "--help", cache=cache)
    assert first.returncode == 0 and "--trainer.max_epochs" in first.stdout, first.stderr
    assert len(list(cache.glob("*/help-*.txt"))) == 1 and list(cache.glob("*/options.json"))
    cached = _run(LIGHT_MAIN, "fit", "--help", cache=cache)
    assert cached.returncode == 0 and cached.stdout == first.stdout
    fresh = _run(MAIN, "fit", "--help", cache=tmp_path / "other", COLUMNS="150", **{fast.CACHE_VARIABLE: "0"})
    assert fresh.stdout == first.stdout
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_shipped_help_equals_the_real_parsers(tmp_path):
    """Every shipped help text is what the real parser prints now (and is served without Lightning)."""
    data = json.loads(gzip.decompress(SHIPPED.read_bytes()))
    for prog, args in fast.HELP_FORMS:
        code = MAIN.replace("'aras'", repr(prog))
        real = _run(code, *args, cache=tmp_path / "off", **{fast.CACHE_VARIABLE: "0"})
        assert real.stdout == data["help"]["\0".join((prog, *args))], (prog, args)
    if fast.shipped_answers(SHIPPED) is not None:
        served = _run(LIGHT_MAIN.replace("'aras'", "'aras-fit'"), "fit", "--help", cache=tmp_path / "empty")
        assert served.stdout == data["help"]["aras-fit\0fit\0--help"]


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
