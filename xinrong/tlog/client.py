"""Checking what a log serves: one verifier for the bank SDK, the enterprise client and the agents.

Works on the ``xinrong.v1.transparency`` messages and any stub that has the
TransparencyService methods (no transport here). Every check opens the
checkpoint with the log's key (from the log's CA-checked party binding),
recomputes what the proof implies and refuses on any mismatch
(``merkle.ProofError`` / ``note.NoteError``); a witness, when given, must
accept the checkpoint (consistency proof from the one it holds) before
anything proven against it is believed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.tlog import merkle
from xinrong.tlog.auditleaf import audit_leaf
from xinrong.tlog.note import Checkpoint
from xinrong.tlog.witness import Witness, peer_notes
from xinrong.v1 import transparency_pb2


def audit_origin(node_id: str) -> str:
    """The origin (and note key name) of a node's audit log."""
    return f"xinrong.audit/{node_id}"


def answers_origin(provider_id: str) -> str:
    """The origin of an agent's log of what it answered."""
    return f"xinrong.answers/{provider_id}"


@dataclass(frozen=True)
class VerifiedAccess:
    """An access entry whose leaf was rebuilt and proven included in a signed checkpoint."""

    leaf_index: int
    tree_size: int
    ts_ms: int
    caller_role: str
    caller_id: str
    method: str
    request_id: str
    consent_id: str
    providers: tuple[str, ...]
    fields: tuple[str, ...]
    claims_sha256: str
    decision: str
    reason: str


class LogClient:
    """A party's view of one log: fetch, check against the witness, prove."""

    def __init__(self, stub: Any, origin: str, public_raw: bytes, witness: Witness | None = None) -> None:
        self._stub = stub
        self.origin = origin
        self._key = public_raw
        self.witness = witness if witness is not None else Witness(None)
        self.witness.trust(origin, public_raw)

    def _proofs(self, size1: int, size2: int) -> Sequence[bytes]:
        resp = self._stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=size1, second_size=size2), timeout=10
        )
        if resp.first_size != size1 or resp.second_size != size2:
            raise merkle.ProofError("the log answered a consistency proof for other sizes")
        return [bytes(h) for h in resp.proof]

    def accept(self, note: str) -> Checkpoint:
        """Open a served checkpoint and have the witness accept it (SplitView if it cannot)."""
        return self.witness.observe(note, self.origin, self._proofs)

    def gossip(self, peer: str) -> dict[str, object]:
        """Take another party's newest checkpoint of this log (its witness file or one signed note).

        The note must be signed by the log and consistent with the one held
        (a proof from the log either way); a newer one is then held. NoteError
        if it is not the log's; SplitView (kept as an alarm with both notes) if
        the log showed the peer another history.
        """
        note = peer_notes(peer).get(self.origin)
        before = self.witness.held(self.origin)
        if note is None:
            return {"origin": self.origin, "offered": False, "held_size": before.checkpoint.size if before else 0}
        offered = self.accept(note)
        after = self.witness.held(self.origin)
        return {
            "origin": self.origin,
            "offered": True,
            "offered_size": offered.size,
            "held_size": after.checkpoint.size if after else 0,
            "advanced": after is not None and (before is None or after.checkpoint.size > before.checkpoint.size),
            "consistent": True,
        }

    def checkpoint(self) -> Checkpoint:
        resp = self._stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest(), timeout=10)
        return self.accept(resp.checkpoint)

    def prove_leaf(self, index: int, leaf_hash: bytes | None = None) -> Checkpoint:
        """Check that leaf ``index`` (with ``leaf_hash`` if given) is in the log; the checkpoint proven against."""
        resp = self._stub.GetInclusionProof(transparency_pb2.GetInclusionProofRequest(leaf_index=index), timeout=10)
        checkpoint = self.accept(resp.checkpoint)
        check_inclusion(resp, checkpoint, expected_leaf=leaf_hash)
        if resp.leaf_index != index:
            raise merkle.ProofError("the log proved another leaf")
        return checkpoint

    def _signed_at(self, size: int) -> Checkpoint:
        """The log's signed checkpoint of exactly ``size``, accepted by the witness."""
        resp = self._stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=size, second_size=size), timeout=10
        )
        checkpoint = self.accept(resp.checkpoint)
        if checkpoint.size != size or resp.first_size != size or resp.second_size != size:
            raise merkle.ProofError(f"the log answered a checkpoint of size {checkpoint.size} for size {size}")
        return checkpoint

    def consistency(self, size1: int, size2: int) -> Checkpoint:
        """Check that the log's signed checkpoint of ``size2`` extends its signed checkpoint
        of ``size1`` (RFC 9162 2.1.4.2, against both roots); both are accepted by the
        witness first. Returns the checkpoint of ``size2``."""
        if not 0 < size1 <= size2:
            raise ValueError(f"need 0 < size1 <= size2, not {size1}, {size2}")
        old = self._signed_at(size1)
        resp = self._stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=size1, second_size=size2), timeout=10
        )
        if resp.first_size != size1 or resp.second_size != size2:
            raise merkle.ProofError("the log answered a consistency proof for other sizes")
        new = self.accept(resp.checkpoint)
        if new.size != size2:
            raise merkle.ProofError(f"the log answered a checkpoint of size {new.size} for size {size2}")
        merkle.verify_consistency(size1, size2, [bytes(h) for h in resp.proof], old.root, new.root)
        return new

    def accesses(self, enterprise: str, *, page_size: int = 100) -> list[VerifiedAccess]:
        """Every access entry about ``enterprise`` (the caller), each proven before it is returned.

        The node's paging is not trusted either: leaf indexes must rise strictly across
        pages (no entry shown twice, none reordered) and a page that promises more must
        hold some, so a node cannot keep the client paging for ever.
        """
        out: list[VerifiedAccess] = []
        token = ""
        while True:
            page, token = self.accesses_page(enterprise, page_token=token, page_size=page_size)
            if out and page and page[0].leaf_index <= out[-1].leaf_index:
                raise merkle.ProofError("the log listed an access again or out of order across pages")
            if token and not page:
                raise merkle.ProofError("the log promised more accesses but listed none")
            out.extend(page)
            if not token:
                return out

    def accesses_page(
        self, enterprise: str, *, page_token: str = "", page_size: int = 50
    ) -> tuple[list[VerifiedAccess], str]:
        """One page of the access entries about ``enterprise``, each proven; and the next page's token ("" at the end)."""
        resp = self._stub.ListAccesses(
            transparency_pb2.ListAccessesRequest(page_size=page_size, page_token=page_token), timeout=30
        )
        checkpoint = self.accept(resp.checkpoint)
        return verify_accesses(resp, enterprise, checkpoint), resp.next_page_token


def check_inclusion(
    resp: transparency_pb2.GetInclusionProofResponse, checkpoint: Checkpoint, *, expected_leaf: bytes | None = None
) -> None:
    """ProofError unless the response proves its leaf in ``checkpoint`` (already opened and accepted)."""
    if resp.tree_size != checkpoint.size:
        raise merkle.ProofError("proof is for another tree size than its checkpoint")
    leaf = bytes(resp.leaf_hash)
    if expected_leaf is not None and leaf != expected_leaf:
        raise merkle.ProofError("the log proved another leaf hash")
    merkle.verify_inclusion(resp.leaf_index, resp.tree_size, leaf, [bytes(h) for h in resp.proof], checkpoint.root)


def access_leaf(entry: transparency_pb2.AccessEntry, enterprise: str) -> bytes:
    """The leaf bytes an access entry stands for, rebuilt with the caller's own USCC."""
    return audit_leaf(
        seq=entry.leaf_index + 1,
        ts_ms=entry.ts_ms,
        caller_role=entry.caller_role,
        caller_id=entry.caller_id,
        method=entry.method,
        request_id=entry.request_id,
        enterprise=enterprise,
        consent_id=entry.consent_id,
        providers=list(entry.providers),
        fields=list(entry.fields),
        claims_sha256=entry.claims_sha256,
        decision=entry.decision,
        reason=entry.reason,
    )


def verify_accesses(
    resp: transparency_pb2.ListAccessesResponse, enterprise: str, checkpoint: Checkpoint
) -> list[VerifiedAccess]:
    """Every entry of a page, its leaf rebuilt and proven; ProofError on the first that is not,
    or if the page lists a leaf twice or out of order (entries are oldest first)."""
    out: list[VerifiedAccess] = []
    for entry in resp.entries:
        if out and entry.leaf_index <= out[-1].leaf_index:
            raise merkle.ProofError("the log listed an access twice or out of order")
        leaf = merkle.leaf_hash(access_leaf(entry, enterprise))
        merkle.verify_inclusion(
            entry.leaf_index, checkpoint.size, leaf, [bytes(h) for h in entry.inclusion_proof], checkpoint.root
        )
        out.append(
            VerifiedAccess(
                leaf_index=entry.leaf_index,
                tree_size=checkpoint.size,
                ts_ms=entry.ts_ms,
                caller_role=entry.caller_role,
                caller_id=entry.caller_id,
                method=entry.method,
                request_id=entry.request_id,
                consent_id=entry.consent_id,
                providers=tuple(entry.providers),
                fields=tuple(entry.fields),
                claims_sha256=entry.claims_sha256,
                decision=entry.decision,
                reason=entry.reason,
            )
        )
    return out


# A checkpoint source for ``Witness.observe`` from a stub (kept for callers that hold no LogClient).
def consistency_source(stub: Any) -> Callable[[int, int], Sequence[bytes]]:
    def proofs(size1: int, size2: int) -> Sequence[bytes]:
        resp = stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=size1, second_size=size2), timeout=10
        )
        return [bytes(h) for h in resp.proof]

    return proofs


__all__ = [
    "LogClient",
    "VerifiedAccess",
    "access_leaf",
    "answers_origin",
    "audit_origin",
    "check_inclusion",
    "consistency_source",
    "verify_accesses",
]
