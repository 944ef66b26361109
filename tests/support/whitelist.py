"""Financing demands and the whitelist driven in process: evaluation periods, matching consents, demands, pushes.

Shared by the whitelist tests on SQLite (test_whitelist) and on PostgreSQL (test_push_pg)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from xinrong import uscc as uscc_mod
from xinrong.bank.push_client import PushClient, ReceivedEvent, Subscription
from xinrong.catalog import Catalog
from xinrong.consent import build_consent, parse_scope, sign_consent
from xinrong.enterprise.demand_client import DemandClient
from xinrong.index import default_index
from xinrong.node.evaluation import EvaluationStore
from xinrong.v1 import common_pb2, demand_pb2

from support.node_fakes import NodeHarness

GOOD = uscc_mod.make("9", "1", "130102", "MA0GD001")  # grade AA
LOW = uscc_mod.make("9", "1", "130602", "MA0LW002")  # grade BB: below the threshold (A)
HIDDEN = uscc_mod.make("9", "1", "130102", "MA0HD003")  # grade AAA, does not show its grade


def store_evaluation(harness: NodeHarness, scores: dict[str, int], period: str = "2026-11") -> None:
    """Results of a period, stored as the evaluation run stores them."""
    index = default_index()
    names = sorted(scores)
    EvaluationStore(harness.workdir / "evaluations").save(
        {
            "period": period,
            "evaluation_id": f"ev-{period}",
            "index_version": index.version,
            "index_sha256": index.sha256,
            "evaluated_at": int(time.time()),
            "enterprises": len(names),
            "evaluated": len(names),
            "grades": [g.name for g in index.grades],
            "grade_min_scores": [g.min_score for g in index.grades],
        },
        np.array([n.encode() for n in names], dtype="S18"),
        np.array([scores[n] for n in names], dtype=np.int64),
    )


def matching_consent(pki: Any, catalog: Catalog, enterprise: str, grantee: str, **kw: Any) -> common_pb2.SignedConsent:
    """A consent for ``grantee`` to match on the enterprise's credit grade, valid for 30 days."""
    now = int(time.time())
    creds = pki.enterprise(enterprise)
    consent = build_consent(
        enterprise_uscc=enterprise,
        enterprise_key_id=creds.signing_key.key_id,
        grantee_id=grantee,
        purpose=kw.get("purpose", "matching"),
        scope=parse_scope(catalog, ["tax.credit_grade"]),
        data_period_from="2026-01-01",
        data_period_to="2026-12-31",
        valid_from=now - 60,
        valid_until=now + 30 * 86400,
        max_uses=100,
    )
    return sign_consent(consent, creds.signing_key, creds.binding.signed)


def demand_client(harness: NodeHarness, enterprise: str) -> DemandClient:
    """The enterprise's demand client on the harness node."""
    assert harness.node is not None
    return DemandClient(f"127.0.0.1:{harness.node.port}", harness.pki.enterprise(enterprise))


def whitelist_events(harness: NodeHarness, bank: str) -> list[ReceivedEvent]:
    """Every ``whitelist`` event the node has for ``bank`` so far."""
    assert harness.node is not None
    with PushClient(f"127.0.0.1:{harness.node.port}", harness.pki.institution(bank)) as client:
        return list(client.events(Subscription(topics=("whitelist",))))


def register_demand(
    harness: NodeHarness,
    catalog: Catalog,
    enterprise: str,
    banks: tuple[str, ...],
    *,
    show_grade: bool = True,
    industry: str = "C3011",
) -> tuple[demand_pb2.RegisterDemandResponse, list[common_pb2.SignedConsent]]:
    """Register a demand with one matching consent per bank; the node's answer and the consents."""
    consents = [matching_consent(harness.pki, catalog, enterprise, b) for b in banks]
    with demand_client(harness, enterprise) as client:
        signed = client.sign(
            amount_yuan=3_000_000,
            term_months=12,
            purpose="working capital for an export order",
            region=enterprise[2:8],
            industry=industry,
            consents=consents,
            show_grade=show_grade,
        )
        return client.register(signed, consents), consents


def cid_of(signed: common_pb2.SignedConsent) -> str:
    """The consent id inside a signed consent."""
    return common_pb2.Consent.FromString(signed.consent).consent_id
