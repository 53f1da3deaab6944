"""Roots: newton_raphson (scalar, per element, systems), bisection, bracketed_newton.

scipy.optimize (newton, brentq, fsolve) is the oracle on the shared zoo; closed forms check the
implicit derivatives. Compiles are kept few: most checks reuse one jitted function per shape.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxopt_mml as mml
from jaxopt_mml import _roots_common
from jaxopt_mml._status import Status
from tests.zoo.roots import SCALAR, SYSTEMS


def cubic(x, c):
    return x**3 - c


def cubic2(x, c):
    return x**3 - 2.0 * x - c


# --------------------------------------------------------------------------- oracles on the zoo


@pytest.mark.parametrize("p", SCALAR, ids=lambda p: p.name)
def test_scalar_zoo_matches_scipy(p):
    res = mml.newton_raphson(p.f, p.x0, args=p.args)
    oracle = so.newton(p.f_np, p.x0, fprime=p.fprime, args=p.args, tol=1e-14, maxiter=100)
    assert int(res.status) == Status.SUCCESS, mml.status_message(res.status)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, oracle, rtol=1e-12, atol=1e-14)
    # fun is f at x (up to the rounding of f under jit, where XLA may fuse and reorder)
    np.testing.assert_allclose(res.fun, p.f_np(res.x, *p.args), rtol=0, atol=1e-14)
    if p.root is not None:
        np.testing.assert_allclose(res.x, p.root, rtol=1e-12)
    assert int(res.n_fev) == 2 * int(res.n_iter) + 2

    brent = so.brentq(p.f_np, *p.bracket, args=p.args, xtol=1e-15)
    bis = mml.bisection(p.f, *p.bracket, args=p.args)
    safe = mml.bracketed_newton(p.f, *p.bracket, args=p.args)
    for r in (bis, safe):
        assert int(r.status) == Status.SUCCESS
        lo, hi = p.bracket
        assert lo <= float(r.x) <= hi
    # bisection stops at a half-width below atol + rtol |x| (default eps**0.75 ~ 1.8e-12)
    np.testing.assert_allclose(bis.x, brent, rtol=0, atol=4e-12 * (1 + abs(brent)))
    np.testing.assert_allclose(safe.x, brent, rtol=1e-12, atol=1e-14)
    assert int(safe.n_iter) <= 10 < int(bis.n_iter)  # Newton takes over inside the bracket


@pytest.mark.parametrize("p", SYSTEMS, ids=lambda p: p.name)
def test_system_zoo_matches_fsolve(p):
    res = mml.newton_raphson(p.f, jnp.asarray(p.x0), args=p.args)
    oracle = so.fsolve(lambda x: np.asarray(p.f(jnp.asarray(x), *p.args)), p.x0, xtol=1e-14)
    assert int(res.status) == Status.SUCCESS, mml.status_message(res.status)
    chex.assert_shape(res.x, np.shape(p.x0))
    chex.assert_shape(res.status, ())
    np.testing.assert_allclose(res.x, oracle, rtol=1e-9, atol=1e-12)
    assert float(jnp.max(jnp.abs(res.fun))) < 1e-10
    if p.root is not None:
        np.testing.assert_allclose(res.x, p.root, rtol=1e-12)


def test_system_pytree():
    def f(x, c):
        return {"a": x["a"] ** 2 - c, "b": x["b"] - x["a"] * jnp.array([1.0, 2.0])}

    x0 = {"a": jnp.asarray(1.0), "b": jnp.zeros(2)}
    res = mml.newton_raphson(f, x0, args=(2.0,))
    assert int(res.status) == Status.SUCCESS
    chex.assert_trees_all_close(
        res.x, {"a": np.sqrt(2.0), "b": np.sqrt(2.0) * np.array([1.0, 2.0])}, rtol=1e-12
    )
    assert jax.tree.structure(res.fun) == jax.tree.structure(x0)


def test_system_of_mixed_dtypes_keeps_each_leafs_dtype():
    # A float32 leaf beside a float64 one came back float64 (x and fun), where the minimisers,
    # the constrained solvers and ravel_pytree's unravel keep x0's dtypes; solved in float64.
    def f(x, c):
        return (x[0] ** 2 - c, {"b": x[1]["b"] - x[0] * jnp.array([1.0, 2.0])})

    x0 = (jnp.asarray(1.0, jnp.float64), {"b": jnp.zeros(2, jnp.float32)})
    res, tangent = jax.jvp(lambda c: mml.newton_raphson(f, x0, args=(c,)), (2.0,), (1.0,))
    assert int(res.status) == Status.SUCCESS
    chex.assert_trees_all_equal_structs(res.x, x0)
    chex.assert_trees_all_equal_dtypes(res.x, x0)
    chex.assert_trees_all_equal_dtypes(res.fun, x0)
    chex.assert_trees_all_equal_dtypes(tangent.x, x0)
    root = np.sqrt(2.0)
    np.testing.assert_allclose(res.x[0], root, rtol=1e-12)
    np.testing.assert_allclose(res.x[1]["b"], root * np.array([1.0, 2.0]), rtol=1e-7)
    d = 0.5 / root  # d sqrt(c) / dc
    np.testing.assert_allclose(tangent.x[1]["b"], d * np.array([1.0, 2.0]), rtol=1e-6)


# ------------------------------------------------------------------------- per element (arrays)

_ELEMENTWISE = jax.jit(
    lambda x0, c: mml.newton_raphson(cubic2, x0, args=(c,), elementwise=True),
)


def test_elementwise_many_roots_match_scipy_array_newton():
    rng = np.random.default_rng(1)
    c = rng.uniform(2, 10, 2000) * rng.choice([-1.0, 1.0], 2000)
    x0 = 2.0 * np.sign(c)
    res = _ELEMENTWISE(x0, c)
    oracle = so.newton(
        lambda x, c: x**3 - 2 * x - c, x0, fprime=lambda x, c: 3 * x**2 - 2, args=(c,), tol=1e-14
    )
    chex.assert_shape([res.x, res.fun, res.status, res.n_iter, res.success], (2000,))
    assert bool(jnp.all(res.success))
    np.testing.assert_allclose(res.x, oracle, rtol=1e-13)
    assert int(jnp.max(res.n_iter)) <= 8


def test_elementwise_each_element_has_its_own_status():
    # c = NaN, a root at x0, a trap with no nearby root, an ordinary one
    x0 = jnp.array([1.0, 2.0, 0.0, 1.5])
    c = jnp.array([jnp.nan, 4.0, -2.0, 7.0])
    res = mml.newton_raphson(
        lambda x, c: jnp.where(c == -2.0, x**3 - 2 * x + 2, cubic2(x, c)),
        x0,
        args=(c,),
        elementwise=True,
    )
    status = np.asarray(res.status)
    assert status[0] == Status.NONFINITE and int(res.n_iter[0]) == 0
    assert status[1] == Status.SUCCESS and int(res.n_iter[1]) == 0  # 8 - 4 - 4 = 0
    assert status[2] in (Status.LINESEARCH_FAILED, Status.STAGNATED)
    assert status[3] == Status.SUCCESS
    assert np.all(np.isfinite(np.asarray(res.x)))


def test_elementwise_broadcasts_x0_and_args():
    c = jnp.array([1.0, 8.0, 27.0, 64.0])
    scale = jnp.array([[1.0], [8.0]])  # (2, 1) against (4,): shape (2, 4)
    res = mml.newton_raphson(
        lambda x, c, s, k: x**3 - k * c * s, 1.0, args=(c, scale, 1.0), elementwise=True
    )
    chex.assert_shape(res.x, (2, 4))
    np.testing.assert_allclose(res.x, np.cbrt(np.asarray(c) * np.asarray(scale)), rtol=1e-13)


def test_elementwise_takes_a_list_of_starts_as_scipy_does():
    # scipy.optimize.newton takes x0 = [1.0, 2.0]; elementwise=True refused it as a pytree.
    f = lambda x, c: x**2 - c  # noqa: E731
    c = jnp.array([2.0, 3.0])
    res = mml.newton_raphson(f, [1.0, 2.0], args=(c,), elementwise=True)
    chex.assert_trees_all_equal(
        res, mml.newton_raphson(f, jnp.array([1.0, 2.0]), args=(c,), elementwise=True)
    )
    np.testing.assert_allclose(res.x, np.sqrt([2.0, 3.0]), rtol=1e-13)


def test_elementwise_takes_a_numpy_bool_and_refuses_other_values():
    # np.True_ (the flags' NumPy bool) passed the check `in (None, True, False)` but not
    # `is True`, and the elements were solved as one system with one status; so were 1 and 1.0
    c = jnp.array([4.0, -1.0])
    res = mml.newton_raphson(lambda x, c: x**2 - c, jnp.ones(2), args=(c,), elementwise=np.True_)
    assert res.status.shape == (2,) and res.status.tolist() == [0, int(mml.Status.SINGULAR)]
    for bad in (1, 1.0, jnp.ones(2)):
        with pytest.raises(TypeError, match="elementwise must be None, True or False"):
            mml.newton_raphson(lambda x: x, 1.0, elementwise=bad)


def test_elementwise_chunked_path(monkeypatch):
    monkeypatch.setattr(_roots_common, "CHUNK", 64)
    monkeypatch.setattr(_roots_common, "MASKED_CHUNK", 64)
    n = 997  # prime: padded to whole chunks
    c = jnp.linspace(1.0, 30.0, n)
    res = mml.newton_raphson(cubic, jnp.ones(n), args=(c,), elementwise=True)
    chex.assert_shape(res.x, (n,))
    assert bool(jnp.all(res.success))
    np.testing.assert_allclose(res.x, np.cbrt(np.asarray(c)), rtol=1e-13)
    # the root's derivative through the chunked solve (implicit): d cbrt(c)/dc = c^(-2/3) / 3
    grad = jax.grad(
        lambda c: mml.newton_raphson(cubic, jnp.ones(n), args=(c,), elementwise=True).x.sum()
    )(c)
    np.testing.assert_allclose(grad, np.asarray(c) ** (-2 / 3) / 3, rtol=1e-12)
    c = c[:960]  # 960 = 15 chunks of 64
    bis = mml.bisection(cubic, 0.0, 4.0, args=(c,))
    np.testing.assert_allclose(bis.x, np.cbrt(np.asarray(c)), atol=1e-11)


def test_scalar_x0_with_shared_vector_args():
    coeffs = jnp.array([1.0, 0.0, -2.0])  # x^2 - 2, shared data in args (auto scalar mode)
    res = mml.newton_raphson(lambda x, p: jnp.polyval(p, x), 1.0, args=(coeffs,))
    np.testing.assert_allclose(res.x, np.sqrt(2.0), rtol=1e-14)


def test_vmap_of_scalar_solver_equals_elementwise():
    c = jnp.linspace(2.0, 10.0, 7)
    x0 = jnp.full(7, 2.0)
    vmapped = jax.vmap(lambda x0, c: mml.newton_raphson(cubic2, x0, args=(c,)))(x0, c)
    elementwise = _ELEMENTWISE(x0, c)
    chex.assert_trees_all_close(vmapped, elementwise, rtol=1e-14, atol=1e-14)


def _trap_zoo(x, k):
    """One scalar equation per k, for per-element tests: the traps and the edge cases."""
    safe_log = jnp.log(jnp.where(x > 0, x, 1.0)) + jnp.where(x > 0, 0.0, jnp.nan)
    eqs = [
        jnp.arctan(x),  # 0: plain Newton diverges from 2
        x**3 - 2 * x + 2,  # 1: plain Newton cycles from 0; a local minimum of |f|
        x**2 + 1,  # 2: f' = 0 at 0 (SINGULAR); no real root
        safe_log,  # 3: Newton from 20 steps to x < 0 (NaN): backtracking
        x**3 - 8,  # 4: a root at the start (x0 = 2)
        jnp.arctan(x) - 1e-300,  # 5: f' underflows far out: a non-finite step (SINGULAR)
    ]
    return jnp.select([k == i for i in range(len(eqs))], eqs, jnp.nan)


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # 1e200 in float32
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_elementwise_traps_equal_the_scalar_solver(dtype):
    # every status path of the masked per-element loop against the scalar solver (vmap)
    x0 = jnp.array([2.0, 0.0, 0.0, 0.5, 20.0, 2.0, 1e200, jnp.inf, 2.0], dtype)
    k = jnp.array([0, 1, 2, 2, 3, 4, 5, 0, 4])
    res = mml.newton_raphson(_trap_zoo, x0, args=(k,), elementwise=True, max_iter=60)
    one = jax.vmap(lambda x0, k: mml.newton_raphson(_trap_zoo, x0, args=(k,), max_iter=60))(x0, k)
    chex.assert_trees_all_equal(res.status, one.status)
    chex.assert_trees_all_equal(res.n_iter, one.n_iter)
    chex.assert_trees_all_equal(res.x, one.x)
    assert res.x.dtype == res.fun.dtype == dtype
    if dtype == jnp.float32:  # 1e200 is inf in float32: the same statuses up to that
        return
    status = [Status(int(s)) for s in res.status]
    assert status[0] == status[4] == Status.SUCCESS
    assert status[1] in (Status.LINESEARCH_FAILED, Status.STAGNATED)
    assert status[3] not in (Status.SUCCESS, Status.NONFINITE, Status.MAX_ITER)  # no real root
    assert status[2] == status[6] == Status.SINGULAR and int(res.n_iter[2]) == 1
    assert status[5] == status[8] == Status.SUCCESS and int(res.n_iter[5]) == 0
    assert status[7] == Status.NONFINITE and int(res.n_iter[7]) == 0
    assert np.all(np.isfinite(np.asarray(res.x)[:7]))
    # vmap over the per-element mode (a batch of arrays) gives the same elements
    both = jax.vmap(
        lambda x0, k: mml.newton_raphson(_trap_zoo, x0, args=(k,), elementwise=True, max_iter=60)
    )(jnp.stack([x0, x0]), jnp.stack([k, k]))
    chex.assert_trees_all_equal(both.status[1], res.status)
    chex.assert_trees_all_equal(both.n_iter[1], res.n_iter)


# ------------------------------------------------------------------------------------ the traps


def test_traps():
    # Plain Newton diverges on arctan from 2 and cycles 0 -> 1 -> 0 on x^3 - 2x + 2.
    res = mml.newton_raphson(jnp.arctan, 2.0)
    assert int(res.status) == Status.SUCCESS and abs(float(res.x)) < 1e-12

    res = mml.newton_raphson(lambda x: x**3 - 2 * x + 2, 0.0)
    # No cycle: it descends |f| to its local minimum at sqrt(2/3) and says it failed there.
    assert int(res.status) in (Status.LINESEARCH_FAILED, Status.STAGNATED)
    assert int(res.n_iter) < 100
    np.testing.assert_allclose(res.x, np.sqrt(2 / 3), rtol=1e-3)
    with pytest.raises(mml.SolverError, match="LINESEARCH_FAILED|STAGNATED"):
        mml.raise_for_status(res)

    res = mml.newton_raphson(lambda x: x**2 + 1, 0.0)  # f' = 0 at the start
    assert int(res.status) == Status.SINGULAR and int(res.n_iter) <= 1
    res = mml.newton_raphson(lambda x: x**2 + 1, 0.5)  # no real root: fails, never NaN
    assert int(res.status) != Status.SUCCESS and np.isfinite(float(res.x))

    # Newton from 20 on log(x) steps to x < 0 (NaN): the line search backs off.
    res = mml.newton_raphson(lambda x: jnp.log(x), 20.0)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 1.0, rtol=1e-13)


def test_bracketed_newton_stays_in_bracket():
    # f is NaN outside [0.1, 20]: any step that left the bracket would end in NONFINITE.
    def f(x):
        inside = (x >= 0.1) & (x <= 20.0)
        return jnp.where(inside, jnp.log(jnp.where(inside, x, 1.0)), jnp.nan)

    res = mml.bracketed_newton(f, 0.1, 20.0, x0=20.0)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 1.0, rtol=1e-13)
    res = mml.bracketed_newton(jnp.arctan, -1.0, 10.0, x0=9.0)  # Newton would overshoot
    assert int(res.status) == Status.SUCCESS and abs(float(res.x)) < 1e-12


def test_bracketed_newton_takes_over_near_an_end():
    # A root near an end: the Newton step is about as long as the last bisection, and was
    # never "fast" against it (rtsafe compares with the step before the last): x (1 + x) - c
    # on [0, 1] bisected 38 times, and with atol = 0 ran out of max_iter for c < 1e-30.
    c = jnp.asarray([1e-20, 1e-60, 1e-100, 1e-250])
    for f in (lambda x, c: x * (1 + x) - c, lambda x, c: jnp.expm1(x) - c):
        res = mml.bracketed_newton(f, 0.0, 1.0, args=(c[0],))
        assert int(res.status) == Status.SUCCESS and int(res.n_iter) <= 8
        np.testing.assert_allclose(res.x, 1e-20, rtol=1e-10)
        res = mml.bracketed_newton(f, 0.0, 1.0, args=(c,), atol=0.0)
        assert bool(jnp.all(res.success)) and int(jnp.max(res.n_iter)) <= 40
        np.testing.assert_allclose(res.x, c, rtol=1e-11)
    # A Newton step that rounds onto the end (x - 1e-100 from 0.5 lands on 0 exactly) was never
    # taken: bisection alone, MAX_ITER; now a point eps |x| from that end is tried.
    res = mml.bracketed_newton(lambda x, c: x - c, 0.0, 1.0, args=(c,), atol=0.0)
    assert bool(jnp.all(res.success)) and int(jnp.max(res.n_iter)) <= 25
    np.testing.assert_allclose(res.x, c, rtol=1e-12)
    f32 = jnp.float32
    res = mml.bracketed_newton(lambda x: x - f32(1e-30), f32(0.0), f32(1.0), atol=0.0)
    assert int(res.status) == Status.SUCCESS and int(res.n_iter) <= 10  # was 99 steps
    np.testing.assert_allclose(res.x, 1e-30, rtol=1e-6)


def test_bracketed_newton_tries_the_secant_where_newton_leaves_the_bracket_near_an_end():
    # log1p(x) - c on [0, 1]: f bends below its tangent, every Newton step from the right ends
    # below 0 by about x^2 / 2, and was a bisection until x^2 / 2 < c: 33 steps for c = 1e-20,
    # 55 for 1e-100 with atol = 0 (brentq: 2 steps). The secant of the bracket lands next to c.
    c = jnp.asarray([1e-20, 1e-100, 1e-250])
    res = mml.bracketed_newton(lambda x, c: jnp.log1p(x) - c, 0.0, 1.0, args=(c,), atol=0.0)
    assert bool(jnp.all(res.success)) and int(jnp.max(res.n_iter)) <= 4
    np.testing.assert_allclose(res.x, c, rtol=1e-12)


def test_singular_system_reports_status():
    res = mml.newton_raphson(lambda x: jnp.stack([x[0] ** 2 + 1.0, x[1]]), jnp.zeros(2))
    assert int(res.status) == Status.SINGULAR
    # inconsistent linear equations: steepest descent on |F|^2 then no progress, never NaN
    res = mml.newton_raphson(
        lambda x: jnp.stack([x[0] + x[1] - 1.0, 2 * x[0] + 2 * x[1] - 3.0]), jnp.zeros(2)
    )
    assert int(res.status) != Status.SUCCESS
    assert bool(jnp.all(jnp.isfinite(res.x)))


def test_consistent_dependent_equations_are_solved():
    # J singular everywhere (an equation repeated, or a sum of others), with roots along a
    # line: steepest descent crept to them, MAX_ITER after 100 steps at |F| = 2e-12, where
    # scipy's hybr and lm converge in 6-10 evaluations. The Gauss-Newton step takes them in few.
    def sphere(x):
        return jnp.stack([x @ x - 1, 2 * (x @ x - 1), x[2] - x[0]])

    cases = [
        (lambda x: jnp.stack([x[0] + x[1] - 2, x[0] - x[2], x[1] + x[2] - 2]), np.zeros(3)),
        (sphere, np.array([2.0, 1.0, 0.0])),
        (sphere, np.array([2.0, 1.0, 0.0], np.float32)),
    ]
    for f, x0 in cases:
        x0 = jnp.asarray(x0)
        res = mml.newton_raphson(f, x0)
        assert int(res.status) == Status.SUCCESS and int(res.n_iter) <= 8, (x0, res)
        np.testing.assert_allclose(f(res.x), 0.0, atol=64 * float(jnp.finfo(x0.dtype).eps))


def test_rank_deficient_systems_end_at_roots_or_fail_honestly():
    # F(x) = g(A (x - x*)) with A of rank k < n: the roots are x* + null(A). From random starts
    # 167 of 180 such systems (three g) now end SUCCESS, 13 before; none with F far from 0. A
    # Newton step from an LU solve of a J singular to rounding is noise of size up to 1 / eps
    # along the null space, yet can descend: one of 5e13 went where F was rounding noise
    # (|F| = 5e-4 from 0.3), and the next short step was taken for convergence.
    rng = np.random.default_rng(1)
    n, batch = 4, 24
    ks = np.arange(batch) % 3 + 1
    a = np.stack([rng.standard_normal((n, k)) @ rng.standard_normal((k, n)) for k in ks])
    xs = rng.standard_normal((batch, n))
    x0 = xs + rng.standard_normal((batch, n))

    def f(x, a, xs):
        y = a @ (x - xs)
        return jnp.tanh(y) + 0.1 * jnp.sin(y)

    res = jax.vmap(lambda x0, a, xs: mml.newton_raphson(f, x0, args=(a, xs)))(x0, a, xs)
    fun = np.abs(np.asarray(jax.vmap(f)(res.x, a, xs))).max(axis=1)
    ok = np.asarray(res.status) == Status.SUCCESS
    assert np.all(fun[ok] <= 1e-10), fun[ok]
    assert ok.sum() >= 18, (ok.sum(), np.asarray(res.status))


def test_an_unknown_that_no_equation_reads_is_left_alone():
    # A leaf that f ignores, its equation 0 = 0 (a zero row and column of J): the singular J
    # sent every iteration to steepest descent, MAX_ITER after 100 at |F| = 8e-14, where
    # scipy's hybr and lm converge. It now keeps its value and the others take Newton steps.
    def f(p, c):
        return {"a": p["a"] ** 2 - c, "b": jnp.zeros_like(p["b"])}

    x0 = {"a": jnp.ones(2), "b": jnp.full(3, 7.0)}
    res = mml.newton_raphson(f, x0, args=(2.0,))
    assert int(res.status) == Status.SUCCESS and int(res.n_iter) <= 6
    np.testing.assert_allclose(res.x["a"], np.sqrt(2.0), rtol=1e-14)
    np.testing.assert_array_equal(res.x["b"], 7.0)
    grad = jax.grad(lambda c: mml.newton_raphson(f, x0, args=(c,)).x["a"][0])(2.0)
    np.testing.assert_allclose(grad, 0.5 / np.sqrt(2.0), rtol=1e-12)
    # a component already at its root where its row and column of J vanish (x1^2 at 0)
    res = mml.newton_raphson(lambda x: jnp.stack([x[0] ** 2 - 2, x[1] ** 2]), jnp.array([1.0, 0]))
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, [np.sqrt(2.0), 0.0], rtol=1e-14)
    # an equation that reads no unknown and does not hold has no root: never SUCCESS
    res = mml.newton_raphson(lambda x: jnp.stack([x[0] ** 2 - 2, 1e-14 + 0 * x[1]]), jnp.ones(2))
    assert int(res.status) != Status.SUCCESS


def test_a_short_steepest_descent_step_is_not_convergence():
    # Where J is singular the step is -J^T F; at x1 = -37.8 it is 1e-16 with |F| = 2.8, and the
    # step test took it for convergence (SUCCESS). scipy's hybr fails here too.
    res = mml.newton_raphson(
        lambda x: jnp.stack([x[0] ** 2 - 2.0, jnp.exp(x[1]) - 2.0]), jnp.array([0.0, 2.0])
    )
    assert not bool(res.success) and int(res.status) == Status.SINGULAR
    # no root at all, and a start where the second equation is solved to 1e-13
    res = mml.newton_raphson(
        lambda x: jnp.stack([x[0] ** 2 + 1.0, x[1] - 1.0]), jnp.array([0.0, 1.0 + 1e-13])
    )
    assert not bool(res.success)


@pytest.mark.parametrize(
    "f", [lambda x: jnp.sqrt(jnp.abs(x)) + 1.0, lambda x: jnp.abs(x) ** 0.25 + 1.0]
)
def test_a_short_step_at_a_cusp_is_not_a_root(f):
    # No root (f >= 1); near the cusp at 0 f' is huge, the Newton step tiny, and the step test
    # passed with |f| = 1: SUCCESS, in both modes (scipy's newton: "convergence error").
    for res in (
        mml.newton_raphson(f, -0.7),
        mml.newton_raphson(f, jnp.array([-0.7, 3.0]), elementwise=True),
    ):
        assert not bool(jnp.any(res.success))
    # a root of the same shape is still found: sqrt|x| - 1 at +-1
    res = mml.newton_raphson(
        lambda x: jnp.sqrt(jnp.abs(x)) - 1.0, jnp.array([-0.7, 3.0]), elementwise=True
    )
    assert bool(res.success.all())
    np.testing.assert_allclose(res.x, [-1.0, 1.0], rtol=1e-12)


def test_float32_roots_take_the_last_whole_step():
    # Converged at rounding level after a shortened step, the last step was taken shortened
    # too: 30 ulps off in float32 (3.6e-6 relative), where the whole step squares the error.
    c = jnp.asarray(np.random.default_rng(1).uniform(1e-3, 1e6, 20_000), jnp.float32)
    res = mml.newton_raphson(lambda x, c: x**2 - c, jnp.ones_like(c), args=(c,), elementwise=True)
    assert bool(res.success.all())
    assert float(jnp.max(jnp.abs(res.x - jnp.sqrt(c)) / jnp.sqrt(c))) < 4e-7


def test_max_iter():
    res = mml.newton_raphson(jnp.arctan, 2.0, max_iter=2)
    assert int(res.status) == Status.MAX_ITER and int(res.n_iter) == 2


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_elementwise_max_iter_per_element(dtype):
    # the first element converges within max_iter = 6, the second does not; each equals its
    # scalar solve (status, n_iter, x)
    x0 = jnp.array([2.01, 1e6], dtype)
    c = jnp.array([8.0, 2.0], dtype)
    res = mml.newton_raphson(lambda x, c: x**3 - c, x0, args=(c,), elementwise=True, max_iter=6)
    chex.assert_trees_all_equal(res.status, jnp.array([Status.SUCCESS, Status.MAX_ITER]))
    assert int(res.n_iter[1]) == 6 and res.x.dtype == dtype
    for i in range(2):
        one = mml.newton_raphson(lambda x, c: x**3 - c, x0[i], args=(c[i],), max_iter=6)
        assert int(one.n_iter) == int(res.n_iter[i]) and int(one.status) == int(res.status[i])
        assert float(one.x) == float(res.x[i])
    with pytest.raises(ValueError, match="max_iter"):
        mml.newton_raphson(cubic, x0, args=(1.0,), elementwise=True, max_iter=2**21)


# ------------------------------------------------------------------------------------ brackets


def test_invalid_bracket_is_a_status():
    lower = jnp.array([0.0, 2.0, 3.0, 0.0])
    upper = jnp.array([2.0, 3.0, 0.0, 1.0])  # valid, invalid, reversed, root at an end
    c = jnp.array([2.0, 2.0, 2.0, 1.0])
    for solver in (mml.bisection, mml.bracketed_newton):
        res = solver(cubic, lower, upper, args=(c,))
        np.testing.assert_array_equal(
            res.status, [Status.SUCCESS, Status.BRACKET_INVALID, Status.SUCCESS, Status.SUCCESS]
        )
        np.testing.assert_allclose(np.asarray(res.x)[[0, 2]], np.cbrt(2.0), rtol=1e-11)
        assert float(res.x[3]) == 1.0 and int(res.n_iter[3]) == 0


def test_bracket_nonfinite():
    res = mml.bisection(cubic, jnp.nan, 2.0, args=(1.0,))
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0
    res = mml.bracketed_newton(cubic, 0.0, 2.0, args=(jnp.nan,))
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0


@pytest.mark.parametrize("solver", [mml.bisection, mml.bracketed_newton])
@pytest.mark.parametrize("nan, root", [(-np.nan, 3.0), (np.nan, 1.0)])
def test_nan_at_a_bracket_end_is_nonfinite(solver, nan, root):
    # f is NaN at the lower end. Bracketed Newton's first step shrinks the bracket at its middle
    # and tested the shrunk ends: its status followed the NaN's sign bit and f at the middle
    # (SUCCESS from a bracket whose sign change was never seen, or BRACKET_INVALID) where
    # bisection reports NONFINITE.
    res = solver(lambda x: jnp.where(x < 0, nan, x - root), -1.0, 5.0)
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0


@pytest.mark.parametrize("solver", [mml.bisection, mml.bracketed_newton])
def test_infinite_f_at_a_bracket_end_is_a_sign(solver):
    # log x on [0, 10] (f(0) = -inf) was NONFINITE at the start, where scipy's bisect and brentq
    # find the root: only the sign of f at an end is read (NaN there stays NONFINITE: above).
    # The second element is infinite at both ends: log x - log(1 - x) on [0, 1].
    def f(x, both):
        return jnp.log(x) - jnp.where(both, jnp.log1p(-x), 1.0)

    res = solver(f, 0.0, jnp.array([10.0, 1.0]), args=(jnp.array([False, True]),))
    np.testing.assert_array_equal(res.status, [Status.SUCCESS, Status.SUCCESS])
    np.testing.assert_allclose(res.x, [np.e, 0.5], rtol=1e-11)


@pytest.mark.parametrize("solver", [mml.bisection, mml.bracketed_newton])
def test_a_pole_or_a_jump_in_the_bracket_is_singular(solver):
    # 1/(x - 0.1) on [-1, 2] (|f| = 2e12 at x = 0.1 + 5e-13), a pole on one side, a jump: the
    # bracket shrank around the sign change and reported SUCCESS (scipy's brentq returns the
    # pole silently too). Roots where f is steep or |f| small stay SUCCESS: cbrt, log x + 30 on
    # [0, 1] (f(0) = -inf; the root 9e-14 is within atol of 0), x exp(-100 x^2) (|f(-1)| 4e-44).
    def f(x, k):
        branches = [
            1.0 / (x - 0.1),
            jnp.where(x < 0, 1.0 / x, 1.0),
            jnp.where(x > 0.3, 1.0, -1e-3),
            jnp.cbrt(x),
            jnp.log(x) + 30.0,
            x * jnp.exp(-100.0 * x * x),
        ]
        return jnp.select([k == i for i in range(len(branches))], branches)

    lo = jnp.array([-1.0, -1.0, 0.0, -1.0, 0.0, -1.0])
    res = solver(f, lo, jnp.array([2.0, 2.0, 1.0, 2.0, 1.0, 2.0]), args=(jnp.arange(6),))
    assert res.status.tolist() == [Status.SINGULAR] * 3 + [Status.SUCCESS] * 3
    np.testing.assert_allclose(res.x[:3], [0.1, 0.0, 0.3], atol=1e-11)


@pytest.mark.parametrize("solver", [mml.bisection, mml.bracketed_newton])
def test_infinite_bracket_end_is_nonfinite(solver):
    # tanh(x) - 0.5 on [0, inf]: the middle of the bracket is inf, so the bracket passed as
    # "two adjacent floats" and bisection returned x = 0 (f = -0.5) with SUCCESS.
    f = lambda x: jnp.tanh(x) - 0.5
    res = solver(f, jnp.array([0.0, -jnp.inf, 0.0]), jnp.array([jnp.inf, 5.0, 5.0]))
    np.testing.assert_array_equal(res.status, [Status.NONFINITE, Status.NONFINITE, Status.SUCCESS])


# --------------------------------------------------------------------------- bad input, options


def test_nonfinite_input_stops_at_once():
    res = mml.newton_raphson(cubic, jnp.nan, args=(2.0,))
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0
    res = mml.newton_raphson(cubic, 1.0, args=(jnp.inf,))
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0
    res = mml.newton_raphson(lambda x: x - jnp.array([1.0, jnp.nan]), jnp.zeros(2))
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0


def test_a_newton_step_that_overshoots_by_far_is_cut_to_size():
    # Full steps overshoot by 3e14, 5e18, 1e12: 30 halvings ran out (LINESEARCH_FAILED, with
    # advice about the gradient); scipy's plain Newton solves them.
    for f, x0, root in (
        (lambda x: x**3 - 1e15, 1.0, 1e5),
        (lambda x: x**2 - 1e19, 1.0, np.sqrt(1e19)),
        (lambda x: jnp.exp(x) - 1e12, 0.0, np.log(1e12)),
    ):
        res = mml.newton_raphson(f, x0)
        assert int(res.status) == Status.SUCCESS
        np.testing.assert_allclose(res.x, root, rtol=1e-12)
    c = jnp.array([1e15, 8.0, 1e12])  # per element, the same as the scalar solver
    res = mml.newton_raphson(lambda x, c: x**3 - c, jnp.ones(3), args=(c,), elementwise=True)
    np.testing.assert_allclose(res.x, jnp.cbrt(c), rtol=1e-12)
    # Still a failure where there is no root.
    assert int(mml.newton_raphson(lambda x: x**2 + 1.0, 0.5).status) == Status.LINESEARCH_FAILED


def test_complex_f_zero_size_and_half_precision_raise():
    # A complex f was cast to the real dtype: x + 1j "solved" at x = 0 with success.
    for call in (
        lambda: mml.newton_raphson(lambda x: x + 1j, 1.0),
        lambda: mml.bisection(lambda x: x + 1j, -1.0, 1.0),
        lambda: mml.bracketed_newton(lambda x: x + 1j, -1.0, 1.0),
        lambda: mml.newton_raphson(lambda x: (x + 1j) ** 2, jnp.array([1.0, 2.0])),
        lambda: mml.newton_raphson(lambda x: x + 1j, jnp.ones(2), elementwise=True),
    ):
        with pytest.raises(TypeError, match="real numbers.*real and imaginary parts"):
            call()
    # A test for f (a bool) was told to split a complex equation.
    for solve in (mml.bisection, mml.bracketed_newton):
        with pytest.raises(TypeError, match="dtype bool. A root is where f changes sign"):
            solve(lambda x: x > 0.3, 0.0, 1.0)
    with pytest.raises(ValueError, match="no elements"):  # was a reduction's internal error
        mml.newton_raphson(lambda x: x, jnp.zeros(0))
    with pytest.raises(TypeError, match="float16"):  # was "complex does not accept float16"
        mml.newton_raphson(lambda x: x**2 - 2.0, jnp.ones(3, jnp.float16), elementwise=True)
    assert mml.newton_raphson(lambda x: x**2 - 2.0, jnp.ones(0), elementwise=True).x.shape == (0,)
    # bfloat16 is real (it was refused as "not real numbers": numpy's issubdtype does not know it)
    for res in (
        mml.newton_raphson(lambda x: x**2 - 2.0, jnp.bfloat16(1.0)),
        mml.bisection(lambda x: x**2 - 2.0, jnp.bfloat16(1.0), jnp.bfloat16(2.0)),
    ):
        assert res.x.dtype == jnp.bfloat16 and bool(res.success)
        np.testing.assert_allclose(float(res.x), np.sqrt(2.0), rtol=2e-2)


def test_integer_valued_f_raises_for_newton():
    # An integer f has a zero derivative: SINGULAR (SUCCESS where floor(x) - 1 happened to be 0)
    step = lambda x: jnp.floor(x).astype(jnp.int32) - 1  # noqa: E731
    for call in (
        lambda: mml.newton_raphson(step, 2.5),
        lambda: mml.newton_raphson(step, jnp.array([1.5, 2.5]), elementwise=True),
        lambda: mml.newton_raphson(lambda x: x.astype(int), jnp.array([1.5, 2.5])),
    ):
        with pytest.raises(TypeError, match="newton_raphson: f must return real floating"):
            call()
    # bisection needs only signs: an integer f stays accepted there
    assert bool(mml.bisection(step, 0.5, 2.5).success)


def test_shape_and_option_errors():
    with pytest.raises(ValueError, match="same structure and shapes"):
        mml.newton_raphson(lambda x: x[:2], jnp.zeros(3))
    with pytest.raises(ValueError, match="elementwise=True"):
        mml.newton_raphson(cubic, 1.0, args=(jnp.ones(3),))
    with pytest.raises(ValueError, match="one value"):
        mml.newton_raphson(lambda x: jnp.stack([x, x]), jnp.zeros(3), elementwise=True)
    with pytest.raises(ValueError, match="broadcast"):
        mml.newton_raphson(cubic, jnp.zeros(3), args=(jnp.ones(4),), elementwise=True)
    # the bracket named, and without args no empty entry (the list ended in ", .")
    with pytest.raises(ValueError, match=r"mode lower, upper and .* upper: \(3,\)\. Data"):
        mml.bisection(lambda x: x, jnp.zeros(2), jnp.ones(3))
    with pytest.raises(ValueError, match="one array"):
        mml.newton_raphson(lambda x: x, {"a": jnp.zeros(2)}, elementwise=True)
    with pytest.raises(ValueError, match="dense"):
        mml.newton_raphson(lambda x: x, jnp.zeros(10**5))
    with pytest.raises(TypeError, match="'maxiter' \\(use max_iter\\)"):
        mml.newton_raphson(cubic, 1.0, args=(2.0,), maxiter=10)
    with pytest.raises(TypeError, match="'rtoll' \\(did you mean 'rtol'"):
        mml.bisection(cubic, 0.0, 2.0, args=(2.0,), rtoll=1e-3)
    with pytest.raises(TypeError, match="args must be a tuple"):
        mml.newton_raphson(cubic, 1.0, args=2.0)
    with pytest.raises(ValueError, match="rtol"):
        mml.newton_raphson(cubic, 1.0, args=(2.0,), rtol=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        mml.bracketed_newton(cubic, 0.0, 2.0, args=(2.0,), max_iter=0)
    # Tolerances: one check for every solver (a real, finite, non-negative, concrete scalar).
    for solve in (
        lambda **kw: mml.newton_raphson(cubic, 1.0, args=(2.0,), **kw),
        lambda **kw: mml.bisection(cubic, 0.0, 2.0, args=(2.0,), **kw),
        lambda **kw: mml.bracketed_newton(cubic, 0.0, 2.0, args=(2.0,), **kw),
    ):
        for bad in (-1.0, float("nan"), float("inf"), [1e-3]):
            with pytest.raises(ValueError, match="atol"):
                solve(atol=bad)
        with pytest.raises(TypeError, match="rtol must be a real number"):
            solve(rtol=1e-3j)
        with pytest.raises(TypeError, match="rtol must be a concrete number"):
            jax.jit(lambda r, solve=solve: solve(rtol=r).x)(1e-3)
    with pytest.raises(TypeError, match="elementwise"):
        mml.newton_raphson(cubic, 1.0, args=(2.0,), elementwise="yes")


# ------------------------------------------------------------------ implicit differentiation


def test_grad_scalar_and_elementwise_match_closed_form():
    # root of x^3 - c is c^(1/3): d/dc = c^(-2/3) / 3
    def root(c):
        return mml.newton_raphson(cubic, 1.0, args=(c,)).x

    c = jnp.array([0.5, 2.0, 9.0])
    expected = c ** (-2.0 / 3.0) / 3.0
    np.testing.assert_allclose(jax.jit(jax.grad(root))(2.0), expected[1], rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(jax.grad(root))(c), expected, rtol=1e-12)

    def roots(c):
        return mml.newton_raphson(cubic, jnp.ones_like(c), args=(c,), elementwise=True).x

    jac = jax.jit(jax.jacfwd(roots))(c)
    np.testing.assert_allclose(jac, np.diag(expected), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(jax.grad(lambda c: roots(c).sum())(c), expected, rtol=1e-12)

    for solver in (mml.bisection, mml.bracketed_newton):
        g = jax.grad(lambda c, s=solver: s(cubic, 0.0, 3.0, args=(c,)).x)(2.0)
        np.testing.assert_allclose(g, expected[1], rtol=1e-9)


def test_grad_system_matches_closed_form():
    a = jnp.asarray([[3.0, 1.0], [1.0, 2.0]])

    def root(b):
        return mml.newton_raphson(
            lambda x, a, b: a @ x + 0.1 * x**3 - b, jnp.zeros(2), args=(a, b)
        ).x

    b = jnp.array([1.0, -0.5])
    x = root(b)
    # F(x, b) = A x + 0.1 x^3 - b: dx/db = (A + 0.3 diag(x^2))^{-1}
    expected = np.linalg.inv(np.asarray(a) + 0.3 * np.diag(np.asarray(x) ** 2))
    np.testing.assert_allclose(jax.jit(jax.jacrev(root))(b), expected, rtol=1e-10)

    # x^3 = c as a system (elementwise=False), batched by vmap: dx/dc = diag(c^(-2/3) / 3)
    def root3(c):
        return mml.newton_raphson(cubic, jnp.ones(2), args=(c,), elementwise=False).x

    cs = jnp.array([[2.0, 3.0], [5.0, 0.5]])
    jac = jax.jit(jax.vmap(jax.jacrev(root3)))(cs)
    expected = jax.vmap(jnp.diag)(cs ** (-2.0 / 3.0) / 3.0)
    np.testing.assert_allclose(jac, expected, rtol=1e-11, atol=1e-15)


# ----------------------------------------------------------------- jit, no retrace, float32


def test_jit_does_not_retrace_with_same_shapes():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(x0, c):
        return mml.newton_raphson(cubic, x0, args=(c,), elementwise=True)

    for k in range(3):
        res = solve(jnp.ones(5), jnp.arange(1.0, 6.0) + k)
        np.testing.assert_allclose(res.x, np.cbrt(np.arange(1.0, 6.0) + k), rtol=1e-13)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def bracket(lo, c):
        return mml.bracketed_newton(cubic, lo, 5.0, args=(c,)).x

    for c in (2.0, 3.0):
        np.testing.assert_allclose(bracket(0.0, c), np.cbrt(c), rtol=1e-13)


def test_a_weakly_typed_start_reuses_the_compilation():
    # jnp.full(2, 1.5) (weakly typed) after jnp.ones(2), or a Python float after a NumPy one,
    # compiled a program of its own: the weak type was part of the jit's key.
    traces = []

    def f(x):
        traces.append(1)
        return x**3 - 2.0

    for x0s in ((jnp.ones(2), jnp.full(2, 1.5)), (np.float64(1.0), 1.5)):
        mml.newton_raphson(f, x0s[0])
        n = len(traces)
        res = mml.newton_raphson(f, x0s[1])
        assert len(traces) == n and bool(jnp.all(res.success))


def test_a_numpy_integer_option_reuses_the_compilation():
    # max_iter=np.int64(50) (or linesearch_steps) after 50 compiled a program of its own: the
    # checked Python int was discarded and the NumPy integer keyed the jit's cache.
    traces = []

    def f(x):
        traces.append(1)
        return x**3 - 2.0

    calls = [
        lambda **kw: mml.newton_raphson(f, 1.0, **kw),
        lambda **kw: mml.bisection(f, 0.0, 2.0, **kw),
        lambda **kw: mml.bracketed_newton(f, 0.0, 2.0, **kw),
    ]
    options = [("max_iter", call) for call in calls] + [("linesearch_steps", calls[0])]
    for name, call in options:
        call(**{name: 50})
        n = len(traces)
        res = call(**{name: np.int64(50)})
        assert len(traces) == n, name
        assert bool(res.success)


def test_float32():
    f32 = jnp.float32
    res = mml.newton_raphson(cubic, f32(1.0), args=(f32(2.0),))
    assert res.x.dtype == f32 and int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, np.cbrt(2.0), rtol=1e-6)

    c = jnp.linspace(2.0, 10.0, 64, dtype=f32)
    res = mml.newton_raphson(cubic2, jnp.full(64, 2.0, f32), args=(c,), elementwise=True)
    assert res.x.dtype == f32 and bool(jnp.all(res.success))
    np.testing.assert_allclose(np.asarray(res.fun), 0.0, atol=1e-4)

    res = mml.newton_raphson(lambda x: x**3 - 2 * x + 2, f32(0.0))  # the trap, in float32
    assert int(res.status) in (Status.LINESEARCH_FAILED, Status.STAGNATED)

    sys32 = SYSTEMS[0]
    res = mml.newton_raphson(sys32.f, jnp.asarray(sys32.x0, f32))
    assert res.x.dtype == f32 and int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, sys32.root, rtol=1e-6)

    for solver in (mml.bisection, mml.bracketed_newton):
        r = solver(cubic, f32(0.0), f32(3.0), args=(f32(2.0),))
        assert r.x.dtype == f32 and int(r.status) == Status.SUCCESS
        np.testing.assert_allclose(r.x, np.cbrt(2.0), rtol=2e-5)


@settings(max_examples=25, deadline=None)
@given(st.floats(2.0, 10.0), st.sampled_from([-1.0, 1.0]), st.floats(-3.0, 3.0))
def test_property_root_or_honest_failure_from_anywhere(c, sign, x0):
    # |c| >= 2: x^3 - 2x - c has one real root. From any start the safeguarded Newton either finds
    # it or stops, with a failure status, at the local minimum of |f| (x = -+sqrt(2/3)) where a
    # descent method on |f|^2 can get stuck; never NaN, never a wrong "success", never a cycle.
    res = _ELEMENTWISE(jnp.full(2, x0), jnp.array([sign * c, c]))
    for i in range(2):
        if bool(res.success[i]):
            assert abs(float(res.fun[i])) < 1e-12
        else:
            assert int(res.status[i]) in (Status.LINESEARCH_FAILED, Status.STAGNATED)
            np.testing.assert_allclose(abs(float(res.x[i])), np.sqrt(2 / 3), rtol=1e-3)
    from_root_side = sign * x0 > np.sqrt(2 / 3)  # past the extremum, f is monotone and convex
    if from_root_side:
        assert bool(res.success[0])


def test_elementwise_chunks_follow_the_backend(monkeypatch):
    # Narrow chunks on a CPU (cache), wide on an accelerator (a loop per chunk costs launches).
    import jaxopt_mml._roots_common as rc

    monkeypatch.setattr(rc, "wide_backend", lambda: False)
    assert rc.masked_chunk() == rc.MASKED_CHUNK
    monkeypatch.setattr(rc, "wide_backend", lambda: True)
    assert rc.masked_chunk() == rc.WIDE_CHUNK > rc.MASKED_CHUNK


# --------------------------------------------------------------------------- regressions


def test_bracket_midpoint_does_not_overflow():
    # hi - lo overflows to inf in float32: the midpoint was inf and the end came back as SUCCESS.
    lo, hi = np.float32(-3e38), np.float32(3e38)
    res = mml.bisection(lambda x: x - 1.0, lo, hi, max_iter=300)
    assert res.x.dtype == jnp.float32 and int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 1.0, atol=1e-4)
    res = mml.bracketed_newton(lambda x: x - 1.0, lo, hi)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 1.0, atol=1e-6)
    # Too few halvings for such a bracket: an honest MAX_ITER, not an end of it.
    assert int(mml.bisection(lambda x: x - 1.0, lo, hi).status) == Status.MAX_ITER


@pytest.mark.parametrize("solver", ["bisection", "bracketed_newton"])
def test_bracketing_root_is_within_the_tolerance(solver):
    # The returned x is an end of the final bracket: stopping when half the bracket was within
    # atol left x up to 2 atol from the root (half of these 2000 roots beyond atol).
    c = jnp.asarray(np.random.default_rng(0).uniform(0.0, 1.0, 2000))
    fun = getattr(mml, solver)
    res = fun(lambda x, c: jnp.sinh(x - c), 0.0, 1.0, args=(c,), atol=1e-3, rtol=0.0)
    assert bool(res.success.all())
    assert float(jnp.max(jnp.abs(res.x - c))) <= 1e-3


def test_bisection_rejects_x0():
    with pytest.raises(TypeError, match="x0"):
        mml.bisection(lambda x: x - 0.3, 0.0, 1.0, x0=0.9)


def test_elementwise_newton_on_empty_input():
    res = mml.newton_raphson(
        lambda x, c: x**2 - c, jnp.zeros((3, 0)), args=(2.0,), elementwise=True
    )
    for leaf in res:
        assert leaf.shape == (3, 0)
    assert res.status.dtype == jnp.int32 and res.x.dtype == jnp.float64


def _cbrt_shifted(x):
    return jnp.cbrt(x - 1.0) + 0.5  # root 0.875; f'(1) is infinite, f(1) = 0.5


def test_newton_infinite_derivative_is_not_success():
    res = mml.newton_raphson(_cbrt_shifted, 1.0)
    assert int(res.status) == Status.SINGULAR
    res = mml.newton_raphson(_cbrt_shifted, jnp.array([1.0, 2.0]), elementwise=True)
    np.testing.assert_array_equal(res.status, [Status.SINGULAR, Status.SUCCESS])
    np.testing.assert_allclose(res.x[1], 0.875, rtol=1e-12)
    # sqrt(x) + 1 has no root; the line search reaches x = 0, where f' is infinite.
    res = mml.newton_raphson(lambda x: jnp.sqrt(x) + 1.0, 1.0)
    assert not bool(res.success)
    # Bracketed Newton starts at the middle, x = 1: no convergence there either.
    res = mml.bracketed_newton(_cbrt_shifted, 0.0, 2.0)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 0.875, rtol=1e-12)


@pytest.mark.parametrize("s", [1e-20, 1e20])
def test_newton_merit_does_not_overflow_or_underflow(s):
    # A linear equation scaled by s, float32: f^2 underflows (1e-40) or overflows (1e40).
    def f(x):
        return s * (x - 2.0)

    x0 = jnp.zeros((), jnp.float32)
    res = mml.newton_raphson(f, x0)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 2.0, rtol=1e-6)
    res = mml.newton_raphson(f, jnp.zeros(2, jnp.float32), elementwise=True)
    np.testing.assert_array_equal(res.status, [Status.SUCCESS] * 2)
    np.testing.assert_allclose(res.x, 2.0, rtol=1e-6)
    res = mml.newton_raphson(f, jnp.zeros(2, jnp.float32), elementwise=False)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 2.0, rtol=1e-6)
    # float64 at the same distance from its range.
    res = mml.newton_raphson(lambda x: s**7.7 * (x - 2.0), jnp.zeros(2), elementwise=False)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 2.0, rtol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 1e6])
def test_system_newton_retries_a_failed_search_along_the_cauchy_step(scale):
    # Near a nearly singular J (sigma_min 1.6e-7) the Newton step is huge and valid, and
    # backtracking could not shorten it: LINESEARCH_FAILED at |F| = 0.42 with J^T F far from 0.
    # A failed Newton search is now retried once along the Cauchy step, whose length does not
    # depend on the scale of F (scale 1e6 succeeds as 1 does).
    root = np.array([2.188669772404644, -2.643215090397969])
    a = jnp.array(
        [[-0.1719592927477367, 1.3382795151279085], [0.5822058485731421, -1.22321103493631]]
    )
    b = jnp.array(
        [[-0.6526219432222937, -0.6682909117682758], [0.855275269381376, 0.343304718901037]]
    )
    al = jnp.array([-0.4535807832653197, 0.464296199135401])
    be = jnp.array([0.039850261070211224, 0.12467053802355688])

    def fun(x):
        d = x - root
        return scale * (a @ d + al * d**2 + be * jnp.sin(b @ d) + 0.1 * jnp.exp(0.3 * d) - 0.1)

    res = mml.newton_raphson(fun, jnp.array([4.102762805658981, -1.388506796049901]))
    assert mml.Status(int(res.status)) == mml.Status.SUCCESS
    np.testing.assert_allclose(res.x, root, rtol=1e-10)


def test_bracket_of_wrong_type_named():
    # A complex end was refused as "complex x0" (bisection has no x0); None or a string got
    # JAX's message about jnp.array, naming neither the solver nor the argument.
    f = lambda x: x - 0.5
    for call, named in (
        (lambda: mml.bisection(f, 0j, 1.0), "bisection: lower .* complex"),
        (lambda: mml.bisection(f, 0.0, None), "bisection: upper .* NoneType"),
        (lambda: mml.bracketed_newton(f, "0", 1.0), "bracketed_newton: lower .* str"),
        (lambda: mml.bracketed_newton(f, 0.0, 1.0, x0=0.5j), "bracketed_newton: x0 .* complex"),
    ):
        with pytest.raises(TypeError, match=named):
            call()
    # integer and boolean ends stay accepted
    assert float(mml.bisection(f, False, True).x) == 0.5
