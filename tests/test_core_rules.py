"""The solver core's rules, one at a time: the driver's non-finite and history rules, the line
searches' acceptance and budgets, and the Cauchy test and tolerances at zero. Found by mutation
testing: each test fails when its rule is changed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from jaxopt_mml._driver import iterate, make_progress
from jaxopt_mml._linesearch import backtracking, zoom_wolfe

# ----------------------------------------------------------------------------------------------
# The driver


def test_driver_nonfinite_step_below_the_limit_is_nonfinite_not_unbounded():
    """A step to x = NaN with f = -inf is a non-finite step (rejected, last finite x kept),
    not an iterate below the objective limit: UNBOUNDED needs a finite x."""

    def step(x):
        new = jnp.where(x > 1.5, jnp.nan, x + 1.0)
        f = jnp.where(x > 1.5, -jnp.inf, -new)
        return new, make_progress(new, f, dx=new - x, df=jnp.ones_like(x))

    x0 = jnp.asarray(0.0)
    out = iterate(step, x0, make_progress(x0, -x0), max_iter=20, rtol=0.0, atol=0.0, f_limit=-10.0)
    assert mml.Status(int(out.status)) == mml.Status.NONFINITE
    assert float(out.state) == 2.0 and float(out.progress.x) == 2.0
    assert int(out.n_iter) == 3


# ----------------------------------------------------------------------------------------------
# Backtracking


def test_backtracking_evaluates_phi_at_most_max_steps_times():
    """A search that never finds a decrease stops after max_steps evaluations (counted on the
    host), n_eval says so, and the step returned is the last one tried."""
    calls = []

    def phi(a):
        jax.debug.callback(lambda: calls.append(1))
        return 1.0 + a  # increases along the line: never acceptable

    res = backtracking(phi, jnp.asarray(1.0), jnp.asarray(-1.0), max_steps=5)
    jax.effects_barrier()
    assert not bool(res.success)
    assert int(res.n_eval) == 5 == len(calls)
    assert float(res.step_size) == 0.5**4


def test_backtracking_rejects_a_nonfinite_value():
    """-inf satisfies the Armijo inequality but is no value: the step shrinks past it."""

    def phi(a):
        return jnp.where(a > 0.75, -jnp.inf, (1.0 - 3.0 * a) ** 2)

    res = backtracking(phi, jnp.asarray(1.0), jnp.asarray(-6.0))
    assert bool(res.success)
    assert float(res.step_size) == 0.5
    assert float(res.value) == 0.25


# ----------------------------------------------------------------------------------------------
# Strong Wolfe search


def test_wolfe_search_on_a_merit_flat_to_rounding_accepts_by_the_slope():
    """phi = 1 + 1e-20 (a - 1)^2 is 1.0 in float64 everywhere near a = 1: the values cannot show
    a decrease, and the approximate Wolfe condition (the slope) accepts the exact minimiser."""

    def phi(a):
        return 1.0 + 1e-20 * (a - 1.0) ** 2, 2e-20 * (a - 1.0), None

    f0, d0, _ = phi(jnp.asarray(0.0))
    res = zoom_wolfe(phi, f0, d0, None)
    assert bool(res.success) and bool(res.wolfe)
    assert float(res.step_size) == 1.0


def test_wolfe_search_without_any_decrease_fails():
    """A slope that claims descent (wrong gradient) while phi rises everywhere: no usable step."""

    def phi(a):
        return a + a**2, 1.0 + 2.0 * a, None

    res = zoom_wolfe(phi, jnp.asarray(0.0), jnp.asarray(-1.0), None)
    assert not bool(res.success) and not bool(res.wolfe)
    assert float(res.step_size) == 0.0


def test_wolfe_search_zooms_when_a_trial_is_higher_than_the_last():
    """phi = -a exp(-a) (minimum at a = 1), first trial 0.5, then 2: the value at 2 has sufficient
    decrease and a small slope, but is higher than at 0.5, so [0.5, 2] holds a lower Wolfe point
    (Nocedal & Wright, Alg. 3.5) and the search must zoom to it rather than accept 2."""

    def phi(a):
        return -a * jnp.exp(-a), (a - 1.0) * jnp.exp(-a), None

    f0, d0, _ = phi(jnp.asarray(0.0))
    res = zoom_wolfe(phi, f0, d0, None, init_step=0.5, c2=0.3)
    assert bool(res.success) and bool(res.wolfe)
    assert float(res.value) <= float(phi(0.5)[0])
    assert abs(float(res.slope)) <= 0.3 * abs(float(d0))
    assert 0.5 < float(res.step_size) < 2.0


def test_wolfe_search_stops_when_the_bracket_collapses_to_rounding():
    """A kink at a = 1 with slopes -1 and +1 has no point meeting the curvature condition: the
    zoom closes in on the kink and stops once the bracket is a few ulps wide (about 52
    halvings of [0.3, 1.2]), not after max_steps evaluations."""

    def phi(a):
        return jnp.where(a < 1.0, -a, a - 2.0), jnp.where(a < 1.0, -1.0, 1.0), None

    res = zoom_wolfe(phi, jnp.asarray(0.0), jnp.asarray(-1.0), None, init_step=0.3, max_steps=200)
    assert bool(res.success) and not bool(res.wolfe)
    np.testing.assert_allclose(res.step_size, 1.0, rtol=1e-12)
    assert int(res.n_eval) <= 60


# ----------------------------------------------------------------------------------------------
# The Cauchy test with zero tolerances


def test_cauchy_test_with_zero_tolerances_accepts_a_zero_step():
    """|dx| <= atol + rtol |x| and |df| <= ... hold with equality for a step of exactly 0."""

    def step(x):
        new = x / 2
        return new, make_progress(new, jnp.abs(new), dx=new - x, df=jnp.abs(new) - jnp.abs(x))

    x0 = jnp.asarray(0.0)
    out = iterate(step, x0, make_progress(x0, jnp.abs(x0)), max_iter=10, rtol=0.0, atol=0.0)
    assert mml.Status(int(out.status)) == mml.Status.SUCCESS
    assert int(out.n_iter) == 1


def test_negative_tolerances_are_refused_by_name():
    """A negative rtol or atol can never be met: the solvers refuse it, naming it."""
    f = lambda x: jnp.sum((x - 1.0) ** 2)
    for kw in ({"rtol": -1e-6}, {"atol": -1e-6}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=name):
            mml.gradient_descent(f, jnp.zeros(2), **kw)
        with pytest.raises(ValueError, match=name):
            mml.curve_fit(lambda x, a: a * x, np.arange(3.0), np.arange(3.0), np.ones(1), **kw)
