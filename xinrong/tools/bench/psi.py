"""Benchmark: ECDH-PSI (X25519) between a bank and K providers, in one process.

    python -m xinrong.tools.bench.psi --n-bank 1000000 --n-provider 1000000 --overlap 0.5

Prints one JSON line: wall time from the bank's first hash to every party
holding its aligned rows, CPU seconds per party (its own threads plus its
worker processes), bytes each way, and the same intersection computed in
the clear with a Python set as the baseline of the same run (so the cost of
privacy is a ratio, not a guess). The parties run one after the other, each
with its own worker pool, so every phase is one party's cost as in a
process of its own (``xinrong.tools.federation_job.align_psi`` instead overlaps them on
one shared pool). The messages are passed in memory; over the wire they are
the same bytes, relayed by the node.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from xinrong.modeling import psi


def synthetic_ids(
    n_bank: int, n_provider: int, overlap: float, providers: int, seed: int, decoys: int = 0
) -> tuple[list[str], list[list[str]], list[str], int]:
    """USCC-shaped random ids.

    Every provider holds the same ``common`` bank ids, the same ``decoys``
    non-bank ids (registry entries the bank can use as decoys) and ids of its own.
    """
    if not 0.0 <= overlap <= 1.0:
        raise ValueError("overlap is a fraction between 0 and 1")
    common = round(overlap * min(n_bank, n_provider))
    if common + decoys > n_provider:
        raise ValueError("more decoys than a provider set can hold")
    rng = np.random.default_rng(seed)
    own_count = n_provider - common - decoys
    need = n_bank + decoys + providers * own_count
    raw = np.unique(rng.integers(0, 2**62, size=int(need * 1.01) + 16, dtype=np.int64))[:need]
    if raw.size < need:
        raise RuntimeError("could not draw enough distinct ids")
    raw = rng.permutation(raw)
    ids = [f"91{v:016X}" for v in raw.tolist()]
    bank = ids[:n_bank]
    registry = ids[n_bank : n_bank + decoys]
    sets = []
    offset = n_bank + decoys
    for _ in range(providers):
        held = bank[:common] + registry + ids[offset : offset + own_count]
        offset += own_count
        sets.append([held[i] for i in rng.permutation(len(held)).tolist()])
    return bank, sets, registry, common


def run(
    n_bank: int,
    n_provider: int,
    overlap: float,
    *,
    providers: int = 1,
    decoys: int = 0,
    workers: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    bank_ids, provider_sets, decoy_ids, _common = synthetic_ids(n_bank, n_provider, overlap, providers, seed, decoys)

    t0 = time.perf_counter()
    plain = set(bank_ids)
    for ids in provider_sets:
        plain &= set(ids)
    baseline = time.perf_counter() - t0

    context = b"bench-psi"
    phases: dict[str, float] = {}
    started = time.perf_counter()
    bank = psi.BankPsi(bank_ids, context=context, decoys=decoy_ids, workers=workers)
    request = bank.request()
    phases["bank_request"] = time.perf_counter() - started
    parties = [psi.ProviderPsi(ids, context=context, workers=workers) for ids in provider_sets]
    bank_to_provider = 0
    provider_to_bank = 0
    for k, party in enumerate(parties):
        t = time.perf_counter()
        party.prepare()  # its own ids: independent of the request (over the wire, concurrent with it)
        phases[f"provider{k}_prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        response = party.respond(request)
        phases[f"provider{k}_respond"] = time.perf_counter() - t
        t = time.perf_counter()
        bank.accept(f"p{k}", response)
        phases[f"bank_accept{k}"] = time.perf_counter() - t
        bank_to_provider += len(request)
        provider_to_bank += len(response)
    t = time.perf_counter()
    alignment, selections = bank.finish()
    views = [party.finish(selections[f"p{k}"]) for k, party in enumerate(parties)]
    phases["finish"] = time.perf_counter() - t
    wall = time.perf_counter() - started
    bank_to_provider += sum(len(m) for m in selections.values())

    real = {i for i, d in zip(alignment.ids, alignment.is_decoy) if not d}
    correct = real == plain and all(v.ids == alignment.ids for v in views)
    return {
        "bench": "psi_ecdh_x25519",
        "n_bank": n_bank,
        "n_provider": n_provider,
        "providers": providers,
        "overlap": overlap,
        "intersection": len(real),
        "decoys_in_intersection": int(alignment.is_decoy.sum()),
        "correct": correct,
        "seconds_wall": round(wall, 3),
        "cpu_seconds": {
            "bank": round(bank.cpu_seconds, 3),
            **{f"provider{k}": round(p.cpu_seconds, 3) for k, p in enumerate(parties)},
        },
        "bytes": {"bank_to_providers": bank_to_provider, "providers_to_bank": provider_to_bank},
        "phases_seconds": {k: round(v, 3) for k, v in phases.items()},
        "baseline_plain_set_seconds": round(baseline, 4),
        "slowdown_vs_plain": round(wall / baseline, 1) if baseline > 0 else None,
        "workers": workers if workers is not None else "auto",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n-bank", type=int, default=30_000)
    parser.add_argument("--n-provider", type=int, default=30_000)
    parser.add_argument("--overlap", type=float, default=0.5, help="fraction of the smaller set in common")
    parser.add_argument("--providers", type=int, default=1)
    parser.add_argument("--decoys", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="worker processes per party (default: cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="accepted for symmetry; output is always JSON")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xinrong bench psi", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    result = run(
        args.n_bank,
        args.n_provider,
        args.overlap,
        providers=args.providers,
        decoys=args.decoys,
        workers=args.workers,
        seed=args.seed,
    )
    print(json.dumps(result, sort_keys=True))
    return 0 if result["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
