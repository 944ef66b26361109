"""The stored-subtree log against a naive RFC 6962 tree: roots, proofs, appends in any batches."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from typing import Any

from xinrong.keys.signing import SigningKey
from xinrong.tlog import merkle
from xinrong.tlog.note import open_checkpoint
from xinrong.tlog.store import TILE_BYTES, SubtreeStore, TileCache, sqlite_tables


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


def test_tiles_serve_the_same_proofs_as_the_subtree_rows_in_one_row_read() -> None:
    """Full tiles (height 8, with interior levels) are written as they fill and give every node unchanged."""
    rng = random.Random(12)
    conn = sqlite3.connect(":memory:")
    conn.executescript(sqlite_tables("t_"))
    reads: list[str] = []

    def query(sql: str, p: Any) -> list[tuple[Any, ...]]:
        reads.append(sql)
        return conn.execute(sql, tuple(p)).fetchall()

    tiled = SubtreeStore(query, prefix="t_", tiles=TileCache())
    plain = SubtreeStore(query, prefix="t_", use_tiles=False)
    hashes: list[bytes] = []
    while len(hashes) < 66_000:  # past 65536: one tile of level 1 (levels 8..15)
        batch = [hashlib.sha256(rng.randbytes(8)).digest() for _ in range(rng.choice([1, 255, 997, 4000]))]
        tiled.extend(conn.executemany, batch)
        hashes += batch
    n = len(hashes)
    counts = dict(conn.execute("SELECT tlevel, count(*) FROM t_tiles GROUP BY tlevel").fetchall())
    assert counts == {0: n // 256, 1: 1}
    assert all(len(b) == TILE_BYTES for (b,) in conn.execute("SELECT hashes FROM t_tiles"))
    assert tiled.root(n) == plain.root(n)
    for _ in range(200):
        size = rng.randint(1, n)
        index = rng.randrange(size)
        proof = tiled.inclusion(index, size)
        assert proof == plain.inclusion(index, size)
        merkle.verify_inclusion(index, size, hashes[index], proof, plain.root(size))
        old = rng.randint(1, size)
        assert tiled.consistency(old, size) == plain.consistency(old, size)
    # Warm, a proof inside full tiles is one query (its level-0 tile), leaf hash included.
    fresh = SubtreeStore(query, prefix="t_", tiles=TileCache())
    fresh.inclusion(40_000, 65_536)  # reads the upper tile, kept in memory
    reads.clear()
    assert fresh.leaf_hash(1234) == hashes[1234]
    fresh.inclusion(1234, 65_536)
    assert len(reads) == 1 and "t_tiles" in reads[0]
