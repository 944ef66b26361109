"""The provider's feature matrix for joint modeling, read on the provider's own machine.

Two sources, one shape (ids, column names, a float matrix with NaN for a
gap, which each party imputes itself inside the protocol):

* a ``dataset`` CSV (``[modeling] dataset``): an ``id`` column and numeric
  feature columns, the layout of the hetero benchmark files;
* by default the active data period of the agent's own store, one column
  per catalog field of this provider: bool -> 0/1, enum -> its index in the
  catalog's value order (the catalog lists values best first), int and
  decimal -> float, dates skipped (a date is not a magnitude), blank or
  absent -> NaN. The USCC is the id.

Nothing here leaves the agent: the rows go into ``ProviderParty``, which
keeps them. The fingerprint (SHA-256 over ids, names and values) lets a
resumed job check that it trains on the data it aligned.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from xinrong.catalog import Catalog, FieldType
from xinrong.errors import Reason, XinrongError
from xinrong.modeling.data import read_table

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class FeatureTable:
    ids: tuple[str, ...]
    columns: tuple[str, ...]
    x: FloatArray
    source: str
    fingerprint: str
    index: dict[str, int] = field(repr=False, compare=False, default_factory=dict)

    def rows_of(self, ids: list[str]) -> FloatArray:
        """Raw rows for ids; an id this provider does not hold is a row of gaps (imputed by the model)."""
        out = np.full((len(ids), len(self.columns)), np.nan)
        for i, ident in enumerate(ids):
            j = self.index.get(ident)
            if j is not None:
                out[i] = self.x[j]
        return out


def _fingerprint(ids: tuple[str, ...], columns: tuple[str, ...], x: FloatArray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([list(ids), list(columns)], separators=(",", ":")).encode())
    h.update(np.ascontiguousarray(x, dtype="<f8").tobytes())
    return h.hexdigest()


def _table(ids: tuple[str, ...], columns: tuple[str, ...], x: FloatArray, source: str) -> FeatureTable:
    if not ids or not columns:
        raise XinrongError(
            f"{source}: no rows or no feature columns",
            reason=Reason.FAILED_PRECONDITION,
            public="the provider has no data to model on",
        )
    return FeatureTable(ids, columns, x, source, _fingerprint(ids, columns, x), {k: i for i, k in enumerate(ids)})


def load_csv(path: Path) -> FeatureTable:
    """``id`` + numeric columns (blank / NA -> NaN), as ``xinrong.modeling.data.read_table`` reads them."""
    try:
        table = read_table(path, label=False)
    except (OSError, ValueError) as exc:
        raise XinrongError(
            f"dataset {path}: {exc}",
            reason=Reason.FAILED_PRECONDITION,
            public="the provider's modeling dataset cannot be read",
        ) from None
    return _table(table.ids, table.columns, table.x, f"csv:{path.name}")


def load_store(db: Path, catalog: Catalog, provider: str) -> FeatureTable:
    """The active period's records, one numeric column per non-date catalog field of the provider."""
    try:
        conn = sqlite3.connect(f"file:{db.resolve()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise XinrongError(
            f"cannot open {db}: {exc}", reason=Reason.FAILED_PRECONDITION, public="the provider has no data to model on"
        ) from None
    try:
        conn.execute("BEGIN")  # one consistent snapshot of period and records
        row = conn.execute("SELECT id, as_of, columns FROM periods WHERE active = 1").fetchone()
        if row is None:
            raise XinrongError(
                "no active period",
                reason=Reason.FAILED_PRECONDITION,
                public="the provider has imported no data period to model on",
            )
        period_id, as_of, columns_json = int(row[0]), str(row[1]), str(row[2])
        stored = {name: i for i, name in enumerate(json.loads(columns_json))}
        specs = [s for s in catalog.provider_fields(provider) if s.type is not FieldType.DATE and s.column in stored]
        names = tuple(s.key for s in specs)
        positions = [stored[s.column] for s in specs]
        records = conn.execute(
            "SELECT uscc, data FROM records WHERE period_id = ? ORDER BY uscc", (period_id,)
        ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    x = np.full((len(records), len(specs)), np.nan)
    enum_index = [({v: float(i) for i, v in enumerate(s.values)} if s.type is FieldType.ENUM else None) for s in specs]
    for r, (_, data) in enumerate(records):
        cells = json.loads(data)
        for c, (spec, pos) in enumerate(zip(specs, positions)):
            cell = cells[pos] if pos < len(cells) else None
            if cell is None:
                continue
            if spec.type is FieldType.BOOL:
                x[r, c] = 1.0 if cell is True else 0.0
            elif spec.type is FieldType.ENUM:
                value = enum_index[c].get(cell) if enum_index[c] is not None else None  # type: ignore[union-attr]
                if value is not None:
                    x[r, c] = value
            else:
                x[r, c] = float(cell)
    ids = tuple(str(u) for u, _ in records)
    log.info("modeling features from period %s: %d enterprises, %d columns", as_of, len(ids), len(names))
    return _table(ids, names, x, f"store:period {period_id} as of {as_of}")


class FeatureSource:
    """The agent's features, loaded once per source version (file change or new period)."""

    def __init__(self, *, dataset: Path | None, db: Path, catalog: Catalog, provider: str) -> None:
        self._dataset = dataset
        self._db = db
        self._catalog = catalog
        self._provider = provider
        self._lock = threading.Lock()
        self._cached: tuple[object, FeatureTable] | None = None

    def _version(self) -> object:
        if self._dataset is not None:
            st = self._dataset.stat()
            return ("csv", st.st_mtime_ns, st.st_size)
        try:
            conn = sqlite3.connect(f"file:{self._db.resolve()}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.Error:
            return ("store", None)
        try:
            row = conn.execute("SELECT id FROM periods WHERE active = 1").fetchone()
        except sqlite3.Error:
            row = None
        finally:
            conn.close()
        return ("store", None if row is None else int(row[0]))

    def load(self) -> FeatureTable:
        with self._lock:
            version = self._version()
            if self._cached is None or self._cached[0] != version:
                table = (
                    load_csv(self._dataset)
                    if self._dataset is not None
                    else load_store(self._db, self._catalog, self._provider)
                )
                self._cached = (version, table)
            return self._cached[1]

    def ready(self) -> bool:
        """A dataset file is enough to serve modeling without any imported period."""
        return self._dataset is not None and self._dataset.is_file()
