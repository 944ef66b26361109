"""Consent registration, status, revocation (with pushes to agents and retries),
restart persistence, daily rollover and the party directory."""

from __future__ import annotations

import hashlib
import time
import uuid
from contextlib import closing
from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.node.audit import verify_chain
from xinrong.v1 import common_pb2, node_pb2

from support.node_fakes import (
    ACME,
    BETA,
    assert_refused,
    consent_id_of,
    grant,
    register,
    revocation,
    verify_request,
)

PD = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(params=["sqlite", "postgres"])
def node_backend(request: pytest.FixtureRequest) -> str:
    """Every test here runs on both backends: one repository layer, one behaviour."""
    return str(request.param)


def _status(stub: Any, consent: common_pb2.SignedConsent | str) -> Any:
    cid = consent if isinstance(consent, str) else consent_id_of(consent)
    return stub.GetConsentStatus(node_pb2.GetConsentStatusRequest(consent_id=cid), timeout=5)


def _revoke(stub: Any, signed: common_pb2.SignedConsentRevocation) -> Any:
    return stub.RevokeConsent(node_pb2.RevokeConsentRequest(revocation=signed), timeout=10)


def _wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_registration_rules(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog, grantee="bank-a")
    # The grantee and the enterprise may register it; another bank or enterprise may not.
    assert_refused(lambda: register(h.bank("bank-b"), consent), PD, Reason.ACCESS_DENIED)
    assert_refused(lambda: register(h.enterprise(BETA), consent), PD, Reason.ACCESS_DENIED)
    first = register(h.enterprise(ACME), consent)
    assert (first.consent_id, first.state) == (consent_id_of(consent), common_pb2.CONSENT_STATE_ACTIVE)
    # Identical bytes again: idempotent, from either party.
    assert register(h.bank("bank-a"), consent).consent_id == first.consent_id
    # Same id, other bytes: refused.
    clash = grant(pki, catalog, grantee="bank-a", consent_id=first.consent_id, max_uses=3)
    assert_refused(
        lambda: register(h.bank("bank-a"), clash), grpc.StatusCode.FAILED_PRECONDITION, Reason.FAILED_PRECONDITION
    )
    # A grantee the node does not know is no use to anyone.
    unknown = grant(pki, catalog, grantee="bank-c")
    assert_refused(
        lambda: register(h.enterprise(ACME), unknown), grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT
    )
    assert _status(h.bank("bank-a"), consent).max_uses == 50


def test_status_is_for_the_enterprise_and_the_grantee_only(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog, max_uses=7)
    register(h.bank(), consent)
    for stub in (h.bank("bank-a"), h.enterprise(ACME)):
        status = _status(stub, consent)
        assert (status.state, status.uses, status.max_uses) == (common_pb2.CONSENT_STATE_ACTIVE, 0, 7)
    other = assert_refused(lambda: _status(h.bank("bank-b"), consent), PD, Reason.ACCESS_DENIED)
    unknown = assert_refused(lambda: _status(h.bank("bank-b"), str(uuid.uuid4())), PD, Reason.ACCESS_DENIED)
    assert other.details() == unknown.details()
    assert_refused(lambda: _status(h.enterprise(BETA), consent), PD, Reason.ACCESS_DENIED)
    expired = grant(pki, catalog, valid_from=int(time.time()) - 7200, valid_until=int(time.time()) - 10)
    register(h.bank(), expired)
    assert _status(h.bank(), expired).state == common_pb2.CONSENT_STATE_EXPIRED


def test_revocation_is_checked_and_pushed_to_every_agent(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax", "social_insurance"])
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    h.bank().Verify(verify_request(consent), timeout=10)
    cid = consent_id_of(consent)
    # Another enterprise cannot revoke it, nor can a revocation signed with another key.
    assert_refused(lambda: _revoke(h.enterprise(BETA), revocation(pki, consent, signer=BETA)), PD, Reason.ACCESS_DENIED)
    assert_refused(lambda: _revoke(h.enterprise(ACME), revocation(pki, consent, signer=BETA)), PD, Reason.ACCESS_DENIED)
    response = _revoke(h.enterprise(ACME), revocation(pki, consent))
    assert response.consent_id == cid
    assert response.state == common_pb2.CONSENT_STATE_REVOKED
    assert list(response.providers_notified) == ["social_insurance", "tax"]
    for handle in h.agents.values():
        assert cid in handle.fake.revoked  # verified by the agent itself
    assert_refused(
        lambda: h.bank().Verify(verify_request(consent), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.CONSENT_REVOKED,
    )
    # Revoking again is idempotent and pushes nothing new.
    calls = sum(a.fake.calls.count("UpdateConsentStatus") for a in h.agents.values())
    again = _revoke(h.enterprise(ACME), revocation(pki, consent))
    assert list(again.providers_notified) == ["social_insurance", "tax"]
    assert sum(a.fake.calls.count("UpdateConsentStatus") for a in h.agents.values()) == calls
    assert _status(h.enterprise(ACME), consent).state == common_pb2.CONSENT_STATE_REVOKED


def test_revocation_push_is_retried_when_an_agent_comes_back(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(
        ["tax", "social_insurance"], down=["social_insurance"], revocation_retry_seconds=0.2, agent_timeout_seconds=1
    )
    consent = grant(pki, catalog, scope=["tax.*"])
    register(h.bank(), consent)
    cid = consent_id_of(consent)
    response = _revoke(h.enterprise(ACME), revocation(pki, consent))
    assert list(response.providers_notified) == ["tax"]
    down = h.agents["social_insurance"]
    assert cid not in down.fake.revoked
    rows = h.query(
        "SELECT provider, acked_ms IS NOT NULL FROM revocation_pushes WHERE consent_id = ? ORDER BY provider", (cid,)
    )
    assert [(p, bool(acked)) for p, acked in rows] == [("social_insurance", False), ("tax", True)]
    down.start(pki)
    _wait_for(lambda: cid in down.fake.revoked)
    assert h.node is not None
    _wait_for(lambda: all(s.acked_ms is not None for s in h.node.core.consents.get(cid).pushes.values()))
    again = _revoke(h.enterprise(ACME), revocation(pki, consent))
    assert list(again.providers_notified) == ["social_insurance", "tax"]


def test_pending_pushes_are_retried_at_start(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], down=["tax"], revocation_retry_seconds=3600, agent_timeout_seconds=1)
    consent = grant(pki, catalog, scope=["tax.*"])
    register(h.bank(), consent)
    cid = consent_id_of(consent)
    assert list(_revoke(h.enterprise(ACME), revocation(pki, consent)).providers_notified) == []
    h.stop()
    h.agents["tax"].start(pki)
    h.start()
    _wait_for(lambda: cid in h.agents["tax"].fake.revoked)
    assert list(_revoke(h.enterprise(ACME), revocation(pki, consent)).providers_notified) == ["tax"]


def test_restart_keeps_every_piece_of_state(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], enterprise_daily_budget=4)
    kept = grant(pki, catalog, max_uses=3)
    revoked = grant(pki, catalog)
    register(h.bank(), kept)
    register(h.bank(), revoked)
    used = verify_request(kept)
    h.bank().Verify(used, timeout=10)
    h.bank().Verify(verify_request(kept), timeout=10)
    _revoke(h.enterprise(ACME), revocation(pki, revoked))
    assert h.node is not None
    h.flush_audit()
    seq_before, head_before = h.node.core.audit.head()

    h.restart()
    # Consents, states, uses.
    status = _status(h.bank(), kept)
    assert (status.state, status.uses) == (common_pb2.CONSENT_STATE_ACTIVE, 2)
    assert _status(h.bank(), revoked).state == common_pb2.CONSENT_STATE_REVOKED
    assert_refused(
        lambda: h.bank().Verify(verify_request(revoked), timeout=5),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.CONSENT_REVOKED,
    )
    # Replay ids.
    assert_refused(lambda: h.bank().Verify(used, timeout=5), grpc.StatusCode.ALREADY_EXISTS, Reason.REQUEST_REPLAYED)
    # Per-consent and per-enterprise budgets (2 used of 4 for ACME today).
    h.bank().Verify(verify_request(kept), timeout=10)
    assert_refused(
        lambda: h.bank().Verify(verify_request(kept), timeout=5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.CONSENT_USES_EXHAUSTED,
    )
    other = grant(pki, catalog, grantee="bank-b")
    register(h.bank("bank-b"), other)
    h.bank("bank-b").Verify(verify_request(other), timeout=10)
    assert_refused(
        lambda: h.bank("bank-b").Verify(verify_request(other), timeout=5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.ENTERPRISE_BUDGET_EXHAUSTED,
    )
    # Audit chain continuity: the first entry after restart links to the old head.
    h.flush_audit()
    prev = h.query("SELECT prev_hash FROM audit_log WHERE seq = ?", (seq_before + 1,))[0][0]
    assert bytes(prev) == head_before
    with closing(h.tools_connection()) as conn:
        report = verify_chain(conn)
    assert report.ok and report.entries > seq_before


def test_daily_budgets_reset_at_utc_midnight(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    clock = {"now": float(int(time.time()) // 86_400 * 86_400 + 86_400 - 30)}  # 30 s before UTC midnight
    h = make_harness(["tax"], clock=lambda: clock["now"], enterprise_daily_budget=1, max_clock_skew_seconds=100_000)
    # The fake agent checks the window against the real clock, so the window spans both.
    consent = grant(
        pki,
        catalog,
        max_uses=10,
        max_uses_per_day=1,
        valid_from=int(time.time()) - 60,
        valid_until=int(clock["now"]) + 7 * 86_400,
    )
    register(h.bank(), consent)
    h.bank().Verify(verify_request(consent, requested_at=clock["now"]), timeout=10)
    assert_refused(
        lambda: h.bank().Verify(verify_request(consent, requested_at=clock["now"]), timeout=5),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.CONSENT_DAILY_LIMIT,
    )
    clock["now"] += 60  # the next UTC day
    h.bank().Verify(verify_request(consent, requested_at=clock["now"]), timeout=10)
    assert _status(h.bank(), consent).uses == 2


def test_directory_lists_no_enterprises_to_banks(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax", "social_insurance"])
    register(h.bank(), grant(pki, catalog, ACME))
    register(h.bank(), grant(pki, catalog, BETA))

    def listed(stub: Any, role: Any = 0) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for signed in stub.ListParties(node_pb2.ListPartiesRequest(role=role), timeout=5).bindings:
            b = common_pb2.PartyBinding()
            b.ParseFromString(signed.binding)
            out.append((int(b.role), b.party_id))
        return out

    everyone = listed(h.bank())
    assert (common_pb2.PARTY_ROLE_NODE, "node") in everyone
    assert {p for r, p in everyone if r == common_pb2.PARTY_ROLE_PROVIDER} == {"tax", "social_insurance"}
    assert {p for r, p in everyone if r == common_pb2.PARTY_ROLE_INSTITUTION} == {"bank-a", "bank-b"}
    assert not [p for r, p in everyone if r == common_pb2.PARTY_ROLE_ENTERPRISE]
    assert listed(h.bank(), common_pb2.PARTY_ROLE_ENTERPRISE) == []
    assert listed(h.bank(), common_pb2.PARTY_ROLE_PROVIDER) == [
        (common_pb2.PARTY_ROLE_PROVIDER, "social_insurance"),
        (common_pb2.PARTY_ROLE_PROVIDER, "tax"),
    ]
    # An enterprise sees its own binding and nobody else's.
    assert listed(h.enterprise(ACME), common_pb2.PARTY_ROLE_ENTERPRISE) == [(common_pb2.PARTY_ROLE_ENTERPRISE, ACME)]
    catalog_resp = h.bank().GetCatalog(node_pb2.GetCatalogRequest(), timeout=5)
    assert catalog_resp.catalog_toml == catalog.raw
    assert catalog_resp.sha256 == hashlib.sha256(catalog.raw).hexdigest()


def test_the_config_is_authoritative_for_institutions(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], institutions=["bank-a", "bank-b"])
    consent = grant(pki, catalog, grantee="bank-b")
    register(h.bank("bank-b"), consent)
    h.bank("bank-b").Verify(verify_request(consent), timeout=10)
    # The operator removes bank-b; its binding was persisted by the first run.
    h.institutions = ("bank-a",)
    h.restart()
    assert_refused(lambda: h.bank("bank-b").Verify(verify_request(consent), timeout=5), PD, Reason.CALLER_NOT_ALLOWED)
    listed = (
        h.bank("bank-a")
        .ListParties(node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_INSTITUTION), timeout=5)
        .bindings
    )
    parsed = [common_pb2.PartyBinding.FromString(b.binding).party_id for b in listed]
    assert parsed == ["bank-a"]
    assert h.query("SELECT COUNT(*) FROM parties WHERE role = 'institution' AND party_id = 'bank-b'")[0][0] == 0
