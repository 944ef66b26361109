"""Generated columns, their fit to the catalog, and generic values for fields without a model."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from xinrong.catalog import FieldSpec, FieldType
from xinrong.tools.datagen.common import F64, I64, Bools, epoch_day, sigmoid
from xinrong.tools.datagen.firms import Firms

log = logging.getLogger(__name__)

# Decimal places written per decimal field (others: 2). Registered capital is
# registered in whole yuan.
_DECIMAL_PLACES = {"market.registered_capital": 0}


@dataclass(frozen=True)
class Col:
    """A generated column over all firms, before catalog typing.

    kind: "bool" (bool array), "enum" (int64 index into names), "num"
    (float64), "date" (int64 days since 1970-01-01). missing marks cells the
    provider genuinely does not have (e.g. a payment date for a firm that never
    paid); scattered blanks are added later.
    """

    kind: Literal["bool", "enum", "num", "date"]
    values: npt.NDArray[np.generic]
    missing: Bools | None = None
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProviderData:
    present: Bools
    columns: dict[str, Col]


def num(values: F64 | I64) -> Col:
    return Col("num", np.asarray(values, dtype=np.float64))


def flag(values: Bools) -> Col:
    return Col("bool", np.asarray(values, dtype=np.bool_))


def graded(score: F64, cuts: tuple[float, ...]) -> I64:
    """Index of the grade for each score, best first: cuts descend."""
    out = np.zeros(score.shape[0], dtype=np.int64)
    for cut in cuts:
        out += score < cut
    return out


def generic_column(spec: FieldSpec, f: Firms, rng: np.random.Generator) -> Col:
    """Plausible values for a catalog field this generator has no model for.

    Numbers spread log-uniformly over the published edges and grow with size;
    enums are ordered by health (catalog values are best first); flags are
    rare and adverse; dates fall within the last year.
    """
    n = f.n
    noise = rng.standard_normal(n)
    if spec.type is FieldType.BOOL:
        return flag(rng.random(n) < sigmoid(-2.5 - 0.8 * f.health))
    if spec.type is FieldType.ENUM:
        k = len(spec.values)
        score = -f.health + 0.7 * noise
        cuts = tuple(float(c) for c in np.linspace(-1.2, 1.2, k - 1)) if k > 1 else ()
        return Col(
            "enum",
            graded(-score, tuple(-c for c in cuts)) if k > 1 else np.zeros(n, dtype=np.int64),
            names=spec.values,
        )
    if spec.type is FieldType.DATE:
        return Col("date", epoch_day(f.as_of) - rng.integers(0, 366, n).astype(np.int64))
    positive = [float(e) for e in spec.edges if e > 0]
    lo = math.log(positive[0] / 4.0) if positive else 0.0
    hi = math.log(positive[-1] * 2.0) if positive else math.log(100.0)
    x = np.exp(lo + (hi - lo) * sigmoid(0.9 * f.size + 0.5 * noise))
    if spec.type is FieldType.INT:
        x = np.floor(x)
    return num(x)


# ------------------------------------------------------------ typed columns


@dataclass(frozen=True)
class Typed:
    """A column ready to format: values typed per the catalog, blanks marked."""

    type: FieldType
    values: npt.NDArray[np.generic]
    blank: Bools
    places: int = 2
    table: tuple[bytes, ...] = ()


def conform(spec: FieldSpec, col: Col | None, f: Firms, rng: np.random.Generator) -> Col:
    """The model's column if it fits the catalog's type and values, else a generic one."""
    if col is not None:
        if spec.type is FieldType.BOOL and col.kind == "bool":
            return col
        if spec.type in (FieldType.INT, FieldType.DECIMAL) and col.kind == "num":
            return col
        if spec.type is FieldType.DATE and col.kind == "date":
            return col
        if spec.type is FieldType.ENUM and col.kind == "enum" and set(col.names) <= set(spec.values):
            lut = np.array([spec.values.index(name) for name in col.names], dtype=np.int64)
            return Col("enum", lut[np.asarray(col.values, dtype=np.int64)], col.missing, spec.values)
        log.warning("datagen: model column for %s does not fit the catalog; using the generic generator", spec.key)
    return generic_column(spec, f, rng)


def typed(spec: FieldSpec, col: Col, rows: I64, blank: Bools) -> Typed:
    values = np.asarray(col.values)[rows]
    if col.missing is not None:
        blank = blank | col.missing[rows]
    if spec.type is FieldType.BOOL:
        return Typed(spec.type, values.astype(np.int64), blank, table=(b"false", b"true"))
    if spec.type is FieldType.ENUM:
        table = tuple(v.encode("ascii") for v in spec.values)
        return Typed(spec.type, values.astype(np.int64), blank, table=table)
    if spec.type is FieldType.DATE:
        return Typed(spec.type, values.astype(np.int64), blank)
    x = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    x = np.clip(x, 0.0, 1e13)  # non-negative, and cents fit comfortably in int64
    if spec.type is FieldType.INT:
        return Typed(spec.type, np.rint(x).astype(np.int64), blank, places=0)
    return Typed(spec.type, x, blank, places=_DECIMAL_PLACES.get(spec.key, 2))
