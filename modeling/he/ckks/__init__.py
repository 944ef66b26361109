"""CKKS backend (Microsoft SEAL 4, through the ``sealapi`` binding TenSEAL ships): batched, approximate, fast.

The design (parameters and the level budget, masked decryption, IND-CPA-D
flooding, randomness, serialization) is written up in ``docs/CKKS.md``, with
a map of the modules of this package. ``xinrong.modeling.he.base`` loads this
package as the ``ckks`` backend: ``keygen``, ``load_public`` and the key
classes below are its interface.
"""

from xinrong.modeling.he.ckks.bench import benchmark
from xinrong.modeling.he.ckks.decrypt import CKKSSecret, flood_parameters
from xinrong.modeling.he.ckks.evaluator import CKKSVec, ComplexArray
from xinrong.modeling.he.ckks.keypair import keygen, load_public, load_secret
from xinrong.modeling.he.ckks.masking import CKKSPublic, ColumnMask, TotalMask
from xinrong.modeling.he.ckks.params import (
    DEFAULT_COEFF_MOD_BIT_SIZES,
    DEFAULT_FLOOD_FLOOR_LOG2,
    DEFAULT_MASK_BITS,
    DEFAULT_POLY_MODULUS_DEGREE,
    DEFAULT_SCALE_BITS,
    DEFAULT_VALUE_BOUND,
    SCHEME,
    CKKSParams,
)

__all__ = [
    "DEFAULT_COEFF_MOD_BIT_SIZES",
    "DEFAULT_FLOOD_FLOOR_LOG2",
    "DEFAULT_MASK_BITS",
    "DEFAULT_POLY_MODULUS_DEGREE",
    "DEFAULT_SCALE_BITS",
    "DEFAULT_VALUE_BOUND",
    "SCHEME",
    "CKKSParams",
    "CKKSPublic",
    "CKKSSecret",
    "CKKSVec",
    "ColumnMask",
    "ComplexArray",
    "TotalMask",
    "benchmark",
    "flood_parameters",
    "keygen",
    "load_public",
    "load_secret",
]
