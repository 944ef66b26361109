"""Who is calling: the party identity in the verified client certificate.

gRPC has already checked the certificate chain against the platform CA
(``require_client_auth``); here we read the role and party id from its URI
SAN. Nothing the caller sends in a request is trusted for identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import grpc
from cryptography import x509

from keys.ca import identity_of_certificate, server_name


@dataclass(frozen=True)
class Peer:
    role: str
    party_id: str


@lru_cache(maxsize=4096)
def _identity_from_pem(pem: bytes) -> Peer | None:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        return None
    ident = identity_of_certificate(cert)
    return Peer(*ident) if ident else None


def peer_of(context: grpc.ServicerContext) -> Peer | None:
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems:
        return None
    return _identity_from_pem(bytes(pems[0]))


__all__ = ["Peer", "peer_of", "server_name"]
