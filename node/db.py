"""The node's SQLite database: one connection, one lock, explicit transactions.

Every state change of one request (replay id, consent use, enterprise
budget, audit entry) is one unit (a SAVEPOINT), so the database never holds
a consumed use without its audit entry or the reverse. In-memory caches are
updated only through ``Transaction.on_commit`` callbacks.

Group commit. A COMMIT costs more than everything else a Verify writes, so
the hot path (``transaction(durable=False)``) releases its savepoint inside
one long-running write transaction and, after letting go of the lock, has
``wait_durable`` called for its token before anything it decided leaves the
node: the first caller commits for everyone queued behind it. A refusal
waits itself (``wait_durable_async``); an admitted request is covered by the
agent stream, which commits once right before writing each batch
(``xinrong.node.routing``). Nothing a request decided leaves the node (no fan-out,
no answer) before that COMMIT. Callbacks of such a unit run at
once, under the lock, so the next request's checks see its effect; if a
COMMIT then fails (disk full, I/O error) memory is ahead of disk, so the
database refuses all further work and the node must be restarted: it fails
stopped rather than inconsistent. ``transaction()`` (durable, the default)
commits on exit as before.

Durability: WAL with ``synchronous=NORMAL`` by default. A process crash
loses nothing that was committed; a power loss or OS crash may roll back
the last few commits (SQLite's documented WAL/NORMAL trade-off). Set
``sqlite_synchronous = "FULL"`` to fsync every commit instead.

Never blocking on another process. SQLite's busy handler sleeps while
another process holds the write lock; on the node's event loop that froze
every call, health checks included. The connection therefore runs with no
busy timeout: a write lock held from outside (an operator's ``sqlite3``
shell, a second node on the same file) fails the unit at once with
``StoreUnavailable`` (UNAVAILABLE ``STORE_UNAVAILABLE``, retry), and a node
started on a locked database refuses with one line. The file and its
WAL/SHM are private (``xinrong.statefiles``): created 0600, refused if
group- or world-accessible or if the directory cannot be written.

Schema: the versioned steps of ``xinrong.node.migrations``, applied at open;
``PRAGMA user_version`` records the last one.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xinrong.errors import StoreUnavailable
from xinrong.node.migrations import LATEST, MIGRATIONS
from xinrong.statefiles import prepare_private

if TYPE_CHECKING:
    from xinrong.node.config import NodeConfig

log = logging.getLogger(__name__)

SCHEMA_VERSION = LATEST
# At start only: how long to wait for a write lock held by another process
# before refusing to start (never on the request path, which does not wait).
STARTUP_BUSY_MS = 1000
# WAL frames (pages written, ~4 KiB each) past which ``checkpoint`` restarts the WAL:
# under a soak's load (~10 MB/s of frames) every few seconds, the WAL file at most ~64 MB.
WAL_RESET_FRAMES = 16_384
# A restart holding the lock longer than this is logged (the disk is slow or shared).
SLOW_RESET_MS = 50.0


def _busy(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def store_error(path: Path, exc: sqlite3.Error) -> StoreUnavailable:
    """The one-line reason a unit could not be applied (the caller may retry)."""
    if _busy(exc):
        return StoreUnavailable(f"node database {path} is locked by another process")
    return StoreUnavailable(f"node database {path}: {exc}")


class Transaction:
    """A write transaction in progress; the cursor runs statements inside it.

    Statements use ``?`` placeholders and SQL both backends read (``ON
    CONFLICT ... DO UPDATE`` rather than ``INSERT OR REPLACE``); the
    PostgreSQL transaction (``xinrong.node.pg``) translates the placeholders.
    """

    __slots__ = ("_callbacks", "cursor", "scratch", "token")

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        # Per-transaction state of the stores taking part (e.g. audit entries
        # appended but not yet committed), keyed by the store.
        self.scratch: dict[int, object] = {}
        self._callbacks: list[Callable[[], None]] = []
        self.token = 0  # set on exit: pass to Database.wait_durable

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cursor.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self.cursor.executemany(sql, rows)

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run callback once the unit is applied (cache updates go here); for a
        durable transaction that is after its COMMIT."""
        self._callbacks.append(callback)


class Database:
    """One SQLite connection shared by the server threads, serialized by a lock.

    SQLite allows one writer at a time anyway; a Python-level lock keeps
    check-then-write sequences (replay check, budget check-and-increment,
    audit chain head) atomic without relying on busy retries.

    This class is also the interface every store is written against;
    ``xinrong.node.pg.PgDatabase`` implements it over PostgreSQL. ``shared``
    tells the stores which one they have: False here (this process is the
    only writer, so memory may be the authority for the hot path), True for
    PostgreSQL (other replicas write too, so the database is).
    """

    shared = False
    backend = "sqlite"
    # What a write that lost a race on a primary key or unique index raises here
    # (narrowed further by ``violated_unique``): stores catch exactly this.
    unique_violation: tuple[type[Exception], ...] = (sqlite3.IntegrityError,)

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", schemas: Sequence[str] = ()) -> None:
        """``schemas``: extra DDL applied after the migrations (tests' own tables)."""
        self.path = prepare_private(path, "node database")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        self.lock = threading.RLock()
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=0)
        self._open = False  # a write transaction holds released, uncommitted units
        self._applied = 0  # units applied so far
        self._committed = 0  # units covered by a COMMIT
        self._committing = False
        self._failed: BaseException | None = None
        self._commit_cv = threading.Condition()
        self._checkpointer: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self.wal_frames = 0  # frames in the WAL at the last checkpoint (diagnostics)
        try:
            self._conn.execute(f"PRAGMA busy_timeout={STARTUP_BUSY_MS}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            self._conn.execute("PRAGMA foreign_keys=ON")
            # Checkpoints run on a background connection (``checkpoint``): done
            # inside a commit they fsync and turn a sub-ms p50 into a 10-ms p99.
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._migrate(schemas)
            # The node writes at start (bindings); a lock held elsewhere refuses it here, in one line.
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("ROLLBACK")
            self._conn.execute("PRAGMA busy_timeout=0")
        except StoreUnavailable as exc:
            self._conn.close()
            raise StoreUnavailable(f"{exc.detail}; refusing to start") from None
        except sqlite3.Error as exc:
            self._conn.close()
            if _busy(exc):
                raise StoreUnavailable(
                    f"node database {self.path} is locked by another process "
                    "(another node or an open sqlite3 shell on the same file?); refusing to start"
                ) from None
            raise StoreUnavailable(f"node database {self.path} cannot be opened for writing: {exc}") from None
        except BaseException:
            self._conn.close()
            raise

    def _migrate(self, schemas: Sequence[str]) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"{self.path}: schema version {version} is newer than this node ({SCHEMA_VERSION}); "
                "run the node release that wrote it"
            )
        for step in MIGRATIONS:
            if step.version <= version:
                continue
            with self.transaction() as tx:
                for statement in _split_statements(step.sqlite):
                    tx.execute(statement)
                tx.execute(f"PRAGMA user_version={step.version}")
            log.info("node database %s: schema step %d applied (%s)", self.path, step.version, step.name)
        if schemas:
            with self.transaction() as tx:
                for ddl in schemas:
                    for statement in _split_statements(ddl):
                        tx.execute(statement)

    def violated_unique(self, exc: Exception, table: str) -> bool:
        """Whether ``exc`` (one of ``unique_violation``) is a duplicate key in ``table``, not another constraint."""
        name = getattr(exc, "sqlite_errorname", "")
        return name in ("SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE") and f"failed: {table}." in str(exc)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Transaction]:
        """One unit of writes under the lock; ROLLBACK TO its savepoint on any exception.

        durable=True commits on exit (and everything applied before it).
        durable=False leaves the COMMIT to ``wait_durable(tx.token)``, which
        the caller must call after releasing ``lock``.
        """
        with self.lock:
            if self._failed is not None:
                raise RuntimeError("node database failed earlier; restart the node") from self._failed
            cursor = self._conn.cursor()
            try:
                if not self._open:
                    # Fails at once if another process holds the write lock (no
                    # busy timeout): the caller gets StoreUnavailable, the loop runs on.
                    cursor.execute("BEGIN IMMEDIATE")
                    self._open = True
                cursor.execute("SAVEPOINT unit")
            except sqlite3.OperationalError as exc:
                raise store_error(self.path, exc) from None
            tx = Transaction(cursor)
            try:
                yield tx
                cursor.execute("RELEASE unit")
            except BaseException as exc:
                try:
                    cursor.execute("ROLLBACK TO unit")
                    cursor.execute("RELEASE unit")
                except sqlite3.Error:
                    pass
                if isinstance(exc, sqlite3.OperationalError):
                    # Read-only file, disk full, I/O error: nothing of the unit was applied.
                    raise store_error(self.path, exc) from None
                raise
            self._applied += 1
            tx.token = self._applied
            if durable:
                self._commit_locked()
            for callback in tx._callbacks:
                callback()

    def _commit_locked(self) -> None:
        target = self._applied
        if self._open:
            try:
                self._conn.execute("COMMIT")
            except BaseException as exc:
                # Units whose callbacks already ran are lost from disk: stop.
                self._failed = exc
                log.critical("node database COMMIT failed; refusing all further work: %s", exc)
                with suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
                self._open = False
                with self._commit_cv:
                    self._commit_cv.notify_all()
                raise
            self._open = False
        with self._commit_cv:
            self._committed = max(self._committed, target)
            self._commit_cv.notify_all()

    def wait_durable(self, token: int) -> None:
        """Return once a COMMIT covers unit ``token``; the first waiter commits for all."""
        while True:
            with self._commit_cv:
                if self._committed >= token:
                    return
                if self._failed is not None:
                    raise RuntimeError("node database failed; restart the node") from self._failed
                if self._committing:
                    self._commit_cv.wait(timeout=1.0)
                    continue
                self._committing = True
            try:
                with self.lock:
                    if self._committed < token:
                        self._commit_locked()
            finally:
                with self._commit_cv:
                    self._committing = False
                    self._commit_cv.notify_all()

    async def wait_durable_async(self, token: int) -> None:
        """``wait_durable`` for a caller on an event loop.

        Yields to the loop once first, so the other requests the loop has
        ready apply their units too and one COMMIT covers them all; the
        COMMIT itself then runs on the loop (without fsync under WAL/NORMAL
        it takes well under a millisecond).
        """
        if self._committed >= token:
            return
        await asyncio.sleep(0)
        self.wait_durable(token)

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking the writer (PASSIVE); empty it now and then.

        A PASSIVE checkpoint copies what was committed when it began; under
        steady load more has been committed by the time it ends, and SQLite
        restarts the WAL from its start only when a write begins with all of
        it copied. So it never did: a soak grew the WAL by ~10 MB/s (2 GB in
        three minutes), the WAL index mapped in memory with it (node RSS +2.5
        MB/min) and every page read searched an ever longer index (p99 24 ->
        300 ms). Once the WAL holds ``WAL_RESET_FRAMES`` frames, the pending
        units are committed under the lock and a RESTART checkpoint copies
        the little written since the PASSIVE pass, so the next write starts
        the WAL file over (1-5 ms with the lock held, every few seconds under
        load; the file is reused in place rather than truncated and regrown).
        """
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=0
            )
        _busy_flag, frames, _copied = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.wal_frames = max(0, int(frames))
        if self.wal_frames < WAL_RESET_FRAMES:
            return
        with self.lock:
            if self._failed is not None:
                return
            started = time.perf_counter()
            self._commit_locked()  # no write transaction open: the WAL can be emptied
            busy, frames, _copied = self._checkpointer.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            held_ms = (time.perf_counter() - started) * 1000
        self.wal_frames = max(0, int(frames))
        if held_ms > SLOW_RESET_MS:
            log.warning("WAL restart held the node database lock for %.0f ms", held_ms)
        if busy:  # a reader (read_query) still uses the WAL: the next tick tries again
            log.debug("WAL restart busy; %s frames stay", frames)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return list(self._conn.execute(sql, params).fetchall())

    def read_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read of committed data on a connection of its own, without ``lock``: for long scans off the hot path.

        The risk monitor aggregates an hour of audit log per institution (a
        soak at 770 calls/s: 460k rows, ~0.5 s); on the one connection that
        held the lock every admission needs, so each tick froze the node long
        enough to fill its 256-call budget (RESOURCE_EXHAUSTED). Under WAL a
        reader neither blocks the writer nor waits for it; it sees what is
        committed, not the units still waiting for the group COMMIT. On a shared
        database (PostgreSQL) every query already takes a pooled connection.
        """
        if self.shared:
            return self.query(sql, params)
        # Opened per call (these reads come minutes apart): a kept connection kept its page
        # cache and the scan's sort buffers too, +2 MB of node RSS from the first tick on.
        with self._reader_lock:
            reader = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=0)
            try:
                reader.execute("PRAGMA query_only=ON")
                return list(reader.execute(sql, params).fetchall())
            finally:
                reader.close()

    def close(self) -> None:
        with self.lock:
            if self._open and self._failed is None:
                self._commit_locked()
            try:
                self._conn.execute("PRAGMA optimize")
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._conn.close()
            if self._checkpointer is not None:
                self._checkpointer.close()


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


def open_for_tools(config: NodeConfig) -> Any:
    """A read-only connection to a node's database, whichever backend its config names.

    A ``sqlite3.Connection`` or a psycopg connection: operator tools use only
    ``execute`` / ``fetchall`` / ``fetchmany`` and close it. Raises
    ``ConfigError`` if a SQLite database does not exist yet.
    """
    from xinrong.config import ConfigError

    if config.database is not None:
        from xinrong.node.pg import connect_readonly

        return connect_readonly(config.database)
    assert config.db is not None
    try:
        return open_readonly(config.db)
    except FileNotFoundError:
        raise ConfigError(f"the node database {config.db} does not exist (has the node run yet?)") from None


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection for operator tools running beside a live node."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"node database {p} does not exist")
    return sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, isolation_level=None)
