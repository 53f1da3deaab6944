"""The Moré-Garbow-Hillstrom unconstrained test problems, as residual vectors in jnp.

J. J. Moré, B. S. Garbow and K. E. Hillstrom, "Testing unconstrained optimization software",
ACM Transactions on Mathematical Software 7 (1981) 17-41, doi:10.1145/355934.355936: 35 problems
f(x) = sum_i f_i(x)^2, each given by its residuals f_1..f_m, a standard start x0 and the
published minima. MINPACK's lmder and hybrd test drivers use the same definitions for the
problems they share (hybrd's Wood, Watson and variably dimensioned are other, square variants);
variable sizes follow those drivers where they have the problem (Watson n = 6 and 9, Chebyquad
n = m = 8, n = 10 for the square systems, n = 5 and m = 10 for the linear functions) and are
noted in each problem's ``note`` otherwise.

Each ``MGHProblem.residual`` takes a flat jnp vector of length n (float32 or float64; the data
tables are cast to x's dtype) and returns the m residuals; it is jit-, grad- and jacfwd-able.
``fstar`` is the paper's minimum of f (to the digits it prints, or exact where there is a closed
form); ``note`` says what else the paper reports and where the standard start leads a
Levenberg-Marquardt solver, when that is not to ``fstar``. Problem numbers in the comments are the
paper's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class MGHProblem(NamedTuple):
    name: str
    n: int  # number of parameters
    m: int  # number of residuals
    residual: Callable  # residual(x) -> (m,) jnp array
    x0: np.ndarray  # the standard starting point (float64, shape (n,))
    fstar: float | None  # the published minimum of f = sum(residual**2); None if none is given
    note: str  # published local minima, or anything a user of the table must know


def objective(p: MGHProblem) -> Callable:
    """f(x) = sum(residual(x)**2) for problem ``p``."""

    def f(x):
        r = p.residual(x)
        return jnp.sum(r * r)

    return f


def start(p: MGHProblem, factor: float = 1.0) -> np.ndarray:
    """``factor * x0``; MINPACK's rule where ``x0 = 0``: ``factor`` in every component."""
    x0 = np.asarray(p.x0, float)
    return factor * x0 if np.any(x0) else np.full_like(x0, factor)


def improvable(p: MGHProblem, x, f: float, *, rel: float = 1e-6, f0_share: float = 1e-12) -> bool:
    """Whether scipy's BFGS, restarted from ``x`` at tight tolerances, lowers ``f`` by more than
    ``rel |f| + f0_share f(x0)``: then ``x`` is not a minimum (the oracle for a reported success;
    scipy is imported here, as only the tests and benchmarks call this)."""
    import warnings

    import jax
    import scipy.optimize as so

    obj = jax.jit(objective(p))
    grad = jax.jit(jax.grad(objective(p)))
    f0 = float(obj(jnp.asarray(p.x0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = so.minimize(
            lambda z: float(obj(jnp.asarray(z))),
            np.asarray(x, np.float64),
            jac=lambda z: np.asarray(grad(jnp.asarray(z))),
            method="BFGS",
            options={"gtol": 1e-12, "maxiter": 20000},
        )
    return bool(r.fun < f - rel * abs(f) - f0_share * f0)


def _float(x):
    """x as a floating jnp array (integers go to the default float; float32 stays float32)."""
    x = jnp.asarray(x)
    return x.astype(jnp.result_type(x, 1.0))


def _const(c, x):
    """A numpy data table as a jnp array of x's dtype."""
    return jnp.asarray(c, dtype=x.dtype)


def _idx(start, stop, x):
    """The integers start..stop-1 as a float array of x's dtype."""
    return jnp.arange(start, stop, dtype=x.dtype)


# Scalar constants as Python floats (weakly typed: they keep float32 inputs float32).
_SQRT5 = float(np.sqrt(5.0))
_SQRT10 = float(np.sqrt(10.0))
_SQRT90 = float(np.sqrt(90.0))
_SQRT_PENALTY = float(np.sqrt(1e-5))  # penalty functions I and II: a = 1e-5
_EXP_M01 = float(np.exp(-0.1))


# ---------------------------------------------------------------------------------------------
# Data tables, as printed in the paper; each agrees with MINPACK's ssqfcn, GSL's or Ceres's copy.

_BARD_Y = np.array(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)
_GAUSSIAN_Y = np.array(
    [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989]
    + [0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009]
)
_MEYER_Y = np.array(
    [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0]
    + [8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]
)
_KOWALIK_OSBORNE_Y = np.array(
    [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
)
_KOWALIK_OSBORNE_U = np.array(
    [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]
)  # the paper's rounded 1/6, 1/12, 1/14: keep them, fstar depends on them
_OSBORNE_1_Y = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751]
    + [0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490]
    + [0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)
_OSBORNE_2_Y = np.array(
    [1.366, 1.191, 1.112, 1.013, 0.991, 0.885, 0.831, 0.847, 0.786, 0.725, 0.746, 0.679, 0.608]
    + [0.655, 0.616, 0.606, 0.602, 0.626, 0.651, 0.724, 0.649, 0.649, 0.694, 0.644, 0.624, 0.661]
    + [0.612, 0.558, 0.533, 0.495, 0.500, 0.423, 0.395, 0.375, 0.372, 0.391, 0.396, 0.405, 0.428]
    + [0.429, 0.523, 0.562, 0.607, 0.653, 0.672, 0.708, 0.633, 0.668, 0.645, 0.632, 0.591, 0.559]
    + [0.597, 0.625, 0.739, 0.710, 0.729, 0.720, 0.636, 0.581, 0.428, 0.292, 0.162, 0.098, 0.054]
)


# ---------------------------------------------------------------------------------------------
# Fixed-size problems 1-19.


def _rosenbrock(x):  # 1
    x = _float(x)
    return jnp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def _freudenstein_roth(x):  # 2
    x = _float(x)
    x1, x2 = x[0], x[1]
    return jnp.stack(
        [
            -13.0 + x1 + ((5.0 - x2) * x2 - 2.0) * x2,
            -29.0 + x1 + ((x2 + 1.0) * x2 - 14.0) * x2,
        ]
    )


def _powell_badly_scaled(x):  # 3
    x = _float(x)
    return jnp.stack([1e4 * x[0] * x[1] - 1.0, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001])


def _brown_badly_scaled(x):  # 4
    x = _float(x)
    return jnp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])


def _beale(x):  # 5
    x = _float(x)
    i = _idx(1, 4, x)
    return _const([1.5, 2.25, 2.625], x) - x[0] * (1.0 - x[1] ** i)


def _jennrich_sampson(x, m=10):  # 6
    x = _float(x)
    i = _idx(1, m + 1, x)
    return 2.0 + 2.0 * i - (jnp.exp(i * x[0]) + jnp.exp(i * x[1]))


def _helical_valley(x):  # 7
    # theta = arctan(x2/x1)/(2 pi), plus 1/2 when x1 < 0: the paper's branch, with values in
    # [-1/4, 3/4) and the cut on the negative x2 axis (arctan2's cut is on the negative x1 axis).
    x = _float(x)
    theta = jnp.arctan2(x[1], x[0]) / (2.0 * jnp.pi)
    theta = jnp.where(theta < -0.25, theta + 1.0, theta)
    return jnp.stack(
        [10.0 * (x[2] - 10.0 * theta), 10.0 * (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1.0), x[2]]
    )


def _bard(x):  # 8
    x = _float(x)
    u = _idx(1, 16, x)
    v = 16.0 - u
    w = jnp.minimum(u, v)
    return _const(_BARD_Y, x) - (x[0] + u / (v * x[1] + w * x[2]))


def _gaussian(x):  # 9
    x = _float(x)
    t = (8.0 - _idx(1, 16, x)) / 2.0
    return x[0] * jnp.exp(-x[1] * (t - x[2]) ** 2 / 2.0) - _const(_GAUSSIAN_Y, x)


def _meyer(x):  # 10
    x = _float(x)
    t = 45.0 + 5.0 * _idx(1, 17, x)
    return x[0] * jnp.exp(x[1] / (t + x[2])) - _const(_MEYER_Y, x)


def _gulf(x, m=99):  # 11
    # The paper prints |y_i m i x_2|: "m i" is a minus sign, f_i = exp(-|y_i - x2|^x3 / x1) - t_i.
    # (The derivative in x3 is nan where x2 equals some y_i exactly: log 0.)
    x = _float(x)
    t = _idx(1, m + 1, x) / 100.0
    y = 25.0 + (-50.0 * jnp.log(t)) ** (2.0 / 3.0)
    return jnp.exp(-(jnp.abs(y - x[1]) ** x[2]) / x[0]) - t


def _box_3d(x, m=10):  # 12
    x = _float(x)
    t = 0.1 * _idx(1, m + 1, x)
    return jnp.exp(-t * x[0]) - jnp.exp(-t * x[1]) - x[2] * (jnp.exp(-t) - jnp.exp(-10.0 * t))


def _powell_singular(x):  # 13
    x = _float(x)
    return jnp.stack(
        [
            x[0] + 10.0 * x[1],
            _SQRT5 * (x[2] - x[3]),
            (x[1] - 2.0 * x[2]) ** 2,
            _SQRT10 * (x[0] - x[3]) ** 2,
        ]
    )


def _wood(x):  # 14
    x = _float(x)
    return jnp.stack(
        [
            10.0 * (x[1] - x[0] ** 2),
            1.0 - x[0],
            _SQRT90 * (x[3] - x[2] ** 2),
            1.0 - x[2],
            _SQRT10 * (x[1] + x[3] - 2.0),
            (x[1] - x[3]) / _SQRT10,
        ]
    )


def _kowalik_osborne(x):  # 15
    x = _float(x)
    u = _const(_KOWALIK_OSBORNE_U, x)
    return _const(_KOWALIK_OSBORNE_Y, x) - x[0] * u * (u + x[1]) / (u * (u + x[2]) + x[3])


def _brown_dennis(x, m=20):  # 16
    x = _float(x)
    t = _idx(1, m + 1, x) / 5.0
    return (x[0] + t * x[1] - jnp.exp(t)) ** 2 + (x[2] + x[3] * jnp.sin(t) - jnp.cos(t)) ** 2


def _osborne_1(x):  # 17
    x = _float(x)
    t = 10.0 * _idx(0, 33, x)
    model = x[0] + x[1] * jnp.exp(-t * x[3]) + x[2] * jnp.exp(-t * x[4])
    return _const(_OSBORNE_1_Y, x) - model


def _biggs_exp6(x, m=13):  # 18
    x = _float(x)
    t = 0.1 * _idx(1, m + 1, x)
    y = jnp.exp(-t) - 5.0 * jnp.exp(-10.0 * t) + 3.0 * jnp.exp(-4.0 * t)
    return x[2] * jnp.exp(-t * x[0]) - x[3] * jnp.exp(-t * x[1]) + x[5] * jnp.exp(-t * x[4]) - y


def _osborne_2(x):  # 19
    x = _float(x)
    t = _idx(0, 65, x) / 10.0
    model = (
        x[0] * jnp.exp(-t * x[4])
        + x[1] * jnp.exp(-((t - x[8]) ** 2) * x[5])
        + x[2] * jnp.exp(-((t - x[9]) ** 2) * x[6])
        + x[3] * jnp.exp(-((t - x[10]) ** 2) * x[7])
    )
    return _const(_OSBORNE_2_Y, x) - model


# ---------------------------------------------------------------------------------------------
# Variable-size problems 20-35: each maker returns the residual for a given n (and m).


def _watson(n):  # 20: m = 31, 2 <= n <= 31
    def residual(x):
        x = _float(x)
        t = _idx(1, 30, x) / 29.0
        powers = t[:, None] ** _idx(0, n, x)  # t_i^(j-1), j = 1..n
        s1 = powers[:, : n - 1] @ (_idx(1, n, x) * x[1:])  # sum_{j>=2} (j-1) x_j t^(j-2)
        s2 = powers @ x
        return jnp.concatenate([s1 - s2**2 - 1.0, jnp.stack([x[0], x[1] - x[0] ** 2 - 1.0])])

    return residual


def _extended_rosenbrock(x):  # 21: n even, m = n
    x = _float(x)
    odd, even = x[0::2], x[1::2]
    return jnp.stack([10.0 * (even - odd**2), 1.0 - odd], axis=1).reshape(-1)


def _extended_powell(x):  # 22: n a multiple of 4, m = n
    x = _float(x)
    a, b, c, d = x[0::4], x[1::4], x[2::4], x[3::4]
    r = [a + 10.0 * b, _SQRT5 * (c - d), (b - 2.0 * c) ** 2, _SQRT10 * (a - d) ** 2]
    return jnp.stack(r, axis=1).reshape(-1)


def _penalty_1(x):  # 23: m = n + 1
    x = _float(x)
    return jnp.concatenate([_SQRT_PENALTY * (x - 1.0), jnp.sum(x * x, keepdims=True) - 0.25])


def _penalty_2(x):  # 24: m = 2n
    x = _float(x)
    n = x.shape[0]
    a = _SQRT_PENALTY
    i = _idx(2, n + 1, x)
    y = jnp.exp(i / 10.0) + jnp.exp((i - 1.0) / 10.0)
    e = jnp.exp(x / 10.0)
    weights = n - _idx(0, n, x)  # n - j + 1, j = 1..n
    return jnp.concatenate(
        [
            x[:1] - 0.2,
            a * (e[1:] + e[:-1] - y),
            a * (e[1:] - _EXP_M01),
            jnp.sum(weights * x * x, keepdims=True) - 1.0,
        ]
    )


def _variably_dimensioned(x):  # 25: m = n + 2
    x = _float(x)
    s = jnp.sum(_idx(1, x.shape[0] + 1, x) * (x - 1.0), keepdims=True)
    return jnp.concatenate([x - 1.0, s, s**2])


def _trigonometric(x):  # 26: m = n
    x = _float(x)
    n = x.shape[0]
    i = _idx(1, n + 1, x)
    return n - jnp.sum(jnp.cos(x)) + i * (1.0 - jnp.cos(x)) - jnp.sin(x)


def _brown_almost_linear(x):  # 27: m = n
    x = _float(x)
    n = x.shape[0]
    return jnp.concatenate([x[:-1] + jnp.sum(x) - (n + 1.0), jnp.prod(x, keepdims=True) - 1.0])


def _discrete_boundary_value(x):  # 28: m = n, x_0 = x_{n+1} = 0
    x = _float(x)
    n = x.shape[0]
    h = 1.0 / (n + 1)
    t = h * _idx(1, n + 1, x)
    z = jnp.zeros(1, x.dtype)
    left, right = jnp.concatenate([z, x[:-1]]), jnp.concatenate([x[1:], z])
    return 2.0 * x - left - right + h**2 * (x + t + 1.0) ** 3 / 2.0


def _discrete_integral_equation(x):  # 29: m = n
    x = _float(x)
    n = x.shape[0]
    h = 1.0 / (n + 1)
    t = h * _idx(1, n + 1, x)
    g = (x + t + 1.0) ** 3
    lower = jnp.cumsum(t * g)  # sum_{j <= i} t_j g_j
    upper = jnp.sum((1.0 - t) * g) - jnp.cumsum((1.0 - t) * g)  # sum_{j > i} (1 - t_j) g_j
    return x + h * ((1.0 - t) * lower + t * upper) / 2.0


def _broyden_tridiagonal(x):  # 30: m = n, x_0 = x_{n+1} = 0
    x = _float(x)
    z = jnp.zeros(1, x.dtype)
    left, right = jnp.concatenate([z, x[:-1]]), jnp.concatenate([x[1:], z])
    return (3.0 - 2.0 * x) * x - left - 2.0 * right + 1.0


def _broyden_banded(x, lower=5, upper=1):  # 31: m = n
    x = _float(x)
    n = x.shape[0]
    i, j = np.indices((n, n))
    band = ((j != i) & (j >= i - lower) & (j <= i + upper)).astype(np.float64)
    return x * (2.0 + 5.0 * x**2) + 1.0 - _const(band, x) @ (x * (1.0 + x))


def _linear_full_rank(m):  # 32: m >= n
    def residual(x):
        x = _float(x)
        n = x.shape[0]
        padded = jnp.concatenate([x, jnp.zeros(m - n, x.dtype)])
        return padded - 2.0 / m * jnp.sum(x) - 1.0

    return residual


def _linear_rank_1(m):  # 33: m >= n
    def residual(x):
        x = _float(x)
        return _idx(1, m + 1, x) * jnp.sum(_idx(1, x.shape[0] + 1, x) * x) - 1.0

    return residual


def _linear_rank_1_zero(m):  # 34: m >= n; x_1, x_n, f_1 and f_m play no part
    def residual(x):
        x = _float(x)
        n = x.shape[0]
        s = jnp.sum(_idx(2, n, x) * x[1:-1])
        inner = _idx(1, m - 1, x) * s - 1.0  # f_i = (i - 1) s - 1, i = 2..m-1
        minus_one = -jnp.ones(1, x.dtype)
        return jnp.concatenate([minus_one, inner, minus_one])

    return residual


def _chebyquad(m):  # 35: m >= n
    # f_i = mean_j T_i(x_j) - int_0^1 T_i, with T_i the Chebyshev polynomial shifted to [0, 1];
    # the integral is 0 for odd i and -1/(i^2 - 1) for even i.
    def residual(x):
        x = _float(x)
        y = 2.0 * x - 1.0
        prev, cur = jnp.ones_like(y), y
        rows = []
        for _ in range(m):  # the three-term recurrence, vectorised over the n points
            rows.append(jnp.mean(cur))
            prev, cur = cur, 2.0 * y * cur - prev
        integral = np.zeros(m)
        even = np.arange(2.0, m + 1, 2.0)
        integral[1::2] = -1.0 / (even**2 - 1.0)
        return jnp.stack(rows) - _const(integral, x)

    return residual


# ---------------------------------------------------------------------------------------------
# The table.


def _x0(*v):
    return np.array(v, dtype=np.float64)


def _build():
    n_watson = (6, 9)
    problems = [
        MGHProblem("rosenbrock", 2, 2, _rosenbrock, _x0(-1.2, 1.0), 0.0, "f = 0 at (1, 1)."),
        MGHProblem(
            "freudenstein_roth",
            2,
            2,
            _freudenstein_roth,
            _x0(0.5, -2.0),
            0.0,
            "f = 0 at (5, 4); local minimum f = 48.9842 at (11.41, -0.8968), where LM and hybrd "
            "from x0 stop.",
        ),
        MGHProblem(
            "powell_badly_scaled",
            2,
            2,
            _powell_badly_scaled,
            _x0(0.0, 1.0),
            0.0,
            "f = 0 at (1.098e-5, 9.106).",
        ),
        MGHProblem(
            "brown_badly_scaled",
            2,
            3,
            _brown_badly_scaled,
            _x0(1.0, 1.0),
            0.0,
            "f = 0 at (1e6, 2e-6).",
        ),
        MGHProblem("beale", 2, 3, _beale, _x0(1.0, 1.0), 0.0, "f = 0 at (3, 0.5)."),
        MGHProblem(
            "jennrich_sampson",
            2,
            10,
            _jennrich_sampson,
            _x0(0.3, 0.4),
            124.362,
            "m = 10: f = 124.362 at x1 = x2 = 0.2578.",
        ),
        MGHProblem(
            "helical_valley",
            3,
            3,
            _helical_valley,
            _x0(-1.0, 0.0, 0.0),
            0.0,
            "f = 0 at (1, 0, 0); theta jumps by 1 across x1 = 0, x2 < 0.",
        ),
        MGHProblem(
            "bard",
            3,
            15,
            _bard,
            _x0(1.0, 1.0, 1.0),
            8.21487e-3,
            "Also f = 17.42869 (the paper's 17.4286...) as x -> (0.8406, -inf, -inf).",
        ),
        MGHProblem("gaussian", 3, 15, _gaussian, _x0(0.4, 1.0, 0.0), 1.12793e-8, "f = 1.12793e-8."),
        MGHProblem(
            "meyer",
            3,
            16,
            _meyer,
            _x0(0.02, 4000.0, 250.0),
            87.9458,
            "f = 87.9458 at (5.61e-3, 6181, 345.2); very badly scaled (f(x0) = 1.7e9).",
        ),
        MGHProblem(
            "gulf",
            3,
            99,
            _gulf,
            _x0(5.0, 2.5, 0.15),
            0.0,
            "m = 99 (the paper allows 3 <= m <= 100): f = 0 at (50, 25, 1.5).",
        ),
        MGHProblem(
            "box_3d",
            3,
            10,
            _box_3d,
            _x0(0.0, 10.0, 20.0),
            0.0,
            "m = 10: f = 0 at (1, 10, 1), (10, 1, -1) and wherever x1 = x2, x3 = 0.",
        ),
        MGHProblem(
            "powell_singular",
            4,
            4,
            _powell_singular,
            _x0(3.0, -1.0, 0.0, 1.0),
            0.0,
            "f = 0 at the origin, where the Jacobian is singular (slow, linear convergence).",
        ),
        MGHProblem(
            "wood",
            4,
            6,
            _wood,
            _x0(-3.0, -1.0, -3.0, -1.0),
            0.0,
            "f = 0 at (1, 1, 1, 1).",
        ),
        MGHProblem(
            "kowalik_osborne",
            4,
            11,
            _kowalik_osborne,
            _x0(0.25, 0.39, 0.415, 0.39),
            3.07505e-4,
            "Also f = 1.02734e-3 as x -> (+inf, -14.076, -inf, -inf).",
        ),
        MGHProblem(
            "brown_dennis",
            4,
            20,
            _brown_dennis,
            _x0(25.0, 5.0, -5.0, -1.0),
            85822.2,
            "m = 20: f = 85822.2 at (-11.59, 13.20, -0.4034, 0.2368).",
        ),
        MGHProblem(
            "osborne_1",
            5,
            33,
            _osborne_1,
            _x0(0.5, 1.5, -1.0, 0.01, 0.02),
            5.46489e-5,
            "f = 5.46489e-5 at (0.3754, 1.936, -1.465, 0.01287, 0.02212).",
        ),
        MGHProblem(
            "biggs_exp6",
            6,
            13,
            _biggs_exp6,
            _x0(1.0, 2.0, 1.0, 1.0, 1.0, 1.0),
            0.0,
            "m = 13: f = 0 at (1, 10, 1, 5, 4, 3) and its term swaps, e.g. (4, 10, 3, 5, 1, 1); "
            "local minimum f = 5.65565e-3, where BFGS from x0 stops (LM from x0 reaches 0).",
        ),
        MGHProblem(
            "osborne_2",
            11,
            65,
            _osborne_2,
            _x0(1.3, 0.65, 0.65, 0.7, 0.6, 3.0, 5.0, 7.0, 2.0, 4.5, 5.5),
            4.01377e-2,
            "f = 4.01377e-2.",
        ),
    ]
    watson_fstar = {6: 2.28767e-3, 9: 1.39976e-6}
    problems += [
        MGHProblem(
            f"watson_{n}",
            n,
            31,
            _watson(n),
            np.zeros(n),
            watson_fstar[n],
            "Watson: f = 2.28767e-3 (n = 6), 1.39976e-6 (n = 9), 4.72238e-10 (n = 12).",
        )
        for n in n_watson
    ]
    problems += [
        MGHProblem(
            "extended_rosenbrock",
            10,
            10,
            _extended_rosenbrock,
            np.tile([-1.2, 1.0], 5),
            0.0,
            "n = 10 (any even n): f = 0 at (1, ..., 1).",
        ),
        MGHProblem(
            "extended_powell",
            12,
            12,
            _extended_powell,
            np.tile([3.0, -1.0, 0.0, 1.0], 3),
            0.0,
            "n = 12 (any multiple of 4): f = 0 at the origin, where the Jacobian is singular.",
        ),
        MGHProblem(
            "penalty_1",
            10,
            11,
            _penalty_1,
            np.arange(1.0, 11.0),
            7.08765e-5,
            "n = 10, m = n + 1: f = 7.08765e-5 (2.24997e-5 for n = 4).",
        ),
        MGHProblem(
            "penalty_2",
            10,
            20,
            _penalty_2,
            np.full(10, 0.5),
            2.93660e-4,
            "n = 10, m = 2n: f = 2.93660e-4 (9.37629e-6 for n = 4).",
        ),
        MGHProblem(
            "variably_dimensioned",
            10,
            12,
            _variably_dimensioned,
            1.0 - np.arange(1.0, 11.0) / 10.0,
            0.0,
            "n = 10, m = n + 2: f = 0 at (1, ..., 1).",
        ),
        MGHProblem(
            "trigonometric",
            10,
            10,
            _trigonometric,
            np.full(10, 0.1),
            0.0,
            "n = 10: f = 0; LM and hybrd from x0 end at (or stall near) the local minimum "
            "f = 2.79506e-5.",
        ),
        MGHProblem(
            "brown_almost_linear",
            10,
            10,
            _brown_almost_linear,
            np.full(10, 0.5),
            0.0,
            "n = 10: f = 0 at (a, ..., a, a^(1-n)) with n a^n - (n+1) a^(n-1) + 1 = 0 (a = 1 is "
            "one); also f = 1 at (0, ..., 0, n + 1).",
        ),
        MGHProblem(
            "discrete_boundary_value",
            10,
            10,
            _discrete_boundary_value,
            (lambda t: t * (t - 1.0))(np.arange(1.0, 11.0) / 11.0),
            0.0,
            "n = 10: f = 0.",
        ),
        MGHProblem(
            "discrete_integral_equation",
            10,
            10,
            _discrete_integral_equation,
            (lambda t: t * (t - 1.0))(np.arange(1.0, 11.0) / 11.0),
            0.0,
            "n = 10: f = 0 (the same root as discrete_boundary_value).",
        ),
        MGHProblem(
            "broyden_tridiagonal",
            10,
            10,
            _broyden_tridiagonal,
            np.full(10, -1.0),
            0.0,
            "n = 10: f = 0.",
        ),
        MGHProblem(
            "broyden_banded",
            10,
            10,
            _broyden_banded,
            np.full(10, -1.0),
            0.0,
            "n = 10 (ml = 5, mu = 1): f = 0.",
        ),
        MGHProblem(
            "linear_full_rank",
            5,
            10,
            _linear_full_rank(10),
            np.ones(5),
            5.0,
            "n = 5, m = 10: f = m - n at x = (-1, ..., -1).",
        ),
        MGHProblem(
            "linear_rank_1",
            5,
            10,
            _linear_rank_1(10),
            np.ones(5),
            10 * 9 / (2 * 21),
            "n = 5, m = 10: f = m(m-1)/(2(2m+1)) wherever sum_j j x_j = 3/(2m+1); the minimisers "
            "form a hyperplane.",
        ),
        MGHProblem(
            "linear_rank_1_zero",
            5,
            10,
            _linear_rank_1_zero(10),
            np.ones(5),
            (100 + 30 - 6) / (2 * 17),
            "n = 5, m = 10: f = (m^2+3m-6)/(2(2m-3)) wherever sum_{j=2}^{n-1} j x_j = 3/(2m-3); "
            "x1, xn do not enter.",
        ),
        MGHProblem(
            "chebyquad",
            8,
            8,
            _chebyquad(8),
            np.arange(1.0, 9.0) / 9.0,
            3.51687e-3,
            "n = m = 8: f = 3.51687e-3, no root (f = 0 for m = n = 1..7 and 9; 6.50395e-3 for "
            "n = m = 10).",
        ),
    ]
    for p in problems:
        p.x0.setflags(write=False)  # the table is shared: x0 is read-only
    return problems


PROBLEMS: list[MGHProblem] = _build()
BY_NAME: dict[str, MGHProblem] = {p.name: p for p in PROBLEMS}

# The MINPACK hybrd set, as systems F(x) = 0 with m == n. Those with fstar == 0 have an exact
# root; chebyquad (n = 8) has none. freudenstein_roth and trigonometric have roots but their
# standard starts lead to local minima of |F|^2 (48.9842 and 2.79506e-5).
_SQUARE = (
    "rosenbrock",
    "freudenstein_roth",
    "powell_badly_scaled",
    "helical_valley",
    "powell_singular",
    "extended_rosenbrock",
    "extended_powell",
    "trigonometric",
    "brown_almost_linear",
    "discrete_boundary_value",
    "discrete_integral_equation",
    "broyden_tridiagonal",
    "broyden_banded",
    "chebyquad",
)


def square_systems() -> list[MGHProblem]:
    """The problems with m == n that make sense as F(x) = 0 (MINPACK's hybrd test set).

    Wood, Watson and the variably dimensioned function are not square here (MINPACK's hybrd
    driver uses other, square variants of them) and are left out. Every problem returned has an
    exact root (fstar == 0) except chebyquad at n = 8 (fstar = 3.51687e-3). From the standard
    start, freudenstein_roth goes to the local minimum f = 48.9842 and trigonometric to
    f = 2.79506e-5, neither a root; the rest reach a root from x0.
    """
    return [BY_NAME[name] for name in _SQUARE]
