"""The obfuscator pool: fresh Paillier randomness, computed ahead, each value used once.

An obfuscator is the factor ``r^n`` (classic) or ``h_s^alpha`` (DJN) that
makes a Paillier ciphertext unlinkable to its plaintext. Two rules matter:

* **Never reuse.** Two ciphertexts sharing an obfuscator leak the difference
  of their plaintexts to anyone who divides them. The pool hands values out
  by popping them from a queue under a lock; nothing is ever put back, and a
  pool that runs dry computes fresh values rather than cycling old ones.
* **Compute ahead.** Obfuscators do not depend on the plaintext, so a party
  can fill the pool while it waits for the other parties (``prefill``), in
  worker processes that use the other core. ``take`` first drains values that
  are ready, then waits for pending batches, then computes the shortfall.

Worker processes are started with the ``spawn`` method: the parties run gRPC
servers, and forking a process that has gRPC threads is unsafe. Workers draw
their own randomness from the OS CSPRNG (``secrets``), so no random state is
ever copied between processes. Arguments and results cross to the workers as
bytes through multiprocessing's local pipe: the workers belong to the same
party, so that is not a trust boundary. As always with ``spawn``, a script
that triggers worker use must guard its entry point with
``if __name__ == "__main__":`` (console scripts, ``python -m`` and pytest do).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from xinrong.modeling.he import paillier_math as pm
from xinrong.modeling.he.paillier_math import Int

log = logging.getLogger(__name__)

OBFUSCATION_MODES = ("djn", "classic")

# Below these sizes the ~0.5 s it takes to start a worker (and, for DJN, to
# build its table) costs more than it saves.
PARALLEL_MIN_OBFUSCATORS = 2048
TASK_CHUNK = 1024

_executor_lock = threading.Lock()
_executor: ProcessPoolExecutor | None = None
_executor_workers = 0


def default_workers() -> int:
    """Worker processes to use: one per core, at most four."""
    return max(1, min(os.cpu_count() or 1, 4))


def executor(workers: int) -> ProcessPoolExecutor:
    """The process-wide worker pool (spawned once, shared by every key in the process)."""
    global _executor, _executor_workers
    with _executor_lock:
        if _executor is None or _executor_workers < workers:
            if _executor is not None:
                _executor.shutdown(wait=False, cancel_futures=False)
            _executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            _executor_workers = workers
        return _executor


def shutdown_executor() -> None:
    """Stop the worker processes (tests and benchmarks call this to measure cleanly)."""
    global _executor, _executor_workers
    with _executor_lock:
        if _executor is not None:
            _executor.shutdown(wait=True, cancel_futures=True)
        _executor = None
        _executor_workers = 0


@dataclass
class ObfuscatorSource:
    """How one party generates obfuscators for one public key.

    ``base`` is this party's own DJN ``h_s``: every party derives it from n
    alone, so no party (not even the key owner) can hand others a weak base.
    """

    mode: str
    n: Int
    n_bytes: int
    base: Int | None
    exponent_bits: int
    window: int

    def __post_init__(self) -> None:
        if self.mode not in OBFUSCATION_MODES:
            raise ValueError(f"obfuscation must be one of {OBFUSCATION_MODES}, got {self.mode!r}")
        if self.mode == "djn" and self.base is None:
            raise ValueError("DJN obfuscation needs a base h_s")
        self.nsquare = self.n * self.n
        self._table: pm.FixedBaseTable | None = None
        self._table_lock = threading.Lock()

    def generate(self, count: int) -> list[Int]:
        """count fresh obfuscators in this process."""
        if self.mode == "classic":
            return [pm.classic_obfuscator(self.n, self.nsquare) for _ in range(count)]
        with self._table_lock:
            if self._table is None:
                self._table = pm.FixedBaseTable(self.base, self.nsquare, self.exponent_bits, self.window)
        return self._table.random_powers(count)

    def task_args(self, count: int) -> tuple[str, bytes, bytes, int, int, int]:
        base = b"" if self.base is None else int(self.base).to_bytes(2 * self.n_bytes, "big")
        return (self.mode, int(self.n).to_bytes(self.n_bytes, "big"), base, self.exponent_bits, self.window, count)


class ObfuscatorPool:
    """A queue of fresh obfuscators; see the module docstring for the rules."""

    def __init__(self, source: ObfuscatorSource, workers: int) -> None:
        self.source = source
        self.workers = max(1, workers)
        self._ready: deque[Int] = deque()
        self._pending: deque[Future[tuple[bytes, float]]] = deque()
        self._lock = threading.Lock()
        self.issued = 0
        self.generated = 0
        self.worker_cpu_seconds = 0.0

    @property
    def available(self) -> int:
        with self._lock:
            return len(self._ready)

    def take(self, count: int) -> list[Int]:
        """count obfuscators that have never been handed out before and never will be again."""
        if count < 0:
            raise ValueError("count must be non-negative")
        out: list[Int] = []
        while len(out) < count:
            with self._lock:
                while self._ready and len(out) < count:
                    out.append(self._ready.popleft())
                future = self._pending.popleft() if (len(out) < count and self._pending) else None
            if len(out) >= count:
                break
            if future is not None:
                self._collect(future)
                continue
            out.extend(self._compute(count - len(out)))
        with self._lock:
            self.issued += len(out)
        return out

    def prefill(self, count: int, wait: bool = False) -> None:
        """Compute count more obfuscators ahead of need (in workers when it pays)."""
        if count <= 0:
            return
        if self.workers > 1 and count >= PARALLEL_MIN_OBFUSCATORS:
            # A queued future is owned by whichever take() pops it; a waited-for
            # one is never queued. Either way each batch is unpacked exactly once.
            futures = self._submit(count, queue=not wait)
            if wait:
                for f in futures:
                    values = self._unpack(f)
                    with self._lock:
                        self._ready.extend(values)
            return
        values = self.source.generate(count)
        with self._lock:
            self._ready.extend(values)
            self.generated += len(values)

    def discard(self) -> None:
        """Drop every precomputed value (for a key that is being retired)."""
        with self._lock:
            self._ready.clear()
            for f in self._pending:
                f.cancel()
            self._pending.clear()

    # ----------------------------------------------------------------------

    def _compute(self, count: int) -> list[Int]:
        if self.workers > 1 and count >= PARALLEL_MIN_OBFUSCATORS:
            futures = self._submit(count, queue=False)
            values: list[Int] = []
            for f in futures:
                values.extend(self._unpack(f))
            return values
        values = self.source.generate(count)
        with self._lock:
            self.generated += len(values)
        return values

    def _submit(self, count: int, queue: bool = True) -> list[Future[tuple[bytes, float]]]:
        pool = executor(self.workers)
        futures = []
        remaining = count
        while remaining > 0:
            chunk = min(TASK_CHUNK, remaining)
            futures.append(pool.submit(pm.task_obfuscators, *self.source.task_args(chunk)))
            remaining -= chunk
        if queue:
            with self._lock:
                self._pending.extend(futures)
        return futures

    def _unpack(self, future: Future[tuple[bytes, float]]) -> list[Int]:
        packed, cpu = future.result()
        values = pm.unpack_ints(packed, 2 * self.source.n_bytes)
        with self._lock:
            self.generated += len(values)
            self.worker_cpu_seconds += cpu
        return values

    def _collect(self, future: Future[tuple[bytes, float]]) -> None:
        values = self._unpack(future)
        with self._lock:
            self._ready.extend(values)


def run_parallel(
    workers: int, task: Callable[..., tuple[bytes, float]], arg_sets: list[tuple[Any, ...]]
) -> tuple[list[bytes], float]:
    """Run task over arg_sets in the worker pool; results in order, plus worker CPU seconds."""
    pool = executor(workers)
    futures = [pool.submit(task, *args) for args in arg_sets]
    results = []
    cpu = 0.0
    for f in futures:
        data, seconds = f.result()
        results.append(data)
        cpu += seconds
    return results, cpu
