"""Consent registry: authentic consents, their lifecycle and their use counts.

States held: ACTIVE, PAUSED, REVOKED. EXPIRED is derived from
``valid_until`` at read time, never stored, so it cannot drift from the
signed consent. Uses are counted per UTC day in one ledger table (the total
is its sum), incremented in the same transaction as the request's audit
entry: one row write per use.

Records are cached in memory (the hot path reads no SQLite) and written
through. Every stored consent is re-verified (enterprise signature, CA
binding) when the node loads it, so a row inserted into the database
behind the node's back is not honoured.

Revocations are pushed to every provider agent. Which agents acknowledged
is persisted per (consent, provider); pending pushes are retried on a timer
and at start, so an agent that was down learns of the revocation when it is
back (agents also refuse on their own once the node refuses; the push is
defence in depth for an agent that is asked directly).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from xinrong.consent import VerifiedConsent, verify_signed_consent
from xinrong.keys.binding import VerifiedBinding
from xinrong.keys.ca import CaVerifier
from xinrong.node.db import Database, Transaction
from xinrong.node.limits import utc_day
from xinrong.node.registry import PartyRegistry
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

ACTIVE = common_pb2.CONSENT_STATE_ACTIVE
PAUSED = common_pb2.CONSENT_STATE_PAUSED
REVOKED = common_pb2.CONSENT_STATE_REVOKED
EXPIRED = common_pb2.CONSENT_STATE_EXPIRED
STORED_STATES = (ACTIVE, PAUSED, REVOKED)

# Tables: schema steps in xinrong.node.migrations.


@dataclass
class PushState:
    acked_ms: int | None = None
    attempts: int = 0
    last_reason: str = ""
    next_attempt_ms: int = 0


@dataclass
class ConsentRecord:
    """A registered consent and its mutable state. Mutated only on commit, under the db lock."""

    verified: VerifiedConsent
    enterprise_binding: VerifiedBinding
    state: int
    uses: int
    day: int
    uses_today: int
    registered_ms: int
    revoked_ms: int | None = None
    revocation: common_pb2.SignedConsentRevocation | None = None
    revocation_binding: common_pb2.SignedPartyBinding | None = None
    pushes: dict[str, PushState] = field(default_factory=dict)

    @property
    def consent_id(self) -> str:
        return self.verified.consent_id

    @property
    def enterprise(self) -> str:
        return self.verified.enterprise

    @property
    def grantee(self) -> str:
        return self.verified.consent.grantee_id

    def effective_state(self, now: float) -> int:
        """The state a caller sees: EXPIRED once valid_until has passed, unless revoked."""
        if self.state == REVOKED:
            return REVOKED
        if now >= self.verified.consent.valid_until:
            return EXPIRED
        return self.state

    def uses_on(self, day: int) -> int:
        return self.uses_today if day == self.day else 0


class ConsentConflict(Exception):
    """A consent with this id is registered with other bytes."""


class ConsentRegistry:
    def __init__(self, db: Database, ca: CaVerifier, registry: PartyRegistry, *, clock: Callable[[], float]) -> None:
        self._db = db
        self._ca = ca
        self._registry = registry
        self._clock = clock
        self._records: dict[str, ConsentRecord] = {}
        self._lock = threading.Lock()
        # Called with the enterprise after a consent's state changed (revoked,
        # paused, resumed), once applied; must not block (the db lock is held).
        self._change_hooks: list[Callable[[str], None]] = []

    def on_change(self, hook: Callable[[str], None]) -> None:
        """``hook(enterprise)`` after each consent state change (e.g. the whitelist recomputes)."""
        self._change_hooks.append(hook)

    def _changed(self, enterprise: str) -> None:
        for hook in self._change_hooks:
            try:
                hook(enterprise)
            except Exception:  # a listener must never fail a revocation
                log.warning("consent change hook failed", exc_info=True)

    # -- loading -----------------------------------------------------------

    _ROW = (
        "SELECT consent_id, signed, digest, state, registered_ms, revoked_ms, revocation, revocation_binding "
        "FROM consents"
    )

    def load(self) -> int:
        """Load and re-verify every stored consent with today's use counts and push states."""
        now = self._clock()
        today = utc_day(now)
        daily: dict[str, int] = {}
        totals: dict[str, int] = {}
        for cid, day, uses in self._db.query("SELECT consent_id, day, uses FROM consent_daily_uses"):
            totals[str(cid)] = totals.get(str(cid), 0) + int(uses)
            if int(day) == today:
                daily[str(cid)] = int(uses)
        pushes: dict[str, dict[str, PushState]] = {}
        for row in self._db.query(
            "SELECT consent_id, provider, acked_ms, attempts, last_reason, next_attempt_ms FROM revocation_pushes"
        ):
            cid, provider, state = _push_row(row)
            pushes.setdefault(cid, {})[provider] = state
        records: dict[str, ConsentRecord] = {}
        skipped = 0
        for row in self._db.query(self._ROW):
            cid = str(row[0])
            record = self._build(row, totals.get(cid, 0), daily.get(cid, 0), pushes.get(cid, {}), today)
            if record is None:
                skipped += 1
                continue
            records[cid] = record
        with self._lock:
            self._records = records
        if skipped:
            log.warning("%d stored consents were not loaded", skipped)
        return len(records)

    def _build(
        self, row: tuple[Any, ...], uses: int, uses_today: int, pushes: dict[str, PushState], today: int
    ) -> ConsentRecord | None:
        """A stored row as a record, if its consent still verifies and matches the row."""
        cid, signed_raw, digest, state, registered_ms, revoked_ms, revocation_raw, rev_binding_raw = row
        signed = common_pb2.SignedConsent()
        try:
            signed.ParseFromString(bytes(signed_raw))
            verified = verify_signed_consent(self._ca, signed)
            binding = self._registry.verify(signed.enterprise_binding, role="enterprise", party_id=verified.enterprise)
        except Exception:
            # Includes consents whose enterprise binding has since expired: a
            # consent that no longer verifies is treated as unknown.
            log.warning("stored consent %s no longer verifies; ignored", cid)
            return None
        if verified.consent_id != cid or verified.digest != digest or int(state) not in STORED_STATES:
            log.warning("stored consent %s does not match its row; ignored", cid)
            return None
        revocation = None
        if revocation_raw is not None:
            revocation = common_pb2.SignedConsentRevocation()
            revocation.ParseFromString(bytes(revocation_raw))
        revocation_binding = None
        if rev_binding_raw is not None:
            revocation_binding = common_pb2.SignedPartyBinding()
            revocation_binding.ParseFromString(bytes(rev_binding_raw))
        return ConsentRecord(
            verified=verified,
            enterprise_binding=binding,
            state=int(state),
            uses=uses,
            day=today,
            uses_today=uses_today,
            registered_ms=int(registered_ms),
            revoked_ms=None if revoked_ms is None else int(revoked_ms),
            revocation=revocation,
            revocation_binding=revocation_binding,
            pushes=pushes,
        )

    # -- a database shared by replicas: the database is the authority ----------------

    def _fresh(self, consent_id: str, rows: list[tuple[Any, ...]], uses: list[tuple[Any, ...]]) -> ConsentRecord | None:
        """Build (or refresh) the cached record of one consent from its current rows."""
        if not rows:
            return None
        today = utc_day(self._clock())
        total = sum(int(u) for _d, u in uses)
        today_uses = sum(int(u) for d, u in uses if int(d) == today)
        pushes = {
            provider: state
            for _cid, provider, state in (
                _push_row(r)
                for r in self._db.query(
                    "SELECT consent_id, provider, acked_ms, attempts, last_reason, next_attempt_ms "
                    "FROM revocation_pushes WHERE consent_id = ?",
                    (consent_id,),
                )
            )
        }
        with self._lock:
            cached = self._records.get(consent_id)
        signed_raw = bytes(rows[0][1])
        if cached is not None and cached.verified.signed.SerializeToString(deterministic=True) == signed_raw:
            # The signed bytes never change; only the mutable state is re-read.
            _cid, _signed, _digest, state, _reg, revoked_ms, revocation_raw, rev_binding_raw = rows[0]
            with self._db.lock:
                cached.state = int(state)
                cached.revoked_ms = None if revoked_ms is None else int(revoked_ms)
                if revocation_raw is not None:
                    cached.revocation = common_pb2.SignedConsentRevocation.FromString(bytes(revocation_raw))
                if rev_binding_raw is not None:
                    cached.revocation_binding = common_pb2.SignedPartyBinding.FromString(bytes(rev_binding_raw))
                cached.uses, cached.day, cached.uses_today = total, today, today_uses
                cached.pushes = pushes
            return cached
        record = self._build(rows[0], total, today_uses, pushes, today)
        if record is not None:
            with self._lock:
                self._records[consent_id] = record
        return record

    def _read(self, consent_id: str) -> ConsentRecord | None:
        rows = self._db.query(self._ROW + " WHERE consent_id = ?", (consent_id,))
        uses = self._db.query("SELECT day, uses FROM consent_daily_uses WHERE consent_id = ?", (consent_id,))
        return self._fresh(consent_id, rows, uses)

    async def lookup_async(self, consent_id: str) -> ConsentRecord | None:
        """For the event loop: the cached record, or (shared database) the stored one, without blocking.

        Only what never changes (the verified consent and binding) is used
        from the cache by the admission; state and counts are the database's.
        """
        with self._lock:
            cached = self._records.get(consent_id)
        if cached is not None or not self._db.shared:
            return cached
        aquery = getattr(self._db, "aquery")  # noqa: B009 - PgDatabase's loop-side read
        rows = await aquery(self._ROW + " WHERE consent_id = ?", (consent_id,))
        if not rows:
            return None
        record = self._build(rows[0], 0, 0, {}, utc_day(self._clock()))
        if record is not None:
            with self._lock:
                record = self._records.setdefault(consent_id, record)
        return record

    def cached(self, consent_id: str) -> ConsentRecord | None:
        """The record held in memory, without any I/O."""
        with self._lock:
            return self._records.get(consent_id)

    # -- reads -------------------------------------------------------------

    def get(self, consent_id: str) -> ConsentRecord | None:
        """The record with its current state. On a shared database, read from it
        (another replica may have registered, used or revoked the consent)."""
        if self._db.shared:
            return self._read(consent_id)
        with self._lock:
            return self._records.get(consent_id)

    def all(self) -> list[ConsentRecord]:
        with self._lock:
            return list(self._records.values())

    # -- writes (inside a Database transaction) ----------------------------

    def register(
        self, tx: Transaction, verified: VerifiedConsent, binding: VerifiedBinding, now: float
    ) -> tuple[ConsentRecord, bool]:
        """Store a new consent; identical bytes again are a no-op. Returns (record, created)."""
        existing = self.get(verified.consent_id)
        if existing is not None:
            if existing.verified.signed.consent != verified.signed.consent:
                raise ConsentConflict(verified.consent_id)
            return existing, False
        now_ms = int(now * 1000)
        signed = verified.signed.SerializeToString(deterministic=True)
        inserted = tx.execute(
            "INSERT INTO consents (consent_id, enterprise, grantee, signed, digest, state, registered_ms) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (consent_id) DO NOTHING",
            (
                verified.consent_id,
                verified.enterprise,
                verified.consent.grantee_id,
                signed,
                verified.digest,
                ACTIVE,
                now_ms,
            ),
        ).rowcount
        if not inserted:
            # Another replica registered this id between our read and our insert.
            row = tx.execute("SELECT signed FROM consents WHERE consent_id = ?", (verified.consent_id,)).fetchone()
            if row is None or bytes(row[0]) != signed:
                raise ConsentConflict(verified.consent_id)
            existing = self._read(verified.consent_id) if self._db.shared else None
            if existing is not None:
                return existing, False
        record = ConsentRecord(
            verified=verified,
            enterprise_binding=binding,
            state=ACTIVE,
            uses=0,
            day=utc_day(now),
            uses_today=0,
            registered_ms=now_ms,
        )

        def commit() -> None:
            with self._lock:
                self._records[record.consent_id] = record

        tx.on_commit(commit)
        return record, True

    def consume(self, tx: Transaction, record: ConsentRecord, day: int) -> None:
        """One use in today's ledger row, atomically with the caller's checks."""
        tx.execute(
            "INSERT INTO consent_daily_uses (consent_id, day, uses) VALUES (?, ?, 1) "
            "ON CONFLICT (consent_id, day) DO UPDATE SET uses = uses + 1",
            (record.consent_id, day),
        )

        def commit() -> None:
            record.uses += 1
            if record.day != day:
                record.day, record.uses_today = day, 0
            record.uses_today += 1

        tx.on_commit(commit)

    def revoke(
        self,
        tx: Transaction,
        record: ConsentRecord,
        revocation: common_pb2.SignedConsentRevocation,
        binding: common_pb2.SignedPartyBinding,
        providers: Iterable[str],
        now: float,
    ) -> None:
        """Set REVOKED, keep the signed revocation for pushes, and queue one push per provider."""
        now_ms = int(now * 1000)
        tx.execute(
            "UPDATE consents SET state = ?, revoked_ms = ?, revocation = ?, revocation_binding = ? WHERE consent_id = ?",
            (
                REVOKED,
                now_ms,
                revocation.SerializeToString(deterministic=True),
                binding.SerializeToString(deterministic=True),
                record.consent_id,
            ),
        )
        names = sorted(set(providers))
        for provider in names:
            tx.execute(
                "INSERT INTO revocation_pushes (consent_id, provider) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (record.consent_id, provider),
            )

        def commit() -> None:
            record.state = REVOKED
            record.revoked_ms = now_ms
            record.revocation = revocation
            record.revocation_binding = binding
            for provider in names:
                record.pushes.setdefault(provider, PushState())
            self._changed(record.enterprise)

        tx.on_commit(commit)

    def set_state(self, tx: Transaction, record: ConsentRecord, state: int) -> None:
        """PAUSED or ACTIVE, by an enterprise-signed pause / resume (never out of REVOKED)."""
        if state not in (ACTIVE, PAUSED):
            raise ValueError("only ACTIVE and PAUSED are set this way")
        tx.execute(
            "UPDATE consents SET state = ? WHERE consent_id = ? AND state <> ?", (state, record.consent_id, REVOKED)
        )

        def commit() -> None:
            if record.state != REVOKED:
                record.state = state
            self._changed(record.enterprise)

        tx.on_commit(commit)

    def push_acked(self, tx: Transaction, record: ConsentRecord, provider: str, now: float) -> None:
        now_ms = int(now * 1000)
        tx.execute(
            "UPDATE revocation_pushes SET acked_ms = ?, attempts = attempts + 1, last_reason = '' "
            "WHERE consent_id = ? AND provider = ?",
            (now_ms, record.consent_id, provider),
        )

        def commit() -> None:
            state = record.pushes.setdefault(provider, PushState())
            state.acked_ms, state.attempts, state.last_reason = now_ms, state.attempts + 1, ""

        tx.on_commit(commit)

    def push_failed(
        self, tx: Transaction, record: ConsentRecord, provider: str, reason: str, now: float, retry_after: float
    ) -> None:
        state = record.pushes.get(provider, PushState())
        next_ms = int((now + retry_after) * 1000)
        tx.execute(
            "UPDATE revocation_pushes SET attempts = attempts + 1, last_reason = ?, next_attempt_ms = ? "
            "WHERE consent_id = ? AND provider = ?",
            (reason, next_ms, record.consent_id, provider),
        )

        def commit() -> None:
            state.attempts += 1
            state.last_reason, state.next_attempt_ms = reason, next_ms
            record.pushes[provider] = state

        tx.on_commit(commit)

    def push_states(self, record: ConsentRecord) -> dict[str, PushState]:
        """A snapshot of a record's push states (commit callbacks mutate them under the db lock)."""
        with self._db.lock:
            return {p: dataclasses.replace(s) for p, s in record.pushes.items()}

    def pending_pushes(self, now: float, *, force: bool = False) -> list[tuple[ConsentRecord, str]]:
        """(record, provider) pairs whose revocation push is unacknowledged and due."""
        now_ms = int(now * 1000)
        due: list[tuple[ConsentRecord, str]] = []
        if self._db.shared:
            # Revocations registered at any replica; each replica may push (agents ack idempotently).
            rows = self._db.query(
                "SELECT consent_id, provider, next_attempt_ms FROM revocation_pushes WHERE acked_ms IS NULL "
                "ORDER BY consent_id, provider"
            )
            for cid, provider, next_ms in rows:
                if force or int(next_ms) <= now_ms:
                    record = self.get(str(cid))
                    if record is not None:
                        due.append((record, str(provider)))
            return due
        for record in self.all():
            if not record.pushes:
                continue
            for provider, state in sorted(self.push_states(record).items()):
                if state.acked_ms is None and (force or state.next_attempt_ms <= now_ms):
                    due.append((record, provider))
        return due


def _push_row(row: tuple[Any, ...]) -> tuple[str, str, PushState]:
    cid, provider, acked, attempts, reason, next_ms = row
    return (
        str(cid),
        str(provider),
        PushState(
            acked_ms=None if acked is None else int(acked),
            attempts=int(attempts),
            last_reason=str(reason),
            next_attempt_ms=int(next_ms),
        ),
    )


__all__ = [
    "ACTIVE",
    "EXPIRED",
    "PAUSED",
    "REVOKED",
    "ConsentConflict",
    "ConsentRecord",
    "ConsentRegistry",
    "PushState",
]
