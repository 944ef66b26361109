"""Signed notes and checkpoints interoperate with Go's sumdb/note; witnesses catch split views."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from xinrong.keys.signing import SigningKey
from xinrong.tlog import merkle
from xinrong.tlog.note import (
    Checkpoint,
    NoteError,
    open_checkpoint,
    parse_checkpoint_text,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    verifier_key,
    verify_note,
)
from xinrong.tlog.witness import ProofSource, SplitView, Witness

# golang.org/x/mod/sumdb/note's reference note and keys.
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
GO_NOTE = (
    GO_TEXT
    + "\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def _go_signer() -> SigningKey:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[-1])[1:]
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


def test_go_reference_note_verifies_and_signs_byte_for_byte() -> None:
    name, public = parse_verifier_key(GO_VKEY)
    assert verify_note(GO_NOTE, name, public) == GO_TEXT
    signer = _go_signer()
    assert signer.public_raw == public
    assert sign_note(GO_TEXT, "PeterNeumann", signer) == GO_NOTE
    assert verifier_key("PeterNeumann", public) == GO_VKEY


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("problem,", "problem;"),  # text changed
        lambda n: n.replace("x08go", "x08gp"),  # signature changed
        lambda n: n.replace("PeterNeumann", "PeterNeuman"),  # only another key's name
        lambda n: n.replace("\n\n", "\n"),  # no blank line
        lambda n: n + "\u2014 PeterNeumann AAAA\n",  # a second, bad signature of the known key
        lambda n: n.replace("your problem", "your\x07problem"),  # control character
    ],
)
def test_mangled_notes_are_refused(mangle: object) -> None:
    name, public = parse_verifier_key(GO_VKEY)
    with pytest.raises(NoteError):
        verify_note(mangle(GO_NOTE), name, public)  # type: ignore[operator]


def test_checkpoint_round_trip_and_strict_grammar() -> None:
    key = SigningKey.generate()
    cp = Checkpoint("xinrong.example/node", 7, bytes(range(32)))
    note = sign_checkpoint(cp, key)
    assert note.startswith("xinrong.example/node\n7\n")
    assert open_checkpoint(note, "xinrong.example/node", key.public_raw) == cp
    for bad in ("o\n07\nAAAA\n", "o\n7\n" + "A" * 42 + "==\n", "o\n-1\nroot\n", "o\n\n7\n", "o\n7\n"):
        with pytest.raises(NoteError):
            parse_checkpoint_text(bad)
    with pytest.raises(NoteError):
        open_checkpoint(note, "xinrong.example/other", key.public_raw)
    with pytest.raises(NoteError):
        open_checkpoint(note, "xinrong.example/node", SigningKey.generate().public_raw)


def test_note_signatures_cannot_be_domain_separated_signatures() -> None:
    key = SigningKey.generate()
    with pytest.raises(ValueError):
        key.sign_note(b"xinrong.v1.Verdict\x00anything\n")
    with pytest.raises(ValueError):
        key.sign_note(b"no final newline")


class _Log:
    """A log with a forking option, to play a malicious node."""

    def __init__(self, key: SigningKey, origin: str = "xinrong.test/log") -> None:
        self.key, self.origin = key, origin
        self.leaves: list[bytes] = []

    def node(self, leaves: list[bytes]) -> merkle.NodeReader:
        nodes: dict[tuple[int, int], bytes] = {}
        for i, leaf in enumerate(leaves):
            nodes[(0, i)] = merkle.leaf_hash(leaf)
            for level, index in merkle.complete_parents(i):
                nodes[(level, index)] = merkle.node_hash(
                    nodes[(level - 1, 2 * index)], nodes[(level - 1, 2 * index + 1)]
                )
        return lambda level, index: nodes[(level, index)]

    def checkpoint(self, leaves: list[bytes]) -> str:
        return sign_checkpoint(
            Checkpoint(self.origin, len(leaves), merkle.root(len(leaves), self.node(leaves))), self.key
        )

    def proofs(self, leaves: list[bytes]) -> ProofSource:
        return lambda a, b: merkle.consistency_proof(a, b, self.node(leaves))


def test_witness_accepts_growth_and_catches_both_kinds_of_split_view(tmp_path: Path) -> None:
    log = _Log(SigningKey.generate())
    honest = [f"e{i}".encode() for i in range(20)]
    witness = Witness(tmp_path / "witness.json")
    witness.trust(log.origin, log.key.public_raw)
    witness.observe(log.checkpoint(honest[:5]), log.origin, log.proofs(honest))
    witness.observe(log.checkpoint(honest[:13]), log.origin, log.proofs(honest))
    witness.observe(log.checkpoint(honest[:8]), log.origin, log.proofs(honest))  # an older one, consistent
    seen = witness.held(log.origin)
    assert seen is not None and seen.checkpoint.size == 13
    # Same size, another root: the log forked.
    forked = [*honest[:10], b"rewritten", *honest[11:]]
    with pytest.raises(SplitView) as info:
        witness.observe(log.checkpoint(forked[:13]), log.origin, log.proofs(forked))
    evidence = info.value.evidence()
    assert evidence["held"] == log.checkpoint(honest[:13]) and evidence["offered"] == log.checkpoint(forked[:13])
    # A larger tree that does not extend the held one: no consistency proof exists.
    with pytest.raises(SplitView):
        witness.observe(log.checkpoint(forked[:18]), log.origin, log.proofs(forked))
    # The witness kept what it had accepted, across a restart.
    again = Witness(tmp_path / "witness.json")
    again.trust(log.origin, log.key.public_raw)
    held = again.held(log.origin)
    assert held is not None and held.checkpoint.size == 13
    # A checkpoint signed by another key is not a checkpoint of this log at all.
    with pytest.raises(NoteError):
        again.observe(_Log(SigningKey.generate()).checkpoint(honest), log.origin, log.proofs(honest))
