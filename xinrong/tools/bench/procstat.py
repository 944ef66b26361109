"""CPU time of processes, from Linux ``/proc``: what every benchmark's per-call CPU figures are made of."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (fields 14 and 15 of ``/proc/<pid>/stat``); OSError if gone."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pids: Iterable[int]) -> float:
    """The sum over ``pids``, a process gone meanwhile counting nothing (a pool's closed connection)."""
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            continue
    return total


__all__ = ["cpu_seconds", "cpu_seconds_of"]
