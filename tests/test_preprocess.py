"""Local preprocessing: imputation, standardization, clipping, indicators, serialization."""

from __future__ import annotations

import numpy as np
import pytest

from xinrong.modeling.preprocess import ColumnTransform, fit_transform


def _raw(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.lognormal(10, 1, 400),  # revenue-like, heavy tail, large scale
            rng.normal(-5e3, 10, 400),  # large offset
            np.full(400, 7.0),  # constant column
            rng.integers(0, 3, 400).astype(float),
        ]
    )
    x[rng.random(x.shape) < 0.1] = np.nan
    x[:, 3] = np.where(np.isnan(x[:, 3]), 1.0, x[:, 3])  # column 3 has no gaps
    return x


def test_fit_and_apply() -> None:
    x = _raw()
    t = fit_transform(x, ["rev", "off", "const", "cat"], impute="median", clip=3.0)
    z = t.apply(x)
    assert t.indicators == (True, True, True, False)
    assert t.output_names() == ("rev", "off", "const", "cat", "rev__missing", "off__missing", "const__missing")
    assert z.shape == (400, 7)
    assert np.all(np.isfinite(z))
    assert np.abs(z[:, :4]).max() <= 3.0  # clipped
    # standardized on the imputed training column (before clipping): mean 0
    assert abs(z[:, 1].mean()) < 0.05
    np.testing.assert_array_equal(z[:, 4], np.isnan(x[:, 0]).astype(float))
    assert np.all(z[:, 2] == 0.0)  # constant column: scale 1, centered
    # a missing value maps to the (standardized, clipped) median
    med = np.nanmedian(x[:, 0])
    assert z[np.isnan(x[:, 0]), 0][0] == pytest.approx(np.clip((med - t.center[0]) / t.scale[0], -3, 3))


def test_scale_invariance_of_raw_inputs() -> None:
    """Raw units do not matter: scaling/shifting a raw column leaves the model inputs unchanged."""
    x = _raw(1)
    y = x.copy()
    y[:, 0] = y[:, 0] * 1e-4
    y[:, 1] = y[:, 1] + 1e6
    names = ["a", "b", "c", "d"]
    np.testing.assert_allclose(fit_transform(x, names).apply(x), fit_transform(y, names).apply(y), atol=1e-6)


def test_json_roundtrip_and_scoring_time_use() -> None:
    x = _raw(2)
    t = fit_transform(x[:300], ["a", "b", "c", "d"], indicators=False, clip=None, impute="mean")
    back = ColumnTransform.from_json(t.to_json())
    assert back == t
    np.testing.assert_array_equal(back.apply(x[300:]), t.apply(x[300:]))
    assert back.output_names() == ("a", "b", "c", "d")
    # unclipped: outliers of the held-out rows pass through
    assert np.all(np.isfinite(back.apply(x[300:])))


def test_rejects_bad_input() -> None:
    x = _raw(3)
    with pytest.raises(ValueError, match="columns"):
        fit_transform(x, ["a"])
    with pytest.raises(ValueError, match="infinity"):
        fit_transform(np.array([[1.0], [np.inf]]), ["a"])
    t = fit_transform(x, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="columns"):
        t.apply(x[:, :2])
    with pytest.raises(ValueError):
        ColumnTransform(("a",), (0.0,), (0.0,), (0.0,), (False,), 3.0)  # zero scale
    with pytest.raises(ValueError):
        ColumnTransform(("a", "a"), (0.0, 0.0), (0.0, 0.0), (1.0, 1.0), (False, False), 3.0)


def test_all_missing_column() -> None:
    x = np.array([[np.nan, 1.0], [np.nan, 2.0], [np.nan, 3.0]])
    t = fit_transform(x, ["gone", "ok"])
    z = t.apply(x)
    assert np.all(z[:, 0] == 0.0) and np.all(z[:, 2] == 1.0)
