"""What every part of the generator shares: the array types, seeded streams, the day count."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]
U8 = npt.NDArray[np.uint8]

EPOCH = dt.date(1970, 1, 1)


def stream(seed: int, label: str) -> np.random.Generator:
    """An independent stream per (seed, label): files do not depend on order."""
    tag = int.from_bytes(hashlib.sha256(label.encode("utf-8")).digest()[:8], "big")
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(tag,)))


def sigmoid(x: F64) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def epoch_day(d: dt.date) -> int:
    return (d - EPOCH).days


def digits_fixed(values: I64, width: int) -> U8:
    """Zero-padded decimal digits of non-negative integers as ASCII, shape (n, width).

    One scalar division per digit position: numpy divides by a scalar with
    libdivide, several times faster than broadcasting against a power table.
    """
    out = np.empty((values.shape[0], width), dtype=np.uint8)
    rest = values.astype(np.int64, copy=True)
    for k in range(width - 1, -1, -1):
        quotient = rest // 10
        out[:, k] = rest - quotient * 10 + 48
        rest = quotient
    return out
