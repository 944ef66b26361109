"""Operating a real node and agent: metrics scraped over HTTP after a Verify, and one
request followed through the JSON logs of both processes by its request id.

The agent gets metrics and JSON logs from its command-line flags, the node from
its config file's ``[metrics]`` and ``[logging]`` tables, so both ways are run.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from xinrong.bank.client import BankClient
from xinrong.consent import parse_consent
from xinrong.enterprise.client import ConsentRequest, EnterpriseClient, grant
from xinrong.keys.layout import load_party, party_dir
from xinrong.rpc.errors import RemoteError
from xinrong.tools.localnet import (
    LocalPlatform,
    first_enterprise,
    generate_data,
    provision_keys,
    write_agent_config,
    write_node_config,
)
from xinrong.tools.procs import ProcessGroup

pytestmark = pytest.mark.e2e

AS_OF = "2026-09-30"
PERIOD = ("2025-01-01", "2026-12-31")
VERIFY = "/xinrong.v1.NodeService/Verify"


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode("utf-8"))


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition text (labels in any order), or 0."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if head.split("{")[0] == name and all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return 0.0


def _json_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        if raw.startswith("{"):
            lines.append(json.loads(raw))  # every structured line must be valid JSON
    return lines


def _read_port(path: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(f"no port in {path}")


def test_metrics_and_json_logs_follow_one_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate_data(data, enterprises=100, seed=11, as_of=AS_OF)
    keys = tmp_path / "keys"
    provision_keys(keys, ["tax"], ["bank-a"])
    with ProcessGroup(tmp_path) as group:
        agent_config = write_agent_config(tmp_path, keys, "tax")
        imported = group.run_cli(["agent", "import", "--config", str(agent_config), "--csv", str(data / "tax.csv")])
        assert imported.returncode == 0, imported.stderr
        state = tmp_path / "state"
        agent_port_file, agent_metrics_file = state / "agent.port", state / "agent.metrics-port"
        group.start(
            "agent-tax",
            [
                "-vv",
                "agent",
                "serve",
                "--config",
                str(agent_config),
                "--port-file",
                str(agent_port_file),
                "--metrics-port",
                "0",
                "--metrics-port-file",
                str(agent_metrics_file),
                "--log-format",
                "json",
            ],
            port_file=agent_port_file,
        )
        agent_port = group.wait_port("agent-tax")
        node_config = write_node_config(tmp_path, keys, {"tax": agent_port}, ["bank-a"])
        with node_config.open("a") as fh:
            fh.write('\n[metrics]\nlisten = "127.0.0.1:0"\n\n[logging]\nformat = "json"\n')
        node_port_file, node_metrics_file = state / "node.port", state / "node.metrics-port"
        group.start(
            "node",
            [
                "-vv",
                "node",
                "serve",
                "--config",
                str(node_config),
                "--port-file",
                str(node_port_file),
                "--metrics-port-file",
                str(node_metrics_file),
            ],
            port_file=node_port_file,
        )
        plat = LocalPlatform(workdir=tmp_path, keys_dir=keys, group=group)
        plat.node_port = group.wait_port("node")
        plat.provider_ports = {"tax": agent_port}
        plat.wait_healthy()
        node_metrics, agent_metrics = _read_port(node_metrics_file), _read_port(agent_metrics_file)

        target = first_enterprise(data, "tax")
        creds = plat.enterprise(target)
        signed = grant(creds, ConsentRequest("bank-a", "loan_application", ("tax.*",), *PERIOD, max_uses=10))
        with EnterpriseClient(plat.node_address, creds) as ent:
            ent.register(signed)
        consent_id = parse_consent(signed).consent_id
        once = grant(creds, ConsentRequest("bank-a", "loan_application", ("tax.*",), *PERIOD, max_uses=1))
        with EnterpriseClient(plat.node_address, creds) as ent:
            ent.register(once)
        request_id = f"r-{uuid.uuid4()}"
        with BankClient(plat.node_address, load_party(party_dir(keys, "institution", "bank-a"))) as bank:
            # One answer, its signature checked by the client.
            (_verdict,) = bank.verify(target, ["tax.in_arrears == false"], consent_id, request_id=request_id)
            with pytest.raises(RemoteError) as refused:
                bank.verify(target, ["tax.in_arrears == false"], "no-such-consent")
            assert refused.value.code.name == "PERMISSION_DENIED"
            bank.verify(target, ["tax.in_arrears == false"], parse_consent(once).consent_id)
            with pytest.raises(RemoteError) as used_up:
                bank.verify(target, ["tax.in_arrears == false"], parse_consent(once).consent_id)
            assert used_up.value.reason == "CONSENT_USES_EXHAUSTED"

        node_text, agent_text = _scrape(node_metrics), _scrape(agent_metrics)
        assert _sample(node_text, "xinrong_rpc_requests_total", method=VERIFY, code="OK") >= 1
        assert _sample(node_text, "xinrong_rpc_requests_total", method=VERIFY, code="PERMISSION_DENIED") >= 1
        assert _sample(node_text, "xinrong_rpc_duration_seconds_count", method=VERIFY) >= 2
        assert _sample(node_text, "xinrong_node_admissions_total", purpose="verification", outcome="ALLOWED") >= 1
        assert _sample(node_text, "xinrong_node_admissions_total", purpose="verification", outcome="ACCESS_DENIED") >= 1
        assert _sample(node_text, "xinrong_node_budget_refusals_total", kind="consent_uses") == 1
        assert _sample(node_text, "xinrong_node_agent_up", provider="tax") == 1.0
        assert _sample(node_text, "xinrong_node_audit_entries") >= 2
        assert "xinrong_node_modeling_jobs" in node_text and "xinrong_node_agent_stream_queued" in node_text
        assert _sample(agent_text, "xinrong_stream_calls_total", method="EvaluateStream/claims", code="OK") >= 1
        assert _sample(agent_text, "xinrong_agent_serving") == 1.0
        assert "xinrong_agent_modeling_jobs 0.0" in agent_text
        assert _sample(agent_text, "xinrong_rpc_requests_total", code="OK") >= 1
        for text in (node_text, agent_text):
            for secret in (
                target,
                consent_id,
                parse_consent(once).consent_id,
                request_id,
                "in_arrears",
                "no-such-consent",
            ):
                assert secret not in text, f"{secret!r} appears in a metrics exposition"

        # A revocation: the node's RevokeConsent (a pool-thread handler) pushes it to the
        # agent with its request id in the x-request-id metadata.
        with EnterpriseClient(plat.node_address, creds) as ent:
            assert list(ent.revoke(consent_id).providers_notified) == ["tax"]

        # The agent down: the node's gauge says so on the next scrape.
        group.stop("agent-tax")
        assert _sample(_scrape(node_metrics), "xinrong_node_agent_up", provider="tax") == 0.0

        node_log, agent_log = group.parties["node"].log_path, tmp_path / "logs" / "agent-tax.log"
        node_lines = [line for line in _json_lines(node_log) if line.get("request_id") == request_id]
        access = [
            line for line in node_lines if line.get("logger") == "xinrong.access" and line.get("method") == VERIFY
        ]
        assert access, f"no access line for {request_id} in the node's log"
        line = access[0]
        assert line["status"] == "OK" and line["level"] == "DEBUG" and line["caller"] == "bank-a"
        assert {"time", "level", "logger", "request_id", "caller", "method", "status", "duration_ms"} <= set(line)
        agent_lines = [line for line in _json_lines(agent_log) if line.get("request_id") == request_id]
        assert any(line.get("status") == "OK" and line.get("caller") == "node" for line in agent_lines), agent_lines

        revoke = [
            line
            for line in _json_lines(node_log)
            if line.get("logger") == "xinrong.access" and line.get("method") == "/xinrong.v1.NodeService/RevokeConsent"
        ]
        assert len(revoke) == 1 and revoke[0]["status"] == "OK"
        pushed = [
            line
            for line in _json_lines(agent_log)
            if line.get("logger") == "xinrong.access"
            and line.get("method") == "/xinrong.v1.AgentService/UpdateConsentStatus"
        ]
        assert [line["request_id"] for line in pushed] == [revoke[0]["request_id"]]
