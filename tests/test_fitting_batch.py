"""Batched fits: one compiled call for B datasets, each with its own result."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from jaxopt_mml import Status
from tests.zoo.fitting import exp_decay, gaussian_peak, peak_data


def test_batched_equals_one_at_a_time():
    x, y, _, p0 = peak_data(6, seed=7)
    batch = mml.curve_fit(gaussian_peak, x, y, p0)
    assert batch.params.shape == (6, 4) and batch.covariance.shape == (6, 4, 4)
    assert batch.status.shape == (6,) and batch.residuals.shape == (6, 64)
    for i in range(6):
        one = mml.curve_fit(gaussian_peak, x, y[i], p0[i])
        np.testing.assert_allclose(batch.params[i], one.params, rtol=1e-8)
        np.testing.assert_allclose(batch.covariance[i], one.covariance, rtol=1e-6)
        # (the convergence test at rounding level may fire an iteration or two apart)
        assert abs(int(batch.n_iter[i]) - int(one.n_iter)) <= 2
        assert int(batch.status[i]) == int(one.status)


def test_batched_few_lanes_and_shared_p0():
    # Few lanes force many refills; every fit must still match its one-dataset solve.
    x, y, truth, _ = peak_data(13, seed=3)
    p0 = jnp.asarray([2.0, 0.0, 1.0, 0.5])
    batch = mml.curve_fit(gaussian_peak, x, y, p0, lanes=3)
    ref = jax.vmap(lambda yy: mml.curve_fit(gaussian_peak, x, yy, p0))(jnp.asarray(y))
    np.testing.assert_allclose(batch.params, ref.params, rtol=1e-8)
    np.testing.assert_array_equal(batch.n_iter, ref.n_iter)
    np.testing.assert_array_equal(batch.status, ref.status)
    assert np.all(np.asarray(batch.success))


def test_different_lengths_by_mask_and_by_infinite_sigma():
    rng = np.random.default_rng(0)
    n = 30
    x = np.linspace(0.0, 4.0, n)
    lengths = [30, 22, 15]
    ys, masks, sigmas = [], [], []
    for k, m in enumerate(lengths):
        yk = np.asarray(exp_decay(x, np.array([2.0 + k, 1.0, 0.3]))) + 0.01 * rng.standard_normal(n)
        ys.append(np.where(np.arange(n) < m, yk, 0.0))
        masks.append(np.arange(n) < m)
        sigmas.append(np.where(np.arange(n) < m, 0.01, np.inf))
    p0 = jnp.array([1.5, 0.8, 0.2])
    by_mask = mml.curve_fit(exp_decay, x, np.stack(ys), p0, mask=np.stack(masks))
    by_sigma = mml.curve_fit(exp_decay, x, np.stack(ys), p0, sigma=np.stack(sigmas))
    for k, m in enumerate(lengths):
        ref = mml.curve_fit(exp_decay, x[:m], ys[k][:m], p0)
        np.testing.assert_allclose(by_mask.params[k], ref.params, rtol=1e-7)
        np.testing.assert_allclose(by_mask.covariance[k], ref.covariance, rtol=1e-6)
        np.testing.assert_allclose(by_sigma.params[k], ref.params, rtol=1e-7)
        assert int(by_mask.dof[k]) == m - 3 == int(by_sigma.dof[k])


def test_per_dataset_x_and_pytree_p0():
    x = np.stack([np.linspace(0.0, 4.0, 25), np.linspace(0.0, 2.0, 25)])
    y = np.stack([np.asarray(exp_decay(x[i], np.array([2.0, 1.3, 0.5]))) for i in range(2)])
    p0 = {"a": jnp.array([1.0, 1.5]), "b": jnp.array([1.0, 1.0]), "c": jnp.array([0.0, 0.2])}

    def model(xx, p):
        return p["a"] * jnp.exp(-p["b"] * xx) + p["c"]

    fit = mml.curve_fit(model, x, y, p0)
    assert fit.params["a"].shape == (2,)
    np.testing.assert_allclose(fit.params["b"], [1.3, 1.3], rtol=1e-8)
    assert np.all(np.asarray(fit.status) == Status.COVARIANCE_UNDEFINED) or np.all(
        np.asarray(fit.success)
    )


def test_batched_nan_statuses_are_per_dataset():
    x, y, _, p0 = peak_data(3, seed=1)
    y = y.copy()
    y[1, 5] = np.nan
    fit = jax.jit(lambda yy: mml.curve_fit(gaussian_peak, x, yy, p0))(y)
    status = np.asarray(fit.status)
    assert status[1] == Status.INVALID_INPUT
    assert status[0] == Status.SUCCESS and status[2] == Status.SUCCESS


def test_float32_batch():
    x, y, truth, p0 = peak_data(50, seed=5, dtype=np.float32)
    fit = mml.curve_fit(gaussian_peak, x, y, p0)
    assert fit.params.dtype == jnp.float32
    assert np.mean(np.asarray(fit.success)) >= 0.98
    np.testing.assert_allclose(fit.params, truth, rtol=0.2, atol=0.05)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_batched_fit_under_vmap_and_grad():
    # The pool under the user's vmap (a batch of batches) gives the flat batch's fits, and the
    # derivative of a batched fit's parameters with respect to its data equals the one-dataset
    # (implicit) derivative.
    def model(x, p):  # two lanes: several refills per inner batch
        return gaussian_peak(x, p)

    model = functools.partial(mml.curve_fit, model, lanes=2)
    x, y, _, p0 = peak_data(6, seed=11)
    flat = model(x, y, p0)
    nested = jax.vmap(lambda yy, pp: model(x, yy, pp))(
        jnp.asarray(y).reshape(2, 3, -1), jnp.asarray(p0).reshape(2, 3, -1)
    )
    np.testing.assert_allclose(nested.params.reshape(6, 4), flat.params, rtol=1e-10)
    np.testing.assert_array_equal(nested.n_iter.reshape(6), flat.n_iter)

    def centre_sum(yy):
        return jnp.sum(model(x, yy, p0).params[:, 1])

    grad = jax.grad(centre_sum)(jnp.asarray(y))
    for i in (0, 4):
        one = jax.grad(lambda yi, pi: mml.curve_fit(gaussian_peak, x, yi, pi).params[1])(
            jnp.asarray(y[i]), jnp.asarray(p0[i])
        )
        np.testing.assert_allclose(grad[i], one, rtol=1e-6, atol=1e-12)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_pool_width_changes_speed_not_results(monkeypatch):
    # Any width gives the same fits up to rounding (XLA's batched sums round with the batch's
    # shape, so a fit near its stopping test may take one iteration more or fewer: its result
    # moves within the tolerance, about 1e-8 relative); the default follows the backend (narrow
    # on a CPU, wide on an accelerator); a bad width is a trace-time error naming the argument.
    import jaxopt_mml._fit_curve as fc

    x, y, _, p0 = peak_data(64, seed=5)
    fits = [mml.curve_fit(gaussian_peak, x, y, p0, lanes=n) for n in (1, 4, 9, 100)]
    for fit in fits[1:]:
        np.testing.assert_allclose(fit.params, fits[0].params, rtol=1e-7, atol=1e-9)
        assert np.max(np.abs(np.asarray(fit.n_iter) - np.asarray(fits[0].n_iter))) <= 1
        np.testing.assert_allclose(fit.stderr, fits[0].stderr, rtol=1e-6)
        np.testing.assert_array_equal(fit.status, fits[0].status)
    monkeypatch.setattr(fc, "wide_backend", lambda: False)  # (the widths on a CPU)
    assert fc.pool_lanes(10**4, None) == 1250 and fc.pool_lanes(500, None) == 128
    assert fc.pool_lanes(10**5, None) == 4096 and fc.pool_lanes(10**5, None, 1024, 4, 8) == 256
    assert fc.pool_lanes(10**5, None, 10**5, 4, 8) == 128  # never narrower than 128
    assert fc.pool_lanes(50, None) == 50 and fc.pool_lanes(10**4, 7) == 7
    monkeypatch.setattr(fc, "wide_backend", lambda: True)
    assert fc.pool_lanes(10**4, None) == 10**4 and fc.pool_lanes(10**7, None) == 1_250_000
    for bad in (0, -3, 2.5, "8", True):
        with pytest.raises((ValueError, TypeError), match="lanes"):
            mml.curve_fit(gaussian_peak, x, y, p0, lanes=bad)


@pytest.mark.parametrize("method", ["lm", "gauss-newton"])
def test_converges_when_value_and_jacobian_passes_round_differently(method):
    # On a GPU, XLA fuses the model's value pass and its value-and-Jacobian pass differently, so
    # that one point's chi-squared differs between them by several ulps. Emulated here: the
    # value pass of exp is off by +-16 ulps per point. Comparing trial costs across the two
    # passes once left ~2% of these fits at PRECISION_LIMIT with "lm" (damping held up by steps
    # that passed or failed at random) and ~40% at LINESEARCH_FAILED with "gauss-newton"; every
    # fit must converge, in about as many iterations as without.
    eps = np.finfo(np.float64).eps

    @jax.custom_jvp
    def exp_off(z):
        return jnp.exp(z) * (1 + 16 * eps * jnp.sign(jnp.sin(1e7 * z)))

    @exp_off.defjvp
    def _(primals, tangents):
        e = jnp.exp(primals[0])
        return e, e * tangents[0]

    def model(x, p):
        return p[0] * exp_off(-((x - p[1]) ** 2) / (2.0 * p[2] ** 2)) + p[3]

    x, y, _, p0 = peak_data(200, seed=0)
    fit = mml.curve_fit(model, x, y, p0, method=method)
    exact = mml.curve_fit(gaussian_peak, x, y, p0, method=method)
    np.testing.assert_array_equal(fit.status, Status.SUCCESS)
    assert int(fit.n_iter.max()) <= int(exact.n_iter.max()) + 3
    np.testing.assert_allclose(fit.params, exact.params, rtol=1e-6, atol=1e-9)


def test_start_near_the_minimum_still_converges():
    # A fit may stop when its next step, predicted from the contraction of its last two accepted
    # steps, would pass the step test; never after its first step (no rate yet). Starting 3e-7
    # off the minimum, stopping after the first step left fits 1.9e-6 from it.
    x, y, _, p0 = peak_data(200, seed=3)
    ref = np.asarray(mml.curve_fit(gaussian_peak, x, y, p0, rtol=1e-13).params)
    fit = mml.curve_fit(gaussian_peak, x, y, jnp.asarray(ref * (1 + 3e-7)))
    assert int(fit.n_iter.min()) >= 2
    np.testing.assert_allclose(fit.params, ref, rtol=1e-6)


def test_batched_fit_calls_no_lapack(monkeypatch):
    # jaxlib 0.10's CPU LAPACK kernels can deadlock with several host devices
    # (docs/sharding.md); the batched fit's program avoids them entirely, and under vmap a
    # library call per tiny matrix is slow anyway (the covariance is a sweep, not potrf).
    import jaxopt_mml._fit_curve as fc

    x, y, _, p0 = peak_data(16, seed=2)
    captured = {}
    monkeypatch.setattr(fc, "_fit_jit", lambda *a: captured.setdefault("args", a))
    mml.curve_fit(gaussian_peak, x, y, p0)
    text = jax.jit(fc._fit_impl, static_argnums=(0, 1)).lower(*captured["args"]).as_text()
    assert "custom_call" not in text, [ln for ln in text.splitlines() if "custom_call" in ln][:3]


def test_empty_batch_gives_empty_results():
    # B = 0 (every dataset filtered out) is a batch as linear_fit and jax.vmap take it: results
    # with a leading axis 0. The pool raised 'n_problems must be >= 1', and a per-dataset x or p0
    # failed to reshape (no size to infer -1 from).
    fit = mml.curve_fit(exp_decay, np.zeros((0, 10)), np.zeros((0, 10)), jnp.zeros((0, 3)))
    assert fit.params.shape == (0, 3) and fit.covariance.shape == (0, 3, 3)
    assert fit.status.shape == (0,) and fit.residuals.shape == (0, 10)


def test_shared_x_nan_kept_by_another_dataset_leaves_derivatives_finite():
    # A shared x with NaN at a point that dataset 0 masks and dataset 1 keeps (INVALID_INPUT):
    # dataset 0's fit was right, but reverse-mode derivatives of its statistics multiplied its
    # zero cotangent there by the model's NaN partials (NaN, where a fit of it alone is finite).
    x = np.linspace(0.0, 2.0, 10)
    y = np.asarray(exp_decay(x, np.array([2.0, 1.3, 0.5]))) + 0.01 * np.cos(7.0 * np.arange(10))
    x[4] = np.nan
    mask = np.ones((2, 10), bool)
    mask[0, 4] = False
    p0 = jnp.array([1.0, 1.0, 0.0])

    def chi2(yy):
        fit = mml.curve_fit(exp_decay, x, yy, p0, mask=mask)
        return fit.chi2[0], fit.status

    grad, status = jax.jit(jax.grad(chi2, has_aux=True))(np.stack([y, y]))
    np.testing.assert_array_equal(status, [Status.SUCCESS, Status.INVALID_INPUT])
    assert np.all(np.isfinite(grad[0])) and grad[0, 4] == 0.0
