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

from xinrong.errors import Reason, XinrongError
from xinrong.keys.ca import parse_party_uri, server_name


@dataclass(frozen=True)
class Peer:
    role: str
    party_id: str


# gRPC's name for the SAN entries of a verified certificate, when it has any.
_SAN_KEY = "x509_subject_alternative_name"


@lru_cache(maxsize=4096)
def _identity_from_sans(identities: tuple[bytes, ...]) -> Peer | None:
    """(role, party_id) from the first ``urn:xinrong:`` URI among the SANs,
    in certificate order (``xinrong.keys.ca.parse_party_uri``)."""
    for raw in identities:
        parsed = parse_party_uri(raw.decode("ascii", "replace"))
        if parsed:
            return Peer(*parsed)
    return None


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
    # The SANs of the chain gRPC verified against the platform CA: the same
    # certificate field the PEM would give, at a tenth of a microsecond
    # instead of the whole auth context with its PEM copies.
    if context.peer_identity_key() != _SAN_KEY:
        return None
    return _identity_from_sans(tuple(context.peer_identities() or ()))


__all__ = ["Peer", "peer_of", "remember_peer", "server_name"]


def require_caller(context: grpc.ServicerContext) -> Peer:
    """The certified caller of a handler.

    The server's guard already refused every call without a certified
    identity of an allowed role; this is the servicer's typed view of it.
    """
    peer = peer_of(context)
    if peer is None:
        raise XinrongError("no certified caller identity", reason=Reason.CALLER_NOT_ALLOWED)
    return peer


def require_node(context: grpc.ServicerContext, node_id: str) -> Peer:
    """The caller must be the configured node, not merely some CA-certified node.

    An agent serves one platform node; a second node certified by the same
    CA (a test or staging node) must not be able to drive it.
    """
    peer = peer_of(context)
    if peer is None or peer.role != "node" or peer.party_id != node_id:
        raise XinrongError("caller is not the configured node", reason=Reason.CALLER_NOT_ALLOWED)
    return peer
