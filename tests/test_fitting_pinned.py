"""Fitting behaviour pinned down one rule at a time: robust covariance, weighted r^2, the rank
and singularity tests, the p-value and its derivatives, nan_policy and bounds checks, and LM's
stopping rules. Found by mutation testing: each test fails when its rule is changed.

Each test names the statistic or rule it checks; the expectations come from scipy, numpy or a
mathematical identity, never from the code under test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import jaxopt_mml as mml
from jaxopt_mml import Status
from jaxopt_mml._fit_stats import spd_inverse
from jaxopt_mml._small_linalg import UNROLL, chol_solve, cholesky
from tests.zoo.fitting import exp_decay

EPS = np.finfo(np.float64).eps


def _outlier_data():
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 4.0, 50)
    y = np.asarray(exp_decay(x, np.array([2.0, 1.3, 0.5]))) + 0.02 * rng.standard_normal(50)
    y[[5, 17, 33]] += np.array([1.5, -2.0, 3.0])
    return x, y


# ---------------------------------------------------------------- robust fits: covariance


@pytest.mark.parametrize("loss", ["huber", "soft_l1", "cauchy"])
def test_robust_covariance_and_reduced_chi2_match_scipy_curve_fit(loss):
    # scipy's curve_fit with a robust loss: pcov = (J_s^T J_s)^-1 * cost / dof, J_s the
    # Jacobian rescaled by sqrt(rho' + 2 z rho'') and cost = sum C^2 rho((r / C)^2) (not chi2).
    x, y = _outlier_data()
    f_scale = 0.05
    p0 = np.array([1.5, 1.0, 0.3])
    fit = mml.curve_fit(exp_decay, x, y, p0, loss=loss, f_scale=f_scale)
    jac = jax.jit(jax.jacfwd(lambda p: exp_decay(jnp.asarray(x), p)))
    ref_p, ref_cov = scipy.optimize.curve_fit(
        lambda xx, *p: np.asarray(exp_decay(xx, np.asarray(p))),
        x,
        y,
        p0=p0,
        jac=lambda xx, *p: np.asarray(jac(jnp.asarray(p))),
        method="trf",
        loss=loss,
        f_scale=f_scale,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    assert bool(fit.success), Status(int(fit.status))
    np.testing.assert_allclose(fit.params, ref_p, rtol=1e-6)
    scale = np.sqrt(np.outer(np.diag(ref_cov), np.diag(ref_cov)))
    np.testing.assert_array_less(np.abs(np.asarray(fit.covariance) - ref_cov) / scale, 1e-5)
    # chi2 and reduced_chi2 stay the plain sum of squared residuals, whatever the loss
    resid = y - np.asarray(exp_decay(x, ref_p))
    assert int(fit.dof) == 47
    np.testing.assert_allclose(fit.chi2, resid @ resid, rtol=1e-6)
    np.testing.assert_allclose(fit.reduced_chi2, resid @ resid / 47, rtol=1e-6)


# ---------------------------------------------------------------- weighted r_squared


def test_weighted_r_squared_equals_that_of_repeated_points():
    # sigma = 1 / sqrt(m) weighs a point as m copies of it: the weighted fit and its r_squared
    # (weighted mean and weighted sums) equal the unweighted ones of the repeated data.
    rng = np.random.default_rng(11)
    x = np.linspace(0.0, 2.0, 15)
    y = 0.4 + 1.7 * x + 0.3 * rng.standard_normal(15)
    m = rng.integers(1, 5, 15)
    xr, yr = np.repeat(x, m), np.repeat(y, m)
    b, a = np.polyfit(xr, yr, 1)
    resid = yr - (a + b * xr)
    r2 = 1.0 - resid @ resid / np.sum((yr - yr.mean()) ** 2)
    sigma = 1.0 / np.sqrt(m)

    lin = mml.linear_fit(x, y, sigma=sigma)
    np.testing.assert_allclose(lin.params, [a, b], rtol=1e-10)
    np.testing.assert_allclose(lin.r_squared, r2, rtol=1e-10)
    curve = mml.curve_fit(lambda xx, p: p[0] + p[1] * xx, x, y, jnp.zeros(2), sigma=sigma)
    np.testing.assert_allclose(curve.params, [a, b], rtol=1e-8)
    np.testing.assert_allclose(curve.r_squared, r2, rtol=1e-8)


# ---------------------------------------------------------------- singularity thresholds


def test_spd_inverse_flags_a_pivot_below_k_eps():
    # [[1, c], [c, 1]] with c = 1 - d has eigenvalues 2 - d and d, and its second pivot is
    # 1 - c^2 ~ 2 d: the covariance is undefined where the condition number 2 / d exceeds
    # 1 / (k eps) (k = 4 here: a pivot of 2 eps is below 4 eps), and defined well within it.
    def matrix(d):
        a = np.eye(4)
        a[0, 1] = a[1, 0] = 1.0 - d
        return jnp.asarray(a)

    _, regular = spd_inverse(matrix(EPS))  # condition 2 / eps > 1 / (4 eps)
    assert not bool(regular)
    inv, regular = spd_inverse(matrix(64 * EPS))  # condition 1 / (32 eps) < 1 / (4 eps)
    assert bool(regular)
    np.testing.assert_allclose(inv, np.linalg.inv(np.asarray(matrix(64 * EPS))), rtol=1e-12)


@pytest.mark.parametrize("k", [UNROLL, UNROLL + 1, 13])
def test_cholesky_and_its_solves_match_numpy_unrolled_and_rolled(k):
    # Above UNROLL parameters the LM step's factor and solves run as fori_loops (compile time);
    # both forms, batched and not, against NumPy; a matrix that is not PD gives NaN.
    rng = np.random.default_rng(k)
    a = rng.normal(size=(2, k, k))
    a = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(k)
    b = rng.normal(size=(2, k, 3))
    low = jax.vmap(cholesky)(jnp.asarray(a))
    np.testing.assert_allclose(low, np.linalg.cholesky(a), rtol=0, atol=1e-12)
    x = jax.vmap(chol_solve)(low, jnp.asarray(b))
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-10, atol=1e-12)
    x1 = chol_solve(low[0], jnp.asarray(b[0, :, 0]))
    np.testing.assert_allclose(x1, np.linalg.solve(a[0], b[0, :, 0]), rtol=1e-10, atol=1e-12)
    a[1, 2, 2] = -1.0
    assert np.isnan(np.asarray(cholesky(jnp.asarray(a[1])))).any()


def test_linear_fit_rank_test_is_numpys_matrix_rank():
    # Two columns that differ by 3e-15 relative: the smallest singular value of the
    # column-normalised design, ~2e-15 of the largest, lies above eps but below
    # eps * max(N, k), numpy's (and polyfit's) cut: rank 2, a singular fit.
    n = 200
    x = np.linspace(0.0, 1.0, n)
    z = np.random.default_rng(5).standard_normal(n)
    design = np.stack([np.ones(n), x, x + 3e-15 * z], axis=1)
    unit = design / np.linalg.norm(design, axis=0)
    s = np.linalg.svd(unit, compute_uv=False)
    assert EPS < s[-1] / s[0] < EPS * n  # the case this test is about
    assert np.linalg.matrix_rank(unit) == 2
    y = 1.0 + 2.0 * x
    fit = mml.linear_fit(None, y, design=design)
    assert int(fit.status) == Status.SINGULAR and not bool(fit.success)
    assert np.all(np.isinf(np.asarray(fit.covariance)))


# ---------------------------------------------------------------- nan_policy='omit' with a design


def test_linear_fit_omits_a_design_row_holding_nan():
    rng = np.random.default_rng(2)
    x = np.linspace(0.0, 1.0, 12)
    design = np.stack([np.ones(12), x, x * x], axis=1)
    y = 1.0 - 2.0 * x + 0.5 * x * x + 0.05 * rng.standard_normal(12)
    bad = design.copy()
    bad[4, 2] = np.nan
    keep = np.arange(12) != 4
    omit = mml.linear_fit(None, y, design=bad, nan_policy="omit")
    ref = np.linalg.lstsq(design[keep], y[keep], rcond=None)[0]
    assert int(omit.status) == Status.SUCCESS
    np.testing.assert_allclose(omit.params, ref, rtol=1e-10)
    assert int(omit.dof) == 11 - 3
    resid = y[keep] - design[keep] @ ref
    np.testing.assert_allclose(omit.chi2, resid @ resid, rtol=1e-10)


# ---------------------------------------------------------------- p-values: accuracy, derivatives


def test_p_value_of_small_dof_to_1e_12():
    # The documented accuracy (relative error below 1e-11) where the prefactor's log Gamma(a)
    # switches from Stirling's series at a + 8 to one at a (dof 2 to 48, a = 1 to 24).
    from jaxopt_mml._fit_stats import chi2_sf

    dof = np.repeat(np.arange(2.0, 49.0), 40)
    chi2 = np.tile(np.linspace(0.05, 4.0, 40), 47) * dof
    got = jax.jit(chi2_sf)(jnp.asarray(chi2), jnp.asarray(dof))
    np.testing.assert_allclose(got, scipy.stats.chi2.sf(chi2, dof), rtol=1e-12)


def test_incomplete_gamma_derivative_at_zero_is_the_right_limit():
    # dQ/dx = -x^(a-1) e^-x / Gamma(a) -> -pdf of Gamma(a) at 0+: -inf, -1, 0 for a < 1, 1, > 1.
    from jaxopt_mml._special import gammaincc

    a = jnp.asarray([0.5, 1.0, 2.0, 3.5])
    got = jax.vmap(jax.grad(gammaincc, argnums=1))(a, jnp.zeros(4))
    np.testing.assert_array_equal(got, -scipy.stats.gamma.pdf(0.0, np.asarray(a)))


def test_p_value_derivative_in_dof_is_nan_not_zero():
    # Not implemented, and documented to give NaN rather than a silently wrong 0.
    from jaxopt_mml._fit_stats import chi2_sf

    _, tangent = jax.jvp(lambda d: chi2_sf(jnp.asarray(3.0), d), (4.0,), (1.0,))
    assert np.isnan(float(tangent))
    _, tangent = jax.jvp(lambda c: chi2_sf(c, 4.0), (3.0,), (1.0,))
    np.testing.assert_allclose(tangent, -scipy.stats.chi2.pdf(3.0, 4), rtol=1e-12)
    # Reverse mode too (the rule was not linear in the tangent: jax.grad raised AssertionError),
    # and a fit's p-value, whose dof is a count, is differentiable in the data.
    assert np.isnan(float(jax.grad(chi2_sf, argnums=1)(3.0, 4.0)))
    np.testing.assert_allclose(
        jax.grad(chi2_sf)(3.0, 4.0), -scipy.stats.chi2.pdf(3.0, 4), rtol=1e-12
    )
    x = jnp.linspace(0.0, 1.0, 8)
    grad_y = jax.grad(lambda y: mml.linear_fit(x, y, sigma=0.1).p_value)(jnp.sin(3 * x))
    assert np.all(np.isfinite(grad_y)) and np.any(grad_y != 0)


@pytest.mark.parametrize("dof", [1.0, 2.0, 3.0, 6.0])
def test_p_value_derivative_at_chi2_zero_is_the_right_hand_one(dof):
    # chi2 cannot be negative: at 0 the derivative is -pdf(0+) (jnp.maximum(chi2, 0) halved it).
    from jaxopt_mml._fit_stats import chi2_sf

    got = jax.grad(chi2_sf)(0.0, dof)
    assert float(got) == -scipy.stats.chi2.pdf(0.0, dof)


# ---------------------------------------------------------------- data checks and nan_policy


def test_omitted_non_finite_x_leaves_derivatives_finite():
    # nan_policy='omit' drops a point whose x is NaN: the fit does not depend on that x (its
    # derivative is 0, not NaN), and its derivatives in the other x equal those of the fit
    # without that point.
    x = np.linspace(0.0, 4.0, 20)
    y = np.asarray(exp_decay(x, np.array([2.0, 1.3, 0.5])))
    y = y + 0.02 * np.random.default_rng(4).standard_normal(20)
    x_nan = x.copy()
    x_nan[6] = np.nan
    keep = np.arange(20) != 6
    p0 = jnp.array([1.5, 1.0, 0.3])

    def omit(xx):
        return mml.curve_fit(exp_decay, xx, y, p0, nan_policy="omit").params[1]

    def dropped(xx):
        return mml.curve_fit(exp_decay, xx, y[keep], p0).params[1]

    grad = np.asarray(jax.grad(omit)(jnp.asarray(x_nan)))
    want = np.asarray(jax.grad(dropped)(jnp.asarray(x[keep])))
    assert grad[6] == 0.0
    np.testing.assert_allclose(grad[keep], want, rtol=1e-6, atol=1e-10)


def test_shared_x_with_nan_at_a_point_one_dataset_keeps_raises():
    # Shared x: a point's x counts as soon as any dataset keeps that point.
    x = np.linspace(0.0, 4.0, 20)
    x[3] = np.nan
    y = np.ones((2, 20))
    mask = np.ones((2, 20), bool)
    mask[1, 3] = False  # dataset 0 still uses x[3]
    with pytest.raises(ValueError, match="x hold"):
        mml.curve_fit(exp_decay, x, y, jnp.ones(3), mask=mask)
    mask[0, 3] = False  # nobody uses it: fine
    fit = mml.curve_fit(exp_decay, x, y, jnp.ones(3), mask=mask)
    assert fit.status.shape == (2,)


def test_omit_drops_a_point_with_nan_in_any_predictor():
    # x of shape (2, N): a NaN in either row drops that point, as deleting it would.
    rng = np.random.default_rng(9)
    x = np.stack([np.linspace(0.0, 1.0, 16), rng.uniform(-1.0, 1.0, 16)])
    y = 0.5 + 1.5 * x[0] - 0.7 * x[1] + 0.01 * rng.standard_normal(16)
    x_nan = x.copy()
    x_nan[1, 5] = np.nan
    keep = np.arange(16) != 5

    def plane(xx, p):
        return p[0] + p[1] * xx[0] + p[2] * xx[1]

    omit = mml.curve_fit(plane, x_nan, y, jnp.zeros(3), nan_policy="omit")
    design = np.stack([np.ones(15), x[0, keep], x[1, keep]], axis=1)
    ref = np.linalg.lstsq(design, y[keep], rcond=None)[0]
    assert int(omit.dof) == 15 - 3
    np.testing.assert_allclose(omit.params, ref, rtol=1e-8)


def test_equal_bounds_raise_eagerly():
    x = np.linspace(0.0, 4.0, 20)
    y = np.asarray(exp_decay(x, np.array([2.0, 1.3, 0.5])))
    with pytest.raises(ValueError, match="lower < upper"):
        mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.5]), bounds=(0.5, 0.5))
    lo, hi = np.array([0.0, 0.0, 0.5]), np.array([5.0, 5.0, 0.5])
    with pytest.raises(ValueError, match="lower < upper"):
        mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.5]), bounds=(lo, hi))


def test_a_singular_fit_started_at_its_minimum_is_converged():
    # p0 p1 x started where p0 p1 is the least-squares slope: a stationary point, so the fit
    # has converged (its covariance undefined: J^T J is singular), though no step was taken.
    rng = np.random.default_rng(0)
    x = np.linspace(0.1, 1.0, 10)
    y = 2.0 * x + 0.05 * rng.standard_normal(10)
    slope = np.sum(x * y) / np.sum(x * x)
    fit = mml.curve_fit(lambda xx, p: p[0] * p[1] * xx, x, y, jnp.array([2.0, slope / 2.0]))
    assert bool(fit.success)
    assert int(fit.status) == Status.COVARIANCE_UNDEFINED
    np.testing.assert_allclose(float(fit.params[0] * fit.params[1]), slope, rtol=1e-12)


def test_a_start_on_a_bound_is_allowed():
    # lower <= p0 <= upper: a start on a bound is valid (moved inside by the transform).
    x = np.linspace(0.0, 4.0, 20)
    y = np.asarray(exp_decay(x, np.array([2.0, 1.3, 0.5])))
    y = y + 0.01 * np.random.default_rng(1).standard_normal(20)
    free = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]))
    for p0 in ([1.0, 1.0, 0.0], [1.0, 1.0, 1.0]):  # on the lower, then the upper bound
        fit = mml.curve_fit(exp_decay, x, y, jnp.array(p0), bounds=(0.0, [10.0, 10.0, 1.0]))
        assert int(fit.status) == Status.SUCCESS
        np.testing.assert_allclose(fit.params, free.params, rtol=1e-6)


def test_a_fit_that_evaporates_still_lowers_the_cost():
    # MINPACK's rule (a step must achieve 1e-4 of its predicted reduction): accepting any
    # reduction took this Cauchy fit's first steps out to rates of 1e5, where the model no
    # longer reaches the data, and it ended MAX_ITER at 0.9 of its start's cost (0.13 with it).
    from tests.test_fitting_wrong_turns import _cost, _fit
    from tests.zoo import fit_wrong_turns as cases

    case = cases.CAUCHY_FIRST_STEP_EVAPORATES
    fit = _fit(case)
    assert np.all(np.isfinite(np.asarray(fit.params)))
    assert _cost(case, np.asarray(fit.params)) < 0.5 * _cost(case, np.asarray(case["p0"]))


def test_a_failed_float32_search_is_precision_limit_only_below_rtol():
    # A gradient-descent search that finds no decrease ends PRECISION_LIMIT where the
    # Gauss-Newton reduction still predicted from its point is below rtol of chi2 (the dtype
    # cannot resolve what is left), LINESEARCH_FAILED where it is not. The prediction is
    # recomputed here in float64. Which random fits end so is rounding's call (on a 2-core CPU
    # the 3rd of these, on an H100 and under XLA's -O0 the 27th: the 3rd converged there), so
    # fits are drawn until both outcomes have been checked.
    rng = np.random.default_rng(0)
    x = np.linspace(0.5, 5.0, 40).astype(np.float32)
    xd = x.astype(float)
    rtol = np.sqrt(np.finfo(np.float32).eps)

    def power(xx, p):
        return p[0] * xx ** p[1] + p[2]

    statuses = []
    for _ in range(40):
        t = np.array([rng.uniform(0.5, 5), rng.uniform(-2, 3), rng.uniform(-1, 1)])
        y = (power(xd, t) + 0.05 * rng.standard_normal(40)).astype(np.float32)
        p0 = (t * (1 + 0.1 * rng.choice([-1, 1], 3))).astype(np.float32)
        fit = mml.curve_fit(power, x, y, p0, method="gradient-descent", max_iter=2000)
        status = int(fit.status)
        statuses.append(status)
        if status not in (Status.PRECISION_LIMIT, Status.LINESEARCH_FAILED):
            continue
        p = np.asarray(fit.params, float)
        r = y.astype(float) - power(xd, p)
        jac = np.stack([xd ** p[1], p[0] * xd ** p[1] * np.log(xd), np.ones_like(xd)], axis=1)
        g = jac.T @ r
        pred = g @ np.linalg.solve(jac.T @ jac, g)
        below = pred < rtol * (r @ r)
        assert status == (Status.PRECISION_LIMIT if below else Status.LINESEARCH_FAILED)
        if {Status.PRECISION_LIMIT, Status.LINESEARCH_FAILED} <= set(statuses):
            break
    assert Status.PRECISION_LIMIT in statuses  # the case this test is about
