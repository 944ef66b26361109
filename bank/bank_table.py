"""The bank's own data: its label CSV, read on its own machine; nothing here is ever sent.

``read_bank_table`` reads ids, 0/1 labels and numeric features for
training; ``bank_features_for`` the bank's own feature columns of
enterprises it scores, from an input CSV or the file the model names.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from xinrong.modeling.data import PartyTable, parse_cell
from xinrong.modeling.vlr_state import ModelShare

FloatArray = npt.NDArray[np.float64]


def read_bank_table(
    path: Path,
    *,
    party_id: str,
    id_column: str = "",
    label_column: str | None = "y",
    features: Sequence[str] | None = None,
) -> PartyTable:
    """The bank's CSV: ids, optional 0/1 labels, numeric features (blank -> NaN). Never leaves the bank."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        id_col = id_column or ("id" if "id" in header else "uscc")
        if id_col not in header:
            raise ValueError(f"{path}: no id column {id_col!r} (name it with [data] id_column)")
        if label_column is not None and label_column not in header:
            raise ValueError(f"{path}: no label column {label_column!r} (name it with [data] label_column)")
        skip = {id_col} | ({label_column} if label_column else set())
        cols = list(features) if features is not None else [h for h in header if h not in skip]
        missing = sorted(set(cols) - set(header))
        if missing:
            raise ValueError(f"{path}: feature columns {missing} are not in the file")
        if skip & set(cols):
            raise ValueError(f"{path}: the id or label column cannot be a feature")
        pos = [header.index(c) for c in cols]
        ids: list[str] = []
        ys: list[float] = []
        rows: list[list[float]] = []
        for line, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise ValueError(f"{path}:{line}: expected {len(header)} fields, got {len(rec)}")
            ids.append(rec[header.index(id_col)].strip())
            if label_column is not None:
                y = parse_cell(rec[header.index(label_column)], f"{path}:{line} {label_column}")
                if y not in (0.0, 1.0):
                    raise ValueError(f"{path}:{line}: label must be 0 or 1")
                ys.append(y)
            rows.append([parse_cell(rec[j], f"{path}:{line} {cols[k]}") for k, j in enumerate(pos)])
    if not ids:
        raise ValueError(f"{path}: no rows")
    x = np.asarray(rows, dtype=np.float64).reshape(len(ids), len(cols))
    return PartyTable(
        name=party_id,
        ids=tuple(ids),
        columns=tuple(cols),
        x=x,
        y=np.asarray(ys, dtype=np.float64) if label_column is not None else None,
    )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def bank_features_for(
    model: dict[str, Any], share: ModelShare, usccs: Sequence[str], rows: dict[str, dict[str, str]] | None = None
) -> FloatArray:
    """The bank's own raw features for enterprises: from ``rows`` (an input CSV) if it has every
    column, else from the bank's data file named in the model; an enterprise absent from both has
    gaps, which the bank's preprocessing imputes as in training."""
    columns = [str(c) for c in model.get("bank_columns", [])]
    x = np.full((len(usccs), len(columns)), np.nan)
    if not columns:
        return x
    source: dict[str, list[float]] = {}
    if rows is not None and all(all(c in r for c in columns) for r in rows.values()):
        for u, r in rows.items():
            source[u] = [parse_cell(r[c], f"input {c}") for c in columns]
    else:
        path = Path(str(model.get("bank_data", "")))
        if path.is_file():
            table = read_bank_table(
                path,
                party_id=share.party_id,
                id_column=str(model.get("id_column", "")),
                label_column=None,
                features=columns,
            )
            source = {i: list(table.x[k]) for k, i in enumerate(table.ids)}
    for k, u in enumerate(usccs):
        if u in source:
            x[k] = source[u]
    return x


def iter_csv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(newline="") as fh:
        yield from csv.DictReader(fh)
