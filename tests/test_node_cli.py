"""``xinrong node``: serve as a real process (port file, health, graceful stop),
audit verify / tail and consents list."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.catalog import Catalog
from xinrong.rpc.channel import secure_channel, wait_healthy
from xinrong.tools.cli import main
from xinrong.v1 import node_pb2, node_pb2_grpc

from support.node_fakes import (
    consent_id_of,
    grant,
    register,
    verify_request,
)

REPO = Path(__file__).resolve().parents[1]


def xinrong_main(argv: list[str]) -> int:
    """``xinrong node ...`` in-process, through the real entry point's error handling
    (the serve test below runs the ``xinrong`` command in a subprocess)."""
    assert argv[0] == "node"
    return main(argv)


def test_audit_and_consent_tools(
    make_harness: Any, pki: Any, catalog: Catalog, capsys: pytest.CaptureFixture[str]
) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog, max_uses=4)
    register(h.bank(), consent)
    for _ in range(3):
        h.bank().Verify(verify_request(consent), timeout=10)
    config = str(h.config_path)

    assert xinrong_main(["node", "audit", "verify", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "4 entries" in out and h.node.core.audit.head()[1].hex() in out

    assert xinrong_main(["node", "audit", "tail", "--config", config, "-n", "2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [e["seq"] for e in lines] == [3, 4]
    assert all(e["method"] == "Verify" and e["decision"] == "ALLOWED" for e in lines)

    assert xinrong_main(["node", "consents", "list", "--config", config]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed == [
        {
            "consent_id": consent_id_of(consent),
            "enterprise": listed[0]["enterprise"],
            "grantee": "bank-a",
            "state": "ACTIVE",
            "uses": 3,
            "max_uses": 4,
            "valid_until": listed[0]["valid_until"],
            "pending_revocation_pushes": [],
        }
    ]

    h.stop()
    conn = sqlite3.connect(h.db_path)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("UPDATE audit_log SET caller_id = 'bank-b' WHERE seq = 2")
    conn.commit()
    conn.close()
    assert xinrong_main(["node", "audit", "verify", "--config", config]) == 1
    assert "BROKEN at seq 2" in capsys.readouterr().err


def test_serve_as_a_process_with_port_file_health_and_graceful_stop(
    make_harness: Any, pki: Any, tmp_path: Path
) -> None:
    h = make_harness(["tax"], start=False)
    config = h.write_config()
    port_file = tmp_path / "run" / "node.port"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xinrong.tools.cli",
            "node",
            "serve",
            "--config",
            str(config),
            "--port-file",
            str(port_file),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        assert port > 0
        channel = secure_channel(f"127.0.0.1:{port}", pki.institution("bank-a"), server_role="node", server_id="node")
        try:
            wait_healthy(channel, service="xinrong.v1.NodeService", timeout=10)
            stub = node_pb2_grpc.NodeServiceStub(channel)
            assert stub.GetCatalog(node_pb2.GetCatalogRequest(), timeout=5).sha256
        finally:
            channel.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The chain it left behind verifies.
    assert xinrong_main(["node", "audit", "verify", "--config", str(config)]) == 0


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nbind = 'nowhere'\n")
    assert xinrong_main(["node", "serve", "--config", str(bad)]) == 2
    assert "not host:port" in capsys.readouterr().err
    assert xinrong_main(["node", "audit", "verify", "--config", str(tmp_path / "missing.toml")]) == 2


def test_health_is_serving_once_started(make_harness: Any, pki: Any) -> None:
    """start_node loads the database and registry before the server exists, so
    the first health answer a client can get is already SERVING."""
    h = make_harness(["tax"])
    channel = secure_channel(
        f"127.0.0.1:{h.node.port}", pki.institution("bank-a"), server_role="node", server_id="node"
    )
    try:
        first = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="xinrong.v1.NodeService"), timeout=5, wait_for_ready=True
        )
        assert first.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()
