"""The reference backend: the HE interface with no encryption at all.

``plain`` exists so the protocol can be tested and tuned without paying for
homomorphic encryption: every "ciphertext" is a float64 vector in the clear,
so it is only ever safe where all parties are the same process. It keeps the
interface's *shape* faithfully, so protocol code that runs on it runs on the
real backends unchanged:

* ciphertexts are bound to a key id and refuse to deserialize under another;
* ``max_degree`` is a parameter, so trials can mimic CKKS (several) or
  Paillier (1) and exercise the protocol's degree-dependent paths;
* ``masked_column_sums`` / ``masked_total`` add fresh masks from the OS
  CSPRNG, so the node-side decrypt path and the unmasking are the real ones
  and the privacy tests about *masking* are meaningful. The masks are uniform
  on ``[-MASK_BOUND, MASK_BOUND)`` which hides values that are orders of
  magnitude smaller, while float64 unmasking keeps ~1e-10 absolute accuracy.

Never select this backend where confidentiality matters: it provides none.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np

from xinrong.modeling.he.base import FloatArray, pack_blobs, unpack_blobs

SCHEME = "plain"
_CT_MAGIC = b"XRPLNCT1"
_PUB_MAGIC = b"XRPLNPK1"
_SUMS_MAGIC = b"XRPLNMS1"
_TOTAL_MAGIC = b"XRPLNMT1"
_KEY_ID_BYTES = 16
MASK_BOUND = float(2**20)
DEFAULT_MAX_DEGREE = 9


class PlainVector:
    """A "ciphertext" of the plain backend: a private float64 copy."""

    __slots__ = ("values",)

    def __init__(self, values: FloatArray) -> None:
        arr = np.array(values, dtype=np.float64, copy=True).reshape(-1)
        arr.setflags(write=False)
        self.values = arr

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __repr__(self) -> str:  # never print values
        return f"PlainVector(len={len(self)})"


def _uniform_masks(count: int) -> FloatArray:
    """Masks from the OS CSPRNG, uniform on [-MASK_BOUND, MASK_BOUND)."""
    raw = np.frombuffer(os.urandom(8 * count), dtype="<u8")
    unit = (raw >> np.uint64(11)).astype(np.float64) / float(2**53)
    masks: FloatArray = (unit * 2.0 - 1.0) * MASK_BOUND
    return masks


def _as_vector(values: FloatArray | float, length: int) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(length, float(arr))
    arr = arr.reshape(-1)
    if arr.shape[0] != length:
        raise ValueError(f"plaintext has length {arr.shape[0]}, ciphertext has {length}")
    return arr


def _check_finite(arr: FloatArray, what: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinity")


class PlainPublic:
    """Public side of the plain backend."""

    scheme = SCHEME

    def __init__(self, key_id: bytes, max_degree: int = DEFAULT_MAX_DEGREE) -> None:
        if len(key_id) != _KEY_ID_BYTES:
            raise ValueError("plain key id must be 16 bytes")
        if max_degree < 1:
            raise ValueError("max_degree must be >= 1")
        self._key_id = key_id
        self.max_degree = int(max_degree)

    def key_id(self) -> str:
        return self._key_id.hex()

    def _vec(self, a: object) -> PlainVector:
        if not isinstance(a, PlainVector):
            raise TypeError(f"expected a plain ciphertext, got {type(a).__name__}")
        return a

    def encrypt(self, values: FloatArray) -> PlainVector:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        _check_finite(arr, "plaintext")
        return PlainVector(arr)

    def length(self, a: PlainVector) -> int:
        return len(self._vec(a))

    def add(self, a: PlainVector, b: PlainVector) -> PlainVector:
        va, vb = self._vec(a), self._vec(b)
        if len(va) != len(vb):
            raise ValueError(f"length mismatch: {len(va)} vs {len(vb)}")
        return PlainVector(va.values + vb.values)

    def add_plain(self, a: PlainVector, values: FloatArray | float) -> PlainVector:
        va = self._vec(a)
        return PlainVector(va.values + _as_vector(values, len(va)))

    def mul_plain(self, a: PlainVector, values: FloatArray | float) -> PlainVector:
        va = self._vec(a)
        return PlainVector(va.values * _as_vector(values, len(va)))

    def polyval(self, a: PlainVector, coeffs: Sequence[float], *, row_weights: FloatArray | None = None) -> PlainVector:
        va = self._vec(a)
        if not coeffs:
            raise ValueError("polyval needs at least one coefficient")
        if len(coeffs) - 1 > self.max_degree:
            raise ValueError(f"degree {len(coeffs) - 1} exceeds this key's max_degree {self.max_degree}")
        acc = np.zeros(len(va))
        for c in reversed([float(c) for c in coeffs]):  # Horner
            acc = acc * va.values + c
        if row_weights is not None:
            weights = _as_vector(row_weights, len(va))
            _check_finite(weights, "row weights")
            acc = acc * weights
        return PlainVector(acc)

    def rerandomize(self, a: PlainVector) -> PlainVector:
        # Nothing to randomize in the clear; a fresh object keeps call sites honest.
        return PlainVector(self._vec(a).values)

    def serialize(self, a: PlainVector) -> bytes:
        va = self._vec(a)
        return _CT_MAGIC + self._key_id + struct.pack(">I", len(va)) + va.values.astype("<f8").tobytes()

    def deserialize(self, data: bytes) -> PlainVector:
        head = len(_CT_MAGIC) + _KEY_ID_BYTES + 4
        if len(data) < head or data[: len(_CT_MAGIC)] != _CT_MAGIC:
            raise ValueError("not a plain ciphertext")
        if data[len(_CT_MAGIC) : len(_CT_MAGIC) + _KEY_ID_BYTES] != self._key_id:
            raise ValueError("ciphertext was made under another key")
        (count,) = struct.unpack_from(">I", data, head - 4)
        if len(data) != head + 8 * count:
            raise ValueError("truncated plain ciphertext")
        return PlainVector(np.frombuffer(data, dtype="<f8", offset=head, count=count))

    def _payload(self, magic: bytes, values: FloatArray) -> bytes:
        return pack_blobs([magic + self._key_id, np.asarray(values, dtype="<f8").tobytes()])

    def _open_payload(self, magic: bytes, payload: bytes) -> FloatArray:
        blobs = unpack_blobs(payload)
        if len(blobs) != 2 or blobs[0] != magic + self._key_id:
            raise ValueError("payload is not a masked payload for this key")
        if len(blobs[1]) % 8:
            raise ValueError("truncated masked payload")
        return np.frombuffer(blobs[1], dtype="<f8").copy()

    def masked_column_sums(self, a: PlainVector, x: FloatArray) -> tuple[bytes, FloatArray]:
        va = self._vec(a)
        xm = np.asarray(x, dtype=np.float64)
        if xm.ndim != 2 or xm.shape[0] != len(va):
            raise ValueError(f"x must have shape ({len(va)}, k), got {xm.shape}")
        _check_finite(xm, "x")
        mask = _uniform_masks(xm.shape[1])
        return self._payload(_SUMS_MAGIC, xm.T @ va.values + mask), mask

    def unmask_column_sums(self, sums: FloatArray, mask: FloatArray) -> FloatArray:
        s = np.asarray(sums, dtype=np.float64).reshape(-1)
        if s.shape != np.shape(mask):
            raise ValueError("masked sums and mask differ in length")
        out: FloatArray = s - mask
        return out

    def masked_total(self, a: PlainVector) -> tuple[bytes, float]:
        va = self._vec(a)
        mask = float(_uniform_masks(1)[0])
        return self._payload(_TOTAL_MAGIC, np.array([float(va.values.sum()) + mask])), mask

    def unmask_total(self, total: float, mask: float) -> float:
        return float(total) - float(mask)


class PlainSecret(PlainPublic):
    """The key owner's side; "decryption" is a copy."""

    def public_bytes(self, *, with_relin_keys: bool = True) -> bytes:
        """The key id and max_degree; there are no relinearization keys, so both variants are equal."""
        return _PUB_MAGIC + self._key_id + struct.pack(">I", self.max_degree)

    def decrypt(self, a: PlainVector) -> FloatArray:
        return np.array(self._vec(a).values, dtype=np.float64)

    def decrypt_column_sums(self, payload: bytes) -> FloatArray:
        return self._open_payload(_SUMS_MAGIC, payload)

    def decrypt_total(self, payload: bytes) -> float:
        values = self._open_payload(_TOTAL_MAGIC, payload)
        if values.shape != (1,):
            raise ValueError("masked total payload must hold one value")
        return float(values[0])


def keygen(max_degree: int = DEFAULT_MAX_DEGREE) -> PlainSecret:
    """A fresh plain "key": a random id that binds ciphertexts to one job."""
    return PlainSecret(os.urandom(_KEY_ID_BYTES), max_degree=max_degree)


def load_public(data: bytes) -> PlainPublic:
    if len(data) != len(_PUB_MAGIC) + _KEY_ID_BYTES + 4 or data[: len(_PUB_MAGIC)] != _PUB_MAGIC:
        raise ValueError("not a plain public key")
    key_id = data[len(_PUB_MAGIC) : len(_PUB_MAGIC) + _KEY_ID_BYTES]
    (max_degree,) = struct.unpack_from(">I", data, len(_PUB_MAGIC) + _KEY_ID_BYTES)
    return PlainPublic(key_id, max_degree=max_degree)
