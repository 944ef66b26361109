"""``xinrong bench tlog``: the node's Merkle log at scale.

Two measurements, one JSON line:

* **Inclusion proofs at N leaves, server-side.** N synthetic leaf hashes are
  folded straight into a fresh node database (``tlog_nodes``, the table and
  code the node uses: ``xinrong.node.tlog.fold``), then random leaves are
  proven with the node's ``TreeReader`` (one batched query for the O(log n)
  subtrees a proof needs) and every proof is verified against the root.
  Reported: p50 / p99 / mean microseconds, cold (fresh reader, no cache) and
  warm (the upper levels cached, as in a running node), and rows read; for
  the tiled store (``tlog_tiles``, what the node reads now) and, on the same
  database in the same run, for the subtree rows alone (``nodes_*``: before),
  alternating in rounds; ``*_cpu_*`` is the thread's CPU time (user + system,
  page reads included), which a loaded machine's waiting for a core does not
  inflate.
* **Audit append throughput**, entries per second into the hash chain alone
  (what the node did before) and with the tree integrated and a checkpoint
  signed per batch (what it does now), on the same database.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from xinrong.keys.signing import SigningKey
from xinrong.node.audit import AuditEvent, Decision, HashChainAuditLog
from xinrong.node.db import Database
from xinrong.node.tlog import TransparencyLog, TreeReader
from xinrong.tlog import merkle
from xinrong.tlog.store import TileCache, fold, tile_rows


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def build(db: Database, leaves: int, *, batch: int = 200_000) -> float:
    """Fold ``leaves`` synthetic leaf hashes into ``tlog_nodes``; returns seconds taken."""
    start = time.perf_counter()
    frontier: list[tuple[int, bytes]] = []
    size = 0
    while size < leaves:
        n = min(batch, leaves - size)
        hashes = [hashlib.sha256(b"\x00" + i.to_bytes(8, "big")).digest() for i in range(size, size + n)]
        rows = fold(size, frontier, hashes)
        tiles = tile_rows(rows, TreeReader(db.query).level_range)
        with db.transaction() as tx:
            tx.executemany("INSERT INTO tlog_nodes (level, idx, hash) VALUES (?, ?, ?)", rows)
            tx.executemany("INSERT INTO tlog_tiles (tlevel, idx, hashes) VALUES (?, ?, ?)", tiles)
        db.checkpoint()  # the node does this every second off the request path
        size += n
    return time.perf_counter() - start


def proofs(db: Database, leaves: int, samples: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    indices = [rng.randrange(leaves) for _ in range(samples)]
    root = TreeReader(db.query).root(leaves)
    reads: list[int] = []

    def counting(sql: str, params: Any) -> list[tuple[Any, ...]]:
        rows = db.query(sql, params)
        reads.append(len(rows))
        return rows

    out: dict[str, Any] = {}
    # Alternate the two stores round by round so load on the machine hits both alike.
    caches: dict[str, tuple[dict[tuple[int, int], bytes], TileCache]] = {
        store: ({}, TileCache()) for store in ("nodes", "tiles")
    }
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # this thread's CPU time: the wall time minus waiting for a core
    rows: dict[str, list[int]] = {}
    rounds = 4
    for label in ("cold", "warm"):
        for r in range(rounds):
            chunk = indices[r::rounds]
            for store in ("nodes", "tiles"):
                key = f"{store}_{label}" if store == "nodes" else label
                for index in chunk:
                    cache, tiles = ({}, TileCache()) if label == "cold" else caches[store]
                    reader = TreeReader(counting, cache=cache, tiles=tiles, use_tiles=store == "tiles")
                    reads.clear()
                    c0, t0 = time.thread_time(), time.perf_counter()
                    leaf = reader.leaf_hash(index)
                    proof = reader.inclusion(index, leaves)
                    times.setdefault(key, []).append((time.perf_counter() - t0) * 1e6)
                    cpu.setdefault(key, []).append((time.thread_time() - c0) * 1e6)
                    rows.setdefault(key, []).append(sum(reads))
                    merkle.verify_inclusion(index, leaves, leaf, proof, root)
    for key, values in times.items():
        out[f"inclusion_{key}_p50_us"] = round(_pct(values, 0.5), 1)
        out[f"inclusion_{key}_p99_us"] = round(_pct(values, 0.99), 1)
        out[f"inclusion_{key}_mean_us"] = round(sum(values) / len(values), 1)
        out[f"inclusion_{key}_cpu_p50_us"] = round(_pct(cpu[key], 0.5), 1)
        out[f"inclusion_{key}_cpu_p99_us"] = round(_pct(cpu[key], 0.99), 1)
        out[f"inclusion_{key}_rows_per_proof"] = round(sum(rows[key]) / len(rows[key]), 1)
    out["proof_hashes"] = len(TreeReader(db.query).inclusion(indices[0], leaves))
    return out


def appends(directory: Path, entries: int, batch: int, tick_every: int) -> dict[str, Any]:
    """Entries/s into the chain alone, then chain + tree, integrated and signed every ``tick_every`` entries.

    The node integrates and signs once a second (``CHECKPOINT_SECONDS``) off
    the request path; ``tick_every`` stands for the entries a second brings.
    """
    result: dict[str, Any] = {}
    for label, with_tree in (("chain_only", False), ("chain_and_tree", True)):
        db = Database(directory / f"appends-{label}.db")
        audit = HashChainAuditLog(db.query)
        tlog = TransparencyLog(db, node_id="bench", signing_key=SigningKey.generate(), checkpoint_seconds=0)
        event = AuditEvent(
            "institution", "bank-a", "Verify", Decision.ALLOWED, request_id="r", enterprise="91130100MA0ACME1XX"
        )
        t0 = time.perf_counter()
        for start in range(0, entries, batch):
            with db.transaction() as tx:
                for _ in range(min(batch, entries - start)):
                    audit.append(tx, event, 1)
            if with_tree and (start + batch) % tick_every < batch:
                tlog.tick(force=True)
        if with_tree:
            tlog.tick(force=True)
        elapsed = time.perf_counter() - t0
        result[f"append_{label}_per_s"] = round(entries / elapsed)
        db.close()
    result["append_ratio"] = round(result["append_chain_and_tree_per_s"] / result["append_chain_only_per_s"], 3)
    result["tree_cost_us_per_entry"] = round(
        1e6 / result["append_chain_and_tree_per_s"] - 1e6 / result["append_chain_only_per_s"], 1
    )
    return result


def run(
    *, leaves: int, samples: int, append_entries: int, append_batch: int, tick_every: int, seed: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="xinrong-bench-tlog-") as tmp:
        db = Database(Path(tmp) / "tree.db")
        build_seconds = build(db, leaves)
        result: dict[str, Any] = {"bench": "tlog", "leaves": leaves, "build_s": round(build_seconds, 1)}
        result.update(proofs(db, leaves, samples, seed))
        db.close()
        result.update(appends(Path(tmp), append_entries, append_batch, tick_every))
        result.update(append_entries=append_entries, append_batch=append_batch, tick_every=tick_every, samples=samples)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--leaves", type=int, default=1_000_000, help="synthetic leaves in the tree (default 1M)")
    p.add_argument("--samples", type=int, default=2000, help="inclusion proofs timed (default 2000)")
    p.add_argument("--append-entries", type=int, default=20_000, help="audit entries appended (default 20000)")
    p.add_argument("--append-batch", type=int, default=50, help="entries per transaction (default 50)")
    p.add_argument("--tick-every", type=int, default=1000, help="entries per integrate+sign tick (default 1000)")
    p.add_argument("--seed", type=int, default=7, help="seed of the leaves proven (default 7)")
    p.add_argument("--json", action="store_true", help="print only the JSON line")


def main(args: argparse.Namespace) -> int:
    result = run(
        leaves=args.leaves,
        samples=args.samples,
        append_entries=args.append_entries,
        append_batch=args.append_batch,
        tick_every=args.tick_every,
        seed=args.seed,
    )
    if not args.json:
        print(
            f"inclusion proof at {result['leaves']} leaves: p50 {result['inclusion_warm_p50_us']} us warm, "
            f"{result['inclusion_cold_p50_us']} us cold; appends {result['append_chain_and_tree_per_s']}/s "
            f"with the tree vs {result['append_chain_only_per_s']}/s chain only"
        )
    print(json.dumps(result))
    return 0


__all__ = ["add_arguments", "main", "run"]
