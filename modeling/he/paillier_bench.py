"""Benchmark: Paillier-2048 primitives and one coordinated-LR epoch on default_credit shapes.

    python -m modeling.he.paillier_bench [--workers 2] [--rows 21000] [--skip-epoch]

Prints one JSON line with

* ``micro``: keygen; obfuscator rates for every option (classic ``r^n``,
  DJN with a plain ``powmod``, DJN with the fixed-base table, the table in
  worker processes); encryption with a ready pool; scalar multiplication
  with a 21-bit exponent; one column of X^T [[d]] by bucket
  multi-exponentiation (continuous and categorical columns) against the
  naive per-row loop; decryption with CRT against phe's ``raw_decrypt``.
* ``projected_epoch``: the epoch's operation counts times those unit costs.
* ``epoch``: one measured epoch of the homomorphic work of coordinated LR
  with FATE's Taylor residual - two providers encrypt their partial logits,
  the bank forms ``[[d]] = 0.25 ([[u_1]] + [[u_2]]) + [[0.25 u_b + 0.5 - y]]``,
  every party computes masked ``X^T [[d]]``, the key owner decrypts the
  masked sums - with the max error against the plaintext gradient. All
  parties share this process and its cores; the pool starts cold.

Real data comes from ``../shared/data/default_credit_hetero_{guest,host}.csv``
(guest: 13 features, host: 10, split 5/5 over two providers); without it the
same shapes are synthesized.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from phe import paillier as phe_paillier

from xinrong.modeling.he import paillier, paillier_pool
from xinrong.modeling.he import paillier_math as pm

DATA_DIR = Path(__file__).resolve().parents[3] / "shared" / "data"


def _per_item(fn: Callable[[], object], count: int, repeats: int = 3) -> float:
    """Median seconds per item over repeats of a batch of count items."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / count)
    return statistics.median(times)


def load_default_credit(rows: int, data_dir: Path) -> tuple[np.ndarray[Any, Any], ...]:
    guest_path = data_dir / "default_credit_hetero_guest.csv"
    host_path = data_dir / "default_credit_hetero_host.csv"
    if guest_path.exists() and host_path.exists():
        guest = np.genfromtxt(guest_path, delimiter=",", skip_header=1)
        host = np.genfromtxt(host_path, delimiter=",", skip_header=1)
        order = np.random.default_rng(0).permutation(len(guest))[:rows]
        guest, host = guest[order], host[order]
        return guest[:, 1], guest[:, 2:], host[:, 1:6], host[:, 6:11]
    rng = np.random.default_rng(0)
    y = (rng.random(rows) < 0.22).astype(float)
    return y, rng.normal(size=(rows, 13)), rng.integers(-2, 3, size=(rows, 5)) * 0.7, rng.normal(size=(rows, 5))


def micro(workers: int, rows: int, data_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    keygen_times = []
    for _ in range(3):
        t = time.perf_counter()
        sk = paillier.keygen(workers=1)
        keygen_times.append(time.perf_counter() - t)
    out["keygen_seconds"] = round(statistics.median(keygen_times), 3)
    n, n2 = sk.n, sk.nsquare

    classic = paillier.load_public(sk.public_bytes(), obfuscation="classic", workers=1)
    out["obfuscator_classic_ms"] = round(1e3 * _per_item(lambda: classic.pool.source.generate(20), 20), 3)
    hs = pm.djn_base(n, n2)
    bits = (sk.n_bits + 1) // 2
    out["obfuscator_djn_powmod_ms"] = round(
        1e3 * _per_item(lambda: [gmpy2.powmod(hs, gmpy2.mpz(secrets.randbits(bits)), n2) for _ in range(40)], 40),
        3,
    )
    for window in (8, 10):
        t = time.perf_counter()
        table = pm.FixedBaseTable(hs, n2, bits, window)
        build = time.perf_counter() - t
        out[f"obfuscator_djn_table_w{window}_ms"] = round(1e3 * _per_item(lambda: table.random_powers(500), 500), 3)
        out[f"djn_table_w{window}_build_seconds"] = round(build, 3)
        out[f"djn_table_w{window}_megabytes"] = round(table.entries * sk.ct_bytes / 2**20, 1)
    if workers > 1:
        public = paillier.load_public(sk.public_bytes(), workers=workers)
        public.prefill(2 * paillier_pool.PARALLEL_MIN_OBFUSCATORS, wait=True)  # warm the workers and their tables
        public.pool.discard()
        count = 8 * paillier_pool.TASK_CHUNK
        t = time.perf_counter()
        public.prefill(count, wait=True)
        out[f"obfuscator_djn_table_{workers}workers_ms"] = round(1e3 * (time.perf_counter() - t) / count, 3)
        public.pool.discard()

    pk = paillier.load_public(sk.public_bytes(), workers=1)
    values = np.random.default_rng(1).normal(size=2000)
    pk.prefill(6000)
    out["encrypt_with_ready_pool_us"] = round(1e6 * _per_item(lambda: pk.encrypt(values), len(values)), 2)
    cts = pk.encrypt(values).cts
    a, b = cts[0], cts[1]
    out["mulmod_us"] = round(1e6 * _per_item(lambda: [a * b % n2 for _ in range(5000)], 5000), 3)
    exps = np.random.default_rng(2).integers(-(2**20), 2**20, size=len(cts)).tolist()
    out["scalar_mult_21bit_us"] = round(1e6 * _per_item(lambda: pm.pow_each(cts, exps, n2), len(cts), 1), 2)

    _y, xb, xp1, _xp2 = load_default_credit(rows, data_dir)
    enc = pk.encrypt(np.clip(np.random.default_rng(3).normal(size=rows), -4, 4))
    cont = np.rint(np.ldexp(xb[:, 4:5], pk.frac_bits)).astype(np.int64)
    cat = np.rint(np.ldexp(xp1[:, 0:1], pk.frac_bits)).astype(np.int64)
    out["rows"] = rows
    out["column_continuous_seconds"] = round(_per_item(lambda: pm.signed_column_products(enc.cts, cont, n2), 1, 1), 3)
    out["column_categorical_seconds"] = round(_per_item(lambda: pm.signed_column_products(enc.cts, cat, n2), 1, 1), 3)
    out["column_naive_projected_seconds"] = round(rows * out["scalar_mult_21bit_us"] / 1e6, 2)

    sample = cts[:200]
    out["decrypt_crt_us"] = round(1e6 * _per_item(lambda: sk._crt.decrypt(sample), len(sample)), 1)
    if workers > 1:
        out[f"decrypt_crt_{workers}threads_us"] = round(
            1e6 * _per_item(lambda: sk._crt.decrypt(sample, threads=workers), len(sample)), 1
        )
    phe_public = phe_paillier.PaillierPublicKey(int(n))
    phe_private = phe_paillier.PaillierPrivateKey(phe_public, int(sk._crt.p), int(sk._crt.q))
    ints = [int(c) for c in sample[:50]]
    out["decrypt_phe_us"] = round(1e6 * _per_item(lambda: [phe_private.raw_decrypt(c) for c in ints], len(ints)), 1)
    return out


def project(m: dict[str, Any], rows: int, guest_features: int = 13, host_features: int = 10) -> dict[str, Any]:
    """Single-core seconds for one epoch from the unit costs (continuous guest, categorical host)."""
    obf = 3 * rows * m[f"obfuscator_djn_table_w{paillier.DJN_WINDOW}_ms"] / 1e3
    enc = 3 * rows * m["encrypt_with_ready_pool_us"] / 1e6
    adds = 2 * rows * m["mulmod_us"] / 1e6
    grads = guest_features * m["column_continuous_seconds"] + host_features * m["column_categorical_seconds"]
    naive_grads = (guest_features + host_features) * m["column_naive_projected_seconds"]
    classic_obf = 3 * rows * m["obfuscator_classic_ms"] / 1e3
    return {
        "obfuscators_seconds": round(obf, 1),
        "encrypt_seconds": round(enc, 1),
        "homomorphic_adds_seconds": round(adds, 1),
        "gradients_seconds": round(grads, 1),
        "total_one_core_seconds": round(obf + enc + adds + grads, 1),
        "total_naive_one_core_seconds": round(classic_obf + enc + adds + naive_grads, 1),
    }


def epoch(workers: int, rows: int, data_dir: Path) -> dict[str, Any]:
    y, xb, xp1, xp2 = load_default_credit(rows, data_dir)
    rng = np.random.default_rng(4)
    wb, w1, w2 = (rng.normal(scale=0.1, size=k) for k in (xb.shape[1], xp1.shape[1], xp2.shape[1]))
    sk = paillier.keygen(workers=workers)
    public = sk.public_bytes()
    bank, p1, p2 = (paillier.load_public(public, workers=workers) for _ in range(3))
    timings: dict[str, float] = {}
    cpu0 = time.process_time()
    start = time.perf_counter()

    t = time.perf_counter()
    u1 = p1.serialize(p1.encrypt(xp1 @ w1))
    u2 = p2.serialize(p2.encrypt(xp2 @ w2))
    timings["providers_encrypt"] = time.perf_counter() - t

    t = time.perf_counter()
    s = bank.mul_plain(bank.add(bank.deserialize(u1), bank.deserialize(u2)), 0.25)
    d = bank.add(s, bank.encrypt(0.25 * (xb @ wb) + 0.5 - y))
    d_wire = bank.serialize(d)
    timings["bank_residual"] = time.perf_counter() - t

    d_true = 0.25 * (xb @ wb + xp1 @ w1 + xp2 @ w2) + 0.5 - y
    errors = []
    for name, party, x in (("provider1", p1, xp1), ("provider2", p2, xp2), ("bank", bank, xb)):
        t = time.perf_counter()
        payload, mask = party.masked_column_sums(party.deserialize(d_wire), x)
        timings[f"{name}_gradient"] = time.perf_counter() - t
        t = time.perf_counter()
        opened = sk.decrypt_column_sums(payload)
        timings[f"node_decrypt_{name}"] = time.perf_counter() - t
        grad = party.unmask_column_sums(opened, mask) / rows
        errors.append(float(np.max(np.abs(grad - x.T @ d_true / rows))))
    wall = time.perf_counter() - start
    worker_cpu = sum(p.pool.worker_cpu_seconds for p in (bank, p1, p2))
    return {
        "workers": workers,
        "seconds_wall": round(wall, 2),
        "cpu_seconds_main": round(time.process_time() - cpu0, 2),
        "cpu_seconds_pool_workers": round(worker_cpu, 2),
        "phases_seconds": {k: round(v, 2) for k, v in timings.items()},
        "max_abs_gradient_error": max(errors),
        "bytes": {"u_per_provider": len(u1), "d": len(d_wire), "masked_payload_bank": len(payload)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=paillier_pool.default_workers())
    parser.add_argument("--rows", type=int, default=21_000)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--skip-epoch", action="store_true")
    parser.add_argument("--epoch-workers", type=int, nargs="*", default=None)
    args = parser.parse_args(argv)
    result: dict[str, Any] = {"bench": "paillier_2048"}
    try:
        m = micro(args.workers, args.rows, args.data_dir)
        result["micro"] = m
        result["projected_epoch"] = project(m, args.rows)
        if not args.skip_epoch:
            for w in args.epoch_workers or sorted({1, args.workers}):
                result[f"epoch_workers{w}"] = epoch(w, args.rows, args.data_dir)
                paillier_pool.shutdown_executor()
    finally:
        paillier_pool.shutdown_executor()
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
