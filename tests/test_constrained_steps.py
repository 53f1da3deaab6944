"""minimise_constrained: focused checks of single steps of the constrained solvers.

Each test pins one decision that the rest of the suite left free (found by mutation testing of
``_constrained_problem.py``, ``_constrained_kkt.py`` and ``_constrained_al.py``): the violation
of a lower bound in ``max_violation``; the augmented Lagrangian's result before it has
converged (the polish must not replace a distant point, and the multipliers are unscaled); and
the polish onto the active set (its sign test on upper bounds). Expectations are closed forms or
invariances of the method.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jaxopt_mml as mml


def _sq3(x):
    return jnp.sum((x - 3.0) ** 2)


def test_crossed_traced_bounds_report_the_violation_of_the_lower_bound():
    # lower = (0, 2) > upper = 1 in x_1: the box is empty, and the result, clipped into
    # [lower, upper] (x_1 = 1), violates its lower bound by 1; max_violation must say so.
    @jax.jit
    def solve(lower):
        return mml.minimise_constrained(_sq3, jnp.array([0.5, 0.5]), bounds=(lower, 1.0))

    res = solve(jnp.array([0.0, 2.0]))
    assert int(res.status) == mml.Status.INFEASIBLE
    np.testing.assert_allclose(res.x, [1.0, 1.0])
    np.testing.assert_allclose(res.max_violation, 1.0, rtol=1e-12)


def _sq2(x, k):
    return jnp.sum((x - 2.0) ** 2)


def _scaled_pair(x, k):
    return jnp.array([k * (1.0 - x[0]), 1.0 - x[1]])


def test_multipliers_of_a_scaled_inequality_are_in_its_units_before_convergence():
    # k (1 - x_0) >= 0 with k = 1e3 or 1e4: both are scaled to 100 (1 - x_0) at the start, so the
    # augmented Lagrangian runs the same iterations. Stopped early, about 1 away from the
    # solution (1, 1), the result is MAX_ITER: the Newton-KKT polish reaches the solution, but
    # a polished point that far from the iterate is not kept. The multiplier of the constraint
    # as given must scale as 1 / k there as well.
    def solve(k):  # k in args: one compilation for both
        return mml.minimise_constrained(
            _sq2,
            jnp.array([3.0, 3.0]),
            args=(k,),
            ineq=_scaled_pair,
            method="augmented-lagrangian",
            max_iter=2,
            max_inner_iter=1,
        )

    small, large = solve(1e3), solve(1e4)
    assert int(small.status) == int(large.status) == mml.Status.MAX_ITER
    np.testing.assert_allclose(small.x, large.x, rtol=1e-10)
    assert float(small.multipliers_ineq[0]) < -1e-4  # the constraint is violated: mu != 0
    np.testing.assert_allclose(
        1e3 * small.multipliers_ineq[0], 1e4 * large.multipliers_ineq[0], rtol=1e-8
    )
    np.testing.assert_allclose(small.multipliers_ineq[1], large.multipliers_ineq[1], rtol=1e-8)


def _coupled(x):
    return (x[0] - 2.0) ** 2 + (x[1] - 2.0) ** 2 + x[0] * x[1]


def test_upper_bound_and_inequality_active_are_polished_to_machine_precision():
    # x_0 <= 1 (an upper bound) and 1.2 - x_1 >= 0 both active: x = (1, 1.2), and from
    # grad f + J_g^T mu + nu = 0: nu_0 = -(2 (1 - 2) + 1.2) = 0.8, mu = 2 (1.2 - 2) + 1 = -0.6.
    # The augmented Lagrangian alone stops ~1e-8 away; the Newton-KKT polish on the active set
    # (an upper bound: internal nu <= 0) makes it exact.
    res = mml.minimise_constrained(
        _coupled,
        jnp.zeros(2),
        ineq=lambda x: jnp.array([1.2 - x[1]]),
        bounds=(-jnp.inf, jnp.array([1.0, jnp.inf])),
    )
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.x, [1.0, 1.2], rtol=0, atol=1e-13)
    np.testing.assert_allclose(res.multipliers_ineq, [-0.6], rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.multipliers_bounds, [0.8, 0.0], rtol=0, atol=1e-12)
    assert float(res.kkt_residual) < 1e-12


def test_polish_that_leaves_the_feasible_set_is_not_kept():
    # 1e-6 (x - 0.005)^2 with 0.002 - x >= 0, from 0: the gradient there, 1e-8, is within the
    # stationarity tolerance (sqrt(eps) (1 + ...)), so the augmented Lagrangian stops at once
    # with the inequality inactive. The polish, on no active constraint, steps to 0.005 (within
    # its 1e-2 reach) and violates the inequality by 3e-3: the result must stay feasible.
    res = mml.minimise_constrained(
        lambda x: 1e-6 * jnp.sum((x - 0.005) ** 2), jnp.zeros(1), ineq=lambda x: 0.002 - x
    )
    assert bool(res.success), int(res.status)
    assert float(res.max_violation) <= 1e-12
    assert float(res.x[0]) <= 0.002


def test_a_variable_fixed_by_equal_bounds_is_polished_like_one_on_its_upper_bound():
    # f pushes x0 upwards against x0 <= 1; fixing x0 = 1 by lower == upper has the same solution
    # (1, 1.2), mu = -0.6, nu = (0.8, 0). The polish demanded a lower bound's sign of nu there
    # and was refused: the augmented Lagrangian's point came back, 7e-10 off.
    def f(x):
        return (x[0] - 2.0) ** 2 + (x[1] - 2.0) ** 2 + x[0] * x[1]

    res = mml.minimise_constrained(
        f,
        jnp.zeros(2),
        ineq=lambda x: jnp.array([1.2 - x[1]]),
        bounds=(jnp.array([1.0, -jnp.inf]), jnp.array([1.0, jnp.inf])),
    )
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [1.0, 1.2], rtol=0, atol=1e-13)
    np.testing.assert_allclose(res.multipliers_ineq, [-0.6], rtol=1e-12)
    np.testing.assert_allclose(res.multipliers_bounds, [0.8, 0.0], atol=1e-12)
    assert float(res.kkt_residual) < 1e-12


def test_a_variable_held_on_its_bound_stays_exactly_on_it():
    # A convex QP with bounds only, started outside them (x0 clipped onto two lower bounds).
    # The inner Newton step held x1 on its bound, but the eigendecomposition of the held-block
    # matrix mixed the blocks at rounding level: x1 stepped 3e-16 above its bound, where the
    # gradient of 0.22 pushing it back was no longer a bound's (not stationary) and the line
    # search could not resolve the ulp back: MAX_ITER after 100 iterations at the solution.
    p = jnp.array(
        [
            [1.2598303502225048, 1.1519967088968202, -0.7111561350383787],
            [1.1519967088968202, 2.318658772738766, -0.4067940351795515],
            [-0.7111561350383787, -0.4067940351795515, 7.425719776823281],
        ]
    )
    q = jnp.array([-0.4803519265721009, 0.5299200487892722, 0.888433855620275])
    lower = jnp.array([-0.5718462859305391, -0.576904110136031, -0.3706685806819108])
    upper = jnp.array([jnp.inf, 1.4038616792199257, 0.34812510467881597])
    res = mml.minimise_constrained(
        lambda x: 0.5 * x @ p @ x + q @ x, jnp.array([0.39, -1.87, -1.65]), bounds=(lower, upper)
    )
    assert bool(res.success), int(res.status)
    assert float(res.x[1]) == float(lower[1])
    assert int(res.n_iter) <= 5
    assert float(res.multipliers_bounds[1]) < 0.0  # a lower bound's sign (minimising)


def test_a_variable_fixed_by_equal_bounds_gets_its_multiplier_unpolished():
    # x0 fixed at 1 by lower == upper, its gradient 2 pushing it downwards; the flat sextic in
    # x1 leaves the augmented Lagrangian's point 1e-2 from the polished one, which is refused.
    # That point's bound multiplier was clipped to a lower bound's sign and then to an upper
    # bound's: 0, with kkt_residual 2 on a SUCCESS.
    res = mml.minimise_constrained(
        lambda x: x[0] ** 2 + (x[1] - 1.0) ** 6,
        jnp.zeros(2),
        bounds=(jnp.array([1.0, -jnp.inf]), jnp.array([1.0, jnp.inf])),
    )
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.multipliers_bounds, [-2.0, 0.0], atol=1e-7)
    assert float(res.kkt_residual) < 1e-6


def test_an_inactive_inequality_with_a_rounding_multiplier_does_not_block_the_polish():
    # A convex QP with one equality, one bound active and a concave quadratic inequality
    # inactive (g = 2.4 at the solution). The augmented Lagrangian left that inequality's
    # multiplier at y - rho (y / rho) = 6e-17 > 0, which counted as active: the polish made it
    # an equality, failed, and the unpolished point came back (the equality violated by 2.5e-8).
    p = jnp.array(
        [[0.7259141752910685, -0.4965660287541407], [-0.4965660287541407, 1.8136994109763376]]
    )
    q = jnp.array([0.7676642531398922, 0.25505812177433956])
    a = jnp.array([0.7829798706300901, 0.27241823407236765])
    g = jnp.array([-0.9377563787668719, 1.776099733817743])
    c = jnp.array(
        [[2.4403090534751346, 2.070775764602548], [2.070775764602548, 1.8807199547118676]]
    )
    res = mml.minimise_constrained(
        lambda x: 0.5 * x @ p @ x + q @ x,
        jnp.array([-3.8123335771773137, -1.040860802192517]),
        eq=lambda x: jnp.array([a @ x - 1.1620081255305676]),
        ineq=lambda x: jnp.array([3.702389844135287 - g @ x - 0.5 * x @ c @ x]),
        bounds=(
            jnp.array([-jnp.inf, -1.226956104778461]),
            jnp.array([jnp.inf, 0.33486573729876157]),
        ),
    )
    assert bool(res.success), int(res.status)
    assert float(res.max_violation) <= 1e-14
    assert float(res.kkt_residual) <= 1e-14
    assert float(res.multipliers_ineq[0]) == 0.0
    # x1 on its upper bound, x0 from the equality
    np.testing.assert_allclose(res.x[1], 0.33486573729876157, rtol=0, atol=0)
    np.testing.assert_allclose(a @ res.x, 1.1620081255305676, rtol=1e-15)
