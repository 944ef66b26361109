"""What a long steady load left behind in the node, each found by ``xinrong bench soak --heap-probe``.

Every test runs N operations and checks that the structure that used to grow
with N stays bounded: counted, not timed.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from xinrong.node import routing
from xinrong.v1 import agent_pb2


class _AnswersFirstCall:
    """An EvaluateStream whose answers are readable before ``write`` returns (a loaded loop does that)."""

    def __init__(self) -> None:
        self._answers: asyncio.Queue[Any] = asyncio.Queue()

    async def write(self, request: agent_pb2.EvaluateStreamRequest) -> None:
        results = [agent_pb2.AgentCallResult(call_id=c.call_id) for c in request.calls]
        self._answers.put_nowait(agent_pb2.EvaluateStreamResponse(results=results))
        for _ in range(3):  # the reader runs, and resolves the calls, while the write is still "in flight"
            await asyncio.sleep(0)

    async def read(self) -> Any:
        return await self._answers.get()

    def cancel(self) -> None:
        pass


class _Stub:
    def EvaluateStream(self) -> _AnswersFirstCall:
        return _AnswersFirstCall()


def test_call_ids_answered_before_their_write_returns_are_not_kept() -> None:
    """Soak: ``_sent`` kept every id whose answer was read before ``await write`` returned (+1 int per call)."""

    async def drive() -> routing._BatchingStream:
        stream = routing._BatchingStream("tax", _Stub(), lambda token: None)
        for _ in range(50):
            await asyncio.gather(*(stream.call(agent_pb2.AgentCall(), 5.0, 0) for _ in range(20)))
        return stream

    stream = asyncio.run(drive())
    assert stream.batches_sent > 0
    assert len(stream._sent) == 0
    assert stream.depth().pending == 0


def test_a_write_that_raises_leaves_its_calls_unsent() -> None:
    """The calls of a batch whose write raised reached nothing (their uses are given back, node.admission A6)."""

    class _Broken(_AnswersFirstCall):
        async def write(self, request: agent_pb2.EvaluateStreamRequest) -> None:
            raise RuntimeError("not connected")

    class _BrokenStub:
        def EvaluateStream(self) -> _Broken:
            return _Broken()

    async def drive() -> list[BaseException]:
        stream = routing._BatchingStream("tax", _BrokenStub(), lambda token: None)
        out = await asyncio.gather(
            *(stream.call(agent_pb2.AgentCall(), 5.0, 0) for _ in range(3)), return_exceptions=True
        )
        assert len(stream._sent) == 0
        return [e for e in out if isinstance(e, BaseException)]

    errors = asyncio.run(drive())
    assert len(errors) == 3
    assert all(getattr(e, "data_read", True) is False for e in errors)


def test_the_risk_monitor_scans_without_the_lock_admissions_take(tmp_path: Path) -> None:
    """Soak: the hourly-window scans held the node's one connection (0.5 s at 460k rows: 256 calls queued)."""
    from xinrong.node.audit import AuditEvent, Decision, open_audit_log
    from xinrong.node.config import RiskConfig
    from xinrong.node.db import Database
    from xinrong.node.usage import RiskMonitor

    db = Database(tmp_path / "node.db")
    audit = open_audit_log(db)
    now = 1_790_000_000.0
    with db.transaction() as tx:
        for i in range(30):
            event = AuditEvent("institution", "bank-a", "Verify", Decision.ALLOWED, enterprise=f"e{i}", consent_id="c1")
            audit.append(tx, event, int((now - 60 + i) * 1000))

    class _NoInstitutions:
        def all(self) -> list[Any]:
            return []

    monitor = RiskMonitor(db, audit, _NoInstitutions(), RiskConfig(), node_id="node", clock=lambda: now)  # type: ignore[arg-type]
    flags: list[Any] = []
    with db.lock:  # as an admission holds it
        worker = threading.Thread(target=lambda: flags.extend(monitor.evaluate("bank-a", now)), daemon=True)
        worker.start()
        worker.join(timeout=10)
        scanned_under_the_lock = worker.is_alive()
    worker.join()
    db.close()
    assert not scanned_under_the_lock
    assert "RISK_ENTERPRISES_PER_CONSENT" in {f.rule for f in flags}  # the committed entries were read


def test_the_periodic_replay_prune_reads_the_table_a_few_times_per_id_not_every_tick(tmp_path: Path) -> None:
    """Soak: every maintenance tick (30 s) swept the whole replay table, ~22 reads of each id in its 11 minutes.

    Now a sweep runs once a quarter of the window has expired: the table stays
    within ~1.25x the live window, every expired id is gone within a sweep, and
    no live id is ever forgotten.
    """
    from xinrong.node.db import Database
    from xinrong.node.limits import ReplayGuard, replay_row_bytes

    db = Database(tmp_path / "node.db")
    guard = ReplayGuard(db, retention_seconds=100)
    per_tick, tick, t0 = 200, 5.0, 1_790_000_000.0
    rows_read = [0]
    query = db.query

    def counting(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        rows = query(sql, params)
        rows_read[0] += len(rows)
        return rows

    db.query = counting  # type: ignore[method-assign]
    n = 0
    ticks = 80  # 400 s: four retention periods
    for k in range(ticks):
        now = t0 + k * tick
        with db.lock:
            for _ in range(per_tick):
                with db.transaction(durable=False) as tx:
                    guard.record(tx, "institution:bank-a", f"r-{n:08d}", now)
                n += 1
        db.wait_durable(tx.token)
        guard.prune(now, lazy=True)
        live = guard.window_bytes // replay_row_bytes("institution:bank-a", "r-00000000")
        held = int(query("SELECT count(*) FROM replay_ids")[0][0])
        assert held <= 1.25 * live + 2 * per_tick + 1, (k, held, live)
    newest = f"r-{n - 1:08d}"
    assert guard.seen("institution:bank-a", newest)
    db.close()
    assert guard.sweeps <= ticks // 4, guard.sweeps  # not one per tick
    assert rows_read[0] <= 10 * guard.sweeps * (1 + 40 * per_tick // 1000), rows_read[0]  # keys only, no rows


def test_the_subtree_cache_stays_bounded_as_the_log_grows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Soak: every fetched subtree of level >= 6 was cached for good (one per 32 leaves), node and agents alike."""
    import hashlib
    import sqlite3

    from xinrong.keys.signing import SigningKey
    from xinrong.tlog import store as tlog_store

    monkeypatch.setattr(tlog_store, "CACHE_MAX", 64)
    conn = sqlite3.connect(":memory:")
    conn.executescript(tlog_store.sqlite_tables("t_"))
    cache: dict[tuple[int, int], bytes] = {}
    key = SigningKey.generate()
    n = 0
    for _ in range(300):  # 300 integrations of 100 leaves, a checkpoint signed after each (as the node does)
        reader = tlog_store.SubtreeStore(
            lambda sql, p: conn.execute(sql, tuple(p)).fetchall(), prefix="t_", cache=cache
        )
        reader.extend(conn.executemany, [hashlib.sha256(f"{n + i}".encode()).digest() for i in range(100)])
        n += 100
        assert reader.sign(conn.execute, "test/log", key, 0) is not None
        assert len(cache) <= 64
    assert reader.size() == 30_000


def test_the_agent_folds_new_answers_without_stepping_over_the_old_ones(tmp_path: Path) -> None:
    """Soak: each second's integration read ``OFFSET size`` (every answer so far) under the agent's store lock."""
    import sqlite3

    from xinrong.keys.signing import SigningKey
    from xinrong.provider_agent.store import AnswerLogEntry, StateStore

    store = StateStore(tmp_path / "agent.state.db", "tax")
    key = SigningKey.generate()
    n = [0]

    def answers(count: int) -> None:
        entries = [
            AnswerLogEntry(
                request_id=f"r-{n[0] + i}",
                kind="claims",
                consent_id="c1",
                enterprise_uscc="e",
                audience="bank-a",
                fields=("tax.credit_grade",),
                data_as_of="2026-06-30",
                answer_sha256=("00",),
                sealed_sha256="00",
                issued_at=0,
            )
            for i in range(count)
        ]
        store.record_answers(entries)
        n[0] += count

    def steps_to_fold_ten() -> int:
        answers(10)
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        conn: sqlite3.Connection = store._conn
        conn.set_progress_handler(count, 100)
        try:
            store.integrate_answers("test/answers", key, 0)
        finally:
            conn.set_progress_handler(None, 100)
        return steps[0]

    answers(2_000)
    store.integrate_answers("test/answers", key, 0)
    small = steps_to_fold_ten()
    answers(20_000)
    store.integrate_answers("test/answers", key, 0)
    large = steps_to_fold_ten()
    latest, entries = store.answer_export()
    store.close()
    assert latest is not None and latest.size == n[0] == len(entries)
    assert large < 2 * small + 50, (small, large)  # not ten times more for ten times the log


def test_the_wal_is_emptied_under_steady_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Soak: PASSIVE checkpoints between group commits never let SQLite restart the WAL (2 GB in 3 minutes).

    The pattern of the loaded node: units applied in the open write transaction,
    a checkpoint from the background thread, then the group COMMIT.
    """
    from xinrong.node import db as node_db

    monkeypatch.setattr(node_db, "WAL_RESET_FRAMES", 64, raising=False)
    db = node_db.Database(tmp_path / "node.db", schemas=["CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL);"])
    wal = tmp_path / "node.db-wal"
    biggest = 0
    for i in range(300):
        with db.transaction(durable=False) as tx:
            tx.execute("INSERT INTO t (k, v) VALUES (?, ?)", (i, bytes(3000)))  # about a page per unit
        db.checkpoint()  # while the unit waits for its COMMIT, as under load
        db.wait_durable(tx.token)
        biggest = max(biggest, wal.stat().st_size)
    assert db.query("SELECT count(*) FROM t") == [(300,)]
    db.close()
    assert biggest < 4 * 64 * 4096 * 2, biggest  # a few reset thresholds, not 300+ pages
