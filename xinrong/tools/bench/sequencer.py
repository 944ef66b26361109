"""``xinrong bench sequencer``: what the audit sequencer and the Merkle tree cost per entry on PostgreSQL.

Replicas stage audit events in ``audit_pending``; one sequencer chains them
into ``audit_log`` every 50 ms round, and the tree (``node.tlog``) follows.
This times, on a throwaway PostgreSQL (fsync on, as ``bench verify``), in one
process, per audit entry, the CPU of this process (the node's side) and of
every PostgreSQL process (backends, WAL writer) while sequencing and
integrating, for three schedules, alternating in rounds on fresh databases:

* ``chain``: chaining alone (the floor);
* ``every_round``: the tree integrated after every round (the node before
  36dd835: one more transaction and WAL flush per round, for a round's few
  leaves);
* ``once_a_second``: the tree integrated every ``TREE_SECONDS`` of rounds
  (what the node does now, as on SQLite).

Staging (the admissions' part) is outside the timed regions. Medians over the
repeats are reported, and each schedule's cost over ``chain``. A run whose
chain or tree does not end holding every staged entry is refused, not reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from xinrong.keys.signing import SigningKey
from xinrong.node.audit import AuditEvent, Decision, SequencedAuditLog
from xinrong.node.config import DatabaseConfig
from xinrong.node.pg import PgDatabase, migrate
from xinrong.node.server import SEQUENCER_SECONDS, TREE_SECONDS
from xinrong.node.tlog import TransparencyLog
from xinrong.tools import pgtemp
from xinrong.tools.bench.procstat import cpu_seconds_of

SCHEDULES = ("chain", "every_round", "once_a_second")


def _one(cluster: pgtemp.TempPostgres, name: str, schedule: str, rounds: int, per_round: int) -> tuple[float, float]:
    """(node µs, PostgreSQL µs) of CPU per entry for one schedule on a fresh database."""
    config = DatabaseConfig(url=cluster.create_database(name), password_file=cluster.password_file, pool_size=2)
    migrate(config)
    db = PgDatabase(config)
    try:
        audit = SequencedAuditLog(db)
        clock = [1_000.0]
        tlog = TransparencyLog(
            db, node_id="bench", signing_key=SigningKey.generate(), clock=lambda: clock[0], sequencer_lock=audit._lock
        )
        every = max(1, round(TREE_SECONDS / SEQUENCER_SECONDS))
        node = postgres = 0.0
        entries = 0
        for r in range(rounds):
            with db.transaction() as tx:
                for _ in range(per_round):
                    event = AuditEvent(
                        "institution",
                        "bank-a",
                        "Verify",
                        Decision.ALLOWED,
                        request_id=f"r-{entries}",
                        enterprise="91130100MA0ALPHA1",
                        providers=("tax",),
                        fields=("tax.paid_12m",),
                    )
                    audit.append(tx, event, 1_700_000_000_000 + entries)
                    entries += 1
            clock[0] += SEQUENCER_SECONDS
            pids = cluster.pids()
            pg0, c0 = cpu_seconds_of(pids), time.process_time()
            audit.sequence()
            if schedule == "every_round" or (schedule == "once_a_second" and r % every == 0):
                tlog.tick()
            c1 = time.process_time()
            postgres += cpu_seconds_of(pids + [p for p in cluster.pids() if p not in pids]) - pg0
            node += c1 - c0
        chained = db.query("SELECT count(*) FROM audit_log")[0][0]
        if chained != entries:
            raise RuntimeError(f"the chain holds {chained} of {entries} entries")
        if schedule != "chain":
            tlog.tick(force=True)
            if tlog.reader.size() != entries:
                raise RuntimeError(f"the tree holds {tlog.reader.size()} of {entries} entries")
        return node / entries * 1e6, postgres / entries * 1e6
    finally:
        db.close()


def run(*, rounds: int, per_round: int, repeats: int) -> dict[str, Any]:
    cluster = pgtemp.start()
    try:
        samples: dict[str, list[tuple[float, float]]] = {s: [] for s in SCHEDULES}
        for i in range(repeats):
            for schedule in SCHEDULES:
                samples[schedule].append(_one(cluster, f"seq{i}{schedule[:2]}", schedule, rounds, per_round))
    finally:
        cluster.stop()
    result: dict[str, Any] = {"bench": "sequencer", "rounds": rounds, "per_round": per_round, "repeats": repeats}
    medians = {s: (statistics.median(n for n, _ in v), statistics.median(p for _, p in v)) for s, v in samples.items()}
    for schedule, (node, postgres) in medians.items():
        result[f"{schedule}_node_us"] = round(node, 1)
        result[f"{schedule}_postgres_us"] = round(postgres, 1)
    base_node, base_pg = medians["chain"]
    for schedule in SCHEDULES[1:]:
        node, postgres = medians[schedule]
        result[f"tree_{schedule}_over_chain_us"] = {
            "node": round(node - base_node, 1),
            "postgres": round(postgres - base_pg, 1),
        }
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rounds", type=int, default=400, help="sequencer rounds per schedule (default 400 = 20 s of rounds)"
    )
    p.add_argument("--per-round", type=int, default=25, help="entries staged per round (default 25: ~500 verify/s)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats of the three schedules (default 3)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    result = run(rounds=args.rounds, per_round=args.per_round, repeats=args.repeats)
    if not args.json:
        every, once = result["tree_every_round_over_chain_us"], result["tree_once_a_second_over_chain_us"]
        print(
            f"tree per entry over chaining alone: every round +{every['node']} us node, +{every['postgres']} us "
            f"PostgreSQL; once a second +{once['node']} / +{once['postgres']} us"
        )
    print(json.dumps(result))
    return 0


__all__ = ["add_arguments", "main", "run"]
