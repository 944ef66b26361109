"""Which CPUs the processes of a benchmark run on (Linux).

On a small machine that runs every party at once, the scheduler moves the
node, the agent and the load generator across the cores; each move and
each switch to another busy process costs the node its warm caches, and
Python is sensitive to that. A deployment gives the node (a single event
loop, so one core's worth of Python) a core of its own. ``xinrong bench
verify`` reproduces that on one machine: the server under test on the
first CPU, everything else on the others; see the bench for how the
ceiling is kept strict.

Affinity is set per thread: ``sched_setaffinity`` on a pid moves only the
thread with that id, so every thread in ``/proc/<pid>/task`` is moved;
threads created afterwards inherit their creator's mask.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path


def supported() -> bool:
    return hasattr(os, "sched_setaffinity") and Path("/proc/self/task").is_dir()


def available_cpus() -> frozenset[int]:
    """The CPUs this process may run on (a container may grant fewer than the machine has)."""
    return frozenset(os.sched_getaffinity(0))


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Every thread of ``pid`` onto ``cpus``.

    Two passes, so a thread created while the first pass ran (from a thread
    not yet moved) is caught by the second.
    """
    for _ in range(2):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            raise ProcessLookupError(f"process {pid} is gone") from None
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # that thread ended meanwhile
                os.sched_setaffinity(int(tid), cpus)


def affinity(pid: int) -> dict[int, frozenset[int]]:
    """CPU mask of every thread of ``pid`` (for checks and tests)."""
    masks: dict[int, frozenset[int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            masks[int(tid)] = frozenset(os.sched_getaffinity(int(tid)))
    return masks


@dataclass(frozen=True)
class Split:
    """The server under test on ``server``; its clients and helpers on ``rest``."""

    server: frozenset[int]
    rest: frozenset[int]
    all: frozenset[int]


def split() -> Split | None:
    """First available CPU for the server, the others for the rest; None below two CPUs."""
    if not supported():
        return None
    cpus = sorted(available_cpus())
    if len(cpus) < 2:
        return None
    return Split(server=frozenset(cpus[:1]), rest=frozenset(cpus[1:]), all=frozenset(cpus))
