"""Shared fixtures: a throwaway PKI with every party, and the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from keys.ca import CertificateAuthority
from keys.layout import PartyCredentials, create_ca, load_party, party_dir, provision_party
from xinrong.catalog import Catalog, default_catalog

ENTERPRISES = ("911301001234567883",)  # extended by tests through Pki.enterprise()


@dataclass
class Pki:
    """A keys directory with a CA, the node, every catalog provider and two banks."""

    root: Path
    ca: CertificateAuthority

    def party(self, role: str, party_id: str) -> PartyCredentials:
        return load_party(party_dir(self.root, role, party_id))

    @property
    def node(self) -> PartyCredentials:
        return self.party("node", "node")

    def provider(self, name: str) -> PartyCredentials:
        return self.party("provider", name)

    def institution(self, name: str) -> PartyCredentials:
        return self.party("institution", name)

    def enterprise(self, uscc: str) -> PartyCredentials:
        """Credentials of an enterprise, provisioned on first use."""
        directory = party_dir(self.root, "enterprise", uscc)
        if not (directory / "binding.pb").exists():
            provision_party(self.ca, self.root, role="enterprise", party_id=uscc, with_sealing=False)
        return load_party(directory)


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
