"""Pause and resume pushes survive a node restart, like revocation pushes.

Before: pending pause / resume pushes to agents that were down lived only in
the node's memory (``node.subject``), so a node restart lost them and the
agent kept answering a paused consent when asked directly. Now they are
stored with the state change (``pause_pushes``, schema step 11) and retried
the way revocations are: every pending push at start, the same backoff, and
a watch that delivers within about a second of the agent's return.
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
from xinrong.keys.layout import party_dir
from xinrong.node.config import load_config, render_config
from xinrong.node.server import NodeServer, start_node
from xinrong.provider_agent import server as agent_server
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2, node_pb2_grpc, subject_pb2, subject_pb2_grpc

from support.node_fakes import ACME, consent_id_of, grant, register, verify_request
from support.platform import BANKS, agent_setup, start_agent

TAX_CSV = (
    "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
    "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
    f"{ACME},2026-06-30,A,false,false,0,734512.37,88231.90,27,2026-06-15,true\n"
)


def _node(pki: Any, tmp_path: Path, agent_port: int) -> NodeServer:
    root = pki.root
    path = tmp_path / "node.toml"
    path.write_text(
        render_config(
            bind="127.0.0.1:0",
            credentials=party_dir(root, "node", "node"),
            ca_cert=root / "ca" / "ca.crt",
            db="node.db",
            providers=[("tax", f"127.0.0.1:{agent_port}", party_dir(root, "provider", "tax") / "binding.pb")],
            institutions=[(b, party_dir(root, "institution", b) / "binding.pb") for b in BANKS],
            # Long: only the start-up push or the reconnect watch can deliver in time.
            revocation_retry_seconds=600,
        )
    )
    return start_node(load_config(path))


def _answer_reason(port: int, pki: Any, consent: Any) -> str:
    """What the tax agent answers when asked directly with the node's certificate ('' = an answer)."""
    channel = secure_channel(f"127.0.0.1:{port}", pki.node, server_role="provider", server_id="tax")
    try:
        asked = agent_pb2.EvaluateClaimsRequest(
            request_id=str(uuid.uuid4()),
            requested_at=int(time.time()),
            enterprise_uscc=ACME,
            consent=consent,
            audience_binding=pki.institution("bank-a").binding.signed,
            claims=verify_request(consent, ["tax.credit_grade in A"]).claims,
        )
        try:
            agent_pb2_grpc.AgentServiceStub(channel).EvaluateClaims(asked, timeout=10)
        except grpc.RpcError as err:
            return decode_rpc_error(err).reason
        return ""
    finally:
        channel.close()


def test_a_pause_reaches_an_agent_that_was_down_across_a_node_restart(
    pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    agent = start_agent(pki.root, tmp_path, catalog, "tax", TAX_CSV)
    port = agent.port
    node = _node(pki, tmp_path, port)
    nodes = [node]
    try:
        consent = grant(pki, catalog, scope=("tax.*",))
        bank = secure_channel(f"127.0.0.1:{node.port}", pki.institution("bank-a"), server_role="node", server_id="node")
        ent = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(ACME), server_role="node", server_id="node")
        try:
            register(node_pb2_grpc.NodeServiceStub(bank), consent)
            assert _answer_reason(port, pki, consent) == ""
            agent.stop(0.5)
            change = subj.sign_state_change(
                consent_id_of(consent), ACME, subject_pb2.CONSENT_ACTION_PAUSE, pki.enterprise(ACME).signing_key
            )
            resp = subject_pb2_grpc.SubjectServiceStub(ent).ChangeConsentState(
                subject_pb2.ChangeConsentStateRequest(change=change), timeout=10
            )
            assert resp.state == common_pb2.CONSENT_STATE_PAUSED
            assert "tax" not in resp.providers_notified  # pending for tax
        finally:
            bank.close()
            ent.close()
        # The node restarts while the agent is down; then the agent comes back on its port
        # (without node_address: it does not pull, only the node's push can tell it).
        node.stop(0.5)
        node = _node(pki, tmp_path, port)
        nodes.append(node)
        assert node.subject is not None and len(node.subject.pending_pauses("tax")) == 1
        time.sleep(0.5)
        agent = agent_server.start_agent(agent_setup(pki.root, tmp_path, "tax"), bind=f"127.0.0.1:{port}")
        back = time.monotonic()
        while (reason := _answer_reason(port, pki, consent)) != Reason.CONSENT_PAUSED.value:
            assert reason == "", reason
            assert time.monotonic() - back < 5.0, "the returning agent did not learn of the pause within 5 s"
            time.sleep(0.1)
        # Acknowledged: nothing pending any more, and the push is in the audit log.
        deadline = time.monotonic() + 5
        while node.subject is not None and node.subject.pending_pauses("tax"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        rows = node.core.db.query("SELECT count(*) FROM audit_log WHERE method = 'PushConsentPause'")
        assert rows == [(1,)]
    finally:
        for n in nodes:
            n.stop(0.5)
        agent.stop(0.5)


def test_a_newer_change_replaces_the_pending_one_and_an_old_ack_does_not_clear_it(
    pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    """Pause then resume while the agent is down: one pending row, the resume; a restart keeps it."""
    agent = start_agent(pki.root, tmp_path, catalog, "tax", TAX_CSV)
    port = agent.port
    agent.stop(0.5)
    node = _node(pki, tmp_path, port)
    try:
        consent = grant(pki, catalog, scope=("tax.*",))
        ent = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(ACME), server_role="node", server_id="node")
        try:
            register(node_pb2_grpc.NodeServiceStub(ent), consent)
            stub = subject_pb2_grpc.SubjectServiceStub(ent)
            for action in (subject_pb2.CONSENT_ACTION_PAUSE, subject_pb2.CONSENT_ACTION_RESUME):
                change = subj.sign_state_change(consent_id_of(consent), ACME, action, pki.enterprise(ACME).signing_key)
                stub.ChangeConsentState(subject_pb2.ChangeConsentStateRequest(change=change), timeout=10)
                time.sleep(0.002)  # distinct signed_at_ms
        finally:
            ent.close()
        node.stop(0.5)
        node = _node(pki, tmp_path, port)
        assert node.subject is not None
        pending = node.subject.pending_pauses("tax")
        assert len(pending) == 1
        latest = subject_pb2.ConsentStateChange.FromString(pending[0].change.change)
        assert latest.action == subject_pb2.CONSENT_ACTION_RESUME
        rows = node.core.db.query("SELECT attempts, next_attempt_ms > 0 FROM pause_pushes")
        assert rows and rows[0][0] >= 1  # the pushes at the change and at start failed and backed off
    finally:
        node.stop(0.5)
