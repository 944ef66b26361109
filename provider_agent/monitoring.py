"""Post-loan monitoring at the agent: watches kept, re-evaluated each period, updates sealed.

A watch (issue 13 §4) is admitted by the node, then re-checked here exactly
as a Verify would be (``ProviderAgent.admit_watch``: consent signature,
audience binding, probing policy, ownership of every field, consent use,
purpose POST_LOAN_MONITORING). The agent keeps it in its own monitor
database beside the state store (``monitor_db_path``), as the subject
desk keeps its cases: a new period re-evaluates every watch at once,
which writes one outbox row per watch, and those writes must not hold the
state store's single writer lock that every Verify needs.

**Every watch, every period.** When the active period changes (an import
by ``xinrong agent import`` commits; the monitor polls the data store every
``POLL_SECONDS``), the agent evaluates the watched claims of *every* live
watch and emits, changed or not, one update per watch: a provider-signed
``WatchUpdate`` inside a ``SignedWatchUpdate``, sealed to the bank and
padded to ``WATCH_UPDATE_PAD_BYTES`` whatever its verdicts and whatever
changed. The node sees one box of one length per live watch per period: it
cannot tell whose status changed. (Which watches are live is the node's
own knowledge: it registered them and holds revocations and expiries.) The
first update is emitted when the watch is added, so the bank holds a
baseline to compare later periods with.

**No update lost.** Updates go to a durable outbox (SQLite, AUTOINCREMENT
sequence: a number is never reused after its row is dropped). The node
pulls them (``PullWatchUpdates``, a long poll) with the cursor it has made
durable, which acknowledges everything up to it; only then are those rows
dropped. Update ids are deterministic per (watch, provider, period), so a
pass that is re-run after a crash re-emits the same ids (``INSERT OR
IGNORE`` here, idempotent at the node and the bank). The period a pass
completed is recorded in the same transaction as its last rows.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xinrong import ids
from xinrong.claims import CheckedClaim
from xinrong.errors import StoreUnavailable, ValidationError
from xinrong.keys.layout import PartyCredentials
from xinrong.keys.sealing import SessionSealer
from xinrong.limits import MAX_WATCH_CLAIMS, WATCH_UPDATE_PAD_BYTES
from xinrong.provider_agent.evaluate import ProviderAgent
from xinrong.provider_agent.store import AnswerLogEntry, Period
from xinrong.statefiles import prepare_private
from xinrong.v1 import common_pb2, monitoring_pb2

log = logging.getLogger(__name__)

WATCH_UPDATE_CONTEXT = "xinrong.v1.WatchUpdate"  # the provider's signature context
WATCH_UPDATE_CONTENT_TYPE = "xinrong.v1.SignedWatchUpdate"  # the sealed box's content type
ANSWER_KIND = "watch"  # kind of a watch update in the agent's answer log (node reconcile: WatchUpdate)
POLL_SECONDS = 0.1
# Watches evaluated per outbox transaction: the node starts pulling the first
# chunk while later ones are being signed.
CHUNK = 2000
MAX_PULL = 5000
MAX_WAIT_MS = 2000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS watches (
  watch_id TEXT PRIMARY KEY,
  enterprise TEXT NOT NULL,
  consent_id TEXT NOT NULL,
  audience TEXT NOT NULL,
  audience_key BLOB NOT NULL,
  period_from TEXT NOT NULL,
  period_to TEXT NOT NULL,
  valid_until INTEGER NOT NULL,
  claims BLOB NOT NULL,
  request BLOB NOT NULL,
  added_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  update_id TEXT NOT NULL UNIQUE,
  watch_id TEXT NOT NULL,
  sealed BLOB NOT NULL
);
"""


@dataclass(frozen=True)
class _Emitted:
    period: int
    update_id: str
    sealed: bytes  # the SealedWatchUpdate
    answer: AnswerLogEntry


def monitor_db_path(state_db: Path) -> Path:
    """The monitor database beside the agent's state store (as ``subject_db_path``)."""
    return state_db.with_name(f"{state_db.name}.monitor.db")


def update_id_of(watch_id: str, provider: str, period: int) -> str:
    """Deterministic, so a re-run pass or a redelivery carries the same id."""
    return f"{watch_id}.{provider}.{period}"


@dataclass(frozen=True)
class Watch:
    """A kept watch: what re-evaluation needs, already verified when it was added."""

    watch_id: str
    enterprise: str
    consent_id: str
    audience: str
    audience_key: bytes  # the audience's X25519 sealing key, from its CA-verified binding
    period_from: str
    period_to: str
    valid_until: int
    claims: tuple[common_pb2.Claim, ...]


class WatchStore:
    """The monitor database: watches, the outbox, and the last period evaluated."""

    def __init__(self, path: str | Path) -> None:
        self.path = prepare_private(path, "agent monitor store", create_dir=True)
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"agent monitor store {self.path} cannot be opened: {exc}") from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock (the caller holds it)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def add(self, watch: Watch, request: bytes, added_at: int, first: tuple[str, bytes] | None) -> None:
        claims = monitoring_pb2.AddWatchRequest(claims=watch.claims).SerializeToString(deterministic=True)
        with self._lock:
            with self._tx() as conn:
                conn.execute(
                    "INSERT INTO watches(watch_id, enterprise, consent_id, audience, audience_key, period_from, "
                    "period_to, valid_until, claims, request, added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(watch_id) DO NOTHING",
                    (
                        watch.watch_id,
                        watch.enterprise,
                        watch.consent_id,
                        watch.audience,
                        watch.audience_key,
                        watch.period_from,
                        watch.period_to,
                        watch.valid_until,
                        claims,
                        request,
                        added_at,
                    ),
                )
                if first is not None:
                    conn.execute(
                        "INSERT OR IGNORE INTO outbox(update_id, watch_id, sealed) VALUES (?,?,?)",
                        (first[0], watch.watch_id, first[1]),
                    )
            self._new.notify_all()

    def remove(self, watch_id: str) -> bool:
        with self._lock, self._tx() as conn:
            return conn.execute("DELETE FROM watches WHERE watch_id = ?", (watch_id,)).rowcount > 0

    def watches(self) -> list[Watch]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT watch_id, enterprise, consent_id, audience, audience_key, period_from, period_to, "
                "valid_until, claims FROM watches ORDER BY watch_id"
            ).fetchall()
        return [
            Watch(
                watch_id=r[0],
                enterprise=r[1],
                consent_id=r[2],
                audience=r[3],
                audience_key=bytes(r[4]),
                period_from=r[5],
                period_to=r[6],
                valid_until=int(r[7]),
                claims=tuple(monitoring_pb2.AddWatchRequest.FromString(r[8]).claims),
            )
            for r in rows
        ]

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM watches").fetchone()[0])

    def evaluated_period(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'evaluated_period'").fetchone()
        return int(row[0]) if row else 0

    def append(self, updates: list[tuple[str, str, bytes]], *, period_done: int | None = None) -> None:
        """Outbox rows (update id, watch id, sealed bytes), and the pass's period once it is complete."""
        with self._lock:
            with self._tx() as conn:
                conn.executemany("INSERT OR IGNORE INTO outbox(update_id, watch_id, sealed) VALUES (?,?,?)", updates)
                if period_done is not None:
                    conn.execute(
                        "INSERT INTO meta(key, value) VALUES ('evaluated_period', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (str(period_done),),
                    )
            self._new.notify_all()

    def pull(self, after_seq: int, limit: int, wait: float) -> list[tuple[int, bytes]]:
        """Drop what the node acknowledged (seq <= after_seq), then the next rows, waiting up to ``wait``."""
        deadline = time.monotonic() + wait
        with self._lock:
            with self._tx() as conn:
                conn.execute("DELETE FROM outbox WHERE seq <= ?", (after_seq,))
            while True:
                rows = self._conn.execute(
                    "SELECT seq, sealed FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
                ).fetchall()
                remaining = deadline - time.monotonic()
                # No watch kept: nothing can come, so no caller is held (the node polls slowly then).
                if rows or remaining <= 0 or not self._has_watches():
                    return [(int(r[0]), bytes(r[1])) for r in rows]
                self._new.wait(remaining)

    def _has_watches(self) -> bool:
        """The caller holds the lock."""
        return self._conn.execute("SELECT 1 FROM watches LIMIT 1").fetchone() is not None

    def pending(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def wake(self) -> None:
        with self._lock:
            self._new.notify_all()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class AgentMonitor:
    """The agent's watches: add, remove, re-evaluate on a new period, hand the outbox to the node."""

    def __init__(
        self,
        agent: ProviderAgent,
        credentials: PartyCredentials,
        store: WatchStore,
        *,
        clock: Callable[[], float] = time.time,
        sealer: SessionSealer | None = None,
    ) -> None:
        self._agent = agent
        self.provider = agent.provider
        self._signing = credentials.signing_key
        self._key_id = credentials.signing_key.key_id
        self.store = store
        self._clock = clock
        self._sealer = sealer if sealer is not None else SessionSealer()
        self._pass_lock = threading.Lock()  # one re-evaluation at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0  # completed re-evaluations, for tests and the bench

    # -- the node's calls ------------------------------------------------------------

    def add_watch(self, req: monitoring_pb2.AddWatchRequest) -> str:
        if not ids.is_request_id(req.watch_id):
            raise ValidationError("watch id missing or malformed")
        verified, audience, checked = self._agent.admit_watch(
            enterprise=req.enterprise_uscc,
            consent=req.consent,
            audience_binding=req.audience_binding,
            claims=tuple(req.claims),
            requested_at=req.requested_at,
            max_claims=MAX_WATCH_CLAIMS,
        )
        consent = verified.consent
        valid_until = int(consent.valid_until) if not req.valid_until else min(req.valid_until, consent.valid_until)
        watch = Watch(
            watch_id=req.watch_id,
            enterprise=req.enterprise_uscc,
            consent_id=consent.consent_id,
            audience=audience.party_id,
            audience_key=audience.sealing_public_raw,
            period_from=consent.data_period_from,
            period_to=consent.data_period_to,
            valid_until=valid_until,
            claims=tuple(c.claim for c in checked),
        )
        # The longest update this watch can produce must fit the one pad length.
        self._check_fits(watch, checked)
        # Not under the pass lock: a pass of 100,000 watches takes seconds, and the node's
        # AddWatch must not wait for it. A pass that listed the watches before this one
        # was kept is caught up below.
        first = self._evaluate(watch, checked, int(self._clock()))
        if first is not None:
            self._agent.record_answers([first.answer])  # logged before it can leave
        self.store.add(
            watch,
            req.SerializeToString(deterministic=True),
            int(self._clock()),
            (first.update_id, first.sealed) if first else None,
        )
        active = self._agent.active_period()
        if first is not None and active is not None and active.id != first.period:
            # A period became active after the baseline was read: emit this watch's update for it too
            # (the same update id as a pass would give it, so never twice).
            again = self._evaluate(watch, checked, int(self._clock()))
            if again is not None:
                self._agent.record_answers([again.answer])
                self.store.append([(again.update_id, watch.watch_id, again.sealed)])
        log.info("watch %s kept: %d claims", watch.watch_id, len(checked))
        return watch.watch_id

    def remove_watch(self, watch_id: str) -> bool:
        return self.store.remove(watch_id)

    def pull(self, after_seq: int, limit: int, wait_ms: int) -> list[tuple[int, bytes]]:
        if after_seq >= 2**62:
            raise ValidationError("after_seq out of range")
        limit = max(1, min(limit or MAX_PULL, MAX_PULL))
        return self.store.pull(after_seq, limit, min(wait_ms, MAX_WAIT_MS) / 1000)

    # -- evaluation ------------------------------------------------------------------

    def _check_fits(self, watch: Watch, checked: list[CheckedClaim]) -> None:
        update = self._update(watch, checked, "x" * 128, [common_pb2.VERDICT_RESULT_NO_DATA] * len(checked), "", 2**63)
        if len(update) + 1 > WATCH_UPDATE_PAD_BYTES:
            raise ValidationError(f"a watch update would exceed {WATCH_UPDATE_PAD_BYTES} bytes; watch fewer claims")

    def _update(
        self, watch: Watch, checked: list[CheckedClaim], update_id: str, results: list[int], as_of: str, period: int
    ) -> bytes:
        update = monitoring_pb2.WatchUpdate(
            update_id=update_id,
            watch_id=watch.watch_id,
            enterprise_uscc=watch.enterprise,
            consent_id=watch.consent_id,
            audience=watch.audience,
            provider=self.provider,
            provider_key_id=self._key_id,
            data_as_of=as_of or "0000-00-00",
            period=period,
            issued_at=int(self._clock()),
            verdicts=[
                monitoring_pb2.WatchVerdict(claim_text=c.text, result=r)  # type: ignore[arg-type]
                for c, r in zip(checked, results)
            ],
        )
        raw = update.SerializeToString(deterministic=True)
        signed = monitoring_pb2.SignedWatchUpdate(update=raw, signature=self._signing.sign(WATCH_UPDATE_CONTEXT, raw))
        return signed.SerializeToString(deterministic=True)

    def _evaluate(
        self,
        watch: Watch,
        checked: list[CheckedClaim],
        now: int,
        preloaded: tuple[Period, dict[str, str]] | None = None,
    ) -> _Emitted | None:
        """This watch's update for the active period, with its answer-log entry; None if not live."""
        if now >= watch.valid_until:
            return None
        if self._agent.consent_state_of(watch.consent_id, watch.enterprise) != common_pb2.CONSENT_STATE_ACTIVE:
            return None  # revoked or paused: the node knows it too (it pushed the change)
        read = self._agent.watched_verdicts(watch.enterprise, watch.period_from, watch.period_to, checked, preloaded)
        if read is None:
            return None  # no period imported yet: the first import emits
        lookup, results = read
        update_id = update_id_of(watch.watch_id, self.provider, lookup.period_id)
        signed = self._update(watch, checked, update_id, results, lookup.as_of, lookup.period_id)
        box = self._sealer.seal(
            signed,
            recipient_id=watch.audience,
            recipient_public_raw=watch.audience_key,
            content_type=WATCH_UPDATE_CONTENT_TYPE,
            context=update_id,
            pad_to=WATCH_UPDATE_PAD_BYTES,
        )
        envelope = monitoring_pb2.SealedWatchUpdate(
            update_id=update_id, watch_id=watch.watch_id, provider=self.provider, sealed=box
        )
        answer = AnswerLogEntry(
            request_id=update_id,
            kind=ANSWER_KIND,
            consent_id=watch.consent_id,
            enterprise_uscc=watch.enterprise,
            audience=watch.audience,
            fields=tuple(sorted({c.spec.key for c in checked})),
            data_as_of=lookup.as_of,
            answer_sha256=(hashlib.sha256(signed).hexdigest(),),
            sealed_sha256=hashlib.sha256(box.ciphertext).hexdigest(),
            issued_at=now,
        )
        return _Emitted(lookup.period_id, update_id, envelope.SerializeToString(deterministic=True), answer)

    def run_pass(self) -> int:
        """Re-evaluate every watch if the active period changed; returns updates emitted."""
        with self._pass_lock:
            active = self._agent.active_period()
            period = active.id if active is not None else 0
            if active is None or period == self.store.evaluated_period():
                return 0
            started = time.monotonic()
            watches = self.store.watches()
            # One scan of the period instead of a query per watch; every update of the pass is of this period.
            preloaded = (active, self._agent.period_records(period))
            emitted = 0
            chunk: list[tuple[str, str, bytes]] = []
            answers: list[AnswerLogEntry] = []
            claims_of: dict[bytes, CheckedClaim] = {}
            now = int(self._clock())
            for watch in watches:
                if self._stop.is_set():
                    return emitted  # stopping: the pass is re-run (same update ids) at the next start
                checked = []
                for claim in watch.claims:
                    key = claim.SerializeToString(deterministic=True)
                    hit = claims_of.get(key)
                    if hit is None:
                        hit = claims_of[key] = self._agent.check_watched_claim(claim)
                    checked.append(hit)
                out = self._evaluate(watch, checked, now, preloaded)
                if out is not None:
                    chunk.append((out.update_id, watch.watch_id, out.sealed))
                    answers.append(out.answer)
                    emitted += 1
                if len(chunk) >= CHUNK:
                    # The agent's own answer log first: an update never leaves unlogged.
                    self._agent.record_answers(answers)
                    self.store.append(chunk)
                    chunk, answers = [], []
            self._agent.record_answers(answers)
            self.store.append(chunk, period_done=period)
            self.passes += 1
            log.info(
                "period %d: %d watch updates emitted for %d watches in %.2fs",
                period,
                emitted,
                len(watches),
                time.monotonic() - started,
            )
            return emitted

    # -- the monitor thread ----------------------------------------------------------

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(POLL_SECONDS):
            try:
                self.run_pass()
                failing = False
            except Exception:
                if not failing:
                    log.exception("watch re-evaluation failed; retrying")
                failing = True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="agent-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.store.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        self.store.close()


__all__ = [
    "WATCH_UPDATE_CONTENT_TYPE",
    "WATCH_UPDATE_CONTEXT",
    "AgentMonitor",
    "Watch",
    "WatchStore",
    "monitor_db_path",
    "update_id_of",
]
