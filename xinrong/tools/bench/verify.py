"""``xinrong bench verify``: end-to-end verify calls through node and agent over
mTLS, against the raw one-hop gRPC ceiling measured in the same run.

Both loads use the same client machinery: one mTLS channel shared by C
threads, each issuing calls back to back for S seconds, like a load
generator. The end-to-end call is the real thing: the node checks consent,
policy, budgets and replay, writes the audit entry and calls the tax agent,
which re-verifies the consent, reads SQLite, signs and seals. The load
generator keeps every response, and after the timed window the bank SDK
opens every sealed box and checks every provider signature and binding
(``signatures_checked``); a response that fails counts as an error. Doing
that inside the loop would measure the load generator's own crypto rather
than the platform. The ceiling is an empty unary RPC (gRPC health Check)
to a server built by the same factory with the same certificates, in its
own process like the node. The loads run in alternating windows of about
two seconds (each with its own warm-up), so a drift in the machine's speed
moves both sides of the ratio alike.

Placement (``--placement``, Linux, two CPUs or more). ``pinned`` (the
default) runs the platform as it would be deployed on two cores: the node
alone on the first CPU, the agent and the load generator on the others
(``xinrong.tools.placement``). The ceiling is then measured twice, with its
server pinned the same way and with every process free to move, and the
higher of the two is the ceiling the ratio divides by: pinning may only
make the denominator stricter, never easier. ``shared`` leaves every
process where the scheduler puts it, for both loads.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.bank.client import AnswerRejected, BankClient
from xinrong.claims import check_claim, parse_claim
from xinrong.heap import settle_after_start
from xinrong.keys.layout import load_party, party_dir
from xinrong.node.tlog import BENCH_PAUSE_ENV
from xinrong.rpc.channel import secure_channel, wait_healthy
from xinrong.rpc.server import build_server
from xinrong.tools import placement as cpus
from xinrong.tools.bench.fixture import one_provider_platform
from xinrong.tools.bench.procstat import cpu_seconds, cpu_seconds_of
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import node_pb2, node_pb2_grpc


@dataclass
class _Window:
    """What one timed window of a load measured."""

    latencies: list[float]
    seconds: float
    errors: int
    cpu_s: float = 0.0  # CPU the probed processes used in the timed window (``cpu_probe``)
    cpu_by: dict[str, float] = field(default_factory=dict)  # CPU seconds per process group (``cpu_groups``)


def _process_cpu(pids: list[int]) -> Callable[[], float]:
    """A probe: user + system CPU seconds of ``pids`` so far (Linux /proc)."""

    def probe() -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    return probe


def _cpu_groups(groups: dict[str, Callable[[], list[int]]]) -> Callable[[], dict[str, float]]:
    """A probe: CPU seconds so far per named group of processes (pids looked up at each probe,
    so a pool's connections opened since are counted; a process gone since is not)."""

    def probe() -> dict[str, float]:
        return {name: cpu_seconds_of(pids()) for name, pids in groups.items()}

    return probe


def _drive(
    call: Callable[[], object],
    *,
    seconds: float,
    concurrency: int,
    warmup: float,
    cpu_probe: Callable[[], float] | None = None,
    cpu_groups: Callable[[], dict[str, float]] | None = None,
) -> _Window:
    """C threads calling back to back; latencies of the calls that ended in the timed window."""
    stop = threading.Event()
    measuring = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency

    def worker(i: int) -> None:
        mine = latencies[i]
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                call()
            except Exception:
                errors[i] += 1
                continue
            if measuring.is_set():
                mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    cpu0 = cpu_probe() if cpu_probe else 0.0
    by0 = cpu_groups() if cpu_groups else {}
    measuring.set()
    start = time.perf_counter()
    time.sleep(seconds)
    measuring.clear()
    elapsed = time.perf_counter() - start
    cpu = (cpu_probe() - cpu0) if cpu_probe else 0.0
    by = {name: v - by0.get(name, 0.0) for name, v in cpu_groups().items()} if cpu_groups else {}
    stop.set()
    for t in threads:
        t.join(timeout=30)
    return _Window([x for per in latencies for x in per], elapsed, sum(errors), cpu, by)


def _summary(windows: list[_Window]) -> dict[str, Any]:
    """qps and latency percentiles (ms) over all windows of one load."""
    lat = sorted(x for w in windows for x in w.latencies)
    errors = sum(w.errors for w in windows)
    if not lat:
        raise RuntimeError(f"no call succeeded ({errors} errors)")
    return {
        "qps": len(lat) / sum(w.seconds for w in windows),
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
        "calls": float(len(lat)),
        "errors": float(errors),
        "cpu_us_per_call": 1e6 * sum(w.cpu_s for w in windows) / len(lat),
        "cpu_us_per_call_by": {
            name: round(1e6 * sum(w.cpu_by.get(name, 0.0) for w in windows) / len(lat), 1)
            for name in (windows[0].cpu_by if windows else {})
        },
    }


@dataclass
class _Load:
    """A call to drive, and where the processes involved run while it is driven."""

    call: Callable[[], object]
    place: Callable[[], None]


def _unplaced() -> None:
    pass


def _interleaved(
    loads: dict[str, _Load],
    *,
    seconds: float,
    concurrency: int,
    warmup: float,
    slices: int,
    cpu_probe: Callable[[], float] | None = None,
    cpu_groups: Callable[[], dict[str, float]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each load for ``seconds`` in total, in ``slices`` alternating windows.

    This VM's speed drifts by 10-15% within minutes; measured one after the
    other, the loads of a ratio can land in different phases. Alternating
    short windows (and which load goes first in each round) puts them in the
    same phases. Every window has its own warm-up, so the calls it times ran
    in steady state.
    """
    windows: dict[str, list[_Window]] = {name: [] for name in loads}
    names = list(loads)
    for k in range(slices):
        for name in names if k % 2 == 0 else names[::-1]:
            loads[name].place()
            windows[name].append(
                _drive(
                    loads[name].call,
                    seconds=seconds / slices,
                    concurrency=concurrency,
                    warmup=warmup if k == 0 else min(warmup, 0.5),
                    cpu_probe=cpu_probe,
                    cpu_groups=cpu_groups,
                )
            )
    return {name: _summary(w) for name, w in windows.items()}


def run(
    *,
    seconds: float,
    concurrency: int,
    enterprises: int = 200,
    claims: int = 1,
    warmup: float = 2.0,
    slices: int | None = None,
    workdir: Path | None = None,
    placement: str = "pinned",
    database: str = "sqlite",
    replicas: int = 1,
    tree_ab: bool = False,
    pg_synchronous_commit: str = "on",
    pg_statements: bool = False,
) -> dict[str, object]:
    """Every load for ``seconds``, in alternating windows of about 2 s (``slices``).

    ``database="postgres"`` starts a throwaway PostgreSQL 15 (fsync on, as
    deployed; ``xinrong.tools.pgtemp``), migrates it and runs ``replicas``
    node processes on it; the load generator balances over them as the bank
    SDK does. Pinned, every replica shares the node's CPU: on two cores more
    replicas measure contention, not scale-out.

    ``pg_synchronous_commit``: the node's ``[database] synchronous_commit``
    ("on", the default: every answer waits for its WAL flush; "off": like
    SQLite's default ``synchronous=NORMAL``, no flush on the request path).
    On PostgreSQL the result also carries the server's WAL flushes per
    verify call and their mean time over the run (``pg_stat_wal``).

    ``pg_statements`` (diagnostics): the throwaway server loads
    ``pg_stat_statements``; the result lists the statements the measured
    loads cost it most (``calls``, ``exec_ms``, and ``calls_per_verify``).

    ``tree_ab``: one more load, ``verify_no_tree``, the same calls while the
    node builds no Merkle tree (a bench-only pause file the node's tick
    checks, ``xinrong.node.tlog.BENCH_PAUSE_ENV``), alternating with the
    others; before each window with the tree, the node gets a second and a
    half to fold the entries of the window without it, so each side pays only
    for its own. Reported: ``tree_cost`` = 1 - qps with / qps without, and
    (Linux) the node processes' CPU per call with and without the tree,
    ``tree_cpu_cost`` = their ratio - 1: on a machine shared with other
    load, qps swings by tens of percent between windows, CPU per call far less.
    """
    if placement not in ("pinned", "shared"):
        raise ValueError(f"placement must be pinned or shared, not {placement!r}")
    if database not in ("sqlite", "postgres"):
        raise ValueError(f"database must be sqlite or postgres, not {database!r}")
    if replicas < 1 or (replicas > 1 and database != "postgres"):
        raise ValueError("several replicas need --database postgres")
    plan = cpus.split() if placement == "pinned" else None
    own_cpus = cpus.available_cpus() if cpus.supported() else None
    if slices is None:
        slices = max(1, round(seconds / 2))
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xinrong-bench-")
        workdir = Path(tmp.name)
    pg = None
    wal: tuple[int, float] | None = None
    statements: list[dict[str, Any]] = []
    pause_file = workdir / "tree-paused"
    saved_env = os.environ.get(BENCH_PAUSE_ENV)
    if tree_ab:
        os.environ[BENCH_PAUSE_ENV] = str(pause_file)  # inherited by the node processes
    try:
        table: dict[str, Any] | None = None
        if database == "postgres":
            from xinrong.node.config import DatabaseConfig
            from xinrong.node.pg import migrate
            from xinrong.tools import pgtemp

            pg = pgtemp.start(fast=False, statements=pg_statements)
            table = {
                "url": pg.url,
                "password_file": str(pg.password_file),
                "pool_size": 8,
                "synchronous_commit": pg_synchronous_commit,
            }
            migrate(DatabaseConfig(url=pg.url, password_file=pg.password_file))
            if pg_statements:
                _statements_reset(pg.dsn, create=True)
        if pg is not None and plan is not None:
            # As deployed on two cores: the node alone on the first CPU; its
            # database, like the agent, on the others (backends inherit this).
            for pg_pid in pg.pids():
                cpus.pin(pg_pid, plan.rest)
        with ProcessGroup(workdir) as group:
            bench = one_provider_platform(workdir, group, enterprises=enterprises, seed=11, database=table)
            platform, enterprise, bank_creds, consent = bench.platform, bench.enterprise, bench.bank, bench.consent
            node_names = ["node"]
            addresses = [platform.node_address]
            for i in range(1, replicas):
                assert platform.node_config is not None
                port_file = workdir / "state" / f"node{i}.port"
                group.start(
                    f"node{i}",
                    ["node", "serve", "--config", str(platform.node_config), "--port-file", str(port_file)],
                    port_file=port_file,
                )
                node_names.append(f"node{i}")
                addresses.append(f"127.0.0.1:{group.wait_port(f'node{i}')}")
            consent_id = bench.consent_id
            all_claims = [
                "tax.credit_grade in A,B",
                "tax.in_arrears == false",
                "tax.consecutive_normal_months >= 12",
                "tax.vat_paid_last_year >= 500000",
            ]
            asked = all_claims[: max(1, min(claims, len(all_claims)))]
            parsed = [parse_claim(c) for c in asked]
            responses: list[tuple[str, node_pb2.VerifyResponse]] = []

            with (
                BankClient(addresses, bank_creds) as bank,
                secure_channel(addresses, bank_creds, server_role="node", server_id="node") as ch,
            ):
                if len(addresses) > 1:
                    wait_healthy(ch, timeout=30)
                bank.register_consent(consent)
                bank.refresh_providers()
                stub = node_pb2_grpc.NodeServiceStub(ch)

                def verify_call() -> None:
                    request_id = str(uuid.uuid4())
                    resp = stub.Verify(
                        node_pb2.VerifyRequest(
                            request_id=request_id,
                            requested_at=int(time.time()),
                            enterprise_uscc=enterprise,
                            consent_id=consent_id,
                            claims=parsed,
                        ),
                        timeout=5,
                    )
                    responses.append((request_id, resp))

                # The ceiling: an empty unary RPC (health Check) to a server built by
                # the same factory with the node's certificates, in its own process
                # like the node; idle while the platform is measured and vice versa.
                port_file = workdir / "state" / "ceiling.port"
                group.start(
                    "ceiling",
                    [
                        "bench",
                        "ceiling-server",
                        "--credentials",
                        str(party_dir(platform.keys_dir, "node", "node")),
                        "--port-file",
                        str(port_file),
                    ],
                    port_file=port_file,
                )
                port = group.wait_port("ceiling")
                with secure_channel(f"127.0.0.1:{port}", bank_creds, server_role="node", server_id="node") as hc:
                    health = health_pb2_grpc.HealthStub(hc)
                    check = health_pb2.HealthCheckRequest()

                    def ceiling_call() -> None:
                        health.Check(check, timeout=5)

                    loads = {"verify": _Load(verify_call, _unplaced), "ceiling": _Load(ceiling_call, _unplaced)}
                    if plan is not None:
                        pid = {name: group.parties[name].proc.pid for name in (*node_names, "agent-tax", "ceiling")}
                        me = os.getpid()

                        def platform_deployed() -> None:
                            for name in node_names:
                                cpus.pin(pid[name], plan.server)
                            cpus.pin(pid["agent-tax"], plan.rest)
                            cpus.pin(me, plan.rest)

                        def ceiling_pinned() -> None:
                            cpus.pin(pid["ceiling"], plan.server)
                            cpus.pin(me, plan.rest)

                        def ceiling_free() -> None:
                            cpus.pin(pid["ceiling"], plan.all)
                            cpus.pin(me, plan.all)

                        loads = {
                            "verify": _Load(verify_call, platform_deployed),
                            "ceiling": _Load(ceiling_call, ceiling_pinned),
                            "ceiling_shared": _Load(ceiling_call, ceiling_free),
                        }
                    if tree_ab:
                        with_tree, place_with = loads["verify"].call, loads["verify"].place

                        def tree_on() -> None:
                            if pause_file.exists():
                                pause_file.unlink()
                                time.sleep(1.5)  # the next tick folds the paused window's entries
                            place_with()

                        def tree_off() -> None:
                            pause_file.touch()
                            time.sleep(1.5)  # the tick in flight, if any, ends
                            place_with()

                        loads["verify"] = _Load(with_tree, tree_on)
                        loads["verify_no_tree"] = _Load(with_tree, tree_off)
                    probe = None
                    if tree_ab and cpus.supported():
                        probe = _process_cpu([group.parties[name].proc.pid for name in node_names])
                    groups = None
                    if cpus.supported():
                        parties = group.parties
                        procs: dict[str, Callable[[], list[int]]] = {
                            "node": lambda: [parties[name].proc.pid for name in node_names],
                            "agent": lambda: [parties["agent-tax"].proc.pid],
                            "client": lambda: [os.getpid()],
                        }
                        if pg is not None:
                            procs["postgres"] = pg.pids
                        groups = _cpu_groups(procs)
                    wal0 = _wal_syncs(pg.dsn) if pg is not None else (0, 0.0)
                    if pg is not None and pg_statements:
                        _statements_reset(pg.dsn)
                    measured = _interleaved(
                        loads,
                        seconds=seconds,
                        concurrency=concurrency,
                        warmup=warmup,
                        slices=slices,
                        cpu_probe=probe,
                        cpu_groups=groups,
                    )
                    if pg is not None:  # flushes while the loads ran (warm-ups and the ceiling's windows too)
                        wal1 = _wal_syncs(pg.dsn)
                        wal = (wal1[0] - wal0[0], wal1[1] - wal0[1])
                        if pg_statements:
                            statements = _statements(pg.dsn)
                e2e, ceiling = measured["verify"], measured["ceiling"]
                ceilings = {"ceiling_pinned_qps" if plan else "ceiling_shared_qps": round(ceiling["qps"], 1)}
                if "ceiling_shared" in measured:
                    ceilings["ceiling_shared_qps"] = round(measured["ceiling_shared"]["qps"], 1)
                    if measured["ceiling_shared"]["qps"] > ceiling["qps"]:
                        ceiling = measured["ceiling_shared"]  # the stricter denominator
                wanted = {check_claim(bank.catalog, c).text for c in parsed}
                bad = 0
                for request_id, resp in responses:
                    try:
                        verdicts = bank.open_verdicts(resp, request_id, enterprise, consent_id)
                        if {v.claim for v in verdicts} != wanted:
                            bad += 1
                    except AnswerRejected:
                        bad += 1
                checked = len(responses) - bad
    finally:
        if tree_ab:
            if saved_env is None:
                os.environ.pop(BENCH_PAUSE_ENV, None)
            else:
                os.environ[BENCH_PAUSE_ENV] = saved_env
        if own_cpus is not None:  # the load generator may be a test process: give its CPUs back
            cpus.pin(os.getpid(), own_cpus)
        if pg is not None:
            pg.stop()
        if tmp is not None:
            tmp.cleanup()
    tree: dict[str, object] = {}
    if tree_ab:
        off = measured["verify_no_tree"]
        tree = {
            "qps_no_tree": round(off["qps"], 1),
            "p99_ms_no_tree": round(off["p99_ms"], 2),
            "tree_cost": round(1 - e2e["qps"] / off["qps"], 3),
            # The node's own CPU per call: what the machine's other load moves least.
            "node_cpu_us_per_call": round(e2e["cpu_us_per_call"], 1),
            "node_cpu_us_per_call_no_tree": round(off["cpu_us_per_call"], 1),
            "tree_cpu_cost": round(e2e["cpu_us_per_call"] / off["cpu_us_per_call"] - 1, 3)
            if off["cpu_us_per_call"]
            else None,
        }
    return {
        "bench": "verify",
        "qps": round(e2e["qps"], 1),
        "p50_ms": round(e2e["p50_ms"], 2),
        "p99_ms": round(e2e["p99_ms"], 2),
        "ceiling_qps": round(ceiling["qps"], 1),
        "ceiling_p50_ms": round(ceiling["p50_ms"], 2),
        "ratio": round(e2e["qps"] / ceiling["qps"], 3),
        **ceilings,
        "placement": "pinned" if plan else "shared",
        "database": database,
        "replicas": replicas,
        "errors": int(sum(m["errors"] for m in measured.values()) + bad),
        "signatures_checked": checked,
        "concurrency": concurrency,
        "seconds": seconds,
        "slices": slices,
        "claims_per_call": len(asked),
        # CPU per verify call by process (Linux): what shared load moves least.
        **({"cpu_us_per_call": e2e["cpu_us_per_call_by"]} if e2e["cpu_us_per_call_by"] else {}),
        **(
            {
                "pg_synchronous_commit": pg_synchronous_commit,
                "pg_wal_syncs_per_call": round(wal[0] / max(1.0, e2e["calls"]), 3),
                "pg_wal_sync_ms": round(wal[1] / wal[0], 3) if wal[0] else 0.0,
            }
            if wal is not None
            else {}
        ),
        **tree,
        **(
            {
                "pg_statements": [
                    {**st, "calls_per_verify": round(st["calls"] / max(1.0, e2e["calls"]), 3)} for st in statements
                ]
            }
            if pg_statements
            else {}
        ),
    }


def _wal_syncs(dsn: str) -> tuple[int, float]:
    """The server's WAL flushes so far, and their total time in ms (``track_wal_io_timing``, pgtemp)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT wal_sync, wal_sync_time FROM pg_stat_wal").fetchone()
    return (int(row[0]), float(row[1])) if row else (0, 0.0)


def _statements_reset(dsn: str, *, create: bool = False) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        if create:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def _statements(dsn: str, top: int = 40) -> list[dict[str, Any]]:
    """The statements that cost the server most since the reset (``--pg-statements``): text, calls, time."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 120), calls, total_exec_time, "
            "total_plan_time FROM pg_stat_statements WHERE query NOT LIKE '%%pg_stat_statements%%' "
            "ORDER BY total_exec_time + total_plan_time DESC LIMIT %s",
            (top,),
        ).fetchall()
    return [
        {"query": q, "calls": int(c), "exec_ms": round(float(e), 1), "plan_ms": round(float(pl), 1)}
        for q, c, e, pl in rows
    ]


def ceiling_server(args: argparse.Namespace) -> int:
    """Serve only gRPC health (the empty unary RPC) with a party's credentials."""
    # The node's runtime, and its start-up settling, so the one hop is the node's own.
    server = build_server(load_party(args.credentials), "127.0.0.1:0", [], runtime="asyncio")
    server.set_serving(True)
    settle_after_start()
    server.install_signal_handlers(grace=1.0)
    tmp = Path(str(args.port_file) + ".tmp")
    tmp.write_text(str(server.port))
    tmp.replace(args.port_file)
    server.wait()
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=10.0, help="measuring time per load (default 10)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--claims", type=int, default=1, help="claims per verify call (1-4, all at the tax agent)")
    p.add_argument(
        "--placement",
        choices=("pinned", "shared"),
        default="pinned",
        help="pinned: node alone on the first CPU, agent and clients on the others; the ceiling "
        "is the higher of pinned and free (default). shared: the scheduler places everything",
    )
    p.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the node's store: SQLite (default) or a throwaway PostgreSQL 15 started for the run",
    )
    p.add_argument("--replicas", type=int, default=1, help="node processes on the one PostgreSQL (default 1)")
    p.add_argument(
        "--pg-synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="the node's [database] synchronous_commit (default on: every answer waits for its WAL "
        "flush; off: no flush on the request path, like SQLite's synchronous=NORMAL)",
    )
    p.add_argument(
        "--pg-statements",
        action="store_true",
        help="diagnostics: load pg_stat_statements and report the statements the verify load cost most",
    )
    p.add_argument(
        "--tree-ab",
        action="store_true",
        help="also time verify with the node's Merkle tree building paused (bench only), alternating",
    )
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    result = run(
        seconds=args.seconds,
        concurrency=args.concurrency,
        claims=args.claims,
        placement=args.placement,
        database=args.database,
        replicas=args.replicas,
        tree_ab=args.tree_ab,
        pg_synchronous_commit=args.pg_synchronous_commit,
        pg_statements=args.pg_statements,
    )
    if not args.json:
        print(
            f"end-to-end verify: {result['qps']} qps, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms; "
            f"one-hop ceiling {result['ceiling_qps']} qps; ratio {result['ratio']}"
        )
    print(json.dumps(result))
    return 0
