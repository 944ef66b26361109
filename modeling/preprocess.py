"""Each party's local preprocessing: impute, standardize, clip.

Every party fits this on *its own* columns and *its own view* of the training
rows, and never shares it: the fitted centre, scale and fill values describe
the party's raw data, so they are part of that party's model share and are
applied again, locally, at scoring time.

Why it matters for the protocol, not just for accuracy: the sigmoid is
replaced by a polynomial that is only valid on a bounded logit interval, and
a party's partial logit is bounded by ``clip * ||w_i||_1``. Standardizing and
clipping (default +-3) keeps raw, unscaled inputs with gaps and outliers from
producing logits outside that interval, so the guard in ``xinrong.modeling.vlr``
rarely has to act.

Missing values (NaN) are filled with the training mean or median of the
column, in raw units; optionally a 0/1 indicator column per column that had
gaps in training records *that* the value was missing, which often carries
signal in credit data (a missing tax filing is itself informative).
Indicators stay 0/1 (not standardized) so they stay inside the clip bound.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Impute = Literal["mean", "median"]
INDICATOR_SUFFIX = "__missing"


@dataclass(frozen=True)
class ColumnTransform:
    """A fitted, serializable transform of one party's raw columns."""

    names: tuple[str, ...]
    fill: tuple[float, ...]  # raw-unit value used for NaN
    center: tuple[float, ...]
    scale: tuple[float, ...]
    indicators: tuple[bool, ...]  # add "<name>__missing" after the standardized columns
    clip: float | None

    def __post_init__(self) -> None:
        k = len(self.names)
        if not (len(self.fill) == len(self.center) == len(self.scale) == len(self.indicators) == k):
            raise ValueError("column transform fields differ in length")
        if any(not math.isfinite(v) for v in (*self.fill, *self.center, *self.scale)):
            raise ValueError("column transform holds a non-finite value")
        if any(s <= 0 for s in self.scale):
            raise ValueError("column scales must be positive")
        if self.clip is not None and not self.clip > 0:
            raise ValueError("clip must be positive")
        if len(set(self.names)) != k:
            raise ValueError("duplicate column names")

    @property
    def n_inputs(self) -> int:
        return len(self.names)

    def output_names(self) -> tuple[str, ...]:
        extra = tuple(f"{n}{INDICATOR_SUFFIX}" for n, ind in zip(self.names, self.indicators) if ind)
        return self.names + extra

    def apply(self, x_raw: npt.ArrayLike) -> FloatArray:
        """Raw rows (NaN = missing) -> model inputs; the same function at training and scoring."""
        x = np.asarray(x_raw, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"expected raw rows with {self.n_inputs} columns, got shape {x.shape}")
        if np.isinf(x).any():
            raise ValueError("raw inputs contain infinity")
        missing = np.isnan(x)
        filled = np.where(missing, np.asarray(self.fill), x)
        z: FloatArray = (filled - np.asarray(self.center)) / np.asarray(self.scale)
        if self.clip is not None:
            np.clip(z, -self.clip, self.clip, out=z)
        ind = np.asarray(self.indicators, dtype=bool)
        if ind.any():
            z = np.hstack([z, missing[:, ind].astype(np.float64)])
        return z

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "fill": list(self.fill),
            "center": list(self.center),
            "scale": list(self.scale),
            "indicators": list(self.indicators),
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ColumnTransform:
        clip = data.get("clip")
        return cls(
            names=tuple(str(n) for n in data["names"]),
            fill=tuple(float(v) for v in data["fill"]),
            center=tuple(float(v) for v in data["center"]),
            scale=tuple(float(v) for v in data["scale"]),
            indicators=tuple(bool(v) for v in data["indicators"]),
            clip=None if clip is None else float(clip),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ColumnTransform:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("column transform JSON must be an object")
        return cls.from_dict(data)


def fit_transform(
    x_raw: npt.ArrayLike,
    names: Sequence[str],
    *,
    impute: Impute = "mean",
    indicators: bool = True,
    clip: float | None = 3.0,
) -> ColumnTransform:
    """Fit on the party's training rows only (never on test rows: that would leak).

    ``indicators=True`` adds an indicator only for columns that had gaps in
    training; a column with no gaps gets none, so clean data keeps its shape.
    """
    x = np.asarray(x_raw, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(f"expected {len(names)} columns, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError("need at least two training rows to fit a transform")
    if np.isinf(x).any():
        raise ValueError("raw inputs contain infinity")
    if impute not in ("mean", "median"):
        raise ValueError(f"unknown imputation {impute!r}")
    fill, center, scale, ind = [], [], [], []
    for j in range(x.shape[1]):
        col = x[:, j]
        observed = col[~np.isnan(col)]
        if observed.size == 0:
            f, c, s = 0.0, 0.0, 1.0
        else:
            f = float(np.mean(observed) if impute == "mean" else np.median(observed))
            filled = np.where(np.isnan(col), f, col)
            c = float(np.mean(filled))
            sd = float(np.std(filled))
            # constant (or numerically constant) column: no scaling, it only shifts the intercept
            s = sd if sd > 1e-12 * max(1.0, abs(c)) else 1.0
        fill.append(f)
        center.append(c)
        scale.append(s)
        ind.append(bool(indicators and observed.size < col.size))
    return ColumnTransform(
        names=tuple(str(n) for n in names),
        fill=tuple(fill),
        center=tuple(center),
        scale=tuple(scale),
        indicators=tuple(ind),
        clip=clip,
    )
