"""The node's audit log as an RFC 6962 Merkle tree log, with signed checkpoints.

The leaves are the audit entries (``audit_log``, metadata and hashes only),
leaf ``i`` being the entry of seq ``i + 1``, hashed as RFC 6962 leaves over
their canonical bytes (``xinrong.tlog.auditleaf``). The tree is *derived*
from ``audit_log`` by an integrator that folds, in seq order, every entry the
tree does not hold yet, so the request path keeps its one audit insert and a
migrated hash chain becomes the first leaves with no special case: the first
integration after schema step 3 folds all of them.

Storage (``tlog_nodes``): the hash of every complete subtree, ``(level,
idx)`` = ``2**level`` leaves from ``idx * 2**level``, written once when its
last leaf arrives (about 2 rows per leaf). Any proof or root then needs
O(log n) of them (``xinrong.tlog.merkle``), fetched in one batched query; the
node caches the upper levels, which never change. ``tlog_tiles`` (schema step
10) holds the same hashes grouped in full tiles of height 8 (C2SP tlog-tiles
geometry, with interior levels), so a proof reads one row per 8 levels and,
with the upper tiles in memory, one row in all (``xinrong.tlog.store``);
``verify_log`` checks every tile against the verified subtrees.

Checkpoints (C2SP tlog-checkpoint, Ed25519, signed with the node's signing
key, whose public half is in its CA-signed party binding) are signed by the
integrator every ``CHECKPOINT_SECONDS`` while entries arrive, and on demand
at a size a proof is asked for. Every checkpoint signed is kept
(``tlog_checkpoints``); before signing, the node proves the new tree
consistent with the newest one it ever signed, from the stored subtrees, and
refuses otherwise (``CheckpointRefused``): never two inconsistent
checkpoints, across restarts (the table) and replicas (PostgreSQL: the
signing runs under the audit sequencer's advisory lock, so one replica at a
time extends the tree and signs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.errors import Reason, XinrongError, invalid
from xinrong.keys.signing import SigningKey
from xinrong.node.audit import AUDIT_COLUMNS, SEQUENCER_LOCK, AuditEntry, row_to_entry
from xinrong.tlog import merkle
from xinrong.tlog.auditleaf import audit_leaf_encoded
from xinrong.tlog.client import audit_origin
from xinrong.tlog.note import open_checkpoint
from xinrong.tlog.store import (
    TILE_HEIGHT,
    TILE_WIDTH,
    CheckpointRefused,
    Query,
    SignedCheckpoint,
    SubtreeStore,
    TileCache,
    fold,
    frontier_keys,
    frontier_root,
    tile_blob,
)

log = logging.getLogger(__name__)

# A checkpoint at least this often while entries arrive.
CHECKPOINT_SECONDS = 1.0
# Leaves folded per integration transaction: on SQLite it holds the database lock
# admissions need, so a batch is kept to a few milliseconds.
INTEGRATE_BATCH = 1_000
MAX_PAGE = 200
# Tiles a migrated tree gets per integration (each: one range read, 255 hashes).
BACKFILL_TILES = 32
# Bench only (``xinrong bench verify --tree-ab``): while the file this names exists, the
# periodic tick builds no tree, so the bench can time the node with and without it.
BENCH_PAUSE_ENV = "XINRONG_BENCH_TREE_PAUSE_FILE"


def _bench_paused() -> bool:
    path = os.environ.get(BENCH_PAUSE_ENV)
    return bool(path) and os.path.exists(path)  # type: ignore[arg-type]


def origin_of(node_id: str) -> str:
    """The node's log origin (and note key name)."""
    return audit_origin(node_id)


def _first_row(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


class TreeReader(SubtreeStore):
    """The node's tree (``tlog_`` tables) and the audit entries its leaves stand for."""

    def __init__(
        self,
        query: Query,
        *,
        cache: dict[tuple[int, int], bytes] | None = None,
        tiles: TileCache | None = None,
        use_tiles: bool = True,
    ) -> None:
        super().__init__(query, prefix="tlog_", cache=cache, tiles=tiles, use_tiles=use_tiles)

    def entry(self, index: int) -> AuditEntry | None:
        row = _first_row(self._query(f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq = ?", (index + 1,)))
        return None if row is None else row_to_entry(row)

    def entries_of(self, enterprise: str, after_seq: int, up_to_seq: int, limit: int) -> list[AuditEntry]:
        rows = self._query(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE enterprise = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (enterprise, after_seq, up_to_seq, limit),
        )
        return [row_to_entry(r) for r in rows]


def _public(message: str, reason: Reason) -> XinrongError:
    """A refusal that says what it is about: tree sizes and leaf positions are public
    (every checkpoint states its size), so the caller may read them."""
    return XinrongError(message, reason=reason, public=message)


class TransparencyLog:
    """The node's side: integrate the audit log into the tree, sign checkpoints, serve proofs."""

    def __init__(
        self,
        db: Any,
        *,
        node_id: str,
        signing_key: SigningKey,
        clock: Callable[[], float] = time.time,
        checkpoint_seconds: float = CHECKPOINT_SECONDS,
        sequencer_lock: Any = None,
    ) -> None:
        """db: the node's ``Database`` or ``PgDatabase`` (``shared`` tells them apart).

        ``sequencer_lock``: the in-process lock of the audit sequencer (PostgreSQL), held
        around the advisory lock so this process's sequencer never finds it taken by us.
        """
        self._sequencer_lock = sequencer_lock if sequencer_lock is not None else contextlib.nullcontext()
        self._db = db
        self.origin = origin_of(node_id)
        self._key = signing_key
        self._clock = clock
        self._every = checkpoint_seconds
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, int], bytes] = {}
        self._tiles = TileCache()
        self._tiles_complete = False
        self._last_signed = 0.0
        self.reader = TreeReader(self._query, cache=self._cache, tiles=self._tiles)

    @property
    def public_raw(self) -> bytes:
        return self._key.public_raw

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._db.query(sql, params))

    # -- writing -----------------------------------------------------------------

    def tick(self, *, force: bool = False) -> SignedCheckpoint | None:
        """Integrate every entry the tree lacks; sign a checkpoint if it grew (at most every few seconds)."""
        if not force and _bench_paused():
            return None
        with self._lock:
            now = self._clock()
            due = force or now - self._last_signed >= self._every
            signed = self._integrate_and_sign(sign=due)
            if signed is not None:
                self._last_signed = now
            return signed

    def _integrate_and_sign(self, *, sign: bool, at_size: int | None = None) -> SignedCheckpoint | None:
        result: SignedCheckpoint | None = None
        while True:
            with self._sequencer_lock, self._db.transaction() as tx:

                def query(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
                    return list(tx.execute(sql, params).fetchall())

                if self._db.shared and not query("SELECT pg_try_advisory_xact_lock(?)", (SEQUENCER_LOCK,))[0][0]:
                    return None  # another replica is sequencing or signing now
                reader = TreeReader(query, cache=self._cache, tiles=self._tiles)
                added = self._integrate(tx, reader)
                if added == INTEGRATE_BATCH:
                    continue  # more to fold: commit this batch, go on
                if not self._tiles_complete:
                    self._tiles_complete = self._backfill_tiles(tx, reader)
                if sign or at_size is not None:
                    result = self._sign(tx, reader, at_size)
                return result

    def _integrate(self, tx: Any, reader: TreeReader) -> int:
        size = reader.size()
        rows = tx.execute(
            f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", (size, INTEGRATE_BATCH)
        ).fetchall()
        hashes: list[bytes] = []
        for expected, row in enumerate(rows, start=size + 1):
            if int(row[0]) != expected:
                raise RuntimeError(f"audit log has a gap at seq {expected}: refusing to extend the tree")
            # The stored list columns are the leaf's own encoding (string_array): no parse, no re-encode.
            # ``verify_log`` rebuilds every leaf from the parsed entry, so a column that is not is caught.
            hashes.append(merkle.leaf_hash(audit_leaf_encoded(*row[:13])))
        return reader.extend(tx.executemany, hashes)

    def _backfill_tiles(self, tx: Any, reader: TreeReader) -> bool:
        """Write up to ``BACKFILL_TILES`` full tiles a tree older than schema step 10 lacks; True when none is.

        New tiles are written as they fill, so only a migrated tree lacks any;
        until they are written, proofs read ``tlog_nodes`` for them.
        """
        size = reader.size()
        budget = BACKFILL_TILES
        for tlevel in range(max(0, (size.bit_length() - 1) // TILE_HEIGHT)):
            full = size >> (TILE_HEIGHT * (tlevel + 1))
            have = {int(r[0]) for r in tx.execute("SELECT idx FROM tlog_tiles WHERE tlevel = ?", (tlevel,)).fetchall()}
            missing = [i for i in range(full) if i not in have]
            rows = []
            for idx in missing[:budget]:
                base, first = tlevel * TILE_HEIGHT, idx * TILE_WIDTH
                bottom = reader.level_range(base, first, first + TILE_WIDTH)
                rows.append((tlevel, idx, tile_blob([bottom[first + k] for k in range(TILE_WIDTH)])))
            if rows:
                tx.executemany("INSERT INTO tlog_tiles (tlevel, idx, hashes) VALUES (?, ?, ?)", rows)
            budget -= len(rows)
            if len(missing) > len(rows) or budget <= 0:
                return False
        return True

    def _sign(self, tx: Any, reader: TreeReader, at_size: int | None) -> SignedCheckpoint | None:
        return reader.sign(tx.execute, self.origin, self._key, int(self._clock() * 1000), at_size)

    def checkpoint_at(self, size: int) -> SignedCheckpoint:
        """The checkpoint of exactly ``size``: a stored one, or one signed now for a size past the newest.

        Sizes below the newest checkpoint that were never signed are refused
        rather than signed on demand: each signature is a stored row, and a
        caller could otherwise have one signed for every size of the log.
        """
        found = self.reader.at(size)
        if found is not None:
            return found
        newest = self.reader.latest()
        if newest is not None and size < newest.size:
            raise _public(
                f"no checkpoint was signed at size {size} (sizes below {newest.size} are served only as signed)",
                Reason.NOT_FOUND,
            )
        with self._lock:
            if self.reader.size() < size:
                self._integrate_and_sign(sign=False)
            if self.reader.size() < size:
                raise _public(f"the log has fewer than {size} entries", Reason.OUT_OF_RANGE)
            self._integrate_and_sign(sign=False, at_size=size)
        found = self.reader.at(size)
        if found is None:  # another replica holds the lock: it will have signed soon
            busy = _public(f"no checkpoint of size {size} yet; retry shortly", Reason.STORE_UNAVAILABLE)
            busy.retry_after = 1.0
            raise busy
        return found

    # -- serving -----------------------------------------------------------------

    def latest(self) -> SignedCheckpoint:
        """The newest signed checkpoint (one is signed now if the log has entries and none yet)."""
        latest = self.reader.latest()
        if latest is None or latest.size < self.reader.size():
            self.tick(force=latest is None)
            latest = self.reader.latest()
        if latest is None:
            raise _public("the audit log is empty: no checkpoint yet", Reason.OUT_OF_RANGE)
        return latest

    def _covering(self, index: int, tree_size: int) -> SignedCheckpoint:
        if tree_size:
            if index >= tree_size:
                raise invalid(f"leaf {index} is not in a tree of size {tree_size}")
            return self.checkpoint_at(tree_size)
        latest = self.reader.latest()
        if latest is None or latest.size <= index:
            self.tick(force=True)
            latest = self.reader.latest()
        if latest is None or latest.size <= index:
            raise _public(f"leaf {index} is not in the log yet", Reason.OUT_OF_RANGE)
        return latest

    def inclusion(
        self, index: int | None, leaf_hash: bytes | None, tree_size: int
    ) -> tuple[int, bytes, list[bytes], SignedCheckpoint]:
        """(leaf index, leaf hash, proof, checkpoint it verifies against)."""
        if index is None:
            if leaf_hash is None or len(leaf_hash) != merkle.HASH_SIZE:
                raise invalid(f"leaf_hash must be {merkle.HASH_SIZE} bytes")
            index = self.reader.index_of(leaf_hash)
            if index is None:
                self.tick(force=True)
                index = self.reader.index_of(leaf_hash)
            if index is None:
                raise _public("no leaf with that hash is in the log", Reason.NOT_FOUND)
        if index < 0:
            raise invalid("leaf_index must not be negative")
        checkpoint = self._covering(index, tree_size)
        return index, self.reader.leaf_hash(index), self.reader.inclusion(index, checkpoint.size), checkpoint

    def consistency(self, size1: int, size2: int) -> tuple[int, int, list[bytes], SignedCheckpoint]:
        """(size1, size2, proof, the checkpoint of size2); size2 0 means the newest checkpoint.

        The sizes are checked before any checkpoint is looked up, so a malformed pair
        is INVALID_ARGUMENT whatever the log holds."""
        if size1 <= 0 or (size2 and size1 > size2):
            raise invalid(f"no consistency proof from size {size1} to size {size2}: need 0 < first_size <= second_size")
        checkpoint = self.latest() if size2 == 0 else self.checkpoint_at(size2)
        size2 = checkpoint.size
        if size1 > size2:
            raise _public(f"first_size {size1} is past the newest checkpoint ({size2})", Reason.OUT_OF_RANGE)
        return size1, size2, self.reader.consistency(size1, size2), checkpoint

    def accesses(
        self, enterprise: str, after_seq: int, limit: int
    ) -> tuple[SignedCheckpoint, list[tuple[AuditEntry, list[bytes]]], int]:
        """One page of the entries about ``enterprise``, each with its inclusion proof.

        Returns (checkpoint, [(entry, proof)], last seq of the page or 0 when done).
        Only entries covered by the checkpoint are listed; the rest follow on a later call.
        """
        limit = max(1, min(limit or 50, MAX_PAGE))
        checkpoint = self.latest()
        entries = self.reader.entries_of(enterprise, after_seq, checkpoint.size, limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        page = [(e, self.reader.inclusion(e.seq - 1, checkpoint.size)) for e in entries]
        return checkpoint, page, entries[-1].seq if more and entries else 0


@dataclass(frozen=True)
class LogReport:
    ok: bool
    size: int
    root: str
    checkpoint_size: int
    problem: str = ""


def verify_log(query: Query, origin: str, public_raw: bytes) -> LogReport:
    """Recompute the tree from ``audit_log`` and match it with the stored tree and every signed checkpoint.

    Every leaf is rebuilt from its entry and folded afresh; at the size of
    every stored checkpoint (not only the newest: older ones are what proofs
    at older sizes are served against) its note must verify with the log's
    key, state the row's size and root, and that root must be the recomputed
    one; every stored complete subtree must equal the recomputed one.
    """
    reader = TreeReader(query, use_tiles=False)
    latest = reader.latest()
    signed = latest.size if latest else 0
    frontier: list[tuple[int, bytes]] = []
    size = 0
    stored_size = reader.size()

    def stored_checkpoints() -> Iterator[SignedCheckpoint]:  # smallest first, a page at a time
        after = 0
        while page := reader.checkpoints_after(after, 1000):
            yield from page
            after = page[-1].size

    checkpoints = stored_checkpoints()

    def checkpoint_problem(row: SignedCheckpoint, root: bytes) -> str:
        which = "newest checkpoint" if row.size == signed else f"checkpoint of size {row.size}"
        try:
            checkpoint = open_checkpoint(row.note, origin, public_raw)
        except ValueError as exc:
            return f"{which} does not verify: {exc}"
        if checkpoint.size != row.size or checkpoint.root != row.root:
            return f"{which} row does not match its signed note"
        if row.root != root:
            return f"recomputed root does not match the signed {which}"
        return ""

    pending = next(checkpoints, None)
    while True:
        rows = query(f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", (size, 10_000))
        if not rows:
            break
        hashes: list[bytes] = []
        for expected, row in enumerate(rows, start=size + 1):
            entry = row_to_entry(row)
            if entry.seq != expected:
                return LogReport(False, size, "", signed, f"gap in audit_log at seq {expected}")
            hashes.append(merkle.leaf_hash(entry.leaf()))
        # Fold in parts, cut at each checkpoint's size inside this batch, to take its root.
        computed: list[tuple[int, int, bytes]] = []
        done = 0
        while pending is not None and pending.size <= size + len(hashes):
            cut = pending.size - size
            computed += fold(size + done, frontier, hashes[done:cut])
            done = cut
            problem = checkpoint_problem(pending, frontier_root(frontier))
            if problem:
                return LogReport(False, size + done, "", signed, problem)
            pending = next(checkpoints, None)
        computed += fold(size + done, frontier, hashes[done:])
        upto = min(stored_size, size + len(hashes))
        check = [(lv, ix, h) for lv, ix, h in computed if ((ix + 1) << lv) <= upto]
        if check:
            stored = reader.fetch((lv, ix) for lv, ix, _ in check)
            for lv, ix, h in check:
                if stored[(lv, ix)] != h:
                    return LogReport(False, size, "", signed, f"stored subtree ({lv}, {ix}) does not match the log")
        size += len(hashes)
    if pending is not None:
        return LogReport(False, size, "", signed, f"the log has {size} entries, the checkpoint signs {pending.size}")
    # Every stored tile must be the tile of the (now verified) stored subtrees.
    after = (-1, -1)
    while tiles := reader.stored_tiles(after, 100):
        for tlevel, idx, blob in tiles:
            base, first = tlevel * TILE_HEIGHT, idx * TILE_WIDTH
            bottom = reader.level_range(base, first, first + TILE_WIDTH)
            if len(bottom) != TILE_WIDTH or blob != tile_blob([bottom[first + k] for k in range(TILE_WIDTH)]):
                return LogReport(False, size, "", signed, f"stored tile ({tlevel}, {idx}) does not match the log")
        after = tiles[-1][:2]
    return LogReport(True, size, frontier_root(frontier).hex(), signed)


__all__ = [
    "CHECKPOINT_SECONDS",
    "CheckpointRefused",
    "LogReport",
    "SignedCheckpoint",
    "TransparencyLog",
    "TreeReader",
    "fold",
    "frontier_keys",
    "origin_of",
    "verify_log",
]
