"""Benchmark: timings and sizes of the CKKS operations at the default parameters.

    python -m xinrong.modeling.he.ckks   (or python -m xinrong.modeling.he.ckks.bench)

Prints one JSON line; no data leaves the process.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from xinrong.modeling.he.ckks.keypair import keygen, load_public


def benchmark(sizes: Sequence[int] = (8192, 21000), columns: int = 12, repeats: int = 3) -> dict[str, Any]:
    """Timings (median seconds) and sizes at the default parameters; no data leaves the process."""

    def median(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    rng = np.random.default_rng(7)
    t0 = time.perf_counter()
    secret = keygen()
    out: dict[str, Any] = {"keygen_s": time.perf_counter() - t0, "max_degree": secret.max_degree}
    t0 = time.perf_counter()
    published = secret.public_bytes()
    out["public_bytes_s"] = time.perf_counter() - t0
    out["public_context_bytes"] = len(published)
    out["public_context_no_relin_bytes"] = len(secret.public_bytes(with_relin_keys=False))
    t0 = time.perf_counter()
    public = load_public(published)
    out["load_public_s"] = time.perf_counter() - t0
    # Degree-7 least-squares sigmoid fit on [-10, 10], in normalized units t = z / 10.
    grid = np.linspace(-1.0, 1.0, 2001)
    coeffs = [float(c) for c in np.polynomial.polynomial.polyfit(grid, 1.0 / (1.0 + np.exp(-10.0 * grid)), 7)]
    for n in sizes:
        z = rng.uniform(-1, 1, n)
        xcols = rng.uniform(-3, 3, (n, columns))
        enc = public.encrypt(z)
        residual = public.polyval(enc, coeffs)
        payload, mask = public.masked_column_sums(residual, xcols)
        row = {
            "encrypt_s": median(lambda: public.encrypt(z)),
            "rerandomize_s": median(lambda: public.rerandomize(residual)),
            "polyval7_s": median(lambda: public.polyval(public.add_plain(enc, 0.0), coeffs)),
            "mul_plain_s": median(lambda: public.mul_plain(residual, z)),
            "decrypt_s": median(lambda: secret.decrypt(enc)),
            "serialize_fresh_s": median(lambda: public.serialize(enc)),
            "fresh_ciphertext_bytes": len(public.serialize(enc)),
            "residual_ciphertext_bytes": len(public.serialize(residual)),
            f"masked_column_sums_{columns}_s": median(lambda: public.masked_column_sums(residual, xcols)),
            f"decrypt_column_sums_{columns}_s": median(lambda: secret.decrypt_column_sums(payload)),
            f"masked_payload_{columns}_bytes": len(payload),
        }
        truth = xcols.T @ np.polynomial.polynomial.polyval(z, coeffs)
        got = public.unmask_column_sums(secret.decrypt_column_sums(payload), mask)
        row["column_sum_max_abs_err"] = float(np.max(np.abs(got - truth)))
        row["column_sum_max_abs"] = float(np.max(np.abs(truth)))
        out[str(n)] = row
    return out


if __name__ == "__main__":  # pragma: no cover - manual benchmark
    print(json.dumps(benchmark()))
