"""The node tests' fake agent behaves like a provider agent on the wire."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.errors import Reason, XinrongError
from xinrong.rpc.channel import secure_channel
from xinrong.v1 import agent_pb2, agent_pb2_grpc

from support.node_fakes import BUNDLE_TYPE, assert_refused, grant, open_verdicts, register, verify_request


def test_fake_agent_answers_are_sealed_to_the_bank_and_signed(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness()
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    req = verify_request(
        consent,
        ["tax.credit_grade in A,B", "tax.vat_paid_last_year >= 500000", "social_insurance.consecutive_months >= 24"],
    )
    resp = h.bank().Verify(req, timeout=10)
    assert sorted(a.provider for a in resp.answers) == ["social_insurance", "tax"]
    assert open_verdicts(pki, "bank-a", resp, req.request_id) == {
        "tax.credit_grade in A,B": "TRUE",
        "tax.vat_paid_last_year >= 500000": "TRUE",
        "social_insurance.consecutive_months >= 24": "FALSE",
    }
    # Another bank's key cannot open what was sealed to bank-a.
    other = pki.institution("bank-b")
    with pytest.raises(XinrongError):
        other.sealing_key.open(
            resp.answers[0].sealed, recipient_id="bank-a", content_type=BUNDLE_TYPE, context=req.request_id
        )


def test_fake_agent_refuses_callers_other_than_the_node(make_harness: Any, pki: Any) -> None:
    h = make_harness(["tax"])
    channel = secure_channel(
        h.agents["tax"].address, pki.institution("bank-a"), server_role="provider", server_id="tax"
    )
    try:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        assert_refused(
            lambda: stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5),
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.CALLER_NOT_ALLOWED,
        )
    finally:
        channel.close()
