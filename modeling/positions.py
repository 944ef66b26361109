"""Row positions on the wire: uint32 little-endian, four bytes each, one codec for every message.

Positions index rows of a job's aligned order (a PSI selection, a scoring
request, the rows of a training epoch). Little-endian like every other
numeric array the protocol sends (float64 gradients, sums), so the bytes are
NumPy's native layout on the machines we run on and decoding is one
``frombuffer``. The codec refuses rather than wraps: NumPy would silently
turn -1 into 4294967295 or truncate 2**32 to 0 when casting to uint32, and
a receiver must not index rows beyond the ones it holds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

POSITION_BYTES = 4
MAX_POSITION = 2**32 - 1


def encode_positions(positions: npt.ArrayLike) -> bytes:
    """Non-negative integers below 2**32, in order, as uint32 little-endian bytes."""
    arr = np.asarray(positions)
    if arr.ndim != 1:
        raise ValueError("positions must be a 1-D array")
    if arr.size == 0:
        return b""
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError("positions must be integers")
    if int(arr.min()) < 0 or int(arr.max()) > MAX_POSITION:
        raise ValueError("positions must lie in [0, 2**32)")
    return arr.astype("<u4").tobytes()


def decode_positions(data: bytes | bytearray | memoryview, limit: int | None = None) -> IntArray:
    """The positions in ``data`` as int64, in order; each below ``limit`` when given.

    Refuses (ValueError) a length that is not a whole number of positions,
    and any position >= ``limit`` (the number of rows the receiver holds).
    Repeats and emptiness are the caller's to judge: some messages allow them.
    """
    size = memoryview(data).nbytes
    if size % POSITION_BYTES:
        raise ValueError(f"positions: {size} bytes is not a whole number of uint32 values")
    out: IntArray = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if limit is not None and out.size and int(out.max()) >= limit:
        raise ValueError(f"positions out of range: a position is >= {limit}")
    return out
