"""Edge cases of the fitting routines: bounds far away or nearly active, warm starts, empty and
masked data, non-finite results, and static misuse (each found failing once; see the commit)."""

import logging
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import jaxopt_mml as mml
from jaxopt_mml import Status


def decay(x, p):
    return p[0] * jnp.exp(-p[1] * x) + p[2]


def _decay_data(n=40, seed=4):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, n)
    return x, 2.0 * np.exp(-1.3 * x) + 0.3 + 0.02 * rng.standard_normal(n)


def _scipy_decay(x, y, **kw):
    return scipy.optimize.curve_fit(
        lambda xx, a, k, c: a * np.exp(-k * xx) + c, x, y, p0=[1.0, 1.0, 0.0], **kw
    )


# ---------------------------------------------------------------- bounds


@pytest.mark.parametrize("far", [1e4, 1e8])
def test_a_far_inactive_bound_changes_nothing(far):
    # The step test runs on the parameters: with u ~ p - bound ~ 1e8 a test on the internal
    # variable passed any step below 1.5 and stopped after one iteration, 8 stderr off.
    x, y = _decay_data()
    ref, cov = _scipy_decay(x, y)
    stderr = np.sqrt(np.diag(cov))
    for bounds in [(-far, np.inf), (-np.inf, far), (-far, far)]:
        fit = mml.curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), bounds=bounds)
        assert int(fit.status) == Status.SUCCESS
        np.testing.assert_array_less(np.abs(np.asarray(fit.params) - ref) / stderr, 1e-3)


def test_far_bounds_do_not_hold_batched_fits_at_their_rounding():
    # A bound at 1e8 places p ~ 0.3 no finer than 1.5e-8 (p = bound - distance), above rtol |p|:
    # 1 fit in 8 spent ~100 iterations taking steps of one or two such quanta, each refused by
    # the cost, and ended PRECISION_LIMIT (on a GPU, or with other roundings, the test above
    # too). A step within the bounds' rounding is now small.
    x = np.linspace(0.0, 5.0, 40)
    rng = np.random.default_rng(0)
    ys = 2.0 * np.exp(-1.3 * x) + 0.3 + 0.02 * rng.standard_normal((32, 40))
    free = mml.curve_fit(decay, x, ys, jnp.array([1.0, 1.0, 0.0]))
    for bounds in [(-np.inf, 1e8), (-1e8, 1e8)]:
        fit = mml.curve_fit(decay, x, ys, jnp.array([1.0, 1.0, 0.0]), bounds=bounds)
        assert np.all(np.asarray(fit.status) == Status.SUCCESS), (bounds, fit.status)
        assert int(np.max(fit.n_iter)) < 30, (bounds, fit.n_iter)
        off = np.abs(np.asarray(fit.params) - np.asarray(free.params)) / np.asarray(free.stderr)
        assert np.max(off) < 1e-3, (bounds, np.max(off))


def test_a_start_inside_wide_bounds_is_not_moved():
    # A start within a millionth of the span of a bound was moved there: p0 = 1 inside (0, 1e8)
    # started at 100, and this fit ended on a plateau (k = 3400, chi2 119 times the minimum)
    # with success. Only a start on a bound moves, by a millionth of the bound's size.
    from jaxopt_mml._fit_data import Bounds, to_external, to_internal

    b = Bounds(jnp.zeros(3), jnp.full(3, 1e8))
    p0 = jnp.array([1.0, 1.0, 0.1])
    np.testing.assert_allclose(np.asarray(to_external(to_internal(p0, b), b)), p0, rtol=1e-9)
    on = np.asarray(to_internal(jnp.array([0.0, 1e8, 5.0]), b))
    assert np.all(np.isfinite(on))
    moved = np.asarray(to_external(jnp.asarray(on), b))
    assert 0 < moved[0] <= 1e-6 and 1e8 - 1e2 <= moved[1] < 1e8

    rng = np.random.default_rng(18)
    x = np.linspace(0.0, 4.0, 30)
    y = 2.0 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(30)
    free = mml.curve_fit(decay, x, y, p0)
    fit = mml.curve_fit(decay, x, y, p0, bounds=(0.0, 1e8))
    assert int(fit.status) == Status.SUCCESS
    np.testing.assert_allclose(np.asarray(fit.params), np.asarray(free.params), rtol=1e-6)


@pytest.mark.parametrize("bounds", [(0.0, np.inf), (0.0, 1.0), (-np.inf, 1e-11)])
def test_a_small_parameter_near_its_bound_keeps_its_precision(bounds):
    # p ~ 3e-12 known to 3e-18: MINUIT's transforms evaluated as written (1 + sin u, and
    # sqrt(u^2 + 1) - 1) hold p - bound only to eps absolute, 16 to 3000 stderr here.
    rng = np.random.default_rng(0)
    x = np.linspace(1.0, 10.0, 30)
    sigma = np.full(30, 1e-16)
    y = 3e-12 * x + sigma * rng.standard_normal(30)
    exact = np.sum(x * y) / np.sum(x * x)
    stderr = 1.0 / np.sqrt(np.sum(x * x / sigma**2))
    fit = mml.curve_fit(
        lambda xx, p: p[0] * xx, x, y, jnp.array([1e-12]), sigma=sigma, bounds=bounds
    )
    assert int(fit.status) == Status.SUCCESS
    assert abs(float(fit.params[0]) - exact) < 0.01 * stderr


def test_bounded_transforms_keep_relative_precision_near_the_bounds():
    from jaxopt_mml._fit_data import Bounds, to_external, to_internal

    lo = jnp.array([0.0, -1e8, -jnp.inf, 1.0])
    hi = jnp.array([1.0, jnp.inf, 0.0, 2.0])
    b = Bounds(lo, hi)
    # distances from the nearer bound, beyond the start's nudge (1e-6 of the span or bound)
    p = jnp.array([3e-5, -1e8 + 500.0, -2e-5, 2.0 - 3e-5])
    back = to_external(to_internal(p, b), b)
    near = jnp.array([back[0] - lo[0], back[1] - lo[1], hi[2] - back[2], hi[3] - back[3]])
    np.testing.assert_allclose(near, jnp.array([3e-5, 500.0, 2e-5, 3e-5]), rtol=1e-9)
    # u at pi/2 + d from the two-sided bound: p - lo = sin(d / 2)^2 without cancellation
    d = 1e-6
    u = jnp.array([-0.5 * np.pi + d, 0.0, 0.0, 0.5 * np.pi - d])
    out = to_external(u, b)
    np.testing.assert_allclose(out[0], np.sin(d / 2) ** 2, rtol=1e-8)
    np.testing.assert_allclose(2.0 - out[3], np.sin(d / 2) ** 2, rtol=1e-3)  # 2 - p: rounding of 2


def test_bounded_transforms_derivatives_and_a_slope_never_zero():
    """The transform's derivatives (``slopes``, and ``to_external``'s own jvp in u and in the
    bounds) match central differences; on a bound the slope is tiny but not 0, so that a
    parameter pressed there can tell whether the data pull it off (it was exactly 0 at
    ``u = -pi/2``, and such a parameter stayed there)."""
    from jaxopt_mml._fit_data import Bounds, slopes, to_external

    lo = jnp.array([0.5, 1.0, -jnp.inf, -jnp.inf])
    hi = jnp.array([2.0, jnp.inf, 3.0, jnp.inf])
    for u0 in (0.3, -1.1, 2.4):
        u = jnp.full(4, u0)
        d1, d2, _ = slopes(u, Bounds(lo, hi))
        step = 1e-5
        plus, minus = to_external(u + step, Bounds(lo, hi)), to_external(u - step, Bounds(lo, hi))
        mid = to_external(u, Bounds(lo, hi))
        np.testing.assert_allclose(d1, (plus - minus) / (2 * step), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(d2, (plus - 2 * mid + minus) / step**2, rtol=1e-4, atol=1e-5)
        jac = jax.jacfwd(lambda v: to_external(v, Bounds(lo, hi)))(u)
        np.testing.assert_allclose(np.diag(jac), d1, rtol=1e-14)
        for which in (0, 1):

            def moved(e, which=which, u=u):
                # shift the finite lower (which = 0) or upper (1) bounds by e
                lo_e = jnp.where(jnp.isfinite(lo) & (which == 0), lo + e, lo)
                hi_e = jnp.where(jnp.isfinite(hi) & (which == 1), hi + e, hi)
                return to_external(u, Bounds(lo_e, hi_e))

            got = jax.jvp(moved, (0.0,), (1.0,))[1]
            fd = (moved(1e-6) - moved(-1e-6)) / 2e-6
            np.testing.assert_allclose(got, fd, rtol=1e-7, atol=1e-9)
    on = jnp.array([-0.5 * np.pi, 0.0, 0.0, 0.0])
    d1, _, rel = slopes(on, Bounds(lo, hi))
    assert np.all(np.asarray(d1[:3]) != 0) and np.all(np.abs(np.asarray(d1[:3])) < 1e-15)
    np.testing.assert_allclose(rel, [0.0, 0.0, 0.0, 1.0], atol=1e-15)


def _active_bound_case(seed):
    """Decay data with the amplitude's lower bound 0.8 above its free optimum (active), the
    offset's bounds inactive; scipy's trf (bounds handled without a change of variables) as the
    reference."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 5.0, 50)
    y = 1.4 * np.exp(-3.7 * x) + 0.4 + 0.01 * rng.standard_normal(50)
    tight = dict(xtol=1e-15, ftol=1e-15, gtol=1e-15)
    free = scipy.optimize.least_squares(lambda q: np.asarray(decay(x, q)) - y, [2.2, 2.2, 0.37])
    lo = np.array([free.x[0] + 0.8, -np.inf, -0.4])
    hi = np.array([np.inf, np.inf, 0.45])
    p0 = np.array([lo[0] + 0.05, 2.2, 0.37])
    ref = scipy.optimize.least_squares(
        lambda q: np.asarray(decay(x, q)) - y, p0, bounds=(lo, hi), method="trf", **tight
    )
    return x, y, p0, (lo, hi), ref


@pytest.mark.parametrize("method", ["lm", "gauss-newton"])
@pytest.mark.parametrize("seed", [0, 3])
def test_a_fit_converges_onto_an_active_bound(method, seed):
    # The change of variables flattens the Gauss-Newton model at a bound: lm crept onto it
    # linearly (MAX_ITER at 200 iterations, 0.01-0.05 stderr short) and Gauss-Newton's
    # overshooting steps ended LINESEARCH_FAILED 8 stderr away. With the change of variables'
    # curvature in the model both converge in under 30 iterations.
    x, y, p0, bounds, ref = _active_bound_case(seed)
    fit = mml.curve_fit(decay, x, y, p0, bounds=bounds, method=method)
    assert int(fit.status) == Status.SUCCESS
    assert int(fit.n_iter) < 30
    np.testing.assert_allclose(float(fit.chi2), 2 * ref.cost, rtol=1e-12)
    np.testing.assert_allclose(fit.params, ref.x, atol=1e-5 * float(np.min(fit.stderr)))


@pytest.mark.parametrize("which", [0, 2])
def test_derivative_of_a_fit_with_an_active_bound_holds_that_parameter(which):
    # Implicit differentiation in the bounded variables: a parameter on an active bound does
    # not move with the data (derivative 0), the others move as the refitted fit does.
    x, y, _, (lo, hi), _ = _active_bound_case(1)
    p0 = np.array([2.25, 2.2, 0.3])
    if which == 2:  # the offset's upper bound active instead of the amplitude's lower one
        lo, hi = np.array([-np.inf, -np.inf, -0.4]), np.array([np.inf, np.inf, 0.35])

    def fitp(yy):
        return mml.curve_fit(decay, x, yy, p0, bounds=(lo, hi)).params

    v = np.random.default_rng(5).standard_normal(y.shape)
    p, dp = jax.jvp(fitp, (jnp.asarray(y),), (jnp.asarray(v),))
    assert float(p[which]) == (lo[which] if which == 0 else hi[which])
    eps = 1e-6
    fd = (np.asarray(fitp(y + eps * v)) - np.asarray(fitp(y - eps * v))) / (2 * eps)
    assert fd[which] == 0.0 and abs(float(dp[which])) < 1e-12
    np.testing.assert_allclose(dp, fd, rtol=1e-5, atol=1e-8)


def test_derivative_holds_a_parameter_ending_exactly_on_the_flat_point_of_two_sided_bounds():
    # The offset's lower bound of [0.6, 5] is active and the fit ends with u exactly at the
    # change of variables' flat point (p' = 0 exactly, replaced by a tiny number): the
    # replacement by jnp.where dropped p'' from the second derivative the implicit rule takes,
    # and the bounded parameter got the free parameter's derivative (0.17, the others off by
    # 10-70%) instead of 0.
    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 4.0, 12)
    y = 2.0 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(12)
    lo, hi = np.array([0.0, 0.0, 0.6]), np.array([5.0, 5.0, 5.0])

    def fitp(yy):
        return mml.curve_fit(decay, x, yy, np.array([1.0, 1.0, 0.7]), bounds=(lo, hi)).params

    v = np.random.default_rng(5).standard_normal(y.shape)
    p, dp = jax.jvp(fitp, (jnp.asarray(y),), (jnp.asarray(v),))
    assert float(p[2]) == 0.6
    eps = 1e-6
    fd = (np.asarray(fitp(y + eps * v)) - np.asarray(fitp(y - eps * v))) / (2 * eps)
    assert fd[2] == 0.0 and abs(float(dp[2])) < 1e-12
    np.testing.assert_allclose(dp, fd, rtol=1e-5, atol=1e-8)


def test_a_fit_does_not_stop_short_of_an_active_bound():
    # A power law whose exponent's upper bound is active: lm reported SUCCESS 2.4e-5 below
    # the bound with chi2 5e-4 above the bounded minimum (the damped steps were small).
    x = np.linspace(0.5, 5.0, 16)
    y = np.array(
        [1.7732, 3.3493, 5.7304, 9.3822, 14.1206, 19.8497, 26.7879, 35.1351, 44.7240, 55.6065,
         67.8877, 81.6282, 96.9568, 113.5179, 131.7701, 151.4982]
    )  # fmt: skip
    lo = np.array([1.1292928637375543, -np.inf, -0.31487000272045357])
    hi = np.array([np.inf, 2.15598197158618, 0.14477282468304126])
    p0 = np.array([3.2922957668347563, 1.9393117419777408, 0.13557996813497136])

    def power(xx, p):
        return p[0] * xx ** p[1] + p[2]

    ref = scipy.optimize.least_squares(
        lambda q: np.asarray(power(x, q)) - y,
        p0,
        bounds=(lo, hi),
        method="trf",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    fit = mml.curve_fit(power, x, y, p0, bounds=(lo, hi))
    assert int(fit.status) == Status.SUCCESS
    np.testing.assert_allclose(float(fit.chi2), 2 * ref.cost, rtol=1e-10)
    np.testing.assert_allclose(fit.params, ref.x, rtol=1e-7, atol=1e-12)


def test_nan_bounds_raise():
    x, y = _decay_data()
    with pytest.raises(ValueError, match="bounds"):
        mml.curve_fit(decay, x, y, jnp.ones(3), bounds=(np.array([0.0, np.nan, 0.0]), np.inf))


# ---------------------------------------------------------------- statuses


def test_a_warm_start_at_the_minimum_is_success_not_precision_limit():
    # Started within ~1e-9 of the minimum, the first step's cost change is below rounding and
    # no step is accepted: that is convergence, not a dtype that cannot resolve the problem.
    rng = np.random.default_rng(8)
    x = np.linspace(0.0, 4.0, 50)
    y = 2.0 * np.exp(-1.3 * x) + 0.01 * rng.standard_normal(50)
    model = lambda xx, p: p[0] * jnp.exp(-p[1] * xx)  # noqa: E731
    best = mml.curve_fit(model, x, y, jnp.array([1.0, 1.0]))
    starts = np.asarray(best.params) * (1.0 + 1e-9 * rng.standard_normal((300, 2)))
    fits = mml.curve_fit(model, x, np.broadcast_to(y, (300, 50)), starts)
    assert mml.summarise_status(fits.status) == {Status.SUCCESS: 300}
    stderr = np.asarray(best.stderr)
    np.testing.assert_array_less(np.abs(np.asarray(fits.params) - best.params) / stderr, 1e-4)


@pytest.mark.parametrize("how", ["mask", "omit"])
def test_a_dataset_with_no_usable_point_is_invalid_input(how):
    x, y = _decay_data()
    if how == "mask":
        fit = mml.curve_fit(decay, x, y, jnp.ones(3), mask=np.zeros(40, bool))
    else:
        fit = mml.curve_fit(decay, x, np.full(40, np.nan), jnp.ones(3), nan_policy="omit")
    assert int(fit.status) == Status.INVALID_INPUT and not bool(fit.success)
    batch = mml.curve_fit(decay, x, np.stack([y, y]), jnp.ones(3), mask=np.array([[True], [False]]))
    assert [int(s) for s in batch.status] == [Status.SUCCESS, Status.INVALID_INPUT]


def test_non_finite_values_at_masked_points_are_ignored():
    # A masked point is as good as deleted, NaN in x or sigma there included.
    x, y = _decay_data()
    keep = np.arange(40) != 7
    ref = mml.curve_fit(decay, x[keep], y[keep], jnp.ones(3), sigma=0.02)
    for xx, ss in [(np.where(keep, x, np.nan), 0.02), (x, np.where(keep, 0.02, np.nan))]:
        fit = mml.curve_fit(decay, xx, y, jnp.ones(3), sigma=ss, mask=keep)
        assert int(fit.status) == Status.SUCCESS
        np.testing.assert_allclose(fit.params, ref.params, rtol=1e-8)
        line = mml.linear_fit(xx, y, sigma=ss, mask=keep)
        assert int(line.status) == Status.SUCCESS
    with pytest.raises(ValueError, match="x"):
        mml.curve_fit(decay, np.where(keep, x, np.nan), y, jnp.ones(3))


def test_traced_non_positive_sigma_is_invalid_input():
    # The eager call raises; under jit a negative sigma fitted as |sigma|, with SUCCESS.
    x, y = _decay_data()
    fit = jax.jit(lambda s: mml.curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=s))
    line = jax.jit(lambda s: mml.linear_fit(x, y, sigma=s))
    for bad in (-0.02, 0.0):
        sigma = jnp.full(x.shape, 0.02).at[3].set(bad)
        assert int(fit(sigma).status) == Status.INVALID_INPUT
        assert int(line(sigma).status) == Status.INVALID_INPUT
    sigma = jnp.full(x.shape, 0.02)
    assert int(fit(sigma).status) == Status.SUCCESS == int(line(sigma).status)


def test_nan_sigma_propagates_to_a_nonfinite_status():
    x, y = _decay_data()
    sigma = np.full(40, 0.02)
    sigma[3] = np.nan
    fit = mml.curve_fit(decay, x, y, jnp.ones(3), sigma=sigma, nan_policy="propagate")
    assert int(fit.status) == Status.NONFINITE
    line = mml.linear_fit(x, y, sigma=sigma, nan_policy="propagate")
    assert int(line.status) == Status.NONFINITE and not bool(line.success)


@pytest.mark.parametrize("method", ["lm", "gauss-newton", "gradient-descent"])
def test_a_non_finite_jacobian_is_nonfinite_not_success(method):
    # A model whose derivative is NaN at p0 (sqrt(p^2) at p = 0), with finite data: the step
    # was NaN, set to 0, and passed the step test; the fit stopped at p0 after one iteration
    # with success True (COVARIANCE_UNDEFINED). Likewise x = inf at a used point under
    # nan_policy='propagate' (exp(-b x) is finite there, its derivative in b NaN).
    x = np.linspace(0.0, 4.0, 12)
    y = 2.0 * x + 1.0 + 0.01 * np.random.default_rng(1).standard_normal(12)

    def line(xx, p):
        return jnp.sqrt(p[0] ** 2) * xx + p[1]

    fit = mml.curve_fit(line, x, y, jnp.zeros(2), method=method)
    assert int(fit.status) == Status.NONFINITE and not bool(fit.success)
    x_inf = np.where(np.arange(12) == 3, np.inf, x)
    yd = 2.0 * np.exp(-1.3 * x) + 0.5
    fit = mml.curve_fit(decay, x_inf, yd, jnp.ones(3), nan_policy="propagate", method=method)
    assert int(fit.status) == Status.NONFINITE and not bool(fit.success)
    # the same model from a start where its derivative is finite fits as before
    fit = mml.curve_fit(line, x, y, jnp.ones(2), method=method, max_iter=20000)
    assert int(fit.status) == Status.SUCCESS


def test_linear_fit_reports_non_finite_results():
    x = np.linspace(0.0, 1.0, 10)
    for y in (np.where(np.arange(10) == 2, np.nan, x), np.where(np.arange(10) == 2, np.inf, x)):
        fit = mml.linear_fit(x, y, nan_policy="propagate")
        assert int(fit.status) == Status.NONFINITE and not bool(fit.success)
    noisy = (x + 1 + 0.1 * np.random.default_rng(0).standard_normal(10)).astype(np.float32)
    tiny = mml.linear_fit(x.astype(np.float32), noisy, sigma=np.float32(1e-20))
    assert int(tiny.status) == Status.NONFINITE and not bool(tiny.success)


@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_linear_fit_with_fewer_points_than_coefficients_is_singular(absolute_sigma):
    fit = mml.linear_fit(
        np.array([0.0, 1.0, 2.0]),
        np.array([1.0, 0.0, 3.0]),
        degree=4,
        absolute_sigma=absolute_sigma,
    )
    assert int(fit.status) == Status.SINGULAR and not bool(fit.success)
    assert np.all(np.isinf(np.asarray(fit.covariance)))


@pytest.mark.parametrize("scale, degree", [(1e8, 2), (1e6, 3), (1e-6, 3)])
def test_linear_fit_is_blind_to_the_units_of_x(scale, degree):
    # The rank test ran on the SVD of the unscaled Vandermonde matrix, whose columns differ by
    # scale^k: these well-posed fits (condition 3 to 8 with unit columns) were SINGULAR, with a
    # truncated solution. Now as numpy's polyfit, which scales the columns first.
    rng = np.random.default_rng(3)
    t = np.linspace(-2.0, 3.0, 20)
    y = 1.0 - 2.0 * t + 0.5 * t**2 + 0.3 * rng.standard_normal(20)
    x = t * scale
    fit = mml.linear_fit(x, y, degree=degree)
    ref = np.polynomial.polynomial.polyfit(x, y, degree)
    assert int(fit.status) == Status.SUCCESS
    np.testing.assert_allclose(np.asarray(fit.params), ref, rtol=1e-7)
    # the covariance in the columns' own units: that of the same fit in t, rescaled
    fit_t = mml.linear_fit(t, y, degree=degree)
    k = np.arange(degree + 1)
    expected = np.asarray(fit_t.covariance) / np.outer(scale**k, scale**k)
    np.testing.assert_allclose(np.asarray(fit.covariance), expected, rtol=1e-7)


def test_r_squared_of_constant_data_is_nan_for_both_fits():
    x = np.linspace(0.0, 1.0, 10)
    y = np.full(10, 2.0)
    assert np.isnan(float(mml.linear_fit(x, y).r_squared))
    assert np.isnan(
        float(mml.curve_fit(lambda xx, p: p[0] + p[1] * xx, x, y, jnp.ones(2)).r_squared)
    )


# ---------------------------------------------------------------- static misuse


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"f_scale": -1.0, "loss": "huber"}, "f_scale"),
        ({"f_scale": 0.0, "loss": "huber"}, "f_scale"),
        ({"f_scale": np.inf, "loss": "huber"}, "f_scale"),
        ({"f_scale": np.ones(40), "loss": "huber"}, "f_scale"),
        ({"rtol": -1.0}, "rtol"),
        ({"atol": np.nan}, "atol"),
        ({"mask": np.ones((1, 40), bool)}, "mask"),
        ({"sigma": np.ones((1, 40))}, "sigma"),
    ],
)
def test_curve_fit_options_are_checked(kwargs, match):
    x, y = _decay_data()
    with pytest.raises(ValueError, match=match):
        mml.curve_fit(decay, x, y, jnp.ones(3), **kwargs)


def test_linear_fit_and_chi_squared_check_shapes():
    x = np.linspace(0.0, 1.0, 20)
    y = 2 * x
    with pytest.raises(ValueError, match="x must"):
        mml.linear_fit(np.stack([x, x]), y)
    with pytest.raises(ValueError, match="x must"):
        mml.linear_fit(np.stack([x, x, x]), np.stack([y, y]))
    with pytest.raises(ValueError, match="design"):
        mml.linear_fit(None, y, design=np.ones((2, 20, 2)))
    with pytest.raises(ValueError, match="design"):
        mml.linear_fit(None, np.stack([y, y]), design=np.ones((3, 20, 2)))
    with pytest.raises(ValueError, match="mask"):
        mml.linear_fit(x, y, mask=np.ones((1, 20), bool))
    for sigma in (np.ones(19), np.ones((2, 20))):
        with pytest.raises(ValueError, match="sigma"):
            mml.chi_squared(lambda xx, p: p * xx, 2.0, x, y, sigma=sigma)


def test_a_covariance_sigma_or_a_pytree_x_is_refused_by_name():
    # scipy's curve_fit takes a 2-D sigma as y's covariance: it was refused as "at most y's 1
    # axes" (and for a batch, as not broadcasting). A dict x (or ragged arrays) met NumPy's
    # isfinite message instead of one naming x.
    x, y = _decay_data()
    cov = np.diag(np.full(40, 0.01))
    for fit in (
        lambda: mml.curve_fit(decay, x, y, jnp.ones(3), sigma=cov),
        lambda: mml.curve_fit(decay, x, np.stack([y, y]), jnp.ones(3), sigma=cov),
        lambda: mml.linear_fit(x, y, sigma=cov),
    ):
        with pytest.raises(ValueError, match="covariance matrix of y is not supported"):
            fit()
    for bad_x in ({"t": x}, [x, x[:-1]]):
        with pytest.raises(TypeError, match="x must be an array of numbers"):
            mml.curve_fit(lambda xx, p: p[0] * xx["t"], bad_x, y, jnp.ones(1))


def test_a_model_error_says_how_a_batch_read_x_and_p0():
    # x of shape (k, N) with k == B predictors, or a (B, k) p0 meant as one matrix parameter,
    # are read per dataset: the model then failed with a message of its own shapes only.
    x, y = _decay_data()
    xs, ys = np.stack([x, x**2]), np.stack([y, y])

    def two(xx, p):
        return p[0] * xx[0] + p[1] * xx[1]

    with pytest.raises(ValueError, match="x_per_dataset=False"):
        mml.curve_fit(two, xs, ys, jnp.ones(2))
    with pytest.raises(TypeError, match="p0 was read as one start per dataset"):
        mml.curve_fit(lambda xx, p: p[0, 0] + p[1, 1] * xx, x, ys, jnp.ones((2, 2)))


# ---------------------------------------------------------------- second bug hunt


@pytest.mark.parametrize("loss, f_scale", [("cauchy", 2.0), ("huber", 3.0)])
def test_robust_fit_from_a_start_where_every_point_is_an_outlier(loss, f_scale):
    # Every residual beyond f_scale at p0: the damping grew to ~1e20 while all steps failed,
    # then the damped predicted reduction passed the cost test at a non-stationary point.
    rng = np.random.default_rng(9)
    x = np.linspace(0.0, 3.0, 20)
    y = 2.0 * np.exp(-1.0 * x) + 0.5 + 0.05 * rng.standard_normal(20)
    y[4] += 1.0  # an outlier
    sigma = 0.05
    p0 = jnp.array([1.0, 0.5, 0.0])
    fit = mml.curve_fit(decay, x, y, p0, sigma=sigma, loss=loss, f_scale=f_scale)
    ref = scipy.optimize.least_squares(
        lambda p: (y - np.asarray(decay(x, p))) / sigma,
        np.asarray(p0),
        loss=loss,
        f_scale=f_scale,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    assert bool(fit.success)
    np.testing.assert_allclose(fit.params, ref.x, rtol=1e-6)


def test_float64_x_with_float32_data_fits_in_float32():
    x = np.linspace(0.0, 4.0, 40)  # float64 under x64
    y = (2.0 * np.exp(-x)).astype(np.float32)
    model = lambda xx, p: p[0] * jnp.exp(-p[1] * xx)  # noqa: E731
    fit = mml.curve_fit(model, x, y, np.array([1.0, 0.5], np.float32))
    assert fit.params.dtype == jnp.float32 and bool(fit.success)
    np.testing.assert_allclose(fit.params, [2.0, 1.0], rtol=1e-4)


def test_float32_data_with_a_p0_of_python_numbers_fits_in_float32():
    # scipy's p0=[1.0, 0.5]: Python numbers are weakly typed in JAX and follow the data; under
    # x64 they made the fit of float32 data run, and return, in float64.
    x = np.linspace(0.0, 4.0, 40, dtype=np.float32)
    y = (2.0 * np.exp(-x)).astype(np.float32)
    model = lambda xx, p: p[0] * jnp.exp(-p[1] * xx)  # noqa: E731
    fit = mml.curve_fit(model, x, y, [1.0, 0.5])
    assert [leaf.dtype for leaf in fit.params] == [jnp.float32, jnp.float32]
    assert fit.covariance.dtype == jnp.float32 and fit.chi2.dtype == jnp.float32
    assert bool(fit.success)


def test_bfloat16_curve_fit_runs_in_bfloat16():
    # A bfloat16 p0 was refused as "p0 must hold numbers" and bfloat16 x as "x must be an array
    # of numbers" (NumPy's issubdtype does not know bfloat16); bfloat16 data then failed in the
    # loop ("carry ... lam has type bfloat16[] but ... float32[]": a NumPy bfloat16 eps times a
    # Python float is a float32).
    x = jnp.linspace(0.0, 1.0, 30, dtype=jnp.bfloat16)
    y = (2.0 * x + 1.0 + 0.05 * jnp.sin(37.0 * x)).astype(jnp.bfloat16)
    model = lambda xx, p: p[0] * xx + p[1]  # noqa: E731
    fit = mml.curve_fit(model, x, y, jnp.array([1.0, 0.0], jnp.bfloat16))
    assert fit.params.dtype == jnp.bfloat16 and bool(fit.success)
    ref, _ = scipy.optimize.curve_fit(
        lambda xx, a, b: a * xx + b, np.asarray(x, np.float64), np.asarray(y, np.float64)
    )
    np.testing.assert_allclose(np.asarray(fit.params, np.float64), ref, atol=2e-2)


def test_bfloat16_curve_fit_success_is_at_the_minimum():
    # Two exponentials from p0 = (0.3, 3, 3, 0.05) in bfloat16 stopped with SUCCESS at chi2 37
    # times the minimum's (the tests' rounding margins are as large as rtol in bfloat16); a start
    # that reaches the minimum stays SUCCESS.
    x = np.linspace(0.0, 4.0, 40)
    y = 3.0 * np.exp(-2.5 * x) + np.exp(-0.4 * x) + 0.02 * np.sin(7.3 * x)
    xb, yb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(y, jnp.bfloat16)

    def model(xx, p):
        return p[0] * jnp.exp(-p[1] * xx) + p[2] * jnp.exp(-p[3] * xx)

    far = mml.curve_fit(model, xb, yb, jnp.array([0.3, 3.0, 3.0, 0.05], jnp.bfloat16))
    assert int(far.status) == Status.PRECISION_LIMIT
    near = mml.curve_fit(model, xb, yb, jnp.array([2.0, 2.0, 0.5, 0.05], jnp.bfloat16))
    assert int(near.status) == Status.SUCCESS


def test_float16_curve_fit_traces_without_an_overflow():
    # The damping's cap 1 / eps^2 (1e6) overflowed float16 in NumPy at trace time: a
    # RuntimeWarning, and a cap of inf that no damping could pass
    x = jnp.linspace(0.0, 1.0, 30, dtype=jnp.float16)
    y = (2.0 * x + 1.0).astype(jnp.float16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = mml.curve_fit(lambda xx, p: p[0] * xx + p[1], x, y, jnp.array([1.0, 0.0], x.dtype))
    assert fit.params.dtype == jnp.float16 and bool(fit.success)
    np.testing.assert_allclose(np.asarray(fit.params, float), [2.0, 1.0], rtol=1e-2)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_linear_fit_of_half_precision_data_runs_in_float32(dtype):
    # float16 data met LAPACK's "NotImplementedError: Unsupported dtype float16" (the SVD)
    x = jnp.linspace(0.0, 1.0, 30, dtype=dtype)
    y = (2.0 * x + 1.0 + 0.05 * jnp.sin(37.0 * x)).astype(dtype)
    fit = mml.linear_fit(x, y)
    assert fit.params.dtype == jnp.float32 and bool(fit.success)
    ref = np.polynomial.polynomial.polyfit(np.asarray(x, np.float64), np.asarray(y, np.float64), 1)
    np.testing.assert_allclose(fit.params, ref, rtol=1e-5)


def test_linear_fit_takes_a_numpy_integer_degree():
    # np.int64(2) (a computed degree, as numpy.polyfit takes) was refused as "not an int".
    x = np.linspace(-1.0, 2.0, 7)
    y = 1.0 + 2.0 * x - 0.5 * x**2 + 0.01 * np.cos(5 * x)
    fit = mml.linear_fit(x, y, degree=np.int64(2))
    np.testing.assert_allclose(fit.params, np.polynomial.polynomial.polyfit(x, y, 2), rtol=1e-12)
    for bad in (np.True_, np.int64(-1), 2.0):
        with pytest.raises(ValueError, match="degree"):
            mml.linear_fit(x, y, degree=bad)


def test_linear_fit_refuses_a_degree_beside_a_design():
    # The degree was ignored, silently, when a design was given (even degree=1 written out)
    x = np.linspace(0.0, 1.0, 6)
    design = np.stack([np.ones(6), x], -1)
    for degree in (3, 1):
        with pytest.raises(ValueError, match="degree=.*and design"):
            mml.linear_fit(x, 1.0 + 2.0 * x, degree=degree, design=design)
    # the default degree is a straight line
    np.testing.assert_allclose(mml.linear_fit(x, 1.0 + 2.0 * x).params, [1.0, 2.0], rtol=1e-12)


def test_linear_fit_refuses_complex_data():
    # A complex y (or x, sigma, design) was cast to the real dtype: its imaginary part dropped,
    # and the fit of the real part came back with SUCCESS.
    x = np.linspace(0.0, 1.0, 6)
    for kwargs in (
        dict(x=x, y=2 * x + 1j),
        dict(x=x + 0j, y=2 * x),
        dict(x=x, y=2 * x, sigma=np.full(6, 0.1 + 0j)),
        dict(x=None, y=2 * x, design=np.stack([np.ones(6), x], -1) + 0j),
    ):
        name = [k for k, v in kwargs.items() if np.iscomplexobj(v)][0]
        with pytest.raises(TypeError, match=f"complex {name}"):
            mml.linear_fit(kwargs.pop("x"), kwargs.pop("y"), **kwargs)


def test_a_p0_without_elements_is_refused_by_name():
    # An empty array (or a pytree of them) met NumPy's "need at least one array to stack".
    x = np.linspace(0.0, 1.0, 5)
    for p0 in (np.zeros(0), {"a": np.zeros((0, 2))}):
        with pytest.raises(ValueError, match="p0 must hold at least one parameter"):
            mml.curve_fit(lambda xx, p: xx, x, x, p0)


def test_curve_fit_refuses_a_complex_sigma_or_bound():
    # They were cast to the fit's real dtype, their imaginary parts dropped (SUCCESS).
    x = np.linspace(0.0, 1.0, 5)
    line = lambda xx, p: p[0] * xx + p[1]  # noqa: E731
    p0 = np.array([1.0, 0.0])
    with pytest.raises(TypeError, match="real sigma"):
        mml.curve_fit(line, x, 2 * x + 1, p0, sigma=np.full(5, 0.1 + 0.1j))
    for bounds in ((0.0, 3.0 + 1j), (np.zeros(2), np.full(2, 3.0 + 1j))):
        with pytest.raises(TypeError, match="real bounds"):
            mml.curve_fit(line, x, 2 * x + 1, p0, bounds=bounds)


def test_chi_squared_refuses_complex_data():
    # Complex residuals were summed as r * r, not |r|^2: a complex value came back.
    x = np.linspace(0.0, 1.0, 4)
    line = lambda xx, p: p[0] * xx + p[1]  # noqa: E731
    p = np.array([2.0, 1.0])
    with pytest.raises(TypeError, match="complex y"):
        mml.chi_squared(line, p, x, 2 * x + 1 + 1j)
    with pytest.raises(TypeError, match="complex model"):
        mml.chi_squared(line, p + 1j, x, 2 * x + 1)
    with pytest.raises(TypeError, match="complex sigma"):
        mml.chi_squared(line, p, x, 2 * x + 1, sigma=0.1 + 0j)


def test_data_and_bounds_that_are_no_numbers_are_refused_by_name():
    # A string y, sigma, design or bound met NumPy's "ufunc 'less_equal' did not contain a
    # loop" or JAX's "not a valid JAX array type", naming no argument.
    x = np.linspace(0.0, 1.0, 5)
    line = lambda xx, p: p[0] * xx + p[1]  # noqa: E731
    p0 = np.array([1.0, 0.0])
    for name, kwargs in (
        ("y", dict(y="abcde")),
        ("sigma", dict(sigma="abc")),
        ("bounds lower", dict(bounds=("a", 3.0))),
        ("bounds upper", dict(bounds=(np.zeros(2), ["a", "b"]))),
    ):
        kwargs = {"y": 2 * x + 1, **kwargs}
        with pytest.raises(TypeError, match=f"{name} must hold real numbers"):
            mml.curve_fit(line, x, kwargs.pop("y"), p0, **kwargs)
    for name, kwargs in (
        ("x", dict(x=["a"] * 5)),
        ("y", dict(y="abcde")),
        ("sigma", dict(sigma="abc")),
        ("design", dict(x=None, design=np.full((5, 2), "a"))),
    ):
        kwargs = {"x": x, "y": 2 * x + 1, **kwargs}
        with pytest.raises(TypeError, match=f"{name} must hold real numbers"):
            mml.linear_fit(kwargs.pop("x"), kwargs.pop("y"), **kwargs)
    for name, kwargs in (("y", dict(y="abcd")), ("sigma", dict(sigma="abc"))):
        kwargs = {"y": 2 * x[:4] + 1, **kwargs}
        with pytest.raises(TypeError, match=f"{name} must hold real numbers"):
            mml.chi_squared(line, p0, x[:4], kwargs.pop("y"), **kwargs)


def test_chi_squared_of_integer_data_is_a_float():
    # Integer data and an integer model summed squares in integers: (80000 - 4)^2 overflowed
    # int32 (without x64) to a wrong value, silently.
    x = np.arange(5, dtype=np.int32)
    y = np.array([0, 1, 2, 3, 80000], np.int32)
    chi2 = mml.chi_squared(lambda xx, p: p * xx, np.int32(1), x, y)
    assert jnp.issubdtype(chi2.dtype, jnp.floating)
    np.testing.assert_allclose(float(chi2), 79996.0**2, rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_chi_squared_of_half_precision_data_is_summed_in_float32(dtype):
    # As linear_fit fits such data: 200 residuals of 20 sigma overflowed float16 (inf).
    x = jnp.linspace(0.0, 1.0, 200, dtype=dtype)
    y = (3.0 * x + 1.0 + 20.0).astype(dtype)
    chi2 = mml.chi_squared(lambda xx, p: p[0] + p[1] * xx, jnp.array([1.0, 3.0], dtype), x, y)
    assert chi2.dtype == jnp.float32
    np.testing.assert_allclose(float(chi2), 200 * 20.0**2, rtol=2e-2)


def test_linear_fit_derivative_in_x_is_finite_at_zero():
    import jax

    x = np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([1.0, 2.9, 5.2, 6.8])
    jac = jax.jacfwd(lambda xx: mml.linear_fit(xx, y).params)(jnp.asarray(x))
    h = 1e-6
    fd = np.stack(
        [
            (mml.linear_fit(x + h * e, y).params - mml.linear_fit(x - h * e, y).params) / (2 * h)
            for e in np.eye(4)
        ],
        axis=1,
    )
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-8)


def test_linear_fit_ignores_nan_in_a_design_row_that_mask_drops():
    # Eagerly this raised, under jit it fitted: a masked row is as good as deleted.
    x = np.linspace(0.0, 1.0, 12)
    design = np.stack([np.ones(12), x], 1)
    design[5, 1] = np.nan
    keep = np.arange(12) != 5
    fit = mml.linear_fit(None, 1.0 + 2.0 * x, design=design, mask=keep)
    assert int(fit.status) == mml.Status.SUCCESS
    np.testing.assert_allclose(fit.params, [1.0, 2.0], rtol=1e-12)
    with pytest.raises(ValueError, match="design holds NaN"):
        mml.linear_fit(None, 1.0 + 2.0 * x, design=design)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_linear_fit_derivatives_of_a_balanced_design_are_finite():
    import jax

    # x = +-1 twice: the weighted design has equal singular values, where the SVD's derivative
    # divides by zero (NaN for every derivative in x or sigma). Against curve_fit's implicit ones.
    x = jnp.array([-1.0, 1.0, -1.0, 1.0])
    y = jnp.array([0.9, 3.1, 1.1, 2.9])
    line = lambda xx, p: p[0] + p[1] * xx

    def linear(xx):
        fit = mml.linear_fit(xx, y)
        return fit.params, fit.stderr

    def curve(xx):
        fit = mml.curve_fit(line, xx, y, jnp.zeros(2))
        return fit.params, fit.stderr

    for transform in (jax.jacfwd, jax.jacrev):
        for got, want in zip(transform(linear)(x), transform(curve)(x), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    by_sigma = jax.grad(lambda s: mml.linear_fit(x, y, sigma=s).params[1])(jnp.ones(4))
    assert np.all(np.isfinite(by_sigma))


def test_batch_options_are_checked_and_no_data_is_invalid_in_both_fits():
    x = np.linspace(0.0, 1.0, 20)
    y = np.stack([2 * x, 3 * x])
    with pytest.raises(TypeError, match="x_per_dataset"):
        mml.curve_fit(lambda xx, p: p[0] * xx, np.stack([x, x]), y, jnp.ones(1), x_per_dataset="no")
    with pytest.raises(ValueError, match="x_per_dataset"):
        mml.curve_fit(lambda xx, p: p[0] * xx, x, 2 * x, jnp.ones(1), x_per_dataset=True)
    with pytest.raises(ValueError, match="lanes"):
        mml.curve_fit(lambda xx, p: p[0] * xx, x, 2 * x, jnp.ones(1), lanes=-5)
    mask = np.array([[True], [False]])
    line = mml.linear_fit(x, y, mask=mask)
    assert [int(s) for s in line.status] == [Status.SUCCESS, Status.INVALID_INPUT]


def test_gauss_newton_at_the_rounding_floor_is_converged_not_a_failed_search():
    # A power law a x^b + c: at the minimum, Armijo could not resolve the Gauss-Newton step's
    # predicted reduction (30 ulps of the cost) and the fit ended LINESEARCH_FAILED there.
    rng = np.random.default_rng(5)
    x = np.linspace(0.5, 5.0, 40)
    truth = np.stack(
        [rng.uniform(0.5, 5, 400), rng.uniform(-2, 3, 400), rng.uniform(-1, 1, 400)], 1
    )
    power = lambda xx, p: p[0] * xx ** p[1] + p[2]  # noqa: E731
    ys = np.array([power(x, p) for p in truth]) + 0.05 * rng.standard_normal((400, 40))
    starts = truth * (1 + 0.1 * rng.choice([-1, 1], truth.shape))
    fit = mml.curve_fit(power, x, ys[340], starts[340], method="gauss-newton")
    lm = mml.curve_fit(power, x, ys[340], starts[340])
    assert int(fit.status) == Status.SUCCESS, Status(int(fit.status))
    np.testing.assert_allclose(fit.params, lm.params, rtol=1e-7)


# ---------------------------------------------------------------- float32 convergence


def _exp2(x, p):
    return p[0] * jnp.exp(-p[1] * x) + p[2] * jnp.exp(-p[3] * x)


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_float32_fit_stuck_below_resolution_is_not_success(seed):
    # The fast rate drifts to ~120, where its term reaches only x = 0 and its column of J is
    # 1e-9: the steps LM can take there lower chi2 by less than float32 resolves. SUCCESS was
    # reported 20-25% above the minimum, the damped step and predicted reduction passing the
    # tests although that parameter's step was damped 1e8-fold. The status must say so.
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 8.0, 57).astype(np.float32)
    y = 2.5 * np.exp(-2.87 * x) + 0.63 * np.exp(-15.2 * x) + 0.01 * rng.standard_normal(57)
    y = y.astype(np.float32)
    p0 = np.array([3.09, 2.05, 0.38, 22.55], np.float32)
    ref = scipy.optimize.least_squares(
        lambda q: np.asarray(_exp2(x.astype(float), q)) - y, p0.astype(float), xtol=1e-15
    )
    fit = mml.curve_fit(_exp2, x, y, p0)
    if bool(fit.success):
        assert float(fit.chi2) <= 2 * ref.cost * (1 + 1e-4)
    else:
        assert int(fit.status) == Status.PRECISION_LIMIT


def test_float32_fit_does_not_stop_early_in_a_narrow_valley():
    # p0 x^p1 + p2 with p1 ~ -0.13: p0 and p2 are nearly collinear (stderr 1.6 on 4.7). The
    # first step's large contraction to the second predicted that the third would pass the step
    # test, and the fit stopped after two iterations 0.08 stderr from the minimum.
    rng = np.random.default_rng(2)
    rng.standard_normal(57)  # (the stream of the exp2 cases above)
    x = np.linspace(0.5, 5.0, 96).astype(np.float32)
    y = (4.72 * x**-0.1257 - 0.1086 + 0.05 * rng.standard_normal(96)).astype(np.float32)
    p0 = np.array([5.28, -0.130, -0.308], np.float32)

    def power(xx, p):
        return p[0] * xx ** p[1] + p[2]

    ref = scipy.optimize.least_squares(
        lambda q: np.asarray(power(x.astype(float), q)) - y,
        p0.astype(float),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    stderr = np.sqrt(np.diag(np.linalg.inv(ref.jac.T @ ref.jac)) * 2 * ref.cost / 93)
    fit = mml.curve_fit(power, x, y, p0)
    assert int(fit.status) == Status.SUCCESS
    assert np.max(np.abs(np.asarray(fit.params, float) - ref.x) / stderr) < 0.01


def test_gradient_descent_fit_success_means_within_rtol():
    # Gradient descent converges linearly; its step test on its own (short) steps stopped this
    # fit (condition 23) with SUCCESS 5e-5 relative from the minimum at rtol 1.5e-8. Its tests
    # now judge the Gauss-Newton step from the current point: SUCCESS within tolerance, or not
    # SUCCESS. Which failure is rounding's call: near the iteration cap the search along the
    # gradient finds no decrease the cost can resolve (PRECISION_LIMIT after 19918 iterations
    # with XLA's cheaper code), or the cap comes first (MAX_ITER at XLA's default).
    rng = np.random.default_rng(0)
    x = np.linspace(0.5, 2.577, 25)
    y = 3.46 * x**2.88 - 0.437 + 0.01 * rng.standard_normal(25)

    def power(xx, p):
        return p[0] * xx ** p[1] + p[2]

    ref = mml.curve_fit(power, x, y, np.array([3.0, 2.5, 0.0]))
    fit = mml.curve_fit(power, x, y, np.array([3.0, 2.5, 0.0]), method="gradient-descent")
    if bool(fit.success):
        np.testing.assert_allclose(fit.params, ref.params, rtol=1e-6)
    else:
        assert int(fit.status) in (Status.MAX_ITER, Status.PRECISION_LIMIT)
        np.testing.assert_allclose(fit.params, ref.params, rtol=1e-4)


def test_gauss_newton_at_the_rounding_floor_stops():
    # At the minimum the cost's rounding (residuals of ~0.05 from model values of ~150) hides
    # the Gauss-Newton step's predicted reduction (170 ulps of the cost): the Armijo search
    # "accepted" null steps at t = 2e-9 and the fit ran to MAX_ITER. No decrease now means no
    # step; the fit stops at once, SUCCESS or PRECISION_LIMIT, at the minimum.
    rng = np.random.default_rng(5)
    x = np.linspace(0.5, 5, 40)
    n = 400
    truth = np.stack([rng.uniform(0.5, 5, n), rng.uniform(-2, 3, n), rng.uniform(-1, 1, n)], 1)
    noise = 0.05 * rng.standard_normal((n, 40))
    p0 = truth * (1 + 0.1 * rng.choice([-1, 1], truth.shape))
    b = 173
    y = truth[b, 0] * x ** truth[b, 1] + truth[b, 2] + noise[b]

    def power(xx, p):
        return p[0] * xx ** p[1] + p[2]

    ref = scipy.optimize.least_squares(
        lambda q: power(x, q) - y, p0[b], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15
    )
    gn = mml.curve_fit(power, x, y, p0[b], method="gauss-newton")
    assert int(gn.status) in (Status.SUCCESS, Status.PRECISION_LIMIT)
    assert int(gn.n_iter) < 30
    # (the minimum itself is resolved only to ~3e-8 in p[2]: scipy's tight lm lands 3e-8 apart
    # with the model evaluated by jnp instead of NumPy, which is why PRECISION_LIMIT is fair)
    np.testing.assert_allclose(gn.params, ref.x, rtol=1e-7)


def test_gauss_newton_does_not_stop_where_a_shrunk_column_damps_its_step():
    # Gauss-Newton's 16 eps damping is in the units of the running maximum of diag(J^T J):
    # once the rate's column had shrunk ~1e10-fold from the start's (exp(5 x) at p0 = (1, -5)),
    # that damping outweighed its curvature, the rate's step came out ~1e6 times too short,
    # passed the step test, and the fit stopped with SUCCESS at 5600 times the minimum's chi2
    # (gradient cosine 1.6e-4 in the rate; 0.55 for the 3-parameter start below, SUCCESS at
    # 745 times the minimum's chi2). Success must now mean a stationary point.
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 4.0, 30)
    y = 2.0 * np.exp(-1.3 * x) + 0.01 * rng.standard_normal(30)

    def two(xx, p):
        return p[0] * jnp.exp(-p[1] * xx)

    for model, p0 in ((two, [1.0, -5.0]), (decay, [0.609, -0.753, -1.431])):
        fit = mml.curve_fit(model, x, y, jnp.array(p0), method="gauss-newton")
        jac = np.asarray(jax.jacfwd(lambda p, m=model: m(x, p))(fit.params))
        r = y - np.asarray(model(x, fit.params))
        norms = np.linalg.norm(jac, axis=0)
        cos = np.abs(jac.T @ r) / np.where(norms > 0, norms, 1.0) / np.linalg.norm(r)
        assert not bool(fit.success) or np.max(cos) < 1e-6, (fit.status, cos)


@pytest.mark.parametrize("method", ["lm", "gauss-newton"])
def test_exact_data_with_a_parameter_at_zero_is_success(method):
    # Noise-free data (from NumPy, so |r| ~ 1e-17, the data's rounding) with the offset c = 0:
    # the Gauss-Newton steps fit that rounding and are as long as |r|, so neither the relative
    # step test (rtol |c|, c ~ 1e-18) nor the statistical one (rtol |r|) could pass. LM ended
    # PRECISION_LIMIT after 116 iterations (started at the minimum too), Gauss-Newton
    # LINESEARCH_FAILED; with c = 0.3 the same fits ended SUCCESS in 7.
    x = np.linspace(0.0, 4.0, 30)
    y = 2.0 * np.exp(-1.3 * x)
    fit = mml.curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.5]), method=method)
    assert int(fit.status) == Status.SUCCESS and int(fit.n_iter) < 20
    np.testing.assert_allclose(fit.params, [2.0, 1.3, 0.0], rtol=1e-14, atol=1e-15)
    again = mml.curve_fit(decay, x, y, fit.params, method=method)
    assert int(again.status) == Status.SUCCESS and int(again.n_iter) < 5


@pytest.mark.parametrize("method", ["lm", "gauss-newton", "gradient-descent"])
def test_a_parameter_without_effect_does_not_stop_the_fit(method):
    # Its column of J is 0: J^T J is singular, the Gauss-Newton step that gradient descent's
    # tests judge must not turn NaN into "small" (it stopped after one step, far out), and
    # Gauss-Newton (SINGULAR at its first step before) takes 0 in that parameter.
    x, y = _decay_data()
    fit = mml.curve_fit(
        lambda xx, p: decay(xx, p) + 0.0 * p[3], x, y, jnp.array([1.0, 1.0, 0.0, 5.0]),
        method=method,
    )  # fmt: skip
    ref = mml.curve_fit(decay, x, y, jnp.array([1.0, 1.0, 0.0]))
    assert int(fit.status) == Status.COVARIANCE_UNDEFINED and float(fit.params[3]) == 5.0
    np.testing.assert_allclose(fit.params[:3], ref.params, rtol=1e-6)


@pytest.mark.parametrize("seed", [3, 4])
def test_float32_robust_fit_of_well_determined_parameters_reaches_the_minimum(seed):
    # Parameters known to 1e-5 of their value pass float32's relative step test (rtol 3.4e-4)
    # while a step still cuts the cost by 0.4-3%: the step test and the early stop ended these
    # soft_l1 fits with SUCCESS at twice the minimum's cost. A step must also change the cost
    # by less than rtol of it.
    def rational(xx, p):
        return (p[0] + p[1] * xx) / (1 + p[2] * xx)

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 5, 119).astype(np.float32)
    y = np.asarray(rational(x.astype(float), np.array([0.56, 1.15, 1.41])))
    y = (y + 4.9e-4 * rng.standard_normal(119)).astype(np.float32)
    y[rng.choice(119, 6, replace=False)] += 0.02 * rng.standard_normal(6).astype(np.float32)
    p0 = np.array([0.187, 1.068, 0.896], np.float32)
    sigma = np.full(119, 4.9e-4, np.float32)

    def cost(p):
        r = (y - rational(x.astype(float), p)) / sigma
        return 2.64**2 * np.sum(2 * (np.sqrt(1 + (r / 2.64) ** 2) - 1))

    ref = scipy.optimize.least_squares(
        lambda q: (y - rational(x.astype(float), q)) / sigma,
        p0.astype(float),
        loss="soft_l1",
        f_scale=2.64,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    fit = mml.curve_fit(rational, x, y, p0, sigma=sigma, loss="soft_l1", f_scale=np.float32(2.64))
    assert bool(fit.success)
    assert cost(np.asarray(fit.params, float)) <= cost(ref.x) * (1 + 1e-5)


# ---------------------------------------------------------------- third bug hunt


@pytest.mark.parametrize(
    "cast", [jnp.int32, jnp.bool_, jnp.complex128], ids=["int", "bool", "complex"]
)
def test_a_model_that_does_not_return_real_floats_is_a_type_error(cast):
    # An integer (or boolean) prediction has no derivative in the parameters: the fit stayed at
    # p0 with success = True (COVARIANCE_UNDEFINED); a complex one was cut to its real part.
    x = np.linspace(0.0, 4.0, 30)
    y = 2.0 * x + 1.0
    with pytest.raises(TypeError, match="model"):
        mml.curve_fit(lambda xx, p: (p[0] + p[1] * xx).astype(cast), x, y, jnp.ones(2))
    # integer x is passed to the model as floats, and checked as such
    fit = mml.curve_fit(lambda xx, p: p[0] + p[1] * xx, np.arange(5), 2 * np.arange(5) + 1, [0, 0])
    np.testing.assert_allclose(fit.params, [1.0, 2.0], atol=1e-10)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_derivatives_ignore_non_finite_x_at_masked_points():
    # A masked point is as good as deleted, NaN in x there included: the fit was, but reverse-mode
    # derivatives of its statistics multiplied the zero cotangent there by the model's NaN
    # partial derivatives (NaN gradients of chi2 and stderr wrt every y).
    x, y = _decay_data(n=12)
    keep = np.arange(12) != 7
    xx = np.where(keep, x, np.nan)
    p0 = jnp.array([1.0, 1.0, 0.0])

    def stats(fit):
        return jnp.stack([fit.chi2, fit.stderr[1], fit.covariance[0, 2], fit.params[0]])

    ref = jax.jacrev(lambda yy: stats(mml.curve_fit(decay, x[keep], yy, p0)))(y[keep])
    got = jax.jacrev(lambda yy: stats(mml.curve_fit(decay, xx, yy, p0, mask=keep)))(y)
    np.testing.assert_allclose(got[:, keep], ref, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(got[:, 7], 0.0)
    # a batch sharing x, each dataset dropping the point
    batched = jax.jacrev(
        lambda yy: jax.vmap(stats)(mml.curve_fit(decay, xx, jnp.stack([yy, yy]), p0, mask=keep))
    )(y)
    assert np.all(np.isfinite(batched))


@pytest.mark.parametrize("pad", ["mask", "sigma"])
def test_derivatives_ignore_padding_where_the_model_is_singular(pad):
    # Padding at x = 0, dropped by mask=False or sigma=inf, of a model singular there (log x):
    # the fit equalled the one without the padding, but reverse-mode derivatives of chi2 and
    # stderr multiplied the zero cotangent there by the model's infinite partials (NaN at every
    # used point). Unused points now see a used point's x.
    rng = np.random.default_rng(1)
    x = np.linspace(0.5, 4.0, 10)
    y = 2.0 * np.log(x) + 1.0 + 0.05 * rng.standard_normal(10)
    xp, yp = np.concatenate([x, np.zeros(3)]), np.concatenate([y, np.zeros(3)])
    used = np.arange(13) < 10
    opts = {"mask": used} if pad == "mask" else {"sigma": np.where(used, 1.0, np.inf)}
    p0 = jnp.array([1.0, 1.0])

    def model(xx, p):
        return p[0] * jnp.log(xx) + p[1]

    def stats(fit):
        return fit.chi2 + jnp.sum(fit.stderr)

    ref = jax.grad(lambda yy: stats(mml.curve_fit(model, x, yy, p0)))(y)
    got = jax.grad(lambda yy: stats(mml.curve_fit(model, xp, yy, p0, **opts)))(yp)
    np.testing.assert_allclose(got[:10], ref, rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(got[10:], 0.0)


@pytest.mark.parametrize("fit", ["linear_fit", "curve_fit"])
@pytest.mark.parametrize("nan_policy", ["raise", "propagate"])
def test_reverse_derivative_in_a_masked_points_zero_sigma_is_zero(fit, nan_policy):
    # A point that mask drops may hold sigma = 0 (it is as good as deleted): the fit is right,
    # but 1 / sigma was taken everywhere, and reverse mode multiplied the discarded branch's
    # -1 / sigma^2 = -inf by its zero cotangent: NaN in that sigma (forward mode gave 0).
    x = jnp.arange(5.0)
    y = jnp.array([1.0, 3.0, 2.0, 5.0, 4.0])
    mask = jnp.array([True, True, False, True, True])
    sigma = jnp.array([1.0, 1.0, 0.0, 1.0, 1.0])

    def stats(s):
        if fit == "linear_fit":
            out = mml.linear_fit(x, y, sigma=s, mask=mask, nan_policy=nan_policy)
        else:
            out = mml.curve_fit(
                lambda xx, p: p[0] + p[1] * xx,
                x,
                y,
                jnp.zeros(2),
                sigma=s,
                mask=mask,
                nan_policy=nan_policy,
            )
        return jnp.concatenate([out.params, out.stderr, out.chi2[None], out.r_squared[None]])

    rev, fwd = jax.jacrev(stats)(sigma), jax.jacfwd(stats)(sigma)
    np.testing.assert_array_equal(rev[:, 2], 0.0)
    np.testing.assert_allclose(rev, fwd, rtol=1e-9, atol=1e-12)


def test_f_scale_that_is_no_real_number_is_refused_by_name():
    # A string met NumPy's "could not convert string to float", None Python's float() message,
    # and True fitted as f_scale = 1.0
    x = np.linspace(0.0, 1.0, 5)
    for bad in ("abc", None, True, 1.0 + 0j):
        with pytest.raises(TypeError, match="f_scale must be a real number"):
            mml.curve_fit(lambda xx, p: p * xx, x, x, 1.0, loss="huber", f_scale=bad)


@pytest.mark.parametrize("loss", ["huber", "cauchy"])
def test_traced_non_positive_or_infinite_f_scale_is_invalid_input(loss):
    # The eager call raises; under jit a negative f_scale fitted as |f_scale|, with SUCCESS
    # (and 0, inf or NaN ended NONFINITE).
    x, y = _decay_data(n=20)
    fit = jax.jit(lambda c: mml.curve_fit(decay, x, y, jnp.ones(3), loss=loss, f_scale=c))
    for bad in (-1.0, 0.0, np.inf, np.nan):
        out = fit(bad)
        assert int(out.status) == Status.INVALID_INPUT and not bool(out.success)
    assert int(fit(1.0).status) == Status.SUCCESS


def test_chi_squared_takes_a_list_y_and_names_a_scalar_y():
    # A list y (as linear_fit and curve_fit take) met "'list' object has no attribute 'shape'"
    # (as_inexact mapped over the list); a scalar y JAX's "axis -1 is out of bounds".
    line = lambda x, p: p[0] + p[1] * x  # noqa: E731
    p, x = jnp.array([1.0, 2.0]), jnp.arange(4.0)
    got = mml.chi_squared(line, p, x, [1.1, 2.9, 5.1, 6.9], sigma=0.1)
    want = mml.chi_squared(line, p, x, jnp.array([1.1, 2.9, 5.1, 6.9]), sigma=0.1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    with pytest.raises(ValueError, match="y must have shape"):
        mml.chi_squared(lambda x, p: p[0], p, 1.0, 2.0)


def _traces(caplog, name, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` and how many times it traced the library's jitted ``name`` (a new
    program). (Not the jit's ``_cache_size``: its dispatch cache tells a NumPy array from a JAX
    array of the same type, one program.)"""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="jax._src.dispatch"):
        out = fn(*args, **kwargs)
    return sum(f"Finished tracing {name} for jit" in r.getMessage() for r in caplog.records), out


def test_linear_fit_reuses_its_compilation_for_weakly_typed_data(caplog):
    # A Python float sigma after a NumPy one, jnp.full(N, 0.2) (weakly typed) after an array, a
    # list y after an array: each compiled a program of its own for the same shapes (the weak
    # type, and a list's every element, were part of the jit's key).
    x = np.linspace(0.0, 1.0, 9)
    y = 2.0 * x + 1.0 + 0.01 * np.sin(7.0 * x)
    for first, again in (
        (dict(sigma=np.float64(0.1)), dict(sigma=0.2)),
        # (a Python int or a NumPy float32 scalar sigma: the scalar's own dtype was the key)
        (dict(sigma=0.1), dict(sigma=1)),
        (dict(sigma=0.1), dict(sigma=np.float32(0.5))),
        (dict(sigma=np.full(9, 0.1)), dict(sigma=jnp.full(9, 0.2))),
        (dict(y=y), dict(y=list(y))),
        (dict(x=None, design=np.ones((9, 2)) * 2.0), dict(x=None, design=jnp.full((9, 2), 1.0))),
    ):
        kw = {"x": x, "y": y, **first}
        ref = mml.linear_fit(kw.pop("x"), kw.pop("y"), **kw)
        kw = {"x": x, "y": y, **again}
        traces, out = _traces(
            caplog, "_linear_impl", mml.linear_fit, kw.pop("x"), kw.pop("y"), **kw
        )
        assert traces == 0, again
        assert out.params.dtype == ref.params.dtype


def test_curve_fit_reuses_its_compilation_for_weakly_typed_data(caplog):
    # As linear_fit: a Python float sigma or f_scale after a NumPy one, jnp.full(N, 0.2) after
    # an array, a list y, sigma or mask after an array compiled a program of their own.
    x = np.linspace(0.0, 1.0, 9)
    y = 2.0 * np.exp(-1.3 * x) + 0.01 * np.sin(7.0 * x)
    model = lambda xx, p: p[0] * jnp.exp(-p[1] * xx)  # noqa: E731
    mask = np.arange(9) != 4
    for first, again in (
        (dict(sigma=np.float64(0.1)), dict(sigma=0.2)),
        (dict(sigma=np.full(9, 0.1)), dict(sigma=jnp.full(9, 0.2))),
        (dict(sigma=np.full(9, 0.1)), dict(sigma=[0.1] * 9)),
        (dict(y=y), dict(y=list(y))),
        (dict(mask=mask), dict(mask=list(mask))),
        (dict(loss="huber", f_scale=np.float64(0.5)), dict(loss="huber", f_scale=0.5)),
        # (a Python int or a NumPy float32 scalar sigma or f_scale compiled a program of its own)
        (dict(sigma=0.1), dict(sigma=1)),
        (dict(sigma=0.1), dict(sigma=np.float32(0.5))),
        (dict(loss="huber", f_scale=0.5), dict(loss="huber", f_scale=2)),
        (dict(loss="huber", f_scale=0.5), dict(loss="huber", f_scale=np.float32(2.0))),
    ):
        kw = {"y": y, **first}
        ref = mml.curve_fit(model, x, kw.pop("y"), np.array([1.0, 1.0]), **kw)
        kw = {"y": y, **again}
        p0 = np.array([1.0, 1.0])
        traces, out = _traces(caplog, "_fit_impl", mml.curve_fit, model, x, kw.pop("y"), p0, **kw)
        assert traces == 0, again
        assert out.params.dtype == ref.params.dtype
        assert out.success


def test_an_unidentifiable_float32_model_has_no_covariance():
    # p0 p2 exp(p1 x) (or p0 exp(p1 x + p2)) cannot tell p0 from p2: J^T J is singular, but
    # formed from 500 float32 points its equilibrated pivot is rounding noise of a few to 20
    # eps, above the k eps cut: 12 and 17 of 200 fits came back SUCCESS with a finite
    # covariance (standard errors up to 9) where none exists. The cut is now sqrt(N) eps.
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 2.0, 500).astype(np.float32)
    y = (1.5 * np.exp(-0.7 * x) + 0.05 * rng.standard_normal((200, 500))).astype(np.float32)
    p0 = np.array([1.0, -0.5, 0.3], np.float32)
    for model in (
        lambda x, p: p[0] * p[2] * jnp.exp(p[1] * x),
        lambda x, p: p[0] * jnp.exp(p[1] * x + p[2]),
    ):
        fit = mml.curve_fit(model, x, y, p0)
        assert np.all(np.asarray(fit.status) == Status.COVARIANCE_UNDEFINED)
        assert not np.any(np.isfinite(np.asarray(fit.covariance)))
    # a well-posed float32 fit with many points keeps its covariance (cut 3.8e-5 at 10^5)
    xx = np.linspace(0.0, 2.0, 100_000).astype(np.float32)
    yy = (1.5 * np.exp(-0.7 * xx) + 0.05 * rng.standard_normal(100_000)).astype(np.float32)
    good = mml.curve_fit(lambda x, p: p[0] * jnp.exp(p[1] * x), xx, yy, p0[:2])
    assert int(good.status) == Status.SUCCESS
    assert np.all(np.isfinite(np.asarray(good.stderr)))


def test_a_well_posed_bfloat16_fit_of_many_points_keeps_its_covariance():
    # The cut sqrt(N) eps is the rounding of the sum that forms J^T J: jnp.sum adds bfloat16
    # terms in float32, so bfloat16's own eps (0.0078) there declared every fit of more than
    # 1/eps^2 = 16384 points, and a line's of 2000 (pivot 0.25 < sqrt(2000) eps = 0.35),
    # COVARIANCE_UNDEFINED (curve_fit's; its standard errors agree with float64's to 1%).
    from jaxopt_mml._fit_stats import spd_inverse
    from jaxopt_mml._small_linalg import gram

    x = np.linspace(0.0, 1.0, 2000)
    jac = np.stack([np.ones_like(x), x], axis=1)
    inverse, regular = spd_inverse(gram(jnp.asarray(jac, jnp.bfloat16)), 2000)
    assert bool(regular)
    expected = np.linalg.inv(jac.T @ jac)
    np.testing.assert_allclose(np.asarray(inverse, np.float64), expected, rtol=0.05)
