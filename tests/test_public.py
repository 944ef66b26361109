"""Public records, voluntary filings and the signed credit report (Issue 12 §1, §2, §4).

Unit: the catalog's public and self-reported parts, batch and filing
canonicalisation and signatures, the report built only from public data and
its offline check. In-process gRPC: roles per method, audit entries for every
read, idempotent and versioned publish, refusals with precise statuses, the
change hook, withdrawal leaving later reports.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from xinrong import public
from xinrong.bank.push_client import PushClient, Subscription
from xinrong.catalog import Catalog, SharingMode, parse_catalog
from xinrong.errors import CatalogError, Reason, SignatureError, ValidationError
from xinrong.keys.signing import SigningKey
from xinrong.node.public import ChangedRecord
from xinrong.report import (
    SECTIONS,
    FiledItems,
    SourcedValue,
    build_report,
    canonical_bytes,
    self_reported_items,
    sign_report,
    verify_envelope,
    verify_with_key,
)
from xinrong.rpc.channel import secure_channel
from xinrong.v1 import public_pb2, public_pb2_grpc

from support.node_fakes import ACME, BETA, NodeHarness, assert_refused

PUBLIC_PROVIDERS = ("market", "judicial", "tax")


# ------------------------------------------------------------------ catalog


def test_catalog_public_fields_and_self_reported(catalog: Catalog) -> None:
    assert catalog.public_providers() == PUBLIC_PROVIDERS
    market = {s.key for s in catalog.aggregate_fields("market")}
    assert {
        "market.status",
        "market.region_code",
        "market.industry_class",
        "market.admin_licences",
        "market.admin_penalties",
        "market.env_credit_rating",
        "market.high_tech_enterprise",
        "market.software_copyrights",
    } <= market
    assert "market.registered_capital" not in market  # interface_consent stays private
    assert {s.key for s in catalog.aggregate_fields("tax")} == {"tax.grade_a_taxpayer"}
    assert {s.key for s in catalog.aggregate_fields("judicial")} == {"judicial.dishonest_debtor"}
    region = catalog.field("market.region_code")
    assert all(len(v) == 6 and v.isdigit() and v.startswith("13") for v in region.values)
    assert all(v[0] in "ABCDEFGHIJKLMNOPQRS" and v[1:].isdigit() for v in catalog.field("market.industry_class").values)
    # Self-reported items are no provider's fields: no agent, no provider count change.
    assert set(catalog.self_reported) == {
        "self.rd_spend_last_year",
        "self.orders_contracts_value",
        "self.patents_held",
        "self.green_certifications",
    }
    assert not any(k.startswith("self.") for k in catalog.fields)
    assert "self" not in catalog.providers
    assert catalog.commitment is not None and len(catalog.commitment.sha256) == 64


def test_catalog_refuses_bad_self_reported(catalog: Catalog) -> None:
    with pytest.raises(CatalogError, match=r"self\.name"):
        parse_catalog(catalog.raw + b'\n[[self_reported]]\nkey = "rd"\ntype = "int"\n')
    with pytest.raises(CatalogError, match="SelfReportedType"):
        parse_catalog(catalog.raw.replace(b'type = "text_list"', b'type = "blob"'))
    with pytest.raises(CatalogError, match="declared twice"):
        parse_catalog(catalog.raw + b'\n[[self_reported]]\nkey = "self.patents_held"\ntype = "int"\n')


# ------------------------------------------------------------------ batches


def _batch(records: Sequence[public.PublicRecord], *, version: int = 1, base: int = 0) -> public.PublicBatch:
    return public.PublicBatch(
        provider="market", period="2026-09-30", version=version, base_version=base, records=tuple(records)
    )


ACME_MARKET: dict[str, public.Value] = {
    "market.status": "in_business",
    "market.years_in_operation": 12,
    "market.region_code": "130102",
    "market.industry_class": "C3911",
    "market.founded_on": "2014-03-01",
    "market.admin_licences": 2,
    "market.admin_penalties": 0,
    "market.env_credit_rating": "green",
    "market.high_tech_enterprise": True,
    "market.software_copyrights": 7,
}


def test_batch_is_canonical_and_signed(catalog: Catalog) -> None:
    key = SigningKey.generate()
    batch = _batch([public.PublicRecord(ACME, ACME_MARKET), public.PublicRecord(BETA, None)])
    raw, sig = public.sign_batch(key, batch)
    assert raw == public.batch_bytes(batch) == public.canonical_json(json.loads(raw))
    assert public.verify_batch(raw, sig, key.verify_key, catalog) == batch
    with pytest.raises(SignatureError):
        public.verify_batch(raw + b" ", sig, key.verify_key, catalog)
    with pytest.raises(SignatureError):
        public.verify_batch(raw, sig, SigningKey.generate().verify_key, catalog)
    # Re-encoded bytes (whitespace) are refused: one byte string per batch.
    loose = json.dumps(json.loads(raw)).encode()
    with pytest.raises(ValidationError, match="canonical"):
        public.parse_batch(loose, catalog)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("market.registered_capital", "1000000"),  # interface_consent: never leaves the agent
        ("market.annual_revenue", "5000000.00"),
        ("tax.grade_a_taxpayer", True),  # another provider's field
        ("market.unknown", 1),
    ],
)
def test_batch_refuses_any_non_aggregate_or_foreign_field(catalog: Catalog, field: str, value: object) -> None:
    doc = _batch([public.PublicRecord(ACME, {"market.status": "in_business"})]).to_json()
    doc["records"][0]["values"][field] = value
    with pytest.raises(ValidationError, match="not an aggregate-mode field of market"):
        public.parse_batch(public.canonical_json(doc), catalog)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.update(version=0), "greater than base_version"),
        (lambda d: d["records"].reverse(), "ascending USCC"),
        (lambda d: d["records"][0].update(uscc="91130100MA0000000X"), "USCC"),
        (lambda d: d["records"][0]["values"].update({"market.status": "bankrupt"}), "catalog's values"),
        (lambda d: d["records"][0]["values"].update({"market.admin_licences": -1}), "whole number"),
        (lambda d: d.update(period="30/09/2026"), "period"),
        (lambda d: d.update(provider="water"), "no aggregate-mode field"),
    ],
)
def test_batch_validation(catalog: Catalog, mutate: Callable[[dict[str, Any]], None], match: str) -> None:
    doc = _batch([public.PublicRecord(ACME, {"market.status": "in_business"}), public.PublicRecord(BETA, None)])
    raw = doc.to_json()
    mutate(raw)
    with pytest.raises(ValidationError, match=match):
        public.parse_batch(public.canonical_json(raw), catalog)


# ------------------------------------------------------------------ filings


def _filing(catalog: Catalog, uscc: str = ACME, items: dict[str, public.Value] | None = None) -> public.Filing:
    assert catalog.commitment is not None
    return public.Filing(
        filing_id=public.new_filing_id(),
        enterprise=uscc,
        items=items or {"self.rd_spend_last_year": "1250000.00", "self.patents_held": 4},
        commitment_version=catalog.commitment.version,
        commitment_sha256=catalog.commitment.sha256,
        signed_at=int(time.time()),
    )


def test_filing_signature_and_commitment_pin(catalog: Catalog) -> None:
    key = SigningKey.generate()
    filing = _filing(catalog, items={"self.green_certifications": ["ISO 14001", "绿色工厂"]})
    raw, sig = public.sign_filing(key, filing)
    key.verify_key.verify(public.FILING_CONTEXT, raw, sig)
    assert public.parse_filing(raw, catalog) == filing
    with pytest.raises(SignatureError):  # a filing signature is not a batch signature
        key.verify_key.verify(public.BATCH_CONTEXT, raw, sig)
    doc = filing.to_json()
    doc["commitment"]["text_sha256"] = "0" * 64
    with pytest.raises(ValidationError, match="credit commitment"):
        public.parse_filing(public.canonical_json(doc), catalog)
    doc = filing.to_json()
    doc["items"]["market.status"] = "in_business"
    with pytest.raises(ValidationError, match="not a self-reported item"):
        public.parse_filing(public.canonical_json(doc), catalog)
    spec = catalog.self_reported["self.patents_held"]
    assert public.coerce_item(spec, "12") == 12
    with pytest.raises(ValidationError):
        public.coerce_item(spec, "-1")


# ------------------------------------------------------------------ report


def _records(fields: dict[str, public.Value], provider: str = "market") -> list[SourcedValue]:
    return [SourcedValue(provider, k, v, "2026-09-30") for k, v in fields.items()]


def test_report_shape_sections_and_signature(catalog: Catalog) -> None:
    key = SigningKey.generate()
    report = build_report(
        catalog=catalog,
        enterprise=ACME,
        name="",
        records=[*_records(ACME_MARKET), *_records({"tax.grade_a_taxpayer": True}, "tax")],
        filings=[FiledItems("f" * 32, {"self.patents_held": 4}, 1_790_000_000, catalog.commitment.sha256)],  # type: ignore[union-attr]
        issued_at=1_790_000_100,
        report_id="cr-test",
        audit_leaf_index=41,
    )
    assert [s["key"] for s in report["sections"]] == [k for k, _, _ in SECTIONS]
    by_key = {s["key"]: s for s in report["sections"]}
    assert by_key["judicial"]["items"] == []  # kept, empty
    status = by_key["registration"]["items"][0]
    assert status["field"] == "market.status" and status["display_zh"] == "存续\uff08在营\uff09"
    assert status["source_name_zh"] == "市场监督管理局" and status["as_of"] == "2026-09-30"
    assert all(not i["self_reported"] for s in report["sections"] if s["key"] != "self_reported" for i in s["items"])
    assert [i["field"] for i in self_reported_items(report)] == ["self.patents_held"]
    assert all(i["self_reported"] for i in self_reported_items(report))
    assert report["commitment"]["signed_at"] == "2026-09-21T14:13:20Z"
    envelope = sign_report(report, key)
    assert envelope["signature"]["key_fingerprint"].startswith("sha256:")
    assert verify_with_key(json.loads(json.dumps(envelope, ensure_ascii=False)), key.verify_key) == report
    assert canonical_bytes(report) == json.dumps(
        report, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")
    tampered = json.loads(json.dumps(envelope))
    tampered["report"]["sections"][1]["items"].append({"field": "judicial.dishonest_debtor", "value": True})
    with pytest.raises(SignatureError):
        verify_with_key(tampered, key.verify_key)
    with pytest.raises(SignatureError):
        verify_with_key(envelope, SigningKey.generate().verify_key)


def test_report_refuses_every_non_public_field(catalog: Catalog) -> None:
    private = [s for s in catalog.fields.values() if s.mode is not SharingMode.AGGREGATE]
    assert private
    for spec in private:
        with pytest.raises(ValueError, match="not a public field"):
            build_report(
                catalog=catalog,
                enterprise=ACME,
                name="",
                records=[SourcedValue(spec.provider, spec.key, "1", "2026-09-30")],
                filings=[],
                issued_at=0,
                report_id="cr-x",
                audit_leaf_index=None,
            )


def test_offline_verification_checks_the_node_binding_against_the_ca(pki: Any, catalog: Catalog) -> None:
    node = pki.node
    report = build_report(
        catalog=catalog,
        enterprise=ACME,
        name="",
        records=[],
        filings=[],
        issued_at=time.time(),
        report_id="cr-y",
        audit_leaf_index=None,
    )
    assert report["commitment"] is None
    envelope = sign_report(report, node.signing_key)
    assert verify_envelope(envelope, ca_cert_pem=node.ca_cert_pem, node_binding=node.binding.signed) == report
    # A provider's binding (CA-signed, but not the node) is refused.
    with pytest.raises(SignatureError):
        verify_envelope(envelope, ca_cert_pem=node.ca_cert_pem, node_binding=pki.provider("market").binding.signed)
    # A report signed by someone else is refused even with the right binding.
    forged = sign_report(report, pki.provider("market").signing_key)
    with pytest.raises(SignatureError):
        verify_envelope(forged, ca_cert_pem=node.ca_cert_pem, node_binding=node.binding.signed)


# ------------------------------------------------------------------ gRPC


@pytest.fixture(params=["sqlite", "postgres"])
def node_backend(request: pytest.FixtureRequest) -> str:
    """The public tables on both backends (schema step 4 is spelled twice)."""
    return str(request.param)


@pytest.fixture
def harness(make_harness: Callable[..., NodeHarness]) -> NodeHarness:
    return make_harness(PUBLIC_PROVIDERS, down=PUBLIC_PROVIDERS)


def _public(h: NodeHarness, creds: Any) -> Any:
    assert h.node is not None
    channel = secure_channel(f"127.0.0.1:{h.node.port}", creds, server_role="node", server_id="node")
    h._channels.append(channel)
    return public_pb2_grpc.PublicServiceStub(channel)


def _publish(stub: Any, key: SigningKey, batch: public.PublicBatch) -> Any:
    raw, sig = public.sign_batch(key, batch)
    return stub.PublishRecords(public_pb2.PublishRecordsRequest(batch=raw, signature=sig), timeout=10)


def _file(stub: Any, creds: Any, filing: public.Filing) -> Any:
    raw, sig = public.sign_filing(creds.signing_key, filing)
    return stub.FileSelfReport(
        public_pb2.FileSelfReportRequest(
            filing=raw, signature=sig, enterprise_binding=creds.binding.signed.SerializeToString()
        ),
        timeout=10,
    )


def _audit(h: NodeHarness, method: str) -> list[tuple[Any, ...]]:
    h.flush_audit()
    return h.query(
        "SELECT caller_role, caller_id, enterprise, decision FROM audit_log WHERE method = ? ORDER BY seq", (method,)
    )


def test_publish_versions_idempotence_and_refusals(harness: NodeHarness, pki: Any) -> None:
    assert harness.node is not None and harness.node.public is not None
    seen: list[ChangedRecord] = []
    harness.node.public.on_change(seen.extend)
    market = pki.provider("market")
    stub = _public(harness, market)
    assert stub.GetPublishState(public_pb2.GetPublishStateRequest(), timeout=10).version == 0
    first = _batch([public.PublicRecord(ACME, ACME_MARKET), public.PublicRecord(BETA, {"market.status": "revoked"})])
    resp = _publish(stub, market.signing_key, first)
    assert (resp.outcome, resp.version, resp.records_changed) == (
        public_pb2.PUBLISH_OUTCOME_APPLIED,
        1,
        len(ACME_MARKET) + 1,
    )
    assert {(c.enterprise, c.field) for c in seen} >= {(ACME, "market.status"), (BETA, "market.status")}
    acme_status = next(c for c in seen if c.enterprise == ACME and c.field == "market.status")
    assert (acme_status.region, acme_status.industry, acme_status.topic) == ("130102", "C3911", "public_record")
    # The very same batch again: a no-op, reported as such, no hook call.
    seen.clear()
    again = _publish(stub, market.signing_key, first)
    assert (again.outcome, again.version, again.records_changed) == (public_pb2.PUBLISH_OUTCOME_ALREADY_APPLIED, 1, 0)
    assert seen == []
    # Incremental: only what changed; a field left out of a record is no longer held.
    changed = dict(ACME_MARKET, **{"market.admin_penalties": 1})
    del changed["market.software_copyrights"]
    second = _batch([public.PublicRecord(ACME, changed)], version=2, base=1)
    resp = _publish(stub, market.signing_key, second)
    assert (resp.version, resp.records_changed) == (2, 2)
    assert {(c.field, c.removed) for c in seen} == {
        ("market.admin_penalties", False),
        ("market.software_copyrights", True),
    }
    state = stub.GetPublishState(public_pb2.GetPublishStateRequest(), timeout=10)
    assert (state.version, state.period) == (2, "2026-09-30")
    # Versions: a gap, or a used version with other content, is refused.
    assert_refused(
        lambda: _publish(stub, market.signing_key, _batch([], version=5, base=4)),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.FAILED_PRECONDITION,
    )
    assert_refused(
        lambda: _publish(stub, market.signing_key, _batch([public.PublicRecord(BETA, None)], version=2, base=1)),
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.FAILED_PRECONDITION,
    )
    # A bad signature: PERMISSION_DENIED, nothing stored.
    raw, _sig = public.sign_batch(market.signing_key, _batch([], version=3, base=2))
    bad = public.sign_batch(SigningKey.generate(), _batch([], version=3, base=2))[1]
    err = assert_refused(
        lambda: stub.PublishRecords(public_pb2.PublishRecordsRequest(batch=raw, signature=bad), timeout=10),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.ACCESS_DENIED,
    )
    assert "signature" in (err.details() or "")
    # Tax signs a market batch with its own key: refused (a provider publishes only its own fields).
    tax = pki.provider("tax")
    assert_refused(
        lambda: _publish(_public(harness, tax), tax.signing_key, _batch([], version=1)),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.ACCESS_DENIED,
    )
    # A non-aggregate field in a validly signed batch: INVALID_ARGUMENT, nothing stored.
    doc = _batch([public.PublicRecord(ACME, {"market.status": "in_business"})], version=3, base=2).to_json()
    doc["records"][0]["values"]["market.registered_capital"] = "1000000"
    raw = public.canonical_json(doc)
    assert_refused(
        lambda: stub.PublishRecords(
            public_pb2.PublishRecordsRequest(batch=raw, signature=market.signing_key.sign(public.BATCH_CONTEXT, raw)),
            timeout=10,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
    )
    assert harness.query("SELECT count(*) FROM public_batches")[0][0] == 2
    assert harness.query("SELECT count(*) FROM public_records WHERE field = 'market.registered_capital'")[0][0] == 0
    # Institutions and enterprises may not publish.
    assert_refused(
        lambda: _publish(
            _public(harness, pki.institution("bank-a")), market.signing_key, _batch([], version=3, base=2)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.CALLER_NOT_ALLOWED,
    )
    assert [row[:2] for row in _audit(harness, "PublishRecords")] == [("provider", "market"), ("provider", "market")]


class _Rows:
    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows


class _StaleTx:
    """A transaction whose version reads see the provider at ``before``: a replica that read just
    before another replica committed the same version (its writes still go to the real database)."""

    def __init__(self, tx: Any, before: int) -> None:
        self._tx, self._before = tx, before

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if sql.startswith("SELECT sha256 FROM public_batches"):
            return _Rows([])
        if sql.startswith("SELECT coalesce(max(version), 0) FROM public_batches"):
            return _Rows([(self._before,)])
        return self._tx.execute(sql, params)


class _LosesTheRace:
    """The node's database; its next transaction reads stale versions (``_StaleTx``), later ones are real."""

    def __init__(self, db: Any, before: int) -> None:
        self._db, self._before, self.armed = db, before, True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    @contextmanager
    def transaction(self, **kw: Any) -> Iterator[Any]:
        with self._db.transaction(**kw) as tx:
            if self.armed:
                self.armed = False
                yield _StaleTx(tx, self._before)
            else:
                yield tx


def test_a_replica_losing_the_race_for_a_version_answers_as_a_resend(harness: NodeHarness, pki: Any) -> None:
    """Two replicas apply version 1 at once: the loser's insert hits the primary key (UniqueViolation on
    PostgreSQL, IntegrityError on SQLite). Same bytes: ALREADY_APPLIED, as a re-send; other bytes:
    FAILED_PRECONDITION, as a sequential re-use of the version. Nothing of the loser is stored or pushed."""
    assert harness.node is not None and harness.node.public is not None
    store = harness.node.public
    seen: list[ChangedRecord] = []
    store.on_change(seen.extend)
    market = pki.provider("market")
    stub = _public(harness, market)
    first = _batch([public.PublicRecord(ACME, ACME_MARKET)])
    assert _publish(stub, market.signing_key, first).outcome == public_pb2.PUBLISH_OUTCOME_APPLIED
    seen.clear()
    real_db = store.db
    try:
        store.db = racing = _LosesTheRace(real_db, before=0)  # type: ignore[assignment]
        resp = _publish(stub, market.signing_key, first)
        assert not racing.armed
        assert (resp.outcome, resp.version, resp.records_changed) == (public_pb2.PUBLISH_OUTCOME_ALREADY_APPLIED, 1, 0)
        other = _batch([public.PublicRecord(ACME, dict(ACME_MARKET, **{"market.status": "revoked"}))])
        store.db = racing = _LosesTheRace(real_db, before=0)  # type: ignore[assignment]
        err = assert_refused(
            lambda: _publish(stub, market.signing_key, other),
            grpc.StatusCode.FAILED_PRECONDITION,
            Reason.FAILED_PRECONDITION,
        )
        assert not racing.armed
        assert "version 1 was already published with other content" in str(err.details())
    finally:
        store.db = real_db
    assert seen == []
    assert harness.query("SELECT count(*), max(changed) FROM public_batches")[0] == (1, len(ACME_MARKET))
    status = harness.query("SELECT value FROM public_records WHERE uscc = ? AND field = 'market.status'", (ACME,))
    assert status == [('"in_business"',)]
    assert len(_audit(harness, "PublishRecords")) == 1


def _race(stubs: list[Any], signing_key: SigningKey, batches: list[public.PublicBatch]) -> list[str]:
    """Send ``batches[i]`` on ``stubs[i]`` at the same instant; each outcome's name or status code, in order."""
    barrier = threading.Barrier(len(batches))

    def send(i: int) -> str:
        barrier.wait()
        try:
            return public_pb2.PublishOutcome.Name(_publish(stubs[i], signing_key, batches[i]).outcome)
        except grpc.RpcError as err:
            return str(err.code().name)

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(send, range(len(batches))))


def test_two_publishes_of_one_version_at_once_apply_it_once(harness: NodeHarness, pki: Any) -> None:
    """The same version sent twice at the same instant (two pooled connections on PostgreSQL): whichever
    wins, the other is ALREADY_APPLIED for the same bytes and FAILED_PRECONDITION for other bytes."""
    market = pki.provider("market")
    stubs = [_public(harness, market), _public(harness, market)]

    def race(batches: list[public.PublicBatch]) -> list[str]:
        return sorted(_race(stubs, market.signing_key, batches))

    for version in range(1, 9):
        record = public.PublicRecord(ACME, dict(ACME_MARKET, **{"market.admin_licences": version}))
        same = _batch([record], version=version, base=version - 1)
        assert race([same, same]) == ["PUBLISH_OUTCOME_ALREADY_APPLIED", "PUBLISH_OUTCOME_APPLIED"]
    for version in range(9, 13):
        a, b = (
            _batch(
                [public.PublicRecord(ACME, dict(ACME_MARKET, **{"market.status": s}))],
                version=version,
                base=version - 1,
            )
            for s in ("in_business", "revoked")
        )
        got = race([a, b])
        assert got == ["FAILED_PRECONDITION", "PUBLISH_OUTCOME_APPLIED"], got
    assert harness.query("SELECT count(*) FROM public_batches")[0][0] == 12


def test_two_publishes_of_different_versions_on_one_base_at_once_apply_one(harness: NodeHarness, pki: Any) -> None:
    """Versions v+1 and v+2, both on base v, sent at the same instant (two pooled connections on
    PostgreSQL): publishes of one provider are serialized, so exactly one applies and the other finds
    its base stale (FAILED_PRECONDITION); the log of versions never forks."""
    market = pki.provider("market")
    stubs = [_public(harness, market), _public(harness, market)]

    def race(batches: list[public.PublicBatch]) -> list[str]:
        return _race(stubs, market.signing_key, batches)

    base = 0
    for _ in range(10):
        a, b = (
            _batch(
                [public.PublicRecord(ACME, dict(ACME_MARKET, **{"market.admin_licences": base + step}))],
                version=base + step,
                base=base,
            )
            for step in (1, 2)
        )
        got = race([a, b])
        assert sorted(got) == ["FAILED_PRECONDITION", "PUBLISH_OUTCOME_APPLIED"], got
        old, base = base, base + (1 if got[0] == "PUBLISH_OUTCOME_APPLIED" else 2)
        rows = harness.query("SELECT version, base_version FROM public_batches ORDER BY version")
        assert (int(rows[-1][0]), int(rows[-1][1])) == (base, old)
    chain = harness.query("SELECT version, base_version FROM public_batches ORDER BY version")
    assert len(chain) == 10
    assert all(int(chain[i][1]) == (int(chain[i - 1][0]) if i else 0) for i in range(len(chain)))  # one linear chain


def test_reads_roles_audit_and_report(harness: NodeHarness, pki: Any, catalog: Catalog) -> None:
    market, tax = pki.provider("market"), pki.provider("tax")
    _publish(_public(harness, market), market.signing_key, _batch([public.PublicRecord(ACME, ACME_MARKET)]))
    _publish(
        _public(harness, tax),
        tax.signing_key,
        public.PublicBatch("tax", "2026-09-30", 1, 0, (public.PublicRecord(ACME, {"tax.grade_a_taxpayer": True}),)),
    )
    bank = _public(harness, pki.institution("bank-a"))
    got = bank.GetPublicRecords(public_pb2.GetPublicRecordsRequest(enterprise_uscc=ACME), timeout=10)
    assert {r.field: json.loads(r.value_json) for r in got.records} == {**ACME_MARKET, "tax.grade_a_taxpayer": True}
    assert got.HasField("audit_leaf_index") == (harness.backend == "sqlite")  # PostgreSQL: sequenced later
    # The enterprise reads itself, not another enterprise (refusal audited too).
    acme = pki.enterprise(ACME)
    mine = _public(harness, acme)
    assert len(mine.GetPublicRecords(public_pb2.GetPublicRecordsRequest(enterprise_uscc=ACME), timeout=10).records)
    assert_refused(
        lambda: mine.GetPublicRecords(public_pb2.GetPublicRecordsRequest(enterprise_uscc=BETA), timeout=10),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.ACCESS_DENIED,
    )
    assert_refused(
        lambda: _public(harness, market).GetPublicRecords(
            public_pb2.GetPublicRecordsRequest(enterprise_uscc=ACME), timeout=10
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.CALLER_NOT_ALLOWED,
    )
    assert _audit(harness, "GetPublicRecords") == [
        ("institution", "bank-a", ACME, "ALLOWED"),
        ("enterprise", ACME, ACME, "ALLOWED"),
        ("enterprise", ACME, BETA, "REFUSED"),
    ]
    # A filing, in the report, then withdrawn and gone from the next report.
    assert harness.node is not None and harness.node.public is not None
    hooked: list[ChangedRecord] = []
    harness.node.public.on_change(hooked.extend)
    filing = _filing(catalog)
    filed = _file(mine, acme, filing)
    assert {(c.topic, c.field, c.self_reported, c.region, c.industry) for c in hooked} == {
        ("filing", key, True, "130102", "C3911") for key in filing.items
    }
    assert (filed.filing_id, filed.already_filed) == (filing.filing_id, False)
    assert _file(mine, acme, filing).already_filed  # idempotent
    envelope = json.loads(
        bank.GetCreditReport(public_pb2.GetCreditReportRequest(enterprise_uscc=ACME), timeout=10).envelope_json
    )
    report = verify_envelope(envelope, ca_cert_pem=pki.node.ca_cert_pem, node_binding=pki.node.binding.signed)
    assert report["enterprise"]["uscc"] == ACME and report["report_id"].startswith("cr-")
    fields = {i["field"] for s in report["sections"] for i in s["items"] if not i["self_reported"]}
    assert fields == set(ACME_MARKET) | {"tax.grade_a_taxpayer"}
    assert {i["field"] for i in self_reported_items(report)} == set(filing.items)
    assert report["commitment"]["text_sha256"] == catalog.commitment.sha256  # type: ignore[union-attr]
    harness.flush_audit()
    leaf = report["audit_leaf_index"]
    logged = harness.query("SELECT seq, method, caller_id FROM audit_log WHERE request_id = ?", (report["report_id"],))
    assert [row[1:] for row in logged] == [("GetCreditReport", "bank-a")]
    assert leaf == (logged[0][0] - 1 if harness.backend == "sqlite" else None)
    withdrawal = public.Withdrawal(filing.filing_id, ACME, int(time.time()))
    raw, sig = public.sign_withdrawal(acme.signing_key, withdrawal)
    binding = acme.binding.signed.SerializeToString()
    request = public_pb2.WithdrawFilingRequest(withdrawal=raw, signature=sig, enterprise_binding=binding)
    assert not mine.WithdrawFiling(request, timeout=10).already_withdrawn
    assert mine.WithdrawFiling(request, timeout=10).already_withdrawn
    assert sum(c.removed for c in hooked) == len(filing.items)  # the withdrawal is a change too
    listed = mine.ListFilings(public_pb2.ListFilingsRequest(), timeout=10).filings
    assert [(f.filing_id, f.withdrawn_ms > 0) for f in listed] == [(filing.filing_id, True)]
    own = json.loads(
        mine.GetCreditReport(public_pb2.GetCreditReportRequest(enterprise_uscc=ACME), timeout=10).envelope_json
    )
    assert self_reported_items(own["report"]) == [] and own["report"]["commitment"] is None
    assert [r[:2] for r in _audit(harness, "WithdrawFiling")] == [("enterprise", ACME)]
    assert [r[:3] for r in _audit(harness, "GetCreditReport")] == [
        ("institution", "bank-a", ACME),
        ("enterprise", ACME, ACME),
    ]
    # Filing for someone else, or with a forged signature, or by a bank: refused.
    beta_filing = _filing(catalog, BETA)
    assert_refused(lambda: _file(mine, acme, beta_filing), grpc.StatusCode.PERMISSION_DENIED, Reason.ACCESS_DENIED)
    forged = public_pb2.FileSelfReportRequest(
        filing=public.filing_bytes(filing := _filing(catalog)),
        signature=SigningKey.generate().sign(public.FILING_CONTEXT, public.filing_bytes(filing)),
        enterprise_binding=binding,
    )
    assert_refused(
        lambda: mine.FileSelfReport(forged, timeout=10), grpc.StatusCode.PERMISSION_DENIED, Reason.ACCESS_DENIED
    )
    assert_refused(
        lambda: bank.ListFilings(public_pb2.ListFilingsRequest(), timeout=10),
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.CALLER_NOT_ALLOWED,
    )


# ------------------------------------------------------------------ agent publish (in process)


def _market_agent(pki: Any, catalog: Catalog, tmp_path: Any) -> Any:
    from xinrong.keys.layout import party_dir
    from xinrong.provider_agent.config import parse_config, prepare
    from xinrong.provider_agent.importer import import_csv
    from xinrong.provider_agent.store import DataStore
    from xinrong.tools import datagen

    datagen.generate(tmp_path / "data", datagen.GenerateConfig(enterprises=100, seed=3))
    config = parse_config(
        {
            "agent": {
                "provider": "market",
                "bind": "127.0.0.1:0",
                "credentials": str(party_dir(pki.root, "provider", "market")),
                "ca_cert": str(pki.root / "ca" / "ca.crt"),
                "db": str(tmp_path / "agent-market.db"),
            }
        },
        tmp_path,
    )
    store = DataStore(config.db, "market")
    try:
        import_csv(store, catalog, "market", tmp_path / "data" / "market.csv")
    finally:
        store.close()
    return prepare(config)


def test_agent_reads_only_aggregate_columns(pki: Any, catalog: Catalog, tmp_path: Any) -> None:
    from xinrong.provider_agent.publish import public_view

    setup = _market_agent(pki, catalog, tmp_path)
    period, view = public_view(setup.config.db, catalog, "market")
    assert period and len(view) == 100
    public_keys = {s.key for s in catalog.aggregate_fields("market")}
    seen = {k for values in view.values() for k in values}
    assert seen <= public_keys and "market.region_code" in seen
    assert not seen & {"market.registered_capital", "market.annual_revenue", "market.industry"}


def test_agent_publish_incremental_and_crash_idempotent(
    harness: NodeHarness, pki: Any, catalog: Catalog, tmp_path: Any
) -> None:
    from xinrong.provider_agent import publish as pub

    assert harness.node is not None
    node = f"127.0.0.1:{harness.node.port}"
    setup = _market_agent(pki, catalog, tmp_path)
    first = pub.publish(setup, node)
    assert (first.outcome, first.batches, first.applied, first.version) == ("published", 1, 1, 1)
    assert first.records_sent == 100
    assert pub.publish(setup, node).outcome == "unchanged"  # nothing changed: nothing sent
    # A run that died after the node committed but before the agent's bookkeeping:
    # the persisted pending batch is re-sent and recognised, not applied twice.
    path = pub.state_path(setup.config.db)
    state = json.loads(path.read_text())
    _, view = pub.public_view(setup.config.db, catalog, "market")
    code = sorted(view)[0]
    state["digests"][code] = "stale"
    batches = pub.plan(
        setup.credentials.signing_key, "market", "2026-09-30", view, state["digests"], base_version=1, replace=False
    )
    assert len(batches) == 1 and len(json.loads(batches[0][0])["records"]) == 1
    stub = _public(harness, pki.provider("market"))
    raw, sig = batches[0]
    assert stub.PublishRecords(public_pb2.PublishRecordsRequest(batch=raw, signature=sig), timeout=10).version == 2
    state["pending"] = [{"batch": base64.b64encode(raw).decode(), "signature": base64.b64encode(sig).decode()}]
    state["target"] = state["digests"] | {code: pub._digest(view[code])}
    path.write_text(json.dumps(state))
    resumed = pub.publish(setup, node)
    assert (resumed.outcome, resumed.already_applied, resumed.version) == ("already_applied", 1, 2)
    assert pub.publish(setup, node).outcome == "unchanged"
    # Lost state: everything is sent again with replace, on top of the node's version.
    path.unlink()
    full = pub.publish(setup, node)
    assert (full.replace, full.records_sent, full.records_changed, full.version) == (True, 100, 0, 3)
    # Pending batches the node no longer fits (reset node, another copy publishing): dropped, all resent.
    stale_raw, stale_sig = pub.plan(
        setup.credentials.signing_key, "market", "2026-09-30", view, {}, base_version=7, replace=False
    )[0]
    state = json.loads(path.read_text())
    state["pending"] = [
        {"batch": base64.b64encode(stale_raw).decode(), "signature": base64.b64encode(stale_sig).decode()}
    ]
    path.write_text(json.dumps(state))
    healed = pub.publish(setup, node)
    assert (healed.replace, healed.version) == (True, 4)


def test_report_bench_runs() -> None:
    from xinrong.tools.bench.report import run

    result = run(20)
    assert result["reports"] == 20 and result["build_sign_p50_ms"] > 0 and result["served_p99_ms"] > 0


def test_published_changes_reach_a_subscriber_by_region_and_industry(harness: NodeHarness, pki: Any) -> None:
    """Issue 12 §3: a provider's new batch is pushed to subscribed institutions as node-signed events,
    saying what changed where (never the value: that is an audited GetPublicRecords read)."""
    assert harness.node is not None
    market = pki.provider("market")
    _publish(
        _public(harness, market),
        market.signing_key,
        _batch([public.PublicRecord(ACME, ACME_MARKET), public.PublicRecord(BETA, {"market.status": "revoked"})]),
    )
    with PushClient(f"127.0.0.1:{harness.node.port}", pki.institution("bank-a"), timeout=5.0) as client:
        got = list(client.events(Subscription(regions=("1301",), industries=("C",), topics=("public_record",))))
        assert {(e.enterprise, e.payload_json()["field"]) for e in got} >= {(ACME, "market.status")}
        assert all(e.signed.key_id == pki.node.signing_key.key_id for e in got)
        assert all(set(e.payload_json()) == {"field", "provider", "version", "self_reported", "removed"} for e in got)
        assert all(str(v) not in e.signed.SerializeToString().decode("latin-1") for e in got for v in ("revoked",))
        assert list(client.events(Subscription(regions=("11",), topics=("public_record",)))) == []
