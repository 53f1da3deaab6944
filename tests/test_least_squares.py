"""least_squares: residual functions, against scipy.optimize.least_squares and closed forms."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import least_squares as scipy_least_squares

import jaxopt_mml as mml

_TIGHT = dict(xtol=1e-14, ftol=1e-14, gtol=1e-14)


def _decay_data(outliers=False):
    rng = np.random.default_rng(0)
    t = np.linspace(0.0, 4.0, 40)
    y = 2.0 * np.exp(-1.3 * t) + 0.02 * rng.normal(size=t.size)
    if outliers:
        y[::7] += 1.0
    return t, y


def decay(p, t, y):
    return p[0] * jnp.exp(-p[1] * t) - y


def _np_decay(t, y):
    return lambda p: p[0] * np.exp(-p[1] * t) - y


def rosen_residuals(x):
    return jnp.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def test_rosenbrock_residuals_reach_the_minimum():
    res = mml.least_squares(rosen_residuals, jnp.array([-1.2, 1.0]))
    assert bool(res.success)
    chex.assert_trees_all_close(res.x, jnp.ones(2), atol=1e-10)
    assert float(res.cost) < 1e-20
    chex.assert_shape(res.fun, (2,))
    chex.assert_trees_all_close(res.jac, jax.jacfwd(rosen_residuals)(res.x), atol=1e-12)


def test_same_fit_as_curve_fit_with_its_covariance_from_jac():
    t, y = _decay_data()
    sigma = 0.02
    res = mml.least_squares(lambda p: (y - p[0] * jnp.exp(-p[1] * t)) / sigma, jnp.ones(2))
    fit = mml.curve_fit(lambda t, p: p[0] * jnp.exp(-p[1] * t), t, y, jnp.ones(2), sigma=sigma)
    chex.assert_trees_all_close(res.x, fit.params, rtol=1e-10)
    np.testing.assert_allclose(2 * res.cost, fit.chi2, rtol=1e-12)
    cov = jnp.linalg.inv(res.jac.T @ res.jac) * fit.reduced_chi2
    chex.assert_trees_all_close(cov, fit.covariance, rtol=1e-8)


@pytest.mark.parametrize("loss", ["linear", "huber", "soft_l1", "cauchy"])
def test_robust_losses_match_scipy(loss):
    t, y = _decay_data(outliers=True)
    res = mml.least_squares(decay, jnp.array([1.0, 1.0]), args=(t, y), loss=loss, f_scale=0.1)
    ref = scipy_least_squares(_np_decay(t, y), [1.0, 1.0], loss=loss, f_scale=0.1, **_TIGHT)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-6)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)  # scipy's cost: half the sum
    np.testing.assert_allclose(res.fun, ref.fun, atol=1e-6)
    assert float(res.grad_norm) < 1e-6


@pytest.mark.parametrize(
    "x0, bounds",
    [([1.0, 1.6], ([0.0, 1.5], [np.inf, 3.0])), ([1.0, 1.0], ([0.0, 0.5], [1.5, 3.0]))],
)
def test_active_bounds_match_scipy(x0, bounds):
    t, y = _decay_data()
    res = mml.least_squares(decay, jnp.array(x0), args=(t, y), bounds=bounds)
    ref = scipy_least_squares(_np_decay(t, y), x0, bounds=bounds, **_TIGHT)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-7)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)
    # the projected gradient: the bound's parameter is held where the gradient pushes it
    assert float(res.grad_norm) < 1e-7
    lo, hi = (np.asarray(b, float) for b in bounds)
    assert np.all(np.asarray(res.x) >= lo) and np.all(np.asarray(res.x) <= hi)


def test_pytree_parameters_and_residuals():
    t, y = _decay_data()

    def fun(p, t, y):
        return {"data": p["A"] * jnp.exp(-p["k"] * t) - y, "prior": jnp.atleast_1d(p["k"] - 1.3)}

    res = mml.least_squares(fun, {"A": jnp.array(1.0), "k": jnp.array(1.0)}, args=(t, y))
    ref = scipy_least_squares(
        lambda p: np.append(_np_decay(t, y)(p), p[1] - 1.3), [1.0, 1.0], **_TIGHT
    )
    assert set(res.x) == {"A", "k"} and set(res.fun) == {"data", "prior"}
    chex.assert_shape(res.jac, (41, 2))
    chex.assert_shape((res.fun["data"], res.fun["prior"]), ((40,), (1,)))
    np.testing.assert_allclose([res.x["A"], res.x["k"]], ref.x, rtol=1e-7)


def test_derivative_of_linear_least_squares_is_the_pseudo_inverse():
    rng = np.random.default_rng(1)
    a, b = jnp.array(rng.normal(size=(10, 3))), jnp.array(rng.normal(size=10))

    def solution(b):
        return mml.least_squares(lambda x, a, b: a @ x - b, jnp.zeros(3), args=(a, b)).x

    chex.assert_trees_all_close(solution(b), jnp.linalg.lstsq(a, b)[0], atol=1e-10)
    chex.assert_trees_all_close(jax.jacobian(solution)(b), jnp.linalg.pinv(a), atol=1e-9)


def test_derivative_is_zero_for_a_parameter_held_on_its_bound():
    t, y = _decay_data()

    def solution(y):
        bounds = ([0.0, 1.5], [np.inf, 3.0])
        return mml.least_squares(decay, jnp.array([1.0, 1.6]), args=(t, y), bounds=bounds).x

    jac = jax.jacobian(solution)(jnp.asarray(y))
    assert float(jnp.max(jnp.abs(jac[1]))) < 1e-12
    # the free amplitude moves as the one-parameter fit with k = 1.5 (linear in A)
    e = np.exp(-1.5 * t)
    np.testing.assert_allclose(jac[0], e / (e @ e), atol=1e-9)


def test_vmap_equals_a_loop_and_no_recompilation():
    t, y = _decay_data()
    starts = jnp.array(np.random.default_rng(2).uniform(0.5, 3.0, (8, 2)))
    batched = jax.vmap(lambda x0: mml.least_squares(decay, x0, args=(t, y)))(starts)
    for i, x0 in enumerate(starts):
        one = mml.least_squares(decay, x0, args=(t, y))
        chex.assert_trees_all_close(batched.x[i], one.x, rtol=1e-10)
        assert int(batched.n_iter[i]) == int(one.n_iter)

    calls = {"n": 0}

    def counted(p, t, y):
        calls["n"] += 1
        return p[0] * jnp.exp(-p[1] * t) - y

    mml.least_squares(counted, jnp.array([1.0, 1.0]), args=(t, y))
    traced = calls["n"]
    assert traced > 0
    mml.least_squares(counted, jnp.array([1.5, 0.9]), args=(t, 1.01 * y), rtol=1e-9)
    assert calls["n"] == traced  # new values, same shapes: no new trace

    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(x0, y):
        return mml.least_squares(counted, x0, args=(t, y)).x

    solve(jnp.ones(2), jnp.asarray(y))
    solve(1.5 * jnp.ones(2), jnp.asarray(1.01 * y))


def test_float32():
    res = mml.least_squares(rosen_residuals, jnp.array([-1.2, 1.0], jnp.float32))
    assert res.x.dtype == jnp.float32 and res.cost.dtype == jnp.float32
    assert bool(res.success)
    chex.assert_trees_all_close(res.x, jnp.ones(2, jnp.float32), atol=1e-3)


def test_half_precision_success_is_at_the_minimum():
    # The tests' rounding margins (the gradient test at 16 eps, 0.125 in bfloat16) are as large
    # as rtol in half precision: Rosenbrock's residuals in bfloat16 stopped with SUCCESS at
    # (0.71, 0.5), cost 0.043 (lm), and at (-1.08, 1.16), cost 2.2 (gauss-newton); the minimum
    # (1, 1), cost 0, is representable (float16 reaches it).
    res = mml.least_squares(rosen_residuals, jnp.array([-1.2, 1.0], jnp.bfloat16))
    x = np.asarray(res.x, np.float64)
    assert bool(res.success) == bool(np.all(np.abs(x - 1.0) <= 0.1))
    if not bool(res.success):
        assert int(res.status) == mml.Status.PRECISION_LIMIT


def test_rtol_below_what_the_cost_resolves_is_met_or_not_success():
    # rtol = 1e-12 is below what the cost resolves (eps relative: sqrt(eps) in the parameters'
    # error); a cost test floored at the rounding stopped Gauss-Newton with SUCCESS 1.5e-11
    # (relative) from the minimum. Levenberg-Marquardt's step test meets it (2e-14 from the
    # minimum, which scipy's MINPACK at xtol = ftol = gtol = 1e-14 misses by 1.6e-9).
    t, y = _decay_data()
    ref = mml.least_squares(decay, jnp.ones(2), args=(t, y), rtol=1e-15)
    lm = mml.least_squares(decay, jnp.ones(2), args=(t, y), rtol=1e-12)
    assert bool(ref.success) and bool(lm.success)
    np.testing.assert_allclose(lm.x, ref.x, rtol=1e-12)
    gn = mml.least_squares(decay, jnp.ones(2), args=(t, y), rtol=1e-12, method="gauss-newton")
    if bool(gn.success):
        np.testing.assert_allclose(gn.x, ref.x, rtol=1e-12)
    else:
        assert int(gn.status) == mml.Status.PRECISION_LIMIT


def test_failures_are_statuses():
    t, y = _decay_data()
    nan_start = mml.least_squares(decay, jnp.array([np.nan, 1.0]), args=(t, y))
    assert int(nan_start.status) == mml.Status.NONFINITE
    log_neg = mml.least_squares(lambda p: jnp.log(p), jnp.array([-1.0, 2.0]))
    assert int(log_neg.status) == mml.Status.NONFINITE
    few = mml.least_squares(rosen_residuals, jnp.array([-1.2, 1.0]), max_iter=2)
    assert int(few.status) == mml.Status.MAX_ITER and not bool(few.success)

    @jax.jit
    def with_lower(lo):  # traced bounds that exclude x0: a status, not an exception
        return mml.least_squares(decay, jnp.array([1.0, 1.0]), args=(t, y), bounds=(lo, 5.0))

    assert int(with_lower(0.0).status) == mml.Status.SUCCESS
    assert int(with_lower(2.0).status) == mml.Status.INVALID_INPUT


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="trf"), ValueError, "method"),
        (dict(loss="l2"), ValueError, "loss"),
        (dict(f_scale=-1.0), ValueError, "f_scale"),
        (dict(max_iter=0), ValueError, "max_iter"),
        (dict(bounds=(1.5, 3.0)), ValueError, "within bounds"),
    ],
)
def test_static_misuse_raises(kwargs, error, match):
    t, y = _decay_data()
    with pytest.raises(error, match=match):
        mml.least_squares(decay, jnp.array([1.0, 1.0]), args=(t, y), **kwargs)


@pytest.mark.parametrize(
    "fun, error, match",
    [
        (lambda p: jnp.zeros(0), ValueError, "at least one residual"),
        (lambda p: jnp.array([1, 2]), TypeError, "real floating"),
        (lambda p: p > 0, TypeError, "real floating"),
    ],
)
def test_bad_residual_functions_raise(fun, error, match):
    with pytest.raises(error, match=match):
        mml.least_squares(fun, jnp.array([1.0, 1.0]))
    with pytest.raises(TypeError, match="callable"):
        mml.least_squares(None, jnp.array([1.0, 1.0]))


def test_a_residual_function_that_misreads_x0_names_it():
    # (indexing a dict x0 by position raised a bare KeyError: 0)
    with pytest.raises(TypeError, match="x0's structure.*KeyError"):
        mml.least_squares(lambda p: p[0] - 1.0, {"a": jnp.array(1.0)})


@pytest.mark.parametrize("bounds", [(-1e30, 1e30), (-1e30, np.inf)])
def test_bounds_too_wide_to_resolve_x0_are_not_success(bounds):
    # Bounds of +-1e30 place a parameter only to ~1e14: x0 = 1 became -2.2e14 (1.4e14
    # one-sided) and the fit stopped after one iteration with SUCCESS at a cost of 2.5e28
    # (the stall test was off with bounds); curve_fit says PRECISION_LIMIT there.
    res = mml.least_squares(lambda p: p - 3.0, jnp.array([1.0]), bounds=bounds)
    assert int(res.status) == mml.Status.PRECISION_LIMIT and not bool(res.success)


def test_bounds_errors_name_x0():
    # The messages named curve_fit's p0 and its batch of datasets ("have one dataset's p0
    # structure and shapes (bounds are shared by every dataset)").
    def fun(p):
        return jnp.stack([p["b"] - 2.0, p["a"] - 1.0])

    x0 = {"b": jnp.array(0.5), "a": jnp.array(0.5)}
    with pytest.raises(ValueError, match="x0's structure") as info:
        mml.least_squares(fun, x0, bounds=([0.0, 0.0], [1.0, 3.0]))  # a dict's keys are sorted
    assert "p0" not in str(info.value)
    with pytest.raises(ValueError, match="x0's structure and shapes, got") as info:
        mml.least_squares(rosen_residuals, jnp.zeros(2), bounds=([0.0] * 3, 1.0))
    assert "dataset" not in str(info.value)


@pytest.mark.parametrize("name", ["meyer", "osborne_2", "brown_dennis"])
def test_mgh_problems_reach_the_published_minimum(name):
    """Moré-Garbow-Hillstrom problems from x0 (Meyer: 16 digits of scale between its
    parameters; Osborne 2: 11 parameters; Brown-Dennis: a large residual): the published f*
    (f = sum r^2 = 2 cost), at a point that scipy's least_squares cannot improve on."""
    from tests.zoo import mgh

    p = mgh.BY_NAME[name]
    res = mml.least_squares(lambda q: p.residual(q), jnp.asarray(p.x0), max_iter=1000)
    f = 2.0 * float(res.cost)
    assert bool(res.success), mml.Status(int(res.status)).name
    assert abs(f - p.fstar) <= 1e-5 * p.fstar, (f, p.fstar)
    assert not mgh.improvable(p, np.asarray(res.x), f)


def test_has_aux_returns_the_auxiliary_output_at_the_solution():
    # jaxopt's and optimistix's has_aux: fun returns (residuals, aux)
    t = jnp.linspace(0.0, 3.0, 20)
    y = 2.0 * jnp.exp(-1.3 * t) + 0.01 * jnp.sin(7.0 * t)

    def fun(p, y):
        model = p[0] * jnp.exp(-p[1] * t)
        return model - y, {"model": model, "rms": jnp.sqrt(jnp.mean((model - y) ** 2))}

    res = mml.least_squares(fun, jnp.array([1.0, 1.0]), args=(y,), has_aux=True)
    plain = mml.least_squares(lambda p, y: fun(p, y)[0], jnp.array([1.0, 1.0]), args=(y,))
    assert bool(res.success) and plain.aux is None
    np.testing.assert_allclose(res.x, plain.x, rtol=1e-12)
    np.testing.assert_allclose(res.aux["model"], fun(res.x, y)[1]["model"], rtol=1e-12)
    # differentiable through the solution: d rms / d y against central differences
    g = jax.grad(
        lambda yy: mml.least_squares(
            fun, jnp.array([1.0, 1.0]), args=(yy,), has_aux=True, rtol=1e-12
        ).aux["rms"]
    )(y)
    h = 1e-6
    e = jnp.zeros(20).at[3].set(h)

    def rms(yy):
        return mml.least_squares(
            fun, jnp.array([1.0, 1.0]), args=(yy,), has_aux=True, rtol=1e-12
        ).aux["rms"]

    np.testing.assert_allclose(g[3], (rms(y + e) - rms(y - e)) / (2 * h), rtol=1e-5)
    with pytest.raises(TypeError, match="has_aux=True, fun must return a pair"):
        mml.least_squares(lambda p: p - 1.0, jnp.ones(2), has_aux=True)
