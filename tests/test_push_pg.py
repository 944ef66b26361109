"""The event log and Subscribe over PostgreSQL: replicas appending at once never
let a reader skip an event, and a stream sees another replica's appends (short poll)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from xinrong.bank.push_client import PushClient, Subscription
from xinrong.node.events import EventLog, Filters, NewEvent
from xinrong.node.pg import PgDatabase

from support.pg import database_config, database_table
from support.whitelist import GOOD, cid_of, register_demand, store_evaluation, whitelist_events

pytestmark = pytest.mark.slow


@pytest.fixture
def node_backend() -> str:
    return "postgres"


def test_concurrent_replicas_never_let_a_reader_skip(pki: Any, pg_cluster: Any) -> None:
    table = database_table(pg_cluster)
    replicas = [PgDatabase(database_config(table)) for _ in range(2)]
    key = pki.node.signing_key
    logs = [EventLog(db, key) for db in replicas]
    seen: list[int] = []
    stop = threading.Event()

    def read() -> None:
        cursor = 0
        while True:
            finished = stop.is_set()
            page = logs[0].after(cursor, Filters(), "bank-a", limit=50)
            seen.extend(e.seq for e in page.events)
            cursor = page.cursor
            if finished and not page.events and cursor == logs[0].head():
                return

    def write(log: EventLog, who: int) -> None:
        for batch in range(20):
            log.append_many([NewEvent("public_record", f"e{who}-{batch}-{i}", "1301", "C", b"{}") for i in range(10)])

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(logs[i % 2], i)) for i in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join(timeout=30)
    try:
        assert seen == list(range(1, 801))
        logs[1].append_many(
            [
                NewEvent("filing", "e-x", "130602", "C3011", b"{}"),
                NewEvent("whitelist", "e-y", "110101", "I6510", b"{}", ("bank-b",)),
            ]
        )
        sparse = Filters(regions=("1306", "11"), industries=("C30", "65"), topics=("filing", "whitelist"))
        assert [e.seq for e in logs[0].after(0, sparse, "bank-a").events] == [801]
        assert [e.seq for e in logs[0].after(0, sparse, "bank-b").events] == [801, 802]
    finally:
        for db in replicas:
            db.close()


def test_stream_sees_another_replicas_appends(make_harness: Any) -> None:
    harness = make_harness(providers=())
    assert harness.node is not None and harness.node.events is not None
    other = PgDatabase(database_config(harness.options["database"]))
    try:
        remote = EventLog(other, harness.pki.node.signing_key)
        got: list[tuple[int, float]] = []
        done = threading.Event()
        with PushClient(f"127.0.0.1:{harness.node.port}", harness.pki.institution("bank-a")) as client:

            def follow() -> None:
                for event in client.events(Subscription(), follow=True, stop=done.is_set):
                    got.append((event.seq, time.monotonic()))
                    if len(got) == 3:
                        done.set()

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            harness.node.events.append("filing", "e1", region="1301", industry="C", payload=b"{}")
            time.sleep(0.3)
            t0 = time.monotonic()
            remote.append("filing", "e2", region="1301", industry="C", payload=b"{}")
            remote.append("filing", "e3", region="1301", industry="C", payload=b"{}")
            thread.join(timeout=10)
        assert [seq for seq, _ in got] == [1, 2, 3]
        assert got[-1][1] - t0 < 2.0  # the shared-database poll is 0.25 s
    finally:
        other.close()


def test_whitelist_on_postgres(make_harness: Any, catalog: Any) -> None:
    from xinrong.consent import sign_revocation
    from xinrong.v1 import node_pb2

    harness = make_harness(providers=(), institutions=("bank-a", "bank-b"))
    store_evaluation(harness, {GOOD: 780})
    resp, consents = register_demand(harness, catalog, GOOD, ("bank-a",))
    assert resp.whitelisted
    creds = harness.pki.enterprise(GOOD)
    harness.enterprise(GOOD).RevokeConsent(
        node_pb2.RevokeConsentRequest(revocation=sign_revocation(cid_of(consents[0]), GOOD, creds.signing_key)),
        timeout=10,
    )
    deadline = time.monotonic() + 10
    actions: list[str] = []
    while time.monotonic() < deadline:
        actions = [e.payload_json()["action"] for e in whitelist_events(harness, "bank-a")]
        if actions == ["add", "remove"]:
            break
        time.sleep(0.1)
    assert actions == ["add", "remove"]
    assert harness.node is not None and harness.node.whitelist is not None
    assert harness.node.whitelist.recompute_all() == 0
    assert whitelist_events(harness, "bank-b") == []
