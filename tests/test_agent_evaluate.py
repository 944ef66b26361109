"""The agent's domain logic: answers against the CSV, and every refusal with its reason."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinrong.catalog import Catalog, Form
from xinrong.errors import Reason, XinrongError
from xinrong.provider_agent.evaluate import ClaimsRequest
from xinrong.v1 import common_pb2

from support.agent import (
    AS_OF,
    E_ABSENT,
    E_EMPTY,
    E_GOOD,
    E_POOR,
    RESULT_NAMES,
    SI_HEADER,
    TAX_HEADER,
    AgentUnderTest,
    Clock,
    claims_request,
    import_rows,
    indicators_request,
    open_agent,
    open_bundle,
    revocation_for,
    si_rows,
    signed_consent,
    tax_rows,
    verified_indicators,
    verified_verdicts,
)
from support.pki import Pki


@pytest.fixture
def tax(pki: Pki, catalog: Catalog, tmp_path: Path) -> Iterator[AgentUnderTest]:
    t = open_agent(pki, catalog, tmp_path, "tax", Clock())
    import_rows(t, catalog, TAX_HEADER, tax_rows())
    yield t
    t.close()


@pytest.fixture
def si(pki: Pki, catalog: Catalog, tmp_path: Path) -> Iterator[AgentUnderTest]:
    t = open_agent(pki, catalog, tmp_path, "social_insurance", Clock())
    import_rows(t, catalog, SI_HEADER, si_rows())
    yield t
    t.close()


def results(pki: Pki, t: AgentUnderTest, req: ClaimsRequest) -> list[str]:
    box = t.agent.evaluate_claims(req)
    verdicts = verified_verdicts(pki, open_bundle(pki, box, req.request_id), t.provider)
    return [RESULT_NAMES[v.result] for v in verdicts]


def refusal(fn: object, *args: object) -> Reason:
    with pytest.raises(XinrongError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.reason


CLAIMS = [
    "tax.credit_grade in A,B",
    "tax.abnormal_taxpayer == false",
    "tax.in_arrears == true",
    "tax.arrears_amount >= 100000",
    "tax.vat_paid_last_year >= 1000000",
    "tax.vat_paid_last_year in [1000000,5000000)",
    "tax.cit_paid_last_year < 200000",
    "tax.consecutive_normal_months >= 24",
]


@pytest.mark.parametrize(
    ("enterprise", "expected"),
    [
        (E_GOOD, ["TRUE", "TRUE", "FALSE", "FALSE", "TRUE", "TRUE", "FALSE", "TRUE"]),
        (E_POOR, ["FALSE", "FALSE", "TRUE", "TRUE", "FALSE", "FALSE", "NO_DATA", "FALSE"]),
        (E_EMPTY, ["NO_DATA"] * 8),
        (E_ABSENT, ["NO_DATA"] * 8),
    ],
)
def test_verdicts_match_the_csv(
    pki: Pki, catalog: Catalog, tax: AgentUnderTest, enterprise: str, expected: list[str]
) -> None:
    consent = signed_consent(pki, catalog, enterprise)
    req = claims_request(pki, consent, enterprise, CLAIMS)
    box = tax.agent.evaluate_claims(req)
    assert box.recipient_id == "bank-a" and box.context == req.request_id
    verdicts = verified_verdicts(pki, open_bundle(pki, box, req.request_id), "tax")
    assert [RESULT_NAMES[v.result] for v in verdicts] == expected
    parsed = common_pb2.Consent()
    parsed.ParseFromString(consent.consent)
    for v, text in zip(verdicts, CLAIMS):
        assert v.claim_text == text
        assert v.request_id == req.request_id
        assert v.enterprise_uscc == enterprise
        assert v.data_as_of == AS_OF
        assert v.consent_id == parsed.consent_id
        assert v.audience == "bank-a"
        assert v.provider == "tax"
        assert v.expires_at - v.issued_at == 3600
        assert abs(v.issued_at - tax.clock.now) < 2


def test_claims_are_canonicalized_before_signing(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    req = claims_request(pki, consent, E_GOOD, ["tax.credit_grade in B,A,B", "tax.vat_paid_last_year >= 1000000.00"])
    verdicts = verified_verdicts(pki, open_bundle(pki, tax.agent.evaluate_claims(req), req.request_id), "tax")
    assert [v.claim_text for v in verdicts] == ["tax.credit_grade in A,B", "tax.vat_paid_last_year >= 1000000"]


def test_bank_b_cannot_open_a_box_sealed_to_bank_a(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    req = claims_request(pki, signed_consent(pki, catalog, E_GOOD), E_GOOD, ["tax.in_arrears == false"])
    box = tax.agent.evaluate_claims(req)
    box.recipient_id = "bank-b"  # even relabelled, the HPKE info and key do not match
    with pytest.raises(XinrongError):
        open_bundle(pki, box, req.request_id, bank="bank-b")


def test_indicators_in_published_forms(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    queries = [
        ("tax.in_arrears", Form.FLAG),
        ("tax.credit_grade", Form.GRADE),
        ("tax.vat_paid_last_year", Form.BRACKET),
        ("tax.consecutive_normal_months", Form.BRACKET),
        ("tax.cit_paid_last_year", Form.BRACKET),
    ]
    for enterprise, expected in [
        (
            E_GOOD,
            [
                ("flag", False),
                ("grade", "A"),
                ("bracket", (3, "1000000", "5000000")),
                ("bracket", (4, "24", "36")),
                ("bracket", (2, "200000", "1000000")),
            ],
        ),
        (
            E_POOR,
            [
                ("flag", True),
                ("grade", "C"),
                ("bracket", (0, "0", "100000")),
                ("bracket", (0, "0", "3")),
                ("no_data", True),
            ],
        ),
        (E_ABSENT, [("no_data", True)] * 5),
    ]:
        consent = signed_consent(pki, catalog, enterprise)
        req = indicators_request(pki, consent, enterprise, queries)
        indicators = verified_indicators(
            pki, open_bundle(pki, tax.agent.evaluate_indicators(req), req.request_id), "tax"
        )
        got = []
        for ind in indicators:
            kind = ind.WhichOneof("value")
            if kind == "bracket":
                got.append((kind, (ind.bracket.index, ind.bracket.lower, ind.bracket.upper)))
            else:
                got.append((kind, getattr(ind, str(kind))))
            assert ind.data_as_of == AS_OF and ind.audience == "bank-a" and ind.provider == "tax"
        assert got == expected, enterprise


def test_top_bracket_is_unbounded(pki: Pki, catalog: Catalog, tmp_path: Path) -> None:
    t = open_agent(pki, catalog, tmp_path, "tax", Clock())
    try:
        rows = tax_rows()
        rows[0][6] = "99000000"  # above the last VAT edge
        import_rows(t, catalog, TAX_HEADER, rows)
        req = indicators_request(
            pki, signed_consent(pki, catalog, E_GOOD), E_GOOD, [("tax.vat_paid_last_year", Form.BRACKET)]
        )
        [ind] = verified_indicators(pki, open_bundle(pki, t.agent.evaluate_indicators(req), req.request_id), "tax")
        assert (ind.bracket.index, ind.bracket.lower, ind.bracket.upper) == (5, "10000000", "")
    finally:
        t.close()


def test_verification_only_fields_answer_claims_but_refuse_indicators(
    pki: Pki, catalog: Catalog, si: AgentUnderTest
) -> None:
    consent = signed_consent(pki, catalog, E_GOOD, scope=["social_insurance.*"])
    req = claims_request(
        pki,
        consent,
        E_GOOD,
        [
            "social_insurance.avg_insured_headcount >= 100",
            "social_insurance.consecutive_months >= 36",
            "social_insurance.avg_employer_contribution in [50000,100000)",
            "social_insurance.in_arrears == true",
        ],
    )
    assert results(pki, si, req) == ["TRUE", "TRUE", "TRUE", "FALSE"]
    bad = indicators_request(pki, consent, E_GOOD, [("social_insurance.avg_insured_headcount", Form.BRACKET)])
    assert refusal(si.agent.evaluate_indicators, bad) is Reason.FORM_NOT_ALLOWED


# ------------------------------------------------------------------ refusals


def test_forged_consent_is_access_denied(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    forged = signed_consent(pki, catalog, E_GOOD, signer=E_POOR)  # E_POOR's key, E_GOOD's binding
    req = claims_request(pki, forged, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.ACCESS_DENIED


def test_tampered_consent_bytes_are_access_denied(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    good = signed_consent(pki, catalog, E_GOOD, max_uses=1)
    consent = common_pb2.Consent()
    consent.ParseFromString(good.consent)
    consent.max_uses = 1000
    tampered = common_pb2.SignedConsent(
        consent=consent.SerializeToString(deterministic=True),
        signature=good.signature,
        enterprise_binding=good.enterprise_binding,
    )
    req = claims_request(pki, tampered, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.ACCESS_DENIED


def test_consent_for_another_enterprise_is_access_denied(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_POOR)
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.ACCESS_DENIED


def test_expired_and_not_yet_valid(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    now = int(time.time())
    expired = signed_consent(pki, catalog, E_GOOD, valid_from=now - 7200, valid_until=now - 60)
    future = signed_consent(pki, catalog, E_GOOD, valid_from=now + 3600, valid_until=now + 7200)
    claim = ["tax.in_arrears == false"]
    assert refusal(tax.agent.evaluate_claims, claims_request(pki, expired, E_GOOD, claim)) is Reason.CONSENT_EXPIRED
    assert (
        refusal(tax.agent.evaluate_claims, claims_request(pki, future, E_GOOD, claim)) is Reason.CONSENT_NOT_YET_VALID
    )


def test_revoked_after_update_consent_status(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    claim = ["tax.in_arrears == false"]
    assert results(pki, tax, claims_request(pki, consent, E_GOOD, claim)) == ["TRUE"]
    # A revocation signed by another enterprise for this consent id changes nothing.
    other, other_binding = revocation_for(pki, consent, by=E_POOR)
    tax.agent.update_consent_status(other, other_binding)
    assert results(pki, tax, claims_request(pki, consent, E_GOOD, claim)) == ["TRUE"]
    revocation, binding = revocation_for(pki, consent)
    result = tax.agent.update_consent_status(revocation, binding)
    assert result.state == common_pb2.CONSENT_STATE_REVOKED
    assert refusal(tax.agent.evaluate_claims, claims_request(pki, consent, E_GOOD, claim)) is Reason.CONSENT_REVOKED
    ind = indicators_request(pki, consent, E_GOOD, [("tax.in_arrears", Form.FLAG)])
    assert refusal(tax.agent.evaluate_indicators, ind) is Reason.CONSENT_REVOKED


def test_forged_revocation_is_refused(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    revocation, _ = revocation_for(pki, consent)
    # Genuine revocation bytes presented with another enterprise's binding.
    wrong_binding = pki.enterprise(E_POOR).binding.signed
    assert refusal(tax.agent.update_consent_status, revocation, wrong_binding) is Reason.ACCESS_DENIED
    assert results(pki, tax, claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])) == ["TRUE"]


def test_wrong_grantee(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD, grantee="bank-b")
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"], audience="bank-a")
    assert refusal(tax.agent.evaluate_claims, req) is Reason.ACCESS_DENIED  # uniform: no oracle on the id


@pytest.mark.parametrize("purpose", ["matching", "credit_scoring", "joint_modeling"])
def test_values_need_a_loan_consent(pki: Pki, catalog: Catalog, tax: AgentUnderTest, purpose: str) -> None:
    """A consent given for matching, scoring or modeling opens no verdict or indicator,
    at the agent as at the node: the matching consent's id reaches the bank with every
    application. The refusal spends no use (the agent's count stays where it was)."""
    other = signed_consent(pki, catalog, E_GOOD, purpose=purpose, max_uses=1)
    req = claims_request(pki, other, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.CLAIM_OUT_OF_SCOPE
    ireq = indicators_request(pki, other, E_GOOD, [("tax.credit_grade", Form.GRADE)])
    assert refusal(tax.agent.evaluate_indicators, ireq) is Reason.CLAIM_OUT_OF_SCOPE
    for allowed in ("loan_application", "post_loan_monitoring"):
        consent = signed_consent(pki, catalog, E_GOOD, purpose=allowed, max_uses=1)
        assert results(pki, tax, claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])) == ["TRUE"]


def test_audience_binding_must_be_a_ca_signed_institution(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])
    as_node = dataclasses.replace(req, audience_binding=pki.node.binding.signed)
    assert refusal(tax.agent.evaluate_claims, as_node) is Reason.ACCESS_DENIED
    forged = common_pb2.SignedPartyBinding()
    forged.CopyFrom(req.audience_binding)
    forged.ca_signature = bytes(64)
    tampered = dataclasses.replace(req, audience_binding=forged)
    assert refusal(tax.agent.evaluate_claims, tampered) is Reason.ACCESS_DENIED


def test_out_of_scope_field_and_form(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD, scope=["tax.credit_grade", "tax.vat_paid_last_year:bracket"])
    ok = claims_request(pki, consent, E_GOOD, ["tax.credit_grade in A", "tax.vat_paid_last_year in [1000000,5000000)"])
    assert results(pki, tax, ok) == ["TRUE", "TRUE"]
    field = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, field) is Reason.CLAIM_OUT_OF_SCOPE
    form = claims_request(pki, consent, E_GOOD, ["tax.vat_paid_last_year >= 1000000"])
    assert refusal(tax.agent.evaluate_claims, form) is Reason.CLAIM_OUT_OF_SCOPE


def test_over_used_consent(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD, max_uses=2)
    claim = ["tax.in_arrears == false"]
    for _ in range(2):
        assert results(pki, tax, claims_request(pki, consent, E_GOOD, claim)) == ["TRUE"]
    ind = indicators_request(pki, consent, E_GOOD, [("tax.in_arrears", Form.FLAG)])
    assert refusal(tax.agent.evaluate_indicators, ind) is Reason.CONSENT_USES_EXHAUSTED
    assert (
        refusal(tax.agent.evaluate_claims, claims_request(pki, consent, E_GOOD, claim)) is Reason.CONSENT_USES_EXHAUSTED
    )
    parsed = common_pb2.Consent()
    parsed.ParseFromString(consent.consent)
    assert tax.state.use_count(parsed.consent_id) == 2, "a refused request leaves the count as it was"


def test_string_arrays_are_compact_json_dumps_byte_for_byte() -> None:
    from xinrong.jsontext import string_array

    for items in ([], ["tax.credit_grade"], ["a" * 64, "b" * 64], ['q"uote', "back\\slash", "ctl\x01", "汉字"]):
        assert string_array(items) == json.dumps(items, separators=(",", ":"))
        assert string_array(tuple(items)) == json.dumps(items, separators=(",", ":"))
        assert json.loads(string_array(items)) == items


def test_daily_limit(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    now = int(tax.clock.now)
    consent = signed_consent(pki, catalog, E_GOOD, max_uses=10, max_uses_per_day=1, valid_until=now + 3 * 86400)
    claim = ["tax.in_arrears == false"]
    assert results(pki, tax, claims_request(pki, consent, E_GOOD, claim)) == ["TRUE"]
    assert refusal(tax.agent.evaluate_claims, claims_request(pki, consent, E_GOOD, claim)) is Reason.CONSENT_DAILY_LIMIT
    tax.clock.now += 86400  # the next UTC day: a fresh daily allowance
    tomorrow = int(tax.clock.now)
    assert results(pki, tax, claims_request(pki, consent, E_GOOD, claim, requested_at=tomorrow)) == ["TRUE"]
    again = claims_request(pki, consent, E_GOOD, claim, requested_at=tomorrow)
    assert refusal(tax.agent.evaluate_claims, again) is Reason.CONSENT_DAILY_LIMIT


def test_replayed_request_id(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"], request_id="node-req-1")
    assert results(pki, tax, req) == ["TRUE"]
    assert refusal(tax.agent.evaluate_claims, req) is Reason.REQUEST_REPLAYED
    # The id space is shared with indicators.
    ind = indicators_request(pki, consent, E_GOOD, [("tax.in_arrears", Form.FLAG)], request_id="node-req-1")
    assert refusal(tax.agent.evaluate_indicators, ind) is Reason.REQUEST_REPLAYED


def test_stale_request(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    now = int(tax.clock.now)
    for skewed in (now - 301, now + 301):
        req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"], requested_at=skewed)
        assert refusal(tax.agent.evaluate_claims, req) is Reason.REQUEST_STALE
    edge = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"], requested_at=now - 300)
    assert results(pki, tax, edge) == ["TRUE"]


def test_off_ladder_threshold(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    for claim in ["tax.vat_paid_last_year >= 1000001", "tax.vat_paid_last_year in [100000,1000001)"]:
        req = claims_request(pki, consent, E_GOOD, [claim])
        assert refusal(tax.agent.evaluate_claims, req) is Reason.THRESHOLD_NOT_PUBLISHED


def test_claim_for_another_providers_field(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD, scope=["tax.*", "electricity.*"])
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false", "electricity.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.INVALID_ARGUMENT
    ind = indicators_request(pki, consent, E_GOOD, [("electricity.risk_grade", Form.GRADE)])
    assert refusal(tax.agent.evaluate_indicators, ind) is Reason.INVALID_ARGUMENT


def test_unknown_field_and_malformed_requests(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    req = claims_request(pki, consent, E_GOOD, ["tax.no_such_field == true"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.UNKNOWN_FIELD
    empty = claims_request(pki, consent, E_GOOD, [])
    assert refusal(tax.agent.evaluate_claims, empty) is Reason.INVALID_ARGUMENT
    bad_id = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"], request_id="has space")
    assert refusal(tax.agent.evaluate_claims, bad_id) is Reason.INVALID_ARGUMENT
    ind = indicators_request(pki, consent, E_GOOD, [("tax.vat_paid_last_year", Form.LADDER)])
    assert refusal(tax.agent.evaluate_indicators, ind) is Reason.FORM_NOT_ALLOWED


def test_data_period_outside_consent_does_not_count_a_use(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD, max_uses=1, period=("2025-01-01", "2025-12-31"))
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.CONSENT_PERIOD_MISMATCH
    parsed = common_pb2.Consent()
    parsed.ParseFromString(consent.consent)
    assert tax.state.use_count(parsed.consent_id) == 0


def test_checks_run_in_the_documented_order(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    """Several faults at once: the first check in the fixed order decides."""
    forged = signed_consent(pki, catalog, E_GOOD, signer=E_POOR, grantee="bank-b")
    stale = claims_request(pki, forged, E_GOOD, ["tax.vat_paid_last_year >= 7"], requested_at=0)
    assert refusal(tax.agent.evaluate_claims, stale) is Reason.REQUEST_STALE
    fresh = claims_request(pki, forged, E_GOOD, ["tax.vat_paid_last_year >= 7"])
    assert refusal(tax.agent.evaluate_claims, fresh) is Reason.ACCESS_DENIED
    wrong_grantee = signed_consent(pki, catalog, E_GOOD, grantee="bank-b")
    off_ladder = claims_request(pki, wrong_grantee, E_GOOD, ["tax.vat_paid_last_year >= 7"])
    assert refusal(tax.agent.evaluate_claims, off_ladder) is Reason.THRESHOLD_NOT_PUBLISHED
    # A refused request never reached the replay set: the same id still works.
    ok_consent = signed_consent(pki, catalog, E_GOOD)
    retry = claims_request(pki, ok_consent, E_GOOD, ["tax.in_arrears == false"], request_id=fresh.request_id)
    assert results(pki, tax, retry) == ["TRUE"]


def test_state_survives_a_restart(pki: Pki, catalog: Catalog, tmp_path: Path) -> None:
    t = open_agent(pki, catalog, tmp_path, "tax", Clock())
    import_rows(t, catalog, TAX_HEADER, tax_rows())
    used_up = signed_consent(pki, catalog, E_GOOD, max_uses=1)
    revoked = signed_consent(pki, catalog, E_GOOD)
    claim = ["tax.in_arrears == false"]
    first = claims_request(pki, used_up, E_GOOD, claim)
    assert results(pki, t, first) == ["TRUE"]
    t.agent.update_consent_status(*revocation_for(pki, revoked))
    t.close()

    t2 = open_agent(pki, catalog, tmp_path, "tax", Clock())
    try:
        assert t2.agent.info().data_as_of == AS_OF and t2.agent.info().enterprises == 3
        assert refusal(t2.agent.evaluate_claims, first) is Reason.REQUEST_REPLAYED
        assert (
            refusal(t2.agent.evaluate_claims, claims_request(pki, used_up, E_GOOD, claim))
            is Reason.CONSENT_USES_EXHAUSTED
        )
        assert refusal(t2.agent.evaluate_claims, claims_request(pki, revoked, E_GOOD, claim)) is Reason.CONSENT_REVOKED
    finally:
        t2.close()


def test_answer_log_reconciles_and_holds_no_values(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    consent = signed_consent(pki, catalog, E_GOOD)
    req = claims_request(pki, consent, E_GOOD, ["tax.vat_paid_last_year >= 1000000", "tax.credit_grade in A"])
    box = tax.agent.evaluate_claims(req)
    bundle = open_bundle(pki, box, req.request_id)
    ind_req = indicators_request(pki, consent, E_GOOD, [("tax.vat_paid_last_year", Form.BRACKET)])
    ind_box = tax.agent.evaluate_indicators(ind_req)
    [claims_entry, ind_entry] = tax.state.answer_log()
    assert claims_entry.request_id == req.request_id and claims_entry.kind == "claims"
    assert claims_entry.fields == ("tax.vat_paid_last_year", "tax.credit_grade")
    assert claims_entry.answer_sha256 == tuple(hashlib.sha256(v.verdict).hexdigest() for v in bundle.verdicts)
    assert claims_entry.sealed_sha256 == hashlib.sha256(box.ciphertext).hexdigest()
    assert claims_entry.audience == "bank-a" and claims_entry.enterprise_uscc == E_GOOD
    assert ind_entry.kind == "indicators" and ind_entry.sealed_sha256 == hashlib.sha256(ind_box.ciphertext).hexdigest()
    # Nothing in the state database is a raw value from the CSV.
    dump = "\n".join(sqlite3.connect(tax.root / "tax.state.db").iterdump())
    for raw_value in ("1200000.50", "300000", "2026-09-01"):
        assert raw_value not in dump


def test_consents_are_verified_once_then_cached(
    pki: Pki, catalog: Catalog, tax: AgentUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    import xinrong.provider_agent.evaluate as ev

    calls = {"consent": 0, "binding": 0}
    real_consent, real_binding = ev.verify_signed_consent, ev.verify_binding  # type: ignore[attr-defined]

    def counting_consent(*a: object, **k: object) -> object:
        calls["consent"] += 1
        return real_consent(*a, **k)  # type: ignore[arg-type]

    def counting_binding(*a: object, **k: object) -> object:
        calls["binding"] += 1
        return real_binding(*a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(ev, "verify_signed_consent", counting_consent)
    monkeypatch.setattr(ev, "verify_binding", counting_binding)
    consent = signed_consent(pki, catalog, E_GOOD)
    for _ in range(3):
        assert results(pki, tax, claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])) == ["TRUE"]
    assert calls == {"consent": 1, "binding": 1}
    # Different bytes (a forged signature on the same consent) are not a cache hit.
    forged = common_pb2.SignedConsent()
    forged.CopyFrom(consent)
    forged.signature = bytes(64)
    req = claims_request(pki, forged, E_GOOD, ["tax.in_arrears == false"])
    assert refusal(tax.agent.evaluate_claims, req) is Reason.ACCESS_DENIED
    assert calls["consent"] == 2


def test_agent_answers_while_an_import_holds_the_data_lock(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    """Serving state lives in its own file, so a long import (one write
    transaction on the data file) never blocks the replay and use-count writes;
    readers see the old period until the import commits."""
    from xinrong.provider_agent.store import DataStore

    importer = DataStore(tax.data.path, "tax")  # as `xinrong agent import` would, from another process
    writer = importer.begin_import(source="q4.csv", columns=["credit_grade"], catalog_sha256="x", now=0)
    try:
        writer.add([(E_GOOD, 2, '["D"]')])
        restarted = DataStore(tax.data.path, "tax")  # an agent (re)starting mid-import does not block
        restarted.close()
        req = claims_request(pki, signed_consent(pki, catalog, E_GOOD), E_GOOD, ["tax.credit_grade in A"])
        assert results(pki, tax, req) == ["TRUE"]
    finally:
        writer.abort()
        importer.close()


def test_use_limit_holds_under_concurrency(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> None:
    """Sixteen concurrent requests on a five-use consent: exactly five answers."""
    from concurrent.futures import ThreadPoolExecutor

    consent = signed_consent(pki, catalog, E_GOOD, max_uses=5)
    reqs = [claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"]) for _ in range(16)]

    def attempt(req: ClaimsRequest) -> str:
        try:
            tax.agent.evaluate_claims(req)
            return "ok"
        except XinrongError as exc:
            return exc.reason.value

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, reqs))
    assert outcomes.count("ok") == 5
    assert outcomes.count("CONSENT_USES_EXHAUSTED") == 11
    assert len(tax.state.answer_log()) == 5


def test_evaluate_benchmark_runs_and_reports_every_figure() -> None:
    """The agent benchmark the closing notes quote still runs (figures are not asserted: no timed tests)."""
    from xinrong.tools.bench.agent_micro import bench_evaluate

    result = bench_evaluate(20, 2)
    assert result["requests"] == 20 and result["claims_per_request"] == 2
    for key in (
        "cpu_us_median",
        "cpu_us_p99",
        "wall_us_median",
        "crypto_floor_cpu_us_median",
        "hpke_per_box_floor_cpu_us_median",
        "cold_cpu_us_median",
    ):
        value = result[key]
        assert isinstance(value, float) and value > 0, key
