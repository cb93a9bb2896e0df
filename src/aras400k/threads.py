"""CPU threads that fit the machine: torch's intra-op pool sized to the usable cores.

PyTorch's default pool takes every core of the machine, and loader workers are extra
processes on the same cores. On a busy machine, threads that wait for each other at
every operation then spend their time descheduled: a run crawls (a 2-core demo went
from 3 epochs to 26 of 100 steps in the same minutes). :func:`configure_threads` gives
torch the cores this process may use (its affinity mask) less one per loader worker,
unless the user said otherwise (``--threads``, ``ARAS_THREADS`` or ``OMP_NUM_THREADS``).

Thread counts change the order of floating-point sums, so results are bit-identical
only between runs with the same count, which is printed and recorded for that reason.
"""

from __future__ import annotations

import os
import sys

from aras400k.errors import check_at_least

__all__ = ["THREADS_VARIABLE", "configure_threads", "usable_cores"]

#: Environment variable with the intra-op thread count for every aras400k command.
THREADS_VARIABLE = "ARAS_THREADS"


def usable_cores() -> int:
    """Cores this process may run on, at least 1 (its CPU affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


#: The ``OMP_NUM_THREADS`` value this module set itself (not a user's choice).
_ours: str | None = None


def _from_environment() -> int | None:
    for name in (THREADS_VARIABLE, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value and not (name == "OMP_NUM_THREADS" and value == _ours):
            try:
                count = int(value)
            except ValueError as err:
                raise ValueError(f"{name}={value!r} is not a whole number of threads") from err
            check_at_least(name, count, 1)
            return count
    return None


def configure_threads(threads: int | None = None, loader_workers: int = 0) -> int:
    """Set torch's intra-op threads for this process and return the count.

    The count is, in order: ``threads`` if given; ``ARAS_THREADS`` or
    ``OMP_NUM_THREADS`` if set; otherwise the usable cores less one per loader worker
    (at least 1), so that the main process and its workers together do not ask for more
    cores than there are. If torch is not imported yet, ``OMP_NUM_THREADS`` is set
    instead (torch reads it when it starts), so a command that never needs torch does
    not pay for importing it.

    Args:
        threads: An explicit count (``--threads``); ``None`` to choose as above.
        loader_workers: DataLoader worker processes that will share the cores.

    Returns:
        The thread count set.

    Raises:
        ValueError: If a count is not a whole number >= 1.
    """
    global _ours
    if threads is not None:
        check_at_least("threads", threads, 1)
    count = threads or _from_environment() or max(1, usable_cores() - max(0, loader_workers))
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)
    elif os.environ.get("OMP_NUM_THREADS") in (None, "", _ours):
        _ours = os.environ["OMP_NUM_THREADS"] = str(count)
    return count
