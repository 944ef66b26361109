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

from xinrong import ids
from xinrong.errors import Reason, ValidationError, XinrongError, provider_not_connected
from xinrong.limits import MAX_SCORE_ROWS, MAX_SCORE_SUBJECTS
from xinrong.modeling import scoring
from xinrong.modeling.he.base import load_public
from xinrong.modeling.serde import ScoringKey, SubjectOutcome, scoring_key_to_proto
from xinrong.node import modeling_store as store
from xinrong.node.admission import SCORING, AccessRequest, Ask, Subject
from xinrong.node.audit import Decision
from xinrong.node.modeling_jobs import Job, JobRegistry
from xinrong.rpc.auth import Peer
from xinrong.v1 import modeling_pb2

log = logging.getLogger(__name__)


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

    def scoring_target(
        self, caller: Peer, job_id: str, subjects: Sequence[tuple[str, str]], key: ScoringKeyInput
    ) -> tuple[Job, modeling_pb2.ScoringKey]:
        """What a ScoreEnterprises request may score: the caller's finished job and the checked key.

        Admission's step 5 (``_ScoringAsk.check``) calls it; it audits nothing,
        since the admission records the decision.
        """
        job = self._find_owned(caller, job_id)
        self._require(job, store.SUCCEEDED)
        if not 1 <= len(subjects) <= MAX_SCORE_SUBJECTS:
            raise ValidationError(f"1..{MAX_SCORE_SUBJECTS:,} enterprises per request")
        if len({u for u, _ in subjects}) != len(subjects):
            raise ValidationError("an enterprise appears twice in one request")
        scoring_key = self._scoring_key(key)
        unroutable = sorted(set(job.providers) - self.connected_providers)
        if unroutable:
            raise provider_not_connected(unroutable)
        return job, scoring_key

    def _aggregate(self, job: Job, key: ScoringKeyInput, payloads: dict[str, bytes]) -> bytes:
        public = load_public(key.scheme, key.public_key)
        return scoring.aggregate(public, [payloads[p] for p in job.providers], min_providers=len(job.providers))

    def score_rows(self, caller: Peer, job_id: str, request_id: str, positions: bytes, key: ScoringKeyInput) -> bytes:
        job = self._owned(caller, job_id, "ScoreJobRows")
        self._require(job, store.SUCCEEDED)
        if not ids.is_request_id(request_id):
            raise ValidationError("request id missing or malformed", public=ids.REQUEST_ID_RULE)
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
        """Consent-checked private scoring through the node's one admission path (purpose SCORING).

        A refused enterprise is reported in its outcome, never silently scored;
        only the admitted ones are asked of the providers.
        """
        asking = _ScoringAsk(self, caller, job_id, tuple(subjects), key)
        request = AccessRequest(
            SCORING, caller, request_id, requested_at, tuple(Subject(u, c) for u, c in subjects), asking
        )
        admitted = self._core.admission.admit_blocking(request)
        job, scoring_key = asking.job, asking.scoring_key
        assert job is not None and scoring_key is not None  # set by a check that passed
        refusals = {subject.enterprise: error for subject, error in admitted.refused}
        outcomes = tuple(
            SubjectOutcome(u, False, refusals[u].reason.value, refusals[u].public_message)
            if u in refusals
            else SubjectOutcome(u, True)
            for u, _consent in subjects
        )
        if not admitted.admitted:
            return ScoreResult(request_id, outcomes, b"")
        request_pb = modeling_pb2.AgentScoreEnterprisesRequest(
            job_id=job_id,
            request_id=request_id,
            requested_at=requested_at,
            enterprise_usccs=[a.subject.enterprise for a in admitted.admitted],
            consents=[a.record.verified.signed for a in admitted.admitted],
            audience_binding=admitted.audience.signed,
            scoring_key=scoring_key,
        )
        try:
            payloads = self._each(
                job.providers,
                lambda p: bytes(self._call(job, p, "ScoreEnterprises", request_pb, "ScoreEnterprises").payload),
            )
            aggregate = self._aggregate(job, key, payloads)
        except (XinrongError, ValueError) as exc:
            failure = (
                exc if isinstance(exc, XinrongError) else XinrongError(str(exc), reason=Reason.FAILED_PRECONDITION)
            )
            self._core.admission.failed(admitted, failure.reason.value)
            raise failure from None
        log.info(
            "modeling job %s: scored %d of %d enterprises (request %s)",
            job_id,
            len(admitted.admitted),
            len(subjects),
            request_id,
        )
        return ScoreResult(request_id, outcomes, aggregate)


@dataclass
class _ScoringAsk:
    """What ScoreEnterprises asks: a finished job of the caller's, scored under a valid key.

    Admission runs ``check`` after the caller, request id and clock checks;
    the job and the scoring key it found are kept for the fan-out.
    """

    steps: ScoringSteps
    caller: Peer
    job_id: str
    subjects: tuple[tuple[str, str], ...]
    key: ScoringKeyInput
    job: Job | None = None
    scoring_key: modeling_pb2.ScoringKey | None = None

    def check(self) -> Ask:
        job, self.scoring_key = self.steps.scoring_target(self.caller, self.job_id, self.subjects, self.key)
        self.job = job
        # The consent's scope must name every provider of the model (Purpose.covers_providers).
        return Ask(needs=(), fields=(), claims_sha256="", items={p: [] for p in job.providers})

    def raw_digest(self) -> str:
        return ""
