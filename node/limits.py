"""Replay protection and the per-enterprise daily budget.

With SQLite both are held in memory for the hot path and written through
in the request's admission transaction, so they survive a restart. On a
database shared by replicas (PostgreSQL) the database is the authority:
the admission checks and counts both in one statement, whichever replica
runs it (``xinrong.node.pg``), and these classes only load, prune and read.

Replay ids are scoped per caller (``caller_key``: role and party id): one
global namespace told any bank whether another had used an id in the
window. The node passes the bank's request id on to the agents, which key
their own replay table on (institution, request id) for the same reason.
Ids recorded before the scoping (caller ``LEGACY``, moved over by schema
step 2) still count for every caller until they expire. An id is kept for
twice the clock-skew window (plus a minute): a captured request replayed
later than that is refused as stale, whatever its id.

The tables carry no secondary index: every index is one more page written
per request. Expired replay ids are found in memory (kept in arrival
order) and deleted by primary key, a few hundred per transaction.
"""

from __future__ import annotations

import threading
from collections import deque

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


class ReplayGuard:
    """Request ids seen within the retention window, per caller. Callers hold the
    database lock across ``seen`` and ``record`` so that check and insert are one
    atomic step.

    Ids are kept in a set for lookups and in a deque in arrival order, so
    pruning pops expired ids from the left in small batches instead of
    scanning everything while requests wait.
    """

    def __init__(self, db: Database, *, retention_seconds: float) -> None:
        self._db = db
        self._retention_ms = int(retention_seconds * 1000)
        self._ids: set[tuple[str, str]] = set()
        self._order: deque[tuple[int, str, str]] = deque()
        self._legacy = 0  # live ids without a caller (they count for every caller)
        self._lock = threading.Lock()

    @property
    def retention_ms(self) -> int:
        return self._retention_ms

    def load(self, now: float) -> int:
        """Drop expired rows once, then hold the live ids in memory (SQLite).

        On a shared database the ids stay there: every admission checks and
        records its id in one statement (``xinrong_admit``), whichever replica
        runs it.
        """
        cutoff = int(now * 1000) - self._retention_ms
        with self._db.transaction() as tx:
            tx.execute("DELETE FROM replay_ids WHERE seen_ms < ?", (cutoff,))
        if self._db.shared:
            return int(self._db.query("SELECT count(*) FROM replay_ids")[0][0])
        rows = self._db.query("SELECT caller, request_id, seen_ms FROM replay_ids")
        ordered = sorted((int(seen), str(caller), str(rid)) for caller, rid, seen in rows)
        with self._lock:
            self._order = deque(ordered)
            self._ids = {(caller, rid) for _seen, caller, rid in ordered}
            self._legacy = sum(1 for _seen, caller, _rid in ordered if caller == LEGACY)
            return len(self._ids)

    def seen(self, caller: str, request_id: str) -> bool:
        with self._lock:
            return (caller, request_id) in self._ids or (self._legacy > 0 and (LEGACY, request_id) in self._ids)

    def record(self, tx: Transaction, caller: str, request_id: str, now: float) -> None:
        seen_ms = int(now * 1000)
        # An id already pruned from memory may linger on disk for a moment; it is
        # older than the window, so this is a new use of it.
        tx.execute(
            "INSERT INTO replay_ids (caller, request_id, seen_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (caller, request_id) DO UPDATE SET seen_ms = excluded.seen_ms",
            (caller, request_id, seen_ms),
        )

        def commit() -> None:
            with self._lock:
                self._ids.add((caller, request_id))
                self._order.append((seen_ms, caller, request_id))

        tx.on_commit(commit)

    def prune(self, now: float, *, batch: int = 500) -> int:
        """Forget ids older than the retention window, a batch per transaction."""
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
        while True:
            expired: list[tuple[str, str, int]] = []
            with self._lock:
                while self._order and len(expired) < batch and self._order[0][0] < cutoff:
                    _seen, caller, rid = self._order.popleft()
                    self._ids.discard((caller, rid))
                    if caller == LEGACY:
                        self._legacy -= 1
                    expired.append((caller, rid, cutoff))
            if not expired:
                return dropped
            with self._db.transaction() as tx:
                # The seen_ms guard keeps a row that was re-recorded in the meantime.
                tx.executemany("DELETE FROM replay_ids WHERE caller = ? AND request_id = ? AND seen_ms < ?", expired)
            dropped += len(expired)


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
