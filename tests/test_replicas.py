"""Two node processes (replicas) on one real PostgreSQL: invariants hold across them.

* an adversarial double-spend: the same consent's last use raced through both
  replicas, 100 times, is admitted exactly once each time;
* a revocation at one replica is enforced at the other at once;
* one audit log, in one order, that ``xinrong node audit verify`` accepts,
  with one ALLOWED entry per counted use;
* the bank SDK given both addresses keeps working when one replica is killed
  (only the calls it had in flight may fail).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.bank.client import BankClient
from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.keys.layout import party_dir
from xinrong.node.config import render_config
from xinrong.rpc.channel import secure_channel, wait_healthy
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import node_pb2, node_pb2_grpc

from support.node_fakes import ACME, AgentHandle, grant, register, revocation, start_agent, verify_request
from support.pg import database_table
from support.pki import Pki

pytestmark = pytest.mark.e2e


@dataclass
class Replicas:
    group: ProcessGroup
    ports: list[int]
    configs: list[Path]
    agent: AgentHandle

    def stub(self, pki: Pki, i: int, who: str = "bank-a", role: str = "institution") -> Any:
        channel = secure_channel(
            f"127.0.0.1:{self.ports[i]}", pki.party(role, who), server_role="node", server_id="node"
        )
        return node_pb2_grpc.NodeServiceStub(channel)


@pytest.fixture
def replicas(pki: Pki, catalog: Catalog, pg_cluster: Any, tmp_path: Path) -> Iterator[Replicas]:
    table = database_table(pg_cluster, pool_size=4)
    agent = start_agent(pki, catalog, "tax")
    root = pki.root
    group = ProcessGroup(tmp_path)
    configs: list[Path] = []
    try:
        for i in range(2):
            config = tmp_path / f"node{i}.toml"
            config.write_text(
                render_config(
                    bind="127.0.0.1:0",
                    credentials=party_dir(root, "node", "node"),
                    ca_cert=root / "ca" / "ca.crt",
                    db=tmp_path / "unused.db",
                    providers=[("tax", agent.address, party_dir(root, "provider", "tax") / "binding.pb")],
                    institutions=[(b, party_dir(root, "institution", b) / "binding.pb") for b in ("bank-a", "bank-b")],
                    database=table,
                    enterprise_daily_budget=1_000_000,  # the load below outruns any smaller day on a quiet machine
                )
            )
            configs.append(config)
            port_file = tmp_path / f"node{i}.port"
            group.start(
                f"node{i}",
                ["node", "serve", "--config", str(config), "--port-file", str(port_file)],
                port_file=port_file,
            )
        ports = [group.wait_port(f"node{i}") for i in range(2)]
        for port in ports:
            with secure_channel(
                f"127.0.0.1:{port}", pki.institution("bank-a"), server_role="node", server_id="node"
            ) as ch:
                wait_healthy(ch, timeout=30)
        yield Replicas(group, ports, configs, agent)
    finally:
        group.stop_all()
        agent.stop()


def _outcome(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as err:
        return decode_rpc_error(err).reason
    return "ok"


def test_the_last_use_raced_through_both_replicas_is_admitted_once(
    replicas: Replicas, pki: Pki, catalog: Catalog
) -> None:
    stubs = [replicas.stub(pki, 0), replicas.stub(pki, 1)]
    rounds = 100
    consents = [grant(pki, catalog, max_uses=1) for _ in range(rounds)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda c: register(stubs[consents.index(c) % 2], c), consents))
    wins: list[list[str]] = []
    start = threading.Barrier(2)

    def race(consent: Any, i: int) -> str:
        req = verify_request(consent)
        start.wait()
        return _outcome(lambda: stubs[i].Verify(req, timeout=10))

    with ThreadPoolExecutor(2) as pool:
        for consent in consents:
            wins.append(list(pool.map(race, [consent, consent], [0, 1])))
    for outcome in wins:
        assert sorted(outcome) == [Reason.CONSENT_USES_EXHAUSTED.value, "ok"], outcome
    assert sum(o.count("ok") for o in wins) == rounds
    # Both replicas wrote one audit log: it verifies, and ALLOWED entries equal the uses counted.
    time.sleep(0.3)  # a sequencer tick
    check = subprocess.run(
        [sys.executable, "-m", "xinrong.tools.cli", "node", "audit", "verify", "--config", str(replicas.configs[1])],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0 and "audit chain OK" in check.stdout, check.stdout + check.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "xinrong.tools.cli", "node", "consents", "list", "--config", str(replicas.configs[0])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert listed.stdout.count('"uses": 1') == rounds
    tail = subprocess.run(
        [
            *(sys.executable, "-m", "xinrong.tools.cli", "node", "audit", "tail"),
            *("--config", str(replicas.configs[0]), "-n", "1000"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    allowed = [line for line in tail.stdout.splitlines() if '"decision": "ALLOWED"' in line and '"Verify"' in line]
    assert len(allowed) == rounds


def test_a_revocation_at_one_replica_holds_at_the_other(replicas: Replicas, pki: Pki, catalog: Catalog) -> None:
    a, b = replicas.stub(pki, 0), replicas.stub(pki, 1)
    consent = grant(pki, catalog, max_uses=10)
    register(a, consent)
    b.Verify(verify_request(consent), timeout=10)  # known to replica b (cached)
    ent = replicas.stub(pki, 0, ACME, "enterprise")
    pki.enterprise(ACME)
    ent.RevokeConsent(node_pb2.RevokeConsentRequest(revocation=revocation(pki, consent)), timeout=10)
    assert _outcome(lambda: b.Verify(verify_request(consent), timeout=10)) == Reason.CONSENT_REVOKED.value
    status = b.GetConsentStatus(node_pb2.GetConsentStatusRequest(consent_id=consent_id(consent)), timeout=10)
    assert (status.state, status.uses) == (3, 1)
    # Request ids are per caller across replicas too: a replay at the other replica is refused.
    other = grant(pki, catalog, max_uses=10)
    register(b, other)
    req = verify_request(other)
    a.Verify(req, timeout=10)
    assert _outcome(lambda: b.Verify(req, timeout=10)) == Reason.REQUEST_REPLAYED.value


def consent_id(consent: Any) -> str:
    from support.node_fakes import consent_id_of

    return consent_id_of(consent)


def test_the_bank_sdk_rides_out_a_replica_killed_mid_load(replicas: Replicas, pki: Pki, catalog: Catalog) -> None:
    consent = grant(pki, catalog, max_uses=100_000)
    addresses = [f"127.0.0.1:{p}" for p in replicas.ports]
    with BankClient(addresses, pki.institution("bank-a"), catalog=catalog, timeout=10) as bank:
        bank.register_consent(consent)
        bank.refresh_providers()
        cid = consent_id(consent)
        failures: list[str] = []
        done = 0
        stop = threading.Event()

        def load() -> None:
            nonlocal done
            while not stop.is_set():
                try:
                    bank.verify(ACME, ["tax.credit_grade in A,B"], cid, request_id=str(uuid.uuid4()))
                    done += 1
                except RemoteError as exc:
                    failures.append(exc.reason or exc.code.name)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        time.sleep(1.0)
        before = done
        replicas.group.kill("node1")
        time.sleep(2.0)
        stop.set()
        for w in workers:
            w.join(timeout=30)
    assert before > 0 and done > before + 20, (before, done, failures)
    # Only the calls in flight at the killed replica (at most one per worker) may fail.
    assert len(failures) <= 4, failures
