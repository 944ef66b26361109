"""A throwaway PKI with every party: the CA, the node, each catalog provider and three banks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xinrong.keys.ca import CertificateAuthority
from xinrong.keys.layout import PartyCredentials, load_party, party_dir, provision_party

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
            provision_party(self.ca, self.root, role="enterprise", party_id=uscc)
        return load_party(directory)
