"""Shared fixtures: a throwaway PKI with every party, the catalog, and the node harness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from xinrong.catalog import Catalog, default_catalog
from xinrong.keys.layout import create_ca, provision_party

from support.node_fakes import NodeHarness, harness_factory
from support.pg import database_table, pg_cluster
from support.pki import Pki
from support.replicas import replicas

__all__ = ["pg_cluster", "replicas"]  # fixtures defined in support/, here so every test module can use them


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return default_catalog()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory, catalog: Catalog) -> Pki:
    root = tmp_path_factory.mktemp("keys")
    ca = create_ca(root)
    provision_party(ca, root, role="node", party_id="node")
    for name in catalog.providers:
        provision_party(ca, root, role="provider", party_id=name, provider=name)
    for bank in ("bank-a", "bank-b", "bank-c"):
        provision_party(ca, root, role="institution", party_id=bank)
    return Pki(root=root, ca=ca)


@pytest.fixture
def node_backend() -> str:
    """The node's database in harnesses: SQLite; a module overrides this fixture
    (params sqlite, postgres) to run its tests on both backends."""
    return "sqlite"


@pytest.fixture
def make_harness(
    pki: Pki, catalog: Catalog, tmp_path: Path, node_backend: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., NodeHarness]]:
    database: Callable[[], dict[str, Any]] | None = None
    if node_backend == "postgres":
        cluster = request.getfixturevalue("pg_cluster")

        def database() -> dict[str, Any]:
            return database_table(cluster)

    with harness_factory(pki, catalog, tmp_path, database=database) as make:
        yield make
