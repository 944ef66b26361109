"""Ranking metrics for credit models: AUC, KS and their curves.

Written out rather than imported from scikit-learn so that the bank-side
report and the benchmark do not depend on sklearn at run time, and so ties
are handled explicitly: credit scores are often rounded, and a metric that
depends on the order of tied rows is not reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _check(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    y = np.asarray(y_true).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinity")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValueError("labels must be 0/1")
    pos = y.astype(bool)
    if pos.all() or not pos.any():
        raise ValueError("AUC and KS need both classes among the labels")
    return pos, s


def _average_ranks(s: FloatArray) -> FloatArray:
    """1-based ranks with ties sharing their average rank."""
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # boundaries of runs of equal scores
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(s))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties)."""
    pos, s = _check(y_true, scores)
    ranks = _average_ranks(s)
    n_pos = int(pos.sum())
    n_neg = len(s) - n_pos
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


@dataclass(frozen=True)
class Curve:
    """Points of the ROC curve at every distinct score threshold (descending)."""

    thresholds: FloatArray  # score >= threshold is "positive"
    fpr: FloatArray
    tpr: FloatArray


def roc_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> Curve:
    """ROC points, starting at (0, 0) with threshold +inf; tied scores form one step."""
    pos, s = _check(y_true, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    p_sorted = pos[order]
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tp = np.cumsum(p_sorted)[last_of_run]
    fp = np.cumsum(~p_sorted)[last_of_run]
    n_pos = float(pos.sum())
    n_neg = float(len(s) - pos.sum())
    return Curve(
        thresholds=np.r_[np.inf, s_sorted[last_of_run]],
        fpr=np.r_[0.0, fp / n_neg],
        tpr=np.r_[0.0, tp / n_pos],
    )


def ks(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Kolmogorov-Smirnov statistic: max over thresholds of TPR - FPR.

    Equals the largest gap between the score CDFs of the two classes, which is
    how credit teams read it; thresholds fall only between distinct scores.
    """
    curve = roc_curve(y_true, scores)
    return float(np.max(curve.tpr - curve.fpr))


@dataclass(frozen=True)
class KsCurve:
    """Cumulative share of each class against the share of rows ranked riskiest first."""

    population: FloatArray
    cum_pos: FloatArray
    cum_neg: FloatArray
    ks: float
    ks_at: float  # population share where the gap is largest


def ks_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> KsCurve:
    """The KS chart: both cumulative distributions over the ranked population."""
    pos, s = _check(y_true, scores)
    curve = roc_curve(y_true, s)
    n = float(len(s))
    n_pos = float(pos.sum())
    n_neg = n - n_pos
    population = (curve.tpr * n_pos + curve.fpr * n_neg) / n
    gap = curve.tpr - curve.fpr
    i = int(np.argmax(gap))
    return KsCurve(
        population=population, cum_pos=curve.tpr, cum_neg=curve.fpr, ks=float(gap[i]), ks_at=float(population[i])
    )
