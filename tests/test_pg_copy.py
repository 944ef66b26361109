"""Plain multi-row INSERTs go to PostgreSQL as COPY (``PgTransaction.executemany``):
the same rows as one INSERT each (text, bytes, NULL, big integers), the same
errors (a duplicate key is still a UniqueViolation, the transaction rolls back),
and nothing but an exact plain INSERT is rewritten."""

from __future__ import annotations

import psycopg
import pytest

from xinrong.node.pg import COPY_ROWS, PgDatabase, copy_sql
from xinrong.tools import pgtemp

from support.pg import database_config, database_table


def test_only_an_exact_plain_insert_becomes_copy() -> None:
    assert copy_sql("INSERT INTO t (a, b,c) VALUES (?, ?,?)") == "COPY t (a, b, c) FROM STDIN"
    for sql in (
        "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING",
        "INSERT INTO t (a, b) VALUES (?, ?) RETURNING a",
        "INSERT INTO t (a, b) VALUES (?)",
        "INSERT INTO t (a) SELECT ?",
        "INSERT INTO t (a) VALUES (lower(?))",
        "UPDATE t SET a = ?",
    ):
        assert copy_sql(sql) is None, sql


def test_copied_rows_equal_inserted_rows_and_a_duplicate_still_fails(pg_cluster: pgtemp.TempPostgres) -> None:
    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE copied (k BIGINT PRIMARY KEY, s TEXT, b BYTEA, n TEXT)")
            tx.execute("CREATE TABLE inserted (k BIGINT PRIMARY KEY, s TEXT, b BYTEA, n TEXT)")
        rows = [
            (2**62 + i, f"tab\there\\ newline\n 中文 {i}", bytes(range(256)) + bytes([i]), None if i % 2 else "x")
            for i in range(COPY_ROWS + 3)
        ]
        with db.transaction() as tx:
            tx.executemany("INSERT INTO copied (k, s, b, n) VALUES (?, ?, ?, ?)", rows)
            for row in rows:
                tx.execute("INSERT INTO inserted (k, s, b, n) VALUES (?, ?, ?, ?)", row)
        order = " ORDER BY k"
        copied = db.query("SELECT k, s, b, n FROM copied" + order)
        assert copied == db.query("SELECT k, s, b, n FROM inserted" + order)
        assert [(r[0], r[1], bytes(r[2]), r[3]) for r in copied] == rows
        with pytest.raises(psycopg.errors.UniqueViolation), db.transaction() as tx:
            tx.executemany(
                "INSERT INTO copied (k, s, b, n) VALUES (?, ?, ?, ?)",
                [*((-i, "", b"", None) for i in range(4)), rows[0]],
            )
        assert db.query("SELECT count(*) FROM copied")[0][0] == len(rows)  # all of it rolled back
    finally:
        db.close()
