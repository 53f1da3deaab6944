"""Objectives unbounded below: ``Status.UNBOUNDED`` at ``objective_limit``, for every minimiser.

Without the limit, such a run ended with whatever stopped the walk (seen: BFGS on x^3 + y^2
STAGNATED at x ~ 1e66, on -exp(x) + y^2 LINESEARCH_FAILED at f = -1e308, gradient descent on a
linear f PRECISION_LIMIT at x ~ 1e308), each with advice that did not fit.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_mml as mml
from jaxopt_mml._status import Status

OPTAX_LBFGS = optax.lbfgs()
SOLVERS = {
    "bfgs": mml.bfgs,
    "lbfgs": mml.lbfgs,
    "newton": mml.newton_minimise,
    "gd": mml.gradient_descent,
    "optax_lbfgs": lambda f, x0, **kw: mml.optax_minimise(f, x0, OPTAX_LBFGS, **kw),
}


def cubic(u):
    """A local minimum at (1, 0) (f = -2); unbounded below as u[0] -> -inf."""
    return u[0] ** 3 - 3.0 * u[0] + u[1] ** 2


def minus_exp(u):
    return -jnp.exp(u[0]) + u[1] ** 2


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_unbounded_below_is_named_and_the_local_minimum_is_not(name, dtype):
    # (gradient descent from (2, 0.5) jumps past the minimum to x = -16, a fair Armijo step)
    starts = jnp.array([[-2.0, 0.5], [1.2, 0.2]], dtype)
    # optax's L-BFGS jumps to f = -1.4e17 and then, its line search failing, creeps back up
    # (f -1.41488e17, -1.41486e17, ...) for max_iter steps: it never reaches -1e20
    limit = -1e10 if name == "optax_lbfgs" else -1e20
    res = jax.vmap(lambda x0: SOLVERS[name](cubic, x0, objective_limit=limit))(starts)
    codes = [Status(int(s)) for s in res.status]
    assert codes[0] == Status.UNBOUNDED, codes
    assert float(res.value[0]) < limit and np.all(np.isfinite(np.asarray(res.x[0])))
    # (gradient descent ends there at float64's resolution: PRECISION_LIMIT)
    assert codes[1] in (Status.SUCCESS, Status.PRECISION_LIMIT), codes
    np.testing.assert_allclose(res.x[1], [1.0, 0.0], atol=1e-3)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_grad_norm_belongs_to_the_returned_point(name):
    # Newton's grad_norm was the previous iterate's (half the true value) after UNBOUNDED.
    res = SOLVERS[name](lambda x: -jnp.sum(x**2), jnp.array([0.1, 0.2]))
    # (optax's L-BFGS creeps for max_iter steps, as above)
    assert Status(int(res.status)) == (
        Status.MAX_ITER if name == "optax_lbfgs" else Status.UNBOUNDED
    )
    np.testing.assert_allclose(res.grad_norm, jnp.max(jnp.abs(2 * res.x)), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_overflow_to_minus_inf_is_unbounded_not_nonfinite(name):
    res = SOLVERS[name](minus_exp, jnp.array([0.5, 0.5]))
    assert Status(int(res.status)) == Status.UNBOUNDED, Status(int(res.status))
    assert not bool(res.success)
    assert np.all(np.isfinite(np.asarray(res.x)))


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_limit_none_switches_the_test_off(name):
    res = SOLVERS[name](minus_exp, jnp.array([0.5, 0.5]), objective_limit=None, max_iter=50)
    assert Status(int(res.status)) not in (Status.UNBOUNDED, Status.SUCCESS)


def test_a_chosen_limit_stops_there_and_is_traced():
    def run(limit):  # short fixed steps: f falls through -10 well before -1e20
        x0 = jnp.array([-2.0, 0.5])
        return mml.gradient_descent(cubic, x0, step_size=1e-2, objective_limit=limit)

    first, default = run(-10.0), run(-1e20)
    assert Status(int(first.status)) == Status.UNBOUNDED == Status(int(default.status))
    assert -1e20 < float(first.value) < -10.0 and float(default.value) < -1e20
    assert 0 < int(first.n_iter) < int(default.n_iter)
    # a start below the limit stops at once
    at_start = mml.bfgs(cubic, jnp.array([-5.0, 0.0]), objective_limit=-10.0)
    assert int(at_start.n_iter) == 0 and Status(int(at_start.status)) == Status.UNBOUNDED

    traced = chex.assert_max_traces(lambda limit: run(limit).status, n=1)
    jitted = jax.jit(traced)
    assert int(jitted(-10.0)) == int(jitted(-1e6)) == int(Status.UNBOUNDED)
    # a limit below every value reached: the walk is not cut short by it
    assert int(jitted(-jnp.inf)) != int(Status.UNBOUNDED)


def test_a_minimum_below_the_default_limit_needs_a_lower_one():
    def deep(u):
        return jnp.sum((u - 1.0) ** 2) - 1e25

    assert Status(int(mml.bfgs(deep, jnp.zeros(2)).status)) == Status.UNBOUNDED
    res = mml.bfgs(deep, jnp.zeros(2), objective_limit=None)
    assert bool(res.success)


def test_the_message_says_what_to_do():
    message = mml.status_message(Status.UNBOUNDED)
    assert "objective_limit" in message and "sign" in message


@pytest.mark.parametrize(
    "limit, error",
    [("low", TypeError), (float("nan"), ValueError), (np.zeros(2), ValueError), (True, ValueError)],
)
def test_bad_limit(limit, error):
    with pytest.raises(error, match="objective_limit"):
        mml.bfgs(cubic, jnp.array([2.0, 0.5]), objective_limit=limit)


@pytest.mark.parametrize("name", ["bfgs", "newton"])
def test_a_limit_written_as_a_large_python_int_is_accepted(name):
    # -10**20 (the default -1e20 as an integer) is beyond int64: a TypeError "got dtype object"
    res = SOLVERS[name](cubic, jnp.array([-2.0, 0.5]), objective_limit=-(10**20))
    assert Status(int(res.status)) == Status.UNBOUNDED and float(res.value) < -1e20
    res = SOLVERS[name](cubic, jnp.array([-2.0, 0.5]), objective_limit=-(10**400))
    assert Status(int(res.status)) != Status.UNBOUNDED  # -inf in float64: no limit


@pytest.mark.parametrize("name", ["bfgs", "lbfgs", "newton", "newton_cg"])
def test_a_linear_objective_reaches_the_limit(name):
    # No curvature ever: BFGS restarted steepest descent at step ~1 each iteration, its search
    # capped at alpha = 1e10, and walked down by 1e10 |g|^2 per iteration: MAX_ITER at f = -5e13.
    # Newton's lifted zero Hessian made steps |g| / sqrt(eps) (CG's |g| / eps): MAX_ITER at
    # f = -6.7e10 (-4.5e18) after 200 iterations.
    solver = {"newton_cg": lambda *a, **k: mml.newton_minimise(*a, linear_solver="cg", **k)}.get(
        name, SOLVERS.get(name)
    )
    c = jnp.array([1.0, -2.0])
    res = solver(lambda x: jnp.dot(c, x), jnp.array([0.3, 0.4]), max_iter=40)
    assert Status(int(res.status)) == Status.UNBOUNDED, Status(int(res.status))
    assert float(res.value) < -1e20 and np.all(np.isfinite(np.asarray(res.x)))
