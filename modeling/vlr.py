"""Coordinated vertical federated logistic regression (Hardy et al. 2017; FATE's coordinated LR).

Parties and what each holds
---------------------------
* **bank** (``BankParty``): the labels, optionally its own feature columns,
  the intercept; it drives the job.
* **providers** (``ProviderParty``, N >= 1): feature columns.
* **node** (``NodeCoordinator``): the job's HE secret key. It decrypts only
  payloads that their senders masked with fresh randomness (a party's
  gradient sums, the bank's aggregate loss) and relays everything else.

Topology is hub and spoke, as on the wire: the bank calls the node, the node
calls providers (``ProviderLink``), and every exchange runs bank -> node ->
providers -> node -> bank. Every method here takes and returns frozen
dataclasses of bytes and numbers (``xinrong.modeling.vlr_wire`` encodes them), so
the gRPC layer calls the same methods from separate processes.

Sealing. Providers' encrypted partial logits go to the bank, and the bank's
encrypted residual to each provider, *sealed end to end* (HPKE,
``xinrong.keys.sealing``): they are encrypted under the node's HE key, so the node
must not see them. The transport seals (``SEALED_*`` content types and
``seal_context`` below); the node only ever handles the sealed bytes.

One mini-batch
--------------
All parties derive the same batches from the job seed (``batch_rows``); no
row list travels per batch, and a bank cannot pick adaptive batches.
Encrypted values are in normalized units ``t = z / R`` (``xinrong.modeling.sigmoid``).

1. *Bound (the logit guard).* Each party computes its partial logit at the
   Nesterov look-ahead weights, ``tau_i = X_i w_i / R`` (R = the base
   ``sigmoid_radius``; the bank adds its intercept), and sends the node an
   integer code of an upper bound on ``max |tau_i|`` over the batch
   (quarter-octave resolution, ``xinrong.modeling.sigmoid.bound_code``). The sum S of
   the bounds bounds every logit of the batch: ``|z| <= S * R``. The node
   picks the smallest *level* k with ``S <= 2**(k/4)`` and the whole batch
   uses the sigmoid fitted on ``[-R_k, R_k]``, ``R_k = R * 2**(k/4)``: a
   wider approximant when logits grow (nearly separable data), the most
   accurate one (k = 0) otherwise. Beyond ``guard_max_level`` the node has
   every party multiply its weights and momentum by the common factor
   ``2**(-j/4)`` that brings S to ``guard_target`` of the widest interval;
   a factor below ``guard_min_factor`` (logits jumping 8x in one step:
   divergence) fails the job with ``LogitGuardError`` instead of hiding it.
   So no logit ever leaves the interval its sigmoid was fitted on, and
   every level change and shrink is recorded. *Leak, by design:* the node
   learns each party's coarse bound per batch (no row identities); the bank
   learns the level and shrink steps, i.e. a quarter-octave bound on the
   batch's largest logit once it exceeds R. After training, scoring reveals
   logits to the bank anyway.
2. *Forward.* Each provider encrypts ``tau_i`` under the node's key,
   rerandomizes, and seals it to the bank. The bank forms
   ``[[t]] = sum [[tau_i]] + tau_b``, evaluates the sigmoid polynomial with
   row weights on its coefficients (0 for decoys, ``B / B_real`` for real
   rows, skipped when the batch has no decoys; no level of their own) and
   subtracts the weighted labels: ``[[d]] = w * (s([[t]]) - y)``. Each
   provider gets its own rerandomization of ``[[d]]`` (a fresh Enc(0) at
   ``[[d]]``'s level), sealed to it. One shared rerandomization would hide
   ``[[d]]`` from each provider just as well (the fresh randomness is the
   bank's alone) and would only matter if providers colluded, which the
   trust model excludes; we keep one per provider anyway, because "every
   ciphertext that leaves a party carries randomness never sent before" is
   a rule the backends and tests can check locally, and it costs ~11 ms.
3. *Gradients.* Every party computes ``masked_column_sums([[d]], X_i)``; the
   node decrypts the masked sums and returns them to that party only; the
   party unmasks, divides by B, adds ``l2 * w`` and updates its own weights.
   The node audits that each party submits exactly one payload of its own
   width per batch.
4. *Loss.* With a backend that can evaluate it, the bank computes the
   per-row loss polynomial on ``[[t]]`` (``s``'s antiderivative when the
   degree allows), masks the total and has the node decrypt it. With a
   degree-1 backend (Paillier) the bank sends provider j the encrypted
   prefix ``[[T_{j-1}]] = tau_b + sum_{i<j} [[tau_i]]`` with the residual and
   gets back ``[[2 tau_j T_{j-1} + tau_j**2]]``, sealed, from which it forms
   ``[[t**2]]`` for the quadratic loss; one extra bank -> node call.

What each party learns
----------------------
* Node: bound codes (a quarter-octave bound on each party's largest
  |partial logit| per batch, no row identities), the level and shrink it
  decides, masked sums it cannot unmask, sealed boxes it cannot open, and
  the bank's per-epoch aggregate loss (reported for the model metadata).
  Never a gradient, partial logit, residual, label or weight: replaying its
  view through the optimizer yields noise (``tests/test_vlr_privacy.py``).
* Bank: its own gradient each step and the aggregate loss (as in Hardy et
  al.), the per-batch interval level and shrink steps; partial logits only
  as ciphertexts under the node's key.
* Provider: its own gradient each step (as in Hardy et al.), the interval
  level and shrink steps of each batch (coarse, label-dependent bits), the
  training row set; labels only inside ``[[d]]`` under the node's key.
* Nobody: another party's weights or features. Weights never leave their
  owner; the node's model metadata holds names, hashes and metrics only.

Trust model: the node is honest-but-curious (it relays faithfully); HPKE
base mode seals for confidentiality, and sender authenticity comes from the
mTLS hop plus the node's relaying. A *malicious* node could feed a party
ciphertexts of its choosing; that breaks integrity, not the masking of what
the node decrypts. Like Hardy et al. and FATE, training assumes the bank and
providers follow the protocol: the node cannot check *what* a masked
payload was computed from, so a party that masks something else than its
own gradient can have one of its own linear functions of any ciphertext it
holds decrypted -- a malicious bank could read chosen rows of a partial
logit, a malicious provider chosen rows of the residual (hence labels).
The node's audit (one payload per party per batch, exactly that party's
width) bounds this to that many values per batch; closing it needs
zero-knowledge proofs of correct computation (or zero-sum masks among
providers plus noise), which neither this protocol nor its peers have. Decoy rows: real rows get weight ``B / B_real`` so the
gradient is a mean over real rows; ``MAX_ROW_WEIGHT`` caps that at 4 (at
least a quarter of a batch real), which keeps residuals within a few times
the CKKS masking bound ``value_bound``.

Backends: the protocol only asks ``max_degree`` of a key. Paillier
(``max_degree == 1``) gets FATE's first-order sigmoid, i.e. least squares;
CKKS evaluates degree 7 with its default chain (9 with one more level).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from xinrong.errors import Reason, XinrongError
from xinrong.modeling.he.base import HEPublic, HESecret, load_public
from xinrong.modeling.preprocess import ColumnTransform, Impute, fit_transform
from xinrong.modeling.sigmoid import (
    BOUND_STEPS_PER_OCTAVE,
    MIN_BOUND_CODE,
    Approximant,
    bound_code,
    bound_value,
    for_backend,
    shrink_factor,
)
from xinrong.modeling.vlr_state import (
    ModelShare,
    check_id,
    checkpoint_epochs,
    checkpoint_path,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
T = TypeVar("T")

PROTOCOL = "xinrong.vlr/1"
SEALED_PARTIAL = "xinrong.v1.VlrPartialLogits"
SEALED_RESIDUAL = "xinrong.v1.VlrResidual"
SEALED_SQUARE = "xinrong.v1.VlrSquareTerm"
MAX_ROW_WEIGHT = 4.0  # real rows are weighted B / B_real: at least a quarter of a batch must be real

Schedule = Literal["constant", "inverse_time", "exponential"]


class VlrError(XinrongError):
    """The modeling job cannot continue; ``detail`` says why (never any value)."""

    default_reason = Reason.JOB_FAILED


class LogitGuardError(VlrError):
    """Logits would leave the sigmoid's fitted interval and shrinking cannot contain them."""


class ProtocolViolation(VlrError):
    """A message out of order, for another job, or of the wrong shape."""

    default_reason = Reason.FAILED_PRECONDITION


def seal_context(job_id: str, epoch: int, batch: int, provider_id: str) -> str:
    """The HPKE context a transport binds into sealed boxes: no replay across batches or parties."""
    return f"{job_id}/{epoch}/{batch}/{provider_id}"


# -- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """The job's shared parameters: every party gets the same copy and checks it.

    ``l2`` is the coefficient of ``l2/2 * ||w||**2`` added to the *mean*
    log-loss (intercept unpenalized), i.e. scikit-learn's ``C = 1 / (l2 * n)``.
    """

    job_id: str
    epochs: int = 20
    batch_size: int = 8192
    learning_rate: float = 0.5
    lr_schedule: Schedule = "constant"
    lr_decay: float = 0.0
    momentum: float = 0.8
    l2: float = 0.01
    tol: float = 1e-4
    patience: int = 0  # epochs without relative loss improvement > tol before stopping; 0 = never
    seed: int = 0
    sigmoid_degree: int = 0  # 0: the highest odd degree the backend evaluates (<= 9)
    sigmoid_radius: float = 10.0
    sigmoid_weight_scale: float = 2.0
    sigmoid_error_cap: float = 3.0
    guard_max_level: int = 8  # widest interval: sigmoid_radius * 2**(8/4)
    guard_target: float = 0.9
    guard_min_factor: float = 0.125
    track_loss: bool = True
    loss_batches: int = 0  # encrypted loss on the first k batches of each epoch (0: all); it costs a polynomial
    impute: Impute = "mean"
    missing_indicators: bool = True
    clip: float = 3.0
    checkpoint_keep: int = 2

    def validate(self) -> None:
        check_id(self.job_id, "job id")
        if not 1 <= self.epochs <= 10_000:
            raise ValueError("epochs must be within 1..10000")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError("learning_rate must be positive")
        if self.lr_schedule not in ("constant", "inverse_time", "exponential"):
            raise ValueError(f"unknown lr_schedule {self.lr_schedule!r}")
        if self.lr_schedule == "exponential" and not 0 < self.lr_decay <= 1:
            raise ValueError("exponential lr_decay must be in (0, 1]")
        if self.lr_schedule == "inverse_time" and self.lr_decay < 0:
            raise ValueError("inverse_time lr_decay must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ValueError("momentum must be in [0, 1)")
        if not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise ValueError("l2 must be >= 0")
        if self.tol < 0 or self.patience < 0:
            raise ValueError("tol and patience must be >= 0")
        if self.sigmoid_degree < 0 or (self.sigmoid_degree and self.sigmoid_degree % 2 == 0):
            raise ValueError("sigmoid_degree must be 0 (auto) or odd")
        if not (self.sigmoid_radius > 0 and self.sigmoid_weight_scale > 0):
            raise ValueError("sigmoid_radius and sigmoid_weight_scale must be positive")
        if not self.sigmoid_error_cap >= 1:
            raise ValueError("sigmoid_error_cap must be >= 1")
        if not 0 <= self.guard_max_level <= 16:
            raise ValueError("guard_max_level must be within 0..16")
        if not 0 < self.guard_target <= 1:
            raise ValueError("guard_target must be in (0, 1]")
        if not 0 < self.guard_min_factor <= 1:
            raise ValueError("guard_min_factor must be in (0, 1]")
        if self.impute not in ("mean", "median"):
            raise ValueError("impute must be 'mean' or 'median'")
        if not self.clip > 0:
            raise ValueError("clip must be positive")
        if self.checkpoint_keep < 1:
            raise ValueError("checkpoint_keep must be >= 1")
        if self.loss_batches < 0:
            raise ValueError("loss_batches must be >= 0")

    def approximant(self, max_degree: int, level: int = 0) -> Approximant:
        """The sigmoid surrogate of interval level ``level`` (radius ``sigmoid_radius * 2**(level/4)``)."""
        return for_backend(
            max_degree,
            degree=self.sigmoid_degree or None,
            radius=self.sigmoid_radius * level_scale(level),
            weight_scale=self.sigmoid_weight_scale,
            error_cap=self.sigmoid_error_cap,
        )

    def learning_rate_at(self, epoch: int) -> float:
        if self.lr_schedule == "inverse_time":
            return self.learning_rate / (1.0 + self.lr_decay * epoch)
        if self.lr_schedule == "exponential":
            return float(self.learning_rate * self.lr_decay**epoch)
        return self.learning_rate

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("config must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown config fields {sorted(unknown)}")
        config = cls(**data)
        config.validate()
        return config

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def level_scale(level: int) -> float:
    """Radius of interval level k relative to the base radius: 2**(k/4), exact in bound codes."""
    if level < 0:
        raise ValueError("level must be >= 0")
    return float(2.0 ** (level / BOUND_STEPS_PER_OCTAVE))


def batch_count(n_rows: int, batch_size: int) -> int:
    return max(1, -(-n_rows // batch_size))


def batch_rows(n_rows: int, batch_size: int, seed: int, epoch: int) -> list[IntArray]:
    """The epoch's batches, identical at every party: a seeded permutation split evenly.

    Batches differ in size by at most one row, so no batch is a runt that
    would expose few rows.
    """
    if n_rows < 1:
        raise ValueError("no training rows")
    nb = batch_count(n_rows, batch_size)
    if nb == 1:
        return [np.arange(n_rows, dtype=np.int64)]
    perm = np.random.default_rng([seed, epoch]).permutation(n_rows).astype(np.int64)
    return [np.asarray(b, dtype=np.int64) for b in np.array_split(perm, nb)]


# -- messages ------------------------------------------------------------------------------


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


# -- shared party machinery ----------------------------------------------------------------


def _f64(data: bytes, expected: int, what: str) -> FloatArray:
    if len(data) != 8 * expected:
        raise ProtocolViolation(f"{what}: expected {expected} float64 values")
    arr = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ProtocolViolation(f"{what}: non-finite values")
    return arr


def _rows_bytes(rows: IntArray) -> bytes:
    return np.asarray(rows, dtype="<u4").tobytes()


def _rows_from(data: bytes, n_rows: int) -> IntArray:
    if len(data) % 4:
        raise ProtocolViolation("train rows: truncated")
    rows = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if rows.size == 0 or rows.max() >= n_rows or np.unique(rows).size != rows.size:
        raise ProtocolViolation("train rows: empty, out of range or repeated")
    return rows


class _Optimizer:
    """Nesterov momentum on one party's own coordinates (an intercept, if any, is unpenalized).

    Momentum is per coordinate, so each party running it on its own weights
    is exactly the centralized optimizer; a guard shrink scales weights and
    velocity alike (a projection that keeps the trajectory consistent).
    """

    def __init__(self, width: int, l2_mask: FloatArray) -> None:
        self.w = np.zeros(width)
        self.v = np.zeros(width)
        self.l2_mask = l2_mask

    def lookahead(self, momentum: float) -> FloatArray:
        out: FloatArray = self.w + momentum * self.v
        return out

    def shrink(self, factor: float) -> None:
        self.w *= factor
        self.v *= factor

    def step(self, grad_sum: FloatArray, batch: int, lr: float, momentum: float, l2: float) -> None:
        w_la = self.lookahead(momentum)
        g = grad_sum / batch + l2 * self.l2_mask * w_la
        self.v = momentum * self.v - lr * g
        self.w = self.w + self.v
        if not np.all(np.isfinite(self.w)):
            raise VlrError("weights became non-finite: the learning rate is far too high")


@dataclass
class _Position:
    epoch: int = 0
    batch: int = 0
    phase: str = "bound"  # provider: bound -> encrypt -> gradient -> update; bank: forward -> backward -> apply


class _PartyCore:
    """What bank and providers share: data, transform, optimizer, schedule, checkpoints."""

    role: str

    def __init__(self, party_id: str, checkpoint_dir: str | Path | None) -> None:
        self.party_id = check_id(party_id, "party id")
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.config: TrainConfig | None = None
        self.he: HEPublic | None = None
        self.approx: Approximant | None = None
        self.transform: ColumnTransform | None = None
        self.x: FloatArray = np.zeros((0, 0))
        self.opt: _Optimizer | None = None
        self.pos = _Position()
        self._batches: tuple[int, list[IntArray]] | None = None
        self._tau: FloatArray | None = None
        self.n_train = 0

    # configuration checks shared by both roles
    def _cfg(self) -> TrainConfig:
        if self.config is None:
            raise ProtocolViolation("no job is set up")
        return self.config

    def _he(self) -> HEPublic:
        if self.he is None:
            raise ProtocolViolation("no job is set up")
        return self.he

    def _approx(self) -> Approximant:
        if self.approx is None:
            raise ProtocolViolation("no job is set up")
        return self.approx

    def _opt(self) -> _Optimizer:
        if self.opt is None:
            raise ProtocolViolation("no job is set up")
        return self.opt

    def _check_job(self, job_id: str) -> None:
        if job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")

    def _expect(self, epoch: int, batch: int, phase: str) -> None:
        if (epoch, batch, phase) != (self.pos.epoch, self.pos.batch, self.pos.phase):
            raise ProtocolViolation(
                f"out of order: got {phase} for epoch {epoch} batch {batch}, "
                f"expected {self.pos.phase} for epoch {self.pos.epoch} batch {self.pos.batch}"
            )

    def batches(self, epoch: int) -> list[IntArray]:
        if self._batches is None or self._batches[0] != epoch:
            cfg = self._cfg()
            self._batches = (epoch, batch_rows(self.n_train, cfg.batch_size, cfg.seed, epoch))
        return self._batches[1]

    def n_batches(self) -> int:
        return batch_count(self.n_train, self._cfg().batch_size)

    def _bound(self, x_batch: FloatArray) -> int:
        """Partial logits at the look-ahead weights, normalized; cached for the encrypt step."""
        cfg, opt = self._cfg(), self._opt()
        tau = (x_batch @ opt.lookahead(cfg.momentum)) / cfg.sigmoid_radius
        if not np.all(np.isfinite(tau)):
            raise VlrError("partial logits are not finite: the model diverged")
        self._tau = tau
        return bound_code(float(np.max(np.abs(tau))) if tau.size else 0.0)

    def _advance(self) -> None:
        self.pos.batch += 1
        self.pos.phase = "bound" if self.role == "provider" else "forward"
        if self.pos.batch >= self.n_batches():
            self.pos.phase = "epoch_end"

    def _end_epoch(self, epoch: int) -> None:
        if self.pos.phase != "epoch_end" or epoch != self.pos.epoch + 1:
            raise ProtocolViolation("epoch end out of order")
        self.pos = _Position(epoch=epoch, batch=0, phase="bound" if self.role == "provider" else "forward")
        self.save_checkpoint()

    # checkpoints ---------------------------------------------------------------------------

    def _checkpoint_meta(self) -> dict[str, Any]:
        return {}

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        return None

    def save_checkpoint(self) -> Path | None:
        """Atomically save weights, optimizer and position (completed epochs); prune old ones."""
        if self.checkpoint_dir is None:
            return None
        cfg, opt = self._cfg(), self._opt()
        meta = {
            "job_id": cfg.job_id,
            "config_digest": cfg.digest(),
            "role": self.role,
            "transform": None if self.transform is None else self.transform.to_dict(),
        }
        meta.update(self._checkpoint_meta())
        path = save_checkpoint(self.checkpoint_dir, self.party_id, self.pos.epoch, {"w": opt.w, "v": opt.v}, meta)
        prune_checkpoints(self.checkpoint_dir, self.party_id, cfg.checkpoint_keep)
        return path

    def checkpointed_epochs(self) -> tuple[int, ...]:
        if self.checkpoint_dir is None:
            return ()
        return tuple(checkpoint_epochs(self.checkpoint_dir, self.party_id))

    def restore_checkpoint(self, epoch: int) -> None:
        if self.checkpoint_dir is None:
            raise VlrError("this party keeps no checkpoints")
        cfg, opt = self._cfg(), self._opt()
        path = checkpoint_path(self.checkpoint_dir, self.party_id, epoch)
        if not path.exists():
            raise VlrError(f"no checkpoint for epoch {epoch}")
        arrays, meta = load_checkpoint(path)
        if meta.get("job_id") != cfg.job_id or meta.get("config_digest") != cfg.digest():
            raise VlrError("checkpoint belongs to another job or configuration")
        if arrays["w"].shape != opt.w.shape or arrays["v"].shape != opt.v.shape:
            raise VlrError("checkpoint has the wrong shape")
        if self.transform is not None and meta.get("transform") != self.transform.to_dict():
            raise VlrError("checkpoint preprocessing differs from the refitted one")
        opt.w, opt.v = arrays["w"].astype(np.float64), arrays["v"].astype(np.float64)
        self._restore_meta(meta)
        self.pos = _Position(epoch=epoch, batch=0, phase="bound" if self.role == "provider" else "forward")
        self._tau = None


# -- provider --------------------------------------------------------------------------------


class ProviderParty(_PartyCore):
    """A feature holder. Its raw rows arrive in the aligned (PSI) order; they never leave.

    ``min_batch_rows`` is the provider's own policy, not the bank's: it
    refuses a job whose batches are small enough that a coarse per-batch
    logit bound would describe a handful of rows.
    """

    role = "provider"

    def __init__(
        self,
        party_id: str,
        x_aligned_raw: npt.ArrayLike,
        feature_names: Sequence[str],
        *,
        checkpoint_dir: str | Path | None = None,
        min_batch_rows: int = 16,
    ) -> None:
        super().__init__(party_id, checkpoint_dir)
        self._raw = np.asarray(x_aligned_raw, dtype=np.float64)
        if self._raw.ndim != 2 or self._raw.shape[1] != len(feature_names) or self._raw.shape[1] == 0:
            raise ValueError("provider needs a 2-D feature matrix with at least one named column")
        self._names = tuple(feature_names)
        self.min_batch_rows = min_batch_rows
        self._residual: Any = None
        self._mask: Any = None
        self._square_prefix: Any = None
        self._batch_n = 0

    def setup(self, msg: JobSetup) -> SetupAck:
        config = TrainConfig.from_json(msg.config_json)
        if msg.job_id != config.job_id or msg.provider_id != self.party_id:
            raise ProtocolViolation("job setup is for another job or party")
        if not config.sigmoid_degree:
            raise ProtocolViolation("the node must resolve the sigmoid degree before setup")
        if msg.n_rows != self._raw.shape[0]:
            raise ProtocolViolation("aligned row count differs from this provider's aligned data")
        rows = _rows_from(msg.train_rows, msg.n_rows)
        smallest = rows.size // batch_count(rows.size, config.batch_size)
        if smallest < self.min_batch_rows:
            raise VlrError(f"batches of {smallest} rows are below this provider's minimum of {self.min_batch_rows}")
        self.config = config
        # Providers never evaluate the polynomial; they only normalize by the radius.
        self.he = load_public(msg.scheme, msg.he_public)
        raw_train = self._raw[rows]
        self.transform = fit_transform(
            raw_train, self._names, impute=config.impute, indicators=config.missing_indicators, clip=config.clip
        )
        self.x = self.transform.apply(raw_train)
        self.n_train = rows.size
        width = self.x.shape[1]
        self.opt = _Optimizer(width, np.ones(width))
        self.pos = _Position()
        log.info(
            "provider %s: job %s set up, %d training rows, %d columns", self.party_id, config.job_id, rows.size, width
        )
        return SetupAck(job_id=config.job_id, party_id=self.party_id, feature_names=self.transform.output_names())

    def bound(self, msg: BoundRequest) -> BoundReport:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "bound")
        rows = self.batches(msg.epoch)[msg.batch]
        code = self._bound(self.x[rows])
        self.pos.phase = "encrypt"
        return BoundReport(msg.job_id, msg.epoch, msg.batch, self.party_id, code)

    def encrypt(self, msg: EncryptRequest) -> PartialLogits:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "encrypt")
        if self._tau is None:
            raise ProtocolViolation("no bound was computed for this batch")
        he = self._he()
        if msg.shrink_steps:
            factor = shrink_factor(msg.shrink_steps)
            self._opt().shrink(factor)
            self._tau = self._tau * factor
        if not 0 <= msg.level <= self._cfg().guard_max_level:
            raise ProtocolViolation("interval level out of range")
        ct = he.rerandomize(he.encrypt(self._tau / level_scale(msg.level)))
        self.pos.phase = "gradient"
        return PartialLogits(msg.job_id, msg.epoch, msg.batch, self.party_id, he.serialize(ct))

    def gradient(self, msg: Residual) -> GradientPayload:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "gradient")
        if msg.party_id != self.party_id:
            raise ProtocolViolation("residual addressed to another party")
        he = self._he()
        rows = self.batches(msg.epoch)[msg.batch]
        d = he.deserialize(msg.ciphertext)
        if he.length(d) != rows.size:
            raise ProtocolViolation("residual length differs from the batch size")
        payload, self._mask = he.masked_column_sums(d, self.x[rows])
        square = b""
        if msg.prefix:
            from xinrong.modeling.vlr_wire import encode

            if self._tau is None:
                raise ProtocolViolation("no partial logits for this batch")
            prefix = he.deserialize(msg.prefix)
            if he.length(prefix) != rows.size:
                raise ProtocolViolation("prefix length differs from the batch size")
            term = he.add_plain(he.mul_plain(prefix, 2.0 * self._tau), self._tau**2)
            square = encode(
                SquareTerm(msg.job_id, msg.epoch, msg.batch, self.party_id, he.serialize(he.rerandomize(term)))
            )
        self._batch_n = rows.size
        self.pos.phase = "update"
        return GradientPayload(msg.job_id, msg.epoch, msg.batch, self.party_id, payload, square)

    def update(self, msg: UpdateRequest) -> UpdateAck:
        self._check_job(msg.job_id)
        self._expect(msg.epoch, msg.batch, "update")
        cfg, opt, he = self._cfg(), self._opt(), self._he()
        sums = _f64(msg.masked_sums, opt.w.size, "masked sums")
        grad = he.unmask_column_sums(sums, self._mask)
        self._mask = None
        opt.step(grad, self._batch_n, cfg.learning_rate_at(msg.epoch), cfg.momentum, cfg.l2)
        self._tau = None
        self._advance()
        return UpdateAck(msg.job_id, msg.epoch, msg.batch, self.party_id)

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        self._check_job(msg.job_id)
        self._end_epoch(msg.epoch)
        return EpochAck(msg.job_id, msg.epoch, self.party_id)

    def resume_state(self, msg: ResumeQuery) -> ResumeState:
        self._check_job(msg.job_id)
        return ResumeState(msg.job_id, self.party_id, self.checkpointed_epochs())

    def restore(self, msg: RestoreRequest) -> RestoreAck:
        self._check_job(msg.job_id)
        self.restore_checkpoint(msg.epoch)
        return RestoreAck(msg.job_id, self.party_id, msg.epoch)

    def model_share(self, epochs: int) -> ModelShare:
        if self.transform is None:
            raise ProtocolViolation("no job is set up")
        return ModelShare(
            job_id=self._cfg().job_id,
            party_id=self.party_id,
            role="provider",
            feature_names=self.transform.output_names(),
            transform=self.transform,
            weights=tuple(float(w) for w in self._opt().w),
            intercept=None,
            epochs=epochs,
            sigmoid={"degree": self._cfg().sigmoid_degree, "radius": self._cfg().sigmoid_radius},
        )

    def finish(self, msg: FinishRequest, share_path: str | Path) -> FinishAck:
        """Write this provider's model share atomically (a crash leaves no half-written file)."""
        self._check_job(msg.job_id)
        share = self.model_share(msg.epochs)
        text = share.to_json().encode()
        share.save(share_path)
        return FinishAck(msg.job_id, self.party_id, hashlib.sha256(text).hexdigest())


# -- bank ----------------------------------------------------------------------------------


@dataclass
class BankMetrics:
    """What the bank learns and reports: aggregate losses, guard events, nothing per row."""

    epoch_losses: list[float] = field(default_factory=list)
    guard_levels: dict[int, int] = field(default_factory=dict)  # interval level -> batches
    guard_shrinks: list[tuple[int, int, int]] = field(default_factory=list)  # (epoch, batch, shrink steps)
    stopped_early: bool = False
    epochs_run: int = 0


@dataclass(frozen=True)
class BankBackward:
    """The bank's side of step 2-4, before the transport seals the residuals."""

    residuals: tuple[Residual, ...]
    gradient_payload: bytes
    loss_payload: bytes


class BankParty(_PartyCore):
    """The label holder: drives the job, holds the intercept, computes residual and loss.

    ``x_train_raw`` may have zero columns (labels only). ``decoy`` marks
    training rows that are in the aligned set only to hide the bank's real
    borrowers: their residual is zeroed under encryption, so they add nothing
    to any gradient or to the loss, and providers cannot tell them apart.
    """

    role = "bank"

    def __init__(
        self,
        party_id: str,
        config: TrainConfig,
        x_train_raw: npt.ArrayLike,
        feature_names: Sequence[str],
        y_train: npt.ArrayLike,
        *,
        decoy: npt.ArrayLike | None = None,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        super().__init__(party_id, checkpoint_dir)
        config.validate()
        self.config = config
        raw = np.asarray(x_train_raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != len(feature_names):
            raise ValueError("bank features must be a 2-D matrix with one name per column")
        y = np.asarray(y_train, dtype=np.float64).reshape(-1)
        if y.shape[0] != raw.shape[0] or not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("labels must be 0/1, one per training row")
        self.decoy = np.zeros(y.shape[0], dtype=bool) if decoy is None else np.asarray(decoy, dtype=bool).reshape(-1)
        if self.decoy.shape != y.shape:
            raise ValueError("decoy flags must match the training rows")
        real = ~self.decoy
        if not (y[real] == 1).any() or not (y[real] == 0).any():
            raise ValueError("the real training rows need both classes")
        self.y = np.where(self.decoy, 0.0, y)
        self.n_train = y.shape[0]
        if raw.shape[1]:
            self.transform = fit_transform(
                raw[real], feature_names, impute=config.impute, indicators=config.missing_indicators, clip=config.clip
            )
            feats = self.transform.apply(raw)
        else:
            self.transform = None
            feats = np.zeros((y.shape[0], 0))
        self.x = np.hstack([feats, np.ones((y.shape[0], 1))])  # last column: the intercept
        width = self.x.shape[1]
        l2_mask = np.ones(width)
        l2_mask[-1] = 0.0
        self.opt = _Optimizer(width, l2_mask)
        self.pos = _Position(phase="forward")
        self.provider_ids: tuple[str, ...] = ()
        self._level_cache: dict[int, Approximant] = {}
        self.metrics = BankMetrics()
        self._pending: dict[str, Any] = {}
        self._epoch_loss_sum = 0.0
        self._epoch_loss_rows = 0
        self._best_loss = math.inf
        self._bad_epochs = 0
        self._check_batches()

    def _check_batches(self) -> None:
        cfg = self._cfg()
        for epoch in range(min(cfg.epochs, 3)):
            for rows in batch_rows(self.n_train, cfg.batch_size, cfg.seed, epoch):
                real = int((~self.decoy[rows]).sum())
                if real == 0 or rows.size / real > MAX_ROW_WEIGHT:
                    raise VlrError("a batch has too few real rows for its decoys; use fewer decoys or larger batches")

    def job_start(self, provider_ids: Sequence[str], n_rows: int, train_rows: npt.ArrayLike) -> JobStart:
        cfg = self._cfg()
        self.provider_ids = tuple(check_id(p, "provider id") for p in provider_ids)
        if not self.provider_ids or len(set(self.provider_ids)) != len(self.provider_ids):
            raise ValueError("need at least one provider, each once")
        rows = np.asarray(train_rows, dtype=np.int64)
        if rows.size != self.n_train:
            raise ValueError("train rows must match the bank's training rows")
        return JobStart(
            cfg.job_id,
            cfg.to_json(),
            self.party_id,
            self.feature_names,
            self.provider_ids,
            int(n_rows),
            _rows_bytes(rows),
        )

    def started(self, msg: JobStarted) -> None:
        """Load the node's key; accept the node's config only if it merely resolved the sigmoid degree."""
        self._check_job(msg.job_id)
        if msg.provider_ids != self.provider_ids:
            raise ProtocolViolation("node answered with another provider set")
        resolved = TrainConfig.from_json(msg.config_json)
        if dataclasses.replace(resolved, sigmoid_degree=self._cfg().sigmoid_degree) != self._cfg():
            raise ProtocolViolation("node changed the job configuration")
        self.he = load_public(msg.scheme, msg.he_public)
        approx = resolved.approximant(self.he.max_degree)
        if approx.degree != resolved.sigmoid_degree:
            raise ProtocolViolation("node resolved a sigmoid degree the key cannot evaluate")
        self.config = resolved
        self.approx = approx
        self._level_cache = {0: approx}

    @property
    def feature_names(self) -> tuple[str, ...]:
        return () if self.transform is None else self.transform.output_names()

    def _level_approx(self, level: int) -> Approximant:
        """The surrogate of one interval level, fitted once and cached."""
        approx = self._level_cache.get(level)
        if approx is None:
            approx = self._cfg().approximant(self._he().max_degree, level)
            self._level_cache[level] = approx
        return approx

    @property
    def loss_mode(self) -> str:
        if not self._cfg().track_loss:
            return "none"
        return self._approx().loss_mode

    def forward_request(self, epoch: int, batch: int) -> ForwardRequest:
        self._expect(epoch, batch, "forward")
        rows = self.batches(epoch)[batch]
        code = self._bound(self.x[rows])  # the ones column carries the intercept
        self.pos.phase = "backward"
        return ForwardRequest(self._cfg().job_id, epoch, batch, code)

    def backward(self, reply: ForwardReply, partials: Sequence[PartialLogits]) -> BankBackward:
        """Residual, own gradient payload and (if possible now) loss payload for this batch."""
        self._check_job(reply.job_id)
        self._expect(reply.epoch, reply.batch, "backward")
        if reply.provider_ids != self.provider_ids or len(partials) != len(self.provider_ids):
            raise ProtocolViolation("partial logits from an unexpected provider set")
        he, opt = self._he(), self._opt()
        if self._tau is None:
            raise ProtocolViolation("no bound was computed for this batch")
        if not 0 <= reply.level <= self._cfg().guard_max_level:
            raise ProtocolViolation("interval level out of range")
        approx = self._level_approx(reply.level)
        if reply.shrink_steps:
            factor = shrink_factor(reply.shrink_steps)
            opt.shrink(factor)
            self._tau = self._tau * factor
            self.metrics.guard_shrinks.append((reply.epoch, reply.batch, reply.shrink_steps))
        self.metrics.guard_levels[reply.level] = self.metrics.guard_levels.get(reply.level, 0) + 1
        tau = self._tau / level_scale(reply.level)
        rows = self.batches(reply.epoch)[reply.batch]
        n = rows.size
        cts = []
        for pid, part in zip(self.provider_ids, partials):
            if (part.job_id, part.epoch, part.batch, part.party_id) != (reply.job_id, reply.epoch, reply.batch, pid):
                raise ProtocolViolation("partial logits for another batch or party")
            ct = he.deserialize(part.ciphertext)
            if he.length(ct) != n:
                raise ProtocolViolation("partial logits have the wrong length")
            cts.append(ct)
        acc = cts[0]
        for ct in cts[1:]:
            acc = he.add(acc, ct)
        t = he.add_plain(acc, tau)
        y = self.y[rows]
        real = ~self.decoy[rows]
        n_real = int(real.sum())
        weights: FloatArray | None = None
        if n_real == 0 or n / n_real > MAX_ROW_WEIGHT:
            raise VlrError("a batch has too few real rows for its decoys; use fewer decoys or larger batches")
        if n_real < n:
            weights = np.where(real, n / n_real, 0.0)
        # w * (s(t) - y): the weights ride on the polynomial (no level of their own); decoys have y = 0.
        wy = y if weights is None else weights * y
        d = he.add_plain(he.polyval(t, approx.coeffs, row_weights=weights), -wy)
        mode = self.loss_mode
        loss_batches = self._cfg().loss_batches
        want_loss = mode != "none" and (loss_batches == 0 or reply.batch < loss_batches)
        residuals = []
        prefix_plain = tau
        prefix_ct: Any = None
        for j, pid in enumerate(self.provider_ids):
            prefix = b""
            if mode == "square" and want_loss:
                if prefix_ct is None:
                    prefix_ct = he.encrypt(prefix_plain)
                prefix = he.serialize(he.rerandomize(prefix_ct))
                prefix_ct = he.add(prefix_ct, cts[j])
            residuals.append(
                Residual(reply.job_id, reply.epoch, reply.batch, pid, he.serialize(he.rerandomize(d)), prefix)
            )
        gradient_payload, grad_mask = he.masked_column_sums(d, self.x[rows])
        loss_payload = b""
        loss_mask: Any = None
        if mode == "poly" and want_loss:
            # w * (l0(t) - y t); the backend reuses the powers of t from the sigmoid above
            lt = he.add(he.polyval(t, approx.loss_coeffs, row_weights=weights), he.mul_plain(t, -wy))
            loss_payload, loss_mask = he.masked_total(lt)
        self._pending = {
            "grad_mask": grad_mask,
            "loss_mask": loss_mask,
            "t": t,
            "y": y,
            "weights": weights,
            "n": n,
            "n_real": n_real,
            "want_loss": want_loss,
            "tau": tau,
            "approx": approx,
        }
        self.pos.phase = "apply"
        return BankBackward(tuple(residuals), gradient_payload, loss_payload)

    def apply(self, reply: BackwardReply, squares: Sequence[SquareTerm] = ()) -> LossRequest | None:
        """Unmask and apply the bank's gradient; returns a loss request in square-loss mode."""
        self._check_job(reply.job_id)
        self._expect(reply.epoch, reply.batch, "apply")
        cfg, opt, he = self._cfg(), self._opt(), self._he()
        p = self._pending
        sums = _f64(reply.masked_sums, opt.w.size, "masked sums")
        grad = he.unmask_column_sums(sums, p["grad_mask"])
        opt.step(grad, p["n"], cfg.learning_rate_at(reply.epoch), cfg.momentum, cfg.l2)
        mode = self.loss_mode if p["want_loss"] else "none"
        request: LossRequest | None = None
        if mode == "poly":
            if reply.masked_loss is None:
                raise ProtocolViolation("node returned no loss")
            self._record_loss(he.unmask_total(reply.masked_loss, p["loss_mask"]))
        elif mode == "square":
            request = self._square_loss(reply, squares)
        if request is None:
            self._finish_batch()
        else:
            self.pos.phase = "loss"
        return request

    def _square_loss(self, reply: BackwardReply, squares: Sequence[SquareTerm]) -> LossRequest:
        he = self._he()
        p = self._pending
        approx = p["approx"]
        if len(squares) != len(self.provider_ids):
            raise ProtocolViolation("square terms missing")
        t2: Any = None
        for pid, sq in zip(self.provider_ids, squares):
            if (sq.job_id, sq.epoch, sq.batch, sq.party_id) != (reply.job_id, reply.epoch, reply.batch, pid):
                raise ProtocolViolation("square term for another batch or party")
            ct = he.deserialize(sq.ciphertext)
            if he.length(ct) != p["n"]:
                raise ProtocolViolation("square term has the wrong length")
            t2 = ct if t2 is None else he.add(t2, ct)
        t2 = he.add_plain(t2, p["tau"] ** 2)
        c = approx.loss_coeffs  # l0/R = c0 + c1 t + c2 t^2 ; row loss/R adds -y t
        lt = he.add_plain(he.add(he.mul_plain(p["t"], c[1] - p["y"]), he.mul_plain(t2, c[2])), c[0])
        if p["weights"] is not None:
            lt = he.mul_plain(lt, p["weights"])
        payload, p["loss_mask"] = he.masked_total(lt)
        return LossRequest(reply.job_id, reply.epoch, reply.batch, payload)

    def apply_loss(self, reply: LossReply) -> None:
        self._check_job(reply.job_id)
        self._expect(reply.epoch, reply.batch, "loss")
        self._record_loss(self._he().unmask_total(reply.masked_loss, self._pending["loss_mask"]))
        self._finish_batch()

    def _record_loss(self, masked_free_total: float) -> None:
        p = self._pending
        # the total is sum_rows weight * loss/R with weights summing to n: mean over real rows
        mean = masked_free_total * p["approx"].radius / p["n"]
        self._epoch_loss_sum += mean * p["n_real"]
        self._epoch_loss_rows += p["n_real"]

    def _finish_batch(self) -> None:
        self._pending = {}
        self._tau = None
        self._advance()

    def end_epoch(self) -> EpochEnd:
        """Close the epoch: record its loss, decide early stopping, checkpoint."""
        cfg = self._cfg()
        epoch = self.pos.epoch + 1
        loss: float | None = None
        if self._epoch_loss_rows:
            loss = self._epoch_loss_sum / self._epoch_loss_rows
            self.metrics.epoch_losses.append(loss)
        self._epoch_loss_sum, self._epoch_loss_rows = 0.0, 0
        stop = epoch >= cfg.epochs
        if loss is not None and cfg.patience:
            if self._best_loss - loss > cfg.tol * max(
                abs(self._best_loss) if math.isfinite(self._best_loss) else 1.0, 1e-12
            ):
                self._best_loss, self._bad_epochs = loss, 0
            else:
                self._bad_epochs += 1
            if self._bad_epochs >= cfg.patience and not stop:
                stop = True
                self.metrics.stopped_early = True
        self.metrics.epochs_run = epoch
        self._end_epoch(epoch)
        return EpochEnd(cfg.job_id, epoch, loss, stop)

    def _checkpoint_meta(self) -> dict[str, Any]:
        m = self.metrics
        return {
            "epoch_losses": m.epoch_losses,
            "guard_levels": {str(k): v for k, v in m.guard_levels.items()},
            "guard_shrinks": [list(e) for e in m.guard_shrinks],
            "best_loss": self._best_loss if math.isfinite(self._best_loss) else None,
            "bad_epochs": self._bad_epochs,
        }

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.metrics = BankMetrics(
            epoch_losses=[float(v) for v in meta.get("epoch_losses", [])],
            guard_levels={int(k): int(v) for k, v in meta.get("guard_levels", {}).items()},
            guard_shrinks=[(int(a), int(b), int(c)) for a, b, c in meta.get("guard_shrinks", [])],
            epochs_run=int(meta.get("epoch", 0)),
        )
        best = meta.get("best_loss")
        self._best_loss = math.inf if best is None else float(best)
        self._bad_epochs = int(meta.get("bad_epochs", 0))
        self._epoch_loss_sum, self._epoch_loss_rows = 0.0, 0

    def model_share(self, epochs: int) -> ModelShare:
        w = self._opt().w
        transform = self.transform or ColumnTransform((), (), (), (), (), self._cfg().clip)
        return ModelShare(
            job_id=self._cfg().job_id,
            party_id=self.party_id,
            role="bank",
            feature_names=transform.output_names(),
            transform=transform,
            weights=tuple(float(v) for v in w[:-1]),
            intercept=float(w[-1]),
            epochs=epochs,
            sigmoid=self._approx().to_dict(),
        )

    def finish(self, share_path: str | Path) -> ModelShare:
        share = self.model_share(self.metrics.epochs_run)
        share.save(share_path)
        return share


# -- node ----------------------------------------------------------------------------------


class ProviderLink(Protocol):
    """How the node reaches one provider (gRPC stub in production, a local wrapper in tests)."""

    provider_id: str

    def setup(self, msg: JobSetup) -> SetupAck: ...

    def bound(self, msg: BoundRequest) -> BoundReport: ...

    def encrypt(self, msg: EncryptRequest) -> bytes:
        """The provider's PartialLogits, sealed to the bank: opaque to the node."""
        ...

    def gradient(self, msg: GradientRequest) -> GradientReply: ...

    def update(self, msg: UpdateRequest) -> UpdateAck: ...

    def end_epoch(self, msg: EpochEnd) -> EpochAck: ...

    def finish(self, msg: FinishRequest) -> FinishAck: ...

    def resume_state(self, msg: ResumeQuery) -> ResumeState: ...

    def restore(self, msg: RestoreRequest) -> RestoreAck: ...


@dataclass
class GuardRecord:
    """What the node keeps about a shrink: coarse bound sums, never values."""

    epoch: int
    batch: int
    bound_sum: float  # in units of the base radius
    shrink_steps: int


class LogitGuard:
    """The node's rule that keeps every logit inside the interval its sigmoid was fitted on.

    ``decide`` returns ``(level, shrink_steps)``: the narrowest interval level
    whose radius covers the sum of the parties' bounds, and, only when even
    the widest level does not, the common shrink that brings the sum back.
    """

    def __init__(self, target: float, min_factor: float, max_level: int, enforce: bool) -> None:
        self.target = target
        self.min_factor = min_factor
        self.max_level = max_level
        self.enforce = enforce
        self.shrinks: list[GuardRecord] = []
        self.levels: dict[int, int] = {}
        self.batches_seen = 0
        self.max_bound_sum = 0.0

    def decide(self, epoch: int, batch: int, codes: Sequence[int]) -> tuple[int, int]:
        self.batches_seen += 1
        total = math.fsum(bound_value(c) for c in codes)
        self.max_bound_sum = max(self.max_bound_sum, total)
        if not math.isfinite(total) or total > 2.0**20:
            raise LogitGuardError("partial logits exploded: the model diverged (lower the learning rate)")
        level, steps = 0, 0
        if not self.enforce and total > level_scale(self.max_level):
            # A first-order surrogate regresses onto +-2: logits this far out mean divergence.
            raise LogitGuardError(
                f"logits reached {total:.0f}x the sigmoid radius (epoch {epoch}, batch {batch}): the "
                "first-order surrogate diverged; lower the learning rate or momentum"
            )
        if self.enforce:
            while level < self.max_level and total > level_scale(level):
                level += 1
            widest = level_scale(self.max_level)
            if total > widest:
                while total * shrink_factor(steps) > self.target * widest:
                    steps += 1
                factor = shrink_factor(steps)
                self.shrinks.append(GuardRecord(epoch, batch, total, steps))
                log.info("logit guard: epoch %d batch %d: bound sum %.2f, shrink 2^(-%d/4)", epoch, batch, total, steps)
                if factor < self.min_factor:
                    raise LogitGuardError(
                        f"logits reached {total * 100 / widest:.0f}% of the widest sigmoid interval in one step "
                        f"(epoch {epoch}, batch {batch}); shrinking weights by {factor:.3g} would hide a "
                        "divergence: lower the learning rate or momentum, raise l2, or check that features "
                        "are standardized"
                    )
        self.levels[level] = self.levels.get(level, 0) + 1
        return level, steps


@dataclass
class _NodeBatch:
    epoch: int
    batch: int
    shrink_steps: int = 0
    decrypted: set[str] = field(default_factory=set)


class NodeCoordinator:
    """The node's side of a training job: relays sealed payloads, runs the guard, decrypts masked sums.

    It holds the job's HE secret key and never receives anything that
    decrypts to an unmasked value: the payloads it decrypts were masked by
    their senders, and everything else it relays is sealed to someone else.
    ``parallel`` fans provider calls out on threads: over the wire each call
    waits on a provider computing in its own process, so they overlap (in one
    process mostly not: SEAL's Python binding holds the GIL).
    """

    def __init__(
        self,
        secret: HESecret,
        links: Sequence[ProviderLink],
        *,
        public_for_providers: bytes | None = None,
        parallel: bool = False,
    ) -> None:
        self.secret = secret
        self.links = {link.provider_id: link for link in links}
        if len(self.links) != len(links) or not links:
            raise ValueError("need at least one provider link, each once")
        self._public_providers = public_for_providers
        self.parallel = parallel and len(links) > 1
        self._pool = ThreadPoolExecutor(max_workers=len(links)) if self.parallel else None
        self.config: TrainConfig | None = None
        self.provider_ids: tuple[str, ...] = ()
        self.widths: dict[str, int] = {}
        self.feature_names: dict[str, tuple[str, ...]] = {}
        self.guard: LogitGuard | None = None
        self._batch: _NodeBatch | None = None
        self._key_lock = threading.Lock()  # one decryption at a time (provider calls may be threaded)
        self.bank_id = ""
        self.epoch_losses: list[float] = []
        self.epochs_done = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def _map(self, fn: Callable[[ProviderLink], T]) -> list[T]:
        links = [self.links[p] for p in self.provider_ids]
        if self._pool is None:
            return [fn(link) for link in links]
        return list(self._pool.map(fn, links))

    def _cfg(self) -> TrainConfig:
        if self.config is None:
            raise ProtocolViolation("no job is running")
        return self.config

    def _check(self, job_id: str, epoch: int, batch: int) -> _NodeBatch:
        if job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        if self._batch is None or (self._batch.epoch, self._batch.batch) != (epoch, batch):
            raise ProtocolViolation("message for a batch that is not open")
        return self._batch

    def start(self, msg: JobStart) -> JobStarted:
        """Resolve the sigmoid degree for this key, set up every provider, hand the bank the key."""
        config = TrainConfig.from_json(msg.config_json)
        if config.job_id != msg.job_id:
            raise ProtocolViolation("job id differs from the config's")
        if tuple(sorted(msg.provider_ids)) != tuple(sorted(self.links)):
            raise VlrError("the job names providers this node has no link to")
        approx = config.approximant(self.secret.max_degree)
        config = dataclasses.replace(config, sigmoid_degree=approx.degree)
        config_json = config.to_json()
        self.config = config
        self.bank_id = check_id(msg.bank_id, "bank id")
        self.provider_ids = msg.provider_ids
        self.guard = LogitGuard(
            config.guard_target, config.guard_min_factor, config.guard_max_level, approx.enforce_interval
        )
        if self.bank_id in self.provider_ids:
            raise ProtocolViolation("the bank cannot also be a provider of the job")
        self.widths = {self.bank_id: len(msg.bank_features) + 1}
        self.feature_names = {self.bank_id: msg.bank_features}
        # The bank evaluates the sigmoid (relinearization keys); providers only add and
        # multiply by plaintexts, so they get the lighter key unless the caller chose one.
        public_all = self.secret.public_bytes(with_relin_keys=True)
        public_providers = self._public_providers or self.secret.public_bytes(with_relin_keys=False)
        scheme = self.secret.scheme

        def setup(link: ProviderLink) -> SetupAck:
            return link.setup(
                JobSetup(
                    msg.job_id, config_json, link.provider_id, msg.n_rows, msg.train_rows, scheme, public_providers
                )
            )

        for pid, ack in zip(self.provider_ids, self._map(setup)):
            if ack.job_id != msg.job_id or ack.party_id != pid:
                raise ProtocolViolation("setup acknowledged by another job or party")
            self.widths[pid] = len(ack.feature_names)
            self.feature_names[pid] = ack.feature_names
        log.info("node: job %s started with %d providers", msg.job_id, len(self.provider_ids))
        return JobStarted(msg.job_id, config_json, scheme, public_all, self.provider_ids)

    def forward(self, msg: ForwardRequest) -> ForwardReply:
        cfg = self._cfg()
        if msg.job_id != cfg.job_id:
            raise ProtocolViolation("message for another job")
        if self.guard is None:
            raise ProtocolViolation("no job is running")
        self._batch = _NodeBatch(msg.epoch, msg.batch)
        request = BoundRequest(msg.job_id, msg.epoch, msg.batch)
        reports = self._map(lambda link: link.bound(request))
        codes = [msg.bank_code]
        for pid, rep in zip(self.provider_ids, reports):
            if (rep.job_id, rep.epoch, rep.batch, rep.party_id) != (msg.job_id, msg.epoch, msg.batch, pid):
                raise ProtocolViolation("bound report for another batch or party")
            codes.append(rep.code)
        if any(c < MIN_BOUND_CODE for c in codes):
            raise ProtocolViolation("bound code out of range")
        level, steps = self.guard.decide(msg.epoch, msg.batch, codes)
        self._batch.shrink_steps = steps
        enc = EncryptRequest(msg.job_id, msg.epoch, msg.batch, level, steps)
        sealed = self._map(lambda link: link.encrypt(enc))
        return ForwardReply(msg.job_id, msg.epoch, msg.batch, level, steps, self.provider_ids, tuple(sealed))

    def _decrypt_sums(self, batch: _NodeBatch, party: str, payload: bytes) -> bytes:
        """Decrypt one party's masked gradient payload: once per batch, of that party's own width."""
        with self._key_lock:
            if party in batch.decrypted:
                raise ProtocolViolation(f"a second gradient payload from {party} in one batch")
            batch.decrypted.add(party)
            sums = np.asarray(self.secret.decrypt_column_sums(payload), dtype=np.float64)
        if sums.shape != (self.widths[party],):
            raise ProtocolViolation(f"gradient payload from {party} has the wrong width")
        return sums.astype("<f8").tobytes()

    def backward(self, msg: BackwardRequest) -> BackwardReply:
        batch = self._check(msg.job_id, msg.epoch, msg.batch)
        if len(msg.sealed_residuals) != len(self.provider_ids):
            raise ProtocolViolation("one sealed residual per provider expected")
        bank_sums = self._decrypt_sums(batch, self.bank_id, msg.gradient_payload)
        masked_loss: float | None = None
        if msg.loss_payload:
            masked_loss = self._decrypt_total(batch, msg.loss_payload)
        residual_of = dict(zip(self.provider_ids, msg.sealed_residuals))

        def provider_step(link: ProviderLink) -> bytes:
            reply = link.gradient(GradientRequest(msg.job_id, msg.epoch, msg.batch, residual_of[link.provider_id]))
            if (reply.job_id, reply.epoch, reply.batch, reply.party_id) != (
                msg.job_id,
                msg.epoch,
                msg.batch,
                link.provider_id,
            ):
                raise ProtocolViolation("gradient reply for another batch or party")
            sums = self._decrypt_sums(batch, link.provider_id, reply.payload)
            ack = link.update(UpdateRequest(msg.job_id, msg.epoch, msg.batch, sums))
            if ack.party_id != link.provider_id:
                raise ProtocolViolation("update acknowledged by another party")
            return reply.sealed_square

        squares = self._map(provider_step)
        if any(squares) and not all(squares):
            raise ProtocolViolation("square terms from some providers only")
        return BackwardReply(msg.job_id, msg.epoch, msg.batch, bank_sums, masked_loss, tuple(s for s in squares if s))

    def _decrypt_total(self, batch: _NodeBatch, payload: bytes) -> float:
        with self._key_lock:
            if "#loss" in batch.decrypted:
                raise ProtocolViolation("a second loss payload in one batch")
            batch.decrypted.add("#loss")
            value = float(self.secret.decrypt_total(payload))
        if not math.isfinite(value):
            raise ProtocolViolation("loss payload decrypted to a non-finite value")
        return value

    def loss(self, msg: LossRequest) -> LossReply:
        batch = self._check(msg.job_id, msg.epoch, msg.batch)
        return LossReply(msg.job_id, msg.epoch, msg.batch, self._decrypt_total(batch, msg.loss_payload))

    def end_epoch(self, msg: EpochEnd) -> EpochAck:
        if msg.job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        self._batch = None
        acks = self._map(lambda link: link.end_epoch(msg))
        if any(a.epoch != msg.epoch for a in acks):
            raise ProtocolViolation("provider acknowledged another epoch")
        if msg.loss is not None:
            self.epoch_losses.append(msg.loss)
        self.epochs_done = msg.epoch
        return EpochAck(msg.job_id, msg.epoch, "node")

    def finish(self, msg: FinishRequest) -> dict[str, Any]:
        """Tell providers to write their shares; return the model metadata the node keeps."""
        cfg = self._cfg()
        acks = self._map(lambda link: link.finish(msg))
        guard = self.guard
        return {
            "format": "xinrong.vlr.model_metadata/1",
            "protocol": PROTOCOL,
            "job_id": cfg.job_id,
            "scheme": self.secret.scheme,
            "he_key_id": self.secret.key_id(),
            "config": dataclasses.asdict(cfg),
            "parties": {self.bank_id: "bank", **dict.fromkeys(self.provider_ids, "provider")},
            "feature_names": {p: list(names) for p, names in self.feature_names.items()},
            "share_sha256": {a.party_id: a.share_sha256 for a in acks},
            "epochs": msg.epochs,
            "epoch_losses": list(msg.epoch_losses),
            "guard": {
                "batches": guard.batches_seen if guard else 0,
                "levels": {str(k): v for k, v in sorted(guard.levels.items())} if guard else {},
                "shrinks": len(guard.shrinks) if guard else 0,
                "max_bound_sum": guard.max_bound_sum if guard else 0.0,
            },
        }

    def resume(self, msg: ResumeQuery) -> tuple[int, ...]:
        """Checkpointed epochs every provider has in common."""
        if msg.job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        states = self._map(lambda link: link.resume_state(msg))
        common = set(states[0].epochs)
        for s in states[1:]:
            common &= set(s.epochs)
        return tuple(sorted(common))

    def restore(self, msg: RestoreRequest) -> None:
        if msg.job_id != self._cfg().job_id:
            raise ProtocolViolation("message for another job")
        self._batch = None
        acks = self._map(lambda link: link.restore(msg))
        if any(a.epoch != msg.epoch for a in acks):
            raise ProtocolViolation("provider restored another epoch")
        self.epochs_done = msg.epoch
        self.epoch_losses = self.epoch_losses[: msg.epoch]
