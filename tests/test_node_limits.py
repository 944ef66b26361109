"""Replay ids and the enterprise budget: persistence, pruning, day boundaries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from xinrong.node import limits
from xinrong.node.db import Database
from xinrong.node.limits import DAY_SECONDS, EnterpriseBudget, ReplayGuard, utc_day


def _db(path: Path) -> Database:
    return Database(path, schemas=[limits.SCHEMA])


def test_replay_ids_persist_and_expire(tmp_path: Path) -> None:
    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    t0 = 1_800_000_000.0
    for i in range(1200):
        with db.transaction() as tx:
            guard.record(tx, f"old-{i}", t0 + i * 0.01)
    with db.transaction() as tx:
        guard.record(tx, "recent", t0 + 90)
    assert guard.seen("old-5") and guard.seen("recent") and not guard.seen("never")
    db.close()

    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    assert guard.load(t0 + 50) == 1201  # everything still inside the window after a restart
    assert guard.prune(t0 + 115, batch=500) == 1200  # the old ones (t0 .. t0+12 s), in three batches
    assert not guard.seen("old-5") and guard.seen("recent")
    rows = sqlite3.connect(tmp_path / "r.db").execute("SELECT request_id FROM replay_ids").fetchall()
    assert rows == [("recent",)]
    # An expired id is a new id again; a pruned-then-reused id survives the next prune.
    with db.transaction() as tx:
        guard.record(tx, "old-5", t0 + 116)
    assert guard.prune(t0 + 150) == 0
    assert guard.seen("old-5")
    db.close()
    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    assert guard.load(t0 + 195) == 1 and guard.seen("old-5") and not guard.seen("recent")
    db.close()


def test_enterprise_budget_counts_per_utc_day(tmp_path: Path) -> None:
    db = _db(tmp_path / "b.db")
    budget = EnterpriseBudget(db, daily_limit=2)
    late = 1_800_000_000 // DAY_SECONDS * DAY_SECONDS + DAY_SECONDS - 1.0
    day = utc_day(late)
    for _ in range(2):
        with db.transaction() as tx:
            budget.consume(tx, "E1", day)
    assert budget.exhausted("E1", day) and not budget.exhausted("E2", day)
    assert not budget.exhausted("E1", utc_day(late + 1))  # midnight UTC
    db.close()
    db = _db(tmp_path / "b.db")
    budget = EnterpriseBudget(db, daily_limit=2)
    budget.load(late)
    assert budget.used("E1", day) == 2
    db.close()
