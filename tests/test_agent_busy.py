"""Issue 10, A9 on the agents: a saturated agent refuses at once with SERVER_BUSY and RetryInfo, and its
health still answers SERVING (as the node's does: busy is not dead).

Before, the agent's thread-pool runtime had no call budget: calls past its handler threads queued until
their deadline, and health checks queued behind them, so a busy agent looked dead to its orchestrator.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.catalog import Catalog
from xinrong.provider_agent.evaluate import ProviderAgent
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.rpc.server import BUSY_RETRY_SECONDS
from xinrong.v1 import agent_pb2, agent_pb2_grpc

from support.busy import retry_after
from support.node_fakes import ACME
from support.platform import start_agent

CSV = (
    "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
    "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
    f"{ACME},2026-06-30,A,false,false,0,734512.37,88231.90,27,2026-06-15,true\n"
)


def test_a_saturated_agent_refuses_at_once_and_stays_healthy(
    pki: Any, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_info = ProviderAgent.info

    def stuck_info(self: ProviderAgent) -> Any:
        release.wait(20)
        return real_info(self)

    agent = start_agent(pki.root, tmp_path, catalog, "tax", CSV, agent_table={"max_workers": 2}, poll_seconds=0.2)
    monkeypatch.setattr(ProviderAgent, "info", stuck_info)
    channel = secure_channel(f"127.0.0.1:{agent.port}", pki.node, server_role="provider", server_id="tax")
    try:
        assert agent.server.call_budget == 2
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        stuck = [stub.GetAgentInfo.future(agent_pb2.GetAgentInfoRequest(), timeout=30) for _ in range(2)]
        time.sleep(0.5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5)
        assert time.monotonic() - started < 1.0
        err = decode_rpc_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER_BUSY")
        assert retry_after(info.value) == BUSY_RETRY_SECONDS
        started = time.monotonic()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        assert health.status == health_pb2.HealthCheckResponse.SERVING and time.monotonic() - started < 1.0
        release.set()
        assert all(f.result(timeout=20).provider == "tax" for f in stuck)
        # The budget is given back: the next call is served.
        assert stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5).provider == "tax"
    finally:
        release.set()
        channel.close()
        agent.stop(0.5)
