"""Searching bytes for float64 values at any alignment: the privacy tests' leak scan.

One implementation for every test that asks "does any of these values
appear in what the node saw or stored?".
"""

from __future__ import annotations

import numpy as np


def searchable(values: np.ndarray) -> np.ndarray:
    """The 8-byte patterns worth searching for, unique and sorted: doubles
    with at least three non-zero bytes.

    Shorter patterns (0, +-1, small integers, the +-3.0 clip bound, small
    dyadic fractions) also occur in any binary framing: a big-endian length 8
    followed by the byte 0xc0 reads as -3.0, which once failed a scan on a
    clipped feature. A leaked column still shows through its other values;
    the tests that scan also plant real values and check they are found.
    """
    v = np.asarray(values, dtype="<f8").reshape(-1)
    v = v[np.isfinite(v)]
    nonzero_bytes = np.count_nonzero(v.view(np.uint8).reshape(-1, 8), axis=1)
    out: np.ndarray = np.unique(v[nonzero_bytes >= 3].view("<u8"))
    return out


def found(wanted: np.ndarray, blobs: list[bytes]) -> int:
    """How many of the uint64 patterns (see ``searchable``) occur in the blobs as 8 bytes at any alignment."""
    wanted = np.unique(wanted)
    if wanted.size == 0:
        return 0
    hits = 0
    for blob in blobs:
        arr = np.frombuffer(blob, dtype=np.uint8)
        for off in range(8):
            usable = (arr.size - off) // 8 * 8
            if usable <= 0:
                continue
            windows = arr[off : off + usable].view("<u8")
            pos = np.clip(np.searchsorted(wanted, windows), 0, wanted.size - 1)
            hits += int(np.count_nonzero(wanted[pos] == windows))
    return hits
