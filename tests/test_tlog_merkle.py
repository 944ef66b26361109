"""The Merkle verifier passes every RFC 6962 reference vector and agrees with a naive tree."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xinrong.modeling.data import data_dir_candidates
from xinrong.tlog import merkle


def _vectors_dir() -> Path:
    for base in data_dir_candidates():
        candidate = base / "tlog-vectors" / "testdata"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"tlog-vectors not found under {[str(d) for d in data_dir_candidates()]}")


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _cases(kind: str) -> list[Path]:
    return sorted((_vectors_dir() / kind).rglob("*.json"))


@pytest.mark.parametrize("path", _cases("inclusion"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_inclusion_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(h) for h in case["proof"] or []]
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _cases("consistency"), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_consistency_vectors(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(h) for h in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_every_vector_file_was_read() -> None:
    assert len(_cases("inclusion")) + len(_cases("consistency")) >= 190


# -- against a naive tree -------------------------------------------------------------


def _naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return merkle.leaf_hash(leaves[0])
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(_naive_root(leaves[:k]), _naive_root(leaves[k:]))


def _naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    if len(leaves) == 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if m < k:
        return [*_naive_path(m, leaves[:k]), _naive_root(leaves[k:])]
    return [*_naive_path(m - k, leaves[k:]), _naive_root(leaves[:k])]


def _naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [_naive_root(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return [*_naive_subproof(m, leaves[:k], complete), _naive_root(leaves[k:])]
    return [*_naive_subproof(m - k, leaves[k:], False), _naive_root(leaves[:k])]


def _store(leaves: list[bytes]) -> merkle.NodeReader:
    """What a log keeps: the hash of every complete subtree, written as its last leaf arrives."""
    nodes: dict[tuple[int, int], bytes] = {}
    for i, leaf in enumerate(leaves):
        nodes[(0, i)] = merkle.leaf_hash(leaf)
        for level, index in merkle.complete_parents(i):
            nodes[(level, index)] = merkle.node_hash(nodes[(level - 1, 2 * index)], nodes[(level - 1, 2 * index + 1)])
    reads: list[tuple[int, int]] = []

    def read(level: int, index: int) -> bytes:
        reads.append((level, index))
        return nodes[(level, index)]

    read.reads = reads  # type: ignore[attr-defined]
    return read


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70), st.data())
def test_proofs_match_a_naive_tree_and_verify(leaves: list[bytes], data: st.DataObject) -> None:
    n = len(leaves)
    node = _store(leaves)
    assert merkle.root(n, node) == _naive_root(leaves)
    index = data.draw(st.integers(0, n - 1))
    size = data.draw(st.integers(index + 1, n))
    proof = merkle.inclusion_proof(index, size, node)
    assert proof == _naive_path(index, leaves[:size])
    merkle.verify_inclusion(index, size, merkle.leaf_hash(leaves[index]), proof, _naive_root(leaves[:size]))
    size1 = data.draw(st.integers(1, n))
    size2 = data.draw(st.integers(size1, n))
    cproof = merkle.consistency_proof(size1, size2, node)
    assert cproof == (_naive_subproof(size1, leaves[:size2], True) if size1 < size2 else [])
    merkle.verify_consistency(size1, size2, cproof, _naive_root(leaves[:size1]), _naive_root(leaves[:size2]))
    # A flipped bit anywhere is refused.
    if cproof:
        bad = [bytes([cproof[0][0] ^ 1]) + cproof[0][1:], *cproof[1:]]
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(size1, size2, bad, _naive_root(leaves[:size1]), _naive_root(leaves[:size2]))


def test_proofs_read_logarithmically_many_stored_nodes() -> None:
    leaves = [i.to_bytes(4, "big") for i in range(5000)]
    node = _store(leaves)
    reads = node.reads  # type: ignore[attr-defined]
    for index in (0, 1234, 4095, 4999):
        reads.clear()
        merkle.inclusion_proof(index, 5000, node)
        assert len(reads) <= 2 * 13, len(reads)
