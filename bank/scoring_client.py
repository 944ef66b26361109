"""Private scoring from the bank: held-out rows of a job, and consented enterprises by USCC.

Each request gets a fresh CKKS key of the bank's own, signed for that job
and request (every provider checks the signature, so the node cannot slip
in a key of its own); providers encrypt their partial scores under it, the
node adds the ciphertexts, and only the bank decrypts the sum, to which it
adds its own part and the intercept.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.bank.modeling_client import ModelingClient
from xinrong.errors import XinrongError
from xinrong.keys.layout import PartyCredentials
from xinrong.limits import MAX_SCORE_ROWS, MAX_SCORE_SUBJECTS
from xinrong.modeling import scoring
from xinrong.modeling.he.base import HESecret
from xinrong.modeling.scoring import SCORING_KEY_CONTEXT, scoring_key_statement
from xinrong.modeling.serde import (
    ScoringKey,
    positions_to_proto,
    score_outcome_from_proto,
    score_subjects_to_proto,
    scoring_key_to_proto,
)
from xinrong.modeling.vlr_state import ModelShare
from xinrong.v1 import modeling_pb2

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def signed_scoring_key(
    creds: PartyCredentials, job_id: str, request_id: str
) -> tuple[HESecret, modeling_pb2.ScoringKey]:
    """A fresh scoring key of the bank's own, signed for this job and request (providers check it)."""
    secret = scoring.bank_keygen("ckks")
    public = scoring.bank_public_bytes(secret)
    signature = creds.signing_key.sign(SCORING_KEY_CONTEXT, scoring_key_statement(job_id, request_id, "ckks", public))
    return secret, scoring_key_to_proto(ScoringKey(scheme="ckks", public_key=public, signature=signature))


def _own_part(share: ModelShare, x_raw: FloatArray) -> FloatArray | None:
    if not share.weights:
        return None
    out: FloatArray = share.transform.apply(x_raw) @ np.asarray(share.weights, dtype=np.float64)
    return out


def score_job_rows(
    client: ModelingClient,
    creds: PartyCredentials,
    job_id: str,
    providers: Sequence[str],
    share: ModelShare,
    x_raw: FloatArray,
    positions: IntArray,
) -> FloatArray:
    """Logits of aligned rows of the job, by private scoring, in chunks under the message limit."""
    out: list[FloatArray] = []
    for start in range(0, positions.size, MAX_SCORE_ROWS):
        chunk = positions[start : start + MAX_SCORE_ROWS]
        request_id = f"{job_id}-rows-{uuid.uuid4().hex[:12]}"
        secret, key = signed_scoring_key(creds, job_id, request_id)
        response = client.call(
            "ScoreJobRows",
            modeling_pb2.ScoreJobRowsRequest(
                job_id=job_id,
                request_id=request_id,
                positions=positions_to_proto(chunk),
                scoring_key=key,
            ),
        )
        batch = scoring.bank_score(
            secret,
            bytes(response.aggregate),
            request_id=request_id,
            expected_providers=list(providers),
            bank_partial=_own_part(share, x_raw[start : start + MAX_SCORE_ROWS]),
            intercept=float(share.intercept or 0.0),
        )
        out.append(np.asarray(batch.logit, dtype=np.float64))
    return np.concatenate(out) if out else np.zeros(0)


@dataclass(frozen=True)
class ScoredEnterprise:
    enterprise: str
    consent_id: str
    scored: bool
    probability: float | None = None
    score: int | None = None
    grade: str | None = None
    reason: str = ""
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enterprise": self.enterprise,
            "consent_id": self.consent_id,
            "status": "scored" if self.scored else "refused",
        }
        if self.scored:
            out.update(probability=self.probability, score=self.score, grade=self.grade)
        else:
            out.update(reason=self.reason, message=self.message)
        return out


def score_enterprises(
    client: ModelingClient,
    creds: PartyCredentials,
    model: dict[str, Any],
    share: ModelShare,
    subjects: Sequence[tuple[str, str]],
    bank_x: FloatArray,
) -> list[ScoredEnterprise]:
    """Score (uscc, consent id) pairs; a refused one comes back with the node's reason, unscored."""
    out: list[ScoredEnterprise] = []
    for start in range(0, len(subjects), MAX_SCORE_SUBJECTS):
        out += _score_chunk(
            client,
            creds,
            model,
            share,
            subjects[start : start + MAX_SCORE_SUBJECTS],
            bank_x[start : start + MAX_SCORE_SUBJECTS],
        )
    return out


def _score_chunk(
    client: ModelingClient,
    creds: PartyCredentials,
    model: dict[str, Any],
    share: ModelShare,
    subjects: Sequence[tuple[str, str]],
    bank_x: FloatArray,
) -> list[ScoredEnterprise]:
    job_id = str(model["job_id"])
    providers = [str(p) for p in model["providers"]]
    request_id = f"score-{uuid.uuid4()}"
    secret, key = signed_scoring_key(creds, job_id, request_id)
    response = client.call(
        "ScoreEnterprises",
        modeling_pb2.ScoreEnterprisesRequest(
            request_id=request_id,
            requested_at=int(time.time()),
            job_id=job_id,
            subjects=score_subjects_to_proto(subjects),
            scoring_key=key,
        ),
    )
    outcomes = [score_outcome_from_proto(o) for o in response.outcomes]
    if [o.enterprise_uscc for o in outcomes] != [u for u, _ in subjects]:
        raise XinrongError("node answered for other enterprises than asked")
    admitted = [i for i, o in enumerate(outcomes) if o.admitted]
    results: list[ScoredEnterprise] = []
    batch = None
    if admitted:
        batch = scoring.bank_score(
            secret,
            bytes(response.aggregate),
            request_id=request_id,
            expected_providers=providers,
            bank_partial=_own_part(share, bank_x[admitted]),
            intercept=float(share.intercept or 0.0),
        )
    slot = {i: k for k, i in enumerate(admitted)}
    for i, ((uscc, consent_id), o) in enumerate(zip(subjects, outcomes)):
        if o.admitted and batch is not None:
            k = slot[i]
            results.append(
                ScoredEnterprise(
                    uscc,
                    consent_id,
                    True,
                    round(float(batch.probability[k]), 6),
                    int(batch.points[k]),
                    str(batch.grade[k]),
                )
            )
        else:
            results.append(ScoredEnterprise(uscc, consent_id, False, reason=o.reason, message=o.message))
    return results
