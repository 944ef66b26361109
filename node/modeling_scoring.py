"""Private scoring at the node: the node adds ciphertexts under the bank's key, and admits by consent.

Providers encrypt partial scores under the *bank's* key (signed by the
bank, checked by each provider); the node only adds ciphertexts
(``xinrong.modeling.scoring.aggregate``). Scoring enterprises needs each
enterprise's consent to the bank for ``credit_scoring``: the node checks it
as Verify does (uniform denial, grantee, state, validity, scope, uses,
budgets), counts a use, and reports per enterprise why a refused one was
refused.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xinrong import uscc as uscc_mod
from xinrong.consent import check_consent_use
from xinrong.errors import ConsentError, Reason, ValidationError, XinrongError
from xinrong.keys.binding import VerifiedBinding
from xinrong.modeling import scoring
from xinrong.modeling.he.base import load_public
from xinrong.modeling.serde import ScoringKey, SubjectOutcome, scoring_key_to_proto
from xinrong.node import modeling_store as store
from xinrong.node.audit import Decision
from xinrong.node.limits import utc_day
from xinrong.node.modeling_jobs import _REQUEST_ID, JobRegistry, _Job, _now_ms
from xinrong.rpc.auth import Peer
from xinrong.v1 import common_pb2, modeling_pb2

log = logging.getLogger(__name__)

MAX_SCORE_ROWS = 200_000  # per ScoreJobRows call (the bank chunks larger sets)
MAX_SCORE_SUBJECTS = 20_000  # the agents get every signed consent (~0.6 kB each): 12 MB at most

ScoringKeyInput = ScoringKey  # the bank's signed scoring key, as the servicer hands it over


@dataclass(frozen=True)
class ScoreResult:
    request_id: str
    outcomes: tuple[SubjectOutcome, ...]
    aggregate: bytes


class ScoringSteps(JobRegistry):
    """Scoring a finished job's aligned rows, and consented enterprises by USCC."""

    def _scoring_key(self, key: ScoringKeyInput) -> modeling_pb2.ScoringKey:
        allowed = ("ckks", "paillier", "plain") if self._config.modeling_allow_insecure else ("ckks", "paillier")
        if key.scheme not in allowed or not key.public_key or not key.signature:
            raise ValidationError(f"a signed scoring key of scheme {allowed} is required")
        return scoring_key_to_proto(key)

    def _aggregate(self, job: _Job, key: ScoringKeyInput, payloads: dict[str, bytes]) -> bytes:
        public = load_public(key.scheme, key.public_key)
        return scoring.aggregate(public, [payloads[p] for p in job.providers], min_providers=len(job.providers))

    def score_rows(self, caller: Peer, job_id: str, request_id: str, positions: bytes, key: ScoringKeyInput) -> bytes:
        job = self._owned(caller, job_id, "ScoreJobRows")
        self._require(job, store.SUCCEEDED)
        if not _REQUEST_ID.match(request_id):
            raise ValidationError("request id missing or malformed")
        if len(positions) % 4 or not 0 < len(positions) // 4 <= MAX_SCORE_ROWS:
            raise ValidationError(f"positions must be 1..{MAX_SCORE_ROWS:,} uint32 values")
        request = modeling_pb2.AgentScoreRowsRequest(
            job_id=job_id, request_id=request_id, positions=positions, scoring_key=self._scoring_key(key)
        )
        payloads = self._each(
            job.providers, lambda p: bytes(self._call(job, p, "ScoreRows", request, "ScoreRows").payload)
        )
        try:
            aggregate = self._aggregate(job, key, payloads)
        except ValueError as exc:
            raise XinrongError(
                f"aggregate failed: {exc}",
                reason=Reason.FAILED_PRECONDITION,
                public=f"provider contributions do not add up: {exc}",
            ) from None
        self._audit(
            self._event(
                caller.role,
                caller.party_id,
                "ModelScoreRows",
                Decision.ALLOWED,
                f"{job_id}:{request_id}"[:128],
                job.providers,
            )
        )
        log.info("modeling job %s: scored %d rows (request %s)", job_id, len(positions) // 4, request_id)
        return aggregate

    def score_enterprises(
        self,
        caller: Peer,
        job_id: str,
        request_id: str,
        requested_at: int,
        subjects: Sequence[tuple[str, str]],
        key: ScoringKeyInput,
    ) -> ScoreResult:
        """Consent-checked private scoring; a refused subject is reported, never silently scored."""
        method = "ScoreEnterprises"
        now = self._core.clock()
        audience = self._institution(caller, method, job_id)
        safe_request = request_id if _REQUEST_ID.match(request_id) else ""
        if not safe_request:
            raise self._refuse(caller, method, job_id, ValidationError("request id missing or malformed"))
        if abs(now - requested_at) > self._config.max_clock_skew_seconds:
            raise self._refuse(
                caller,
                method,
                job_id,
                XinrongError(f"requested_at off by {now - requested_at:.0f}s", reason=Reason.REQUEST_STALE),
            )
        job = self._owned(caller, job_id, method)
        try:
            self._require(job, store.SUCCEEDED)
            if not 1 <= len(subjects) <= MAX_SCORE_SUBJECTS:
                raise ValidationError(f"1..{MAX_SCORE_SUBJECTS:,} enterprises per request")
            if len({u for u, _ in subjects}) != len(subjects):
                raise ValidationError("an enterprise appears twice in one request")
            scoring_key = self._scoring_key(key)
            unroutable = sorted(set(job.providers) - self._channels.providers)
            if unroutable:
                raise XinrongError(f"no agent for {unroutable}", reason=Reason.PROVIDER_UNAVAILABLE)
        except XinrongError as exc:
            raise self._refuse(caller, method, job_id, exc) from None
        core = self._core
        day = utc_day(now)
        ts_ms = _now_ms(now)
        outcomes: list[SubjectOutcome] = []
        admitted: list[tuple[str, Any]] = []  # (uscc, consent record)
        with core.db.lock:
            if core.replay.seen(request_id):
                raise self._refuse(
                    caller, method, job_id, XinrongError("request id seen before", reason=Reason.REQUEST_REPLAYED)
                )
            with core.db.transaction() as tx:
                core.replay.record(tx, request_id, now)
                for uscc, consent_id in subjects:
                    safe_uscc = uscc if len(uscc) == 18 and uscc_mod.is_valid(uscc) else ""
                    safe_consent = consent_id if _REQUEST_ID.match(consent_id or "-") and consent_id else ""
                    try:
                        record = self._check_subject(job, audience, uscc, safe_uscc, consent_id, now, day)
                    except XinrongError as refusal:
                        outcomes.append(SubjectOutcome(uscc, False, refusal.reason.value, refusal.public_message))
                        core.audit.append(
                            tx,
                            self._event(
                                caller.role,
                                caller.party_id,
                                method,
                                Decision.REFUSED,
                                safe_request,
                                job.providers,
                                refusal.reason.value,
                                safe_uscc,
                                safe_consent,
                            ),
                            ts_ms,
                        )
                        continue
                    core.consents.consume(tx, record, day)
                    core.budget.consume(tx, uscc, day)
                    core.audit.append(
                        tx,
                        self._event(
                            caller.role,
                            caller.party_id,
                            method,
                            Decision.ALLOWED,
                            safe_request,
                            job.providers,
                            "",
                            safe_uscc,
                            safe_consent,
                        ),
                        ts_ms,
                    )
                    outcomes.append(SubjectOutcome(uscc, True))
                    admitted.append((uscc, record))
        if not admitted:
            return ScoreResult(request_id, tuple(outcomes), b"")
        assert job.bank is not None
        request = modeling_pb2.AgentScoreEnterprisesRequest(
            job_id=job_id,
            request_id=request_id,
            requested_at=requested_at,
            enterprise_usccs=[u for u, _ in admitted],
            consents=[r.verified.signed for _, r in admitted],
            audience_binding=audience.signed,
            scoring_key=scoring_key,
        )
        try:
            payloads = self._each(
                job.providers,
                lambda p: bytes(self._call(job, p, "ScoreEnterprises", request, "ScoreEnterprises").payload),
            )
            aggregate = self._aggregate(job, key, payloads)
        except (XinrongError, ValueError) as exc:
            failure = (
                exc if isinstance(exc, XinrongError) else XinrongError(str(exc), reason=Reason.FAILED_PRECONDITION)
            )
            self._audit(
                self._event(
                    caller.role,
                    caller.party_id,
                    method,
                    Decision.FAILED,
                    safe_request,
                    job.providers,
                    failure.reason.value,
                )
            )
            raise failure from None
        log.info(
            "modeling job %s: scored %d of %d enterprises (request %s)",
            job_id,
            len(admitted),
            len(subjects),
            request_id,
        )
        return ScoreResult(request_id, tuple(outcomes), aggregate)

    def _check_subject(
        self, job: _Job, audience: VerifiedBinding, uscc: str, safe_uscc: str, consent_id: str, now: float, day: int
    ) -> Any:
        """Verify's consent checks for one enterprise, in Verify's order (see ``xinrong.node.service``)."""
        core = self._core
        if not safe_uscc:
            raise ValidationError("enterprise USCC malformed")
        record = core.consents.get(consent_id) if consent_id else None
        if record is None or record.enterprise != uscc or record.enterprise_binding.not_after < now:
            raise ConsentError("no usable consent for this enterprise")  # the uniform denial
        check_consent_use(
            record.verified, enterprise_uscc=uscc, audience_id=audience.party_id, needs=(), now=now, state=record.state
        )
        consent = record.verified.consent
        if consent.purpose != common_pb2.CONSENT_PURPOSE_CREDIT_SCORING:
            raise ConsentError(
                "purpose is not credit scoring",
                reason=Reason.CLAIM_OUT_OF_SCOPE,
                public="the consent's purpose is not credit_scoring",
            )
        covered = {key.split(".", 1)[0] for key in record.verified.scope}
        missing = sorted(set(job.providers) - covered)
        if missing:
            raise ConsentError(
                f"scope lacks {missing}",
                reason=Reason.CLAIM_OUT_OF_SCOPE,
                public=f"the consent's scope does not cover providers {missing} of the model",
            )
        if record.uses >= consent.max_uses:
            raise XinrongError("max uses reached", reason=Reason.CONSENT_USES_EXHAUSTED)
        if consent.max_uses_per_day and record.uses_on(day) >= consent.max_uses_per_day:
            raise XinrongError("daily uses reached", reason=Reason.CONSENT_DAILY_LIMIT)
        if core.budget.exhausted(uscc, day):
            raise XinrongError("enterprise daily budget reached", reason=Reason.ENTERPRISE_BUDGET_EXHAUSTED)
        return record
