"""The SME credit-evaluation index: a versioned, published definition beside the catalog.

Points are defined over the catalog's *published* disclosure forms only
(ladder steps, bracket indices, flags, grades), so a provider's part of an
enterprise's points says no more than the forms institutions may already
ask for, and the definition can be checked against the catalog when it is
loaded: every field exists, every form is one the catalog publishes for it,
every table of points has exactly one entry per published step, bracket,
flag value or grade.

Each provider computes its own part from its own data (``provider_points``,
vectorised over every enterprise it holds); the platform only ever adds
parts. ``score`` maps a total to 0..1000 against the most points the index
can give, ``grade`` maps a score to the published grades.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.catalog import Catalog, FieldSpec, FieldType, Form, default_catalog
from xinrong.errors import CatalogError

MAX_SCORE = 1000
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class IndexItem:
    """Points for one catalog field in one published form."""

    field: str
    provider: str
    form: Form
    # grade: value -> points; flag: "true"/"false" -> points; ladder/bracket: points by position.
    by_value: Mapping[str, int]
    by_position: tuple[int, ...]
    spec: FieldSpec

    @property
    def max_points(self) -> int:
        return max(self.by_value.values()) if self.by_value else max(self.by_position)

    def points(self, value: Any) -> int:
        """The points of one value (None: the provider holds none, 0 points)."""
        if value is None:
            return 0
        if self.form is Form.FLAG:
            return self.by_value["true" if value else "false"]
        if self.form is Form.GRADE:
            return self.by_value.get(str(value), 0)
        position = self._position(float(Decimal(value)))
        return self.by_position[position] if position >= 0 else 0

    def _position(self, value: float) -> int:
        if self.form is Form.LADDER:
            return int(np.searchsorted(_floats(self.spec.ladder), value, side="right"))
        return int(np.searchsorted(_floats(self.spec.edges), value, side="right")) - 1

    def column_points(self, values: Sequence[Any]) -> IntArray:
        """Points of a whole column at once (None = no value)."""
        if self.form in (Form.FLAG, Form.GRADE):
            table = self.by_value
            if self.form is Form.FLAG:
                return np.fromiter(
                    (0 if v is None else table["true" if v else "false"] for v in values), np.int64, len(values)
                )
            return np.fromiter((0 if v is None else table.get(str(v), 0) for v in values), np.int64, len(values))
        numbers = np.fromiter((math.nan if v is None else float(v) for v in values), np.float64, len(values))
        return self.numeric_points(numbers)

    def numeric_points(self, numbers: npt.NDArray[np.float64]) -> IntArray:
        """Ladder or bracket points of a float column; NaN (no value) and values below every edge score 0."""
        cuts = _floats(self.spec.ladder if self.form is Form.LADDER else self.spec.edges)
        position = np.searchsorted(cuts, numbers, side="right")
        if self.form is Form.BRACKET:
            position = position - 1
        table = np.asarray((*self.by_position, 0), dtype=np.int64)  # index -1 (below the edges) -> 0
        out: IntArray = table[np.where(position >= 0, position, len(self.by_position))]
        out[np.isnan(numbers)] = 0
        return out


@lru_cache(maxsize=256)
def _floats_cached(values: tuple[Decimal, ...]) -> npt.NDArray[np.float64]:
    return np.asarray([float(v) for v in values], dtype=np.float64)


def _floats(values: Sequence[Decimal]) -> npt.NDArray[np.float64]:
    return _floats_cached(tuple(values))


@dataclass(frozen=True)
class Grade:
    name: str
    min_score: int


@dataclass(frozen=True)
class EvaluationIndex:
    version: str
    name: str
    min_providers: int
    grades: tuple[Grade, ...]  # highest first
    items: tuple[IndexItem, ...]
    raw: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({i.provider for i in self.items}))

    def provider_items(self, provider: str) -> tuple[IndexItem, ...]:
        return tuple(i for i in self.items if i.provider == provider)

    @property
    def max_total(self) -> int:
        return sum(i.max_points for i in self.items)

    def score(self, total: float) -> int:
        """0..1000 for a total of points (the sum of every provider's part)."""
        return max(0, min(MAX_SCORE, round(MAX_SCORE * total / self.max_total)))

    def grade(self, score: int) -> str:
        for g in self.grades:
            if score >= g.min_score:
                return g.name
        return self.grades[-1].name

    def grade_rank(self, name: str) -> int:
        """0 for the best grade; a grade meets a threshold when its rank is <= the threshold's."""
        names = [g.name for g in self.grades]
        if name not in names:
            raise CatalogError(f"unknown grade {name!r}; the index has {names}")
        return names.index(name)

    def to_json(self) -> dict[str, Any]:
        """The published definition, as institutions and enterprises read it."""
        return {
            "version": self.version,
            "name": self.name,
            "sha256": self.sha256,
            "max_score": MAX_SCORE,
            "max_points": self.max_total,
            "min_providers": self.min_providers,
            "grades": [{"name": g.name, "min_score": g.min_score} for g in self.grades],
            "items": [
                {
                    "field": i.field,
                    "provider": i.provider,
                    "form": str(i.form),
                    "points": dict(i.by_value) if i.by_value else list(i.by_position),
                    "max_points": i.max_points,
                }
                for i in self.items
            ],
        }


def provider_points(index: EvaluationIndex, provider: str, columns: Mapping[str, Sequence[Any]], rows: int) -> IntArray:
    """One provider's part for every enterprise it holds: the sum of its items' points, per row.

    ``columns`` maps each of the provider's index fields to its values (None = no value).
    """
    total = np.zeros(rows, dtype=np.int64)
    for item in index.provider_items(provider):
        column = columns.get(item.field)
        if column is not None:
            total += item.column_points(column)
    return total


def _item(entry: dict[str, Any], catalog: Catalog, where: str) -> IndexItem:
    unknown = sorted(set(entry) - {"field", "form", "points"})
    if unknown:
        raise CatalogError(f"{where}: unknown keys {unknown}")
    field = entry.get("field")
    spec = catalog.fields.get(field) if isinstance(field, str) else None
    if spec is None:
        raise CatalogError(f"{where}: {field!r} is not a catalog field")
    try:
        form = Form(str(entry.get("form")))
    except ValueError:
        raise CatalogError(f"{where}: form must be one of {[str(f) for f in Form]}") from None
    if form not in spec.forms:
        raise CatalogError(f"{where}: the catalog does not publish {field} as {form}")
    points = entry.get("points")

    def ints(values: Sequence[Any]) -> bool:
        return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)

    if form in (Form.FLAG, Form.GRADE):
        keys = ["false", "true"] if form is Form.FLAG else list(spec.values)
        if spec.type is FieldType.BOOL and form is Form.GRADE:
            raise CatalogError(f"{where}: a flag field takes form flag")
        if not isinstance(points, dict) or sorted(points) != sorted(keys) or not ints(list(points.values())):
            raise CatalogError(f"{where}: points must give a non-negative integer for each of {keys}")
        return IndexItem(str(field), spec.provider, form, dict(points), (), spec)
    size = len(spec.ladder) + 1 if form is Form.LADDER else len(spec.edges)
    if not isinstance(points, list) or len(points) != size or not ints(points):
        what = "below the first step, then one per ladder step" if form is Form.LADDER else "one per bracket"
        raise CatalogError(f"{where}: points must be {size} non-negative integers ({what})")
    return IndexItem(str(field), spec.provider, form, {}, tuple(points), spec)


def parse_index(raw: bytes, catalog: Catalog) -> EvaluationIndex:
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"index: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"version", "name", "min_providers", "grade", "item"})
    if unknown:
        raise CatalogError(f"index: unknown keys {unknown}")
    grades = tuple(Grade(str(g["name"]), int(g["min_score"])) for g in doc.get("grade", []))
    if not grades or [g.min_score for g in grades] != sorted((g.min_score for g in grades), reverse=True):
        raise CatalogError("index: grades must be listed from the best, with falling min_score")
    if grades[-1].min_score != 0 or len({g.name for g in grades}) != len(grades):
        raise CatalogError("index: the last grade starts at 0 and grade names are unique")
    items = tuple(_item(e, catalog, f"index item #{n + 1}") for n, e in enumerate(doc.get("item", [])))
    if not items or len({i.field for i in items}) != len(items):
        raise CatalogError("index: at least one item, each field once")
    min_providers = int(doc.get("min_providers", 2))
    if min_providers < 1:
        raise CatalogError("index: min_providers must be at least 1")
    return EvaluationIndex(str(doc["version"]), str(doc["name"]), min_providers, grades, items, raw)


def load_index(path: str | Path | None = None, catalog: Catalog | None = None) -> EvaluationIndex:
    raw = Path(path).read_bytes() if path else resources.files("xinrong").joinpath("index.toml").read_bytes()
    return parse_index(raw, catalog or default_catalog())


@lru_cache(maxsize=1)
def default_index() -> EvaluationIndex:
    return load_index()


def canonical_json(index: EvaluationIndex) -> str:
    return json.dumps(index.to_json(), sort_keys=True, ensure_ascii=False)


__all__ = [
    "MAX_SCORE",
    "EvaluationIndex",
    "Grade",
    "IndexItem",
    "canonical_json",
    "default_index",
    "load_index",
    "parse_index",
    "provider_points",
]
