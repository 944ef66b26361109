"""CKKS backend (TenSEAL / Microsoft SEAL): batched, approximate, fast.

Why CKKS here: one ciphertext packs ``N/2`` values (8192 at N = 16384), so a
training step costs a handful of ciphertext operations instead of one modular
exponentiation per row (Paillier), and the bank can evaluate a real
polynomial sigmoid on ciphertexts instead of a first-order Taylor line.

Parameters and the level budget (defaults)
------------------------------------------
``poly_modulus_degree = 16384``, ``coeff_mod_bit_sizes = [60, 40, 40, 40, 40,
40, 40, 60]`` (360 bits; SEAL allows 438 at N = 16384 for 128-bit security,
each prime <= 60 bits), scale ``2**40``. The last prime is SEAL's special
key-switching prime; the other seven hold data, so a fresh ciphertext can be
rescaled six times. One training step spends them like this::

    fresh [[u_i]] (7 primes, 300 bits)
      z = sum [[u_i]] + u_b                 additions, no level
      polyval(z, degree <= 7)               3 levels  (depth ceil(log2(deg+1)))
      * per-row weights (1, or 0 for decoys) 1 level
      * feature column (masked_column_sums)  1 level
    -> 2 primes left = 100 bits for the masked products

``max_degree`` is derived from the chain: 2**(levels - 2 - spare) - 1, where
``spare`` is the number of 40-bit primes the masks need beyond the 60-bit
base prime. With the defaults that is 2**3 - 1 = 7, so the degree-5 sigmoid
the protocol needs on nearly separable data fits, and a cubic leaves a level
unused. ``polyval`` reaches depth ceil(log2(deg+1)) (a power-tree split
``p = low + x**m * high``), one level less than TenSEAL's own ``polyval`` for
odd degrees.

Masked decryption (``masked_column_sums`` / ``masked_total``)
--------------------------------------------------------------
The key owner must learn only sums, and not even those: every slot it
decrypts is ``a_i * x_ij + r_i`` with ``r_i`` uniform on ``[-R, R]`` from the
OS CSPRNG, and it returns per-column slot sums, which the sender unmasks by
subtracting ``sum r_i``. No rotation (Galois) keys are needed, so the public
context stays small, and the products are plain per-slot multiplications.

*Hiding.* For a slot value ``v`` the statistical distance between the masked
slot and pure mask is ``|v| / (2R)``. ``R = 2**mask_bits * value_bound *
xscale`` where ``value_bound`` (public parameter, default 1) is the
protocol's promise ``|a_i| <= value_bound`` and ``xscale`` is ``max |x|``
rounded up to a power of two (the only thing the masks reveal about x). With
``mask_bits = 40`` every slot is within 2**-41 of uniform; a 21,000 x 12
payload (12 ciphertexts, 98,304 slots) within ~2**-23 (union bound), and 600
such payloads (a 20-epoch job, three parties) within ~2**-14. The released
sums are hidden by the sums of the slot masks.

*Room and precision.* Masked slots are ~2**42 * value_bound, so the scaled
plaintext needs 42 + 40 bits plus margin: the masking code mod-switches each
product down to the smallest level that still has ``mask_bits + scale_bits +
log2(value_bound * xscale) + 6`` bits (two primes, 100 bits, by default) and
refuses (ValueError) if the product has less, rather than wrapping silently.
SEAL decodes to float64, so each masked slot carries a decoding error of about
``R * 2**-52.4`` (measured); a column sum over 2,000 / 8,192 / 21,000 rows
has a decoding error of std 0.03 / 0.07 / 0.07 (value_bound 1, |x| <= 3).
**The protocol must therefore send sums, not means**: keep ``|a_i|`` of
order ``value_bound`` (row weight 1, divide by B after unmasking). With row
weights 1/B and value_bound = 1 the masks would be B times too large for the
values and the error would swamp the gradient; set ``value_bound`` at keygen
if you must send means.

Releasing decryptions (IND-CPA-D)
---------------------------------
SEAL's CKKS is not IND-CPA-D secure (Li and Micciancio, EUROCRYPT 2021): an
approximate decryption handed to someone who knows the plaintext reveals the
decryption error, a linear function of the secret key. So whatever
``decrypt_column_sums`` / ``decrypt_total`` release is noise-flooded and
rounded (``flood_parameters``):

* Gaussian noise (``secrets.SystemRandom``) with ``sigma = max(2**-5,
  2**-49 * sqrt(block) * max|slot|)``. The secret-dependent CKKS error we
  measure on a released sum is 1e-6..4e-6 (8,192-21,000 rows, degree-3..7
  sigmoid on normalized logits, two plaintext products; repeated
  encryptions of the same data). The floor 2**-5 is 2**13 above that, so a
  release carries at most (e/sigma)**2 / 2 ~ 2**-27 nats about the error,
  and thousands of releases a small fraction of a bit about the key. For
  honest masks the second term rules (sigma 0.35 for 2,000-row blocks, 0.7
  for 8,192 slots): ~2**17 above the CKKS error and ~10x the float64
  decoding residue, a deterministic pseudo-random function of the decrypted
  polynomial that we therefore also drown.
* Then rounding to the grid ``2**(floor(log2 sigma) - 1)`` (0.125-0.25 for
  honest masks): the low-order bits never leave.

Accuracy cost, measured with value_bound 1 (``tests/test_ckks.py``): the
released column sums are off by std 0.36 (2,000 rows), 0.8 (8,192), 0.63
(21,000), i.e. 1.8e-4, 1e-4 and 3e-5 on gradient *means*; the mini-batch
sampling noise of a gradient mean over 2,000 rows is ~1e-2.

What flooding does not cover: a requester who submits *malformed*
ciphertexts (not produced by the protocol) turns the key owner into a
decryption oracle; no HE scheme used this way (Paillier included) resists
that without zero-knowledge proofs. The protocol should accept one payload
per party and step, with exactly that party's column count, and keys are
per job.

Other numerical notes: TenSEAL pins the scale to 2**40 after each rescale,
although SEAL's 40-bit primes lie 1.4e-6..5.3e-6 below 2**40, so every
rescale multiplies values by (1 - ~4e-6): a deterministic relative error of
up to ~2e-5 after five rescales, irrelevant for LR. Keep polyval inputs
normalized (see ``CKKSPublic.polyval``).

Serialization
-------------
Only TenSEAL/SEAL's own serialization (protobuf + SEAL binary, validated
against the context on load), wrapped in a small binary header: magic,
version, kind, 16-byte key id, lengths; each ciphertext is checked against
the key's parameters (slots, size 2, NTT form, scale) on load. Never pickle.
The public context is made public (``make_context_public``) before it is
serialized: 13.7 MB with relinearization keys at the defaults (the bank,
which evaluates the sigmoid, needs them; above gRPC's 4 MB default, our
servers allow 64 MB), 1.7 MB without (``public_bytes(with_relin_keys=False)``,
enough for everyone who only adds and multiplies by plaintexts). Ciphertext
sizes: 1.45 MB fresh (7 primes), 0.66 MB after the sigmoid and weights, 0.46
MB per masked payload ciphertext (2 primes).

Vectors longer than N/2 span several ciphertexts (``CKKSVec.parts``);
vectors of at most N/4 are tiled (several copies in one ciphertext) so
``masked_column_sums`` packs several columns into one product ciphertext.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import struct
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import tenseal as ts

from modeling.he.base import FloatArray, pack_blobs, unpack_blobs

log = logging.getLogger(__name__)

SCHEME = "ckks"

DEFAULT_POLY_MODULUS_DEGREE = 16384
DEFAULT_COEFF_MOD_BIT_SIZES = (60, 40, 40, 40, 40, 40, 40, 60)
DEFAULT_SCALE_BITS = 40
DEFAULT_MASK_BITS = 40
DEFAULT_VALUE_BOUND = 1.0
DEFAULT_FLOOD_FLOOR_LOG2 = -5

# Levels the training protocol spends after polyval: per-row weights and the
# feature column.
_PLAIN_PRODUCTS_AFTER_POLY = 2
# Extra bits kept free above the masked values (carry, prime sizes just
# below 2**bits, the sign).
_MASK_MARGIN_BITS = 6
# The mask room assumes |x| <= 8 (standardized, clipped columns).
_ASSUMED_XSCALE_LOG2 = 3
# Relative size of the data-dependent flooding term (see module docstring).
_FLOOD_REL_LOG2 = -49

# 128-bit security: maximal total coefficient modulus bits per degree
# (HomomorphicEncryption.org standard, as enforced by SEAL).
_MAX_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}

_MAGIC = b"XRCK"
_VERSION = 1
_KIND_VECTOR = 1
_KIND_COLUMN_SUMS = 2
_KIND_TOTAL = 3
_HEADER = struct.Struct(">4sBB16s")  # magic, version, kind, key id
_VEC_FIELDS = struct.Struct(">QI")  # length, ciphertext count
_COL_FIELDS = struct.Struct(">IIII")  # k, block length, blocks per ciphertext, ciphertexts
_TOTAL_FIELDS = struct.Struct(">QI")  # length, ciphertext count
_PUBLIC_MAGIC = b"XRCKPUB1"
_SECRET_MAGIC = b"XRCKSEC1"
# Upper bound on the number of columns in one masked payload (sanity check
# on untrusted headers before any allocation).
_MAX_COLUMNS = 1 << 16

_TsVector = Any  # tenseal.CKKSVector (untyped library)
_TsContext = Any  # tenseal.Context


@dataclass(frozen=True)
class CKKSParams:
    """Public parameters, shipped in the public-key header so every party masks alike."""

    poly_modulus_degree: int = DEFAULT_POLY_MODULUS_DEGREE
    coeff_mod_bit_sizes: tuple[int, ...] = DEFAULT_COEFF_MOD_BIT_SIZES
    scale_bits: int = DEFAULT_SCALE_BITS
    mask_bits: int = DEFAULT_MASK_BITS
    value_bound: float = DEFAULT_VALUE_BOUND
    flood_floor_log2: int = DEFAULT_FLOOD_FLOOR_LOG2

    def validate(self) -> None:
        n = self.poly_modulus_degree
        if n not in _MAX_MODULUS_BITS:
            raise ValueError(f"poly_modulus_degree must be one of {sorted(_MAX_MODULUS_BITS)}")
        chain = self.coeff_mod_bit_sizes
        if len(chain) < 2:
            raise ValueError("coeff_mod_bit_sizes needs a data prime and the special prime")
        if any(not 20 <= b <= 60 for b in chain):
            raise ValueError("each CKKS prime must have 20..60 bits (SEAL limit)")
        if sum(chain) > _MAX_MODULUS_BITS[n]:
            raise ValueError(
                f"coefficient modulus of {sum(chain)} bits exceeds the 128-bit-security "
                f"limit of {_MAX_MODULUS_BITS[n]} bits at N={n}"
            )
        if not 20 <= self.scale_bits <= 50:
            raise ValueError("scale_bits must be within 20..50")
        if chain[0] < self.scale_bits + 10:
            raise ValueError("the first prime needs >= scale_bits + 10 bits for the integer part")
        if any(b != self.scale_bits for b in chain[1:-1]):
            raise ValueError("the rescaling primes must equal scale_bits so rescaling keeps the scale")
        if chain[-1] < max(chain[:-1]):
            raise ValueError("the special prime must be at least as large as every data prime")
        if not 20 <= self.mask_bits <= 52:
            raise ValueError("mask_bits must be within 20..52")
        if not (math.isfinite(self.value_bound) and self.value_bound > 0):
            raise ValueError("value_bound must be positive and finite")
        if not -60 <= self.flood_floor_log2 <= 20:
            raise ValueError("flood_floor_log2 out of range")

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def data_primes(self) -> int:
        """Primes of a fresh ciphertext (the special prime is not data)."""
        return len(self.coeff_mod_bit_sizes) - 1

    def modulus_bits(self, primes: int) -> int:
        """Conservative bit size of the product of the first ``primes`` data primes."""
        # SEAL's primes lie just below 2**bits: count one bit less each.
        return sum(self.coeff_mod_bit_sizes[:primes]) - primes

    def mask_room_bits(self, xscale_log2: int) -> int:
        return (
            self.mask_bits
            + self.scale_bits
            + math.ceil(math.log2(self.value_bound))
            + xscale_log2
            + _MASK_MARGIN_BITS
        )

    def mask_primes(self) -> int:
        """Fewest data primes that hold masked values of |x| <= 2**_ASSUMED_XSCALE_LOG2."""
        need = self.mask_room_bits(_ASSUMED_XSCALE_LOG2)
        for primes in range(1, self.data_primes + 1):
            if self.modulus_bits(primes) >= need:
                return primes
        return self.data_primes + 1  # never enough

    @property
    def max_degree(self) -> int:
        levels = self.data_primes - self.mask_primes() - _PLAIN_PRODUCTS_AFTER_POLY
        if levels <= 0:
            return 0
        return int(2**levels - 1)

    def to_json(self) -> bytes:
        body = {
            "scheme": SCHEME,
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "mask_bits": self.mask_bits,
            "value_bound": self.value_bound,
            "flood_floor_log2": self.flood_floor_log2,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CKKSParams:
        try:
            body = json.loads(data)
            if body.get("scheme") != SCHEME:
                raise ValueError("not a CKKS key")
            params = cls(
                poly_modulus_degree=int(body["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(b) for b in body["coeff_mod_bit_sizes"]),
                scale_bits=int(body["scale_bits"]),
                mask_bits=int(body["mask_bits"]),
                value_bound=float(body["value_bound"]),
                flood_floor_log2=int(body["flood_floor_log2"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError("malformed CKKS parameters") from exc
        params.validate()
        return params


@dataclass(frozen=True)
class CKKSVec:
    """An encrypted vector: ciphertexts of ``slots`` values each, plus the logical length.

    Each part always spans every slot (no TenSEAL-side replication): either
    consecutive ``slots``-sized pieces of the vector, zero padded, or, when
    the vector fits ``copies >= 2`` times, the vector tiled ``copies`` times.
    """

    parts: tuple[_TsVector, ...]
    length: int


@dataclass(frozen=True)
class ColumnMask:
    """What the sender of a masked_column_sums payload keeps: per-column mask sums."""

    key_id: str
    offsets: FloatArray


@dataclass(frozen=True)
class TotalMask:
    key_id: str
    offset: float


def _layout(length: int, slots: int) -> tuple[int, int]:
    """(ciphertext count, copies per ciphertext) for a vector of ``length`` values."""
    if length <= 0:
        raise ValueError("empty vector")
    if length <= slots:
        return 1, slots // length
    return -(-length // slots), 1


def _as_vector(values: FloatArray | Sequence[float], length: int | None = None) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError("expected a 1-D vector")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"length mismatch: {arr.shape[0]} != {length}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("values must be finite")
    return arr


def _uniform_masks(count: int, bound: float) -> FloatArray:
    """``count`` values uniform on [-bound, bound) from the OS CSPRNG (53-bit resolution)."""
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    unit = (raw >> np.uint64(11)).astype(np.float64) * (2.0**-53)
    out: FloatArray = (2.0 * unit - 1.0) * bound
    return out


_SYSTEM_RANDOM = secrets.SystemRandom()


def _gaussian(sigma: float) -> float:
    return _SYSTEM_RANDOM.gauss(0.0, sigma)


def _pow2_ceil_log2(value: float) -> int:
    """ceil(log2(value)) for value > 0, exact at powers of two."""
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else exponent


class CKKSPublic:
    """Everything a party can do with the public context (encrypt, evaluate, mask)."""

    scheme = SCHEME

    def __init__(self, ctx: _TsContext, params: CKKSParams) -> None:
        self._ctx = ctx
        self._params = params
        self._key_id_raw = _key_id(ctx, params)
        self._zero_cache: dict[int, _TsVector] = {}
        ctx.global_scale = params.scale
        ctx.auto_relin = True
        ctx.auto_rescale = True
        ctx.auto_mod_switch = True
        # Without relinearization keys no ciphertext-ciphertext product is
        # possible: only degree 1 (a plaintext scalar product) remains.
        self.can_multiply = bool(ctx.has_relin_keys())
        self.max_degree = params.max_degree if self.can_multiply else min(1, params.max_degree)

    # -- identity -----------------------------------------------------------

    @property
    def params(self) -> CKKSParams:
        return self._params

    def key_id(self) -> str:
        return self._key_id_raw.hex()

    @property
    def slots(self) -> int:
        return self._params.slots

    # -- encoding helpers ---------------------------------------------------

    def _plain_parts(self, values: FloatArray, length: int) -> list[list[float]]:
        """Per-ciphertext slot vectors for a plaintext operand, in the vector layout."""
        slots = self.slots
        count, copies = _layout(length, slots)
        if count == 1:
            block = np.zeros(slots)
            block[: copies * length] = np.tile(values, copies)
            return [block.tolist()]
        parts = []
        for c in range(count):
            block = np.zeros(slots)
            piece = values[c * slots : (c + 1) * slots]
            block[: piece.shape[0]] = piece
            parts.append(block.tolist())
        return parts

    def _check(self, a: CKKSVec) -> None:
        if not isinstance(a, CKKSVec):
            raise TypeError("expected a CKKS encrypted vector")
        count, _ = _layout(a.length, self.slots)
        if len(a.parts) != count:
            raise ValueError("encrypted vector does not match its length")

    # -- HEPublic -----------------------------------------------------------

    def encrypt(self, values: FloatArray) -> CKKSVec:
        arr = _as_vector(values)
        parts = tuple(ts.ckks_vector(self._ctx, p) for p in self._plain_parts(arr, arr.shape[0]))
        return CKKSVec(parts, arr.shape[0])

    def length(self, a: CKKSVec) -> int:
        self._check(a)
        return a.length

    def add(self, a: CKKSVec, b: CKKSVec) -> CKKSVec:
        self._check(a)
        self._check(b)
        if a.length != b.length:
            raise ValueError(f"length mismatch: {a.length} != {b.length}")
        return CKKSVec(tuple(x + y for x, y in zip(a.parts, b.parts)), a.length)

    def add_plain(self, a: CKKSVec, values: FloatArray | float) -> CKKSVec:
        self._check(a)
        if np.isscalar(values):
            scalar = float(values)  # type: ignore[arg-type]
            if not math.isfinite(scalar):
                raise ValueError("values must be finite")
            return CKKSVec(tuple(p + scalar for p in a.parts), a.length)
        arr = _as_vector(values, a.length)  # type: ignore[arg-type]
        plains = self._plain_parts(arr, a.length)
        return CKKSVec(tuple(p + q for p, q in zip(a.parts, plains)), a.length)

    def mul_plain(self, a: CKKSVec, values: FloatArray | float) -> CKKSVec:
        self._check(a)
        try:
            if np.isscalar(values):
                scalar = float(values)  # type: ignore[arg-type]
                if not math.isfinite(scalar):
                    raise ValueError("values must be finite")
                return CKKSVec(tuple(p * scalar for p in a.parts), a.length)
            arr = _as_vector(values, a.length)  # type: ignore[arg-type]
            plains = self._plain_parts(arr, a.length)
            return CKKSVec(tuple(p * q for p, q in zip(a.parts, plains)), a.length)
        except ValueError as exc:
            raise _chain_error(exc) from exc

    def polyval(self, a: CKKSVec, coeffs: Sequence[float]) -> CKKSVec:
        """sum coeffs[k] * a**k per slot, at depth ceil(log2(degree + 1)).

        **Keep |a| <= ~1.** CKKS noise is absolute (a few 1e-9 per rescale);
        products with large powers amplify it: a degree-5 sigmoid fit on
        [-10, 10] evaluated directly on logits gives a column-sum noise of
        ~1e-3, degree 7 on [-12, 12] ~0.5, while the same polynomials on
        t = z / L in [-1, 1] (coefficients c_k * L**k) stay at 1e-6..4e-6.
        The parties can divide their partial logits by L in plaintext
        before encrypting, for free. Coefficients that encode to zero at
        the scale (|c| < 2**-(scale_bits + 1)) are dropped: CKKS would
        multiply by an all-zero plaintext anyway.
        """
        self._check(a)
        cs = [float(c) for c in coeffs]
        if not cs or not all(math.isfinite(c) for c in cs):
            raise ValueError("coefficients must be a non-empty list of finite numbers")
        negligible = 2.0 ** -(self._params.scale_bits + 1)
        cs = [0.0 if abs(c) < negligible else c for c in cs]
        while len(cs) > 1 and cs[-1] == 0.0:
            cs.pop()
        degree = len(cs) - 1
        if degree > 1 and not self.can_multiply:
            raise ValueError("this public context has no relinearization keys: polyval is limited to degree 1")
        if degree > self.max_degree:
            raise ValueError(f"degree {degree} exceeds max_degree {self.max_degree} of this modulus chain")
        depth = math.ceil(math.log2(degree + 1)) if degree > 0 else 0
        parts = []
        for part in a.parts:
            left = _primes(part) - 1
            if depth > left:
                raise ValueError(f"polyval needs {depth} levels, the ciphertext has {left} left")
            try:
                parts.append(self._poly_part(part, cs))
            except ValueError as exc:
                raise _chain_error(exc) from exc
        return CKKSVec(tuple(parts), a.length)

    def _poly_part(self, x: _TsVector, cs: list[float]) -> _TsVector:
        powers = [x]  # x ** (2 ** j)
        degree = len(cs) - 1
        while 2 ** len(powers) <= degree:
            powers.append(powers[-1].square())
        result = _eval_poly(cs, powers)
        if isinstance(result, float):
            # Constant polynomial: an encryption of that constant.
            return ts.ckks_vector(self._ctx, [result] * self.slots)
        return result

    def rerandomize(self, a: CKKSVec) -> CKKSVec:
        """Add a fresh public-key encryption of zero to every part.

        The sum's ``c1`` is uniform given the fresh ``u``, so the result is
        unlinkable to the input and the receiver cannot subtract a
        contribution it knows the ciphertext of.
        """
        self._check(a)
        zero = [0.0] * self.slots
        return CKKSVec(tuple(p + ts.ckks_vector(self._ctx, zero) for p in a.parts), a.length)

    # -- serialization ------------------------------------------------------

    def _header(self, kind: int) -> bytes:
        return _HEADER.pack(_MAGIC, _VERSION, kind, self._key_id_raw)

    def _parse_header(self, data: bytes, kind: int) -> int:
        if len(data) < _HEADER.size:
            raise ValueError("truncated CKKS payload")
        magic, version, got_kind, key_id = _HEADER.unpack_from(data, 0)
        if magic != _MAGIC or version != _VERSION:
            raise ValueError("not a CKKS payload of this version")
        if got_kind != kind:
            raise ValueError("unexpected CKKS payload kind")
        if key_id != self._key_id_raw:
            raise ValueError("CKKS payload is bound to another key")
        return _HEADER.size

    def _load_part(self, blob: bytes) -> _TsVector:
        """Deserialize one ciphertext and check it is a well-formed part of this key."""
        try:
            vec = ts.ckks_vector_from(self._ctx, blob)
        except Exception as exc:  # TenSEAL raises assorted C++ exception types
            raise ValueError("malformed CKKS ciphertext") from exc
        cts = vec.ciphertext()
        scale = self._params.scale
        if vec.size() != self.slots or len(cts) != 1:
            raise ValueError("CKKS ciphertext has an unexpected shape")
        ct = cts[0]
        if ct.size() != 2 or not ct.is_ntt_form() or ct.poly_modulus_degree() != self._params.poly_modulus_degree:
            raise ValueError("CKKS ciphertext has unexpected parameters")
        if not abs(ct.scale / scale - 1.0) < 1e-9:
            raise ValueError("CKKS ciphertext has an unexpected scale")
        return vec

    def serialize(self, a: CKKSVec) -> bytes:
        self._check(a)
        fields = _VEC_FIELDS.pack(a.length, len(a.parts))
        return self._header(_KIND_VECTOR) + fields + pack_blobs([p.serialize() for p in a.parts])

    def deserialize(self, data: bytes) -> CKKSVec:
        offset = self._parse_header(data, _KIND_VECTOR)
        if len(data) < offset + _VEC_FIELDS.size:
            raise ValueError("truncated CKKS payload")
        length, count = _VEC_FIELDS.unpack_from(data, offset)
        if length == 0 or count != _layout(length, self.slots)[0]:
            raise ValueError("CKKS payload length and ciphertext count disagree")
        blobs = unpack_blobs(data[offset + _VEC_FIELDS.size :])
        if len(blobs) != count:
            raise ValueError("CKKS payload ciphertext count mismatch")
        return CKKSVec(tuple(self._load_part(b) for b in blobs), int(length))

    # -- masking ------------------------------------------------------------

    def _zero_at(self, primes: int) -> _TsVector:
        """An encryption of zero with ``primes`` data primes, cached.

        Adding it to a ciphertext at a higher level mod-switches that
        ciphertext down (TenSEAL's auto_mod_switch), which shrinks payloads
        without touching their plaintext.
        """
        zero = self._zero_cache.get(primes)
        if zero is None:
            zero = ts.ckks_vector(self._ctx, [0.0] * self.slots)
            while _primes(zero) > primes:
                zero = zero * 1.0
            self._zero_cache[primes] = zero
        return zero

    def _mask_part(self, ct: _TsVector, bound: float, xscale_log2: int) -> tuple[_TsVector, FloatArray]:
        """Mod-switch ``ct`` to the lowest level that holds masks of ``bound``, then mask every slot."""
        need = self._params.mask_room_bits(xscale_log2)
        have = _primes(ct)
        if self._params.modulus_bits(have) < need:
            raise ValueError(
                f"not enough modulus left to mask: {self._params.modulus_bits(have)} bits, "
                f"need {need}; the chain is too short for this computation"
            )
        target = next(p for p in range(1, have + 1) if self._params.modulus_bits(p) >= need)
        if target < have:
            ct = ct + self._zero_at(target)
        masks = _uniform_masks(self.slots, bound)
        return ct + masks.tolist(), masks

    def masked_column_sums(self, a: CKKSVec, x: FloatArray) -> tuple[bytes, ColumnMask]:
        """Per-slot products ``a * x[:, j]``, masked slot by slot, for the key owner to sum.

        Short vectors pack several columns into one ciphertext (the vector
        is tiled); long ones add their parts' products slot-wise, one
        ciphertext per column (a combined slot holds up to ``len(parts)``
        products, so its hiding bound is that many times 2**-41). Every
        slot of every ciphertext is masked, padding included.
        """
        self._check(a)
        xm = np.asarray(x, dtype=np.float64)
        if xm.ndim != 2 or xm.shape[0] != a.length or xm.shape[1] == 0:
            raise ValueError("x must have shape (len(a), k) with k >= 1")
        if not np.all(np.isfinite(xm)):
            raise ValueError("x must be finite")
        n, k = xm.shape
        if k > _MAX_COLUMNS:
            raise ValueError("too many columns in one payload")
        slots = self.slots
        xmax = float(np.max(np.abs(xm)))
        xscale_log2 = _pow2_ceil_log2(xmax) if xmax > 0 else 0
        bound = 2.0**self._params.mask_bits * self._params.value_bound * 2.0**xscale_log2
        count, copies = _layout(n, slots)
        products: list[_TsVector] = []
        try:
            if count == 1:
                # Pack ``copies`` columns per ciphertext: block b holds a * x[:, j_b].
                block_len, per_ct = n, copies
                for start in range(0, k, per_ct):
                    plain = np.zeros(slots)
                    for b, j in enumerate(range(start, min(start + per_ct, k))):
                        plain[b * n : (b + 1) * n] = xm[:, j]
                    products.append(a.parts[0] * plain.tolist())
            else:
                # One ciphertext per column: the products of all parts added
                # slot-wise (the key owner sums every slot anyway).
                block_len, per_ct = slots, 1
                for j in range(k):
                    plains = self._plain_parts(xm[:, j], n)
                    acc = a.parts[0] * plains[0]
                    for part, plain_part in zip(a.parts[1:], plains[1:]):
                        acc = acc + part * plain_part
                    products.append(acc)
        except ValueError as exc:
            raise _chain_error(exc) from exc
        blobs = []
        offsets = np.empty(k)
        for i, prod in enumerate(products):
            masked, masks = self._mask_part(prod, bound, xscale_log2)
            blobs.append(masked.serialize())
            for b in range(per_ct):
                j = i * per_ct + b
                if j < k:
                    offsets[j] = math.fsum(masks[b * block_len : (b + 1) * block_len])
        fields = _COL_FIELDS.pack(k, block_len, per_ct, len(blobs))
        payload = self._header(_KIND_COLUMN_SUMS) + fields + pack_blobs(blobs)
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
        """Mask every slot; the key owner sums the first ``length`` slots.

        The mask total is a sum of >= ``length`` independent uniforms on
        [-R, R], R = 2**mask_bits * value_bound, so the released total is
        hidden like the column sums (and the key owner learns nothing about
        it unless the sender chooses to reveal it).
        """
        self._check(a)
        bound = 2.0**self._params.mask_bits * self._params.value_bound
        slots = self.slots
        blobs = []
        offset_terms = []
        for c, part in enumerate(a.parts):
            masked, masks = self._mask_part(part, bound, 0)
            blobs.append(masked.serialize())
            used = min(slots, a.length - c * slots) if len(a.parts) > 1 else a.length
            offset_terms.append(math.fsum(masks[:used]))
        total = math.fsum(offset_terms)
        fields = _TOTAL_FIELDS.pack(a.length, len(blobs))
        payload = self._header(_KIND_TOTAL) + fields + pack_blobs(blobs)
        return payload, TotalMask(self.key_id(), total)

    def unmask_total(self, total: float, mask: TotalMask) -> float:
        if not isinstance(mask, TotalMask) or mask.key_id != self.key_id():
            raise ValueError("mask does not belong to this key")
        return float(total) - mask.offset


class CKKSSecret(CKKSPublic):
    """The key owner: decrypts for itself, and releases only flooded, rounded sums."""

    def __init__(self, ctx: _TsContext, params: CKKSParams) -> None:
        if not ctx.is_private():
            raise ValueError("a CKKS secret needs a context with the secret key")
        super().__init__(ctx, params)
        self._public_cache: dict[bool, bytes] = {}

    def public_bytes(self, with_relin_keys: bool = True) -> bytes:
        """The public context, made public (secret key dropped) before it is serialized.

        ``with_relin_keys=False`` is for parties that never multiply two
        ciphertexts (providers in training, everyone in scoring): 1.7 MB
        instead of 13.7 MB at the defaults; both variants have the same
        ``key_id``.
        """
        blob = self._public_cache.get(with_relin_keys)
        if blob is None:
            public = self._ctx.copy()
            public.make_context_public()
            if not public.is_public():
                raise RuntimeError("failed to strip the secret key from the public context")
            ctx_blob = public.serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=with_relin_keys,
            )
            blob = _PUBLIC_MAGIC + pack_blobs([self._params.to_json(), ctx_blob])
            self._public_cache[with_relin_keys] = blob
        return blob

    def secret_bytes(self) -> bytes:
        """The key pair, for the owner's own disk only (write it 0600; never send it)."""
        blob = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=True,
        )
        return _SECRET_MAGIC + pack_blobs([self._params.to_json(), blob])

    def _slots_of(self, part: _TsVector) -> FloatArray:
        # Pass the key explicitly: the vector may be linked to a public context.
        return np.asarray(part.decrypt(self._ctx.secret_key()), dtype=np.float64)

    def decrypt(self, a: CKKSVec) -> FloatArray:
        self._check(a)
        values = np.concatenate([self._slots_of(p) for p in a.parts])
        out: FloatArray = values[: a.length]
        return out

    def _release(self, value: float, block: FloatArray) -> float:
        """Flood and round one released value (see the module docstring)."""
        sigma, grid = flood_parameters(self._params, block)
        return round((value + _gaussian(sigma)) / grid) * grid

    def decrypt_column_sums(self, payload: bytes) -> FloatArray:
        offset = self._parse_header(payload, _KIND_COLUMN_SUMS)
        if len(payload) < offset + _COL_FIELDS.size:
            raise ValueError("truncated CKKS payload")
        k, block_len, per_ct, count = _COL_FIELDS.unpack_from(payload, offset)
        if not (1 <= k <= _MAX_COLUMNS and block_len >= 1 and per_ct >= 1):
            raise ValueError("malformed column-sum header")
        if block_len * per_ct > self.slots or count != -(-k // per_ct):
            raise ValueError("column-sum layout does not fit the ciphertexts")
        blobs = unpack_blobs(payload[offset + _COL_FIELDS.size :])
        if len(blobs) != count:
            raise ValueError("CKKS payload ciphertext count mismatch")
        sums = np.empty(k)
        for i, blob in enumerate(blobs):
            values = self._slots_of(self._load_part(blob))
            for b in range(per_ct):
                j = i * per_ct + b
                if j < k:
                    block = values[b * block_len : (b + 1) * block_len]
                    sums[j] = self._release(math.fsum(block), block)
        return sums

    def decrypt_total(self, payload: bytes) -> float:
        offset = self._parse_header(payload, _KIND_TOTAL)
        if len(payload) < offset + _TOTAL_FIELDS.size:
            raise ValueError("truncated CKKS payload")
        length, count = _TOTAL_FIELDS.unpack_from(payload, offset)
        if length == 0 or count != _layout(length, self.slots)[0]:
            raise ValueError("CKKS payload length and ciphertext count disagree")
        blobs = unpack_blobs(payload[offset + _TOTAL_FIELDS.size :])
        if len(blobs) != count:
            raise ValueError("CKKS payload ciphertext count mismatch")
        used_blocks = []
        for c, blob in enumerate(blobs):
            values = self._slots_of(self._load_part(blob))
            used = min(self.slots, length - c * self.slots) if count > 1 else length
            used_blocks.append(values[:used])
        block = np.concatenate(used_blocks)
        return self._release(math.fsum(block), block)


def flood_parameters(params: CKKSParams, block: FloatArray) -> tuple[float, float]:
    """(sigma, grid) for releasing the sum of the decrypted slots ``block``.

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


def _primes(vec: _TsVector) -> int:
    """Data primes left in a (single-ciphertext) TenSEAL vector."""
    return int(min(ct.coeff_modulus_size() for ct in vec.ciphertext()))


def _chain_error(exc: ValueError) -> ValueError:
    text = str(exc)
    if "end of modulus switching chain" in text or "scale out of bounds" in text:
        return ValueError("CKKS modulus chain exhausted: the computation is deeper than the parameters allow")
    return exc


def _eval_poly(cs: list[float], powers: list[_TsVector]) -> _TsVector | float:
    """sum cs[k] x**k with multiplicative depth ceil(log2(len(cs))).

    ``p = low + x**m * high`` with m the largest power of two <= degree:
    ``x**m`` has depth log2(m), ``high`` (degree < m) at most log2(m), so the
    product adds one level.
    """
    while len(cs) > 1 and cs[-1] == 0.0:
        cs = cs[:-1]
    degree = len(cs) - 1
    if degree <= 0:
        return cs[0] if cs else 0.0
    if degree == 1:
        c0, c1 = cs
        term = powers[0] if c1 == 1.0 else powers[0] * c1
        return term + c0 if c0 != 0.0 else term
    j = degree.bit_length() - 1
    m = 1 << j
    low = _eval_poly(cs[:m], powers)
    high = _eval_poly(cs[m:], powers)
    prod = powers[j] * high
    if isinstance(low, float):
        return prod + low if low != 0.0 else prod
    return prod + low


def _new_context(params: CKKSParams) -> _TsContext:
    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS,
        poly_modulus_degree=params.poly_modulus_degree,
        coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
    )
    ctx.global_scale = params.scale
    return ctx


def _key_id(ctx: _TsContext, params: CKKSParams) -> bytes:
    """16 bytes binding the parameters and the public key (not the relinearization keys).

    TenSEAL's serialization of the public key is deterministic, so the key
    owner and every holder of either public-context variant agree on it.
    """
    public_key = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
    )
    digest = hashlib.sha256(b"xinrong/ckks/key-id\x00" + params.to_json() + b"\x00" + public_key)
    return digest.digest()[:16]


def keygen(
    *,
    poly_modulus_degree: int = DEFAULT_POLY_MODULUS_DEGREE,
    coeff_mod_bit_sizes: Sequence[int] = DEFAULT_COEFF_MOD_BIT_SIZES,
    scale_bits: int = DEFAULT_SCALE_BITS,
    mask_bits: int = DEFAULT_MASK_BITS,
    value_bound: float = DEFAULT_VALUE_BOUND,
    flood_floor_log2: int = DEFAULT_FLOOD_FLOOR_LOG2,
) -> CKKSSecret:
    """A fresh key pair; parameters are checked for 128-bit security and the level budget."""
    params = CKKSParams(
        poly_modulus_degree=poly_modulus_degree,
        coeff_mod_bit_sizes=tuple(coeff_mod_bit_sizes),
        scale_bits=scale_bits,
        mask_bits=mask_bits,
        value_bound=value_bound,
        flood_floor_log2=flood_floor_log2,
    )
    params.validate()
    secret = CKKSSecret(_new_context(params), params)
    log.info("ckks keygen N=%d chain=%s key=%s", params.poly_modulus_degree, params.coeff_mod_bit_sizes, secret.key_id())
    return secret


def _split_public(data: bytes) -> tuple[CKKSParams, bytes]:
    if not data.startswith(_PUBLIC_MAGIC):
        raise ValueError("not a CKKS public context")
    blobs = unpack_blobs(data[len(_PUBLIC_MAGIC) :])
    if len(blobs) != 2:
        raise ValueError("malformed CKKS public context")
    return CKKSParams.from_json(blobs[0]), blobs[1]


def _load_context(blob: bytes, params: CKKSParams) -> _TsContext:
    try:
        ctx = ts.context_from(blob)
    except Exception as exc:  # TenSEAL raises assorted C++ exception types
        raise ValueError("malformed TenSEAL context") from exc
    ctx.global_scale = params.scale
    probe = ts.ckks_vector(ctx, [0.0])
    ct = probe.ciphertext()[0]
    if ct.poly_modulus_degree() != params.poly_modulus_degree or ct.coeff_modulus_size() != params.data_primes:
        raise ValueError("TenSEAL context does not match its declared parameters")
    return ctx


def load_public(data: bytes) -> CKKSPublic:
    """The public side, from ``CKKSSecret.public_bytes()``; refuses a context carrying a secret key."""
    params, blob = _split_public(data)
    ctx = _load_context(blob, params)
    if not ctx.is_public():
        raise ValueError("refusing a 'public' CKKS context that carries a secret key")
    return CKKSPublic(ctx, params)


def load_secret(data: bytes) -> CKKSSecret:
    """The key owner's side, from ``CKKSSecret.secret_bytes()`` (owner's own storage only)."""
    if not data.startswith(_SECRET_MAGIC):
        raise ValueError("not a CKKS secret key")
    blobs = unpack_blobs(data[len(_SECRET_MAGIC) :])
    if len(blobs) != 2:
        raise ValueError("malformed CKKS secret key")
    params = CKKSParams.from_json(blobs[0])
    return CKKSSecret(_load_context(blobs[1], params), params)


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
    # Degree-5 least-squares sigmoid fit on [-10, 10], in normalized units t = z / 10.
    grid = np.linspace(-1.0, 1.0, 2001)
    coeffs = [float(c) for c in np.polynomial.polynomial.polyfit(grid, 1.0 / (1.0 + np.exp(-10.0 * grid)), 5)]
    for n in sizes:
        z = rng.uniform(-1, 1, n)
        xcols = rng.uniform(-3, 3, (n, columns))
        enc = public.encrypt(z)
        poly = public.polyval(enc, coeffs)
        weighted = public.mul_plain(poly, np.ones(n))
        payload, mask = public.masked_column_sums(weighted, xcols)
        row = {
            "encrypt_s": median(lambda: public.encrypt(z)),
            "rerandomize_s": median(lambda: public.rerandomize(enc)),
            "polyval5_s": median(lambda: public.polyval(enc, coeffs)),
            "mul_plain_s": median(lambda: public.mul_plain(poly, np.ones(n))),
            "decrypt_s": median(lambda: secret.decrypt(enc)),
            "fresh_ciphertext_bytes": len(public.serialize(enc)),
            "after_poly_ciphertext_bytes": len(public.serialize(weighted)),
            f"masked_column_sums_{columns}_s": median(lambda: public.masked_column_sums(weighted, xcols)),
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
