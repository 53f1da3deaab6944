"""The steps the minimisers take and what they count, step by step.

Each test pins one documented behaviour that the rest of the suite left unchecked (found by
mutation testing: each fails when the behaviour is changed): the evaluation counts, the closed
(``<=``) gradient test, the L-BFGS two-loop recursion and the quasi-Newton models' first steps,
Newton's safeguards at saddles and indefinite Hessians, and gradient descent's momentum.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_mml as mml
from jaxopt_mml._status import Status

# --------------------------------------------------------------------------- n_fev


def _counted(calls):
    """Rosenbrock, counting its evaluations at run time (a callback per call of f)."""

    def f(x):
        jax.debug.callback(lambda: calls.append(1))
        return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2

    return f


@pytest.mark.parametrize(
    "solver",
    [
        mml.bfgs,
        mml.lbfgs,
        lambda f, x0: mml.gradient_descent(f, x0, max_iter=30),
        lambda f, x0: mml.gradient_descent(f, x0, step_size=1e-3, max_iter=30),
        lambda f, x0: mml.optax_minimise(f, x0, optax.lbfgs(), max_iter=30),
    ],
    ids=["bfgs", "lbfgs", "gd-armijo", "gd-fixed", "optax-lbfgs"],
)
def test_n_fev_is_the_number_of_evaluations_of_f(solver):
    """``n_fev``: "the number of evaluations of f (each with its gradient), line searches
    included": every call of ``f`` the run makes, counted by ``f`` itself."""
    calls = []
    res = solver(_counted(calls), jnp.array([-1.2, 1.0]))
    jax.effects_barrier()
    assert int(res.n_iter) >= 5
    assert int(res.n_fev) == len(calls)


def test_newton_n_fev_on_a_quadratic():
    """Newton on a quadratic with an exact step: f(x0), the linearised gradient at x0, the full
    step's trial, and the final linearisation that only tests (its discarded search is not
    counted, as documented): n_fev = 4, one iteration."""
    c = jnp.array([1.0, -2.0, 3.0])

    def f(x):
        return jnp.sum(jnp.array([1.0, 2.0, 4.0]) * (x - c) ** 2)

    res = mml.newton_minimise(f, jnp.zeros(3))
    assert bool(res.success)
    np.testing.assert_allclose(res.x, c, rtol=1e-12)
    assert int(res.n_iter) == 1
    assert int(res.n_fev) == 4


# --------------------------------------------------------------------------- the gradient test


@pytest.mark.parametrize(
    "solver",
    [
        mml.bfgs,
        mml.lbfgs,
        mml.newton_minimise,
        mml.gradient_descent,
        lambda f, x0, **kw: mml.optax_minimise(f, x0, optax.adam(1e-2), **kw),
    ],
    ids=["bfgs", "lbfgs", "newton", "gd", "optax"],
)
def test_exact_minimum_with_atol_zero_is_converged_at_the_start(solver):
    """The gradient test is ``max|g| <= atol`` (closed, as scipy's ``gtol``): a start where the
    gradient is exactly 0 has converged even with ``atol = 0``."""
    c = jnp.array([1.0, -2.0])
    res = solver(lambda x: jnp.sum((x - c) ** 2), c, atol=0.0)
    assert int(res.status) == Status.SUCCESS
    assert int(res.n_iter) == 0
    chex.assert_trees_all_equal(res.x, c)
    assert float(res.grad_norm) == 0.0


# --------------------------------------------------------------------------- quasi-Newton models


def test_lbfgs_two_loop_recursion_is_the_bfgs_product_of_the_last_pairs():
    """The two-loop recursion over the circular buffers gives ``H_k g`` for the BFGS matrix built
    from ``gamma I`` (``gamma = s'y / y'y`` of the newest pair, N&W eq. 7.20) by the updates
    (N&W eq. 6.17) with the last ``m`` pairs, oldest first: after the buffer has wrapped too."""
    from jaxopt_mml._minimise_bfgs import _lbfgs_apply, _lbfgs_memory, _lbfgs_update

    n, m = 4, 3
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n, n))
    hess = a @ a.T + n * np.eye(n)  # s'y > 0 for y = hess s
    pairs = [(s, hess @ s) for s in rng.normal(size=(5, n))]
    g = rng.normal(size=n)
    memory = _lbfgs_memory(n, jnp.float64, {"memory": m})
    for k, (s, y) in enumerate(pairs, start=1):
        sy, yy = float(s @ y), float(y @ y)
        memory = _lbfgs_update(memory, jnp.asarray(s), jnp.asarray(y), 1.0 / sy, yy, False, True)
        last = pairs[max(0, k - m) : k]
        s_new, y_new = last[-1]
        h = (s_new @ y_new) / (y_new @ y_new) * np.eye(n)
        for s_i, y_i in last:
            rho = 1.0 / (s_i @ y_i)
            v = np.eye(n) - rho * np.outer(y_i, s_i)
            h = v.T @ h @ v + rho * np.outer(s_i, s_i)
        np.testing.assert_allclose(_lbfgs_apply(memory, jnp.asarray(g)), h @ g, rtol=1e-10)


def test_bfgs_and_lbfgs_take_the_same_first_two_steps():
    """Both models start as steepest descent and, after the first pair, are the one BFGS update
    of ``(s'y / y'y) I`` (N&W eq. 6.20 and 7.20 agree while there is one pair): the first two
    iterates coincide (from the third on, L-BFGS rescales by the newest pair)."""

    def f(x):
        return (x[0] - 1.0) ** 2 + 10.0 * (x[1] + 2.0) ** 2 + x[0] ** 4 + x[0] * x[1]

    x0 = jnp.array([3.0, 1.0])
    full = mml.bfgs(f, x0, history=True)
    lim = mml.lbfgs(f, x0, history=True)
    assert int(full.n_iter) >= 3 and int(lim.n_iter) >= 3
    # history.x[0] is x0: rows 1 and 2 are the first two iterates
    np.testing.assert_allclose(lim.history.x[:3], full.history.x[:3], rtol=1e-13)
    assert not np.allclose(full.history.x[2], full.history.x[1])  # the second step moved x


# --------------------------------------------------------------------------- Newton's safeguards


def _saddle(x):
    return x[0] ** 2 + x[1] ** 4 / 4 - x[1] ** 2 / 2  # a saddle at 0, minima at (0, +-1)


def test_dense_newton_first_step_flips_negative_curvature():
    """Where the Hessian is indefinite the dense step is ``-|H|^{-1} g``, ``|H| = Q |Lambda| Q'``
    (N&W 3.4): at (0.5, 0.1), ``H = diag(2, -0.97)``, a step that the line search takes whole.
    (A negative eigenvalue merely floored at ``delta`` gives a step ~1e7 long along y.)"""
    x0 = jnp.array([0.5, 0.1])
    g, h = np.asarray(jax.grad(_saddle)(x0)), np.asarray(jax.hessian(_saddle)(x0))
    lam, q = np.linalg.eigh(h)
    expected = np.asarray(x0) - q @ ((q.T @ g) / np.abs(lam))
    res = mml.newton_minimise(_saddle, x0, linear_solver="dense", history=True)
    assert bool(res.success)
    np.testing.assert_allclose(res.history.x[1], expected, rtol=1e-12)
    np.testing.assert_allclose(jnp.abs(res.x), [0.0, 1.0], atol=1e-8)


def test_newton_leaves_a_saddle_on_the_side_that_descends():
    """At a point where the gradient is below ``atol`` but the Hessian has negative curvature,
    the escape step goes along the eigenvector with the sign that does not ascend: with a tilt
    ``1e-9 y`` (gradient 1e-9 at 0), towards y < 0, the lower of the two minima."""

    def f(x):
        return _saddle(x) + 1e-9 * x[1]

    res = mml.newton_minimise(f, jnp.zeros(2), linear_solver="dense")
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [0.0, -1.0], atol=1e-8)
    assert float(res.value) < float(f(jnp.array([0.0, 1.0])))


def test_dense_newton_tiny_modified_step_far_from_the_minimum_is_not_success():
    """Condition 1e16 (beyond ``1 / (n eps)``): the small eigenvalue is lifted to ``delta`` and
    the step along it is tiny (7e-6 against a step tolerance of 1.5e-2 at |x| = 1e6), with a
    large ``f`` that passes the scaled-gradient guard. A modified step is no estimate of the
    distance to the minimum (1e3 away here): SUCCESS only where the gradient is small."""
    x_star = jnp.array([1e6, 1e6])

    def f(x):
        return 1e12 + 1e10 * (x[0] - x_star[0]) ** 2 + 1e-6 * (x[1] - x_star[1]) ** 2

    res = mml.newton_minimise(f, jnp.array([1e6, 1e6 - 1e3]), linear_solver="dense", max_iter=20)
    gmax = float(jnp.max(jnp.abs(jax.grad(f)(res.x))))
    assert gmax > 1e-3  # still far: 20 lifted steps of ~7e-6 do not get there
    assert not bool(res.success)


@pytest.mark.parametrize("solver", [mml.bfgs, mml.lbfgs], ids=["bfgs", "lbfgs"])
def test_quasi_newton_step_cut_short_at_a_kink_is_not_convergence(solver):
    """``f = 1e8 + 10|x0 - 1| + (x1 - 2)^2 + x0 x1 / 2 + |x1 - x0|``: its minimum is on the kink,
    at (1, 1.25) (there ``d/dx1 = 2 (x1 - 2) + 1/2 + 1 = 0``; the ``10|x0 - 1|`` term outweighs
    the rest along x0). The offset passes the scaled-gradient guard everywhere, and at the kink
    the line search cuts every model step short: the step judged by the Cauchy test is the full
    one proposed, so a short step taken elsewhere on the kink is no SUCCESS."""

    def f(x):
        return (1e8 + 10.0 * jnp.abs(x[0] - 1.0) + (x[1] - 2.0) ** 2 + 0.5 * x[0] * x[1]) + jnp.abs(
            x[1] - x[0]
        )

    res = solver(f, jnp.array([-3.0, 5.0]))
    if bool(res.success):
        np.testing.assert_allclose(res.x, [1.0, 1.25], atol=1e-3)
    assert abs(float(res.x[1]) - 1.25) < 0.1  # it got close, success or not


def test_newton_converging_on_its_last_allowed_iteration_is_success():
    """``max_iter`` counts Newton steps; the point that the last allowed step reaches is still
    tested: one exact step on a quadratic with ``max_iter=1`` is SUCCESS, not MAX_ITER."""
    c = jnp.array([1.0, -2.0, 3.0])

    def f(x):
        return jnp.sum(jnp.array([1.0, 2.0, 4.0]) * (x - c) ** 2)

    res = mml.newton_minimise(f, jnp.zeros(3), max_iter=1)
    assert int(res.status) == Status.SUCCESS and int(res.n_iter) == 1
    np.testing.assert_allclose(res.x, c, rtol=1e-12)
    # one step short of it: MAX_ITER after that step (max_iter=1 on a problem needing more)
    res = mml.newton_minimise(lambda x: jnp.sum(x**4 + x**2), jnp.ones(2), max_iter=1)
    assert int(res.status) == Status.MAX_ITER and int(res.n_iter) == 1


# --------------------------------------------------------------------------- gradient descent


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_gradient_descent_momentum_is_optax_sgd(nesterov):
    """Momentum "in optax's form": with a fixed step, the iterates are those of
    ``optax.sgd(step, momentum, nesterov)``."""
    a = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    b = jnp.array([1.0, -1.0])

    def f(x):
        return 0.5 * x @ a @ x - b @ x

    kw = {"max_iter": 15, "history": True}
    ours = mml.gradient_descent(
        f, jnp.zeros(2), step_size=0.1, momentum=0.6, nesterov=nesterov, **kw
    )
    ref = mml.optax_minimise(f, jnp.zeros(2), optax.sgd(0.1, momentum=0.6, nesterov=nesterov), **kw)
    k = int(ours.history.length)
    assert k == int(ref.history.length) == 16
    np.testing.assert_allclose(ours.history.x[:k], ref.history.x[:k], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy-ball", "nesterov"])
def test_gradient_descent_line_search_with_momentum_replaces_a_direction_that_ascends(nesterov):
    """With the line search, "a momentum direction that does not descend is replaced by the
    gradient": momentum 0.9 overshoots across the narrow valley of ``x^2 + 25 y^2``, and the run
    still converges (no LINESEARCH_FAILED along an ascent direction)."""

    def f(x):
        return x[0] ** 2 + 25.0 * x[1] ** 2

    res = mml.gradient_descent(f, jnp.array([3.0, 1.0]), momentum=0.9, nesterov=nesterov)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, [0.0, 0.0], atol=1e-7)


def test_newton_cg_negative_curvature_at_the_first_cg_step_still_descends():
    """Newton-CG meeting non-positive curvature at its first CG step returns the scaled
    steepest-descent direction (not the zero vector): at (0.01, 0.1) on the saddle function,
    ``g'Hg < 0``, and the run goes on to a minimum (0, +-1)."""
    x0 = jnp.array([0.01, 0.1])
    g, h = jax.grad(_saddle)(x0), jax.hessian(_saddle)(x0)
    assert float(g @ h @ g) < 0.0
    res = mml.newton_minimise(_saddle, x0, linear_solver="cg")
    assert bool(res.success)
    np.testing.assert_allclose(jnp.abs(res.x), [0.0, 1.0], atol=1e-8)


@pytest.mark.parametrize("n", [3, 5], ids=["jacobi", "lapack"])
def test_dense_newton_rounding_level_negative_curvature_is_no_saddle(n):
    """``(a.x - 1)^2`` has a valley of minima: its Hessian ``2 a a'`` is positive semi-definite
    with ``n - 1`` zero eigenvalues, which the eigendecomposition returns as tiny numbers of
    either sign. Only curvature below ``-delta`` marks a saddle: the run ends on the valley with
    SUCCESS, not with a failed escape step from a minimum."""
    a = jnp.array([1.0, 2.0, -0.7, 0.3, 1.1])[:n]

    def f(x):
        return (x @ a - 1.0) ** 2

    res = mml.newton_minimise(f, jnp.linspace(0.1, 0.9, n), linear_solver="dense")
    assert int(res.status) == Status.SUCCESS
    assert float(res.value) <= 1e-20


def _offset_valley(u):
    return 0.5 * (u[0] ** 2 + 1000.0 * u[1] ** 2) + 5.0


def _log_barrier(u):
    return jnp.sum((u - 1.0) ** 2 * jnp.array([1.0, 50.0])) - jnp.log(9.0 - jnp.sum(u**2))


@pytest.mark.parametrize(
    ("f", "x0", "momentum", "g_max"),
    [(_offset_valley, [1.0, 1.0], 0.99, 1e-5), (_log_barrier, [0.0, 0.0], 0.9, 1e-6)],
    ids=["offset-0.99", "barrier-0.9"],
)
def test_gradient_descent_momentum_line_search_stops_at_the_rounding_floor_not_before(
    f, x0, momentum, g_max
):
    """A momentum direction whose search ends at a step too short for f to resolve (across a
    valley the gradient does not point at) is dropped for the gradient's, not read as
    PRECISION_LIMIT: momentum 0.99 on an offset quadratic stopped at |g| = 2.5e-4, 8e5 ulps
    above the minimum (now 9e-7, 70 ulps); momentum 0.9 on a log barrier at |g| = 2.6e-6,
    4000 ulps above (now 3e-8, 1 ulp)."""
    res = mml.gradient_descent(f, jnp.array(x0), momentum=momentum, max_iter=5000)
    assert int(res.status) in (Status.SUCCESS, Status.PRECISION_LIMIT)
    assert float(res.grad_norm) < g_max


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_gradient_descent_at_a_kink_is_not_a_precision_limit(dtype):
    """At a kink the gradient never becomes small and the search shrinks to steps that f cannot
    resolve: that is f's non-smoothness, not the dtype's rounding. It read PRECISION_LIMIT
    (advice: use float64 or a second-order method) for |x - 0.3| + 0.1 x^2 at its minimum
    (|g| = 1.06) and for a max of three planes 0.37 above its minimum (|g| = 1); now
    LINESEARCH_FAILED, as newton_minimise reports, whose message names the kink. A smooth
    offset valley still ends at the rounding floor with PRECISION_LIMIT."""

    def kink(x):
        return jnp.sum(jnp.abs(x - 0.3)) + 0.1 * jnp.sum(x**2)

    def planes(x):
        return jnp.max(jnp.stack([x[0] + x[1], -x[0] + 2 * x[1], -x[1] - 1.0]))

    for f, x0 in ((kink, [1.0, -2.0]), (planes, [0.7, 0.2])):
        res = mml.gradient_descent(f, jnp.array(x0, dtype))
        assert int(res.status) == Status.LINESEARCH_FAILED, (f.__name__, Status(int(res.status)))
        assert float(res.grad_norm) > 0.4
    res = mml.gradient_descent(kink, jnp.array([1.0, -2.0], dtype))
    np.testing.assert_allclose(res.x, [0.3, 0.3], atol=1e-6 if dtype == jnp.float64 else 1e-3)
    assert "kink" in mml.status_message(Status.LINESEARCH_FAILED)
