"""The node's SQLite database: one connection, one lock, explicit transactions.

Every state change of one request (replay id, consent use, enterprise
budget, audit entry) commits in one transaction, so the database never
holds a consumed use without its audit entry or the reverse. In-memory
caches are updated only through ``Transaction.on_commit`` callbacks: if a
commit fails, memory and disk stay in step.

Durability: WAL with ``synchronous=NORMAL`` by default. A process crash
loses nothing that was committed; a power loss or OS crash may roll back
the last few commits (SQLite's documented WAL/NORMAL trade-off). Set
``sqlite_synchronous = "FULL"`` to fsync every commit instead.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


class Transaction:
    """A write transaction in progress; the cursor runs statements inside it."""

    __slots__ = ("cursor", "scratch", "_callbacks")

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor
        # Per-transaction state of the stores taking part (e.g. audit entries
        # appended but not yet committed), keyed by the store.
        self.scratch: dict[int, object] = {}
        self._callbacks: list[Callable[[], None]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        return self.cursor.executemany(sql, rows)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run callback after a successful commit (cache updates go here)."""
        self._callbacks.append(callback)


class Database:
    """One SQLite connection shared by the server threads, serialized by a lock.

    SQLite allows one writer at a time anyway; a Python-level lock keeps
    check-then-write sequences (replay check, budget check-and-increment,
    audit chain head) atomic without relying on busy retries.
    """

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", schemas: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._migrate(schemas)

    def _migrate(self, schemas: Sequence[str]) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this node ({SCHEMA_VERSION})")
        with self.transaction() as tx:
            for ddl in schemas:
                for statement in _split_statements(ddl):
                    tx.execute(statement)
            tx.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """BEGIN IMMEDIATE ... COMMIT under the lock; ROLLBACK on any exception."""
        with self.lock:
            cursor = self._conn.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            tx = Transaction(cursor)
            try:
                yield tx
                cursor.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full, I/O error) may leave the transaction
                # open; roll back so the connection is usable and memory is untouched.
                try:
                    cursor.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise
            for callback in tx._callbacks:
                callback()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self._conn.execute(sql, params).fetchall())

    def close(self) -> None:
        with self.lock:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error:
                pass
            self._conn.close()


def _split_statements(ddl: str) -> list[str]:
    """Split a DDL script into statements, keeping trigger bodies whole.

    ``executescript`` would commit the surrounding transaction, so the
    schema is applied statement by statement inside one transaction.
    """
    statements: list[str] = []
    buffer = ""
    for line in ddl.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in schema: {buffer.strip()[:60]!r}")
    return statements


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for operator tools running beside a live node."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"node database {p} does not exist")
    return sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, isolation_level=None)
