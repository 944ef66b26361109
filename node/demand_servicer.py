"""DemandService: an enterprise's financing demands (domain checks, then a thin servicer).

The caller is the enterprise of its certificate: it registers, withdraws and
lists only its own demands. Registration checks the demand's enterprise
signature (CA-bound key), that the demand names the caller, and every
referenced consent: held by the node (the request may carry them; they are
registered as RegisterConsent would), of this enterprise, purpose
``matching``, active. A consent id that is unknown or another enterprise's
gets the uniform ACCESS_DENIED; the state of the caller's own consents is
reported precisely (it is the caller's own information). Each call is one
audit entry; the whitelist is recomputed before the answer, so the answer
says where the demand is pushed now.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc

from xinrong import ids
from xinrong.demand import DEMAND_ID_RE, MAX_CONSENTS, VerifiedDemand, verify_signed_demand
from xinrong.errors import ConsentError, Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.ca import CaVerifier
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.consents import ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.demands import ACTIVE, MATCHING, DemandConflict, DemandStore, Whitelist
from xinrong.node.lifecycle import ConsentLifecycle
from xinrong.rpc.auth import Peer, require_caller
from xinrong.v1 import common_pb2, demand_pb2, demand_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = "xinrong.v1.DemandService"
ALLOWED_ROLES = frozenset({"enterprise"})
ENTERPRISE = "enterprise"

_STATE_REASONS: dict[int, Reason] = {
    common_pb2.CONSENT_STATE_REVOKED: Reason.CONSENT_REVOKED,
    common_pb2.CONSENT_STATE_PAUSED: Reason.CONSENT_PAUSED,
    common_pb2.CONSENT_STATE_EXPIRED: Reason.CONSENT_EXPIRED,
}


@dataclass
class Demands:
    """The domain side of DemandService."""

    db: Database
    ca: CaVerifier
    store: DemandStore
    whitelist: Whitelist
    consents: ConsentRegistry
    lifecycle: ConsentLifecycle
    audit: AuditLog
    clock: Callable[[], float] = time.time
    # Told the enterprise after each committed demand change (product matching re-runs for it).
    listeners: list[Callable[[str], None]] = field(default_factory=list)

    def on_change(self, callback: Callable[[str], None]) -> None:
        self.listeners.append(callback)

    def _changed(self, enterprise: str) -> None:
        self.whitelist.recompute(enterprise)
        for callback in self.listeners:
            try:
                callback(enterprise)
            except Exception:  # a listener's failure must not undo a committed demand
                log.warning("demand change listener failed", exc_info=True)

    def _audit(self, caller: Peer, method: str, decision: Decision, reason: str = "", consent_id: str = "") -> None:
        with self.db.transaction() as tx:
            self.audit.append(
                tx,
                AuditEvent(
                    caller_role=caller.role,
                    caller_id=caller.party_id,
                    method=method,
                    decision=decision,
                    reason=reason,
                    enterprise=caller.party_id if caller.role == ENTERPRISE else "",
                    consent_id=consent_id,
                ),
                int(self.clock() * 1000),
            )

    def _refuse(self, caller: Peer, method: str, error: XinrongError) -> XinrongError:
        self._audit(caller, method, Decision.REFUSED, error.reason.value)
        return error

    def _caller(self, caller: Peer, method: str) -> None:
        if caller.role != ENTERPRISE:
            raise self._refuse(caller, method, XinrongError("not an enterprise", reason=Reason.CALLER_NOT_ALLOWED))

    def register(
        self, caller: Peer, signed: demand_pb2.SignedDemand, consents: list[common_pb2.SignedConsent]
    ) -> tuple[VerifiedDemand, list[str]]:
        method = "RegisterDemand"
        self._caller(caller, method)
        if len(consents) > MAX_CONSENTS:
            raise self._refuse(caller, method, ValidationError(f"at most {MAX_CONSENTS} consents"))
        now = self.clock()
        try:
            verified = verify_signed_demand(self.ca, signed, now=now)
        except ValidationError as exc:
            raise self._refuse(caller, method, exc) from None
        except (ConsentError, SignatureError):
            raise self._refuse(caller, method, ConsentError("demand not authentic")) from None
        if verified.enterprise != caller.party_id:
            raise self._refuse(caller, method, ConsentError("demand names another enterprise"))
        for consent in consents:
            self.lifecycle.register(caller, consent)  # audited and refused there
        for consent_id in verified.demand.consent_ids:
            record = self.consents.get(consent_id)
            if record is None or record.enterprise != caller.party_id:
                raise self._refuse(caller, method, ConsentError("unknown consent"))
            if record.verified.consent.purpose != MATCHING:
                raise self._refuse(
                    caller,
                    method,
                    XinrongError(
                        "consent purpose is not matching",
                        reason=Reason.FAILED_PRECONDITION,
                        public="a demand's consents must be of purpose matching",
                    ),
                )
            state = record.effective_state(now)
            if state in _STATE_REASONS:
                raise self._refuse(caller, method, ConsentError("consent not active", reason=_STATE_REASONS[state]))
        try:
            with self.db.transaction() as tx:
                created = self.store.register(tx, verified, now)
                self.audit.append(
                    tx,
                    AuditEvent(
                        caller_role=caller.role,
                        caller_id=caller.party_id,
                        method=method,
                        decision=Decision.ALLOWED,
                        reason="" if created else "ALREADY_REGISTERED",
                        enterprise=caller.party_id,
                        consent_id=ids.safe_consent_id(verified.demand.consent_ids[0]),
                    ),
                    int(now * 1000),
                )
        except DemandConflict:
            raise self._refuse(
                caller,
                method,
                XinrongError("demand id registered with other bytes", reason=Reason.FAILED_PRECONDITION),
            ) from None
        self._changed(caller.party_id)
        return verified, self.whitelist.pushed_to(caller.party_id, verified.demand_id).get(verified.demand_id, [])

    def withdraw(self, caller: Peer, demand_id: str) -> int:
        method = "WithdrawDemand"
        self._caller(caller, method)
        if not DEMAND_ID_RE.fullmatch(demand_id):
            raise self._refuse(caller, method, ValidationError("demand_id malformed"))
        record = self.store.get(demand_id)
        if record is None or record.verified.enterprise != caller.party_id:
            raise self._refuse(caller, method, XinrongError("no such demand of the caller", reason=Reason.NOT_FOUND))
        now = self.clock()
        with self.db.transaction() as tx:
            self.store.withdraw(tx, demand_id, now)
            self.audit.append(
                tx,
                AuditEvent(
                    caller_role=caller.role,
                    caller_id=caller.party_id,
                    method=method,
                    decision=Decision.ALLOWED,
                    enterprise=caller.party_id,
                ),
                int(now * 1000),
            )
        self._changed(caller.party_id)
        after = self.store.get(demand_id)
        assert after is not None
        return after.effective_state(now)

    def list(self, caller: Peer) -> list[demand_pb2.DemandStatus]:
        method = "ListMyDemands"
        self._caller(caller, method)
        self._audit(caller, method, Decision.ALLOWED)
        now = self.clock()
        pushed = self.whitelist.pushed_to(caller.party_id)
        return [
            demand_pb2.DemandStatus(
                demand=r.verified.signed,
                state=r.effective_state(now),  # type: ignore[arg-type]
                whitelisted=bool(pushed.get(r.verified.demand_id)),
                pushed_to=pushed.get(r.verified.demand_id, []),
                registered_ms=r.registered_ms,
            )
            for r in self.store.of_enterprise(caller.party_id)
        ]


class DemandServicer(demand_pb2_grpc.DemandServiceServicer):  # type: ignore[misc]
    def __init__(self, demands: Demands) -> None:
        self._demands = demands

    def RegisterDemand(
        self, request: demand_pb2.RegisterDemandRequest, context: grpc.ServicerContext
    ) -> demand_pb2.RegisterDemandResponse:
        verified, pushed_to = self._demands.register(require_caller(context), request.demand, list(request.consents))
        return demand_pb2.RegisterDemandResponse(
            demand_id=verified.demand_id, state=ACTIVE, whitelisted=bool(pushed_to), pushed_to=pushed_to
        )

    def WithdrawDemand(
        self, request: demand_pb2.WithdrawDemandRequest, context: grpc.ServicerContext
    ) -> demand_pb2.WithdrawDemandResponse:
        state = self._demands.withdraw(require_caller(context), request.demand_id)
        return demand_pb2.WithdrawDemandResponse(demand_id=request.demand_id, state=state)  # type: ignore[arg-type]

    def ListMyDemands(
        self, request: demand_pb2.ListMyDemandsRequest, context: grpc.ServicerContext
    ) -> demand_pb2.ListMyDemandsResponse:
        return demand_pb2.ListMyDemandsResponse(demands=self._demands.list(require_caller(context)))


__all__ = ["ALLOWED_ROLES", "SERVICE_NAME", "DemandServicer", "Demands"]
