"""AUC and KS agree with scikit-learn and with a direct computation, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from xinrong.modeling import metrics


def _direct_ks(y: np.ndarray, s: np.ndarray) -> float:
    """max over thresholds of |F_neg(t) - F_pos(t)|, by brute force over every distinct score."""
    pos, neg = s[y == 1], s[y == 0]
    best = 0.0
    for t in np.unique(s):
        best = max(best, abs(np.mean(neg <= t) - np.mean(pos <= t)))
    return best


def _direct_auc(y: np.ndarray, s: np.ndarray) -> float:
    """P(positive outscores negative) + P(tie) / 2, by brute force over every pair.

    metrics.auc is sklearn's now; this keeps the test from comparing sklearn
    with itself.
    """
    pos, neg = s[y == 1][:, None], s[y == 0][None, :]
    return float(np.mean(pos > neg) + 0.5 * np.mean(pos == neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(size=500) + 0.7 * y, 1)  # rounding creates many ties
    assert metrics.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.auc(y, s) == pytest.approx(_direct_auc(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ks_matches_direct_computation(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.normal(size=300) + 0.5 * y, 1)
    assert metrics.ks(y, s) == pytest.approx(_direct_ks(y, s), abs=1e-12)
    fpr, tpr, _ = sk_roc_curve(y, s)
    assert metrics.ks(y, s) == pytest.approx(np.max(tpr - fpr), abs=1e-12)


def test_extremes_and_invariance() -> None:
    y = np.array([0, 0, 1, 1])
    assert metrics.auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert metrics.auc(y, [0.5] * 4) == 0.5
    assert metrics.ks(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    s = np.array([0.3, -1.0, 2.0, 0.7])
    # monotone transforms do not change either metric
    assert metrics.auc(y, s) == metrics.auc(y, np.exp(s))
    assert metrics.ks(y, s) == metrics.ks(y, 3 * s + 1)


def test_curves() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + y
    roc = metrics.roc_curve(y, s)
    assert roc.fpr[0] == 0 and roc.tpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(metrics.auc(y, s), abs=1e-12)
    kc = metrics.ks_curve(y, s)
    assert kc.ks == pytest.approx(metrics.ks(y, s))
    assert 0 <= kc.ks_at <= 1 and kc.population[-1] == pytest.approx(1.0)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="both classes"):
        metrics.auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="length"):
        metrics.ks([0, 1], [0.1])
    with pytest.raises(ValueError, match="0/1"):
        metrics.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auc([0, 1], [0.1, np.nan])
