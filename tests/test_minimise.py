"""Unconstrained minimisers: the zoo, scipy as the oracle, batching, compilation, dtypes, bad input.

Compilations dominate the run time, so the 2-D zoo problems share one objective selected by an
index in ``args`` (``lax.switch``), solved in one vmapped call per solver.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize as so
from jax import lax

import jaxopt_mml as mml
from jaxopt_mml._status import Status
from tests.zoo import minimise as zoo

OPTAX_LBFGS = optax.lbfgs()  # one object: a new optimiser object would be a new compilation


def _optax_lbfgs(f, x0, **kw):
    return mml.optax_minimise(f, x0, OPTAX_LBFGS, **kw)


def _gd(f, x0, **kw):
    return mml.gradient_descent(f, x0, **kw)


SOLVERS = {
    "bfgs": mml.bfgs,
    "lbfgs": mml.lbfgs,
    "newton": mml.newton_minimise,
    "optax_lbfgs": _optax_lbfgs,
}

# The 2-D problems, one objective: f(x, k) = problem k at x.
TWO_D = [zoo.BY_NAME[n] for n in ("rosen2", "beale", "booth", "matyas", "saddle")]
TWO_D_STARTS = np.array([p.x0 for p in TWO_D] + list(zoo.HIMMELBLAU_STARTS))
TWO_D_MINIMA = np.array([p.x_star for p in TWO_D] + list(zoo.HIMMELBLAU_MINIMA))
TWO_D_INDEX = np.array(list(range(len(TWO_D))) + [len(TWO_D)] * 4)
TWO_D_FUNCS = [p.f for p in TWO_D] + [zoo.himmelblau]


def two_d(x, k):
    return lax.switch(k, TWO_D_FUNCS, x)


@functools.cache
def _solve_two_d(name):
    """All nine 2-D problems in one vmapped call (cached: the zoo and vmap tests share it)."""
    solver = {**SOLVERS, "gd": _gd}[name]
    kw = {"max_iter": 5000} if name == "gd" else {}
    starts = jnp.asarray(TWO_D_STARTS)
    return jax.vmap(lambda x0, k: solver(two_d, x0, args=(k,), **kw))(starts, TWO_D_INDEX)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_two_d_zoo(name):
    """Rosenbrock, Beale, Booth, Matyas, the saddle and Himmelblau's four minima."""
    res = _solve_two_d(name)
    chex.assert_trees_all_equal(res.status, jnp.zeros_like(res.status))
    np.testing.assert_allclose(res.x, TWO_D_MINIMA, atol=2e-6)
    f_star = np.array([p.f_star for p in TWO_D] + [0.0] * 4)
    np.testing.assert_allclose(res.value, f_star, atol=1e-11)
    assert np.all(np.asarray(res.grad_norm) <= 1e-5)
    assert np.all(np.asarray(res.n_iter) >= 1) and np.all(np.asarray(res.n_fev) > res.n_iter)


def test_two_d_gradient_descent():
    """Steepest descent with Armijo backtracking on the well-conditioned 2-D problems."""
    idx = np.array([2, 3, 4, 5, 6, 7, 8])  # Booth, Matyas, the saddle, Himmelblau
    res = _solve_two_d("gd")
    assert np.all(np.asarray(res.status)[idx] == 0)
    np.testing.assert_allclose(res.x[idx], TWO_D_MINIMA[idx], atol=1e-6)
    # Rosenbrock's curved valley: 5000 steepest-descent steps are not enough, and it says so
    assert int(res.status[0]) == mml.Status.MAX_ITER


BOWL_A = jnp.stack([jnp.asarray(zoo.A_WELL), jnp.asarray(zoo.A_ILL)])
BOWL_X = np.stack([zoo.X_WELL, zoo.X_ILL])


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_bowls_vmapped_over_args(name):
    """Well (kappa = 4) and badly (kappa = 1e4) conditioned quadratics, batched over args."""
    res = jax.vmap(lambda a: SOLVERS[name](zoo.bowl, jnp.zeros(5), args=(a, jnp.asarray(zoo.B5))))(
        BOWL_A
    )
    assert np.all(np.asarray(res.success))
    np.testing.assert_allclose(res.x, BOWL_X, rtol=1e-6, atol=1e-7)
    if name == "newton":  # exact on a quadratic: one step
        np.testing.assert_array_equal(res.n_iter, [1, 1])


def test_gradient_descent_bowl_variants():
    """Fixed step, schedule, heavy-ball and Nesterov momentum on the well-conditioned bowl."""
    args = (jnp.asarray(zoo.A_WELL), jnp.asarray(zoo.B5))
    x0 = jnp.zeros(5)
    fixed = mml.gradient_descent(zoo.bowl, x0, args=args, step_size=0.4)
    sched = mml.gradient_descent(
        zoo.bowl, x0, args=args, step_size=optax.exponential_decay(0.45, 100, 0.9)
    )
    heavy = mml.gradient_descent(zoo.bowl, x0, args=args, step_size=0.2, momentum=0.5)
    nest = mml.gradient_descent(zoo.bowl, x0, args=args, step_size=0.2, momentum=0.5, nesterov=True)
    for res in (fixed, sched, heavy, nest):
        assert bool(res.success), res.status
        np.testing.assert_allclose(res.x, zoo.X_WELL, atol=1e-7)
    # momentum accelerates: fewer iterations than plain descent with the same step
    plain = mml.gradient_descent(zoo.bowl, x0, args=args, step_size=0.2)
    assert int(heavy.n_iter) < int(plain.n_iter)
    # a step above 2/L diverges: reported, not silently wrong
    bad = mml.gradient_descent(zoo.bowl, x0, args=args, step_size=1.5, max_iter=2000)
    assert not bool(bad.success)


def test_gradient_descent_schedule_out_of_range_stops_with_invalid_input():
    # A schedule that turns negative ascended (float64: MAX_ITER at x ~ 1e67), a NaN one ended
    # NONFINITE; now INVALID_INPUT at the first such value, x where it was.
    def f(x):
        return jnp.sum((x - 1.0) ** 2 * jnp.array([1.0, 10.0]))

    x0 = jnp.array([3.0, -2.0])
    neg = mml.gradient_descent(f, x0, step_size=optax.linear_schedule(0.04, -0.04, 30))
    assert Status(int(neg.status)) == Status.INVALID_INPUT and int(neg.n_iter) == 17
    assert float(neg.value) < float(f(x0))
    nan = mml.gradient_descent(f, x0, step_size=lambda c: jnp.where(c < 5, 0.01, jnp.nan))
    assert Status(int(nan.status)) == Status.INVALID_INPUT and int(nan.n_iter) == 6
    assert np.all(np.isfinite(np.asarray(nan.x)))
    # a schedule ending at 0 is in range, also where optax's float32 rounds it to -4.7e-9
    # (compiled: x / 30 as x * (1 / 30)), in a float64 run: it stops moving
    zero = mml.gradient_descent(f, x0, step_size=optax.linear_schedule(0.04, 0.0, 30), max_iter=60)
    assert Status(int(zero.status)) == Status.MAX_ITER


def test_gradient_descent_bad_conditioning_is_slow_but_honest():
    res = mml.gradient_descent(
        zoo.bowl, jnp.zeros(5), args=(jnp.asarray(zoo.A_ILL), jnp.asarray(zoo.B5)), max_iter=200
    )
    assert int(res.status) == mml.Status.MAX_ITER and int(res.n_iter) == 200


def test_gradient_descent_line_search_goes_on_past_its_halvings_on_a_steep_bowl():
    # The first trial moves x by 2|g| (2e10 here), beyond the search's 30 halvings: that was
    # LINESEARCH_FAILED at x0 on a round bowl. A search whose last trial still moves x by a
    # resolvable decrease goes on halving at the next iteration.
    res = mml.gradient_descent(
        lambda x, k: k * jnp.sum((x - 1.0) ** 2), jnp.array([3.0, -2.0]), args=(1e9,)
    )
    assert bool(res.success), res.status
    np.testing.assert_allclose(res.x, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name,n", [("bfgs", 10), ("lbfgs", 10), ("newton", 10), ("lbfgs", 100)])
def test_rosenbrock_n(name, n):
    p = zoo.BY_NAME[f"rosen{n}"]
    res = SOLVERS[name](p.f, jnp.asarray(p.x0))
    assert bool(res.success), res.status
    np.testing.assert_allclose(res.x, p.x_star, atol=1e-6)
    assert float(res.value) < 1e-12


def test_newton_cg_rosenbrock_100():
    p = zoo.BY_NAME["rosen100"]
    res = mml.newton_minimise(p.f, jnp.asarray(p.x0), linear_solver="cg")
    assert bool(res.success), res.status
    np.testing.assert_allclose(res.x, p.x_star, atol=1e-6)


@pytest.mark.parametrize("method", ["BFGS", "Newton-CG"])
@pytest.mark.parametrize("problem", ["rosen10", "beale"])
def test_scipy_oracle(method, problem):
    p = zoo.BY_NAME[problem]
    f = jax.jit(p.f)
    g = jax.jit(jax.grad(p.f))
    hessp = jax.jit(lambda x, v: jax.jvp(jax.grad(p.f), (x,), (v,))[1])
    ref = so.minimize(
        lambda x: float(f(x)),
        p.x0,
        jac=lambda x: np.asarray(g(x)),
        hessp=(lambda x, v: np.asarray(hessp(x, v))) if method == "Newton-CG" else None,
        method=method,
        options={"gtol": 1e-10} if method == "BFGS" else {"xtol": 1e-12},
    )
    ours = (mml.bfgs if method == "BFGS" else mml.newton_minimise)(p.f, jnp.asarray(p.x0))
    assert bool(ours.success)
    np.testing.assert_allclose(ours.x, ref.x, atol=1e-6)
    assert float(ours.value) <= ref.fun + 1e-12


def test_saddle_plain_newton_goes_uphill_ours_descends():
    p = zoo.BY_NAME["saddle"]
    x0 = jnp.asarray(p.x0)
    g, h = jax.grad(p.f)(x0), jax.hessian(p.f)(x0)
    plain = x0 - jnp.linalg.solve(h, g)
    # Along y (negative curvature) plain Newton climbs towards the saddle at y = 0 ...
    assert float(p.f(x0.at[1].set(plain[1]))) > float(p.f(x0))
    plain_step = jax.jit(lambda x: x - jnp.linalg.solve(jax.hessian(p.f)(x), jax.grad(p.f)(x)))
    xk = x0
    for _ in range(20):
        xk = plain_step(xk)
    np.testing.assert_allclose(xk, [0.0, 0.0], atol=1e-12)  # ... and converges onto it
    res = mml.newton_minimise(p.f, x0, history=8)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, p.x_star, atol=1e-8)
    np.testing.assert_allclose(res.value, p.f_star, atol=1e-14)
    f_hist = np.asarray(res.history.f)[: int(res.history.length)]
    assert np.all(np.diff(f_hist) < 0)  # every step descends


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_newton_leaves_a_saddle_it_starts_on(dtype):
    """At the saddle itself the gradient is 0: the dense Newton step's eigendecomposition sees
    the negative curvature and steps off along it, instead of reporting SUCCESS there (as before:
    0 iterations at x = 0); a batch started there does the same."""
    p = zoo.BY_NAME["saddle"]
    x0 = jnp.zeros(2, dtype)
    res = mml.newton_minimise(p.f, x0)
    assert bool(res.success) and int(res.n_iter) >= 1
    np.testing.assert_allclose(
        jnp.abs(res.x), np.abs(p.x_star), atol=1e-3 if dtype == jnp.float32 else 1e-8
    )
    assert float(res.value) < float(p.f(x0))
    many = jax.vmap(lambda x: mml.newton_minimise(p.f, x))(jnp.zeros((3, 2), dtype))
    assert bool(many.success.all()) and bool((many.value < 0).all())


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_vmap_equals_loop(name):
    """Per-element results of the batched run equal single runs (Himmelblau and Rosenbrock)."""
    solver = {**SOLVERS, "gd": _gd}[name]
    kw = {"max_iter": 5000} if name == "gd" else {}
    batched = _solve_two_d(name)
    for i in (0, 5, 6, 7, 8):
        single = solver(two_d, jnp.asarray(TWO_D_STARTS[i]), args=(TWO_D_INDEX[i],), **kw)
        np.testing.assert_allclose(batched.x[i], single.x, rtol=1e-12, atol=1e-14)
        assert int(batched.n_iter[i]) == int(single.n_iter)
        assert int(batched.status[i]) == int(single.status)
        assert int(batched.n_fev[i]) == int(single.n_fev)


def test_no_recompilation():
    calls = {"n": 0}

    def counted(x, c):
        calls["n"] += 1
        return jnp.sum((x - c) ** 2) + jnp.sum(x**4)

    for solver in (mml.bfgs, mml.newton_minimise, _optax_lbfgs):
        calls["n"] = 0
        solver(counted, jnp.ones(3), args=(0.5,))
        traced = calls["n"]
        assert traced > 0
        solver(counted, jnp.full(3, 2.0), args=(0.25,), rtol=1e-9)  # new values, same shapes
        assert calls["n"] == traced, solver

    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(x0, c):
        return mml.bfgs(counted, x0, args=(c,)).x

    solve(jnp.ones(3), 0.5)
    solve(jnp.zeros(3), 0.1)


def test_a_joined_schedule_made_again_compiles_once():
    # optax.join_schedules (and warmup_cosine_decay_schedule, sgdr_schedule, built on it) holds
    # its schedules and boundaries in lists, compared by identity: the same schedule made again
    # for each solve compiled anew (0.15 s a call), for gradient_descent's step_size and for an
    # optax optimiser's learning rate alike.
    from jaxopt_mml._minimise_common import _run_jit

    def sched(peak=0.3):
        return optax.warmup_cosine_decay_schedule(0.0, peak, 5, 100)

    f = lambda x: jnp.sum((x - 1.0) ** 2)  # noqa: E731
    before = _run_jit._cache_size()
    for _ in range(2):
        assert bool(mml.gradient_descent(f, jnp.zeros(2), step_size=sched()).success)
        mml.optax_minimise(f, jnp.zeros(2), optax.sgd(sched()), max_iter=50)
    assert _run_jit._cache_size() - before == 2
    mml.gradient_descent(f, jnp.zeros(2), step_size=sched(0.2))  # another schedule: compiles
    assert _run_jit._cache_size() - before == 3


def _implicit_problem(x, theta):
    """Strictly convex, with a minimiser that depends non-linearly on theta."""
    a, b = theta[0], theta[1]
    return jnp.sum(jnp.cosh(x - a)) + 0.5 * b * jnp.sum(x**2) + 0.1 * jnp.sum(x[1:] * x[:-1])


def _implicit_loss(solver, theta, **kw):
    x = solver(_implicit_problem, jnp.zeros(4), args=(theta,), **kw).x
    return jnp.sum(x * jnp.arange(1.0, 5.0))


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd", "newton_cg"])
def test_implicit_gradient_matches_finite_differences(name):
    solver = {
        **SOLVERS,
        "gd": _gd,
        "newton_cg": lambda f, x0, **kw: mml.newton_minimise(f, x0, linear_solver="cg", **kw),
    }[name]
    theta = jnp.array([0.3, 1.7])
    grad = jax.grad(lambda t: _implicit_loss(solver, t))(theta)
    # Central differences of the minimiser found to full precision (Newton, tight tolerances).
    h = 1e-4

    def ref(t):
        return _implicit_loss(mml.newton_minimise, t, rtol=1e-14, atol=1e-14)

    fd = [(ref(theta + h * e) - ref(theta - h * e)) / (2 * h) for e in jnp.eye(2)]
    # The derivative is exact at the solution found; that solution is within the tolerances.
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_large_problems_differentiate_matrix_free(force_matrix_free):
    # Above _implicit.DENSE_TANGENT_MAX unknowns the Hessian is not materialised (n Hessian-
    # vector products: 0.48 s for a gradient through lbfgs at n = 2000, the solve 9 ms): conjugate
    # gradients solve the tangent system. Ridge regression, dx*/dlam = -(A'A + lam I)^-1 x*.
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((40, 20)), rng.standard_normal(40)

    def ridge(x, lam):
        return 0.5 * jnp.sum((a @ x - b) ** 2) + 0.5 * lam * jnp.sum(x**2)

    lam = 0.7
    x_star = np.linalg.solve(a.T @ a + lam * np.eye(20), a.T @ b)
    expected = -np.linalg.solve(a.T @ a + lam * np.eye(20), x_star)

    def solve(solver, objective, lam):
        return solver(objective, jnp.zeros(20), args=(lam,), rtol=1e-12).x

    dense = {s: jax.jacfwd(functools.partial(solve, s, ridge))(lam) for s in (mml.lbfgs, mml.bfgs)}
    calls = force_matrix_free()
    for solver in (mml.lbfgs, mml.bfgs):
        # (another objective function: a new trace, with the threshold patched)
        run = functools.partial(solve, solver, lambda x, c: ridge(x, c))
        for mode in (jax.jacfwd, jax.jacrev):
            np.testing.assert_allclose(mode(run)(lam), dense[solver], rtol=1e-9, atol=1e-12)
        # (the solution is within the tolerances: so is its derivative)
        np.testing.assert_allclose(jax.jacfwd(run)(lam), expected, rtol=1e-5, atol=1e-8)
    assert calls and all(kw == {"symmetric": True} for kw in calls)


def _value_problem(x, c):
    """Minimum at x = log(c), value sum(c - c log c) + c0^2: d/dc = -log(c) + (2 c0, 0)."""
    return jnp.sum(jnp.exp(x) - c * x) + c[0] ** 2


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_the_minimum_value_is_differentiated_by_the_envelope_theorem(name):
    # The value travels beside the implicitly differentiated x: before, its derivative was 0.
    solver = {**SOLVERS, "gd": _gd}[name]
    c = jnp.array([2.0, 3.0])
    expected = -jnp.log(c) + jnp.array([2.0 * c[0], 0.0])

    def value(c):
        return solver(_value_problem, jnp.zeros(2), args=(c,)).value

    def value_closure(c):  # the parameters read by closure instead of through args
        return solver(lambda x: _value_problem(x, c), jnp.zeros(2)).value

    np.testing.assert_allclose(jax.grad(value)(c), expected, rtol=1e-6)
    np.testing.assert_allclose(jax.jacfwd(value_closure)(c), expected, rtol=1e-6)
    batch = jnp.stack([c, c + 1.0])
    np.testing.assert_allclose(
        jax.vmap(jax.grad(value))(batch),
        -jnp.log(batch) + jnp.array([1.0, 0.0]) * 2 * batch,
        rtol=1e-6,
    )
    # The primal value is the solver's own.
    np.testing.assert_allclose(value(c), jnp.sum(c - c * jnp.log(c)) + c[0] ** 2, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_the_minimum_value_is_differentiable_where_the_minimiser_is_not_unique(name):
    # f = (x0 + x1 - a)^2 + a^2: a line of minimisers, f* = a^2. The implicit dx is NaN there
    # (a singular Hessian) and the value's derivative was NaN too (f_x dx = 0 * NaN).
    solver = {**SOLVERS, "gd": _gd}[name]

    def f(x, a):
        return (x[0] + x[1] - a) ** 2 + a**2

    def value(a):
        return solver(f, jnp.array([0.3, -0.2]), args=(a,)).value

    np.testing.assert_allclose(jax.grad(value)(1.5), 3.0, rtol=1e-6)


def test_the_minimum_value_has_a_second_derivative():
    c = jnp.array([2.0, 3.0])
    hess = jax.hessian(lambda c: mml.bfgs(_value_problem, jnp.zeros(2), args=(c,)).value)(c)
    np.testing.assert_allclose(hess, jnp.diag(-1.0 / c + jnp.array([2.0, 0.0])), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_pytree_parameters(name):
    solver = {**SOLVERS, "gd": _gd}[name]
    target = {"w": jnp.array([1.0, -2.0]), "b": jnp.asarray(0.5)}

    def f(p):
        return jnp.sum((p["w"] - target["w"]) ** 2) + (p["b"] - target["b"]) ** 2 + p["b"] ** 4

    x0 = {"w": jnp.zeros(2), "b": jnp.asarray(0.0)}
    res = solver(f, x0, history=3)
    chex.assert_trees_all_equal_structs(res.x, x0)
    chex.assert_trees_all_equal_shapes(res.x, x0)
    assert bool(res.success)
    b_star = so.brentq(lambda b: 2 * (b - 0.5) + 4 * b**3, 0.0, 1.0)
    np.testing.assert_allclose(res.x["w"], target["w"], atol=1e-7)
    np.testing.assert_allclose(res.x["b"], b_star, atol=1e-7)
    chex.assert_shape(res.history.x["w"], (3, 2))
    chex.assert_shape(res.history.x["b"], (3,))


@pytest.mark.parametrize("name", ["bfgs", "optax_lbfgs"])  # one shared path, flat or not
def test_mixed_dtype_pytree_keeps_each_leafs_dtype(name):
    # A float32 leaf beside a float64 one came back float64 (x, its history and its derivative),
    # where ravel_pytree's unravel and the constrained solvers keep x0's dtypes; the solve runs
    # in the promoted dtype.
    solver = SOLVERS[name]

    def f(p, c):
        return jnp.sum((p["w"] - c) ** 2) + (p["b"][0] - 2.0 * c) ** 2

    x0 = {"w": jnp.zeros(2, jnp.float32), "b": (jnp.asarray(0.0, jnp.float64),)}
    res, tangent = jax.jvp(lambda c: solver(f, x0, args=(c,), history=3), (0.25,), (1.0,))
    chex.assert_trees_all_equal_structs(res.x, x0)
    chex.assert_trees_all_equal_dtypes(res.x, x0)
    chex.assert_trees_all_equal_dtypes(jax.tree.map(lambda u: u[0], res.history.x), x0)
    assert bool(res.success) and res.value.dtype == jnp.float64
    np.testing.assert_allclose(res.x["w"], [0.25, 0.25], rtol=1e-6)
    np.testing.assert_allclose(res.x["b"][0], 0.5, rtol=1e-6)
    chex.assert_trees_all_equal_dtypes(tangent.x, x0)  # the solution's derivative in c
    np.testing.assert_allclose(tangent.x["w"], [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(tangent.x["b"][0], 2.0, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_float32(name):
    solver = {**SOLVERS, "gd": _gd}[name]
    idx = np.array([0, 2, 5]) if name != "gd" else np.array([2, 5])  # Rosenbrock, Booth, Himmelblau
    res = jax.vmap(lambda x0, k: solver(two_d, x0, args=(k,), max_iter=5000))(
        jnp.asarray(TWO_D_STARTS[idx], jnp.float32), TWO_D_INDEX[idx]
    )
    assert res.x.dtype == jnp.float32 and res.value.dtype == jnp.float32
    assert np.all(np.asarray(res.success)), res.status
    np.testing.assert_allclose(res.x, TWO_D_MINIMA[idx], atol=2e-3)


def test_history_and_verbose(capfd):
    p = zoo.BY_NAME["rosen2"]
    res = mml.bfgs(p.f, jnp.asarray(p.x0), history=True, verbose=True)
    out = capfd.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("bfgs iter 1:") and lines[0].endswith(", running")
    assert lines[-1].endswith(", SUCCESS") and len(lines) == int(res.n_iter)
    n = int(res.n_iter)
    chex.assert_shape(res.history.x, (1000, 2))
    assert int(res.history.length) == n + 1
    np.testing.assert_allclose(res.history.x[n], res.x)
    np.testing.assert_allclose(res.history.x[0], p.x0)
    assert np.all(np.isnan(np.asarray(res.history.f[n + 1 :])))
    assert np.all(np.diff(np.asarray(res.history.f[: n + 1])) <= 0)  # Wolfe steps descend
    assert mml.bfgs(p.f, jnp.asarray(p.x0)).history is None


def test_verbose_under_vmap_prints_running_elements_only(capfd):
    # A vmapped loop runs until its slowest element stops; the elements that stopped earlier
    # printed a line (with their raw status code) at every remaining step.
    p = zoo.BY_NAME["rosen2"]
    starts = jnp.array([[1.0, 1.0 + 1e-3], [-1.2, 1.0]])
    res = jax.vmap(lambda x0: mml.gradient_descent(p.f, x0, verbose=True, max_iter=50))(starts)
    lines = capfd.readouterr().out.strip().splitlines()
    assert len(lines) == int(np.sum(res.n_iter))
    assert sum(line.endswith(", SUCCESS") for line in lines) == int(np.sum(res.success))
    assert not any("-1" in line.split(",")[-1] for line in lines)


@pytest.mark.parametrize("solver", ["gradient_descent", "newton_minimise", "bfgs", "lbfgs"])
def test_verbose_last_line_of_a_run_cut_at_max_iter_says_max_iter(solver, capfd):
    # The driver set MAX_ITER after its loop: the last line said "running" (but Newton's).
    res = getattr(mml, solver)(zoo.rosenbrock, jnp.array([-1.2, 1.0]), max_iter=2, verbose=True)
    jax.effects_barrier()
    lines = capfd.readouterr().out.strip().splitlines()
    assert int(res.status) == Status.MAX_ITER
    assert lines[-1].endswith(", MAX_ITER"), lines
    assert sum(line.endswith(", MAX_ITER") for line in lines) == 1


def test_args_that_are_no_tuple_name_the_minimiser_called():
    # newton_minimise and optax_minimise were named "newton" and "optax" (in verbose lines too)
    with pytest.raises(TypeError, match="^newton_minimise: args must be a tuple"):
        mml.newton_minimise(zoo.booth, jnp.zeros(2), args=1.0)
    with pytest.raises(TypeError, match="^optax_minimise: args must be a tuple"):
        mml.optax_minimise(zoo.booth, jnp.zeros(2), optax.sgd(0.1), args=1.0)


def test_bad_input():
    with pytest.raises(ValueError, match="scalar"):
        mml.bfgs(lambda x: x**2, jnp.ones(3))
    with pytest.raises(ValueError, match="step_size"):
        mml.gradient_descent(zoo.booth, jnp.zeros(2), step_size="wolfe")
    # a schedule of a vector step met "while_loop body function carry input and carry output
    # must have equal types"
    with pytest.raises(ValueError, match="step_size: a schedule must return a real scalar"):
        mml.gradient_descent(zoo.booth, jnp.zeros(2), step_size=lambda k: jnp.full(2, 0.1))
    with pytest.raises(ValueError, match="linear_solver"):
        mml.newton_minimise(zoo.booth, jnp.zeros(2), linear_solver="lu")
    with pytest.raises(ValueError, match="memory"):
        mml.lbfgs(zoo.booth, jnp.zeros(2), memory=0)
    with pytest.raises(ValueError, match="momentum"):
        mml.gradient_descent(zoo.booth, jnp.zeros(2), momentum=1.0)
    # a traced momentum was told to be "a float in [0, 1)", which it was
    with pytest.raises(ValueError, match="momentum is static"):
        jax.jit(lambda m: mml.gradient_descent(zoo.booth, jnp.zeros(2), momentum=m).x)(0.5)
    with pytest.raises(TypeError, match="args"):
        mml.bfgs(zoo.booth, jnp.zeros(2), args=1.0)
    with pytest.raises(TypeError, match="optimizer"):
        mml.optax_minimise(zoo.booth, jnp.zeros(2), "adam")


def test_a_max_iter_that_is_no_int_is_a_type_error():
    # "10" and 10.0 were a ValueError here, a TypeError for the root finders and curve_fit
    for solver in (mml.bfgs, mml.lbfgs, mml.newton_minimise, _gd, _optax_lbfgs):
        for bad in ("10", 10.0):
            with pytest.raises(TypeError, match="max_iter must be a Python int"):
                solver(zoo.booth, jnp.zeros(2), max_iter=bad)
    with pytest.raises(ValueError, match="max_iter must be >= 0"):
        mml.bfgs(zoo.booth, jnp.zeros(2), max_iter=-1)
    res = mml.bfgs(zoo.booth, jnp.zeros(2), max_iter=np.int64(0))  # the start alone
    assert int(res.n_iter) == 0 and int(res.status) == Status.MAX_ITER
    for bad in ("10", 10.0):  # history likewise
        with pytest.raises(TypeError, match="history must be a bool or an int"):
            mml.bfgs(zoo.booth, jnp.zeros(2), history=bad)
    with pytest.raises(ValueError, match="non-negative"):
        mml.bfgs(zoo.booth, jnp.zeros(2), history=-1)


@pytest.mark.parametrize("solver", ["bfgs", "newton_minimise", "gradient_descent"])
def test_a_max_iter_beyond_int32_is_no_limit_not_a_wrapped_one(solver):
    # The iteration counters are int32: max_iter = 2**31 wrapped to -2**31 (x0 returned with
    # MAX_ITER after no iteration), and 2**32 + 5 to 5.
    for max_iter in (2**31, 2**32 + 1, 2**40):
        res = getattr(mml, solver)(zoo.booth, jnp.zeros(2), max_iter=max_iter)
        assert bool(res.success), (max_iter, mml.Status(int(res.status)))
        np.testing.assert_allclose(res.x, [1.0, 3.0], rtol=1e-6)


def test_float_options_may_be_traced_and_are_checked():
    # The module's contract: tolerances and a fixed step size are traced (they failed in float()).
    np.testing.assert_allclose(
        jax.jit(lambda r: mml.bfgs(zoo.booth, jnp.zeros(2), rtol=r).x)(1e-9), [1.0, 3.0]
    )
    np.testing.assert_allclose(
        jax.jit(lambda a: mml.newton_minimise(zoo.booth, jnp.zeros(2), atol=a).x)(1e-9), [1.0, 3.0]
    )
    fixed = jax.jit(lambda s: mml.gradient_descent(zoo.booth, jnp.zeros(2), step_size=s).x)
    np.testing.assert_allclose(fixed(0.05), [1.0, 3.0], atol=1e-6)
    # A traced step size that is not finite and positive, which the eager call refuses, stops at
    # x0 (a negative one ascended to NONFINITE, 0 ran to MAX_ITER)
    run = jax.jit(
        jax.vmap(lambda s: mml.gradient_descent(zoo.booth, jnp.zeros(2), step_size=s, max_iter=50))
    )
    res = run(jnp.array([0.05, -0.05, 0.0, jnp.nan, jnp.inf]))
    np.testing.assert_array_equal(res.status[1:], int(Status.INVALID_INPUT))
    np.testing.assert_array_equal(res.x[1:], 0.0)
    assert int(res.status[0]) == Status.MAX_ITER and int(res.n_iter[1]) == 0
    for bad in (0.0, -1.0, np.inf):
        with pytest.raises(ValueError, match="step_size must be a finite number > 0"):
            mml.gradient_descent(zoo.booth, jnp.zeros(2), step_size=bad)
    res = mml.gradient_descent(
        zoo.booth, jnp.zeros(2), step_size=np.float32(0.05), momentum=np.float32(0.5)
    )
    assert bool(res.success)
    with pytest.raises(ValueError, match="atol must be a real scalar"):
        mml.bfgs(zoo.booth, jnp.zeros(2), atol=jnp.array([1e-3, 1e-3]))
    with pytest.raises(ValueError, match="no elements"):
        mml.bfgs(lambda x: jnp.sum(x**2), jnp.zeros(0))


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_nan_start_is_nonfinite(name):
    solver = {**SOLVERS, "gd": _gd}[name]
    kw = {"max_iter": 5000} if name == "gd" else {}
    res = solver(two_d, jnp.array([jnp.nan, 1.0]), args=(TWO_D_INDEX[2],), **kw)
    assert int(res.status) == mml.Status.NONFINITE
    assert int(res.n_iter) == 0 and not bool(res.success)


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_a_nan_value_at_x0_reports_the_gradient_there(name):
    # f NaN at x0 with a finite gradient (log of a negative: JAX's 1/x): every solver ends
    # NONFINITE at x0; Newton reported grad_norm NaN (it tests the gradient in its steps, and
    # made none), the others the gradient at x0.
    solver = {**SOLVERS, "gd": _gd}[name]
    res = solver(lambda x: jnp.log(x[0]) + x[1] ** 2, jnp.array([-1.0, 1.0]))
    assert int(res.status) == mml.Status.NONFINITE
    np.testing.assert_allclose(res.grad_norm, 2.0)


def test_raise_for_status_on_failure():
    res = mml.bfgs(zoo.rosenbrock, jnp.asarray([-1.2, 1.0]), max_iter=3)
    assert int(res.status) == mml.Status.MAX_ITER
    with pytest.raises(mml.SolverError, match="MAX_ITER"):
        mml.raise_for_status(res)


def test_optax_first_order_and_counts():
    """A plain first-order optax optimiser (no stored value): one evaluation per step."""
    opt = optax.adam(0.05)
    res = mml.optax_minimise(zoo.booth, jnp.zeros(2), opt, max_iter=5000, rtol=1e-6, atol=1e-6)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [1.0, 3.0], atol=1e-5)
    assert int(res.n_fev) == int(res.n_iter) + 1


@pytest.mark.parametrize("n", [2, 3, 4])
def test_jacobi_eigh_small_hessians(n):
    """The unrolled Jacobi diagonalisation Newton uses for tiny Hessians (no LAPACK per matrix)."""
    from jaxopt_mml._minimise_newton import _jacobi_eigh

    m = np.random.default_rng(n).normal(size=(n, n))
    m = m + m.T
    lam, v = jax.jit(_jacobi_eigh)(jnp.asarray(m))
    np.testing.assert_allclose(np.sort(lam), np.linalg.eigvalsh(m), atol=1e-12)
    np.testing.assert_allclose(v @ jnp.diag(lam) @ v.T, m, atol=1e-12)
    np.testing.assert_allclose(v.T @ v, np.eye(n), atol=1e-12)
    lam0, v0 = _jacobi_eigh(jnp.diag(jnp.arange(1.0, n + 1)))  # already diagonal: no NaN
    np.testing.assert_allclose(lam0, np.arange(1.0, n + 1))


# --------------------------------------------------------------------------- regressions

ALL_SOLVERS = {**SOLVERS, "newton_cg": functools.partial(mml.newton_minimise, linear_solver="cg")}
ALL_SOLVERS["gd"] = _gd


def _far_quadratic(x, c):
    return jnp.sum((x - c) ** 2)


def _offset_quadratic(x, c):
    return c + jnp.sum((x - 3.0) ** 2)


@pytest.mark.parametrize("name", sorted(ALL_SOLVERS))
def test_far_start_or_offset_is_not_converged_at_the_start(name):
    # |g| <= atol + rtol min(|f|, |f0|) held at x0 for f = |x - c|^2 with |c| >= 2 / rtol, and
    # for a large constant in f: SUCCESS with n_iter = 0 at x0.
    solver = ALL_SOLVERS[name]
    res = solver(_far_quadratic, jnp.zeros(2, jnp.float32), args=(jnp.float32(1e4),))
    assert bool(res.success) and int(res.n_iter) > 0
    np.testing.assert_allclose(res.x, 1e4, rtol=1e-6)
    res = solver(_far_quadratic, jnp.zeros(2), args=(1e9,))
    assert bool(res.success) and int(res.n_iter) > 0
    np.testing.assert_allclose(res.x, 1e9, rtol=1e-12)
    res = solver(_offset_quadratic, jnp.zeros(2), args=(1e9,))
    assert bool(res.success) and int(res.n_iter) > 0
    np.testing.assert_allclose(res.x, 3.0, atol=1e-7)


def test_float32_offset_beyond_resolution_ends_with_a_status():
    # 1e9 + |x - 3|^2 is constant in float32 near x = 0 (its ulp is 64): never MAX_ITER.
    x0 = jnp.zeros(2, jnp.float32)
    for name, solver in ALL_SOLVERS.items():
        res = solver(_offset_quadratic, x0, args=(jnp.float32(1e9),), max_iter=500)
        assert int(res.status) in (Status.SUCCESS, Status.PRECISION_LIMIT), name


def _helical(x):  # Fletcher & Powell's helical valley: minimum 0 at (1, 0, 0), a cut at x0 < 0
    theta = jnp.arctan2(x[1], x[0]) / (2 * jnp.pi)
    return 100 * ((x[2] - 10 * theta) ** 2 + (jnp.sqrt(x[0] ** 2 + x[1] ** 2) - 1) ** 2) + x[2] ** 2


def _abs_sum(x):
    return jnp.sum(jnp.abs(x - 1.0))


def test_step_cut_short_by_the_line_search_is_not_convergence():
    # Newton's line search shrank to a tiny step on the branch cut: SUCCESS at f = 71, |g| = 174.
    res = mml.newton_minimise(_helical, jnp.array([-8.13677706, 1.32319409, -4.21337009]))
    gmax = float(jnp.max(jnp.abs(jax.grad(_helical)(res.x))))
    assert bool(res.success) == (gmax <= 1e-6)
    # A kink: the quasi-Newton searches end in tiny steps with |g| = 1 (was SUCCESS).
    for solver in (mml.bfgs, mml.lbfgs):
        res = solver(_abs_sum, jnp.array([0.0, 3.0]))
        assert not bool(res.success)
        assert int(res.status) == Status.STAGNATED
        assert int(res.n_iter) < 20


def test_dense_newton_keeps_a_positive_definite_ill_conditioned_hessian():
    # Eigenvalues 2 and 2e10: the small one was lifted to sqrt(eps) 2e10 (MAX_ITER).
    def f(x):
        return (x[0] - 1.0) ** 2 + 1e10 * (x[1] - 1.0) ** 2

    res = mml.newton_minimise(f, jnp.zeros(2), linear_solver="dense")
    assert bool(res.success) and int(res.n_iter) <= 2
    np.testing.assert_allclose(res.x, [1.0, 1.0], rtol=1e-12)


def test_dense_newton_modified_step_is_not_convergence():
    # Beale far out in a valley: the Hessian's condition (1e16) lifts an eigenvalue, the step is
    # tiny along it, and the Cauchy test called that converged with |g| = 2e-3.
    res = mml.newton_minimise(zoo.BY_NAME["beale"].f, jnp.array([-1.11120571, -2.79626441]))
    gmax = float(jnp.max(jnp.abs(jax.grad(zoo.BY_NAME["beale"].f)(res.x))))
    assert bool(res.success) == (gmax <= 1e-6)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_newton_nan_gradient_where_f_is_finite_is_nonfinite(solver):
    # |x| at 0 has a NaN gradient in JAX: no Newton step exists there. It read
    # LINESEARCH_FAILED (advice: check the gradient), where BFGS and the others say NONFINITE.
    def f(x):
        return jnp.sqrt(jnp.sum(x**2)) + jnp.sum((x - 1.0) ** 2)

    res = mml.newton_minimise(f, jnp.zeros(2), linear_solver=solver)
    assert int(res.status) == Status.NONFINITE
    np.testing.assert_array_equal(res.x, 0.0)


@pytest.mark.parametrize("solver", ["dense", "cg"])
def test_newton_short_steps_from_huge_curvature_are_not_convergence(solver):
    # f'' is infinite at 0 (|x|^1.5): the Newton step is 0, the search fails, and that passed
    # for rounding (SUCCESS at x = 0, |g| = 2). Now a failure, as scipy's Newton-CG reports.
    def kink(x):
        return jnp.sum((x - 1.0) ** 2 + jnp.abs(x) ** 1.5)

    res = mml.newton_minimise(kink, jnp.zeros(2), linear_solver=solver)
    assert not bool(res.success)
    assert int(res.status) == Status.LINESEARCH_FAILED

    # f'' = 1e10 near 0: a step of 2e-8 passed the Cauchy test at |g| = 1.5; the scaled
    # gradient test sends the run on to the minimum.
    def steep(x):
        return jnp.sum((x - 1.0) ** 2 + 0.5 * jnp.sqrt(x**2 + 1e-20))

    res = mml.newton_minimise(steep, jnp.zeros(2), linear_solver=solver)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [0.75, 0.75], rtol=1e-10)


def test_newton_cg_truncated_step_is_not_taken_for_convergence():
    # float32 Rosenbrock n = 4 from this start: a CG step stopped at the forcing tolerance after
    # one iteration (|p| = 6e-5, the Newton step 0.019; Hessian condition 2500) passed the Cauchy
    # test: SUCCESS 0.018 from the local minimum, 30x the step tolerance, |g| = 0.013.
    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    x_local = np.array([-0.77565923, 0.61309337, 0.38206285, 0.14597202])
    x0 = jnp.array([-1.6639386, 1.3305765, 1.1483933, -1.0425222], jnp.float32)
    res = mml.newton_minimise(rosen, x0, linear_solver="cg")
    assert bool(res.success)
    tol = float(jnp.sqrt(jnp.finfo(jnp.float32).eps)) * (1.0 + np.max(np.abs(x_local)))
    assert np.max(np.abs(np.asarray(res.x) - x_local)) <= 3.0 * tol, res.x


BACKTRACKING = optax.chain(
    optax.sgd(1.0), optax.scale_by_backtracking_linesearch(max_backtracking_steps=20)
)


def test_optax_backtracking_without_stored_gradient():
    # optax's default store_grad=False: "Value or gradient not found in the state".
    target = jnp.array([1.0, 2.0])
    res = mml.optax_minimise(lambda x: jnp.sum((x - target) ** 2), jnp.zeros(2), BACKTRACKING)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, target, atol=1e-8)


def test_optax_n_fev_counts_the_reevaluation_after_a_non_finite_line_search():
    # A line search whose every trial is NaN stores that value (and step 0);
    # optax.value_and_grad_from_state then evaluates f again at x, which n_fev missed.
    calls = []

    def f(x):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.where(x[0] < 0.3, jnp.nan, (x[0] - 0.31) ** 2)

    opt = optax.chain(
        optax.sgd(1.0),
        optax.scale_by_backtracking_linesearch(max_backtracking_steps=3, store_grad=True),
    )
    res = mml.optax_minimise(f, jnp.array([1.0]), opt, max_iter=5)
    jax.effects_barrier()
    assert int(res.n_fev) == len(calls) == 10


def test_optax_line_search_followed_by_a_transformation_reports_x_own_value_and_gradient():
    # The value and gradient that a line search stores in its state were reused as f's at the
    # new x; with a transformation after the search, they belong to another point: reported
    # value 3.3e-18 and max|g| 3.5e-9 against f(x) = 1.0e-17 and 1.0e-8 (185 iterations on
    # wrong gradients; 33 now).
    def f(x):
        return jnp.sum((x - 1.0) ** 2 * jnp.array([1.0, 5.0]))

    opt = optax.chain(optax.lbfgs(), optax.scale(0.5))
    res = mml.optax_minimise(f, jnp.array([3.0, -2.0]), opt)
    assert bool(res.success)
    np.testing.assert_allclose(res.value, f(res.x), rtol=1e-12, atol=0)
    np.testing.assert_allclose(
        res.grad_norm, jnp.max(jnp.abs(jax.grad(f)(res.x))), rtol=1e-12, atol=0
    )


@pytest.mark.parametrize("solver", ["gradient_descent", "newton_minimise", "bfgs", "lbfgs"])
def test_float32_start_with_float64_data_runs_in_float32(solver):
    # Under x64, f computing with float64 data from a float32 x0 returned float64: the loop's
    # carry changed dtype and tracing failed.
    data = np.array([1.0, 2.0])  # float64
    res = getattr(mml, solver)(lambda u: jnp.sum((u - data) ** 2), np.zeros(2, np.float32))
    assert res.x.dtype == jnp.float32 and bool(res.success)
    np.testing.assert_allclose(res.x, data, rtol=1e-4)


@pytest.mark.parametrize("solver", ["gradient_descent", "newton_minimise", "bfgs", "lbfgs"])
def test_a_constant_objective_returning_a_python_float_is_minimised_at_the_start(solver):
    # f = lambda x: 1.0 passed the scalar check, then failed with AttributeError ('float'
    # object has no attribute 'astype'); scipy returns x0 with success.
    res = getattr(mml, solver)(lambda x: 1.0, jnp.array([0.5, -1.0]))
    assert bool(res.success) and int(res.n_iter) == 0
    np.testing.assert_array_equal(res.x, [0.5, -1.0])
    assert float(res.value) == 1.0 and float(res.grad_norm) == 0.0


@pytest.mark.parametrize("solver", ["bfgs", "lbfgs", "newton_minimise", "gradient_descent"])
def test_objective_unbounded_below_is_not_success(solver):
    # BFGS ran x0 + x1^2 off to x ~ 1e154, reset to steepest descent there, and its unit-length
    # first trial passed the Cauchy test (SUCCESS with |g| = 2e77).
    res = getattr(mml, solver)(lambda u: u[0] + u[1] ** 2, jnp.array([0.5, 0.5]), max_iter=400)
    assert not bool(res.success), (res.x, mml.Status(int(res.status)))


def test_gradient_descent_with_an_offset_stops_at_the_rounding_floor_not_before():
    # Armijo accepted a doubled trial step that overshot across the valley to an equal value,
    # and that was read as PRECISION_LIMIT ~9000 ulps above the minimum; now the step is not
    # taken and a shorter one tried, and PRECISION_LIMIT waits for a step whose predicted
    # decrease is below f's rounding.
    offset, cond = 5.0, 1000.0
    res = mml.gradient_descent(
        lambda u: 0.5 * (u[0] ** 2 + cond * u[1] ** 2) + offset,
        jnp.array([1.0, 1.0]),
        max_iter=50_000,
    )
    ulp = np.spacing(offset)
    assert float(res.value) - offset <= 1000 * ulp, (float(res.value) - offset) / ulp
    assert mml.Status(int(res.status)) in (mml.Status.SUCCESS, mml.Status.PRECISION_LIMIT)


def _with_metrics(p, x, y):
    """A least-squares loss that also returns its predictions and a metric (has_aux=True)."""
    pred = x @ p["w"] + p["b"]
    loss = 0.5 * jnp.mean((pred - y) ** 2) + 0.05 * jnp.sum(p["w"] ** 2)
    return loss, {"pred": pred, "mae": jnp.mean(jnp.abs(pred - y))}


@pytest.mark.parametrize("name", sorted(SOLVERS) + ["gd"])
def test_has_aux_returns_the_auxiliary_output_at_the_solution(name):
    solver = {**SOLVERS, "gd": _gd}[name]
    rng = np.random.default_rng(0)
    x, y = jnp.asarray(rng.standard_normal((30, 3))), jnp.asarray(rng.standard_normal(30))
    p0 = {"w": jnp.zeros(3), "b": jnp.asarray(0.0)}
    res = solver(_with_metrics, p0, args=(x, y), has_aux=True)
    plain = solver(lambda p, x, y: _with_metrics(p, x, y)[0], p0, args=(x, y))
    assert bool(res.success)
    chex.assert_trees_all_close(res.x, plain.x, rtol=1e-12)
    chex.assert_trees_all_close(res.aux, _with_metrics(res.x, x, y)[1], rtol=1e-12)
    assert plain.aux is None
    # the auxiliary output is differentiable through the solution (implicit) and the data
    g = jax.grad(lambda yy: solver(_with_metrics, p0, args=(x, yy), has_aux=True).aux["mae"])(y)

    def mae(yy):  # (at solutions found to full precision by BFGS)
        return _with_metrics(plain_solve(mml.bfgs, x, yy), x, yy)[1]["mae"]

    h = 1e-6
    e = jnp.zeros(30).at[4].set(h)
    np.testing.assert_allclose(g[4], (mae(y + e) - mae(y - e)) / (2 * h), rtol=1e-5, atol=1e-8)


def plain_solve(solver, x, y):
    p0 = {"w": jnp.zeros(3), "b": jnp.asarray(0.0)}
    return solver(_with_metrics, p0, args=(x, y), has_aux=True, rtol=1e-13, atol=1e-13).x


def test_has_aux_needs_a_pair():
    with pytest.raises(TypeError, match="has_aux=True, f must return a pair"):
        mml.bfgs(lambda x: jnp.sum(x**2), jnp.ones(2), has_aux=True)
    with pytest.raises(TypeError, match="has_aux"):
        mml.bfgs(lambda x: jnp.sum(x**2), jnp.ones(2), has_aux="yes")
    with pytest.raises(ValueError, match="scalar"):
        mml.bfgs(lambda x: (x**2, 0.0), jnp.ones(2), has_aux=True)


def test_a_wrong_f_for_has_aux_is_named():
    # The value of a pair that is not a scalar named neither has_aux nor the pair; a pair
    # without has_aux=True did not suggest it; a scalar under has_aux=True was "got
    # DynamicJaxprTracer".
    with pytest.raises(ValueError, match=r"has_aux=True, the value .* shape \(2,\)"):
        mml.bfgs(lambda x: (x**2, 0.0), jnp.ones(2), has_aux=True)
    with pytest.raises(ValueError, match="needs has_aux=True"):
        mml.bfgs(lambda x: (jnp.sum(x**2), 0.0), jnp.ones(2))
    with pytest.raises(TypeError, match=r"got an array of shape \(\)"):
        mml.bfgs(lambda x: jnp.sum(x**2), jnp.ones(2), has_aux=True)
    with pytest.raises(TypeError, match="got a tuple of length 3"):
        mml.bfgs(lambda x: (jnp.sum(x**2), 0.0, 1.0), jnp.ones(2), has_aux=True)
