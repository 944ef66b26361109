"""The node with real provider agents (``provider_agent``), in process over mTLS:
imported CSV data, the bank SDK checking every signature, revocation pushed
to and enforced by the agents, an agent-side refusal passed on unchanged,
and no raw value in the node's database afterwards."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.consent import sign_consent
from xinrong.errors import Reason
from xinrong.node.server import NodeServer
from xinrong.rpc.channel import secure_channel
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc

from support.node_fakes import (
    ACME,
    assert_refused,
    consent_id_of,
    grant,
    open_indicators,
    open_verdicts,
    revocation,
    verify_request,
)
from support.platform import CSV, RAW, real_platform


@pytest.fixture
def platform(pki: Any, catalog: Catalog, tmp_path: Path) -> Iterator[tuple[NodeServer, dict[str, Any]]]:
    with real_platform(pki, catalog, tmp_path, CSV) as running:
        yield running


_CHANNELS: list[grpc.Channel] = []


@pytest.fixture(autouse=True)
def _close_channels() -> Iterator[None]:
    yield
    while _CHANNELS:
        _CHANNELS.pop().close()


def _stub(pki: Any, node: NodeServer, creds: Any) -> Any:
    channel = secure_channel(f"127.0.0.1:{node.port}", creds, server_role="node", server_id="node")
    _CHANNELS.append(channel)
    return node_pb2_grpc.NodeServiceStub(channel)


def test_verify_indicators_and_revocation_with_real_agents(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, agents = platform
    bank = _stub(pki, node, pki.institution("bank-a"))
    enterprise = _stub(pki, node, pki.enterprise(ACME))
    consent = grant(pki, catalog, ACME)
    enterprise.RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=10)

    claims = [
        "tax.credit_grade in A,B",
        "tax.vat_paid_last_year >= 500000",
        "tax.in_arrears == true",
        "social_insurance.consecutive_months >= 24",
        "social_insurance.avg_insured_headcount in [50,100)",
    ]
    req = verify_request(consent, claims)
    resp = bank.Verify(req, timeout=10)
    assert open_verdicts(pki, "bank-a", resp, req.request_id) == {
        "tax.credit_grade in A,B": "TRUE",
        "tax.vat_paid_last_year >= 500000": "TRUE",
        "tax.in_arrears == true": "FALSE",
        "social_insurance.consecutive_months >= 24": "FALSE",
        "social_insurance.avg_insured_headcount in [50,100)": "TRUE",
    }

    ireq = node_pb2.GetIndicatorsRequest(
        request_id=str(uuid.uuid4()),
        requested_at=int(time.time()),
        enterprise_uscc=ACME,
        consent_id=consent_id_of(consent),
        queries=[
            node_pb2.IndicatorQuery(field="tax.vat_paid_last_year", form=common_pb2.DISCLOSURE_FORM_BRACKET),
            node_pb2.IndicatorQuery(field="tax.credit_grade", form=common_pb2.DISCLOSURE_FORM_GRADE),
        ],
    )
    iresp = bank.GetIndicators(ireq, timeout=10)
    assert open_indicators(pki, "bank-a", iresp, ireq.request_id) == {
        "tax.vat_paid_last_year": ("500000", "1000000"),
        "tax.credit_grade": "A",
    }

    # Revocation: pushed to both real agents, which then refuse on their own.
    revoked = enterprise.RevokeConsent(node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=10)
    assert list(revoked.providers_notified) == ["social_insurance", "tax"]
    assert_refused(
        lambda: bank.Verify(verify_request(consent), timeout=10),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.CONSENT_REVOKED,
    )
    node_creds = pki.node
    bank_binding = pki.institution("bank-a").binding.signed
    for provider, agent in agents.items():
        channel = secure_channel(f"127.0.0.1:{agent.port}", node_creds, server_role="provider", server_id=provider)
        try:
            direct = agent_pb2_grpc.AgentServiceStub(channel)
            claim = verify_request(
                consent, ["tax.credit_grade in A" if provider == "tax" else "social_insurance.in_arrears == false"]
            ).claims
            asked = agent_pb2.EvaluateClaimsRequest(
                request_id=str(uuid.uuid4()),
                requested_at=int(time.time()),
                enterprise_uscc=ACME,
                consent=consent,
                audience_binding=bank_binding,
                claims=claim,
            )
            assert_refused(
                lambda: direct.EvaluateClaims(asked, timeout=10),
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.CONSENT_REVOKED,
            )
        finally:
            channel.close()


def test_agent_refusals_reach_the_bank_unchanged(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, _agents = platform
    bank = _stub(pki, node, pki.institution("bank-b"))
    # The node cannot see the agent's data period; the agent refuses a consent that does not cover it.
    old = grant(pki, catalog, ACME, "bank-b")
    parsed = common_pb2.Consent()
    parsed.ParseFromString(old.consent)
    parsed.data_period_from, parsed.data_period_to = "2024-01-01", "2024-12-31"
    creds = pki.enterprise(ACME)
    stale_period = sign_consent(parsed, creds.signing_key, creds.binding.signed)
    bank.RegisterConsent(node_pb2.RegisterConsentRequest(consent=stale_period), timeout=10)
    assert_refused(
        lambda: bank.Verify(verify_request(stale_period), timeout=10),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.CONSENT_PERIOD_MISMATCH,
    )


def test_bank_sdk_accepts_what_the_node_relays_and_the_node_stores_no_value(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    bank_client = pytest.importorskip("xinrong.bank.client")
    node, _agents = platform
    consent = grant(pki, catalog, ACME, "bank-a")
    with bank_client.BankClient(f"127.0.0.1:{node.port}", pki.institution("bank-a")) as sdk:
        sdk.register_consent(consent)
        verdicts = sdk.verify(
            ACME, ["tax.cit_paid_last_year >= 50000", "social_insurance.in_arrears == false"], consent_id_of(consent)
        )
        assert sorted((v.claim, v.result) for v in verdicts) == [
            ("social_insurance.in_arrears == false", "TRUE"),
            ("tax.cit_paid_last_year >= 50000", "TRUE"),
        ]
        indicators = sdk.indicators(ACME, [("tax.cit_paid_last_year", "bracket")], consent_id_of(consent))
        assert [i.field for i in indicators] == ["tax.cit_paid_last_year"]
    db = node.core.config.db
    assert db is not None
    blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for value in RAW:
        assert value.encode() not in blob, f"raw value {value} in the node database"
