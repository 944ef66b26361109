"""Public CKKS parameters: the defaults, 128-bit security, the level budget, and the SEAL context."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import tenseal.sealapi as seal

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

# 128-bit security: maximal total coefficient modulus bits per degree
# (HomomorphicEncryption.org standard, as enforced by SEAL).
_MAX_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}

SealContext = Any  # seal.SEALContext (untyped binding)


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


@functools.lru_cache(maxsize=8)
def seal_context(params: CKKSParams) -> SealContext:
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
