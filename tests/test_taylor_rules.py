"""Taylor coefficients' fallbacks, taylor_error's sampling and check_grad's steps, one rule at a
time. Found by mutation testing: each test fails when its rule is changed."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxopt_mml as mml

# ----------------------------------------------------------------------------------------------
# Taylor coefficients: the fallback where jet's power rule loses the series


def _binomial_series(p, x0, order):
    """c_k of x ** p about x0: binom(p, k) x0 ** (p - k), in closed form."""
    from scipy.special import binom

    return np.array([binom(p, k) * x0 ** (p - k) for k in range(order + 1)])


def test_power_whose_value_underflows_falls_back_up_to_order_four():
    """x ** 2.5 at 1e-140 (the power underflows to 0): the fallback covers orders up to 4."""
    c = mml.taylor_coefficients(lambda x: x**2.5, 1e-140, 4)
    np.testing.assert_allclose(c, _binomial_series(2.5, 1e-140, 4), rtol=1e-12)


def test_power_inside_a_jitted_function_is_guarded_too():
    """The power sits in a nested (jit) jaxpr: it is found there and the fallback applies."""
    c = mml.taylor_coefficients(jax.jit(lambda x: x**2.5), 1e-140, 3)
    np.testing.assert_allclose(c, _binomial_series(2.5, 1e-140, 3), rtol=1e-12)


def test_taylor_error_samples_are_uniform_in_the_ball():
    """In 50 dimensions a point uniform in the ball lies beyond 0.8 r with probability
    1 - 0.8**50 (1 - 1.4e-5). The order-0 error of sin(pi |x|^2 / r^2) about 0 is at most
    sin(0.64 pi) = 0.90 there; it reaches 1 only at |x| = 0.71 r, which such samples miss."""
    r = 2.0
    f = lambda x: jnp.sin(jnp.pi * jnp.sum(x**2) / r**2)
    e = mml.taylor_error(f, jnp.zeros(50), 0, r, n_samples=64, lagrange=False)
    assert float(e.max_error) <= np.sin(0.64 * np.pi) + 1e-12
    assert 0.8 * r <= float(jnp.linalg.norm(e.x_worst)) <= r * (1 + 1e-12)


def test_jet_rem_with_a_varying_divisor_uses_the_truncated_quotient():
    """rem (C's fmod) is x - y trunc(x / y): near t = 0, rem(-7 + t, 2 + t) = -1 + 4t (quotient
    -3, not floor's -4) and rem(7 + t, -2 + t) = 1 + 4t, in every engine."""
    from jax import lax

    for method in ("auto", "jet", "jacfwd"):
        c = mml.taylor_coefficients(lambda t: lax.rem(-7.0 + t, 2.0 + t), 0.0, 3, method=method)
        np.testing.assert_allclose(c, [-1.0, 4.0, 0.0, 0.0], atol=1e-14)
        c = mml.taylor_coefficients(lambda t: lax.rem(7.0 + t, -2.0 + t), 0.0, 2, method=method)
        np.testing.assert_allclose(c, [1.0, 4.0, 0.0], atol=1e-14)


# ----------------------------------------------------------------------------------------------
# check_grad


def test_check_grad_measures_a_component_against_the_whole_gradient():
    """A component off by 1e-10 next to one of 1e3 is negligible: its error is relative to
    at least eps**(1/3) * max|g| (here 1e-10 / 6e-3), not to its own size."""
    res = mml.check_grad(lambda x: 1e3 * x[0] + x[1] ** 2, jnp.zeros(2), np.array([1e3, 1e-10]))
    root_eps = np.finfo(np.float64).eps ** (1 / 3)
    assert res.max_rel_error <= 1e-10 / (root_eps * 1e3) * (1 + 1e-6)


def test_check_grad_step_is_relative_to_large_coordinates():
    """At x = 1e6 the step is h = eps**(1/3) |x| (6, not 6e-6): the central difference of x^3
    then has error ~ eps f / h + h^2 f''' / 6 ~ 1e-11 relative, not eps f / 6e-6 ~ 1e-5."""
    x = jnp.array([1e6, -2e6])
    res = mml.check_grad(lambda x: jnp.sum(x**3), x)
    np.testing.assert_allclose(res.fd_grad, 3.0 * np.asarray(x) ** 2, rtol=1e-9)
    assert res.max_rel_error < 1e-9
