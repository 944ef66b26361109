"""The platform CA: TLS certificates for every party and CA-signed key bindings.

ECDSA P-256 throughout, which every TLS stack gRPC links against accepts.
A party's role and id live in its certificate as a URI SAN
``urn:xinrong:<role>:<party_id>`` so servers authorize on the certificate
alone, never on anything the caller says about itself.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from xinrong.errors import KeyFileError, SignatureError
from xinrong.keys.files import read_private_file, write_private_file, write_public_file

ROLE_NAMES = ("node", "provider", "institution", "enterprise")
_PARTY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_URI_PREFIX = "urn:xinrong:"
BINDING_CONTEXT = b"xinrong.v1.PartyBinding\x00"


def check_party_id(party_id: str) -> str:
    if not _PARTY_ID.match(party_id):
        raise ValueError(f"party id {party_id!r} must be 1-64 characters of [A-Za-z0-9_.-]")
    return party_id


def party_uri(role: str, party_id: str) -> str:
    if role not in ROLE_NAMES:
        raise ValueError(f"unknown role {role!r}")
    return f"{_URI_PREFIX}{role}:{check_party_id(party_id)}"


def server_name(role: str, party_id: str) -> str:
    """DNS name in a party's certificate, used as the TLS target name so a
    client only completes a handshake with the party it meant to reach."""
    label = party_id.lower().replace("_", "-").replace(".", "-")
    return f"{label}.{role}.xinrong"


def parse_party_uri(uri: str) -> tuple[str, str] | None:
    if not uri.startswith(_URI_PREFIX):
        return None
    rest = uri[len(_URI_PREFIX) :]
    role, sep, party_id = rest.partition(":")
    if not sep or role not in ROLE_NAMES or not _PARTY_ID.match(party_id):
        return None
    return role, party_id


@dataclass
class CertificateAuthority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, name: str = "xinrong platform CA", *, days: int = 3650) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(key=key, cert=cert)

    def save(self, directory: str | Path, *, overwrite: bool = False) -> None:
        directory = Path(directory)
        write_private_file(
            directory / "ca.key",
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            overwrite=overwrite,
        )
        write_public_file(directory / "ca.crt", self.cert_pem)

    @classmethod
    def load(cls, directory: str | Path) -> CertificateAuthority:
        directory = Path(directory)
        key = serialization.load_pem_private_key(read_private_file(directory / "ca.key"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyFileError("CA key is not an EC key")
        cert = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
        return cls(key=key, cert=cert)

    def issue_tls(
        self, role: str, party_id: str, *, days: int = 825, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> tuple[bytes, bytes]:
        """Issue a TLS key and certificate (PEM) for a party; usable as server and client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(party_uri(role, party_id)),
            x509.DNSName(server_name(role, party_id)),
        ]
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(
                x509.Name(
                    [
                        x509.NameAttribute(NameOID.COMMON_NAME, party_id),
                        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    ]
                )
            )
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return key_pem, cert.public_bytes(serialization.Encoding.PEM)

    def sign_binding(self, binding_bytes: bytes) -> bytes:
        return self.key.sign(BINDING_CONTEXT + binding_bytes, ec.ECDSA(hashes.SHA256()))


class CaVerifier:
    """Checks CA signatures on party bindings with the CA certificate alone."""

    def __init__(self, ca_cert_pem: bytes) -> None:
        self.cert = x509.load_pem_x509_certificate(ca_cert_pem)
        public = self.cert.public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise KeyFileError("CA certificate does not hold an EC key")
        self._public = public

    @classmethod
    def load(cls, path: str | Path) -> CaVerifier:
        return cls(Path(path).read_bytes())

    def verify_binding_signature(self, binding_bytes: bytes, signature: bytes) -> None:
        try:
            self._public.verify(signature, BINDING_CONTEXT + binding_bytes, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError("binding signature check failed") from None
