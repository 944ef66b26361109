"""Loan products end to end in process: real agents over mTLS, the node, the bank and enterprise SDKs.

* matching decides eligibility without raw data and agrees with the ground
  truth computed straight from the CSVs (matches_correct);
* the node's transcripts and stored rows hold no match bit and no failed-rule
  count: fixed-width ciphertexts and boxes of one length per product;
* the bank learns eligibility only through an application, verified offline;
  a differencing bank (products one rule apart) gets nothing at all for an
  enterprise that did not apply.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import grpc
import pytest

from xinrong.bank.products import BankProducts
from xinrong.catalog import Catalog, FieldType
from xinrong.claims import check_claim, evaluate, parse_claim
from xinrong.consent import build_consent, parse_scope, sign_consent
from xinrong.enterprise.products import EnterpriseProducts
from xinrong.errors import XinrongError
from xinrong.node.server import NodeServer
from xinrong.provider_agent import importer as agent_importer
from xinrong.provider_agent import store as agent_store
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError, decode_rpc_error
from xinrong.v1 import common_pb2, node_pb2, node_pb2_grpc, products_pb2, products_pb2_grpc

from support.matching_key import KEY_BITS, bank_key
from support.node_fakes import ACME, BETA
from support.platform import CSV, real_platform

P1 = ["tax.credit_grade in A,B", "social_insurance.in_arrears == false"]
P2 = [*P1, "tax.consecutive_normal_months >= 36"]  # one rule apart from P1
P3 = ["tax.in_arrears == true"]


def ground_truth(catalog: Catalog, enterprise: str, rules: list[str]) -> bool:
    """Eligibility straight from the CSVs: every rule holds (no value fails)."""
    for text in rules:
        checked = check_claim(catalog, parse_claim(text))
        spec = checked.spec
        rows = {r["uscc"]: r for r in csv.DictReader(io.StringIO(CSV[spec.provider]))}
        cell = rows.get(enterprise, {}).get(spec.column, "")
        value: Any = None
        if cell != "":
            if spec.type is FieldType.BOOL:
                value = cell == "true"
            elif spec.numeric:
                value = Decimal(cell)
            else:
                value = cell
        if evaluate(checked, value) is not True:
            return False
    return True


def matching_consent(pki: Any, catalog: Catalog, enterprise: str, grantee: str = "bank-a") -> common_pb2.SignedConsent:
    now = int(time.time())
    creds = pki.enterprise(enterprise)
    consent = build_consent(
        enterprise_uscc=enterprise,
        enterprise_key_id=creds.signing_key.key_id,
        grantee_id=grantee,
        purpose="matching",
        scope=parse_scope(catalog, ["tax.*", "social_insurance.*"]),
        data_period_from="2026-01-01",
        data_period_to="2026-12-31",
        valid_from=now - 60,
        valid_until=now + 3600,
        max_uses=100,
    )
    return sign_consent(consent, creds.signing_key, creds.binding.signed)


@pytest.fixture
def platform(pki: Any, catalog: Catalog, tmp_path: Path) -> Iterator[tuple[NodeServer, dict[str, Any]]]:
    with real_platform(pki, catalog, tmp_path, CSV) as running:
        yield running


@pytest.fixture
def desk(platform: tuple[NodeServer, dict[str, Any]]) -> Iterator[tuple[NodeServer, list[tuple[str, str, str, bytes]]]]:
    node, _agents = platform
    seen: list[tuple[str, str, str, bytes]] = []
    assert node.products is not None
    node.products.observer = lambda provider, way, method, data: seen.append((provider, way, method, data))
    yield node, seen


def _bank(node: NodeServer, pki: Any, tmp_path: Path, name: str = "bank-a") -> BankProducts:
    key_file = tmp_path / f"{name}-matching.json"
    if name == "bank-a" and not key_file.exists():
        bank_key().save(key_file)  # one 1024-bit key for the module: keygen is the slow part
    return BankProducts(f"127.0.0.1:{node.port}", pki.institution(name), key_file=key_file, key_bits=KEY_BITS)


def _publish(bank: BankProducts, product_id: str, rules: list[str]) -> None:
    bank.publish(
        product_id=product_id,
        name=f"loan {product_id}",
        category="working_capital",
        amount=(100_000, 2_000_000),
        term_months=(6, 36),
        rate_bps=(350, 650),
        regions=["130100"],
        rules=rules,
    )


def _register(node: NodeServer, pki: Any, enterprise: str, consent: common_pb2.SignedConsent) -> None:
    channel = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(enterprise), server_role="node", server_id="node")
    try:
        node_pb2_grpc.NodeServiceStub(channel).RegisterConsent(
            node_pb2.RegisterConsentRequest(consent=consent), timeout=10
        )
    finally:
        channel.close()


def test_match_apply_and_what_each_party_sees(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, seen = desk
    assert node.products is not None
    products = {"p1": P1, "p2": P2, "p3": P3}
    with _bank(node, pki, tmp_path) as bank:
        for pid, rules in products.items():
            _publish(bank, pid, rules)
        assert node.products.wait_idle()
        for enterprise in (ACME, BETA):
            _register(node, pki, enterprise, matching_consent(pki, catalog, enterprise))
        assert node.products.wait_idle()

        # The enterprise sees its own result and which of its rules failed.
        correct = total = 0
        for enterprise in (ACME, BETA):
            with EnterpriseProducts(f"127.0.0.1:{node.port}", pki.enterprise(enterprise)) as ent:
                assert {p["product_id"] for p in ent.products()} == set(products)
                matches = {m["product_id"]: m for m in ent.matches()}
            assert set(matches) == set(products)
            for pid, rules in products.items():
                m = matches[pid]
                assert m["verified"] is True
                truth = ground_truth(catalog, enterprise, rules)
                total += 1
                correct += m["eligible"] == truth
                expected_failed = [r for r in rules if not ground_truth(catalog, enterprise, [r])]
                assert sorted(cast(list[str], m["failed_rules"])) == sorted(expected_failed)
        assert correct == total == 6
        assert ground_truth(catalog, ACME, P1) and not ground_truth(catalog, ACME, P2)

        # Nothing reaches the bank before an application.
        assert bank.applications() == []

        with EnterpriseProducts(f"127.0.0.1:{node.port}", pki.enterprise(ACME)) as ent:
            application_id = ent.apply("p1", amount=800_000, term_months=12, purpose="working capital", region="130100")
        apps = bank.applications()
        assert len(apps) == 1
        app = apps[0]
        assert app["application_id"] == application_id and app["enterprise"] == ACME
        assert app["verified"] is True and app["eligible"] is True
        assert app["providers"] == ["social_insurance", "tax"]
        assert app["demand"] == {"amount": 800_000, "term_months": 12, "purpose": "working capital", "region": "130100"}

        # Differencing: p1 and p2 are one rule apart; BETA applied to neither and
        # ACME only to p1. Everything the bank can read names BETA nowhere and
        # says nothing about p2.
        channel = secure_channel(
            f"127.0.0.1:{node.port}", pki.institution("bank-a"), server_role="node", server_id="node"
        )
        try:
            stub = products_pb2_grpc.ProductServiceStub(channel)
            view = stub.ListApplications(products_pb2.ListApplicationsRequest(), timeout=10).SerializeToString()
            view += stub.ListProducts(products_pb2.ListProductsRequest(), timeout=10).SerializeToString()
            for method, request in (
                ("ListMyMatches", products_pb2.ListMyMatchesRequest()),
                ("RunMatching", products_pb2.RunMatchingRequest()),
            ):
                with pytest.raises(grpc.RpcError) as denied:
                    getattr(stub, method)(request, timeout=10)
                assert decode_rpc_error(denied.value).reason == "CALLER_NOT_ALLOWED"
        finally:
            channel.close()
        assert BETA.encode() not in view
        assert [a["product_id"] for a in bank.applications()] == ["p1"]

    # The node: only ciphertexts of one width and boxes of one length per (product, provider).
    width = 2 * ((KEY_BITS + 7) // 8)
    rows = node.core.db.query("SELECT product_id, provider, contribution, feedback FROM match_contributions")
    assert len(rows) == 2 * (2 + 2 + 1)  # two enterprises x rules' providers of p1, p2, p3
    lengths: dict[tuple[str, str], set[int]] = {}
    for product_id, provider, contribution, feedback in rows:
        c = products_pb2.MatchContribution.FromString(
            products_pb2.SignedMatchContribution.FromString(bytes(contribution)).contribution
        )
        assert len(c.ciphertext) == width
        box = common_pb2.SealedBox.FromString(bytes(feedback))
        lengths.setdefault((product_id, provider), set()).add(len(box.ciphertext))
    assert all(len(v) == 1 for v in lengths.values()), lengths
    sums = node.core.db.query("SELECT total FROM match_sums")
    assert len(sums) == 6 and {len(bytes(s[0])) for s in sums} == {width}
    columns = {r[1] for r in node.core.db.query("PRAGMA table_info(match_sums)")} | {
        r[1] for r in node.core.db.query("PRAGMA table_info(match_contributions)")
    }
    assert not columns & {"eligible", "failed", "passed", "result", "count"}

    # Transcripts: what the agents sent the node has no rule text, no verdict and no count.
    responses = [data for _p, way, method, data in seen if way == "in" and method == "ComputeMatch"]
    assert responses
    for data in responses:
        response = products_pb2.ComputeMatchResponse.FromString(data)
        for outcome in response.outcomes:
            assert not outcome.refused_reason
            assert {f.name for f, _ in outcome.ListFields()} == {"enterprise_uscc", "contribution", "feedback"}
        for text in [*P1, *P2, *P3, "TRUE", "FALSE", "failed"]:
            assert text.encode() not in data


def test_agent_refuses_a_consent_of_another_purpose_and_the_node_stores_nothing(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, _seen = desk
    assert node.products is not None
    from support.node_fakes import grant

    with _bank(node, pki, tmp_path) as bank:
        _publish(bank, "p1", P1)
        _register(node, pki, ACME, grant(pki, catalog, ACME))  # loan_application: not for matching
        assert node.products.wait_idle()
        stats = node.products.run()
        assert stats.pairs == 0
        assert node.core.db.query("SELECT COUNT(*) FROM match_contributions")[0][0] == 0
        with EnterpriseProducts(f"127.0.0.1:{node.port}", pki.enterprise(ACME)) as ent:
            assert ent.matches() == []
            with pytest.raises(XinrongError):
                ent.apply("p1", amount=1, term_months=1)


def test_publish_validates_every_rule_and_withdraw_drops_results(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, _seen = desk
    assert node.products is not None
    with _bank(node, pki, tmp_path) as bank:
        with pytest.raises(XinrongError) as err:
            _publish(bank, "bad", ["tax.vat_paid_last_year >= 123"])
        assert err.value.reason.value == "THRESHOLD_NOT_PUBLISHED"
        _publish(bank, "p1", P1)
        _register(node, pki, ACME, matching_consent(pki, catalog, ACME))
        assert node.products.wait_idle()
        assert node.core.db.query("SELECT COUNT(*) FROM match_sums")[0][0] == 1
        bank.withdraw("p1")
        assert node.core.db.query("SELECT COUNT(*) FROM match_sums")[0][0] == 0
        assert bank.products() == []
        assert [p["withdrawn"] for p in bank.products(include_withdrawn=True)] == [True]
    # Another bank cannot withdraw or overwrite bank-a's product.
    with _bank(node, pki, tmp_path, "bank-b") as other:
        with pytest.raises(RemoteError) as refused:
            other.withdraw("p1")
        assert refused.value.reason == "NOT_FOUND"


def test_a_new_data_period_rematches_the_products_with_rules_there(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, _seen = desk
    assert node.products is not None
    with _bank(node, pki, tmp_path) as bank:
        _publish(bank, "p1", P1)
        _register(node, pki, ACME, matching_consent(pki, catalog, ACME))
        assert node.products.wait_idle()
        with EnterpriseProducts(f"127.0.0.1:{node.port}", pki.enterprise(ACME)) as ent:
            assert [m["eligible"] for m in ent.matches()] == [True]
        assert node.products.check_periods() == []  # the periods served now
        # The tax bureau's next export: ACME's grade fell to C.
        new = CSV["tax"].replace("2026-06-30,A,", "2026-09-30,C,").replace("2026-06-30", "2026-09-30")
        csv_path = tmp_path / "tax-next.csv"
        csv_path.write_text(new)
        store = agent_store.DataStore(tmp_path / "agent-tax.db", "tax")
        try:
            agent_importer.import_csv(store, catalog, "tax", csv_path)
        finally:
            store.close()
        assert node.products.check_periods() == ["tax"]
        assert node.products.wait_idle()
        with EnterpriseProducts(f"127.0.0.1:{node.port}", pki.enterprise(ACME)) as ent:
            (match,) = ent.matches()
        assert match["eligible"] is False and match["failed_rules"] == ["tax.credit_grade in A,B"]
        assert match["data_as_of"] == {"social_insurance": "2026-06-30", "tax": "2026-09-30"}


def test_products_on_postgres(pki: Any, catalog: Catalog, tmp_path: Path, pg_cluster: Any) -> None:
    """The node on PostgreSQL (schema step 9 there): publish, match, apply, the bank's offline check."""
    from support.pg import database_table

    with real_platform(pki, catalog, tmp_path, CSV, database=database_table(pg_cluster), poll_seconds=0.2) as (
        node,
        _agents,
    ):
        assert node.products is not None
        with _bank(node, pki, tmp_path) as bank:
            _publish(bank, "p1", P1)
            _register(node, pki, ACME, matching_consent(pki, catalog, ACME))
            assert node.products.wait_idle()
            assert node.products.run("p1").pairs == 1
            with EnterpriseProducts(f"127.0.0.1:{node.port}", pki.enterprise(ACME)) as ent:
                assert [m["eligible"] for m in ent.matches()] == [True]
                ent.apply("p1", amount=500_000, term_months=24)
            (app,) = bank.applications()
            assert app["verified"] is True and app["eligible"] is True


def test_matching_reconciles_with_the_agents_answer_logs(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]],
    platform: tuple[NodeServer, dict[str, Any]],
    pki: Any,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    """Every ALLOWED MatchProducts entry of the node has the agents' own logged answer, and no answer is extra."""
    from xinrong.node.db import open_readonly
    from xinrong.node.reconcile import reconcile

    node, _seen = desk
    assert node.products is not None
    with _bank(node, pki, tmp_path) as bank:
        _publish(bank, "p1", P1)
        for enterprise in (ACME, BETA):
            _register(node, pki, enterprise, matching_consent(pki, catalog, enterprise))
        assert node.products.wait_idle()
        assert node.products.run("p1").pairs == 2
    exports = []
    for provider, agent in platform[1].items():
        agent.integrate_answers()
        latest, entries = agent.state.answer_export()
        assert {e["kind"] for e in entries} == {"matching"}
        exports.append({"provider": provider, "checkpoint": latest.note if latest else "", "entries": entries})
    assert node.core.config.db is not None
    conn = open_readonly(node.core.config.db)
    try:
        report = reconcile(conn, node.core.config, exports)
    finally:
        conn.close()
    assert report.mismatches == 0, report.to_json()
    assert report.matched == 2 * 2 * 2  # two enterprises, two providers, two runs (on consent, then explicit)


def test_the_portal_backend_reads_products_and_applies(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    from xinrong.enterprise.portal.adapter import ClientBackend
    from xinrong.enterprise.portal.backend import ApplyForm

    node, _seen = desk
    assert node.products is not None
    with _bank(node, pki, tmp_path) as bank:
        _publish(bank, "p1", P1)
        _publish(bank, "p3", P3)
        _register(node, pki, ACME, matching_consent(pki, catalog, ACME))
        assert node.products.wait_idle()
        portal = ClientBackend(f"127.0.0.1:{node.port}", pki.enterprise(ACME), state_dir=tmp_path / "portal")
        try:
            rows = {r.product_id: r for r in portal.products()}
            assert rows["p1"].eligible and rows["p1"].matched
            assert not rows["p3"].eligible and rows["p3"].failed_rules == ("tax.in_arrears == true",)
            assert portal.apply(ApplyForm("p3", 100_000, 6)).startswith("a-")
        finally:
            portal.close()
        (app,) = bank.applications()
        assert app["product_id"] == "p3" and app["verified"] is True and app["eligible"] is False


def test_a_run_is_split_into_chunks_of_enterprises(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]],
    pki: Any,
    catalog: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from xinrong.node import products as node_products

    node, seen = desk
    assert node.products is not None
    with _bank(node, pki, tmp_path) as bank:
        _publish(bank, "p1", P3)
        for enterprise in (ACME, BETA):
            _register(node, pki, enterprise, matching_consent(pki, catalog, enterprise))
        assert node.products.wait_idle()
        monkeypatch.setattr(node_products, "CHUNK_SUBJECTS", 1)
        seen.clear()
        stats = node.products.run("p1")
    assert stats.pairs == 2 and stats.products == 1
    calls = [products_pb2.ComputeMatchRequest.FromString(d) for _p, way, _m, d in seen if way == "out"]
    assert [len(c.subjects) for c in calls] == [1, 1] and calls[0].match_id != calls[1].match_id
    # A demand changed (the demands store's hook): that enterprise alone is matched again.
    seen.clear()
    node.products.on_demand_changed(ACME)
    assert node.products.wait_idle()
    calls = [products_pb2.ComputeMatchRequest.FromString(d) for _p, way, _m, d in seen if way == "out"]
    assert [[s.enterprise_uscc for s in c.subjects] for c in calls] == [[ACME]]


def test_a_dead_agent_fails_the_run_cleanly(
    desk: tuple[NodeServer, list[tuple[str, str, str, bytes]]],
    platform: tuple[NodeServer, dict[str, Any]],
    pki: Any,
    catalog: Catalog,
    tmp_path: Path,
) -> None:
    node, _seen = desk
    assert node.products is not None
    with _bank(node, pki, tmp_path) as bank:
        _publish(bank, "p1", P1)
        _register(node, pki, ACME, matching_consent(pki, catalog, ACME))
        assert node.products.wait_idle()
        before = node.core.db.query("SELECT match_id FROM match_sums")
        platform[1]["social_insurance"].stop(0)
        stats = node.products.run("p1")
    assert stats.pairs == 0 and stats.refused == 1
    assert node.core.db.query("SELECT match_id FROM match_sums") == before  # the last complete result stays
    failed = node.core.db.query("SELECT COUNT(*) FROM audit_log WHERE method = 'MatchProducts' AND decision = 'FAILED'")
    assert failed[0][0] == 1
