"""Post-loan monitoring (issue 13 §4), in process over mTLS with real agents.

A bank watches two borrowers; the tax agent imports a new period in which
one of them falls into arrears. Every watch gets an update (changed or
not), all of one length; the bank's SDK raises alerts only for the change;
the node's database holds no verdict (no plaintext of any update); the
admission refuses a consent for another purpose, a malformed watch and
another bank's cancel.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.bank.alerts_client import WATCH_UPDATE_CONTENT_TYPE as BANK_CONTENT_TYPE
from xinrong.bank.alerts_client import WATCH_UPDATE_CONTEXT as BANK_CONTEXT
from xinrong.bank.alerts_client import AlertsClient
from xinrong.catalog import Catalog
from xinrong.consent import build_consent, parse_scope, sign_consent
from xinrong.keys.layout import party_dir
from xinrong.limits import WATCH_UPDATE_PAD_BYTES
from xinrong.node.config import load_config, render_config
from xinrong.node.monitoring import WATCH_UPDATE_CONTENT_TYPE as NODE_CONTENT_TYPE
from xinrong.node.server import NodeServer, start_node
from xinrong.provider_agent import config as agent_config
from xinrong.provider_agent import importer, server, store
from xinrong.provider_agent.monitoring import WATCH_UPDATE_CONTENT_TYPE, WATCH_UPDATE_CONTEXT
from xinrong.rpc.channel import secure_channel
from xinrong.rpc.errors import RemoteError
from xinrong.v1 import common_pb2, monitoring_pb2, node_pb2, node_pb2_grpc

from support.node_fakes import ACME, BETA, consent_id_of, revocation

TAX_HEADER = (
    "uscc,as_of,credit_grade,abnormal_taxpayer,in_arrears,arrears_amount,vat_paid_last_year,cit_paid_last_year,"
    "consecutive_normal_months,last_normal_payment_date,grade_a_taxpayer\n"
)


def tax_csv(as_of: str, acme_arrears: bool) -> str:
    acme = (
        f"{ACME},{as_of},C,false,true,51234.11,734512.37,88231.90,0,2026-05-15,false\n"
        if acme_arrears
        else f"{ACME},{as_of},A,false,false,0,734512.37,88231.90,27,2026-06-15,true\n"
    )
    return TAX_HEADER + acme + f"{BETA},{as_of},B,false,false,0,,,12,2026-06-01,false\n"


SI_CSV = (
    "uscc,as_of,avg_insured_headcount,avg_employer_contribution,consecutive_months,last_normal_month,in_arrears\n"
    f"{ACME},2026-06-30,83,48213.77,19,2026-06-01,false\n"
)
CLAIMS = ["tax.in_arrears == true", "tax.credit_grade in C,D", "social_insurance.in_arrears == true"]


def import_period(workdir: Path, catalog: Catalog, provider: str, text: str, name: str) -> None:
    """What ``xinrong agent import`` does: its own connection to the agent's data store."""
    path = workdir / f"{provider}-{name}.csv"
    path.write_text(text)
    data = store.DataStore(workdir / f"agent-{provider}.db", provider)
    try:
        importer.import_csv(data, catalog, provider, path)
    finally:
        data.close()


def start_agent(root: Path, workdir: Path, catalog: Catalog, provider: str, csv_text: str) -> Any:
    config = agent_config.parse_config(
        {
            "agent": {
                "provider": provider,
                "bind": "127.0.0.1:0",
                "credentials": str(party_dir(root, "provider", provider)),
                "ca_cert": str(root / "ca" / "ca.crt"),
                "db": str(workdir / f"agent-{provider}.db"),
                "node_id": "node",
            }
        },
        workdir,
    )
    import_period(workdir, catalog, provider, csv_text, "p1")
    return server.start_agent(agent_config.prepare(config), bind="127.0.0.1:0")


@pytest.fixture
def platform(pki: Any, catalog: Catalog, tmp_path: Path) -> Iterator[tuple[NodeServer, dict[str, Any]]]:
    agents = {
        "tax": start_agent(pki.root, tmp_path, catalog, "tax", tax_csv("2026-06-30", False)),
        "social_insurance": start_agent(pki.root, tmp_path, catalog, "social_insurance", SI_CSV),
    }
    root = pki.root
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        render_config(
            bind="127.0.0.1:0",
            credentials=party_dir(root, "node", "node"),
            ca_cert=root / "ca" / "ca.crt",
            db="node.db",
            providers=[
                (p, f"127.0.0.1:{a.port}", party_dir(root, "provider", p) / "binding.pb") for p, a in agents.items()
            ],
            institutions=[(b, party_dir(root, "institution", b) / "binding.pb") for b in ("bank-a", "bank-b")],
        )
    )
    node = start_node(load_config(config_path))
    try:
        yield node, agents
    finally:
        node.stop(0.5)
        for agent in agents.values():
            agent.stop(0.5)


def monitoring_consent(
    pki: Any, catalog: Catalog, enterprise: str, *, purpose: str = "post_loan_monitoring", grantee: str = "bank-a"
) -> common_pb2.SignedConsent:
    now = int(time.time())
    creds = pki.enterprise(enterprise)
    consent = build_consent(
        enterprise_uscc=enterprise,
        enterprise_key_id=creds.signing_key.key_id,
        grantee_id=grantee,
        purpose=purpose,
        scope=parse_scope(catalog, ("tax.*", "social_insurance.*")),
        data_period_from="2026-01-01",
        data_period_to="2026-12-31",
        valid_from=now - 60,
        valid_until=now + 3600,
        max_uses=10,
        max_uses_per_day=0,
        consent_id=None,
        fetch_type="periodic",
    )
    return sign_consent(consent, creds.signing_key, creds.binding.signed)


def register_consent(pki: Any, node: NodeServer, signed: common_pb2.SignedConsent, enterprise: str) -> None:
    channel = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(enterprise), server_role="node", server_id="node")
    try:
        node_pb2_grpc.NodeServiceStub(channel).RegisterConsent(
            node_pb2.RegisterConsentRequest(consent=signed), timeout=10
        )
    finally:
        channel.close()


def follow_until(client: AlertsClient, done: Callable[[], bool], timeout: float = 20.0) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=client.follow, kwargs={"stop": stop, "until": done}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    assert done(), "timed out waiting for the alert stream"


def test_the_three_parties_agree_on_context_and_content_type() -> None:
    assert WATCH_UPDATE_CONTEXT == BANK_CONTEXT
    assert WATCH_UPDATE_CONTENT_TYPE == BANK_CONTENT_TYPE == NODE_CONTENT_TYPE


def test_a_borrower_falling_into_arrears_raises_alerts_and_the_node_sees_one_length_and_no_verdict(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, agents = platform
    consents = {e: monitoring_consent(pki, catalog, e) for e in (ACME, BETA)}
    for e, signed in consents.items():
        register_consent(pki, node, signed, e)
    target = f"127.0.0.1:{node.port}"
    with AlertsClient(target, pki.institution("bank-a"), tmp_path / "bank-a-state") as client:
        watches = {e: client.register_watch(e, CLAIMS, consent_id_of(consents[e])) for e in (ACME, BETA)}
        assert {tuple(w.providers) for w in watches.values()} == {("social_insurance", "tax")}
        assert {w.watch_id for w in client.list_watches()} == {w.watch_id for w in watches.values()}
        # Baselines: one update per watch and provider, no alert.
        follow_until(client, lambda: client.state.updates_seen() == 4)
        assert client.state.alert_count() == 0
        assert client.state.verdict(watches[ACME].watch_id, "tax.in_arrears == true") == "FALSE"

        import_period(tmp_path, catalog, "tax", tax_csv("2026-07-31", True), "p2")
        # Every tax watch gets its period-2 update, changed (ACME) or not (BETA).
        follow_until(client, lambda: client.state.updates_seen() == 6)
        alerts = client.state.alerts()
        assert sorted((a.enterprise, a.claim, a.old, a.new) for a in alerts) == [
            (ACME, "tax.credit_grade in C,D", "FALSE", "TRUE"),
            (ACME, "tax.in_arrears == true", "FALSE", "TRUE"),
        ]
        assert {a.data_as_of for a in alerts} == {"2026-07-31"}
        assert all(a.as_dict()["provider_signature"] for a in alerts)

        # What the node holds: every update of a period of one length; no plaintext anywhere.
        rows = node.core.db.query("SELECT update_id, watch_id, provider, sealed FROM alert_queue")
        envelopes = [monitoring_pb2.SealedWatchUpdate.FromString(bytes(r[3])) for r in rows]
        assert len(envelopes) >= 2
        assert {len(e.sealed.ciphertext) for e in envelopes} == {len(envelopes[0].sealed.ciphertext)}
        period2 = [e for e in envelopes if e.provider == "tax" and e.update_id.endswith(".2")]
        assert {e.watch_id for e in period2} == {w.watch_id for w in watches.values()}
        assert len({len(e.SerializeToString()) for e in period2}) == 1
        assert len(envelopes[0].sealed.ciphertext) >= WATCH_UPDATE_PAD_BYTES
        key = pki.institution("bank-a").sealing_key
        node.core.db.checkpoint()
        held = b"".join(p.read_bytes() for p in tmp_path.glob("node.db*"))
        for envelope in envelopes:
            plain = key.open(
                envelope.sealed,
                recipient_id="bank-a",
                content_type=WATCH_UPDATE_CONTENT_TYPE,
                context=envelope.update_id,
            )
            update = monitoring_pb2.SignedWatchUpdate.FromString(plain).update
            assert plain not in held and update not in held
            assert b"VERDICT" not in envelope.SerializeToString()

        # The SDK is idempotent: the same batch again raises nothing.
        again = monitoring_pb2.StreamAlertsResponse(
            updates=[monitoring_pb2.QueuedWatchUpdate(seq=1, update=e) for e in envelopes]
        )
        outcome = client.process(again)
        assert outcome.alerts == [] and outcome.updates == 0 and outcome.duplicates == len(envelopes)

        # Cancelled: the next period brings no update for it.
        assert client.cancel_watch(watches[BETA].watch_id).state == monitoring_pb2.WATCH_STATE_CANCELLED
        import_period(tmp_path, catalog, "tax", tax_csv("2026-08-31", False), "p3")
        follow_until(client, lambda: client.state.updates_seen() == 7)
        assert sorted((a.claim, a.old, a.new) for a in client.state.alerts()[2:]) == [
            ("tax.credit_grade in C,D", "TRUE", "FALSE"),
            ("tax.in_arrears == true", "TRUE", "FALSE"),
        ]
    assert agents["tax"].monitor.store.count() == 1

    # Each update is an access in the enterprise's log: metadata only, the bank as the caller.
    entries = node.core.db.query(
        "SELECT caller_id, enterprise, providers, decision, reason FROM audit_log WHERE method = 'WatchUpdate'"
    )
    assert len(entries) == 7
    assert {(e[0], e[3]) for e in entries} == {("bank-a", "ALLOWED")}
    assert {e[1] for e in entries} == {ACME, BETA}
    # ... and each is in the providers' own answer logs, so node and agent logs reconcile.
    logged = node.core.db.query("SELECT request_id, providers FROM audit_log WHERE method = 'WatchUpdate'")
    answered = {
        (name, a.request_id)
        for name, agent in agents.items()
        for a in agent.state.answer_log()
        if a.kind == "watch" and a.audience == "bank-a"
    }
    assert {(str(p).strip('[]"'), r) for r, p in logged} <= answered

    # A revoked consent ends the watch at the agent: the next period emits nothing for it.
    channel = secure_channel(f"127.0.0.1:{node.port}", pki.enterprise(ACME), server_role="node", server_id="node")
    try:
        node_pb2_grpc.NodeServiceStub(channel).RevokeConsent(
            node_pb2.RevokeConsentRequest(revocation=revocation(pki, consents[ACME])), timeout=10
        )
    finally:
        channel.close()
    queued = node.monitoring.stored if node.monitoring else 0
    import_period(tmp_path, catalog, "tax", tax_csv("2026-09-30", True), "p4")
    deadline = time.monotonic() + 3
    while agents["tax"].monitor.passes < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert agents["tax"].monitor.passes == 4
    time.sleep(0.5)
    assert node.monitoring is not None and node.monitoring.stored == queued


def _code(fn: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(RemoteError) as info:
        fn()
    return info.value.reason, str(info.value)


def test_admission_refuses_another_purpose_malformed_watches_and_other_banks(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, _agents = platform
    target = f"127.0.0.1:{node.port}"
    loan = monitoring_consent(pki, catalog, ACME, purpose="loan_application")
    register_consent(pki, node, loan, ACME)
    good = monitoring_consent(pki, catalog, ACME)
    register_consent(pki, node, good, ACME)
    with (
        AlertsClient(target, pki.institution("bank-a"), tmp_path / "a") as bank_a,
        AlertsClient(target, pki.institution("bank-b"), tmp_path / "b") as bank_b,
    ):
        reason, _ = _code(lambda: bank_a.register_watch(ACME, CLAIMS, consent_id_of(loan)))
        assert reason == "CLAIM_OUT_OF_SCOPE"
        # Unknown consent and another bank's consent: the one uniform denial.
        unknown = _code(lambda: bank_a.register_watch(ACME, CLAIMS, "no-such-consent"))
        other = _code(lambda: bank_b.register_watch(ACME, CLAIMS, consent_id_of(good)))
        assert unknown[0] == "ACCESS_DENIED"
        assert other[0] in ("ACCESS_DENIED", "CONSENT_GRANTEE_MISMATCH")
        reason, _ = _code(lambda: bank_a.register_watch(ACME, CLAIMS * 3, consent_id_of(good)))
        assert reason == "INVALID_ARGUMENT"
        reason, _ = _code(lambda: bank_a.register_watch(ACME, ["tax.vat_paid_last_year >= 123"], consent_id_of(good)))
        assert reason == "THRESHOLD_NOT_PUBLISHED"
        watch = bank_a.register_watch(ACME, CLAIMS[:1], consent_id_of(good))
        assert _code(lambda: bank_b.cancel_watch(watch.watch_id))[0] == "NOT_FOUND"
        assert _code(lambda: bank_b.cancel_watch("w-nonexistent"))[0] == "NOT_FOUND"
        assert bank_b.list_watches() == []
    # Every decision is an audit entry.
    methods = node.core.db.query("SELECT decision, reason FROM audit_log WHERE method = 'RegisterWatch'")
    assert len(methods) == 6
    assert sum(1 for d, _ in methods if d == "ALLOWED") == 1


def test_the_node_streams_nothing_to_a_bank_without_watches(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any
) -> None:
    node, _agents = platform
    channel = secure_channel(f"127.0.0.1:{node.port}", pki.institution("bank-b"), server_role="node", server_id="node")
    try:
        from xinrong.v1 import monitoring_pb2_grpc

        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        started = time.monotonic()
        assert list(stub.StreamAlerts(monitoring_pb2.StreamAlertsRequest(), timeout=10)) == []
        assert time.monotonic() - started < 5
        with pytest.raises(grpc.RpcError):
            list(stub.StreamAlerts(monitoring_pb2.StreamAlertsRequest(after_seq=2**63), timeout=10))
    finally:
        channel.close()


def test_a_watch_an_agent_cannot_take_is_withdrawn_and_logged_failed(
    platform: tuple[NodeServer, dict[str, Any]], pki: Any, catalog: Catalog, tmp_path: Path
) -> None:
    node, agents = platform
    good = monitoring_consent(pki, catalog, ACME)
    register_consent(pki, node, good, ACME)
    agents["social_insurance"].stop(0.2)
    with AlertsClient(f"127.0.0.1:{node.port}", pki.institution("bank-a"), tmp_path / "a") as bank:
        assert _code(lambda: bank.register_watch(ACME, CLAIMS, consent_id_of(good)))[0] == "PROVIDER_UNAVAILABLE"
        assert bank.list_watches() == []
        past = int(time.time()) - 10
        assert _code(lambda: bank.register_watch(ACME, CLAIMS[:1], consent_id_of(good), valid_until=past))[0] == (
            "INVALID_ARGUMENT"
        )
    assert agents["tax"].monitor.store.count() == 0
    decisions = node.core.db.query("SELECT decision FROM audit_log WHERE method = 'RegisterWatch' ORDER BY seq")
    assert [d for (d,) in decisions] == ["ALLOWED", "FAILED", "REFUSED"]


def test_bank_cli_adds_lists_follows_and_cancels_a_watch(
    platform: tuple[NodeServer, dict[str, Any]],
    pki: Any,
    catalog: Catalog,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from xinrong.consent import write_consent
    from xinrong.tools.cli import main

    node, _agents = platform
    signed = monitoring_consent(pki, catalog, ACME)
    consent_file = tmp_path / "monitoring.pb"
    write_consent(consent_file, signed)
    conn = ["--node", f"127.0.0.1:{node.port}", "--credentials", str(party_dir(pki.root, "institution", "bank-a"))]
    state = ["--state-dir", str(tmp_path / "cli-state")]
    add = ["bank", "watch", "add", *conn, *state, "--enterprise", ACME, "--consent", str(consent_file)]
    assert main([*add, "--claim", "tax.in_arrears == true"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["providers"] == ["tax"] and added["watch_id"].startswith("w-")
    assert main(["bank", "watch", "list", *conn, *state]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [w["watch_id"] for w in listed] == [added["watch_id"]]
    assert listed[0]["claims"] == ["tax.in_arrears == true"]
    assert main(["bank", "alerts", *conn, *state]) == 0  # no --follow: the alerts held, none yet
    assert capsys.readouterr().out == ""
    assert main(["bank", "watch", "cancel", *conn, *state, added["watch_id"]]) == 0
    assert json.loads(capsys.readouterr().out)["state"] == monitoring_pb2.WATCH_STATE_CANCELLED
