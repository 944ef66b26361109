"""A Merkle tree log in SQL: stored complete subtrees, proofs in O(log n) reads, consistent checkpoints.

Shared by the node (its audit log, SQLite or PostgreSQL) and the agents
(their log of what they answered, SQLite). Two tables, append-only:

* ``<prefix>nodes (level, idx, hash)``: the hash of every complete subtree
  (``2**level`` leaves from ``idx * 2**level``; level 0 holds the leaf
  hashes), written once when its last leaf arrives: about 2 rows per leaf.
* ``<prefix>checkpoints (size, root, note, signed_ms)``: every checkpoint
  signed; the newest is the one every later one must be consistent with.

``query(sql, params)`` takes ``?`` placeholders and returns rows: a
database's query method, a transaction's cursor, or a read-only connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.keys.signing import SigningKey
from xinrong.tlog import merkle
from xinrong.tlog.note import Checkpoint, sign_checkpoint

log = logging.getLogger(__name__)

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]
# Levels at and above this one are cached in memory (complete subtrees never change).
CACHE_LEVEL = 6


class CheckpointRefused(RuntimeError):
    """The tree a log would sign is not consistent with the newest checkpoint it signed."""


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


def sqlite_tables(prefix: str) -> str:
    """DDL of a log's two tables (SQLite), idempotent."""
    return f"""
CREATE TABLE IF NOT EXISTS {prefix}nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {prefix}checkpoints (
    size      INTEGER PRIMARY KEY,
    root      BLOB NOT NULL,
    note      TEXT NOT NULL,
    signed_ms INTEGER NOT NULL
);
"""


def _first(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


class SubtreeStore:
    """Roots, proofs and checkpoints from the stored complete subtrees."""

    def __init__(self, query: Query, *, prefix: str = "tlog_", cache: dict[tuple[int, int], bytes] | None = None):
        self._query = query
        self._nodes = f"{prefix}nodes"
        self._checkpoints = f"{prefix}checkpoints"
        self._cache = cache if cache is not None else {}

    def size(self) -> int:
        row = _first(self._query(f"SELECT max(idx) FROM {self._nodes} WHERE level = 0", ()))
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def fetch(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = sorted(set(keys))
        out = {k: self._cache[k] for k in wanted if k in self._cache}
        missing = [k for k in wanted if k not in out]
        for start in range(0, len(missing), 100):
            chunk = missing[start : start + 100]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            params = [v for key in chunk for v in key]
            for level, idx, value in self._query(f"SELECT level, idx, hash FROM {self._nodes} WHERE {where}", params):
                key = (int(level), int(idx))
                out[key] = bytes(value)
                if key[0] >= CACHE_LEVEL:
                    self._cache[key] = out[key]
        if len(out) != len(wanted):
            raise RuntimeError("the tree is missing a stored subtree: refusing to prove from it")
        return out

    def _run(self, compute: Callable[[merkle.NodeReader], Any]) -> Any:
        """Run a proof computation twice: once to learn the nodes it reads, once on them.

        Which subtrees a proof needs depends only on the sizes, never on the
        hashes, so the first pass (on dummy hashes) names them all and one
        batched query fetches them.
        """
        needed: list[tuple[int, int]] = []

        def record(level: int, idx: int) -> bytes:
            needed.append((level, idx))
            return bytes(32)

        compute(record)
        nodes = self.fetch(needed)
        return compute(lambda level, idx: nodes[(level, idx)])

    def root(self, size: int) -> bytes:
        if size == 0:
            return merkle.EMPTY_ROOT
        result: bytes = self._run(lambda node: merkle.root(size, node))
        return result

    def leaf_hash(self, index: int) -> bytes:
        return self.fetch([(0, index)])[(0, index)]

    def inclusion(self, index: int, size: int) -> list[bytes]:
        result: list[bytes] = self._run(lambda node: merkle.inclusion_proof(index, size, node))
        return result

    def consistency(self, size1: int, size2: int) -> list[bytes]:
        result: list[bytes] = self._run(lambda node: merkle.consistency_proof(size1, size2, node))
        return result

    def index_of(self, leaf_hash: bytes) -> int | None:
        row = _first(self._query(f"SELECT idx FROM {self._nodes} WHERE level = 0 AND hash = ?", (leaf_hash,)))
        return None if row is None else int(row[0])

    def latest(self) -> SignedCheckpoint | None:
        row = _first(self._query(f"SELECT size, root, note FROM {self._checkpoints} ORDER BY size DESC LIMIT 1", ()))
        return None if row is None else SignedCheckpoint(int(row[0]), bytes(row[1]), str(row[2]))

    def at(self, size: int) -> SignedCheckpoint | None:
        row = _first(self._query(f"SELECT size, root, note FROM {self._checkpoints} WHERE size = ?", (size,)))
        return None if row is None else SignedCheckpoint(int(row[0]), bytes(row[1]), str(row[2]))

    # -- writing (inside the caller's transaction: ``execute`` runs one statement) ----------

    def extend(self, executemany: Callable[[str, list[tuple[Any, ...]]], Any], hashes: Sequence[bytes]) -> int:
        """Append leaf hashes after the stored ones; returns how many."""
        if not hashes:
            return 0
        size = self.size()
        keys = frontier_keys(size)
        stored = self.fetch(keys) if keys else {}
        frontier = [(level, stored[(level, idx)]) for level, idx in keys]
        executemany(f"INSERT INTO {self._nodes} (level, idx, hash) VALUES (?, ?, ?)", fold(size, frontier, hashes))
        return len(hashes)

    def sign(
        self,
        execute: Callable[[str, Sequence[Any]], Any],
        origin: str,
        key: SigningKey,
        now_ms: int,
        size: int | None = None,
    ) -> SignedCheckpoint | None:
        """Sign a checkpoint of ``size`` (default: the whole tree), consistent with the newest signed.

        None if there is nothing new to sign; CheckpointRefused if the tree
        the stored subtrees give is not consistent with the newest checkpoint.
        """
        size = self.size() if size is None else size
        latest = self.latest()
        if size == 0 or (latest is not None and latest.size == size):
            return None
        existing = self.at(size)
        if existing is not None:
            return existing
        root = self.root(size)
        if latest is not None:
            old, new = (latest.size, size) if size > latest.size else (size, latest.size)
            old_root, new_root = (latest.root, root) if size > latest.size else (root, latest.root)
            try:
                merkle.verify_consistency(old, new, self.consistency(old, new), old_root, new_root)
            except merkle.ProofError as exc:
                log.error("%s: refusing to sign size %d, not consistent with %d (%s)", origin, size, latest.size, exc)
                raise CheckpointRefused(
                    f"tree of {size} is not consistent with the signed checkpoint of {latest.size}"
                ) from None
        note = sign_checkpoint(Checkpoint(origin, size, root), key)
        execute(
            f"INSERT INTO {self._checkpoints} (size, root, note, signed_ms) VALUES (?, ?, ?, ?)",
            (size, root, note, now_ms),
        )
        return SignedCheckpoint(size, root, note)


def frontier_keys(size: int) -> list[tuple[int, int]]:
    """The complete subtrees on the right edge of a tree of ``size`` leaves, largest first."""
    keys: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size & (1 << level):
            keys.append((level, start >> level))
            start += 1 << level
    return keys


def fold(size: int, frontier: list[tuple[int, bytes]], leaf_hashes: Sequence[bytes]) -> list[tuple[int, int, bytes]]:
    """The new complete-subtree rows (level, idx, hash) when ``leaf_hashes`` follow ``size`` leaves.

    ``frontier`` is the right edge as (level, hash), largest first; it is extended in place.
    """
    rows: list[tuple[int, int, bytes]] = []
    for offset, value in enumerate(leaf_hashes):
        index = size + offset
        rows.append((0, index, value))
        level, current = 0, value
        while frontier and frontier[-1][0] == level:
            _, left = frontier.pop()
            current = merkle.node_hash(left, current)
            level += 1
            rows.append((level, index >> level, current))
        frontier.append((level, current))
    return rows


def frontier_root(frontier: Sequence[tuple[int, bytes]]) -> bytes:
    """The root of a tree from its right edge (largest subtree first)."""
    if not frontier:
        return merkle.EMPTY_ROOT
    acc = frontier[-1][1]
    for _, value in reversed(frontier[:-1]):
        acc = merkle.node_hash(value, acc)
    return acc


__all__ = [
    "CheckpointRefused",
    "Query",
    "SignedCheckpoint",
    "SubtreeStore",
    "fold",
    "frontier_keys",
    "frontier_root",
    "sqlite_tables",
]
