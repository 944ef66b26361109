"""Group commit in the node's database: units are applied at once but durable only
after a COMMIT that the first waiter runs for everyone; a failed COMMIT stops the
database instead of letting memory and disk drift apart."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from xinrong.node.db import Database

SCHEMA = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"


def _committed_rows(path: Path) -> int:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])
    finally:
        conn.close()


def test_non_durable_units_become_visible_to_others_only_after_wait_durable(tmp_path: Path) -> None:
    db = Database(tmp_path / "n.db", schemas=[SCHEMA])
    applied: list[str] = []
    with db.lock, db.transaction(durable=False) as tx:
        tx.execute("INSERT INTO t VALUES ('a', 1)")
        tx.on_commit(lambda: applied.append("a"))
    assert applied == ["a"]  # memory follows at once, for the next request's checks
    assert _committed_rows(tmp_path / "n.db") == 0  # not durable yet: nothing may leave the node
    db.wait_durable(tx.token)
    assert _committed_rows(tmp_path / "n.db") == 1
    db.close()


def test_a_failed_unit_rolls_back_alone(tmp_path: Path) -> None:
    db = Database(tmp_path / "n.db", schemas=[SCHEMA])
    with db.transaction(durable=False) as first:
        first.execute("INSERT INTO t VALUES ('a', 1)")
    with pytest.raises(sqlite3.IntegrityError), db.transaction(durable=False) as tx:
        tx.execute("INSERT INTO t VALUES ('b', 1)")
        tx.execute("INSERT INTO t VALUES ('a', 2)")  # duplicate key
    db.wait_durable(first.token)
    assert sorted(r[0] for r in db.query("SELECT k FROM t")) == ["a"]
    assert _committed_rows(tmp_path / "n.db") == 1
    db.close()


def test_concurrent_units_share_commits(tmp_path: Path) -> None:
    db = Database(tmp_path / "n.db", schemas=[SCHEMA])
    commits = 0
    original = db._commit_locked

    def counting() -> None:
        nonlocal commits
        commits += 1
        original()

    db._commit_locked = counting  # type: ignore[method-assign]
    start = threading.Barrier(16)

    def worker(i: int) -> None:
        start.wait()
        for j in range(20):
            with db.lock, db.transaction(durable=False) as tx:
                tx.execute("INSERT INTO t VALUES (?, ?)", (f"{i}-{j}", j))
            db.wait_durable(tx.token)
            assert _committed_rows(tmp_path / "n.db") >= 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _committed_rows(tmp_path / "n.db") == 320
    assert commits < 320, "concurrent units should have shared commits"
    db.close()


def test_a_failed_commit_stops_the_database(tmp_path: Path) -> None:
    db = Database(tmp_path / "n.db", schemas=[SCHEMA])
    with db.transaction(durable=False) as tx:
        tx.execute("INSERT INTO t VALUES ('a', 1)")

    class Failing:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self._conn = conn

        def execute(self, sql: str, *args: Any) -> object:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self._conn, name)

    real = db._conn
    db._conn = Failing(real)  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        db.wait_durable(tx.token)
    db._conn = real
    with pytest.raises(RuntimeError, match="restart the node"), db.transaction() as tx2:
        tx2.execute("INSERT INTO t VALUES ('b', 1)")
    with pytest.raises(RuntimeError):
        db.wait_durable(tx.token)
    real.close()
