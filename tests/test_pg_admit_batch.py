"""Admissions sent in batches (``PgDatabase.admit_async``, schema step 13): a
batch is one transaction whose admissions each get the outcome they would get
alone, in order; a batch the server refuses leaves nothing behind and its
admissions are retried one by one, so one that fails fails alone; batches on
two replicas claiming the same rows in opposite orders never deadlock."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from xinrong.config import ConfigError
from xinrong.errors import StoreUnavailable
from xinrong.node import pg as pgmod
from xinrong.node.pg import ADMISSION_FIELDS, PgDatabase
from xinrong.tools import pgtemp

from support.pg import database_config, database_table

T = TypeVar("T")


def _params(request_id: str, **over: Any) -> tuple[Any, ...]:
    """An admission refused at the shape step (no consent rows): replay id consumed, one audit event."""
    values: dict[str, Any] = {
        "caller": "bank:bank-a",
        "request_id": request_id,
        "now_ms": 1_700_000_000_000,
        "cutoff_ms": 1_699_999_000_000,
        "day": 19675,
        "budget": 100,
        "early": "",
        "shape": "CLAIM_UNKNOWN",
        "consents": [],
        "enterprises": [],
        "max_uses": [],
        "max_day": [],
        "pre": [],
        "role": "bank",
        "caller_id": "bank-a",
        "method": "Verify",
        "log_request_id": request_id,
        "providers": "",
        "fields": "",
        "claims": "00" * 32,
        "log_enterprise": "",
        "log_consent": "",
        "log_enterprises": [],
        "log_consents": [],
    }
    values.update(over)
    return tuple(values[name] for name in ADMISSION_FIELDS)


def _round_trips(db: PgDatabase) -> list[int]:
    """Count the batches sent, by wrapping the batch method."""
    sent: list[int] = []
    original = db._admit_batch

    async def counted(batch: list[Any]) -> None:
        sent.append(len(batch))
        await original(batch)

    db._admit_batch = counted  # type: ignore[method-assign]
    return sent


def _kicks(db: PgDatabase) -> list[bool]:
    """Record how each batch was scheduled: True for a linger's timer, False for at once.

    The tests assert these decisions, not how long a call took: an upper bound on
    wall time fails whenever a loaded machine stalls for longer than the margin.
    """
    kicks: list[bool] = []
    original = db._admit_schedule

    def recorded(loop: asyncio.AbstractEventLoop) -> None:
        original(loop)
        kicks.append(db._admit_lingering)

    db._admit_schedule = recorded  # type: ignore[method-assign]
    return kicks


async def _admit_all(db: PgDatabase, params: list[tuple[Any, ...]]) -> list[list[str] | BaseException]:
    try:
        return list(await asyncio.gather(*(db.admit_async(p) for p in params), return_exceptions=True))
    finally:
        await db.aclose()


def test_concurrent_admissions_share_round_trips_and_keep_their_own_outcomes(
    pg_cluster: pgtemp.TempPostgres,
) -> None:
    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        sent = _round_trips(db)
        ids = [f"r-{i:04d}" for i in range(40)]
        # The third id twice: the second of the two is a replay, whichever batch it lands in.
        params = [_params(i) for i in ids] + [_params(ids[2])]
        outcomes = asyncio.run(_admit_all(db, params))
        assert outcomes[:40] == [["CLAIM_UNKNOWN"]] * 40
        assert outcomes[40] == ["REQUEST_REPLAYED"]
        assert sum(sent) == 41 and len(sent) < 41, sent  # batched, nothing lost or doubled
        assert db.query("SELECT count(*) FROM replay_ids")[0][0] == 40
        assert db.query("SELECT count(*) FROM audit_pending")[0][0] == 41
    finally:
        db.close()


def test_an_admission_that_fails_fails_alone_and_is_rolled_back(pg_cluster: pgtemp.TempPostgres) -> None:
    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        # A NUL is no text in PostgreSQL: that admission's record cannot be read.
        params = [_params("r-a"), _params("r-b", method="Ver\x00ify"), _params("r-c")]
        outcomes = asyncio.run(_admit_all(db, params))
        assert outcomes[0] == ["CLAIM_UNKNOWN"] and outcomes[2] == ["CLAIM_UNKNOWN"]
        assert isinstance(outcomes[1], StoreUnavailable)
        assert sorted(r[0] for r in db.query("SELECT request_id FROM replay_ids")) == ["r-a", "r-c"]
    finally:
        db.close()


def test_a_batch_admits_duplicates_in_order_and_one_failure_leaves_nothing_of_the_batch(
    pg_cluster: pgtemp.TempPostgres,
) -> None:
    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        sent = _round_trips(db)
        # One loop iteration: one batch. The same id twice inside it: the first is fresh.
        outcomes = asyncio.run(_admit_all(db, [_params("r-x"), _params("r-y"), _params("r-x")]))
        assert outcomes == [["CLAIM_UNKNOWN"], ["CLAIM_UNKNOWN"], ["REQUEST_REPLAYED"]]
        assert sent == [3]
        # A batch the server refuses: nothing of it was committed before the retry one by one.
        seen: list[int] = []
        original = db._admit_alone

        async def alone(batch: list[Any]) -> None:
            seen.append(db.query("SELECT count(*) FROM replay_ids WHERE left(request_id, 3) = ?", ("r-z",))[0][0])
            await original(batch)

        db._admit_alone = alone  # type: ignore[method-assign]
        outcomes = asyncio.run(_admit_all(db, [_params("r-z1"), _params("r-z2", method="\x00"), _params("r-z3")]))
        assert seen == [0]
        assert outcomes[0] == ["CLAIM_UNKNOWN"] and outcomes[2] == ["CLAIM_UNKNOWN"]
        assert isinstance(outcomes[1], StoreUnavailable)
    finally:
        db.close()


def test_two_replicas_claiming_the_same_ids_in_opposite_orders_never_deadlock(
    pg_cluster: pgtemp.TempPostgres,
) -> None:
    table = database_table(pg_cluster)
    a, b = PgDatabase(database_config(table)), PgDatabase(database_config(table))
    try:

        async def replica(db: PgDatabase, ids: list[str]) -> list[list[str] | BaseException]:
            return await _admit_all(db, [_params(i) for i in ids])

        async def race(ids: list[str]) -> tuple[list[Any], list[Any]]:
            # Each replica in its own loop's thread, so both batches are in flight at once.
            loop = asyncio.get_running_loop()
            first = loop.run_in_executor(None, lambda: asyncio.run(replica(a, ids)))
            second = loop.run_in_executor(None, lambda: asyncio.run(replica(b, ids[::-1])))
            return await first, await second

        for round_ in range(20):
            ids = [f"d-{round_}-{i:02d}" for i in range(16)]
            got_a, got_b = asyncio.run(race(ids))
            errors = [o for o in (*got_a, *got_b) if isinstance(o, BaseException)]
            assert errors == [], errors
            fresh = sum(o == ["CLAIM_UNKNOWN"] for o in (*got_a, *got_b))
            assert fresh == len(ids)  # each id admitted once, by one replica or the other
    finally:
        a.close()
        b.close()


def test_batching_off_sends_each_admission_alone(
    pg_cluster: pgtemp.TempPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(pgmod.ADMIT_BATCHING_ENV, "off")
    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        sent = _round_trips(db)
        outcomes = asyncio.run(_admit_all(db, [_params("r-1"), _params("r-1")]))
        assert sorted(map(str, outcomes)) == sorted(map(str, [["CLAIM_UNKNOWN"], ["REQUEST_REPLAYED"]]))
        assert sent == []
    finally:
        db.close()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ADMIT_IN_FLIGHT_ENV", "two"),
        ("ADMIT_IN_FLIGHT_ENV", "0"),
        ("ADMIT_BATCHING_ENV", "no"),
        ("ADMIT_LINGER_ENV", "-1"),
        ("ADMIT_LINGER_ENV", "fast"),
        ("ADMIT_LINGER_ENV", "1e9"),
    ],
)
def test_a_bad_diagnostic_knob_stops_the_node_with_one_line(
    pg_cluster: pgtemp.TempPostgres, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The bench-only knobs are read at start: a typo refuses to start, naming the knob, not a bare ValueError."""
    monkeypatch.setenv(getattr(pgmod, name), value)
    with pytest.raises(ConfigError, match=getattr(pgmod, name)):
        PgDatabase(database_config(database_table(pg_cluster)))


LINGER_US = 100_000  # long, so "waited" and "did not wait" are far apart even on a loaded machine


@pytest.fixture
def lingering(pg_cluster: pgtemp.TempPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[PgDatabase]:
    monkeypatch.setenv(pgmod.ADMIT_LINGER_ENV, str(LINGER_US))
    db = PgDatabase(database_config(database_table(pg_cluster)))
    try:
        yield db
    finally:
        db.close()


def _run_then_close(db: PgDatabase, work: Callable[[], Awaitable[T]]) -> T:
    """``work`` on a fresh loop, then the loop's pool closed (as the node's stop does)."""

    async def run() -> T:
        try:
            return await work()
        finally:
            await db.aclose()

    return asyncio.run(run())


def _as_under_load(db: PgDatabase) -> None:
    """As after a while of admissions 0.1 ms apart from several callers (the moving averages)."""
    db._arrival_gap = 0.0001
    db._batch_size = 3.0
    db._last_arrival = asyncio.get_running_loop().time()


async def _timed(db: PgDatabase, waves: list[list[str]], pause: float) -> tuple[list[list[str]], float]:
    """Admissions in waves ``pause`` apart; their outcomes, and the seconds until the last."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    pending = []
    for i, wave in enumerate(waves):
        if i:
            await asyncio.sleep(pause)
        pending += [asyncio.ensure_future(db.admit_async(_params(r))) for r in wave]
    outcomes = list(await asyncio.gather(*pending))
    return outcomes, loop.time() - t0


def test_a_lone_admission_at_low_load_does_not_wait_for_the_linger(lingering: PgDatabase) -> None:
    sent, kicks = _round_trips(lingering), _kicks(lingering)
    outcomes, _ = _run_then_close(lingering, lambda: _timed(lingering, [["lone-1"]], 0))
    assert outcomes == [["CLAIM_UNKNOWN"]] and sent == [1]
    assert kicks == [False]  # sent on the next loop iteration, no timer


def test_under_load_a_batch_waits_up_to_the_linger_for_more_and_a_full_one_goes_at_once(
    lingering: PgDatabase,
) -> None:
    sent, kicks = _round_trips(lingering), _kicks(lingering)
    marks: list[int] = []

    async def work() -> list[tuple[list[list[str]], float]]:
        _as_under_load(lingering)
        short = await _timed(lingering, [["w-1"], ["w-2", "w-3"]], 0.01)  # 3 < ADMIT_FULL: the linger runs out
        marks.append(len(kicks))
        _as_under_load(lingering)
        full = await _timed(lingering, [["f-1"], ["f-2", "f-3", "f-4"]], 0.01)  # ADMIT_FULL: goes at once
        return [short, full]

    (short, waited), (full, _) = _run_then_close(lingering, work)
    assert pgmod.ADMIT_FULL == 4
    assert short == [["CLAIM_UNKNOWN"]] * 3 and full == [["CLAIM_UNKNOWN"]] * 4
    assert sent == [3, 4]  # one batch each: the later arrivals joined the lingering one
    # A lower bound only: a timer never fires early, however loaded the machine.
    assert waited >= LINGER_US / 1e6 * 0.9, waited
    assert kicks[: marks[0]] == [True]  # the short batch: one linger's timer, run out
    assert kicks[marks[0] :] == [True, False]  # the full one: a linger, cut short by the fourth arrival


def test_closing_sends_a_lingering_batch_rather_than_dropping_it(lingering: PgDatabase) -> None:
    async def run() -> list[str]:
        _as_under_load(lingering)
        task = asyncio.ensure_future(lingering.admit_async(_params("closing-1")))
        await asyncio.sleep(0.005)
        assert lingering._admit_lingering and not task.done()
        await lingering.aclose()
        return await task

    assert asyncio.run(run()) == ["CLAIM_UNKNOWN"]
    assert lingering.query("SELECT count(*) FROM replay_ids WHERE request_id = ?", ("closing-1",))[0][0] == 1


@pytest.fixture
def any_gap_is_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """However slow this machine, the admissions count as close together: only company can be missing."""
    monkeypatch.setattr(pgmod, "ADMIT_LINGER_GAP", 10.0)


def test_one_fast_caller_in_sequence_never_waits_for_the_linger(any_gap_is_close: None, lingering: PgDatabase) -> None:
    """Admissions close together but one at a time: a batch of one each, sent at once."""
    sent, kicks = _round_trips(lingering), _kicks(lingering)

    async def work() -> None:
        for i in range(40):
            assert await lingering.admit_async(_params(f"seq-{i}")) == ["CLAIM_UNKNOWN"]

    _run_then_close(lingering, work)
    assert sent == [1] * 40
    assert kicks == [False] * 40  # not one of them waited for company that was never coming
