"""Verify / GetIndicators through a real node over mTLS, with fake agents that
really sign and seal: every refusal with its exact status and reason, the
uniform denial, budgets, replay, fan-out and agent failures."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.node import audit
from xinrong.node.audit import Decision
from xinrong.node.service import CANCELLED
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2

from support.node_fakes import (
    ACME,
    BETA,
    GAMMA,
    assert_refused,
    consent_id_of,
    grant,
    indicators_request,
    open_indicators,
    open_verdicts,
    refusal,
    register,
    revocation,
    verify_request,
)

PD = grpc.StatusCode.PERMISSION_DENIED
FP = grpc.StatusCode.FAILED_PRECONDITION
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
IA = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(params=["sqlite", "postgres"])
def node_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both backends: one repository layer, one behaviour."""
    return str(request.param)


def _denial_bytes(err: grpc.RpcError) -> tuple[Any, Any, bytes]:
    """Everything an institution receives with a refusal: code, message, status details."""
    metadata: Any = err.trailing_metadata()
    details = [bytes(value) for key, value in metadata if key == "grpc-status-details-bin"]
    assert len(details) == 1
    return err.code(), err.details(), details[0]


def _status(h: Any, consent: common_pb2.SignedConsent, bank: str = "bank-a") -> Any:
    return h.bank(bank).GetConsentStatus(node_pb2.GetConsentStatusRequest(consent_id=consent_id_of(consent)), timeout=5)


def test_verify_and_indicators_return_sealed_signed_answers(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness()
    consent = grant(pki, catalog)
    assert register(h.bank(), consent).state == common_pb2.CONSENT_STATE_ACTIVE
    req = verify_request(
        consent,
        [
            "tax.in_arrears == false",
            "social_insurance.avg_insured_headcount in [50,100)",
            "tax.cit_paid_last_year >= 50000",
        ],
    )
    resp = h.bank().Verify(req, timeout=10)
    assert resp.request_id == req.request_id
    assert open_verdicts(pki, "bank-a", resp, req.request_id) == {
        "tax.in_arrears == false": "TRUE",
        "social_insurance.avg_insured_headcount in [50,100)": "TRUE",
        "tax.cit_paid_last_year >= 50000": "NO_DATA",
    }
    ireq = indicators_request(
        consent,
        [("tax.credit_grade", "grade"), ("tax.vat_paid_last_year", "bracket"), ("social_insurance.in_arrears", "flag")],
    )
    iresp = h.bank().GetIndicators(ireq, timeout=10)
    assert open_indicators(pki, "bank-a", iresp, ireq.request_id) == {
        "tax.credit_grade": "A",
        "tax.vat_paid_last_year": ("500000", "1000000"),
        "social_insurance.in_arrears": False,
    }
    status = _status(h, consent)
    assert (status.uses, status.max_uses, status.state) == (2, 50, common_pb2.CONSENT_STATE_ACTIVE)


def test_uniform_denial_is_byte_identical_across_causes(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness()
    acme = grant(pki, catalog, ACME)
    beta = grant(pki, catalog, BETA)
    theirs = grant(pki, catalog, ACME, grantee="bank-b")
    register(h.bank(), acme)
    register(h.bank(), beta)
    register(h.bank("bank-b"), theirs)
    bank = h.bank()
    causes = {
        "unknown consent id": verify_request(str(uuid.uuid4()), enterprise=ACME),
        # Another bank's consent, even with the right enterprise: were it a reason of its
        # own, it would confirm the id exists, and trying USCCs would find whose it is.
        "another institution's consent": verify_request(theirs, enterprise=ACME),
        "consent for another enterprise": verify_request(beta, enterprise=ACME),
        "unknown enterprise": verify_request(acme, enterprise=GAMMA),
        "unknown enterprise, unknown consent": verify_request(str(uuid.uuid4()), enterprise=GAMMA),
    }
    seen = set()
    for req in causes.values():
        err = assert_refused(lambda: bank.Verify(req, timeout=5), PD, Reason.ACCESS_DENIED)
        seen.add(_denial_bytes(err))
    assert len(seen) == 1, f"denials differ: {seen}"
    # Nothing was consumed by any denial.
    assert _status(h, acme).uses == 0 and _status(h, beta).uses == 0
    # GetIndicators denies the same way, byte for byte.
    err = refusal(lambda: bank.GetIndicators(indicators_request(beta, [("tax.credit_grade", "grade")]), timeout=5))
    assert {_denial_bytes(err)} == seen


@pytest.mark.parametrize(
    ("case", "code", "reason"),
    [
        ("expired", FP, Reason.CONSENT_EXPIRED),
        ("not_yet_valid", FP, Reason.CONSENT_NOT_YET_VALID),
        ("revoked", FP, Reason.CONSENT_REVOKED),
        ("wrong_grantee", PD, Reason.ACCESS_DENIED),
        ("out_of_scope", PD, Reason.CLAIM_OUT_OF_SCOPE),
        ("form_out_of_scope", PD, Reason.CLAIM_OUT_OF_SCOPE),
    ],
)
def test_consent_use_refusals(
    make_harness: Any, pki: Any, catalog: Catalog, case: str, code: grpc.StatusCode, reason: Reason
) -> None:
    h = make_harness()
    now = int(time.time())
    claims = ["tax.credit_grade in A,B"]
    if case == "expired":
        consent = grant(pki, catalog, valid_from=now - 7200, valid_until=now - 3600)
    elif case == "not_yet_valid":
        consent = grant(pki, catalog, valid_from=now + 3600, valid_until=now + 7200)
    elif case == "wrong_grantee":
        consent = grant(pki, catalog, grantee="bank-b")
    elif case == "out_of_scope":
        consent = grant(pki, catalog, scope=["tax.*"])
        claims = ["tax.credit_grade in A,B", "social_insurance.consecutive_months >= 12"]
    elif case == "form_out_of_scope":
        consent = grant(pki, catalog, scope=["tax.vat_paid_last_year:bracket"])
        claims = ["tax.vat_paid_last_year >= 100000"]
    else:
        consent = grant(pki, catalog)
    register(h.enterprise(ACME), consent)
    if case == "revoked":
        h.enterprise(ACME).RevokeConsent(node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=10)
    bank = h.bank()
    assert_refused(lambda: bank.Verify(verify_request(consent, claims), timeout=5), code, reason)
    status = h.enterprise(ACME).GetConsentStatus(
        node_pb2.GetConsentStatusRequest(consent_id=consent_id_of(consent)), timeout=5
    )
    assert status.uses == 0, "a refused request must not consume a use"
    asked = [c for a in h.agents.values() for c in a.fake.calls if c != "UpdateConsentStatus"]
    assert asked == [], "no agent may be asked for data when the node refuses"


@pytest.mark.parametrize("purpose", ["matching", "credit_scoring", "joint_modeling"])
def test_verify_and_indicators_need_a_loan_consent(make_harness: Any, pki: Any, catalog: Catalog, purpose: str) -> None:
    """A matching consent's id reaches the bank with every application (the providers'
    attestation names it); a scoring or modeling consent is for those services. None of
    them opens values: refused at the node, no use spent, no agent asked."""
    h = make_harness()
    consent = grant(pki, catalog, purpose=purpose)
    register(h.bank(), consent)
    bank = h.bank()
    err = assert_refused(lambda: bank.Verify(verify_request(consent), timeout=5), PD, Reason.CLAIM_OUT_OF_SCOPE)
    assert "loan_application or post_loan_monitoring" in (err.details() or "")
    assert_refused(
        lambda: bank.GetIndicators(indicators_request(consent, [("tax.credit_grade", "grade")]), timeout=5),
        PD,
        Reason.CLAIM_OUT_OF_SCOPE,
    )
    assert _status(h, consent).uses == 0
    asked = [c for a in h.agents.values() for c in a.fake.calls if c != "UpdateConsentStatus"]
    assert asked == []
    monitoring = grant(pki, catalog, purpose="post_loan_monitoring")
    register(h.bank(), monitoring)
    assert bank.Verify(verify_request(monitoring, ["tax.in_arrears == false"]), timeout=10).answers


@pytest.mark.parametrize("op", ["bracket", "threshold"])
def test_a_refusal_quotes_a_huge_value_shortened(make_harness: Any, pki: Any, catalog: Catalog, op: str) -> None:
    """A 100 kB edge or threshold is refused THRESHOLD_NOT_PUBLISHED as itself: the
    public message quotes a prefix, so the trailers stay far below a stock client's
    16 KiB metadata limit (which would turn the refusal into RESOURCE_EXHAUSTED)."""
    h = make_harness()
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    huge = "1" * 100_000
    if op == "bracket":
        claim = common_pb2.Claim(
            field="tax.vat_paid_last_year", op=common_pb2.CLAIM_OPERATOR_IN_BRACKET, values=[huge, ""]
        )
    else:
        claim = common_pb2.Claim(field="tax.vat_paid_last_year", op=common_pb2.CLAIM_OPERATOR_GE, values=[huge])
    req = verify_request(consent)
    del req.claims[:]
    req.claims.append(claim)
    err = assert_refused(
        lambda: h.bank().Verify(req, timeout=5), grpc.StatusCode.INVALID_ARGUMENT, Reason.THRESHOLD_NOT_PUBLISHED
    )
    assert len(err.details() or "") < 1024
    assert "1111..." in (err.details() or "")
    metadata: Any = err.trailing_metadata() or ()
    trailers = sum(len(key) + len(value) for key, value in metadata)
    assert trailers < 4096


def test_a_malformed_request_is_told_which_rule_it_broke(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    """INVALID_ARGUMENT about the caller's own bytes names the rule (no oracle: nothing
    about anyone else is in it), rather than a bare "the request is malformed"."""
    h = make_harness()
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    bank = h.bank()
    for bad_id in ("r-1\n", "\u00e9t\u00e9", "x" * 129, "a\x00b", "-leading-dash"):
        err = assert_refused(
            lambda: bank.Verify(verify_request(consent, request_id=bad_id), timeout=5),
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_ARGUMENT,
        )
        assert "request_id must be 1 to 128" in (err.details() or "")
    many = verify_request(consent, ["tax.in_arrears == false"] * 65)
    err = assert_refused(
        lambda: bank.Verify(many, timeout=5), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT
    )
    assert err.details() == "65 claims: a request carries 1 to 32"
    assert _status(h, consent).uses == 0


def test_forged_consent_is_refused_at_registration(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness()
    forged = grant(pki, catalog, ACME, signer=BETA)  # names ACME, signed with BETA's key
    assert_refused(lambda: register(h.bank(), forged), PD, Reason.ACCESS_DENIED)
    tampered = grant(pki, catalog, ACME)
    tampered.consent = tampered.consent.replace(b"bank-a", b"bank-b")
    assert_refused(lambda: register(h.bank("bank-b"), tampered), PD, Reason.ACCESS_DENIED)
    # The forged consent's id was never registered: using it is the uniform denial.
    assert_refused(lambda: h.bank().Verify(verify_request(forged), timeout=5), PD, Reason.ACCESS_DENIED)


def test_budget_refusals(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    bank = h.bank()
    capped = grant(pki, catalog, max_uses=2)
    daily = grant(pki, catalog, max_uses=10, max_uses_per_day=1)
    register(bank, capped)
    register(bank, daily)
    for _ in range(2):
        bank.Verify(verify_request(capped), timeout=10)
    assert_refused(lambda: bank.Verify(verify_request(capped), timeout=5), RE, Reason.CONSENT_USES_EXHAUSTED)
    bank.Verify(verify_request(daily), timeout=10)
    assert_refused(lambda: bank.Verify(verify_request(daily), timeout=5), RE, Reason.CONSENT_DAILY_LIMIT)
    assert (_status(h, capped).uses, _status(h, daily).uses) == (2, 1)


def test_enterprise_budget_is_shared_by_all_institutions(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], enterprise_daily_budget=3)
    a, b = h.bank("bank-a"), h.bank("bank-b")
    ca = grant(pki, catalog, ACME, "bank-a")
    cb = grant(pki, catalog, ACME, "bank-b")
    other = grant(pki, catalog, BETA, "bank-b")
    register(a, ca)
    register(b, cb)
    register(b, other)
    a.Verify(verify_request(ca), timeout=10)
    b.Verify(verify_request(cb), timeout=10)
    a.Verify(verify_request(ca), timeout=10)
    assert_refused(lambda: b.Verify(verify_request(cb), timeout=5), RE, Reason.ENTERPRISE_BUDGET_EXHAUSTED)
    assert_refused(lambda: a.Verify(verify_request(ca), timeout=5), RE, Reason.ENTERPRISE_BUDGET_EXHAUSTED)
    # Another enterprise has its own budget; a refused request consumed nothing.
    b.Verify(verify_request(other, enterprise=BETA), timeout=10)
    assert (_status(h, ca, "bank-a").uses, _status(h, cb, "bank-b").uses) == (2, 1)


def test_budgets_are_atomic_under_concurrency(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog, max_uses=5)
    register(h.bank(), consent)
    bank = h.bank()

    def attempt(_i: int) -> str:
        try:
            bank.Verify(verify_request(consent), timeout=10)
            return "ok"
        except grpc.RpcError as err:
            return decode_rpc_error(err).reason

    with ThreadPoolExecutor(12) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count("ok") == 5
    assert outcomes.count(Reason.CONSENT_USES_EXHAUSTED.value) == 11
    assert _status(h, consent).uses == 5
    assert h.agents["tax"].fake.calls.count("EvaluateClaims") == 5


def test_replay_and_stale_requests(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    bank = h.bank()
    req = verify_request(consent)
    bank.Verify(req, timeout=10)
    assert_refused(lambda: bank.Verify(req, timeout=5), grpc.StatusCode.ALREADY_EXISTS, Reason.REQUEST_REPLAYED)
    # Replay ids are per caller (A14): another institution's id tells bank-b nothing,
    # at the node or at the agent, and bank-b's replay of its own is refused.
    consent_b = grant(pki, catalog, grantee="bank-b")
    register(h.bank("bank-b"), consent_b)
    reuse = verify_request(consent_b, request_id=req.request_id)
    h.bank("bank-b").Verify(reuse, timeout=10)
    assert_refused(
        lambda: h.bank("bank-b").Verify(reuse, timeout=5), grpc.StatusCode.ALREADY_EXISTS, Reason.REQUEST_REPLAYED
    )
    # Even a refused request consumes its id.
    refused = verify_request(consent, ["tax.vat_paid_last_year >= 123456"])
    assert_refused(lambda: bank.Verify(refused, timeout=5), IA, Reason.THRESHOLD_NOT_PUBLISHED)
    assert_refused(lambda: bank.Verify(refused, timeout=5), grpc.StatusCode.ALREADY_EXISTS, Reason.REQUEST_REPLAYED)
    for skew in (-301, 301):
        assert_refused(
            lambda: bank.Verify(verify_request(consent, requested_at=time.time() + skew), timeout=5),
            FP,
            Reason.REQUEST_STALE,
        )
    bank.Verify(verify_request(consent, requested_at=time.time() - 250), timeout=10)
    assert _status(h, consent).uses == 2


def test_probing_policy_refusals_come_before_the_consent_and_are_no_oracle(
    make_harness: Any, pki: Any, catalog: Catalog
) -> None:
    h = make_harness(["tax"], max_claims_per_request=4)
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    bank = h.bank()
    # Off the ladder, off the bracket edges, unknown field, raw-value field, too many claims:
    # the same refusal whether or not a consent exists for the enterprise.
    for consent_ref, enterprise in ((consent, ACME), (str(uuid.uuid4()), GAMMA)):
        assert_refused(
            lambda: bank.Verify(
                verify_request(consent_ref, ["tax.vat_paid_last_year >= 123456"], enterprise=enterprise), timeout=5
            ),
            IA,
            Reason.THRESHOLD_NOT_PUBLISHED,
        )
        assert_refused(
            lambda: bank.Verify(
                verify_request(consent_ref, ["tax.vat_paid_last_year in [100000,300000)"], enterprise=enterprise),
                timeout=5,
            ),
            IA,
            Reason.THRESHOLD_NOT_PUBLISHED,
        )
        assert_refused(
            lambda: bank.Verify(
                verify_request(consent_ref, ["tax.secret_field == true"], enterprise=enterprise), timeout=5
            ),
            IA,
            Reason.UNKNOWN_FIELD,
        )
        assert_refused(
            lambda: bank.Verify(
                verify_request(consent_ref, ["tax.credit_grade in A"] * 5, enterprise=enterprise), timeout=5
            ),
            IA,
            Reason.INVALID_ARGUMENT,
        )
    # Indicators: verification-only fields disclose no value form; ladders are not indicators.
    assert_refused(
        lambda: bank.GetIndicators(
            indicators_request(consent, [("social_insurance.consecutive_months", "bracket")]), timeout=5
        ),
        IA,
        Reason.FORM_NOT_ALLOWED,
    )
    assert_refused(
        lambda: bank.GetIndicators(indicators_request(consent, [("tax.vat_paid_last_year", "ladder")]), timeout=5),
        IA,
        Reason.FORM_NOT_ALLOWED,
    )
    # A malformed USCC is syntax, not an oracle.
    assert_refused(
        lambda: bank.Verify(verify_request(consent, enterprise="91130100MA0ACME1XX"), timeout=5),
        IA,
        Reason.INVALID_ARGUMENT,
    )
    assert _status(h, consent).uses == 0


def test_callers_by_role(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    # The enterprise may not call Verify, even about itself.
    assert_refused(lambda: h.enterprise(ACME).Verify(verify_request(consent), timeout=5), PD, Reason.CALLER_NOT_ALLOWED)
    # A bank may not revoke.
    assert_refused(
        lambda: h.bank().RevokeConsent(node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=5),
        PD,
        Reason.CALLER_NOT_ALLOWED,
    )
    # A CA-certified institution the node was not configured with.
    assert_refused(lambda: h.bank("bank-c").Verify(verify_request(consent), timeout=5), PD, Reason.CALLER_NOT_ALLOWED)
    # Provider and node certificates are refused by the role interceptor before any handler.
    provider_stub = h.stub(pki.provider("tax"))
    assert_refused(
        lambda: provider_stub.GetCatalog(node_pb2.GetCatalogRequest(), timeout=5), PD, Reason.CALLER_NOT_ALLOWED
    )


def test_fan_out_is_concurrent(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax", "social_insurance"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    for handle in h.agents.values():
        handle.fake.delay = 0.4
    bank = h.bank()
    bank.Verify(verify_request(consent, ["tax.credit_grade in A"]), timeout=10)  # warm both channels
    start = time.monotonic()
    resp = bank.Verify(
        verify_request(consent, ["tax.credit_grade in A", "social_insurance.in_arrears == true"]), timeout=10
    )
    elapsed = time.monotonic() - start
    assert len(resp.answers) == 2
    assert elapsed < 0.75, f"two 0.4 s agents took {elapsed:.2f} s: not concurrent"


def test_agent_refusal_keeps_its_reason_and_consumes_the_use(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax", "social_insurance"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    h.agents["social_insurance"].fake.refuse_with = Reason.CONSENT_PERIOD_MISMATCH
    bank = h.bank()
    req = verify_request(consent, ["tax.credit_grade in A", "social_insurance.in_arrears == false"])
    assert_refused(lambda: bank.Verify(req, timeout=10), FP, Reason.CONSENT_PERIOD_MISMATCH)
    # Internal agent failures are not passed through as such.
    h.agents["social_insurance"].fake.refuse_with = Reason.INTERNAL
    assert_refused(
        lambda: bank.Verify(verify_request(consent, ["social_insurance.in_arrears == false"]), timeout=10),
        grpc.StatusCode.UNAVAILABLE,
        Reason.PROVIDER_UNAVAILABLE,
    )
    assert _status(h, consent).uses == 2, "an admitted request counts even if the fan-out fails"


def test_unreachable_agent_is_provider_unavailable(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax", "social_insurance"], down=["social_insurance"], agent_timeout_seconds=1)
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    bank = h.bank()
    resp = bank.Verify(verify_request(consent, ["tax.credit_grade in A"]), timeout=10)
    assert [a.provider for a in resp.answers] == ["tax"]
    start = time.monotonic()
    assert_refused(
        lambda: bank.Verify(
            verify_request(consent, ["tax.credit_grade in A", "social_insurance.in_arrears == false"]), timeout=10
        ),
        grpc.StatusCode.UNAVAILABLE,
        Reason.PROVIDER_UNAVAILABLE,
    )
    assert time.monotonic() - start < 3.0, "the agent deadline must bound the wait"
    # A slow agent (past the deadline) is unavailable too.
    h.agents["tax"].fake.delay = 1.5
    assert_refused(
        lambda: bank.Verify(verify_request(consent, ["tax.credit_grade in A"]), timeout=10),
        grpc.StatusCode.UNAVAILABLE,
        Reason.PROVIDER_UNAVAILABLE,
    )


def test_claims_for_an_unconfigured_provider_are_refused_before_the_consent(
    make_harness: Any, pki: Any, catalog: Catalog
) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog, scope=["tax.*", "electricity.*"])
    register(h.bank(), consent)
    start = time.monotonic()
    err = assert_refused(
        lambda: h.bank().Verify(verify_request(consent, ["electricity.in_arrears == false"]), timeout=5),
        FP,
        Reason.PROVIDER_NOT_CONNECTED,
    )
    # At once, and naming the provider (public registry fact), not "did not answer in time".
    assert time.monotonic() - start < 1.0
    assert err.details() == "provider electricity is not connected to this node"
    assert _status(h, consent).uses == 0


def test_a_caller_that_hangs_up_mid_fan_out_leaves_a_failed_entry(
    make_harness: Any, pki: Any, catalog: Catalog
) -> None:
    """Admission counted the use; the audit log must also say the answer never left."""
    h = make_harness(["tax"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    h.agents["tax"].fake.delay = 1.0
    with pytest.raises(grpc.RpcError) as info:
        h.bank().Verify(verify_request(consent, ["tax.credit_grade in A"]), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while True:
        with closing(h.tools_connection()) as conn:
            entries = [(e.event.method, e.event.decision, e.event.reason) for e in audit.tail(conn, 5)]
        if ("Verify", Decision.FAILED, CANCELLED) in entries or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert entries[-2:] == [("Verify", Decision.ALLOWED, ""), ("Verify", Decision.FAILED, CANCELLED)]
    assert _status(h, consent).uses == 1


def test_only_accepted_claims_are_cached_and_a_refused_one_stays_refused(
    make_harness: Any, pki: Any, catalog: Catalog
) -> None:
    """The node's claim cache cannot be filled with junk, and never turns a refusal into an answer."""
    h = make_harness(["tax"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    bank = h.bank()
    assert h.node is not None
    cache = h.node.core.access.claim_cache
    for _ in range(3):
        assert_refused(
            lambda: bank.Verify(verify_request(consent, ["tax.vat_paid_last_year >= 123456"]), timeout=5),
            IA,
            Reason.THRESHOLD_NOT_PUBLISHED,
        )
    assert len(cache) == 0
    for _ in range(3):
        req = verify_request(consent, ["tax.credit_grade in B,A"])  # canonicalised to "in A,B" each time
        resp = bank.Verify(req, timeout=10)
        assert open_verdicts(pki, "bank-a", resp, req.request_id) == {"tax.credit_grade in A,B": "TRUE"}
    assert len(cache) == 1


@pytest.mark.parametrize("suffix", ["\n", " ", "\x00", "\u00e9"])
def test_a_request_or_consent_id_with_a_trailing_character_burns_nothing(
    make_harness: Any, pki: Any, catalog: Catalog, suffix: str
) -> None:
    """``^...$`` once let "r-<uuid>\\n" through the node, which consumed a use before
    the agent refused it. Both now check ids with one fullmatch validator."""
    h = make_harness(["tax"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    bank = h.bank()
    bad_request = verify_request(consent, ["tax.in_arrears == false"])
    bad_request.request_id += suffix
    assert_refused(
        lambda: bank.Verify(bad_request, timeout=5), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT
    )
    bad_consent = verify_request(consent, ["tax.in_arrears == false"])
    bad_consent.consent_id += suffix
    assert_refused(
        lambda: bank.Verify(bad_consent, timeout=5), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT
    )
    assert _status(h, consent).uses == 0
    # The well-formed request still goes through, once.
    assert bank.Verify(verify_request(consent, ["tax.in_arrears == false"]), timeout=10).answers
    assert _status(h, consent).uses == 1


@pytest.mark.parametrize("raw", [b"\xff", b"\x0a\x01\xff"], ids=["bad-tag", "bad-utf8"])
def test_undecodable_verify_bytes_are_invalid_argument_at_the_node(make_harness: Any, pki: Any, raw: bytes) -> None:
    """The node runs on the asyncio runtime: undecodable bytes once answered UNKNOWN."""
    from xinrong.rpc.channel import secure_channel

    h = make_harness(["tax"])
    assert h.node is not None

    def send(creds: Any, method: str) -> Any:
        with secure_channel(f"127.0.0.1:{h.node.port}", creds, server_role="node", server_id="node") as ch:
            call = ch.unary_unary(method, lambda b: b, lambda b: b)
            with pytest.raises(grpc.RpcError) as info:
                call(raw, timeout=5)
            return decode_rpc_error(info.value)

    # The node's own service and the modeling service it hosts share the factory's guard.
    for method in ("/xinrong.v1.NodeService/Verify", "/xinrong.v1.ModelingService/CreateJob"):
        err = send(pki.institution("bank-a"), method)
        assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT.value), method
        err = send(pki.provider("tax"), method)  # a role that may not call the node is refused first
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.CALLER_NOT_ALLOWED.value)
