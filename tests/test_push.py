"""Batch push (Issue 12 §3): the node's event log and PushService.Subscribe.

Unit tests of ``xinrong.node.events`` (append, filters, audience, signatures,
ids, durability), in-process gRPC through the node harness (filters, live
tail woken by appends, audience, refusals, resume across a node restart),
and an e2e with real processes: the node killed and restarted, the bank's
``xinrong bank subscribe`` resuming from its cursor file.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.bank.push_client import (
    CursorFile,
    EventRejected,
    PushClient,
    Subscription,
    verify_event,
    verify_line,
)
from xinrong.errors import SignatureError, ValidationError
from xinrong.keys.signing import SigningKey
from xinrong.node.db import Database
from xinrong.node.events import EVENT_CONTEXT, EventLog, Filters, NewEvent
from xinrong.v1 import push_pb2, push_pb2_grpc

from support.node_fakes import NodeHarness

SHIJIAZHUANG = "130102"  # Hebei / Shijiazhuang / Chang'an district
BAODING = "130602"
BEIJING = "110101"


def _sample() -> list[NewEvent]:
    return [
        NewEvent("public_record", "911301001234567883", SHIJIAZHUANG, "C3011", b'{"n":1}'),
        NewEvent("public_record", "911306001234567882", BAODING, "C1310", b'{"n":2}'),
        NewEvent("public_record", "911101001234567881", BEIJING, "I6510", b'{"n":3}'),
        NewEvent("filing", "911301001234567883", SHIJIAZHUANG, "C3011", b'{"n":4}'),
        NewEvent("whitelist", "911301001234567883", SHIJIAZHUANG, "C3011", b'{"n":5}', ("bank-a",)),
        NewEvent("public_record", "911301001234567883", "13", "F", b'{"n":6}'),
    ]


@pytest.fixture
def log(tmp_path: Path) -> Any:
    db = Database(tmp_path / "node.db")
    events = EventLog(db, SigningKey.generate(), node_id="node")
    yield events
    events.close()
    db.close()


def _numbers(page: Any) -> list[int]:
    return [json.loads(push_pb2.Event.FromString(e.body).payload)["n"] for e in page.events]


def test_append_assigns_increasing_seqs_signs_and_derives_stable_ids(log: EventLog) -> None:
    seqs = log.append_many(_sample())
    assert seqs == [1, 2, 3, 4, 5, 6]
    assert log.append("filing", "911301001234567883", region="130102", industry="C", payload=b"{}") == 7
    page = log.after(0, Filters(), "bank-a")
    assert [e.seq for e in page.events] == list(range(1, 8))
    assert page.cursor == page.head == 7
    for stored in page.events:
        log.signing_key.verify_key.verify(EVENT_CONTEXT, stored.body, stored.signature)
        event = push_pb2.Event.FromString(stored.body)
        assert event.seq == stored.seq and event.node_id == "node"
        assert event.event_id.startswith(f"{stored.seq}-{event.topic}-")
    # Re-reading gives the same bytes and ids (at-least-once redelivery is deduplicable).
    again = log.after(0, Filters(), "bank-a")
    assert [e.body for e in again.events] == [e.body for e in page.events]
    with pytest.raises(SignatureError):
        log.signing_key.verify_key.verify(EVENT_CONTEXT, page.events[0].body + b"x", page.events[0].signature)


def test_filters_by_region_prefix_industry_topic_and_audience(log: EventLog) -> None:
    log.append_many(_sample())
    assert _numbers(log.after(0, Filters(regions=("13",)), "bank-b")) == [1, 2, 4, 6]
    assert _numbers(log.after(0, Filters(regions=("1301",)), "bank-b")) == [1, 4]
    assert _numbers(log.after(0, Filters(regions=("130602",)), "bank-b")) == [2]
    assert _numbers(log.after(0, Filters(industries=("C",)), "bank-b")) == [1, 2, 4]
    assert _numbers(log.after(0, Filters(industries=("C30",)), "bank-b")) == [1, 4]
    assert _numbers(log.after(0, Filters(industries=("13",)), "bank-b")) == [2]
    assert _numbers(log.after(0, Filters(industries=("I", "F")), "bank-b")) == [3, 6]
    assert _numbers(log.after(0, Filters(regions=("1301",), industries=("C",)), "bank-b")) == [1, 4]
    assert _numbers(log.after(0, Filters(topics=("filing", "whitelist")), "bank-b")) == [4]
    # The restricted event goes to its audience only, and says so without naming it.
    assert _numbers(log.after(0, Filters(topics=("whitelist",)), "bank-a")) == [5]
    restricted = push_pb2.Event.FromString(log.after(4, Filters(topics=("whitelist",)), "bank-a").events[0].body)
    assert restricted.restricted and b"bank-a" not in log.after(4, Filters(), "bank-a").events[0].body
    assert log.audience_of(5) == ("bank-a",)


def test_paging_and_sparse_filters_move_the_cursor_to_the_head(log: EventLog) -> None:
    log.append_many(_sample())
    first = log.after(0, Filters(), "bank-b", limit=2)
    assert [e.seq for e in first.events] == [1, 2] and first.cursor == 2
    second = log.after(first.cursor, Filters(), "bank-b", limit=2)
    assert [e.seq for e in second.events] == [3, 4] and second.cursor == 4
    sparse = log.after(0, Filters(regions=("110101",)), "bank-b", limit=2)
    assert [e.seq for e in sparse.events] == [3] and sparse.cursor == 6  # scanned to the head
    assert log.after(6, Filters(), "bank-b").events == []


def test_one_read_scans_a_bounded_window(log: EventLog, monkeypatch: pytest.MonkeyPatch) -> None:
    import xinrong.node.events as events_mod

    monkeypatch.setattr(events_mod, "SCAN_WINDOW", 2)
    log.append_many(_sample())
    cursor, seen = 0, list[int]()
    while True:
        page = log.after(cursor, Filters(regions=("110101",)), "bank-b")
        seen.extend(e.seq for e in page.events)
        assert page.cursor - cursor <= 2 and page.head == 6
        if page.cursor == cursor:
            break
        cursor = page.cursor
    assert seen == [3] and cursor == 6


def test_reads_do_not_take_the_database_lock(log: EventLog) -> None:
    log.append_many(_sample())
    got: list[int] = []
    with log.db.lock:  # the request path's writer holds it
        reader = threading.Thread(target=lambda: got.append(len(log.after(0, Filters(), "bank-a").events)))
        reader.start()
        reader.join(timeout=5)
    assert got == [6]


def test_filter_and_event_validation(log: EventLog) -> None:
    for bad in (("1",), ("130",), ("13a1",), ("1301021",)):
        with pytest.raises(ValidationError):
            Filters.checked(bad, (), ())
    for bad_industry in (("c",), ("Z",), ("C12345",), ("1",), ("%",)):
        with pytest.raises(ValidationError):
            Filters.checked((), bad_industry, ())
    with pytest.raises(ValidationError):
        Filters.checked((), (), ("Bad Topic",))
    with pytest.raises(ValidationError):
        Filters.checked([f"{i:02d}" for i in range(65)], (), ())
    assert Filters.checked(("13", "13"), ("C",), ()).regions == ("13",)
    with pytest.raises(ValueError):
        log.append("x y", "e", region="13", industry="C", payload=b"")
    with pytest.raises(ValueError):
        log.append("t", "e", region="1", industry="C", payload=b"")
    with pytest.raises(ValueError):
        log.append("t", "e", region="13", industry="C", payload=b"x" * 20_000)
    with pytest.raises(ValueError):
        log.append("t", "e", region="13", industry="C", payload=b"", audience=("bank a",))
    assert log.head() == 0


def test_events_are_durable_and_append_only(tmp_path: Path) -> None:
    key = SigningKey.generate()
    db = Database(tmp_path / "node.db")
    EventLog(db, key).append_many(_sample())
    db.close()
    db = Database(tmp_path / "node.db")
    try:
        events = EventLog(db, key)
        assert events.head() == 6
        assert events.append("filing", "e", region="13", industry="C", payload=b"{}") == 7
        with pytest.raises(Exception, match="append-only"), db.transaction() as tx:
            tx.execute("UPDATE events SET body = x'00' WHERE seq = 1")
        with pytest.raises(Exception, match="append-only"), db.transaction() as tx:
            tx.execute("DELETE FROM events WHERE seq = 1")
        events.close()
    finally:
        db.close()


def test_sql_filters_agree_with_the_rule_in_memory(log: EventLog) -> None:
    import random

    rng = random.Random(20261202)
    regions = ["130102", "130602", "110101", "13", "1306", ""]
    industries = ["C3011", "C1310", "I6510", "C", "F", ""]
    events = [
        NewEvent(
            rng.choice(["public_record", "filing", "whitelist"]),
            f"e{i}",
            rng.choice(regions),
            rng.choice(industries),
            b"{}",
            tuple(rng.sample(["bank-a", "bank-b", "bank-c"], rng.randint(0, 2))),
        )
        for i in range(300)
    ]
    log.append_many(events)
    stored = log.after(0, Filters(), "nobody", limit=1000)  # unrestricted only
    assert len(stored.events) == sum(1 for e in events if not e.audience)
    for _ in range(40):
        filters = Filters(
            tuple(rng.sample(["13", "1301", "130602", "11", "110101"], rng.randint(0, 2))),
            tuple(rng.sample(["C", "C30", "13", "I", "6510", "F"], rng.randint(0, 2))),
            tuple(rng.sample(["public_record", "filing", "whitelist"], rng.randint(0, 2))),
        )
        bank = rng.choice(["bank-a", "bank-b"])
        got = [e.seq for e in log.after(0, filters, bank, limit=1000).events]
        bodies = [push_pb2.Event.FromString(e.body) for e in log.after(0, Filters(), bank, limit=1000).events]
        restricted_ok = {i + 1 for i, e in enumerate(events) if not e.audience or bank in e.audience}
        want = [
            b.seq for b in bodies if b.seq in restricted_ok and filters.matches(b, events[b.seq - 1].audience, bank)
        ]
        assert got == want


def test_region_of_a_uscc() -> None:
    from xinrong.node.events import region_of

    assert region_of("911301001234567883") == "130100"
    assert region_of("short") == ""


def test_on_append_wakes_after_commit(log: EventLog) -> None:
    seen: list[tuple[int, int]] = []
    log.on_append(lambda head: seen.append((head, log.head())))
    log.append_many(_sample()[:3])
    assert seen == [(3, 3)]  # the callback sees its events committed


# -- gRPC, in process -------------------------------------------------------------------


def _client(harness: NodeHarness, bank: str = "bank-a") -> PushClient:
    assert harness.node is not None
    return PushClient(f"127.0.0.1:{harness.node.port}", harness.pki.institution(bank), timeout=5.0)


def _events_log(harness: NodeHarness) -> EventLog:
    assert harness.node is not None and harness.node.events is not None
    return harness.node.events


def test_subscribe_delivers_filtered_signed_events_and_ends_when_caught_up(make_harness: Any) -> None:
    harness = make_harness(providers=())
    _events_log(harness).append_many(_sample())
    with _client(harness) as client:
        got = list(client.events(Subscription(regions=("1301",), industries=("C",))))
        assert [e.payload_json()["n"] for e in got] == [1, 4, 5]  # 5: bank-a is its audience
        assert all(e.signed.key_id == harness.pki.node.signing_key.key_id for e in got)
        whitelist = list(client.events(Subscription(topics=("whitelist",))))
        assert [e.payload_json()["n"] for e in whitelist] == [5] and whitelist[0].restricted
    with _client(harness, "bank-b") as other:
        assert list(other.events(Subscription(topics=("whitelist",)))) == []
        assert [e.seq for e in other.events(Subscription())] == [1, 2, 3, 4, 6]


def test_follow_tails_new_events_woken_by_append(make_harness: Any) -> None:
    harness = make_harness(providers=())
    log = _events_log(harness)
    log.append("public_record", "911301001234567883", region=SHIJIAZHUANG, industry="C3011", payload=b'{"n":0}')
    received: list[tuple[int, float]] = []
    done = threading.Event()
    with _client(harness) as client:

        def consume() -> None:
            for event in client.events(Subscription(regions=("13",)), follow=True, stop=done.is_set):
                received.append((event.seq, time.monotonic()))
                if len(received) == 4:
                    done.set()
                    return

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        appended: dict[int, float] = {}
        for n in range(1, 6):
            region = BEIJING if n == 2 else SHIJIAZHUANG  # one not matching
            seq = log.append("public_record", "911301001234567883", region=region, industry="C", payload=b"{}")
            appended[seq] = time.monotonic()
            time.sleep(0.05)
        thread.join(timeout=5)
    assert [seq for seq, _ in received] == [1, 2, 4, 5]
    # Woken by the append, not by a poll (the local poll is 5 s).
    assert max(at - appended[seq] for seq, at in received[1:]) < 1.0


def test_refusals(make_harness: Any) -> None:
    harness = make_harness(providers=())
    assert harness.node is not None
    from xinrong.rpc.channel import secure_channel

    enterprise = harness.pki.enterprise("911301001234567883")
    ch = secure_channel(f"127.0.0.1:{harness.node.port}", enterprise, server_role="node", server_id="node")
    with pytest.raises(grpc.RpcError) as err:
        list(push_pb2_grpc.PushServiceStub(ch).Subscribe(push_pb2.SubscribeRequest(), timeout=5))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    ch.close()
    bank = secure_channel(
        f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-a"), server_role="node", server_id="node"
    )
    stub = push_pb2_grpc.PushServiceStub(bank)
    for bad in (
        push_pb2.SubscribeRequest(regions=["1"]),
        push_pb2.SubscribeRequest(industries=["c%"]),
        push_pb2.SubscribeRequest(cursor=2**63),
    ):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Subscribe(bad, timeout=5))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Subscribe(push_pb2.SubscribeRequest(cursor=5), timeout=5))  # the log is empty
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    bank.close()
    # bank-c has a CA-signed certificate but is not registered at this node.
    unregistered = secure_channel(
        f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-c"), server_role="node", server_id="node"
    )
    with pytest.raises(grpc.RpcError) as err:
        list(push_pb2_grpc.PushServiceStub(unregistered).Subscribe(push_pb2.SubscribeRequest(), timeout=5))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    unregistered.close()
    methods = {row[0] for row in harness.query("SELECT method FROM audit_log")}
    assert "Subscribe" in methods


def test_forged_event_is_rejected(make_harness: Any) -> None:
    harness = make_harness(providers=())
    assert harness.node is not None
    _events_log(harness).append_many(_sample()[:1])
    with _client(harness) as client:
        resp = next(client.responses(Subscription(), 0, follow=False))
        signed = resp.events[0]
        key = client.node_key()
        assert verify_event(key, signed, node_id="node").seq == 1
        line = json.loads(json.dumps(verify_event(key, signed, node_id="node").as_dict()))
        assert line["checked_by"] == "event_signature"
        assert verify_line(key, line).event_id == line["event_id"]  # offline, from the JSONL line alone
        with pytest.raises(EventRejected):
            verify_line(key, {**line, "seq": 2})
        forged = push_pb2.SignedEvent(
            event=signed.event.replace(b"public_record", b"public_rekord"),
            signature=signed.signature,
            key_id=signed.key_id,
        )
        with pytest.raises(EventRejected):
            verify_event(key, forged, node_id="node")
        with pytest.raises(EventRejected):
            verify_event(key, signed, node_id="other-node")
        # The response signature covers every event's bytes, the cursor and the subscriber.
        client._check_response(key, resp)
        tampered = push_pb2.SubscribeResponse()
        tampered.CopyFrom(resp)
        tampered.events[0].CopyFrom(forged)
        with pytest.raises(EventRejected):
            client._check_response(key, tampered)
        moved = push_pb2.SubscribeResponse()
        moved.CopyFrom(resp)
        moved.cursor += 1
        with pytest.raises(EventRejected):
            client._check_response(key, moved)
    with _client(harness, "bank-b") as other:
        with pytest.raises(EventRejected):
            other._check_response(key, resp)  # bank-a's response is not bank-b's
        with PushClient(f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-b"), verify="event") as each:
            assert [e.seq for e in each.events(Subscription())] == [1]


def test_resume_from_cursor_file_across_a_node_restart(make_harness: Any, tmp_path: Path) -> None:
    harness = make_harness(providers=())
    _events_log(harness).append_many([NewEvent("public_record", f"e{i}", "1301", "C", b"{}") for i in range(1, 1201)])
    cursor_file = tmp_path / "cursor"
    seen: list[int] = []
    with _client(harness) as client:
        for event in client.events(Subscription(), cursor_file=cursor_file):
            seen.append(event.seq)
            if len(seen) == 700:  # the consumer stops mid-response: its cursor is the last full response
                break
    held = CursorFile(cursor_file).read()
    assert held == 500  # responses of 500: only the first was fully taken
    harness.restart()
    _events_log(harness).append_many([NewEvent("public_record", f"f{i}", "1301", "C", b"{}") for i in range(300)])
    with _client(harness) as client:
        rest = [e.seq for e in client.events(Subscription(), cursor_file=cursor_file)]
    assert rest[0] == held + 1 and rest == list(range(held + 1, 1501))
    assert sorted(set(seen) | set(rest)) == list(range(1, 1501))  # nothing missed; 501-700 twice (at-least-once)
    assert CursorFile(cursor_file).read() == 1500


def test_heartbeats_and_cut_streams(make_harness: Any) -> None:
    harness = make_harness(providers=())
    assert harness.node is not None and harness.node.push is not None
    harness.node.push._heartbeat = 0.2
    log = _events_log(harness)
    log.append("filing", "e1", region="110101", industry="I", payload=b"{}")  # not in the subscription
    with _client(harness) as client:
        stream = client.responses(Subscription(regions=("13",)), 0, follow=True)
        first = next(stream)
        assert list(first.events) == [] and first.cursor == 1  # moved past what does not match
        beat = next(stream)
        assert list(beat.events) == [] and beat.cursor == 1 and beat.head == 1  # a heartbeat
        # What a suspension does (test_suspending_...), here while heartbeats are written every 0.2 s:
        # a cancel landing in a write must still end the stream with a status (OpenStream._cancel_on_loop).
        assert harness.node.core.gate.close_streams("bank-a") == 1
        with pytest.raises(grpc.RpcError) as err:
            for _ in stream:
                pass
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_following_streams_hold_no_call_budget_and_are_bounded_per_institution(make_harness: Any) -> None:
    from xinrong.node.push_servicer import MAX_STREAMS_PER_INSTITUTION
    from xinrong.v1 import common_pb2, node_pb2

    harness = make_harness(providers=(), max_workers=2)  # a call budget of 32
    assert harness.node is not None and harness.node.push is not None
    clients = [_client(harness, bank) for bank in ("bank-a", "bank-b")]
    streams = []
    try:
        for client in clients:
            for _ in range(MAX_STREAMS_PER_INSTITUTION):
                stream = client.responses(Subscription(), 0, follow=True)
                next(stream)  # open and caught up
                streams.append(stream)
        assert harness.node.push.open_streams == 2 * MAX_STREAMS_PER_INSTITUTION == 32
        # The budget is untouched: other calls are served.
        parties = harness.bank("bank-a").ListParties(
            node_pb2.ListPartiesRequest(role=common_pb2.PARTY_ROLE_NODE), timeout=5
        )
        assert len(parties.bindings) == 1
        with pytest.raises(grpc.RpcError) as err:
            next(clients[0].responses(Subscription(), 0, follow=True))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        for stream in streams:
            stream.close()
        for client in clients:
            client.close()


def test_suspending_an_institution_closes_its_following_subscription(make_harness: Any) -> None:
    """Issue 12 §5 over §3: a suspension ends the institution's open Subscribe streams at once with
    PERMISSION_DENIED INSTITUTION_SUSPENDED (the gate every call passes), and the SDK does not retry it."""
    harness = make_harness(providers=())
    assert harness.node is not None
    log = _events_log(harness)
    log.append("public_record", "911301001234567883", region=SHIJIAZHUANG, industry="C", payload=b"{}")
    errors: list[BaseException] = []
    received: list[int] = []
    with _client(harness) as client:

        def consume() -> None:
            try:
                for event in client.events(Subscription(regions=("13",)), follow=True):
                    received.append(event.seq)
            except Exception as exc:  # RemoteError from the SDK
                errors.append(exc)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert received == [1]
        started = time.monotonic()
        harness.node.core.institutions.suspend("bank-a", "security assessment failed")
        thread.join(timeout=10)
        assert not thread.is_alive() and time.monotonic() - started < 3.0
    assert errors and getattr(errors[0], "reason", "") == "INSTITUTION_SUSPENDED"
    with _client(harness, "bank-b") as other:  # another institution is unaffected
        assert [e.seq for e in other.events(Subscription(regions=("13",)))] == [1]
