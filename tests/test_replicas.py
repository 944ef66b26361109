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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from xinrong.bank.client import BankClient
from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.v1 import node_pb2

from support.node_fakes import ACME, grant, register, revocation, verify_request
from support.pki import Pki
from support.replicas import Replicas

pytestmark = pytest.mark.e2e


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
