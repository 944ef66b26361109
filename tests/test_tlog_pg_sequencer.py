"""The audit sequencer on PostgreSQL: the chain's leaves and the pace of the Merkle tree.

The sequencer builds each leaf from the columns as stored (the lists already
in their leaf encoding), as the tree integrator does, instead of parsing them
and encoding them again: what must hold is that ``verify_chain`` and
``verify_log``, which rebuild every leaf from the parsed entry, agree with it
whatever the fields contain. And the sequencer's thread chains every round
but integrates the tree once a second (and once more at stop): folding a
second's entries at once costs a fraction of folding every round's few.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from xinrong.keys.signing import SigningKey
from xinrong.node import server as node_server
from xinrong.node.audit import AuditEvent, Decision, SequencedAuditLog, verify_chain
from xinrong.node.pg import PgDatabase
from xinrong.node.tlog import TransparencyLog, verify_log
from xinrong.tlog import merkle
from xinrong.tools import pgtemp

from support.pg import database_config, database_table


@pytest.fixture
def parts(pg_cluster: pgtemp.TempPostgres) -> Iterator[tuple[PgDatabase, SequencedAuditLog, TransparencyLog]]:
    db = PgDatabase(database_config(database_table(pg_cluster)))
    audit = SequencedAuditLog(db)
    tlog = TransparencyLog(db, node_id="node", signing_key=SigningKey.generate(), sequencer_lock=audit._lock)
    try:
        yield db, audit, tlog
    finally:
        db.close()


def _stage(db: PgDatabase, audit: SequencedAuditLog, start: int, count: int) -> None:
    """Entries whose list columns need escaping, so leaf-from-stored-columns is really compared."""
    with db.transaction() as tx:
        for i in range(start, start + count):
            event = AuditEvent(
                "institution",
                "bank-a",
                "Verify",
                Decision.ALLOWED if i % 3 else Decision.REFUSED,
                reason="" if i % 3 else 'quota "day"\n',
                request_id=f"r-{i}",
                enterprise="91130100MA0ALPHA1",
                providers=("tax", "电力") if i % 2 else ("tax",),
                fields=('a"b', "c\\d", "é", "") if i % 5 == 0 else ("tax.paid_12m",),
            )
            audit.append(tx, event, 1_700_000_000_000 + i)


def test_leaves_built_from_the_stored_columns_are_the_parsed_entries_leaves(
    parts: tuple[PgDatabase, SequencedAuditLog, TransparencyLog],
) -> None:
    db, audit, tlog = parts
    _stage(db, audit, 0, 300)
    while audit.sequence(batch=70) > 0:  # several rounds, each continuing the chain of the last
        pass
    with db.transaction() as tx:
        chain = verify_chain(tx)  # parses every entry and re-encodes its leaf
    assert chain.ok and chain.entries == 300, chain.problem
    tlog.tick(force=True)
    signed = tlog.latest()
    assert signed.size == 300
    report = verify_log(db.query, tlog.origin, tlog.public_raw)
    assert report.ok, report.problem
    for index in (0, 150, 299):
        proof = tlog.reader.inclusion(index, 300)
        merkle.verify_inclusion(index, 300, tlog.reader.leaf_hash(index), proof, signed.root)
    # A changed column no longer matches its chained hash: the check is real.
    with db.transaction() as tx:
        tx.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        tx.execute("UPDATE audit_log SET fields = ? WHERE seq = 5", ('["a\\"b"]',))
        tx.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
        tampered = verify_chain(tx)
    assert not tampered.ok and tampered.first_bad_seq == 5


class _Counting:
    def __init__(self, takes: float = 0.0) -> None:
        self.calls: list[float] = []
        self.ends: list[float] = []
        self._takes = takes

    def __call__(self, *args: Any, **kwargs: Any) -> int:
        self.calls.append(time.monotonic())
        time.sleep(self._takes)
        self.ends.append(time.monotonic())
        return 0


def test_the_sequencer_thread_chains_every_round_but_integrates_the_tree_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(node_server, "SEQUENCER_SECONDS", 0.01)
    sequence, tick = _Counting(), _Counting(takes=0.05)  # a tick that takes a while, as a real one does
    fake = SimpleNamespace(
        core=SimpleNamespace(audit=SimpleNamespace(sequence=sequence)), _stop=threading.Event(), _tlog_tick=tick
    )
    thread = threading.Thread(target=node_server.NodeServer._sequence, args=(fake,), daemon=True)
    started = time.monotonic()
    thread.start()
    deadline = started + 20
    while (len(sequence.calls) < 20 or time.monotonic() - started < 2.2) and time.monotonic() < deadline:
        time.sleep(0.01)
    ticks_running = list(tick.calls)
    elapsed = time.monotonic() - started
    fake._stop.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(sequence.calls) >= 20
    assert ticks_running and ticks_running[0] <= sequence.calls[1]  # the first round integrates at once
    assert len(ticks_running) <= 1 + elapsed / node_server.TREE_SECONDS  # then at most once a second
    # A whole interval from the end of one tick to the next: the tick signs when a checkpoint
    # interval has passed since it last signed, so a shorter gap would skip a checkpoint.
    gaps = [start - end for end, start in zip(tick.ends, ticks_running[1:], strict=False)]
    assert all(gap >= node_server.TREE_SECONDS - 1e-6 for gap in gaps), gaps
    assert tick.calls[-1] >= sequence.calls[-1]  # at stop: drained, then the tree holds it all
