"""PostgreSQL for tests: one throwaway cluster per session, one fresh database per test.

The cluster is a real PostgreSQL 15 started by ``xinrong.tools.pgtemp``
(initdb / pg_ctl on a temporary directory and a free port; ``make`` installs
the binaries). It runs with fsync off: tests are about semantics and
concurrency, not about surviving a power cut.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from xinrong.node.config import DatabaseConfig
from xinrong.node.pg import migrate
from xinrong.tools import pgtemp

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[pgtemp.TempPostgres]:
    try:
        cluster = pgtemp.start(fast=True, max_connections=300)
    except pgtemp.PostgresUnavailable as exc:
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()


def database_table(cluster: pgtemp.TempPostgres, *, migrated: bool = True, **extra: Any) -> dict[str, Any]:
    """A fresh database in the cluster, as the ``[database]`` table of a node config."""
    url = cluster.create_database(f"t{next(_names)}")
    table: dict[str, Any] = {"url": url, "password_file": str(cluster.password_file), "pool_size": 4, **extra}
    if migrated:
        migrate(database_config(table))
    return table


def database_config(table: dict[str, Any]) -> DatabaseConfig:
    from pathlib import Path

    return DatabaseConfig(
        url=table["url"],
        password_file=Path(table["password_file"]),
        pool_size=int(table.get("pool_size", 4)),
        synchronous_commit=str(table.get("synchronous_commit", "on")),
    )
