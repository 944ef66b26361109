"""Replay ids and the enterprise budget: persistence, pruning, day boundaries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from xinrong.node.db import Database
from xinrong.node.limits import DAY_SECONDS, EnterpriseBudget, ReplayGuard, caller_key, utc_day

A = caller_key("institution", "bank-a")
B = caller_key("institution", "bank-b")


def _db(path: Path) -> Database:
    return Database(path)


def test_replay_ids_persist_and_expire(tmp_path: Path) -> None:
    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    t0 = 1_800_000_000.0
    for i in range(1200):
        with db.transaction() as tx:
            guard.record(tx, A, f"old-{i}", t0 + i * 0.01)
    with db.transaction() as tx:
        guard.record(tx, A, "recent", t0 + 90)
    assert guard.seen(A, "old-5") and guard.seen(A, "recent") and not guard.seen(A, "never")
    db.close()

    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    assert guard.load(t0 + 50) == 1201  # everything still inside the window after a restart
    assert guard.prune(t0 + 115, batch=500) == 1200  # the old ones (t0 .. t0+12 s), in three batches
    assert not guard.seen(A, "old-5") and guard.seen(A, "recent")
    rows = sqlite3.connect(tmp_path / "r.db").execute("SELECT caller, request_id FROM replay_ids").fetchall()
    assert rows == [(A, "recent")]
    # An expired id is a new id again; a pruned-then-reused id survives the next prune.
    with db.transaction() as tx:
        guard.record(tx, A, "old-5", t0 + 116)
    assert guard.prune(t0 + 150) == 0
    assert guard.seen(A, "old-5")
    db.close()
    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    assert guard.load(t0 + 195) == 1 and guard.seen(A, "old-5") and not guard.seen(A, "recent")
    db.close()


def test_replay_ids_are_scoped_per_caller(tmp_path: Path) -> None:
    """A14: one bank's id tells another nothing, and survives a restart as its own."""
    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    t0 = 1_800_000_000.0
    with db.transaction() as tx:
        guard.record(tx, A, "r-1", t0)
    assert guard.seen(A, "r-1") and not guard.seen(B, "r-1")
    with db.transaction() as tx:
        guard.record(tx, B, "r-1", t0 + 1)
    db.close()
    db = _db(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100)
    assert guard.load(t0 + 2) == 2
    assert guard.seen(A, "r-1") and guard.seen(B, "r-1") and not guard.seen(caller_key("institution", "c"), "r-1")
    db.close()


def test_ids_from_before_the_scoping_still_count_for_every_caller_until_they_expire(tmp_path: Path) -> None:
    """A database of schema step 1 (one global namespace) migrates without reopening a replay window."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    # The whole of step 1, as a node of that release wrote it (later steps touch its other tables too).
    from xinrong.node.migrations import MIGRATIONS

    conn.executescript(MIGRATIONS[0].sqlite)
    t0 = 1_800_000_000.0
    conn.execute("INSERT INTO replay_ids VALUES ('seen-before', ?)", (int(t0 * 1000),))
    conn.execute("PRAGMA user_version=1")
    conn.close()
    path.chmod(0o600)
    db = _db(path)
    guard = ReplayGuard(db, retention_seconds=100)
    assert guard.load(t0 + 10) == 1
    assert guard.seen(A, "seen-before") and guard.seen(B, "seen-before")
    assert guard.prune(t0 + 101) == 1
    assert not guard.seen(A, "seen-before")
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
