"""``xinrong bench evaluate``: full-coverage evaluation of N enterprises by P providers.

The engine in-process (``--mode engine``, the default): the two rounds of
``xinrong.modeling.evaluation`` on synthetic per-provider data, each
provider's work (its points, its zero-sum mask, CKKS encryption) in a pool
of worker processes as agents on their own machines would run it, the
node's work (aggregation, decryption, unmasking, score and grade) in this
process. ``--mode grpc`` runs the real service instead: one agent server
per provider with an imported data period, the node's coordinator over
mTLS gRPC, results stored (use it for ~10k enterprises: every part is one
unary message).

One JSON line: seconds per phase and in total, peak RSS of this process
and of the largest worker, and ``correct`` (every eligible total equals the
plaintext sum, every other enterprise withheld).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import secrets
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from xinrong.index import default_index
from xinrong.modeling import evaluation as ev
from xinrong.modeling.he import base

_PROVIDERS = (
    "tax",
    "social_insurance",
    "housing_fund",
    "electricity",
    "water",
    "gas",
    "market",
    "judicial",
    "real_estate",
)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _synthetic(seed: int, k: int, n: int) -> tuple[Any, Any]:
    """Provider k's presence (bool per enterprise) and points (0 where absent): deterministic in (seed, k)."""
    rng = np.random.default_rng([seed, k])
    share = 1.0 if k == 0 else 0.05 + 0.45 * rng.random()  # the first is the register: it knows everyone
    held = rng.random(n) < share
    providers = default_index().providers
    top = sum(i.max_points for i in default_index().provider_items(providers[k % len(providers)]))
    points = np.where(held, rng.integers(0, top + 1, n), 0)
    return held, points


def _pair_keys(seed: int, names: list[str], own: str) -> dict[str, bytes]:
    """Stand-ins for the agents' pairwise X25519 secrets (the service derives them from CA-bound keys)."""
    out = {}
    for peer in names:
        if peer != own:
            low, high = sorted((own, peer))
            out[peer] = np.random.default_rng([seed, names.index(low), names.index(high), 7]).bytes(32)
    return out


def _provider_round(
    public_raw: bytes, seed: int, k: int, n: int, names: list[str], kind: str, eligible: bytes | None
) -> tuple[bytes, float, float]:
    """One provider's round, in a worker: its part, masked, encrypted. Returns payload, seconds, peak RSS."""
    t0 = time.perf_counter()
    public = base.load_public("ckks", public_raw)
    held, points = _synthetic(seed, k, n)
    if kind == ev.KIND_PRESENCE:
        values = held.astype(np.int64)
    else:
        assert eligible is not None
        values = np.where(ev.unpack_mask(eligible, n), points, 0)
    own = names[k]
    keys = {
        p: ev.mask_key(s, evaluation_id="bench", kind=kind, a=own, b=p) for p, s in _pair_keys(seed, names, own).items()
    }
    masked = ev.mask_values(values, ev.zero_sum_mask(n, own, keys))
    payload = ev.encrypt_part(
        public, kind=kind, evaluation_id="bench", index_sha256="bench", provider=own, values=masked
    )
    return payload, time.perf_counter() - t0, _peak_rss_mb()


def run_engine(enterprises: int, providers: int, *, workers: int, seed: int) -> dict[str, Any]:
    if not 2 <= providers <= min(len(_PROVIDERS), ev.MAX_MASKED_PROVIDERS):
        raise SystemExit(f"--providers must be 2..{len(_PROVIDERS)}")
    n = enterprises
    names = list(_PROVIDERS[:providers])
    index = default_index()
    phases: dict[str, float] = {}
    worker_rss = 0.0
    start = time.perf_counter()
    t = time.perf_counter()
    secret = ev.evaluation_keygen()
    public_raw = secret.public_bytes(with_relin_keys=False)
    public = base.load_public("ckks", public_raw)
    phases["keygen"] = time.perf_counter() - t
    ctx = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:

        def provider_round(kind: str, eligible: bytes | None) -> list[bytes]:
            nonlocal worker_rss
            futures = [
                pool.submit(_provider_round, public_raw, seed, k, n, names, kind, eligible) for k in range(providers)
            ]
            out = []
            for f in futures:
                payload, _, rss = f.result()
                worker_rss = max(worker_rss, rss)
                out.append(payload)
            return out

        t = time.perf_counter()
        parts = provider_round(ev.KIND_PRESENCE, None)
        phases["presence_parts"] = time.perf_counter() - t
        t = time.perf_counter()
        total = ev.aggregate_parts(public, parts, kind=ev.KIND_PRESENCE, min_parts=providers)
        del parts
        phases["presence_aggregate"] = time.perf_counter() - t
        t = time.perf_counter()
        counts = ev.unmask(ev.decrypt_sums(secret, total).values)
        mask = ev.eligible(counts, index.min_providers)
        phases["presence_decrypt"] = time.perf_counter() - t
        t = time.perf_counter()
        parts = provider_round(ev.KIND_POINTS, ev.pack_mask(mask))
        phases["points_parts"] = time.perf_counter() - t
    t = time.perf_counter()
    total = ev.aggregate_parts(public, parts, kind=ev.KIND_POINTS, min_parts=providers)
    del parts
    phases["points_aggregate"] = time.perf_counter() - t
    t = time.perf_counter()
    totals = ev.unmask(ev.decrypt_sums(secret, total).values)
    scores = np.clip(np.rint(1000 * totals / index.max_total), 0, 1000).astype(np.int64)
    cuts = np.array([g.min_score for g in index.grades][::-1])
    grades = len(index.grades) - np.searchsorted(cuts, scores, side="right")  # 0 = best
    phases["points_decrypt_score"] = time.perf_counter() - t
    seconds = time.perf_counter() - start
    # Ground truth, outside the timing: the plaintext sums.
    present = np.zeros(n, dtype=np.int64)
    plain = np.zeros(n, dtype=np.int64)
    for k in range(providers):
        held, points = _synthetic(seed, k, n)
        present += held
        plain += points
    correct = bool(
        np.array_equal(counts, present)
        and np.array_equal(totals[mask], plain[mask])
        and np.all(totals[~mask] == 0)
        and np.all((grades >= 0) & (grades < len(index.grades)))
    )
    return {
        "bench": "evaluate",
        "mode": "engine",
        "enterprises": n,
        "providers": providers,
        "eligible": int(mask.sum()),
        "withheld": int((~mask).sum()),
        "seconds": round(seconds, 2),
        "phases": {k: round(v, 2) for k, v in phases.items()},
        "workers": workers,
        "peak_rss_mb": _peak_rss_mb(),
        "worker_peak_rss_mb": worker_rss,
        "ciphertext_mb_per_part": round(len(total) / 1e6, 1),
        "correct": correct,
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--enterprises", type=int, default=100_000, help="enterprises in the register (default 100000)")
    parser.add_argument("--providers", type=int, default=9, help="providers taking part (default 9, the catalog's)")
    parser.add_argument(
        "--mode",
        choices=("engine", "grpc"),
        default="engine",
        help="engine: the two rounds in-process with worker processes; grpc: real agent processes over mTLS",
    )
    parser.add_argument("--workers", type=int, default=2, help="engine mode: provider processes at a time")
    parser.add_argument("--seed", type=int, default=None, help="synthetic data seed (default: random)")
    parser.add_argument("--json", action="store_true", help="print the JSON line only")


def main(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else secrets.randbelow(1 << 30)
    if args.enterprises < 1:
        raise SystemExit("--enterprises must be positive")
    if args.mode == "grpc":
        from xinrong.tools.bench.evaluate_grpc import run_grpc

        result = run_grpc(args.enterprises, args.providers, seed=seed)
    else:
        result = run_engine(args.enterprises, args.providers, workers=args.workers, seed=seed)
    print(json.dumps(result), flush=True)
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
