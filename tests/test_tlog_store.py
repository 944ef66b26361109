"""The stored-subtree log against a naive RFC 6962 tree: roots, proofs, appends in any batches."""

from __future__ import annotations

import hashlib
import random
import sqlite3

from xinrong.keys.signing import SigningKey
from xinrong.tlog import merkle
from xinrong.tlog.note import open_checkpoint
from xinrong.tlog.store import SubtreeStore, sqlite_tables


def _naive(leaves: list[bytes]) -> bytes:
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return merkle.node_hash(_naive(leaves[:k]), _naive(leaves[k:]))


def test_stored_subtrees_match_a_naive_tree_for_every_size_and_batching() -> None:
    rng = random.Random(11)
    conn = sqlite3.connect(":memory:")
    conn.executescript(sqlite_tables("t_"))
    store = SubtreeStore(lambda sql, p: conn.execute(sql, tuple(p)).fetchall(), prefix="t_")
    key = SigningKey.generate()
    hashes: list[bytes] = []
    while len(hashes) < 300:
        batch = [hashlib.sha256(rng.randbytes(8)).digest() for _ in range(rng.choice([1, 1, 2, 3, 7, 16, 31]))]
        store.extend(conn.executemany, batch)
        hashes += batch
        n = len(hashes)
        assert store.size() == n and store.root(n) == _naive(hashes)
        signed = store.sign(conn.execute, "test/log", key, 0)
        assert signed is not None and open_checkpoint(signed.note, "test/log", key.public_raw).root == _naive(hashes)
        for _ in range(5):
            size = rng.randint(1, n)
            index = rng.randrange(size)
            merkle.verify_inclusion(index, size, hashes[index], store.inclusion(index, size), _naive(hashes[:size]))
            old = rng.randint(1, size)
            merkle.verify_consistency(
                old, size, store.consistency(old, size), _naive(hashes[:old]), _naive(hashes[:size])
            )
        assert store.index_of(hashes[rng.randrange(n)]) is not None
    assert store.sign(conn.execute, "test/log", key, 0) is None  # nothing new
