"""The job's shared parameters and the batch schedule every party derives from them.

Every party gets the same ``TrainConfig`` (the node only resolves the
sigmoid degree for its key, and the bank checks that it changed nothing
else), and every party cuts the same batches from the job seed
(``batch_rows``): no row list travels per batch, so a bank cannot pick
adaptive batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from xinrong.modeling.preprocess import Impute
from xinrong.modeling.sigmoid import BOUND_STEPS_PER_OCTAVE, Approximant, for_backend
from xinrong.modeling.vlr_state import check_id

IntArray = npt.NDArray[np.int64]

PROTOCOL = "xinrong.vlr/1"

Schedule = Literal["constant", "inverse_time", "exponential"]


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
