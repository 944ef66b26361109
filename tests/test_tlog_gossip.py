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

    def __init__(self, leaves: int) -> None:
        self.conn = sqlite3.connect(":memory:")
        self.conn.executescript(sqlite_tables("t_"))
        self.store = SubtreeStore(lambda sql, p: self.conn.execute(sql, tuple(p)).fetchall(), prefix="t_")
        self.store.extend(self.conn.executemany, [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(leaves)])
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
