"""Benchmark CPU placement moves every thread of a process, and only that process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from xinrong.tools import placement

_THREADS = (
    "import threading, time\n"
    "for _ in range(3): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.fixture()
def threaded_child() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", _THREADS], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def test_split_keeps_the_first_cpu_for_the_server() -> None:
    plan = placement.split()
    if plan is None:
        pytest.skip("fewer than two CPUs or no sched_setaffinity here")
    assert plan.server and plan.rest and not plan.server & plan.rest
    assert plan.server | plan.rest == plan.all == placement.available_cpus()
    assert min(plan.all) in plan.server


def test_pin_moves_every_thread_and_back(threaded_child: subprocess.Popen[str]) -> None:
    plan = placement.split()
    if plan is None:
        pytest.skip("fewer than two CPUs or no sched_setaffinity here")
    pid = threaded_child.pid
    mine = placement.affinity(os.getpid())
    assert len(placement.affinity(pid)) == 4  # main thread and three sleepers
    placement.pin(pid, plan.server)
    assert set(placement.affinity(pid).values()) == {plan.server}
    placement.pin(pid, plan.rest)
    assert set(placement.affinity(pid).values()) == {plan.rest}
    placement.pin(pid, plan.all)
    assert set(placement.affinity(pid).values()) == {plan.all}
    assert placement.affinity(os.getpid()) == mine, "the caller itself was not moved"


def test_pin_of_a_finished_process_says_so() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    time.sleep(0.05)
    with pytest.raises(ProcessLookupError):
        placement.pin(proc.pid, placement.available_cpus())
