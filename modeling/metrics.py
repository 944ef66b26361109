"""Ranking metrics for credit models: AUC, KS and their curves.

scikit-learn computes the ROC curve and its area; what it lacks is here: the
KS statistic (the largest gap TPR - FPR over the ROC points, which is how
credit teams read the gap between the classes' score distributions) and the
KS chart. Inputs are checked first and refused rather than guessed at
(labels other than 0/1, one class only, NaN scores). Tied scores form one
step of the curve (sklearn thresholds only at distinct scores), so no metric
depends on the order of tied rows: credit scores are often rounded.

sklearn is imported on first use, not with this module: ``sklearn.metrics``
takes about a second to import, and the bank's modeling client imports this
module for every verb, most of which compute no metric.
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


def auc(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count one half, as in the Mann-Whitney U)."""
    from sklearn.metrics import roc_auc_score

    pos, s = _check(y_true, scores)
    return float(roc_auc_score(pos.astype(np.int64), s))


@dataclass(frozen=True)
class Curve:
    """Points of the ROC curve at every distinct score threshold (descending)."""

    thresholds: FloatArray  # score >= threshold is "positive"
    fpr: FloatArray
    tpr: FloatArray


def roc_curve(y_true: npt.ArrayLike, scores: npt.ArrayLike) -> Curve:
    """ROC points, starting at (0, 0) with threshold +inf; tied scores form one step.

    Every distinct score keeps its point (``drop_intermediate=False``): the
    KS chart reads the population share at each of them.
    """
    from sklearn.metrics import roc_curve as sk_roc_curve

    pos, s = _check(y_true, scores)
    fpr, tpr, thresholds = sk_roc_curve(pos.astype(np.int64), s, drop_intermediate=False)
    return Curve(
        thresholds=np.asarray(thresholds, dtype=np.float64),
        fpr=np.asarray(fpr, dtype=np.float64),
        tpr=np.asarray(tpr, dtype=np.float64),
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
