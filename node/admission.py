"""Admission: the one path by which a consented request about an enterprise gets in.

Every consented service (Verify, GetIndicators, ScoreEnterprises, and the
ones to come) describes itself as a ``Purpose`` and what it asks as an
``Ask``, then calls ``Admission.admit`` once. The checks run in a fixed
order, and every decision, allowed or refused, is an audit entry:

 1. caller is of the purpose's role and registered       CALLER_NOT_ALLOWED
 2. request id well formed                               INVALID_ARGUMENT
 3. requested_at within the clock-skew window            REQUEST_STALE
 4. request id not seen before from this caller          REQUEST_REPLAYED
    (then consumed)
 5. what is asked, against the catalog's probing policy  INVALID_ARGUMENT, UNKNOWN_FIELD,
    (the service's ``Ask``)                              THRESHOLD_NOT_PUBLISHED, FORM_NOT_ALLOWED, ...
 6. USCC syntax (check characters), consent id syntax    INVALID_ARGUMENT (no consent id at all: step 8)
 7. each provider routable                               PROVIDER_NOT_CONNECTED
    and its agent not known down (breaker open)          PROVIDER_UNAVAILABLE + retry-after
 8. consent lookup                                       ACCESS_DENIED (uniform)
 9. consent use: grantee, state, window, scope, purpose  CONSENT_* / CLAIM_OUT_OF_SCOPE
10. budgets: per consent, per day, per enterprise        CONSENT_USES_EXHAUSTED, CONSENT_DAILY_LIMIT,
                                                         ENTERPRISE_BUDGET_EXHAUSTED

Steps 1-7 do not depend on the enterprise (a USCC's check characters are
public arithmetic), so their precise reasons are no oracle. From step 4 on,
the request id is consumed whatever the outcome. Step 8 collapses unknown
consent, consent for another enterprise and unknown enterprise into one
denial with identical status, reason and message; the node reads no data
before a consent is valid, so "no data" cannot show either. Refusals
consume no use and no budget.

A use is consumed when the request is admitted (step 10), before any agent
is asked, and is not refunded if an agent then fails or refuses. Counting
before the call is what makes check-and-increment atomic under
concurrency; and a timed-out agent may well have read the data and signed
an answer that was lost on the way, so "attempted access" is the only
count the node can stand behind. The audit log then holds an ALLOWED entry
followed by a FAILED entry (``Admission.failed``) with the reason.

The enterprise's daily budget is the one exception (issue 10, A6): it is
shared by every institution, so an agent outage must not let one bank's
retries shut every other bank out for the day. When the failure provably
reached no data (every agent concerned refused the request, or the call was
never handed to it: ``XinrongError.data_read`` is False), ``failed``
refunds the enterprise's budget; the consent's own use, the replay id and
the audit entries stay. A timeout after the call left is not refunded (the
agent may have read the data). And while a provider's agent is known down,
step 7 refuses at once with a retry-after, consuming nothing.

Steps 4-10 and their writes (replay id, uses, budget, audit entry) run
under the database lock as one unit, left uncommitted
(``transaction(durable=False)``): nothing the node decided may leave it
before that unit is durable. ``Admitted.token`` and ``Refused.token`` say
what to wait for; a caller on the event loop awaits it
(``admit_on_loop``), a caller in a worker thread blocks (``admit_blocking``).

A purpose with ``batch=True`` (scoring) asks about several enterprises at
once: steps 6 and 8-10 then apply to each subject, and a refused subject is
reported in ``Admitted.refused`` instead of failing the request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from xinrong import ids
from xinrong import uscc as uscc_mod
from xinrong.catalog import Form
from xinrong.consent import VALUE_QUERY_PURPOSES, check_consent_use, check_purpose
from xinrong.errors import ConsentError, Reason, ValidationError, XinrongError, provider_not_connected
from xinrong.jsontext import string_array
from xinrong.keys.binding import VerifiedBinding
from xinrong.node.audit import AuditEvent, AuditLog, Decision
from xinrong.node.consents import ConsentRecord, ConsentRegistry
from xinrong.node.db import Database
from xinrong.node.limits import EnterpriseBudget, ReplayGuard, caller_key, utc_day
from xinrong.node.registry import PartyRegistry
from xinrong.rpc.auth import Peer
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

INSTITUTION = "institution"


@dataclass(frozen=True)
class Purpose:
    """What a service is for, and so which callers and consents it admits.

    ``consent_purposes``: the consent purposes the service admits (empty:
    any, for the enterprise's own requests, which use no consent);
    ``covers_providers`` asks the consent's scope to name at least one
    field of every provider consulted (a model's providers) instead of the
    exact fields and forms asked.
    """

    name: str
    method: str
    consent_purposes: frozenset[int] = frozenset()
    covers_providers: bool = False
    batch: bool = False
    caller_role: str = INSTITUTION
    # The enterprise asks about itself (subject rights): no consent, no use, no budget;
    # steps 8-10 become "the subject is the caller" (else the uniform denial).
    self_service: bool = False


# Values (verdicts, brackets, grades) only under a consent given for a loan or its
# monitoring (xinrong.consent.VALUE_QUERY_PURPOSES); the agents check the same.
VERIFICATION = Purpose("verification", "Verify", consent_purposes=VALUE_QUERY_PURPOSES)
INDICATORS = Purpose("indicators", "GetIndicators", consent_purposes=VALUE_QUERY_PURPOSES)
SCORING = Purpose(
    "scoring",
    "ScoreEnterprises",
    consent_purposes=frozenset({common_pb2.CONSENT_PURPOSE_CREDIT_SCORING}),
    covers_providers=True,
    batch=True,
)
SELF_SERVICE = Purpose("self_service", "GetMyData", caller_role="enterprise", self_service=True)
# Product matching (xinrong.node.products): the node asks on the grantee bank's behalf,
# for every enterprise whose consent of purpose MATCHING names that bank; the bank
# itself learns nothing unless the enterprise applies.
MATCHING = Purpose(
    "matching",
    "MatchProducts",
    consent_purposes=frozenset({common_pb2.CONSENT_PURPOSE_MATCHING}),
    batch=True,
)
# Post-loan monitoring (issue 13 §4): a watch is admitted once, like a Verify of
# its claims, and only under a consent given for monitoring.
MONITORING = Purpose(
    "post_loan_monitoring",
    "RegisterWatch",
    consent_purposes=frozenset({common_pb2.CONSENT_PURPOSE_POST_LOAN_MONITORING}),
)


@dataclass(frozen=True)
class Ask:
    """What a request asks, checked against the catalog: enterprise-independent.

    ``items`` is the service's own payload per provider (canonical claim or
    indicator protos); admission reads only its keys.
    """

    needs: tuple[tuple[str, Form], ...]
    fields: tuple[str, ...]
    claims_sha256: str
    items: dict[str, list[Any]]

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted(self.items))


class Asking(Protocol):
    """A service's request shape: its checks (step 5) and what to log if they fail."""

    def check(self) -> Ask:
        """Raise a XinrongError if the request breaks the probing policy."""
        ...

    def raw_digest(self) -> str:
        """claims_sha256 over the request as sent, for refusals before ``check`` passed."""
        ...


@dataclass(frozen=True)
class Subject:
    enterprise: str
    consent_id: str


@dataclass(frozen=True)
class AccessRequest:
    purpose: Purpose
    caller: Peer
    request_id: str
    requested_at: int
    subjects: tuple[Subject, ...]
    asking: Asking


@dataclass(frozen=True)
class AdmittedSubject:
    subject: Subject
    consent: ConsentRecord | None  # None for SELF_SERVICE: the enterprise about itself
    event: AuditEvent  # its ALLOWED entry, to follow with a FAILED one
    leaf_index: int | None = None  # of that entry in the transparency log, once sequenced

    @property
    def record(self) -> ConsentRecord:
        if self.consent is None:
            raise RuntimeError("a self-service admission has no consent")
        return self.consent


@dataclass(frozen=True)
class Admitted:
    request: AccessRequest
    ask: Ask
    audience: VerifiedBinding
    admitted: tuple[AdmittedSubject, ...]
    refused: tuple[tuple[Subject, XinrongError], ...]
    token: int  # Database.wait_durable before anything decided here leaves the node


class Refused(Exception):
    """A refused request: its audit entry is written; wait for ``token``, then raise ``error``."""

    def __init__(self, error: XinrongError, token: int) -> None:
        super().__init__(error.reason.value)
        self.error = error
        self.token = token


def _valid_uscc(code: str) -> bool:
    """USCC syntax (check characters). The length is checked before the
    cache, so the cache holds 18-character keys only, never a caller's junk."""
    return len(code) == 18 and _valid_uscc_18(code)


@functools.lru_cache(maxsize=65_536)
def _valid_uscc_18(code: str) -> bool:
    """Cached: the same enterprises are asked about all day."""
    return uscc_mod.is_valid(code)


def _count(admission: Admission, request: AccessRequest, admitted: Admitted | None, error: Exception | None) -> None:
    purpose = request.purpose.name
    try:
        if isinstance(error, XinrongError):
            admission.on_decision(purpose, error.reason.value)
        elif admitted is not None:
            for _ in admitted.admitted:
                admission.on_decision(purpose, "ALLOWED")
            for _, refusal in admitted.refused:
                admission.on_decision(purpose, refusal.reason.value)
    except Exception:  # metrics never change a decision
        log.debug("admission metrics hook failed", exc_info=True)


def _counted_async(
    admit: Callable[[Admission, AccessRequest], Awaitable[Admitted]],
) -> Callable[[Admission, AccessRequest], Awaitable[Admitted]]:
    @functools.wraps(admit)
    async def counted(self: Admission, request: AccessRequest) -> Admitted:
        try:
            admitted: Admitted = await admit(self, request)
        except Exception as exc:
            _count(self, request, None, exc)
            raise
        _count(self, request, admitted, None)
        return admitted

    return counted


def _counted(admit: Callable[[Admission, AccessRequest], Admitted]) -> Callable[[Admission, AccessRequest], Admitted]:
    @functools.wraps(admit)
    def counted(self: Admission, request: AccessRequest) -> Admitted:
        try:
            admitted = admit(self, request)
        except Exception as exc:
            _count(self, request, None, exc)
            raise
        _count(self, request, admitted, None)
        return admitted

    return counted


class Admission:
    """Owns every step of admitting a consented request, for every purpose."""

    def __init__(
        self,
        *,
        db: Database,
        registry: PartyRegistry,
        consents: ConsentRegistry,
        replay: ReplayGuard,
        budget: EnterpriseBudget,
        audit: AuditLog,
        max_clock_skew_seconds: float,
        routable: Callable[[], Collection[str]],
        clock: Callable[[], float],
        down: Callable[[Collection[str]], XinrongError | None] = lambda providers: None,
    ) -> None:
        """``routable()`` names the providers that have an agent; ``down(providers)``
        is the refusal for those whose agent is known down right now, or None."""
        self._db = db
        self._registry = registry
        self._consents = consents
        self._replay = replay
        self._budget = budget
        self._audit = audit
        self._skew = max_clock_skew_seconds
        self._routable = routable
        self._down = down
        self._clock = clock

    # Metrics (xinrong.node.metrics): called once per subject decided, with the
    # purpose's name and "ALLOWED" or the refusal's reason. Never given an id.
    on_decision: Callable[[str, str], None] = staticmethod(lambda purpose, outcome: None)

    # -- the two ways to wait ------------------------------------------------

    @_counted_async
    async def admit_on_loop(self, request: AccessRequest) -> Admitted:
        """For coroutine handlers: a refusal is awaited durable, then raised."""
        if self._db.shared:
            return await self._admit_shared_async(request)
        try:
            return self._admit(request)
        except Refused as refused:
            await self._db.wait_durable_async(refused.token)
            raise refused.error from None

    @_counted
    def admit_blocking(self, request: AccessRequest) -> Admitted:
        """For handlers in a worker thread: the decision is durable before this returns."""
        if self._db.shared and not request.purpose.self_service:
            return self._admit_shared_blocking(request)
        try:
            admitted = self._admit(request)
        except Refused as refused:
            self._db.wait_durable(refused.token)
            raise refused.error from None
        self._db.wait_durable(admitted.token)
        return admitted

    def failed(self, admitted: Admitted, reason: str, *, data_read: bool = True) -> None:
        """After an ALLOWED entry: the answer never reached the caller (agent failure, hang-up).

        ``data_read=False``: no agent read anything, so the enterprise's
        budget is refunded (module docstring).

        On a shared database, called from the event loop, the entries are
        written by a worker thread (the loop never blocks on the network);
        the refusal the caller gets does not depend on them.
        """
        ts_ms = int(self._clock() * 1000)

        day = utc_day(ts_ms / 1000)

        def write() -> None:
            with self._db.transaction() as tx:
                for subject in admitted.admitted:
                    if not data_read:
                        self._budget.refund(tx, subject.subject.enterprise, day)
                    self._audit.append(
                        tx, dataclasses.replace(subject.event, decision=Decision.FAILED, reason=reason), ts_ms
                    )

        if self._db.shared and _on_loop():
            _background(write)
        else:
            write()

    # -- a database shared by replicas (PostgreSQL) ----------------------------------
    #
    # The same checks in the same order. Everything that depends only on the
    # request and on what never changes (the verified consent, the catalog) is
    # checked here; the consent's state, every counter, the request id and the
    # audit entries are the database's, checked and written in one statement
    # (``xinrong_admit``, xinrong.node.migrations) whichever replica runs it.

    async def _admit_shared_async(self, request: AccessRequest) -> Admitted:
        plan = self._plan_shared(request)
        if plan.consult:
            for subject in request.subjects:
                if subject.consent_id and subject.consent_id not in plan.records:
                    plan.records[subject.consent_id] = await self._consents.lookup_async(subject.consent_id)
        outcome = await self._db.admit_async(self._admit_params(plan))  # type: ignore[attr-defined]
        return self._shared_outcome(plan, outcome)

    def _admit_shared_blocking(self, request: AccessRequest) -> Admitted:
        plan = self._plan_shared(request)
        if plan.consult:
            for subject in request.subjects:
                if subject.consent_id and subject.consent_id not in plan.records:
                    plan.records[subject.consent_id] = self._consents.cached(subject.consent_id) or self._consents.get(
                        subject.consent_id
                    )
        row = self._db.call(ADMIT_SQL, self._admit_params(plan))  # type: ignore[attr-defined]
        return self._shared_outcome(plan, list(row[0]))

    def _plan_shared(self, request: AccessRequest) -> _SharedPlan:
        """Steps 1-3 and 5-7 (pure), as ``_admit`` does them."""
        now = self._clock()
        purpose, caller = request.purpose, request.caller
        request_id = ids.safe_request_id(request.request_id)
        single = request.subjects[0] if len(request.subjects) == 1 and not purpose.batch else None
        plan = _SharedPlan(request=request, now=now, request_id=request_id, single=single)
        plan.audience = self._registry.get(caller.role, caller.party_id) if caller.role == purpose.caller_role else None
        if plan.audience is None:
            plan.early = XinrongError(
                f"{caller.role} {caller.party_id} may not call {purpose.method}", reason=Reason.CALLER_NOT_ALLOWED
            )
        elif not request_id:
            plan.early = ValidationError("request id missing or malformed", public=ids.REQUEST_ID_RULE)
        elif abs(now - request.requested_at) > self._skew:
            plan.early = XinrongError(
                f"requested_at off by {now - request.requested_at:.0f}s", reason=Reason.REQUEST_STALE
            )
        if plan.early is not None:
            return plan
        try:
            plan.ask = request.asking.check()
            if single is not None:
                _check_subject_syntax(single)
            unroutable = sorted(set(plan.ask.items) - set(self._routable()))
            if unroutable:
                raise provider_not_connected(unroutable)
            outage = self._down(plan.ask.items)
            if outage is not None:
                raise outage
        except XinrongError as exc:
            plan.shape = exc
        plan.consult = plan.shape is None
        return plan

    def _precheck(self, plan: _SharedPlan, subject: Subject) -> tuple[str, XinrongError | None]:
        """Steps 6 (batch) and 8-9 that need no shared state: ('', None), or ('E' | 'L', error).

        'E': refused whatever the consent's state (the checks before the state
        check); 'L': refused unless the state refuses first, as in ``check_consent_use``.
        """
        purpose, caller, now, ask = plan.request.purpose, plan.request.caller, plan.now, plan.ask
        assert ask is not None
        try:
            if plan.single is None:
                _check_subject_syntax(subject)
        except XinrongError as exc:
            return "E", exc
        record = plan.records.get(subject.consent_id)
        if record is None or record.enterprise != subject.enterprise or record.enterprise_binding.not_after < now:
            return "E", ConsentError("no usable consent for this enterprise")
        try:
            check_consent_use(
                record.verified,
                enterprise_uscc=subject.enterprise,
                audience_id=caller.party_id,
                needs=() if purpose.covers_providers else ask.needs,
                now=now,
            )
        except XinrongError as exc:
            early = exc.reason in (Reason.ACCESS_DENIED, Reason.CONSENT_GRANTEE_MISMATCH)
            return ("E" if early else "L"), exc
        if purpose.consent_purposes:
            try:
                check_purpose(record.verified, purpose.consent_purposes)
            except XinrongError as exc:
                return "L", exc
        if purpose.covers_providers:
            covered = {key.split(".", 1)[0] for key in record.verified.scope}
            missing = sorted(set(ask.items) - covered)
            if missing:
                return "L", ConsentError(
                    f"scope lacks {missing}",
                    reason=Reason.CLAIM_OUT_OF_SCOPE,
                    public=f"the consent's scope does not cover providers {missing} of the model",
                )
        return "", None

    def _event(
        self, plan: _SharedPlan, decision: Decision, reason: str = "", subject: Subject | None = None
    ) -> AuditEvent:
        caller, ask = plan.request.caller, plan.ask
        return AuditEvent(
            caller_role=caller.role,
            caller_id=caller.party_id,
            method=plan.request.purpose.method,
            decision=decision,
            reason=reason,
            request_id=plan.request_id,
            enterprise=_safe_uscc(subject.enterprise) if subject else "",
            consent_id=ids.safe_consent_id(subject.consent_id) if subject else "",
            providers=ask.providers if ask else (),
            fields=ask.fields if ask else (),
            claims_sha256=ask.claims_sha256 if ask else plan.request.asking.raw_digest(),
        )

    def _admit_params(self, plan: _SharedPlan) -> tuple[Any, ...]:
        request, caller = plan.request, plan.request.caller
        base = self._event(plan, Decision.REFUSED, subject=plan.single)
        consents: list[str] = []
        enterprises: list[str] = []
        max_uses: list[int] = []
        max_day: list[int] = []
        pre: list[str] = []
        log_enterprises: list[str] = []
        log_consents: list[str] = []
        if plan.early is None and plan.shape is None:
            for subject in request.subjects:
                kind, error = self._precheck(plan, subject)
                plan.pre.append(error)
                record = plan.records.get(subject.consent_id)
                consent = record.verified.consent if record is not None else None
                # An 'E' subject touches no row (and its ids may be junk: a NUL is no text in PostgreSQL).
                consents.append(subject.consent_id if kind != "E" else "")
                # Only a subject that may be counted locks (and creates) its enterprise's row.
                enterprises.append(subject.enterprise if kind == "" else "")
                max_uses.append(int(consent.max_uses) if consent is not None else 0)
                max_day.append(int(consent.max_uses_per_day) if consent is not None else 0)
                pre.append(f"{kind}:{error.reason.value}" if error is not None else "")
                log_enterprises.append(_safe_uscc(subject.enterprise))
                log_consents.append(ids.safe_consent_id(subject.consent_id))
        ts_ms = int(plan.now * 1000)
        return (
            caller_key(caller.role, caller.party_id),
            request.request_id if plan.early is None else "",  # well formed from step 2 on
            ts_ms,
            ts_ms - self._replay.retention_ms,
            utc_day(plan.now),
            self._budget.daily_limit,
            plan.early.reason.value if plan.early is not None else "",
            plan.shape.reason.value if plan.shape is not None else "",
            consents,
            enterprises,
            max_uses,
            max_day,
            pre,
            base.caller_role,
            base.caller_id,
            base.method,
            base.request_id,
            string_array(base.providers),
            string_array(base.fields),
            base.claims_sha256,
            base.enterprise,
            base.consent_id,
            log_enterprises,
            log_consents,
        )

    def _shared_outcome(self, plan: _SharedPlan, outcome: list[str]) -> Admitted:
        head = outcome[0]
        if plan.early is not None:
            raise plan.early
        if head == Reason.REQUEST_REPLAYED.value:
            raise XinrongError("request id seen before", reason=Reason.REQUEST_REPLAYED)
        if plan.shape is not None:
            raise plan.shape
        assert plan.ask is not None and plan.audience is not None
        admitted: list[AdmittedSubject] = []
        refused: list[tuple[Subject, XinrongError]] = []
        for subject, error, reason in zip(plan.request.subjects, plan.pre, outcome[1:]):
            if not reason:
                record = plan.records[subject.consent_id]
                assert record is not None
                admitted.append(AdmittedSubject(subject, record, self._event(plan, Decision.ALLOWED, subject=subject)))
                continue
            if error is None or error.reason.value != reason:
                error = XinrongError(f"refused by the shared store: {reason}", reason=Reason(reason))
            refused.append((subject, error))
        if plan.single is not None and refused:
            raise refused[0][1]
        return Admitted(plan.request, plan.ask, plan.audience, tuple(admitted), tuple(refused), 0)

    # -- the checks ------------------------------------------------------------

    def _admit(self, request: AccessRequest) -> Admitted:
        now = self._clock()
        purpose, caller = request.purpose, request.caller
        request_id = ids.safe_request_id(request.request_id)
        single = request.subjects[0] if len(request.subjects) == 1 and not purpose.batch else None
        ask: Ask | None = None

        def event(decision: Decision, reason: str = "", subject: Subject | None = single) -> AuditEvent:
            # Built per decision, from whatever has been checked so far.
            return AuditEvent(
                caller_role=caller.role,
                caller_id=caller.party_id,
                method=purpose.method,
                decision=decision,
                reason=reason,
                request_id=request_id,
                enterprise=_safe_uscc(subject.enterprise) if subject else "",
                consent_id=ids.safe_consent_id(subject.consent_id) if subject else "",
                providers=ask.providers if ask else (),
                fields=ask.fields if ask else (),
                claims_sha256=ask.claims_sha256 if ask else request.asking.raw_digest(),
            )

        def refuse_now(error: XinrongError) -> Refused:
            with self._db.transaction() as tx:
                self._audit.append(tx, event(Decision.REFUSED, error.reason.value), int(now * 1000))
            return Refused(error, tx.token)

        # 1. Only registered parties of the purpose's role.
        audience = self._registry.get(caller.role, caller.party_id) if caller.role == purpose.caller_role else None
        if audience is None:
            raise refuse_now(
                XinrongError(
                    f"{caller.role} {caller.party_id} may not call {purpose.method}", reason=Reason.CALLER_NOT_ALLOWED
                )
            )
        # 2-3. Well formed, fresh.
        if not request_id:
            raise refuse_now(ValidationError("request id missing or malformed", public=ids.REQUEST_ID_RULE))
        if abs(now - request.requested_at) > self._skew:
            raise refuse_now(
                XinrongError(f"requested_at off by {now - request.requested_at:.0f}s", reason=Reason.REQUEST_STALE)
            )
        # 5-7 are pure and computed outside the lock; their error is raised in order below.
        shape_error: XinrongError | None = None
        try:
            ask = request.asking.check()
            if single is not None:
                _check_subject_syntax(single)
            unroutable = sorted(set(ask.items) - set(self._routable()))
            if unroutable:
                raise provider_not_connected(unroutable)
            outage = self._down(ask.items)
            if outage is not None:
                raise outage
        except XinrongError as exc:
            shape_error = exc
        day = utc_day(now)
        ts_ms = int(now * 1000)
        admitted: list[AdmittedSubject] = []
        refused: list[tuple[Subject, XinrongError]] = []
        replay_key = caller_key(caller.role, caller.party_id)
        with self._db.lock:
            # 4. Replay: check and consume the id atomically under the lock; ids are
            # per caller, so one bank cannot learn which ids another has used. A
            # window at its byte bound refuses (retry later) rather than forget ids.
            full = self._replay.refusal(replay_key, request.request_id, now)
            if full is not None:
                raise refuse_now(full)
            if self._replay.seen(replay_key, request.request_id):
                raise refuse_now(XinrongError("request id seen before", reason=Reason.REQUEST_REPLAYED))
            with self._db.transaction(durable=False) as tx:
                self._replay.record(tx, replay_key, request.request_id, now)
                if shape_error is not None:
                    self._audit.append(tx, event(Decision.REFUSED, shape_error.reason.value), ts_ms)
                else:
                    assert ask is not None
                    for subject in request.subjects:
                        try:
                            if single is None:
                                _check_subject_syntax(subject)
                            if purpose.self_service:
                                if subject.enterprise != caller.party_id:
                                    raise ConsentError("an enterprise reaches only its own records")
                                allowed = event(Decision.ALLOWED, subject=subject)
                                self._audit.append(tx, allowed, ts_ms)
                                admitted.append(AdmittedSubject(subject, None, allowed))
                                continue
                            record = self._check_consent(purpose, caller, subject, ask, now, day)
                        except XinrongError as exc:
                            refused.append((subject, exc))
                            self._audit.append(tx, event(Decision.REFUSED, exc.reason.value, subject), ts_ms)
                            continue
                        allowed = event(Decision.ALLOWED, subject=subject)
                        self._consents.consume(tx, record, day)
                        self._budget.consume(tx, subject.enterprise, day)
                        entry = self._audit.append(tx, allowed, ts_ms)
                        leaf = entry.seq - 1 if entry.seq else None
                        admitted.append(AdmittedSubject(subject, record, allowed, leaf))
        if shape_error is not None:
            raise Refused(shape_error, tx.token)
        if single is not None and refused:
            raise Refused(refused[0][1], tx.token)
        assert ask is not None
        return Admitted(request, ask, audience, tuple(admitted), tuple(refused), tx.token)

    def _check_consent(
        self, purpose: Purpose, caller: Peer, subject: Subject, ask: Ask, now: float, day: int
    ) -> ConsentRecord:
        """Steps 8-10 for one enterprise; the caller holds the database lock."""
        enterprise = subject.enterprise
        # 8. The uniform denial: one error, whatever the cause.
        record = self._consents.get(subject.consent_id)
        if record is None or record.enterprise != enterprise or record.enterprise_binding.not_after < now:
            raise ConsentError("no usable consent for this enterprise")
        # 9. Grantee, state, validity window, then what the service needs of the scope.
        check_consent_use(
            record.verified,
            enterprise_uscc=enterprise,
            audience_id=caller.party_id,
            needs=() if purpose.covers_providers else ask.needs,
            now=now,
            state=record.state,
        )
        consent = record.verified.consent
        if purpose.consent_purposes:
            check_purpose(record.verified, purpose.consent_purposes)
        if purpose.covers_providers:
            covered = {key.split(".", 1)[0] for key in record.verified.scope}
            missing = sorted(set(ask.items) - covered)
            if missing:
                raise ConsentError(
                    f"scope lacks {missing}",
                    reason=Reason.CLAIM_OUT_OF_SCOPE,
                    public=f"the consent's scope does not cover providers {missing} of the model",
                )
        # 10. Budgets, checked together here and incremented together by the caller.
        if record.uses >= consent.max_uses:
            raise XinrongError("max uses reached", reason=Reason.CONSENT_USES_EXHAUSTED)
        if consent.max_uses_per_day and record.uses_on(day) >= consent.max_uses_per_day:
            raise XinrongError("daily uses reached", reason=Reason.CONSENT_DAILY_LIMIT)
        if self._budget.exhausted(enterprise, day):
            raise XinrongError("enterprise daily budget reached", reason=Reason.ENTERPRISE_BUDGET_EXHAUSTED)
        return record


ADMIT_SQL = "SELECT xinrong_admit(" + ", ".join(["?"] * 24) + ")"


@dataclass
class _SharedPlan:
    """What the admission knows before it asks the shared database."""

    request: AccessRequest
    now: float
    request_id: str
    single: Subject | None
    audience: VerifiedBinding | None = None
    early: XinrongError | None = None  # steps 1-3: audited, the id is not consumed
    shape: XinrongError | None = None  # steps 5-7: the id is consumed
    ask: Ask | None = None
    consult: bool = False  # whether the subjects' consents are looked up
    records: dict[str, ConsentRecord | None] = dataclasses.field(default_factory=dict)
    pre: list[XinrongError | None] = dataclasses.field(default_factory=list)


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


_writer: concurrent.futures.ThreadPoolExecutor | None = None


def _background(work: Callable[[], None]) -> None:
    """Run ``work`` on the admission's one background writer thread (logged if it fails)."""
    global _writer
    if _writer is None:
        _writer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="node-audit-writer")

    def run() -> None:
        try:
            work()
        except Exception:
            log.exception("writing FAILED audit entries failed")

    _writer.submit(run)


def _safe_uscc(value: str) -> str:
    return value if _valid_uscc(value) else ""


def _check_subject_syntax(subject: Subject) -> None:
    """Step 6: public arithmetic and syntax, no oracle."""
    if not _valid_uscc(subject.enterprise):
        raise ValidationError("enterprise USCC malformed")
    # No consent id at all is "no usable consent" (the uniform denial, step 8);
    # a malformed one is a malformed request.
    if subject.consent_id and not ids.is_consent_id(subject.consent_id):
        raise ValidationError("consent id malformed")


__all__ = [
    "INDICATORS",
    "MATCHING",
    "MONITORING",
    "SCORING",
    "SELF_SERVICE",
    "VERIFICATION",
    "AccessRequest",
    "Admission",
    "Admitted",
    "AdmittedSubject",
    "Ask",
    "Asking",
    "Purpose",
    "Refused",
    "Subject",
]
