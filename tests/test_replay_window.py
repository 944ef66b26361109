"""The replay window's memory and byte bounds (soak: node RSS grew +52 % in 10 minutes).

Request ids are kept 2 x skew + 60 s to refuse replays. They used to be held
in memory as well as on disk (~360 bytes per id), so the node grew with
rate x 11 minutes. Now the database row is the only copy, memory holds byte
counts per 10-second bucket, and the window is bounded in bytes: at a bound,
new requests are refused RESOURCE_EXHAUSTED REPLAY_WINDOW_FULL with a
RetryInfo, and no id is forgotten before its time (that would let a replay in).
"""

from __future__ import annotations

import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest

from xinrong.catalog import Catalog
from xinrong.errors import Reason
from xinrong.node.db import Database
from xinrong.node.limits import BUCKET_MS, ReplayGuard, ReplayWindowFull, caller_key, replay_row_bytes

from support.busy import retry_after
from support.node_fakes import ACME, assert_refused, grant, register, verify_request

A = caller_key("institution", "bank-a")
B = caller_key("institution", "bank-b")
T0 = 1_800_000_000.0


def _record(db: Database, guard: ReplayGuard, caller: str, rid: str, now: float) -> None:
    with db.lock:
        assert guard.refusal(caller, rid, now) is None
        assert not guard.seen(caller, rid)
        with db.transaction(durable=False) as tx:
            guard.record(tx, caller, rid, now)


def test_memory_does_not_grow_with_the_ids_held(tmp_path: Path) -> None:
    db = Database(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=660)
    for i in range(2000):  # warm up: SQLite's page cache, the first buckets
        _record(db, guard, A, str(uuid.UUID(int=i)), T0 + i * 0.004)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        n = 20_000
        for i in range(2000, 2000 + n):
            _record(db, guard, A, str(uuid.UUID(int=i)), T0 + i * 0.004)  # 250/s, as the soak
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The old set + deque held ~360 bytes per id: 7 MB here. Now a few buckets' counters.
    assert after - before < 64 * 1024, after - before
    assert guard.seen(A, str(uuid.UUID(int=5))) and guard.seen(A, str(uuid.UUID(int=2000 + n - 1)))
    assert guard.window_bytes == sum(replay_row_bytes(A, str(uuid.UUID(int=i))) for i in range(2000 + n))
    db.close()


def test_a_full_caller_window_refuses_with_retry_after_and_forgets_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path / "r.db")
    size = replay_row_bytes(A, "r-0000")
    guard = ReplayGuard(db, retention_seconds=100, max_bytes=100 * size, max_caller_bytes=10 * size)
    for i in range(10):
        _record(db, guard, A, f"r-{i:04d}", T0 + i)
    refusal = guard.refusal(A, "r-0010", T0 + 10)
    assert isinstance(refusal, ReplayWindowFull) and refusal.reason is Reason.REPLAY_WINDOW_FULL
    # The oldest bucket (T0's) expires once its last id is older than the window.
    bucket = int(T0 * 1000) - int(T0 * 1000) % BUCKET_MS
    assert refusal.retry_after == pytest.approx((bucket + BUCKET_MS) / 1000 + 100 - (T0 + 10))
    assert refusal.data_read is False
    # Every id held is still refused as a replay; another caller has its own share.
    assert all(guard.seen(A, f"r-{i:04d}") for i in range(10))
    _record(db, guard, B, "r-0000", T0 + 10)
    # Pruning inside the window frees nothing.
    assert guard.prune(T0 + 50) == 0 and guard.refusal(A, "r-0010", T0 + 50) is not None
    # A restart recounts the window from the database: still full.
    db.close()
    db = Database(tmp_path / "r.db")
    guard = ReplayGuard(db, retention_seconds=100, max_bytes=100 * size, max_caller_bytes=10 * size)
    assert guard.load(T0 + 60) == 11
    assert guard.caller_bytes(A) == 10 * size and guard.refusal(A, "r-0010", T0 + 60) is not None
    # Once the ids have aged out of the window they are pruned, and the caller is admitted again.
    assert guard.prune(T0 + 120) == 11
    assert guard.caller_bytes(A) == 0 and guard.window_bytes == 0
    _record(db, guard, A, "r-0010", T0 + 120)
    db.close()


def test_the_node_wide_bound_refuses_every_caller(tmp_path: Path) -> None:
    db = Database(tmp_path / "r.db")
    size = replay_row_bytes(A, "r-0000")
    guard = ReplayGuard(db, retention_seconds=100, max_bytes=4 * size, max_caller_bytes=3 * size)
    for i in range(3):
        _record(db, guard, A, f"r-{i:04d}", T0)
    _record(db, guard, B, "r-0000", T0)
    for caller in (A, B, caller_key("institution", "bank-c")):
        refusal = guard.refusal(caller, "r-0009", T0 + 1)
        assert refusal is not None and refusal.reason is Reason.REPLAY_WINDOW_FULL
        assert refusal.retry_after is not None and refusal.retry_after >= 1.0
    db.close()


def test_verify_at_a_full_window_is_resource_exhausted_with_retry_info(
    make_harness: Any, pki: Any, catalog: Catalog
) -> None:
    """In-process gRPC: the bank is told to retry later, and the refusal costs no consent use."""
    h = make_harness(["tax"], replay_window_caller_bytes=4096)
    consent = grant(pki, catalog, max_uses=500)
    register(h.enterprise(ACME), consent)
    bank = h.bank()
    per_id = replay_row_bytes(A, str(uuid.uuid4()))
    fits = 4096 // per_id
    for _ in range(fits):
        bank.Verify(verify_request(consent), timeout=10)
    err = assert_refused(
        lambda: bank.Verify(verify_request(consent), timeout=10),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        Reason.REPLAY_WINDOW_FULL,
    )
    delay = retry_after(err)
    assert delay is not None and 1.0 <= delay <= 2 * 300 + 60 + 10
    uses = h.query("SELECT sum(uses) FROM consent_daily_uses")
    assert uses == [(fits,)]
    # Another bank is not refused: the bound is per caller too.
    assert h.node is not None and h.node.core.replay.caller_bytes(B) == 0


def test_expired_buckets_are_counted_out_before_the_next_prune(tmp_path: Path) -> None:
    """The retry-after is honest: once the oldest ids are out of the window the caller is admitted,
    though their rows wait for the maintenance sweep (and are still refused as replays until then)."""
    db = Database(tmp_path / "r.db")
    size = replay_row_bytes(A, "r-0000")
    guard = ReplayGuard(db, retention_seconds=100, max_caller_bytes=2 * size)
    _record(db, guard, A, "r-0000", T0)
    _record(db, guard, A, "r-0001", T0 + 20)
    refusal = guard.refusal(A, "r-0002", T0 + 30)
    assert refusal is not None and refusal.retry_after is not None
    later = T0 + 30 + refusal.retry_after
    assert guard.refusal(A, "r-0002", later) is None
    assert guard.caller_bytes(A) == size
    assert guard.seen(A, "r-0000")  # not forgotten before the sweep
    assert guard.prune(later) == 1 and not guard.seen(A, "r-0000") and guard.seen(A, "r-0001")
    db.close()
