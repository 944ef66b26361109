"""The agent's SQLite storage: the provider's data, and the agent's serving state.

Two database files, both in WAL mode, so each has exactly one kind of writer:

* the **data store** (``db``) holds import periods and the records of the
  active period. Only ``xinrong agent import`` writes it, in one transaction
  per import; the serving agent only reads it. A 1M-row import holds the
  write lock for many seconds, and WAL lets the agent keep answering from
  the previous period until the new one commits, then switch atomically.
* the **state store** (``state_db``) holds what the agent decides and
  remembers while serving: request ids already seen (replay), per-consent use
  counts, verified revocations and the answer log. Only the serving agent
  writes it, through one connection behind a lock, so writers never meet
  SQLite's sleeping busy handler (which would wreck tail latency).

Records are stored as a JSON array of typed cells per USCC, in the column
order recorded with their period: compact, no pickle, and unambiguous if a
later catalog reorders fields. Nothing here logs a value.

Both files (and their WAL / SHM) are private: created 0600, refused at
start if group- or world-accessible, and an agent whose state store cannot
be written refuses to start (``xinrong.statefiles``). A write that fails
while serving (read-only remount, full disk) raises ``StoreUnavailable``
and marks the store unhealthy, which turns the agent's health NOT_SERVING
until a probe write succeeds again.

Request ids are remembered per institution (the audience the answer is
sealed to): the node forwards each bank's own request id, so one global
table would tell a bank whether another had used an id. A replaying node
still cannot reuse an id: the audience comes from the request's
CA-signed binding, and the answer is sealed to it.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xinrong.errors import StoreUnavailable, ValidationError
from xinrong.jsontext import string_array
from xinrong.keys.signing import SigningKey
from xinrong.statefiles import prepare_private
from xinrong.tlog import merkle
from xinrong.tlog.auditleaf import answer_leaf
from xinrong.tlog.store import SignedCheckpoint, SubtreeStore, sqlite_tables

log = logging.getLogger(__name__)

DATA_SCHEMA_VERSION = "1"
# 2: seen request ids keyed by (audience, request id); 1 kept one global namespace.
STATE_SCHEMA_VERSION = "2"
SCHEMA_VERSION = DATA_SCHEMA_VERSION  # the data store's, as before
# Request ids recorded under schema 1 carry no audience: they count for every audience until pruned.
LEGACY_AUDIENCE = ""

_DATA_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS periods (
  id INTEGER PRIMARY KEY,
  as_of TEXT NOT NULL,
  imported_at INTEGER NOT NULL,
  rows INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  source TEXT NOT NULL,
  columns TEXT NOT NULL,
  catalog_sha256 TEXT NOT NULL,
  active INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1))
);
CREATE UNIQUE INDEX IF NOT EXISTS periods_one_active ON periods(active) WHERE active = 1;
-- A rowid table plus a narrow unique index: random USCCs then only disturb
-- the small index B-tree, which stays in cache (about twice as fast to import
-- as a WITHOUT ROWID table keyed on the USCC).
CREATE TABLE IF NOT EXISTS records (
  id INTEGER PRIMARY KEY,
  period_id INTEGER NOT NULL,
  uscc TEXT NOT NULL,
  line INTEGER NOT NULL,
  data TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_by_uscc ON records(period_id, uscc);
"""

_STATE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen_requests (
  audience TEXT NOT NULL,
  request_id TEXT NOT NULL,
  requested_at INTEGER NOT NULL,
  seen_at INTEGER NOT NULL,
  PRIMARY KEY (audience, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_requests_by_time ON seen_requests(requested_at);
CREATE TABLE IF NOT EXISTS consent_uses (
  consent_id TEXT PRIMARY KEY,
  uses INTEGER NOT NULL,
  day INTEGER NOT NULL,          -- UTC day number (Unix days) of day_uses
  day_uses INTEGER NOT NULL,
  last_used_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocations (
  consent_id TEXT NOT NULL,
  enterprise_uscc TEXT NOT NULL,
  revoked_at INTEGER NOT NULL,
  received_at INTEGER NOT NULL,
  revocation BLOB NOT NULL,
  signature BLOB NOT NULL,
  enterprise_binding BLOB NOT NULL,
  PRIMARY KEY (consent_id, enterprise_uscc)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answer_log (
  id INTEGER PRIMARY KEY,
  request_id TEXT NOT NULL,
  kind TEXT NOT NULL,
  consent_id TEXT NOT NULL,
  enterprise_uscc TEXT NOT NULL,
  audience TEXT NOT NULL,
  fields TEXT NOT NULL,
  data_as_of TEXT NOT NULL,
  answer_sha256 TEXT NOT NULL,
  sealed_sha256 TEXT NOT NULL,
  issued_at INTEGER NOT NULL
);
-- No secondary indexes on the answer log: it is appended on every request and
-- read only by offline reconciliation, which can afford a scan.
"""

# The one read per request. The consent's data-period bounds sit in the join
# condition, so SQLite fetches the record's data only when the active period
# lies within the consent (it seeks the index, then defers the row read past
# the period test): a mismatched consent reads no enterprise data.
_READ_RECORD = (
    "SELECT p.id, p.as_of, r.data FROM periods AS p "
    "LEFT JOIN records AS r ON r.period_id = p.id AND r.uscc = ? AND p.as_of BETWEEN ? AND ? "
    "WHERE p.active = 1"
)
# State schema 1 -> 2: request ids per audience; the ids held move over as legacy.
_STATE_MIGRATE_2 = (
    "CREATE TABLE seen_requests_by_audience (audience TEXT NOT NULL, request_id TEXT NOT NULL, "
    "requested_at INTEGER NOT NULL, seen_at INTEGER NOT NULL, PRIMARY KEY (audience, request_id)) WITHOUT ROWID",
    "INSERT INTO seen_requests_by_audience (audience, request_id, requested_at, seen_at) "
    "SELECT '', request_id, requested_at, seen_at FROM seen_requests",
    "DROP TABLE seen_requests",
    "ALTER TABLE seen_requests_by_audience RENAME TO seen_requests",
    "CREATE INDEX seen_requests_by_time ON seen_requests(requested_at)",
    "UPDATE meta SET value = '2' WHERE key = 'schema'",
)
ANSWER_TLOG_PREFIX = "answer_tlog_"
_ANSWER_COLUMNS = "request_id, kind, consent_id, enterprise_uscc, audience, fields, data_as_of, answer_sha256, sealed_sha256, issued_at"
_PERIOD_COLUMNS = "id, as_of, imported_at, rows, sha256, source, columns, catalog_sha256, active"


def _connect(path: Path, *, query_only: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are explicit BEGIN / COMMIT."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives a process crash; a power loss can
    # lose the last commits but never corrupts the database.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if query_only:
        conn.execute("PRAGMA query_only=1")
    return conn


def _open_schema(conn: sqlite3.Connection, schema: str, kind: str, provider: str, path: Path) -> None:
    """Create the schema on first use, then check the file is this
    provider's database of this kind (an operator mix-up would otherwise let
    one provider sign answers from another's data).

    An existing data store is only read here: a serving agent must be able
    to start while an import holds the write lock for many seconds. A state
    store of schema 1 is brought to 2 (only the serving agent writes it).
    """
    version = STATE_SCHEMA_VERSION if kind == "state" else DATA_SCHEMA_VERSION
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if exists is None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (version,))
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('kind', ?)", (kind,))
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('provider', ?)", (provider,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if rows.get("kind") != kind or rows.get("provider") != provider:
        raise ValidationError(
            f"{path} is a {rows.get('kind')} database of provider {rows.get('provider')!r}, "
            f"not the {kind} database of {provider!r}"
        )
    if kind == "state" and rows.get("schema") == "1":
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _STATE_MIGRATE_2:
                conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info("state store %s: request ids now kept per institution (schema 2)", path)
        rows["schema"] = "2"
    if rows.get("schema") != version:
        raise ValidationError(f"{path} has schema {rows.get('schema')}, this agent reads {version}")


@dataclass(frozen=True)
class Period:
    """One imported data period (a CSV export with one as-of date)."""

    id: int
    as_of: str
    imported_at: int
    rows: int
    sha256: str
    source: str
    columns: tuple[str, ...]
    catalog_sha256: str
    active: bool


def _period(row: tuple[object, ...]) -> Period:
    pid, as_of, imported_at, rows, sha, source, columns, catalog_sha, active = row
    return Period(
        id=int(str(pid)),
        as_of=str(as_of),
        imported_at=int(str(imported_at)),
        rows=int(str(rows)),
        sha256=str(sha),
        source=str(source),
        columns=tuple(json.loads(str(columns))),
        catalog_sha256=str(catalog_sha),
        active=bool(active),
    )


@dataclass(frozen=True)
class Lookup:
    """Result of the one read per request: the active period and, if the
    enterprise is in it, its record (JSON array, see ``DataStore.columns``)."""

    period_id: int
    as_of: str
    data: str | None


class DataStore:
    """The provider's data: periods and the active period's records."""

    def __init__(self, path: str | Path, provider: str) -> None:
        self.path = prepare_private(path, "agent data store", create_dir=True)
        self.provider = provider
        setup = _connect(self.path)
        try:
            _open_schema(setup, _DATA_SCHEMA, "data", provider, self.path)
        finally:
            setup.close()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._columns: dict[int, dict[str, int]] = {}
        self._closed = False

    def _reader(self) -> sqlite3.Connection:
        """One read-only connection per thread: no lock on the read path."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("data store is closed")
            conn = _connect(self.path, query_only=True)
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def lookup(self, uscc: str, period_from: str, period_to: str) -> Lookup | None:
        """The active period and, if its as-of date lies in [period_from,
        period_to], the enterprise's record: one query, one consistent
        snapshot. None when no period was ever imported."""
        row = self._reader().execute(_READ_RECORD, (uscc, period_from, period_to)).fetchone()
        if row is None:
            return None
        return Lookup(period_id=int(row[0]), as_of=str(row[1]), data=None if row[2] is None else str(row[2]))

    def columns(self, period_id: int) -> dict[str, int]:
        """Column name -> index in a record's value array (cached per period)."""
        cached = self._columns.get(period_id)
        if cached is None:
            row = self._reader().execute("SELECT columns FROM periods WHERE id = ?", (period_id,)).fetchone()
            if row is None:
                raise LookupError(f"period {period_id} does not exist")
            cached = {name: i for i, name in enumerate(json.loads(str(row[0])))}
            self._columns[period_id] = cached
        return cached

    def period_records(self, period_id: int) -> dict[str, str]:
        """Every record of one period (USCC -> JSON array), in one scan: the post-loan
        monitor re-evaluates every watch of a new period at once (provider_agent.monitoring)."""
        rows = self._reader().execute("SELECT uscc, data FROM records WHERE period_id = ?", (period_id,))
        return {str(uscc): str(data) for uscc, data in rows}

    def active_period(self) -> Period | None:
        row = self._reader().execute(f"SELECT {_PERIOD_COLUMNS} FROM periods WHERE active = 1").fetchone()
        return None if row is None else _period(row)

    def periods(self) -> list[Period]:
        rows = self._reader().execute(f"SELECT {_PERIOD_COLUMNS} FROM periods ORDER BY id").fetchall()
        return [_period(r) for r in rows]

    def begin_import(self, *, source: str, columns: Iterable[str], catalog_sha256: str, now: int) -> ImportWriter:
        """Open the one write transaction of an import (see ImportWriter)."""
        conn = _connect(self.path)
        # A large page cache keeps the USCC index of a 1M-row period in memory
        # while random USCCs are inserted (up to 64 MiB, import only).
        conn.execute("PRAGMA cache_size=-65536")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            conn.close()
            raise ValidationError(f"{self.path} is locked (another import running?): {exc}") from None
        try:
            cur = conn.execute(
                "INSERT INTO periods(as_of, imported_at, rows, sha256, source, columns, catalog_sha256, active) "
                "VALUES ('', ?, 0, '', ?, ?, ?, 0)",
                (now, source, json.dumps(list(columns)), catalog_sha256),
            )
            period_id = int(cur.lastrowid or 0)
            row = conn.execute(f"SELECT {_PERIOD_COLUMNS} FROM periods WHERE active = 1").fetchone()
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        return ImportWriter(conn, period_id, None if row is None else _period(row))

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()


class ImportWriter:
    """The single transaction of one import: rows go in as they are read, and
    either ``commit`` switches the active period in that same transaction, or
    ``abort`` rolls everything back. Nothing is ever half-imported, and
    readers keep the old period until the commit."""

    def __init__(self, conn: sqlite3.Connection, period_id: int, previous: Period | None) -> None:
        self._conn = conn
        self.period_id = period_id
        self.previous = previous
        self._done = False

    def add(self, rows: list[tuple[str, int, str]]) -> list[tuple[int, int]]:
        """Insert (uscc, line, data) rows; return (line, first_line) for every
        row whose USCC was already in this period. The primary key finds
        duplicates, so memory stays flat however large the file is."""
        before = self._conn.total_changes
        self._conn.executemany(
            "INSERT INTO records(period_id, uscc, line, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(period_id, uscc) DO NOTHING",
            [(self.period_id, u, line, d) for u, line, d in rows],
        )
        if self._conn.total_changes - before == len(rows):
            return []
        dups: list[tuple[int, int]] = []
        for uscc, line, _ in rows:
            first = self._conn.execute(
                "SELECT line FROM records WHERE period_id = ? AND uscc = ?", (self.period_id, uscc)
            ).fetchone()
            if first is not None and int(first[0]) != line:
                dups.append((line, int(first[0])))
        return dups

    def commit(self, *, as_of: str, rows: int, sha256: str) -> None:
        """Make this period the active one and drop the old period's records."""
        try:
            self._conn.execute("UPDATE periods SET active = 0 WHERE active = 1")
            self._conn.execute(
                "UPDATE periods SET active = 1, as_of = ?, rows = ?, sha256 = ? WHERE id = ?",
                (as_of, rows, sha256, self.period_id),
            )
            self._conn.execute("DELETE FROM records WHERE period_id <> ?", (self.period_id,))
            self._conn.execute("COMMIT")
        except BaseException:
            self.abort()
            raise
        self._done = True
        # Shrink the WAL the import grew; readers may keep it busy, which is fine.
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._conn.execute("ROLLBACK")
        finally:
            self._conn.close()


class Admission(enum.Enum):
    """Outcome of the replay and use-count checks for one request."""

    ADMITTED = "admitted"
    REPLAYED = "replayed"
    USES_EXHAUSTED = "uses_exhausted"
    DAILY_LIMIT = "daily_limit"


@dataclass(frozen=True)
class AnswerLogEntry:
    """What the agent answered, without any value: enough to reconcile with
    the node's audit log (request id, sealed-box hash) and with the bank's
    copies (hash of each signed verdict or indicator)."""

    request_id: str
    kind: str  # "claims" | "indicators"
    consent_id: str
    enterprise_uscc: str
    audience: str
    fields: tuple[str, ...]
    data_as_of: str
    answer_sha256: tuple[str, ...]
    sealed_sha256: str
    issued_at: int


@dataclass(frozen=True)
class StoredRevocation:
    consent_id: str
    enterprise_uscc: str
    revoked_at: int


@dataclass
class RequestTxn:
    """The open transaction of one request (see ``StateStore.request``)."""

    request_id: str
    consent_id: str
    day: int
    now: int
    outcome: Admission = Admission.ADMITTED
    uses: int = 0
    day_uses: int = 0
    entry: AnswerLogEntry | None = None

    def record(self, entry: AnswerLogEntry) -> None:
        """Count the use and log the answer when the transaction commits."""
        if entry.request_id != self.request_id or entry.consent_id != self.consent_id:
            raise ValueError("answer log entry does not belong to this request")
        self.entry = entry


def answer_export(conn: sqlite3.Connection) -> tuple[SignedCheckpoint | None, list[dict[str, Any]]]:
    """The newest signed checkpoint of an agent's answer log and the entries it covers, from any connection."""

    def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(conn.execute(sql, tuple(params)).fetchall())

    latest = SubtreeStore(query, prefix=ANSWER_TLOG_PREFIX).latest()
    size = latest.size if latest else 0
    rows = conn.execute(f"SELECT id, {_ANSWER_COLUMNS} FROM answer_log ORDER BY id LIMIT ?", (size,)).fetchall()
    names = ("seq", *_ANSWER_COLUMNS.split(", "))
    entries = []
    for r in rows:
        doc = dict(zip(names, r, strict=True))
        doc["fields"] = json.loads(str(doc["fields"]))
        doc["answer_sha256"] = json.loads(str(doc["answer_sha256"]))
        entries.append(doc)
    return latest, entries


def open_state_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only connection to an agent's state store (safe beside the serving agent)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"agent state store {p} does not exist")
    return sqlite3.connect(f"file:{p.resolve()}?mode=ro", uri=True, isolation_level=None)


def _utc_day(now: float) -> int:
    return int(now // 86400)


class StateStore:
    """Replay set, use counts, revocations and the answer log of a serving agent.

    With ``background_checkpoint`` the writer never checkpoints the WAL
    itself; the owner calls ``checkpoint()`` from a background thread. A
    checkpoint fsyncs, and paying that inside a request is what turns a
    sub-millisecond p50 into a multi-millisecond p99.
    """

    def __init__(self, path: str | Path, provider: str, *, background_checkpoint: bool = False) -> None:
        self.path = prepare_private(path, "agent state store", create_dir=True)
        # One writer connection, serialized in-process: SQLite's busy handler
        # sleeps in milliseconds, a Python lock hands over in microseconds.
        # Re-entrant so a batch can hold it across the requests it groups.
        self._lock = threading.RLock()
        self._checkpointer: sqlite3.Connection | None = None
        self._batch_depth = 0
        self._failure: str | None = None  # why the last write failed, until a probe succeeds
        try:
            self._conn = _connect(self.path)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"agent state store {self.path} cannot be opened: {exc}") from None
        self._answer_cache: dict[tuple[int, int], bytes] = {}
        # (tree size, answer_log id of its last leaf) after the last integration: the next one
        # reads from that id on. (``OFFSET size`` made SQLite step over every answer logged so
        # far, each second, under the lock answers are written with: a soak's p99 rose with it.)
        self._answers_tail: tuple[int, int] | None = None
        try:
            _open_schema(self._conn, _STATE_SCHEMA, "state", provider, self.path)
            # The answer log's Merkle tables: additive, derived from answer_log (any schema-2 store gets them).
            for statement in sqlite_tables(ANSWER_TLOG_PREFIX).split(";"):
                if statement.strip():
                    self._conn.execute(statement)
            if background_checkpoint:
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._legacy_ids = self._count_legacy()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreUnavailable(f"agent state store {self.path} cannot be written: {exc}") from None
        except BaseException:
            self._conn.close()
            raise
        if not self.probe():
            self._conn.close()
            raise StoreUnavailable(f"agent state store {self.path} cannot be written: {self._failure}")

    def _count_legacy(self) -> int:
        row = self._conn.execute("SELECT COUNT(*) FROM seen_requests WHERE audience = ?", (LEGACY_AUDIENCE,)).fetchone()
        return int(row[0])

    def _failed(self, exc: sqlite3.Error) -> StoreUnavailable:
        """Remember a failed write (health turns NOT_SERVING) and say so in one line."""
        if self._failure is None:
            log.error("agent state store %s cannot be written: %s", self.path, exc)
        self._failure = str(exc)
        return StoreUnavailable(f"agent state store cannot be written: {exc}")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """An autocommit write: a failure is typed and marks the store unhealthy."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise self._failed(exc) from None

    def healthy(self) -> bool:
        """False after a failed write, until ``probe`` succeeds again."""
        return self._failure is None

    @property
    def failure(self) -> str | None:
        return self._failure

    def probe(self) -> bool:
        """One small committed write: the state store takes writes right now.

        Called at start and by the agent's watcher every poll, so a store that
        became read-only turns health NOT_SERVING even while no request comes.
        """
        with self._lock:
            if self._batch_depth:
                return self.healthy()
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(
                    "INSERT INTO meta(key, value) VALUES ('probe', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (str(int(time.time())),),
                )
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                if self._failure is None:
                    log.error("agent state store %s cannot be written: %s", self.path, exc)
                self._failure = str(exc)
                return False
            if self._failure is not None:
                log.warning("agent state store %s takes writes again", self.path)
            self._failure = None
            return True

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group the requests answered inside into one commit (group commit).

        A COMMIT costs more than everything else a request writes; a batch of
        stream calls shares one. Each request inside still gets its own
        SAVEPOINT, so a refused request rolls back alone; nothing of the batch
        is durable (and no answer leaves the agent) before the single COMMIT,
        which the caller awaits before sending the batch's answers.
        """
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._failed(exc) from None
            self._batch_depth += 1
            try:
                yield
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    raise self._failed(exc) from None
                raise
            finally:
                self._batch_depth -= 1

    @contextmanager
    def request(
        self,
        *,
        audience: str,
        request_id: str,
        requested_at: int,
        consent_id: str,
        max_uses: int,
        max_uses_per_day: int,
        now: float,
    ) -> Iterator[RequestTxn]:
        """One transaction per answered request: the replay check, the use
        count and the answer log commit together or not at all.

        On entry the request id is inserted (a repeat is ``REPLAYED``) and the
        consent's use counts are checked; ``txn.outcome`` says which. The
        caller reads, evaluates, signs and seals inside the block and calls
        ``txn.record(entry)``; leaving the block then counts the use and
        appends the entry in the same commit. Leaving without ``record`` (a
        refusal) or with an exception rolls everything back, so a refused
        request consumes neither its id nor a use. The writer lock is held
        throughout: requests serialize here, which costs little because the
        work in between is GIL-bound anyway, and buys one commit per request
        and no compensation logic."""
        day = _utc_day(now)
        with self._lock:
            conn = self._conn
            nested = self._batch_depth > 0
            try:
                conn.execute("SAVEPOINT answer" if nested else "BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise self._failed(exc) from None
            try:
                txn = RequestTxn(request_id=request_id, consent_id=consent_id, day=day, now=int(now))
                legacy = self._legacy_ids > 0 and (
                    conn.execute(
                        "SELECT 1 FROM seen_requests WHERE audience = ? AND request_id = ?",
                        (LEGACY_AUDIENCE, request_id),
                    ).fetchone()
                    is not None
                )
                try:
                    if legacy:
                        raise sqlite3.IntegrityError("seen before the ids were kept per institution")
                    conn.execute(
                        "INSERT INTO seen_requests(audience, request_id, requested_at, seen_at) VALUES (?, ?, ?, ?)",
                        (audience, request_id, requested_at, int(now)),
                    )
                except sqlite3.IntegrityError:
                    txn.outcome = Admission.REPLAYED
                else:
                    row = conn.execute(
                        "SELECT uses, day, day_uses FROM consent_uses WHERE consent_id = ?", (consent_id,)
                    ).fetchone()
                    if row is not None:
                        txn.uses = int(row[0])
                        txn.day_uses = int(row[2]) if int(row[1]) == day else 0
                    if txn.uses >= max_uses:
                        txn.outcome = Admission.USES_EXHAUSTED
                    elif max_uses_per_day > 0 and txn.day_uses >= max_uses_per_day:
                        txn.outcome = Admission.DAILY_LIMIT
                    else:
                        txn.outcome = Admission.ADMITTED
                yield txn
                entry = txn.entry
                if entry is None:
                    conn.execute("ROLLBACK TO answer" if nested else "ROLLBACK")
                    if nested:
                        conn.execute("RELEASE answer")
                    return
                if txn.outcome is not Admission.ADMITTED:
                    raise RuntimeError("an answer was recorded for a request that was not admitted")
                conn.execute(
                    "INSERT INTO consent_uses(consent_id, uses, day, day_uses, last_used_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(consent_id) DO UPDATE SET "
                    "uses = excluded.uses, day = excluded.day, day_uses = excluded.day_uses, "
                    "last_used_at = excluded.last_used_at",
                    (consent_id, txn.uses + 1, day, txn.day_uses + 1, txn.now),
                )
                conn.execute(
                    "INSERT INTO answer_log(request_id, kind, consent_id, enterprise_uscc, audience, fields, "
                    "data_as_of, answer_sha256, sealed_sha256, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        entry.request_id,
                        entry.kind,
                        entry.consent_id,
                        entry.enterprise_uscc,
                        entry.audience,
                        string_array(entry.fields),
                        entry.data_as_of,
                        string_array(entry.answer_sha256),
                        entry.sealed_sha256,
                        entry.issued_at,
                    ),
                )
                conn.execute("RELEASE answer" if nested else "COMMIT")
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    if nested:
                        conn.execute("ROLLBACK TO answer")
                        conn.execute("RELEASE answer")
                    elif conn.in_transaction:
                        conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.OperationalError):
                    # Read-only, full or failing disk: typed, and health follows.
                    raise self._failed(exc) from None
                raise

    # -- the answer log as a Merkle tree log (own checkpoints, own key) ---------------------

    def _answers(self) -> SubtreeStore:
        def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return list(self._conn.execute(sql, tuple(params)).fetchall())

        return SubtreeStore(query, prefix=ANSWER_TLOG_PREFIX, cache=self._answer_cache)

    def integrate_answers(self, origin: str, key: SigningKey, now_ms: int) -> SignedCheckpoint | None:
        """Fold the answers the tree lacks (in id order) and sign a checkpoint if it grew.

        The tree is derived from ``answer_log`` (one insert per answer stays
        the request's only log write); a checkpoint inconsistent with the
        newest signed one is refused (``CheckpointRefused``).
        """
        with self._lock, self._writing():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                tree = self._answers()
                size = tree.size()
                tail = self._answers_tail
                if tail is not None and tail[0] == size:
                    rows = self._conn.execute(
                        f"SELECT id, {_ANSWER_COLUMNS} FROM answer_log WHERE id > ? ORDER BY id", (tail[1],)
                    ).fetchall()
                else:  # the first integration of this process: step over the leaves once
                    rows = self._conn.execute(
                        f"SELECT id, {_ANSWER_COLUMNS} FROM answer_log ORDER BY id LIMIT -1 OFFSET ?", (size,)
                    ).fetchall()
                tree.extend(self._conn.executemany, [merkle.leaf_hash(answer_leaf(*r)) for r in rows])
                signed = tree.sign(lambda sql, p: self._conn.execute(sql, tuple(p)), origin, key, now_ms)
                self._conn.execute("COMMIT")
            except BaseException:
                self._answers_tail = None  # read from the tree's size again next time
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            if rows:
                self._answers_tail = (size + len(rows), int(rows[-1][0]))
            elif tail is None or tail[0] != size:
                last = (
                    self._conn.execute("SELECT id FROM answer_log ORDER BY id LIMIT 1 OFFSET ?", (size - 1,)).fetchone()
                    if size
                    else (0,)
                )
                self._answers_tail = (size, int(last[0])) if last is not None else None
        return signed

    def answer_export(self) -> tuple[SignedCheckpoint | None, list[dict[str, Any]]]:
        """The newest signed checkpoint of the answer log and every entry it covers (metadata only)."""
        with self._lock:
            return answer_export(self._conn)

    def use_count(self, consent_id: str) -> int:
        with self._lock:
            row = self._conn.execute("SELECT uses FROM consent_uses WHERE consent_id = ?", (consent_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def answer_log(self, *, consent_id: str | None = None) -> list[AnswerLogEntry]:
        sql = (
            "SELECT request_id, kind, consent_id, enterprise_uscc, audience, fields, data_as_of, "
            "answer_sha256, sealed_sha256, issued_at FROM answer_log"
        )
        params: tuple[str, ...] = ()
        if consent_id is not None:
            sql += " WHERE consent_id = ?"
            params = (consent_id,)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY id", params).fetchall()
        return [
            AnswerLogEntry(
                request_id=r[0],
                kind=r[1],
                consent_id=r[2],
                enterprise_uscc=r[3],
                audience=r[4],
                fields=tuple(json.loads(r[5])),
                data_as_of=r[6],
                answer_sha256=tuple(json.loads(r[7])),
                sealed_sha256=r[8],
                issued_at=int(r[9]),
            )
            for r in rows
        ]

    def record_answers(self, entries: Sequence[AnswerLogEntry]) -> None:
        """Answers that consumed no request id or use (post-loan watch updates,
        ``provider_agent.monitoring``): logged in one transaction, so node and
        agent logs reconcile for them as for Verify."""
        if not entries:
            return
        rows = [
            (
                e.request_id,
                e.kind,
                e.consent_id,
                e.enterprise_uscc,
                e.audience,
                string_array(e.fields),
                e.data_as_of,
                string_array(e.answer_sha256),
                e.sealed_sha256,
                e.issued_at,
            )
            for e in entries
        ]
        with self._lock, self._writing():
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO answer_log(request_id, kind, consent_id, enterprise_uscc, audience, fields, "
                    "data_as_of, answer_sha256, sealed_sha256, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def add_revocation(
        self,
        *,
        consent_id: str,
        enterprise_uscc: str,
        revoked_at: int,
        received_at: int,
        revocation: bytes,
        signature: bytes,
        enterprise_binding: bytes,
    ) -> None:
        """Persist a verified revocation (kept with its signature, for audit).
        A repeat of the same revocation is a no-op: the first one stands."""
        with self._lock, self._writing():
            self._conn.execute(
                "INSERT INTO revocations(consent_id, enterprise_uscc, revoked_at, received_at, revocation, "
                "signature, enterprise_binding) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(consent_id, enterprise_uscc) DO NOTHING",
                (consent_id, enterprise_uscc, revoked_at, received_at, revocation, signature, enterprise_binding),
            )

    def revocations(self) -> list[StoredRevocation]:
        with self._lock:
            rows = self._conn.execute("SELECT consent_id, enterprise_uscc, revoked_at FROM revocations").fetchall()
        return [StoredRevocation(consent_id=r[0], enterprise_uscc=r[1], revoked_at=int(r[2])) for r in rows]

    def prune_seen(self, older_than: int) -> int:
        """Forget request ids whose timestamps the freshness check already
        refuses: they can never be replayed successfully again."""
        with self._lock:
            cur = self._conn.execute("DELETE FROM seen_requests WHERE requested_at < ?", (older_than,))
            if self._legacy_ids:
                self._legacy_ids = self._count_legacy()
        return cur.rowcount

    def checkpoint(self) -> None:
        """Copy the WAL back into the database without blocking the writer
        (PASSIVE), on a connection of its own so the write lock stays free."""
        if self._checkpointer is None:
            self._checkpointer = _connect(self.path)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._checkpointer is not None:
                self._checkpointer.close()
