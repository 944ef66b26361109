"""Append-only, hash-chained audit log of every access decision.

An entry holds metadata and hashes only: time, caller, method, request id,
enterprise USCC, consent id, providers, field names, the SHA-256 of the
canonical claim texts, decision and reason. Never a value: the node never
sees one, and the log must stay publishable to the enterprise it concerns.

Hashing is laid out so that an RFC 6962 Merkle transparency log can replace
the chain without re-encoding history:

    leaf       = canonical JSON of the entry (sorted keys, no whitespace, ASCII)
    leaf_hash  = SHA-256(0x00 || leaf)                       RFC 6962 leaf hash
    entry_hash = SHA-256("xinrong.audit.chain.v1" || 0x00 || prev_hash || leaf_hash)

``prev_hash`` of the first entry is 32 zero bytes. The leaf includes its
sequence number, so entries cannot be reordered. A Merkle tree over the same
``leaf_hash`` values (signed checkpoints, inclusion proofs) is a drop-in
successor behind the ``AuditLog`` protocol; the chain's limit today is that
truncating the newest entries is detectable only against a head hash
recorded elsewhere (``xinrong node audit verify`` prints it).

The table has no secondary index, to keep appends to one page write on the
request path; the enterprise-facing access listing (with the Merkle log)
will add ``(enterprise, seq)``.

Rows are append-only in SQLite: triggers refuse UPDATE and DELETE. An
operator with file access can drop the triggers; ``verify_chain`` then still
detects any edit, removal or insertion before the head.
"""

from __future__ import annotations

import enum
import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from xinrong.jsontext import string_array
from xinrong.node.db import Transaction
from xinrong.tlog.auditleaf import audit_leaf, audit_leaf_encoded

CHAIN_CONTEXT = b"xinrong.audit.chain.v1\x00"
GENESIS = bytes(32)

# Tables: schema steps in xinrong.node.migrations.

AUDIT_COLUMNS = (
    "seq, ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id, "
    "providers, fields, claims_sha256, decision, reason, prev_hash, entry_hash"
)


class Decision(enum.StrEnum):
    # The node admitted the request (uses counted) and routed it.
    ALLOWED = "ALLOWED"
    # The node refused the request; nothing was routed.
    REFUSED = "REFUSED"
    # Admitted, but the fan-out failed (agent refusal or unavailability);
    # written as a second entry after the ALLOWED one.
    FAILED = "FAILED"
    # The risk monitor flagged an institution's pattern (node.usage); nothing was refused by it.
    FLAGGED = "FLAGGED"


def claims_digest(texts: Sequence[str]) -> str:
    """Hex SHA-256 over the canonical claim texts, newline-joined, in request order."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AuditEvent:
    """What is recorded about one decision. Metadata and hashes only."""

    caller_role: str
    caller_id: str
    method: str
    decision: Decision
    reason: str = ""
    request_id: str = ""
    enterprise: str = ""
    consent_id: str = ""
    providers: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()
    claims_sha256: str = ""


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    ts_ms: int
    event: AuditEvent
    prev_hash: bytes
    entry_hash: bytes

    def leaf(self) -> bytes:
        return canonical_leaf(self.seq, self.ts_ms, self.event)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self.event)
        data["decision"] = self.event.decision.value
        data["providers"] = list(self.event.providers)
        data["fields"] = list(self.event.fields)
        data.update(seq=self.seq, ts_ms=self.ts_ms, prev_hash=self.prev_hash.hex(), entry_hash=self.entry_hash.hex())
        return data


def canonical_leaf(seq: int, ts_ms: int, event: AuditEvent) -> bytes:
    """Deterministic bytes of an entry (``xinrong.tlog.auditleaf``: any party can rebuild them)."""
    return audit_leaf(
        seq=seq,
        ts_ms=ts_ms,
        caller_role=event.caller_role,
        caller_id=event.caller_id,
        method=event.method,
        request_id=event.request_id,
        enterprise=event.enterprise,
        consent_id=event.consent_id,
        providers=event.providers,
        fields=event.fields,
        claims_sha256=event.claims_sha256,
        decision=event.decision.value,
        reason=event.reason,
    )


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 leaf hash, so a Merkle tree can later be built over the same leaves."""
    return hashlib.sha256(b"\x00" + leaf).digest()


def chain_hash(prev_hash: bytes, leaf: bytes) -> bytes:
    return hashlib.sha256(CHAIN_CONTEXT + prev_hash + leaf_hash(leaf)).digest()


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    entries: int
    head: str  # hex entry_hash of the last entry checked ("" for an empty log)
    first_bad_seq: int | None = None
    problem: str = ""


class AuditLog(Protocol):
    """What the node needs from an audit log; a Merkle log can implement it too."""

    def append(self, tx: Transaction, event: AuditEvent, ts_ms: int) -> AuditEntry: ...

    def head(self) -> tuple[int, bytes]: ...


def _split(text: str) -> tuple[str, ...]:
    """List columns are JSON arrays (``string_array``): unambiguous whatever the items contain."""
    items = json.loads(text)
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError("list column is not a JSON array of strings")
    return tuple(items)


def row_to_entry(row: Sequence[Any]) -> AuditEntry:
    (
        seq,
        ts_ms,
        role,
        caller,
        method,
        request_id,
        enterprise,
        consent_id,
        providers,
        fields,
        digest,
        decision,
        reason,
        prev_hash,
        entry_hash,
    ) = row
    event = AuditEvent(
        caller_role=role,
        caller_id=caller,
        method=method,
        decision=Decision(decision),
        reason=reason,
        request_id=request_id,
        enterprise=enterprise,
        consent_id=consent_id,
        providers=_split(providers),
        fields=_split(fields),
        claims_sha256=digest,
    )
    return AuditEntry(
        seq=int(seq), ts_ms=int(ts_ms), event=event, prev_hash=bytes(prev_hash), entry_hash=bytes(entry_hash)
    )


class HashChainAuditLog:
    """The SQLite hash chain. ``append`` must run inside a Database transaction."""

    def __init__(self, query: Callable[[str], list[tuple[Any, ...]]]) -> None:
        """query: ``Database.query``, used once to load the chain head."""
        self._lock = threading.Lock()
        rows = query(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1")
        if rows:
            last = row_to_entry(rows[0])
            if chain_hash(last.prev_hash, last.leaf()) != last.entry_hash:
                raise RuntimeError(f"audit log head (seq {last.seq}) does not match its hash: refusing to extend it")
            self._head = (last.seq, last.entry_hash)
        else:
            self._head = (0, GENESIS)

    def head(self) -> tuple[int, bytes]:
        with self._lock:
            return self._head

    def append(self, tx: Transaction, event: AuditEvent, ts_ms: int) -> AuditEntry:
        """Insert the next entry; the in-memory head moves only when tx commits.

        Callers hold the database lock for the whole transaction, so no
        other append can interleave between reading the head and inserting.
        """
        seq, prev = self._pending_head(tx)
        seq += 1
        leaf = canonical_leaf(seq, ts_ms, event)
        digest = chain_hash(prev, leaf)
        tx.execute(
            f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                seq,
                ts_ms,
                event.caller_role,
                event.caller_id,
                event.method,
                event.request_id,
                event.enterprise,
                event.consent_id,
                string_array(event.providers),
                string_array(event.fields),
                event.claims_sha256,
                event.decision.value,
                event.reason,
                prev,
                digest,
            ),
        )
        entry = AuditEntry(seq=seq, ts_ms=ts_ms, event=event, prev_hash=prev, entry_hash=digest)
        pending = self._pending(tx)
        if not pending:
            tx.on_commit(lambda: self._advance(pending[-1]))
        pending.append(entry)
        return entry

    def _pending(self, tx: Transaction) -> list[AuditEntry]:
        """Entries appended in tx but not committed yet (several per transaction are allowed)."""
        pending = tx.scratch.setdefault(id(self), [])
        assert isinstance(pending, list)
        return pending

    def _pending_head(self, tx: Transaction) -> tuple[int, bytes]:
        pending = self._pending(tx)
        if pending:
            return pending[-1].seq, pending[-1].entry_hash
        return self.head()

    def _advance(self, entry: AuditEntry) -> None:
        with self._lock:
            self._head = (entry.seq, entry.entry_hash)


_PENDING_COLUMNS = (
    "id, ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id, "
    "providers, fields, claims_sha256, decision, reason"
)
_EVENT_COLUMNS = (
    "ts_ms, caller_role, caller_id, method, request_id, enterprise, consent_id, "
    "providers, fields, claims_sha256, decision, reason"
)
# pg_try_advisory_xact_lock key of the one sequencer (xinrong.node.pg.SEQUENCER_LOCK).
SEQUENCER_LOCK = 0x78696E726F6E6702


def _event_params(event: AuditEvent, ts_ms: int) -> tuple[Any, ...]:
    return (
        ts_ms,
        event.caller_role,
        event.caller_id,
        event.method,
        event.request_id,
        event.enterprise,
        event.consent_id,
        string_array(event.providers),
        string_array(event.fields),
        event.claims_sha256,
        event.decision.value,
        event.reason,
    )


class SequencedAuditLog:
    """The same hash chain, for replicas sharing one PostgreSQL database.

    Replicas cannot each extend the chain: two would read the same head. So
    ``append`` (inside the caller's transaction, or the admission function)
    only stages the event in ``audit_pending``, made durable with the
    decision it records; ``sequence`` (run by every replica's sequencer
    thread, one at a time under an advisory lock) moves staged events in id
    order into ``audit_log``, numbering them and chaining their hashes
    exactly as ``HashChainAuditLog`` does. Leaves are byte-identical, so
    ``verify_chain`` and a Merkle log built later read both backends alike.
    An entry reaches the chain a sequencer tick (tens of milliseconds) after
    its decision; ``pending()`` says how many are waiting.
    """

    def __init__(self, db: Any) -> None:
        """db: ``xinrong.node.pg.PgDatabase`` (typed loosely: audit storage sits below it)."""
        self._db = db
        self._lock = threading.Lock()
        self._checked_head: tuple[int, bytes] | None = None

    def append(self, tx: Transaction, event: AuditEvent, ts_ms: int) -> AuditEntry:
        """Stage one event; the returned entry has no seq or hash yet (0 and empty)."""
        tx.execute(
            f"INSERT INTO audit_pending ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            _event_params(event, ts_ms),
        )
        return AuditEntry(seq=0, ts_ms=ts_ms, event=event, prev_hash=b"", entry_hash=b"")

    def head(self) -> tuple[int, bytes]:
        rows = self._db.query("SELECT seq, entry_hash FROM audit_log ORDER BY seq DESC LIMIT 1")
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else (0, GENESIS)

    def pending(self) -> int:
        return int(self._db.query("SELECT count(*) FROM audit_pending")[0][0])

    def sequence(self, *, batch: int = 2000) -> int:
        """Chain up to ``batch`` staged events; 0 if another replica holds the sequencer lock."""
        with self._lock, self._db.transaction() as tx:
            if not tx.execute("SELECT pg_try_advisory_xact_lock(?)", (SEQUENCER_LOCK,)).fetchone()[0]:
                return 0
            staged = tx.execute(
                f"SELECT {_PENDING_COLUMNS} FROM audit_pending ORDER BY id LIMIT ?", (batch,)
            ).fetchall()
            if not staged:
                return 0
            last = tx.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT 1").fetchall()
            if last:
                head = row_to_entry(last[0])
                key = (head.seq, head.entry_hash)
                if key != self._checked_head and chain_hash(head.prev_hash, head.leaf()) != head.entry_hash:
                    raise RuntimeError(
                        f"audit log head (seq {head.seq}) does not match its hash: refusing to extend it"
                    )
                seq, prev = head.seq, head.entry_hash
            else:
                seq, prev = 0, GENESIS
            rows: list[tuple[Any, ...]] = []
            for staged_row in staged:
                seq += 1
                # The list columns are stored as their leaf encoding (string_array, written by
                # ``append``): the leaf is built from them as stored, as the tree does, with no
                # parse and re-encode; ``verify_chain`` parses them, and a test compares the two.
                digest = chain_hash(prev, audit_leaf_encoded(seq, *staged_row[1:13]))
                rows.append((seq, *staged_row[1:], prev, digest))
                prev = digest
            tx.executemany(f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            tx.execute("DELETE FROM audit_pending WHERE id = ANY(?)", ([int(r[0]) for r in staged],))
            self._checked_head = (seq, prev)
            return len(rows)


def open_audit_log(db: Any) -> AuditLog:
    """The audit log a node's database holds: the in-process chain (SQLite) or the sequenced one."""
    if getattr(db, "shared", False):
        return SequencedAuditLog(db)
    return HashChainAuditLog(db.query)


def dialect_sql(conn: Any, sql: str) -> str:
    """Operator tools get a sqlite3 or a psycopg connection; the latter takes %s."""
    return sql if isinstance(conn, sqlite3.Connection) else sql.replace("?", "%s")


def verify_chain(conn: Any, *, batch: int = 10_000) -> ChainReport:
    """Recompute every entry hash and link from the first entry to the head."""
    prev = GENESIS
    expected_seq = 1
    count = 0
    cursor = conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq")
    while True:
        rows = cursor.fetchmany(batch)
        if not rows:
            break
        for row in rows:
            try:
                entry = row_to_entry(row)
            except (ValueError, TypeError) as exc:
                return ChainReport(False, count, prev.hex(), int(row[0]), f"unreadable entry: {exc}")
            if entry.seq != expected_seq:
                return ChainReport(False, count, prev.hex(), entry.seq, f"gap: expected seq {expected_seq}")
            if entry.prev_hash != prev:
                return ChainReport(False, count, prev.hex(), entry.seq, "prev_hash does not link to the previous entry")
            if chain_hash(prev, entry.leaf()) != entry.entry_hash:
                return ChainReport(False, count, prev.hex(), entry.seq, "entry does not match its hash")
            prev = entry.entry_hash
            expected_seq += 1
            count += 1
    return ChainReport(True, count, prev.hex() if count else "")


def tail(conn: Any, n: int) -> list[AuditEntry]:
    rows = conn.execute(
        dialect_sql(conn, f"SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq DESC LIMIT ?"), (n,)
    ).fetchall()
    return [row_to_entry(r) for r in reversed(rows)]


__all__ = [
    "AUDIT_COLUMNS",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "ChainReport",
    "Decision",
    "HashChainAuditLog",
    "SequencedAuditLog",
    "claims_digest",
    "dialect_sql",
    "open_audit_log",
    "row_to_entry",
    "tail",
    "verify_chain",
]
