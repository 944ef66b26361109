"""RFC 6962 / 9162 Merkle trees: hashing, proofs from stored subtrees, and their verification.

Hashing (RFC 6962 section 2.1): a leaf hashes as ``SHA-256(0x00 || leaf)``,
an interior node as ``SHA-256(0x01 || left || right)``, the empty tree as
``SHA-256("")``. A tree of ``n`` leaves splits at the largest power of two
below ``n``, so every tree is a left-full binary tree whose *complete*
subtrees (``2**level`` leaves starting at a multiple of ``2**level``) never
change once written.

Proofs are built from those complete subtrees only: a log stores the hash
of each complete subtree once, when its last leaf arrives, and reads
``O(log n)`` of them per proof. The few right-edge subtrees that are not
complete (they end at the tree size) are folded from complete ones.

Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 as the
transparency-dev implementation does (decomposing a proof into its inner
and border parts), and refuses what the reference test vectors refuse:
hashes that are not 32 bytes, proofs of the wrong length, any leaf index
outside the tree, and a consistency proof from the empty tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

# The hash of the complete subtree at (level, index): 2**level leaves from index * 2**level.
NodeReader = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not verify, whatever the reason: one opaque failure."""


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# -- building, from the complete subtrees a log stores ----------------------------------


def complete_parents(index: int) -> list[tuple[int, int]]:
    """The complete subtrees (level >= 1, index) that leaf ``index`` completes, lowest first.

    Appending leaf i completes the subtree at level l exactly when 2**l divides i + 1.
    """
    out = []
    level, count = 1, index + 1
    while count % 2 == 0:
        count //= 2
        out.append((level, count - 1))
        level += 1
    return out


def subtree_hash(start: int, end: int, node: NodeReader) -> bytes:
    """The hash of leaves [start, end), with start aligned as RFC 6962's recursion makes it.

    A complete aligned range is one read; otherwise the range splits at the
    largest power of two and the left part is complete: O(log n) reads.
    """
    size = end - start
    if size <= 0:
        raise ValueError("empty range")
    if size & (size - 1) == 0 and start % size == 0:
        return node(size.bit_length() - 1, start // size)
    k = _split(size)
    return node_hash(subtree_hash(start, start + k, node), subtree_hash(start + k, end, node))


def root(size: int, node: NodeReader) -> bytes:
    return EMPTY_ROOT if size == 0 else subtree_hash(0, size, node)


def inclusion_proof(index: int, size: int, node: NodeReader) -> list[bytes]:
    """RFC 6962 PATH(index, D[0:size]), leaf to root."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    path: list[bytes] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            path.append(subtree_hash(start + k, end, node))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, node))
            start, m = start + k, m - k
    return path[::-1]


def consistency_proof(size1: int, size2: int, node: NodeReader) -> list[bytes]:
    """RFC 6962 PROOF(size1, D[0:size2])."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from {size1} to {size2}")
    out: list[bytes] = []

    def subproof(m: int, start: int, end: int, complete: bool) -> None:
        n = end - start
        if m == n:
            if not complete:
                out.append(subtree_hash(start, end, node))
            return
        k = _split(n)
        if m <= k:
            subproof(m, start, start + k, complete)
            out.append(subtree_hash(start + k, end, node))
        else:
            subproof(m - k, start + k, end, False)
            out.append(subtree_hash(start, start + k, node))

    if size1 < size2:
        subproof(size1, 0, size2, True)
    return out


# -- verifying ------------------------------------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def _decompose(index: int, size: int) -> tuple[int, int]:
    """(inner, border): how many proof hashes lie below and on the tree's right border."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(seed, h) if (index >> i) & 1 == 0 else node_hash(h, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1 == 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root a proof implies for a leaf hash; ProofError if the proof cannot be one."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside a tree of {size}")
    _check_hash(leaf, "leaf hash")
    for h in proof:
        _check_hash(h, "proof hash")
    inner, border = _decompose(index, size)
    if len(proof) != inner + border:
        raise ProofError(f"proof has {len(proof)} hashes, a tree of {size} needs {inner + border}")
    return _chain_border_right(_chain_inner(leaf, proof[:inner], index), proof[inner:])


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes) -> None:
    """Raise ProofError unless ``leaf`` is leaf ``index`` of the tree of ``size`` with ``expected_root``."""
    if root_from_inclusion_proof(index, size, leaf, proof) != expected_root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise ProofError unless the tree of size2 with root2 extends the tree of size1 with root1.

    A proof from the empty tree proves nothing (every tree extends it) and
    is refused, as the reference vectors require.
    """
    if size1 == 0 or size2 < size1:
        raise ProofError(f"no consistency proof from size {size1} to {size2}")
    for h in proof:
        _check_hash(h, "proof hash")
    if size1 == size2:
        if proof:
            raise ProofError("equal sizes take an empty proof")
        if root1 != root2:
            raise ProofError("equal sizes with different roots")
        return
    if not proof:
        raise ProofError("empty proof")
    _check_hash(root1, "root1")
    _check_hash(root2, "root2")
    inner, border = _decompose(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1  # trailing zero bits of size1
    inner -= shift
    # The proof starts with the hash of the size1 tree's last complete
    # subtree, unless size1 is itself a power of two (then it is root1).
    if size1 == 1 << shift:
        seed, rest = root1, list(proof)
    else:
        seed, rest = proof[0], list(proof[1:])
    if len(rest) != inner + border:
        raise ProofError(f"consistency proof has the wrong length for sizes {size1} and {size2}")
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    if hash1 != root1:
        raise ProofError("consistency proof does not lead to root1")
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    if hash2 != root2:
        raise ProofError("consistency proof does not lead to root2")


__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "NodeReader",
    "ProofError",
    "complete_parents",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion_proof",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]
