"""Replay protection and the per-enterprise daily budget.

With SQLite the budget is held in memory for the hot path and written
through in the request's admission transaction, so it survives a restart;
replay ids live only in the database (a primary-key lookup on the node's
one connection), with their byte counts in memory. On a database shared by
replicas (PostgreSQL) the database is the authority for both: the
admission checks and counts both in one statement, whichever replica runs
it (``xinrong.node.pg``), and these classes only load, prune and read.

Replay ids are scoped per caller (``caller_key``: role and party id): one
global namespace told any bank whether another had used an id in the
window. The node passes the bank's request id on to the agents, which key
their own replay table on (institution, request id) for the same reason.
Ids recorded before the scoping (caller ``LEGACY``, moved over by schema
step 2) still count for every caller until they expire. An id is kept for
twice the clock-skew window (plus a minute): a captured request replayed
later than that is refused as stale, whatever its id.

The window is bounded in bytes (``ReplayGuard``): at the bound new
requests are refused with a retry-after, ids are never forgotten early.
The tables carry no secondary index on SQLite: every index is one more
page written per request. Expired replay ids are found by a sweep in
primary-key order, a thousand rows per read, and deleted by primary key.
"""

from __future__ import annotations

import threading
import time

from xinrong.errors import Reason, XinrongError
from xinrong.node.db import Database, Transaction

# The caller of replay ids recorded before they were scoped per caller.
LEGACY = ""

DAY_SECONDS = 86_400


def utc_day(now: float) -> int:
    """Days since the Unix epoch in UTC: budgets reset at 00:00 UTC."""
    return int(now // DAY_SECONDS)


def caller_key(role: str, party_id: str) -> str:
    """The namespace of a caller's request ids."""
    return f"{role}:{party_id}"


# The replay window's size is counted in 10-second buckets: what a caller and
# the node hold, and when the oldest of it expires (the RetryInfo of a refusal).
BUCKET_MS = 10_000
# Estimated bytes of one replay_ids row beyond its two strings (record header,
# seen_ms, cell pointer, B-tree slack): what the window is bounded by.
ROW_OVERHEAD_BYTES = 40
# Rows of replay_ids read per pruning transaction (the lock is free between them).
SWEEP_ROWS = 1000
# The periodic prune (``lazy``) sweeps the table only once the rows that have expired
# since the last sweep are this share of the live window (and at least SWEEP_MIN_BYTES):
# each sweep reads the whole table, so a sweep every tick read every row ~20 times in
# its life; with a quarter, about five, and the table stays within 1.25x the window.
SWEEP_SHARE = 0.25
SWEEP_MIN_BYTES = 64 * 1024
# Pause between a sweep's batches: the lock is not fair, and a thread that takes it
# straight back can keep the event loop's admissions waiting for the whole sweep.
SWEEP_PAUSE_SECONDS = 0.001


def replay_row_bytes(caller: str, request_id: str) -> int:
    """What one recorded id is counted as against the window's byte bounds."""
    return ROW_OVERHEAD_BYTES + len(caller.encode()) + len(request_id.encode())


class ReplayWindowFull(XinrongError):
    """The window holds all it may: refused before anything is counted, with a retry-after."""

    default_reason = Reason.REPLAY_WINDOW_FULL
    data_read = False

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = max(1.0, retry_after)


class ReplayGuard:
    """Request ids seen within the retention window, per caller. Callers hold the
    database lock across ``refusal``, ``seen`` and ``record`` so that check and
    insert are one atomic step.

    The database row is the only copy of an id (soak: an in-memory set of
    (caller, id) tuples and an arrival deque cost ~360 bytes per id, so the
    node's RSS grew with rate x 11 minutes, +52 % over a 10-minute soak).
    ``seen`` is a primary-key lookup on the connection that also holds the
    not-yet-committed units, so an id recorded a moment ago is seen. Memory
    holds only byte counts per caller and 10-second bucket (a few hundred
    integers whatever the rate), and SQLite's page cache is bounded.

    The window is bounded in bytes, on the node (``max_bytes``) and per caller
    (``max_caller_bytes``; one bank filling its share leaves room for the
    others). A window that forgot ids early would let a replay through, so
    when a bound is reached new requests are refused (RESOURCE_EXHAUSTED
    ``REPLAY_WINDOW_FULL`` with a RetryInfo: when the oldest bucket expires),
    nothing is forgotten before its time.
    """

    def __init__(
        self,
        db: Database,
        *,
        retention_seconds: float,
        max_bytes: int = 256 * 1024 * 1024,
        max_caller_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._db = db
        self._retention_ms = int(retention_seconds * 1000)
        self.max_bytes = max_bytes
        self.max_caller_bytes = max_caller_bytes
        # bucket -> caller -> bytes, oldest first; totals beside.
        self._buckets: dict[int, dict[str, int]] = {}
        self._caller_bytes: dict[str, int] = {}
        self._bytes = 0
        self._legacy_until_ms = 0  # ids without a caller (they count for every caller) live until then
        # Bytes of the buckets counted out since the last sweep began: their rows are still in the table.
        self._expired_bytes = 0
        self.sweeps = 0  # full sweeps of the table so far (diagnostics, tests)
        self._lock = threading.Lock()

    @property
    def retention_ms(self) -> int:
        return self._retention_ms

    @property
    def window_bytes(self) -> int:
        """The live window's size as counted against ``max_bytes``."""
        return self._bytes

    def caller_bytes(self, caller: str) -> int:
        return self._caller_bytes.get(caller, 0)

    def load(self, now: float) -> int:
        """Drop expired rows once and count the live window (SQLite).

        On a shared database the ids stay there: every admission checks and
        records its id in one statement (``xinrong_admit``), whichever replica
        runs it.
        """
        cutoff = int(now * 1000) - self._retention_ms
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM replay_ids WHERE seen_ms < ?", (cutoff,))
        if self._db.shared:
            return int(self._db.query("SELECT count(*) FROM replay_ids")[0][0])
        rows = self._db.query(
            "SELECT caller, seen_ms / ?, count(*), sum(length(CAST(caller AS BLOB)) + length(CAST(request_id AS BLOB))),"
            " max(seen_ms) FROM replay_ids GROUP BY caller, seen_ms / ?",
            (BUCKET_MS, BUCKET_MS),
        )
        with self._lock:
            self._buckets = {}
            self._caller_bytes = {}
            self._bytes = 0
            self._legacy_until_ms = 0
            live = 0
            for caller, bucket, n, strings, last in sorted(rows, key=lambda r: (int(r[1]), str(r[0]))):
                size = int(n) * ROW_OVERHEAD_BYTES + int(strings)
                self._add(str(caller), int(bucket) * BUCKET_MS, size)
                live += int(n)
                if caller == LEGACY:
                    self._legacy_until_ms = max(self._legacy_until_ms, int(last) + self._retention_ms)
            return live

    def _add(self, caller: str, bucket: int, size: int) -> None:
        per = self._buckets.setdefault(bucket, {})
        per[caller] = per.get(caller, 0) + size
        self._caller_bytes[caller] = self._caller_bytes.get(caller, 0) + size
        self._bytes += size

    def refusal(self, caller: str, request_id: str, now: float) -> ReplayWindowFull | None:
        """The refusal if recording this id would pass a bound, else None (nothing is changed)."""
        if self._db.shared:
            return None
        size = replay_row_bytes(caller, request_id)
        with self._lock:
            # Buckets run out between prunes: count them out now (their rows go at the next sweep).
            self._drop_expired(int(now * 1000) - self._retention_ms, oldest_only=True)
            if self._bytes + size > self.max_bytes:
                oldest = next(iter(self._buckets), None)
                return ReplayWindowFull(
                    f"replay window holds {self._bytes} of {self.max_bytes} bytes",
                    self._expires_in(oldest, now),
                )
            mine = self._caller_bytes.get(caller, 0)
            if mine + size > self.max_caller_bytes:
                oldest = next((b for b, per in self._buckets.items() if per.get(caller)), None)
                return ReplayWindowFull(
                    f"caller's replay window holds {mine} of {self.max_caller_bytes} bytes",
                    self._expires_in(oldest, now),
                )
        return None

    def _drop_expired(self, cutoff: int, *, oldest_only: bool) -> None:
        """Count out the buckets whose last id is older than the window (lock held).

        ``oldest_only``: stop at the first live bucket in arrival order (the
        hot path); a full pass also finds a bucket a clock step put later.
        """
        if oldest_only:
            while self._buckets:
                bucket = next(iter(self._buckets))
                if bucket + BUCKET_MS > cutoff:
                    return
                self._pop_bucket(bucket)
            return
        for bucket in [b for b in self._buckets if b + BUCKET_MS <= cutoff]:
            self._pop_bucket(bucket)

    def _pop_bucket(self, bucket: int) -> None:
        for caller, size in self._buckets.pop(bucket).items():
            left = self._caller_bytes.get(caller, 0) - size
            if left > 0:
                self._caller_bytes[caller] = left
            else:
                self._caller_bytes.pop(caller, None)
            self._bytes -= size
            self._expired_bytes += size

    def _expires_in(self, bucket: int | None, now: float) -> float:
        if bucket is None:
            return 1.0
        return (bucket + BUCKET_MS + self._retention_ms) / 1000 - now

    def seen(self, caller: str, request_id: str) -> bool:
        """Whether the id is held (recorded and not yet pruned) for this caller."""
        if self._legacy_until_ms:  # until a prune finds them expired
            rows = self._db.query(
                "SELECT 1 FROM replay_ids WHERE caller IN (?, ?) AND request_id = ? LIMIT 1",
                (caller, LEGACY, request_id),
            )
        else:
            rows = self._db.query("SELECT 1 FROM replay_ids WHERE caller = ? AND request_id = ?", (caller, request_id))
        return bool(rows)

    def record(self, tx: Transaction, caller: str, request_id: str, now: float) -> None:
        seen_ms = int(now * 1000)
        # An expired id not yet pruned is a new use of it.
        tx.execute(
            "INSERT INTO replay_ids (caller, request_id, seen_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms",
            (caller, request_id, seen_ms),
        )
        if self._db.shared:
            return  # the window's bounds are the single node's (SQLite)
        size = replay_row_bytes(caller, request_id)

        def commit() -> None:
            with self._lock:
                self._add(caller, seen_ms - seen_ms % BUCKET_MS, size)

        tx.on_commit(commit)

    def sweep_due(self, now: float) -> bool:
        """Whether enough has expired since the last sweep for ``prune(lazy=True)`` to sweep (SQLite)."""
        with self._lock:
            self._drop_expired(int(now * 1000) - self._retention_ms, oldest_only=False)
            return self._expired_bytes >= max(SWEEP_MIN_BYTES, SWEEP_SHARE * self._bytes)

    def prune(self, now: float, *, batch: int = SWEEP_ROWS, lazy: bool = False) -> int:
        """Forget ids older than the retention window; returns the rows deleted.

        ``lazy`` (the node's periodic maintenance): on SQLite, sweep only when
        ``sweep_due``; until then expired ids stay in the table (a request reusing
        one is refused as a replay a little longer: the safe side) and memory
        has already counted them out of the window's bounds.

        SQLite: one sweep over the table in primary-key order, ``batch`` rows
        per statement (the table has no index on seen_ms: one more page
        written per request), each range's expired rows deleted by SQLite
        itself; then the buckets that have run out are dropped from the counts.
        """
        cutoff = int(now * 1000) - self._retention_ms
        dropped = 0
        if self._db.shared:
            # Any replica may prune; the index on seen_ms finds the expired ids.
            while True:
                with self._db.transaction() as tx:
                    gone = tx.execute(
                        "DELETE FROM replay_ids WHERE ctid IN (SELECT ctid FROM replay_ids WHERE seen_ms < ? LIMIT ?)",
                        (cutoff, batch),
                    ).rowcount
                dropped += int(gone)
                if gone < batch:
                    return dropped
        if lazy and not self.sweep_due(now):
            return 0
        with self._lock:
            self._drop_expired(cutoff, oldest_only=False)
            self._expired_bytes = 0  # buckets counted out from here on are the next sweep's
        self.sweeps += 1
        after: tuple[str, str] | None = None
        token = 0
        while True:
            # The batch's last key, found by SQLite walking the primary key: no row comes into
            # Python (reading the rows to filter them here held the GIL for every row, every sweep).
            bound: tuple[str, ...] = after if after is not None else ()
            lower = "(caller, request_id) > (?, ?) AND " if after is not None else ""
            end = self._db.query(
                f"SELECT caller, request_id FROM replay_ids WHERE {lower}1 ORDER BY caller, request_id "
                "LIMIT 1 OFFSET ?",
                (*bound, batch - 1),
            )
            last: tuple[str, ...] = (str(end[0][0]), str(end[0][1])) if end else ()
            upper = " AND (caller, request_id) <= (?, ?)" if end else ""
            # The seen_ms guard keeps a row re-recorded since the sweep began; the group
            # COMMIT of the requests in between covers the deletes (waited for at the end).
            with self._db.transaction(durable=False) as tx:
                gone = tx.execute(
                    f"DELETE FROM replay_ids WHERE {lower}seen_ms < ?{upper}", (*bound, cutoff, *last)
                ).rowcount
            dropped += int(gone)
            token = tx.token
            if not end:
                break
            after = (last[0], last[1])
            time.sleep(SWEEP_PAUSE_SECONDS)
        self._db.wait_durable(token)
        with self._lock:
            self._drop_expired(cutoff, oldest_only=False)
            if self._legacy_until_ms and self._legacy_until_ms < int(now * 1000):
                self._legacy_until_ms = 0
        return dropped


class EnterpriseBudget:
    """Requests about one enterprise per UTC day, across all institutions."""

    def __init__(self, db: Database, *, daily_limit: int) -> None:
        self._db = db
        self.daily_limit = daily_limit
        self._uses: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def load(self, now: float) -> int:
        if self._db.shared:
            return 0  # counted in the database by every replica (xinrong_admit)
        today = utc_day(now)
        rows = self._db.query("SELECT enterprise, day, uses FROM enterprise_daily_uses WHERE day >= ?", (today - 1,))
        with self._lock:
            self._uses = {(str(e), int(d)): int(u) for e, d, u in rows}
            return len(self._uses)

    def used(self, enterprise: str, day: int) -> int:
        if self._db.shared:
            rows = self._db.query(
                "SELECT uses FROM enterprise_daily_uses WHERE enterprise = ? AND day = ?", (enterprise, day)
            )
            return int(rows[0][0]) if rows else 0
        with self._lock:
            return self._uses.get((enterprise, day), 0)

    def exhausted(self, enterprise: str, day: int) -> bool:
        return self.used(enterprise, day) >= self.daily_limit

    def consume(self, tx: Transaction, enterprise: str, day: int) -> None:
        tx.execute(
            "INSERT INTO enterprise_daily_uses (enterprise, day, uses) VALUES (?, ?, 1) "
            "ON CONFLICT (enterprise, day) DO UPDATE SET uses = uses + 1",
            (enterprise, day),
        )

        def commit() -> None:
            with self._lock:
                self._uses[(enterprise, day)] = self._uses.get((enterprise, day), 0) + 1

        tx.on_commit(commit)

    def refund(self, tx: Transaction, enterprise: str, day: int) -> None:
        """Give back one use that provably reached no data (node.admission, A6)."""
        tx.execute(
            "UPDATE enterprise_daily_uses SET uses = uses - 1 WHERE enterprise = ? AND day = ? AND uses > 0",
            (enterprise, day),
        )

        def commit() -> None:
            with self._lock:
                key = (enterprise, day)
                if self._uses.get(key, 0) > 0:
                    self._uses[key] -= 1

        tx.on_commit(commit)

    def prune_memory(self, now: float) -> None:
        """Drop counters of past days from memory (they stay on disk for operators)."""
        today = utc_day(now)
        with self._lock:
            self._uses = {k: v for k, v in self._uses.items() if k[1] >= today - 1}
