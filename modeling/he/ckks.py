"""CKKS backend (Microsoft SEAL 4, through the ``sealapi`` binding TenSEAL ships): batched, approximate, fast.

Why CKKS here: one ciphertext packs ``N/2`` values (8192 at N = 16384), so a
training step costs a handful of ciphertext operations instead of one modular
exponentiation per row (Paillier), and the bank can evaluate a real
polynomial sigmoid on ciphertexts instead of a first-order Taylor line.

Why SEAL's own binding and not TenSEAL's ``CKKSVector``: TenSEAL encodes every
plaintext operand at the *top* of the modulus chain and mod-switches it down,
cannot encrypt at a lower level, and has no complex slots. Driving SEAL
directly, every plaintext is encoded at the level it is used at, fresh
encryptions of zero are drawn at the level they are added at, and a feature
product packs two columns per ciphertext (real and imaginary parts, below):
a training step costs about half the CPU (measured in ``xinrong bench
train``). TenSEAL stays the packaging: it ships SEAL and this binding.

Parameters and the level budget (defaults)
------------------------------------------
``poly_modulus_degree = 16384``, ``coeff_mod_bit_sizes = [60, 40, 40, 40, 40,
40, 60]`` (320 bits; SEAL allows 438 at N = 16384 for 128-bit security, each
prime <= 60 bits), scale ``2**40``. The last prime is SEAL's special
key-switching prime; the other six hold data, so a fresh ciphertext can be
rescaled five times. One training step spends them like this::

    fresh [[u_i]] (6 primes, 260 bits)
      z = sum [[u_i]] + u_b                 additions, no level
      w * polyval(z, degree <= 7)           3 levels  (depth ceil(log2(deg+1));
                                            per-row weights ride on the coefficients)
      * feature columns (masked_column_sums) 1 level
    -> 2 primes left = 100 bits for the masked products

``max_degree`` is derived from the chain: 2**(levels - 1 - spare) - 1, where
``spare`` is the number of primes the masks need. With the defaults that is
2**3 - 1 = 7, so the degree-5 sigmoid the protocol needs on nearly separable
data fits, and a cubic leaves a level unused. ``polyval`` reaches depth
ceil(log2(deg+1)) (a power-tree split ``p = low + x**m * high``), one level
less than TenSEAL's own ``polyval`` for odd degrees. Per-row weights
(``row_weights``: 0 for the bank's decoy rows) multiply the *coefficients*
of the degree-1 leaves of that tree, so they cost no level of their own.

Masked decryption (``masked_column_sums`` / ``masked_total``)
--------------------------------------------------------------
The key owner must learn only sums, and not even those: every slot it
decrypts is ``a_i * x_ij + r_i`` with ``r_i`` uniform on ``[-R, R]`` from the
OS CSPRNG, and it returns per-column slot sums, which the sender unmasks by
subtracting ``sum r_i``. No rotation (Galois) keys are needed, so the public
context stays small, and the products are plain per-slot multiplications.

*Two columns per product.* CKKS slots are complex numbers; ``a`` is real, so
multiplying it by the complex plaintext ``x_j + i*x_k`` puts ``a*x_j`` in the
real and ``a*x_k`` in the imaginary parts, and the real and imaginary masks
``r + i*r'`` are independent uniforms: half the products, half the payloads,
half the key owner's decryptions. (``a``'s imaginary parts are CKKS noise,
~1e-9..1e-7; they add ``-Im(a)*x_k`` to the real sums, the same order as the
secret-dependent error the flooding below covers.) Before the product ``a``
is mod-switched down to one prime above the mask level, so the product and
its rescale run on three primes, not on whatever ``a`` had left.

*Hiding.* For a slot value ``v`` the statistical distance between the masked
slot and pure mask is ``|v| / (2R)`` (per real component). ``R =
2**mask_bits * value_bound * xscale`` where ``value_bound`` (public
parameter, default 1) is the protocol's promise ``|a_i| <= value_bound`` and
``xscale`` is ``max |x|`` rounded up to a power of two (the only thing the
masks reveal about x). With ``mask_bits = 40`` every component is within
2**-41 of uniform; a 21,000 x 12 payload (98,304 components) within ~2**-24
(union bound), and 600 such payloads (a 20-epoch job, three parties) within
~2**-15. The released sums are hidden by the sums of the slot masks.

*Room and precision.* Masked slots are ~2**42 * value_bound, so the scaled
plaintext needs 42 + 40 bits plus margin: the product is rescaled to the
smallest level that still has ``mask_bits + scale_bits + log2(value_bound *
xscale) + 6`` bits (two primes, 100 bits, by default) and the masking code
refuses (ValueError) if the input has less, rather than wrapping silently.
SEAL decodes to float64, so each masked slot carries a decoding error of
about ``R * 2**-52.4`` (measured); a column sum over 2,000 / 8,192 / 21,000
rows has a decoding error of std 0.03 / 0.07 / 0.07 (value_bound 1, |x| <=
3). **The protocol must therefore send sums, not means**: keep ``|a_i|`` of
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
  sigmoid on normalized logits, one plaintext product; repeated encryptions
  of the same data). The floor 2**-5 is 2**13 above that, so a release
  carries at most (e/sigma)**2 / 2 ~ 2**-27 nats about the error, and
  thousands of releases a small fraction of a bit about the key. For honest
  masks the second term rules (sigma 0.35 for 2,000-row blocks, 0.7 for
  8,192 slots): ~2**17 above the CKKS error and ~10x the float64 decoding
  residue, a deterministic pseudo-random function of the decrypted
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

Scales: a plaintext factor is encoded at the scale of the prime the product
is about to be rescaled by, so plaintext products keep the scale 2**40
exactly. Ciphertext-ciphertext products (inside ``polyval``) are pinned back
to 2**40 after their rescale, although SEAL's 40-bit primes lie 1.4e-6..5.3e-6
below 2**40: each multiplies values by (1 - ~4e-6), a deterministic relative
error of up to ~2e-5 after a degree-7 polynomial, irrelevant for LR. Keep
polyval inputs normalized (see ``CKKSPublic.polyval``).

Randomness
----------
``encrypt`` draws a fresh public-key encryption; ``rerandomize`` adds a fresh
encryption of zero at the ciphertext's own level (cheaper at low levels, and
``c1`` of the sum is uniform given the fresh ``u``, so the receiver cannot
strip a contribution it knows). A vector straight out of ``encrypt`` whose
randomness has not left this party yet is *pristine*: its first
``rerandomize`` hands that randomness over instead of adding more (which
would not change its distribution), the input loses the flag, and
``serialize`` clears it too, so two ciphertexts that leave a party never
share randomness (the Paillier backend does the same).

Serialization
-------------
Only SEAL's own serialization (its header, zstd-compressed body, and
``is_valid_for`` check against the parameters on load), wrapped in a small
binary header: magic, version, kind, 16-byte key id, lengths; each ciphertext
is checked on load against the key's parameters (a data level of this chain,
size 2, NTT form, scale, not transparent) and a size cap. Never pickle. The
binding saves and loads through a file path only, so the bytes pass through
an anonymous in-memory file (``memfd``; a private temporary directory where
memfd is missing) and never touch a disk. Compression is SEAL's compiled-in
default (zstd); the binding offers no other mode, so there is nothing to
choose without patching C++. Measured: saving costs 3 ms for a masked payload
ciphertext (2 primes) and 15 ms for a fresh one (6 primes), loading 0.7 and
3.5 ms, and zstd saves 12 % and 20 % of their bytes (40-bit residues in
64-bit words); per default_credit training batch, saving and loading take
~95 ms of CPU across all parties and compression saves 1.7 of 11.5 MB.

The public key material is a SEAL public key (1.5 MB at the defaults) plus,
for the party that evaluates the sigmoid, the relinearization keys (9.1 MB;
above gRPC's 4 MB default, our servers allow 64 MB);
``public_bytes(with_relin_keys=False)`` omits them for parties that never
multiply two ciphertexts (providers in training, everyone in scoring). Both
variants have the same ``key_id``. Ciphertext sizes at the defaults: 1.25 MB
fresh (6 primes), 0.66 MB for the residual (3 primes), 0.46 MB per masked
payload ciphertext (2 primes, two columns).

Vectors longer than N/2 span several ciphertexts (``CKKSVec.parts``);
vectors of at most N/4 are tiled (several copies in one ciphertext) so
``masked_column_sums`` packs ``2 * copies`` columns into one product
ciphertext.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as seal

from xinrong.modeling.he.base import FloatArray, pack_blobs, unpack_blobs

log = logging.getLogger(__name__)

SCHEME = "ckks"

DEFAULT_POLY_MODULUS_DEGREE = 16384
DEFAULT_COEFF_MOD_BIT_SIZES = (60, 40, 40, 40, 40, 40, 60)
DEFAULT_SCALE_BITS = 40
DEFAULT_MASK_BITS = 40
DEFAULT_VALUE_BOUND = 1.0
DEFAULT_FLOOD_FLOOR_LOG2 = -5

# Levels the training protocol spends after polyval: the feature columns
# (per-row weights ride on the polynomial's coefficients).
_PLAIN_PRODUCTS_AFTER_POLY = 1
# Extra bits kept free above the masked values (carry, prime sizes just
# below 2**bits, the sign, |r + i r'| <= sqrt(2) R).
_MASK_MARGIN_BITS = 6
# The mask room assumes |x| <= 8 (standardized, clipped columns).
_ASSUMED_XSCALE_LOG2 = 3
# Relative size of the data-dependent flooding term (see module docstring).
_FLOOD_REL_LOG2 = -49

# 128-bit security: maximal total coefficient modulus bits per degree
# (HomomorphicEncryption.org standard, as enforced by SEAL).
_MAX_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}

_MAGIC = b"XRCK"
_VERSION = 2
_KIND_VECTOR = 1
_KIND_COLUMN_SUMS = 2
_KIND_TOTAL = 3
_HEADER = struct.Struct(">4sBB16s")  # magic, version, kind, key id
_VEC_FIELDS = struct.Struct(">QI")  # length, ciphertext count
_COL_FIELDS = struct.Struct(">IIII")  # k, block length, columns per ciphertext (2 per block), ciphertexts
_TOTAL_FIELDS = struct.Struct(">QI")  # length, ciphertext count
_PUBLIC_MAGIC = b"XRCKPUB2"
_SECRET_MAGIC = b"XRCKSEC2"
# Upper bound on the number of columns in one masked payload (sanity check
# on untrusted headers before any allocation).
_MAX_COLUMNS = 1 << 16

_Ct = Any  # seal.Ciphertext (untyped binding)
_Pt = Any  # seal.Plaintext
_Ctx = Any  # seal.SEALContext
ComplexArray = npt.NDArray[np.complex128]
_Const = float | FloatArray  # a plaintext value inside polyval (scalar or per-slot)


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
            self.mask_bits + self.scale_bits + math.ceil(math.log2(self.value_bound)) + xscale_log2 + _MASK_MARGIN_BITS
        )

    def mask_level(self, xscale_log2: int) -> int:
        """Fewest data primes that hold masked values of |x| <= 2**xscale_log2 (data_primes + 1: never)."""
        need = self.mask_room_bits(xscale_log2)
        for primes in range(1, self.data_primes + 1):
            if self.modulus_bits(primes) >= need:
                return primes
        return self.data_primes + 1

    def mask_primes(self) -> int:
        """Fewest data primes that hold masked values of |x| <= 2**_ASSUMED_XSCALE_LOG2."""
        return self.mask_level(_ASSUMED_XSCALE_LOG2)

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
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError("malformed CKKS parameters") from exc
        params.validate()
        return params


@dataclass(eq=False)
class CKKSVec:
    """An encrypted vector: SEAL ciphertexts of ``slots`` values each, plus the logical length.

    Each part always spans every slot: either consecutive ``slots``-sized
    pieces of the vector, zero padded, or, when the vector fits ``copies >=
    2`` times, the vector tiled ``copies`` times. Parts are never modified in
    place by this module (every operation returns new ciphertexts), so
    vectors may share parts.
    """

    parts: tuple[_Ct, ...] = field(repr=False)
    length: int
    # Randomness drawn by this party that has not left it yet (see the module docstring).
    pristine: bool = field(default=False, repr=False)
    # Powers x**(2**j) of each part, computed by polyval and shared by later polyvals of the same vector.
    _powers: dict[int, list[_Ct]] = field(default_factory=dict, repr=False)


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


def _exact_sum(values: FloatArray) -> float:
    """The correctly rounded sum (``math.fsum``): a pairwise float sum of 2**43-sized masks errs by units."""
    return math.fsum(values.tolist())  # a list is ~1/3 faster to walk than a NumPy array


def _pow2_ceil_log2(value: float) -> int:
    """ceil(log2(value)) for value > 0, exact at powers of two."""
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else exponent


def _seal_error(exc: Exception) -> ValueError:
    """SEAL's C++ exceptions (RuntimeError / ValueError through the binding) as our ValueError."""
    text = str(exc)
    if "end of modulus switching chain" in text or "scale out of bounds" in text:
        return ValueError("CKKS modulus chain exhausted: the computation is deeper than the parameters allow")
    if "encoded values are too large" in text:
        return ValueError("CKKS value too large for the modulus left at this level")
    return ValueError(f"CKKS operation failed: {text}")


# -- SEAL's path-based serialization, kept in memory ------------------------------------------

_SCRATCH_LOCK = threading.Lock()
_SCRATCH_DIR: tempfile.TemporaryDirectory[str] | None = None
_HAVE_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _scratch_file() -> tuple[int, str, str | None]:
    """An empty file SEAL can open by path: (fd, path, path to unlink afterwards).

    Linux: an anonymous memfd, reachable only through this process's
    ``/proc/self/fd``; it lives in RAM and vanishes on close. Elsewhere: a
    file in a private (0700) temporary directory, unlinked right after use.
    """
    if _HAVE_MEMFD:
        fd = os.memfd_create("xinrong-ckks", os.MFD_CLOEXEC)
        return fd, f"/proc/self/fd/{fd}", None
    global _SCRATCH_DIR
    with _SCRATCH_LOCK:
        if _SCRATCH_DIR is None:
            _SCRATCH_DIR = tempfile.TemporaryDirectory(prefix="xinrong-ckks-")
        directory = _SCRATCH_DIR.name
    fd, path = tempfile.mkstemp(dir=directory)
    return fd, path, path


def _seal_save(obj: Any) -> bytes:
    """SEAL's own serialization of a ciphertext or key, as bytes."""
    fd, path, unlink = _scratch_file()
    try:
        obj.save(path)
        size = os.fstat(fd).st_size
        chunks = []
        offset = 0
        while offset < size:
            chunk = os.pread(fd, size - offset, offset)
            if not chunk:
                raise OSError("short read from the serialization buffer")
            chunks.append(chunk)
            offset += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
        if unlink is not None:
            os.unlink(unlink)


def _seal_load(obj: Any, context: _Ctx, data: bytes, what: str) -> None:
    """Load SEAL bytes into ``obj``; SEAL checks them against ``context`` (``is_valid_for``)."""
    fd, path, unlink = _scratch_file()
    try:
        view = memoryview(data)
        offset = 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        obj.load(context, path)
    except (RuntimeError, ValueError, TypeError) as exc:  # SEAL's validation failures
        raise ValueError(f"malformed CKKS {what}") from exc
    finally:
        os.close(fd)
        if unlink is not None:
            os.unlink(unlink)


@functools.lru_cache(maxsize=8)
def _seal_context(params: CKKSParams) -> _Ctx:
    """A SEAL context for the parameters; SEAL itself enforces 128-bit security.

    Cached: building one at N = 16384 takes ~60 ms (NTT tables), and a
    context is immutable and safe to share between key objects and threads.
    """
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(seal.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)))
    context = seal.SEALContext(parms, True, seal.SEC_LEVEL_TYPE.TC128)
    if not context.parameters_set():
        raise ValueError(f"SEAL rejected the CKKS parameters: {context.parameters_error_message()}")
    return context


def _key_id(params: CKKSParams, public_key_blob: bytes) -> bytes:
    """16 bytes binding the parameters and the public key (not the relinearization keys)."""
    digest = hashlib.sha256(b"xinrong/ckks/key-id\x00" + params.to_json() + b"\x00" + public_key_blob)
    return digest.digest()[:16]


def _primes(ct: _Ct) -> int:
    """Data primes left in a ciphertext (its level)."""
    return int(ct.coeff_modulus_size())


def _is_const(value: Any) -> bool:
    return isinstance(value, (float, np.ndarray))


class CKKSPublic:
    """Everything a party can do with the public key (encrypt, evaluate, mask)."""

    scheme = SCHEME

    def __init__(
        self,
        params: CKKSParams,
        context: _Ctx,
        public_key: Any,
        public_key_blob: bytes,
        relin_keys: Any = None,
    ) -> None:
        self._params = params
        self._context = context
        self._pk_blob = public_key_blob
        self._key_id_raw = _key_id(params, public_key_blob)
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

    def _fresh_zero(self, primes: int) -> _Ct:
        """A fresh public-key encryption of zero, drawn at the level it will be used at."""
        out = seal.Ciphertext()
        self._encryptor.encrypt_zero(self._pids[primes], out)
        out.scale = self._params.scale
        return out

    def _encrypt_slots(self, values: Any, primes: int | None = None) -> _Ct:
        pt = self._encode(values, primes or self._params.data_primes, self._params.scale)
        out = seal.Ciphertext()
        self._encryptor.encrypt(pt, out)
        return out

    def _lowered(self, ct: _Ct, primes: int) -> _Ct:
        """``ct`` mod-switched down to ``primes`` data primes (no rescale: the value is unchanged)."""
        have = _primes(ct)
        if have == primes:
            return ct
        if have < primes:
            raise ValueError("cannot raise a ciphertext to a higher level")
        out = seal.Ciphertext()
        self._evaluator.mod_switch_to(ct, self._pids[primes], out)
        return out

    def _same_level(self, a: _Ct, b: _Ct) -> tuple[_Ct, _Ct]:
        level = min(_primes(a), _primes(b))
        return self._lowered(a, level), self._lowered(b, level)

    def _add(self, a: _Ct, b: _Ct) -> _Ct:
        a, b = self._same_level(a, b)
        out = seal.Ciphertext()
        try:
            self._evaluator.add(a, b, out)
        except (RuntimeError, ValueError) as exc:
            raise _seal_error(exc) from exc
        return out

    def _add_plain(self, ct: _Ct, values: _Const) -> _Ct:
        pt = self._encode(values, _primes(ct), ct.scale)
        if pt.is_zero():
            return ct
        out = seal.Ciphertext()
        self._evaluator.add_plain(ct, pt, out)
        return out

    def _product_raw(self, ct: _Ct, values: Any, scale: float | None = None) -> _Ct | None:
        """ct * values without the rescale (None when the plaintext is all zero).

        By default the plaintext is encoded at the scale of the prime the
        rescale will drop, so after it the product is at scale 2**scale_bits
        exactly; ``polyval`` passes 2**scale_bits to collect products of
        one scale before a single rescale.
        """
        primes = _primes(ct)
        if primes < 2:
            raise ValueError("CKKS modulus chain exhausted: the computation is deeper than the parameters allow")
        pt = self._encode(values, primes, self._last_prime[primes] if scale is None else scale)
        if pt.is_zero():
            return None  # SEAL refuses a transparent (all-zero) product
        out = seal.Ciphertext()
        self._evaluator.multiply_plain(ct, pt, out)
        return out

    def _rescaled(self, ct: _Ct) -> _Ct:
        try:
            self._evaluator.rescale_to_next_inplace(ct)
        except (RuntimeError, ValueError) as exc:
            raise _seal_error(exc) from exc
        ct.scale = self._params.scale
        return ct

    def _mul_plain(self, ct: _Ct, values: Any) -> _Ct:
        """ct * values, rescaled: one level. A zero factor gives a fresh encryption of zero."""
        out = self._product_raw(ct, values)
        if out is None:
            return self._fresh_zero(_primes(ct) - 1)
        return self._rescaled(out)

    def _tensor(self, a: _Ct, b: _Ct) -> _Ct:
        """a * b as a size-3 ciphertext at scale 2**(2 * scale_bits): neither relinearized nor rescaled."""
        self._relin_keys()  # no relinearization keys: no ciphertext products at all
        a, b = self._same_level(a, b)
        if _primes(a) < 2:
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

    def _finish(self, ct: _Ct) -> _Ct:
        """Relinearize (if size 3), rescale and pin the scale: a product becomes a normal ciphertext."""
        if ct.size() > 2:
            try:
                self._evaluator.relinearize_inplace(ct, self._relin_keys())
            except (RuntimeError, ValueError) as exc:
                raise _seal_error(exc) from exc
        return self._rescaled(ct)

    def _mul(self, a: _Ct, b: _Ct) -> _Ct:
        """a * b (relinearized, rescaled, scale pinned): one level."""
        return self._finish(self._tensor(a, b))

    # -- encoding helpers ---------------------------------------------------

    def _plain_parts(self, values: npt.NDArray[Any], length: int) -> list[npt.NDArray[Any]]:
        """Per-ciphertext slot vectors for a plaintext operand, in the vector layout."""
        slots = self.slots
        count, copies = _layout(length, slots)
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
        count, _ = _layout(a.length, self.slots)
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
            left = _primes(part) - 1
            if depth > left:
                raise ValueError(f"polyval needs {depth} levels, the ciphertext has {left} left")
            powers = a._powers.setdefault(idx, [part])
            while 2 ** len(powers) <= degree:
                powers.append(self._mul(powers[-1], powers[-1]))
            result = self._eval_poly(cs, powers, None if weights is None else weights[idx])
            if _is_const(result):
                # Constant polynomial: a fresh encryption of that constant.
                result = self._encrypt_slots(self._const_slots(result), _primes(part))
            parts.append(result)
        return CKKSVec(tuple(parts), a.length)

    def _const_slots(self, value: _Const) -> list[float]:
        if isinstance(value, np.ndarray):
            out: list[float] = value.tolist()
            return out
        return [float(value)] * self.slots

    def _poly_terms(self, cs: list[float], powers: list[_Ct], w: FloatArray | None) -> tuple[list[_Ct], _Const]:
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

    def _eval_poly(self, cs: list[float], powers: list[_Ct], w: FloatArray | None) -> _Ct | _Const:
        """w * sum cs[k] x**k with multiplicative depth ceil(log2(len(cs))); plaintext if constant."""
        terms, const = self._poly_terms(cs, powers, w)
        if not terms:
            return const
        level = min(_primes(t) for t in terms)
        acc = self._lowered(terms[0], level)
        for term in terms[1:]:
            acc = self._add(acc, self._lowered(term, level))
        return self._finish(self._add_plain(acc, const))

    def rerandomize(self, a: CKKSVec) -> CKKSVec:
        """Fresh randomness for every part (see the module docstring).

        A pristine vector (straight out of ``encrypt``, never serialized or
        rerandomized) is handed over as is and loses the flag; anything else
        gets a fresh encryption of zero added at its own level.
        """
        self._check(a)
        if a.pristine:
            a.pristine = False
            return CKKSVec(a.parts, a.length, pristine=True)
        parts = tuple(self._add(p, self._fresh_zero(_primes(p))) for p in a.parts)
        return CKKSVec(parts, a.length, pristine=True)

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

    def _load_part(self, blob: bytes) -> _Ct:
        """Deserialize one ciphertext and check it is a well-formed part of this key."""
        if len(blob) > self._max_ct_blob:
            raise ValueError("CKKS ciphertext is larger than any of this key's")
        ct = seal.Ciphertext()
        _seal_load(ct, self._context, blob, "ciphertext")
        if ct.size() != 2 or not ct.is_ntt_form() or ct.poly_modulus_degree() != self._params.poly_modulus_degree:
            raise ValueError("CKKS ciphertext has unexpected parameters")
        if self._pids.get(_primes(ct)) != list(ct.parms_id()):
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
        fields = _VEC_FIELDS.pack(a.length, len(a.parts))
        return self._header(_KIND_VECTOR) + fields + pack_blobs([_seal_save(p) for p in a.parts])

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

    def _mask_part(self, ct: _Ct, bound: float, xscale_log2: int, *, complex_masks: bool) -> tuple[_Ct, ComplexArray]:
        """Mask every slot of ``ct`` (already at the mask level) with fresh uniforms on [-bound, bound)."""
        need = self._params.mask_room_bits(xscale_log2)
        have = self._params.modulus_bits(_primes(ct))
        if have < need:
            raise ValueError(f"not enough modulus left to mask: {have} bits, need {need}")
        masks: ComplexArray = _uniform_masks(self.slots, bound).astype(np.complex128)
        if complex_masks:
            masks.imag = _uniform_masks(self.slots, bound)
        pt = self._encode(masks if complex_masks else masks.real, _primes(ct), ct.scale)
        out = seal.Ciphertext()
        self._evaluator.add_plain(ct, pt, out)
        return out, masks

    def _mask_target(self, a: CKKSVec, xscale_log2: int) -> int:
        """The mask level for ``a``; refuses (ValueError) if ``a`` is already below it."""
        target = self._params.mask_level(xscale_log2)
        have = min(_primes(p) for p in a.parts)
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
        if k > _MAX_COLUMNS:
            raise ValueError("too many columns in one payload")
        slots = self.slots
        xmax = float(np.max(np.abs(xm)))
        xscale_log2 = _pow2_ceil_log2(xmax) if xmax > 0 else 0
        bound = 2.0**self._params.mask_bits * self._params.value_bound * 2.0**xscale_log2
        target = self._mask_target(a, xscale_log2)
        if min(_primes(p) for p in a.parts) < target + 1:
            raise ValueError(
                f"not enough modulus left to mask: the feature product needs {target + 1} primes; "
                "the chain is too short for this computation"
            )
        # Products at one prime above the mask level: cheaper, and the rescale lands on it.
        parts = [self._lowered(p, target + 1) for p in a.parts]
        count, copies = _layout(n, slots)
        products: list[_Ct] = []
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
                acc: _Ct | None = None
                for part, plain in zip(parts, self._plain_parts(column, n)):
                    prod = self._product_raw(part, plain)
                    if prod is not None:
                        acc = prod if acc is None else self._add(acc, prod)
                products.append(self._fresh_zero(target) if acc is None else self._rescaled(acc))
        blobs = []
        offsets = np.empty(k)
        for i, prod in enumerate(products):
            masked, masks = self._mask_part(prod, bound, xscale_log2, complex_masks=True)
            blobs.append(_seal_save(masked))
            for b in range(per_ct // 2):
                j = i * per_ct + 2 * b
                block = masks[b * block_len : (b + 1) * block_len]
                if j < k:
                    offsets[j] = _exact_sum(block.real)
                if j + 1 < k:
                    offsets[j + 1] = _exact_sum(block.imag)
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
            blobs.append(_seal_save(masked))
            used = min(slots, a.length - c * slots) if len(a.parts) > 1 else a.length
            offset_terms.append(_exact_sum(masks.real[:used]))
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

    def __init__(
        self,
        params: CKKSParams,
        context: _Ctx,
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
                    self._relin_blob = _seal_save(self._relin_keys())
                relin = self._relin_blob
            blob = _PUBLIC_MAGIC + pack_blobs([self._params.to_json(), self._pk_blob, relin])
            self._public_cache[with_relin_keys] = blob
        return blob

    def secret_bytes(self) -> bytes:
        """The key pair, for the owner's own disk only (write it 0600; never send it)."""
        if self._relin_blob is None:
            self._relin_blob = _seal_save(self._relin_keys())
        secret_blob = _seal_save(self._secret_key)
        return _SECRET_MAGIC + pack_blobs([self._params.to_json(), self._pk_blob, secret_blob, self._relin_blob])

    def _slots_of(self, part: _Ct) -> ComplexArray:
        """Every slot of one ciphertext (complex: the column sums use both parts)."""
        pt = seal.Plaintext()
        self._decryptor.decrypt(part, pt)
        return np.asarray(self._encoder.decode_complex(pt), dtype=np.complex128)

    def _real_slots_of(self, part: _Ct) -> FloatArray:
        pt = seal.Plaintext()
        self._decryptor.decrypt(part, pt)
        return np.asarray(self._encoder.decode_double(pt), dtype=np.float64)

    def decrypt(self, a: CKKSVec) -> FloatArray:
        self._check(a)
        values = np.concatenate([self._real_slots_of(p) for p in a.parts])
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
        if not (1 <= k <= _MAX_COLUMNS and block_len >= 1 and per_ct >= 2 and per_ct % 2 == 0):
            raise ValueError("malformed column-sum header")
        if block_len * (per_ct // 2) > self.slots or count != -(-k // per_ct):
            raise ValueError("column-sum layout does not fit the ciphertexts")
        blobs = unpack_blobs(payload[offset + _COL_FIELDS.size :])
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
                        sums[j] = self._release(_exact_sum(component), component)
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
            values = self._real_slots_of(self._load_part(blob))
            used = min(self.slots, length - c * self.slots) if count > 1 else length
            used_blocks.append(values[:used])
        block = np.concatenate(used_blocks)
        return self._release(_exact_sum(block), block)


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


def keygen(
    *,
    poly_modulus_degree: int = DEFAULT_POLY_MODULUS_DEGREE,
    coeff_mod_bit_sizes: Sequence[int] = DEFAULT_COEFF_MOD_BIT_SIZES,
    scale_bits: int = DEFAULT_SCALE_BITS,
    mask_bits: int = DEFAULT_MASK_BITS,
    value_bound: float = DEFAULT_VALUE_BOUND,
    flood_floor_log2: int = DEFAULT_FLOOD_FLOOR_LOG2,
) -> CKKSSecret:
    """A fresh key pair; parameters are checked for 128-bit security and the level budget.

    Relinearization keys are made on first use (``public_bytes()`` with them,
    or the key owner's own ``polyval``): a scoring key never needs them.
    """
    params = CKKSParams(
        poly_modulus_degree=poly_modulus_degree,
        coeff_mod_bit_sizes=tuple(coeff_mod_bit_sizes),
        scale_bits=scale_bits,
        mask_bits=mask_bits,
        value_bound=value_bound,
        flood_floor_log2=flood_floor_log2,
    )
    params.validate()
    context = _seal_context(params)
    generator = seal.KeyGenerator(context)
    public_key = seal.PublicKey()
    generator.create_public_key(public_key)
    secret = CKKSSecret(params, context, generator.secret_key(), public_key, _seal_save(public_key))
    log.info(
        "ckks keygen N=%d chain=%s key=%s", params.poly_modulus_degree, params.coeff_mod_bit_sizes, secret.key_id()
    )
    return secret


def _split(data: bytes, magic: bytes, count: int, what: str) -> list[bytes]:
    if not data.startswith(magic):
        raise ValueError(f"not a CKKS {what}")
    blobs = unpack_blobs(data[len(magic) :])
    if len(blobs) != count:
        raise ValueError(f"malformed CKKS {what}")
    return blobs


def load_public(data: bytes) -> CKKSPublic:
    """The public side, from ``CKKSSecret.public_bytes()``: a public key and optional relinearization keys."""
    params_json, pk_blob, relin_blob = _split(data, _PUBLIC_MAGIC, 3, "public key")
    params = CKKSParams.from_json(params_json)
    context = _seal_context(params)
    public_key = seal.PublicKey()
    _seal_load(public_key, context, pk_blob, "public key")
    relin = None
    if relin_blob:
        relin = seal.RelinKeys()
        _seal_load(relin, context, relin_blob, "relinearization keys")
    return CKKSPublic(params, context, public_key, pk_blob, relin)


def load_secret(data: bytes) -> CKKSSecret:
    """The key owner's side, from ``CKKSSecret.secret_bytes()`` (owner's own storage only)."""
    params_json, pk_blob, secret_blob, relin_blob = _split(data, _SECRET_MAGIC, 4, "secret key")
    params = CKKSParams.from_json(params_json)
    context = _seal_context(params)
    public_key = seal.PublicKey()
    _seal_load(public_key, context, pk_blob, "public key")
    secret_key = seal.SecretKey()
    _seal_load(secret_key, context, secret_blob, "secret key")
    relin = seal.RelinKeys()
    _seal_load(relin, context, relin_blob, "relinearization keys")
    return CKKSSecret(params, context, secret_key, public_key, pk_blob, relin, relin_blob)


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
    # Degree-7 least-squares sigmoid fit on [-10, 10], in normalized units t = z / 10.
    grid = np.linspace(-1.0, 1.0, 2001)
    coeffs = [float(c) for c in np.polynomial.polynomial.polyfit(grid, 1.0 / (1.0 + np.exp(-10.0 * grid)), 7)]
    for n in sizes:
        z = rng.uniform(-1, 1, n)
        xcols = rng.uniform(-3, 3, (n, columns))
        enc = public.encrypt(z)
        residual = public.polyval(enc, coeffs)
        payload, mask = public.masked_column_sums(residual, xcols)
        row = {
            "encrypt_s": median(lambda: public.encrypt(z)),
            "rerandomize_s": median(lambda: public.rerandomize(residual)),
            "polyval7_s": median(lambda: public.polyval(public.add_plain(enc, 0.0), coeffs)),
            "mul_plain_s": median(lambda: public.mul_plain(residual, z)),
            "decrypt_s": median(lambda: secret.decrypt(enc)),
            "serialize_fresh_s": median(lambda: public.serialize(enc)),
            "fresh_ciphertext_bytes": len(public.serialize(enc)),
            "residual_ciphertext_bytes": len(public.serialize(residual)),
            f"masked_column_sums_{columns}_s": median(lambda: public.masked_column_sums(residual, xcols)),
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
