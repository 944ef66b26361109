"""Private scoring (issue 3, item 5): the bank learns scores, nobody learns partial scores.

The flow, one batch of enterprises (rows aligned by the bank's request)::

    bank      keygen (its own key) -> public context to the providers (via the node)
    provider  s_i = features_i @ w_i        its own preprocessing and weights
              [[s_i]] under the bank's key, rerandomized         -> node
    node      [[S]] = sum_i [[s_i]]         adds ciphertexts only  -> bank
    bank      S = Dec([[S]]);  z = S + x_b @ w_b + intercept
              probability, scorecard points, grade

Who sees what: the node holds only the bank's *public* context, so it cannot
decrypt anything; the bank receives one aggregated ciphertext per batch and
decrypts only the sum of the providers' partial scores. What the bank
learns is exactly what scoring reveals anyway (z minus its own part), so
with a single provider the "sum" is that provider's partial score: that is
inherent to scoring a model with one provider, not a leak of this protocol.

Why CKKS: 4096 enterprises per ciphertext at N = 8192; scoring needs no
multiplicative depth, so the bank's scoring key uses one 60-bit data prime
(N = 8192, chain [60, 60], 128-bit secure with a wide margin) and no
relinearization keys: a ~0.2 MB public context and 25 ciphertexts per
provider for 100,000 enterprises. The bank decrypts for its own use, so no
flooding is needed on its side; what it publishes (integer points, a grade,
a probability) is far coarser than the CKKS error (~1e-9).

Payloads are length-prefixed blobs (``base.pack_blobs``): a JSON header
(version, kind, scheme, key id, request id, rows, provider ids) and the
backend's own ciphertext serialization. Never pickle. The request id binds
every contribution to one batch, so the node cannot mix batches and the bank
cannot be fed a stale sum; the bank checks the contributor list against the
model's providers, so a sum missing a provider is refused, not mis-scored.

Scorecard: points-to-double-odds. With p = P(bad) and good:bad odds
o = (1 - p) / p, ``score = offset + factor * ln(o)``, ``factor = PDO / ln 2``,
``offset = base_score - factor * ln(base_odds)``. Defaults: 600 points at
50:1, PDO 20 (so 620 is 100:1 and 580 is 25:1). Default grades:

    =====  ===========  =================  =============
    grade  score        good:bad odds      P(bad)
    =====  ===========  =================  =============
    A      >= 620       >= 100:1           <= 0.99 %
    B      580 - 620    25:1 - 100:1       0.99 - 3.8 %
    C      540 - 580    6.25:1 - 25:1      3.8 - 13.8 %
    D      500 - 540    1.56:1 - 6.25:1    13.8 - 39 %
    E      < 500        < 1.56:1           > 39 %
    =====  ===========  =================  =============
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xinrong.modeling.he import base
from xinrong.modeling.he.base import FloatArray, HEPublic, HESecret

SCORING_VERSION = 1
KIND_PARTIAL = "partial"
KIND_AGGREGATE = "aggregate"

# The bank's scoring key: no multiplications, so one data prime suffices.
SCORING_CKKS_PARAMS: dict[str, Any] = {"poly_modulus_degree": 8192, "coeff_mod_bit_sizes": (60, 60)}

# Logits beyond this are not a credit model's output but a protocol fault
# (wrong key, wrong batch, corrupted ciphertext).
_MAX_ABS_LOGIT = 1e4
_MAX_HEADER_BYTES = 1 << 16


@dataclass(frozen=True)
class Scorecard:
    """Points-to-double-odds scorecard; label 1 of the model is *bad* (default)."""

    base_score: float = 600.0
    base_odds: float = 50.0  # good:bad odds at base_score
    pdo: float = 20.0  # points to double the odds
    # (lower bound, grade), best first; below the last bound: ``floor_grade``.
    bands: tuple[tuple[float, str], ...] = ((620.0, "A"), (580.0, "B"), (540.0, "C"), (500.0, "D"))
    floor_grade: str = "E"

    def __post_init__(self) -> None:
        if not (self.pdo > 0 and self.base_odds > 0 and math.isfinite(self.base_score)):
            raise ValueError("scorecard needs pdo > 0, base_odds > 0 and a finite base score")
        bounds = [b for b, _ in self.bands]
        if bounds != sorted(bounds, reverse=True) or len(set(bounds)) != len(bounds):
            raise ValueError("scorecard bands must have strictly decreasing lower bounds")

    @property
    def factor(self) -> float:
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        return self.base_score - self.factor * math.log(self.base_odds)

    def score_from_logit(self, logit: FloatArray) -> FloatArray:
        """Score of the model's logit z = ln(P(bad) / P(good)); ln(good:bad odds) = -z."""
        out: FloatArray = self.offset - self.factor * np.asarray(logit, dtype=np.float64)
        return out

    def score_from_probability(self, p_bad: FloatArray) -> FloatArray:
        p = np.asarray(p_bad, dtype=np.float64)
        return self.score_from_logit(np.log(p) - np.log1p(-p))

    def odds_at(self, score: float) -> float:
        """Good:bad odds a score stands for (inverse of the score formula)."""
        return float(self.base_odds * 2.0 ** ((score - self.base_score) / self.pdo))

    def grade(self, score: float) -> str:
        for bound, name in self.bands:
            if score >= bound:
                return name
        return self.floor_grade

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_score": self.base_score,
            "base_odds": self.base_odds,
            "pdo": self.pdo,
            "bands": [[b, g] for b, g in self.bands],
            "floor_grade": self.floor_grade,
        }


@dataclass(frozen=True)
class ScoreBatch:
    """Scores of one batch, in the order of the bank's request."""

    request_id: str
    providers: tuple[str, ...]
    logit: FloatArray
    probability: FloatArray  # P(bad)
    score: FloatArray
    points: tuple[int, ...]
    grade: tuple[str, ...]
    scorecard: Scorecard = field(default_factory=Scorecard)

    def rows(self) -> list[dict[str, Any]]:
        """JSON-ready rows (probability to 6 decimals; points are integers)."""
        return [
            {"probability": round(float(p), 6), "score": pts, "grade": g}
            for p, pts, g in zip(self.probability, self.points, self.grade)
        ]


# -- keys ---------------------------------------------------------------------


def bank_keygen(scheme: str = "ckks", **params: Any) -> HESecret:
    """The bank's own scoring key pair (CKKS defaults: ``SCORING_CKKS_PARAMS``)."""
    merged = {**SCORING_CKKS_PARAMS, **params} if scheme == "ckks" else dict(params)
    return base.keygen(scheme, **merged)


def bank_public_bytes(secret: HESecret) -> bytes:
    """What the bank publishes: the public context, without relinearization keys for CKKS."""
    from xinrong.modeling.he.ckks import CKKSSecret

    if isinstance(secret, CKKSSecret):
        return secret.public_bytes(with_relin_keys=False)
    return secret.public_bytes()


# -- payloads -----------------------------------------------------------------


def _header(public: HEPublic, kind: str, request_id: str, rows: int, providers: Sequence[str]) -> bytes:
    body = {
        "v": SCORING_VERSION,
        "kind": kind,
        "scheme": public.scheme,
        "key_id": public.key_id(),
        "request_id": request_id,
        "rows": rows,
        "providers": list(providers),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class _Parsed:
    kind: str
    request_id: str
    rows: int
    providers: tuple[str, ...]
    ciphertext: bytes


def _parse(public: HEPublic, payload: bytes) -> _Parsed:
    blobs = base.unpack_blobs(payload)
    if len(blobs) != 2 or len(blobs[0]) > _MAX_HEADER_BYTES:
        raise ValueError("malformed scoring payload")
    try:
        head = json.loads(blobs[0])
        parsed = _Parsed(
            kind=str(head["kind"]),
            request_id=str(head["request_id"]),
            rows=int(head["rows"]),
            providers=tuple(str(p) for p in head["providers"]),
            ciphertext=blobs[1],
        )
        version, scheme, key_id = head["v"], head["scheme"], head["key_id"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("malformed scoring payload header") from exc
    if version != SCORING_VERSION or scheme != public.scheme:
        raise ValueError("scoring payload of another version or scheme")
    if key_id != public.key_id():
        raise ValueError("scoring payload is encrypted under another key")
    if parsed.rows <= 0 or not parsed.providers:
        raise ValueError("scoring payload without rows or providers")
    return parsed


def _check_request_id(request_id: str) -> None:
    if not request_id or len(request_id) > 128:
        raise ValueError("request id must be 1..128 characters")


def partial_scores(features: FloatArray, weights: FloatArray) -> FloatArray:
    """x_i . w_i for the provider's already-preprocessed columns (training-time transform)."""
    x = np.asarray(features, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if x.ndim != 2 or w.ndim != 1 or x.shape[1] != w.shape[0]:
        raise ValueError("features must be (rows, k) and weights (k,)")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(w))):
        raise ValueError("features and weights must be finite")
    out: FloatArray = x @ w
    return out


def provider_encrypt(
    public: HEPublic, request_id: str, provider_id: str, features: FloatArray, weights: FloatArray
) -> bytes:
    """The provider's contribution: its partial scores under the bank's key, rerandomized.

    The partial scores never leave the provider in the clear; the payload is
    meant for the node, which can only add it to the others.
    """
    _check_request_id(request_id)
    scores = partial_scores(features, weights)
    enc = public.rerandomize(public.encrypt(scores))
    header = _header(public, KIND_PARTIAL, request_id, int(scores.shape[0]), [provider_id])
    return base.pack_blobs([header, public.serialize(enc)])


def aggregate(public: HEPublic, payloads: Sequence[bytes], min_providers: int = 1) -> bytes:
    """The node's step: add the providers' ciphertexts, nothing else.

    Pure ciphertext addition under the bank's public key: the node can
    check that all contributions belong to one request, one key and
    distinct providers, but it cannot read any of them.
    """
    if len(payloads) < max(1, min_providers):
        raise ValueError(f"need at least {max(1, min_providers)} provider contributions")
    parsed = [_parse(public, p) for p in payloads]
    first = parsed[0]
    providers: list[str] = []
    for item in parsed:
        if item.kind != KIND_PARTIAL or len(item.providers) != 1:
            raise ValueError("aggregate takes provider partial-score payloads only")
        if item.request_id != first.request_id or item.rows != first.rows:
            raise ValueError("contributions belong to different requests")
        providers.append(item.providers[0])
    if len(set(providers)) != len(providers):
        raise ValueError("duplicate provider contribution")
    total = None
    for item in parsed:
        enc = public.deserialize(item.ciphertext)
        if public.length(enc) != first.rows:
            raise ValueError("contribution length does not match its header")
        total = enc if total is None else public.add(total, enc)
    header = _header(public, KIND_AGGREGATE, first.request_id, first.rows, sorted(providers))
    return base.pack_blobs([header, public.serialize(total)])


def bank_score(
    secret: HESecret,
    payload: bytes,
    *,
    request_id: str,
    expected_providers: Sequence[str],
    bank_partial: FloatArray | None = None,
    intercept: float = 0.0,
    scorecard: Scorecard | None = None,
) -> ScoreBatch:
    """Decrypt the node's sum, add the bank's own part and the intercept, score.

    ``bank_partial`` is the bank's own x_b . w_b for the same rows (None
    when the bank contributes no features).
    """
    card = scorecard or Scorecard()
    parsed = _parse(secret, payload)
    if parsed.kind != KIND_AGGREGATE:
        raise ValueError("the bank scores node aggregates only")
    if parsed.request_id != request_id:
        raise ValueError("aggregate belongs to another request")
    if sorted(parsed.providers) != sorted(expected_providers):
        raise ValueError("aggregate does not cover exactly the model's providers")
    enc = secret.deserialize(parsed.ciphertext)
    if secret.length(enc) != parsed.rows:
        raise ValueError("aggregate length does not match its header")
    logit = secret.decrypt(enc)
    if bank_partial is not None:
        own = np.asarray(bank_partial, dtype=np.float64)
        if own.shape != (parsed.rows,) or not np.all(np.isfinite(own)):
            raise ValueError("bank partial scores do not match the batch")
        logit = logit + own
    logit = logit + float(intercept)
    if not np.all(np.isfinite(logit)) or np.max(np.abs(logit)) > _MAX_ABS_LOGIT:
        raise ValueError("decrypted logits are out of range: wrong key, batch or model")
    probability = np.exp(-np.logaddexp(0.0, -logit))  # sigmoid, stable for large |z|
    score = card.score_from_logit(logit)
    points = tuple(round(s) for s in score)
    grades = tuple(card.grade(float(s)) for s in score)
    return ScoreBatch(
        request_id=request_id,
        providers=parsed.providers,
        logit=logit,
        probability=probability,
        score=score,
        points=points,
        grade=grades,
        scorecard=card,
    )


# -- measurement ----------------------------------------------------------------


def measure_batch(
    rows: int = 100_000, providers: int = 3, features_per_provider: int = 8, seed: int = 0
) -> dict[str, Any]:
    """Time the whole private scoring of one batch in one process; check it against plaintext.

    Stages run one after the other here; in deployment the providers encrypt
    in parallel, so ``seconds_critical_path`` (slowest provider + node +
    bank) is the latency and ``seconds_sequential`` the total CPU.
    """
    rng = np.random.default_rng(seed)
    features = [rng.normal(0, 1, (rows, features_per_provider)) for _ in range(providers)]
    weights = [rng.normal(0, 0.3, features_per_provider) for _ in range(providers)]
    bank_x = rng.normal(0, 1, (rows, 4))
    bank_w = rng.normal(0, 0.3, 4)
    intercept = -1.2
    names = [f"provider-{i}" for i in range(providers)]

    t0 = time.perf_counter()
    secret = bank_keygen()
    public_blob = bank_public_bytes(secret)
    t_keygen = time.perf_counter() - t0

    t0 = time.perf_counter()
    provider_public = base.load_public(secret.scheme, public_blob)
    t_load = time.perf_counter() - t0

    payloads, t_providers = [], []
    for name, x, w in zip(names, features, weights):
        t0 = time.perf_counter()
        payloads.append(provider_encrypt(provider_public, "bench", name, x, w))
        t_providers.append(time.perf_counter() - t0)

    node_public = base.load_public(secret.scheme, public_blob)
    t0 = time.perf_counter()
    summed = aggregate(node_public, payloads)
    t_node = time.perf_counter() - t0

    t0 = time.perf_counter()
    batch = bank_score(
        secret,
        summed,
        request_id="bench",
        expected_providers=names,
        bank_partial=partial_scores(bank_x, bank_w),
        intercept=intercept,
    )
    t_bank = time.perf_counter() - t0

    truth = sum(x @ w for x, w in zip(features, weights)) + bank_x @ bank_w + intercept
    return {
        "rows": rows,
        "providers": providers,
        "scheme": secret.scheme,
        "seconds_keygen": t_keygen,
        "seconds_load_public": t_load,
        "seconds_provider_encrypt": t_providers,
        "seconds_node_aggregate": t_node,
        "seconds_bank_decrypt_score": t_bank,
        "seconds_sequential": sum(t_providers) + t_node + t_bank,
        "seconds_critical_path": max(t_providers) + t_node + t_bank,
        "public_context_bytes": len(public_blob),
        "bytes_per_provider_payload": len(payloads[0]),
        "bytes_aggregate": len(summed),
        "max_abs_logit_error": float(np.max(np.abs(batch.logit - truth))),
        "max_abs_points_error": int(
            np.max(np.abs(np.array(batch.points) - np.round(Scorecard().score_from_logit(truth))))
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="private scoring benchmark (one JSON line)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--providers", type=int, default=3)
    parser.add_argument("--features", type=int, default=8)
    args = parser.parse_args(argv)
    print(json.dumps(measure_batch(args.rows, args.providers, args.features)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


# The bank signs its scoring key for one job and request, so the node cannot
# substitute a key of its own and read the providers' partial scores.
SCORING_KEY_CONTEXT = "xinrong.v1.ScoringKey"


def scoring_key_statement(job_id: str, request_id: str, scheme: str, public_key: bytes) -> bytes:
    """What the bank signs about its scoring key: this key, for this job and request only."""
    body = {
        "job_id": job_id,
        "request_id": request_id,
        "scheme": scheme,
        "key_sha256": hashlib.sha256(public_key).hexdigest(),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
