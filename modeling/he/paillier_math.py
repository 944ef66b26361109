"""Big-integer kernels of the Paillier backend (gmpy2), kept free of policy.

Everything here is textbook modular arithmetic on ``gmpy2.mpz`` values; the
security decisions (encoding, bounds, masking, which randomness goes where)
live in ``xinrong.modeling.he.paillier``. This module is also what the worker
processes import, so it stays small: gmpy2, numpy and the standard library.

Kernels and why they exist:

* ``FixedBaseTable``: DJN obfuscators are ``h_s^alpha`` for one fixed base
  ``h_s`` and a fresh ~|n|/2-bit ``alpha`` each time. A table of
  ``h_s^(d * 2^(w*i))`` turns every exponentiation into about |alpha|/w
  modular multiplications and no squarings (the "fixed-base windowing"
  method, Menezes, van Oorschot and Vanstone, Handbook of Applied Cryptography,
  §14.6.3, Algorithm 14.109). With w = 10 and a 1024-bit alpha that is 102
  multiplications instead of ~1230 for a generic ``powmod`` (w = 8: 127
  multiplications, a 16 MB table instead of 52 MB at 2048 bits).
* ``multiexp``: ``prod_r c_r^(e_r)`` for many bases with short exponents
  (X^T [[a]] column by column). The bucket method (Pippenger; see
  Bernstein et al., "Faster batch forgery identification", 2012, §4 for the
  form used here) needs about ceil(b/c) * (N + 2^(c+1)) multiplications for
  N bases with b-bit exponents instead of ~1.5 * b * N; when a column holds
  few distinct values (categorical or binned features) one bucket per
  distinct exponent is cheaper still.
* ``batch_invert``: Montgomery's trick, one inversion for a whole vector.
* ``crt_decrypt``: decryption with p and q separately (phe does the same;
  this version batches the exponentiations through ``gmpy2.powmod_base_list``,
  which releases the GIL, so threads can use both cores).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt

Int = Any  # gmpy2.mpz (gmpy2 ships no type stubs)
IntArray = npt.NDArray[np.int64]

mpz = gmpy2.mpz


# --------------------------------------------------------------------------
# Fixed-width packing: ciphertexts and obfuscators cross processes as bytes.


def pack_ints(values: Sequence[Int], width: int) -> bytes:
    """Big-endian, fixed width; raises OverflowError rather than truncating."""
    return b"".join(int(v).to_bytes(width, "big") for v in values)


def unpack_ints(data: bytes | memoryview, width: int) -> list[Int]:
    if width <= 0 or len(data) % width:
        raise ValueError("packed integers do not fill a whole number of fixed-width slots")
    view = memoryview(data)
    return [mpz(int.from_bytes(view[i : i + width], "big")) for i in range(0, len(view), width)]


# --------------------------------------------------------------------------
# Obfuscators.


def random_unit(n: Int) -> Int:
    """Uniform element of Z*_n from the OS CSPRNG (rejection sampling)."""
    while True:
        r = mpz(secrets.randbelow(int(n) - 1) + 1)
        if gmpy2.gcd(r, n) == 1:
            return r


def djn_base(n: Int, nsquare: Int) -> Int:
    """h_s = (-x^2 mod n)^n mod n^2 for a fresh random x (DJN 2010; IPCL's enableDJN).

    Any holder of the public key can compute this: it needs no factorization,
    so every sender draws its own and trusts nobody else's choice.
    """
    x = random_unit(n)
    h = (-(x * x)) % n
    return gmpy2.powmod(h, n, nsquare)


def classic_obfuscator(n: Int, nsquare: Int) -> Int:
    """r^n mod n^2 for uniform r in Z*_n: the original Paillier randomness."""
    return gmpy2.powmod(random_unit(n), n, nsquare)


class FixedBaseTable:
    """Precomputed powers of one base for fast exponentiation with fresh exponents."""

    def __init__(self, base: Int, modulus: Int, exponent_bits: int, window: int) -> None:
        if not 1 <= window <= 16:
            raise ValueError("window must be between 1 and 16 bits")
        self.modulus = modulus
        self.exponent_bits = exponent_bits
        self.window = window
        self._mask = (1 << window) - 1
        self._windows = -(-exponent_bits // window)
        rows: list[list[Int]] = []
        step = mpz(base) % modulus
        for _ in range(self._windows):
            row = [mpz(1), step]
            for _d in range(2, 1 << window):
                row.append(row[-1] * step % modulus)
            rows.append(row)
            step = gmpy2.powmod(step, 1 << window, modulus)
        self._rows = rows

    @property
    def entries(self) -> int:
        return self._windows * (1 << self.window)

    def pow(self, exponent: int) -> Int:
        """base^exponent for 0 <= exponent < 2^exponent_bits."""
        if exponent < 0 or exponent.bit_length() > self.exponent_bits:
            raise ValueError("exponent outside the table's range")
        modulus = self.modulus
        mask = self._mask
        window = self.window
        acc: Int = None
        for row in self._rows:
            digit = exponent & mask
            exponent >>= window
            if digit:
                acc = row[digit] if acc is None else acc * row[digit] % modulus
        return mpz(1) if acc is None else acc

    def random_powers(self, count: int) -> list[Int]:
        """count values base^alpha, each with a fresh uniform alpha of exponent_bits bits."""
        bits = self.exponent_bits
        return [self.pow(secrets.randbits(bits)) for _ in range(count)]


# --------------------------------------------------------------------------
# Multi-exponentiation.


def _window_cost(n: int, bits: int, c: int) -> int:
    windows = -(-bits // c)
    return windows * (n + (2 << c)) + bits


def _best_window(n: int, bits: int) -> int:
    return min(range(1, min(bits, 20) + 1), key=lambda c: _window_cost(n, bits, c))


def _multiexp_windowed(bases: list[Int], exps: list[int], bits: int, modulus: Int) -> Int:
    c = _best_window(len(bases), bits)
    mask = (1 << c) - 1
    windows = -(-bits // c)
    result: Int = None
    for w in range(windows - 1, -1, -1):
        if result is not None:
            result = gmpy2.powmod(result, 1 << c, modulus)
        shift = w * c
        buckets: list[Int] = [None] * (mask + 1)
        for base, e in zip(bases, exps):
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = base if cur is None else cur * base % modulus
        running: Int = None
        acc: Int = None
        for d in range(mask, 0, -1):
            bucket = buckets[d]
            if bucket is not None:
                running = bucket if running is None else running * bucket % modulus
            if running is not None:
                acc = running if acc is None else acc * running % modulus
        if acc is not None:
            result = acc if result is None else result * acc % modulus
    return mpz(1) if result is None else result


def _multiexp_distinct(bases: list[Int], exps: list[int], modulus: Int) -> Int:
    """One bucket per distinct exponent, then prod_i running_i^(e_i - e_{i+1})."""
    buckets: dict[int, Int] = {}
    for base, e in zip(bases, exps):
        cur = buckets.get(e)
        buckets[e] = base if cur is None else cur * base % modulus
    running: Int = None
    acc: Int = None
    keys = sorted(buckets, reverse=True)
    for i, e in enumerate(keys):
        bucket = buckets[e]
        running = bucket if running is None else running * bucket % modulus
        gap = e - (keys[i + 1] if i + 1 < len(keys) else 0)
        term = running if gap == 1 else gmpy2.powmod(running, gap, modulus)
        acc = term if acc is None else acc * term % modulus
    return mpz(1) if acc is None else acc


def multiexp(bases: Sequence[Int], exps: Sequence[int], modulus: Int) -> Int:
    """prod_r bases[r]^exps[r] mod modulus, for non-negative exponents."""
    if len(bases) != len(exps):
        raise ValueError("bases and exponents differ in length")
    pairs = [(b, int(e)) for b, e in zip(bases, exps) if e]
    if any(e < 0 for _, e in pairs):
        raise ValueError("multiexp takes non-negative exponents; split signs first")
    if not pairs:
        return mpz(1)
    nz_bases = [b for b, _ in pairs]
    nz_exps = [e for _, e in pairs]
    bits = max(nz_exps).bit_length()
    distinct = len(set(nz_exps))
    # Cost estimates in modular multiplications: distinct buckets pay one
    # multiplication per base plus a short powmod per distinct value.
    distinct_cost = len(nz_exps) + distinct * (2 + (3 * bits) // 2)
    if distinct_cost < _window_cost(len(nz_exps), bits, _best_window(len(nz_exps), bits)):
        return _multiexp_distinct(nz_bases, nz_exps, modulus)
    return _multiexp_windowed(nz_bases, nz_exps, bits, modulus)


def signed_column_products(bases: Sequence[Int], exps: IntArray, modulus: Int) -> list[Int]:
    """For each column j: prod_r bases[r]^exps[r, j] mod modulus, exponents of either sign.

    Positive and negative exponents go into separate multi-exponentiations;
    the negative part is inverted once per column, so no long exponent
    (n - |e|) is ever used.
    """
    if exps.ndim != 2 or exps.shape[0] != len(bases):
        raise ValueError("exponent matrix must have one row per base")
    base_list = list(bases)
    out: list[Int] = []
    for j in range(exps.shape[1]):
        column = exps[:, j].tolist()
        pos = [e if e > 0 else 0 for e in column]
        neg = [-e if e < 0 else 0 for e in column]
        product = multiexp(base_list, pos, modulus)
        if any(neg):
            product = product * gmpy2.invert(multiexp(base_list, neg, modulus), modulus) % modulus
        out.append(product)
    return out


def batch_invert(values: Sequence[Int], modulus: Int) -> list[Int]:
    """Inverses of all values with a single modular inversion (Montgomery's trick)."""
    if not values:
        return []
    prefix: list[Int] = []
    acc = mpz(1)
    for v in values:
        acc = acc * v % modulus
        prefix.append(acc)
    inv = gmpy2.invert(acc, modulus)  # raises ZeroDivisionError if any value is not a unit
    out: list[Int] = [None] * len(values)
    for i in range(len(values) - 1, 0, -1):
        out[i] = inv * prefix[i - 1] % modulus
        inv = inv * values[i] % modulus
    out[0] = inv
    return out


def pow_each(bases: Sequence[Int], exps: Sequence[int], modulus: Int) -> list[Int]:
    """bases[i]^exps[i] for exponents of either sign (negatives batch-inverted)."""
    out: list[Int] = []
    negative: list[int] = []
    for i, (b, e) in enumerate(zip(bases, exps)):
        if e < 0:
            negative.append(i)
            out.append(gmpy2.powmod(b, -e, modulus))
        elif e == 0:
            out.append(mpz(1))
        else:
            out.append(b if e == 1 else gmpy2.powmod(b, e, modulus))
    if negative:
        inverses = batch_invert([out[i] for i in negative], modulus)
        for i, inv in zip(negative, inverses):
            out[i] = inv
    return out


def pow_all(bases: Sequence[Int], exponent: int, modulus: Int, threads: int = 1) -> list[Int]:
    """bases[i]^exponent (exponent >= 0) through gmpy2's GIL-free list powmod."""
    if exponent < 0:
        raise ValueError("pow_all takes a non-negative exponent")
    if exponent == 1:
        return list(bases)
    if threads <= 1 or len(bases) < 256:
        return list(gmpy2.powmod_base_list(list(bases), exponent, modulus))
    chunks = _split(list(bases), threads)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        parts = list(pool.map(lambda part: gmpy2.powmod_base_list(part, exponent, modulus), chunks))
    return [v for part in parts for v in part]


def _split(items: list[Int], parts: int) -> list[list[Int]]:
    size = -(-len(items) // parts)
    return [items[i : i + size] for i in range(0, len(items), size)]


# --------------------------------------------------------------------------
# Decryption with the factorization.


class CrtDecryptor:
    """Paillier decryption (g = n + 1) mod p^2 and q^2, recombined with CRT."""

    def __init__(self, p: Int, q: Int) -> None:
        if p == q:
            raise ValueError("p and q must differ")
        self.p, self.q = mpz(p), mpz(q)
        self.n = self.p * self.q
        self.psquare, self.qsquare = self.p * self.p, self.q * self.q
        g = self.n + 1
        self.hp = self._h(g, self.p, self.psquare)
        self.hq = self._h(g, self.q, self.qsquare)
        self.q_inv_p = gmpy2.invert(self.q, self.p)

    @staticmethod
    def _h(g: Int, prime: Int, prime_square: Int) -> Int:
        lx = (gmpy2.powmod(g, prime - 1, prime_square) - 1) // prime
        return gmpy2.invert(lx, prime)

    def decrypt(self, ciphertexts: Sequence[Int], threads: int = 1) -> list[Int]:
        """Plaintexts in [0, n) for ciphertexts in Z*_{n^2}."""
        cs = list(ciphertexts)
        mp = pow_all([c % self.psquare for c in cs], int(self.p - 1), self.psquare, threads)
        mq = pow_all([c % self.qsquare for c in cs], int(self.q - 1), self.qsquare, threads)
        p, q, hp, hq, q_inv_p = self.p, self.q, self.hp, self.hq, self.q_inv_p
        out: list[Int] = []
        for xp, xq in zip(mp, mq):
            a = (xp - 1) // p * hp % p
            b = (xq - 1) // q * hq % q
            out.append(b + ((a - b) * q_inv_p % p) * q)
        return out


# --------------------------------------------------------------------------
# Worker-process tasks (module-level so a spawned process can import them).

# A worker serves every party (and key) of its process: keep a few tables.
_MAX_TABLES = 4
_TABLES: dict[tuple[bytes, int, int], FixedBaseTable] = {}


def task_obfuscators(
    mode: str, n_bytes: bytes, base_bytes: bytes, exponent_bits: int, window: int, count: int
) -> tuple[bytes, float]:
    """Generate count fresh obfuscators; returns them packed and the CPU seconds spent.

    The DJN table is cached per (base, window) in the worker, so the one-off
    precomputation is paid once per worker process, not per task.
    """
    started = time.process_time()
    n = mpz(int.from_bytes(n_bytes, "big"))
    nsquare = n * n
    width = 2 * len(n_bytes)
    if mode == "djn":
        key = (base_bytes, exponent_bits, window)
        table = _TABLES.pop(key, None)
        if table is None:
            table = FixedBaseTable(mpz(int.from_bytes(base_bytes, "big")), nsquare, exponent_bits, window)
        _TABLES[key] = table  # most recently used last
        while len(_TABLES) > _MAX_TABLES:
            del _TABLES[next(iter(_TABLES))]
        values = table.random_powers(count)
    elif mode == "classic":
        values = [classic_obfuscator(n, nsquare) for _ in range(count)]
    else:
        raise ValueError(f"unknown obfuscation mode {mode!r}")
    return pack_ints(values, width), time.process_time() - started


def task_column_products(n_bytes: bytes, ciphertexts: bytes, exps: bytes, rows: int, cols: int) -> tuple[bytes, float]:
    """signed_column_products on a row chunk; exps is a C-order int64 matrix."""
    started = time.process_time()
    n = mpz(int.from_bytes(n_bytes, "big"))
    nsquare = n * n
    width = 2 * len(n_bytes)
    bases = unpack_ints(ciphertexts, width)
    matrix = np.frombuffer(exps, dtype=np.int64).reshape(rows, cols)
    products = signed_column_products(bases, matrix, nsquare)
    return pack_ints(products, width), time.process_time() - started


def task_pow_each(n_bytes: bytes, ciphertexts: bytes, exps: bytes) -> tuple[bytes, float]:
    """pow_each on a chunk; exps is an int64 vector."""
    started = time.process_time()
    n = mpz(int.from_bytes(n_bytes, "big"))
    nsquare = n * n
    width = 2 * len(n_bytes)
    bases = unpack_ints(ciphertexts, width)
    values = pow_each(bases, np.frombuffer(exps, dtype=np.int64).tolist(), nsquare)
    return pack_ints(values, width), time.process_time() - started


def ceil_log2(x: int) -> int:
    """Smallest b with 2^b >= x (0 for x <= 1)."""
    return 0 if x <= 1 else (x - 1).bit_length()
