"""Thin gRPC servicer of the node's transparency log (``xinrong.v1.TransparencyService``).

Checkpoints and proofs are public to every authenticated role: they hold
hashes only. ``ListAccesses`` is the enterprise's "who accessed my data": the
enterprise comes from the caller's verified certificate, never from the
request, and the listing reads only the rows of that enterprise (the
``audit_log_enterprise`` index), so nothing of another enterprise is read,
counted or timed. Page tokens are the last seq listed, opaque to the caller.
"""

from __future__ import annotations

import grpc

from xinrong import ids
from xinrong.errors import Reason, ValidationError, XinrongError, invalid
from xinrong.node.tlog import TransparencyLog
from xinrong.rpc.auth import require_caller
from xinrong.v1 import transparency_pb2, transparency_pb2_grpc

SERVICE_NAME = "xinrong.v1.TransparencyService"
ENTERPRISE = "enterprise"


# Tree sizes and leaf indices a log can reach (and SQLite / PostgreSQL can bind):
# anything larger is refused as malformed, not looked up.
MAX_POSITION = 2**62


def _position(value: int, what: str) -> int:
    if value >= MAX_POSITION:
        raise invalid(f"{what} must be below 2^62")
    return value


def _page_token(value: str) -> int:
    if not value:
        return 0
    number = ids.decimal(value)
    if number is None:
        raise ValidationError("page token malformed", public="the page token is malformed: pass back next_page_token")
    return _position(number, "page token")


class TransparencyServicer(transparency_pb2_grpc.TransparencyServiceServicer):  # type: ignore[misc]
    def __init__(self, tlog: TransparencyLog) -> None:
        self._tlog = tlog

    def GetCheckpoint(
        self, request: transparency_pb2.GetCheckpointRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.GetCheckpointResponse:
        require_caller(context)
        return transparency_pb2.GetCheckpointResponse(checkpoint=self._tlog.latest().note)

    def GetInclusionProof(
        self, request: transparency_pb2.GetInclusionProofRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.GetInclusionProofResponse:
        require_caller(context)
        which = request.WhichOneof("leaf")
        if which is None:
            raise ValidationError("no leaf", public="leaf_index or leaf_hash is required")
        index, leaf, proof, checkpoint = self._tlog.inclusion(
            _position(request.leaf_index, "leaf_index") if which == "leaf_index" else None,
            bytes(request.leaf_hash) if which == "leaf_hash" else None,
            _position(request.tree_size, "tree_size"),
        )
        return transparency_pb2.GetInclusionProofResponse(
            leaf_index=index, tree_size=checkpoint.size, leaf_hash=leaf, proof=proof, checkpoint=checkpoint.note
        )

    def GetConsistencyProof(
        self, request: transparency_pb2.GetConsistencyProofRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.GetConsistencyProofResponse:
        require_caller(context)
        size1, size2, proof, checkpoint = self._tlog.consistency(
            _position(request.first_size, "first_size"), _position(request.second_size, "second_size")
        )
        return transparency_pb2.GetConsistencyProofResponse(
            first_size=size1, second_size=size2, proof=proof, checkpoint=checkpoint.note
        )

    def ListAccesses(
        self, request: transparency_pb2.ListAccessesRequest, context: grpc.ServicerContext
    ) -> transparency_pb2.ListAccessesResponse:
        caller = require_caller(context)
        if caller.role != ENTERPRISE:
            raise XinrongError(f"{caller.role} may not list accesses", reason=Reason.CALLER_NOT_ALLOWED)
        checkpoint, page, last = self._tlog.accesses(
            caller.party_id, _page_token(request.page_token), request.page_size
        )
        entries = [
            transparency_pb2.AccessEntry(
                leaf_index=entry.seq - 1,
                ts_ms=entry.ts_ms,
                caller_role=entry.event.caller_role,
                caller_id=entry.event.caller_id,
                method=entry.event.method,
                request_id=entry.event.request_id,
                consent_id=entry.event.consent_id,
                providers=list(entry.event.providers),
                fields=list(entry.event.fields),
                claims_sha256=entry.event.claims_sha256,
                decision=entry.event.decision.value,
                reason=entry.event.reason,
                inclusion_proof=proof,
            )
            for entry, proof in page
        ]
        return transparency_pb2.ListAccessesResponse(
            checkpoint=checkpoint.note, entries=entries, next_page_token=str(last) if last else ""
        )


__all__ = ["SERVICE_NAME", "TransparencyServicer"]
