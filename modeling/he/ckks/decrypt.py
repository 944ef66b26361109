"""Decrypt-and-flood: the key owner, who releases only noise-flooded, rounded sums (see docs/CKKS.md)."""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
import tenseal.sealapi as seal

from xinrong.modeling.he.base import FloatArray, pack_blobs, unpack_blobs
from xinrong.modeling.he.ckks.evaluator import CKKSVec, ComplexArray, Ct, layout
from xinrong.modeling.he.ckks.masking import CKKSPublic, exact_sum
from xinrong.modeling.he.ckks.params import CKKSParams, SealContext
from xinrong.modeling.he.ckks.serialization import (
    COL_FIELDS,
    KIND_COLUMN_SUMS,
    KIND_TOTAL,
    MAX_COLUMNS,
    PUBLIC_MAGIC,
    SECRET_MAGIC,
    TOTAL_FIELDS,
    seal_save,
)

# Relative size of the data-dependent flooding term (docs/CKKS.md, "Releasing decryptions").
_FLOOD_REL_LOG2 = -49

_SYSTEM_RANDOM = secrets.SystemRandom()


def _gaussian(sigma: float) -> float:
    return _SYSTEM_RANDOM.gauss(0.0, sigma)


class CKKSSecret(CKKSPublic):
    """The key owner: decrypts for itself, and releases only flooded, rounded sums."""

    def __init__(
        self,
        params: CKKSParams,
        context: SealContext,
        secret_key: Any,
        public_key: Any,
        public_key_blob: bytes,
        relin_keys: Any = None,
        relin_keys_blob: bytes | None = None,
    ) -> None:
        super().__init__(params, context, public_key, public_key_blob, relin_keys)
        self._secret_key = secret_key
        self._decryptor = seal.Decryptor(context, secret_key)
        self._relin_blob = relin_keys_blob
        self._public_cache: dict[bool, bytes] = {}
        # The key owner can always make relinearization keys (on first use).
        self.can_multiply = True
        self.max_degree = params.max_degree

    def _relin_keys(self) -> Any:
        if self._relin is None:
            keys = seal.RelinKeys()
            seal.KeyGenerator(self._context, self._secret_key).create_relin_keys(keys)
            self._relin = keys
        return self._relin

    def public_bytes(self, *, with_relin_keys: bool = True) -> bytes:
        """The public key, and the relinearization keys unless ``with_relin_keys=False``.

        ``with_relin_keys=False`` is for parties that never multiply two
        ciphertexts (providers in training, everyone in scoring): 1.5 MB
        instead of 10.6 MB at the defaults; both variants have the same
        ``key_id``. No secret material is ever part of either.
        """
        blob = self._public_cache.get(with_relin_keys)
        if blob is None:
            relin = b""
            if with_relin_keys:
                if self._relin_blob is None:
                    self._relin_blob = seal_save(self._relin_keys())
                relin = self._relin_blob
            blob = PUBLIC_MAGIC + pack_blobs([self._params.to_json(), self._pk_blob, relin])
            self._public_cache[with_relin_keys] = blob
        return blob

    def secret_bytes(self) -> bytes:
        """The key pair, for the owner's own disk only (write it 0600; never send it)."""
        if self._relin_blob is None:
            self._relin_blob = seal_save(self._relin_keys())
        secret_blob = seal_save(self._secret_key)
        return SECRET_MAGIC + pack_blobs([self._params.to_json(), self._pk_blob, secret_blob, self._relin_blob])

    def _slots_of(self, part: Ct) -> ComplexArray:
        """Every slot of one ciphertext (complex: the column sums use both parts)."""
        pt = seal.Plaintext()
        self._decryptor.decrypt(part, pt)
        return np.asarray(self._encoder.decode_complex(pt), dtype=np.complex128)

    def _real_slots_of(self, part: Ct) -> FloatArray:
        pt = seal.Plaintext()
        self._decryptor.decrypt(part, pt)
        return np.asarray(self._encoder.decode_double(pt), dtype=np.float64)

    def decrypt(self, a: CKKSVec) -> FloatArray:
        self._check(a)
        values = np.concatenate([self._real_slots_of(p) for p in a.parts])
        out: FloatArray = values[: a.length]
        return out

    def _release(self, value: float, block: FloatArray) -> float:
        """Flood and round one released value (docs/CKKS.md, "Releasing decryptions")."""
        sigma, grid = flood_parameters(self._params, block)
        return round((value + _gaussian(sigma)) / grid) * grid

    def decrypt_column_sums(self, payload: bytes) -> FloatArray:
        offset = self._parse_header(payload, KIND_COLUMN_SUMS)
        if len(payload) < offset + COL_FIELDS.size:
            raise ValueError("truncated CKKS payload")
        k, block_len, per_ct, count = COL_FIELDS.unpack_from(payload, offset)
        if not (1 <= k <= MAX_COLUMNS and block_len >= 1 and per_ct >= 2 and per_ct % 2 == 0):
            raise ValueError("malformed column-sum header")
        if block_len * (per_ct // 2) > self.slots or count != -(-k // per_ct):
            raise ValueError("column-sum layout does not fit the ciphertexts")
        blobs = unpack_blobs(payload[offset + COL_FIELDS.size :])
        if len(blobs) != count:
            raise ValueError("CKKS payload ciphertext count mismatch")
        sums = np.empty(k)
        for i, blob in enumerate(blobs):
            values = self._slots_of(self._load_part(blob))
            for b in range(per_ct // 2):
                block = values[b * block_len : (b + 1) * block_len]
                for comp, component in enumerate((block.real, block.imag)):
                    j = i * per_ct + 2 * b + comp
                    if j < k:
                        sums[j] = self._release(exact_sum(component), component)
        return sums

    def decrypt_total(self, payload: bytes) -> float:
        offset = self._parse_header(payload, KIND_TOTAL)
        if len(payload) < offset + TOTAL_FIELDS.size:
            raise ValueError("truncated CKKS payload")
        length, count = TOTAL_FIELDS.unpack_from(payload, offset)
        if length == 0 or count != layout(length, self.slots)[0]:
            raise ValueError("CKKS payload length and ciphertext count disagree")
        blobs = unpack_blobs(payload[offset + TOTAL_FIELDS.size :])
        if len(blobs) != count:
            raise ValueError("CKKS payload ciphertext count mismatch")
        used_blocks = []
        for c, blob in enumerate(blobs):
            values = self._real_slots_of(self._load_part(blob))
            used = min(self.slots, length - c * self.slots) if count > 1 else length
            used_blocks.append(values[:used])
        block = np.concatenate(used_blocks)
        return self._release(exact_sum(block), block)


def flood_parameters(params: CKKSParams, block: FloatArray) -> tuple[float, float]:
    """(sigma, grid) for releasing the sum of the decrypted slot values ``block``.

    sigma = max(2**flood_floor_log2, 2**-49 * sqrt(len(block)) * max|block|):
    the floor dominates the secret-dependent CKKS error by >= 2**12; the
    second term is ~10x the float64 decoding residue of the masked sum
    (~sqrt(len) * max|block| * 2**-52.4, measured) and ~10 ulps of the sum
    itself. grid = 2**(floor(log2 sigma) - 1).
    """
    peak = float(np.max(np.abs(block))) if block.size else 0.0
    sigma = max(2.0**params.flood_floor_log2, 2.0**_FLOOD_REL_LOG2 * math.sqrt(block.size) * peak)
    grid = 2.0 ** (math.floor(math.log2(sigma)) - 1)
    return sigma, grid
