"""Polynomial stand-ins for the sigmoid and the log-loss, and the logit bound codes.

Under homomorphic encryption the bank cannot evaluate ``1 / (1 + e^-z)``; it
evaluates a polynomial ``s(z)`` on the encrypted logit instead, so the
protocol really minimizes the surrogate loss whose derivative is ``s(z) - y``.
What shaped this module (measured with the protocol on the plain backend,
``default_credit`` with 3 parties, 8 epochs, 4 stratified splits; test AUC
minus scikit-learn's at the same L2):

1. **First order is least squares.** ``s(z) = 1/2 + z/4`` (FATE's Taylor
   sigmoid) turns logistic regression into least-squares regression on
   targets +-2: AUC -0.004 on ``default_credit``, ~-0.007 on ``breast``, and
   on correlated features it needs a small step (its curvature does not
   vanish for confident rows). It is all a ``max_degree == 1`` backend
   (Paillier) can evaluate, so that is what Paillier jobs use.
2. **Degree-3 and degree-7 fits turn around outside their interval**
   (negative leading coefficient): far out, ``s(z) - y`` pushes large logits
   *further out*, so on nearly separable data (``breast``) they diverge
   unless logits are kept inside. Degrees 5 and 9 are *coercive* (positive
   leading coefficient) and pull them back. ``xinrong.modeling.vlr``'s guard keeps
   every logit inside the fitted interval whatever the degree.
3. **Accuracy where logits live, bounded error elsewhere.** Logits
   concentrate within a few units of 0, so the fit is least squares on
   ``[-R, R]`` with a Gaussian weight (width 2, logit units), plus the
   smallest uniform weight that keeps the worst error on the whole interval
   within ``error_cap`` (3) times that of the plain least-squares fit, so the
   residual keeps its sign and a bounded size up to the edges. With R = 10:
   AUC -0.0029 (degree 3), -0.0023 (5), -0.0015 (7), -0.0010 (9).
4. **Wider intervals when logits grow.** On ``breast`` the L2-regularized
   optimum has |logits| up to ~20. The guard then switches to fits on wider
   intervals (``R * 2**(k/4)``, levels k) instead of shrinking the weights:
   AUC -0.0008 (degree 7), +0.0001 (9) against -0.004 when it may only
   shrink.

The guard's currency is ``bound_code``: a party's upper bound on
``max |u_i / R|`` over a batch, rounded *up* to a power of ``2**(1/4)``; the
node sums the bounds to bound every logit of the batch.

Encrypted values are always in *normalized* units ``t = z / R``: the CKKS
backend keeps its noise small only for ``|t| <= ~1``, and the Paillier
backend caps encoded magnitudes. So every coefficient here is a coefficient
in ``t``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
LossMode = Literal["poly", "square", "none"]

# Bound codes: bound = 2 ** (code / BOUND_STEPS_PER_OCTAVE). Quarter octaves:
# a partial logit bound is known to within 19 %, which is all the guard needs.
BOUND_STEPS_PER_OCTAVE = 4
MIN_BOUND_CODE = -256  # ~1.2e-19: "zero" (a party with no features, or zero weights)
MAX_BOUND_CODE = 256

DEFAULT_RADIUS = 10.0
DEFAULT_WEIGHT_SCALE = 2.0
DEFAULT_ERROR_CAP = 3.0
_GRID = 2001
_MAX_DEGREE = 9


def sigmoid(z: npt.ArrayLike) -> FloatArray:
    """The exact logistic function, numerically stable for large |z|."""
    x = np.asarray(z, dtype=np.float64)
    out: FloatArray = np.where(
        x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x)))
    )
    return out


def softplus(z: npt.ArrayLike) -> FloatArray:
    """log(1 + e^z): the per-row log-loss of a row with label 0 (and, minus z, of label 1)."""
    x = np.asarray(z, dtype=np.float64)
    out: FloatArray = np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))
    return out


def bound_code(max_abs: float) -> int:
    """The smallest code whose bound ``2**(code/4)`` is >= max_abs (an upper bound, never lower)."""
    if not math.isfinite(max_abs) or max_abs < 0:
        raise ValueError("partial logits are not finite: the model diverged")
    if max_abs == 0.0:
        return MIN_BOUND_CODE
    code = math.ceil(BOUND_STEPS_PER_OCTAVE * math.log2(max_abs))
    # guard against log2 rounding down at exact powers
    while bound_value(code) < max_abs:
        code += 1
    if code > MAX_BOUND_CODE:
        raise ValueError("partial logits are astronomically large: the model diverged")
    return max(code, MIN_BOUND_CODE)


def bound_value(code: int) -> float:
    if not MIN_BOUND_CODE <= code <= MAX_BOUND_CODE:
        raise ValueError(f"bound code {code} out of range")
    return 0.0 if code == MIN_BOUND_CODE else float(2.0 ** (code / BOUND_STEPS_PER_OCTAVE))


def shrink_factor(steps: int) -> float:
    """The common weight factor of a guard event: 2**(-steps/4), so codes shift by exactly -steps."""
    if steps < 0:
        raise ValueError("shrink steps must be >= 0")
    return float(2.0 ** (-steps / BOUND_STEPS_PER_OCTAVE))


@dataclass(frozen=True)
class Approximant:
    """A sigmoid surrogate in normalized units ``t = z / radius``.

    ``coeffs``: ``s(z) = sum_k coeffs[k] * t**k``, the bank's residual polynomial.
    ``loss_coeffs``: per-row loss of a label-0 row *divided by radius*,
    ``l0(z) / radius = sum_k loss_coeffs[k] * t**k``; a row with label y adds
    ``-y * t``. With ``loss_mode == "square"`` (degree-1 backends) it is
    quadratic and the bank gets ``t**2`` from the providers instead of
    squaring a ciphertext.
    """

    degree: int
    radius: float
    weight_scale: float | None
    coeffs: tuple[float, ...]
    loss_coeffs: tuple[float, ...]
    loss_mode: LossMode
    max_error: float  # max |s(z) - sigmoid(z)| on [-radius, radius]
    coercive: bool  # far outside the interval, s(z) - y has the sign of z
    enforce_interval: bool  # False when the surrogate is stable on every logit (degree 1)

    def __post_init__(self) -> None:
        if len(self.coeffs) != self.degree + 1:
            raise ValueError("coefficient count does not match the degree")
        if not (self.radius > 0 and math.isfinite(self.radius)):
            raise ValueError("radius must be positive")
        if not all(math.isfinite(c) for c in (*self.coeffs, *self.loss_coeffs)):
            raise ValueError("coefficients must be finite")

    @property
    def loss_degree(self) -> int:
        return len(self.loss_coeffs) - 1

    def residual_sigmoid(self, z: npt.ArrayLike) -> FloatArray:
        """s(z) in plaintext (tests, simulations)."""
        t = np.asarray(z, dtype=np.float64) / self.radius
        out: FloatArray = np.polynomial.polynomial.polyval(t, np.asarray(self.coeffs))
        return out

    def row_loss(self, z: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """The per-row loss the protocol reports, in plaintext (logit units, not divided by R)."""
        zz = np.asarray(z, dtype=np.float64)
        t = zz / self.radius
        l0 = np.polynomial.polynomial.polyval(t, np.asarray(self.loss_coeffs)) * self.radius
        out: FloatArray = l0 - np.asarray(y, dtype=np.float64) * zz
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "degree": self.degree,
            "radius": self.radius,
            "weight_scale": self.weight_scale,
            "coeffs": list(self.coeffs),
            "loss_coeffs": list(self.loss_coeffs),
            "loss_mode": self.loss_mode,
            "max_error": self.max_error,
            "coercive": self.coercive,
            "enforce_interval": self.enforce_interval,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Approximant:
        mode = str(data["loss_mode"])
        if mode not in ("poly", "square", "none"):
            raise ValueError(f"unknown loss mode {mode!r}")
        ws = data.get("weight_scale")
        return cls(
            degree=int(data["degree"]),
            radius=float(data["radius"]),
            weight_scale=None if ws is None else float(ws),
            coeffs=tuple(float(c) for c in data["coeffs"]),
            loss_coeffs=tuple(float(c) for c in data["loss_coeffs"]),
            loss_mode=mode,  # type: ignore[arg-type]
            max_error=float(data["max_error"]),
            coercive=bool(data["coercive"]),
            enforce_interval=bool(data["enforce_interval"]),
        )


def _weights(z: FloatArray, weight_scale: float | None, center: float = 0.0) -> FloatArray:
    if weight_scale is None:
        return np.ones_like(z)
    w: FloatArray = np.exp(-0.5 * ((z - center) / weight_scale) ** 2)
    return w


def _lstsq(t: FloatArray, target: FloatArray, weights: FloatArray, powers: list[int], size: int) -> FloatArray:
    sw = np.sqrt(weights)
    a = np.stack([t**k for k in powers], axis=1) * sw[:, None]
    sol, *_ = np.linalg.lstsq(a, target * sw, rcond=None)
    out = np.zeros(size)
    for k, c in zip(powers, sol):
        out[k] = c
    return out


@functools.lru_cache(maxsize=256)
def fit(
    degree: int,
    radius: float = DEFAULT_RADIUS,
    weight_scale: float | None = DEFAULT_WEIGHT_SCALE,
    *,
    max_degree: int | None = None,
    error_cap: float = DEFAULT_ERROR_CAP,
    center: float = 0.0,
) -> Approximant:
    """Weighted least-squares odd fit of the sigmoid on [-radius, radius], and its loss.

    Pure and cached: every party that needs a level's surrogate gets the same one.

    ``max_degree`` (the backend's) decides the loss polynomial: the exact
    antiderivative of ``s`` when ``degree + 1`` fits (so the reported loss is
    the objective actually minimized), else a least-squares fit of softplus
    of the largest even degree that fits, else (``max_degree == 1``) the
    quadratic antiderivative evaluated from ``t**2`` shares ("square" mode).
    """
    if degree < 1 or degree > _MAX_DEGREE or degree % 2 == 0:
        raise ValueError(f"sigmoid degree must be odd, 1..{_MAX_DEGREE}")
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError("radius must be positive")
    if weight_scale is not None and not weight_scale > 0:
        raise ValueError("weight_scale must be positive")
    if not error_cap >= 1.0:
        raise ValueError("error_cap must be >= 1 (1: the uniform least-squares fit)")
    cap = degree + 1 if max_degree is None else max_degree
    if cap < degree:
        raise ValueError(f"degree {degree} exceeds the backend's max_degree {cap}")
    z = np.linspace(-radius, radius, _GRID)
    t = z / radius
    # Centred on 0 the best fit is odd around 1/2; off-centre it needs every power.
    odd = list(range(1, degree + 1, 2)) if center == 0.0 else list(range(degree + 1))
    # Weighted fit for accuracy where logits live, then the smallest uniform "floor"
    # weight that keeps |s(z) - sigmoid(z)| within ``error_cap`` times the uniform
    # least-squares fit's worst error over the whole interval: the residual keeps
    # the right sign and a bounded size anywhere the guard lets a logit go.
    if not (math.isfinite(center) and abs(center) < radius / 2):
        raise ValueError("the weight centre must lie well inside the interval")
    base = _weights(z, weight_scale, center)
    uniform = _lstsq(t, sigmoid(z) - 0.5, np.ones_like(z), odd, degree + 1)
    cap_err = error_cap * float(np.max(np.abs(np.polynomial.polynomial.polyval(t, uniform) + 0.5 - sigmoid(z))))
    # the last candidate is the uniform fit itself, which always meets the cap
    for floor in (0.0, *np.geomspace(1e-6, 1e3, 91).tolist(), math.inf):
        w = np.ones_like(z) if math.isinf(floor) else base + floor
        coeffs = _lstsq(t, sigmoid(z) - 0.5, w, odd, degree + 1)
        coeffs[0] += 0.5
        s = np.polynomial.polynomial.polyval(t, coeffs)
        if float(np.max(np.abs(s - sigmoid(z)))) <= cap_err * (1 + 1e-9):
            break
    max_error = float(np.max(np.abs(s - sigmoid(z))))
    loss_mode: LossMode
    if degree + 1 <= cap or cap == 1:
        # antiderivative in z of s(z): d/dt (l0/R) = s  =>  l0/R = sum c_k t^(k+1)/(k+1) + C
        loss = np.zeros(degree + 2)
        for k, c in enumerate(coeffs):
            loss[k + 1] = c / (k + 1)
        # constant: weighted least squares against softplus/R
        resid = softplus(z) / radius - np.polynomial.polynomial.polyval(t, loss)
        loss[0] = float(np.sum(base * resid) / np.sum(base))
        loss_mode = "square" if cap == 1 else "poly"
    else:
        even = cap - (cap % 2)
        loss = _lstsq(t, softplus(z) / radius, base + 1e-3, list(range(even + 1)), even + 1)
        loss_mode = "poly"
    return Approximant(
        degree=degree,
        radius=float(radius),
        weight_scale=None if weight_scale is None else float(weight_scale),
        coeffs=tuple(float(c) for c in coeffs),
        loss_coeffs=tuple(float(c) for c in loss),
        loss_mode=loss_mode,
        max_error=max_error,
        coercive=bool(coeffs[-1] > 0),
        enforce_interval=True,
    )


def taylor1(radius: float = DEFAULT_RADIUS) -> Approximant:
    """FATE's first-order sigmoid ``1/2 + z/4``: least squares in disguise, stable everywhere.

    Its surrogate loss ``(1/8)(z - 2y')**2`` (y' = +-1) is a convex quadratic,
    so no logit bound is needed for stability; ``radius`` only normalizes the
    encrypted values (``t = z / radius``) so they stay small.
    """
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError("radius must be positive")
    r = float(radius)
    coeffs = (0.5, r / 4.0)
    # l0(z) = log 2 + z/2 + z^2/8  ->  l0/R = log2/R + t/2 + R t^2 / 8
    loss = (math.log(2.0) / r, 0.5, r / 8.0)
    z = np.linspace(-4.0, 4.0, _GRID)
    max_error = float(np.max(np.abs(0.5 + z / 4.0 - sigmoid(z))))
    return Approximant(
        degree=1,
        radius=r,
        weight_scale=None,
        coeffs=coeffs,
        loss_coeffs=loss,
        loss_mode="square",
        max_error=max_error,
        coercive=True,
        enforce_interval=False,
    )


def for_backend(
    max_degree: int,
    *,
    degree: int | None = None,
    radius: float = DEFAULT_RADIUS,
    weight_scale: float | None = DEFAULT_WEIGHT_SCALE,
    error_cap: float = DEFAULT_ERROR_CAP,
) -> Approximant:
    """The surrogate a backend can evaluate: by default the highest odd degree <= max_degree (<= 9).

    ``max_degree == 1`` (Paillier) gets the first-order Taylor sigmoid.
    """
    if max_degree < 1:
        raise ValueError("the backend cannot evaluate even a linear polynomial")
    if degree is None:
        degree = min(_MAX_DEGREE, max_degree if max_degree % 2 else max_degree - 1)
    if degree > max_degree:
        raise ValueError(f"sigmoid degree {degree} exceeds the backend's max_degree {max_degree}")
    if degree == 1:
        return taylor1(radius)
    return fit(degree, radius, weight_scale, max_degree=max_degree, error_cap=error_cap)
