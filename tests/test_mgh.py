"""The Moré-Garbow-Hillstrom test set (tests/zoo/mgh.py): no false success, and the published minima.

The whole table, every solver from x0, 10 x0 and 100 x0 against scipy, is
``benchmarks/mgh.py`` (docs/mgh.md). Here: every problem from its standard start, and the runs
where BFGS and L-BFGS used to report SUCCESS far from any minimum (and where Newton stopped on
a saddle). A success is checked by
restarting scipy's BFGS (or ``least_squares``) from it at tight tolerances: it must not lower
``f`` by more than ``1e-6 |f| + 1e-12 f(x0)``.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from tests.zoo import mgh

NAMES = [p.name for p in mgh.PROBLEMS]

# The standard-start sweeps run these in the default run (CI), the others under `-m slow`: the
# problems with a result of their own (the *_ELSEWHERE tables below) and a spread of the classic
# hard cases (bad scaling, narrow valleys, 9 to 11 parameters). Every problem
# from 1, 10 and 100 x0 is benchmarks/mgh.py's table.
_CORE = {
    "rosenbrock",
    "powell_badly_scaled",
    "brown_badly_scaled",
    "helical_valley",
    "box_3d",
    "osborne_2",
    "watson_9",
    "chebyquad",
}


def _sweep(core_extra) -> list:
    keep = _CORE | set(core_extra)
    return [n if n in keep else pytest.param(n, marks=pytest.mark.slow) for n in NAMES]


def _at_fstar(p, f) -> bool:
    return abs(f - p.fstar) <= 1e-5 * p.fstar + 1e-12


def test_zoo_is_consistent():
    assert len(NAMES) == len(set(NAMES)) == 36
    for p in mgh.PROBLEMS:
        f0 = float(mgh.objective(p)(jnp.asarray(p.x0)))
        r = p.residual(jnp.asarray(p.x0))
        chex.assert_shape(r, (p.m,))
        assert np.isfinite(f0) and (p.fstar is None or p.fstar <= f0), p.name
    for p in mgh.square_systems():
        assert p.m == p.n, p.name


# Where the standard start does not lead BFGS to the published minimum (f*): another stationary
# point (the paper's local minima; Biggs EXP6's is a saddle, which a gradient method cannot tell)
# or a singular Hessian at f* = 0 (the gradient test stops at f ~ 1e-12).
_BFGS_ELSEWHERE = {
    "freudenstein_roth": 48.9842,
    "biggs_exp6": 5.65565e-3,
    "trigonometric": 2.79506e-5,
    "extended_powell": None,
    "meyer": "ROUNDING",
    "osborne_1": "ROUNDING",
}
# "ROUNDING": the run reaches f*, but whether its gradient test passes there is rounding's call,
# which differs between machines and compilers: the gradient cannot fall below about
# |H| eps |x| (x is known to eps |x|), and there that floor is near or above atol (1.5e-8).
# Meyer's Hessian at the minimum has condition 1e16 and the gradient stays at 0.05 to 1.3: BFGS
# ends in MAX_ITER on the development CPU, STAGNATED (x rounds to itself) with XLA's CPU
# optimisations off (XLA_FLAGS=--xla_backend_optimization_level=0), and not in MAX_ITER on an
# H100 (scipy's BFGS fails there too). Osborne 1's floor is ~4e-9: SUCCESS on the CPU (|g| 2e-9),
# STAGNATED at f* without the optimisations (|g| 1.9e-8).
_ROUNDING_STATUSES = (mml.Status.SUCCESS, mml.Status.MAX_ITER, mml.Status.STAGNATED)


@pytest.mark.parametrize("name", _sweep(_BFGS_ELSEWHERE))
def test_bfgs_from_the_standard_start(name):
    """``bfgs`` from x0 reaches the published minimum, or the point said above; every SUCCESS is
    a minimum that a tight scipy restart cannot improve."""
    p = mgh.BY_NAME[name]
    r = mml.bfgs(mgh.objective(p), jnp.asarray(p.x0), max_iter=5000)
    f = float(r.value)
    expect = _BFGS_ELSEWHERE.get(name, p.fstar)
    if expect == "ROUNDING":
        assert mml.Status(int(r.status)) in _ROUNDING_STATUSES, (name, r.status)
        assert _at_fstar(p, f), (name, f, p.fstar)
        return
    assert bool(r.success), (name, mml.Status(int(r.status)).name)
    assert not mgh.improvable(p, np.asarray(r.x), f), (name, f)
    if expect is None:
        assert f <= 1e-10, (name, f)
    else:
        assert abs(f - expect) <= 1e-5 * expect + 1e-12, (name, f, expect)


# (problem, start factor): runs where bfgs and lbfgs stopped on their step-and-value (Cauchy)
# test far from the minimum, the scaled gradient large: SUCCESS at f = 1.1e5 on Meyer (f* = 87.9).
_CAUCHY_TRAPS = [
    ("meyer", 1.0),
    ("jennrich_sampson", 10.0),
    ("beale", 100.0),
    ("penalty_1", 100.0),
    ("chebyquad", 10.0),
    ("broyden_banded", 100.0),
]


@pytest.mark.parametrize("solver", ["bfgs", "lbfgs"])
@pytest.mark.parametrize(("name", "factor"), _CAUCHY_TRAPS)
def test_quasi_newton_no_success_far_from_the_minimum(solver, name, factor):
    p = mgh.BY_NAME[name]
    r = getattr(mml, solver)(mgh.objective(p), jnp.asarray(mgh.start(p, factor)), max_iter=5000)
    f = float(r.value)
    if bool(r.success):
        assert _at_fstar(p, f), (solver, name, factor, f, p.fstar)
    else:
        # Meyer's minimum is where rounding may keep the gradient above atol (_BFGS_ELSEWHERE);
        # everywhere else the published minimum is reached, with SUCCESS.
        assert name == "meyer", (solver, name, factor, r.status)
        assert mml.Status(int(r.status)) in _ROUNDING_STATUSES and _at_fstar(p, f), (solver, f)


@pytest.mark.parametrize("name", ["wood", "gulf", "watson_6"])
def test_bfgs_float32_no_early_cauchy_stop(name):
    """float32 from x0: BFGS's step-and-value test used to pass on short model steps with the
    scaled gradient still large (Wood at f = 6.3e-4, Gulf 4.5e-3, Watson n = 6 at 4.3x f*, all
    SUCCESS); with the guard each reaches f* to float32's resolution, or stops by the absolute
    gradient test, max|g| <= atol (float32's default 3.45e-4): from x0 and from x0 moved by an ulp
    or two (the roundings of another machine: on an H200 the run from x0 itself), Gulf's f* = 0
    is passed that way at f up to 1.5e-5 in 5 of 40 runs (|g| = 2.9e-4), as designed; a smaller
    atol (scipy's 1e-5) reaches f* in all 40."""
    p = mgh.BY_NAME[name]
    x0 = np.asarray(p.x0, np.float32)
    ulp = np.float32(2.0**-23)
    atol = float(np.sqrt(np.finfo(np.float32).eps))
    for start in (x0, x0 * (1 + ulp), x0 * (1 - 2 * ulp)):
        r = mml.bfgs(mgh.objective(p), jnp.asarray(start, jnp.float32), max_iter=5000)
        assert r.x.dtype == jnp.float32 and bool(r.success)
        f = float(mgh.objective(p)(jnp.asarray(r.x, jnp.float64)))
        at_fstar = f <= p.fstar * (1 + 1e-3) + 1e-8
        assert at_fstar or float(r.grad_norm) <= atol, (name, start, f, p.fstar, r.grad_norm)


@pytest.mark.parametrize("solver", ["bfgs", "lbfgs"])
def test_quasi_newton_float32_small_minimum_is_not_passed_early(solver):
    """float32 from x0: with Dennis & Schnabel's floor of 1 on |f| in the scaled gradient, the
    guard passed on Bard's problem (f* = 8.2e-3) at f = 9.98e-3, |g| = 2.4e-3 (SUCCESS)."""
    p = mgh.BY_NAME["bard"]
    r = getattr(mml, solver)(mgh.objective(p), jnp.asarray(p.x0, jnp.float32), max_iter=5000)
    assert r.x.dtype == jnp.float32 and bool(r.success)
    f = float(mgh.objective(p)(jnp.asarray(r.x, jnp.float64)))
    assert f <= p.fstar * (1 + 1e-3), (solver, f, p.fstar)


def test_newton_leaves_the_biggs_saddle():
    """From 100 x0 the dense Newton method reached the point MGH list as a local minimum of
    Biggs EXP6 (f = 5.65565e-3), a saddle (a Hessian eigenvalue of -9.8e-3), and reported
    SUCCESS there by the gradient test; it now steps off it along the negative curvature."""
    p = mgh.BY_NAME["biggs_exp6"]
    r = mml.newton_minimise(mgh.objective(p), jnp.asarray(mgh.start(p, 100.0)), max_iter=5000)
    assert bool(r.success)
    assert float(r.value) < 1e-10  # the global minimum, f* = 0
    w = np.linalg.eigvalsh(np.asarray(jax.hessian(mgh.objective(p))(r.x)))
    assert w.min() > -1e-8 * w.max()


# Where the standard start does not lead Levenberg-Marquardt to f*: the paper's local minima
# (scipy's "lm" stops there too), and the zero-residual problems whose Jacobian is singular at the
# solution: near x* = 0 the columns of J differ by 1e9, the normal equations that the step
# solves have condition 1e18, past float64's, and the fit crawls (MAX_ITER with the cost at
# 1e-39; MINPACK's QR of J does not square the condition). Brown-Dennis has large residuals (f* = 85822), where
# Gauss-Newton converges linearly: the fit reaches f* and stops when the reduction left is below
# what the cost resolves (it ended PRECISION_LIMIT or SUCCESS by rounding before: 20 iterations
# of growing damping at that floor). Trigonometric's residuals cancel inside the model, leaving
# the cost noisy at thousands of roundings: its fit stopped at once or after 130 iterations at one
# point (PRECISION_LIMIT) by rounding; the cost's noise is now measured and the fit stops.
_LM_ELSEWHERE = {
    "freudenstein_roth": 48.9842,
    "trigonometric": 2.79506e-5,
    "powell_singular": "MAX_ITER",
    "extended_powell": "MAX_ITER",
}


def test_curve_fit_stops_where_the_cost_is_noise():
    """Trigonometric's residuals cancel inside the model (n - sum cos x_j, 1e-3 from terms near
    10): its cost is noisy at thousands of roundings. From x0 moved by 1e-15, 3 fits of 4 spent
    130-190 iterations at one point, the damping cycling, and ended PRECISION_LIMIT; the noise,
    now measured on steps predicted to change the cost by less than a rounding, stops them."""
    p = mgh.BY_NAME["trigonometric"]
    for shift in (1e-15, -1e-15, 3e-15):
        fit = mml.curve_fit(
            lambda x, q: p.residual(q),
            jnp.arange(p.m, dtype=float),
            jnp.zeros(p.m),
            jnp.asarray(p.x0) * (1 + shift),
            max_iter=1000,
        )
        assert bool(fit.success) and int(fit.n_iter) < 60, (shift, fit.status, fit.n_iter)
        assert abs(float(fit.chi2) - 2.79506e-5) <= 1e-5 * 2.79506e-5


@pytest.mark.parametrize("name", _sweep(_LM_ELSEWHERE))
def test_curve_fit_from_the_standard_start(name):
    """Least squares by ``curve_fit`` (``model(x, p) = r(p)``, ``y = 0``) from x0: the
    published minimum, or the point said above; every SUCCESS is a minimum."""
    p = mgh.BY_NAME[name]
    fit = mml.curve_fit(
        lambda x, q: p.residual(q),
        jnp.arange(p.m, dtype=float),
        jnp.zeros(p.m),
        jnp.asarray(p.x0),
        max_iter=1000,
    )
    f = float(fit.chi2)
    expect = _LM_ELSEWHERE.get(name, p.fstar)
    if expect == "MAX_ITER":
        assert int(fit.status) == int(mml.Status.MAX_ITER) and f < 1e-30, (name, f)
        return
    # (square problems have dof = 0: COVARIANCE_UNDEFINED, with success True)
    assert bool(fit.success), (name, mml.Status(int(fit.status)).name)
    assert not mgh.improvable(p, np.asarray(fit.params), f), (name, f)
    assert abs(f - expect) <= 1e-5 * expect + 1e-12, (name, f, expect)


def test_curve_fit_float32_no_early_stop_while_the_gradient_stays():
    """float32 Osborne 1 from 100 x0: Levenberg-Marquardt's early stop (the next step predicted
    to pass the step test from how the last two shrank) fired at f = 0.996 (f* = 5.46e-5) on
    steps and cost reductions both shrinking 4-fold, a gradient that does not vanish, and
    reported SUCCESS. It now also asks the reductions to shrink as near a minimum; the fit goes
    on to where float32 stops on Osborne 1 from any start (about 1.5 f*, as from 10 x0)."""
    p = mgh.BY_NAME["osborne_1"]
    fit = mml.curve_fit(
        lambda x, q: p.residual(q),
        jnp.arange(p.m, dtype=jnp.float32),
        jnp.zeros(p.m, jnp.float32),
        jnp.asarray(mgh.start(p, 100.0), jnp.float32),
        max_iter=1000,
    )
    assert fit.params.dtype == jnp.float32
    f = float(mgh.objective(p)(jnp.asarray(fit.params, jnp.float64)))
    assert not bool(fit.success) or f <= 2.0 * p.fstar, (f, mml.Status(int(fit.status)).name)


def test_curve_fit_early_stop_at_a_minimum_with_noisy_reductions():
    """Trigonometric from 10 x0 converges to a local minimum (f = 4.2186e-5) whose last cost
    reductions are rounding noise of about 1000 eps (residuals from cancelling sums of cosines):
    their ratios say nothing, and the early stop must not wait for them to shrink as near a
    minimum (a first version of that test ended PRECISION_LIMIT here)."""
    p = mgh.BY_NAME["trigonometric"]
    fit = mml.curve_fit(
        lambda x, q: p.residual(q),
        jnp.arange(p.m, dtype=float),
        jnp.zeros(p.m),
        jnp.asarray(mgh.start(p, 10.0)),
        max_iter=1000,
    )
    assert bool(fit.success), mml.Status(int(fit.status)).name
    assert abs(float(fit.chi2) - 4.2186339e-5) <= 1e-12
    assert not mgh.improvable(p, np.asarray(fit.params), float(fit.chi2))


_SQUARE_CORE = _CORE | {"powell_singular", "trigonometric", "broyden_banded"}


@pytest.mark.parametrize(
    "p",
    [
        p if p.name in _SQUARE_CORE else pytest.param(p, marks=pytest.mark.slow)
        for p in mgh.square_systems()
    ],
    ids=lambda p: p.name,
)
def test_newton_raphson_on_the_square_systems(p):
    """From x0 every square system with a root is solved; Freudenstein-Roth (whose start leads
    to a local minimum of |F|) and Chebyquad n = 8 (no root) end LINESEARCH_FAILED, at the
    merit's local minimum. (scipy's hybr fails on 5 of the 14, solving none that we do not.)"""
    r = mml.newton_raphson(p.residual, jnp.asarray(p.x0), max_iter=100)
    res = float(jnp.sum(r.fun**2))
    if p.name in ("freudenstein_roth", "chebyquad"):
        assert int(r.status) == int(mml.Status.LINESEARCH_FAILED), (p.name, r.status)
        return
    assert bool(r.success), (p.name, mml.Status(int(r.status)).name)
    assert res <= 1e-20 * (1.0 + float(mgh.objective(p)(jnp.asarray(p.x0)))), (p.name, res)
