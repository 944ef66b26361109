"""The node's event log: durable, append-only, signed, read by cursor.

Producers (public-record store, filings, the whitelist) append events; the
push service (``xinrong.node.push_servicer``) streams them to subscribed
institutions filtered by region, industry and topic. One table in the
node's database (schema step 5 of ``xinrong.node.migrations``):

* ``seq`` is the event's position and the subscriber's resumable cursor.
  Appends are serialized (the database lock on SQLite; a transaction-level
  advisory lock on PostgreSQL, held until COMMIT), so sequence numbers
  become visible in order and a reader that has seen ``seq`` n has seen
  every event before it: resuming "after n" misses nothing, whichever
  replica appended.
* Every event is **signed at append** (Ed25519 over the serialized
  ``xinrong.v1.Event``, context ``xinrong.v1.Event``), inside the append's
  transaction. Signing costs ~30 us, far below the insert, and leaves the
  read path with nothing to compute: a stream ships the stored bytes.
* The event id is derived from ``seq``, the topic and the SHA-256 of the
  content, so a redelivered event (at-least-once) has the same id.
* ``audience`` empty: every institution receives the event; else only the
  listed institution ids (``event_audience`` rows). The signed body says
  only *that* it is restricted, never to whom: an institution must not
  learn which other institutions an enterprise chose.

Wake-ups: ``on_append`` callbacks run after each commit (in the appending
thread); the push service uses them to wake its streams without polling.
Another replica's appends do not call them: over PostgreSQL the streams
also poll (``POLL_SECONDS_SHARED``).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xinrong import ids
from xinrong.errors import ValidationError
from xinrong.keys.signing import SigningKey
from xinrong.node.db import Database, Transaction
from xinrong.pushwire import EVENT_CONTEXT
from xinrong.v1 import push_pb2

# pg_advisory_xact_lock key of the appenders ("xinrong" 05).
APPEND_LOCK = 0x78696E726F6E6705

# What one event may carry (the node's own producers stay far below).
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_AUDIENCE = 256
MAX_TOPIC_CHARS = 32
TOPIC_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# An event's region: a 6-digit administrative division code (GB/T 2260), or
# a shorter prefix when only the province or city is known; "" when unknown.
REGION_RE = re.compile(r"(\d{2}|\d{4}|\d{6})?")
# An event's industry: the GB/T 4754 section letter, then optionally the
# division, group or class digits ("C", "C30", "C301", "C3011"); "" when unknown.
INDUSTRY_RE = re.compile(r"([A-T]\d{0,4})?")
# Subscription filters.
REGION_FILTER_RE = re.compile(r"^(\d{2}|\d{4}|\d{6})$")
INDUSTRY_FILTER_RE = re.compile(r"^([A-T]\d{0,4}|\d{2,4})$")
PARTY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_FILTERS = 64  # regions, industries or topics in one subscription
# Positions one read considers at most (a sparse subscription over a long log).
SCAN_WINDOW = 50_000

_COLUMNS = "seq, body, signature"


@dataclass(frozen=True)
class Filters:
    """What a subscriber asked for; empty tuples match everything."""

    regions: tuple[str, ...] = ()
    industries: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()

    @classmethod
    def checked(cls, regions: Iterable[str], industries: Iterable[str], topics: Iterable[str]) -> Filters:
        """Validated filters (ValidationError names the offending kind, never echoes it at length)."""
        r, i, t = tuple(dict.fromkeys(regions)), tuple(dict.fromkeys(industries)), tuple(dict.fromkeys(topics))
        for name, values, pattern in (
            ("region", r, REGION_FILTER_RE),
            ("industry", i, INDUSTRY_FILTER_RE),
            ("topic", t, TOPIC_RE),
        ):
            if len(values) > MAX_FILTERS:
                raise ValidationError(f"at most {MAX_FILTERS} {name} filters")
            for value in values:
                if not pattern.fullmatch(value):
                    raise ValidationError(
                        f"{name} filter malformed (region: 2, 4 or 6 digits; industry: a GB/T 4754 "
                        "section letter and up to 4 digits, or 2-4 digits; topic: lowercase name)"
                    )
        return cls(r, i, t)

    def where(self, audience: str) -> tuple[str, list[Any]]:
        """SQL condition and parameters (both backends' spelling)."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.topics:
            clauses.append(f"topic IN ({', '.join('?' for _ in self.topics)})")
            params.extend(self.topics)
        if self.regions:
            clauses.append("(" + " OR ".join("substr(region, 1, ?) = ?" for _ in self.regions) + ")")
            for r in self.regions:
                params.extend((len(r), r))
        if self.industries:
            parts = []
            for i in self.industries:
                if i[0].isdigit():  # class digits without the section letter
                    parts.append("substr(industry, 2, ?) = ?")
                else:
                    parts.append("substr(industry, 1, ?) = ?")
                params.extend((len(i), i))
            clauses.append("(" + " OR ".join(parts) + ")")
        clauses.append(
            "(restricted = 0 OR EXISTS (SELECT 1 FROM event_audience a WHERE a.seq = e.seq AND a.institution = ?))"
        )
        params.append(audience)
        return " AND ".join(clauses), params

    def matches(self, event: push_pb2.Event, audience: Sequence[str], institution: str) -> bool:
        """The same rule in memory (tests; the SQL is what serves)."""
        if self.topics and event.topic not in self.topics:
            return False
        if self.regions and not any(event.region.startswith(r) for r in self.regions):
            return False
        if self.industries and not any(
            event.industry[1:].startswith(i) if i[0].isdigit() else event.industry.startswith(i)
            for i in self.industries
        ):
            return False
        return not event.restricted or institution in audience


@dataclass(frozen=True)
class StoredEvent:
    seq: int
    body: bytes  # a serialized push_pb2.Event
    signature: bytes

    def signed(self, key_id: str) -> push_pb2.SignedEvent:
        return push_pb2.SignedEvent(event=self.body, signature=self.signature, key_id=key_id)


@dataclass(frozen=True)
class Page:
    """One read: the matching events, the cursor to resume from and the log's head."""

    events: list[StoredEvent]
    cursor: int
    head: int


@dataclass(frozen=True)
class NewEvent:
    """One event to append (``EventLog.append_many``)."""

    topic: str
    enterprise: str
    region: str
    industry: str
    payload: bytes
    audience: tuple[str, ...] = ()


def region_of(uscc: str) -> str:
    """The administrative division code in a USCC (characters 3-8: where it was registered),
    for producers that know no better; "" if it is not six digits."""
    code = uscc[2:8]
    return code if ids.decimal(code, max_digits=6) is not None and len(code) == 6 else ""


def event_id(seq: int, topic: str, enterprise: str, region: str, industry: str, payload: bytes) -> str:
    """Stable id of an event: its position, topic and a content hash."""
    h = hashlib.sha256()
    for part in (topic.encode(), enterprise.encode(), region.encode(), industry.encode()):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    h.update(payload)
    return f"{seq}-{topic}-{h.hexdigest()[:16]}"


def _check(event: NewEvent) -> None:
    if not TOPIC_RE.fullmatch(event.topic):
        raise ValueError("event topic must be a lowercase name of at most 32 characters")
    if not (0 < len(event.enterprise) <= 64):
        raise ValueError("event enterprise must be a USCC")
    if not REGION_RE.fullmatch(event.region):
        raise ValueError("event region must be a 2-, 4- or 6-digit administrative division code")
    if not INDUSTRY_RE.fullmatch(event.industry):
        raise ValueError("event industry must be a GB/T 4754 section letter and up to 4 digits")
    if len(event.payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"event payload larger than {MAX_PAYLOAD_BYTES} bytes")
    if len(event.audience) > MAX_AUDIENCE or not all(PARTY_ID_RE.fullmatch(a) for a in event.audience):
        raise ValueError("event audience must be at most 256 institution ids")


@dataclass
class EventLog:
    """Append and read the node's events (see the module docstring)."""

    db: Database
    signing_key: SigningKey
    node_id: str = "node"
    clock: Callable[[], float] = time.time
    _callbacks: list[Callable[[int], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _read_lock: threading.Lock = field(default_factory=threading.Lock)
    _reader: sqlite3.Connection | None = None

    @property
    def key_id(self) -> str:
        return self.signing_key.key_id

    @property
    def shared(self) -> bool:
        """True when other replicas append too (PostgreSQL): readers must also poll."""
        return bool(self.db.shared)

    def on_append(self, callback: Callable[[int], None]) -> None:
        """``callback(head_seq)`` after every committed append of this process."""
        with self._lock:
            self._callbacks.append(callback)

    def remove_callback(self, callback: Callable[[int], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def append(
        self,
        topic: str,
        enterprise: str,
        *,
        region: str,
        industry: str,
        payload: bytes,
        audience: tuple[str, ...] = (),
    ) -> int:
        """Append one event, signed and durable on return; its sequence number."""
        return self.append_many([NewEvent(topic, enterprise, region, industry, payload, tuple(audience))])[-1]

    def append_many(self, events: Sequence[NewEvent]) -> list[int]:
        """Append events in order in one transaction (one COMMIT); their sequence numbers."""
        if not events:
            return []
        with self.db.transaction() as tx:
            return self.append_in(tx, events)

    def append_in(self, tx: Transaction, events: Sequence[NewEvent]) -> list[int]:
        """Append events inside the caller's transaction (atomic with its own writes);
        subscribers are woken once it commits."""
        for event in events:
            _check(event)
        if not events:
            return []
        seqs: list[int] = []
        if self.db.shared:
            tx.execute("SELECT pg_advisory_xact_lock(?)", (APPEND_LOCK,))
        row = tx.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
        seq = int(row[0])
        now_ms = int(self.clock() * 1000)
        rows: list[tuple[Any, ...]] = []
        audience_rows: list[tuple[int, str]] = []
        for event in events:
            seq += 1
            body = push_pb2.Event(
                seq=seq,
                event_id=event_id(seq, event.topic, event.enterprise, event.region, event.industry, event.payload),
                topic=event.topic,
                enterprise=event.enterprise,
                region=event.region,
                industry=event.industry,
                payload=event.payload,
                appended_ms=now_ms,
                restricted=bool(event.audience),
                node_id=self.node_id,
            ).SerializeToString(deterministic=True)
            signature = self.signing_key.sign(EVENT_CONTEXT, body)
            rows.append(
                (
                    seq,
                    event.topic,
                    event.enterprise,
                    event.region,
                    event.industry,
                    1 if event.audience else 0,
                    now_ms,
                    body,
                    signature,
                )
            )
            audience_rows.extend((seq, a) for a in dict.fromkeys(event.audience))
            seqs.append(seq)
        tx.executemany(
            "INSERT INTO events (seq, topic, enterprise, region, industry, restricted, appended_ms, body, signature) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if audience_rows:
            tx.executemany("INSERT INTO event_audience (seq, institution) VALUES (?, ?)", audience_rows)
        head = seqs[-1]
        tx.on_commit(lambda: self._notify(head))
        return seqs

    def _notify(self, head: int) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            with contextlib.suppress(Exception):  # a subscriber's wake-up must never fail an append
                callback(head)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Reads of the streams. On SQLite through a read-only connection of the log's
        own (WAL readers never wait for the writer, and never hold the database lock
        the request path writes under); on PostgreSQL through the pool."""
        if getattr(self.db, "backend", "") != "sqlite":
            return self.db.query(sql, params)
        with self._read_lock:
            if self._reader is None:
                self._reader = sqlite3.connect(
                    f"file:{Path(self.db.path).resolve()}?mode=ro",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,  # used under _read_lock from the server's pool threads
                )
            return list(self._reader.execute(sql, params).fetchall())

    def close(self) -> None:
        """Close the read connection (before the database closes)."""
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    def head(self) -> int:
        rows = self._read("SELECT coalesce(max(seq), 0) FROM events")
        return int(rows[0][0])

    def after(self, cursor: int, filters: Filters, institution: str, *, limit: int = 500) -> Page:
        """Events after ``cursor`` matching ``filters`` that ``institution`` may receive.

        The head is read first, then the events up to it (every one of them
        committed: appends commit in sequence order). One read considers at
        most ``SCAN_WINDOW`` positions, so a sparse filter over a long log
        costs bounded reads; if fewer than ``limit`` match, every position up
        to the window's end was considered and that is the returned cursor
        (a sparse filter does not rescan).
        """
        head = self.head()
        if head <= cursor:
            return Page([], cursor, head)
        end = min(head, cursor + SCAN_WINDOW)
        where, params = filters.where(institution)
        rows = self._read(
            f"SELECT {_COLUMNS} FROM events e WHERE seq > ? AND seq <= ? AND {where} ORDER BY seq LIMIT ?",
            (cursor, end, *params, limit),
        )
        events = [StoredEvent(int(r[0]), bytes(r[1]), bytes(r[2])) for r in rows]
        if len(events) >= limit:
            return Page(events, events[-1].seq, head)
        return Page(events, end, head)

    def audience_of(self, seq: int) -> tuple[str, ...]:
        rows = self.db.query("SELECT institution FROM event_audience WHERE seq = ? ORDER BY institution", (seq,))
        return tuple(str(r[0]) for r in rows)


def decode_payload_json(event: push_pb2.Event) -> Any:
    """A node topic's payload as JSON (producers of the node's own topics write UTF-8 JSON)."""
    import json

    return json.loads(event.payload.decode("utf-8"))


__all__ = [
    "APPEND_LOCK",
    "EVENT_CONTEXT",
    "MAX_PAYLOAD_BYTES",
    "EventLog",
    "Filters",
    "NewEvent",
    "Page",
    "StoredEvent",
    "decode_payload_json",
    "event_id",
    "region_of",
]
