"""Admissions sent in batches (``PgDatabase.admit_async``, schema step 13): a
batch is one transaction whose admissions each get the outcome they would get
alone, in order; a batch the server refuses leaves nothing behind and its
admissions are retried one by one, so one that fails fails alone; batches on
two replicas claiming the same rows in opposite orders never deadlock."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from xinrong.config import ConfigError
from xinrong.errors import StoreUnavailable
from xinrong.node import pg as pgmod
from xinrong.node.pg import ADMISSION_FIELDS, PgDatabase
from xinrong.tools import pgtemp

from support.pg import database_config, database_table


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
    ("name", "value"), [("ADMIT_IN_FLIGHT_ENV", "two"), ("ADMIT_IN_FLIGHT_ENV", "0"), ("ADMIT_BATCHING_ENV", "no")]
)
def test_a_bad_diagnostic_knob_stops_the_node_with_one_line(
    pg_cluster: pgtemp.TempPostgres, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """The bench-only knobs are read at start: a typo refuses to start, naming the knob, not a bare ValueError."""
    monkeypatch.setenv(getattr(pgmod, name), value)
    with pytest.raises(ConfigError, match=getattr(pgmod, name)):
        PgDatabase(database_config(database_table(pg_cluster)))
