"""The logit guard: the node's rule that keeps every logit inside its sigmoid's fitted interval.

Each party reports an integer code of a bound on its largest partial logit
of the batch (``xinrong.modeling.sigmoid.bound_code``). The node adds the
bounds, picks the narrowest interval level that covers the sum and, only
when even the widest does not, the common shrink of every party's weights
that brings the sum back; a shrink that large means divergence and fails
the job (``LogitGuardError``) instead of hiding it. What this leaks is in
the docstring of ``xinrong.modeling.vlr``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from xinrong.modeling.sigmoid import bound_value, shrink_factor
from xinrong.modeling.vlr.config import level_scale
from xinrong.modeling.vlr.errors import LogitGuardError

log = logging.getLogger(__name__)


@dataclass
class GuardRecord:
    """What the node keeps about a shrink: coarse bound sums, never values."""

    epoch: int
    batch: int
    bound_sum: float  # in units of the base radius
    shrink_steps: int


@dataclass(frozen=True)
class GuardSnapshot:
    """The guard's statistics at the end of an epoch (what the model metadata reports)."""

    batches_seen: int
    levels: dict[int, int]
    shrinks: tuple[GuardRecord, ...]
    max_bound_sum: float


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

    def snapshot(self) -> GuardSnapshot:
        return GuardSnapshot(self.batches_seen, dict(self.levels), tuple(self.shrinks), self.max_bound_sum)

    def restore(self, snapshot: GuardSnapshot) -> None:
        """Back to the statistics of a checkpointed epoch, so a resumed job reports what an uninterrupted one would."""
        self.batches_seen, self.max_bound_sum = snapshot.batches_seen, snapshot.max_bound_sum
        self.levels, self.shrinks = dict(snapshot.levels), list(snapshot.shrinks)
