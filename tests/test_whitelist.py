"""Financing demands and the whitelist (Issue 13 §2), in process over mTLS.

An evaluation period is written where the node keeps results (as ``xinrong
node evaluate`` would), enterprises register demands with matching consents,
and banks subscribe to topic ``whitelist``: an enterprise at or above the
threshold is pushed to exactly the institutions it allowed (grade only if
it allowed that), one below is not, a revocation or a withdrawal is a
removal within seconds, and a bank outside the audience sees nothing.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import grpc
import pytest

from xinrong.bank.push_client import PushClient, Subscription
from xinrong.catalog import Catalog
from xinrong.consent import sign_revocation
from xinrong.rpc.errors import RemoteError
from xinrong.v1 import demand_pb2, node_pb2

from support.node_fakes import NodeHarness
from support.whitelist import (
    GOOD,
    HIDDEN,
    LOW,
    cid_of,
    demand_client,
    matching_consent,
    register_demand,
    store_evaluation,
    whitelist_events,
)


@pytest.fixture
def harness(make_harness: Any) -> NodeHarness:
    h: NodeHarness = make_harness(providers=(), institutions=("bank-a", "bank-b", "bank-c"))
    store_evaluation(h, {GOOD: 780, LOW: 470, HIDDEN: 900})
    return h


def test_whitelisted_demand_is_pushed_to_its_institutions_only(harness: NodeHarness, catalog: Catalog) -> None:
    resp, _ = register_demand(harness, catalog, GOOD, ("bank-a", "bank-b"))
    assert resp.whitelisted and list(resp.pushed_to) == ["bank-a", "bank-b"]
    for bank in ("bank-a", "bank-b"):
        (event,) = whitelist_events(harness, bank)
        body = event.payload_json()
        assert event.restricted and event.enterprise == GOOD and event.region == GOOD[2:8]
        assert body["action"] == "add" and body["grade"] == "AA" and body["enterprise"] == GOOD
        assert body["demand"]["amount_yuan"] == 3_000_000 and body["demand"]["demand_id"] == resp.demand_id
        assert body["valid_until"] > time.time()
        # Never the points breakdown, the score or who else receives it.
        assert set(body) == {"action", "enterprise", "demand", "valid_until", "period", "grade"}
        # (the score, 780, is no value of the body; a byte search over the signed event matched timestamps by chance)
        assert 780 not in body.values() and b"bank-" not in event.signed.event
    assert whitelist_events(harness, "bank-c") == []  # not in the audience
    # Each push is an audit entry about the enterprise, one per institution.
    pushes = harness.query(
        "SELECT caller_id FROM audit_log WHERE method = 'WhitelistPush' AND enterprise = ? ORDER BY caller_id", (GOOD,)
    )
    assert [r[0] for r in pushes] == ["bank-a", "bank-b"]


def test_a_demand_without_an_industry_is_tagged_with_the_public_one(harness: NodeHarness, catalog: Catalog) -> None:
    """The CLI's --industry is optional; a demand without one was pushed with industry ""
    and so never reached a subscription by industry. The node tags it with the
    enterprise's published market.industry_class."""
    assert harness.node is not None
    with harness.node.core.db.transaction() as tx:  # as a market agent's publish stores it
        tx.execute(
            "INSERT INTO public_records (uscc, field, provider, value, as_of, version) VALUES (?, ?, ?, ?, ?, ?)",
            (GOOD, "market.industry_class", "market", json.dumps("F5010"), "2026-09-30", 1),
        )
    register_demand(harness, catalog, GOOD, ("bank-a",), industry="")
    (event,) = whitelist_events(harness, "bank-a")
    assert event.industry == "F5010"
    assert harness.node is not None
    with PushClient(f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-a")) as client:
        by_section = list(client.events(Subscription(topics=("whitelist",), industries=("F",))))
        other = list(client.events(Subscription(topics=("whitelist",), industries=("C",))))
    assert [e.enterprise for e in by_section] == [GOOD] and other == []


def test_below_threshold_is_not_pushed_and_hidden_grade_stays_hidden(harness: NodeHarness, catalog: Catalog) -> None:
    low, _ = register_demand(harness, catalog, LOW, ("bank-a",))
    assert not low.whitelisted and list(low.pushed_to) == []
    hidden, _ = register_demand(harness, catalog, HIDDEN, ("bank-a",), show_grade=False)
    assert hidden.whitelisted
    (event,) = whitelist_events(harness, "bank-a")
    assert event.enterprise == HIDDEN and "grade" not in event.payload_json()
    assert b"AAA" not in event.signed.event


def test_revoking_the_consent_removes_within_seconds_from_a_following_bank(
    harness: NodeHarness, catalog: Catalog
) -> None:
    assert harness.node is not None
    _, consents = register_demand(harness, catalog, GOOD, ("bank-a", "bank-b"))
    seen: list[tuple[str, float]] = []
    done = threading.Event()
    with PushClient(f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-a")) as client:

        def follow() -> None:
            for event in client.events(Subscription(topics=("whitelist",)), follow=True, stop=done.is_set):
                seen.append((event.payload_json()["action"], time.monotonic()))
                if len(seen) == 2:
                    done.set()

        thread = threading.Thread(target=follow, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        creds = harness.pki.enterprise(GOOD)
        revoked_at = time.monotonic()
        harness.enterprise(GOOD).RevokeConsent(
            node_pb2.RevokeConsentRequest(revocation=sign_revocation(cid_of(consents[0]), GOOD, creds.signing_key)),
            timeout=10,
        )
        thread.join(timeout=10)
    assert [a for a, _ in seen] == ["add", "remove"]
    assert seen[1][1] - revoked_at < 3.0
    # bank-b (its own consent untouched) keeps the entry; bank-a's view is empty again.
    assert [e.payload_json()["action"] for e in whitelist_events(harness, "bank-b")] == ["add"]
    with demand_client(harness, GOOD) as mine:
        (status,) = mine.list()
        assert list(status.pushed_to) == ["bank-b"] and status.state == demand_pb2.DEMAND_STATE_ACTIVE


def test_withdraw_and_new_period_below_threshold_remove(harness: NodeHarness, catalog: Catalog) -> None:
    first, _ = register_demand(harness, catalog, GOOD, ("bank-a",))
    register_demand(harness, catalog, HIDDEN, ("bank-a",))
    with demand_client(harness, GOOD) as client:
        assert client.withdraw(first.demand_id).state == demand_pb2.DEMAND_STATE_WITHDRAWN
    actions = [(e.enterprise, e.payload_json()["action"]) for e in whitelist_events(harness, "bank-a")]
    assert actions == [(GOOD, "add"), (HIDDEN, "add"), (GOOD, "remove")]
    # A new period puts HIDDEN below the threshold: the worker notices and removes it.
    store_evaluation(harness, {GOOD: 780, LOW: 470, HIDDEN: 300}, period="2026-12")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = whitelist_events(harness, "bank-a")[-1]
        if last.enterprise == HIDDEN and last.payload_json()["action"] == "remove":
            break
        time.sleep(0.1)
    else:
        pytest.fail("no removal after the new period")
    assert harness.node is not None and harness.node.whitelist is not None
    assert harness.node.whitelist.entries() == []


def test_refusals(harness: NodeHarness, catalog: Catalog) -> None:
    # A consent of another purpose, another enterprise's consent, someone else's demand.
    wrong_purpose = matching_consent(harness.pki, catalog, GOOD, "bank-a", purpose="loan_application")
    with demand_client(harness, GOOD) as client:
        signed = client.sign(amount_yuan=1, term_months=1, purpose="x", region="130102", consents=[wrong_purpose])
        with pytest.raises(RemoteError) as err:
            client.register(signed, [wrong_purpose])
        assert err.value.reason == "FAILED_PRECONDITION"
    other = matching_consent(harness.pki, catalog, LOW, "bank-a")
    harness.enterprise(LOW).RegisterConsent(node_pb2.RegisterConsentRequest(consent=other), timeout=10)
    with demand_client(harness, GOOD) as client:
        signed = client.sign(amount_yuan=1, term_months=1, purpose="x", region="130102", consents=[other])
        with pytest.raises(RemoteError) as err:
            client.register(signed)
        assert err.value.reason == "ACCESS_DENIED"
    resp, _ = register_demand(harness, catalog, LOW, ("bank-a",))
    with demand_client(harness, GOOD) as client:
        with pytest.raises(RemoteError) as err:
            client.withdraw(resp.demand_id)
        assert err.value.reason == "NOT_FOUND"
        with pytest.raises(RemoteError) as err:
            client.withdraw("no-such-demand")
        assert err.value.reason == "NOT_FOUND"
    # A demand signed by LOW but sent by GOOD.
    with demand_client(harness, LOW) as low_client:
        forged = low_client.sign(
            amount_yuan=1,
            term_months=1,
            purpose="x",
            region="130602",
            consents=[matching_consent(harness.pki, catalog, LOW, "bank-a")],
        )
    with demand_client(harness, GOOD) as client, pytest.raises(RemoteError) as err:
        client.register(forged)
    assert err.value.reason == "ACCESS_DENIED"
    # A bank may not call the demand service at all.
    from xinrong.rpc.channel import secure_channel
    from xinrong.v1 import demand_pb2_grpc

    assert harness.node is not None
    ch = secure_channel(
        f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-a"), server_role="node", server_id="node"
    )
    with pytest.raises(grpc.RpcError) as rpc_err:
        demand_pb2_grpc.DemandServiceStub(ch).ListMyDemands(demand_pb2.ListMyDemandsRequest(), timeout=5)
    assert rpc_err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ch.close()


def test_whitelist_survives_a_restart_without_pushing_twice(harness: NodeHarness, catalog: Catalog) -> None:
    register_demand(harness, catalog, GOOD, ("bank-a",))
    harness.restart()
    assert harness.node is not None and harness.node.whitelist is not None
    assert harness.node.whitelist.recompute_all() == 0
    assert len(whitelist_events(harness, "bank-a")) == 1
    assert json.loads(whitelist_events(harness, "bank-a")[0].payload)["grade"] == "AA"


def test_demand_limits_and_signature(pki: Any) -> None:
    from xinrong.demand import build_demand, sign_demand, verify_signed_demand
    from xinrong.errors import ConsentError, ValidationError

    creds = pki.enterprise(GOOD)
    base: dict[str, Any] = {
        "enterprise_uscc": GOOD,
        "enterprise_key_id": creds.signing_key.key_id,
        "amount_yuan": 100,
        "term_months": 12,
        "purpose": "stock",
        "region": "130102",
        "consent_ids": ["c-1"],
    }
    demand = build_demand(**base)
    signed = sign_demand(demand, creds.signing_key, creds.binding.signed)
    assert verify_signed_demand(creds.ca, signed, now=time.time()).enterprise == GOOD
    cases: list[dict[str, Any]] = [
        {"amount_yuan": 0},
        {"amount_yuan": 10**13},
        {"term_months": 0},
        {"term_months": 361},
        {"purpose": ""},
        {"purpose": "x" * 201},
        {"purpose": "a\nb"},
        {"region": "1301"},
        {"industry": "c"},
        {"consent_ids": []},
        {"consent_ids": ["a", "a"]},
        {"consent_ids": [f"c{i}" for i in range(33)]},
        {"demand_id": "bad id"},
        {"valid_until": int(time.time()) - 1},
        {"valid_until": int(time.time()) + 3 * 366 * 86400},
    ]
    for bad in cases:
        with pytest.raises(ValidationError):
            build_demand(**{**base, **bad})
    other = pki.enterprise(LOW)
    forged = sign_demand(demand, other.signing_key, creds.binding.signed)  # GOOD's binding, LOW's key
    with pytest.raises(ConsentError):
        verify_signed_demand(creds.ca, forged, now=time.time())
    tampered = demand_pb2.SignedDemand()
    tampered.CopyFrom(signed)
    tampered.demand = signed.demand.replace(b"stock", b"stack")
    with pytest.raises(ConsentError):
        verify_signed_demand(creds.ca, tampered, now=time.time())
    stale = time.time() + 2 * 86400
    with pytest.raises(ValidationError):
        verify_signed_demand(creds.ca, signed, now=stale)  # issued more than a day from the node's clock
    assert verify_signed_demand(creds.ca, signed, now=None).demand_id == demand.demand_id  # re-read from storage
