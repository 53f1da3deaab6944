"""The root finders' rules, one at a time: Newton's step acceptance, statuses and evaluation
counts for systems and scalars, and the bracketing solvers' steps and stops. Found by mutation
testing: each test fails when its rule is changed."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxopt_mml as mml

# ----------------------------------------------------------------------------------------------
# System Newton


def test_system_newton_counts_every_evaluation_of_f():
    """n_fev is the number of times F actually ran (counted on the host)."""
    calls = []

    def fun(x):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.array([x[0] ** 2 - 2.0, x[1] ** 3 - 3.0])

    res = mml.newton_raphson(fun, jnp.array([1.0, 1.0]))
    jax.effects_barrier()
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    np.testing.assert_allclose(res.x, [np.sqrt(2.0), 3.0 ** (1 / 3)], rtol=1e-14)
    assert int(res.n_fev) == len(calls)


def test_system_newton_in_the_traps_fails_where_the_line_search_fails():
    """As systems of one equation, the scalar traps: x^2 + 1 (no real root) and x^3 - 2x + 2
    from 0 (a local minimum of |f| at sqrt(2/3)) end in a line-search failure at the minimum of
    |f|, where x stays (no step that raises |f| is taken), not at max_iter or elsewhere."""
    res = mml.newton_raphson(lambda x: x**2 + 1.0, jnp.full(1, 0.5))
    assert mml.Status(int(res.status)) == mml.Status.LINESEARCH_FAILED
    assert int(res.n_iter) < 20 and abs(float(res.x[0])) < 1e-6

    res = mml.newton_raphson(lambda x: x**3 - 2 * x + 2, jnp.zeros(1))
    assert mml.Status(int(res.status)) in (
        mml.Status.LINESEARCH_FAILED,
        mml.Status.STAGNATED,
    )
    np.testing.assert_allclose(res.x, [np.sqrt(2 / 3)], rtol=1e-3)


def test_system_newton_below_rounding_reports_precision_limit():
    """rtol = atol = 0 cannot be met by a Newton step at an irrational root: the iteration
    reaches the root to rounding and says that the dtype was the limit."""
    res = mml.newton_raphson(
        lambda x: jnp.array([x[0] ** 2 - 2.0, x[1] ** 3 - 3.0]),
        jnp.array([1.0, 1.0]),
        rtol=0.0,
        atol=0.0,
    )
    assert mml.Status(int(res.status)) == mml.Status.PRECISION_LIMIT
    np.testing.assert_allclose(res.x, [np.sqrt(2.0), 3.0 ** (1 / 3)], rtol=1e-15)


def test_system_newton_stopped_by_max_iter_returns_its_last_iterate():
    """One Newton step from 1 on x^2 = 2, x^2 = 3 lands on 3/2 and 2; max_iter=1 returns that
    iterate (no further, untested step), with F there."""
    res = mml.newton_raphson(
        lambda x: jnp.array([x[0] ** 2 - 2.0, x[1] ** 2 - 3.0]), jnp.array([1.0, 1.0]), max_iter=1
    )
    assert mml.Status(int(res.status)) == mml.Status.MAX_ITER
    np.testing.assert_array_equal(res.x, [1.5, 2.0])
    np.testing.assert_array_equal(res.fun, [0.25, 1.0])


def test_system_newton_final_step_into_a_nonfinite_region_is_not_taken():
    """F = x - 1 is NaN from 1 - 1e-13 on: the line search halves the distance to 1 at each
    step and converges; the final Newton step (to 1) would make F NaN and is not taken."""

    def fun(x):
        return x - 1.0 + jnp.where(x > 1.0 - 1e-13, jnp.nan, 0.0)

    res = mml.newton_raphson(fun, jnp.zeros(1))
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert float(res.x[0]) < 1.0 - 1e-13
    assert np.all(np.isfinite(np.asarray(res.fun)))
    np.testing.assert_allclose(res.fun, res.x - 1.0, rtol=0, atol=0)


def test_system_direction_is_always_a_descent_direction_of_the_merit():
    """J = [[1, 1/3], [7, 7 * (1/3)]] is singular but for rounding: the LU solve gives a finite
    Newton step of size 4e16 along which |F|^2 rises (checked in exact rational arithmetic).
    The direction used must then be steepest descent, whose slope J^T F . d is negative."""
    from fractions import Fraction

    from jaxopt_mml._roots_newton import _system_direction

    jac = np.array([[1.0, 1.0 / 3.0], [7.0, 7.0 * (1.0 / 3.0)]])
    fx = np.array([-2.0, 1.0])
    d, _, singular, newton = _system_direction(jnp.asarray(fx), jnp.asarray(jac), jnp.zeros(2))
    assert not bool(singular) and not bool(newton)
    jq = [[Fraction(float(v)) for v in row] for row in jac]
    fq = [Fraction(float(v)) for v in fx]
    dq = [Fraction(float(v)) for v in np.asarray(d)]
    grad = [sum(jq[i][j] * fq[i] for i in range(2)) for j in range(2)]  # J^T F
    assert grad[0] * dq[0] + grad[1] * dq[1] < 0
    # and the plain Newton step here is indeed no descent direction
    raw = np.asarray(jnp.linalg.solve(jnp.asarray(jac), -jnp.asarray(fx)))
    rq = [Fraction(float(v)) for v in raw]
    assert grad[0] * rq[0] + grad[1] * rq[1] >= 0


# ----------------------------------------------------------------------------------------------
# Scalar Newton


def test_scalar_newton_final_step_into_nan_is_not_taken():
    """f = x - 1 is NaN from x = 1 on: Newton creeps up to the root from below and converges at
    rounding level; the final step lands on 1, where f is NaN, and must not be taken."""

    def f(x):
        return x - 1.0 + jnp.where(x >= 1.0, jnp.nan, 0.0)

    res = mml.newton_raphson(f, 0.0, max_iter=1000)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert float(res.x) < 1.0 and np.isfinite(float(res.fun))
    assert float(res.fun) == float(res.x) - 1.0
    np.testing.assert_allclose(res.x, 1.0, rtol=1e-12)


def test_scalar_newton_tries_a_step_exactly_at_the_floor():
    """arctan from 1.5: the full Newton step lands at -1.69 (|f| 0.98 -> 1.04, under twice as
    much), so interpolation cuts the step size to 1/4, which is the floor 2**-2 of
    linesearch_steps=2 (not below it) and lowers |f| to 0.61: it is taken, and Newton converges."""
    res = mml.newton_raphson(jnp.arctan, 1.5, linesearch_steps=2)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert abs(float(res.x)) < 1e-12
    el = mml.newton_raphson(jnp.arctan, jnp.array([1.5]), linesearch_steps=2, elementwise=True)
    assert el.status.tolist() == [mml.Status.SUCCESS]
    # with the floor at 1/2 the cut step is below it: the search fails at the start
    res = mml.newton_raphson(jnp.arctan, 1.5, linesearch_steps=1)
    assert mml.Status(int(res.status)) == mml.Status.LINESEARCH_FAILED
    assert float(res.x) == 1.5


def test_scalar_newton_below_rounding_reports_precision_limit():
    """rtol = atol = 0 at the irrational roots of x^2 - 2 and x^3 - 3: Newton reaches them to
    rounding, the next step no longer moves x, and the dtype is named as the limit (in the
    scalar and the per-element mode alike). Where f rounds to exactly 0 at the root found (on
    an H100, x^3 - 3 at fl(3^(1/3)): its fused multiply-add), that is success. (This module
    compiles with XLA's optimisations off, whose code evaluated f at the end to exactly 0 where
    the loop's evaluation had not: fun = 0 came back with PRECISION_LIMIT.)"""

    def limit_or_exact_zero(res):
        statuses = np.atleast_1d(res.status)
        exact = np.atleast_1d(res.fun) == 0.0
        return np.all(np.where(exact, statuses == mml.Status.SUCCESS, statuses == PRECISION_LIMIT))

    PRECISION_LIMIT = mml.Status.PRECISION_LIMIT
    for f, root in ((lambda x: x**2 - 2.0, np.sqrt(2.0)), (lambda x: x**3 - 3.0, 3.0 ** (1 / 3))):
        res = mml.newton_raphson(f, 1.0, rtol=0.0, atol=0.0)
        assert limit_or_exact_zero(res), res
        np.testing.assert_allclose(res.x, root, rtol=2e-16)
        el = mml.newton_raphson(f, jnp.array([1.0, 2.0]), rtol=0.0, atol=0.0, elementwise=True)
        assert limit_or_exact_zero(el), el
    # No float64 x squares to exactly 2 (with or without a fused multiply-add): the limit itself.
    res = mml.newton_raphson(lambda x: x**2 - 2.0, 1.0, rtol=0.0, atol=0.0)
    assert float(res.fun) != 0.0 and int(res.status) == PRECISION_LIMIT


# ----------------------------------------------------------------------------------------------
# Bracketing solvers


def test_bracketing_solvers_count_every_evaluation_of_f():
    """n_fev is the number of times f actually ran (counted on the host)."""
    for solver in (mml.bisection, mml.bracketed_newton):
        calls = []

        def f(x, calls=calls):
            jax.debug.callback(lambda: calls.append(1))
            return x**3 - 2.0

        res = solver(f, 0.0, 3.0)
        jax.effects_barrier()
        assert mml.Status(int(res.status)) == mml.Status.SUCCESS
        np.testing.assert_allclose(res.x, 2.0 ** (1 / 3), rtol=1e-11)
        assert int(res.n_fev) == len(calls), solver.__name__


def test_a_bracket_end_that_is_a_root_is_a_valid_bracket():
    """f(lower) * f(upper) <= 0 is a valid bracket: an end where f = 0 is the root."""
    for solver in (mml.bisection, mml.bracketed_newton):
        res = solver(lambda x: x - 1.0, 1.0, 2.0)
        assert mml.Status(int(res.status)) == mml.Status.SUCCESS
        assert float(res.x) == 1.0 and int(res.n_iter) == 0
        res = solver(lambda x: x - 1.0, 0.0, 1.0)
        assert mml.Status(int(res.status)) == mml.Status.SUCCESS and float(res.x) == 1.0


def test_bracketed_newton_never_steps_out_of_the_bracket():
    """f = (x - 1)(4.2 - x), NaN outside [0, 4]. From x0 = 3.5 the bracket is [0, 3.5] and the
    Newton step (+0.97, short enough to count as fast) leads out of it to 4.47: it must bisect
    instead, and find the root at 1."""

    def f(x):
        return (x - 1.0) * (4.2 - x) * jnp.where((x >= 0.0) & (x <= 4.0), 1.0, jnp.nan)

    res = mml.bracketed_newton(f, 0.0, 4.0, x0=3.5)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    np.testing.assert_allclose(res.x, 1.0, rtol=1e-12)


def test_bracketed_newton_bisects_where_newton_converges_slowly():
    """On x^9 Newton shrinks x by 8/9 per step (200 steps to 1e-11 from 0.5); rtsafe bisects
    when a step does not halve the last one, and converges within the default 100 steps."""
    res = mml.bracketed_newton(lambda x: x**9, -1.0, 2.0)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert abs(float(res.x)) < 1e-10
    assert int(res.n_iter) < 100


def test_bracketed_newton_final_step_stays_in_the_bracket():
    """For f = sign(x - 1) |x - 1|^(1/5) the Newton step overshoots the root by 4 times the
    distance: taking it after convergence would leave the bracket and the tolerance."""
    lo = jnp.array([-1.0, 0.0, 0.3, 0.9, -2.0, 0.5, 0.7, -0.3])
    hi = jnp.array([1.4, 3.0, 1.9, 5.0, 1.3, 1.1, 2.2, 1.21])
    res = mml.bracketed_newton(
        lambda x: jnp.sign(x - 1.0) * jnp.abs(x - 1.0) ** 0.2, lo, hi, atol=1e-3, rtol=0.0
    )
    assert res.status.tolist() == [mml.Status.SUCCESS] * 8
    assert np.all(np.abs(np.asarray(res.x) - 1.0) <= 1e-3)


def test_bisection_to_adjacent_floats_with_zero_tolerances():
    """rtol = atol = 0: bisection stops when the bracket is two adjacent floats (SUCCESS)."""
    res = mml.bisection(lambda x: x**2 - 2.0, 1.0, 2.0, rtol=0.0, atol=0.0)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert abs(float(res.x) - np.sqrt(2.0)) <= np.spacing(np.sqrt(2.0))
    assert int(res.n_iter) <= 60


def test_bracketed_newton_to_adjacent_floats_with_zero_tolerances():
    """rtol = atol = 0: Newton reaches the float nearest the root in 4-5 steps, where its step
    rounds to 0; it then bisected the rest of the bracket (54 steps for x**2 - 2 on [1, 2]).
    The float next to x is tried instead: the bracket is then two adjacent floats."""
    c = jnp.array([2.0, 3.0, 5.0])
    res = mml.bracketed_newton(lambda x, c: x**2 - c, 1.0, 3.0, args=(c,), rtol=0.0, atol=0.0)
    assert bool(jnp.all(res.success)) and int(jnp.max(res.n_iter)) <= 8
    root = np.sqrt(np.asarray(c))
    assert np.all(np.abs(np.asarray(res.x) - root) <= np.spacing(root))


def test_a_bracket_within_the_tolerance_returns_its_better_end():
    """A bracket already narrower than the tolerance needs no step: x is its end with the
    smaller |f|."""
    for lower, upper in ((1.0 - 1e-13, 1.0 + 3e-13), (1.0 - 3e-13, 1.0 + 1e-13)):
        res = mml.bisection(lambda x: x - 1.0, lower, upper)
        assert mml.Status(int(res.status)) == mml.Status.SUCCESS and int(res.n_iter) == 0
        better = lower if abs(lower - 1.0) < abs(upper - 1.0) else upper
        assert float(res.x) == better


def test_bracketed_newton_infinite_derivative_is_no_convergence():
    """cbrt(x) + 1 on [-4, 4] from 4: the first step bisects to 0, where f = 1 and f' = inf
    (a Newton step of 0 whatever f is): no estimate of the root, the search goes on to -1."""
    res = mml.bracketed_newton(lambda x: jnp.cbrt(x) + 1.0, -4.0, 4.0, x0=4.0)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    np.testing.assert_allclose(res.x, -1.0, rtol=1e-12)
    assert abs(float(res.fun)) < 1e-12


def test_newton_default_tolerance_is_eps_to_the_three_quarters():
    """At the double root of (x - 1)^2 Newton halves the error e each step (d = -e/2), so it
    stops with |d| <= atol + rtol |x|, and the final step halves e once more: with the default
    tolerances eps**0.75 (1.8e-12 in float64), |x - 1| <= 2 * 1.8e-12."""
    tol = float(jnp.finfo(jnp.float64).eps) ** 0.75
    res = mml.newton_raphson(lambda x: (x - 1.0) ** 2, 2.0)
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert abs(float(res.x) - 1.0) <= 2 * tol


def test_system_newton_started_at_a_root_with_a_singular_jacobian_succeeds():
    """F(x) = x^2 at x0 = 0: J is singular there, but F = 0 exactly: a root, no iteration."""
    res = mml.newton_raphson(lambda x: x**2, jnp.zeros(2))
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    assert int(res.n_iter) == 0


def test_bracketed_newton_clips_x0_into_the_bracket():
    """x0 outside [lower, upper] is clipped into it: f is never evaluated outside."""
    f = lambda x: (x - 1.0) * jnp.where((x >= 0.0) & (x <= 2.0), 1.0, jnp.nan)
    for x0 in (5.0, -3.0):
        res = mml.bracketed_newton(f, 0.0, 2.0, x0=x0)
        assert mml.Status(int(res.status)) == mml.Status.SUCCESS
        np.testing.assert_allclose(res.x, 1.0, rtol=1e-12)


def test_an_exact_zero_at_a_rounding_stop_is_success():
    """The result's rule, whatever code XLA generates: a stop at rounding (PRECISION_LIMIT,
    STAGNATED) with f exactly 0 at the returned x is a root; other stops, a nonzero f or a
    system with one nonzero equation keep their status."""
    from jaxopt_mml._roots_common import make_result

    S = mml.Status
    status = jnp.array([S.PRECISION_LIMIT, S.STAGNATED, S.PRECISION_LIMIT, S.MAX_ITER], jnp.int32)
    fun = jnp.array([0.0, -0.0, 1e-300, 0.0])
    one = jnp.ones(4, jnp.int32)
    res = make_result(jnp.ones(4), fun, status, one, one)
    assert res.status.tolist() == [S.SUCCESS, S.SUCCESS, S.PRECISION_LIMIT, S.MAX_ITER]
    assert res.success.tolist() == [True, True, False, False]
    system = make_result(jnp.ones(2), jnp.array([0.0, 1e-300]), status[0], one[0], one[0])
    assert int(system.status) == S.PRECISION_LIMIT
    system = make_result(jnp.ones(2), jnp.zeros(2), status[0], one[0], one[0])
    assert bool(system.success)
