"""``xinrong bench soak``: steady verify load at half the measured capacity, minute by minute.

The platform is ``bench verify``'s (tax agent and node as processes over
mTLS, one bank, one consent). The run first measures capacity the way
``bench verify`` does (C threads calling back to back after a warm-up),
then offers an open-loop load at ``--load`` (default 0.5) of it: calls are
issued on a fixed schedule whatever the latency, so a server that slows
down shows up as latency and errors, not as a politely reduced load. Every
interval (a minute by default) reports the calls that ended in it: errors,
p50 and p99 latency, and the resident memory of node and agent at its end.
A sample of the answers (one in ``CHECK_EVERY``) is opened by the bank SDK,
signatures and bindings checked; one that fails is an error.

The goal on a healthy build: no errors, and memory flat after the first
interval (growth under 5 % from the first interval's figure to the last).
``wal_node_mb`` (the node's WAL file at each interval's end) shows the WAL
kept bounded (``xinrong.node.db.Database.checkpoint``); ``load_average``
the box's 1-minute load at start and end. ``--heap-probe DIR`` has node and
agent write what their heaps grew by, every interval (``xinrong.heap``).
``--malloc-arena-max`` starts the servers with ``MALLOC_ARENA_MAX`` set, to
tell glibc arena growth from a leak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from xinrong.bank.client import AnswerRejected, BankClient
from xinrong.claims import check_claim, parse_claim
from xinrong.heap import HEAP_PROBE_ENV, HEAP_PROBE_SECONDS_ENV, HEAP_PROBE_TRACE_ENV
from xinrong.rpc.channel import secure_channel
from xinrong.tools.bench.fixture import one_provider_platform
from xinrong.tools.bench.verify import _drive
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import node_pb2, node_pb2_grpc

CHECK_EVERY = 20  # open one answer in this many with the bank SDK
MAX_IN_FLIGHT = 512  # calls outstanding before the schedule counts a call as not sent (an error)
CLAIM = "tax.credit_grade in A,B"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class _Interval:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


@contextlib.contextmanager
def _environment(**values: str | None) -> Iterator[None]:
    """Environment variables the server processes inherit, for the run only."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is not None:
                os.environ[k] = v
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def run(
    *,
    minutes: float,
    interval_seconds: float = 60.0,
    load: float = 0.5,
    capacity_seconds: float = 6.0,
    concurrency: int = 8,
    enterprises: int = 200,
    malloc_arena_max: int | None = None,
    max_clock_skew_seconds: int | None = None,
    workdir: Path | None = None,
    heap_probe: Path | None = None,
    heap_trace: bool = True,
) -> dict[str, Any]:
    """Measure capacity, then ``minutes`` of open-loop load at ``load`` x capacity.

    ``max_clock_skew_seconds``: the node's window (None: its default, 300 s).
    The node keeps every request id for twice the window plus a minute
    (``xinrong.node.limits``), so its memory grows with rate x retention
    until the first ids expire: with the default that is 11 minutes, longer
    than the usual soak; a short window shows the plateau within the run.
    ``heap_probe``: a directory where node and agent write what their heaps grew by,
    every interval (``xinrong.heap.start_heap_probe``); with ``heap_trace`` by tracemalloc
    too (slows them down a lot), else native figures only.
    """
    if not 0 < load <= 1:
        raise ValueError("load is a fraction of capacity in (0, 1]")
    intervals = max(1, math.ceil(minutes * 60 / interval_seconds - 1e-9))
    load_start = round(os.getloadavg()[0], 2)  # the box's 1-minute load: other work skews every figure
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xinrong-soak-")
        workdir = Path(tmp.name)
    arena = None if malloc_arena_max is None else str(malloc_arena_max)
    try:
        probe = None if heap_probe is None else str(heap_probe.resolve())
        if heap_probe is not None:
            heap_probe.mkdir(parents=True, exist_ok=True)
        with (
            _environment(
                MALLOC_ARENA_MAX=arena,
                **{
                    HEAP_PROBE_ENV: probe,
                    HEAP_PROBE_SECONDS_ENV: None if probe is None else str(interval_seconds),
                    HEAP_PROBE_TRACE_ENV: None if probe is None else ("1" if heap_trace else "0"),
                },
            ),
            ProcessGroup(workdir) as group,
        ):
            overrides = {} if max_clock_skew_seconds is None else {"max_clock_skew_seconds": max_clock_skew_seconds}
            bench = one_provider_platform(workdir, group, enterprises=enterprises, seed=11, node_overrides=overrides)
            pids = {"node": group.parties["node"].proc.pid, "agent": group.parties["agent-tax"].proc.pid}
            platform = bench.platform
            claim = parse_claim(CLAIM)
            with (
                BankClient([platform.node_address], bench.bank) as bank,
                secure_channel(platform.node_address, bench.bank, server_role="node", server_id="node") as ch,
            ):
                bank.register_consent(bench.consent)
                bank.refresh_providers()
                wanted = {check_claim(bank.catalog, claim).text}
                stub = node_pb2_grpc.NodeServiceStub(ch)
                consent_id = bench.consent_id

                def request() -> node_pb2.VerifyRequest:
                    return node_pb2.VerifyRequest(
                        request_id=str(uuid.uuid4()),
                        requested_at=int(time.time()),
                        enterprise_uscc=bench.enterprise,
                        consent_id=consent_id,
                        claims=[claim],
                    )

                capacity = _drive(
                    lambda: stub.Verify(request(), timeout=5),
                    seconds=capacity_seconds,
                    concurrency=concurrency,
                    warmup=2.0,
                )
                capacity_qps = len(capacity.latencies) / capacity.seconds
                rate = max(1.0, capacity_qps * load)
                time.sleep(1.0)  # let the closed-loop backlog drain before the schedule starts

                lock = threading.Lock()
                current = [_Interval()]
                in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
                checks: queue.Queue[tuple[_Interval, str, node_pb2.VerifyResponse] | None] = queue.Queue()
                sent = [0]

                def checker() -> None:
                    while (item := checks.get()) is not None:
                        interval, request_id, resp = item
                        try:
                            verdicts = bank.open_verdicts(resp, request_id, bench.enterprise, consent_id)
                            ok = {v.claim for v in verdicts} == wanted
                        except AnswerRejected:
                            ok = False
                        if not ok:
                            with lock:
                                interval.error("answer_rejected")

                def issue(n: int) -> None:
                    req = request()
                    t0 = time.perf_counter()
                    fut = stub.Verify.future(req, timeout=5)

                    def done(f: grpc.Future[node_pb2.VerifyResponse]) -> None:
                        elapsed = time.perf_counter() - t0
                        in_flight.release()
                        with lock:
                            interval = current[0]
                            if f.exception() is not None:
                                err = f.exception()
                                if isinstance(err, grpc.Call):
                                    kind = f"{err.code().name}: {str(err.details() or '')[:60]}"
                                else:
                                    kind = type(err).__name__
                                interval.error(kind)
                                return
                            interval.latencies.append(elapsed)
                        if n % CHECK_EVERY == 0:
                            checks.put((interval, req.request_id, f.result()))

                    fut.add_done_callback(done)

                check_thread = threading.Thread(target=checker, daemon=True)
                check_thread.start()
                stop = threading.Event()

                def pacer() -> None:
                    period = 1.0 / rate
                    next_at = time.perf_counter()
                    while not stop.is_set():
                        now = time.perf_counter()
                        if now < next_at:
                            time.sleep(next_at - now)
                            continue
                        next_at += period
                        if not in_flight.acquire(blocking=False):
                            with lock:
                                current[0].error("not_sent_backlog")
                            continue
                        sent[0] += 1
                        issue(sent[0])

                pace_thread = threading.Thread(target=pacer, daemon=True)
                started = time.perf_counter()
                pace_thread.start()
                finished: list[_Interval] = []
                rss: dict[str, list[float]] = {"node": [], "agent": []}
                wal: list[float] = []
                node_wal = workdir / "state" / "node.db-wal"
                durations: list[float] = []
                for k in range(intervals):
                    end = started + (k + 1) * interval_seconds
                    time.sleep(max(0.0, end - time.perf_counter()))
                    with lock:
                        finished.append(current[0])
                        current[0] = _Interval()
                    durations.append(interval_seconds)
                    for name, pid in pids.items():
                        rss[name].append(rss_mb(pid))
                    wal.append(round(node_wal.stat().st_size / 1e6, 1) if node_wal.exists() else 0.0)
                stop.set()
                pace_thread.join(timeout=10)
                # Calls still in flight end in a last, unreported interval; wait for them
                # (every slot back), so the checker has all it will get.
                deadline = time.monotonic() + 10
                taken = 0
                while taken < MAX_IN_FLIGHT and time.monotonic() < deadline:
                    if in_flight.acquire(timeout=0.1):
                        taken += 1
                checks.put(None)
                check_thread.join(timeout=30)
                alive = all(group.parties[n].proc.poll() is None for n in ("node", "agent-tax"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    p50: list[float | None] = []
    p99: list[float | None] = []
    for iv in finished:
        lat = sorted(iv.latencies)
        # An interval where no call succeeded has no latency: null, not NaN (which is not JSON).
        p50.append(round(1000 * _percentile(lat, 0.5), 2) if lat else None)
        p99.append(round(1000 * _percentile(lat, 0.99), 2) if lat else None)
    growth = {
        name: round(100 * (values[-1] - values[0]) / values[0], 2) if values and values[0] else 0.0
        for name, values in rss.items()
    }
    kinds: dict[str, int] = {}
    for iv in finished:
        for kind, n in iv.error_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    return {
        "bench": "soak",
        "minutes": minutes,
        "interval_seconds": interval_seconds,
        "capacity_qps": round(capacity_qps, 1),
        "target_qps": round(rate, 1),
        "qps": [round(len(iv.latencies) / d, 1) for iv, d in zip(finished, durations, strict=True)],
        "errors": [iv.errors for iv in finished],
        "error_kinds": kinds,
        "p50_ms": p50,
        "p99_ms": p99,
        "rss_node_mb": rss["node"],
        "rss_agent_mb": rss["agent"],
        "rss_growth_after_first_pct": growth,
        "wal_node_mb": wal,
        "load_average": [load_start, round(os.getloadavg()[0], 2)],
        "answers_checked_every": CHECK_EVERY,
        "malloc_arena_max": malloc_arena_max,
        "max_clock_skew_seconds": max_clock_skew_seconds,
        "servers_alive": alive,
    }


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=10.0, help="length of the steady load (default 10; fractions ok)")
    p.add_argument(
        "--interval-seconds",
        type=float,
        default=60.0,
        help="one reported interval (default 60: the lists are per minute)",
    )
    p.add_argument("--load", type=float, default=0.5, help="offered load as a fraction of capacity (default 0.5)")
    p.add_argument("--capacity-seconds", type=float, default=6.0, help="how long capacity is measured (default 6)")
    p.add_argument("--concurrency", type=int, default=8, help="clients while capacity is measured (default 8)")
    p.add_argument(
        "--malloc-arena-max", type=int, default=None, help="start the servers with MALLOC_ARENA_MAX set to this"
    )
    p.add_argument(
        "--max-clock-skew-seconds",
        type=int,
        default=None,
        help="the node's clock-skew window (default: the node's, 300 s; request ids are kept 2x + 60 s)",
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep keys, data and server logs here")
    p.add_argument(
        "--heap-probe",
        type=Path,
        default=None,
        help="debug: node and agent write their heap growth (tracemalloc, object counts) here every interval",
    )
    p.add_argument(
        "--heap-native-only",
        action="store_true",
        help="with --heap-probe: native memory figures only, no tracemalloc (servers keep their speed)",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    result = run(
        minutes=args.minutes,
        interval_seconds=args.interval_seconds,
        load=args.load,
        capacity_seconds=args.capacity_seconds,
        concurrency=args.concurrency,
        malloc_arena_max=args.malloc_arena_max,
        max_clock_skew_seconds=args.max_clock_skew_seconds,
        workdir=args.workdir,
        heap_probe=args.heap_probe,
        heap_trace=not args.heap_native_only,
    )
    if not args.json:
        print(
            f"soak at {result['target_qps']} qps (capacity {result['capacity_qps']}): "
            f"errors {sum(result['errors'])}, RSS growth after the first interval {result['rss_growth_after_first_pct']}"
        )
    print(json.dumps(result))
    return 0
