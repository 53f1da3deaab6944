"""Taylor coefficients' fallbacks, taylor_error's sampling and check_grad's steps, one rule at a
time. Found by mutation testing: each test fails when its rule is changed."""

import math

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


def test_taylor_error_bound_sees_the_derivative_at_x0_in_many_dimensions():
    """In 10 dimensions the samples lie at radii r U^(1/10) (none below 0.77 r in 16): the second
    derivative of -exp(-200 |x|^2), 400 at x0 = 0 and below 1e-40 there, was never seen, and
    the order-1 bound came out 6e-48 for a sampled error of 1. Along each direction the
    bound now also looks at x0: (r^2 / 2) 400 = 200."""
    f = lambda x: -jnp.exp(-200.0 * jnp.sum(x**2))
    e = jax.jit(lambda x0: mml.taylor_error(f, x0, 1, 1.0, n_samples=16))(jnp.zeros(10))
    np.testing.assert_allclose(e.max_error, 1.0, rtol=1e-8)
    np.testing.assert_allclose(e.lagrange_bound, 200.0, rtol=1e-12)


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


# ----------------------------------------------------------------------------------------------
# Taylor coefficients: the rules jet lacks (nested forward mode took minutes at order 10)


def _arctan_at_0(n):  # x - x^3/3 + x^5/5 - ...
    return [0.0 if k % 2 == 0 else (-1.0) ** (k // 2) / k for k in range(n + 1)]


def _arcsin_at_0(n):  # sum (2m)! / (4^m (m!)^2 (2m + 1)) x^(2m + 1)
    from math import comb

    return [
        0.0 if k % 2 == 0 else comb(k - 1, (k - 1) // 2) / 4 ** ((k - 1) // 2) / k
        for k in range(n + 1)
    ]


def _tan_at_0(n):  # x + x^3/3 + 2x^5/15 + 17x^7/315 + 62x^9/2835
    odd = {1: 1.0, 3: 1 / 3, 5: 2 / 15, 7: 17 / 315, 9: 62 / 2835}
    return [odd.get(k, 0.0) for k in range(n + 1)]


def _polygamma_series(x0, n, shift):
    """c_k of lgamma (shift 0) or digamma (shift 1) about x0, from scipy's polygamma."""
    from math import factorial

    from scipy import special

    first = special.gammaln(x0) if shift == 0 else special.digamma(x0)
    return [first] + [special.polygamma(k - 1 + shift, x0) / factorial(k) for k in range(1, n + 1)]


def test_rules_jet_lacks_give_the_closed_forms_to_order_10():
    """atan, asin, acos, tan, cbrt, exp2, lgamma, digamma: jet's own engine (no fallback) gives the
    closed-form coefficients; method='jet' raised "no Taylor rule" for each before."""
    from math import factorial

    from jax.scipy.special import digamma, gammaln
    from scipy.special import binom

    n = 10
    cases = [
        (jnp.arctan, 0.0, _arctan_at_0(n)),
        (jnp.arcsin, 0.0, _arcsin_at_0(n)),
        (jnp.arccos, 0.0, [np.pi / 2] + [-c for c in _arcsin_at_0(n)[1:]]),
        (jnp.tan, 0.0, _tan_at_0(n)),
        (jnp.cbrt, -8.0, [-binom(1 / 3, k) * 8 ** (1 / 3 - k) * (-1) ** k for k in range(n + 1)]),
        (jnp.exp2, 1.5, [2**1.5 * np.log(2) ** k / factorial(k) for k in range(n + 1)]),
        (gammaln, 2.5, _polygamma_series(2.5, n, 0)),
        (digamma, 0.3, _polygamma_series(0.3, n, 1)),
    ]
    for f, x0, want in cases:
        got = mml.taylor_coefficients(f, x0, n, method="jet")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14, err_msg=f.__name__)


def test_rules_jet_lacks_agree_with_nested_forward_mode_away_from_zero():
    """At points where the series have no symmetry to hide a wrong term: compared with nested
    forward mode (which uses JAX's derivative rules), a composition included."""
    f = lambda x: jnp.arctan(jnp.sin(x)) * jnp.tan(x / 3)
    g = lambda x: jnp.exp2(x) * jnp.arccos(x / 2) ** 2
    for fn, x0 in ((f, -1.3), (g, 0.4)):
        np.testing.assert_allclose(
            mml.taylor_coefficients(fn, x0, 4),
            mml.taylor_coefficients(fn, x0, 4, method="jacfwd"),
            rtol=1e-12,
        )


def test_rules_jet_lacks_at_their_singular_points_fall_back_as_powers_do():
    """arcsin at 1 and cbrt at 0 have infinite derivatives: up to order 4 nested forward mode's
    infinities replace the recurrence's NaN (as for sqrt at 0); float32 keeps its dtype."""
    np.testing.assert_array_equal(
        mml.taylor_coefficients(jnp.cbrt, 0.0, 3), [0.0, np.inf, -np.inf, np.inf]
    )
    c = mml.taylor_coefficients(jnp.arcsin, 1.0, 3)
    assert c[0] == np.pi / 2 and np.all(np.isinf(c[1:]))
    c32 = mml.taylor_coefficients(jnp.arctan, jnp.float32(0.5), 5)
    assert c32.dtype == jnp.float32
    np.testing.assert_allclose(c32, mml.taylor_coefficients(jnp.arctan, 0.5, 5), rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Taylor coefficients through jax.custom_jvp functions (jet fails on them: nested forward mode
# took minutes at order 10)


def test_custom_jvp_functions_by_their_own_rules_match_closed_forms():
    """softplus, sinc, xlogy and relu by Taylor mode with their derivative rules: method='jet'
    raised UnexpectedTracerError. sinc at 0 is where inlining its primal would be wrong (it
    selects the constant 1 there)."""
    from math import factorial, log

    from jax.scipy.special import xlogy

    tc = lambda f, x0, n: mml.taylor_coefficients(f, x0, n, method="jet")  # noqa: E731
    sinc_at_0 = [0.0 if k % 2 else (-1) ** (k // 2) * np.pi**k / factorial(k + 1) for k in range(9)]
    np.testing.assert_allclose(tc(jnp.sinc, 0.0, 8), sinc_at_0, rtol=1e-12, atol=1e-15)
    softplus_at_0 = [log(2.0), 1 / 2, 1 / 8, 0.0, -1 / 192, 0.0, 1 / 2880, 0.0, -17 / 645120]
    np.testing.assert_allclose(tc(jax.nn.softplus, 0.0, 8), softplus_at_0, rtol=1e-12, atol=1e-15)
    # x log(2 + x) = log 2 x + sum_k (-1)^(k+1) x^(k+1) / (k 2^k)
    xlogy_at_0 = [0.0, log(2.0)] + [(-1) ** (k + 1) / (k * 2**k) for k in range(1, 6)]
    np.testing.assert_allclose(
        tc(lambda x: xlogy(x, 2.0 + x), 0.0, 6), xlogy_at_0, rtol=1e-12, atol=1e-15
    )
    np.testing.assert_array_equal(tc(jax.nn.relu, 0.5, 3), [0.5, 1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tc(jax.nn.relu, -0.5, 3), [0.0, 0.0, 0.0, 0.0])


def test_custom_jvp_series_under_jit_vmap_and_grad_equal_nested_forward_mode():
    """method='jet' (the rules' series; 'auto' takes nested forward mode up to order 4 for
    custom_jvp functions, and the rules' series above)."""
    f = lambda x: jax.nn.softplus(jnp.sin(x)) * jnp.sinc(x) + jax.nn.log_sigmoid(x)
    both = lambda x0: (
        mml.taylor_coefficients(f, x0, 4, method="jet"),
        mml.taylor_coefficients(f, x0, 4, method="jacfwd"),
    )
    by_rules, nested = jax.jit(jax.vmap(both))(jnp.array([0.0, 0.4, -1.1]))
    np.testing.assert_allclose(by_rules, nested, rtol=1e-12, atol=1e-15)
    d_rules = jax.grad(lambda x: mml.taylor_coefficients(f, x, 3, method="jet")[3])(0.4)
    d_nested = jax.grad(lambda x: mml.taylor_coefficients(f, x, 3, method="jacfwd")[3])(0.4)
    np.testing.assert_allclose(d_rules, d_nested, rtol=1e-12)
    np.testing.assert_allclose(  # auto above order 4: the rules' series
        mml.taylor_coefficients(jax.nn.softplus, 0.0, 6)[5:], [0.0, 1 / 2880], atol=1e-15
    )


def test_custom_vjp_function_under_a_power_is_not_guarded_by_nested_forward_mode():
    """sqrt or x ** 2.5 of a custom_vjp function up to order 4: the power's guard traced nested
    forward mode, which cannot differentiate a custom_vjp function (NotImplementedError,
    'custom_lin'). Its primal goes through jet, as above order 4 and without the power."""

    @jax.custom_vjp
    def g(x):
        return jnp.exp(x)

    g.defvjp(lambda x: (jnp.exp(x), jnp.exp(x)), lambda r, c: (r * c,))
    c = jax.jit(lambda x0: mml.taylor_coefficients(lambda x: jnp.sqrt(g(x)), x0, 3))(0.3)
    np.testing.assert_allclose(c, [np.exp(0.15) / 2**k / math.factorial(k) for k in range(4)])
    error = lambda x0: mml.taylor_error(lambda x: g(x) ** 2.5, x0, 1, 0.1, n_samples=3).max_error
    np.testing.assert_allclose(jax.jit(error)(0.0), np.exp(0.25) - 1.25, rtol=1e-12)  # at 0.1
