"""Protobuf <-> domain conversions of the modeling wire, as ``x_to_proto`` / ``x_from_proto`` pairs.

The bank, the node and the provider agents all speak ``xinrong.v1``'s
modeling messages; what they put in and take out of them is converted
here, once (the protocol's own messages travel as ``vlr_wire`` bodies and
need none). Pure protobuf: no grpc, no party code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xinrong.errors import Reason, XinrongError
from xinrong.modeling.positions import decode_positions, encode_positions
from xinrong.v1 import modeling_pb2

IntArray = npt.NDArray[np.int64]


# -- the bank's scoring key ----------------------------------------------------------------------


@dataclass(frozen=True)
class ScoringKey:
    """A public key of the bank's own for one scoring request, signed by the bank for that job and request."""

    scheme: str
    public_key: bytes
    signature: bytes


def scoring_key_to_proto(key: ScoringKey) -> modeling_pb2.ScoringKey:
    return modeling_pb2.ScoringKey(scheme=key.scheme, public_key=key.public_key, signature=key.signature)


def scoring_key_from_proto(msg: modeling_pb2.ScoringKey) -> ScoringKey:
    return ScoringKey(scheme=msg.scheme, public_key=bytes(msg.public_key), signature=bytes(msg.signature))


# -- scoring enterprises ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectOutcome:
    """Whether the node admitted one enterprise for scoring, and if not, why (reason and public message)."""

    enterprise_uscc: str
    admitted: bool
    reason: str = ""
    message: str = ""


def score_subjects_to_proto(subjects: Iterable[tuple[str, str]]) -> list[modeling_pb2.ScoreSubject]:
    """(USCC, consent id) pairs; an empty consent id means the bank has none."""
    return [modeling_pb2.ScoreSubject(enterprise_uscc=u, consent_id=c) for u, c in subjects]


def score_subjects_from_proto(msgs: Iterable[modeling_pb2.ScoreSubject]) -> list[tuple[str, str]]:
    return [(s.enterprise_uscc, s.consent_id) for s in msgs]


def score_outcome_to_proto(outcome: SubjectOutcome) -> modeling_pb2.ScoreOutcome:
    return modeling_pb2.ScoreOutcome(
        enterprise_uscc=outcome.enterprise_uscc,
        admitted=outcome.admitted,
        reason=outcome.reason,
        message=outcome.message,
    )


def score_outcome_from_proto(msg: modeling_pb2.ScoreOutcome) -> SubjectOutcome:
    return SubjectOutcome(msg.enterprise_uscc, msg.admitted, msg.reason, msg.message)


# -- scoring aligned rows --------------------------------------------------------------------------


def positions_to_proto(rows: npt.ArrayLike) -> bytes:
    """Positions in a job's aligned order (``ScoreJobRows``): the one row-position codec."""
    return encode_positions(rows)


def positions_from_proto(data: bytes) -> IntArray:
    """``positions_to_proto`` back; the caller checks the count and the range against its own rows."""
    return decode_positions(data)


# -- PSI -------------------------------------------------------------------------------------------


def psi_selections_to_proto(
    providers: Sequence[str], selections: Mapping[str, bytes]
) -> list[modeling_pb2.ProviderPsiMessage]:
    """The bank's selection for each provider, in the job's provider order."""
    return [modeling_pb2.ProviderPsiMessage(provider_id=p, body=selections[p]) for p in providers]


def psi_selections_from_proto(msgs: Iterable[modeling_pb2.ProviderPsiMessage]) -> dict[str, bytes]:
    """Selections by provider; a provider named twice is the caller's error."""
    selections: dict[str, bytes] = {}
    for item in msgs:
        if item.provider_id in selections:
            raise XinrongError("duplicate selection", reason=Reason.INVALID_ARGUMENT)
        selections[item.provider_id] = bytes(item.body)
    return selections


# -- job state -------------------------------------------------------------------------------------

#: The node's job states (``xinrong.node.modeling_store``) and their wire enum.
JOB_STATES: Mapping[str, modeling_pb2.ModelingJobState] = {
    "CREATED": modeling_pb2.MODELING_JOB_STATE_CREATED,
    "RUNNING": modeling_pb2.MODELING_JOB_STATE_RUNNING,
    "SUCCEEDED": modeling_pb2.MODELING_JOB_STATE_SUCCEEDED,
    "FAILED": modeling_pb2.MODELING_JOB_STATE_FAILED,
}
_STATE_NAMES = {v: k for k, v in JOB_STATES.items()}


def job_state_to_proto(state: str) -> modeling_pb2.ModelingJobState:
    return JOB_STATES[state]


def job_state_from_proto(value: modeling_pb2.ModelingJobState) -> str:
    """The state's name; ``UNSPECIFIED`` for a value this version does not know."""
    return _STATE_NAMES.get(value, "UNSPECIFIED")
