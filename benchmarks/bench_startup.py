"""Start-up time of every command: ``--help`` and an argument error, against two floors.

Each command runs in a fresh interpreter (``python -c "from aras400k.cli.X import main;
..."``, the console script without its launcher) ``--repeat`` times; the minimum is
kept, the figure least disturbed by other work on the machine. Two baselines are
measured in the same run, interleaved with the commands:

- ``python``: an interpreter that imports nothing (``-c pass``), the floor of any command;
- ``lightning``: ``import lightning.pytorch.cli`` alone, the floor of ``aras`` and
  ``aras-fit``, whose LightningCLI parser cannot be built without Lightning (which
  itself imports torch, torchmetrics, torchvision and, through them, transformers).

::

    python benchmarks/bench_startup.py --repeat 5

Prints seconds and the ratios to both floors, with the machine's load average.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

#: Label -> (command module, arguments).
COMMANDS: dict[str, tuple[str, list[str]]] = {
    "aras --help": ("main", ["--help"]),
    "aras-fit --help": ("main", ["fit", "--help"]),
    "aras-data --help": ("data", ["--help"]),
    "aras-synth --help": ("synth", ["--help"]),
    "aras-ablate --help": ("ablate", ["--help"]),
    "aras-caption --help": ("caption", ["--help"]),
    "aras-eval --help": ("eval", ["--help"]),
    "aras-pipeline --help": ("pipeline", ["--help"]),
    "aras-data stats (error)": ("data", ["stats"]),
    "aras-eval --max_samples x (error)": ("eval", ["--max_samples", "x"]),
}

BASELINES: dict[str, str] = {"python": "pass", "lightning": "import lightning.pytorch.cli"}


def _code(module: str) -> str:
    return f"import sys; from aras400k.cli.{module} import main; sys.exit(main())"


def _seconds(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=600)
    return time.perf_counter() - start


def measure(repeat: int) -> dict[str, float]:
    """Minimum wall time of every command and baseline over ``repeat`` interleaved rounds.

    Args:
        repeat: Rounds.

    Returns:
        Label -> seconds.
    """
    runs: dict[str, list[str]] = {f"[{k}]": [sys.executable, "-c", v] for k, v in BASELINES.items()}
    runs |= {label: [sys.executable, "-c", _code(module), *args] for label, (module, args) in COMMANDS.items()}
    best = {label: float("inf") for label in runs}
    for _ in range(repeat):
        for label, argv in runs.items():
            best[label] = min(best[label], _seconds(argv))
    return best


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per command; the minimum is kept")
    args = parser.parse_args()
    load = os.getloadavg()
    best = measure(args.repeat)
    floor, lightning = best["[python]"], best["[lightning]"]
    print(f"min of {args.repeat} runs; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (before)")
    print(f"{'command':36s} {'seconds':>8s} {'x python':>9s} {'x lightning':>12s}")
    for label, seconds in best.items():
        print(f"{label:36s} {seconds:8.2f} {seconds / floor:9.1f} {seconds / lightning:12.2f}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after)")


if __name__ == "__main__":
    main()
