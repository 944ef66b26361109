"""Witness gossip: a party takes another party's newest checkpoint only if the log proves it consistent."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from xinrong.keys.signing import SigningKey
from xinrong.tlog.client import LogClient
from xinrong.tlog.note import Checkpoint, NoteError, sign_checkpoint
from xinrong.tlog.store import SubtreeStore, sqlite_tables
from xinrong.tlog.witness import SplitView, Witness, peer_notes
from xinrong.v1 import transparency_pb2

ORIGIN = "xinrong.audit/node"


class _Log:
    """A log serving consistency proofs from its stored subtrees (what GetConsistencyProof answers)."""

    def __init__(self, leaves: int, hashes: list[bytes] | None = None) -> None:
        """``leaves`` arbitrary leaf hashes, or exactly ``hashes``."""
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(sqlite_tables("t_"))
        self.store = SubtreeStore(lambda sql, p: self.conn.execute(sql, tuple(p)).fetchall(), prefix="t_")
        self.leaves = (
            hashes if hashes is not None else [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(leaves)]
        )
        self.store.extend(self.conn.executemany, self.leaves)
        self.size = len(self.leaves)
        self.key = SigningKey.generate()

    def note(self, size: int) -> str:
        return sign_checkpoint(Checkpoint(ORIGIN, size, self.store.root(size)), self.key)

    def GetConsistencyProof(self, req: Any, timeout: float = 0) -> Any:
        return transparency_pb2.GetConsistencyProofResponse(
            first_size=req.first_size,
            second_size=req.second_size,
            proof=self.store.consistency(req.first_size, req.second_size),
            checkpoint=self.note(req.second_size),
        )


def test_gossip_advances_to_a_consistent_newer_checkpoint_and_keeps_the_held_one_over_an_older(tmp_path: Path) -> None:
    log = _Log(300)
    mine = LogClient(log, ORIGIN, log.key.public_raw, Witness(tmp_path / "mine.json"))
    mine.accept(log.note(100))
    theirs = Witness(tmp_path / "theirs.json")
    LogClient(log, ORIGIN, log.key.public_raw, theirs).accept(log.note(257))

    peer = (tmp_path / "theirs.json").read_text()  # the other party's whole witness file
    assert peer_notes(peer) == {ORIGIN: log.note(257)}
    result = mine.gossip(peer)
    assert result == {
        "origin": ORIGIN,
        "offered": True,
        "offered_size": 257,
        "held_size": 257,
        "advanced": True,
        "consistent": True,
    }
    assert json.loads((tmp_path / "mine.json").read_text())["checkpoints"][ORIGIN] == log.note(257)
    # An older note (one signed note, not a file) is checked too, and changes nothing.
    older = mine.gossip(log.note(42))
    assert older["held_size"] == 257 and older["advanced"] is False
    assert mine.gossip(json.dumps({"checkpoints": {}}))["offered"] is False


def test_gossip_catches_a_split_view_and_refuses_another_logs_note(tmp_path: Path) -> None:
    log = _Log(300)
    mine = LogClient(log, ORIGIN, log.key.public_raw, Witness(tmp_path / "mine.json"))
    mine.accept(log.note(200))
    # The log showed the peer another history of the same size: both notes are the evidence.
    forged = sign_checkpoint(Checkpoint(ORIGIN, 200, hashlib.sha256(b"other").digest()), log.key)
    with pytest.raises(SplitView) as caught:
        mine.gossip(forged)
    assert caught.value.held == log.note(200) and caught.value.offered == forged
    assert json.loads((tmp_path / "mine.json").read_text())["alarms"][0]["offered"] == forged
    # A newer note no consistency proof joins to the held one: a split view as well.
    other = LogClient(log, ORIGIN, log.key.public_raw, Witness(None))
    other.accept(log.note(10))
    rogue = sign_checkpoint(Checkpoint(ORIGIN, 250, hashlib.sha256(b"fork").digest()), log.key)
    with pytest.raises(SplitView, match="inconsistent"):
        other.gossip(rogue)
    # Signed by someone else: not the log's, nothing held changes.
    stranger = sign_checkpoint(Checkpoint(ORIGIN, 299, log.store.root(299)), SigningKey.generate())
    with pytest.raises(NoteError):
        mine.gossip(stranger)
    held = mine.witness.held(ORIGIN)
    assert held is not None and held.checkpoint.size == 200
    with pytest.raises(NoteError):
        peer_notes("")


class _LyingLog(_Log):
    """Serves genuine checkpoints, but whatever consistency proof ``self.proof`` says."""

    proof: list[bytes] | None = None

    def GetConsistencyProof(self, req: Any, timeout: float = 0) -> Any:
        resp = super().GetConsistencyProof(req, timeout)
        if self.proof is not None and req.first_size != req.second_size:
            del resp.proof[:]
            resp.proof.extend(self.proof)
        return resp


def test_consistency_checks_the_proof_between_both_signed_roots() -> None:
    """``LogClient.consistency`` once only showed the checkpoint to the witness, which
    (fresh) took it unproven: garbage or an empty proof passed (RFC 9162 2.1.4.2)."""
    from xinrong.tlog import merkle

    log = _LyingLog(300)
    assert LogClient(log, ORIGIN, log.key.public_raw).consistency(26, 300).size == 300
    assert LogClient(log, ORIGIN, log.key.public_raw).consistency(300, 300).size == 300
    for lie in ([], [bytes(32)] * 3, [hashlib.sha256(b"x").digest()] * 9):
        log.proof = lie
        with pytest.raises((merkle.ProofError, SplitView)):  # the witness, holding 26, may catch it first
            LogClient(log, ORIGIN, log.key.public_raw).consistency(26, 300)
    with pytest.raises(ValueError):
        LogClient(log, ORIGIN, log.key.public_raw).consistency(5, 2)


def test_a_witness_refuses_an_empty_tree_with_a_root() -> None:
    """Size 0 has one root, SHA-256 of nothing: a signed note saying otherwise is evidence, and
    were it held, the next checkpoint would be taken without a consistency proof."""
    log = _Log(10)
    witness = Witness(None)
    witness.trust(ORIGIN, log.key.public_raw)
    false_empty = sign_checkpoint(Checkpoint(ORIGIN, 0, bytes([0x13]) * 32), log.key)
    with pytest.raises(SplitView):
        witness.observe(false_empty, ORIGIN, log.store.consistency)
    assert witness.held(ORIGIN) is None and len(witness.alarms) == 1
    witness.observe(log.note(10), ORIGIN, log.store.consistency)
    with pytest.raises(SplitView):  # also once a real checkpoint is held
        witness.observe(false_empty, ORIGIN, log.store.consistency)
    assert witness.held(ORIGIN) is not None and witness.held(ORIGIN).checkpoint.size == 10  # type: ignore[union-attr]


ENTERPRISE = "91130100MA07K4RJ1X"


def _entry(index: int) -> transparency_pb2.AccessEntry:
    """Access entry ``index`` of the fake log (its leaf is what the client rebuilds from it)."""
    return transparency_pb2.AccessEntry(
        leaf_index=index,
        ts_ms=index,
        caller_role="institution",
        caller_id="bank-a",
        method="Verify",
        decision="ALLOWED",
    )


class _AccessLog(_Log):
    """A log whose leaves are access entries, so listed entries prove genuinely."""

    def __init__(self, leaves: int) -> None:
        from xinrong.tlog import merkle
        from xinrong.tlog.client import access_leaf

        super().__init__(leaves, [merkle.leaf_hash(access_leaf(_entry(i), ENTERPRISE)) for i in range(leaves)])


class _Pages:
    """ListAccesses that answers the pages it is given, whatever the token (a node that lies)."""

    def __init__(self, log: _AccessLog, pages: list[tuple[list[int], str]]) -> None:
        self.log, self.pages, self.calls = log, pages, 0

    def GetConsistencyProof(self, req: Any, timeout: float = 0) -> Any:
        return self.log.GetConsistencyProof(req, timeout)

    def ListAccesses(self, req: Any, timeout: float = 0) -> Any:
        indexes, token = self.pages[min(self.calls, len(self.pages) - 1)]
        self.calls += 1
        size = self.log.size
        resp = transparency_pb2.ListAccessesResponse(checkpoint=self.log.note(size), next_page_token=token)
        for index in indexes:
            entry = _entry(index)
            entry.inclusion_proof.extend(self.log.store.inclusion(index, size))
            resp.entries.append(entry)
        return resp


def test_the_access_listing_does_not_trust_the_nodes_paging() -> None:
    from xinrong.tlog import merkle

    log = _AccessLog(12)

    def client(pages: list[tuple[list[int], str]]) -> LogClient:
        return LogClient(_Pages(log, pages), ORIGIN, log.key.public_raw)

    honest = client([([0, 3], "4"), ([5, 9], "10"), ([11], "")])
    assert [a.leaf_index for a in honest.accesses(ENTERPRISE)] == [0, 3, 5, 9, 11]
    with pytest.raises(merkle.ProofError):  # the same page for ever
        client([([1, 2], "3")]).accesses(ENTERPRISE)
    with pytest.raises(merkle.ProofError):  # "more" with nothing in it, for ever
        client([([1], "2"), ([], "2")]).accesses(ENTERPRISE)
    with pytest.raises(merkle.ProofError):  # an entry listed twice in a page
        client([([4, 4], "")]).accesses(ENTERPRISE)
    with pytest.raises(merkle.ProofError):  # out of order across pages
        client([([5, 6], "7"), ([2], "")]).accesses(ENTERPRISE)
