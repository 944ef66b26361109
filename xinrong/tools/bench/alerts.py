"""``xinrong bench alerts``: N post-loan watches, one provider's new period -> every bank holds every alert.

Real processes on 127.0.0.1 over mTLS: the tax agent, the node, and one
``xinrong bank alerts --follow`` per bank (two banks, the watches split
between them). What is measured is the monitoring pipeline from the moment
a new period is active at the agent to the moment both banks have
processed every update: the agent's pass (read, evaluate, sign, seal, pad,
outbox), the node's pull and queue, the stream, and each bank's open +
signature check + state commit.

Setup is *not* measured and does not go through ``RegisterWatch``: N
enterprises' keys, consents and registrations would take far longer than
the pipeline itself (each registration verifies a consent signature at the
node and at the agent). Instead the watches are written straight into the
agent's monitor store and the node's ``watches`` table, as registration
would have left them (the same claims, the banks' CA-bound sealing keys).
Period 1 is then imported: its pass gives every watch its baseline at the
banks (timed too, as ``baseline_seconds``). Period 2 puts ``--changed`` of
the borrowers into tax arrears; it is imported in this process (the
importer's own code, so its commit time is known exactly) and timed:

* ``seconds``: import committed -> every bank processed every update;
* ``latency_p50_s`` / ``latency_p99_s``: import committed -> the bank
  committed that watch's update, over all N watches (a pass serves the
  watches in order, so the tail is the pass itself);
* ``agent_pass_seconds``: import committed -> the agent's pass recorded
  complete (all N updates signed, sealed and in its outbox);
* ``node_queued_seconds``: import committed -> all N updates in the node's queue;
* ``single_watch_p99_s``: the same pipeline with one watch, over
  ``--trials`` imports (the latency a lone borrower's alert sees);
* per-update costs measured in process (sign, seal, open + verify), to say
  where the time goes.
"""

from __future__ import annotations

import argparse
import csv
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from xinrong import uscc
from xinrong.catalog import default_catalog
from xinrong.claims import check_claim, parse_claim
from xinrong.keys.layout import load_party, party_dir
from xinrong.keys.sealing import SessionSealer
from xinrong.limits import WATCH_UPDATE_PAD_BYTES
from xinrong.node.db import Database
from xinrong.provider_agent.config import default_state_db
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.monitoring import (
    WATCH_UPDATE_CONTENT_TYPE,
    WATCH_UPDATE_CONTEXT,
    WatchStore,
    monitor_db_path,
)
from xinrong.provider_agent.store import DataStore
from xinrong.tools.localnet import LocalPlatform, provision_keys, write_agent_config, write_node_config
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import monitoring_pb2

BANKS = ("bank-a", "bank-b")
CLAIMS = ("tax.in_arrears == true", "tax.credit_grade in C,D")
HEADER = [
    "uscc",
    "as_of",
    "credit_grade",
    "abnormal_taxpayer",
    "in_arrears",
    "arrears_amount",
    "vat_paid_last_year",
    "cit_paid_last_year",
    "consecutive_normal_months",
    "last_normal_payment_date",
    "grade_a_taxpayer",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--watches", type=int, default=100_000, help="watches (one borrower each; default 100,000)")
    p.add_argument("--changed", type=float, default=0.1, help="share of borrowers falling into arrears (default 0.1)")
    p.add_argument("--trials", type=int, default=5, help="imports of the single-watch latency run (0: skip)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the banks")
    p.add_argument("--workdir", default="", help="keep the run here (default: a temporary folder)")
    p.add_argument("--json", action="store_true", help="one JSON line (the default output)")


def _codes(n: int) -> list[str]:
    return [uscc.make("9", "1", "130100", f"{i + 1:08d}") for i in range(n)]


def _write_tax(path: Path, codes: list[str], as_of: str, arrears: set[str]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(HEADER)
        for code in codes:
            bad = code in arrears
            w.writerow(
                [
                    code,
                    as_of,
                    "B",
                    "false",
                    "true" if bad else "false",
                    "1000" if bad else "0",
                    "",
                    "",
                    "12",
                    "",
                    "false",
                ]
            )
    return path


def _import(plat: LocalPlatform, csv_path: Path) -> float:
    """Import in this process (the importer's code); returns the wall time the period became active."""
    data = DataStore(plat.workdir / "state" / "agent-tax.db", "tax")
    try:
        import_csv(data, default_catalog(), "tax", csv_path)
        return time.time()
    finally:
        data.close()


def _seed(plat: LocalPlatform, codes: list[str], prefix: str) -> None:
    """Watches as RegisterWatch leaves them, at the agent and at the node (see the module docstring)."""
    catalog = default_catalog()
    claims = [check_claim(catalog, parse_claim(c)).claim for c in CLAIMS]
    blob = monitoring_pb2.AddWatchRequest(claims=claims).SerializeToString(deterministic=True)
    keys = {b: load_party(party_dir(plat.keys_dir, "institution", b)).binding.sealing_public_raw for b in BANKS}
    until = int(time.time()) + 30 * 86400
    state_db = default_state_db(plat.workdir / "state" / "agent-tax.db")
    store = WatchStore(monitor_db_path(state_db))
    rows_agent = []
    rows_node = []
    for i, code in enumerate(codes):
        bank = BANKS[i % len(BANKS)]
        watch_id = f"{prefix}{i:07d}"
        rows_agent.append(
            (watch_id, code, f"c-{watch_id}", bank, keys[bank], "2025-01-01", "2027-12-31", until, blob, b"", 0)
        )
        rows_node.append((watch_id, bank, code, f"c-{watch_id}", '["tax"]', json.dumps(list(CLAIMS)), until, 1, 0))
    with store._lock, store._tx() as conn:
        conn.executemany("INSERT INTO watches VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows_agent)
    store.close()
    db = Database(plat.workdir / "state" / "node.db")
    try:
        with db.transaction() as tx:
            tx.executemany("INSERT INTO watches VALUES (?,?,?,?,?,?,?,?,?)", rows_node)
    finally:
        db.close()


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """A read of a bank's alert store; none while the bank has not created it (file or tables) yet."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return list(conn.execute(sql).fetchall())
    except sqlite3.OperationalError:  # the file is there, its schema not yet
        return []
    finally:
        conn.close()


def _count(path: Path, sql: str) -> int:
    rows = _rows(path, sql)
    return int(rows[0][0]) if rows else 0


def _bank_db(plat: LocalPlatform, bank: str) -> Path:
    return plat.workdir / f"state-{bank}" / "alerts.db"


def _seen(plat: LocalPlatform, suffix: str) -> int:
    return sum(_count(_bank_db(plat, b), f"SELECT COUNT(*) FROM seen WHERE update_id LIKE '%{suffix}'") for b in BANKS)


def _wait(done: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the banks did not receive every update in time")
        time.sleep(0.05)


def _latencies(plat: LocalPlatform, suffix: str, since: float) -> list[float]:
    out: list[float] = []
    for b in BANKS:
        # A bank without watches (the single-watch run) may not have created its store yet.
        rows = _rows(_bank_db(plat, b), f"SELECT received_ms FROM seen WHERE update_id LIKE '%{suffix}'")
        out.extend(r[0] / 1000 - since for r in rows)
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _platform(workdir: Path, group: ProcessGroup) -> LocalPlatform:
    keys = workdir / "keys"
    provision_keys(keys, ["tax"], BANKS)
    plat = LocalPlatform(workdir=workdir, keys_dir=keys, group=group)
    plat.agent_configs["tax"] = write_agent_config(workdir, keys, "tax")
    return plat


def _start(plat: LocalPlatform) -> None:
    plat.start_agents(["tax"])
    plat.node_config = write_node_config(plat.workdir, plat.keys_dir, plat.provider_ports, BANKS)
    plat.start_node()
    for bank in BANKS:
        plat.group.start(
            bank,
            [
                "bank",
                "alerts",
                "--follow",
                "--node",
                plat.node_address,
                "--credentials",
                str(party_dir(plat.keys_dir, "institution", bank)),
                "--state-dir",
                str(plat.workdir / f"state-{bank}"),
            ],
        )


def _pipeline(workdir: Path, n: int, changed: float, timeout: float) -> dict[str, Any]:
    with ProcessGroup(workdir) as group:
        plat = _platform(workdir, group)
        codes = _codes(n)
        t0 = time.monotonic()
        data_dir = workdir / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        p1 = _write_tax(data_dir / "tax-p1.csv", codes, "2026-06-30", set())
        bad = set(codes[:: max(1, round(1 / changed))]) if changed > 0 else set()
        p2 = _write_tax(data_dir / "tax-p2.csv", codes, "2026-07-31", bad)
        # The agent creates its stores; the node's database is created by the seeding.
        (workdir / "state").mkdir(parents=True, exist_ok=True)
        _seed(plat, codes, "w")
        setup = time.monotonic() - t0
        _start(plat)
        t1 = time.time()
        _import(plat, p1)
        _wait(lambda: _seen(plat, ".1") >= n, timeout)
        baseline = time.time() - t1
        active = _import(plat, p2)
        node_db = workdir / "state" / "node.db"
        monitor_db = monitor_db_path(default_state_db(workdir / "state" / "agent-tax.db"))
        node_done = agent_done = 0.0

        def done() -> bool:
            nonlocal node_done, agent_done
            now = time.time() - active
            if not agent_done and _count(monitor_db, "SELECT value FROM meta WHERE key = 'evaluated_period'") >= 2:
                agent_done = now
            if not node_done and _count(node_db, "SELECT COUNT(*) FROM alert_queue WHERE update_id LIKE '%.2'") >= n:
                node_done = now
            return _seen(plat, ".2") >= n

        _wait(done, timeout)
        seconds = time.time() - active
        latencies = _latencies(plat, ".2", active)
        alerts = sum(_count(_bank_db(plat, b), "SELECT COUNT(*) FROM alerts") for b in BANKS)
        return {
            "seconds": round(seconds, 2),
            "baseline_seconds": round(baseline, 2),
            "agent_pass_seconds": round(agent_done or seconds, 2),
            "node_queued_seconds": round(node_done or seconds, 2),
            "latency_p50_s": round(_pct(latencies, 0.5), 3),
            "latency_p99_s": round(_pct(latencies, 0.99), 3),
            "alerts_held": alerts,
            "alerts_expected": len(bad),
            "setup_seconds": round(setup, 1),
        }


def _single(workdir: Path, trials: int, timeout: float) -> dict[str, Any]:
    """One watch, ``trials`` imports flipping its arrears flag: the latency one borrower's alert sees."""
    with ProcessGroup(workdir) as group:
        plat = _platform(workdir, group)
        codes = _codes(1)
        (workdir / "state").mkdir(parents=True, exist_ok=True)
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        _seed(plat, codes, "s")
        _start(plat)
        _import(plat, _write_tax(workdir / "data" / "p1.csv", codes, "2026-01-31", set()))
        _wait(lambda: _seen(plat, ".1") >= 1, timeout)
        latencies = []
        for t in range(trials):
            period = t + 2
            flag = set(codes) if t % 2 == 0 else set()
            active = _import(
                plat, _write_tax(workdir / "data" / f"p{period}.csv", codes, f"2026-{period:02d}-28", flag)
            )
            _wait(lambda: _seen(plat, f".{period}") >= 1, timeout)
            latencies.extend(_latencies(plat, f".{period}", active))
        alerts = sum(_count(_bank_db(plat, b), "SELECT COUNT(*) FROM alerts") for b in BANKS)
        return {
            "single_watch_p50_s": round(_pct(latencies, 0.5), 3),
            "single_watch_p99_s": round(max(latencies), 3),
            "single_watch_alerts": alerts,
        }


def _costs(samples: int = 2000) -> dict[str, float]:
    """Per-update microseconds of the crypto steps, in this process."""
    from xinrong.keys.sealing import SealingKey
    from xinrong.keys.signing import SigningKey

    signing = SigningKey.generate()
    sealing = SealingKey.generate()
    sealer = SessionSealer()
    update = monitoring_pb2.WatchUpdate(
        update_id="w0000001.tax.2", watch_id="w0000001", enterprise_uscc="9" * 18, provider="tax", period=2
    ).SerializeToString()
    t = time.perf_counter()
    sigs = [signing.sign(WATCH_UPDATE_CONTEXT, update) for _ in range(samples)]
    sign = time.perf_counter() - t
    t = time.perf_counter()
    boxes = [
        sealer.seal(
            update + sig,
            recipient_id="bank-a",
            recipient_public_raw=sealing.public_raw,
            content_type=WATCH_UPDATE_CONTENT_TYPE,
            context=str(i),
            pad_to=WATCH_UPDATE_PAD_BYTES,
        )
        for i, sig in enumerate(sigs)
    ]
    seal = time.perf_counter() - t
    verify_key = signing.verify_key
    t = time.perf_counter()
    for i, box in enumerate(boxes):
        sealing.open(box, recipient_id="bank-a", content_type=WATCH_UPDATE_CONTENT_TYPE, context=str(i))
        verify_key.verify(WATCH_UPDATE_CONTEXT, update, sigs[i])
    open_verify = time.perf_counter() - t
    return {
        "sign_us": round(sign / samples * 1e6, 1),
        "seal_us": round(seal / samples * 1e6, 1),
        "open_verify_us": round(open_verify / samples * 1e6, 1),
    }


def run(watches: int, changed: float, trials: int, timeout: float, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"bench": "alerts", "watches": watches, "banks": len(BANKS), "providers": 1}
    result.update(_pipeline(workdir / "pipeline", watches, changed, timeout))
    result["watches_per_second"] = round(watches / result["seconds"], 1) if result["seconds"] else None
    if trials:
        result.update(_single(workdir / "single", trials, timeout))
    result.update(_costs())
    result["goal_seconds"] = 30.0
    result["goal_p99_single_s"] = 1.0
    result["update_bytes"] = WATCH_UPDATE_PAD_BYTES
    return result


def main(args: argparse.Namespace) -> int:
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(args.watches, args.changed, args.trials, args.timeout, workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="xinrong-bench-alerts-") as tmp:
            result = run(args.watches, args.changed, args.trials, args.timeout, Path(tmp))
    print(json.dumps(result))
    return 0 if result["alerts_held"] == result["alerts_expected"] else 1


__all__ = ["add_arguments", "main", "run"]
