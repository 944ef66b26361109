"""An agent's own Merkle log of what it answered, and the node's reconciliation with it."""

from __future__ import annotations

import copy
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from xinrong.catalog import Catalog
from xinrong.keys.layout import party_dir
from xinrong.node.audit import AuditEvent, Decision, HashChainAuditLog
from xinrong.node.db import Database
from xinrong.node.reconcile import ExportRejected, check_export, reconcile
from xinrong.provider_agent.store import answer_export
from xinrong.tlog.client import answers_origin
from xinrong.tlog.note import open_checkpoint

from support.agent import (
    E_GOOD,
    TAX_HEADER,
    AgentUnderTest,
    Clock,
    claims_request,
    import_rows,
    open_agent,
    signed_consent,
    tax_rows,
)
from support.pki import Pki


@pytest.fixture
def tax(pki: Pki, catalog: Catalog, tmp_path: Path) -> Iterator[AgentUnderTest]:
    t = open_agent(pki, catalog, tmp_path, "tax", Clock())
    import_rows(t, catalog, TAX_HEADER, tax_rows())
    yield t
    t.close()


def _answer(pki: Pki, catalog: Catalog, tax: AgentUnderTest) -> str:
    consent = signed_consent(pki, catalog, E_GOOD)
    req = claims_request(pki, consent, E_GOOD, ["tax.in_arrears == false"])
    tax.agent.evaluate_claims(req)
    return req.request_id


def _export(pki: Pki, tax: AgentUnderTest) -> dict[str, Any]:
    latest, entries = tax.state.answer_export()
    return {"provider": "tax", "checkpoint": latest.note if latest else "", "entries": entries}


def _node(tmp_path: Path, pki: Pki, admitted: list[tuple[str, Decision]]) -> tuple[Any, Any]:
    db = Database(tmp_path / "node.db")
    audit = HashChainAuditLog(db.query)
    for request_id, decision in admitted:
        with db.transaction() as tx:
            audit.append(
                tx,
                AuditEvent(
                    "institution",
                    "bank-a",
                    "Verify",
                    decision,
                    request_id=request_id,
                    enterprise=E_GOOD,
                    providers=("tax",),
                ),
                1,
            )
    db.close()
    config = SimpleNamespace(
        providers=[SimpleNamespace(name="tax", binding=party_dir(pki.root, "provider", "tax") / "binding.pb")],
        ca_cert=pki.root / "ca" / "ca.crt",
    )
    return sqlite3.connect(tmp_path / "node.db"), config


def test_the_agent_signs_its_answer_log_and_reconcile_finds_one_sided_entries(
    pki: Pki, catalog: Catalog, tax: AgentUnderTest, tmp_path: Path
) -> None:
    key = pki.provider("tax").signing_key
    origin = answers_origin(pki.provider("tax").party_id)
    answered = [_answer(pki, catalog, tax) for _ in range(3)]
    signed = tax.state.integrate_answers(origin, key, 1000)
    assert signed is not None and signed.size == 3
    assert open_checkpoint(signed.note, origin, key.public_raw).root == signed.root
    assert tax.state.integrate_answers(origin, key, 2000) is None  # nothing new: no new checkpoint
    extra = _answer(pki, catalog, tax)
    again = tax.state.integrate_answers(origin, key, 3000)
    assert again is not None and again.size == 4
    export = _export(pki, tax)
    assert [e["request_id"] for e in export["entries"]] == [*answered, extra]
    assert all("value" not in e and "answers" not in e for e in export["entries"])

    # Node: three admitted and answered, one admitted and not answered, one admitted, failed and not answered.
    conn, config = _node(
        tmp_path,
        pki,
        [(r, Decision.ALLOWED) for r in answered]
        + [("lost", Decision.ALLOWED), ("gone", Decision.ALLOWED), ("gone", Decision.FAILED)],
    )
    report = reconcile(conn, config, [export])
    assert report.matched == 3 and report.failed_explained == 1
    assert [d["request_id"] for d in report.node_only] == ["lost"]
    assert [d["request_id"] for d in report.agent_only] == [extra]  # answered with no admission at the node
    assert report.mismatches == 2
    conn.close()

    # An export that is not exactly the agent's signed log is refused.
    edited = copy.deepcopy(export)
    edited["entries"][1]["audience"] = "bank-b"
    with pytest.raises(ExportRejected):
        check_export(config, edited)
    short = copy.deepcopy(export)
    short["entries"].pop()
    with pytest.raises(ExportRejected):
        check_export(config, short)
    with sqlite3.connect(tax.state.path) as raw:
        assert answer_export(raw)[0] is not None
