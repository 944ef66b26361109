"""Issue 10, A13: a revocation reaches an agent that was down within seconds of its return.

Before: failed pushes backed off up to an hour, so an agent that came back
kept answering a revoked consent (if asked directly) until the next retry.
Now the node watches providers with pending pushes and delivers at once
when their agent connects again, whatever the backoff.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from xinrong import subject as subj
from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.provider_agent import server as agent_server
from xinrong.rpc.channel import secure_channel
from xinrong.v1 import agent_pb2, agent_pb2_grpc, node_pb2, node_pb2_grpc, subject_pb2, subject_pb2_grpc

from support.node_fakes import ACME, assert_refused, consent_id_of, grant, register, revocation, verify_request
from support.platform import agent_setup, real_platform

TAX_CSV = (
    "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
    "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
    f"{ACME},2026-06-30,A,false,false,0,734512.37,88231.90,27,2026-06-15,true\n"
)


def test_a_revocation_reaches_a_returning_agent_within_seconds(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    # A long retry interval: only the reconnect watch can deliver in time.
    h = make_harness(["tax"], revocation_retry_seconds=600)
    consent = grant(pki, catalog)
    register(h.bank(), consent)
    agent = h.agents["tax"]
    agent.stop()
    resp = h.enterprise(ACME).RevokeConsent(
        node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=10
    )
    assert "tax" not in resp.providers_notified
    time.sleep(1.0)  # the agent stays down a while: pushes fail and back off
    agent.start(pki)
    back = time.monotonic()
    while consent_id_of(consent) not in agent.fake.revoked:
        assert time.monotonic() - back < 3.0, "the returning agent did not learn of the revocation within 3 s"
        time.sleep(0.05)


def test_a_restarted_agent_refuses_a_revocation_it_missed_on_its_first_answer(
    pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    """The reconnect push above still leaves a moment after an agent's restart in which it answers a
    consent revoked (or paused) while it was down. An agent with ``node_address`` pulls what it missed before its
    port opens: the very first direct request after the restart is refused."""
    csv = {"tax": TAX_CSV}
    with real_platform(pki, catalog, tmp_path, csv) as (node, agents):
        consent = grant(pki, catalog, scope=("tax.*",))
        bank = secure_channel(f"127.0.0.1:{node.port}", pki.institution("bank-a"), server_role="node", server_id="node")
        ent = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(ACME), server_role="node", server_id="node")
        paused = grant(pki, catalog, scope=("tax.*",))
        try:
            register(node_pb2_grpc.NodeServiceStub(bank), consent)
            register(node_pb2_grpc.NodeServiceStub(bank), paused)
            port = agents["tax"].port
            agents["tax"].stop(0.5)
            resp = node_pb2_grpc.NodeServiceStub(ent).RevokeConsent(
                node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=10
            )
            assert "tax" not in resp.providers_notified  # the node holds it, pending for tax
            change = subj.sign_state_change(
                consent_id_of(paused), ACME, subject_pb2.CONSENT_ACTION_PAUSE, pki.enterprise(ACME).signing_key
            )
            subject_pb2_grpc.SubjectServiceStub(ent).ChangeConsentState(
                subject_pb2.ChangeConsentStateRequest(change=change), timeout=10
            )
        finally:
            bank.close()
            ent.close()
        setup = agent_setup(pki.root, tmp_path, "tax", {"node_address": f"127.0.0.1:{node.port}"})
        agents["tax"] = agent_server.start_agent(setup, bind=f"127.0.0.1:{port}")
        direct = secure_channel(f"127.0.0.1:{port}", pki.node, server_role="provider", server_id="tax")
        try:
            for signed, reason in ((consent, Reason.CONSENT_REVOKED), (paused, Reason.CONSENT_PAUSED)):
                asked = agent_pb2.EvaluateClaimsRequest(
                    request_id=str(uuid.uuid4()),
                    requested_at=int(time.time()),
                    enterprise_uscc=ACME,
                    consent=signed,
                    audience_binding=pki.institution("bank-a").binding.signed,
                    claims=verify_request(signed, ["tax.credit_grade in A"]).claims,
                )
                assert_refused(
                    lambda: agent_pb2_grpc.AgentServiceStub(direct).EvaluateClaims(asked, timeout=10),
                    grpc.StatusCode.FAILED_PRECONDITION,
                    reason,
                )
        finally:
            direct.close()
