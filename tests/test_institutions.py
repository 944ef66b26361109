"""Access institutions (Issue 12 section 5): registry, onboarding at run time, suspension on
every call and stream, security assessments, quotas with RetryInfo, usage and the risk monitor.

Unit tests for the token buckets, the quota precedence, the config tables, the
monitor's thresholds and assessment expiry; in-process gRPC against a real node
over mTLS (fake agents that really sign and seal) for the rest."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from xinrong import uscc as uscc_mod
from xinrong.catalog import Catalog
from xinrong.config import ConfigError
from xinrong.errors import Reason
from xinrong.keys.layout import provision_party
from xinrong.node.audit import Decision
from xinrong.node.config import QuotaLimit, QuotasConfig, RiskConfig, load_config
from xinrong.node.institutions import BY_ASSESSMENT, SUSPENDED
from xinrong.node.quotas import Limit, QuotaBook, QuotaExceeded, TokenBucket
from xinrong.node.usage import RiskMonitor, usage_counts
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import decode_rpc_error
from xinrong.rpc.gate import current_stream
from xinrong.rpc.server import ServiceBinding, build_server
from xinrong.v1 import institutions_pb2 as ipb
from xinrong.v1 import institutions_pb2_grpc, node_pb2

from support.agent import Clock
from support.node_fakes import ACME, BETA, GAMMA, assert_refused, grant, open_verdicts, register, verify_request

PD = grpc.StatusCode.PERMISSION_DENIED
RE = grpc.StatusCode.RESOURCE_EXHAUSTED


# -- unit: buckets, quotas, config ----------------------------------------------------


def test_token_bucket_allows_a_burst_then_says_when_to_retry() -> None:
    bucket = TokenBucket(Limit(rate=2.0, burst=3), now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25)  # half a token refilled
    assert bucket.take(100.5) == 0.0
    assert bucket.take(200.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at the burst


def test_quota_precedence_and_per_replica_share() -> None:
    config = QuotasConfig(
        replicas=2,
        types={"bank": {"*": QuotaLimit(rate=10.0, burst=10), "Verify": QuotaLimit(rate=4.0, burst=4)}},
        institutions={"bank-a": {"Verify": QuotaLimit(rate=2.0, burst=2)}},
    )
    now = [0.0]
    book = QuotaBook(config, clock=lambda: now[0])
    assert book.limit_for("bank-b", "bank", "Verify", {}) == Limit(2.0, 2.0)  # type, halved
    assert book.limit_for("bank-b", "bank", "ListParties", {}) == Limit(5.0, 5.0)  # the type's "*"
    assert book.limit_for("bank-a", "bank", "Verify", {}) == Limit(1.0, 1.0)  # config override
    assert book.limit_for("bank-a", "bank", "Verify", {"Verify": Limit(8.0, 8.0)}) == Limit(4.0, 4.0)  # registry
    assert book.limit_for("ins-1", "insurer", "Verify", {}) is None  # no table: no limit
    book.take("bank-a", "bank", "Verify")
    with pytest.raises(QuotaExceeded) as info:
        book.take("bank-a", "bank", "Verify")
    assert info.value.reason is Reason.QUOTA_EXHAUSTED and info.value.retry_after == pytest.approx(1.0)
    book.take("bank-b", "bank", "Verify")  # another institution's bucket
    now[0] = 1.0
    book.take("bank-a", "bank", "Verify")
    # Without a fixed count the share follows the live replicas; a new share gives no fresh burst.
    auto = QuotaBook(QuotasConfig(types=config.types), clock=lambda: now[0])
    assert auto.replicas == 1 and auto.limit_for("bank-b", "bank", "Verify", {}) == Limit(4.0, 4.0)
    for _ in range(4):
        auto.take("bank-b", "bank", "Verify")
    auto.set_live_replicas(2)
    assert auto.limit_for("bank-b", "bank", "Verify", {}) == Limit(2.0, 2.0)
    with pytest.raises(QuotaExceeded):
        auto.take("bank-b", "bank", "Verify")


def test_quota_and_risk_tables_are_typed_and_validated(make_harness: Any) -> None:
    h = make_harness(start=False, tables="[quotas.types.bank]\nVerfy = { rate = 1.0, burst = 1 }\n")
    with pytest.raises(ConfigError, match="unknown methods \\['Verfy'\\]"):
        load_config(h.write_config())
    h = make_harness(start=False, tables="[quotas.types.bnak]\nVerify = { rate = 1.0, burst = 1 }\n")
    with pytest.raises(ConfigError, match="unknown institution types"):
        load_config(h.write_config())
    h = make_harness(start=False, tables='[quotas.types.bank]\nVerify = { rate = "1", burst = 1 }\n')
    with pytest.raises(ConfigError):
        load_config(h.write_config())
    h = make_harness(start=False, tables="[risk]\nbusiness_hours = [20, 8]\n")
    with pytest.raises(ConfigError, match="business_hours"):
        load_config(h.write_config())
    h = make_harness(
        start=False,
        tables='[quotas]\nreplicas = 3\n[quotas.institutions.bank-a]\n"*" = { rate = 9, burst = 9 }\n'
        "[risk]\nmin_requests = 5\nauto_suspend = true\n",
    )
    config = load_config(h.write_config())
    assert config.quotas.replicas == 3 and config.quotas.institutions["bank-a"]["*"].rate == 9.0
    assert config.risk == RiskConfig(min_requests=5, auto_suspend=True)


def test_risk_monitor_thresholds_on_a_synthetic_audit_log(tmp_path: Any) -> None:
    """Each rule on its own, at and over its threshold, from audit rows with chosen times."""
    from xinrong.node.audit import AuditEvent, open_audit_log
    from xinrong.node.db import Database

    db = Database(tmp_path / "node.db")
    audit = open_audit_log(db)
    day = 1_790_000_000 - 1_790_000_000 % 86400  # a UTC midnight: 08:00 at UTC+8
    config = RiskConfig(min_requests=10, window_seconds=86400, max_refusal_rate=0.5, max_off_hours_share=0.5)
    monitor = RiskMonitor(db, audit, registry_stub(), config, node_id="node", clock=lambda: day + 86000)

    def add(bank: str, n: int, *, hour: float, refused: int = 0, enterprise: str = ACME, consent: str = "c1") -> None:
        with db.transaction() as tx:
            for i in range(n):
                decision = Decision.REFUSED if i < refused else Decision.ALLOWED
                event = AuditEvent("institution", bank, "Verify", decision, enterprise=enterprise, consent_id=consent)
                audit.append(tx, event, int((day + hour * 3600 + i) * 1000))

    add("bank-a", 9, hour=2)  # 10:00 local, allowed
    assert monitor.evaluate("bank-a", day + 86000) == []  # 9 < min_requests
    add("bank-a", 1, hour=2)
    assert monitor.evaluate("bank-a", day + 86000) == []
    add("bank-b", 10, hour=2, refused=5)  # exactly half refused: not over
    assert monitor.evaluate("bank-b", day + 86000) == []
    add("bank-b", 1, hour=2, refused=1)
    assert [f.rule for f in monitor.evaluate("bank-b", day + 86000)] == ["RISK_REFUSAL_RATE"]
    add("bank-c", 6, hour=15)  # 23:00 local
    add("bank-c", 5, hour=3)
    flags = monitor.evaluate("bank-c", day + 86000)
    assert [f.rule for f in flags] == ["RISK_OFF_HOURS"] and flags[0].value == pytest.approx(6 / 11)
    add("bank-d", 10, hour=4)
    add("bank-d", 1, hour=4, enterprise=BETA)
    add("bank-d", 1, hour=4, enterprise=GAMMA)
    flags = monitor.evaluate("bank-d", day + 86000)
    assert [(f.rule, f.value) for f in flags] == [("RISK_ENTERPRISES_PER_CONSENT", 3)]
    # Outside the window nothing counts.
    assert monitor.evaluate("bank-d", day + 3 * 86400) == []
    db.close()


def registry_stub() -> Any:
    class Empty:
        def all(self) -> list[Any]:
            return []

    return Empty()


# -- in-process gRPC -----------------------------------------------------------------------


def _admin(h: Any, pki: Any) -> Any:
    channel = secure_channel(f"127.0.0.1:{h.node.port}", pki.node, server_role="node", server_id="node")
    h._channels.append(channel)
    return institutions_pb2_grpc.InstitutionAdminServiceStub(channel)


def _verify(pki: Any, stub: Any, consent: Any, bank: str = "bank-a", enterprise: str = ACME) -> dict[str, str]:
    req = verify_request(consent, enterprise=enterprise)
    return open_verdicts(pki, bank, stub.Verify(req, timeout=10), req.request_id)


def _retry_delay(err: grpc.RpcError) -> float | None:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToMilliseconds()) / 1000
    return None


def test_config_institutions_are_imported_active_and_listed(make_harness: Any, pki: Any) -> None:
    h = make_harness(["tax"])
    admin = _admin(h, pki)
    listed = admin.ListInstitutions(ipb.ListInstitutionsRequest(), timeout=10).institutions
    assert [(i.institution_id, i.status, i.source, i.type) for i in listed] == [
        ("bank-a", ipb.INSTITUTION_STATUS_ACTIVE, "config", ipb.INSTITUTION_TYPE_BANK),
        ("bank-b", ipb.INSTITUTION_STATUS_ACTIVE, "config", ipb.INSTITUTION_TYPE_BANK),
    ]
    # Only the node's own identity may administer: a bank is refused by the role check.
    bank_nhannel = secure_channel(
        f"127.0.0.1:{h.node.port}", pki.institution("bank-a"), server_role="node", server_id="node"
    )
    h._channels.append(bank_nhannel)
    bank_admin = institutions_pb2_grpc.InstitutionAdminServiceStub(bank_nhannel)
    assert_refused(
        lambda: bank_admin.ListInstitutions(ipb.ListInstitutionsRequest(), timeout=10),
        PD,
        Reason.CALLER_NOT_ALLOWED,
    )


def test_suspension_refuses_every_call_until_resumed_and_survives_a_restart(
    make_harness: Any, pki: Any, catalog: Catalog
) -> None:
    h = make_harness(["tax"])
    admin = _admin(h, pki)
    consent = grant(pki, catalog, max_uses=500)
    register(h.enterprise(ACME), consent)
    assert _verify(pki, h.bank(), consent) == {"tax.credit_grade in A,B": "TRUE"}
    got = admin.SuspendInstitution(ipb.SuspendInstitutionRequest(institution_id="bank-a", reason="audit"), timeout=10)
    assert got.institution.status == ipb.INSTITUTION_STATUS_SUSPENDED and got.institution.suspended_by == "operator"
    bank = h.bank()
    err = assert_refused(lambda: bank.Verify(verify_request(consent), timeout=10), PD, Reason.INSTITUTION_SUSPENDED)
    # The institution learns its own status, nothing else (not the operator's reason).
    assert "audit" not in (err.details() or "")
    assert_refused(
        lambda: bank.ListParties(node_pb2.ListPartiesRequest(), timeout=10), PD, Reason.INSTITUTION_SUSPENDED
    )
    # Another bank is untouched.
    consent_b = grant(pki, catalog, grantee="bank-b")
    register(h.enterprise(ACME), consent_b)
    assert _verify(pki, h.bank("bank-b"), consent_b, bank="bank-b") == {"tax.credit_grade in A,B": "TRUE"}
    assert h.node.core.gate.suspended_refused == 2
    # A restart keeps the suspension (the config import does not reactivate it).
    h.restart()
    assert_refused(lambda: h.bank().Verify(verify_request(consent), timeout=10), PD, Reason.INSTITUTION_SUSPENDED)
    _admin(h, pki).ResumeInstitution(ipb.ResumeInstitutionRequest(institution_id="bank-a"), timeout=10)
    assert _verify(pki, h.bank(), consent) == {"tax.credit_grade in A,B": "TRUE"}
    actions = [r[0] for r in h.query("SELECT method FROM audit_log WHERE caller_role = 'node' ORDER BY seq")]
    assert actions == ["InstitutionAdmin.Suspend", "InstitutionAdmin.Resume"]


def _stream_binding(ticks: list[int]) -> ServiceBinding:
    """A test service with one server stream that never ends by itself."""

    async def watch(request: Any, context: Any) -> Any:
        stream = current_stream()
        assert stream is not None and stream.peer.party_id == "bank-a"
        n = 0
        while True:
            n += 1
            ticks.append(n)
            yield node_pb2.GetCatalogResponse(sha256=str(n))
            await asyncio.sleep(0.05)

    def register_handlers(server: Any) -> None:
        handler = grpc.unary_stream_rpc_method_handler(
            watch,
            request_deserializer=node_pb2.GetCatalogRequest.FromString,
            response_serializer=node_pb2.GetCatalogResponse.SerializeToString,
        )
        server.add_registered_method_handlers("xinrong.test.Watch", {"Watch": handler})

    return ServiceBinding("xinrong.test.Watch", register_handlers, frozenset({"institution"}))


def _blocking_stream_binding(ticks: list[int]) -> ServiceBinding:
    """The same stream as a plain generator (run in the server's thread pool): it polls its
    ``current_stream()`` between messages and stops once the gate cancelled it."""

    def watch(request: Any, context: Any) -> Any:
        stream = current_stream()
        assert stream is not None
        n = 0
        while not stream.cancelled.wait(0.05):
            n += 1
            ticks.append(n)
            yield node_pb2.GetCatalogResponse(sha256=str(n))
        ticks.append(-1)  # the handler saw the cancellation and returned

    def register_handlers(server: Any) -> None:
        handler = grpc.unary_stream_rpc_method_handler(
            watch,
            request_deserializer=node_pb2.GetCatalogRequest.FromString,
            response_serializer=node_pb2.GetCatalogResponse.SerializeToString,
        )
        server.add_registered_method_handlers("xinrong.test.Watch", {"Watch": handler})

    return ServiceBinding("xinrong.test.Watch", register_handlers, frozenset({"institution"}))


@pytest.mark.parametrize("handler", ["coroutine", "thread"])
def test_suspension_closes_open_streams_with_the_same_status(make_harness: Any, pki: Any, handler: str) -> None:
    h = make_harness(["tax"])
    ticks: list[int] = []
    binding = _stream_binding(ticks) if handler == "coroutine" else _blocking_stream_binding(ticks)
    side = build_server(pki.node, "127.0.0.1:0", [binding], runtime="asyncio", gate=h.node.core.gate)
    side.set_serving(True)
    try:
        channel = secure_channel(
            f"127.0.0.1:{side.port}", pki.institution("bank-a"), server_role="node", server_id="node"
        )
        h._channels.append(channel)
        watch = channel.unary_stream(
            "/xinrong.test.Watch/Watch",
            request_serializer=node_pb2.GetCatalogRequest.SerializeToString,
            response_deserializer=node_pb2.GetCatalogResponse.FromString,
        )
        call = watch(node_pb2.GetCatalogRequest(), timeout=20)
        received: list[str] = []
        errors: list[grpc.RpcError] = []

        def read() -> None:
            try:
                received.extend(m.sha256 for m in call)
            except grpc.RpcError as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        deadline = time.monotonic() + 10
        while len(ticks) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert h.node.core.gate.streams.count() == 1
        started = time.monotonic()
        _admin(h, pki).SuspendInstitution(ipb.SuspendInstitutionRequest(institution_id="bank-a", reason="r"))
        reader.join(timeout=10)
        assert time.monotonic() - started < 2.0
        assert errors and errors[0].code() == PD
        assert decode_rpc_error(errors[0]).reason == Reason.INSTITUTION_SUSPENDED.value
        deadline = time.monotonic() + 5
        while h.node.core.gate.streams.count() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(received) >= 3 and h.node.core.gate.streams.count() == 0
        if handler == "thread":
            _until(lambda: ticks[-1] == -1)
        # A new stream is refused at once.
        with pytest.raises(grpc.RpcError) as info:
            list(watch(node_pb2.GetCatalogRequest(), timeout=10))
        assert decode_rpc_error(info.value).reason == Reason.INSTITUTION_SUSPENDED.value
    finally:
        side.stop(0)


def test_quota_refuses_with_resource_exhausted_and_retry_info(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], tables="[quotas.types.bank]\nVerify = { rate = 0.2, burst = 2 }\n")
    consent = grant(pki, catalog, max_uses=500)
    register(h.enterprise(ACME), consent)
    bank = h.bank()
    for _ in range(2):
        _verify(pki, bank, consent)
    err = assert_refused(lambda: bank.Verify(verify_request(consent), timeout=10), RE, Reason.QUOTA_EXHAUSTED)
    delay = _retry_delay(err)
    assert delay is not None and 3.0 < delay <= 5.0
    # Other methods have no limit; the refused call consumed no consent use.
    bank.ListParties(node_pb2.ListPartiesRequest(), timeout=10)
    assert h.query("SELECT count(*) FROM audit_log WHERE method = 'Verify'") == [(2,)]
    # A per-institution override from the registry takes effect at once.
    _admin(h, pki).SetQuota(
        ipb.SetQuotaRequest(institution_id="bank-a", quota=ipb.QuotaOverride(method="Verify", rate=100, burst=100))
    )
    _verify(pki, bank, consent)


def test_onboarding_at_run_time_then_verify(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"])
    provision_party(pki.ca, pki.root, role="institution", party_id="bank-n")
    creds = pki.institution("bank-n")
    consent = grant(pki, catalog, grantee="bank-n")
    bank_n = h.bank("bank-n")
    assert_refused(lambda: bank_n.Verify(verify_request(consent), timeout=10), PD, Reason.CALLER_NOT_ALLOWED)
    admin = _admin(h, pki)
    got = admin.RegisterInstitution(
        ipb.RegisterInstitutionRequest(binding=creds.binding.signed, name="Bank N", type=ipb.INSTITUTION_TYPE_BANK),
        timeout=10,
    ).institution
    assert (got.institution_id, got.source, got.status) == ("bank-n", "registered", ipb.INSTITUTION_STATUS_ACTIVE)
    register(h.enterprise(ACME), consent)
    assert _verify(pki, bank_n, consent, bank="bank-n") == {"tax.credit_grade in A,B": "TRUE"}
    # Kept across a restart although the config does not name it.
    h.restart()
    assert _verify(pki, h.bank("bank-n"), grant_registered(h, pki, catalog), bank="bank-n")
    usage = _admin(h, pki).GetInstitutionUsage(ipb.GetInstitutionUsageRequest(institution_id="bank-n"), timeout=10)
    assert usage.total == 3
    assert {(c.purpose, c.provider, c.decision): c.count for c in usage.counts} == {
        ("Verify", "tax", "ALLOWED"): 2,
        ("Verify", "", "REFUSED"): 1,
    }
    # A binding of another role is refused.
    bad = ipb.RegisterInstitutionRequest(binding=pki.provider("tax").binding.signed, type=ipb.INSTITUTION_TYPE_BANK)
    assert_refused(
        lambda: _admin(h, pki).RegisterInstitution(bad, timeout=10),
        grpc.StatusCode.INVALID_ARGUMENT,
        Reason.INVALID_ARGUMENT,
    )


def grant_registered(h: Any, pki: Any, catalog: Catalog) -> Any:
    consent = grant(pki, catalog, grantee="bank-n")
    register(h.enterprise(ACME), consent)
    return consent


@pytest.fixture
def clock() -> Iterator[Clock]:
    yield Clock()


def test_failed_or_expired_assessment_suspends_and_due_lists(
    make_harness: Any, pki: Any, catalog: Catalog, clock: Clock
) -> None:
    h = make_harness(["tax"], clock=clock, tables="[institution_policy]\nassessment_check_seconds = 0.1\n")
    admin = _admin(h, pki)
    now = int(clock.now)
    due = admin.ListDueAssessments(ipb.ListDueAssessmentsRequest(within_days=30), timeout=10).institutions
    assert [i.institution_id for i in due] == ["bank-a", "bank-b"]  # never assessed
    for bank, days in (("bank-a", 20), ("bank-b", 90)):
        admin.RecordAssessment(
            ipb.RecordAssessmentRequest(
                institution_id=bank,
                assessment=ipb.SecurityAssessment(
                    assessed_at=now - 86400,
                    result=ipb.ASSESSMENT_RESULT_PASS,
                    valid_until=now + days * 86400,
                    assessor="CFCA lab",
                ),
            ),
            timeout=10,
        )
    due = admin.ListDueAssessments(ipb.ListDueAssessmentsRequest(within_days=30), timeout=10).institutions
    assert [i.institution_id for i in due] == ["bank-a"]
    registry = h.node.core.institutions
    assert registry.enforce_assessments() == []
    clock.now += 21 * 86400
    # The node's institution thread finds the expiry by itself (every assessment_check_seconds).
    _until(lambda: registry.require("bank-a").suspended, timeout=5.0)
    inst = registry.require("bank-a")
    assert (inst.status, inst.suspended_by, inst.status_reason) == (
        SUSPENDED,
        BY_ASSESSMENT,
        "security assessment expired",
    )
    # A failed assessment suspends at once.
    got = admin.RecordAssessment(
        ipb.RecordAssessmentRequest(
            institution_id="bank-b",
            assessment=ipb.SecurityAssessment(
                assessed_at=int(clock.now),
                result=ipb.ASSESSMENT_RESULT_FAIL,
                valid_until=int(clock.now) + 86400,
                assessor="CFCA lab",
            ),
        ),
        timeout=10,
    ).institution
    assert got.status == ipb.INSTITUTION_STATUS_SUSPENDED and got.suspended_by == BY_ASSESSMENT


def test_risk_monitor_flags_probing_with_audit_entries(make_harness: Any, pki: Any, catalog: Catalog) -> None:
    h = make_harness(["tax"], tables="[risk]\nmin_requests = 6\nauto_suspend = true\nmax_off_hours_share = 1.0\n")
    consent = grant(pki, catalog, max_uses=500)
    register(h.enterprise(ACME), consent)
    bank = h.bank()
    for _ in range(2):
        _verify(pki, bank, consent)
    monitor: RiskMonitor = h.node.core.risk
    assert monitor.tick() == []  # too few decisions
    # Probing: one consent id tried on other enterprises (each refused, uniformly).
    others = [uscc_mod.make("9", "1", "130400", f"MA0PRB0{i}") for i in range(3)]
    for enterprise in (BETA, GAMMA, *others):
        with pytest.raises(grpc.RpcError):
            bank.Verify(verify_request(consent, enterprise=enterprise), timeout=10)
    flags = monitor.tick()
    assert sorted(f.rule for f in flags) == ["RISK_ENTERPRISES_PER_CONSENT", "RISK_REFUSAL_RATE"]
    rows = h.query("SELECT reason, fields FROM audit_log WHERE decision = ? ORDER BY seq", (Decision.FLAGGED.value,))
    assert sorted(r[0] for r in rows) == ["RISK_ENTERPRISES_PER_CONSENT", "RISK_REFUSAL_RATE"]
    assert all("institution:bank-a" in r[1] for r in rows)
    assert h.node.core.institutions.require("bank-a").suspended_by == "risk_monitor"
    usage = _admin(h, pki).GetInstitutionUsage(ipb.GetInstitutionUsageRequest(institution_id="bank-a"), timeout=10)
    assert sorted(c.purpose for c in usage.counts if c.decision == "FLAGGED") == [
        "InstitutionRiskFlag:RISK_ENTERPRISES_PER_CONSENT",
        "InstitutionRiskFlag:RISK_REFUSAL_RATE",
    ]
    assert monitor.tick() == []  # suspended: not evaluated again


# -- replicas on one PostgreSQL ------------------------------------------------------------


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


def _until(predicate: Any, timeout: float = 5.0) -> float:
    """Seconds until predicate() holds (polled every 20 ms); fails after timeout."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "condition not reached in time"
        time.sleep(0.02)
    return time.monotonic() - started


def _reason(call: Any) -> str:
    try:
        call()
    except grpc.RpcError as exc:
        return decode_rpc_error(exc).reason
    return ""


def test_a_suspension_at_one_replica_holds_at_the_other_within_a_second(
    make_harness: Any, pki: Any, catalog: Catalog, pg_cluster: Any
) -> None:
    """Two nodes sharing one PostgreSQL (in process, as two replicas): the registry's version
    counter carries a suspension, a resumption and an onboarding to the other replica."""
    from support.pg import database_table

    table = database_table(pg_cluster)
    h0 = make_harness(["tax"], database=table)
    h1 = make_harness(["tax"], database=table)
    consent = grant(pki, catalog, max_uses=500)
    register(h0.enterprise(ACME), consent)
    bank1 = h1.bank()
    assert _verify(pki, bank1, consent) == {"tax.credit_grade in A,B": "TRUE"}
    # The usage counts and the risk monitor's aggregates, in PostgreSQL's spelling.
    h0.flush_audit()
    assert usage_counts(h1.node.core.db, "bank-a", 0) == Counter({(_today(), "Verify", "tax", "ALLOWED"): 1})
    risky = RiskMonitor(
        h1.node.core.db,
        h1.node.core.audit,
        h1.node.core.institutions,
        RiskConfig(min_requests=1, max_off_hours_share=1.0),
        node_id="node",
        clock=time.time,
    )
    assert risky.evaluate("bank-a", time.time()) == []
    # Each replica enforces half of every limit once it has seen the other's heartbeat.
    _until(lambda: h0.node.core.quotas.replicas == h1.node.core.quotas.replicas == 2)
    _admin(h0, pki).SuspendInstitution(ipb.SuspendInstitutionRequest(institution_id="bank-a", reason="r"), timeout=10)
    waited = _until(
        lambda: _reason(lambda: bank1.Verify(verify_request(consent), timeout=10)) == "INSTITUTION_SUSPENDED"
    )
    assert waited < 1.0
    _admin(h1, pki).ResumeInstitution(ipb.ResumeInstitutionRequest(institution_id="bank-a"), timeout=10)
    bank0 = h0.bank()
    assert _until(lambda: _reason(lambda: bank0.ListParties(node_pb2.ListPartiesRequest(), timeout=10)) == "") < 1.0
    # Onboarded at replica 0, admitted at replica 1.
    ident = "bank-r"
    provision_party(pki.ca, pki.root, role="institution", party_id=ident, overwrite=True)
    _admin(h0, pki).RegisterInstitution(
        ipb.RegisterInstitutionRequest(
            binding=pki.institution(ident).binding.signed, type=ipb.INSTITUTION_TYPE_INSURER
        ),
        timeout=10,
    )
    consent_r = grant(pki, catalog, grantee=ident)
    _until(lambda: h1.node.core.registry.get("institution", ident) is not None, timeout=2.0)
    register(h1.enterprise(ACME), consent_r)
    assert _verify(pki, h1.bank(ident), consent_r, bank=ident) == {"tax.credit_grade in A,B": "TRUE"}


@pytest.mark.parametrize("runtime", ["threads", "asyncio"])
def test_the_gate_is_asked_once_per_call_on_both_runtimes(pki: Any, runtime: str) -> None:
    """``build_server(gate=...)``: after the role check, before decoding; its refusal is the status."""
    from xinrong.errors import XinrongError
    from xinrong.rpc.auth import Peer
    from xinrong.rpc.gate import OpenGate

    asked: list[tuple[str, str]] = []

    class Gate(OpenGate):
        def admit(self, peer: Peer, method: str) -> None:
            asked.append((peer.party_id, method))
            if peer.party_id == "bank-b":
                raise XinrongError("test", reason=Reason.INSTITUTION_SUSPENDED)

    def catalog(request: Any, context: Any) -> Any:
        return node_pb2.GetCatalogResponse(sha256="ok")

    def register_handlers(server: Any) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            catalog,
            request_deserializer=node_pb2.GetCatalogRequest.FromString,
            response_serializer=node_pb2.GetCatalogResponse.SerializeToString,
        )
        server.add_registered_method_handlers("xinrong.test.Cat", {"Get": handler})

    binding = ServiceBinding("xinrong.test.Cat", register_handlers, frozenset({"institution"}))
    server = build_server(pki.node, "127.0.0.1:0", [binding], runtime=runtime, gate=Gate())  # type: ignore[arg-type]
    server.set_serving(True)
    try:
        for bank, expected in (("bank-a", ""), ("bank-b", "INSTITUTION_SUSPENDED")):
            with secure_channel(
                f"127.0.0.1:{server.port}", pki.institution(bank), server_role="node", server_id="node"
            ) as channel:
                call = channel.unary_unary(
                    "/xinrong.test.Cat/Get",
                    request_serializer=node_pb2.GetCatalogRequest.SerializeToString,
                    response_deserializer=node_pb2.GetCatalogResponse.FromString,
                )
                assert _reason(lambda: call(node_pb2.GetCatalogRequest(), timeout=10)) == expected
        assert asked == [("bank-a", "/xinrong.test.Cat/Get"), ("bank-b", "/xinrong.test.Cat/Get")]
    finally:
        server.stop(0)
