"""Access institutions end to end, real processes: ``xinrong node institutions add`` onboards a
bank at run time (no config edit, no restart) and the new bank verifies a claim with an
enterprise's consent; a rate limit and a suspension refuse it; the CLI lists and counts. And
two node processes on one PostgreSQL: a suspension, a resumption and an onboarding through one
replica's CLI hold at the other within a second and a half."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.rpc.errors import decode_rpc_error
from xinrong.tools.demo_institutions import play_institutions
from xinrong.tools.localnet import LocalPlatform, deploy, first_enterprise, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.v1 import node_pb2

from support.node_fakes import ACME, grant, register, verify_request
from support.pki import Pki
from support.replicas import Replicas

pytestmark = pytest.mark.e2e

AS_OF = "2026-09-30"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, Path]]:
    workdir = tmp_path_factory.mktemp("inst-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=200, seed=11, as_of=AS_OF)
    with ProcessGroup(workdir) as group:
        yield deploy(workdir, providers=["tax"], institutions=["bank-a"], data_dir=data, group=group), data


def _cli(plat: LocalPlatform, *args: str) -> list[dict[str, object]]:
    result = plat.group.run_cli(
        ["node", "institutions", *args, "--config", str(plat.node_config), "--address", plat.node_address, "--json"]
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_onboard_at_run_time_verify_quota_and_suspension(platform: tuple[LocalPlatform, Path]) -> None:
    plat, data = platform
    counters = play_institutions(plat, first_enterprise(data, "tax"), AS_OF, say=lambda _line: None)
    assert counters == {"suspended_refused": 1, "quota_refused": 1, "institutions_onboarded": 1}
    listed = {i["id"]: i for i in _cli(plat, "list")}
    assert listed["bank-a"]["source"] == "config" and listed["bank-c"]["source"] == "registered"
    assert listed["bank-c"]["status"] == "active"
    usage = _cli(plat, "usage", "--id", "bank-c")[0]
    assert usage["decision"] == {"ALLOWED": 3}  # the guard's refusals reach no admission, so no audit row
    assert usage["purpose"] == {"Verify": 3} and usage["provider"] == {"tax": 3}
    # The handed-over credentials directory holds the institution's keys.
    creds = plat.keys_dir / "institutions" / "bank-c"
    assert {"tls.key", "tls.crt", "signing.key", "sealing.key", "binding.pb", "ca.crt"} <= {
        p.name for p in creds.iterdir()
    }
    due = _cli(plat, "due", "--days", "30")
    assert {i["id"] for i in due} == {"bank-a", "bank-c"}  # never assessed
    assessed = _cli(
        plat, "assess", "--id", "bank-c", "--result", "pass", "--valid-until", "2099-01-01", "--assessor", "lab"
    )[0]
    assert assessed["assessment"]["result"] == "pass"  # type: ignore[index]
    assert {i["id"] for i in _cli(plat, "due", "--days", "30")} == {"bank-a"}


# -- two node processes on one PostgreSQL (the replicas fixture of tests/support/replicas.py) ----------


def _reason(call: object) -> str:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return decode_rpc_error(err).reason
    return "ok"


def _replica_cli(r: Replicas, i: int, *args: str) -> dict[str, object]:
    result = r.group.run_cli(
        [
            "node",
            "institutions",
            *args,
            "--config",
            str(r.configs[i]),
            "--address",
            f"127.0.0.1:{r.ports[i]}",
            "--json",
        ]
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return out


def test_suspend_at_one_replica_process_refuses_at_the_other(
    replicas: Replicas,
    pki: Pki,
    catalog: Catalog,
) -> None:
    stubs = [replicas.stub(pki, 0), replicas.stub(pki, 1)]
    consent = grant(pki, catalog, max_uses=1000)
    register(replicas.stub(pki, 0, ACME, "enterprise"), consent)
    assert _reason(lambda: stubs[1].Verify(verify_request(consent), timeout=10)) == "ok"
    _replica_cli(replicas, 0, "suspend", "--id", "bank-a", "--reason", "e2e")
    started = time.monotonic()
    while _reason(lambda: stubs[1].Verify(verify_request(consent), timeout=10)) != "INSTITUTION_SUSPENDED":
        assert time.monotonic() - started < 1.5
        time.sleep(0.02)
    assert _reason(lambda: stubs[1].ListParties(node_pb2.ListPartiesRequest(), timeout=10)) == "INSTITUTION_SUSPENDED"
    _replica_cli(replicas, 1, "resume", "--id", "bank-a")
    started = time.monotonic()
    while _reason(lambda: stubs[0].Verify(verify_request(consent), timeout=10)) != "ok":
        assert time.monotonic() - started < 1.5
        time.sleep(0.02)
    # Onboarded through replica 0's CLI, admitted by replica 1.
    added = _replica_cli(
        replicas, 0, "add", "--keys", str(pki.root), "--id", "bank-e2e", "--type", "guarantor", "--force"
    )
    assert added["type"] == "guarantor" and added["status"] == "active"
    consent_e = grant(pki, catalog, grantee="bank-e2e")
    started = time.monotonic()
    while _reason(lambda: register(replicas.stub(pki, 1, ACME, "enterprise"), consent_e)) != "ok":
        assert time.monotonic() - started < 1.5
        time.sleep(0.02)
    bank_e = replicas.stub(pki, 1, "bank-e2e")
    assert _reason(lambda: bank_e.Verify(verify_request(consent_e), timeout=10)) == "ok"
