"""The one homomorphic-encryption interface the protocol is written against.

Three implementations: ``plain`` (reference and tests: no encryption at all),
``ckks`` (Microsoft SEAL as shipped with TenSEAL, batched, fast) and
``paillier`` (phe, exact). The protocol code never branches on the scheme
except through ``max_degree`` (the highest polynomial degree the bank may
evaluate on a ciphertext).

Roles: the *key owner* holds an ``HESecret`` (the node during training, the
bank for scoring); everyone else holds an ``HEPublic`` loaded from
``HESecret.public_bytes()``. Rules every implementation keeps:

* ``rerandomize`` before a ciphertext leaves its holder, so equal plaintexts
  never give equal ciphertexts and the receiver cannot strip its own
  contribution (Paillier: fresh obfuscator; CKKS: add a fresh Enc(0)). A
  vector straight out of ``encrypt`` already carries fresh randomness that
  nobody has seen: both real backends hand it over on its first
  ``rerandomize`` instead of paying for more, and mark it used (again on
  ``serialize``), so two ciphertexts that leave a party never share
  randomness.
* The key owner decrypts for *another* party only through
  ``decrypt_column_sums`` / ``decrypt_total``: inputs are freshly masked by
  their sender, and the key owner releases only sums. CKKS results released
  this way are rounded and noise-flooded (SEAL has no IND-CPA-D protection).
* ``decrypt`` is for the key owner's own use (the bank reading its scores).

Ciphertext vectors are opaque objects of the backend (``EncVector``); they
cross process boundaries only as ``serialize`` bytes, never pickled.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
EncVector = Any  # backend-specific ciphertext vector
Mask = Any  # backend-specific mask state, kept by the party that masked

SCHEMES = ("plain", "ckks", "paillier")


@runtime_checkable
class HEPublic(Protocol):
    """What any party can do with a public key."""

    scheme: str
    # Highest degree ``polyval`` accepts (CKKS: bounded by the modulus chain;
    # Paillier and plain-linear: 1).
    max_degree: int

    def key_id(self) -> str:
        """Stable id of the public key (hex), to bind ciphertexts to a job."""
        ...

    def encrypt(self, values: FloatArray) -> EncVector: ...

    def length(self, a: EncVector) -> int: ...

    def add(self, a: EncVector, b: EncVector) -> EncVector: ...

    def add_plain(self, a: EncVector, values: FloatArray | float) -> EncVector: ...

    def mul_plain(self, a: EncVector, values: FloatArray | float) -> EncVector:
        """Elementwise product with a plaintext vector (or a scalar)."""
        ...

    def polyval(self, a: EncVector, coeffs: Sequence[float], *, row_weights: FloatArray | None = None) -> EncVector:
        """row_weights * sum_k coeffs[k] * a**k, elementwise; len(coeffs) - 1 <= max_degree.

        ``row_weights`` (default: all ones) is a plaintext per-element factor
        applied inside the evaluation (CKKS: on the coefficients, so it costs
        no level of the modulus chain, unlike a separate ``mul_plain``).
        """
        ...

    def rerandomize(self, a: EncVector) -> EncVector:
        """Fresh randomness; call before a ciphertext leaves its holder."""
        ...

    def serialize(self, a: EncVector) -> bytes: ...

    def deserialize(self, data: bytes) -> EncVector: ...

    def masked_column_sums(self, a: EncVector, x: FloatArray) -> tuple[bytes, Mask]:
        """Prepare X^T a (x has shape (len(a), k)) for decryption by the key owner.

        Returns the payload to send and the mask to keep. The payload hides
        every per-row product and every column sum behind fresh random masks
        drawn from a CSPRNG; only ``unmask_column_sums`` recovers X^T a.
        """
        ...

    def unmask_column_sums(self, sums: FloatArray, mask: Mask) -> FloatArray: ...

    def masked_total(self, a: EncVector) -> tuple[bytes, Mask]:
        """Prepare sum(a) for decryption by the key owner, hidden by a random offset."""
        ...

    def unmask_total(self, total: float, mask: Mask) -> float: ...


@runtime_checkable
class HESecret(HEPublic, Protocol):
    """The key owner's side."""

    def public_bytes(self, *, with_relin_keys: bool = True) -> bytes:
        """Serialized public key / public context (no secret material).

        ``with_relin_keys=False`` asks for the smaller variant for parties
        that never multiply two ciphertexts (providers in training, everyone
        in scoring): CKKS drops its relinearization keys; backends that have
        no such keys (Paillier, plain) return the same bytes either way. Both
        variants load to a public side with the same ``key_id``.
        """
        ...

    def decrypt(self, a: EncVector) -> FloatArray:
        """For the key owner's own use only (never released to another party)."""
        ...

    def decrypt_column_sums(self, payload: bytes) -> FloatArray:
        """Decrypt a masked_column_sums payload; returns k masked sums (rounded, flooded)."""
        ...

    def decrypt_total(self, payload: bytes) -> float:
        """Decrypt a masked_total payload; returns the masked total (rounded, flooded)."""
        ...


def _module(scheme: str) -> Any:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown HE scheme {scheme!r}; expected one of {SCHEMES}")
    return importlib.import_module(f"xinrong.modeling.he.{scheme}")


def provider_public_bytes(secret: HESecret) -> bytes:
    """The public key providers need: without relinearization keys.

    Providers never multiply two ciphertexts, so a CKKS public key without
    relinearization keys (1.5 MB instead of 10.6 MB) is all they get; the
    other backends have no such keys and return their one public key.
    """
    return secret.public_bytes(with_relin_keys=False)


def keygen(scheme: str, **params: Any) -> HESecret:
    """A fresh key pair of the scheme; params are the backend's own (documented there)."""
    secret: HESecret = _module(scheme).keygen(**params)
    return secret


def load_public(scheme: str, data: bytes) -> HEPublic:
    public: HEPublic = _module(scheme).load_public(data)
    return public


def pack_blobs(blobs: Sequence[bytes]) -> bytes:
    """Length-prefixed concatenation: the framing every backend payload uses."""
    out = [struct.pack(">I", len(blobs))]
    for blob in blobs:
        out.append(struct.pack(">Q", len(blob)))
        out.append(blob)
    return b"".join(out)


def unpack_blobs(data: bytes) -> list[bytes]:
    if len(data) < 4:
        raise ValueError("truncated blob list")
    (count,) = struct.unpack_from(">I", data, 0)
    offset = 4
    blobs = []
    for _ in range(count):
        if offset + 8 > len(data):
            raise ValueError("truncated blob list")
        (size,) = struct.unpack_from(">Q", data, offset)
        offset += 8
        if offset + size > len(data):
            raise ValueError("truncated blob list")
        blobs.append(data[offset : offset + size])
        offset += size
    if offset != len(data):
        raise ValueError("trailing bytes after blob list")
    return blobs
