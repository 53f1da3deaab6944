"""Taylor series: coefficients (jet and its fallback), polynomials, linear and quadratic models,
truncation-error estimates."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from tests.zoo.calculus import (
    TAYLOR_CLOSED_FORMS,
    cube_by_while,
    cube_by_while_coefficients,
    resolvent_by_solve,
    resolvent_by_solve_coefficients,
    rosenbrock,
    rosenbrock_gradient,
    rosenbrock_hessian,
)
from tests.zoo.jaxprs import primitives

# ---------------------------------------------------------------------------------------------
# taylor_coefficients


@pytest.mark.parametrize("name", sorted(TAYLOR_CLOSED_FORMS))
def test_coefficients_match_closed_forms_to_order_10(name):
    f, closed, points = TAYLOR_CLOSED_FORMS[name]
    x0s = jnp.array(points)
    got = jax.jit(jax.vmap(lambda x0: mml.taylor_coefficients(f, x0, 10)))(x0s)
    chex.assert_shape(got, (len(points), 11))
    want = np.stack([closed(x0, 10) for x0 in points])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "f, closed",
    [
        (cube_by_while, cube_by_while_coefficients),
        (resolvent_by_solve, resolvent_by_solve_coefficients),
    ],
    ids=["while_loop", "linalg.solve"],
)
def test_coefficients_fall_back_where_jet_has_no_rule(f, closed):
    with pytest.raises(Exception):  # noqa: B017  (jet's own error: a KeyError for the primitive)
        mml.taylor_coefficients(f, 0.5, 4, method="jet")
    x0s = jnp.array([0.5, -0.25])
    both = lambda x0: (
        mml.taylor_coefficients(f, x0, 5),
        mml.taylor_coefficients(f, x0, 5, method="jacfwd"),
    )
    auto, forced = jax.jit(jax.vmap(both))(x0s)
    want = np.stack([closed(float(x0), 5) for x0 in x0s])
    np.testing.assert_allclose(auto, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(forced, want, rtol=1e-12, atol=1e-12)


def test_scan_goes_by_taylor_rules_not_nested_forward_mode():
    """jet has no rule for scan: jnp.polyval, a fori_loop with static bounds and ndtri (five
    polyvals) went by nested forward mode (ndtri to order 6: 38 s) and method="jet" raised."""
    coefficients = jnp.array([2.0, -1.0, 0.5, 3.0])
    poly = lambda x: jnp.polyval(coefficients, x)
    got = mml.taylor_coefficients(poly, 0.5, 4, method="jet")
    # p(0.5 + t) = 2 (0.5 + t)^3 - (0.5 + t)^2 + 0.5 (0.5 + t) + 3
    np.testing.assert_allclose(got, [3.25, 1.0, 2.0, 2.0, 0.0], rtol=1e-14, atol=1e-14)

    def power_by_loop(x):  # x ** 4 + (0 + 1 + 2 + 3), a scan with a float and an int carry
        return jax.lax.fori_loop(0, 4, lambda i, c: (c[0] * x, c[1] + i), (1.0, 0))

    run = lambda x0: mml.taylor_coefficients(
        lambda x: power_by_loop(x)[0] + power_by_loop(x)[1], x0, 5, method="jet"
    )
    got = jax.jit(run)(2.0)
    np.testing.assert_allclose(got, [22.0, 32.0, 24.0, 8.0, 1.0, 0.0], rtol=1e-14)

    p = 0.2  # ndtri' = w = sqrt(2 pi) exp(z^2 / 2), ndtri'' = z w^2
    z = float(jax.scipy.special.ndtri(p))
    w = math.sqrt(2 * math.pi) * math.exp(z * z / 2)
    ndtri = lambda x0: mml.taylor_coefficients(jax.scipy.special.ndtri, x0, 2, method="jet")
    got = jax.jit(ndtri)(p)
    np.testing.assert_allclose(got, [z, w, z * w**2 / 2], rtol=1e-12)


def test_powers_at_a_base_of_zero_or_underflowing_are_not_zero():
    # Miller's recurrence scales every coefficient by x0 ** c: at 0 (sqrt, x ** 2.5) or where it
    # underflows, every coefficient came out 0, finite and wrong (sqrt's slope at 0 is inf).
    tc = mml.taylor_coefficients
    np.testing.assert_array_equal(tc(jnp.sqrt, 0.0, 3), [0.0, np.inf, -np.inf, np.inf])
    np.testing.assert_array_equal(tc(lambda x: x**2.5, 0.0, 3), [0.0, 0.0, 0.0, np.inf])
    x0 = 1e-140
    want = [0.0, 2.5 * x0**1.5, 1.875 * x0**0.5, 0.3125 * x0**-0.5]
    np.testing.assert_allclose(tc(lambda x: x**2.5, x0, 3), want, rtol=1e-12)
    want32 = [0.0, 2.5e-30, 1.875e-10, 3.125e9]
    np.testing.assert_allclose(tc(lambda x: x**2.5, jnp.float32(1e-20), 3), want32, rtol=1e-5)
    # above the nested fallback's order: NaN (documented), never a silent 0
    assert np.all(np.isnan(np.asarray(tc(lambda x: x**2.5, 0.0, 6))[1:]))


def test_misuse_messages_and_the_value_of_a_power_of_zero():
    # method="jet" without a rule raised jet's bare KeyError('bessel_i0e')
    with pytest.raises(NotImplementedError, match="no Taylor rule.*bessel_i0e"):
        mml.taylor_coefficients(jax.scipy.special.i0e, 0.0, 3, method="jet")
    # a linear model of a scalar x0 called at an array: an internal tensordot error before
    model = mml.linearise(jnp.sin, 0.5)
    with pytest.raises(ValueError, match="x0's structure and shapes"):
        model(jnp.array([0.6, 0.7]))
    want = [model(0.6), model(0.7)]
    np.testing.assert_allclose(jax.vmap(model)(jnp.array([0.6, 0.7])), want, rtol=1e-15)
    # the same for a quadratic model: a point of another shape broadcast against x0 ([0.5]
    # for [1, 2] was evaluated at [0.5, 0.5]) or failed inside a tensordot
    quad = mml.quadratic_model(lambda x: jnp.sum(x**3), jnp.array([1.0, 2.0]))
    for point in (jnp.array([0.5]), 0.5, jnp.full((3, 2), 0.5)):
        with pytest.raises(ValueError, match="x0's structure and shapes"):
            quad(point)
    points = jnp.array([[0.5, 0.5], [1.5, 2.5]])
    np.testing.assert_allclose(jax.vmap(quad)(points), [quad(p) for p in points], rtol=1e-15)
    # c_0 is f(x0) itself: 0 ** x at x0 = 1 made it NaN (exp(0 * log 0)) beyond order 4
    got = mml.taylor_coefficients(lambda x: jnp.power(0.0, x) + jnp.sin(x), 1.0, 5)
    np.testing.assert_allclose(got[0], np.sin(1.0), rtol=1e-15)


def test_auto_falls_back_where_jet_pow_rule_gives_nan():
    # jet's pow rule goes through log(x): NaN coefficients at x0 <= 0 for a smooth x ** 2.0.
    square, cube = (lambda x: x**2.0), (lambda x: jnp.power(x, 3.0))
    np.testing.assert_allclose(mml.taylor_coefficients(square, -3.0, 3), [9, -6, 1, 0], atol=1e-14)
    np.testing.assert_allclose(mml.taylor_coefficients(square, 0.0, 2), [0, 0, 1], atol=1e-14)
    np.testing.assert_allclose(mml.taylor_coefficients(cube, 0.0, 3), [0, 0, 0, 1], atol=1e-14)
    np.testing.assert_allclose(
        mml.taylor_coefficients(cube, -2.0, 4), [-8, 12, -6, 1, 0], atol=1e-13
    )
    got = mml.taylor_coefficients(lambda x: jnp.arctan2(1.0, x), 0.0, 3)  # jet divides by x
    np.testing.assert_allclose(got, [np.pi / 2, -1, 0, 1 / 3], atol=1e-14)
    # Per mapped element under jit and vmap, with a vector output and float32.
    f = lambda x: jnp.stack([x**2.0, jnp.exp(x)])
    x0s = jnp.array([-3.0, 0.5, 2.0])
    got = jax.jit(jax.vmap(lambda x0: mml.taylor_coefficients(f, x0, 3)))(x0s)
    want = [[x0**2, 2 * x0, 1, 0] for x0 in (-3.0, 0.5, 2.0)]
    np.testing.assert_allclose(got[:, :, 0], want, rtol=1e-13, atol=1e-13)
    exp_want = [[np.exp(x0) / math.factorial(k) for k in range(4)] for x0 in (-3.0, 0.5, 2.0)]
    np.testing.assert_allclose(got[:, :, 1], exp_want, rtol=1e-13)
    got32 = mml.taylor_coefficients(square, jnp.float32(-3.0), 2)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, [9, -6, 1], rtol=1e-6)
    # Derivatives in both modes: d c_k / d x0 = (k + 1) c_{k+1}.
    c = lambda x0: mml.taylor_coefficients(square, x0, 3)
    np.testing.assert_allclose(jax.jacfwd(c)(-3.0), [-6, 2, 0, 0], atol=1e-13)
    np.testing.assert_allclose(jax.jit(jax.jacrev(c))(-3.0), [-6, 2, 0, 0], atol=1e-13)
    # The models built on the coefficients.
    np.testing.assert_allclose(mml.taylor_polynomial(square, -3.0, 2)(-2.0), 4.0, rtol=1e-14)
    e = mml.taylor_error(square, -3.0, 1, 0.5)
    np.testing.assert_allclose((e.max_error, e.lagrange_bound), (0.25, 0.25), rtol=1e-12)
    # The nested engine is traced only for functions that contain such a primitive.
    trace = lambda g: primitives(lambda x0: mml.taylor_coefficients(g, x0, 3), 0.5)
    assert "cond" not in trace(jnp.exp) and "cond" in trace(square)


def test_jet_rules_that_lost_their_digits_or_computed_another_function():
    # Finite and wrong before (JAX's jet rules; only non-finite coefficients were caught).
    T = mml.taylor_coefficients
    angle = lambda x: jnp.arctan2(jnp.sin(x), jnp.cos(x))  # x itself near pi / 2
    np.testing.assert_allclose(T(angle, np.pi / 2, 4), [np.pi / 2, 1, 0, 0, 0], atol=1e-12)
    near = lambda t: jnp.arctan2(1.0 + t, 1e-3 - t)  # c4 was 4e-5 off, relative
    np.testing.assert_allclose(T(near, 0.0, 5), T(near, 0.0, 5, method="jacfwd"), rtol=1e-12)
    # x ** 2.0 near and at 0 (c4 = -101 at 1e-9), and at a negative point.
    for x0 in (1e-9, 0.0, -3.0):
        want = [x0**2, 2 * x0, 1, 0, 0, 0]
        np.testing.assert_allclose(T(lambda x: x**2.0, x0, 5), want, atol=1e-14)
    np.testing.assert_allclose(T(lambda x: x**2.0, 0.0, 7)[:3], [0, 0, 1], atol=1e-14)
    np.testing.assert_allclose(
        T(lambda x: x**x, 1.5, 6), T(lambda x: x**x, 1.5, 6, method="jacfwd"), rtol=1e-12
    )
    # fmod at a negative point: jet computed Python's %, its value included.
    np.testing.assert_allclose(
        T(lambda x: jnp.fmod(x, 3.0) ** 2, -0.6, 2), [0.36, -1.2, 1.0], atol=1e-14
    )
    # asinh for large negative x (log(x + sqrt(x^2 + 1)) cancels).
    np.testing.assert_allclose(
        T(jnp.arcsinh, -1e3, 4), T(jnp.arcsinh, -1e3, 4, method="jacfwd"), rtol=1e-10
    )
    # High orders of a pow no longer trace nested forward mode (2^n; minutes at order 16).
    c = T(lambda x: x**2.5, 1.0, 12)
    np.testing.assert_allclose(
        c[12], np.prod([2.5 - j for j in range(12)]) / math.factorial(12), rtol=1e-12
    )


def test_jet_rules_that_cancelled_or_overflowed_in_the_value_or_the_series():
    """expm1, log1p, erfc, atanh and acosh by jet's compositions (exp(x) - 1, log(1 + x),
    1 - erf(x), log((1 + x) / (1 - x)) / 2, log(x + sqrt(x^2 - 1))), asinh's derivative as
    (1 + x^2)^(-1/2): log1p(1e-20) was 0, erfc(6) 0, expm1 and atanh at 1e-10 8e-8 off, acosh
    and asinh at 1e200 inf or NaN. Closed forms (x_0 = 0, the points added in f)."""
    from scipy.special import erfc as scipy_erfc

    f = lambda t: jnp.stack(
        [
            jnp.expm1(1e-10 + t),
            jnp.log1p(1e-20 + t),
            jax.scipy.special.erfc(6.0 + t),
            jnp.arctanh(1e-10 + t),
            jnp.arccosh(1e200 + t),
            jnp.arcsinh(1e200 + t),
        ]
    )
    c = jax.jit(lambda x0: mml.taylor_coefficients(f, x0, 3))(0.0)  # (eager: 2 s)
    g = 2 / np.sqrt(np.pi) * np.exp(-36.0)  # -erfc'(6)
    want = [
        [np.expm1(1e-10), np.exp(1e-10), np.exp(1e-10) / 2, np.exp(1e-10) / 6],
        [1e-20, 1.0, -0.5, 1 / 3],
        [scipy_erfc(6.0), -g, 6 * g, -(2 * 36 - 1) * g / 3],
        [1e-10, 1.0, 1e-10, 1 / 3],
        [np.arccosh(1e200), 1e-200, 0.0, 0.0],
        [np.arcsinh(1e200), 1e-200, 0.0, 0.0],
    ]
    np.testing.assert_allclose(c.T, want, rtol=1e-13, atol=0)


def test_jet_tanh_and_logistic_keep_their_values_and_tiny_derivatives():
    """jet's tanh is 2 logistic(2x) - 1 (tanh(1e-20) was 0, tanh(1e-10) 8e-8 off), and its
    logistic's rule forms 1 - s_0, which rounds to 0 at large x_0 (tanh'(30) = 4 e^-60 and
    sigmoid'(40) = e^-40 came back 0). Closed forms: tanh' = sech^2, tanh'' / 2 = -tanh sech^2,
    sigmoid' = s (1 - s), sigmoid'' / 2 = s (1 - s) (1 - 2 s) / 2."""
    f = lambda t: jnp.stack(
        [jnp.tanh(1e-20 + t), jnp.tanh(1e-10 + t), jnp.tanh(30.0 + t), jax.nn.sigmoid(40.0 + t)]
    )
    c = jax.jit(lambda x0: mml.taylor_coefficients(f, x0, 2))(0.0)
    sech2 = 4 * np.exp(-60.0) / (1 + np.exp(-60.0)) ** 2
    s, q = 1 / (1 + np.exp(-40.0)), np.exp(-40.0) / (1 + np.exp(-40.0))
    want = [
        [1e-20, 1.0, -1e-20],
        [np.tanh(1e-10), 1 / np.cosh(1e-10) ** 2, -np.tanh(1e-10) / np.cosh(1e-10) ** 2],
        [np.tanh(30.0), sech2, -np.tanh(30.0) * sech2],
        [s, s * q, s * q * (1 - 2 * s) / 2],
    ]
    np.testing.assert_allclose(c.T, want, rtol=1e-13, atol=0)


def test_both_engines_agree_with_args_and_vector_output():
    f = lambda x, a: jnp.stack([jnp.exp(a * x), jnp.sin(x) * x])
    run = jax.jit(
        lambda x0, a: (
            mml.taylor_coefficients(f, x0, 6, args=(a,), method="jet"),
            mml.taylor_coefficients(f, x0, 6, args=(a,), method="jacfwd"),
        )
    )
    by_jet, by_jvp = run(0.3, 2.0)
    chex.assert_shape(by_jet, (7, 2))
    np.testing.assert_allclose(by_jet, by_jvp, rtol=1e-12, atol=1e-14)
    want = [2.0**k * np.exp(0.6) / math.factorial(k) for k in range(7)]
    np.testing.assert_allclose(by_jet[:, 0], want, rtol=1e-12)


@pytest.mark.parametrize("method", ["jet", "jacfwd"])
def test_coefficients_are_differentiable(method):
    # d c_k / d x0 = (k + 1) c_{k+1}: the derivative of the series is the series of the derivative.
    f = lambda x, a: jnp.sin(a * x)
    coefficients = lambda x0, a: mml.taylor_coefficients(f, x0, 5, args=(a,), method=method)
    d_dx0 = jax.jit(jax.jacfwd(coefficients))(0.4, 1.5)
    higher = jax.jit(lambda x0, a: mml.taylor_coefficients(f, x0, 6, args=(a,), method=method))(
        0.4, 1.5
    )
    np.testing.assert_allclose(d_dx0, np.arange(1, 7) * higher[1:], rtol=1e-12, atol=1e-14)
    # and through the argument: d/da of c_1 = a cos(a x0) is cos(a x0) - a x0 sin(a x0).
    d_da = jax.jit(jax.grad(lambda a: coefficients(0.4, a)[1]))(1.5)
    np.testing.assert_allclose(d_da, np.cos(0.6) - 0.6 * np.sin(0.6), rtol=1e-13)


def test_low_orders_float32_and_no_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def low(x0):
        return mml.taylor_coefficients(jnp.exp, x0, 0), mml.taylor_coefficients(jnp.exp, x0, 1)

    c0, c1 = low(jnp.float32(1.0))
    low(jnp.float32(2.0))
    assert c0.dtype == jnp.float32 and c1.dtype == jnp.float32
    chex.assert_shape((c0, c1), ((1,), (2,)))
    np.testing.assert_allclose(c1, [np.exp(1.0)] * 2, rtol=1e-6)


def test_coefficients_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="order"):
        mml.taylor_coefficients(jnp.sin, 0.0, -1)
    with pytest.raises(TypeError, match="order"):
        mml.taylor_coefficients(jnp.sin, 0.0, 2.0)
    with pytest.raises(ValueError, match="x0 must be a scalar"):
        mml.taylor_coefficients(jnp.sin, jnp.zeros(2), 2)
    with pytest.raises(ValueError, match="method"):
        mml.taylor_coefficients(jnp.sin, 0.0, 2, method="finite-differences")


# ---------------------------------------------------------------------------------------------
# taylor_polynomial


def test_taylor_polynomial_horner_jit_vmap_no_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def build(x0):
        return mml.taylor_polynomial(jnp.sin, x0, 7)

    p = build(0.5)  # a pytree: comes out of jit
    build(0.7)
    assert isinstance(p, mml.TaylorPolynomial)
    xs = jnp.linspace(0.4, 0.6, 5)
    # Remainder bound: |x - x0|^8 / 8! <= 0.1^8 / 40320.
    evaluate = jax.jit(lambda poly, x: poly(x))  # the polynomial is a pytree argument
    np.testing.assert_allclose(evaluate(p, xs), np.sin(xs), rtol=0, atol=3e-13)
    np.testing.assert_allclose(p(xs), np.polyval(np.asarray(p.coefficients)[::-1], xs - 0.5))
    # vmap over expansion points: p_{x0}(x0 + 0.01) for many x0.
    x0s = jnp.linspace(-1.0, 1.0, 4)
    vals = jax.vmap(lambda x0: mml.taylor_polynomial(jnp.exp, x0, 5)(x0 + 0.01))(x0s)
    np.testing.assert_allclose(vals, np.exp(x0s + 0.01), rtol=1e-14)
    # a vector-valued f at many points: each point against every output element (x[i] was
    # paired with output i: [sin 0.1, cos 0.2], and three points against two outputs failed)
    q = mml.taylor_polynomial(lambda x: jnp.stack([jnp.sin(x), jnp.cos(x)]), 0.0, 9)
    for points in (jnp.array([0.1, 0.2]), jnp.array([[0.1, 0.2, 0.3]])):
        want = np.stack([np.sin(points), np.cos(points)], axis=-1)
        np.testing.assert_allclose(q(points), want, rtol=1e-10)
        np.testing.assert_allclose(jax.vmap(q)(points.ravel()), want.reshape(-1, 2), rtol=1e-10)
    with pytest.raises(ValueError, match="order"):
        mml.taylor_polynomial(jnp.sin, 0.0, -2)


# ---------------------------------------------------------------------------------------------
# linearise and quadratic_model


def _loglog_slope(errors, sizes):
    return np.polyfit(np.log(sizes), np.log(errors), 1)[0]


def vector_field(x):  # R^3 -> R^2, smooth, with non-zero curvature in every direction
    return jnp.stack([jnp.exp(x[0]) * jnp.sin(x[1]), x[0] * x[2] ** 2 + jnp.cos(x[1])])


def test_linear_model_error_shrinks_as_dx_squared():
    x0 = jnp.array([0.2, -0.4, 0.9])
    direction = jnp.array([0.6, -0.3, 0.74])
    sizes = np.logspace(-3, -1, 9)

    @jax.jit
    def errors(x0, hs):
        lin = mml.linearise(vector_field, x0)
        points = x0 + hs[:, None] * direction
        return jnp.max(jnp.abs(jax.vmap(vector_field)(points) - jax.vmap(lin)(points)), axis=1)

    slope = _loglog_slope(np.asarray(errors(x0, jnp.asarray(sizes))), sizes)
    assert abs(slope - 2.0) < 0.1, slope


def test_quadratic_model_error_shrinks_as_dx_cubed():
    f = lambda x, a: jnp.sum(jnp.exp(a * x)) + x[0] * x[1] ** 2
    x0 = jnp.array([0.3, -0.8])
    direction = jnp.array([0.8, 0.6])
    sizes = np.logspace(-3, -1, 9)

    @jax.jit
    def errors(x0, hs):
        q = mml.quadratic_model(f, x0, args=(1.5,))
        points = x0 + hs[:, None] * direction
        return jnp.abs(jax.vmap(lambda p: f(p, 1.5))(points) - jax.vmap(q)(points))

    slope = _loglog_slope(np.asarray(errors(x0, jnp.asarray(sizes))), sizes)
    assert abs(slope - 3.0) < 0.1, slope


def test_linearise_fields_pytrees_modes_and_model():
    def f(p, c):
        return {"s": c * jnp.sum(p["w"] ** 2), "v": p["w"] * p["b"]}

    p0 = {"w": jnp.array([1.0, 2.0]), "b": jnp.asarray(0.5)}
    dp = {"w": jnp.array([1e-3, -2e-3]), "b": jnp.asarray(1e-3)}
    p1 = jax.tree.map(jnp.add, p0, dp)

    @jax.jit
    def run(p, p1, c):
        lin = mml.linearise(f, p, args=(c,), mode="fwd")
        lin_rev = mml.linearise(f, p, args=(c,), mode="rev")
        return lin, lin_rev, lin(p1), lin.model(p1), f(p, c), jax.jacobian(f)(p, c)

    lin, lin_rev, at_p1, model_at_p1, value, jac = run(p0, p1, 3.0)
    chex.assert_trees_all_close(lin, lin_rev)
    chex.assert_trees_all_close(lin.value, value)
    chex.assert_trees_all_close(lin.jacobian, jac)
    # Exact first-order change: ds = 6 w.dw, dv = b dw + w db.
    want = {"s": 15.0 + 6.0 * (1e-3 - 4e-3), "v": p0["w"] * 0.5 + 0.5 * dp["w"] + p0["w"] * 1e-3}
    chex.assert_trees_all_close(at_p1, want, rtol=1e-14)
    chex.assert_trees_all_close(model_at_p1, at_p1)

    # vmap over expansion points: one linearisation per row, evaluated at its own point.
    @jax.jit
    def batched(x0s):
        lins = jax.vmap(lambda x: mml.linearise(vector_field, x))(x0s)
        at_x0 = jax.vmap(lambda l, x: l(x))(lins, x0s)
        return lins, at_x0, jax.vmap(jax.jacobian(vector_field))(x0s), jax.vmap(vector_field)(x0s)

    lins, at_x0, jacs, values = batched(jnp.array([[0.1, 0.2, 0.3], [1.0, -1.0, 0.5]]))
    chex.assert_shape(lins.jacobian, (2, 2, 3))
    chex.assert_trees_all_close(lins.jacobian, jacs)
    chex.assert_trees_all_close(at_x0, values)


def test_quadratic_model_fields_vmap_float32_and_bad_input():
    x0s = jnp.array([[-1.2, 1.0], [0.5, 0.5], [1.0, 1.0]], jnp.float32)
    d = jnp.array([0.01, -0.02], jnp.float32)

    @jax.jit
    def run(x0s):
        models = jax.vmap(lambda x: mml.quadratic_model(rosenbrock, x))(x0s)
        at_step = jax.vmap(lambda q, x: q(x + d))(models, x0s)
        exact = jax.vmap(lambda x: rosenbrock(x + d))(x0s)
        references = (
            jax.vmap(rosenbrock)(x0s),
            jax.vmap(rosenbrock_gradient)(x0s),
            jax.vmap(rosenbrock_hessian)(x0s),
        )
        return models, at_step, exact, references

    models, at_step, exact, (values, gradients, hessians) = run(x0s)
    assert models.hessian.dtype == jnp.float32
    chex.assert_trees_all_close(models.value, values, rtol=1e-6)
    chex.assert_trees_all_close(models.gradient, gradients, rtol=1e-5)
    chex.assert_trees_all_close(models.hessian, hessians, rtol=1e-5)
    # Rosenbrock is a quartic: the model misses exactly its cubic and quartic terms,
    # f - q = b (d0^4 - 2 L d0^2) with L = d1 - 2 x0 d0 and b = 100.
    lead = d[1] - 2 * x0s[:, 0] * d[0]
    missing = 100.0 * (d[0] ** 4 - 2 * lead * d[0] ** 2)
    np.testing.assert_allclose(exact - at_step, missing, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="f must return a scalar"):
        mml.quadratic_model(lambda x: x**2, x0s[0])


def test_quadratic_model_pytree_no_retrace():
    f = lambda p: jnp.sum(p["a"] ** 2) * p["c"] + jnp.sin(p["c"])

    @jax.jit
    @chex.assert_max_traces(n=1)
    def at(p, p1):
        q = mml.quadratic_model(f, p)
        return q(p1), q.model(p)

    p0 = {"a": jnp.array([1.0, -1.0]), "c": jnp.asarray(0.3)}
    p1 = {"a": jnp.array([1.1, -1.0]), "c": jnp.asarray(0.3)}
    val, at_x0 = at(p0, p1)
    at(p1, p0)
    np.testing.assert_allclose(val, f(p1), rtol=1e-14)  # quadratic in a: exact
    np.testing.assert_allclose(at_x0, f(p0), rtol=1e-14)


# ---------------------------------------------------------------------------------------------
# taylor_error


def test_taylor_error_scalar_exp_is_exact_on_the_grid_and_bounded():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def err(x0):
        return mml.taylor_error(jnp.exp, x0, 3, 0.2, n_samples=65)

    e = err(0.0)
    err(1.0)
    # exp's remainder is largest at x0 + r; the grid contains it.
    true_max = np.exp(0.2) - (1 + 0.2 + 0.2**2 / 2 + 0.2**3 / 6)
    np.testing.assert_allclose(e.max_error, true_max, rtol=1e-10)
    np.testing.assert_allclose(e.x_worst, 0.2)
    # Lagrange: max |exp| = e^0.2 over the interval.
    np.testing.assert_allclose(e.lagrange_bound, np.exp(0.2) * 0.2**4 / 24, rtol=1e-12)
    assert e.max_error <= e.lagrange_bound


def test_taylor_error_multivariate_orders_1_and_2_and_fallback():
    f = lambda x: jnp.sum(jnp.sin(x)) + x[0] * x[1] ** 2

    @jax.jit
    def errs(x0):
        return tuple(mml.taylor_error(f, x0, n, 0.1, n_samples=64) for n in (1, 2))

    x0 = jnp.array([0.3, -0.2, 1.0])
    e1, e2 = errs(x0)
    for e in (e1, e2):
        assert 0 < e.max_error <= e.lagrange_bound
        assert e.lagrange_bound < 10 * e.max_error  # the estimate is not vacuous
        assert float(jnp.linalg.norm(e.x_worst - x0)) <= 0.1 + 1e-12
    # The order-1 error is the quadratic model's difference from the linear model, to O(r^3).
    assert e2.max_error < 0.2 * e1.max_error
    # A scalar function through a while loop: jet fails, nested forward mode takes over.
    e = jax.jit(lambda x0: mml.taylor_error(cube_by_while, x0, 2, 0.1, n_samples=33))(1.0)
    np.testing.assert_allclose(e.max_error, 0.1**3, rtol=1e-10)  # (x0 + s)^3: remainder s^3
    np.testing.assert_allclose(e.lagrange_bound, 0.1**3, rtol=1e-10)


def test_taylor_error_vmap_float32_and_bad_input():
    x0s = jnp.array([0.0, 0.5, 1.0], jnp.float32)
    e = jax.jit(jax.vmap(lambda x0: mml.taylor_error(jnp.sin, x0, 1, 0.1, n_samples=33)))(x0s)
    assert e.max_error.dtype == jnp.float32
    assert np.all(e.max_error <= e.lagrange_bound * (1 + 1e-5))
    # Second-order remainder of sin: about sin(x0) r^2 / 2 at the worst end.
    np.testing.assert_allclose(e.max_error[1:], np.sin(x0s[1:]) * 0.005, rtol=0.25)
    with pytest.raises(ValueError, match="radius"):
        mml.taylor_error(jnp.sin, 0.0, 1, -0.1)
    # Concrete arrays are checked too (they gave a negative bound), and non-finite radii.
    for bad in (jnp.array(-0.5), np.array(-0.5), np.float32(0.0), jnp.array([0.1, -0.1]), np.inf):
        with pytest.raises(ValueError, match="radius"):
            mml.taylor_error(jnp.sin, 0.0, 1, bad)
    with pytest.raises(TypeError, match="radius"):
        mml.taylor_error(jnp.sin, 0.0, 1, "0.1")
    traced = jax.jit(lambda r: mml.taylor_error(jnp.sin, 0.0, 1, r, n_samples=9).max_error)
    np.testing.assert_allclose(traced(jnp.array(0.1)), 0.1 - np.sin(0.1), rtol=1e-10)
    with pytest.raises(ValueError, match="order"):
        mml.taylor_error(jnp.sin, 0.0, -1, 0.1)
    with pytest.raises(ValueError, match="n_samples"):
        mml.taylor_error(jnp.sin, 0.0, 1, 0.1, n_samples=0)
    no_bound = mml.taylor_error(jnp.sin, 0.0, 1, 0.1, n_samples=9, lagrange=False)
    assert np.isnan(no_bound.lagrange_bound)


def test_taylor_error_keeps_each_leafs_dtype():
    x0 = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float64)}
    err = mml.taylor_error(lambda p: jnp.sum(jnp.sin(p["a"])) + jnp.sum(p["b"] ** 3), x0, 1, 0.1)
    assert np.isfinite(float(err.lagrange_bound)) and float(err.lagrange_bound) >= float(
        err.max_error
    )
    assert err.x_worst["a"].dtype == jnp.float32


def test_taylor_error_checks_its_key():
    # An int key met JAX's 'invalid PRNG key data', a batch of keys 'split accepts a single key',
    # neither naming key; for a scalar x0 (no samples drawn) any key passed silently
    f = lambda p: jnp.sum(jnp.sin(p))  # noqa: E731
    for bad in (
        0,
        jnp.array([0.0, 1.0]),
        jnp.zeros(3, jnp.uint32),
        jax.random.split(jax.random.key(0)),
    ):
        for x0 in (jnp.ones(2), 1.0):
            with pytest.raises(TypeError, match="key must be one JAX PRNG key"):
                mml.taylor_error(f, x0, 1, 0.1, n_samples=5, key=bad)
    # raw and new-style keys of the same seed draw the same samples
    raw, new = (
        mml.taylor_error(f, jnp.ones(2), 1, 0.1, n_samples=5, key=k)
        for k in (jax.random.PRNGKey(1), jax.random.key(1))
    )
    np.testing.assert_array_equal(raw.max_error, new.max_error)


def test_taylor_error_refuses_a_complex_point():
    # a complex scalar x0 sampled the real segment alone and gave a complex lagrange_bound
    # (0.001+0j); a complex vector failed in jax.random.uniform ("must be a float dtype")
    with pytest.raises(TypeError, match="taylor_error takes a real x0"):
        mml.taylor_error(lambda z: z**3, 1.0 + 1.0j, 2, 0.1)
    with pytest.raises(TypeError, match="taylor_error takes a real x0"):
        mml.taylor_error(lambda z: jnp.sum(z**3), jnp.array([1.0 + 1.0j, 2.0]), 2, 0.1)


def test_flags_are_true_or_false():
    # taylor_error(lagrange="no") computed the bound ("no" is truthy); has_aux took any value
    with pytest.raises(TypeError, match="lagrange must be True or False"):
        mml.taylor_error(jnp.exp, 0.0, 1, 0.1, lagrange="no")
    with pytest.raises(TypeError, match="has_aux must be True or False"):
        mml.jacobian(jnp.sin, has_aux="yes")
    with pytest.raises(TypeError, match="has_aux must be True or False"):
        mml.hessian(jnp.sin, has_aux=None)
    e = mml.taylor_error(jnp.exp, 0.0, 1, 0.1, n_samples=5, lagrange=np.False_)
    assert np.isnan(e.lagrange_bound)


def test_a_batch_of_taylor_polynomials_is_evaluated_under_vmap():
    # called outside vmap, the batch axis (3 points) was read as the coefficients' axis: an array
    # of shape (3, 4) of wrong numbers came back where a Linearisation raises
    x0s = jnp.array([0.0, 1.0, 2.0])
    ps = jax.vmap(lambda x0: mml.taylor_polynomial(jnp.exp, x0, 3))(x0s)
    with pytest.raises(ValueError, match=r"batch of expansion points \(x0 of shape \(3,\)"):
        ps(0.5)
    expected = jnp.exp(x0s) * (1 + (0.5 - x0s) + (0.5 - x0s) ** 2 / 2 + (0.5 - x0s) ** 3 / 6)
    chex.assert_trees_all_close(jax.vmap(lambda p: p(0.5))(ps), expected, rtol=1e-12)


def test_a_batch_of_local_models_is_evaluated_under_vmap():
    # a QuadraticModel made under vmap for 2 points in R^2, called outside it at a (2, 2) batch
    # of points, passed the point check and contracted across the batch: [0.287, 2.038] where
    # the models give [0.0996, 1.931]
    f = lambda x: jnp.sum(jnp.sin(x)) * x[0]
    x0s = jnp.array([[0.0, 1.0], [1.0, 2.0]])
    qs = jax.vmap(lambda x0: mml.quadratic_model(f, x0))(x0s)
    with pytest.raises(ValueError, match="this QuadraticModel holds a batch of models"):
        qs(x0s + 0.1)
    expected = [mml.quadratic_model(f, x0)(x0 + 0.1) for x0 in x0s]
    chex.assert_trees_all_close(jax.vmap(lambda q, x: q(x))(qs, x0s + 0.1), jnp.stack(expected))
    g = lambda x: jnp.stack([jnp.sin(x[0]) * x[1], x[0]])
    ls = jax.vmap(lambda x0: mml.linearise(g, x0))(x0s)
    with pytest.raises(ValueError, match="this Linearisation holds a batch of models"):
        ls(x0s + 0.1)
