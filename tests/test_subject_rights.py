"""Subject rights, in process over real mTLS: the enterprise reads all its data (sealed to it),
files an objection (DISPUTED on the bank's answers until resolved), applies for repair (the
negative item then answers NO_DATA), pauses and resumes a consent (node and agents refuse),
and can never reach another enterprise's records. The node keeps no raw value."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong import subject as subj
from xinrong.catalog import Catalog
from xinrong.enterprise.client import SubjectClient
from xinrong.errors import Reason
from xinrong.node.server import NodeServer
from xinrong.provider_agent import store as agent_store
from xinrong.provider_agent.subject import (
    APPROVED,
    CORRECTED,
    OBJECTION,
    REPAIR,
    SubjectStore,
    current_cell_sha256,
    subject_db_path,
)
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError
from xinrong.v1 import agent_pb2, agent_pb2_grpc, common_pb2, node_pb2, node_pb2_grpc, subject_pb2, subject_pb2_grpc

from support.node_fakes import (
    ACME,
    BETA,
    assert_refused,
    consent_id_of,
    grant,
    indicators_request,
    open_verdicts,
    verify_request,
)
from support.platform import real_platform

AS_OF = "2026-06-30"
CSV = {
    "tax": (
        "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
        "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
        f"{ACME},{AS_OF},A,false,true,1234.56,734512.37,88231.90,27,,true\n"
        f"{BETA},{AS_OF},C,true,true,51234.11,,,2,,false\n"
    ),
    "social_insurance": (
        "uscc,as_of,avg_insured_headcount,avg_employer_contribution,consecutive_months,last_normal_month,in_arrears\n"
        f"{ACME},{AS_OF},83,48213.77,19,2026-06-01,false\n"
    ),
}
RAW = ["734512.37", "88231.90", "48213.77", "51234.11", "1234.56"]


@contextlib.contextmanager
def _platform(
    pki: Any, catalog: Catalog, tmp_path: Path, database: dict[str, Any] | None = None
) -> Iterator[tuple[NodeServer, dict[str, Any]]]:
    with real_platform(pki, catalog, tmp_path, CSV, database=database, poll_seconds=0.2) as running:
        yield running


@pytest.fixture
def platform(pki: Any, catalog: Catalog, tmp_path: Path) -> Iterator[tuple[NodeServer, dict[str, Any]]]:
    with _platform(pki, catalog, tmp_path) as running:
        yield running


def _client(node: NodeServer, creds: Any) -> SubjectClient:
    return SubjectClient(f"127.0.0.1:{node.port}", creds)


def _bank(node: NodeServer, pki: Any) -> tuple[grpc.Channel, Any]:
    channel = secure_channel(f"127.0.0.1:{node.port}", pki.institution("bank-a"), server_role="node", server_id="node")
    return channel, node_pb2_grpc.NodeServiceStub(channel)


def _disputed(pki: Any, resp: Any, request_id: str) -> dict[str, tuple[str, bool]]:
    creds = pki.institution("bank-a")
    out: dict[str, tuple[str, bool]] = {}
    for answer in resp.answers:
        raw = creds.sealing_key.open(
            answer.sealed, recipient_id="bank-a", content_type="xinrong.v1.AnswerBundle", context=request_id
        )
        for signed in common_pb2.AnswerBundle.FromString(raw).verdicts:
            pki.provider(answer.provider).binding.verify_key.verify(
                "xinrong.v1.Verdict", signed.verdict, signed.signature
            )
            v = common_pb2.Verdict.FromString(signed.verdict)
            out[v.claim_text] = (common_pb2.VerdictResult.Name(v.result).removeprefix("VERDICT_RESULT_"), v.disputed)
    return out


def _case_store(agent: Any) -> SubjectStore:
    assert agent.subject is not None
    return agent.subject  # type: ignore[no-any-return]


def test_enterprise_reads_all_its_data_sealed_and_uniform(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, _agents = platform
    with _client(node, pki.enterprise(ACME)) as client:
        reports, unavailable = client.my_data()
        assert unavailable == []
        by = {r.provider: r.report for r in reports}
        assert sorted(by) == ["social_insurance", "tax"]
        tax = {f.field: f for f in by["tax"].fields}
        assert tax["tax.vat_paid_last_year"].value == "734512.37"  # raw, to the enterprise itself
        assert tax["tax.in_arrears"].value == "true"
        assert by["tax"].data_as_of == AS_OF
        assert all(f.status == subject_pb2.FIELD_STATUS_NORMAL for f in tax.values())
        # Every field of the provider, held or not.
        assert set(tax) == {f.key for f in catalog.provider_fields("tax")}
    # Another enterprise's answers are as long as ACME's (padded by the sealing rule).
    creds_beta = pki.enterprise(BETA)
    query = subj.sign_query(BETA, creds_beta.signing_key)
    channel = secure_channel(f"127.0.0.1:{node.port}", creds_beta, server_role="node", server_id="node")
    try:
        stub = subject_pb2_grpc.SubjectServiceStub(channel)
        beta = stub.GetMyData(
            subject_pb2.GetMyDataRequest(query=query, enterprise_binding=creds_beta.binding.signed), timeout=10
        )
        query = subj.sign_query(ACME, pki.enterprise(ACME).signing_key)
    finally:
        channel.close()
    channel = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(ACME), server_role="node", server_id="node")
    try:
        acme = subject_pb2_grpc.SubjectServiceStub(channel).GetMyData(
            subject_pb2.GetMyDataRequest(query=query, enterprise_binding=pki.enterprise(ACME).binding.signed),
            timeout=10,
        )
    finally:
        channel.close()
    # One length per provider (its field count is public), whichever enterprise and values.
    lengths: dict[str, set[int]] = {}
    for a in list(beta.answers) + list(acme.answers):
        lengths.setdefault(a.provider, set()).add(len(a.sealed.ciphertext))
    assert sorted(lengths) == ["social_insurance", "tax"] and all(len(v) == 1 for v in lengths.values()), lengths
    # The node stored and logged no raw value of these answers.
    db = node.core.config.db
    assert db is not None
    blob = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for value in RAW:
        assert value.encode() not in blob
    # Each request is an audit entry of the SELF_SERVICE purpose, with no consent.
    rows = node.core.db.query("SELECT COUNT(*) FROM audit_log")
    assert int(rows[0][0]) >= 3


def test_an_enterprise_cannot_reach_another_enterprises_records(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, _agents = platform
    acme = pki.enterprise(ACME)
    beta = pki.enterprise(BETA)
    channel = secure_channel(f"127.0.0.1:{node.port}", acme, server_role="node", server_id="node")
    try:
        stub = subject_pb2_grpc.SubjectServiceStub(channel)
        # 1. A query naming BETA, signed by ACME's key, with ACME's binding.
        forged = subject_pb2.SubjectQuery(
            request_id=str(uuid.uuid4()), enterprise_uscc=BETA, requested_at=int(time.time()), nonce=b"x" * 16
        )
        raw = forged.SerializeToString(deterministic=True)
        signed = subject_pb2.SignedSubjectQuery(query=raw, signature=acme.signing_key.sign(subj.QUERY_CONTEXT, raw))
        for binding in (acme.binding.signed, beta.binding.signed):
            assert_refused(
                lambda: stub.GetMyData(
                    subject_pb2.GetMyDataRequest(query=signed, enterprise_binding=binding), timeout=10
                ),
                grpc.StatusCode.PERMISSION_DENIED,
                Reason.ACCESS_DENIED,
            )
        # 2. BETA's own binding and a query BETA signed, replayed over ACME's certificate.
        beta_query = subj.sign_query(BETA, beta.signing_key)
        assert_refused(
            lambda: stub.GetMyData(
                subject_pb2.GetMyDataRequest(query=beta_query, enterprise_binding=beta.binding.signed), timeout=10
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.ACCESS_DENIED,
        )
        # 3. Pausing BETA's consent with ACME's certificate: the uniform denial.
        beta_consent = grant(pki, catalog, BETA)
        bank_channel, bank = _bank(node, pki)
        try:
            bank.RegisterConsent(node_pb2.RegisterConsentRequest(consent=beta_consent), timeout=10)
        finally:
            bank_channel.close()
        change = subj.sign_state_change(
            consent_id_of(beta_consent), BETA, subject_pb2.CONSENT_ACTION_PAUSE, beta.signing_key
        )
        assert_refused(
            lambda: stub.ChangeConsentState(subject_pb2.ChangeConsentStateRequest(change=change), timeout=10),
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.ACCESS_DENIED,
        )
        # ACME's consent list does not show BETA's consent.
        listed = stub.ListMyConsents(subject_pb2.ListMyConsentsRequest(), timeout=10)
        assert consent_id_of(beta_consent) not in [c.consent_id for c in listed.consents]
    finally:
        channel.close()
    # A bank cannot call the subject service at all.
    bank_channel, _ = _bank(node, pki)
    try:
        with pytest.raises(grpc.RpcError) as info:
            subject_pb2_grpc.SubjectServiceStub(bank_channel).ListMyConsents(
                subject_pb2.ListMyConsentsRequest(), timeout=10
            )
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        bank_channel.close()


def test_objection_marks_disputed_until_resolved(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, agents = platform
    consent = grant(pki, catalog, ACME)
    channel, bank = _bank(node, pki)
    try:
        bank.RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=10)
        claims = ["tax.credit_grade in A,B", "tax.vat_paid_last_year >= 500000"]
        with _client(node, pki.enterprise(ACME)) as client:
            filed = client.file_case(
                kind=OBJECTION,
                field="tax.credit_grade",
                statement="our grade was restored in May",
                evidence=b"%PDF-1.4 letter",
                evidence_name="letter.pdf",
            )
            assert filed.state == subject_pb2.CASE_STATE_OPEN
            req = verify_request(consent, claims)
            got = _disputed(pki, bank.Verify(req, timeout=10), req.request_id)
            assert got == {
                "tax.credit_grade in A,B": ("TRUE", True),
                "tax.vat_paid_last_year >= 500000": ("TRUE", False),
            }
            ireq = indicators_request(consent, [("tax.credit_grade", "grade"), ("tax.in_arrears", "flag")])
            iresp = bank.GetIndicators(ireq, timeout=10)
            marks = {}
            for answer in iresp.answers:
                raw = pki.institution("bank-a").sealing_key.open(
                    answer.sealed,
                    recipient_id="bank-a",
                    content_type="xinrong.v1.AnswerBundle",
                    context=ireq.request_id,
                )
                for signed in common_pb2.AnswerBundle.FromString(raw).indicators:
                    ind = common_pb2.Indicator.FromString(signed.indicator)
                    marks[ind.field] = ind.disputed
            assert marks == {"tax.credit_grade": True, "tax.in_arrears": False}
            reports, _ = client.my_data()
            tax = next(r.report for r in reports if r.provider == "tax")
            assert {f.field: f.status for f in tax.fields}["tax.credit_grade"] == subject_pb2.FIELD_STATUS_DISPUTED
            assert [c.state for c in tax.cases] == [subject_pb2.CASE_STATE_OPEN]
            # The provider resolves (the CLI writes the same file from another connection).
            store = SubjectStore(subject_db_path(agents["tax"].state.path))
            try:
                assert [c.case_id for c in store.cases(kind=OBJECTION)] == [filed.case_id]
                assert store.cases()[0].evidence_bytes == len(b"%PDF-1.4 letter")
                store.resolve(filed.case_id, kind=OBJECTION, state=CORRECTED)
            finally:
                store.close()
            req = verify_request(consent, claims)
            got = _disputed(pki, bank.Verify(req, timeout=10), req.request_id)
            assert got["tax.credit_grade in A,B"] == ("TRUE", False)
            case = client.cases(OBJECTION)[0]
            assert case.state == subject_pb2.CASE_STATE_CORRECTED
            assert [e.state for e in case.history] == [subject_pb2.CASE_STATE_OPEN, subject_pb2.CASE_STATE_CORRECTED]
            # A field of another provider, or an unknown field, is refused precisely (it is the caller's own business).
            with pytest.raises(RemoteError) as info:
                client.file_case(kind=OBJECTION, field="tax.nonexistent", statement="x")
            assert info.value.reason == Reason.INVALID_ARGUMENT.value
    finally:
        channel.close()
    # The agent logged each step, without the statement.
    log = _case_store(agents["tax"]).subject_log()
    assert {a for _t, a, *_ in log} >= {"case_filed", "report", "query"}


def test_repair_hides_the_negative_item(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, agents = platform
    consent = grant(pki, catalog, ACME)
    channel, bank = _bank(node, pki)
    try:
        bank.RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=10)
        with _client(node, pki.enterprise(ACME)) as client:
            req = verify_request(consent, ["tax.in_arrears == true"])
            assert open_verdicts(pki, "bank-a", bank.Verify(req, timeout=10), req.request_id) == {
                "tax.in_arrears == true": "TRUE"
            }
            filed = client.file_case(kind=REPAIR, field="tax.in_arrears", statement="arrears paid on 2026-07-02")
            data = agent_store.DataStore(agents["tax"].data.path, "tax")
            store = SubjectStore(subject_db_path(agents["tax"].state.path))
            try:
                sha = current_cell_sha256(data, catalog, ACME, "tax.in_arrears")
                store.resolve(filed.case_id, kind=REPAIR, state=APPROVED, effective_date="2026-01-01", value_sha256=sha)
            finally:
                store.close()
                data.close()
            req = verify_request(consent, ["tax.in_arrears == true", "tax.in_arrears == false"])
            assert open_verdicts(pki, "bank-a", bank.Verify(req, timeout=10), req.request_id) == {
                "tax.in_arrears == true": "NO_DATA",
                "tax.in_arrears == false": "NO_DATA",
            }
            reports, _ = client.my_data()
            tax = next(r.report for r in reports if r.provider == "tax")
            assert {f.field: f.status for f in tax.fields}["tax.in_arrears"] == subject_pb2.FIELD_STATUS_REPAIRED
            # Nothing to repair where nothing is held.
            with pytest.raises(RemoteError) as info:
                client.file_case(kind=REPAIR, field="tax.last_normal_payment_date", statement="x")
            assert info.value.reason == Reason.INVALID_ARGUMENT.value
            assert "nothing to repair" in info.value.message
    finally:
        channel.close()


def test_pause_refuses_at_node_and_agents_then_resume(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog
) -> None:
    node, agents = platform
    consent = grant(pki, catalog, ACME)
    cid = consent_id_of(consent)
    channel, bank = _bank(node, pki)
    try:
        bank.RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=10)
        with _client(node, pki.enterprise(ACME)) as client:
            paused = client.change_state(cid, pause=True)
            assert paused.state == common_pb2.CONSENT_STATE_PAUSED
            assert sorted(paused.providers_notified) == ["social_insurance", "tax"]
            assert_refused(
                lambda: bank.Verify(verify_request(consent), timeout=10),
                grpc.StatusCode.FAILED_PRECONDITION,
                Reason.CONSENT_PAUSED,
            )
            listed = {c.consent_id: c for c in client.list_consents()}
            assert listed[cid].state == common_pb2.CONSENT_STATE_PAUSED
            # The agent refuses on its own too (asked directly with the node's certificate).
            agent_channel = secure_channel(
                f"127.0.0.1:{agents['tax'].port}", pki.node, server_role="provider", server_id="tax"
            )
            try:
                direct = agent_pb2_grpc.AgentServiceStub(agent_channel)
                asked = agent_pb2.EvaluateClaimsRequest(
                    request_id=str(uuid.uuid4()),
                    requested_at=int(time.time()),
                    enterprise_uscc=ACME,
                    consent=consent,
                    audience_binding=pki.institution("bank-a").binding.signed,
                    claims=verify_request(consent).claims,
                )
                assert_refused(
                    lambda: direct.EvaluateClaims(asked, timeout=10),
                    grpc.StatusCode.FAILED_PRECONDITION,
                    Reason.CONSENT_PAUSED,
                )
                resumed = client.change_state(cid, pause=False)
                assert resumed.state == common_pb2.CONSENT_STATE_ACTIVE
                asked.request_id = str(uuid.uuid4())
                assert direct.EvaluateClaims(asked, timeout=10).sealed.ciphertext
            finally:
                agent_channel.close()
            req = verify_request(consent)
            assert open_verdicts(pki, "bank-a", bank.Verify(req, timeout=10), req.request_id) == {
                "tax.credit_grade in A,B": "TRUE"
            }
            listed = {c.consent_id: c for c in client.list_consents()}
            assert listed[cid].state == common_pb2.CONSENT_STATE_ACTIVE
            assert listed[cid].uses == 1
            # A replayed pause (the same signed message again) is refused.
            change = subj.sign_state_change(
                cid, ACME, subject_pb2.CONSENT_ACTION_PAUSE, pki.enterprise(ACME).signing_key
            )
            stub = subject_pb2_grpc.SubjectServiceStub(client._channel)
            stub.ChangeConsentState(subject_pb2.ChangeConsentStateRequest(change=change), timeout=10)
            assert_refused(
                lambda: stub.ChangeConsentState(subject_pb2.ChangeConsentStateRequest(change=change), timeout=10),
                grpc.StatusCode.ALREADY_EXISTS,
                Reason.REQUEST_REPLAYED,
            )
            # Revoked: no pause or resume any more.
            client.revoke(cid)
            with pytest.raises(RemoteError) as info:
                client.change_state(cid, pause=False)
            assert info.value.reason == Reason.FAILED_PRECONDITION.value
    finally:
        channel.close()


def test_agent_refuses_a_filing_not_signed_by_the_enterprise(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any
) -> None:
    node, _agents = platform
    acme, beta = pki.enterprise(ACME), pki.enterprise(BETA)
    filing = subj.build_filing(
        kind=OBJECTION, enterprise_uscc=ACME, provider="tax", field="tax.credit_grade", statement="forged"
    )
    signed = subj.sign_filing(filing, beta.signing_key)  # not ACME's key
    tax = pki.provider("tax").binding
    box = subj.seal_filing(signed, provider="tax", sealing_public_raw=tax.sealing_public_raw, case_id=filing.case_id)
    channel = secure_channel(f"127.0.0.1:{node.port}", acme, server_role="node", server_id="node")
    try:
        stub = subject_pb2_grpc.SubjectServiceStub(channel)
        assert_refused(
            lambda: stub.FileCase(
                subject_pb2.FileCaseRequest(
                    query=subj.sign_query(ACME, acme.signing_key),
                    enterprise_binding=acme.binding.signed,
                    provider="tax",
                    field="tax.credit_grade",
                    kind=OBJECTION,
                    case_id=filing.case_id,
                    sealed=box,
                ),
                timeout=10,
            ),
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.ACCESS_DENIED,
        )
    finally:
        channel.close()


def _filed(pki: Any, store: SubjectStore, kind: int, field: str, now: int) -> str:
    creds = pki.enterprise(ACME)
    filing = subj.build_filing(
        kind=kind, enterprise_uscc=ACME, provider=field.split(".")[0], field=field, statement="s", now=now
    )
    store.add_case(filing, subj.sign_filing(filing, creds.signing_key), now)
    return filing.case_id


def test_subject_store_overdue_view_reload_and_pause_order(
    pki: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from xinrong.provider_agent import subject as agent_subject

    monkeypatch.setattr(agent_subject, "VIEW_RECHECK_SECONDS", 0.0)  # look at the file on every call
    path = tmp_path / "agent.state.db.subject.db"
    store = SubjectStore(path, deadline_days=2)
    other = SubjectStore(path)  # the provider's CLI, another connection
    try:
        now = 1_800_000_000
        case_id = _filed(pki, store, OBJECTION, "tax.credit_grade", now - 3 * 86400)
        assert store.view().disputed == frozenset({(ACME, "tax.credit_grade")})
        assert [c.overdue for c in store.cases(now=now)] == [True]
        assert [c.overdue for c in store.cases(now=now - 2 * 86400)] == [False]
        # Filing the same id again is a no-op; with other content it is refused.
        assert _filed_again(pki, store, case_id) is False
        other.resolve(case_id, kind=OBJECTION, state=CORRECTED, now=now)
        assert store.view().disputed == frozenset()  # seen by the next answer, no restart
        with pytest.raises(Exception, match="already"):
            other.resolve(case_id, kind=OBJECTION, state=CORRECTED, now=now)
        with pytest.raises(Exception, match="no repair"):
            other.resolve(case_id, kind=REPAIR, state=APPROVED, now=now)
        # Pause / resume: the newest signed change wins, whatever order they arrive in.
        key = pki.enterprise(ACME).signing_key
        pause = subj.sign_state_change("c-1", ACME, subject_pb2.CONSENT_ACTION_PAUSE, key, now=now)
        resume = subj.sign_state_change("c-1", ACME, subject_pb2.CONSENT_ACTION_RESUME, key, now=now + 1)
        assert store.set_pause(subject_pb2.ConsentStateChange.FromString(resume.change), resume, now) is False
        assert store.set_pause(subject_pb2.ConsentStateChange.FromString(pause.change), pause, now) is False
        assert store.view().paused == frozenset()
        later = subj.sign_state_change("c-1", ACME, subject_pb2.CONSENT_ACTION_PAUSE, key, now=now + 2)
        assert store.set_pause(subject_pb2.ConsentStateChange.FromString(later.change), later, now) is True
        assert store.view().paused == frozenset({("c-1", ACME)})
        # Subject-query ids are remembered until freshness refuses them anyway.
        assert store.seen("q-1", now) is False and store.seen("q-1", now) is True
        assert store.prune_seen(now + 1) == 1 and store.seen("q-1", now) is False
        # Every step is in the log, with ids and fields only.
        actions = [a for _t, a, *_ in store.subject_log()]
        assert actions == ["case_filed", "case_corrected", "resume", "pause", "query", "query"]
    finally:
        store.close()
        other.close()


def _filed_again(pki: Any, store: SubjectStore, case_id: str) -> bool:
    row = store._conn.execute("SELECT filing, signature FROM cases WHERE case_id = ?", (case_id,)).fetchone()
    signed = subject_pb2.SignedCaseFiling(filing=bytes(row[0]), signature=bytes(row[1]))
    return store.add_case(subject_pb2.CaseFiling.FromString(signed.filing), signed, 0)


def test_repair_lapses_when_the_value_is_re_imported() -> None:
    from xinrong.provider_agent.subject import SubjectView, cell_sha256

    view = SubjectView(repaired={(ACME, "tax.in_arrears"): ("2026-07-01", cell_sha256(True))})
    assert view.hidden(ACME, "tax.in_arrears", True, "2026-07-01")
    assert not view.hidden(ACME, "tax.in_arrears", True, "2026-06-30")  # before the effective date
    assert not view.hidden(ACME, "tax.in_arrears", False, "2026-08-01")  # corrected value shows
    assert not view.hidden(BETA, "tax.in_arrears", True, "2026-08-01")


def test_the_platform_sees_overdue_counts(platform: tuple[NodeServer, dict[str, Any]], pki: Any) -> None:
    node, agents = platform
    with _client(node, pki.enterprise(ACME)) as client:
        client.file_case(kind=OBJECTION, field="tax.credit_grade", statement="wrong")
    assert node.subject is not None
    stats = node.subject.case_stats()
    tax = stats["tax"]
    assert tax is not None and (tax.open_objections, tax.overdue_objections) == (1, 0)
    # Past the deadline (the agent's clock moved on): flagged to the platform.
    _case_store(agents["tax"]).deadline_seconds = -1
    assert node.subject.watch_overdue() == {"social_insurance": 0, "tax": 1}


def test_subject_rights_on_postgres(pki: Any, catalog: Catalog, tmp_path: Path, pg_cluster: Any) -> None:
    """The node on PostgreSQL: own data admitted (audited), pause stored in the shared consents table."""
    from support.pg import database_table

    with _platform(pki, catalog, tmp_path, database_table(pg_cluster)) as (node, _agents):
        consent = grant(pki, catalog, ACME)
        cid = consent_id_of(consent)
        channel, bank = _bank(node, pki)
        try:
            bank.RegisterConsent(node_pb2.RegisterConsentRequest(consent=consent), timeout=10)
            with _client(node, pki.enterprise(ACME)) as client:
                reports, unavailable = client.my_data()
                assert sorted(r.provider for r in reports) == ["social_insurance", "tax"] and unavailable == []
                assert client.change_state(cid, pause=True).state == common_pb2.CONSENT_STATE_PAUSED
                assert_refused(
                    lambda: bank.Verify(verify_request(consent), timeout=10),
                    grpc.StatusCode.FAILED_PRECONDITION,
                    Reason.CONSENT_PAUSED,
                )
                client.change_state(cid, pause=False)
                req = verify_request(consent)
                assert open_verdicts(pki, "bank-a", bank.Verify(req, timeout=10), req.request_id) == {
                    "tax.credit_grade in A,B": "TRUE"
                }
        finally:
            channel.close()


def test_the_provider_exports_a_cases_evidence_with_the_signed_filing(pki: Any, tmp_path: Path) -> None:
    """``xinrong agent objections|repairs evidence``: the file under a safe name, a manifest that checks, logged."""
    import base64
    import hashlib
    import json

    store = SubjectStore(tmp_path / "agent.state.db.subject.db")
    try:
        creds = pki.enterprise(ACME)
        evidence = b"%PDF-1.4 receipt of payment\n" * 20
        filing = subj.build_filing(
            kind=REPAIR,
            enterprise_uscc=ACME,
            provider="tax",
            field="tax.in_arrears",
            statement="paid in full",
            evidence=evidence,
            evidence_name="../../etc/收据 $(rm).pdf",
            now=1_800_000_000,
        )
        signed = subj.sign_filing(filing, creds.signing_key)
        store.add_case(filing, signed, 1_800_000_000)
        out = tmp_path / "review"
        doc = store.export_case(filing.case_id, kind=REPAIR, out_dir=out)
        written = out / doc["evidence_file"]
        assert written.parent == out and written.name == f"{filing.case_id}-rm.pdf"
        assert written.read_bytes() == evidence and (written.stat().st_mode & 0o777) == 0o600
        manifest = json.loads((out / f"{filing.case_id}.json").read_text())
        assert manifest["evidence_sha256"] == hashlib.sha256(evidence).hexdigest()
        assert base64.b64decode(manifest["filing"]) == signed.filing
        assert subject_pb2.CaseFiling.FromString(base64.b64decode(manifest["filing"])).evidence == evidence
        from xinrong.keys.signing import VerifyKey

        VerifyKey(creds.signing_key.public_raw).verify(
            subj.FILING_CONTEXT, base64.b64decode(manifest["filing"]), base64.b64decode(manifest["signature"])
        )
        with pytest.raises(FileExistsError):  # never overwrites
            store.export_case(filing.case_id, kind=REPAIR, out_dir=out)
        with pytest.raises(Exception, match="no objection"):
            store.export_case(filing.case_id, kind=OBJECTION, out_dir=tmp_path / "other")
        assert [a for _t, a, *_ in store.subject_log()][-1] == "case_evidence_exported"
    finally:
        store.close()
