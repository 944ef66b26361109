"""Every message of the protocol: frozen dataclasses of bytes, numbers and strings.

``xinrong.modeling.vlr_wire`` encodes them (no pickle), so the gRPC layer and
the in-process simulator carry the same bytes. Who sends what to whom is
in the docstring of ``xinrong.modeling.vlr``.

Sealed payloads. What the node relays but must not read -- a provider's
partial logits and square term for the bank, the bank's residual for each
provider -- travels as an HPKE box (``xinrong.modeling.vlr.sealing``) whose
content type is one of ``SEALED_*`` and whose context is ``seal_context``:
a box cannot be replayed into another job, epoch, batch or provider slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xinrong.modeling.positions import decode_positions, encode_positions
from xinrong.modeling.vlr.errors import ProtocolViolation

IntArray = npt.NDArray[np.int64]

SEALED_PARTIAL = "xinrong.v1.VlrPartialLogits"
SEALED_RESIDUAL = "xinrong.v1.VlrResidual"
SEALED_SQUARE = "xinrong.v1.VlrSquareTerm"


def seal_context(job_id: str, epoch: int, batch: int, provider_id: str) -> str:
    """The HPKE context a transport binds into sealed boxes: no replay across batches or parties."""
    return f"{job_id}/{epoch}/{batch}/{provider_id}"


def rows_to_bytes(rows: IntArray) -> bytes:
    """Training row positions as ``JobStart.train_rows`` carries them: the one row-position codec."""
    return encode_positions(rows)


def rows_from_bytes(data: bytes, n_rows: int) -> IntArray:
    """``rows_to_bytes`` back, refusing what could not be a training set of ``n_rows`` aligned rows."""
    try:
        rows = decode_positions(data)
    except ValueError:
        raise ProtocolViolation("train rows: truncated") from None
    if rows.size == 0 or rows.max() >= n_rows or np.unique(rows).size != rows.size:
        raise ProtocolViolation("train rows: empty, out of range or repeated")
    return rows


@dataclass(frozen=True)
class JobStart:
    """bank -> node: start a job; the node answers with the HE public key."""

    job_id: str
    config_json: str
    bank_id: str
    bank_features: tuple[str, ...]  # for the node's model metadata; the intercept is implicit
    provider_ids: tuple[str, ...]
    n_rows: int  # rows in the aligned (PSI) order
    train_rows: bytes  # uint32 LE positions into the aligned order


@dataclass(frozen=True)
class JobStarted:
    """node -> bank: the HE key and the config as resolved (``sigmoid_degree`` made explicit)."""

    job_id: str
    config_json: str
    scheme: str
    he_public: bytes
    provider_ids: tuple[str, ...]


@dataclass(frozen=True)
class JobSetup:
    """node -> provider."""

    job_id: str
    config_json: str
    provider_id: str
    n_rows: int
    train_rows: bytes
    scheme: str
    he_public: bytes


@dataclass(frozen=True)
class SetupAck:
    job_id: str
    party_id: str
    feature_names: tuple[str, ...]


@dataclass(frozen=True)
class BoundRequest:
    job_id: str
    epoch: int
    batch: int


@dataclass(frozen=True)
class BoundReport:
    job_id: str
    epoch: int
    batch: int
    party_id: str
    code: int


@dataclass(frozen=True)
class ForwardRequest:
    """bank -> node: the bank's own bound code opens the batch."""

    job_id: str
    epoch: int
    batch: int
    bank_code: int


@dataclass(frozen=True)
class EncryptRequest:
    job_id: str
    epoch: int
    batch: int
    level: int
    shrink_steps: int


@dataclass(frozen=True)
class PartialLogits:
    """provider -> bank, sealed: [[tau_i]] under the node's key."""

    job_id: str
    epoch: int
    batch: int
    party_id: str
    ciphertext: bytes


@dataclass(frozen=True)
class ForwardReply:
    job_id: str
    epoch: int
    batch: int
    level: int
    shrink_steps: int
    provider_ids: tuple[str, ...]
    sealed_partials: tuple[bytes, ...]


@dataclass(frozen=True)
class Residual:
    """bank -> provider, sealed: [[d]] (and, in square-loss mode, [[T_{j-1}]])."""

    job_id: str
    epoch: int
    batch: int
    party_id: str
    ciphertext: bytes
    prefix: bytes


@dataclass(frozen=True)
class BackwardRequest:
    job_id: str
    epoch: int
    batch: int
    sealed_residuals: tuple[bytes, ...]
    gradient_payload: bytes
    loss_payload: bytes  # empty when no loss is computed in this call


@dataclass(frozen=True)
class GradientRequest:
    job_id: str
    epoch: int
    batch: int
    sealed_residual: bytes


@dataclass(frozen=True)
class SquareTerm:
    """provider -> bank, sealed: [[2 tau_j T_{j-1} + tau_j**2]]."""

    job_id: str
    epoch: int
    batch: int
    party_id: str
    ciphertext: bytes


@dataclass(frozen=True)
class GradientPayload:
    """What a provider's gradient step produces: the masked payload, and the square term in plain form."""

    job_id: str
    epoch: int
    batch: int
    party_id: str
    payload: bytes
    square: bytes  # serialized SquareTerm for the transport to seal, or empty


@dataclass(frozen=True)
class GradientReply:
    """provider -> node."""

    job_id: str
    epoch: int
    batch: int
    party_id: str
    payload: bytes
    sealed_square: bytes


@dataclass(frozen=True)
class UpdateRequest:
    job_id: str
    epoch: int
    batch: int
    masked_sums: bytes  # float64 LE


@dataclass(frozen=True)
class UpdateAck:
    job_id: str
    epoch: int
    batch: int
    party_id: str


@dataclass(frozen=True)
class BackwardReply:
    job_id: str
    epoch: int
    batch: int
    masked_sums: bytes
    masked_loss: float | None
    sealed_squares: tuple[bytes, ...]


@dataclass(frozen=True)
class LossRequest:
    job_id: str
    epoch: int
    batch: int
    loss_payload: bytes


@dataclass(frozen=True)
class LossReply:
    job_id: str
    epoch: int
    batch: int
    masked_loss: float


@dataclass(frozen=True)
class EpochEnd:
    """bank -> node -> providers: the epoch is complete; checkpoint it."""

    job_id: str
    epoch: int  # epochs completed
    loss: float | None
    stop: bool


@dataclass(frozen=True)
class EpochAck:
    job_id: str
    epoch: int
    party_id: str


@dataclass(frozen=True)
class FinishRequest:
    """bank -> node -> providers: write the model shares; the bank reports its aggregate losses."""

    job_id: str
    epochs: int
    epoch_losses: tuple[float, ...]


@dataclass(frozen=True)
class FinishAck:
    job_id: str
    party_id: str
    share_sha256: str


@dataclass(frozen=True)
class ResumeQuery:
    job_id: str


@dataclass(frozen=True)
class ResumeState:
    job_id: str
    party_id: str
    epochs: tuple[int, ...]  # checkpointed epoch counts available


@dataclass(frozen=True)
class RestoreRequest:
    job_id: str
    epoch: int


@dataclass(frozen=True)
class RestoreAck:
    job_id: str
    party_id: str
    epoch: int
