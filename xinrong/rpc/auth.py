"""Who is calling: the party identity in the verified client certificate.

gRPC has already checked the certificate chain against the platform CA
(``require_client_auth``); here we read the role and party id from its URI
SAN. Nothing the caller sends in a request is trusted for identity.
"""

from __future__ import annotations

import threading
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


_current = threading.local()


def remember_peer(context: grpc.ServicerContext, peer: Peer | None) -> None:
    """Cache the peer of the call this thread is serving (set by the guard
    interceptor), so servicers asking again do not re-read the auth context."""
    _current.context = context
    _current.peer = peer


def peer_of(context: grpc.ServicerContext, *, fresh: bool = False) -> Peer | None:
    """The verified identity of the caller (fresh=True skips the per-call cache)."""
    if not fresh and getattr(_current, "context", None) is context:
        cached: Peer | None = _current.peer
        return cached
    auth = context.auth_context()
    pems = list(auth.get("x509_pem_cert") or [])
    if not pems:
        return None
    return _identity_from_pem(bytes(pems[0]))


__all__ = ["Peer", "peer_of", "remember_peer", "server_name"]
