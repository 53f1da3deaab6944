"""The strong-Wolfe (bracketing and zoom) line search used by BFGS and L-BFGS."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_mml._linesearch import zoom_wolfe


def _along(f, x, p):
    def phi(a):
        v, g = jax.value_and_grad(f)(x + a * p)
        return v, jnp.vdot(g, p), g

    return phi


def _rosen(x):
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@jax.jit
def _search(x, p, init_step):
    phi = _along(_rosen, x, p)
    f0, d0, g0 = phi(jnp.asarray(0.0))
    return zoom_wolfe(phi, f0, d0, g0, init_step=init_step), f0, d0


@pytest.mark.parametrize("init_step", [1e-4, 1e-2, 1.0, 50.0])
@pytest.mark.parametrize("start", [(-1.2, 1.0), (0.5, 0.9), (2.0, 2.0)])
def test_strong_wolfe_conditions_hold(start, init_step):
    """From tiny (bracketing must grow) to huge (zoom must shrink) first trials."""
    x = jnp.asarray(start)
    p = -jax.grad(_rosen)(x)
    res, f0, d0 = _search(x, p, init_step)
    a = float(res.step_size)
    assert bool(res.success) and bool(res.wolfe)
    assert a > 0
    assert float(res.value) <= float(f0) + 1e-4 * a * float(d0)
    assert abs(float(res.slope)) <= 0.9 * abs(float(d0)) + 1e-12
    # value, slope and aux are those at the accepted step
    np.testing.assert_allclose(res.value, _rosen(x + a * p), rtol=1e-12)
    np.testing.assert_allclose(res.aux, jax.grad(_rosen)(x + a * p), rtol=1e-10)


def test_not_a_descent_direction_fails():
    x = jnp.asarray([-1.2, 1.0])
    res, _, _ = _search(x, jax.grad(_rosen)(x), 1.0)  # uphill
    assert not bool(res.success)
    assert float(res.step_size) == 0.0 and int(res.n_eval) == 0


def test_nonfinite_trial_shrinks_the_step():
    """log(1 - a) is NaN past a = 1: the search must come back inside and still succeed."""

    def phi(a):
        v = -jnp.log1p(-a) - 2.0 * a  # minimum at a = 0.5
        return v, 1.0 / (1.0 - a) - 2.0, None

    res = zoom_wolfe(phi, jnp.asarray(0.0), jnp.asarray(-1.0), None, init_step=4.0)
    assert bool(res.success) and bool(res.wolfe)
    assert 0.0 < float(res.step_size) < 1.0
    assert np.isfinite(float(res.value))


def test_inactive_search_returns_at_once():
    def phi(a):
        return (a - 1.0) ** 2, 2.0 * (a - 1.0), None

    res = zoom_wolfe(phi, jnp.asarray(1.0), jnp.asarray(-2.0), None, active=False)
    assert not bool(res.success) and int(res.n_eval) == 0 and float(res.step_size) == 0.0
    res = zoom_wolfe(phi, jnp.asarray(1.0), jnp.asarray(-2.0), None)
    assert bool(res.wolfe) and int(res.n_eval) == 1  # the unit step is exact here
    np.testing.assert_allclose(res.step_size, 1.0)


def _parabola(centre):
    def phi(a):
        return (a - centre) ** 2, 2.0 * (a - centre), None

    return phi, jnp.asarray(centre**2), jnp.asarray(-2.0 * centre)


def test_bracketing_grows_the_step_fourfold():
    """A minimum 100 unit steps away (Wolfe points within 10 of it) is bracketed by 1, 4, 16, 64,
    256 and then found by one cubic step (exact on a parabola): six evaluations, where doubling
    would need nine."""
    phi, f0, d0 = _parabola(100.0)
    res = zoom_wolfe(phi, f0, d0, None, c2=0.1)
    assert bool(res.success) and bool(res.wolfe)
    assert int(res.n_eval) == 6
    np.testing.assert_allclose(res.step_size, 100.0, rtol=1e-12)


@pytest.mark.parametrize("max_steps", [1, 2, 3])
def test_evaluation_budget_reports_no_wolfe_point(max_steps):
    """Out of evaluations before the Wolfe conditions hold: the best decreasing step so far,
    success but not wolfe (what BFGS uses to decide on its model update)."""
    phi, f0, d0 = _parabola(100.0)
    res = zoom_wolfe(phi, f0, d0, None, c2=0.1, max_steps=max_steps)
    assert bool(res.success) and res.wolfe.dtype == jnp.bool_ and not bool(res.wolfe)
    assert int(res.n_eval) == max_steps
    np.testing.assert_allclose(res.step_size, 4.0 ** (max_steps - 1))
