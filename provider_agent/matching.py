"""The agent's side of product matching: its own rules, on its own data, encrypted to the bank.

For a product (signed by its bank, checked here against the bank's CA-signed
binding: the node could otherwise swap in a Paillier key of its own) and a
batch of enterprises, each with its MATCHING consent to that bank, the agent
re-checks everything itself, as for Verify:

1. freshness and the run id's syntax                      REQUEST_STALE / INVALID_ARGUMENT
2. the bank's binding and its signature on the product    ACCESS_DENIED
3. the product's fields and rules (published claims only)  INVALID_ARGUMENT, THRESHOLD_NOT_PUBLISHED, ...
   and that this provider has a rule in it
4. per enterprise: the consent's authenticity, enterprise,  refused_reason of that subject only
   grantee = the bank, purpose MATCHING, revocation and
   pause, window, scope (the fields and forms of this
   provider's rules), data period

Then, for each admitted enterprise, one read of its record: each of this
provider's rules is evaluated (no data, or no record at all, fails a rule,
so an absent enterprise looks like any other), and the agent returns

* ``Enc_bank(r * failed)`` (``xinrong.modeling.matching.encrypt_failed``)
  in a contribution signed with the provider key, and
* the list of failed and passed rules, signed and sealed to the enterprise's
  own X25519 key (from its CA-signed binding inside the consent), padded to
  a length that depends only on the product.

Replay check, use count and answer-log entry (kind ``matching``, request id
``<match id>.<USCC>``) are the agent's own, in its state store, as for Verify.

Neither says anything to the node: a fixed-width, freshly obfuscated
ciphertext and a box of fixed length. A refusal (step 4) depends on the
consent alone, which the node holds anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable

from xinrong import ids
from xinrong.catalog import Form
from xinrong.claims import CheckedClaim, evaluate
from xinrong.consent import VerifiedConsent, check_consent_use, check_data_period
from xinrong.errors import ConsentError, ProviderUnavailable, Reason, SignatureError, ValidationError, XinrongError
from xinrong.keys.binding import verify_binding
from xinrong.keys.sealing import seal
from xinrong.modeling import matching as mt
from xinrong.provider_agent.evaluate import ProviderAgent
from xinrong.provider_agent.store import Admission, AnswerLogEntry
from xinrong.provider_agent.subject import SubjectView
from xinrong.v1 import common_pb2, products_pb2

log = logging.getLogger(__name__)

MAX_SUBJECTS = 2_000
# Kind of the agent's answer-log entries for matching (xinrong.node.reconcile reads it).
ANSWER_KIND = "matching"


def answer_request_id(match_id: str, enterprise: str) -> str:
    """The id under which an agent logs its part for one enterprise of a match run."""
    return f"{match_id}.{enterprise}"


class AgentMatching:
    """Answers ComputeMatch over the agent's data, consents and revocations (``ProviderAgent``)."""

    def __init__(self, agent: ProviderAgent, *, clock: Callable[[], float] = time.time, skew: float = 300.0) -> None:
        self._agent = agent
        self._clock = clock
        self._skew = skew

    @property
    def provider(self) -> str:
        return self._agent.provider

    def compute(self, request: products_pb2.ComputeMatchRequest) -> products_pb2.ComputeMatchResponse:
        now = self._clock()
        if not ids.is_request_id(request.match_id):
            raise ValidationError("match id missing or malformed")
        if abs(now - request.requested_at) > self._skew:
            raise ValidationError("requested_at out of the clock-skew window", reason=Reason.REQUEST_STALE)
        if not 1 <= len(request.subjects) <= MAX_SUBJECTS:
            raise ValidationError(f"1 to {MAX_SUBJECTS} subjects per call")
        agent = self._agent
        try:
            bank = verify_binding(agent.ca, request.bank_binding, expect_role="institution", now=now)
        except SignatureError:
            raise XinrongError("bank binding does not verify", reason=Reason.ACCESS_DENIED) from None
        try:
            product = mt.verify_product(agent.ca, agent.catalog, request.product, bank)
        except SignatureError:
            raise XinrongError("product not signed by its bank", reason=Reason.ACCESS_DENIED) from None
        mine = product.rules_of(self.provider)
        if not mine:
            raise ValidationError(f"the product has no rule at provider {self.provider}")
        needs = [(r.spec.key, r.form) for r in mine]
        response = products_pb2.ComputeMatchResponse()
        view = agent.subject_view()
        # One state commit for the batch; each subject its own savepoint (StateStore.batch).
        with agent.batch():
            for subject in request.subjects:
                outcome = response.outcomes.add(enterprise_uscc=subject.enterprise_uscc)
                try:
                    self._one(
                        outcome,
                        subject,
                        product,
                        mine,
                        needs,
                        request.match_id,
                        bank.party_id,
                        request.requested_at,
                        now,
                        view,
                    )
                except XinrongError as exc:
                    outcome.Clear()
                    outcome.enterprise_uscc = subject.enterprise_uscc
                    outcome.refused_reason = exc.reason.value
        log.debug("match %s: %d subjects for product %s", request.match_id, len(request.subjects), product.product_id)
        return response

    def _one(
        self,
        outcome: products_pb2.MatchOutcome,
        subject: products_pb2.MatchSubject,
        product: mt.CheckedProduct,
        mine: tuple[CheckedClaim, ...],
        needs: list[tuple[str, Form]],
        match_id: str,
        bank_id: str,
        requested_at: int,
        now: float,
        view: SubjectView,
    ) -> None:
        agent = self._agent
        verified = agent.verify_consent(subject.consent, now)
        check_consent_use(
            verified,
            enterprise_uscc=subject.enterprise_uscc,
            audience_id=bank_id,
            needs=needs,
            now=now,
            state=agent.consent_state(verified),
        )
        if verified.consent.purpose != common_pb2.CONSENT_PURPOSE_MATCHING:
            raise ConsentError("purpose is not matching", reason=Reason.CLAIM_OUT_OF_SCOPE)
        consent = verified.consent
        # The agent's own replay check, use count and answer log, as for Verify: the
        # request id is the run's and the enterprise's (the node's audit entry has both).
        request_id = answer_request_id(match_id, subject.enterprise_uscc)
        with agent.state.request(
            audience=bank_id,
            request_id=request_id,
            requested_at=requested_at,
            consent_id=consent.consent_id,
            max_uses=consent.max_uses,
            max_uses_per_day=consent.max_uses_per_day,
            now=now,
        ) as txn:
            if txn.outcome is Admission.REPLAYED:
                raise ValidationError("match request seen before", reason=Reason.REQUEST_REPLAYED)
            if txn.outcome is Admission.USES_EXHAUSTED:
                raise ConsentError("agent use count reached max_uses", reason=Reason.CONSENT_USES_EXHAUSTED)
            if txn.outcome is Admission.DAILY_LIMIT:
                raise ConsentError("agent use count reached max_uses_per_day", reason=Reason.CONSENT_DAILY_LIMIT)
            self._answer(outcome, subject, product, mine, match_id, verified, now, view)
            txn.record(
                AnswerLogEntry(
                    request_id=request_id,
                    kind=ANSWER_KIND,
                    consent_id=consent.consent_id,
                    enterprise_uscc=subject.enterprise_uscc,
                    audience=bank_id,
                    fields=tuple(field for field, _ in needs),
                    data_as_of=mt.parse_contribution(outcome.contribution).data_as_of,
                    answer_sha256=(hashlib.sha256(outcome.contribution.contribution).hexdigest(),),
                    sealed_sha256=hashlib.sha256(outcome.feedback.ciphertext).hexdigest(),
                    issued_at=int(now),
                )
            )

    def _answer(
        self,
        outcome: products_pb2.MatchOutcome,
        subject: products_pb2.MatchSubject,
        product: mt.CheckedProduct,
        mine: tuple[CheckedClaim, ...],
        match_id: str,
        verified: VerifiedConsent,
        now: float,
        view: SubjectView,
    ) -> None:
        """The one read, the rules, the signed contribution and the sealed feedback."""
        agent = self._agent
        consent = verified.consent
        lookup = agent.data.lookup(subject.enterprise_uscc, consent.data_period_from, consent.data_period_to)
        if lookup is None:
            raise ProviderUnavailable("no data period imported yet")
        check_data_period(verified, lookup.as_of)
        cells: list[object] | None = None
        if lookup.data is not None:
            parsed = json.loads(lookup.data)
            if not isinstance(parsed, list):
                raise XinrongError("stored record is not a JSON array")
            cells = parsed
        failed: list[str] = []
        passed: list[str] = []
        for rule in mine:
            value = agent.cell(lookup, cells, rule.spec, subject.enterprise_uscc, view)
            (passed if evaluate(rule, value) is True else failed).append(rule.text)
        issued_at = int(now)
        contribution = products_pb2.MatchContribution(
            match_id=match_id,
            product_id=product.product_id,
            product_sha256=product.sha256,
            enterprise_uscc=subject.enterprise_uscc,
            provider=self.provider,
            provider_key_id=agent.key_id,
            data_as_of=lookup.as_of,
            consent_id=consent.consent_id,
            issued_at=issued_at,
            ciphertext=mt.encrypt_failed(product.n, len(failed)),
        )
        raw = contribution.SerializeToString(deterministic=True)
        outcome.contribution.contribution = raw
        outcome.contribution.signature = agent.signing_key.sign(mt.CONTRIBUTION_CONTEXT, raw)
        feedback = products_pb2.MatchFeedback(
            match_id=match_id,
            product_id=product.product_id,
            enterprise_uscc=subject.enterprise_uscc,
            provider=self.provider,
            data_as_of=lookup.as_of,
            failed_rules=failed,
            passed_rules=passed,
            issued_at=issued_at,
        )
        fraw = feedback.SerializeToString(deterministic=True)
        signed_feedback = products_pb2.SignedMatchFeedback(
            feedback=fraw, signature=agent.signing_key.sign(mt.FEEDBACK_CONTEXT, fraw)
        )
        enterprise = verify_binding(agent.ca, subject.consent.enterprise_binding, expect_role="enterprise", now=now)
        if len(enterprise.sealing_public_raw) != 32:
            raise XinrongError("the enterprise's binding has no sealing key", reason=Reason.ACCESS_DENIED)
        outcome.feedback.CopyFrom(
            seal(
                signed_feedback.SerializeToString(deterministic=True),
                recipient_id=enterprise.party_id,
                recipient_public_raw=enterprise.sealing_public_raw,
                content_type=mt.FEEDBACK_CONTENT_TYPE,
                context=f"{match_id}/{product.product_id}",
                pad_to=product.feedback_pad(self.provider),
            )
        )


__all__ = ["AgentMatching"]
