"""The state databases of node and agent: private files (D3), read-only
directories (A8), a write lock held from outside (A7) and request ids per
institution at the agent (A14). Each test here failed before its fix."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from xinrong.catalog import Catalog
from xinrong.claims import parse_claim
from xinrong.errors import Reason, StoreUnavailable
from xinrong.node.db import Database
from xinrong.provider_agent.config import load_agent
from xinrong.provider_agent.importer import import_csv
from xinrong.provider_agent.server import RunningAgent, start_agent
from xinrong.provider_agent.store import AnswerLogEntry, DataStore, StateStore
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.v1 import agent_pb2, agent_pb2_grpc

from support.agent import E_GOOD, TAX_HEADER, signed_consent, tax_rows, write_config, write_csv
from support.node_fakes import grant, register, verify_request
from support.pki import Pki

TIMEOUT = 10.0


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _cli(
    args: Sequence[str], *, read_only: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``xinrong ARGS``; with ``read_only``, that directory is a read-only mount for the process.

    Root ignores permission bits, so as root the directory is bind-mounted
    read-only in a private mount namespace (EROFS, what a read-only volume
    gives); otherwise it is made 0555.
    """
    cmd = [sys.executable, "-m", "xinrong.tools.cli", *args]
    if read_only is not None:
        if os.geteuid() == 0:
            if shutil.which("unshare") is None:
                pytest.skip("unshare is needed to give root a read-only directory")
            d = str(read_only)
            cmd = ["unshare", "--mount", "sh", "-c", f'mount --bind -o ro "{d}" "{d}" && exec "$@"', "sh", *cmd]
        else:
            read_only.chmod(0o555)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    finally:
        if read_only is not None and os.geteuid() != 0:
            read_only.chmod(0o755)
    if read_only is not None and "mount" in done.stderr and "permission denied" in done.stderr.lower():
        pytest.skip("this sandbox does not allow a private read-only mount")
    return done


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


# -- D3: private files -------------------------------------------------------------


def test_node_database_and_its_wal_are_created_private_and_refused_when_not(tmp_path: Path) -> None:
    db = Database(tmp_path / "node.db")
    with db.transaction(durable=False) as tx:
        tx.execute("INSERT INTO enterprise_daily_uses VALUES ('E', 1, 1)")
    db.wait_durable(tx.token)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("node.db")]
    assert {p.name for p in files} >= {"node.db", "node.db-wal", "node.db-shm"}
    assert all(_mode(p) == 0o600 for p in files), {p.name: oct(_mode(p)) for p in files}
    db.close()
    for name in ("node.db", "node.db-wal"):
        target = tmp_path / name
        if not target.exists():
            target.write_bytes(b"")
        target.chmod(0o644)
        with pytest.raises(StoreUnavailable, match=rf"{name} is accessible to group or others \(mode 0644\)"):
            Database(tmp_path / "node.db")
        target.chmod(0o600)


def test_agent_stores_are_created_private_and_refused_when_not(tmp_path: Path) -> None:
    data = DataStore(tmp_path / "state" / "tax.db", "tax")
    state = StateStore(tmp_path / "state" / "tax.state.db", "tax")
    data.close()
    state.close()
    created = sorted(p for p in (tmp_path / "state").iterdir())
    assert created and all(_mode(p) == 0o600 for p in created), {p.name: oct(_mode(p)) for p in created}
    (tmp_path / "state" / "tax.db").chmod(0o640)
    with pytest.raises(StoreUnavailable, match="accessible to group or others"):
        DataStore(tmp_path / "state" / "tax.db", "tax")
    shm = tmp_path / "state" / "tax.state.db-shm"
    shm.write_bytes(b"")
    shm.chmod(0o604)
    with pytest.raises(StoreUnavailable, match=r"tax\.state\.db-shm is accessible"):
        StateStore(tmp_path / "state" / "tax.state.db", "tax")


def test_a_world_readable_node_database_refuses_start_up_with_one_line(
    make_harness: Any, pki: Pki, catalog: Catalog
) -> None:
    h = make_harness(["tax"])
    h.stop()
    h.db_path.chmod(0o644)
    line = _one_line(_cli(["node", "serve", "--config", str(h.write_config())]))
    assert f"{h.db_path} is accessible to group or others (mode 0644)" in line and "chmod 600" in line


# -- A8: read-only state directory ------------------------------------------------


def test_node_on_a_read_only_state_directory_refuses_with_one_line(make_harness: Any) -> None:
    h = make_harness(["tax"], start=False)
    config = h.write_config()
    line = _one_line(_cli(["node", "serve", "--config", str(config)], read_only=h.workdir))
    assert "node database" in line and str(h.workdir) in line
    assert "read-only file system" in line or "not writable" in line
    # The same once a database exists (the WAL and SHM need writing too).
    h.start()
    h.stop()
    line = _one_line(_cli(["node", "serve", "--config", str(config)], read_only=h.workdir))
    assert "read-only file system" in line or "not writable" in line


def test_agent_on_a_read_only_state_directory_refuses_with_one_line(pki: Pki, tmp_path: Path) -> None:
    config = write_config(tmp_path, pki)
    state = tmp_path / "state"
    state.mkdir()
    line = _one_line(_cli(["agent", "serve", "--config", str(config)], read_only=state))
    assert "agent data store" in line and ("read-only file system" in line or "not writable" in line)


@pytest.fixture
def running(pki: Pki, tmp_path: Path, catalog: Catalog) -> Iterator[RunningAgent]:
    agent = start_agent(load_agent(write_config(tmp_path, pki)), poll_seconds=0.05)
    store = DataStore(agent.data.path, "tax")
    try:
        import_csv(store, catalog, "tax", write_csv(tmp_path / "tax.csv", TAX_HEADER, tax_rows()))
    finally:
        store.close()
    yield agent
    agent.stop(grace=0.5)


def _health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT).status)


def _wait_health(channel: grpc.Channel, status: int) -> None:
    deadline = time.monotonic() + 10
    while _health(channel) != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(0.05)


def test_an_agent_whose_state_store_stops_taking_writes_is_not_serving(
    pki: Pki, catalog: Catalog, running: RunningAgent
) -> None:
    """A8: it answered SERVING and INTERNAL to every evaluation; now UNAVAILABLE and NOT_SERVING."""
    consent = signed_consent(pki, catalog, E_GOOD)

    def ask(request_id: str) -> agent_pb2.EvaluateClaimsRequest:
        return agent_pb2.EvaluateClaimsRequest(
            request_id=request_id,
            requested_at=int(time.time()),
            enterprise_uscc=E_GOOD,
            consent=consent,
            audience_binding=pki.institution("bank-a").binding.signed,
            claims=[parse_claim("tax.in_arrears == false")],
        )

    with secure_channel(f"127.0.0.1:{running.port}", pki.node, server_role="provider", server_id="tax") as ch:
        _wait_health(ch, health_pb2.HealthCheckResponse.SERVING)
        stub = agent_pb2_grpc.AgentServiceStub(ch)
        stub.EvaluateClaims(ask("r-1"), timeout=TIMEOUT)
        running.state._conn.execute("PRAGMA query_only=1")  # what a read-only remount does to SQLite's writes
        with pytest.raises(grpc.RpcError) as info:
            stub.EvaluateClaims(ask("r-2"), timeout=TIMEOUT)
        remote = decode_rpc_error(info.value)
        assert (remote.code, remote.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.STORE_UNAVAILABLE.value)
        _wait_health(ch, health_pb2.HealthCheckResponse.NOT_SERVING)
        running.state._conn.execute("PRAGMA query_only=0")
        _wait_health(ch, health_pb2.HealthCheckResponse.SERVING)
        stub.EvaluateClaims(ask("r-2"), timeout=TIMEOUT)


# -- A14 at the agent: request ids per institution ----------------------------------


def test_agent_request_ids_are_per_institution_and_old_ids_still_count(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    # A state store of schema 1, as the previous agent wrote it, holding one id.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("schema", "1"), ("kind", "state"), ("provider", "tax")])
    conn.execute(
        "CREATE TABLE seen_requests (request_id TEXT PRIMARY KEY, requested_at INTEGER NOT NULL, "
        "seen_at INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("CREATE INDEX seen_requests_by_time ON seen_requests(requested_at)")
    for ddl in (
        "CREATE TABLE consent_uses (consent_id TEXT PRIMARY KEY, uses INTEGER NOT NULL, day INTEGER NOT NULL, "
        "day_uses INTEGER NOT NULL, last_used_at INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE revocations (consent_id TEXT NOT NULL, enterprise_uscc TEXT NOT NULL, revoked_at INTEGER "
        "NOT NULL, received_at INTEGER NOT NULL, revocation BLOB NOT NULL, signature BLOB NOT NULL, "
        "enterprise_binding BLOB NOT NULL, PRIMARY KEY (consent_id, enterprise_uscc)) WITHOUT ROWID",
        "CREATE TABLE answer_log (id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, kind TEXT NOT NULL, "
        "consent_id TEXT NOT NULL, enterprise_uscc TEXT NOT NULL, audience TEXT NOT NULL, fields TEXT NOT NULL, "
        "data_as_of TEXT NOT NULL, answer_sha256 TEXT NOT NULL, sealed_sha256 TEXT NOT NULL, "
        "issued_at INTEGER NOT NULL)",
    ):
        conn.execute(ddl)
    now = 1_800_000_000
    conn.execute("INSERT INTO seen_requests VALUES ('old', ?, ?)", (now, now))
    conn.close()
    path.chmod(0o600)
    store = StateStore(path, "tax")

    def outcome(audience: str, request_id: str) -> str:
        with store.request(
            audience=audience,
            request_id=request_id,
            requested_at=now,
            consent_id="c",
            max_uses=100,
            max_uses_per_day=0,
            now=now,
        ) as txn:
            return txn.outcome.value

    assert outcome("bank-b", "old") == "replayed"  # recorded before the scoping: every institution
    assert outcome("bank-a", "r-1") == "admitted"
    with store.request(
        audience="bank-a", request_id="r-1", requested_at=now, consent_id="c", max_uses=100, max_uses_per_day=0, now=now
    ) as txn:
        txn.record(AnswerLogEntry("r-1", "claims", "c", "E", "bank-a", (), "", (), "", now))
    assert outcome("bank-a", "r-1") == "replayed"
    assert outcome("bank-b", "r-1") == "admitted"  # another institution's id is no oracle
    assert store.prune_seen(now + 1) == 2
    assert outcome("bank-b", "old") == "admitted"
    store.close()


# -- A7: a write lock held by another process ---------------------------------------


def test_a_write_lock_from_outside_fails_fast_and_leaves_the_loop_free(
    make_harness: Any, pki: Pki, catalog: Catalog
) -> None:
    h = make_harness(["tax"])
    consent = grant(pki, catalog)
    bank = h.bank()
    register(bank, consent)
    bank.Verify(verify_request(consent), timeout=10)
    holder = sqlite3.connect(h.db_path, isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")  # an operator's shell holding the write lock
    try:
        with pytest.raises(grpc.RpcError) as info:
            bank.Verify(verify_request(consent), timeout=3)
        remote = decode_rpc_error(info.value)
        assert (remote.code, remote.reason) == (grpc.StatusCode.UNAVAILABLE, Reason.STORE_UNAVAILABLE.value)
        assert node_health(h, timeout=1.0) == health_pb2.HealthCheckResponse.SERVING
        # A second node on the same, locked file refuses to start, with one line.
        line = _one_line(_cli(["node", "serve", "--config", str(h.config_path)]))
        assert "is locked by another process" in line and "refusing to start" in line
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    bank.Verify(verify_request(consent), timeout=10)


def node_health(h: Any, *, timeout: float) -> int:
    with secure_channel(
        f"127.0.0.1:{h.node.port}", h.pki.institution("bank-a"), server_role="node", server_id="node"
    ) as ch:
        resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return int(resp.status)
