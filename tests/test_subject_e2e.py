"""Subject rights end to end with real processes on 127.0.0.1 (node and two agents started
through the CLI): the enterprise reads its data, objects (the bank sees DISPUTED until the
provider resolves with `xinrong agent objections resolve`), applies for repair (approved with
`xinrong agent repairs approve`: the negative claim answers NO_DATA), pauses (bank refused)
and resumes; a forged request for another enterprise is refused; the node stores and logs no
raw value of the own-data answers."""

from __future__ import annotations

import csv
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from xinrong import subject as subj
from xinrong.keys.layout import party_dir
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.tools.localnet import LocalPlatform, deploy, generate_data
from xinrong.tools.procs import ProcessGroup
from xinrong.tools.subject_demo import play_subject_rights
from xinrong.v1 import subject_pb2, subject_pb2_grpc

pytestmark = pytest.mark.e2e

AS_OF = "2026-09-30"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalPlatform, dict[str, dict[str, str]]]]:
    workdir = tmp_path_factory.mktemp("subject-e2e")
    data = workdir / "data"
    generate_data(data, enterprises=300, seed=11, as_of=AS_OF)
    with open(data / "tax.csv", newline="") as fh:
        tax = {row["uscc"]: row for row in csv.DictReader(fh)}
    with ProcessGroup(workdir) as group:
        plat = deploy(
            workdir,
            providers=["tax", "social_insurance"],
            institutions=["bank-a"],
            data_dir=data,
            group=group,
            verbose=True,
        )
        yield plat, tax


def test_the_enterprises_rights_with_real_processes(
    platform: tuple[LocalPlatform, dict[str, dict[str, str]]],
) -> None:
    plat, tax = platform
    tally = play_subject_rights(plat, tax, AS_OF, say=lambda _t: None)
    assert tally.problems == []
    assert tally.summary() == {"objections_resolved": 1, "repairs_applied": 1, "paused_refused": 1}
    assert tally.fields_seen >= 10

    # The provider's listing shows both cases, closed, with none overdue.
    listing = plat.group.run_cli(["agent", "objections", "list", "--config", str(plat.agent_configs["tax"]), "--json"])
    assert listing.returncode == 0, listing.stderr
    doc = json.loads(listing.stdout)
    assert [c["state"] for c in doc["cases"]] == ["rejected"] and doc["overdue"] == 0

    # The enterprise sees the history with its CLI.
    code = sorted(u for u, row in tax.items() if row.get("in_arrears") == "true" and row.get("credit_grade"))[-1]
    creds_dir = str(party_dir(plat.keys_dir, "enterprise", code))
    shown = plat.group.run_cli(
        ["enterprise", "repairs", "list", "--credentials", creds_dir, "--node", plat.node_address, "--json"]
    )
    assert shown.returncode == 0, shown.stderr
    repairs = json.loads(shown.stdout)["cases"]
    assert [(c["field"], c["state"]) for c in repairs] == [("tax.in_arrears", "approved")]
    assert [h["state"] for h in repairs[0]["history"]] == ["open", "approved"]
    consents = json.loads(
        plat.group.run_cli(
            ["enterprise", "consents", "list", "--credentials", creds_dir, "--node", plat.node_address, "--json"]
        ).stdout
    )["consents"]
    assert [c["state"] for c in consents] == ["active"] and consents[0]["uses"] >= 5

    # Attacker: another enterprise's certificate, a query naming the victim.
    victim, attacker = code, sorted(tax)[0]
    creds = plat.enterprise(attacker)
    forged = subject_pb2.SubjectQuery(
        request_id=str(uuid.uuid4()), enterprise_uscc=victim, requested_at=int(time.time()), nonce=b"n" * 16
    )
    raw = forged.SerializeToString(deterministic=True)
    with secure_channel(plat.node_address, creds, server_role="node", server_id="node") as channel:
        stub = subject_pb2_grpc.SubjectServiceStub(channel)
        for binding in (creds.binding.signed, plat.enterprise(victim).binding.signed):
            with pytest.raises(Exception) as info:
                stub.GetMyData(
                    subject_pb2.GetMyDataRequest(
                        query=subject_pb2.SignedSubjectQuery(
                            query=raw, signature=creds.signing_key.sign(subj.QUERY_CONTEXT, raw)
                        ),
                        enterprise_binding=binding,
                    ),
                    timeout=10,
                )
            assert decode_rpc_error(info.value).reason == "ACCESS_DENIED"  # type: ignore[arg-type]

    # Must-never-see: no raw value of the victim's own-data answers in the node's state or log.
    row = tax[victim]
    values = [v for k, v in row.items() if k not in ("uscc", "as_of") and len(v) >= 6 and not v.isalpha()]
    assert values, "the scan needs something to look for"
    blob = b"".join(p.read_bytes() for p in Path(plat.workdir / "state").glob("node.db*"))
    blob += (plat.workdir / "logs" / "node.log").read_bytes()
    for value in values:
        assert value.encode() not in blob, f"raw value {value!r} at the node"
    assert b"arrears paid in full" not in blob  # the repair statement was sealed to the provider
