"""Shared fixtures: a throwaway PKI with every party, the catalog, and the node harness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from xinrong.catalog import Catalog, default_catalog
from xinrong.keys.layout import create_ca, provision_party

from support.node_fakes import NodeHarness, harness_factory
from support.pki import Pki


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
def make_harness(pki: Pki, catalog: Catalog, tmp_path: Path) -> Iterator[Callable[..., NodeHarness]]:
    with harness_factory(pki, catalog, tmp_path) as make:
        yield make
