"""On PostgreSQL the Merkle tree grows in the audit sequencer's own transaction.

The sequencer hands the leaf hashes it computed for the chain to
``TransparencyLog.fold_in``, so the tree no longer needs a second
transaction (and WAL flush) per tick that reads the rows back and hashes them
again. What must hold: the folded tree is the one ``verify_log`` rebuilds
from the parsed entries (so a leaf built from the stored columns equals the
entry's canonical leaf); a tree that lags is left to the tick, which catches
it up; a fold that fails never stops the audit chain; and a tick with nothing
to integrate and no checkpoint due opens no transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from xinrong.keys.signing import SigningKey
from xinrong.node.audit import AuditEvent, Decision, SequencedAuditLog, verify_chain
from xinrong.node.pg import PgDatabase
from xinrong.node.tlog import TransparencyLog, verify_log
from xinrong.tlog import merkle
from xinrong.tools import pgtemp

from support.pg import database_config, database_table


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def parts(pg_cluster: pgtemp.TempPostgres) -> Iterator[tuple[PgDatabase, SequencedAuditLog, TransparencyLog, Clock]]:
    db = PgDatabase(database_config(database_table(pg_cluster)))
    audit = SequencedAuditLog(db)
    clock = Clock()
    tlog = TransparencyLog(
        db, node_id="node", signing_key=SigningKey.generate(), clock=clock, sequencer_lock=audit._lock
    )
    try:
        yield db, audit, tlog, clock
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
                fields=('a"b', "c\\d", "é") if i % 5 == 0 else ("tax.paid_12m",),
            )
            audit.append(tx, event, 1_700_000_000_000 + i)


def _drain(audit: SequencedAuditLog, tlog: TransparencyLog | None, batch: int = 2000) -> None:
    fold = tlog.fold_in if tlog is not None else None
    while audit.sequence(batch=batch, on_chained=fold) > 0:
        pass


def _check(db: PgDatabase, tlog: TransparencyLog, size: int) -> None:
    assert tlog.reader.size() == size
    tlog.tick(force=True)
    signed = tlog.latest()
    assert signed.size == size
    report = verify_log(db.query, tlog.origin, tlog.public_raw)  # rebuilds every leaf from the parsed entry
    assert report.ok, report.problem
    with db.transaction() as tx:
        chain = verify_chain(tx)
    assert chain.ok and chain.entries == size, chain.problem
    for index in (0, size // 2, size - 1):
        merkle.verify_inclusion(
            index, size, tlog.reader.leaf_hash(index), tlog.reader.inclusion(index, size), signed.root
        )


def test_the_sequencer_folds_what_it_chains_and_the_tree_verifies(
    parts: tuple[PgDatabase, SequencedAuditLog, TransparencyLog, Clock],
) -> None:
    db, audit, tlog, _ = parts
    _stage(db, audit, 0, 300)
    _drain(audit, tlog, batch=70)  # several chain steps, one fold each, across a full tile (256)
    assert tlog.reader.size() == 300  # no tick ran: the sequencer's transactions grew the tree
    assert db.query("SELECT tlevel, idx FROM tlog_tiles") == [(0, 0)]
    _check(db, tlog, 300)
    _stage(db, audit, 300, 9)
    _drain(audit, tlog)
    _check(db, tlog, 309)


def test_a_tick_with_the_tree_folded_and_no_checkpoint_due_opens_no_transaction(
    parts: tuple[PgDatabase, SequencedAuditLog, TransparencyLog, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, audit, tlog, clock = parts
    _stage(db, audit, 0, 5)
    _drain(audit, tlog)
    assert tlog.tick(force=True) is not None  # signed now: the next one is due in a second
    opened: list[int] = []
    real = db.transaction

    @contextmanager
    def counting(**kwargs: Any) -> Iterator[Any]:
        opened.append(1)
        with real(**kwargs) as tx:
            yield tx

    monkeypatch.setattr(db, "transaction", counting)
    _stage(db, audit, 5, 3)
    _drain(audit, tlog)
    opened.clear()
    clock.now += 0.5
    assert tlog.tick() is None and opened == []
    clock.now += 0.6  # due: the tick signs the folded entries
    signed = tlog.tick()
    assert signed is not None and signed.size == 8 and opened


def test_a_lagging_tree_is_left_to_the_tick_which_catches_it_up(
    parts: tuple[PgDatabase, SequencedAuditLog, TransparencyLog, Clock],
) -> None:
    db, audit, tlog, _ = parts
    _stage(db, audit, 0, 40)
    _drain(audit, None)  # chained without folding (another replica, an older node)
    _stage(db, audit, 40, 10)
    _drain(audit, tlog)  # the tree holds nothing yet: this fold must not append after 0
    assert tlog.reader.size() == 0
    assert tlog.tick() is None or tlog.reader.size() == 50  # not due or due, it integrates
    assert tlog.reader.size() == 50
    _stage(db, audit, 50, 4)
    _drain(audit, tlog)
    _check(db, tlog, 54)


def test_a_failing_fold_rolls_back_alone_and_never_stops_the_chain(
    parts: tuple[PgDatabase, SequencedAuditLog, TransparencyLog, Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, audit, tlog, _ = parts
    _stage(db, audit, 0, 260)
    import xinrong.tlog.store as store

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("tile writer broke")

    monkeypatch.setattr(store, "tile_rows", broken)  # fails after the subtree rows are inserted
    assert audit.sequence(on_chained=tlog.fold_in) == 260
    assert db.query("SELECT count(*) FROM audit_log") == [(260,)]
    assert db.query("SELECT count(*) FROM audit_pending") == [(0,)]
    assert db.query("SELECT count(*) FROM tlog_nodes") == [(0,)]  # the savepoint undid them
    monkeypatch.undo()
    tlog.tick()
    _check(db, tlog, 260)


def test_the_bench_pause_file_stops_the_fold_too_and_the_tick_catches_up(
    parts: tuple[PgDatabase, SequencedAuditLog, TransparencyLog, Clock],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Any,
) -> None:
    """``bench verify --tree-ab`` on PostgreSQL times the node without its tree: the fold builds none either."""
    from xinrong.node.tlog import BENCH_PAUSE_ENV

    db, audit, tlog, _ = parts
    pause = tmp_path / "paused"
    monkeypatch.setenv(BENCH_PAUSE_ENV, str(pause))
    pause.touch()
    _stage(db, audit, 0, 12)
    _drain(audit, tlog)
    assert tlog.reader.size() == 0 and tlog.tick() is None
    pause.unlink()
    tlog.tick()
    _check(db, tlog, 12)
