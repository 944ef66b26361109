"""Subject rights at the node: the enterprise's own data, its cases, its consents' pause and resume.

Who the enterprise is comes from its mTLS certificate only. Every request
also carries a query the enterprise signed (``xinrong.subject``) and its
CA-signed binding; the node checks that binding names the certified caller
and that the signed query names the binding's enterprise, so a forged id in
a request is refused with the uniform denial, and an agent can check the
enterprise's signature itself instead of trusting the node.

Own data and case filings go through the one admission path
(``node.admission``) under the ``SELF_SERVICE`` purpose: replay and
freshness checks and an audit entry per request, no consent, no use and no
budget of any institution. What the agents answer is signed by each
provider, padded (``xinrong.subject.seal_report``) and sealed to the enterprise's X25519
key: the node relays bytes it cannot open and stores nothing of them.

Pause and resume are enterprise-signed (``ConsentStateChange``), like a
revocation: the node sets PAUSED / ACTIVE (its admission then refuses
``CONSENT_PAUSED``) and pushes the signed change to every agent, which
verifies and enforces it too. Pending pushes are stored with the state
change, in the same transaction (``pause_pushes``, schema step 11), so a node
restart loses none: they are retried as revocations are (``node.lifecycle``:
the same backoff, every pending push at start whatever its backoff, and a
watch that delivers within about a second of an agent's return); an agent
with ``node_address`` also pulls them (``pending_pauses``) before serving.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc

from xinrong import ids
from xinrong import subject as subj
from xinrong.catalog import Catalog
from xinrong.errors import ConsentError, Reason, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import PartyCredentials
from xinrong.node.admission import SELF_SERVICE, AccessRequest, Admission, Ask, Subject
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.config import ProviderEndpoint
from xinrong.node.consents import ACTIVE, PAUSED, REVOKED, ConsentRecord, ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.lifecycle import backoff_seconds
from xinrong.node.limits import ReplayGuard, caller_key
from xinrong.node.registry import PartyRegistry
from xinrong.node.routing import agent_failure
from xinrong.rpc.auth import Peer
from xinrong.rpc.channel import connects_within, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.serde import consent_state_name
from xinrong.v1 import node_pb2, subject_pb2, subject_pb2_grpc

log = logging.getLogger(__name__)

ENTERPRISE = "enterprise"
MY_DATA = SELF_SERVICE
FILE_CASE = dataclasses.replace(SELF_SERVICE, method="FileCase")


@dataclass(frozen=True)
class _SelfAsk:
    """What a self-service request asks: providers and fields, checked against the catalog by the caller."""

    providers: tuple[str, ...]
    fields: tuple[str, ...]
    digest: str

    def check(self) -> Ask:
        return Ask(needs=(), fields=self.fields, claims_sha256=self.digest, items={p: [] for p in self.providers})

    def raw_digest(self) -> str:
        return self.digest


@dataclass(frozen=True)
class MyData:
    request_id: str
    answers: tuple[tuple[str, Any], ...]
    unavailable: tuple[str, ...]


class SubjectRights:
    """The node's SubjectService domain (see the module docstring)."""

    def __init__(
        self,
        *,
        db: Database,
        ca: CaVerifier,
        catalog: Catalog,
        registry: PartyRegistry,
        consents: ConsentRegistry,
        replay: ReplayGuard,
        audit: AuditLog,
        admission: Admission,
        endpoints: tuple[ProviderEndpoint, ...],
        credentials: PartyCredentials,
        timeout: float,
        max_clock_skew_seconds: float,
        clock: Callable[[], float],
        retry_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.ca = ca
        self.catalog = catalog
        self.registry = registry
        self.consents = consents
        self.replay = replay
        self.audit = audit
        self.admission = admission
        self.timeout = timeout
        self.skew = max_clock_skew_seconds
        self.clock = clock
        self._node_id = credentials.party_id
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        for endpoint in endpoints:
            channel = secure_channel(endpoint.address, credentials, server_role="provider", server_id=endpoint.name)
            self._channels[endpoint.name] = channel
            self._stubs[endpoint.name] = subject_pb2_grpc.AgentSubjectServiceStub(channel)
        self._retry_seconds = retry_seconds
        # Providers with an unacknowledged push: watched for their agent's return.
        self._waiting: set[str] = set()
        self._waiting_lock = threading.Lock()
        self._push_lock = threading.Lock()  # one delivery round at a time (maintenance vs watch vs request)
        self._overdue: dict[str, int] = {}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted(self._stubs))

    # -- identity ------------------------------------------------------------------

    def _audit(self, event: AuditEvent) -> None:
        with self.db.transaction() as tx:
            self.audit.append(tx, event, int(self.clock() * 1000))

    def _refuse(self, caller: Peer, method: str, error: XinrongError, **fields: Any) -> XinrongError:
        self._audit(
            AuditEvent(
                caller_role=caller.role,
                caller_id=caller.party_id,
                method=method,
                decision=Decision.REFUSED,
                reason=error.reason.value,
                **fields,
            )
        )
        return error

    def _identify(
        self, caller: Peer, method: str, query: subject_pb2.SignedSubjectQuery, binding: Any
    ) -> tuple[subject_pb2.SubjectQuery, VerifiedBinding]:
        """The certified enterprise, its binding and its own signed query about itself; else the uniform denial."""
        now = self.clock()
        try:
            if caller.role != ENTERPRISE:
                raise XinrongError("only an enterprise exercises subject rights", reason=Reason.CALLER_NOT_ALLOWED)
            verified = subj.verify_enterprise(self.ca, binding, now=now)
            if verified.party_id != caller.party_id:
                raise ConsentError("binding is not the caller's")
            # Freshness and the request id are the admission's steps 2-3; the signature and subject are checked here.
            parsed = subj.verify_query(query, verified, now=now, max_skew=float("inf"))
        except XinrongError as exc:
            raise self._refuse(caller, method, exc) from None
        with self.db.lock, self.db.transaction() as tx:
            self.registry.upsert(tx, verified, source="subject")
        return parsed, verified

    def _admit(
        self,
        caller: Peer,
        parsed: subject_pb2.SubjectQuery,
        purpose: Any,
        providers: tuple[str, ...],
        fields: tuple[str, ...],
        digest: str,
    ) -> Any:
        request = AccessRequest(
            purpose=purpose,
            caller=caller,
            request_id=parsed.request_id,
            requested_at=parsed.requested_at,
            subjects=(Subject(enterprise=parsed.enterprise_uscc, consent_id=""),),
            asking=_SelfAsk(providers=providers, fields=fields, digest=digest),
        )
        return self.admission.admit_blocking(request)

    # -- all data held on it -----------------------------------------------------------

    def my_data(self, caller: Peer, req: subject_pb2.GetMyDataRequest) -> MyData:
        parsed, _binding = self._identify(caller, MY_DATA.method, req.query, req.enterprise_binding)
        digest = hashlib.sha256(req.query.query).hexdigest()
        admitted = self._admit(caller, parsed, MY_DATA, self.providers, (), digest)
        request = subject_pb2.GetSubjectReportRequest(query=req.query, enterprise_binding=req.enterprise_binding)
        calls: list[tuple[str, Future[Any]]] = [
            (name, stub.GetSubjectReport.future(request, timeout=self.timeout))
            for name, stub in sorted(self._stubs.items())
        ]
        answers: list[tuple[str, Any]] = []
        unavailable: list[str] = []
        for name, call in calls:
            try:
                box = call.result().sealed
            except grpc.RpcError as err:
                log.info("subject report from %s failed: %s", name, decode_rpc_error(err).reason)
                unavailable.append(name)
                continue
            if box.recipient_id != caller.party_id or not box.ciphertext:
                unavailable.append(name)
                continue
            answers.append((name, box))
        if not answers and unavailable:
            self.admission.failed(admitted, Reason.PROVIDER_UNAVAILABLE.value)
        return MyData(request_id=parsed.request_id, answers=tuple(answers), unavailable=tuple(unavailable))

    # -- objections and repair applications ------------------------------------------------

    def file_case(self, caller: Peer, req: subject_pb2.FileCaseRequest) -> tuple[str, int]:
        parsed, _binding = self._identify(caller, FILE_CASE.method, req.query, req.enterprise_binding)
        spec = self.catalog.fields.get(req.field)
        try:
            if spec is None or spec.provider != req.provider:
                raise ValidationError(f"{req.field!r} is not a catalog field of provider {req.provider!r}")
            if req.kind not in (subject_pb2.CASE_KIND_OBJECTION, subject_pb2.CASE_KIND_REPAIR):
                raise ValidationError("case kind missing")
            if not ids.is_request_id(req.case_id):
                raise ValidationError("case id missing or malformed")
            if req.sealed.recipient_id != req.provider or req.sealed.context != req.case_id:
                raise ValidationError("the filing is not sealed to the owning provider for this case")
            if len(req.sealed.ciphertext) > 2 * subj.MAX_EVIDENCE_BYTES:
                raise ValidationError("filing too large")
        except XinrongError as exc:
            raise self._refuse(caller, FILE_CASE.method, exc, enterprise=parsed.enterprise_uscc) from None
        admitted = self._admit(
            caller, parsed, FILE_CASE, (req.provider,), (req.field,), hashlib.sha256(req.sealed.ciphertext).hexdigest()
        )
        stub = self._stubs[req.provider]
        try:
            response = stub.AcceptCase(
                subject_pb2.AcceptCaseRequest(
                    query=req.query, enterprise_binding=req.enterprise_binding, case_id=req.case_id, sealed=req.sealed
                ),
                timeout=self.timeout,
            )
        except grpc.RpcError as err:
            remote = decode_rpc_error(err)
            failure = agent_failure(req.provider, remote)
            if remote.reason in (Reason.INVALID_ARGUMENT.value, Reason.FAILED_PRECONDITION.value):
                # About the enterprise's own record, to the enterprise: no oracle; say why.
                failure = XinrongError(remote.message, reason=Reason(remote.reason), public=remote.message)
            self.admission.failed(admitted, failure.reason.value)
            raise failure from None
        return req.case_id, int(response.state)

    # -- consents: list, pause, resume ---------------------------------------------------------

    def list_consents(self, caller: Peer) -> list[subject_pb2.ConsentListing]:
        if caller.role != ENTERPRISE:
            raise self._refuse(
                caller,
                "ListMyConsents",
                XinrongError("only an enterprise lists its consents", reason=Reason.CALLER_NOT_ALLOWED),
            )
        now = self.clock()
        rows = self.db.query(
            "SELECT consent_id FROM consents WHERE enterprise = ? ORDER BY registered_ms", (caller.party_id,)
        )
        listing: list[subject_pb2.ConsentListing] = []
        for (cid,) in rows:
            record = self.consents.get(str(cid))
            if record is None or record.enterprise != caller.party_id:
                continue
            consent = record.verified.consent
            listing.append(
                subject_pb2.ConsentListing(
                    consent_id=record.consent_id,
                    grantee_id=record.grantee,
                    purpose=consent.purpose,
                    state=record.effective_state(now),  # type: ignore[arg-type]
                    uses=record.uses,
                    max_uses=consent.max_uses,
                    valid_until=consent.valid_until,
                    fields=sorted(record.verified.scope),
                )
            )
        self._audit(
            AuditEvent(
                caller_role=caller.role,
                caller_id=caller.party_id,
                method="ListMyConsents",
                decision=Decision.ALLOWED,
                enterprise=caller.party_id,
            )
        )
        return listing

    def change_state(
        self, caller: Peer, signed: subject_pb2.SignedConsentStateChange
    ) -> tuple[str, int, tuple[str, ...]]:
        """Pause or resume: enterprise-signed, fresh, never replayed, never out of REVOKED or EXPIRED."""
        method = "ChangeConsentState"
        now = self.clock()
        base: dict[str, Any] = {}
        if caller.role != ENTERPRISE:
            raise self._refuse(
                caller, method, XinrongError("only the enterprise pauses or resumes", reason=Reason.CALLER_NOT_ALLOWED)
            )
        try:
            claimed = subject_pb2.ConsentStateChange.FromString(signed.change)
        except Exception:
            raise self._refuse(caller, method, ConsentError("state change does not parse")) from None
        base["consent_id"] = ids.safe_consent_id(claimed.consent_id)
        record = self.consents.get(claimed.consent_id)
        if record is None or record.enterprise != caller.party_id:
            raise self._refuse(caller, method, ConsentError("unknown consent or not the caller's"), **base)
        base["enterprise"] = record.enterprise
        verified = self._verify_change(signed, record)
        if verified is None:
            raise self._refuse(caller, method, ConsentError("state change not authentic"), **base)
        change, binding = verified
        if change.consent_id != record.consent_id:
            raise self._refuse(caller, method, ConsentError("state change names another consent"), **base)
        if abs(now - change.signed_at_ms / 1000) > self.skew:
            raise self._refuse(
                caller, method, XinrongError("state change signed too long ago", reason=Reason.REQUEST_STALE), **base
            )
        state = record.effective_state(now)
        if state not in (ACTIVE, PAUSED):
            raise self._refuse(
                caller,
                method,
                XinrongError(
                    "a revoked or expired consent cannot be paused or resumed",
                    reason=Reason.FAILED_PRECONDITION,
                    # The enterprise's own consent: its state is no secret from it.
                    public=f"the consent is {consent_state_name(state).lower()}: "
                    "only an active or paused consent can be paused or resumed",
                ),
                **base,
            )
        target = PAUSED if change.action == subject_pb2.CONSENT_ACTION_PAUSE else ACTIVE
        key = caller_key(caller.role, caller.party_id)
        providers = self.providers
        with self.db.lock:
            full = self.replay.refusal(key, "chg:" + change.change_id, now)
            if full is not None:
                raise self._refuse(caller, method, full, **base)
            if self.replay.seen(key, "chg:" + change.change_id):
                raise self._refuse(
                    caller, method, XinrongError("state change seen before", reason=Reason.REQUEST_REPLAYED), **base
                )
            request = subject_pb2.UpdateConsentPauseRequest(change=signed, enterprise_binding=binding)
            with self.db.transaction() as tx:
                self.replay.record(tx, key, "chg:" + change.change_id, now)
                self.consents.set_state(tx, record, target)
                # Durable with the state: the newest change per consent and provider, not yet acknowledged.
                tx.executemany(
                    "INSERT INTO pause_pushes (consent_id, provider, request, acked_ms, attempts, last_reason, "
                    "next_attempt_ms) VALUES (?, ?, ?, NULL, 0, '', 0) ON CONFLICT (consent_id, provider) DO UPDATE "
                    "SET request = excluded.request, acked_ms = NULL, attempts = 0, last_reason = '', "
                    "next_attempt_ms = 0",
                    [(record.consent_id, provider, request.SerializeToString()) for provider in providers],
                )
                self.audit.append(
                    tx,
                    AuditEvent(
                        caller_role=caller.role,
                        caller_id=caller.party_id,
                        method=method,
                        decision=Decision.ALLOWED,
                        reason="PAUSE" if target == PAUSED else "RESUME",
                        providers=providers,
                        **base,
                    ),
                    int(now * 1000),
                )
        notified = self.push_pending(only=record.consent_id)
        return record.consent_id, target, tuple(p for c, p in notified if c == record.consent_id)

    def _verify_change(
        self, signed: subject_pb2.SignedConsentStateChange, record: ConsentRecord
    ) -> tuple[subject_pb2.ConsentStateChange, Any] | None:
        candidates = []
        current = self.registry.get(ENTERPRISE, record.enterprise)
        if current is not None:
            candidates.append(current.signed)
        if record.enterprise_binding.signed.binding not in [c.binding for c in candidates]:
            candidates.append(record.enterprise_binding.signed)
        for binding in candidates:
            try:
                return subj.verify_state_change(self.ca, signed, binding), binding
            except XinrongError:
                continue
        return None

    def _pending_rows(
        self, *, provider: str | None = None, consent_id: str | None = None, due_ms: int | None = None
    ) -> list[tuple[str, str, bytes, int]]:
        """Unacknowledged pushes (consent, provider, request bytes, attempts), in key order."""
        sql = "SELECT consent_id, provider, request, attempts FROM pause_pushes WHERE acked_ms IS NULL"
        params: list[Any] = []
        if provider is not None:
            sql += " AND provider = ?"
            params.append(provider)
        if consent_id is not None:
            sql += " AND consent_id = ?"
            params.append(consent_id)
        if due_ms is not None:
            sql += " AND next_attempt_ms <= ?"
            params.append(due_ms)
        rows = self.db.query(sql + " ORDER BY consent_id, provider", params)
        return [(str(c), str(p), bytes(r), int(a)) for c, p, r, a in rows]

    def pending_pauses(self, provider: str) -> list[subject_pb2.UpdateConsentPauseRequest]:
        """The newest unacknowledged pause / resume per consent for ``provider`` (for an agent's pull)."""
        return [
            subject_pb2.UpdateConsentPauseRequest.FromString(raw)
            for _c, _p, raw, _a in self._pending_rows(provider=provider)
        ]

    def push_pending(self, *, force: bool = True, only: str | None = None) -> list[tuple[str, str]]:
        """Push the pending pauses / resumes (all with ``force``, else those due by their
        backoff; ``only``: one consent's); returns the (consent, provider) acknowledged."""
        due = None if force else int(self.clock() * 1000)
        with self._push_lock:
            return self._push(self._pending_rows(consent_id=only, due_ms=due))

    def deliver_reconnected(self) -> list[tuple[str, str]]:
        """Push every pending change to watched providers whose agent connects again (as revocations)."""
        with self._waiting_lock:
            waiting = sorted(self._waiting)
        back = {p for p in waiting if self._reachable(p)}
        if not back:
            return []
        with self._waiting_lock:
            self._waiting -= back  # a failure below adds the provider again
        with self._push_lock:
            acked = self._push([row for row in self._pending_rows() if row[1] in back])
        if acked:
            log.info("pauses / resumes delivered to returning agents: %d", len(acked))
        return acked

    def _reachable(self, provider: str, timeout: float = 0.2) -> bool:
        return connects_within(self._channels.get(provider), timeout)

    def _push(self, rows: list[tuple[str, str, bytes, int]]) -> list[tuple[str, str]]:
        calls = []
        for cid, provider, raw, attempts in rows:
            stub = self._stubs.get(provider)
            if stub is None:
                continue
            request = subject_pb2.UpdateConsentPauseRequest.FromString(raw)
            calls.append((cid, provider, raw, attempts, stub.UpdateConsentPause.future(request, timeout=self.timeout)))
        acked: list[tuple[str, str]] = []
        for cid, provider, raw, attempts, call in calls:
            now = self.clock()
            try:
                call.result()
            except grpc.RpcError as err:
                reason = decode_rpc_error(err).reason
                delay = backoff_seconds(self._retry_seconds, attempts)
                with self._waiting_lock:
                    self._waiting.add(provider)
                with self.db.transaction() as tx:
                    # Only the change that was pushed: a newer one stored meanwhile starts afresh.
                    tx.execute(
                        "UPDATE pause_pushes SET attempts = attempts + 1, last_reason = ?, next_attempt_ms = ? "
                        "WHERE consent_id = ? AND provider = ? AND request = ? AND acked_ms IS NULL",
                        (reason[:64], int((now + delay) * 1000), cid, provider, raw),
                    )
                log.warning("pause push of consent %s to %s failed (%s); retry in %.0fs", cid, provider, reason, delay)
                continue
            with self.db.transaction() as tx:
                tx.execute(
                    "UPDATE pause_pushes SET acked_ms = ?, attempts = attempts + 1, last_reason = '' "
                    "WHERE consent_id = ? AND provider = ? AND request = ? AND acked_ms IS NULL",
                    (int(now * 1000), cid, provider, raw),
                )
            acked.append((cid, provider))
            self._audit(
                AuditEvent(
                    caller_role="node",
                    caller_id=self._node_id,
                    method="PushConsentPause",
                    decision=Decision.ALLOWED,
                    consent_id=cid,
                    providers=(provider,),
                )
            )
        return acked

    def case_stats(self) -> dict[str, subject_pb2.GetCaseStatsResponse | None]:
        """Each agent's counts of open and overdue cases (None: it did not answer)."""
        return _case_stats(self._stubs, self.timeout)

    def watch_overdue(self) -> dict[str, int]:
        """Maintenance: warn the platform's operator of objections a provider left past its deadline."""
        overdue = {n: int(s.overdue_objections) for n, s in self.case_stats().items() if s is not None}
        for name, count in sorted(overdue.items()):
            if count and self._overdue.get(name) != count:
                log.warning("provider %s has %d objection(s) open past its deadline", name, count)
        self._overdue = overdue
        return overdue


def _case_stats(stubs: dict[str, Any], timeout: float) -> dict[str, subject_pb2.GetCaseStatsResponse | None]:
    request = subject_pb2.GetCaseStatsRequest()
    calls = [(name, stub.GetCaseStats.future(request, timeout=timeout)) for name, stub in sorted(stubs.items())]
    out: dict[str, subject_pb2.GetCaseStatsResponse | None] = {}
    for name, call in calls:
        try:
            out[name] = call.result()
        except grpc.RpcError:
            out[name] = None
    return out


def case_stats_from_config(
    endpoints: tuple[ProviderEndpoint, ...], credentials: PartyCredentials, timeout: float
) -> dict[str, subject_pb2.GetCaseStatsResponse | None]:
    """For ``xinrong node cases``: ask every configured agent with the node's own credentials."""
    channels = [
        (e.name, secure_channel(e.address, credentials, server_role="provider", server_id=e.name)) for e in endpoints
    ]
    try:
        return _case_stats({n: subject_pb2_grpc.AgentSubjectServiceStub(c) for n, c in channels}, timeout)
    finally:
        for _name, channel in channels:
            channel.close()


def my_data_to_proto(result: MyData) -> subject_pb2.GetMyDataResponse:
    return subject_pb2.GetMyDataResponse(
        request_id=result.request_id,
        answers=[node_pb2.ProviderAnswer(provider=name, sealed=box) for name, box in result.answers],
        unavailable=list(result.unavailable),
    )


__all__ = ["REVOKED", "MyData", "SubjectRights", "my_data_to_proto"]
