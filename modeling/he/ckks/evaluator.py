"""Encrypted vectors and the homomorphic operations on them (see docs/CKKS.md).

``CKKSEvaluator`` is everything a public key can compute: encryption, additions,
plaintext products, ``polyval``, rerandomization and (de)serialization with its
checks. Masking for the key owner builds on it (``masking.CKKSPublic``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from xinrong.modeling.he.base import FloatArray, pack_blobs, unpack_blobs
from xinrong.modeling.he.ckks.params import SCHEME, CKKSParams, SealContext
from xinrong.modeling.he.ckks.serialization import (
    HEADER,
    KIND_VECTOR,
    MAGIC,
    VEC_FIELDS,
    VERSION,
    derive_key_id,
    seal_load,
    seal_save,
)

Ct = Any  # seal.Ciphertext (untyped binding)
_Pt = Any  # seal.Plaintext
ComplexArray = npt.NDArray[np.complex128]
_Const = float | FloatArray  # a plaintext value inside polyval (scalar or per-slot)


@dataclass(eq=False)
class CKKSVec:
    """An encrypted vector: SEAL ciphertexts of ``slots`` values each, plus the logical length.

    Each part always spans every slot: either consecutive ``slots``-sized
    pieces of the vector, zero padded, or, when the vector fits ``copies >=
    2`` times, the vector tiled ``copies`` times. Parts are never modified in
    place by this package (every operation returns new ciphertexts), so
    vectors may share parts.
    """

    parts: tuple[Ct, ...] = field(repr=False)
    length: int
    # Randomness drawn by this party that has not left it yet (docs/CKKS.md, "Randomness").
    pristine: bool = field(default=False, repr=False)
    # Powers x**(2**j) of each part, computed by polyval and shared by later polyvals of the same vector.
    _powers: dict[int, list[Ct]] = field(default_factory=dict, repr=False)


def layout(length: int, slots: int) -> tuple[int, int]:
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


def _seal_error(exc: Exception) -> ValueError:
    """SEAL's C++ exceptions (RuntimeError / ValueError through the binding) as our ValueError."""
    text = str(exc)
    if "end of modulus switching chain" in text or "scale out of bounds" in text:
        return ValueError("CKKS modulus chain exhausted: the computation is deeper than the parameters allow")
    if "encoded values are too large" in text:
        return ValueError("CKKS value too large for the modulus left at this level")
    return ValueError(f"CKKS operation failed: {text}")


def primes_of(ct: Ct) -> int:
    """Data primes left in a ciphertext (its level)."""
    return int(ct.coeff_modulus_size())


def _is_const(value: Any) -> bool:
    return isinstance(value, (float, np.ndarray))


class CKKSEvaluator:
    """What a public key computes: encryption, homomorphic operations, (de)serialization."""

    scheme = SCHEME

    def __init__(
        self,
        params: CKKSParams,
        context: SealContext,
        public_key: Any,
        public_key_blob: bytes,
        relin_keys: Any = None,
    ) -> None:
        self._params = params
        self._context = context
        self._pk_blob = public_key_blob
        self._key_id_raw = derive_key_id(params, public_key_blob)
        self._encoder = seal.CKKSEncoder(context)
        self._evaluator = seal.Evaluator(context)
        self._encryptor = seal.Encryptor(context, public_key)
        self._relin = relin_keys
        # The chain, by number of data primes: parms_id and the prime a rescale from there drops.
        self._pids: dict[int, list[int]] = {}
        self._last_prime: dict[int, float] = {}
        data = context.first_context_data()
        while data is not None:
            moduli = data.parms().coeff_modulus()
            self._pids[len(moduli)] = list(data.parms_id())
            self._last_prime[len(moduli)] = float(moduli[-1].value())
            data = data.next_context_data()
        if sorted(self._pids) != list(range(1, params.data_primes + 1)):
            raise ValueError("SEAL's modulus chain does not match the declared parameters")
        n, top = params.poly_modulus_degree, params.data_primes
        # A generous cap on one serialized ciphertext (SEAL's zstd never expands this much).
        self._max_ct_blob = 2 * top * n * 8 + (2 * top * n * 8) // 64 + 4096
        # Without relinearization keys no ciphertext-ciphertext product is
        # possible: only degree 1 (a plaintext scalar product) remains.
        self.can_multiply = relin_keys is not None
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

    # -- single-ciphertext primitives (never modify their inputs) -------------

    def _relin_keys(self) -> Any:
        if self._relin is None:
            raise ValueError("this public context has no relinearization keys: polyval is limited to degree 1")
        return self._relin

    def _encode(self, values: Any, primes: int, scale: float) -> _Pt:
        """A plaintext at the level of ``primes`` data primes: a scalar or a list of ``slots`` values."""
        pt = seal.Plaintext()
        try:
            if isinstance(values, np.ndarray):
                values = values.tolist()
            self._encoder.encode(values, self._pids[primes], scale, pt)
        except (RuntimeError, ValueError) as exc:
            raise _seal_error(exc) from exc
        return pt

    def _fresh_zero(self, primes: int) -> Ct:
        """A fresh public-key encryption of zero, drawn at the level it will be used at."""
        out = seal.Ciphertext()
        self._encryptor.encrypt_zero(self._pids[primes], out)
        out.scale = self._params.scale
        return out

    def _encrypt_slots(self, values: Any, primes: int | None = None) -> Ct:
        pt = self._encode(values, primes or self._params.data_primes, self._params.scale)
        out = seal.Ciphertext()
        self._encryptor.encrypt(pt, out)
        return out

    def _lowered(self, ct: Ct, primes: int) -> Ct:
        """``ct`` mod-switched down to ``primes`` data primes (no rescale: the value is unchanged)."""
        have = primes_of(ct)
        if have == primes:
            return ct
        if have < primes:
            raise ValueError("cannot raise a ciphertext to a higher level")
        out = seal.Ciphertext()
        self._evaluator.mod_switch_to(ct, self._pids[primes], out)
        return out

    def _same_level(self, a: Ct, b: Ct) -> tuple[Ct, Ct]:
        level = min(primes_of(a), primes_of(b))
        return self._lowered(a, level), self._lowered(b, level)

    def _add(self, a: Ct, b: Ct) -> Ct:
        a, b = self._same_level(a, b)
        out = seal.Ciphertext()
        try:
            self._evaluator.add(a, b, out)
        except (RuntimeError, ValueError) as exc:
            raise _seal_error(exc) from exc
        return out

    def _add_plain(self, ct: Ct, values: _Const) -> Ct:
        pt = self._encode(values, primes_of(ct), ct.scale)
        if pt.is_zero():
            return ct
        out = seal.Ciphertext()
        self._evaluator.add_plain(ct, pt, out)
        return out

    def _product_raw(self, ct: Ct, values: Any, scale: float | None = None) -> Ct | None:
        """ct * values without the rescale (None when the plaintext is all zero).

        By default the plaintext is encoded at the scale of the prime the
        rescale will drop, so after it the product is at scale 2**scale_bits
        exactly; ``polyval`` passes 2**scale_bits to collect products of
        one scale before a single rescale.
        """
        primes = primes_of(ct)
        if primes < 2:
            raise ValueError("CKKS modulus chain exhausted: the computation is deeper than the parameters allow")
        pt = self._encode(values, primes, self._last_prime[primes] if scale is None else scale)
        if pt.is_zero():
            return None  # SEAL refuses a transparent (all-zero) product
        out = seal.Ciphertext()
        self._evaluator.multiply_plain(ct, pt, out)
        return out

    def _rescaled(self, ct: Ct) -> Ct:
        try:
            self._evaluator.rescale_to_next_inplace(ct)
        except (RuntimeError, ValueError) as exc:
            raise _seal_error(exc) from exc
        ct.scale = self._params.scale
        return ct

    def _mul_plain(self, ct: Ct, values: Any) -> Ct:
        """ct * values, rescaled: one level. A zero factor gives a fresh encryption of zero."""
        out = self._product_raw(ct, values)
        if out is None:
            return self._fresh_zero(primes_of(ct) - 1)
        return self._rescaled(out)

    def _tensor(self, a: Ct, b: Ct) -> Ct:
        """a * b as a size-3 ciphertext at scale 2**(2 * scale_bits): neither relinearized nor rescaled."""
        self._relin_keys()  # no relinearization keys: no ciphertext products at all
        a, b = self._same_level(a, b)
        if primes_of(a) < 2:
            raise ValueError("CKKS modulus chain exhausted: the computation is deeper than the parameters allow")
        out = seal.Ciphertext()
        try:
            if a is b:
                self._evaluator.square(a, out)
            else:
                self._evaluator.multiply(a, b, out)
        except (RuntimeError, ValueError) as exc:
            raise _seal_error(exc) from exc
        return out

    def _finish(self, ct: Ct) -> Ct:
        """Relinearize (if size 3), rescale and pin the scale: a product becomes a normal ciphertext."""
        if ct.size() > 2:
            try:
                self._evaluator.relinearize_inplace(ct, self._relin_keys())
            except (RuntimeError, ValueError) as exc:
                raise _seal_error(exc) from exc
        return self._rescaled(ct)

    def _mul(self, a: Ct, b: Ct) -> Ct:
        """a * b (relinearized, rescaled, scale pinned): one level."""
        return self._finish(self._tensor(a, b))

    # -- encoding helpers ---------------------------------------------------

    def _plain_parts(self, values: npt.NDArray[Any], length: int) -> list[npt.NDArray[Any]]:
        """Per-ciphertext slot vectors for a plaintext operand, in the vector layout."""
        slots = self.slots
        count, copies = layout(length, slots)
        if count == 1:
            block = np.zeros(slots, dtype=values.dtype)
            block[: copies * length] = np.tile(values, copies)
            return [block]
        parts = []
        for c in range(count):
            block = np.zeros(slots, dtype=values.dtype)
            piece = values[c * slots : (c + 1) * slots]
            block[: piece.shape[0]] = piece
            parts.append(block)
        return parts

    def _check(self, a: CKKSVec) -> None:
        if not isinstance(a, CKKSVec):
            raise TypeError("expected a CKKS encrypted vector")
        count, _ = layout(a.length, self.slots)
        if len(a.parts) != count:
            raise ValueError("encrypted vector does not match its length")

    # -- HEPublic -----------------------------------------------------------

    def encrypt(self, values: FloatArray) -> CKKSVec:
        arr = _as_vector(values)
        parts = tuple(self._encrypt_slots(p) for p in self._plain_parts(arr, arr.shape[0]))
        return CKKSVec(parts, arr.shape[0], pristine=True)

    def length(self, a: CKKSVec) -> int:
        self._check(a)
        return a.length

    def add(self, a: CKKSVec, b: CKKSVec) -> CKKSVec:
        self._check(a)
        self._check(b)
        if a.length != b.length:
            raise ValueError(f"length mismatch: {a.length} != {b.length}")
        return CKKSVec(tuple(self._add(x, y) for x, y in zip(a.parts, b.parts)), a.length)

    def add_plain(self, a: CKKSVec, values: FloatArray | float) -> CKKSVec:
        self._check(a)
        if np.isscalar(values):
            scalar = float(values)  # type: ignore[arg-type]
            if not math.isfinite(scalar):
                raise ValueError("values must be finite")
            return CKKSVec(tuple(self._add_plain(p, scalar) for p in a.parts), a.length)
        arr = _as_vector(values, a.length)  # type: ignore[arg-type]
        plains = self._plain_parts(arr, a.length)
        return CKKSVec(tuple(self._add_plain(p, q) for p, q in zip(a.parts, plains)), a.length)

    def mul_plain(self, a: CKKSVec, values: FloatArray | float) -> CKKSVec:
        self._check(a)
        if np.isscalar(values):
            scalar = float(values)  # type: ignore[arg-type]
            if not math.isfinite(scalar):
                raise ValueError("values must be finite")
            return CKKSVec(tuple(self._mul_plain(p, scalar) for p in a.parts), a.length)
        arr = _as_vector(values, a.length)  # type: ignore[arg-type]
        plains = self._plain_parts(arr, a.length)
        return CKKSVec(tuple(self._mul_plain(p, q) for p, q in zip(a.parts, plains)), a.length)

    def polyval(self, a: CKKSVec, coeffs: Sequence[float], *, row_weights: FloatArray | None = None) -> CKKSVec:
        """``row_weights * sum coeffs[k] * a**k`` per slot, at depth ceil(log2(degree + 1)).

        **Keep |a| <= ~1.** CKKS noise is absolute (a few 1e-9 per rescale);
        products with large powers amplify it: a degree-5 sigmoid fit on
        [-10, 10] evaluated directly on logits gives a column-sum noise of
        ~1e-3, degree 7 on [-12, 12] ~0.5, while the same polynomials on
        t = z / L in [-1, 1] (coefficients c_k * L**k) stay at 1e-6..4e-6.
        The parties can divide their partial logits by L in plaintext
        before encrypting, for free. Coefficients that encode to zero at
        the scale (|c| < 2**-(scale_bits + 1)) are dropped: CKKS would
        multiply by an all-zero plaintext anyway.

        ``row_weights`` multiply the coefficients of the power tree's
        degree-1 leaves (and its constant), so weighting costs no level.
        The powers ``a**(2**j)`` are kept on ``a``: a second polyval of the
        same vector (the bank's loss polynomial) reuses them.
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
        weights = None
        if row_weights is not None:
            weights = self._plain_parts(_as_vector(row_weights, a.length), a.length)
        depth = math.ceil(math.log2(degree + 1)) if degree > 0 else 0
        parts = []
        for idx, part in enumerate(a.parts):
            left = primes_of(part) - 1
            if depth > left:
                raise ValueError(f"polyval needs {depth} levels, the ciphertext has {left} left")
            powers = a._powers.setdefault(idx, [part])
            while 2 ** len(powers) <= degree:
                powers.append(self._mul(powers[-1], powers[-1]))
            result = self._eval_poly(cs, powers, None if weights is None else weights[idx])
            if _is_const(result):
                # Constant polynomial: a fresh encryption of that constant.
                result = self._encrypt_slots(self._const_slots(result), primes_of(part))
            parts.append(result)
        return CKKSVec(tuple(parts), a.length)

    def _const_slots(self, value: _Const) -> list[float]:
        if isinstance(value, np.ndarray):
            out: list[float] = value.tolist()
            return out
        return [float(value)] * self.slots

    def _poly_terms(self, cs: list[float], powers: list[Ct], w: FloatArray | None) -> tuple[list[Ct], _Const]:
        """w * sum cs[k] x**k as unfinished products (scale 2**(2 * scale_bits)) plus a plaintext constant.

        ``p = low + x**m * high`` with m the largest power of two <= degree:
        ``x**m`` has depth log2(m), ``high`` (degree < m) at most log2(m), so
        the product adds one level. ``low`` splits the same way, so the
        whole polynomial is a sum of products ``x**(2**j) * high_j`` (and
        ``c1 * x``) that are added *before* their relinearization and
        rescale: one of each for the sum instead of one per product. The
        weights multiply the leaves, so ``w * p = w * low + x**m * (w *
        high)`` at the same depth.
        """
        while len(cs) > 1 and cs[-1] == 0.0:
            cs = cs[:-1]
        degree = len(cs) - 1
        c0 = cs[0] if cs else 0.0
        const: _Const = float(c0) if w is None else w * c0
        if degree <= 0:
            return [], const
        scale = self._params.scale
        if degree == 1:
            leaf = self._product_raw(powers[0], cs[1] if w is None else w * cs[1], scale)
            return ([] if leaf is None else [leaf]), const
        j = degree.bit_length() - 1
        m = 1 << j
        terms, const = self._poly_terms(cs[:m], powers, w)
        high = self._eval_poly(cs[m:], powers, w)
        if _is_const(high):
            prod = self._product_raw(powers[j], high, scale)
            return (terms if prod is None else [*terms, prod]), const
        return [*terms, self._tensor(powers[j], high)], const

    def _eval_poly(self, cs: list[float], powers: list[Ct], w: FloatArray | None) -> Ct | _Const:
        """w * sum cs[k] x**k with multiplicative depth ceil(log2(len(cs))); plaintext if constant."""
        terms, const = self._poly_terms(cs, powers, w)
        if not terms:
            return const
        level = min(primes_of(t) for t in terms)
        acc = self._lowered(terms[0], level)
        for term in terms[1:]:
            acc = self._add(acc, self._lowered(term, level))
        return self._finish(self._add_plain(acc, const))

    def rerandomize(self, a: CKKSVec) -> CKKSVec:
        """Fresh randomness for every part (docs/CKKS.md, "Randomness").

        A pristine vector (straight out of ``encrypt``, never serialized or
        rerandomized) is handed over as is and loses the flag; anything else
        gets a fresh encryption of zero added at its own level.
        """
        self._check(a)
        if a.pristine:
            a.pristine = False
            return CKKSVec(a.parts, a.length, pristine=True)
        parts = tuple(self._add(p, self._fresh_zero(primes_of(p))) for p in a.parts)
        return CKKSVec(parts, a.length, pristine=True)

    # -- serialization ------------------------------------------------------

    def _header(self, kind: int) -> bytes:
        return HEADER.pack(MAGIC, VERSION, kind, self._key_id_raw)

    def _parse_header(self, data: bytes, kind: int) -> int:
        if len(data) < HEADER.size:
            raise ValueError("truncated CKKS payload")
        magic, version, got_kind, key_id = HEADER.unpack_from(data, 0)
        if magic != MAGIC or version != VERSION:
            raise ValueError("not a CKKS payload of this version")
        if got_kind != kind:
            raise ValueError("unexpected CKKS payload kind")
        if key_id != self._key_id_raw:
            raise ValueError("CKKS payload is bound to another key")
        return HEADER.size

    def _load_part(self, blob: bytes) -> Ct:
        """Deserialize one ciphertext and check it is a well-formed part of this key."""
        if len(blob) > self._max_ct_blob:
            raise ValueError("CKKS ciphertext is larger than any of this key's")
        ct = seal.Ciphertext()
        seal_load(ct, self._context, blob, "ciphertext")
        if ct.size() != 2 or not ct.is_ntt_form() or ct.poly_modulus_degree() != self._params.poly_modulus_degree:
            raise ValueError("CKKS ciphertext has unexpected parameters")
        if self._pids.get(primes_of(ct)) != list(ct.parms_id()):
            raise ValueError("CKKS ciphertext is not at a data level of this key's chain")
        if not abs(ct.scale / self._params.scale - 1.0) < 1e-9:
            raise ValueError("CKKS ciphertext has an unexpected scale")
        if ct.is_transparent():
            raise ValueError("CKKS ciphertext is transparent (not encrypted)")
        ct.scale = self._params.scale
        return ct

    def serialize(self, a: CKKSVec) -> bytes:
        self._check(a)
        a.pristine = False  # its randomness is out: a rerandomized copy must get new randomness
        fields = VEC_FIELDS.pack(a.length, len(a.parts))
        return self._header(KIND_VECTOR) + fields + pack_blobs([seal_save(p) for p in a.parts])

    def deserialize(self, data: bytes) -> CKKSVec:
        offset = self._parse_header(data, KIND_VECTOR)
        if len(data) < offset + VEC_FIELDS.size:
            raise ValueError("truncated CKKS payload")
        length, count = VEC_FIELDS.unpack_from(data, offset)
        if length == 0 or count != layout(length, self.slots)[0]:
            raise ValueError("CKKS payload length and ciphertext count disagree")
        blobs = unpack_blobs(data[offset + VEC_FIELDS.size :])
        if len(blobs) != count:
            raise ValueError("CKKS payload ciphertext count mismatch")
        return CKKSVec(tuple(self._load_part(b) for b in blobs), int(length))
