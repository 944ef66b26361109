"""Issue 10, A6: an agent outage must not drain an enterprise's daily budget.

A bank looping Verify while an agent is down gets fast UNAVAILABLE refusals
with a retry-after (the node's circuit breaker), the enterprise's budget
(shared by every institution) is refunded for calls that provably reached
no data, and once the agent is back every institution is served again.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.rpc.errors import decode_rpc_error

from support.node_fakes import grant, refusal, register, verify_request


@pytest.fixture(params=["sqlite", "postgres"])
def node_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _retry_delay(err: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


def test_an_agent_outage_does_not_drain_the_enterprise_budget(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], down=["tax"], agent_timeout_seconds=1, enterprise_daily_budget=3)
    consent_a = grant(pki, catalog, max_uses=500)
    consent_b = grant(pki, catalog, grantee="bank-b", max_uses=500)
    register(h.bank(), consent_a)
    register(h.bank("bank-b"), consent_b)
    bank = h.bank()
    start = time.monotonic()
    retry_after: list[float | None] = []
    for _ in range(40):
        t0 = time.monotonic()
        err = refusal(lambda: bank.Verify(verify_request(consent_a), timeout=5))
        assert time.monotonic() - t0 < 1.0, "a down provider must be refused fast"
        remote = decode_rpc_error(err)
        assert (err.code(), remote.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.PROVIDER_UNAVAILABLE.value)
        retry_after.append(_retry_delay(err))
    assert time.monotonic() - start < 10
    # After the first failure the breaker is open: the rest carry a retry-after and name the provider.
    assert all(r is not None and 0 < r <= 5 for r in retry_after[1:]), retry_after
    assert "tax" in decode_rpc_error(err).message
    # The enterprise's budget (3 a day) is intact: the agent returns, both banks are served.
    h.agents["tax"].start(pki)
    deadline = time.monotonic() + 3.0
    while True:
        try:
            assert h.bank("bank-b").Verify(verify_request(consent_b), timeout=5).answers
            break
        except grpc.RpcError as exc:
            assert decode_rpc_error(exc).reason == Reason.PROVIDER_UNAVAILABLE.value
            assert time.monotonic() < deadline, "the agent's return must be noticed within seconds"
            time.sleep(0.05)
    assert bank.Verify(verify_request(consent_a), timeout=5).answers
    used = h.query("SELECT uses FROM enterprise_daily_uses")
    assert used == [(2,)], f"only the two answered requests count against the enterprise: {used}"
