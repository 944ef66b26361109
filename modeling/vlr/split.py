"""From the PSI's aligned rows to a job's training and held-out rows, as the bank decides them.

Two rules, for the bank's process and the in-process simulator alike:

* the train/test split is stratified and made in the bank's *own* row
  order, so it depends on the bank's data and the seed only, not on the
  PSI's random canonical order;
* the training order is a keyed hash of the ids: reproducible for a job
  (batches do not depend on the PSI's row order either) and a function of
  the ids alone, so it reveals nothing of the bank's own row order, which
  may follow dates or outcomes. Decoy rows train (with weight 0) but are
  never held out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from xinrong.modeling.data import stratified_split

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def aligned_labels(y_bank: npt.ArrayLike, bank_rows: IntArray, is_decoy: BoolArray) -> FloatArray:
    """The bank's labels in the aligned order; a decoy row (no row of the bank's, -1) gets 0."""
    y = np.asarray(y_bank, dtype=np.float64)
    real = ~is_decoy
    out = np.zeros(is_decoy.size)
    out[real] = y[bank_rows[real]]
    return out


def aligned_features(x_bank: npt.ArrayLike, bank_rows: IntArray, is_decoy: BoolArray) -> FloatArray:
    """The bank's raw features in the aligned order; a decoy row is all gaps (the preprocessing imputes them)."""
    x = np.asarray(x_bank, dtype=np.float64)
    real = ~is_decoy
    out = np.full((is_decoy.size, x.shape[1]), np.nan)
    out[real] = x[bank_rows[real]]
    return out


@dataclass(frozen=True)
class Split:
    train_rows: IntArray  # positions in the aligned order, in training order (decoys included)
    test_rows: IntArray  # positions in the aligned order, ascending (real rows only)


def split_rows(
    ids: Sequence[str],
    bank_rows: IntArray,
    is_decoy: BoolArray,
    y_aligned: FloatArray,
    *,
    job_id: str,
    test_fraction: float,
    split_seed: int,
) -> Split:
    """The job's training rows (keyed-hash order) and held-out rows of the aligned set."""
    real_pos = np.flatnonzero(~is_decoy)
    real_pos = real_pos[np.argsort(bank_rows[real_pos], kind="stable")]
    tr, te = stratified_split(y_aligned[real_pos], test_fraction, split_seed)
    train_rows = np.concatenate([real_pos[tr], np.flatnonzero(is_decoy)]).astype(np.int64)
    keys = [hashlib.sha256(f"{job_id}\x00{ids[i]}".encode()).digest() for i in train_rows]
    train_rows = train_rows[np.argsort(np.array(keys, dtype=object), kind="stable")]
    return Split(train_rows=train_rows, test_rows=np.sort(real_pos[te]).astype(np.int64))
