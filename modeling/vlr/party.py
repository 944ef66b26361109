"""What the bank and the providers share: data, transform, optimizer, schedule, position, checkpoints.

``PartyCore`` keeps a party's place in the job (epoch, batch, phase) and
refuses any message that is not the one it expects next, for another job,
or of the wrong shape; each role (``bank``, ``provider``) adds its steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.modeling.he.base import HEPublic
from xinrong.modeling.preprocess import ColumnTransform
from xinrong.modeling.sigmoid import Approximant, bound_code
from xinrong.modeling.vlr.config import TrainConfig, batch_count, batch_rows
from xinrong.modeling.vlr.errors import ProtocolViolation, VlrError
from xinrong.modeling.vlr_state import (
    check_id,
    checkpoint_epochs,
    checkpoint_path,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def f64_values(data: bytes, expected: int, what: str) -> FloatArray:
    """Decrypted masked sums as the node returns them: exactly ``expected`` finite float64 LE values."""
    if len(data) != 8 * expected:
        raise ProtocolViolation(f"{what}: expected {expected} float64 values")
    arr = np.frombuffer(data, dtype="<f8").astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ProtocolViolation(f"{what}: non-finite values")
    return arr


class Optimizer:
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
class Position:
    epoch: int = 0
    batch: int = 0
    phase: str = "bound"  # provider: bound -> encrypt -> gradient -> update; bank: forward -> backward -> apply


class PartyCore:
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
        self.opt: Optimizer | None = None
        self.pos = Position()
        self._batches: tuple[int, list[IntArray]] | None = None
        self._tau: FloatArray | None = None
        self.n_train = 0

    # configuration checks shared by both roles
    def job_config(self) -> TrainConfig:
        """The job this party was set up for; ProtocolViolation before ``setup``."""
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

    def _opt(self) -> Optimizer:
        if self.opt is None:
            raise ProtocolViolation("no job is set up")
        return self.opt

    def _check_job(self, job_id: str) -> None:
        if job_id != self.job_config().job_id:
            raise ProtocolViolation("message for another job")

    def _expect(self, epoch: int, batch: int, phase: str) -> None:
        if (epoch, batch, phase) != (self.pos.epoch, self.pos.batch, self.pos.phase):
            raise ProtocolViolation(
                f"out of order: got {phase} for epoch {epoch} batch {batch}, "
                f"expected {self.pos.phase} for epoch {self.pos.epoch} batch {self.pos.batch}"
            )

    def batches(self, epoch: int) -> list[IntArray]:
        if self._batches is None or self._batches[0] != epoch:
            cfg = self.job_config()
            self._batches = (epoch, batch_rows(self.n_train, cfg.batch_size, cfg.seed, epoch))
        return self._batches[1]

    def n_batches(self) -> int:
        return batch_count(self.n_train, self.job_config().batch_size)

    def _bound(self, x_batch: FloatArray) -> int:
        """Partial logits at the look-ahead weights, normalized; cached for the encrypt step."""
        cfg, opt = self.job_config(), self._opt()
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
        self.pos = Position(epoch=epoch, batch=0, phase="bound" if self.role == "provider" else "forward")
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
        cfg, opt = self.job_config(), self._opt()
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
        cfg, opt = self.job_config(), self._opt()
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
        self.pos = Position(epoch=epoch, batch=0, phase="bound" if self.role == "provider" else "forward")
        self._tau = None


# -- provider --------------------------------------------------------------------------------
