"""Key pairs: fresh ones, and the public and secret sides loaded from their bytes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import tenseal.sealapi as seal

from xinrong.modeling.he.ckks.decrypt import CKKSSecret
from xinrong.modeling.he.ckks.masking import CKKSPublic
from xinrong.modeling.he.ckks.params import (
    DEFAULT_COEFF_MOD_BIT_SIZES,
    DEFAULT_FLOOD_FLOOR_LOG2,
    DEFAULT_MASK_BITS,
    DEFAULT_POLY_MODULUS_DEGREE,
    DEFAULT_SCALE_BITS,
    DEFAULT_VALUE_BOUND,
    CKKSParams,
    seal_context,
)
from xinrong.modeling.he.ckks.serialization import PUBLIC_MAGIC, SECRET_MAGIC, seal_load, seal_save, split_blobs

log = logging.getLogger(__name__)


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
    context = seal_context(params)
    generator = seal.KeyGenerator(context)
    public_key = seal.PublicKey()
    generator.create_public_key(public_key)
    secret = CKKSSecret(params, context, generator.secret_key(), public_key, seal_save(public_key))
    log.info(
        "ckks keygen N=%d chain=%s key=%s", params.poly_modulus_degree, params.coeff_mod_bit_sizes, secret.key_id()
    )
    return secret


def load_public(data: bytes) -> CKKSPublic:
    """The public side, from ``CKKSSecret.public_bytes()``: a public key and optional relinearization keys."""
    params_json, pk_blob, relin_blob = split_blobs(data, PUBLIC_MAGIC, 3, "public key")
    params = CKKSParams.from_json(params_json)
    context = seal_context(params)
    public_key = seal.PublicKey()
    seal_load(public_key, context, pk_blob, "public key")
    relin = None
    if relin_blob:
        relin = seal.RelinKeys()
        seal_load(relin, context, relin_blob, "relinearization keys")
    return CKKSPublic(params, context, public_key, pk_blob, relin)


def load_secret(data: bytes) -> CKKSSecret:
    """The key owner's side, from ``CKKSSecret.secret_bytes()`` (owner's own storage only)."""
    params_json, pk_blob, secret_blob, relin_blob = split_blobs(data, SECRET_MAGIC, 4, "secret key")
    params = CKKSParams.from_json(params_json)
    context = seal_context(params)
    public_key = seal.PublicKey()
    seal_load(public_key, context, pk_blob, "public key")
    secret_key = seal.SecretKey()
    seal_load(secret_key, context, secret_blob, "secret key")
    relin = seal.RelinKeys()
    seal_load(relin, context, relin_blob, "relinearization keys")
    return CKKSSecret(params, context, secret_key, public_key, pk_blob, relin, relin_blob)
