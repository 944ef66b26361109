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
node caches the upper levels, which never change.

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
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from xinrong.errors import Reason, ValidationError, XinrongError
from xinrong.keys.signing import SigningKey
from xinrong.node.audit import _COLUMNS, SEQUENCER_LOCK, AuditEntry, _row_to_entry
from xinrong.tlog import merkle
from xinrong.tlog.auditleaf import audit_leaf_encoded
from xinrong.tlog.client import audit_origin
from xinrong.tlog.note import Checkpoint, open_checkpoint, sign_checkpoint

log = logging.getLogger(__name__)

# A checkpoint at least this often while entries arrive.
CHECKPOINT_SECONDS = 1.0
# Leaves folded per integration transaction (bounded lock hold).
INTEGRATE_BATCH = 5_000
# Levels at and above this one are cached in memory (complete nodes never change).
CACHE_LEVEL = 6
MAX_PAGE = 200

Query = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


class CheckpointRefused(RuntimeError):
    """The tree the node would sign is not consistent with the newest checkpoint it signed."""


def origin_of(node_id: str) -> str:
    """The node's log origin (and note key name)."""
    return audit_origin(node_id)


@dataclass(frozen=True)
class SignedCheckpoint:
    size: int
    root: bytes
    note: str


def _first_row(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


class TreeReader:
    """Proofs and roots from the stored complete subtrees, through any query function.

    ``query(sql, params)`` takes ``?`` placeholders: ``Database.query``, a
    transaction's cursor, or an operator tool's read-only connection.
    """

    def __init__(self, query: Query, *, cache: dict[tuple[int, int], bytes] | None = None) -> None:
        self._query = query
        self._cache = cache if cache is not None else {}

    # -- reading nodes ---------------------------------------------------------

    def size(self) -> int:
        row = _first_row(self._query("SELECT max(idx) FROM tlog_nodes WHERE level = 0", ()))
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def fetch(self, keys: Iterable[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        wanted = sorted(set(keys))
        out = {k: self._cache[k] for k in wanted if k in self._cache}
        missing = [k for k in wanted if k not in out]
        for start in range(0, len(missing), 100):
            chunk = missing[start : start + 100]
            where = " OR ".join(["(level = ? AND idx = ?)"] * len(chunk))
            params = [v for key in chunk for v in key]
            for level, idx, value in self._query(f"SELECT level, idx, hash FROM tlog_nodes WHERE {where}", params):
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
        row = _first_row(self._query("SELECT idx FROM tlog_nodes WHERE level = 0 AND hash = ?", (leaf_hash,)))
        return None if row is None else int(row[0])

    # -- checkpoints -----------------------------------------------------------

    def latest(self) -> SignedCheckpoint | None:
        row = _first_row(self._query("SELECT size, root, note FROM tlog_checkpoints ORDER BY size DESC LIMIT 1", ()))
        return None if row is None else SignedCheckpoint(int(row[0]), bytes(row[1]), str(row[2]))

    def at(self, size: int) -> SignedCheckpoint | None:
        row = _first_row(self._query("SELECT size, root, note FROM tlog_checkpoints WHERE size = ?", (size,)))
        return None if row is None else SignedCheckpoint(int(row[0]), bytes(row[1]), str(row[2]))

    def entry(self, index: int) -> AuditEntry | None:
        row = _first_row(self._query(f"SELECT {_COLUMNS} FROM audit_log WHERE seq = ?", (index + 1,)))
        return None if row is None else _row_to_entry(row)

    def entries_of(self, enterprise: str, after_seq: int, up_to_seq: int, limit: int) -> list[AuditEntry]:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM audit_log WHERE enterprise = ? AND seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
            (enterprise, after_seq, up_to_seq, limit),
        )
        return [_row_to_entry(r) for r in rows]


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
        self._last_signed = 0.0
        self.reader = TreeReader(self._query, cache=self._cache)

    @property
    def public_raw(self) -> bytes:
        return self._key.public_raw

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return list(self._db.query(sql, params))

    # -- writing -----------------------------------------------------------------

    def tick(self, *, force: bool = False) -> SignedCheckpoint | None:
        """Integrate every entry the tree lacks; sign a checkpoint if it grew (at most every few seconds)."""
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
                reader = TreeReader(query, cache=self._cache)
                added = self._integrate(tx, reader)
                if added == INTEGRATE_BATCH:
                    continue  # more to fold: commit this batch, go on
                if sign or at_size is not None:
                    result = self._sign(tx, reader, at_size)
                return result

    def _integrate(self, tx: Any, reader: TreeReader) -> int:
        size = reader.size()
        rows = tx.execute(
            f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", (size, INTEGRATE_BATCH)
        ).fetchall()
        if not rows:
            return 0
        hashes: list[bytes] = []
        for expected, row in enumerate(rows, start=size + 1):
            if int(row[0]) != expected:
                raise RuntimeError(f"audit log has a gap at seq {expected}: refusing to extend the tree")
            # The stored list columns are the leaf's own encoding (string_array): no parse, no re-encode.
            # ``verify_log`` rebuilds every leaf from the parsed entry, so a column that is not is caught.
            hashes.append(merkle.leaf_hash(audit_leaf_encoded(*row[:13])))
        keys = frontier_keys(size)
        stored = reader.fetch(keys) if keys else {}
        frontier = [(level, stored[(level, idx)]) for level, idx in keys]
        new = fold(size, frontier, hashes)
        tx.executemany("INSERT INTO tlog_nodes (level, idx, hash) VALUES (?, ?, ?)", new)
        return len(hashes)

    def _sign(self, tx: Any, reader: TreeReader, at_size: int | None) -> SignedCheckpoint | None:
        size = reader.size() if at_size is None else at_size
        latest = reader.latest()
        if size == 0 or (latest is not None and latest.size == size):
            return None
        existing = reader.at(size)
        if existing is not None:
            return existing
        root = reader.root(size)
        if latest is not None:
            old, new = (latest.size, size) if size > latest.size else (size, latest.size)
            old_root, new_root = (latest.root, root) if size > latest.size else (root, latest.root)
            try:
                merkle.verify_consistency(old, new, reader.consistency(old, new), old_root, new_root)
            except merkle.ProofError as exc:
                log.error("refusing to sign size %d: not consistent with checkpoint %d (%s)", size, latest.size, exc)
                raise CheckpointRefused(
                    f"tree of {size} is not consistent with the signed checkpoint of {latest.size}"
                ) from None
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self._key)
        tx.execute(
            "INSERT INTO tlog_checkpoints (size, root, note, signed_ms) VALUES (?, ?, ?, ?)",
            (size, root, note, int(self._clock() * 1000)),
        )
        return SignedCheckpoint(size, root, note)

    def checkpoint_at(self, size: int) -> SignedCheckpoint:
        """The checkpoint of exactly ``size`` (signed now if none is yet; consistent with the newest)."""
        found = self.reader.at(size)
        if found is not None:
            return found
        with self._lock:
            if self.reader.size() < size:
                self._integrate_and_sign(sign=False)
            if self.reader.size() < size:
                raise XinrongError(f"the log has fewer than {size} entries", reason=Reason.NOT_FOUND)
            self._integrate_and_sign(sign=False, at_size=size)
        found = self.reader.at(size)
        if found is None:  # another replica holds the lock: it will have signed soon
            raise XinrongError(f"no checkpoint of size {size} yet; retry", reason=Reason.NOT_FOUND)
        return found

    # -- serving -----------------------------------------------------------------

    def latest(self) -> SignedCheckpoint:
        """The newest signed checkpoint (one is signed now if the log has entries and none yet)."""
        latest = self.reader.latest()
        if latest is None or latest.size < self.reader.size():
            self.tick(force=latest is None)
            latest = self.reader.latest()
        if latest is None:
            raise XinrongError("the audit log is empty: no checkpoint yet", reason=Reason.NOT_FOUND)
        return latest

    def _covering(self, index: int, tree_size: int) -> SignedCheckpoint:
        if tree_size:
            if index >= tree_size:
                raise ValidationError(f"leaf {index} is not in a tree of {tree_size}")
            return self.checkpoint_at(tree_size)
        latest = self.reader.latest()
        if latest is None or latest.size <= index:
            self.tick(force=True)
            latest = self.reader.latest()
        if latest is None or latest.size <= index:
            raise XinrongError(f"leaf {index} is not in the log yet", reason=Reason.NOT_FOUND)
        return latest

    def inclusion(
        self, index: int | None, leaf_hash: bytes | None, tree_size: int
    ) -> tuple[int, bytes, list[bytes], SignedCheckpoint]:
        """(leaf index, leaf hash, proof, checkpoint it verifies against)."""
        if index is None:
            if leaf_hash is None or len(leaf_hash) != merkle.HASH_SIZE:
                raise ValidationError("leaf hash must be 32 bytes")
            index = self.reader.index_of(leaf_hash)
            if index is None:
                self.tick(force=True)
                index = self.reader.index_of(leaf_hash)
            if index is None:
                raise XinrongError("no such leaf in the log", reason=Reason.NOT_FOUND)
        if index < 0:
            raise ValidationError("leaf index must not be negative")
        checkpoint = self._covering(index, tree_size)
        return index, self.reader.leaf_hash(index), self.reader.inclusion(index, checkpoint.size), checkpoint

    def consistency(self, size1: int, size2: int) -> tuple[int, int, list[bytes], SignedCheckpoint]:
        """(size1, size2, proof, the checkpoint of size2); size2 0 means the newest checkpoint."""
        checkpoint = self.latest() if size2 == 0 else self.checkpoint_at(size2)
        size2 = checkpoint.size
        if not 0 < size1 <= size2:
            raise ValidationError(f"no consistency proof from {size1} to {size2}")
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
    """Recompute the tree from ``audit_log`` and match it with the stored tree and signed checkpoint.

    Every leaf is rebuilt from its entry and folded afresh; the recomputed
    root at the newest checkpoint's size must equal the signed root, and
    every stored complete subtree must equal the recomputed one.
    """
    reader = TreeReader(query)
    latest = reader.latest()
    signed = latest.size if latest else 0
    if latest is not None:
        try:
            checkpoint = open_checkpoint(latest.note, origin, public_raw)
        except ValueError as exc:
            return LogReport(False, 0, "", signed, f"newest checkpoint does not verify: {exc}")
        if checkpoint.size != latest.size or checkpoint.root != latest.root:
            return LogReport(False, 0, "", signed, "newest checkpoint row does not match its signed note")
    frontier: list[tuple[int, bytes]] = []
    size = 0
    signed_root: bytes | None = None
    stored_size = reader.size()
    while True:
        rows = query(f"SELECT {_COLUMNS} FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?", (size, 10_000))
        if not rows:
            break
        hashes: list[bytes] = []
        for expected, row in enumerate(rows, start=size + 1):
            entry = _row_to_entry(row)
            if entry.seq != expected:
                return LogReport(False, size, "", signed, f"gap in audit_log at seq {expected}")
            hashes.append(merkle.leaf_hash(entry.leaf()))
        # Fold in two parts if the signed size falls inside this batch, to take its root.
        cut = signed - size if size < signed <= size + len(hashes) else len(hashes)
        computed = fold(size, frontier, hashes[:cut])
        if cut < len(hashes) or size + cut == signed:
            signed_root = _frontier_root(frontier) if size + cut == signed else signed_root
        computed += fold(size + cut, frontier, hashes[cut:])
        upto = min(stored_size, size + len(hashes))
        check = [(lv, ix, h) for lv, ix, h in computed if ((ix + 1) << lv) <= upto]
        if check:
            stored = reader.fetch((lv, ix) for lv, ix, _ in check)
            for lv, ix, h in check:
                if stored[(lv, ix)] != h:
                    return LogReport(False, size, "", signed, f"stored subtree ({lv}, {ix}) does not match the log")
        size += len(hashes)
    if latest is not None:
        if size < latest.size:
            return LogReport(False, size, "", signed, f"the log has {size} entries, the checkpoint signs {signed}")
        if signed_root != latest.root:
            return LogReport(False, size, "", signed, "recomputed root does not match the signed checkpoint")
    return LogReport(True, size, _frontier_root(frontier).hex(), signed)


def _frontier_root(frontier: Sequence[tuple[int, bytes]]) -> bytes:
    """The root of a tree from its right edge (largest subtree first)."""
    if not frontier:
        return merkle.EMPTY_ROOT
    acc = frontier[-1][1]
    for _, value in reversed(frontier[:-1]):
        acc = merkle.node_hash(value, acc)
    return acc


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
