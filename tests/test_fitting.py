"""Tests of chi_squared, linear_fit and curve_fit (single datasets): oracles, statistics, options."""

import os
import subprocess
import sys
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import jaxopt_mml as mml
from jaxopt_mml import Status
from jaxopt_mml._fit_stats import chi2_sf, spd_inverse
from tests.zoo.fitting import exp_decay, gaussian_peak, peak_data

RNG = np.random.default_rng(1234)


def line(x, p):
    return p[0] + p[1] * x


def dict_decay(x, p):
    return p["a"] * jnp.exp(-p["b"] * x) + p["c"]


def exp_data(n=40, noise=0.02, seed=0, truth=(2.0, 1.3, 0.5)):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, n)
    y = np.asarray(exp_decay(x, np.asarray(truth))) + noise * rng.standard_normal(n)
    sigma = noise * (1.0 + rng.uniform(0.0, 1.0, n))
    return x, y, sigma


def scipy_fit(model, x, y, p0, **kw):
    """scipy's curve_fit run to tight tolerances: the oracle."""
    return scipy.optimize.curve_fit(
        lambda xx, *p: np.asarray(model(xx, np.asarray(p))),
        x,
        y,
        p0=p0,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        maxfev=10000,
        **kw,
    )


def assert_cov_close(cov, ref, rtol):
    """Covariances agree element-wise relative to sqrt(c_ii c_jj)."""
    scale = np.sqrt(np.outer(np.diag(ref), np.diag(ref)))
    np.testing.assert_array_less(np.abs(np.asarray(cov) - ref) / scale, rtol)


# ---------------------------------------------------------------- chi_squared and p-values


def test_chi_squared_matches_numpy():
    x, y, sigma = exp_data()
    p = jnp.array([2.0, 1.2, 0.4])
    ref = np.sum(((y - np.asarray(exp_decay(x, p))) / sigma) ** 2)
    np.testing.assert_allclose(mml.chi_squared(exp_decay, p, x, y, sigma=sigma), ref, rtol=1e-12)
    np.testing.assert_allclose(
        mml.chi_squared(exp_decay, p, x, y), np.sum((y - np.asarray(exp_decay(x, p))) ** 2)
    )


def test_chi_squared_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="model"):
        mml.chi_squared(lambda x, p: p, jnp.ones(3), jnp.ones(5), jnp.ones(5))


@pytest.mark.parametrize("dof", [1, 2, 7, 60, 1000, 10**4, 10**5, 10**6])
def test_p_value_matches_scipy_stats(dof):
    chi2 = np.array([0.01, 0.5, 1.0, 3.0, 10.0, 100.0, 2000.0]) * dof**0.5 + dof * 0.5
    got = chi2_sf(jnp.asarray(chi2), dof)
    np.testing.assert_allclose(got, scipy.stats.chi2.sf(chi2, dof), rtol=1e-10, atol=1e-300)


def _p_value_grid(dofs):
    """(chi2, dof) pairs: from near 0 through the bulk (every method's region) to p ~ 1e-300."""
    z = np.concatenate([-np.geomspace(30, 1e-3, 12), [0.0], np.geomspace(1e-3, 1e3, 25)])
    chi2, dof = [], []
    for d in dofs:
        c = np.concatenate(
            [d + z * np.sqrt(2 * d), np.geomspace(1e-6, 50 * d + 1400, 20), [1e-300]]
        )
        c = c[c > 0]
        chi2.append(c)
        dof.append(np.full_like(c, d))
    return np.concatenate(chi2), np.concatenate(dof)


_CHI2_SF = jax.jit(chi2_sf)


def test_p_value_grid_matches_scipy_stats():
    # odd, even and non-integer dof, across the Temme / series / continued-fraction borders
    chi2, dof = _p_value_grid([0.1, 0.5, 1, 3, 5, 9, 19, 20, 39, 40, 41, 41.5, 99, 401, 3333, 2e5])
    got = _CHI2_SF(jnp.asarray(chi2), jnp.asarray(dof))
    np.testing.assert_allclose(got, scipy.stats.chi2.sf(chi2, dof), rtol=1e-10, atol=1e-300)


def test_p_value_float32():
    chi2, dof = _p_value_grid([1, 2, 3, 7, 40, 60, 1000, 10**4, 10**6])
    c32, d32 = chi2.astype(np.float32), dof.astype(np.float32)
    got = _CHI2_SF(jnp.asarray(c32), jnp.asarray(d32))
    assert got.dtype == jnp.float32
    want = scipy.stats.chi2.sf(c32.astype(np.float64), d32.astype(np.float64))
    keep = want > 1e-30  # below that float32 is subnormal or zero
    np.testing.assert_allclose(np.asarray(got)[keep], want[keep], rtol=3e-5)
    assert np.all(np.asarray(got)[~keep] < 1e-28)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_temme_rows_leave_out_less_than_the_rounding(dtype):
    # Temme's series keeps, per dtype, the terms of each C_k(eta) a^-k that can matter where it is
    # used (a > 20, -0.7 <= x / a - 1 <= 1): what it leaves out, bounded term by term, is below
    # eps / 16 of the smallest sum there.
    from jaxopt_mml import _special

    t = np.linspace(*_special._TEMME_T, 2001)
    eta = np.sign(t) * np.sqrt(2.0 * (t - np.log1p(t)))
    assert np.abs(eta).max() <= _special._TEMME_ETA_MAX
    full = _special._temme_coefficients(_special._TEMME_K, 60)
    sums = sum(np.polyval(row[::-1], eta) * 20.0**-k for k, row in enumerate(full))
    assert np.abs(sums).min() >= _special._TEMME_MIN_SUM
    rows = _special._temme_rows(np.dtype(dtype))
    left_out = 0.0
    for k, row in enumerate(full):
        kept = len(rows[k]) if k < len(rows) else 0
        np.testing.assert_array_equal(rows[k] if kept else [], row[:kept])
        n = np.arange(kept, row.size)
        left_out += np.sum(np.abs(row[kept:]) * _special._TEMME_ETA_MAX**n) * 20.0**-k
    assert left_out <= np.finfo(dtype).eps * _special._TEMME_MIN_SUM / 16
    assert sum(map(len, rows)) < {np.float64: 270, np.float32: 60, np.float16: 20}[dtype]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_temme_tail_is_the_same_on_cpu_and_accelerators(monkeypatch, dtype):
    # The series runs as one chain per C_k on a CPU and on a (..., K) array on a GPU or TPU
    # (compile time: each form is slow to compile on the other): the same arithmetic.
    from jaxopt_mml import _special

    rng = np.random.default_rng(3)
    a = rng.uniform(20.5, 3000.0, 4000)
    t = rng.uniform(*_special._TEMME_T, a.size)
    f = t - np.log1p(t)
    args = [jnp.asarray(v, dtype) for v in (a, f, np.sign(t) * np.sqrt(2.0 * f))]
    values = []
    for wide in (False, True):
        monkeypatch.setattr(_special, "wide_backend", lambda wide=wide: wide)
        tail = jax.jit(lambda *v: _special._temme_tail(*v))  # a new function: traced anew
        values.append(np.asarray(tail(*args)))
    assert values[0].dtype == dtype
    np.testing.assert_allclose(values[1], values[0], rtol=4 * np.finfo(dtype).eps, atol=0)


def test_p_value_edge_cases():
    chi2 = jnp.asarray([0.0, -1.0, jnp.inf, jnp.nan, 3.0, 3.0, 3.0, 3.0, 1e-300])
    dof = jnp.asarray([3.0, 3.0, 3.0, 3.0, 0.0, -1.0, jnp.nan, jnp.inf, 2.0])
    got = np.asarray(_CHI2_SF(chi2, dof))
    np.testing.assert_array_equal(got[:3], [1.0, 1.0, 0.0])
    assert np.all(np.isnan(got[3:7]))
    np.testing.assert_array_equal(got[7:], [1.0, 1.0])


def test_p_value_gradient_is_minus_the_density():
    chi2 = jnp.asarray([0.5, 3.0, 30.0, 400.0, 1.05e5])
    dof = jnp.asarray([1.0, 4.0, 41.0, 401.0, 1e5])
    grad = jax.vmap(jax.grad(chi2_sf))(chi2, dof)
    want = -scipy.stats.chi2.pdf(np.asarray(chi2), np.asarray(dof))
    np.testing.assert_allclose(grad, want, rtol=1e-10)


# ---------------------------------------------------------------- linear_fit


def test_linear_fit_straight_line_closed_form():
    x = np.linspace(-1.0, 3.0, 25)
    sigma = 0.1 + 0.05 * RNG.uniform(size=25)
    y = 0.7 - 1.9 * x + sigma * RNG.standard_normal(25)
    fit = mml.linear_fit(x, y, sigma=sigma, absolute_sigma=True)
    w = 1.0 / sigma**2
    s, sx, sy, sxx, sxy = (
        w.sum(),
        (w * x).sum(),
        (w * y).sum(),
        (w * x * x).sum(),
        (w * x * y).sum(),
    )
    delta = s * sxx - sx**2
    a = (sxx * sy - sx * sxy) / delta
    b = (s * sxy - sx * sy) / delta
    np.testing.assert_allclose(fit.params, [a, b], rtol=1e-12)
    np.testing.assert_allclose(fit.stderr, [np.sqrt(sxx / delta), np.sqrt(s / delta)], rtol=1e-12)
    np.testing.assert_allclose(fit.covariance[0, 1], -sx / delta, rtol=1e-12)
    chi2 = np.sum(w * (y - a - b * x) ** 2)
    np.testing.assert_allclose(fit.chi2, chi2, rtol=1e-12)
    assert int(fit.dof) == 23
    np.testing.assert_allclose(fit.p_value, scipy.stats.chi2.sf(chi2, 23), rtol=1e-10)
    assert int(fit.status) == Status.SUCCESS and bool(fit.success)


def test_linear_fit_polynomial_matches_polyfit_covariance():
    x = np.linspace(0.0, 2.0, 30)
    y = 1.0 + 0.5 * x - 0.3 * x**2 + 0.05 * RNG.standard_normal(30)
    fit = mml.linear_fit(x, y, degree=2)
    coef, cov = np.polyfit(x, y, 2, cov="unscaled")
    np.testing.assert_allclose(fit.params, coef[::-1], rtol=1e-10)
    resid = y - np.polyval(coef, x)
    scaled = cov * (resid @ resid) / (30 - 3)
    np.testing.assert_allclose(fit.covariance, scaled[::-1, ::-1], rtol=1e-9)
    r2 = 1 - resid @ resid / np.sum((y - y.mean()) ** 2)
    np.testing.assert_allclose(fit.r_squared, r2, rtol=1e-12)


def test_linear_fit_design_matrix_and_rank_deficiency():
    x = np.linspace(0.0, 1.0, 10)
    design = np.stack([np.ones(10), np.sin(x), np.cos(x)], axis=1)
    y = design @ np.array([0.3, -1.0, 2.0])
    fit = mml.linear_fit(None, y, design=design)
    np.testing.assert_allclose(fit.params, [0.3, -1.0, 2.0], atol=1e-12)
    bad = np.stack([np.ones(10), x, 2.0 * x], axis=1)
    fit = mml.linear_fit(None, y, design=bad)
    assert int(fit.status) == Status.SINGULAR and not bool(fit.success)
    assert np.all(np.isinf(fit.covariance))


# ---------------------------------------------------------------- curve_fit against scipy


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("absolute_sigma", [False, True])
def test_curve_fit_matches_scipy(seed, absolute_sigma):
    rng = np.random.default_rng(seed)
    truth = np.array([rng.uniform(1, 3), rng.uniform(0.5, 2), rng.uniform(-0.5, 0.5)])
    x, y, sigma = exp_data(seed=seed, truth=truth)
    p0 = truth * (1 + 0.3 * rng.choice([-1, 1], 3))
    fit = mml.curve_fit(exp_decay, x, y, p0, sigma=sigma, absolute_sigma=absolute_sigma)
    ref_p, ref_cov = scipy_fit(exp_decay, x, y, p0, sigma=sigma, absolute_sigma=absolute_sigma)
    assert bool(fit.success), Status(int(fit.status))
    np.testing.assert_allclose(fit.params, ref_p, rtol=1e-6)
    assert_cov_close(fit.covariance, ref_cov, 1e-6)
    resid = (y - np.asarray(exp_decay(x, ref_p))) / sigma
    np.testing.assert_allclose(fit.chi2, resid @ resid, rtol=1e-8)
    # (residuals to 1e-6 of their scale, as the parameters: both fits stop about rtol = 1.5e-8
    # from the minimum, which moves a residual near zero by ~1e-8 in absolute terms)
    np.testing.assert_allclose(fit.residuals, resid, rtol=0, atol=1e-6 * np.linalg.norm(resid))
    np.testing.assert_allclose(fit.p_value, scipy.stats.chi2.sf(resid @ resid, 37), rtol=1e-6)


def test_curve_fit_gaussian_peak_matches_scipy():
    x = np.linspace(-5.0, 5.0, 64)
    truth = np.array([2.0, 0.3, 1.1, 0.5])
    y = np.asarray(gaussian_peak(x, truth)) + 0.05 * RNG.standard_normal(64)
    fit = mml.curve_fit(gaussian_peak, x, y, truth * 1.2)
    ref_p, ref_cov = scipy_fit(gaussian_peak, x, y, truth * 1.2)
    np.testing.assert_allclose(fit.params, ref_p, rtol=1e-6)
    assert_cov_close(fit.covariance, ref_cov, 1e-6)


def test_pytree_params_equal_array_params():
    x, y, sigma = exp_data()
    tree = mml.curve_fit(dict_decay, x, y, {"a": 1.0, "b": 1.0, "c": 0.0}, sigma=sigma)
    arr = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]), sigma=sigma)
    got = [tree.params[k] for k in "abc"]
    np.testing.assert_allclose(got, arr.params, rtol=1e-9)
    np.testing.assert_allclose([tree.stderr[k] for k in "abc"], arr.stderr, rtol=1e-7)
    np.testing.assert_allclose(tree.covariance, arr.covariance, rtol=1e-7)


@pytest.mark.parametrize("method", ["gauss-newton", "gradient-descent"])
def test_other_methods_reach_the_lm_solution(method):
    x = np.linspace(0.0, 1.0, 20)
    y = 0.4 + 1.1 * x + 0.01 * RNG.standard_normal(20)
    ref = mml.curve_fit(line, x, y, jnp.array([0.0, 0.0]))
    fit = mml.curve_fit(line, x, y, jnp.array([0.0, 0.0]), method=method)
    assert bool(fit.success), Status(int(fit.status))
    tol = 1e-9 if method == "gauss-newton" else 1e-7
    np.testing.assert_allclose(fit.params, ref.params, rtol=tol)
    if method == "gradient-descent":
        assert int(fit.n_iter) > int(ref.n_iter)


def test_gauss_newton_nonlinear():
    x, y, sigma = exp_data()
    ref = mml.curve_fit(exp_decay, x, y, jnp.array([1.8, 1.2, 0.4]), sigma=sigma)
    gn = mml.curve_fit(
        exp_decay, x, y, jnp.array([1.8, 1.2, 0.4]), sigma=sigma, method="gauss-newton"
    )
    np.testing.assert_allclose(gn.params, ref.params, rtol=1e-8)


# ---------------------------------------------------------------- robust losses


@pytest.mark.parametrize("loss", ["huber", "soft_l1", "cauchy"])
def test_robust_loss_matches_scipy_least_squares(loss):
    x, y, _ = exp_data(n=50, seed=3)
    y = y.copy()
    y[[5, 17, 33]] += np.array([1.5, -2.0, 3.0])  # outliers
    f_scale = 0.05
    p0 = np.array([1.5, 1.0, 0.3])
    fit = mml.curve_fit(exp_decay, x, y, p0, loss=loss, f_scale=f_scale)
    ref = scipy.optimize.least_squares(
        lambda p: np.asarray(exp_decay(x, p)) - y,
        p0,
        loss=loss,
        f_scale=f_scale,
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        method="trf",
    )
    assert bool(fit.success), Status(int(fit.status))
    np.testing.assert_allclose(fit.params, ref.x, rtol=1e-6)
    plain = mml.curve_fit(exp_decay, x, y, p0)
    truth = np.array([2.0, 1.3, 0.5])
    assert np.abs(fit.params - truth).max() < np.abs(plain.params - truth).max()


@pytest.mark.parametrize(
    "method, loss", [("gauss-newton", "huber"), ("gradient-descent", "cauchy")]
)
def test_robust_line_search_methods_start_with_every_point_an_outlier(method, loss):
    # From p0 = 0 every residual is beyond f_scale, where the Huber loss has no curvature and
    # Cauchy's a negative one: scipy's floor eps on the rows' factor made J_s^T J_s about eps
    # times too small, the Gauss-Newton step and gradient descent's first trial 1 / eps too
    # long, and both ended LINESEARCH_FAILED at p0 (Levenberg-Marquardt converged).
    x = np.linspace(0.0, 1.0, 10)
    y = 1.0 + 2.0 * x + 0.01 * np.cos(7.0 * x)
    p0 = np.array([0.0, 0.0])
    fit = mml.curve_fit(line, x, y, p0, loss=loss, f_scale=0.1, method=method)
    ref = scipy.optimize.least_squares(
        lambda p: y - (p[0] + p[1] * x), p0, loss=loss, f_scale=0.1, xtol=1e-15, ftol=1e-15
    )
    assert bool(fit.success), Status(int(fit.status))
    np.testing.assert_allclose(fit.params, ref.x, rtol=1e-6)


# ---------------------------------------------------------------- bounds


def test_bounds_are_respected_and_active_bound_is_found():
    x, y, sigma = exp_data()  # unbounded optimum b ~ 1.3, c ~ 0.5
    lower = jnp.array([0.0, 0.0, -1.0])
    upper = jnp.array([10.0, 1.0, 0.3])
    fit = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 0.5, 0.0]), bounds=(lower, upper))
    p = np.asarray(fit.params)
    assert np.all(p >= np.asarray(lower)) and np.all(p <= np.asarray(upper))
    ref = scipy.optimize.least_squares(
        lambda q: np.asarray(exp_decay(x, q)) - y,
        [1.0, 0.5, 0.0],
        bounds=(lower, upper),
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
    )
    np.testing.assert_allclose(p, ref.x, rtol=1e-6, atol=1e-8)


def test_one_sided_bounds_and_scalars():
    x, y, sigma = exp_data()
    fit = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]), bounds=(0.0, np.inf))
    free = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(fit.params, free.params, rtol=1e-6)  # bound inactive
    assert np.all(np.asarray(fit.params) >= 0.0)


def test_p0_outside_bounds_raises():
    x, y, _ = exp_data()
    with pytest.raises(ValueError, match="p0 must lie within bounds"):
        mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 2.0, 0.0]), bounds=(0.0, 1.5))
    with pytest.raises(ValueError, match="lower < upper"):
        mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]), bounds=(1.0, 0.5))


def test_traced_bad_bounds_or_p0_outside_them_are_invalid_input():
    # What the eager call raises, under jit: crossed bounds gave SUCCESS in an empty box.
    x, y, _ = exp_data()
    fit = jax.jit(lambda lo, hi, p0: mml.curve_fit(exp_decay, x, y, p0, bounds=(lo, hi)))
    good_lo, good_hi = jnp.array([0.0, 0.0, -1.0]), jnp.array([5.0, 5.0, 1.0])
    p0 = jnp.array([1.0, 1.0, 0.0])
    assert int(fit(good_lo, good_hi, p0).status) == mml.Status.SUCCESS
    for lo, hi, start in (
        (good_lo, good_hi.at[2].set(-2.0), p0),  # lower > upper
        (good_lo, good_lo, p0),  # lower == upper
        (good_lo.at[1].set(jnp.nan), good_hi, p0),
        (good_lo, good_hi, p0.at[0].set(6.0)),  # p0 above its upper bound
    ):
        res = fit(lo, hi, start)
        assert int(res.status) == mml.Status.INVALID_INPUT and not bool(res.success)
    # Per dataset in a batch: only the dataset whose start lies outside.
    batch = jax.jit(
        lambda p0: mml.curve_fit(exp_decay, x, jnp.stack([y, y]), p0, bounds=(good_lo, good_hi))
    )
    status = batch(jnp.stack([p0, p0.at[2].set(-3.0)])).status
    np.testing.assert_array_equal(status, [mml.Status.SUCCESS, mml.Status.INVALID_INPUT])


# ---------------------------------------------------------------- masks and NaN policy


def test_mask_equals_dropping_points():
    x, y, sigma = exp_data()
    keep = np.ones(40, bool)
    keep[[3, 10, 11, 30]] = False
    p0 = jnp.array([1.5, 1.0, 0.3])
    masked = mml.curve_fit(exp_decay, x, y, p0, sigma=sigma, mask=keep)
    dropped = mml.curve_fit(exp_decay, x[keep], y[keep], p0, sigma=sigma[keep])
    np.testing.assert_allclose(masked.params, dropped.params, rtol=1e-10)
    np.testing.assert_allclose(masked.covariance, dropped.covariance, rtol=1e-8)
    np.testing.assert_allclose(masked.chi2, dropped.chi2, rtol=1e-10)
    assert int(masked.dof) == int(dropped.dof) == 33
    np.testing.assert_allclose(masked.p_value, dropped.p_value, rtol=1e-8)
    np.testing.assert_allclose(masked.r_squared, dropped.r_squared, rtol=1e-10)
    padded = mml.curve_fit(exp_decay, x, y, p0, sigma=np.where(keep, sigma, np.inf))
    np.testing.assert_allclose(padded.params, dropped.params, rtol=1e-10)
    assert int(padded.dof) == 33


def test_nan_policy():
    x, y, sigma = exp_data()
    y_nan = y.copy()
    y_nan[[4, 20]] = np.nan
    p0 = jnp.array([1.5, 1.0, 0.3])
    with pytest.raises(ValueError, match="y hold"):
        mml.curve_fit(exp_decay, x, y_nan, p0)
    keep = np.isfinite(y_nan)
    omit = mml.curve_fit(exp_decay, x, y_nan, p0, nan_policy="omit")
    dropped = mml.curve_fit(exp_decay, x[keep], y[keep], p0)
    np.testing.assert_allclose(omit.params, dropped.params, rtol=1e-10)
    assert int(omit.dof) == int(dropped.dof)
    prop = mml.curve_fit(exp_decay, x, y_nan, p0, nan_policy="propagate")
    assert int(prop.status) == Status.NONFINITE and not bool(prop.success)
    traced = jax.jit(lambda yy: mml.curve_fit(exp_decay, x, yy, p0))(y_nan)
    assert int(traced.status) == Status.INVALID_INPUT and not bool(traced.success)
    x_nan = x.copy()
    x_nan[7] = np.nan
    with pytest.raises(ValueError, match="x hold"):
        mml.curve_fit(exp_decay, x_nan, y, p0)
    omit_x = mml.curve_fit(exp_decay, x_nan, y, p0, nan_policy="omit")
    assert int(omit_x.dof) == 40 - 1 - 3


# ---------------------------------------------------------------- covariance edge cases


def test_covariance_undefined_when_no_dof_or_singular():
    x = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, 0.5, 0.3])
    fit = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]))
    assert bool(fit.success) and int(fit.status) == Status.COVARIANCE_UNDEFINED
    assert np.all(np.isinf(fit.covariance)) and int(fit.dof) == 0
    with_abs = mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]), absolute_sigma=True)
    assert int(with_abs.status) == Status.SUCCESS and np.all(np.isfinite(with_abs.covariance))
    xs = np.linspace(0.0, 1.0, 10)
    redundant = mml.curve_fit(lambda xx, p: p[0] * p[1] * xx, xs, 2 * xs, jnp.array([1.0, 1.0]))
    assert bool(redundant.success)
    assert int(redundant.status) == Status.COVARIANCE_UNDEFINED
    assert np.all(np.isinf(redundant.stderr))


@pytest.mark.parametrize("k", [1, 2, 4, 7])
def test_spd_inverse_matches_numpy_and_flags_singular(k):
    rng = np.random.default_rng(k)
    mats, refs = [], []
    for cond in (1.0, 1e4, 1e9):
        q, _ = np.linalg.qr(rng.standard_normal((k, k)))
        scale = np.exp(rng.uniform(-5.0, 5.0, k))  # unequal column scales: equilibration
        a = (q * np.logspace(0.0, -np.log10(cond), k)) @ q.T * scale[:, None] * scale[None, :]
        mats.append(a)
        refs.append(np.linalg.inv(a))
    inv, regular = jax.vmap(spd_inverse)(jnp.asarray(np.stack(mats)))
    assert np.all(np.asarray(regular))
    for got, ref, cond in zip(np.asarray(inv), refs, (1.0, 1e4, 1e9), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-13 * cond * k, atol=0.0)
    v = rng.standard_normal((k, 1))
    singular = [np.zeros((k, k)), np.full((k, k), np.nan), -np.eye(k)]
    if k > 1:
        indefinite = np.eye(k)
        indefinite[0, -1] = indefinite[-1, 0] = 2.0
        singular += [v @ v.T, indefinite]
    _, regular = jax.vmap(spd_inverse)(jnp.asarray(np.stack(singular)))
    assert not np.any(np.asarray(regular))


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "newton"}, "method"),
        ({"loss": "l1"}, "loss"),
        ({"nan_policy": "ignore"}, "nan_policy"),
        ({"sigma": np.ones(7)}, "sigma"),
        ({"sigma": -np.ones(40)}, "sigma must be positive"),
        ({"max_iter": 0}, "max_iter"),
        ({"mask": np.ones(40)}, "mask"),
        ({"bounds": (0.0,)}, "bounds"),
    ],
)
def test_bad_options_name_the_argument(kwargs, match):
    x, y, _ = exp_data()
    with pytest.raises((ValueError, TypeError), match=match):
        mml.curve_fit(exp_decay, x, y, jnp.array([1.0, 1.0, 0.0]), **kwargs)


def test_bad_shapes_name_the_argument():
    x, y, _ = exp_data()
    with pytest.raises(ValueError, match="y must have shape"):
        mml.curve_fit(exp_decay, x, np.ones((2, 2, 40)), jnp.ones(3))
    with pytest.raises(ValueError, match="x must have its last axis"):
        mml.curve_fit(exp_decay, x[:10], y, jnp.ones(3))
    with pytest.raises(ValueError, match="one value per point"):
        mml.curve_fit(lambda xx, p: p[0], x, y, jnp.ones(3))
    with pytest.raises(TypeError, match="model"):
        mml.curve_fit("model", x, y, jnp.ones(3))
    with pytest.raises(ValueError, match="p0"):
        mml.curve_fit(exp_decay, x, y, jnp.array([1.0, np.nan, 0.0]))


# ---------------------------------------------------------------- float32


def test_float32_fit():
    x, y, sigma = exp_data()
    x32, y32, s32 = (a.astype(np.float32) for a in (x, y, sigma))
    fit = mml.curve_fit(exp_decay, x32, y32, np.array([1.5, 1.0, 0.3], np.float32), sigma=s32)
    ref = mml.curve_fit(exp_decay, x, y, jnp.array([1.5, 1.0, 0.3]), sigma=sigma)
    assert fit.params.dtype == jnp.float32 and fit.covariance.dtype == jnp.float32
    assert bool(fit.success), Status(int(fit.status))
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-4)
    np.testing.assert_allclose(fit.stderr, ref.stderr, rtol=1e-2)


def test_float32_precision_limit_is_reported():
    # The best float32 offset is the start itself: the optimum (1e7 + 0.3) lies between two
    # representable values, so no step can reduce chi-squared. The status says so.
    n = 50
    y = (1e7 + np.where(np.arange(n) % 10 < 3, 1.0, 0.0)).astype(np.float32)
    x = np.arange(n, dtype=np.float32)
    fit = mml.curve_fit(line, x, y, np.array([1e7, 0.0], np.float32), bounds=None)
    assert int(fit.status) in (Status.PRECISION_LIMIT, Status.SUCCESS)
    const = mml.curve_fit(lambda xx, p: p[0] + 0.0 * xx, x, y, np.array([1e7], np.float32))
    assert int(const.status) == Status.PRECISION_LIMIT and not bool(const.success)


# ---------------------------------------------------------------- jit, vmap, grad, traces


def test_no_retrace_and_user_jit():
    x, y, sigma = exp_data()
    traces = []

    def model(xx, p):
        traces.append(1)
        return exp_decay(xx, p)

    mml.curve_fit(model, x, y, jnp.array([1.5, 1.0, 0.3]))
    n = len(traces)
    mml.curve_fit(model, x, y + 0.01, jnp.array([1.4, 1.1, 0.3]))
    assert len(traces) == n  # second call, same shapes: no new trace
    mml.curve_fit(model, x, y, jnp.full(3, 0.5))  # weakly typed: its own program, it was
    assert len(traces) == n

    @jax.jit
    @chex.assert_max_traces(n=1)
    def fit_params(yy):
        return mml.curve_fit(exp_decay, x, yy, jnp.array([1.5, 1.0, 0.3])).params

    a = fit_params(jnp.asarray(y))
    b = fit_params(jnp.asarray(y) * 1.01)
    ref = mml.curve_fit(exp_decay, x, y, jnp.array([1.5, 1.0, 0.3]))
    np.testing.assert_allclose(a, ref.params, rtol=1e-10)
    assert not np.allclose(a, b)


def test_user_vmap_equals_batched_call():
    x, y, _ = exp_data()
    ys = jnp.stack([jnp.asarray(y), jnp.asarray(y) * 1.1, jnp.asarray(y) + 0.2])
    p0 = jnp.array([1.5, 1.0, 0.3])
    vm = jax.vmap(lambda yy: mml.curve_fit(exp_decay, x, yy, p0))(ys)
    batched = mml.curve_fit(exp_decay, x, ys, p0)
    np.testing.assert_allclose(vm.params, batched.params, rtol=1e-10)
    np.testing.assert_allclose(vm.covariance, batched.covariance, rtol=1e-8)


def test_implicit_gradient_wrt_data_is_the_pseudo_inverse():
    x = np.linspace(0.0, 1.0, 12)
    y = 0.3 + 2.0 * x + 0.01 * RNG.standard_normal(12)
    jac = jax.jacobian(lambda yy: mml.curve_fit(line, x, yy, jnp.array([0.0, 1.0])).params)(
        jnp.asarray(y)
    )
    design = np.stack([np.ones(12), x], axis=1)
    np.testing.assert_allclose(jac, np.linalg.pinv(design), atol=1e-8)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_stderr_is_differentiable_in_the_data():
    # The standard errors depend on the data through the best fit and the residuals; their
    # gradient (through the implicit derivative of the fit and the sweep's inverse) matches
    # central differences, one dataset and batched alike.
    x, y, _, p0 = peak_data(2, seed=1)

    def total_stderr(yy, pp):
        return jnp.sum(mml.curve_fit(gaussian_peak, x, yy, pp).stderr)

    grad = jax.grad(total_stderr)(jnp.asarray(y[0]), jnp.asarray(p0[0]))
    batched = jax.grad(total_stderr)(jnp.asarray(y), jnp.asarray(p0))
    h = 1e-6
    for i in (5, 30):
        e = np.zeros(y.shape[1])
        e[i] = h
        fd = (total_stderr(y[0] + e, p0[0]) - total_stderr(y[0] - e, p0[0])) / (2 * h)
        np.testing.assert_allclose(grad[i], fd, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(batched[0, i], grad[i], rtol=1e-8)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_second_derivatives_of_a_fit_outside_jit():
    # jax.hessian of a fit's statistic, called eagerly (the fit's own program is compiled for a
    # batch of tangents): the covariance's sweep indexed its pivot row with dynamic slices, and
    # XLA:CPU's fusion emitter failed to compile the result ('Failed to translate module to LLVM
    # IR': two slices of one fusion got the same name). The Hessian of min_p chi2 in y is
    # H_yy - H_yp H_pp^-1 H_py at the best fit.
    x = jnp.linspace(0.0, 4.0, 12)
    y = 2.0 * jnp.exp(-1.3 * x) + 0.05 * jnp.cos(17.0 * x)

    def model(xx, p):
        return p[0] * jnp.exp(-p[1] * xx)

    def chi2(yy):
        return mml.curve_fit(model, x, yy, jnp.array([1.0, 1.0]), method="gauss-newton").chi2

    hess = jax.hessian(chi2)(y)

    def cost(p, yy):
        return jnp.sum((yy - model(x, p)) ** 2)

    p = scipy.optimize.least_squares(
        lambda p: np.asarray(y - model(x, p)), [1.0, 1.0], xtol=1e-15, ftol=1e-15, gtol=1e-15
    ).x
    h_pp = jax.hessian(cost)(p, y)
    h_py = jax.jacfwd(jax.grad(cost), argnums=1)(p, y)
    exact = 2.0 * np.eye(12) - h_py.T @ np.linalg.solve(h_pp, h_py)
    np.testing.assert_allclose(hess, exact, atol=1e-6)


@pytest.mark.parametrize("on_device", [False, True])
def test_value_checks_on_host_and_device_agree(monkeypatch, on_device):
    # Data held by a GPU are checked by one jitted reduction on the device (no copy of the batch
    # to the host); NumPy data on the host. Forced here on the CPU: both must flag the same data.
    import jaxopt_mml._fit_data as fd

    monkeypatch.setattr(fd, "on_accelerator", lambda *trees: on_device)
    x, y, sigma = exp_data()
    p0 = jnp.array([1.0, 1.0, 0.0])
    y_nan, x_inf, s_nan = y.copy(), x.copy(), sigma.copy()
    y_nan[3], x_inf[5], s_nan[7] = np.nan, np.inf, np.nan
    for kwargs, match in [
        ({"y": y_nan}, "^y hold"),
        ({"x": x_inf}, "^x hold"),
        ({"sigma": s_nan}, "^sigma hold"),
        ({"sigma": -sigma}, "sigma must be positive"),
        ({"y": jnp.asarray(y_nan), "x": jnp.asarray(x_inf)}, "^y and x hold"),
    ]:
        args = {"x": x, "y": y, "sigma": sigma} | kwargs
        with pytest.raises(ValueError, match=match):
            mml.curve_fit(exp_decay, args["x"], args["y"], p0, sigma=args["sigma"])
    mask = np.ones(40, bool)
    mask[3] = False  # the NaN is masked out: no error, and the fit equals dropping the point
    fit = mml.curve_fit(exp_decay, x, y_nan, p0, sigma=sigma, mask=mask)
    assert bool(fit.success)
    # under nan_policy="omit" only sigma's sign is checked
    fit = mml.curve_fit(exp_decay, x, y_nan, p0, sigma=sigma, nan_policy="omit")
    assert bool(fit.success)
    fit = mml.curve_fit(exp_decay, x, y, p0, sigma=jnp.asarray(s_nan), nan_policy="omit")
    assert bool(fit.success)
    with pytest.raises(ValueError, match="sigma must be positive"):
        mml.curve_fit(exp_decay, x, y_nan, p0, sigma=-sigma, nan_policy="omit")
    with pytest.raises(ValueError, match="^p0 holds NaN"):
        mml.curve_fit(exp_decay, x, y, p0.at[1].set(jnp.nan), sigma=sigma)


def test_device_value_checks_are_read_after_the_fit_is_dispatched(monkeypatch):
    # On a GPU the flags of the value checks come back in one integer, read once the fit is
    # queued behind their reduction: the round trip overlaps the fit instead of preceding it.
    import jaxopt_mml._fit_curve as fc
    import jaxopt_mml._fit_data as fd

    events = []
    real_fit, real_unpack = fc._fit_jit, fd._unpack
    monkeypatch.setattr(fd, "on_accelerator", lambda *trees: True)
    monkeypatch.setattr(fc, "_fit_jit", lambda *a: events.append("fit") or real_fit(*a))
    monkeypatch.setattr(fd, "_unpack", lambda flags: events.append("read") or real_unpack(flags))
    x, y, sigma = exp_data()
    p0 = jnp.array([1.0, 1.0, 0.0])
    fit = mml.curve_fit(exp_decay, jnp.asarray(x), jnp.asarray(y), p0, sigma=sigma)
    assert bool(fit.success) and events == ["fit", "read"]
    y[2] = np.inf
    with pytest.raises(ValueError, match="^y hold"):
        mml.curve_fit(exp_decay, x, jnp.asarray(y), p0)
    assert events[2:] == ["fit", "read"]


def test_device_value_checks_inside_a_jitted_caller(monkeypatch):
    # curve_fit traced by a caller's jit with some inputs concrete (closed over): on a GPU the
    # device-side checks of those inputs were staged into the caller's trace, and reading their
    # flags raised ConcretizationTypeError (test_nan_policy on an H100). They run eagerly now,
    # and bad closed-over data raise as they do on the host.
    import jaxopt_mml._fit_data as fd

    monkeypatch.setattr(fd, "on_accelerator", lambda *trees: True)
    x, y, _ = exp_data()
    p0 = jnp.array([1.5, 1.0, 0.3])
    y_nan = y.copy()
    y_nan[4] = np.nan
    traced_y = jax.jit(lambda yy: mml.curve_fit(exp_decay, x, yy, p0))(y_nan)  # p0 closed over
    assert int(traced_y.status) == Status.INVALID_INPUT
    x_dev, y_dev, y_nan_dev = jnp.asarray(x), jnp.asarray(y), jnp.asarray(y_nan)
    traced_p0 = jax.jit(lambda p: mml.curve_fit(exp_decay, x_dev, y_dev, p))
    np.testing.assert_allclose(
        traced_p0(p0).params, mml.curve_fit(exp_decay, x, y, p0).params, rtol=1e-12
    )
    with pytest.raises(ValueError, match="^y hold"):
        jax.jit(lambda p: mml.curve_fit(exp_decay, x_dev, y_nan_dev, p))(p0)
    p0_nan = p0.at[0].set(jnp.nan)
    with pytest.raises(ValueError, match="^p0 holds NaN"):
        jax.jit(lambda yy: mml.curve_fit(exp_decay, x, yy, p0_nan))(y)


def test_jax_arrays_and_lists_are_taken_without_warnings():
    """Inputs as JAX arrays (the dtype is read, not converted: NumPy deprecates converting an
    array to a dtype) and as plain lists, like scipy's curve_fit; the same fit either way."""
    x = np.linspace(0.0, 4.0, 20)
    y = exp_decay(x, np.array([2.0, 0.7, 0.3]))
    mask = np.ones(20, bool)
    ref = mml.curve_fit(exp_decay, x, y, np.array([1.0, 1.0, 0.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits = [
            mml.curve_fit(exp_decay, jnp.asarray(x), jnp.asarray(y), jnp.array([1.0, 1.0, 0.0])),
            mml.curve_fit(exp_decay, x, list(y), [1.0, 1.0, 0.0], mask=jnp.asarray(mask)),
        ]
        lin = mml.linear_fit(jnp.asarray(x), jnp.asarray(y), degree=1)
        lin_list = mml.linear_fit(x, list(y), degree=1)
    for fit in fits:
        assert bool(fit.success)
        np.testing.assert_allclose(np.ravel(fit.params), ref.params, rtol=1e-10)
    np.testing.assert_allclose(lin.params, lin_list.params, rtol=1e-12)


_DEFAULT_CONFIG_SCRIPT = """
import os
import subprocess
import sys
import warnings
import numpy as np, jax.numpy as jnp, jaxopt_mml as mml
warnings.simplefilter("error")
x = np.linspace(0.0, 4.0, 20)
y = 2.0 * np.exp(-0.7 * x) + 0.3
model = lambda x, p: p[0] * jnp.exp(-p[1] * x) + p[2]
fits = [
    mml.curve_fit(model, x, y, np.array([1.0, 1.0, 0.0])),
    mml.curve_fit(model, x, np.stack([y, y]), np.array([1.0, 1.0, 0.0]), sigma=np.full(20, 0.1)),
    mml.linear_fit(x, y, degree=1, sigma=np.full(20, 0.1)),
]
assert all(bool(np.all(f.success)) and f.params.dtype == np.float32 for f in fits)
print("ok")
"""


def test_float64_numpy_data_under_jax_default_config():
    """The common case in a fresh process (float64 off, NumPy float64 data): fits run in float32,
    as JAX holds the data, without a warning (asking JAX for float64 warns on every request)."""
    env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", _DEFAULT_CONFIG_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=300,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_flat_bounds_for_a_dict_p0_are_refused():
    # A dict's leaves flatten sorted by key: bounds ([0, -1], [1.5, 5]) written in p0's order
    # {'m', 'c'} bounded c by [0, 1.5] and m by [-1, 5], silently (m = 2 with SUCCESS, where
    # scipy's bounds give m = 1.5). A dict of bounds, or a flat list for an array p0, still works.
    x = np.linspace(0.0, 1.0, 12)
    y = 2.0 * x + 1.0
    model = lambda xx, p: p["m"] * xx + p["c"]  # noqa: E731
    p0 = {"m": 1.0, "c": 0.0}
    with pytest.raises(ValueError, match="bounds lower must be a scalar or have p0's structure"):
        mml.curve_fit(model, x, y, p0, bounds=([0.0, -1.0], [1.5, 5.0]))
    with pytest.raises(ValueError, match="bounds upper"):
        mml.curve_fit(model, x, y, p0, bounds=(-np.inf, {"m": 1.5, "slope": 5.0}))
    fit = mml.curve_fit(model, x, y, p0, bounds=({"m": 0.0, "c": -1.0}, {"m": 1.5, "c": 5.0}))
    assert float(fit.params["m"]) == pytest.approx(1.5)
