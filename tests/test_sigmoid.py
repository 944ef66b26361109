"""Sigmoid surrogates, their losses, and the bound codes the logit guard runs on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xinrong.modeling import sigmoid as S


def test_default_fit_accuracy_and_safety() -> None:
    a = S.fit(7, 10.0, max_degree=7)
    z = np.linspace(-10, 10, 2001)
    err = np.abs(a.residual_sigmoid(z) - S.sigmoid(z))
    assert err[np.abs(z) <= 4].max() < 0.04  # accurate where logits live
    assert err.max() == pytest.approx(a.max_error)
    # bounded everywhere on the interval: the residual keeps the right sign at the edges
    s = a.residual_sigmoid(z)
    assert s.min() > -0.1 and s.max() < 1.1
    # odd around 1/2
    np.testing.assert_allclose(a.residual_sigmoid(-z), 1 - a.residual_sigmoid(z), atol=1e-12)


def test_error_cap_trades_centre_for_edges() -> None:
    tight = S.fit(7, 10.0, 2.0, error_cap=1.0, max_degree=7)  # = uniform least squares
    loose = S.fit(7, 10.0, 2.0, error_cap=3.0, max_degree=7)
    z = np.linspace(-3, 3, 601)
    assert (
        np.abs(loose.residual_sigmoid(z) - S.sigmoid(z)).max() < np.abs(tight.residual_sigmoid(z) - S.sigmoid(z)).max()
    )
    assert loose.max_error <= 3.0 * tight.max_error + 1e-12


@pytest.mark.parametrize(("degree", "coercive"), [(3, False), (5, True), (7, False), (9, True)])
def test_coercivity_by_degree(degree: int, coercive: bool) -> None:
    """Degrees 5 and 9 pull large logits back; 3 and 7 turn around (why the guard exists)."""
    a = S.fit(degree, 10.0, None, max_degree=9)
    assert a.coercive is coercive
    far = a.residual_sigmoid(np.array([40.0]))[0]
    assert bool(far > 1.0) == coercive


def test_loss_is_the_antiderivative_when_the_degree_allows() -> None:
    a = S.fit(5, 10.0, max_degree=7)
    assert a.loss_mode == "poly" and a.loss_degree == 6
    z = np.linspace(-9, 9, 181)
    h = 1e-5
    for y in (0.0, 1.0):
        deriv = (a.row_loss(z + h, y) - a.row_loss(z - h, y)) / (2 * h)
        np.testing.assert_allclose(deriv, a.residual_sigmoid(z) - y, atol=1e-6)
    # and close to the true log-loss near the centre
    assert np.abs(a.row_loss(z, 0.0) - S.softplus(z))[np.abs(z) < 3].max() < 0.05


def test_loss_falls_back_to_a_softplus_fit() -> None:
    a = S.fit(7, 10.0, max_degree=7)  # degree 8 antiderivative does not fit
    assert a.loss_mode == "poly" and a.loss_degree == 6
    z = np.linspace(-4, 4, 81)
    assert np.abs(a.row_loss(z, 1.0) - S.softplus(-z)).max() < 0.05


def test_taylor_first_order() -> None:
    a = S.for_backend(1)
    assert a.degree == 1 and a.loss_mode == "square" and not a.enforce_interval
    z = np.linspace(-20, 20, 9)
    np.testing.assert_allclose(a.residual_sigmoid(z), 0.5 + z / 4)
    np.testing.assert_allclose(a.row_loss(z, 0.0), math.log(2) + z / 2 + z**2 / 8)


def test_for_backend_picks_the_highest_odd_degree() -> None:
    assert S.for_backend(7).degree == 7
    assert S.for_backend(8).degree == 7
    assert S.for_backend(15).degree == 9
    assert S.for_backend(4).degree == 3
    assert S.for_backend(7, degree=5).degree == 5
    with pytest.raises(ValueError, match="max_degree"):
        S.for_backend(3, degree=5)
    with pytest.raises(ValueError):
        S.fit(4)


def test_approximant_roundtrip() -> None:
    a = S.fit(5, 12.0, 2.5, max_degree=7)
    assert S.Approximant.from_dict(a.to_dict()) == a


def test_bound_codes_are_upper_bounds() -> None:
    rng = np.random.default_rng(3)
    for v in np.concatenate([rng.lognormal(0, 3, 500), [1.0, 2.0**0.25, 2.0**-3.75, 1e-9]]):
        code = S.bound_code(float(v))
        assert S.bound_value(code) >= v
        assert S.bound_value(code - 1) < v  # the smallest such code: within a quarter octave
    assert S.bound_value(S.bound_code(0.0)) == 0.0
    with pytest.raises(ValueError, match="diverged"):
        S.bound_code(math.inf)
    with pytest.raises(ValueError, match="diverged"):
        S.bound_code(math.nan)


def test_shrink_shifts_codes_exactly() -> None:
    for v in (0.37, 1.0, 5.5):
        for steps in (1, 3, 8):
            assert S.bound_code(v * S.shrink_factor(steps)) == S.bound_code(v) - steps
