"""fixed_point: Anderson acceleration and (damped) plain iteration.

Oracles: scipy.optimize.fixed_point, closed forms of linear maps (x = A x + b, whose fixed point
and derivatives are solves with I - A), and finite differences for a deep-equilibrium layer.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxopt_mml as mml
from jaxopt_mml._status import Status

METHODS = ("anderson", "iteration")


def _linear_problem(n=12, contraction=0.8, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    a = contraction * a / np.linalg.norm(a, 2)
    b = rng.standard_normal(n)
    return a, b


def _affine(x, a, b):
    return a @ x + b


def _deq_layer(z, u_mat, w, u):
    return jnp.tanh(w @ z + u_mat @ u)


def _deq_problem(n=30, seed=1):
    rng = np.random.default_rng(seed)
    w = 0.5 * rng.standard_normal((n, n)) / np.sqrt(n)
    u_mat = rng.standard_normal((n, 4))
    u = rng.standard_normal(4)
    return jnp.asarray(w), jnp.asarray(u_mat), jnp.asarray(u)


@pytest.mark.parametrize("method", METHODS)
def test_dottie_number_matches_scipy(method):
    res = mml.fixed_point(jnp.cos, 1.0, method=method, rtol=1e-12, atol=1e-12, max_iter=200)
    oracle = so.fixed_point(np.cos, 1.0, xtol=1e-14)
    assert int(res.status) == Status.SUCCESS, mml.status_message(res.status)
    np.testing.assert_allclose(res.x, oracle, rtol=1e-11)
    np.testing.assert_allclose(res.residual, np.cos(res.x) - res.x, atol=1e-15)
    assert int(res.n_fev) == int(res.n_iter) + 2  # the start, one per iteration, the end


def test_anderson_is_faster_than_plain_iteration():
    anderson = mml.fixed_point(jnp.cos, 1.0)
    plain = mml.fixed_point(jnp.cos, 1.0, method="iteration")
    assert bool(anderson.success) and bool(plain.success)
    # 1-D Anderson with two iterates is the secant method: superlinear against |sin x*| = 0.67
    assert int(anderson.n_iter) <= 8 < 30 <= int(plain.n_iter)


@pytest.mark.parametrize("method", METHODS)
def test_linear_map_fixed_point_and_derivative(method):
    a, b = _linear_problem()
    exact = np.linalg.solve(np.eye(len(b)) - a, b)

    def solve(bb):
        return mml.fixed_point(
            _affine,
            jnp.zeros_like(bb),
            args=(jnp.asarray(a), bb),
            method=method,
            rtol=1e-12,
            atol=1e-12,
            max_iter=500,
        )

    res = solve(jnp.asarray(b))
    assert int(res.status) == Status.SUCCESS, mml.status_message(res.status)
    np.testing.assert_allclose(res.x, exact, rtol=1e-10, atol=1e-11)
    # dx*/db = (I - A)^{-1}, forward and reverse mode
    inverse = np.linalg.inv(np.eye(len(b)) - a)
    np.testing.assert_allclose(
        jax.jacfwd(lambda bb: solve(bb).x)(jnp.asarray(b)), inverse, atol=1e-12
    )
    np.testing.assert_allclose(
        jax.jacrev(lambda bb: solve(bb).x)(jnp.asarray(b)), inverse, atol=1e-12
    )


def test_anderson_on_a_linear_map_is_gmres_like():
    # with memory n + 1 Anderson is exact on a linear map after n + 1 iterations (9 here);
    # plain iteration takes 40
    a, b = _linear_problem(n=8, contraction=0.95, seed=3)
    args = (jnp.asarray(a), jnp.asarray(b))
    fast = mml.fixed_point(_affine, jnp.zeros(8), args=args, memory=9, max_iter=1000)
    slow = mml.fixed_point(_affine, jnp.zeros(8), args=args, method="iteration", max_iter=1000)
    assert bool(fast.success) and bool(slow.success)
    assert int(fast.n_iter) <= 10 and int(slow.n_iter) >= 4 * int(fast.n_iter)


def test_mixing_tames_an_oscillating_map():
    # f' = -1.5: plain iteration diverges; damped by 0.5 the map contracts by 0.25
    def f(x):
        return 1.0 - 1.5 * x

    assert not bool(mml.fixed_point(f, 0.0, method="iteration").success)
    res = mml.fixed_point(f, 0.0, method="iteration", mixing=0.5)
    assert int(res.status) == Status.SUCCESS
    np.testing.assert_allclose(res.x, 0.4, rtol=1e-7)
    assert bool(mml.fixed_point(f, 0.0).success)  # Anderson: the secant step is exact


def test_deq_layer_gradient_matches_finite_differences():
    w, u_mat, u = _deq_problem()

    def loss(u_mat):
        z = mml.fixed_point(_deq_layer, jnp.zeros(30), args=(u_mat, w, u), rtol=1e-13, atol=1e-13).x
        return jnp.sum(z**2)

    grad = jax.grad(loss)(u_mat)
    h = 1e-6
    for i, j in [(0, 0), (7, 2), (29, 3)]:
        e = jnp.zeros_like(u_mat).at[i, j].set(h)
        fd = (loss(u_mat + e) - loss(u_mat - e)) / (2 * h)
        np.testing.assert_allclose(grad[i, j], fd, rtol=1e-6, atol=1e-9)


def test_matrix_free_derivative_equals_the_dense_one(force_matrix_free):
    w, u_mat, u = _deq_problem()

    def jac(layer, u_mat):
        return jax.jacrev(
            lambda m: (
                mml.fixed_point(layer, jnp.zeros(30), args=(m, w, u), rtol=1e-13, atol=1e-13).x
            )
        )(u_mat)

    dense = jac(_deq_layer, u_mat)
    calls = force_matrix_free()
    # (another function, so that the solve is traced again with the new threshold)
    gmres = jac(lambda z, m, w, u: _deq_layer(z, m, w, u), u_mat)
    assert calls
    np.testing.assert_allclose(gmres, dense, atol=1e-10)


def test_pytree_parameters_keep_their_structure_and_dtypes():
    def f(p):
        return {"a": 0.5 * p["b"] + jnp.ones(3, jnp.float32), "b": jnp.mean(jnp.cos(p["a"]))}

    x0 = {"a": jnp.zeros(3, jnp.float32), "b": jnp.asarray(0.0)}
    res = mml.fixed_point(f, x0)
    assert int(res.status) == Status.SUCCESS
    assert res.x["a"].dtype == jnp.float32 and res.x["b"].dtype == jnp.float64
    assert res.residual["a"].shape == (3,)
    np.testing.assert_allclose(res.x["a"], 0.5 * res.x["b"] + 1, rtol=1e-6)
    np.testing.assert_allclose(res.x["b"], np.cos(res.x["a"][0]), rtol=1e-6)


def test_float32_converges_to_float32_tolerance():
    w, u_mat, u = _deq_problem()
    args = tuple(a.astype(jnp.float32) for a in (u_mat, w, u))
    ref = mml.fixed_point(_deq_layer, jnp.zeros(30), args=(u_mat, w, u), rtol=1e-13, atol=1e-13)
    # default tolerances sqrt(eps) = 3.5e-4 on the residual; the error is the residual over
    # 1 - L (L about 0.5 here); tighter tolerances are met down to a few eps
    for tol, err in ((None, 2e-3), (1e-6, 1e-5)):
        res = mml.fixed_point(_deq_layer, jnp.zeros(30, jnp.float32), args=args, rtol=tol, atol=tol)
        assert res.x.dtype == jnp.float32 and int(res.status) == Status.SUCCESS
        np.testing.assert_allclose(res.x, ref.x, atol=err)


def test_vmap_equals_a_loop_and_jit_does_not_retrace():
    scales = jnp.linspace(0.1, 2.0, 6)

    def f(x, s):
        return s * jnp.cos(x)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batch(s):
        return jax.vmap(lambda si: mml.fixed_point(f, 1.0, args=(si,)))(s)

    out = batch(scales)
    batch(scales + 0.01)
    for i, s in enumerate(scales):
        one = mml.fixed_point(f, 1.0, args=(s,))
        np.testing.assert_allclose(out.x[i], one.x, rtol=1e-12)
        assert int(out.n_iter[i]) == int(one.n_iter) and int(out.status[i]) == int(one.status)


def test_an_eager_second_call_reuses_the_compilation():
    traces = []

    def f(x, c):
        traces.append(1)
        return c * jnp.cos(x)

    mml.fixed_point(f, jnp.zeros(3), args=(jnp.ones(3),))
    n = len(traces)
    mml.fixed_point(f, jnp.ones(3), args=(2.0 * jnp.ones(3),))
    assert len(traces) == n


def test_an_extrapolation_outside_the_domain_is_rejected():
    # log(x) + 2 from 0.5: Anderson's first extrapolation lands at x < 0 (NaN); the step is
    # taken again as a plain step and the run goes on to the attracting fixed point 3.1462
    res = mml.fixed_point(lambda x: jnp.log(x) + 2.0, 0.5)
    assert int(res.status) == Status.SUCCESS, mml.status_message(res.status)
    np.testing.assert_allclose(res.x, 3.146193220620583, rtol=1e-8)


def test_failures_are_statuses():
    # no fixed point: x + 1 (plain iteration runs away; Anderson's extrapolation too)
    for method in METHODS:
        res = mml.fixed_point(lambda x: x + 1.0, 0.0, method=method)
        assert not bool(res.success)
        assert int(res.status) in (Status.MAX_ITER, Status.NONFINITE)
    # a plain step leaving the domain: NONFINITE, the last finite iterate returned
    res = mml.fixed_point(lambda x: jnp.log(x) + 2.0, 0.05)
    assert int(res.status) == Status.NONFINITE and float(res.x) == 0.05
    res = mml.fixed_point(jnp.cos, jnp.nan)
    assert int(res.status) == Status.NONFINITE and int(res.n_iter) == 0
    res = mml.fixed_point(jnp.cos, 1.0, method="iteration", max_iter=5)
    assert int(res.status) == Status.MAX_ITER and int(res.n_iter) == 5


def test_bad_options_raise_naming_the_argument():
    with pytest.raises(ValueError, match="same structure and shapes"):
        mml.fixed_point(lambda x: jnp.sum(x), jnp.zeros(3))
    with pytest.raises(ValueError, match="method"):
        mml.fixed_point(jnp.cos, 1.0, method="broyden")
    with pytest.raises(ValueError, match="mixing"):
        mml.fixed_point(jnp.cos, 1.0, mixing=1.5)
    with pytest.raises(ValueError, match="memory"):
        mml.fixed_point(jnp.cos, 1.0, memory=0)
    with pytest.raises(TypeError, match="tol"):
        mml.fixed_point(jnp.cos, 1.0, tol=1e-6)
    with pytest.raises(TypeError, match="f must return"):
        mml.fixed_point(lambda x: x > 0, 1.0)
    with pytest.raises(TypeError, match="float32"):
        mml.fixed_point(jnp.cos, jnp.ones(2, jnp.float16))


def test_anderson_on_residuals_whose_squares_overflow_or_underflow():
    # x = x / 2 + c, x* = 2c: |g|^2 overflows (float64 at 1e160, float32 at 1e20) or underflows
    # (1e-160); the Gram matrix of the residuals was inf or 0, the weights NaN, and even the
    # plain first step was rejected: NONFINITE at x0, where plain iteration converges
    for c, x0 in ((1e160, 0.0), (1e-160, 0.0), (1e20, jnp.float32(0.0))):
        res = mml.fixed_point(lambda x, c: 0.5 * x + c, x0, args=(c,), rtol=1e-6, atol=0.0)
        assert int(res.status) == Status.SUCCESS, (c, mml.status_message(res.status))
        np.testing.assert_allclose(res.x, 2 * c, rtol=1e-5)
