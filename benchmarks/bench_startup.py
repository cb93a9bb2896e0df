"""Start-up time of every command: ``--help`` and one argument error each, against the 3 s limit.

Each command runs in a fresh interpreter (``python -c "from aras400k.cli.X import main;
..."``, the console script without its launcher) ``--repeat`` times, interleaved with
the others; the median is kept. Two floors are measured in the same rounds:

- ``python``: an interpreter that imports nothing (``-c pass``), the floor of any command;
- ``lightning``: ``import lightning.pytorch.cli`` alone, what ``aras`` / ``aras-fit``
  cost when they build the real LightningCLI parser.

``aras`` and ``aras-fit`` answer ``--help`` and plain argument errors from a cache of
the real parser's output, else from the answers shipped with the package when they
match the installation (:mod:`aras400k.cli.fast`). The benchmark points the cache at
an empty temporary folder, so the first round shows the first call after an install
(the ``first`` column: the shipped answers, or the real parser filling the cache when
they do not match); the median is over the rounds after it. With ``--before DIR`` (a
``src`` folder of another checkout, e.g. the main branch) every command also runs from
there, in the same rounds, for a before/after table::

    python benchmarks/bench_startup.py --repeat 5
    python benchmarks/bench_startup.py --repeat 5 --before /path/to/main/src

Prints seconds, the ratio to the interpreter floor, the 3 s limit and PASS/FAIL per
command (issue #13: every ``--help`` and argument error answers in under 3 s on an idle
machine), with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The limit of issue #13 (seconds, idle machine).
LIMIT_S = 3.0
SRC = Path(__file__).resolve().parents[1] / "src"

#: Label -> (command module, entry function, arguments).
COMMANDS: dict[str, tuple[str, str, list[str]]] = {
    "aras --help": ("main", "main", ["--help"]),
    "aras fit --help": ("main", "main", ["fit", "--help"]),
    "aras-fit --help": ("main", "fit_main", ["--help"]),
    "aras-data --help": ("data", "main", ["--help"]),
    "aras-synth --help": ("synth", "main", ["--help"]),
    "aras-caption --help": ("caption", "main", ["--help"]),
    "aras-eval --help": ("eval", "main", ["--help"]),
    "aras-pipeline --help": ("pipeline", "main", ["--help"]),
    "aras-map --help": ("map", "main", ["--help"]),
    "aras-ablate --help": ("ablate", "main", ["--help"]),
    "aras fit --nonsense (error)": ("main", "main", ["fit", "--nonsense"]),
    "aras-fit --nonsense (error)": ("main", "fit_main", ["--nonsense"]),
    "aras nope (error)": ("main", "main", ["nope"]),
    "aras-fit --config missing.yaml (error)": ("main", "fit_main", ["--config", "missing.yaml"]),
    "aras-data stats (error)": ("data", "main", ["stats"]),
    "aras-synth spade (error)": ("synth", "main", ["spade"]),
    "aras-caption --nonsense (error)": ("caption", "main", ["--out", "c.jsonl", "--nonsense"]),
    "aras-eval --max_samples x (error)": ("eval", "main", ["--max_samples", "x"]),
    "aras-pipeline --nonsense (error)": ("pipeline", "main", ["--nonsense"]),
    "aras-map (error)": ("map", "main", []),
    "aras-ablate --nonsense (error)": ("ablate", "main", ["--nonsense"]),
}

BASELINES: dict[str, str] = {"python": "pass", "lightning": "import lightning.pytorch.cli"}


def _code(module: str, entry: str, program: str) -> str:
    """The console script's work, with its program name in ``sys.argv[0]`` (help texts show it)."""
    return f"import sys; sys.argv[0] = {program!r}; from aras400k.cli.{module} import {entry}; sys.exit({entry}())"


def _seconds(argv: list[str], env: dict[str, str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=cwd, check=False, timeout=600
    )
    return time.perf_counter() - start


def measure(repeat: int, sources: dict[str, Path]) -> dict[tuple[str, str], list[float]]:
    """Wall times of every command (from every source folder) and floor, ``repeat`` interleaved rounds.

    Args:
        repeat: Rounds.
        sources: Column name -> ``src`` folder put on ``PYTHONPATH``.

    Returns:
        ``(label, column) -> seconds per round`` (the floors under the column ``floor``).
    """
    runs: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}
    caches = {column: tempfile.mkdtemp(prefix=f"aras-bench-{column}-") for column in sources}
    for label, code in BASELINES.items():
        runs[(f"[{label}]", "floor")] = ([sys.executable, "-c", code], dict(os.environ))
    for column, src in sources.items():
        env = {**os.environ, "PYTHONPATH": str(src), "ARAS_CACHE_DIR": caches[column]}
        env.pop("ARAS_CLI_CACHE", None)
        for label, (module, entry, args) in COMMANDS.items():
            runs[(label, column)] = ([sys.executable, "-c", _code(module, entry, label.split()[0]), *args], env)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    with tempfile.TemporaryDirectory() as cwd:  # an empty folder: the relative missing.yaml stays missing
        for _ in range(repeat):
            for key, (argv, env) in runs.items():
                times[key].append(_seconds(argv, env, cwd))
    return times


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the median of all but the first")
    parser.add_argument("--before", type=Path, default=None, help="src folder of another checkout to compare with")
    args = parser.parse_args()
    if args.repeat < 2:
        parser.error("--repeat must be >= 2 (the first run is the first call after an install)")
    sources = {"after": SRC} if args.before is None else {"before": args.before.resolve(), "after": SRC}
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (before)")
    times = measure(args.repeat, sources)
    median = {key: statistics.median(values[1:]) for key, values in times.items()}
    floor = median[("[python]", "floor")]
    print(
        f"median of runs 2..{args.repeat} (the first, 'first', is the first call after an install: "
        f"shipped answers or the real parser filling the cache); limit {LIMIT_S:.0f} s"
    )
    header = f"{'command':42s}" + "".join(f" {c + ' first':>12s} {c:>8s}" for c in sources)
    print(f"{header} {'x python':>9s} {'limit':>6s}  result")
    for label in [*(f"[{name}]" for name in BASELINES), *COMMANDS]:
        columns = ["floor"] if label.startswith("[") else list(sources)
        cells = "".join(f" {times[(label, c)][0]:12.2f} {median[(label, c)]:8.2f}" for c in columns)
        seconds = median[(label, columns[-1])]
        verdict = "" if label.startswith("[") else ("PASS" if seconds < LIMIT_S else "FAIL")
        pad = " " * (21 * (len(sources) - len(columns)))
        print(f"{label:42s}{cells}{pad} {seconds / floor:9.1f} {LIMIT_S:6.1f}  {verdict}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after)")


if __name__ == "__main__":
    main()
