"""Masked decryption requests: what the key owner may decrypt for another party (see docs/CKKS.md).

``CKKSPublic`` is the evaluator plus ``masked_column_sums`` / ``masked_total``:
every slot the key owner will see carries a fresh uniform mask from the OS
CSPRNG, and only the sender can take the sums of the masks off again.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as seal

from xinrong.modeling.he.base import FloatArray, pack_blobs
from xinrong.modeling.he.ckks.evaluator import CKKSEvaluator, CKKSVec, ComplexArray, Ct, layout, primes_of
from xinrong.modeling.he.ckks.serialization import (
    COL_FIELDS,
    KIND_COLUMN_SUMS,
    KIND_TOTAL,
    MAX_COLUMNS,
    TOTAL_FIELDS,
    seal_save,
)


@dataclass(frozen=True)
class ColumnMask:
    """What the sender of a masked_column_sums payload keeps: per-column mask sums."""

    key_id: str
    offsets: FloatArray


@dataclass(frozen=True)
class TotalMask:
    key_id: str
    offset: float


def _uniform_masks(count: int, bound: float) -> FloatArray:
    """``count`` values uniform on [-bound, bound) from the OS CSPRNG (53-bit resolution)."""
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    unit = (raw >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    out: FloatArray = (2.0 * unit - 1.0) * bound
    return out


def exact_sum(values: FloatArray) -> float:
    """The correctly rounded sum (``math.fsum``): a pairwise float sum of 2**43-sized masks errs by units."""
    return math.fsum(values.tolist())  # a list is ~1/3 faster to walk than a NumPy array


def _pow2_ceil_log2(value: float) -> int:
    """ceil(log2(value)) for value > 0, exact at powers of two."""
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else exponent


class CKKSPublic(CKKSEvaluator):
    """Everything a party can do with the public key (encrypt, evaluate, mask)."""

    def _mask_part(self, ct: Ct, bound: float, xscale_log2: int, *, complex_masks: bool) -> tuple[Ct, ComplexArray]:
        """Mask every slot of ``ct`` (already at the mask level) with fresh uniforms on [-bound, bound)."""
        need = self._params.mask_room_bits(xscale_log2)
        have = self._params.modulus_bits(primes_of(ct))
        if have < need:
            raise ValueError(f"not enough modulus left to mask: {have} bits, need {need}")
        masks: ComplexArray = _uniform_masks(self.slots, bound).astype(np.complex128)
        if complex_masks:
            masks.imag = _uniform_masks(self.slots, bound)
        pt = self._encode(masks if complex_masks else masks.real, primes_of(ct), ct.scale)
        out = seal.Ciphertext()
        self._evaluator.add_plain(ct, pt, out)
        return out, masks

    def _mask_target(self, a: CKKSVec, xscale_log2: int) -> int:
        """The mask level for ``a``; refuses (ValueError) if ``a`` is already below it."""
        target = self._params.mask_level(xscale_log2)
        have = min(primes_of(p) for p in a.parts)
        if target > have:
            raise ValueError(
                f"not enough modulus left to mask: {self._params.modulus_bits(have)} bits, "
                f"need {self._params.mask_room_bits(xscale_log2)}; the chain is too short for this computation"
            )
        return target

    def masked_column_sums(self, a: CKKSVec, x: FloatArray) -> tuple[bytes, ColumnMask]:
        """Per-slot products ``a * (x[:, j] + i x[:, j+1])``, masked slot by slot, for the key owner to sum.

        Two columns ride in each product (real and imaginary parts). Short
        vectors pack ``2 * copies`` columns into one ciphertext (the vector
        is tiled); long ones add their parts' products slot-wise, one
        ciphertext per column pair (a combined slot holds up to
        ``len(parts)`` products, so its hiding bound is that many times
        2**-41). Every slot of every ciphertext is masked, padding included.
        """
        self._check(a)
        xm = np.asarray(x, dtype=np.float64)
        if xm.ndim != 2 or xm.shape[0] != a.length or xm.shape[1] == 0:
            raise ValueError("x must have shape (len(a), k) with k >= 1")
        if not np.all(np.isfinite(xm)):
            raise ValueError("x must be finite")
        n, k = xm.shape
        if k > MAX_COLUMNS:
            raise ValueError("too many columns in one payload")
        slots = self.slots
        xmax = float(np.max(np.abs(xm)))
        xscale_log2 = _pow2_ceil_log2(xmax) if xmax > 0 else 0
        bound = 2.0**self._params.mask_bits * self._params.value_bound * 2.0**xscale_log2
        target = self._mask_target(a, xscale_log2)
        if min(primes_of(p) for p in a.parts) < target + 1:
            raise ValueError(
                f"not enough modulus left to mask: the feature product needs {target + 1} primes; "
                "the chain is too short for this computation"
            )
        # Products at one prime above the mask level: cheaper, and the rescale lands on it.
        parts = [self._lowered(p, target + 1) for p in a.parts]
        count, copies = layout(n, slots)
        products: list[Ct] = []
        if count == 1:
            # Block b of ciphertext i holds a * (x[:, j] + i x[:, j + 1]), j = (i * copies + b) * 2.
            block_len, per_ct = n, 2 * copies
            for start in range(0, k, per_ct):
                plain = np.zeros(slots, dtype=np.complex128)
                for b in range(copies):
                    j = start + 2 * b
                    if j < k:
                        plain.real[b * n : (b + 1) * n] = xm[:, j]
                    if j + 1 < k:
                        plain.imag[b * n : (b + 1) * n] = xm[:, j + 1]
                products.append(self._mul_plain(parts[0], plain))
        else:
            # One ciphertext per column pair: the parts' products added slot-wise, rescaled once.
            block_len, per_ct = slots, 2
            for j in range(0, k, 2):
                column = xm[:, j].astype(np.complex128)
                if j + 1 < k:
                    column.imag = xm[:, j + 1]
                acc: Ct | None = None
                for part, plain in zip(parts, self._plain_parts(column, n)):
                    prod = self._product_raw(part, plain)
                    if prod is not None:
                        acc = prod if acc is None else self._add(acc, prod)
                products.append(self._fresh_zero(target) if acc is None else self._rescaled(acc))
        blobs = []
        offsets = np.empty(k)
        for i, prod in enumerate(products):
            masked, masks = self._mask_part(prod, bound, xscale_log2, complex_masks=True)
            blobs.append(seal_save(masked))
            for b in range(per_ct // 2):
                j = i * per_ct + 2 * b
                block = masks[b * block_len : (b + 1) * block_len]
                if j < k:
                    offsets[j] = exact_sum(block.real)
                if j + 1 < k:
                    offsets[j + 1] = exact_sum(block.imag)
        fields = COL_FIELDS.pack(k, block_len, per_ct, len(blobs))
        payload = self._header(KIND_COLUMN_SUMS) + fields + pack_blobs(blobs)
        return payload, ColumnMask(self.key_id(), offsets)

    def unmask_column_sums(self, sums: FloatArray, mask: ColumnMask) -> FloatArray:
        if not isinstance(mask, ColumnMask) or mask.key_id != self.key_id():
            raise ValueError("mask does not belong to this key")
        arr = np.asarray(sums, dtype=np.float64)
        if arr.shape != mask.offsets.shape:
            raise ValueError("number of sums does not match the mask")
        out: FloatArray = arr - mask.offsets
        return out

    def masked_total(self, a: CKKSVec) -> tuple[bytes, TotalMask]:
        """Mask every slot; the key owner sums the real parts of the first ``length`` slots.

        The mask total is a sum of >= ``length`` independent uniforms on
        [-R, R], R = 2**mask_bits * value_bound, so the released total is
        hidden like the column sums (and the key owner learns nothing about
        it unless the sender chooses to reveal it).
        """
        self._check(a)
        bound = 2.0**self._params.mask_bits * self._params.value_bound
        target = self._mask_target(a, 0)
        slots = self.slots
        blobs = []
        offset_terms = []
        for c, part in enumerate(a.parts):
            masked, masks = self._mask_part(self._lowered(part, target), bound, 0, complex_masks=False)
            blobs.append(seal_save(masked))
            used = min(slots, a.length - c * slots) if len(a.parts) > 1 else a.length
            offset_terms.append(exact_sum(masks.real[:used]))
        total = math.fsum(offset_terms)
        fields = TOTAL_FIELDS.pack(a.length, len(blobs))
        payload = self._header(KIND_TOTAL) + fields + pack_blobs(blobs)
        return payload, TotalMask(self.key_id(), total)

    def unmask_total(self, total: float, mask: TotalMask) -> float:
        if not isinstance(mask, TotalMask) or mask.key_id != self.key_id():
            raise ValueError("mask does not belong to this key")
        return float(total) - mask.offset
