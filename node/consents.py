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

    # -- loading -----------------------------------------------------------

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
        for cid, provider, acked, attempts, reason, next_ms in self._db.query(
            "SELECT consent_id, provider, acked_ms, attempts, last_reason, next_attempt_ms FROM revocation_pushes"
        ):
            pushes.setdefault(str(cid), {})[str(provider)] = PushState(
                acked_ms=None if acked is None else int(acked),
                attempts=int(attempts),
                last_reason=str(reason),
                next_attempt_ms=int(next_ms),
            )
        records: dict[str, ConsentRecord] = {}
        skipped = 0
        for row in self._db.query(
            "SELECT consent_id, signed, digest, state, registered_ms, revoked_ms, revocation, revocation_binding "
            "FROM consents"
        ):
            cid, signed_raw, digest, state, registered_ms, revoked_ms, revocation_raw, rev_binding_raw = row
            signed = common_pb2.SignedConsent()
            try:
                signed.ParseFromString(bytes(signed_raw))
                verified = verify_signed_consent(self._ca, signed)
                binding = self._registry.verify(
                    signed.enterprise_binding, role="enterprise", party_id=verified.enterprise
                )
            except Exception:
                # Includes consents whose enterprise binding has since expired: a
                # consent that no longer verifies is treated as unknown.
                skipped += 1
                log.warning("stored consent %s no longer verifies; ignored", cid)
                continue
            if verified.consent_id != cid or verified.digest != digest or int(state) not in STORED_STATES:
                skipped += 1
                log.warning("stored consent %s does not match its row; ignored", cid)
                continue
            revocation = None
            if revocation_raw is not None:
                revocation = common_pb2.SignedConsentRevocation()
                revocation.ParseFromString(bytes(revocation_raw))
            revocation_binding = None
            if rev_binding_raw is not None:
                revocation_binding = common_pb2.SignedPartyBinding()
                revocation_binding.ParseFromString(bytes(rev_binding_raw))
            records[cid] = ConsentRecord(
                verified=verified,
                enterprise_binding=binding,
                state=int(state),
                uses=totals.get(cid, 0),
                day=today,
                uses_today=daily.get(cid, 0),
                registered_ms=int(registered_ms),
                revoked_ms=None if revoked_ms is None else int(revoked_ms),
                revocation=revocation,
                revocation_binding=revocation_binding,
                pushes=pushes.get(cid, {}),
            )
        with self._lock:
            self._records = records
        if skipped:
            log.warning("%d stored consents were not loaded", skipped)
        return len(records)

    # -- reads -------------------------------------------------------------

    def get(self, consent_id: str) -> ConsentRecord | None:
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
        tx.execute(
            "INSERT INTO consents (consent_id, enterprise, grantee, signed, digest, state, registered_ms) "
            "VALUES (?,?,?,?,?,?,?)",
            (
                verified.consent_id,
                verified.enterprise,
                verified.consent.grantee_id,
                verified.signed.SerializeToString(deterministic=True),
                verified.digest,
                ACTIVE,
                now_ms,
            ),
        )
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
                "INSERT OR IGNORE INTO revocation_pushes (consent_id, provider) VALUES (?, ?)",
                (record.consent_id, provider),
            )

        def commit() -> None:
            record.state = REVOKED
            record.revoked_ms = now_ms
            record.revocation = revocation
            record.revocation_binding = binding
            for provider in names:
                record.pushes.setdefault(provider, PushState())

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
        for record in self.all():
            if not record.pushes:
                continue
            for provider, state in sorted(self.push_states(record).items()):
                if state.acked_ms is None and (force or state.next_attempt_ms <= now_ms):
                    due.append((record, provider))
        return due


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
