"""The node's domain: who may do what, in which order, and what is recorded.

The gRPC servicer is a thin shell around ``NodeCore``. Every decision here
appends an audit entry, allowed or refused.

Verify / GetIndicators run their checks in a fixed order:

 1. caller is a registered institution             CALLER_NOT_ALLOWED
 2. request id well formed                         INVALID_ARGUMENT
 3. requested_at within the clock-skew window      REQUEST_STALE
 4. request id not seen before (then consumed)     REQUEST_REPLAYED
 5. claim count, then every claim / indicator     INVALID_ARGUMENT, UNKNOWN_FIELD,
    against the catalog's probing policy           THRESHOLD_NOT_PUBLISHED, FORM_NOT_ALLOWED, ...
 6. USCC syntax (check characters), consent id     INVALID_ARGUMENT
 7. each provider routable                         PROVIDER_UNAVAILABLE
 8. consent lookup                                 ACCESS_DENIED (uniform)
 9. consent use (grantee, state, window, scope)    CONSENT_* / CLAIM_OUT_OF_SCOPE
10. budgets: per consent, per day, per enterprise  CONSENT_USES_EXHAUSTED, CONSENT_DAILY_LIMIT,
                                                   ENTERPRISE_BUDGET_EXHAUSTED

Steps 1-7 do not depend on the enterprise (a USCC's check characters are
public arithmetic), so their precise reasons are no oracle. From step 4 on,
the request id is consumed whatever the outcome. Step 8 collapses unknown
consent, consent for another enterprise and unknown enterprise into one
denial with identical status, reason and message; the node reads no data
before a consent is valid, so "no data" cannot show either. Refusals
consume no use and no budget.

A use is consumed when the request is admitted (step 10), before the
fan-out, and is not refunded if an agent then fails or refuses. Counting
before the call is what makes check-and-increment atomic under
concurrency; and a timed-out agent may well have read the data and signed
an answer that was lost on the way, so "attempted access" is the only
count the node can stand behind. The audit log then holds an ALLOWED entry
followed by a FAILED entry with the reason; the institution retries with
a new request id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xinrong import uscc as uscc_mod
from xinrong.cache import BoundedCache
from xinrong.catalog import Catalog, Form
from xinrong.claims import FORM_TO_PROTO, PROTO_TO_FORM, CheckedClaim, check_claim, check_indicator, claim_text
from xinrong.consent import check_consent_use, verify_revocation, verify_signed_consent
from xinrong.errors import ConsentError, Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.binding import PROTO_TO_ROLE, VerifiedBinding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import PartyCredentials, read_binding_file
from xinrong.node.audit import AuditEvent, Decision, HashChainAuditLog, claims_digest
from xinrong.node.config import NodeConfig
from xinrong.node.consents import REVOKED, ConsentConflict, ConsentRecord, ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.limits import EnterpriseBudget, ReplayGuard, utc_day
from xinrong.node.registry import PartyRegistry
from xinrong.node.routing import AgentPool, PushOutcome
from xinrong.rpc.auth import Peer
from xinrong.v1 import agent_pb2, common_pb2, node_pb2

log = logging.getLogger(__name__)

# Audit reason of an admitted request whose caller went away before the answer.
CANCELLED = "CANCELLED"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_PRINTABLE_ID = re.compile(r"^[\x21-\x7e]{1,128}$")

# Proto enum values as plain ints (requests carry ints on the Python side).
_FORM_OF: dict[int, Form] = {int(k): v for k, v in PROTO_TO_FORM.items()}
_ROLE_OF: dict[int, str] = {int(k): v for k, v in PROTO_TO_ROLE.items()}

INSTITUTION = "institution"
ENTERPRISE = "enterprise"


@dataclass(frozen=True)
class VerifyInput:
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    claims: tuple[common_pb2.Claim, ...]


@dataclass(frozen=True)
class IndicatorsInput:
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent_id: str
    queries: tuple[tuple[str, int], ...]  # (field, DisclosureForm)


@dataclass(frozen=True)
class Answers:
    request_id: str
    answers: tuple[tuple[str, common_pb2.SealedBox], ...]


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


@dataclass(frozen=True)
class _Checked:
    """The enterprise-independent part of a request, checked before the lock."""

    needs: tuple[tuple[str, Form], ...]
    texts: tuple[str, ...]
    fields: tuple[str, ...]
    groups: dict[str, list[Any]]  # provider -> canonical Claim / IndicatorQuery protos


@functools.lru_cache(maxsize=65_536)
def _valid_uscc(code: str) -> bool:
    """USCC syntax (check characters); cached: the same enterprises are asked about all day."""
    return uscc_mod.is_valid(code)


def _safe(value: str, pattern: re.Pattern[str] = _PRINTABLE_ID) -> str:
    """Caller-supplied text is recorded only when it is a plausible id."""
    return value if pattern.match(value) else ""


class NodeCore:
    """Registry, consents, policy, budgets, audit and routing behind one façade."""

    def __init__(
        self,
        config: NodeConfig,
        credentials: PartyCredentials,
        catalog: Catalog,
        db: Database,
        agents: AgentPool,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.credentials = credentials
        self.catalog = catalog
        self.db = db
        self.agents = agents
        self.clock = clock
        self.ca = CaVerifier(credentials.ca_cert_pem)
        self.registry = PartyRegistry(db, self.ca, clock=clock)
        self.consents = ConsentRegistry(db, self.ca, self.registry, clock=clock)
        self.replay = ReplayGuard(db, retention_seconds=2 * config.max_clock_skew_seconds + 60)
        self.budget = EnterpriseBudget(db, daily_limit=config.enterprise_daily_budget)
        self.audit = HashChainAuditLog(db.query)
        # Accepted claims by their exact bytes: banks ask the same published
        # ladder steps all day. A refused claim is re-checked every time, so
        # the cache cannot be grown with junk.
        self._claims: BoundedCache[bytes, CheckedClaim] = BoundedCache(4096)

    # -- start-up ----------------------------------------------------------

    def load(self) -> None:
        """Load persisted state, then CA-check and upsert every configured binding.

        Raises ValidationError if a configured binding is not what the config
        says it is: a node that cannot vouch for its parties must not start.
        """
        now = self.clock()
        self.registry.load()
        configured: list[VerifiedBinding] = [self.credentials.binding]
        for endpoint in self.config.providers:
            signed = _read_binding(endpoint.binding)
            try:
                binding = self.registry.verify(signed, role="provider", party_id=endpoint.name)
            except SignatureError:
                raise ValidationError(
                    f"binding {endpoint.binding} is not a valid CA-signed provider binding for {endpoint.name!r}"
                ) from None
            if binding.provider != endpoint.name:
                raise ValidationError(
                    f"binding {endpoint.binding} is for provider {binding.provider!r}, not {endpoint.name!r}"
                )
            configured.append(binding)
        for entry in self.config.institutions:
            signed = _read_binding(entry.binding)
            try:
                configured.append(self.registry.verify(signed, role=INSTITUTION, party_id=entry.id))
            except SignatureError:
                raise ValidationError(
                    f"binding {entry.binding} is not a valid CA-signed institution binding for {entry.id!r}"
                ) from None
        with self.db.transaction() as tx:
            for binding in configured:
                self.registry.upsert(tx, binding, source="config")
            dropped = self.registry.retain_configured(tx, {(b.role, b.party_id) for b in configured})
        if dropped:
            log.warning("no longer configured, access removed: %s", ", ".join(f"{r} {p}" for r, p in dropped))
        consents = self.consents.load()
        replay = self.replay.load(now)
        self.budget.load(now)
        head_seq, head = self.audit.head()
        log.info(
            "node state loaded: %d parties configured, %d consents, %d live replay ids, audit head seq %d %s",
            len(configured),
            consents,
            replay,
            head_seq,
            head.hex()[:16],
        )

    # -- helpers -----------------------------------------------------------

    def _record(self, event: AuditEvent, now: float) -> None:
        with self.db.transaction() as tx:
            self.audit.append(tx, event, int(now * 1000))

    def _refuse(self, event: AuditEvent, error: XinrongError, now: float) -> XinrongError:
        """Audit a refusal and hand back the error to raise."""
        self._record(_with_refusal(event, error), now)
        return error

    def _institution_binding(self, caller: Peer) -> VerifiedBinding | None:
        if caller.role != INSTITUTION:
            return None
        return self.registry.get(INSTITUTION, caller.party_id)

    # -- Verify / GetIndicators ------------------------------------------

    async def verify(self, caller: Peer, req: VerifyInput) -> Answers:
        def check() -> _Checked:
            if not req.claims or len(req.claims) > self.config.max_claims_per_request:
                raise ValidationError(f"{len(req.claims)} claims; 1..{self.config.max_claims_per_request} allowed")
            needs: list[tuple[str, Form]] = []
            texts: list[str] = []
            groups: dict[str, list[Any]] = {}
            for claim in req.claims:
                key = claim.SerializeToString(deterministic=True)
                checked = self._claims.get(key)
                if checked is None:
                    checked = check_claim(self.catalog, claim)
                    self._claims.put(key, checked)
                needs.append((checked.spec.key, checked.form))
                texts.append(checked.text)
                groups.setdefault(checked.spec.provider, []).append(checked.claim)
            return _Checked(tuple(needs), tuple(texts), tuple(sorted({n[0] for n in needs})), groups)

        def raw_texts() -> list[str]:
            return [claim_text(c) for c in req.claims]

        def build(provider: str, items: list[Any], record: ConsentRecord, audience: VerifiedBinding) -> object:
            return agent_pb2.EvaluateClaimsRequest(
                request_id=req.request_id,
                requested_at=req.requested_at,
                enterprise_uscc=req.enterprise_uscc,
                consent=record.verified.signed,
                audience_binding=audience.signed,
                claims=items,
            )

        return await self._access(
            caller,
            "Verify",
            req.request_id,
            req.requested_at,
            req.enterprise_uscc,
            req.consent_id,
            check,
            raw_texts,
            build,
            self.agents.evaluate_claims,
        )

    async def get_indicators(self, caller: Peer, req: IndicatorsInput) -> Answers:
        def check() -> _Checked:
            if not req.queries or len(req.queries) > self.config.max_claims_per_request:
                raise ValidationError(f"{len(req.queries)} queries; 1..{self.config.max_claims_per_request} allowed")
            needs: list[tuple[str, Form]] = []
            texts: list[str] = []
            groups: dict[str, list[Any]] = {}
            for field, proto_form in req.queries:
                form = _FORM_OF.get(proto_form)
                if form is None:
                    raise XinrongError("indicator without a disclosure form", reason=Reason.INVALID_CLAIM)
                spec = check_indicator(self.catalog, field, form)
                needs.append((spec.key, form))
                texts.append(f"{spec.key}:{form.value}")
                groups.setdefault(spec.provider, []).append(
                    node_pb2.IndicatorQuery(field=spec.key, form=FORM_TO_PROTO[form])
                )
            return _Checked(tuple(needs), tuple(texts), tuple(sorted({n[0] for n in needs})), groups)

        def raw_texts() -> list[str]:
            return [f"{field}:{form}" for field, form in req.queries]

        def build(provider: str, items: list[Any], record: ConsentRecord, audience: VerifiedBinding) -> object:
            return agent_pb2.EvaluateIndicatorsRequest(
                request_id=req.request_id,
                requested_at=req.requested_at,
                enterprise_uscc=req.enterprise_uscc,
                consent=record.verified.signed,
                audience_binding=audience.signed,
                queries=items,
            )

        return await self._access(
            caller,
            "GetIndicators",
            req.request_id,
            req.requested_at,
            req.enterprise_uscc,
            req.consent_id,
            check,
            raw_texts,
            build,
            self.agents.evaluate_indicators,
        )

    async def _access(
        self,
        caller: Peer,
        method: str,
        request_id: str,
        requested_at: int,
        enterprise: str,
        consent_id: str,
        check: Callable[[], _Checked],
        raw_texts: Callable[[], Sequence[str]],
        build: Callable[[str, list[Any], ConsentRecord, VerifiedBinding], object],
        fan_out: Callable[..., Awaitable[list[tuple[str, common_pb2.SealedBox]]]],
    ) -> Answers:
        """Admission (synchronous: SQLite under the lock), then the agents (awaited).

        Runs on the node's event loop: the admission blocks the loop for its
        fraction of a millisecond, which is cheaper than handing the request
        to a thread and back.
        """
        now = self.clock()
        # What the audit entry may hold of caller-supplied text: plausible ids only.
        safe_request_id = _safe(request_id, _REQUEST_ID)
        # Length first: only 18-character strings reach the (bounded) cache.
        safe_enterprise = enterprise if len(enterprise) == 18 and _valid_uscc(enterprise) else ""
        safe_consent_id = _safe(consent_id)
        checked: _Checked | None = None

        def event(decision: Decision, reason: str = "") -> AuditEvent:
            # Built once per decision, from whatever has been checked so far.
            return AuditEvent(
                caller_role=caller.role,
                caller_id=caller.party_id,
                method=method,
                decision=decision,
                reason=reason,
                request_id=safe_request_id,
                enterprise=safe_enterprise,
                consent_id=safe_consent_id,
                providers=tuple(sorted(checked.groups)) if checked else (),
                fields=checked.fields if checked else (),
                claims_sha256=claims_digest(checked.texts if checked else raw_texts()),
            )

        def refuse(error: XinrongError) -> XinrongError:
            return self._refuse(event(Decision.REFUSED), error, now)

        # 1. Only registered institutions ask about enterprises.
        audience = self._institution_binding(caller)
        if audience is None:
            raise refuse(
                XinrongError(f"{caller.role} {caller.party_id} may not call {method}", reason=Reason.CALLER_NOT_ALLOWED)
            )
        # 2-3. Well-formed, fresh.
        if not safe_request_id:
            raise refuse(ValidationError("request id missing or malformed"))
        if abs(now - requested_at) > self.config.max_clock_skew_seconds:
            raise refuse(XinrongError(f"requested_at off by {now - requested_at:.0f}s", reason=Reason.REQUEST_STALE))
        # 5-7 are pure and computed outside the lock; their error is raised in order below.
        check_error: XinrongError | None = None
        try:
            checked = check()
            if not safe_enterprise:
                raise ValidationError("enterprise USCC malformed")
            if not safe_consent_id:
                raise ValidationError("consent id missing or malformed")
            unroutable = sorted(set(checked.groups) - self.agents.providers)
            if unroutable:
                raise XinrongError(f"no agent configured for {unroutable}", reason=Reason.PROVIDER_UNAVAILABLE)
        except XinrongError as exc:
            check_error = exc
        day = utc_day(now)
        ts_ms = int(now * 1000)
        refusal: XinrongError | None
        with self.db.lock:
            # 4. Replay: check and consume the id atomically under the lock.
            if self.replay.seen(request_id):
                raise refuse(XinrongError("request id seen before", reason=Reason.REQUEST_REPLAYED))
            try:
                if check_error is not None:
                    raise check_error
                assert checked is not None
                # 8. The uniform denial: one error, whatever the cause.
                record = self.consents.get(consent_id)
                if record is None or record.enterprise != enterprise or record.enterprise_binding.not_after < now:
                    raise ConsentError("no usable consent for this enterprise")
                # 9. Grantee, state, validity window, scope.
                check_consent_use(
                    record.verified,
                    enterprise_uscc=enterprise,
                    audience_id=caller.party_id,
                    needs=checked.needs,
                    now=now,
                    state=record.state,
                )
                # 10. Budgets, checked together and incremented together below.
                consent = record.verified.consent
                if record.uses >= consent.max_uses:
                    raise XinrongError("max uses reached", reason=Reason.CONSENT_USES_EXHAUSTED)
                if consent.max_uses_per_day and record.uses_on(day) >= consent.max_uses_per_day:
                    raise XinrongError("daily uses reached", reason=Reason.CONSENT_DAILY_LIMIT)
                if self.budget.exhausted(enterprise, day):
                    raise XinrongError("enterprise daily budget reached", reason=Reason.ENTERPRISE_BUDGET_EXHAUSTED)
            except XinrongError as exc:
                refusal = exc
                with self.db.transaction(durable=False) as tx:
                    self.replay.record(tx, request_id, now)
                    self.audit.append(tx, event(Decision.REFUSED, refusal.reason.value), ts_ms)
            else:
                refusal = None
                admitted = event(Decision.ALLOWED)
                with self.db.transaction(durable=False) as tx:
                    self.replay.record(tx, request_id, now)
                    self.consents.consume(tx, record, day)
                    self.budget.consume(tx, enterprise, day)
                    self.audit.append(tx, admitted, ts_ms)
        # Group commit outside the lock (see node.db): nothing leaves the node,
        # neither a refusal nor a call to an agent, before this unit is durable.
        # A refusal waits here; an admitted call is committed by its agent
        # stream right before the batch carrying it is written, one COMMIT
        # per batch (node.routing).
        if refusal is not None:
            await self.db.wait_durable_async(tx.token)
            raise refusal from None
        assert checked is not None and record is not None
        # Fan-out outside the lock: agents answer concurrently for many requests.
        requests = {p: build(p, items, record, audience) for p, items in checked.groups.items()}
        try:
            answers = await fan_out(requests, recipient_id=caller.party_id, durable_token=tx.token)
        except XinrongError as failure:
            self._record(_replace(admitted, decision=Decision.FAILED, reason=failure.reason.value), self.clock())
            raise
        except asyncio.CancelledError:
            # The institution hung up (or its deadline passed) while agents
            # were answering: the use stays consumed, and the log says the
            # answer never left.
            self._record(_replace(admitted, decision=Decision.FAILED, reason=CANCELLED), self.clock())
            raise
        return Answers(request_id=request_id, answers=tuple(answers))

    # -- consents ----------------------------------------------------------

    def register_consent(self, caller: Peer, signed: common_pb2.SignedConsent) -> tuple[str, int]:
        now = self.clock()
        event = AuditEvent(
            caller_role=caller.role, caller_id=caller.party_id, method="RegisterConsent", decision=Decision.REFUSED
        )
        try:
            verified = verify_signed_consent(self.ca, signed)
            binding = self.registry.verify(signed.enterprise_binding, role=ENTERPRISE, party_id=verified.enterprise)
        except (ConsentError, SignatureError) as exc:
            raise self._refuse(event, ConsentError(f"consent not authentic: {exc.detail}"), now) from None
        consent = verified.consent
        event = _replace(
            event,
            enterprise=verified.enterprise,
            consent_id=_safe(verified.consent_id),
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

    def consent_status(self, caller: Peer, consent_id: str) -> ConsentStatus:
        now = self.clock()
        event = AuditEvent(
            caller_role=caller.role,
            caller_id=caller.party_id,
            method="GetConsentStatus",
            decision=Decision.REFUSED,
            consent_id=_safe(consent_id),
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

    def revoke_consent(self, caller: Peer, signed: common_pb2.SignedConsentRevocation) -> RevokeResult:
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
        event = _replace(event, consent_id=_safe(claimed.consent_id))
        record = self.consents.get(claimed.consent_id)
        if record is None or record.enterprise != caller.party_id:
            raise self._refuse(event, ConsentError("unknown consent or not the caller's"), now)
        event = _replace(event, enterprise=record.enterprise)
        verified_with = self._verify_revocation(signed, record)
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
        interval = self.config.revocation_retry_seconds
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
                            caller_id=self.credentials.party_id,
                            method="PushRevocation",
                            decision=Decision.ALLOWED,
                            enterprise=record.enterprise,
                            consent_id=record.consent_id,
                            providers=(provider,),
                        ),
                        int(now * 1000),
                    )
                else:
                    # Exponential backoff from the retry interval, capped at an hour.
                    delay = min(interval * 2 ** min(state.attempts, 12), max(interval, 3600.0))
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

    def maintain(self) -> None:
        """Periodic housekeeping: forget expired replay ids and past budget days."""
        now = self.clock()
        self.replay.prune(now)
        self.budget.prune_memory(now)

    # -- directory ---------------------------------------------------------

    def list_parties(self, caller: Peer, role: int) -> list[common_pb2.SignedPartyBinding]:
        role_name = _ROLE_OF.get(role) if role else None
        if role and role_name is None:
            raise ValidationError(f"unknown role {role}")
        include = [(ENTERPRISE, caller.party_id)] if caller.role == ENTERPRISE else []
        return self.registry.list(role_name, include=include)

    def get_catalog(self) -> tuple[bytes, str]:
        return self.catalog.raw, self.catalog.sha256


def _replace(event: AuditEvent, **changes: Any) -> AuditEvent:
    return dataclasses.replace(event, **changes)


def _with_refusal(event: AuditEvent, error: XinrongError) -> AuditEvent:
    return _replace(event, decision=Decision.REFUSED, reason=error.reason.value)


def _read_binding(path: Path) -> common_pb2.SignedPartyBinding:
    try:
        return read_binding_file(path)
    except Exception:
        raise ValidationError(f"binding file {path} cannot be read as a SignedPartyBinding") from None
