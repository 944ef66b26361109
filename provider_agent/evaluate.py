"""The agent's domain logic: re-check everything, read once, sign, seal.

The node already checked the caller, the consent and the probing policy, but
the node is honest-but-curious and the agent holds the raw data, so the agent
trusts nothing it is told. Before it reads any record it repeats, in a fixed
order (so the refusal reason is deterministic):

0. shape: request id syntax, 1-64 items            INVALID_ARGUMENT
1. freshness of the request timestamp              REQUEST_STALE
2. authenticity of the enterprise-signed consent   ACCESS_DENIED (uniform)
3. the CA-signed binding of the audience           ACCESS_DENIED (uniform)
4. the probing policy for every claim / indicator  THRESHOLD_NOT_PUBLISHED, FORM_NOT_ALLOWED, ...
   and that each field is this provider's          INVALID_ARGUMENT
5. consent use: enterprise, grantee = audience,    ACCESS_DENIED, CONSENT_GRANTEE_MISMATCH,
   revocation, validity window, scope              CONSENT_REVOKED, CONSENT_EXPIRED, ...
6. the request id was never seen here              REQUEST_REPLAYED
7. this agent's own use count for the consent      CONSENT_USES_EXHAUSTED / CONSENT_DAILY_LIMIT
8. the active data period is inside the consent's  CONSENT_PERIOD_MISMATCH

Then one read of the record, one answer per claim (TRUE / FALSE / NO_DATA;
an absent enterprise is NO_DATA, the same as an absent value), each signed
with the provider's Ed25519 key, bundled and sealed with HPKE to the audience
so the node relays it unread. Raw values never leave through this module.

Steps 6-8, the read, signing, sealing and the answer-log entry share one
state-store transaction: an answer leaves only if its request id was
recorded, its use counted and its log entry written, and a refused request
consumes neither its id nor a use.

Signature checks are the expensive part of 2 and 3, so verified consents and
bindings are cached, keyed by exactly the bytes that were verified;
time-dependent checks (validity windows, binding expiry) still run on every
request.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from decimal import Decimal

from xinrong import ids
from xinrong.cache import BoundedCache, digest_key
from xinrong.catalog import Catalog, FieldSpec, FieldType, Form
from xinrong.claims import (
    CLAIM_CACHE_BYTES,
    CheckedClaim,
    FieldValue,
    check_claim,
    check_indicator,
    checked_claim_weight,
    evaluate,
    format_decimal,
)
from xinrong.consent import (
    VALUE_QUERY_PURPOSES,
    VerifiedConsent,
    check_consent_use,
    check_data_period,
    check_purpose,
    verify_revocation,
    verify_signed_consent,
)
from xinrong.errors import (
    ConsentError,
    ProviderUnavailable,
    Reason,
    SignatureError,
    ValidationError,
    XinrongError,
    invalid,
)
from xinrong.keys.binding import VerifiedBinding, verify_binding
from xinrong.keys.ca import CaVerifier
from xinrong.keys.layout import PartyCredentials
from xinrong.keys.sealing import SessionSealer
from xinrong.keys.signing import SigningKey
from xinrong.limits import MAX_ITEMS_PER_REQUEST
from xinrong.provider_agent.store import Admission, AnswerLogEntry, DataStore, Lookup, Period, StateStore
from xinrong.provider_agent.subject import SubjectStore, SubjectView
from xinrong.serde import FORM_TO_PROTO, PROTO_TO_FORM
from xinrong.v1 import common_pb2

log = logging.getLogger(__name__)

VERDICT_CONTEXT = "xinrong.v1.Verdict"
INDICATOR_CONTEXT = "xinrong.v1.Indicator"
BUNDLE_CONTENT_TYPE = "xinrong.v1.AnswerBundle"
# A sealed bundle is padded to (items in the request) x this, so its length
# depends only on the request shape the node already knows, never on the
# answers (a bracket's edges, a grade's name, NO_DATA). One signed verdict or
# indicator is ~300-450 bytes; the bucket leaves room for the longest field,
# claim text and ids the limits allow (test_agent_evaluate checks every answer).
BUNDLE_ITEM_PAD_BYTES = 1024
# Printable ASCII without spaces: the id is bound into the HPKE info, which
# joins its parts with NUL, so it must never contain one.

_RESULT = {
    True: common_pb2.VERDICT_RESULT_TRUE,
    False: common_pb2.VERDICT_RESULT_FALSE,
    None: common_pb2.VERDICT_RESULT_NO_DATA,
}


@dataclass(frozen=True)
class ClaimsRequest:
    """EvaluateClaims in domain form; consent and binding stay signed protos
    because their exact bytes are what gets verified."""

    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent: common_pb2.SignedConsent
    audience_binding: common_pb2.SignedPartyBinding
    claims: tuple[common_pb2.Claim, ...]


@dataclass(frozen=True)
class IndicatorQuery:
    field: str
    form: common_pb2.DisclosureForm


@dataclass(frozen=True)
class IndicatorsRequest:
    request_id: str
    requested_at: int
    enterprise_uscc: str
    consent: common_pb2.SignedConsent
    audience_binding: common_pb2.SignedPartyBinding
    queries: tuple[IndicatorQuery, ...]


@dataclass(frozen=True)
class AgentInfo:
    provider: str
    data_as_of: str
    enterprises: int


@dataclass(frozen=True)
class RevocationResult:
    consent_id: str
    state: common_pb2.ConsentState


@dataclass(frozen=True)
class _CachedConsent:
    verified: VerifiedConsent
    binding_not_after: int


CONSENT_CACHE_BYTES = 32 * 1024 * 1024
BINDING_CACHE_BYTES = 4 * 1024 * 1024


def _consent_weight(key: tuple[bytes, ...], cached: _CachedConsent) -> int:
    """The key's bytes and the parsed consent they verified (its signed copy included)."""
    return sum(map(len, key)) + cached.verified.signed.ByteSize() + cached.verified.consent.ByteSize()


def _typed(spec: FieldSpec, cell: object) -> FieldValue:
    """A stored JSON cell back to the typed value claims evaluate on."""
    if cell is None:
        return None
    if spec.type is FieldType.BOOL and isinstance(cell, bool):
        return cell
    if spec.type is FieldType.ENUM and isinstance(cell, str):
        return cell
    if spec.numeric and isinstance(cell, (int, str)) and not isinstance(cell, bool):
        return Decimal(cell)
    if spec.type is FieldType.DATE and isinstance(cell, str):
        return cell
    # Only possible if the catalog changed a field's type after the import.
    raise XinrongError(f"{spec.key}: stored cell does not have the catalog type {spec.type}")


class ProviderAgent:
    """One provider's answering logic over its data and state stores."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        provider: str,
        credentials: PartyCredentials,
        data: DataStore,
        state: StateStore,
        verdict_ttl_seconds: int = 86400,
        max_clock_skew_seconds: int = 300,
        clock: Callable[[], float] = time.time,
        cache_size: int = 4096,
        sealer: SessionSealer | None = None,
        subject: SubjectStore | None = None,
    ) -> None:
        if credentials.role != "provider" or credentials.binding.provider != provider:
            raise ValidationError(f"credentials are not those of provider {provider!r}")
        self.catalog = catalog
        self.provider = provider
        self._signing = credentials.signing_key
        self._key_id = credentials.signing_key.key_id
        self._ca: CaVerifier = credentials.ca
        self._data = data
        self._state = state
        self._ttl = verdict_ttl_seconds
        self._skew = max_clock_skew_seconds
        self._clock = clock
        # Answers go to the same few banks all day: one HPKE per session, not per answer.
        self._sealer = sealer if sealer is not None else SessionSealer()
        # Objections, repairs and pauses of the enterprises (xinrong.provider_agent.subject).
        self._subject = subject
        # Bounded in bytes as well as entries (A3): keys hold the verified
        # bytes in full (a forged signature must never hit), so they weigh.
        self._consents: BoundedCache[tuple[bytes, ...], _CachedConsent] = BoundedCache(
            cache_size, max_bytes=CONSENT_CACHE_BYTES, weigh=_consent_weight
        )
        self._audiences: BoundedCache[tuple[bytes, ...], VerifiedBinding] = BoundedCache(
            cache_size, max_bytes=BINDING_CACHE_BYTES, weigh=lambda key, _v: 2 * sum(map(len, key))
        )
        self._claims: BoundedCache[bytes, CheckedClaim] = BoundedCache(
            cache_size, max_bytes=CLAIM_CACHE_BYTES, weigh=checked_claim_weight
        )
        self._revoked: dict[str, frozenset[str]] = {}
        self._revoked_lock = threading.Lock()
        for r in state.revocations():
            self._revoked[r.consent_id] = self._revoked.get(r.consent_id, frozenset()) | {r.enterprise_uscc}

    # What the agent's other use cases (``provider_agent.matching``) answer with: its keys, CA, stores, clock.

    @property
    def signing_key(self) -> SigningKey:
        return self._signing

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def ca(self) -> CaVerifier:
        return self._ca

    @property
    def data(self) -> DataStore:
        return self._data

    @property
    def state(self) -> StateStore:
        return self._state

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    # ------------------------------------------------------------------ checks

    def _check_shape(self, request_id: str, n_items: int) -> None:
        if not ids.is_request_id(request_id):
            raise ValidationError("request id missing or malformed", public=ids.REQUEST_ID_RULE)
        if not 1 <= n_items <= MAX_ITEMS_PER_REQUEST:
            raise invalid(f"a request carries 1 to {MAX_ITEMS_PER_REQUEST} claims or queries")

    def _check_fresh(self, requested_at: int, now: float) -> None:
        if abs(now - requested_at) > self._skew:
            raise ValidationError(f"requested_at is {now - requested_at:.0f}s from now", reason=Reason.REQUEST_STALE)

    def verify_consent(self, signed: common_pb2.SignedConsent, now: float) -> VerifiedConsent:
        eb = signed.enterprise_binding
        # The key is the exact bytes that were verified (a tuple compares
        # them in full on a hit), so a forged signature never hits the cache.
        key = (signed.consent, signed.signature, eb.binding, eb.ca_signature)
        hit = self._consents.get(key)
        if hit is not None and now <= hit.binding_not_after:
            return hit.verified
        verified = verify_signed_consent(self._ca, signed)
        binding = common_pb2.PartyBinding()
        binding.ParseFromString(eb.binding)  # parsed fine inside verify_signed_consent
        self._consents.put(key, _CachedConsent(verified, binding.not_after))
        return verified

    def _verify_audience(self, signed: common_pb2.SignedPartyBinding, now: float) -> VerifiedBinding:
        key = (signed.binding, signed.ca_signature)
        hit = self._audiences.get(key)
        if hit is not None and now <= hit.not_after:
            return hit
        audience = verify_binding(self._ca, signed, expect_role="institution", now=now)
        if len(audience.sealing_public_raw) != 32:
            raise SignatureError("audience binding has no X25519 sealing key")
        self._audiences.put(key, audience)
        return audience

    def consent_state(self, verified: VerifiedConsent) -> int:
        if verified.enterprise in self._revoked.get(verified.consent_id, frozenset()):
            return common_pb2.CONSENT_STATE_REVOKED
        if self._subject is not None and (verified.consent_id, verified.enterprise) in self._subject.view().paused:
            return common_pb2.CONSENT_STATE_PAUSED
        return common_pb2.CONSENT_STATE_ACTIVE

    def _check_claim(self, claim: common_pb2.Claim) -> CheckedClaim:
        """Probing policy and ownership of one claim. Only accepted claims are
        cached (by their exact bytes); a refused one is re-checked every time,
        so the cache cannot be grown with junk."""
        key = digest_key(claim.SerializeToString(deterministic=True))
        hit = self._claims.get(key)
        if hit is not None:
            return hit
        checked = check_claim(self.catalog, claim)
        self._own_field(checked.spec)
        self._claims.put(key, checked)
        return checked

    def _own_field(self, spec: FieldSpec) -> None:
        if spec.provider != self.provider:
            raise ValidationError(f"{spec.key} belongs to provider {spec.provider}, not {self.provider}")

    def _answer(
        self,
        *,
        kind: str,
        request_id: str,
        requested_at: int,
        enterprise: str,
        verified: VerifiedConsent,
        audience: VerifiedBinding,
        needs: list[tuple[str, Form]],
        now: float,
        build: Callable[[Lookup, list[object] | None, int], tuple[common_pb2.AnswerBundle, list[str]]],
    ) -> common_pb2.SealedBox:
        """Steps 5-8, the one read, then ``build`` (evaluate and sign), seal,
        and the answer log: all inside the state store's request transaction,
        so an answer exists only if its use was counted and it was logged."""
        check_consent_use(
            verified,
            enterprise_uscc=enterprise,
            audience_id=audience.party_id,
            needs=needs,
            now=now,
            state=self.consent_state(verified),
        )
        consent = verified.consent
        check_purpose(verified, VALUE_QUERY_PURPOSES)  # as the node's admission does
        with self._state.request(
            audience=audience.party_id,
            request_id=request_id,
            requested_at=requested_at,
            consent_id=consent.consent_id,
            max_uses=consent.max_uses,
            max_uses_per_day=consent.max_uses_per_day,
            now=now,
        ) as txn:
            if txn.outcome is Admission.REPLAYED:
                raise ValidationError("request id seen before", reason=Reason.REQUEST_REPLAYED)
            if txn.outcome is Admission.USES_EXHAUSTED:
                raise ConsentError("agent use count reached max_uses", reason=Reason.CONSENT_USES_EXHAUSTED)
            if txn.outcome is Admission.DAILY_LIMIT:
                raise ConsentError("agent use count reached max_uses_per_day", reason=Reason.CONSENT_DAILY_LIMIT)
            lookup = self._data.lookup(enterprise, consent.data_period_from, consent.data_period_to)
            if lookup is None:
                raise ProviderUnavailable("no data period imported yet")
            check_data_period(verified, lookup.as_of)
            cells: list[object] | None = None
            if lookup.data is not None:
                parsed = json.loads(lookup.data)
                if not isinstance(parsed, list):
                    raise XinrongError("stored record is not a JSON array")
                cells = parsed
            issued_at = int(now)
            bundle, hashes = build(lookup, cells, issued_at)
            box = self._sealer.seal(
                bundle.SerializeToString(deterministic=True),
                recipient_id=audience.party_id,
                recipient_public_raw=audience.sealing_public_raw,
                content_type=BUNDLE_CONTENT_TYPE,
                context=request_id,
                pad_to=len(needs) * BUNDLE_ITEM_PAD_BYTES,
            )
            txn.record(
                AnswerLogEntry(
                    request_id=request_id,
                    kind=kind,
                    consent_id=consent.consent_id,
                    enterprise_uscc=enterprise,
                    audience=audience.party_id,
                    fields=tuple(field for field, _ in needs),
                    data_as_of=lookup.as_of,
                    answer_sha256=tuple(hashes),
                    sealed_sha256=hashlib.sha256(box.ciphertext).hexdigest(),
                    issued_at=issued_at,
                )
            )
        log.debug("answered %s %s: consent %s, %d items", kind, request_id, consent.consent_id, len(needs))
        return box

    def cell(
        self, lookup: Lookup, cells: list[object] | None, spec: FieldSpec, enterprise: str, view: SubjectView
    ) -> FieldValue:
        if cells is None:
            return None
        index = self._data.columns(lookup.period_id).get(spec.column)
        if index is None or index >= len(cells):
            return None
        if view.repaired and view.hidden(enterprise, spec.key, cells[index], _today(self._clock())):
            return None  # a repaired negative item is not disclosed (answers as NO_DATA)
        return _typed(spec, cells[index])

    def subject_view(self) -> SubjectView:
        return self._subject.view() if self._subject is not None else _NO_SUBJECT

    # -------------------------------------------------------------- use cases

    def batch(self) -> AbstractContextManager[None]:
        """Answer several requests under one state commit (see StateStore.batch)."""
        return self._state.batch()

    def evaluate_claims(self, req: ClaimsRequest) -> common_pb2.SealedBox:
        """Verdicts on claims, signed and sealed to the audience."""
        now = self._clock()
        self._check_shape(req.request_id, len(req.claims))
        self._check_fresh(req.requested_at, now)
        verified = self.verify_consent(req.consent, now)
        audience = self._verify_audience(req.audience_binding, now)
        checked = [self._check_claim(claim) for claim in req.claims]

        def build(
            lookup: Lookup, cells: list[object] | None, issued_at: int
        ) -> tuple[common_pb2.AnswerBundle, list[str]]:
            bundle = common_pb2.AnswerBundle()
            hashes: list[str] = []
            view = self.subject_view()
            for c in checked:
                verdict = common_pb2.Verdict(
                    request_id=req.request_id,
                    enterprise_uscc=req.enterprise_uscc,
                    claim=c.claim,
                    claim_text=c.text,
                    result=_RESULT[evaluate(c, self.cell(lookup, cells, c.spec, req.enterprise_uscc, view))],
                    data_as_of=lookup.as_of,
                    consent_id=verified.consent_id,
                    audience=audience.party_id,
                    issued_at=issued_at,
                    expires_at=issued_at + self._ttl,
                    provider=self.provider,
                    provider_key_id=self._key_id,
                    disputed=(req.enterprise_uscc, c.spec.key) in view.disputed,
                )
                raw = verdict.SerializeToString(deterministic=True)
                bundle.verdicts.add(verdict=raw, signature=self._signing.sign(VERDICT_CONTEXT, raw))
                hashes.append(hashlib.sha256(raw).hexdigest())
            return bundle, hashes

        return self._answer(
            kind="claims",
            request_id=req.request_id,
            requested_at=req.requested_at,
            enterprise=req.enterprise_uscc,
            verified=verified,
            audience=audience,
            needs=[(c.spec.key, c.form) for c in checked],
            now=now,
            build=build,
        )

    def evaluate_indicators(self, req: IndicatorsRequest) -> common_pb2.SealedBox:
        """Fields disclosed in a published form (flag, grade, bracket), signed
        and sealed. Verification-only fields are refused: they only ever
        confirm or deny a claim."""
        now = self._clock()
        self._check_shape(req.request_id, len(req.queries))
        self._check_fresh(req.requested_at, now)
        verified = self.verify_consent(req.consent, now)
        audience = self._verify_audience(req.audience_binding, now)
        specs: list[tuple[FieldSpec, Form]] = []
        for q in req.queries:
            form = PROTO_TO_FORM.get(q.form)
            if form is None:
                raise ValidationError("indicator query without a disclosure form")
            spec = check_indicator(self.catalog, q.field, form)
            self._own_field(spec)
            specs.append((spec, form))

        def build(
            lookup: Lookup, cells: list[object] | None, issued_at: int
        ) -> tuple[common_pb2.AnswerBundle, list[str]]:
            bundle = common_pb2.AnswerBundle()
            hashes: list[str] = []
            view = self.subject_view()
            for spec, form in specs:
                indicator = common_pb2.Indicator(
                    request_id=req.request_id,
                    enterprise_uscc=req.enterprise_uscc,
                    field=spec.key,
                    form=FORM_TO_PROTO[form],
                    data_as_of=lookup.as_of,
                    consent_id=verified.consent_id,
                    audience=audience.party_id,
                    issued_at=issued_at,
                    expires_at=issued_at + self._ttl,
                    provider=self.provider,
                    provider_key_id=self._key_id,
                    disputed=(req.enterprise_uscc, spec.key) in view.disputed,
                )
                _disclose(indicator, spec, form, self.cell(lookup, cells, spec, req.enterprise_uscc, view))
                raw = indicator.SerializeToString(deterministic=True)
                bundle.indicators.add(indicator=raw, signature=self._signing.sign(INDICATOR_CONTEXT, raw))
                hashes.append(hashlib.sha256(raw).hexdigest())
            return bundle, hashes

        return self._answer(
            kind="indicators",
            request_id=req.request_id,
            requested_at=req.requested_at,
            enterprise=req.enterprise_uscc,
            verified=verified,
            audience=audience,
            needs=[(spec.key, form) for spec, form in specs],
            now=now,
            build=build,
        )

    def update_consent_status(
        self, revocation: common_pb2.SignedConsentRevocation, enterprise_binding: common_pb2.SignedPartyBinding
    ) -> RevocationResult:
        """Accept a revocation only if the enterprise's own CA-bound key signed
        it; the node merely delivers it. Later uses of that consent by that
        enterprise are refused with CONSENT_REVOKED (a revocation signed by one
        enterprise cannot revoke another enterprise's consent)."""
        parsed = verify_revocation(self._ca, revocation, enterprise_binding)
        if not parsed.consent_id:
            raise ValidationError("revocation names no consent")
        self._state.add_revocation(
            consent_id=parsed.consent_id,
            enterprise_uscc=parsed.enterprise_uscc,
            revoked_at=parsed.revoked_at,
            received_at=int(self._clock()),
            revocation=revocation.revocation,
            signature=revocation.signature,
            enterprise_binding=enterprise_binding.SerializeToString(deterministic=True),
        )
        with self._revoked_lock:
            self._revoked[parsed.consent_id] = self._revoked.get(parsed.consent_id, frozenset()) | {
                parsed.enterprise_uscc
            }
        log.info("consent %s revoked by its enterprise", parsed.consent_id)
        return RevocationResult(consent_id=parsed.consent_id, state=common_pb2.CONSENT_STATE_REVOKED)

    # ------------------------------------------------ post-loan monitoring (provider_agent.monitoring)

    def admit_watch(
        self,
        *,
        enterprise: str,
        consent: common_pb2.SignedConsent,
        audience_binding: common_pb2.SignedPartyBinding,
        claims: tuple[common_pb2.Claim, ...],
        requested_at: int,
        max_claims: int,
    ) -> tuple[VerifiedConsent, VerifiedBinding, list[CheckedClaim]]:
        """The checks a watch passes before the agent keeps it: the same ones,
        in the same order, as a Verify (steps 0-5), plus the consent's purpose.
        No data is read here."""
        now = self._clock()
        if not 1 <= len(claims) <= max_claims:
            raise ValidationError(f"{len(claims)} claims", public=f"a watch carries 1 to {max_claims} claims")
        self._check_fresh(requested_at, now)
        verified = self.verify_consent(consent, now)
        audience = self._verify_audience(audience_binding, now)
        checked = [self._check_claim(claim) for claim in claims]
        check_consent_use(
            verified,
            enterprise_uscc=enterprise,
            audience_id=audience.party_id,
            needs=[(c.spec.key, c.form) for c in checked],
            now=now,
            state=self.consent_state(verified),
        )
        if verified.consent.purpose != common_pb2.CONSENT_PURPOSE_POST_LOAN_MONITORING:
            raise ConsentError(
                "purpose is not post-loan monitoring",
                reason=Reason.CLAIM_OUT_OF_SCOPE,
                public="the consent's purpose is not post_loan_monitoring",
            )
        return verified, audience, checked

    def check_watched_claim(self, claim: common_pb2.Claim) -> CheckedClaim:
        """A stored watch's claim, re-checked against the catalog (cached by its bytes)."""
        return self._check_claim(claim)

    def consent_state_of(self, consent_id: str, enterprise: str) -> int:
        """ACTIVE, PAUSED or REVOKED, as a Verify under that consent would see it now."""
        if enterprise in self._revoked.get(consent_id, frozenset()):
            return common_pb2.CONSENT_STATE_REVOKED
        if self._subject is not None and (consent_id, enterprise) in self._subject.view().paused:
            return common_pb2.CONSENT_STATE_PAUSED
        return common_pb2.CONSENT_STATE_ACTIVE

    def watched_verdicts(
        self,
        enterprise: str,
        period_from: str,
        period_to: str,
        checked: list[CheckedClaim],
        preloaded: tuple[Period, dict[str, str]] | None = None,
    ) -> tuple[Lookup, list[int]] | None:
        """One read of the enterprise's record (within the consent's data period,
        as a Verify reads it) and one verdict per claim; None before any import.
        A repaired item answers NO_DATA, as in a Verify. ``preloaded``: a period
        and all its records, read once for a whole re-evaluation."""
        if preloaded is not None:
            period, records = preloaded
            inside = period_from <= period.as_of <= period_to
            lookup: Lookup | None = Lookup(period.id, period.as_of, records.get(enterprise) if inside else None)
        else:
            lookup = self._data.lookup(enterprise, period_from, period_to)
        if lookup is None:
            return None
        cells: list[object] | None = None
        if lookup.data is not None:
            parsed = json.loads(lookup.data)
            if not isinstance(parsed, list):
                raise XinrongError("stored record is not a JSON array")
            cells = parsed
        view = self.subject_view()
        return lookup, [_RESULT[evaluate(c, self.cell(lookup, cells, c.spec, enterprise, view))] for c in checked]

    def active_period(self) -> Period | None:
        return self._data.active_period()

    def record_answers(self, entries: list[AnswerLogEntry]) -> None:
        """Log watch updates in the agent's own answer log (see StateStore.record_answers)."""
        self._state.record_answers(entries)

    def period_records(self, period_id: int) -> dict[str, str]:
        return self._data.period_records(period_id)

    def info(self) -> AgentInfo:
        period = self._data.active_period()
        return AgentInfo(
            provider=self.provider,
            data_as_of=period.as_of if period else "",
            enterprises=period.rows if period else 0,
        )

    def ready(self) -> bool:
        """Ready to answer: keys loaded (construction) and an active period exists."""
        return self._data.active_period() is not None

    def housekeeping(self) -> int:
        """Forget request ids old enough that freshness refuses them anyway."""
        horizon = int(self._clock()) - 2 * self._skew
        if self._subject is not None:
            self._subject.prune_seen(horizon)
        return self._state.prune_seen(horizon)


_NO_SUBJECT = SubjectView()


def _today(now: float) -> str:
    return datetime.datetime.fromtimestamp(now, datetime.UTC).date().isoformat()


def _disclose(indicator: common_pb2.Indicator, spec: FieldSpec, form: Form, value: FieldValue) -> None:
    """Set the indicator's value in exactly the published form."""
    if value is None:
        indicator.no_data = True
    elif form is Form.FLAG and isinstance(value, bool):
        indicator.flag = value
    elif form is Form.GRADE and isinstance(value, str):
        indicator.grade = value
    elif form is Form.BRACKET and isinstance(value, Decimal):
        index = spec.bracket_index(value)
        if index < 0:
            # The importer refuses values below the first edge; only a catalog
            # change after the import gets here. Never guess a bracket.
            raise XinrongError(f"{spec.key}: stored value below the first published edge")
        lower, upper = spec.bracket_bounds(index)
        indicator.bracket.index = index
        indicator.bracket.lower = format_decimal(lower)
        indicator.bracket.upper = format_decimal(upper) if upper is not None else ""
    else:
        raise XinrongError(f"{spec.key}: stored cell does not fit the {form} form")
