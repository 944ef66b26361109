"""On-disk layout of a party's credentials, and provisioning from the CA.

    <keys>/ca/ca.key, ca.crt                     platform CA (ca.key stays offline)
    <keys>/<role>/<party_id>/tls.key, tls.crt    mTLS identity
                             signing.key         Ed25519
                             sealing.key         X25519 (HPKE recipient key)
                             binding.pb          CA-signed PartyBinding

Configs name a credentials directory and the CA certificate: paths, never
key material.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from xinrong.errors import KeyFileError
from xinrong.keys.binding import VerifiedBinding, issue_binding, verify_binding
from xinrong.keys.ca import CaVerifier, CertificateAuthority, check_party_id
from xinrong.keys.files import read_private_file, refuse_source_tree, write_private_file, write_public_file
from xinrong.keys.sealing import SealingKey
from xinrong.keys.signing import SigningKey
from xinrong.v1 import common_pb2

ROLE_DIRS = {"node": "node", "provider": "providers", "institution": "institutions", "enterprise": "enterprises"}


def party_dir(keys_dir: str | Path, role: str, party_id: str) -> Path:
    return Path(keys_dir) / ROLE_DIRS[role] / check_party_id(party_id)


def ca_dir(keys_dir: str | Path) -> Path:
    return Path(keys_dir) / "ca"


@dataclass(frozen=True)
class PartyCredentials:
    """Everything a running party needs: its TLS identity, keys and the CA certificate."""

    party_id: str
    role: str
    tls_key_pem: bytes
    tls_cert_pem: bytes
    ca_cert_pem: bytes
    signing_key: SigningKey
    sealing_key: SealingKey | None
    binding: VerifiedBinding

    @property
    def ca(self) -> CaVerifier:
        return CaVerifier(self.ca_cert_pem)


def create_ca(keys_dir: str | Path, *, overwrite: bool = False) -> CertificateAuthority:
    refuse_source_tree(keys_dir)
    ca = CertificateAuthority.create()
    ca.save(ca_dir(keys_dir), overwrite=overwrite)
    return ca


def load_ca(keys_dir: str | Path) -> CertificateAuthority:
    return CertificateAuthority.load(ca_dir(keys_dir))


def provision_party(
    ca: CertificateAuthority,
    keys_dir: str | Path,
    *,
    role: str,
    party_id: str,
    provider: str = "",
    with_sealing: bool = True,
    overwrite: bool = False,
    signing_key: SigningKey | None = None,
) -> Path:
    """Create TLS, signing and sealing keys for a party and have the CA bind them."""
    refuse_source_tree(keys_dir)
    directory = party_dir(keys_dir, role, party_id)
    directory.mkdir(parents=True, exist_ok=True)
    tls_key, tls_cert = ca.issue_tls(role, party_id)
    write_private_file(directory / "tls.key", tls_key, overwrite=overwrite)
    write_public_file(directory / "tls.crt", tls_cert)
    signing = signing_key or SigningKey.generate()
    signing.save(directory / "signing.key", overwrite=overwrite)
    sealing_raw = b""
    if with_sealing:
        sealing = SealingKey.generate()
        sealing.save(directory / "sealing.key", overwrite=overwrite)
        sealing_raw = sealing.public_raw
    binding = issue_binding(
        ca,
        party_id=party_id,
        role=role,
        signing_public_raw=signing.public_raw,
        sealing_public_raw=sealing_raw,
        provider=provider,
    )
    write_public_file(directory / "binding.pb", binding.SerializeToString(deterministic=True))
    write_public_file(directory / "ca.crt", ca.cert_pem)
    return directory


def load_party(directory: str | Path, *, ca_cert: str | Path | None = None) -> PartyCredentials:
    """Load a party's credentials and check its own binding against the CA."""
    directory = Path(directory)
    ca_path = Path(ca_cert) if ca_cert else directory / "ca.crt"
    try:
        ca_pem = ca_path.read_bytes()
        cert_pem = (directory / "tls.crt").read_bytes()
        binding_raw = (directory / "binding.pb").read_bytes()
    except FileNotFoundError as exc:
        raise KeyFileError(f"credentials incomplete in {directory}: {exc.filename} missing") from None
    tls_key = read_private_file(directory / "tls.key")
    signing = SigningKey.load(directory / "signing.key")
    sealing = SealingKey.load(directory / "sealing.key") if (directory / "sealing.key").exists() else None
    signed = common_pb2.SignedPartyBinding()
    signed.ParseFromString(binding_raw)
    verified = verify_binding(CaVerifier(ca_pem), signed)
    if verified.verify_key.raw != signing.public_raw:
        raise KeyFileError(f"{directory}: binding does not match signing.key")
    if sealing is not None and verified.sealing_public_raw != sealing.public_raw:
        raise KeyFileError(f"{directory}: binding does not match sealing.key")
    return PartyCredentials(
        party_id=verified.party_id,
        role=verified.role,
        tls_key_pem=tls_key,
        tls_cert_pem=cert_pem,
        ca_cert_pem=ca_pem,
        signing_key=signing,
        sealing_key=sealing,
        binding=verified,
    )


def read_binding_file(path: str | Path) -> common_pb2.SignedPartyBinding:
    signed = common_pb2.SignedPartyBinding()
    signed.ParseFromString(Path(path).read_bytes())
    return signed


__all__ = [
    "PartyCredentials",
    "create_ca",
    "load_ca",
    "load_party",
    "party_dir",
    "provision_party",
    "read_binding_file",
    "read_private_file",
]
