"""Full-coverage evaluation (全覆盖评价): every enterprise's index points, added under encryption.

Each period the platform evaluates every enterprise of a public universe
(the registered enterprises, in USCC order). Each provider computes its
part of every enterprise's points from its own data (``xinrong.index``),
lays it out over the universe (0 where it holds no record) and encrypts
it, batched, under the evaluation key: CKKS packs 4,096 enterprises per
ciphertext, a million in 245 ciphertexts (~32 MB). The node adds the
providers' ciphertexts and never sees a part.

Two rounds keep an enterprise known to a single provider from exposing
that provider's part (a "total" of one part is the part):

1. *presence*: each provider encrypts 1 where it holds a record; the
   key holder decrypts the sum, the number of providers that know each
   enterprise (not which ones), and derives the eligible set: at least
   the index's ``min_providers``;
2. *points*: each provider encrypts its points with every ineligible
   position zeroed; the key holder decrypts only sums over eligible
   enterprises, each of at least two parts.

Payloads follow private scoring's layout (``xinrong.modeling.scoring``):
a JSON header (version, kind, scheme, key id, evaluation id, index
digest, rows, providers) and the backend's ciphertext serialization;
aggregation checks that every part belongs to one evaluation, one key,
one index and distinct providers. Decrypted sums are integers (points and
counts are), so they are rounded at once: what leaves the key holder
carries no CKKS noise (IND-CPA-D).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from xinrong.modeling.he import base
from xinrong.modeling.he.base import HEPublic, HESecret

EVALUATION_VERSION = 1
KIND_PRESENCE = "presence"
KIND_POINTS = "points"
KIND_SUM = "sum"
KINDS = (KIND_PRESENCE, KIND_POINTS)

# No multiplications: one data prime, as the scoring key (128-bit secure, ~0.2 MB public context).
EVALUATION_CKKS_PARAMS: dict[str, Any] = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": (60, 60)}

_MAX_HEADER_BYTES = 1 << 16
# A decrypted sum further than this from an integer is a protocol fault, not CKKS noise (~1e-7).
_MAX_ROUNDING_ERROR = 0.05

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def evaluation_keygen() -> HESecret:
    return base.keygen("ckks", **EVALUATION_CKKS_PARAMS)


def universe_positions(universe: npt.NDArray[Any], ids: Sequence[str] | npt.NDArray[Any]) -> IntArray:
    """Where each of a provider's enterprise ids sits in the sorted universe (-1: not in it)."""
    keys = np.asarray(ids, dtype=universe.dtype)
    positions = np.searchsorted(universe, keys)
    found = (positions < universe.size) & (universe[np.minimum(positions, universe.size - 1)] == keys)
    out: IntArray = np.where(found, positions, -1).astype(np.int64)
    return out


def lay_out(size: int, positions: IntArray, values: npt.ArrayLike) -> FloatArray:
    """A provider's values over the universe: its own rows at their positions, 0 elsewhere."""
    out = np.zeros(size, dtype=np.float64)
    keep = positions >= 0
    out[positions[keep]] = np.asarray(values, dtype=np.float64)[keep]
    return out


def presence(size: int, positions: IntArray) -> FloatArray:
    return lay_out(size, positions, np.ones(positions.size))


def eligible(counts: IntArray, min_providers: int) -> BoolArray:
    out: BoolArray = counts >= min_providers
    return out


def pack_mask(mask: BoolArray) -> bytes:
    """The eligible set as a bit field (a million enterprises: 125 kB)."""
    return np.packbits(mask.astype(np.uint8)).tobytes()


def unpack_mask(data: bytes, size: int) -> BoolArray:
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits.size < size or np.any(bits[size:]):
        raise ValueError("eligible mask does not fit the universe")
    out: BoolArray = bits[:size].astype(bool)
    return out


@dataclass(frozen=True)
class _Parsed:
    kind: str
    evaluation_id: str
    index_sha256: str
    rows: int
    providers: tuple[str, ...]
    ciphertext: bytes


def _header(
    public: HEPublic, kind: str, evaluation_id: str, index_sha256: str, rows: int, providers: Sequence[str]
) -> bytes:
    body = {
        "v": EVALUATION_VERSION,
        "kind": kind,
        "scheme": public.scheme,
        "key_id": public.key_id(),
        "evaluation_id": evaluation_id,
        "index": index_sha256,
        "rows": rows,
        "providers": list(providers),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def _parse(public: HEPublic, payload: bytes) -> _Parsed:
    blobs = base.unpack_blobs(payload)
    if len(blobs) != 2 or len(blobs[0]) > _MAX_HEADER_BYTES:
        raise ValueError("malformed evaluation payload")
    try:
        head = json.loads(blobs[0])
        parsed = _Parsed(
            kind=str(head["kind"]),
            evaluation_id=str(head["evaluation_id"]),
            index_sha256=str(head["index"]),
            rows=int(head["rows"]),
            providers=tuple(str(p) for p in head["providers"]),
            ciphertext=blobs[1],
        )
        version, scheme, key_id = head["v"], head["scheme"], head["key_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("malformed evaluation payload header") from exc
    if version != EVALUATION_VERSION or scheme != public.scheme:
        raise ValueError("evaluation payload of another version or scheme")
    if key_id != public.key_id():
        raise ValueError("evaluation payload is encrypted under another key")
    if parsed.rows <= 0 or not parsed.providers:
        raise ValueError("evaluation payload without rows or providers")
    return parsed


def encrypt_part(
    public: HEPublic, *, kind: str, evaluation_id: str, index_sha256: str, provider: str, values: FloatArray
) -> bytes:
    """A provider's presence or points over the universe, encrypted and rerandomized."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    if not evaluation_id or len(evaluation_id) > 128:
        raise ValueError("evaluation id must be 1..128 characters")
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)) or np.any(vector < 0):
        raise ValueError("a part is a non-empty vector of non-negative numbers")
    enc = public.rerandomize(public.encrypt(vector))
    header = _header(public, kind, evaluation_id, index_sha256, int(vector.size), [provider])
    return base.pack_blobs([header, public.serialize(enc)])


def aggregate_parts(public: HEPublic, payloads: Sequence[bytes], *, kind: str, min_parts: int = 1) -> bytes:
    """The node's step: add the providers' ciphertexts of one evaluation round; it cannot read any."""
    if len(payloads) < max(1, min_parts):
        raise ValueError(f"need at least {max(1, min_parts)} provider parts")
    parsed = [_parse(public, p) for p in payloads]
    first = parsed[0]
    providers: list[str] = []
    for item in parsed:
        if item.kind != kind or len(item.providers) != 1:
            raise ValueError(f"aggregate takes {kind} parts only")
        if (item.evaluation_id, item.index_sha256, item.rows) != (first.evaluation_id, first.index_sha256, first.rows):
            raise ValueError("parts belong to different evaluations")
        providers.append(item.providers[0])
    if len(set(providers)) != len(providers):
        raise ValueError("duplicate provider part")
    total = None
    for item in parsed:
        enc = public.deserialize(item.ciphertext)
        if public.length(enc) != first.rows:
            raise ValueError("part length does not match its header")
        total = enc if total is None else public.add(total, enc)
    header = _header(public, KIND_SUM, first.evaluation_id, first.index_sha256, first.rows, sorted(providers))
    return base.pack_blobs([header, public.serialize(total)])


@dataclass(frozen=True)
class Sums:
    evaluation_id: str
    index_sha256: str
    providers: tuple[str, ...]
    values: IntArray


def decrypt_sums(secret: HESecret, payload: bytes) -> Sums:
    """The key holder's view of an aggregate: integers, checked to be integers."""
    parsed = _parse(secret, payload)
    if parsed.kind != KIND_SUM:
        raise ValueError("only aggregated sums are decrypted")
    raw = secret.decrypt(secret.deserialize(parsed.ciphertext))[: parsed.rows]
    values = np.rint(raw)
    if np.max(np.abs(raw - values), initial=0.0) > _MAX_ROUNDING_ERROR:
        raise ValueError("decrypted sums are not integers: a part was not a count or points vector")
    return Sums(parsed.evaluation_id, parsed.index_sha256, parsed.providers, values.astype(np.int64))


# -- zero-sum masks -------------------------------------------------------------
#
# The node holds the evaluation key, so CKKS alone would not keep a part from
# it: it could decrypt any one provider's ciphertext. What it receives is
# therefore masked first: provider i sends ``(v_i + m_i) mod M`` with pairwise
# masks ``m_i = sum_{j>i} PRG(s_ij) - sum_{j<i} PRG(s_ij)`` (Bonawitz et al.,
# CCS 2017), ``s_ij`` an X25519 secret of agents i and j the node does not
# hold. Any one part, or any sum of fewer than all parts, decrypts to values
# uniform mod M; the masks cancel only in the sum of every participant.
# M = 2**15 leaves room in CKKS: nine masked parts sum to < 9 * 2**15 < 2**19,
# the integer part a 60-bit prime holds at scale 2**40.
MASK_MODULUS = 1 << 15
MAX_MASKED_PROVIDERS = 15  # (MAX + 1) * M must stay below 2**19: the sum is reduced mod M after decryption
_MASK_INFO = b"xinrong.v1.EvaluationMask"


def mask_key(shared_secret: bytes, *, evaluation_id: str, kind: str, a: str, b: str, context: bytes = b"") -> bytes:
    """The AES key of one pair's mask in one round: fresh per evaluation id, round and request.

    A new key per round matters: with one mask for both rounds the node
    could subtract the presence part from the points part. ``context`` binds
    the mask to everything else the round depends on (key, universe,
    participants, eligible set; ``round_context``), so a node that asked
    again with another eligible set would get other masks, not a difference.
    """
    if kind not in KINDS or a == b:
        raise ValueError("a mask is per round and per pair of distinct providers")
    low, high = sorted((a, b))
    info = b"\x00".join([_MASK_INFO, evaluation_id.encode(), kind.encode(), low.encode(), high.encode(), context])
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared_secret)


def round_context(*, public_key: bytes, universe_sha256: str, providers: Sequence[str], eligible: bytes) -> bytes:
    """SHA-256 over what both ends of a pair must agree on for one round."""
    h = hashlib.sha256(b"xinrong.v1.EvaluationRound\x00")
    for item in (hashlib.sha256(public_key).digest(), universe_sha256.encode(), ",".join(sorted(providers)).encode()):
        h.update(len(item).to_bytes(4, "big") + item)
    h.update(hashlib.sha256(eligible).digest())
    return h.digest()


def mask_stream(key: bytes, size: int) -> IntArray:
    """``size`` values uniform on [0, M) from AES-256-CTR (2 bytes each; M divides 2**16)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\x00" * 16)).encryptor()
    raw = encryptor.update(b"\x00" * (2 * size)) + encryptor.finalize()
    out: IntArray = (np.frombuffer(raw, dtype="<u2") & (MASK_MODULUS - 1)).astype(np.int64)
    return out


def zero_sum_mask(size: int, own: str, pair_keys: Mapping[str, bytes]) -> IntArray:
    """This provider's mask: + the stream shared with each later peer, - with each earlier one, mod M."""
    total = np.zeros(size, dtype=np.int64)
    for peer, key in pair_keys.items():
        if peer == own:
            raise ValueError("a provider shares no mask with itself")
        stream = mask_stream(key, size)
        if own < peer:
            total += stream
        else:
            total -= stream
    out: IntArray = np.mod(total, MASK_MODULUS)
    return out


def mask_values(values: npt.ArrayLike, mask: IntArray) -> FloatArray:
    """A part as it leaves its provider: (v + m) mod M, each slot uniform on [0, M) to whoever lacks m."""
    vector = np.asarray(values)
    if vector.shape != mask.shape:
        raise ValueError("part and mask differ in length")
    ints = np.rint(vector).astype(np.int64)
    if np.any(ints != vector) or np.any(ints < 0) or np.any(ints >= MASK_MODULUS):
        raise ValueError(f"a masked part holds integers in [0, {MASK_MODULUS})")
    out: FloatArray = np.mod(ints + mask, MASK_MODULUS).astype(np.float64)
    return out


def unmask(sums: IntArray) -> IntArray:
    """The sum of every masked part, reduced mod M: the masks are gone, the true sum (< M) is left."""
    out: IntArray = np.mod(sums, MASK_MODULUS)
    return out


def universe_digest(universe: npt.NDArray[Any]) -> str:
    """SHA-256 of the packed universe: every party checks it evaluates the same ordering."""
    return hashlib.sha256(np.ascontiguousarray(universe).tobytes()).hexdigest()


__all__ = [
    "EVALUATION_CKKS_PARAMS",
    "KIND_POINTS",
    "KIND_PRESENCE",
    "MASK_MODULUS",
    "MAX_MASKED_PROVIDERS",
    "Sums",
    "aggregate_parts",
    "decrypt_sums",
    "eligible",
    "encrypt_part",
    "evaluation_keygen",
    "lay_out",
    "mask_key",
    "mask_stream",
    "mask_values",
    "pack_mask",
    "presence",
    "round_context",
    "universe_digest",
    "universe_positions",
    "unmask",
    "unpack_mask",
    "zero_sum_mask",
]
