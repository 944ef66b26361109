"""The agent over real gRPC/mTLS in-process: only the node may call, health
tells the truth, answers arrive sealed and signed, refusals carry precise
status codes and ErrorInfo reasons."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.catalog import Catalog
from xinrong.claims import parse_claim
from xinrong.provider_agent.config import load_agent
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.server import RunningAgent, start_agent
from xinrong.provider_agent.store import DataStore
from xinrong.rpc.channel import secure_channel, wait_healthy
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2, node_pb2

from support.agent import (
    AS_OF,
    E_ABSENT,
    E_GOOD,
    E_POOR,
    RESULT_NAMES,
    TAX_HEADER,
    open_bundle,
    revocation_for,
    signed_consent,
    tax_rows,
    verified_indicators,
    verified_verdicts,
    write_config,
    write_csv,
)
from support.pki import Pki

TIMEOUT = 10.0


@pytest.fixture
def running(pki: Pki, tmp_path: Path) -> Iterator[RunningAgent]:
    setup = load_agent(write_config(tmp_path, pki))
    agent = start_agent(setup, poll_seconds=0.05)
    yield agent
    agent.stop(grace=0.5)


def channel_as(pki: Pki, running: RunningAgent, role: str, party_id: str) -> grpc.Channel:
    return secure_channel(
        f"127.0.0.1:{running.port}", pki.party(role, party_id), server_role="provider", server_id="tax"
    )


def agent_stub(channel: grpc.Channel) -> agent_pb2_grpc.AgentServiceStub:
    return agent_pb2_grpc.AgentServiceStub(channel)


def health(channel: grpc.Channel) -> int:
    resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
    return int(resp.status)


def import_tax(running: RunningAgent, catalog: Catalog, tmp_path: Path) -> None:
    store = DataStore(running.data.path, "tax")  # what `xinrong agent import` does, in another connection
    try:
        import_csv(store, catalog, "tax", write_csv(tmp_path / "tax.csv", TAX_HEADER, tax_rows()))
    finally:
        store.close()


def claims_rpc(
    pki: Pki,
    consent: common_pb2.SignedConsent,
    enterprise: str,
    claims: list[str],
    *,
    request_id: str,
    audience: str = "bank-a",
    requested_at: int | None = None,
) -> agent_pb2.EvaluateClaimsRequest:
    return agent_pb2.EvaluateClaimsRequest(
        request_id=request_id,
        requested_at=int(time.time()) if requested_at is None else requested_at,
        enterprise_uscc=enterprise,
        consent=consent,
        audience_binding=pki.institution(audience).binding.signed,
        claims=[parse_claim(c) for c in claims],
    )


def refused(call: object, request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=TIMEOUT)  # type: ignore[operator]
    remote = decode_rpc_error(info.value)
    return remote.code, remote.reason


def test_health_before_and_after_first_import(
    pki: Pki, catalog: Catalog, running: RunningAgent, tmp_path: Path
) -> None:
    with channel_as(pki, running, "node", "node") as ch:
        assert health(ch) == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = agent_stub(ch)
        info = stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=TIMEOUT)
        assert (info.provider, info.data_as_of, info.enterprises) == ("tax", "", 0)
        import_tax(running, catalog, tmp_path)
        wait_healthy(ch, timeout=5.0)  # the watcher notices the committed period
        info = stub.GetAgentInfo(agent_pb2.GetAgentInfoRequest(), timeout=TIMEOUT)
        assert (info.provider, info.data_as_of, info.enterprises) == ("tax", AS_OF, 3)


def test_end_to_end_verdicts_and_refusals(pki: Pki, catalog: Catalog, running: RunningAgent, tmp_path: Path) -> None:
    import_tax(running, catalog, tmp_path)
    running.refresh_health()
    consent = signed_consent(pki, catalog, E_GOOD, max_uses=3)
    with channel_as(pki, running, "node", "node") as ch:
        stub = agent_stub(ch)
        claims = ["tax.credit_grade in A,B", "tax.in_arrears == true", "tax.cit_paid_last_year >= 1000000"]
        req = claims_rpc(pki, consent, E_GOOD, claims, request_id="r-1")
        resp = stub.EvaluateClaims(req, timeout=TIMEOUT)
        verdicts = verified_verdicts(pki, open_bundle(pki, resp.sealed, "r-1"), "tax")
        assert [RESULT_NAMES[v.result] for v in verdicts] == ["TRUE", "FALSE", "FALSE"]
        assert all(v.request_id == "r-1" and v.audience == "bank-a" for v in verdicts)

        ind = agent_pb2.EvaluateIndicatorsRequest(
            request_id="r-2",
            requested_at=int(time.time()),
            enterprise_uscc=E_GOOD,
            consent=consent,
            audience_binding=pki.institution("bank-a").binding.signed,
            queries=[node_pb2.IndicatorQuery(field="tax.vat_paid_last_year", form=common_pb2.DISCLOSURE_FORM_BRACKET)],
        )
        [indicator] = verified_indicators(
            pki, open_bundle(pki, stub.EvaluateIndicators(ind, timeout=TIMEOUT).sealed, "r-2"), "tax"
        )
        assert (indicator.bracket.lower, indicator.bracket.upper) == ("1000000", "5000000")

        absent = signed_consent(pki, catalog, E_ABSENT)
        resp = stub.EvaluateClaims(claims_rpc(pki, absent, E_ABSENT, claims, request_id="r-3"), timeout=TIMEOUT)
        verdicts = verified_verdicts(pki, open_bundle(pki, resp.sealed, "r-3"), "tax")
        assert [RESULT_NAMES[v.result] for v in verdicts] == ["NO_DATA"] * 3

        now = int(time.time())
        P, F, R, INV = (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.FAILED_PRECONDITION,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        cases = [
            (
                claims_rpc(pki, consent, E_GOOD, claims, request_id="r-1"),
                grpc.StatusCode.ALREADY_EXISTS,
                "REQUEST_REPLAYED",
            ),
            (claims_rpc(pki, consent, E_GOOD, claims, request_id="r-4", requested_at=now - 3600), F, "REQUEST_STALE"),
            (
                claims_rpc(pki, signed_consent(pki, catalog, E_GOOD, signer=E_POOR), E_GOOD, claims, request_id="r-5"),
                P,
                "ACCESS_DENIED",
            ),
            (
                claims_rpc(pki, signed_consent(pki, catalog, E_POOR), E_GOOD, claims, request_id="r-6"),
                P,
                "ACCESS_DENIED",
            ),
            (
                claims_rpc(
                    pki,
                    signed_consent(pki, catalog, E_GOOD, valid_from=now - 7200, valid_until=now - 1),
                    E_GOOD,
                    claims,
                    request_id="r-7",
                ),
                F,
                "CONSENT_EXPIRED",
            ),
            (
                claims_rpc(
                    pki,
                    signed_consent(pki, catalog, E_GOOD, valid_from=now + 3600, valid_until=now + 7200),
                    E_GOOD,
                    claims,
                    request_id="r-8",
                ),
                F,
                "CONSENT_NOT_YET_VALID",
            ),
            (
                claims_rpc(
                    pki, signed_consent(pki, catalog, E_GOOD, grantee="bank-b"), E_GOOD, claims, request_id="r-9"
                ),
                P,
                "ACCESS_DENIED",
            ),
            (
                claims_rpc(
                    pki,
                    signed_consent(pki, catalog, E_GOOD, scope=["tax.credit_grade"]),
                    E_GOOD,
                    claims,
                    request_id="r-10",
                ),
                P,
                "CLAIM_OUT_OF_SCOPE",
            ),
            (
                claims_rpc(pki, consent, E_GOOD, ["tax.vat_paid_last_year >= 123"], request_id="r-11"),
                INV,
                "THRESHOLD_NOT_PUBLISHED",
            ),
            (
                claims_rpc(pki, consent, E_GOOD, ["electricity.in_arrears == false"], request_id="r-12"),
                INV,
                "INVALID_ARGUMENT",
            ),
            (
                claims_rpc(
                    pki,
                    signed_consent(pki, catalog, E_GOOD, period=("2025-01-01", "2025-12-31")),
                    E_GOOD,
                    claims,
                    request_id="r-13",
                ),
                F,
                "CONSENT_PERIOD_MISMATCH",
            ),
        ]
        for request, code, reason in cases:
            assert refused(stub.EvaluateClaims, request) == (code, reason), request.request_id

        # Third and last use of `consent` (r-1 and r-2 used it), then exhausted.
        stub.EvaluateClaims(claims_rpc(pki, consent, E_GOOD, claims, request_id="r-14"), timeout=TIMEOUT)
        assert refused(stub.EvaluateClaims, claims_rpc(pki, consent, E_GOOD, claims, request_id="r-15")) == (
            R,
            "CONSENT_USES_EXHAUSTED",
        )

        si_ind = agent_pb2.EvaluateIndicatorsRequest(
            request_id="r-16",
            requested_at=int(time.time()),
            enterprise_uscc=E_GOOD,
            consent=consent,
            audience_binding=pki.institution("bank-a").binding.signed,
            queries=[
                node_pb2.IndicatorQuery(
                    field="social_insurance.avg_insured_headcount", form=common_pb2.DISCLOSURE_FORM_BRACKET
                )
            ],
        )
        assert refused(stub.EvaluateIndicators, si_ind) == (INV, "FORM_NOT_ALLOWED")


def test_revocation_pushed_over_grpc(pki: Pki, catalog: Catalog, running: RunningAgent, tmp_path: Path) -> None:
    import_tax(running, catalog, tmp_path)
    consent = signed_consent(pki, catalog, E_GOOD)
    with channel_as(pki, running, "node", "node") as ch:
        stub = agent_stub(ch)
        stub.EvaluateClaims(
            claims_rpc(pki, consent, E_GOOD, ["tax.in_arrears == false"], request_id="v-1"), timeout=TIMEOUT
        )
        revocation, binding = revocation_for(pki, consent)
        resp = stub.UpdateConsentStatus(
            agent_pb2.UpdateConsentStatusRequest(revocation=revocation, enterprise_binding=binding), timeout=TIMEOUT
        )
        assert resp.state == common_pb2.CONSENT_STATE_REVOKED
        forged = agent_pb2.UpdateConsentStatusRequest(
            revocation=revocation, enterprise_binding=pki.enterprise(E_POOR).binding.signed
        )
        assert refused(stub.UpdateConsentStatus, forged) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_DENIED")
        after = claims_rpc(pki, consent, E_GOOD, ["tax.in_arrears == false"], request_id="v-2")
        assert refused(stub.EvaluateClaims, after) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_REVOKED")


@pytest.mark.parametrize(("role", "party"), [("institution", "bank-a"), ("provider", "electricity")])
def test_only_the_node_may_call(
    pki: Pki, catalog: Catalog, running: RunningAgent, tmp_path: Path, role: str, party: str
) -> None:
    import_tax(running, catalog, tmp_path)
    consent = signed_consent(pki, catalog, E_GOOD)
    with channel_as(pki, running, role, party) as ch:
        stub = agent_stub(ch)
        req = claims_rpc(pki, consent, E_GOOD, ["tax.in_arrears == false"], request_id=f"x-{party}")
        assert refused(stub.EvaluateClaims, req) == (grpc.StatusCode.PERMISSION_DENIED, "CALLER_NOT_ALLOWED")
        assert refused(stub.GetAgentInfo, agent_pb2.GetAgentInfoRequest()) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_NOT_ALLOWED",
        )
    # The refused call did not consume the request id: the node can still use it.
    with channel_as(pki, running, "node", "node") as ch:
        stub = agent_stub(ch)
        stub.EvaluateClaims(req, timeout=TIMEOUT)


def test_node_id_is_pinned(pki: Pki, catalog: Catalog, tmp_path: Path) -> None:
    """A node certificate with another id is refused like any other caller."""
    setup = load_agent(write_config(tmp_path, pki, node_id="node-prod"))
    agent = start_agent(setup)
    try:
        with channel_as(pki, agent, "node", "node") as ch:
            stub = agent_stub(ch)
            assert refused(stub.GetAgentInfo, agent_pb2.GetAgentInfoRequest()) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "CALLER_NOT_ALLOWED",
            )
    finally:
        agent.stop(grace=0.5)


def test_serve_cli_port_file_and_sigterm(pki: Pki, catalog: Catalog, tmp_path: Path) -> None:
    """The real `xinrong agent serve` process: port file, health, graceful SIGTERM."""
    config = write_config(tmp_path, pki)
    port_file = tmp_path / "agent.port"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    imp = subprocess.run(
        [
            sys.executable,
            "-m",
            "xinrong.tools.cli",
            "agent",
            "import",
            "--config",
            str(config),
            "--csv",
            str(write_csv(tmp_path / "tax.csv", TAX_HEADER, tax_rows())),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert imp.returncode == 0, imp.stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xinrong.tools.cli",
            "agent",
            "serve",
            "--config",
            str(config),
            "--port-file",
            str(port_file),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        with secure_channel(f"127.0.0.1:{port}", pki.node, server_role="provider", server_id="tax") as ch:
            wait_healthy(ch, timeout=10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
