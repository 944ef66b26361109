"""A Merkle tree log in SQL: stored complete subtrees, proofs in O(log n) reads, consistent checkpoints.

Shared by the node (its audit log, SQLite or PostgreSQL) and the agents
(their log of what they answered, SQLite). Two tables, append-only:

* ``<prefix>nodes (level, idx, hash)``: the hash of every complete subtree
  (``2**level`` leaves from ``idx * 2**level``; level 0 holds the leaf
  hashes), written once when its last leaf arrives: about 2 rows per leaf.
* ``<prefix>checkpoints (size, root, note, signed_ms)``: every checkpoint
  signed; the newest is the one every later one must be consistent with.
* ``<prefix>tiles (tlevel, idx, hashes)``: the same hashes again, grouped as
  C2SP tlog-tiles groups them (height 8: tile ``(L, N)`` covers the complete
  subtrees of level ``8L``, indices ``256N .. 256N+255``), one row per *full*
  tile, written once in the transaction that completes it. Unlike C2SP the
  row holds the tile's interior levels too (levels ``8L .. 8L+7``: 510
  hashes, 16 KiB), so a node is an offset, not a recomputation: an inclusion
  proof reads one tile per 8 levels, and the node keeps the tiles above level
  0 in memory (1/256 of the level below: 2.5 MB at 10M leaves), so a warm
  proof is one row read. Nodes of tiles not full yet (the right edge) are
  read from ``nodes``; ``nodes`` stays the authority that is verified.

``query(sql, params)`` takes ``?`` placeholders and returns rows: a
database's query method, a transaction's cursor, or a read-only connection.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
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
# At most this many cached subtrees (~200 bytes each): the cache is emptied when full. Unbounded,
# it kept one of every 32 leaves for the process's life (a node at 770 calls/s: +3 MB per 10
# minutes, gigabytes a month), though only the right edge's few dozen are read again (the
# rest of the tree is served by full tiles).
CACHE_MAX = 1024
# Tiles (C2SP tlog-tiles geometry): 2**TILE_HEIGHT subtrees of one level per full tile.
TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
# Offset (in hashes) of each interior level r = 0..7 inside a tile row: 256 + 128 + ... + 2 = 510 hashes.
_TILE_OFFSETS = tuple(sum(TILE_WIDTH >> j for j in range(r)) for r in range(TILE_HEIGHT + 1))
TILE_BYTES = _TILE_OFFSETS[TILE_HEIGHT] * merkle.HASH_SIZE  # the tile's own root is not stored
# Tiles above level 0 kept in memory (16 KiB each: 4096 of them cover 268M leaves); level-0 tiles recently read.
TILE_CACHE_UPPER = 4096
TILE_CACHE_BOTTOM = 64


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
CREATE TABLE IF NOT EXISTS {prefix}tiles (
    tlevel INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hashes BLOB NOT NULL,
    PRIMARY KEY (tlevel, idx)
);
"""


def tile_of(level: int, idx: int) -> tuple[int, int]:
    """The tile (tile level, tile index) holding the complete subtree (level, idx)."""
    tlevel, r = divmod(level, TILE_HEIGHT)
    return tlevel, idx >> (TILE_HEIGHT - r)


def tile_node(blob: bytes, level: int, idx: int) -> bytes:
    """The hash of (level, idx) inside the row of its tile."""
    r = level % TILE_HEIGHT
    pos = _TILE_OFFSETS[r] + (idx & ((TILE_WIDTH >> r) - 1))
    return blob[pos * merkle.HASH_SIZE : (pos + 1) * merkle.HASH_SIZE]


def tile_blob(bottom: Sequence[bytes]) -> bytes:
    """A full tile's row from its 256 bottom hashes: levels 0..7 of the tile, each left to right."""
    if len(bottom) != TILE_WIDTH:
        raise ValueError("a tile row is written only when the tile is full")
    level = list(bottom)
    parts = list(level)
    while len(level) > 2:
        level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        parts += level
    return b"".join(parts)


def tile_rows(
    rows: Sequence[tuple[int, int, bytes]], older: Callable[[int, int, int], dict[int, bytes]]
) -> list[tuple[int, int, bytes]]:
    """The tile rows (tlevel, idx, hashes) that the new subtree ``rows`` complete.

    A tile ``(L, N)`` is full when its root, the subtree ``(8L + 8, N)``,
    arrives. Its bottom hashes come from ``rows`` or, for the ones stored
    before, from ``older(level, first, end)`` ({idx: hash} of that level's
    range).
    """
    batch = {(level, idx): value for level, idx, value in rows}
    out: list[tuple[int, int, bytes]] = []
    for level, idx, _ in rows:
        if level == 0 or level % TILE_HEIGHT:
            continue
        tlevel = level // TILE_HEIGHT - 1
        base, first = tlevel * TILE_HEIGHT, idx * TILE_WIDTH
        keys = [(base, first + k) for k in range(TILE_WIDTH)]
        stored = {} if all(k in batch for k in keys) else older(base, first, first + TILE_WIDTH)
        bottom = [batch[k] if k in batch else stored[k[1]] for k in keys]
        out.append((tlevel, idx, tile_blob(bottom)))
    return out


def _first(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


class SubtreeStore:
    """Roots, proofs and checkpoints from the stored complete subtrees."""

    def __init__(
        self,
        query: Query,
        *,
        prefix: str = "tlog_",
        cache: dict[tuple[int, int], bytes] | None = None,
        tiles: TileCache | None = None,
        use_tiles: bool = True,
    ):
        """``cache`` / ``tiles``: shared across readers of one log (a node makes one per transaction).

        ``use_tiles=False`` reads and writes ``nodes`` only (the verifier, and the bench's baseline).
        """
        self._query = query
        self._nodes = f"{prefix}nodes"
        self._checkpoints = f"{prefix}checkpoints"
        self._tiles_table = f"{prefix}tiles"
        self._cache = cache if cache is not None else {}
        self._tiles = tiles if tiles is not None else TileCache()
        self._use_tiles = use_tiles

    def size(self) -> int:
        row = _first(self._query(f"SELECT max(idx) FROM {self._nodes} WHERE level = 0", ()))
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def fetch(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = sorted(set(keys))
        out = {k: v for k in wanted if (v := self._cache.get(k)) is not None}  # get: another thread may clear it
        missing = [k for k in wanted if k not in out]
        if missing and self._use_tiles:
            missing = self._from_tiles(missing, out)
        for start in range(0, len(missing), 100):
            chunk = missing[start : start + 100]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            params = [v for key in chunk for v in key]
            for level, idx, value in self._query(f"SELECT level, idx, hash FROM {self._nodes} WHERE {where}", params):
                key = (int(level), int(idx))
                out[key] = bytes(value)
                if key[0] >= CACHE_LEVEL:
                    if len(self._cache) >= CACHE_MAX:
                        self._cache.clear()
                    self._cache[key] = out[key]
        if len(out) != len(wanted):
            raise RuntimeError("the tree is missing a stored subtree: refusing to prove from it")
        return out

    def _from_tiles(self, keys: list[tuple[int, int]], out: dict[tuple[int, int], bytes]) -> list[tuple[int, int]]:
        """Serve ``keys`` from full tiles (memory first, then one query); returns the keys no full tile holds."""
        wanted = {tile_of(*k) for k in keys}
        blobs = {t: b for t in wanted if (b := self._tiles.get(t)) is not None}
        absent = sorted(t for t in wanted if t not in blobs)
        for start in range(0, len(absent), 100):
            chunk = absent[start : start + 100]
            where = " OR ".join(["(tlevel = ? AND idx = ?)"] * len(chunk))
            params = [v for key in chunk for v in key]
            for tlevel, idx, blob in self._query(
                f"SELECT tlevel, idx, hashes FROM {self._tiles_table} WHERE {where}", params
            ):
                tile = (int(tlevel), int(idx))
                blobs[tile] = bytes(blob)
                self._tiles.put(tile, blobs[tile])
        rest = []
        for key in keys:
            blob = blobs.get(tile_of(*key))
            if blob is None:
                rest.append(key)
            else:
                out[key] = tile_node(blob, *key)
        return rest

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

    def checkpoints_after(self, size: int, limit: int) -> list[SignedCheckpoint]:
        """Stored checkpoints of sizes above ``size``, smallest first (for the verifier)."""
        rows = self._query(
            f"SELECT size, root, note FROM {self._checkpoints} WHERE size > ? ORDER BY size LIMIT ?", (size, limit)
        )
        return [SignedCheckpoint(int(r[0]), bytes(r[1]), str(r[2])) for r in rows]

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
        rows = fold(size, frontier, hashes)
        executemany(f"INSERT INTO {self._nodes} (level, idx, hash) VALUES (?, ?, ?)", rows)
        if self._use_tiles:
            tiles = tile_rows(rows, self.level_range)
            if tiles:
                executemany(f"INSERT INTO {self._tiles_table} (tlevel, idx, hashes) VALUES (?, ?, ?)", tiles)
        return len(hashes)

    def level_range(self, level: int, first: int, end: int) -> dict[int, bytes]:
        """{idx: hash} of the stored subtrees of ``level`` with first <= idx < end (one range scan)."""
        rows = self._query(
            f"SELECT idx, hash FROM {self._nodes} WHERE level = ? AND idx >= ? AND idx < ?", (level, first, end)
        )
        return {int(idx): bytes(value) for idx, value in rows}

    def stored_tiles(self, after: tuple[int, int], limit: int) -> list[tuple[int, int, bytes]]:
        """Stored tile rows after ``after`` in (tlevel, idx) order (for the verifier)."""
        rows = self._query(
            f"SELECT tlevel, idx, hashes FROM {self._tiles_table} WHERE tlevel > ? OR (tlevel = ? AND idx > ?)"
            " ORDER BY tlevel, idx LIMIT ?",
            (after[0], after[0], after[1], limit),
        )
        return [(int(t), int(i), bytes(b)) for t, i, b in rows]

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


class TileCache:
    """Full tiles read, by (tlevel, idx): every upper one (bounded), a few of level 0 (the proofs in flight).

    A full tile never changes, so a hit needs no check. A tile found absent is
    not remembered: the next integration may write it.
    """

    def __init__(self, upper: int = TILE_CACHE_UPPER, bottom: int = TILE_CACHE_BOTTOM) -> None:
        self._upper: dict[tuple[int, int], bytes] = {}
        self._bottom: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._upper_max, self._bottom_max = upper, bottom
        self._lock = threading.Lock()

    def get(self, tile: tuple[int, int]) -> bytes | None:
        if tile[0] > 0:
            return self._upper.get(tile)
        with self._lock:
            blob = self._bottom.get(tile)
            if blob is not None:
                self._bottom.move_to_end(tile)
            return blob

    def put(self, tile: tuple[int, int], blob: bytes) -> None:
        if len(blob) != TILE_BYTES:
            raise RuntimeError("a stored tile has the wrong length: refusing to prove from it")
        with self._lock:
            if tile[0] > 0:
                if len(self._upper) < self._upper_max:
                    self._upper[tile] = blob
                return
            self._bottom[tile] = blob
            self._bottom.move_to_end(tile)
            while len(self._bottom) > self._bottom_max:
                self._bottom.popitem(last=False)


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
    "TILE_BYTES",
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "CheckpointRefused",
    "Query",
    "SignedCheckpoint",
    "SubtreeStore",
    "TileCache",
    "fold",
    "frontier_keys",
    "frontier_root",
    "sqlite_tables",
    "tile_blob",
    "tile_node",
    "tile_of",
    "tile_rows",
]
