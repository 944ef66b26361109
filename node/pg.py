"""The node's database on PostgreSQL: N stateless replicas over one database.

The embedded default is SQLite (``xinrong.node.db``); a ``[database]`` table
in the node config puts the node's state in PostgreSQL instead, so several
node processes (replicas, on one host or many) serve the same consents,
budgets and audit log. The stores are written once against
``xinrong.node.db.Database``; this module implements that interface, and
``Database.shared`` tells them that memory is no longer the authority.

Concurrency across replicas:

* **Admission** (replay id, consent state and uses, daily and enterprise
  budgets, audit event) is one function, ``xinrong_admit_batch``
  (``xinrong.node.migrations``; ``xinrong_admit`` is a batch of one), run in
  its own transaction. It locks the
  consent rows and then the enterprise rows it uses, each sorted, so every
  check-and-increment is exact whichever replica runs it, a revocation
  committed before it is seen by it, and two admissions never deadlock.
  In a batch (below) the rows stay locked until the batch commits.
* **Batched round trips.** The admissions the event loop has pending at one
  moment go to the database in one call, ``xinrong_admit_batch`` (schema
  steps 13 and 14): one transaction that claims the batch's request ids, then locks
  its consents and enterprise-days, each sorted and in the order a single
  admission takes them (so batches on different replicas never deadlock),
  runs each admission in order exactly as ``xinrong_admit`` would and
  commits. One batch is in flight per replica; whatever arrives meanwhile
  waits for the next, so batches grow with the load instead of every idle
  connection taking one admission (at eight concurrent callers that made
  batches of one or two, each fighting for the same consent row). Under
  concurrent load a small batch also lingers briefly for company
  (``ADMIT_LINGER_US``, below), since most of a batch's cost is fixed. A batch
  the server refuses (an error in one admission) rolled back whole: its
  admissions are then sent one by one, so that one fails alone. A batch whose
  reply is lost (the connection drops, ``statement_timeout``) answers
  UNAVAILABLE to every admission in it; it committed all of them or none.
* **Durability, with group commit.** Sessions commit asynchronously by
  default (a thread's small reads and writes wait for nothing); an admission
  batch, with ``synchronous_commit = "on"`` (the default), commits
  synchronously: its COMMIT returns once its WAL, and all WAL before it, is
  on disk, so nothing an admission decided leaves the node before that.
  Concurrent flushes are grouped by PostgreSQL (one fsync covers every commit
  before it). Single statements on the loop (``acall``; batching off,
  ``ADMIT_BATCHING_ENV``) await a shared flush barrier instead: one small
  synchronous transaction run by the first waiter for everyone who finished
  meanwhile. Threads' transactions (lifecycle, modeling, the sequencer)
  commit synchronously when they must: one that wrote, or that may have read
  something not yet on disk (WAL written but not flushed). One that only
  read, with every WAL record flushed, commits without a flush, so an idle
  replica's sequencer and tree ticks (twenty a second each) cost the disk
  nothing.
* **The audit log** gets one order through one sequencer: admissions append
  events to ``audit_pending``; whichever replica holds the advisory lock
  moves a batch into ``audit_log`` in id order, assigning ``seq`` and the
  hash chain (``xinrong.node.audit.SequencedAuditLog``).
* **No blocking I/O on the event loop.** The loop's admissions use
  psycopg's asyncio pool; threads (consent lifecycle, modeling, housekeeping)
  use a blocking pool. A database that is down, slow or refusing turns into
  ``StoreUnavailable`` (UNAVAILABLE ``STORE_UNAVAILABLE``) after at most
  ``statement_timeout_seconds``.

Schema changes are applied by ``xinrong node db migrate`` (one operator
step for all replicas); a replica refuses to start on a database whose
schema version is not its own.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import psycopg_pool
from psycopg.conninfo import make_conninfo

from xinrong.config import ConfigError
from xinrong.errors import StoreUnavailable
from xinrong.node.config import DatabaseConfig
from xinrong.node.db import Database, Transaction
from xinrong.node.migrations import LATEST, MIGRATIONS

log = logging.getLogger(__name__)

# pg_advisory_lock keys (any two 64-bit numbers the node owns).
MIGRATE_LOCK = 0x78696E726F6E6701  # "xinrong" 01
SEQUENCER_LOCK = 0x78696E726F6E6702

_DOWN = (psycopg.OperationalError, psycopg_pool.PoolTimeout, psycopg.errors.TransactionRollback)


def _knob(name: str, default: str, allowed: tuple[str, ...]) -> str:
    """A diagnostic environment knob (bench A/B runs): unset or empty is the default;
    anything outside ``allowed`` stops the node at start with one line, not a traceback."""
    value = os.environ.get(name, "").strip() or default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _knob_int(name: str, default: int, low: int, high: int) -> int:
    """As ``_knob``, for a whole number in [low, high]."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ConfigError(f"{name}={text!r}: expected a whole number from {low} to {high}")
    return value


@functools.lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """``?`` -> ``%s``: the stores' statements carry no literal ``?`` or ``%``."""
    return sql.replace("?", "%s")


def redacted(url: str) -> str:
    """The URL as it may appear in messages (it holds no password, by config rule; be sure)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# Makes the transaction it runs in commit synchronously: its WAL, and all WAL before
# it, is flushed before the COMMIT returns. The transactional logical message gives
# the transaction WAL of its own to flush (an XID alone writes none), at any wal_level.
_DURABLE = "set_config('synchronous_commit', 'on', true), pg_logical_emit_message(true, 'xinrong', '')"
BARRIER_SQL = f"SELECT {_DURABLE}"
# Run last in a thread's transaction: its COMMIT flushes, as BARRIER_SQL makes it, unless
# it wrote nothing (no transaction id) and every WAL record so far is on disk, so nothing
# it read can be lost; then there is nothing to flush and the COMMIT writes no WAL at all.
# True when it made the COMMIT synchronous.
DURABLE_IF_NEEDED_SQL = (
    "SELECT CASE WHEN pg_current_xact_id_if_assigned() IS NULL"
    " AND pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn() THEN false"
    f" ELSE ROW({_DURABLE}) IS NOT NULL END"
)

# ``xinrong_admit``'s parameters, in order: the fields of ``xinrong_admission`` (schema step 12).
ADMISSION_FIELDS = (
    "caller",
    "request_id",
    "now_ms",
    "cutoff_ms",
    "day",
    "budget",
    "early",
    "shape",
    "consents",
    "enterprises",
    "max_uses",
    "max_day",
    "pre",
    "role",
    "caller_id",
    "method",
    "log_request_id",
    "providers",
    "fields",
    "claims",
    "log_enterprise",
    "log_consent",
    "log_enterprises",
    "log_consents",
)
ADMIT_ONE_SQL = "SELECT xinrong_admit(" + ", ".join(["%s"] * len(ADMISSION_FIELDS)) + ")"
ADMIT_BATCH_SQL = "SELECT xinrong_admit_batch(%s::json, %s)"
# Admissions per round trip, and batches in flight per replica (one: the next
# batch collects what arrives while this one runs and flushes, so a slow disk
# makes batches larger rather than queues longer). ``ADMIT_IN_FLIGHT_ENV``
# overrides the latter for A/B runs of ``xinrong bench verify``.
ADMIT_BATCH = 64
ADMIT_IN_FLIGHT = 1
ADMIT_IN_FLIGHT_ENV = "XINRONG_PG_ADMIT_IN_FLIGHT"
# Diagnostics (A/B in ``xinrong bench verify``): "off" sends every admission on its
# own, followed by the shared flush barrier, as before schema step 12.
ADMIT_BATCHING_ENV = "XINRONG_PG_ADMIT_BATCHING"
# Group commit's linger, as PostgreSQL's own commit_delay but only under concurrent
# load: while admissions arrive less than ADMIT_LINGER_GAP apart and batches carry more
# than one on average (moving averages: one fast caller in sequence makes batches of
# one, and waiting would only slow it), a batch that would go with fewer than
# ADMIT_FULL waits up to the linger for more to join, and goes at once when ADMIT_FULL
# are queued. At low load, or for a lone caller, nothing waits.
# Each batch costs the server a fixed ~300 us of CPU (its COMMIT, flush and set-up) and
# each admission in it ~40 us, so fewer, fuller batches leave CPU to the rest of the
# request (docs/ENGINEERING.md). ``ADMIT_LINGER_ENV`` (microseconds, 0 turns it off)
# is for A/B runs of ``xinrong bench verify``.
ADMIT_LINGER_US = 800
ADMIT_LINGER_ENV = "XINRONG_PG_ADMIT_LINGER_US"
ADMIT_FULL = 4
ADMIT_LINGER_GAP = 0.004  # seconds: above 250 admissions/s per replica
ADMIT_LINGER_COMPANY = 1.2  # average batch size above which callers are concurrent
_GAP_WEIGHT = 0.1  # of the newest gap in the moving average
_SIZE_WEIGHT = 0.2  # of the newest batch's size in its moving average


def conninfo(config: DatabaseConfig) -> str:
    # Every session commits asynchronously: row locks are released at COMMIT,
    # not after the WAL flush, so a hot consent serializes on microseconds of
    # work; durability comes from explicit barriers (PgDatabase._barrier).
    options = (
        "-c synchronous_commit=off "
        f"-c statement_timeout={int(config.statement_timeout_seconds * 1000)} "
        f"-c lock_timeout={int(config.statement_timeout_seconds * 1000)}"
    )
    extra: dict[str, Any] = {
        "connect_timeout": max(1, int(config.connect_timeout_seconds)),
        "options": options,
        "application_name": "xinrong-node",
    }
    password = config.password()
    if password is not None:
        extra["password"] = password
    return make_conninfo(config.url, **extra)


def unavailable(url: str, exc: BaseException) -> StoreUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StoreUnavailable(f"node database {redacted(url)}: {first}")


class PgTransaction(Transaction):
    """A transaction on one pooled connection; ``?`` placeholders become ``%s``."""

    __slots__ = ()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.cursor.execute(placeholders(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        copy = copy_sql(sql) if len(rows) >= COPY_ROWS else None
        if copy is None:
            return self.cursor.executemany(placeholders(sql), rows)
        # A plain multi-row INSERT as COPY: one statement instead of one per row (the
        # sequencer's chained entries, the tree's new nodes); same rows, triggers and errors.
        with self.cursor.copy(copy) as sink:
            for row in rows:
                sink.write_row(row)
        return self.cursor


# A plain INSERT of this many rows or more goes as COPY (``PgTransaction.executemany``).
COPY_ROWS = 4
_PLAIN_INSERT = re.compile(r"INSERT INTO (\w+) \(([\w, ]+)\) VALUES \((\?(?:, ?\?)*)\)")


@functools.lru_cache(maxsize=256)
def copy_sql(sql: str) -> str | None:
    """``COPY t (cols) FROM STDIN`` for ``INSERT INTO t (cols) VALUES (?, ...)`` exactly; else None."""
    match = _PLAIN_INSERT.fullmatch(sql.strip())
    if match is None:
        return None
    columns = [c.strip() for c in match.group(2).split(",")]
    if len(columns) != match.group(3).count("?"):
        return None
    return f"COPY {match.group(1)} ({', '.join(columns)}) FROM STDIN"


def schema_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
    return int(row[0]) if row else 0


def migrate(config: DatabaseConfig) -> tuple[int, list[int]]:
    """Apply every missing step, each in its own transaction, under an advisory lock.

    Returns (version before, steps applied). Safe to run while replicas of
    the previous version serve only if the steps are additive; the node's
    release notes say when a step is not.
    """
    try:
        conn = psycopg.connect(conninfo(config), autocommit=True)
    except psycopg.OperationalError as exc:
        raise unavailable(config.url, exc) from None
    with conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
            )
            before = schema_version(conn)
            if before > LATEST:
                raise StoreUnavailable(
                    f"node database {redacted(config.url)} is at schema {before}, newer than this node ({LATEST})"
                )
            applied: list[int] = []
            for step in MIGRATIONS:
                if step.version <= before:
                    continue
                with conn.transaction():
                    conn.execute(step.postgres.encode())  # a script: several statements, no parameters
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (%s, %s, %s)",
                        (step.version, step.name, int(time.time() * 1000)),
                    )
                applied.append(step.version)
                log.info("node database %s: schema step %d applied (%s)", redacted(config.url), step.version, step.name)
            return before, applied
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATE_LOCK,))


class PgDatabase(Database):
    """The ``Database`` interface over a PostgreSQL shared by replicas (see the module docstring)."""

    shared = True
    backend = "postgres"
    unique_violation: tuple[type[Exception], ...] = (psycopg.errors.UniqueViolation,)

    def __init__(self, config: DatabaseConfig, *, check_schema: bool = True) -> None:
        # Deliberately not Database.__init__: nothing of SQLite is opened.
        self.config = config
        self.url = redacted(config.url)
        self.path = Path(self.url)  # for messages that name "the database"
        self.lock = threading.RLock()  # in-process ordering only; the database is the authority
        self._conninfo = conninfo(config)
        self._pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=config.pool_size,
            kwargs={"autocommit": True},
            open=False,
            name="xinrong-node",
            timeout=config.statement_timeout_seconds,
        )
        self._apool: psycopg_pool.AsyncConnectionPool | None = None
        self._apool_ready: asyncio.Event | None = None
        self._durable = config.synchronous_commit == "on"
        self._applied = 0  # loop admissions committed so far
        self._flushed = 0  # ... of which a barrier made durable
        self._barrier_running: asyncio.Future[None] | None = None
        self._failed: BaseException | None = None
        self._batching = _knob(ADMIT_BATCHING_ENV, "on", ("on", "off")) == "on"
        self._admit_queue: list[tuple[Sequence[Any], asyncio.Future[list[str]]]] = []
        self._admit_in_flight = 0
        self._admit_limit = _knob_int(ADMIT_IN_FLIGHT_ENV, ADMIT_IN_FLIGHT, 1, 4)
        self._admit_kick: asyncio.Handle | None = None
        self._admit_lingering = False  # the kick is a linger's timer (a full queue cuts it short)
        self._admit_linger = _knob_int(ADMIT_LINGER_ENV, ADMIT_LINGER_US, 0, 100_000) / 1e6
        self._arrival_gap = 1.0  # seconds between admissions, moving average
        self._last_arrival = 0.0
        self._batch_size = 1.0  # admissions per batch sent, moving average
        self._admit_tasks: set[asyncio.Task[None]] = set()
        try:
            self._pool.open(wait=True, timeout=config.connect_timeout_seconds)
        except psycopg_pool.PoolTimeout:
            self._pool.close()
            try:  # say why, in one line
                psycopg.connect(self._conninfo).close()
            except psycopg.OperationalError as exc:
                raise StoreUnavailable(f"{unavailable(config.url, exc).detail}; refusing to start") from None
            raise StoreUnavailable(f"node database {self.url} did not answer; refusing to start") from None
        if check_schema:
            version = self.schema_version()
            if version != LATEST:
                self._pool.close()
                raise StoreUnavailable(
                    f"node database {self.url} is at schema version {version}, this node needs {LATEST}: "
                    "run `xinrong node db migrate --config <this config>` first"
                )

    # -- blocking side (threads) ---------------------------------------------------

    def schema_version(self) -> int:
        with self._pool.connection() as conn:
            return schema_version(conn)

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Transaction]:
        """One transaction on a pooled connection, committed on exit (always durable: it
        flushes if it wrote or read anything not yet on disk)."""
        tx: PgTransaction | None = None
        try:
            with self._pool.connection() as conn, conn.transaction():
                tx = PgTransaction(conn.cursor())
                yield tx
                if self._durable:
                    tx.execute(DURABLE_IF_NEEDED_SQL)  # this COMMIT flushes, if it must
        except _DOWN as exc:
            raise unavailable(self.config.url, exc) from None
        except psycopg.errors.QueryCanceled as exc:
            raise unavailable(self.config.url, exc) from None
        assert tx is not None
        for callback in tx._callbacks:
            callback()

    def violated_unique(self, exc: Exception, table: str) -> bool:
        """Whether ``exc`` is a duplicate key in ``table`` (PostgreSQL names the table in the error's diagnostics)."""
        return isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.table_name == table

    def wait_durable(self, token: int) -> None:
        """Every unit committed durably before ``transaction`` returned: nothing to wait for."""

    async def wait_durable_async(self, token: int) -> None:
        """As ``wait_durable``."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._pool.connection() as conn:
                return list(conn.execute(placeholders(sql), params).fetchall())
        except (*_DOWN, psycopg.errors.QueryCanceled) as exc:
            raise unavailable(self.config.url, exc) from None

    def call(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
        """One statement in its own transaction, for a caller in a thread; its one row, durable."""
        if self._durable:
            sql = f"{sql}, {_DURABLE}"
        rows = self.query(sql, params)
        return rows[0]

    def checkpoint(self) -> None:
        """PostgreSQL checkpoints itself."""

    def close(self) -> None:
        self._pool.close()

    # -- the event loop's side -------------------------------------------------------

    async def _async_pool(self) -> psycopg_pool.AsyncConnectionPool:
        if self._apool is None:
            self._apool_ready = asyncio.Event()
            self._apool = psycopg_pool.AsyncConnectionPool(
                self._conninfo,
                min_size=min(2, self.config.pool_size),
                max_size=self.config.pool_size,
                kwargs={"autocommit": True},
                open=False,
                name="xinrong-node-loop",
                timeout=self.config.statement_timeout_seconds,
            )
            try:
                await self._apool.open(wait=True, timeout=self.config.connect_timeout_seconds)
            finally:
                self._apool_ready.set()
        elif self._apool_ready is not None and not self._apool_ready.is_set():
            await self._apool_ready.wait()
        return self._apool

    async def acall(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...]:
        """One statement in its own transaction, without blocking the loop; its one row.

        Returns once the statement's effects are durable (a shared flush barrier).
        """
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn:
                cursor = await conn.execute(placeholders(sql), params)
                row = await cursor.fetchone()
            if self._durable:
                self._applied += 1
                await self._barrier(self._applied)
        except (*_DOWN, psycopg.errors.QueryCanceled) as exc:
            raise unavailable(self.config.url, exc) from None
        assert row is not None
        return tuple(row)

    async def _barrier(self, token: int) -> None:
        """Return once a synchronous commit started after unit ``token`` committed; the first
        waiter runs it for everyone who finished meanwhile (group commit)."""
        while self._flushed < token:
            running = self._barrier_running
            if running is not None:
                await asyncio.shield(running)
                continue
            target = self._applied
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._barrier_running = future
            try:
                pool = await self._async_pool()
                async with pool.connection() as conn:
                    await conn.execute(BARRIER_SQL)
                self._flushed = max(self._flushed, target)
                future.set_result(None)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: each waiter raises on its own
                raise
            finally:
                self._barrier_running = None

    # -- admissions, batched -----------------------------------------------------------

    async def admit_async(self, params: Sequence[Any]) -> list[str]:
        """One admission (``xinrong_admit``'s parameters, ``ADMISSION_FIELDS``); its outcome, once durable.

        The admissions the loop has pending when the previous batch is done go
        to the database together (``xinrong_admit_batch``, schema steps 13 and 14):
        one transaction, each admission as if sent alone, committed durably,
        in one round trip. A caller that goes away does not withdraw its
        admission (as a statement already sent is not withdrawn).
        """
        if not self._batching:
            row = await self.acall(ADMIT_ONE_SQL, params)
            return list(row[0])
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._arrival_gap += (min(now - self._last_arrival, 1.0) - self._arrival_gap) * _GAP_WEIGHT
        self._last_arrival = now
        future: asyncio.Future[list[str]] = loop.create_future()
        self._admit_queue.append((params, future))
        if self._admit_kick is None:
            self._admit_schedule(loop)
        elif self._admit_lingering and len(self._admit_queue) >= ADMIT_FULL:
            self._admit_kick.cancel()  # full enough: rescheduled, it goes now
            self._admit_schedule(loop)
        return await future  # cancelled: the batch skips it

    def _admit_schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        """Kick the next batch: on the next loop iteration (every admission that arrives in
        this one joins it), or after the linger while admissions come close together."""
        if (
            self._admit_linger > 0
            and len(self._admit_queue) < ADMIT_FULL
            and self._admit_in_flight < self._admit_limit
            and self._arrival_gap < ADMIT_LINGER_GAP
            and self._batch_size > ADMIT_LINGER_COMPANY
        ):
            self._admit_lingering = True
            self._admit_kick = loop.call_later(self._admit_linger, self._admit_send)
        else:
            self._admit_lingering = False
            self._admit_kick = loop.call_soon(self._admit_send)

    def _admit_send(self) -> None:
        self._admit_kick = None
        self._admit_lingering = False
        while self._admit_queue and self._admit_in_flight < self._admit_limit:
            batch, self._admit_queue = self._admit_queue[:ADMIT_BATCH], self._admit_queue[ADMIT_BATCH:]
            self._admit_in_flight += 1
            self._batch_size += (len(batch) - self._batch_size) * _SIZE_WEIGHT
            task = asyncio.get_running_loop().create_task(self._admit_batch(batch))
            self._admit_tasks.add(task)
            task.add_done_callback(self._admit_tasks.discard)

    async def _admit_batch(self, batch: list[tuple[Sequence[Any], asyncio.Future[list[str]]]]) -> None:
        released = False

        def release() -> None:  # the next batch may go
            nonlocal released
            if not released:
                released = True
                self._admit_in_flight -= 1
                self._admit_kick_soon()

        try:
            payload = json.dumps([dict(zip(ADMISSION_FIELDS, params, strict=True)) for params, _ in batch])
            try:
                pool = await self._async_pool()
                async with pool.connection() as conn:
                    cursor = await conn.execute(ADMIT_BATCH_SQL, (payload, self._durable))
                    row = await cursor.fetchone()
            except (*_DOWN, psycopg.errors.QueryCanceled) as exc:
                raise unavailable(self.config.url, exc) from None
            except psycopg.Error as exc:
                # The server refused the batch: it rolled back whole (nothing is spent).
                # One by one, so an admission that fails fails alone.
                log.warning(
                    "node database %s: an admission batch of %d failed (%s); admitting them one by one",
                    self.url,
                    len(batch),
                    type(exc).__name__,
                )
                release()
                await self._admit_alone(batch)
                return
            assert row is not None
            outcomes = row[0]
            if not isinstance(outcomes, list) or len(outcomes) != len(batch):
                raise StoreUnavailable(
                    f"node database {self.url}: admission batch answered {len(batch)} admissions wrongly"
                )
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if not future.done():
                    future.set_result([str(x) for x in outcome])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            release()

    def _admit_kick_soon(self) -> None:
        if self._admit_queue and self._admit_kick is None:
            self._admit_schedule(asyncio.get_running_loop())

    async def _admit_alone(self, batch: list[tuple[Sequence[Any], asyncio.Future[list[str]]]]) -> None:
        for params, future in batch:
            if future.done():
                continue
            try:
                row = await self.acall(ADMIT_ONE_SQL, params)
            except StoreUnavailable as exc:
                future.set_exception(exc)
            except psycopg.Error as exc:
                future.set_exception(unavailable(self.config.url, exc))
            else:
                future.set_result([str(x) for x in row[0]])

    async def aquery(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            pool = await self._async_pool()
            async with pool.connection() as conn:
                cursor = await conn.execute(placeholders(sql), params)
                return [tuple(r) for r in await cursor.fetchall()]
        except (*_DOWN, psycopg.errors.QueryCanceled) as exc:
            raise unavailable(self.config.url, exc) from None

    async def aclose(self) -> None:
        """Close the loop's pool (on the loop that owns it), after the admission batches in
        flight and those still queued or lingering (sent now: an admission is not dropped)."""
        while True:  # a lingering batch goes now, not lost
            if self._admit_kick is not None:
                self._admit_kick.cancel()
                self._admit_kick = None
            if not (self._admit_tasks or self._admit_queue):
                break
            self._admit_send()
            await asyncio.gather(*self._admit_tasks, return_exceptions=True)
        if self._apool is not None:
            await self._apool.close()
            self._apool = None


def connect_readonly(config: DatabaseConfig) -> psycopg.Connection[Any]:
    """A read-only session for operator tools beside running replicas."""
    try:
        conn = psycopg.connect(conninfo(config), autocommit=True)
    except psycopg.OperationalError as exc:
        raise unavailable(config.url, exc) from None
    conn.execute("SET default_transaction_read_only = on")
    return conn


__all__ = [
    "MIGRATE_LOCK",
    "SEQUENCER_LOCK",
    "PgDatabase",
    "PgTransaction",
    "connect_readonly",
    "migrate",
    "placeholders",
    "redacted",
    "schema_version",
]
