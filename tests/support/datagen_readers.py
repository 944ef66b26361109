"""Reading generated data back, for the tests: ground-truth rows and the joined training frame.

Only the tests read generated files this way: agents import their own CSVs,
the demo checks its answers against rows it reads itself, and the training
benchmark joins its parties' data by id. So the readers live with the tests.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from xinrong.catalog import Catalog, FieldSpec, FieldType, default_catalog
from xinrong.tools.datagen import BANK_COLUMNS, BANK_FILE, BANK_OWNER

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


def read_csv_rows(path: str | Path) -> dict[str, dict[str, str]]:
    """Rows of a generated CSV keyed by USCC (each row keeps every column).

    For ground-truth checks against the generated values. Refuses duplicate
    or missing keys rather than silently keeping one row.
    """
    rows: dict[str, dict[str, str]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "uscc" not in reader.fieldnames:
            raise ValueError(f"{path}: no uscc column")
        for line, row in enumerate(reader, start=2):
            key = row.get("uscc") or ""
            if not key:
                raise ValueError(f"{path}:{line}: empty uscc")
            if key in rows:
                raise ValueError(f"{path}:{line}: duplicate uscc")
            rows[key] = row
    return rows


class TrainingFrame(NamedTuple):
    """The bank's borrowers joined with every provider's features.

    owners[j] names the party holding feature j (a provider or "bank"), which
    is what a vertical split for joint modeling needs.
    """

    X: F64
    y: I64
    feature_names: list[str]
    owners: list[str]
    usccs: list[str]


def _parse_cells(spec: FieldSpec, cells: list[str], as_of: list[str], where: str) -> F64:
    """One catalog column as floats (NaN = missing): bool 0/1, enum index,
    numbers as is, dates as days before the file's as_of. Vectorized, and
    strict: a value outside the catalog's type or values is an error."""
    arr = np.asarray(cells, dtype=np.str_)
    blank = arr == ""
    bad = ValueError(f"{where}: bad {spec.type} value in column {spec.column}")
    if spec.type is FieldType.BOOL:
        if not np.isin(arr, ["true", "false", ""]).all():
            raise bad
        return np.where(blank, np.nan, (arr == "true").astype(np.float64))
    if spec.type is FieldType.ENUM:
        distinct, inverse = np.unique(arr, return_inverse=True)
        lut = np.full(distinct.shape[0], np.nan)
        for i, token in enumerate(distinct.tolist()):
            if token == "":
                continue
            if token not in spec.values:
                raise bad
            lut[i] = spec.values.index(token)
        return np.asarray(lut[inverse.reshape(-1)], dtype=np.float64)
    try:
        if spec.type is FieldType.DATE:
            days = np.array(np.where(blank, "NaT", arr), dtype="datetime64[D]")
            ref = np.array(np.where(blank, "NaT", np.asarray(as_of, dtype=np.str_)), dtype="datetime64[D]")
            return np.where(blank, np.nan, (ref - days).astype(np.float64))
        values = np.where(blank, "nan", arr).astype(np.float64)
    except ValueError:
        raise bad from None
    if not np.isfinite(values[~blank]).all() or (values[~blank] < 0).any():
        raise bad
    return np.asarray(values, dtype=np.float64)


def _read_matching(path: Path, keys: dict[str, int]) -> tuple[list[str], list[list[str] | None]]:
    """A CSV's header and, at each wanted key's position, its row (None if absent).

    Keeps only the rows asked for, so joining a 1M-row provider file onto a
    loan book costs one pass and little memory.
    """
    rows: list[list[str] | None] = [None] * len(keys)
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header or header[0] != "uscc":
            raise ValueError(f"{path}: first column must be uscc")
        for line, row in enumerate(reader, start=2):
            index = keys.get(row[0]) if row else None
            if index is None:
                continue
            if len(row) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields, got {len(row)}")
            if rows[index] is not None:
                raise ValueError(f"{path}:{line}: duplicate uscc")
            rows[index] = row
    return header, rows


def load_training_frame(
    directory: str | Path,
    catalog: Catalog | None = None,
    enum_encoding: Literal["onehot", "ordinal"] = "onehot",
) -> TrainingFrame:
    """Join bank_loans.csv with every provider file into a numeric design matrix.

    Encoding: bools 0/1; enums one-hot (or their catalog index, best first);
    numbers and dates (days before as_of) as log1p. A column with gaps (firm
    absent at the provider or a blank cell) is imputed with its median and
    gets a ``<key>__missing`` indicator; absence itself is informative. The
    imputation uses no labels, so it cannot leak the outcome. Constant
    columns are dropped. Rows follow bank_loans.csv.
    """
    catalog = catalog or default_catalog()
    base = Path(directory)
    bank = read_csv_rows(base / BANK_FILE)
    usccs = list(bank)
    position = {code: i for i, code in enumerate(usccs)}
    y = np.array([int(bank[u]["defaulted"]) for u in usccs], dtype=np.int64)
    if not np.isin(y, [0, 1]).all():
        raise ValueError(f"{base / BANK_FILE}: defaulted must be 0 or 1")
    columns: list[F64] = []
    names: list[str] = []
    owners: list[str] = []

    def add_plain(values: F64, name: str, owner: str) -> None:
        if values.shape[0] == 0 or np.all(values == values[0]):
            return  # constant: carries nothing
        columns.append(values)
        names.append(name)
        owners.append(owner)

    def add(values: F64, name: str, owner: str) -> None:
        gaps = np.isnan(values)
        if gaps.any():
            fill = float(np.median(values[~gaps])) if (~gaps).any() else 0.0
            values = np.where(gaps, fill, values)
            add_plain(gaps.astype(np.float64), f"{name}__missing", owner)
        add_plain(values, name, owner)

    for column in BANK_COLUMNS[2:]:
        raw = np.array([float(bank[u][column]) for u in usccs])
        add(np.log1p(raw), f"{BANK_OWNER}.{column}", BANK_OWNER)

    for provider in catalog.providers:
        path = base / f"{provider}.csv"
        if not path.exists():
            continue
        header, rows = _read_matching(path, position)

        def cells(column: str) -> list[str]:
            if column not in header:
                raise ValueError(f"{path}: no column {column!r}; the file does not match the catalog")
            j = header.index(column)
            return [row[j] if row is not None else "" for row in rows]

        as_of = cells("as_of")
        for spec in catalog.provider_fields(provider):
            values = _parse_cells(spec, cells(spec.column), as_of, str(path))
            if spec.type is FieldType.ENUM and enum_encoding == "onehot":
                gaps = np.isnan(values)
                if gaps.any():
                    add_plain(gaps.astype(np.float64), f"{spec.key}__missing", provider)
                for index, value in enumerate(spec.values):
                    add_plain((values == index).astype(np.float64), f"{spec.key}={value}", provider)
            elif spec.type in (FieldType.BOOL, FieldType.ENUM):
                add(values, spec.key, provider)
            else:
                add(np.log1p(np.maximum(values, 0.0)), spec.key, provider)
    X = np.column_stack(columns) if columns else np.zeros((len(usccs), 0))
    return TrainingFrame(X=X, y=y, feature_names=names, owners=owners, usccs=usccs)


def joined_training_frame(directory: str | Path) -> tuple[F64, I64, list[str]]:
    """(X, y, feature_names) of :func:`load_training_frame` with default encoding."""
    frame = load_training_frame(directory)
    return frame.X, frame.y, frame.feature_names
