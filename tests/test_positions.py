"""The row-position codec: uint32 little-endian, refusing what it cannot carry."""

from __future__ import annotations

import numpy as np
import pytest

from xinrong.modeling.positions import MAX_POSITION, decode_positions, encode_positions


def test_round_trip_keeps_order_and_extremes() -> None:
    rows = np.array([7, 0, MAX_POSITION, 3, 3], dtype=np.int64)
    data = encode_positions(rows)
    assert len(data) == 4 * rows.size
    back = decode_positions(data)
    assert back.dtype == np.int64
    assert back.tolist() == rows.tolist()
    assert decode_positions(encode_positions([])).size == 0


def test_bytes_are_little_endian_uint32() -> None:
    assert encode_positions([1, 258]) == b"\x01\x00\x00\x00\x02\x01\x00\x00"
    assert decode_positions(b"\x00\x00\x00\x01").tolist() == [2**24]
    # Every width of NumPy integer encodes the same way.
    for dtype in (np.uint8, np.int32, np.uint32, np.int64):
        assert encode_positions(np.array([5, 9], dtype=dtype)) == encode_positions([5, 9])


@pytest.mark.parametrize(
    "bad",
    [[-1], [MAX_POSITION + 1], [0.5], [[1, 2]], np.array([True, False])],
)
def test_encode_refuses_what_uint32_cannot_hold(bad: object) -> None:
    with pytest.raises(ValueError, match="positions"):
        encode_positions(bad)  # type: ignore[arg-type]


def test_decode_checks_length_and_bounds() -> None:
    data = encode_positions([0, 4, 2])
    with pytest.raises(ValueError, match="whole number"):
        decode_positions(data[:-1])
    with pytest.raises(ValueError, match="out of range"):
        decode_positions(data, limit=4)
    assert decode_positions(data, limit=5).tolist() == [0, 4, 2]
    assert decode_positions(memoryview(b"xx" + data)[2:], limit=5).tolist() == [0, 4, 2]
    assert decode_positions(b"", limit=0).size == 0
