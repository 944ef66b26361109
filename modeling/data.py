"""Loading vertically split ("hetero") CSVs, splitting columns, stratified splits.

The layout is the one federated-learning benchmarks (FATE's examples) use:
a *guest* file ``id,y,x...`` held by the bank and one or more *host* files
``id,x...`` held by providers; the same ``id`` names the same row. Empty
cells, ``NA``/``NaN``/``null`` are missing values (NaN), which each party's
own preprocessing imputes. Nothing here joins parties' data: alignment is
the PSI's job (``xinrong.modeling.psi``); ``align_by_id_for_tests`` exists only for
tests that are not about alignment.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

DATASETS = ("default_credit", "breast")
_MISSING = {"", "na", "nan", "null", "none", "?"}


# Where the workplace keeps the shared datasets when the clone does not sit
# beside ``shared/`` (CI clones elsewhere); the data are read, never copied.
WORKPLACE_DATA_DIR = Path("/work/shared/data")


def data_dir_candidates() -> list[Path]:
    """Where the shared datasets are looked for, in order: ``$XINRONG_DATA_DIR``,
    ``../shared/data`` next to the repository, the workplace copy."""
    env = os.environ.get("XINRONG_DATA_DIR")
    beside = Path(__file__).resolve().parents[2] / "shared" / "data"
    return [*([Path(env)] if env else []), beside, WORKPLACE_DATA_DIR]


@dataclass(frozen=True)
class PartyTable:
    """One party's rows: string ids, raw features (NaN = missing), optional 0/1 labels."""

    name: str
    ids: tuple[str, ...]
    columns: tuple[str, ...]
    x: FloatArray
    y: FloatArray | None = None

    def __post_init__(self) -> None:
        if self.x.shape != (len(self.ids), len(self.columns)):
            raise ValueError(f"{self.name}: feature matrix shape does not match ids and columns")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError(f"{self.name}: duplicate ids")
        if self.y is not None and self.y.shape != (len(self.ids),):
            raise ValueError(f"{self.name}: one label per row expected")

    def __len__(self) -> int:
        return len(self.ids)


def parse_cell(text: str, where: str) -> float:
    """A numeric CSV cell; empty and the usual missing markers are NaN (imputed locally)."""
    t = text.strip()
    if t.lower() in _MISSING:
        return math.nan
    try:
        value = float(t)
    except ValueError:
        raise ValueError(f"{where}: not a number") from None
    if math.isinf(value):
        raise ValueError(f"{where}: infinite value")
    return value


def read_table(path: str | Path, *, label: bool, name: str | None = None) -> PartyTable:
    """Read ``id[,y],x...``; with ``label`` the second column must be ``y`` with 0/1 values."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        if not header or header[0] != "id":
            raise ValueError(f"{path}: the first column must be 'id'")
        first = 2 if label else 1
        if label and (len(header) < 2 or header[1] != "y"):
            raise ValueError(f"{path}: the second column of a labelled file must be 'y'")
        columns = tuple(header[first:])
        ids: list[str] = []
        ys: list[float] = []
        rows: list[list[float]] = []
        for lineno, rec in enumerate(reader, start=2):
            if not rec or all(not c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                raise ValueError(f"{path}:{lineno}: expected {len(header)} fields, got {len(rec)}")
            ids.append(rec[0].strip())
            if label:
                yv = parse_cell(rec[1], f"{path}:{lineno} y")
                if yv not in (0.0, 1.0):
                    raise ValueError(f"{path}:{lineno}: y must be 0 or 1")
                ys.append(yv)
            rows.append([parse_cell(c, f"{path}:{lineno}") for c in rec[first:]])
    if not ids:
        raise ValueError(f"{path}: no rows")
    x = np.asarray(rows, dtype=np.float64).reshape(len(ids), len(columns))
    return PartyTable(
        name=name or path.stem,
        ids=tuple(ids),
        columns=columns,
        x=x,
        y=np.asarray(ys, dtype=np.float64) if label else None,
    )


def dataset_paths(dataset: str, data_dir: str | Path | None = None) -> tuple[Path, Path]:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")
    names = (f"{dataset}_hetero_guest.csv", f"{dataset}_hetero_host.csv")
    candidates = [Path(data_dir)] if data_dir is not None else data_dir_candidates()
    for d in candidates:
        if all((d / name).is_file() for name in names):
            return d / names[0], d / names[1]
    looked = ", ".join(str(d) for d in candidates)
    raise FileNotFoundError(
        f"dataset {dataset!r} ({names[0]}, {names[1]}) not found; looked in {looked} "
        "(give --data-dir DIR or set XINRONG_DATA_DIR)"
    )


def split_columns(table: PartyTable, k: int, *, prefix: str = "provider") -> list[PartyTable]:
    """Split a host's columns into k contiguous, near-equal blocks (k providers)."""
    if not 1 <= k <= len(table.columns):
        raise ValueError(f"cannot split {len(table.columns)} columns across {k} providers")
    blocks = np.array_split(np.arange(len(table.columns)), k)
    return [
        PartyTable(
            name=f"{prefix}-{i + 1}" if k > 1 else table.name,
            ids=table.ids,
            columns=tuple(table.columns[j] for j in b),
            x=table.x[:, b].copy(),
        )
        for i, b in enumerate(blocks)
    ]


def stratified_split(y: npt.ArrayLike, test_fraction: float = 0.3, seed: int = 0) -> tuple[IntArray, IntArray]:
    """Per-class shuffled split; both parts sorted ascending. Same seed, same split."""
    labels = np.asarray(y).reshape(-1)
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction must be in (0, 1)")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_test = round(test_fraction * idx.size)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)).astype(np.int64), np.sort(np.concatenate(test)).astype(np.int64)


def align_by_id_for_tests(bank: PartyTable, providers: Sequence[PartyTable]) -> tuple[IntArray, list[IntArray]]:
    """TEST-ONLY alignment by plain ids (no privacy): rows common to all, in the bank's order.

    Production and the benchmark align with ``xinrong.modeling.psi``; this exists
    for unit tests of the learning protocol that are not about alignment.
    """
    common = set(bank.ids)
    for p in providers:
        common &= set(p.ids)
    bank_rows = np.asarray([i for i, rid in enumerate(bank.ids) if rid in common], dtype=np.int64)
    order = [bank.ids[i] for i in bank_rows]
    out = []
    for p in providers:
        pos = {rid: i for i, rid in enumerate(p.ids)}
        out.append(np.asarray([pos[rid] for rid in order], dtype=np.int64))
    return bank_rows, out
