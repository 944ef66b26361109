"""A thread's transaction on PostgreSQL flushes only when it must.

``PgDatabase.transaction`` is durable: when it returns, what it wrote, and
anything it read, is on disk. It used to make every COMMIT synchronous by
writing a WAL record of its own first, so even a transaction that only
read (the sequencer and tree ticks of an idle replica, twenty a second
each) wrote WAL and waited for a flush. Now a transaction that wrote
nothing commits without a flush, and without writing WAL, when every WAL
record so far is already on disk; it still flushes when it wrote, or when
it may have read something committed asynchronously and not yet flushed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from xinrong.node.pg import PgDatabase
from xinrong.tools import pgtemp

from support.pg import database_config, database_table


def _lsn(conn: psycopg.Connection[Any], which: str) -> int:
    row = conn.execute(f"SELECT pg_current_wal_{which}_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def store(pg_cluster: pgtemp.TempPostgres) -> Iterator[tuple[PgDatabase, psycopg.Connection[Any]]]:
    table = database_table(pg_cluster, migrated=False)
    db = PgDatabase(database_config(table), check_schema=False)
    dsn = pg_cluster.dsn.rsplit("/", 1)[0] + "/" + table["url"].rsplit("/", 1)[1]
    side = psycopg.connect(dsn, autocommit=True)  # another session, committing asynchronously
    side.execute("SET synchronous_commit = off")
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE kept (k BIGINT PRIMARY KEY)")
        yield db, side
    finally:
        side.close()
        db.close()


def test_a_transaction_that_only_reads_writes_no_wal_when_everything_is_flushed(
    store: tuple[PgDatabase, psycopg.Connection[Any]],
) -> None:
    db, side = store
    quiet = 0
    for _ in range(20):  # the cluster's own background work may write WAL meanwhile: retry
        with db.transaction() as tx:  # a durable write: afterwards, everything is flushed
            tx.execute("INSERT INTO kept (k) VALUES ((SELECT coalesce(max(k), 0) + 1 FROM kept))")
        before = _lsn(side, "insert")
        with db.transaction() as tx:
            tx.execute("SELECT count(*) FROM kept").fetchone()
            tx.execute("SELECT pg_try_advisory_xact_lock(?)", (12345,)).fetchone()
        if _lsn(side, "insert") == before:
            quiet += 1
    assert quiet > 0, "every read-only transaction wrote WAL"


def test_a_transaction_that_writes_is_flushed_before_it_returns(
    store: tuple[PgDatabase, psycopg.Connection[Any]],
) -> None:
    db, side = store
    for k in range(1, 21):
        with db.transaction() as tx:
            tx.execute("INSERT INTO kept (k) VALUES (?)", (k,))
            written = int(tx.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()[0])
        assert _lsn(side, "flush") >= written


def test_a_transaction_that_read_an_unflushed_commit_flushes_it(
    store: tuple[PgDatabase, psycopg.Connection[Any]],
) -> None:
    db, side = store
    for k in range(1, 21):
        side.execute("INSERT INTO kept (k) VALUES (%s)", (k,))  # committed, not necessarily on disk
        committed = _lsn(side, "insert")
        with db.transaction() as tx:
            assert tx.execute("SELECT count(*) FROM kept WHERE k = ?", (k,)).fetchone()[0] == 1
        assert _lsn(side, "flush") >= committed  # what it saw survives a crash


def test_a_transaction_that_fails_writes_nothing(store: tuple[PgDatabase, psycopg.Connection[Any]]) -> None:
    db, _ = store
    with pytest.raises(RuntimeError), db.transaction() as tx:
        tx.execute("INSERT INTO kept (k) VALUES (?)", (999,))
        raise RuntimeError("the caller gave up")
    assert db.query("SELECT count(*) FROM kept WHERE k = 999")[0][0] == 0
