"""The server factory: mTLS required, role checks before handlers, one error mapping,
real health, reflection, size limits, server identity pinning, graceful stop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from xinrong.errors import Reason
from xinrong.rpc.channel import connects_within, secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.rpc.server import BUSY_RETRY_SECONDS, RunningServer, Runtime, ServiceBinding, build_server
from xinrong.v1 import agent_pb2, agent_pb2_grpc

from support.busy import retry_after
from support.echo_agent import AsyncEchoAgent, EchoAgent
from support.node_fakes import free_port
from support.pki import Pki


@pytest.fixture(
    params=[("threads", EchoAgent), ("asyncio", EchoAgent), ("asyncio", AsyncEchoAgent)],
    ids=["threads", "asyncio-pool", "asyncio-loop"],
)
def server(pki: Pki, request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    runtime, servicer = request.param
    running = build_server(
        pki.provider("tax"),
        "127.0.0.1:0",
        [
            ServiceBinding(
                "xinrong.v1.AgentService",
                lambda s: agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer(), s),
                frozenset({"node"}),
            )
        ],
        max_message_bytes=1024 * 1024,
        runtime=runtime,
    )
    yield running
    running.stop(0)


def _channel(pki: Pki, server: RunningServer, role: str, pid: str, *, server_id: str = "tax") -> grpc.Channel:
    creds = pki.node if role == "node" else pki.party(role, pid)
    return secure_channel(f"127.0.0.1:{server.port}", creds, server_role="provider", server_id=server_id)


def test_health_is_not_serving_until_ready(pki: Pki, server: RunningServer) -> None:
    assert server.port > 0
    with _channel(pki, server, "node", "node") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        status = stub.Check(health_pb2.HealthCheckRequest(service="xinrong.v1.AgentService"), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        server.set_serving(True)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def test_role_check_and_error_mapping(pki: Pki, server: RunningServer) -> None:
    with _channel(pki, server, "node", "node") as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        assert stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5).provider == "tax"
        with pytest.raises(grpc.RpcError) as info:
            stub.EvaluateClaims(agent_pb2.EvaluateClaimsRequest(), timeout=5)
        err = decode_rpc_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.ACCESS_DENIED.value)
        assert "internal detail" not in err.message
        with pytest.raises(grpc.RpcError) as info:
            stub.EvaluateIndicators(agent_pb2.EvaluateIndicatorsRequest(), timeout=5)
        err = decode_rpc_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.INTERNAL, "INTERNAL")
        assert "secret" not in err.message
    with _channel(pki, server, "institution", "bank-a") as ch:
        with pytest.raises(grpc.RpcError) as info:
            agent_pb2_grpc.AgentServiceStub(ch).GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5)
        err = decode_rpc_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.CALLER_NOT_ALLOWED.value)


def test_streams_pass_the_guard_and_map_errors(pki: Pki, server: RunningServer) -> None:
    def batch(*ids: int) -> agent_pb2.EvaluateStreamRequest:
        return agent_pb2.EvaluateStreamRequest(calls=[agent_pb2.AgentCall(call_id=i) for i in ids])

    with _channel(pki, server, "node", "node") as ch:
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        out = list(stub.EvaluateStream(iter([batch(1, 2), batch(3)]), timeout=5))
        assert [[r.call_id for r in o.results] for o in out] == [[1, 2], [3]]
        with pytest.raises(grpc.RpcError) as info:
            list(stub.EvaluateStream(iter([batch(4), batch(0)]), timeout=5))
        err = decode_rpc_error(info.value)
        assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.ACCESS_DENIED.value)
        assert "internal detail" not in err.message
    with _channel(pki, server, "institution", "bank-a") as ch:
        with pytest.raises(grpc.RpcError) as info:
            list(agent_pb2_grpc.AgentServiceStub(ch).EvaluateStream(iter([batch(1)]), timeout=5))
        assert decode_rpc_error(info.value).reason == Reason.CALLER_NOT_ALLOWED.value


def test_clients_pin_the_server_identity(pki: Pki, server: RunningServer) -> None:
    """A client that means to reach the water agent does not complete a handshake with tax."""
    with _channel(pki, server, "node", "node", server_id="water") as ch:
        with pytest.raises(grpc.RpcError) as info:
            agent_pb2_grpc.AgentServiceStub(ch).GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=3)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_and_foreign_clients_are_refused(pki: Pki, server: RunningServer) -> None:
    from xinrong.keys.ca import CertificateAuthority

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch, pytest.raises(grpc.RpcError):
        agent_pb2_grpc.AgentServiceStub(ch).GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=3)
    rogue = CertificateAuthority.create("rogue")
    key, cert = rogue.issue_tls("node", "node")
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.cert_pem, private_key=key, certificate_chain=cert)
    options = [("grpc.ssl_target_name_override", "tax.provider.xinrong")]
    with grpc.secure_channel(f"127.0.0.1:{server.port}", creds, options=options) as ch, pytest.raises(grpc.RpcError):
        agent_pb2_grpc.AgentServiceStub(ch).GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=3)


def test_message_size_limit(pki: Pki, server: RunningServer) -> None:
    with _channel(pki, server, "node", "node") as ch:
        big = agent_pb2.EvaluateClaimsRequest(request_id="x" * (2 * 1024 * 1024))
        with pytest.raises(grpc.RpcError) as info:
            agent_pb2_grpc.AgentServiceStub(ch).EvaluateClaims(big, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_reflection_lists_services(pki: Pki, server: RunningServer) -> None:
    with _channel(pki, server, "node", "node") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
        )
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"xinrong.v1.AgentService", "grpc.health.v1.Health"} <= names


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_connects_within_answers_and_leaves_no_thread_to_fail_on_close(pki: Pki, server: RunningServer) -> None:
    """The node probes an agent's return, then may close its channel at once
    (stopping). grpc.channel_ready_future's polling thread outlived the probe
    and died with "Channel closed!" on such a close (an unhandled thread
    exception); one health call ends with the call."""
    assert not connects_within(None, 1.0)
    for _ in range(5):
        ch = _channel(pki, server, "node", "node")
        assert connects_within(ch, 5.0)  # NOT_SERVING still means it connected
        ch.close()
        assert not connects_within(ch, 0.2)  # closed: no, and no exception
    time.sleep(0.5)  # the old polling thread woke every 0.2 s
    port = free_port()
    with secure_channel(f"127.0.0.1:{port}", pki.node, server_role="provider", server_id="tax") as ch:
        started = time.monotonic()
        assert not connects_within(ch, 0.3)  # nothing listens there
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("runtime", ["threads", "asyncio"])
def test_graceful_stop_reports_not_serving(pki: Pki, runtime: Runtime) -> None:
    running = build_server(pki.provider("tax"), "127.0.0.1:0", [], runtime=runtime)
    running.set_serving(True)
    running.stop(0.5)
    running.stop(0.5)  # idempotent
    with _channel(pki, running, "node", "node") as ch, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)


def test_a_client_hanging_up_mid_stream_is_no_internal_error(
    pki: Pki, server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A node that stops (or a caller that cancels) ends its streams: that is no
    server error and logs no traceback at the agent."""
    import queue
    import threading
    import time

    requests: queue.Queue[agent_pb2.EvaluateStreamRequest | None] = queue.Queue()

    def feed() -> Iterator[agent_pb2.EvaluateStreamRequest]:
        while (item := requests.get()) is not None:
            yield item

    caplog.set_level("INFO", logger="xinrong.rpc.server")
    with _channel(pki, server, "node", "node") as ch:
        call = agent_pb2_grpc.AgentServiceStub(ch).EvaluateStream(feed(), timeout=10)
        requests.put(agent_pb2.EvaluateStreamRequest(calls=[agent_pb2.AgentCall(call_id=7)]))
        assert [r.call_id for r in next(call).results] == [7]
        threading.Event().wait(0.2)  # the handler now waits for the next batch
    # Leaving the block closes the channel with the stream open, as a stopping node does.
    requests.put(None)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and not caplog.records:
        threading.Event().wait(0.05)
    assert not [r for r in caplog.records if r.levelname == "ERROR"], [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("raw", [b"\xff", b"\x0a\x01\xff"], ids=["bad-tag", "bad-utf8"])
def test_undecodable_requests_are_invalid_argument_after_the_role_check(
    pki: Pki, server: RunningServer, raw: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """Bytes that do not parse are INVALID_ARGUMENT with a reason and one log
    line without traceback, for unary and streaming methods; a caller whose
    role may not call the service is refused before anything is decoded."""
    caplog.set_level("INFO", logger="xinrong.rpc.server")

    def call(ch: grpc.Channel, method: str, streaming: bool) -> grpc.RpcError:
        identity = lambda b: b  # noqa: E731
        with pytest.raises(grpc.RpcError) as info:
            if streaming:
                list(
                    ch.stream_stream(method, request_serializer=identity, response_deserializer=identity)(
                        iter([raw]), timeout=5
                    )
                )
            else:
                ch.unary_unary(method, request_serializer=identity, response_deserializer=identity)(raw, timeout=5)
        return info.value

    methods = [("/xinrong.v1.AgentService/EvaluateClaims", False), ("/xinrong.v1.AgentService/EvaluateStream", True)]
    with _channel(pki, server, "node", "node") as ch:
        for method, streaming in methods:
            err = decode_rpc_error(call(ch, method, streaming))
            assert (err.code, err.reason) == (grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_ARGUMENT.value), method
            assert "decode" in err.message
    with _channel(pki, server, "institution", "bank-a") as ch:
        for method, streaming in methods:
            err = decode_rpc_error(call(ch, method, streaming))
            assert (err.code, err.reason) == (grpc.StatusCode.PERMISSION_DENIED, Reason.CALLER_NOT_ALLOWED.value)
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
    assert len([r for r in caplog.records if "do not decode" in r.getMessage()]) == 2


@pytest.mark.parametrize("runtime", ["asyncio", "threads"])
def test_health_answers_while_the_call_budget_is_full(pki: Pki, runtime: Runtime) -> None:
    """gRPC's concurrency limit once counted health checks, so a node busy with
    its full budget failed liveness. Health now sits outside the budget. The
    threads runtime (the agents) once had no budget at all: calls past its pool
    queued until their deadline, health with them."""
    import threading
    import time

    release = threading.Event()

    class _Stuck(EchoAgent):
        def GetAgentInfo(self, request: Any, context: grpc.ServicerContext) -> agent_pb2.GetAgentInfoResponse:
            release.wait(20)
            return agent_pb2.GetAgentInfoResponse(provider="tax")

    running = build_server(
        pki.provider("tax"),
        "127.0.0.1:0",
        [
            ServiceBinding(
                "xinrong.v1.AgentService",
                lambda s: agent_pb2_grpc.add_AgentServiceServicer_to_server(_Stuck(), s),
                frozenset({"node"}),
            )
        ],
        max_workers=1,  # a budget of 16 calls (asyncio), 1 (threads)
        runtime=runtime,
    )
    running.set_serving(True)
    assert running.call_budget == (16 if runtime == "asyncio" else 1)
    try:
        with _channel(pki, running, "node", "node") as ch:
            stub = agent_pb2_grpc.AgentServiceStub(ch)
            stuck = [
                stub.GetAgentInfo.future(agent_pb2.GetAgentInfoRequest(), timeout=30)
                for _ in range(running.call_budget)
            ]
            time.sleep(1.0)
            started = time.monotonic()
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=2)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 1.0
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:  # the budget itself still holds
                stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5)
            assert time.monotonic() - started < 1.0  # refused at once, not queued
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert decode_rpc_error(info.value).reason == "SERVER_BUSY"
            assert retry_after(info.value) == BUSY_RETRY_SECONDS
            release.set()
            assert all(f.result(timeout=20).provider == "tax" for f in stuck)
    finally:
        release.set()
        running.stop(0)


@pytest.mark.parametrize("runtime", ["threads", "asyncio"])
def test_sigterm_stops_a_process_with_a_stuck_call_within_grace_and_margin(
    pki: Pki, runtime: str, tmp_path: Any
) -> None:
    """An agent once stayed up 30 s after SIGTERM with calls in flight."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from xinrong.rpc.server import HARD_STOP_MARGIN_SECONDS

    grace = 1.0
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.stuck_server", str(pki.root), runtime, str(grace), str(port_file)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int(port_file.read_text())
        creds = pki.node
        ch = secure_channel(f"127.0.0.1:{port}", creds, server_role="provider", server_id="tax")
        call = agent_pb2_grpc.AgentServiceStub(ch).GetAgentInfo.future(agent_pb2.GetAgentInfoRequest(), timeout=60)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "in flight"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace + HARD_STOP_MARGIN_SECONDS + 5)
        assert time.monotonic() - started < grace + HARD_STOP_MARGIN_SECONDS + 1.5
        with pytest.raises(grpc.RpcError):
            call.result(timeout=5)
        ch.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
