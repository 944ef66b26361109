"""The consent lifecycle at the node: register, status, revoke, and pushing revocations.

A consent is registered by its enterprise or its grantee; either may read
its status; only the enterprise revokes. Every step is an audit entry.
Revocations are pushed to every provider agent and retried until each
acknowledges (``ConsentRegistry`` persists who did), so an agent that was
down learns of the revocation when it is back; agents also refuse on their
own once the node refuses, so the push is defence in depth for an agent
asked directly.

Delivery is bounded (issue 10, A13): a failed push backs off from the retry
interval up to ``MAX_BACKOFF_SECONDS``, but a provider with an unacknowledged
push is also watched (``deliver_reconnected``, every ``WATCH_SECONDS`` from
the node's maintenance): as soon as its agent accepts a connection again,
every pending revocation for it is pushed at once, whatever the backoff. An
agent that comes back learns of a revocation within about a second.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong import ids
from xinrong.consent import verify_revocation, verify_signed_consent
from xinrong.errors import ConsentError, Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.ca import CaVerifier
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.consents import REVOKED, ConsentConflict, ConsentRecord, ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.registry import PartyRegistry
from xinrong.node.routing import AgentPool, PushOutcome
from xinrong.rpc.auth import Peer
from xinrong.v1 import agent_pb2, common_pb2

log = logging.getLogger(__name__)

INSTITUTION = "institution"
ENTERPRISE = "enterprise"

MAX_BACKOFF_SECONDS = 300.0
WATCH_SECONDS = 0.25


@dataclass(frozen=True)
class ConsentStatus:
    consent_id: str
    state: int
    uses: int
    max_uses: int
    valid_until: int


@dataclass(frozen=True)
class RevokeResult:
    consent_id: str
    state: int
    providers_notified: tuple[str, ...]


class ConsentLifecycle:
    """Register, read and revoke consents; deliver revocations to the agents."""

    def __init__(
        self,
        *,
        db: Database,
        ca: CaVerifier,
        registry: PartyRegistry,
        consents: ConsentRegistry,
        audit: AuditLog,
        agents: AgentPool,
        node_id: str,
        retry_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self.db = db
        self.ca = ca
        self.registry = registry
        self.consents = consents
        self.audit = audit
        self.agents = agents
        self._node_id = node_id
        self._retry_seconds = retry_seconds
        self.clock = clock
        # Providers with an unacknowledged push: watched for their agent's return.
        self._waiting: set[str] = set()
        self._waiting_lock = threading.Lock()

    def _record(self, event: AuditEvent, now: float) -> None:
        with self.db.transaction() as tx:
            self.audit.append(tx, event, int(now * 1000))

    def _refuse(self, event: AuditEvent, error: XinrongError, now: float) -> XinrongError:
        """Audit a refusal and hand back the error to raise."""
        self._record(_replace(event, decision=Decision.REFUSED, reason=error.reason.value), now)
        return error

    def register(self, caller: Peer, signed: common_pb2.SignedConsent) -> tuple[str, int]:
        now = self.clock()
        event = AuditEvent(
            caller_role=caller.role, caller_id=caller.party_id, method="RegisterConsent", decision=Decision.REFUSED
        )
        try:
            verified = verify_signed_consent(self.ca, signed)
            binding = self.registry.verify(signed.enterprise_binding, role=ENTERPRISE, party_id=verified.enterprise)
        except ValidationError as exc:  # a size or timestamp limit: INVALID_ARGUMENT naming it
            raise self._refuse(event, exc, now) from None
        except (ConsentError, SignatureError) as exc:
            raise self._refuse(event, ConsentError(f"consent not authentic: {exc.detail}"), now) from None
        consent = verified.consent
        event = _replace(
            event,
            enterprise=verified.enterprise,
            consent_id=ids.safe_consent_id(verified.consent_id),
            fields=tuple(sorted(verified.scope)),
        )
        is_enterprise = caller.role == ENTERPRISE and caller.party_id == verified.enterprise
        is_grantee = caller.role == INSTITUTION and caller.party_id == consent.grantee_id
        if not (is_enterprise or is_grantee):
            raise self._refuse(event, ConsentError("caller is neither the enterprise nor the grantee"), now)
        if not event.consent_id:
            raise self._refuse(event, ValidationError("consent id malformed"), now)
        if self.registry.get(INSTITUTION, consent.grantee_id) is None:
            raise self._refuse(
                event, ValidationError(f"grantee {consent.grantee_id!r} is not a registered institution"), now
            )
        with self.db.lock:
            try:
                with self.db.transaction() as tx:
                    self.registry.upsert(tx, binding, source="consent")
                    record, created = self.consents.register(tx, verified, binding, now)
                    self.audit.append(
                        tx,
                        _replace(event, decision=Decision.ALLOWED, reason="" if created else "ALREADY_REGISTERED"),
                        int(now * 1000),
                    )
            except ConsentConflict:
                raise self._refuse(
                    event,
                    XinrongError("consent id registered with other bytes", reason=Reason.FAILED_PRECONDITION),
                    now,
                ) from None
        return record.consent_id, record.effective_state(now)

    def status(self, caller: Peer, consent_id: str) -> ConsentStatus:
        now = self.clock()
        event = AuditEvent(
            caller_role=caller.role,
            caller_id=caller.party_id,
            method="GetConsentStatus",
            decision=Decision.REFUSED,
            consent_id=ids.safe_consent_id(consent_id),
        )
        record = self.consents.get(consent_id)
        if record is None or not self._is_party_to(caller, record):
            raise self._refuse(event, ConsentError("unknown consent or not the caller's"), now)
        self._record(_replace(event, decision=Decision.ALLOWED, enterprise=record.enterprise), now)
        return ConsentStatus(
            consent_id=record.consent_id,
            state=record.effective_state(now),
            uses=record.uses,
            max_uses=record.verified.consent.max_uses,
            valid_until=record.verified.consent.valid_until,
        )

    @staticmethod
    def _is_party_to(caller: Peer, record: ConsentRecord) -> bool:
        if caller.role == ENTERPRISE:
            return caller.party_id == record.enterprise
        return caller.role == INSTITUTION and caller.party_id == record.grantee

    def revoke(self, caller: Peer, signed: common_pb2.SignedConsentRevocation) -> RevokeResult:
        now = self.clock()
        event = AuditEvent(
            caller_role=caller.role, caller_id=caller.party_id, method="RevokeConsent", decision=Decision.REFUSED
        )
        if caller.role != ENTERPRISE:
            raise self._refuse(
                event, XinrongError("only the enterprise revokes", reason=Reason.CALLER_NOT_ALLOWED), now
            )
        claimed = common_pb2.ConsentRevocation()
        try:
            claimed.ParseFromString(signed.revocation)
        except Exception:
            raise self._refuse(event, ConsentError("revocation does not parse"), now) from None
        event = _replace(event, consent_id=ids.safe_consent_id(claimed.consent_id))
        record = self.consents.get(claimed.consent_id)
        if record is None or record.enterprise != caller.party_id:
            raise self._refuse(event, ConsentError("unknown consent or not the caller's"), now)
        event = _replace(event, enterprise=record.enterprise)
        try:
            verified_with = self._verify_revocation(signed, record)
        except ValidationError as exc:
            raise self._refuse(event, exc, now) from None
        if verified_with is None:
            raise self._refuse(event, ConsentError("revocation not authentic"), now)
        revocation, binding = verified_with
        if revocation.consent_id != record.consent_id or revocation.enterprise_uscc != record.enterprise:
            raise self._refuse(event, ConsentError("revocation names another consent"), now)
        providers = sorted(self.agents.providers)
        with self.db.lock, self.db.transaction() as tx:
            already = record.state == REVOKED
            if not already:
                self.consents.revoke(tx, record, signed, binding, providers, now)
            self.audit.append(
                tx,
                _replace(
                    event,
                    decision=Decision.ALLOWED,
                    providers=tuple(providers),
                    reason="ALREADY_REVOKED" if already else "",
                ),
                int(now * 1000),
            )
        pending = [p for p, s in sorted(self.consents.push_states(record).items()) if s.acked_ms is None]
        if pending:
            self._push(record, pending)
        notified = tuple(p for p, s in sorted(self.consents.push_states(record).items()) if s.acked_ms is not None)
        return RevokeResult(consent_id=record.consent_id, state=REVOKED, providers_notified=notified)

    def _verify_revocation(
        self, signed: common_pb2.SignedConsentRevocation, record: ConsentRecord
    ) -> tuple[common_pb2.ConsentRevocation, common_pb2.SignedPartyBinding] | None:
        """Check against the enterprise's current binding, then the one that signed the consent
        (an enterprise that rotated keys can still revoke its old consents)."""
        candidates: list[common_pb2.SignedPartyBinding] = []
        current = self.registry.get(ENTERPRISE, record.enterprise)
        if current is not None:
            candidates.append(current.signed)
        if record.enterprise_binding.signed.binding not in [c.binding for c in candidates]:
            candidates.append(record.enterprise_binding.signed)
        for binding in candidates:
            try:
                return verify_revocation(self.ca, signed, binding), binding
            except (ConsentError, SignatureError):
                continue
        return None

    # -- revocation pushes -------------------------------------------------

    def _push(self, record: ConsentRecord, providers: Sequence[str]) -> dict[str, PushOutcome]:
        """Push the stored revocation to providers; persist acks and failures."""
        if record.revocation is None or record.revocation_binding is None:
            return {}
        request = agent_pb2.UpdateConsentStatusRequest(
            revocation=record.revocation, enterprise_binding=record.revocation_binding
        )
        outcomes = self.agents.push_revocation(providers, request)
        now = self.clock()
        interval = self._retry_seconds
        with self.db.lock, self.db.transaction() as tx:
            for provider, outcome in sorted(outcomes.items()):
                state = record.pushes.get(provider)
                if state is None or state.acked_ms is not None:
                    continue
                if outcome.acked:
                    self.consents.push_acked(tx, record, provider, now)
                    self.audit.append(
                        tx,
                        AuditEvent(
                            caller_role="node",
                            caller_id=self._node_id,
                            method="PushRevocation",
                            decision=Decision.ALLOWED,
                            enterprise=record.enterprise,
                            consent_id=record.consent_id,
                            providers=(provider,),
                        ),
                        int(now * 1000),
                    )
                else:
                    # Exponential backoff from the retry interval, capped; an agent's
                    # return is noticed sooner by ``deliver_reconnected``.
                    delay = backoff_seconds(interval, state.attempts)
                    with self._waiting_lock:
                        self._waiting.add(provider)
                    self.consents.push_failed(tx, record, provider, outcome.reason, now, delay)
                    log.warning(
                        "revocation push of consent %s to %s failed (%s); retry in %.0fs",
                        record.consent_id,
                        provider,
                        outcome.reason,
                        delay,
                    )
        return outcomes

    def retry_pending_pushes(self, *, force: bool = False) -> int:
        """Retry due (or, with force, all) unacknowledged revocation pushes; returns acks."""
        due: dict[str, tuple[ConsentRecord, list[str]]] = {}
        for record, provider in self.consents.pending_pushes(self.clock(), force=force):
            due.setdefault(record.consent_id, (record, []))[1].append(provider)
        acked = 0
        for record, providers in due.values():
            outcomes = self._push(record, providers)
            acked += sum(1 for o in outcomes.values() if o.acked)
        return acked

    def pending_revocations(self, provider: str) -> list[agent_pb2.UpdateConsentStatusRequest]:
        """Every stored revocation ``provider`` has not acknowledged, as the push would carry it
        (for an agent's pull before it serves, ``node.agent_sync``)."""
        return [
            agent_pb2.UpdateConsentStatusRequest(
                revocation=record.revocation, enterprise_binding=record.revocation_binding
            )
            for record, p in self.consents.pending_pushes(self.clock(), force=True)
            if p == provider and record.revocation is not None and record.revocation_binding is not None
        ]

    def deliver_reconnected(self) -> int:
        """Push every pending revocation to watched providers whose agent connects again; returns acks."""
        with self._waiting_lock:
            waiting = sorted(self._waiting)
        if not waiting:
            return 0
        back = {p for p in waiting if self.agents.reachable(p)}
        if not back:
            return 0
        due: dict[str, tuple[ConsentRecord, list[str]]] = {}
        still: set[str] = set()
        for record, provider in self.consents.pending_pushes(self.clock(), force=True):
            if provider in back:
                due.setdefault(record.consent_id, (record, []))[1].append(provider)
        with self._waiting_lock:
            self._waiting -= back  # a failure below adds the provider again
        acked = 0
        for record, providers in due.values():
            outcomes = self._push(record, providers)
            acked += sum(1 for o in outcomes.values() if o.acked)
            still.update(p for p, o in outcomes.items() if not o.acked)
        if acked:
            log.info("revocations delivered to returning agents %s: %d", sorted(back - still), acked)
        return acked


def backoff_seconds(interval: float, attempts: int) -> float:
    """Delay before the next push after ``attempts`` failed ones: doubling from the
    retry interval, capped (revocations here, pauses and resumes in node.subject)."""
    return float(min(interval * 2.0 ** min(attempts, 12), max(interval, MAX_BACKOFF_SECONDS)))


def _replace(event: AuditEvent, **changes: Any) -> AuditEvent:
    return dataclasses.replace(event, **changes)


__all__ = ["ConsentLifecycle", "ConsentStatus", "RevokeResult", "backoff_seconds"]
