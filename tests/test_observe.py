"""Metrics and request-scoped logs: the interceptor counts every call by method and
status code on both runtimes, times it, keeps the request id across the call's log
lines; the registry is per server; the JSON formatter writes one object per line;
the metrics endpoint binds loopback unless told otherwise."""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from xinrong.logs import ContextFilter, JsonFormatter, RequestContext, current_request_id, request_var
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.observe import REQUEST_ID_HEADER, MetricsConfig, Observer, is_loopback, stream_call
from xinrong.rpc.server import RunningServer, ServiceBinding, build_server
from xinrong.v1 import agent_pb2, agent_pb2_grpc

from support.echo_agent import AsyncEchoAgent, EchoAgent
from support.pki import Pki

AGENT_INFO = "/xinrong.v1.AgentService/GetAgentInfo"
EVALUATE = "/xinrong.v1.AgentService/EvaluateClaims"
INDICATORS = "/xinrong.v1.AgentService/EvaluateIndicators"


def _value(observer: Observer, name: str, **labels: str) -> float:
    value = observer.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _settled(observer: Observer, name: str, want: float, **labels: str) -> float:
    """The sample once it reaches ``want`` (an aborted call may be counted just after its client saw the status)."""
    deadline = time.monotonic() + 2.0
    while _value(observer, name, **labels) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    return _value(observer, name, **labels)


@pytest.fixture(
    params=[("threads", EchoAgent), ("asyncio", EchoAgent), ("asyncio", AsyncEchoAgent)],
    ids=["threads", "asyncio-pool", "asyncio-loop"],
)
def observed(pki: Pki, request: pytest.FixtureRequest) -> Iterator[tuple[RunningServer, Observer]]:
    runtime, servicer = request.param
    observer = Observer("tax")
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
        runtime=runtime,
        observer=observer,
    )
    yield running, observer
    running.stop(0)


def _stub(
    pki: Pki, server: RunningServer, creds_role: str = "node"
) -> tuple[grpc.Channel, agent_pb2_grpc.AgentServiceStub]:
    creds = pki.node if creds_role == "node" else pki.institution("bank-a")
    ch = secure_channel(f"127.0.0.1:{server.port}", creds, server_role="provider", server_id="tax")
    return ch, agent_pb2_grpc.AgentServiceStub(ch)


def test_calls_are_counted_by_method_and_code(
    pki: Pki, observed: tuple[RunningServer, Observer], caplog: pytest.LogCaptureFixture
) -> None:
    server, observer = observed
    ch, stub = _stub(pki, server)
    caplog.set_level(logging.DEBUG, logger="xinrong.access")
    with ch:
        for _ in range(3):
            stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.EvaluateClaims(agent_pb2.EvaluateClaimsRequest(request_id="r-seen-1"), timeout=5)
        with pytest.raises(grpc.RpcError):
            stub.EvaluateIndicators(
                agent_pb2.EvaluateIndicatorsRequest(), timeout=5, metadata=((REQUEST_ID_HEADER, "r-from-header"),)
            )
        with _stub(pki, server, "institution")[0] as ch2, pytest.raises(grpc.RpcError):
            agent_pb2_grpc.AgentServiceStub(ch2).GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=5)
    assert _settled(observer, "xinrong_rpc_requests_total", 3, method=AGENT_INFO, code="OK") == 3
    assert _settled(observer, "xinrong_rpc_requests_total", 1, method=AGENT_INFO, code="PERMISSION_DENIED") == 1
    assert _settled(observer, "xinrong_rpc_requests_total", 1, method=EVALUATE, code="PERMISSION_DENIED") == 1
    assert _settled(observer, "xinrong_rpc_requests_total", 1, method=INDICATORS, code="INTERNAL") == 1
    assert _settled(observer, "xinrong_rpc_duration_seconds_count", 4, method=AGENT_INFO) == 4
    assert _value(observer, "xinrong_rpc_in_flight", method=AGENT_INFO) == 0
    # The access line of an aborted call may be written just after its counter moved:
    # wait (briefly) until every caller's line is in.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        access = [r for r in caplog.records if r.name == "xinrong.access"]
        if len(access) >= 6 and {getattr(r, "caller", "") for r in access} >= {"node", "bank-a"}:
            break
        time.sleep(0.01)
    by_status = {(getattr(r, "status", ""), r.levelno) for r in access}
    assert ("OK", logging.DEBUG) in by_status and ("INTERNAL", logging.INFO) in by_status
    rids = [getattr(r, "request_id", "") for r in access]
    # The request's own id is kept; else the header's; else a fresh one per call.
    assert "r-seen-1" in rids and "r-from-header" in rids
    generated = [rid for rid in rids if rid.startswith("x-")]
    assert len(set(generated)) == len(generated) >= 3, rids
    callers = {getattr(r, "caller", "") for r in access}
    assert callers >= {"node", "bank-a"}
    text = observer.exposition()
    assert "r-seen-1" not in text and "r-from-header" not in text


def test_unknown_methods_get_no_label(pki: Pki, observed: tuple[RunningServer, Observer]) -> None:
    server, observer = observed
    ch, _ = _stub(pki, server)
    with ch:
        call = ch.unary_unary(
            "/xinrong.v1.AgentService/Nope-made-up", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        with pytest.raises(grpc.RpcError) as info:
            call(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Nope-made-up" not in observer.exposition()


def test_registries_are_per_server() -> None:
    a, b = Observer("a"), Observer("b")
    a.requests.labels("/m", "OK").inc()
    assert _value(a, "xinrong_rpc_requests_total", method="/m", code="OK") == 1
    assert _value(b, "xinrong_rpc_requests_total", method="/m", code="OK") == 0


def test_scrape_gauges_and_a_failing_callback() -> None:
    observer = Observer("n")

    def broken() -> list[tuple[tuple[str, ...], float]]:
        raise RuntimeError("store busy")

    observer.gauges.add("xinrong_test_up", "up", ("provider",), lambda: [(("tax",), 1.0), (("gas",), 0.0)])
    observer.gauges.add("xinrong_test_broken", "fails", (), broken)
    assert _value(observer, "xinrong_test_up", provider="tax") == 1
    assert _value(observer, "xinrong_test_up", provider="gas") == 0
    assert "xinrong_test_broken" not in observer.exposition()


def test_stream_calls_have_their_own_request_id(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="xinrong.access"):
        with stream_call("EvaluateStream/claims", "r-abc") as done:
            assert current_request_id() == "r-abc"
            done("OK")
        with stream_call("EvaluateStream/claims", "bad id\n") as done:
            assert current_request_id().startswith("x-")
            done("PERMISSION_DENIED")
    assert current_request_id() == ""
    statuses = [(getattr(r, "request_id", ""), getattr(r, "status", "")) for r in caplog.records]
    assert ("r-abc", "OK") in statuses


def test_json_formatter_one_object_per_line() -> None:
    record = logging.LogRecord("xinrong.access", logging.DEBUG, __file__, 1, "%s %s", ("/m", "OK"), None)
    record.status = "OK"
    record.duration_ms = 1.5
    token = request_var.set(RequestContext("r-1", "bank-a", "/m"))
    try:
        ContextFilter().filter(record)
    finally:
        request_var.reset(token)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "DEBUG" and doc["logger"] == "xinrong.access" and doc["message"] == "/m OK"
    assert doc["request_id"] == "r-1" and doc["status"] == "OK" and doc["duration_ms"] == 1.5
    assert "time" in doc


def test_metrics_bind_loopback_only_unless_allowed() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3")
    with pytest.raises(ValueError, match="loopback"):
        MetricsConfig.model_validate({"listen": "0.0.0.0:9464"})
    assert MetricsConfig(listen="0.0.0.0:9464", allow_remote=True).enabled
    assert not MetricsConfig().enabled
    assert MetricsConfig().with_port(0).listen == "127.0.0.1:0"


def test_http_endpoint_serves_the_registry() -> None:
    observer = Observer("n")
    observer.requests.labels("/m", "OK").inc()
    port = observer.serve_http(MetricsConfig(listen="127.0.0.1:0"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'xinrong_rpc_requests_total{code="OK",method="/m"} 1.0' in text
    finally:
        observer.close()


def test_config_tables_and_their_refusals(tmp_path: Path) -> None:
    from xinrong.config import ConfigError
    from xinrong.provider_agent.config import parse_config

    base = {"provider": "tax", "bind": "127.0.0.1:0", "credentials": "k", "db": "d.db"}
    config = parse_config(
        {"agent": base, "metrics": {"listen": "127.0.0.1:0"}, "logging": {"format": "json"}}, tmp_path
    )
    assert config.metrics.enabled and config.logging.format == "json"
    assert not parse_config({"agent": base}, tmp_path).metrics.enabled  # off by default
    with pytest.raises(ConfigError, match=r"\[metrics\].*loopback"):
        parse_config({"agent": base, "metrics": {"listen": "0.0.0.0:9464"}}, tmp_path)
    assert parse_config({"agent": base, "metrics": {"listen": "0.0.0.0:9464", "allow_remote": True}}, tmp_path)
    with pytest.raises(ConfigError, match=r"\[logging\]"):
        parse_config({"agent": base, "logging": {"format": "xml"}}, tmp_path)
    with pytest.raises(ConfigError, match="listn"):
        parse_config({"agent": base, "metrics": {"listn": "127.0.0.1:1"}}, tmp_path)


def test_agent_template_metrics_lines_load_when_uncommented(tmp_path: Path) -> None:
    import tomllib

    from xinrong.provider_agent.config import parse_config, render_template

    text = render_template(out=tmp_path / "agent.toml", provider="tax", keys_dir=tmp_path / "keys", bind="127.0.0.1:0")
    assert "# [metrics]" in text
    opened = "\n".join(
        line[2:] if line.startswith(("# [metrics]", "# listen", "# [logging]", "# format")) else line
        for line in text.splitlines()
    )
    config = parse_config(tomllib.loads(opened), tmp_path)
    assert config.metrics.listen == "127.0.0.1:9465" and config.logging.format == "json"


def test_pool_threads_keep_the_request_context() -> None:
    import asyncio

    from xinrong.rpc.observe import ContextThreadPool, outgoing_metadata

    async def run() -> tuple[str, tuple[tuple[str, str], ...]]:
        token = request_var.set(RequestContext("r-pool-1", "bank-a", "/m"))
        try:
            loop = asyncio.get_running_loop()
            with ContextThreadPool(max_workers=1) as pool:
                return await loop.run_in_executor(pool, current_request_id), await loop.run_in_executor(
                    pool, outgoing_metadata
                )
        finally:
            request_var.reset(token)

    rid, metadata = asyncio.run(run())
    assert rid == "r-pool-1"
    assert metadata == ((REQUEST_ID_HEADER, "r-pool-1"),)
    assert outgoing_metadata() == ()
