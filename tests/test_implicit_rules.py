"""Both carriers of the implicit rule (``_implicit.RULE``) give the same solutions and derivatives.

``lax.custom_root`` is used where it is an ordinary primitive (jax 0.10, this CI); the rule on
``jax.custom_jvp`` where ``lax.custom_root`` is "high" (jax 0.11), which would send every call
through JAX's Python dispatch. Each test here runs under both, whatever this JAX picks.
"""

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from jaxopt_mml import _implicit


@pytest.fixture(params=["custom_root", "custom_jvp"])
def rule(request):
    # Compiled programs hold the rule they were traced with: clear them on both sides.
    jax.clear_caches()
    _implicit.RULE = request.param
    yield request.param
    _implicit.RULE = None
    jax.clear_caches()


def test_the_automatic_choice_follows_the_primitive():
    assert _implicit.RULE is None
    expected = "custom_jvp" if _implicit.custom_root_is_high() else "custom_root"
    assert _implicit._rule() == expected


def test_root_derivatives_through_args_and_through_a_closure(rule):
    def by_args(c):
        return mml.newton_raphson(lambda x, c: x**3 - c, 1.0, args=(c,)).x

    def by_closure(c):
        return mml.newton_raphson(lambda x: x**3 - c, 1.0).x

    c = 8.0
    exact = 1.0 / (3.0 * c ** (2.0 / 3.0))
    for fn in (by_args, by_closure):
        np.testing.assert_allclose(jax.grad(fn)(c), exact, rtol=1e-12)
        np.testing.assert_allclose(jax.jacfwd(fn)(c), exact, rtol=1e-12)
        np.testing.assert_allclose(jax.jit(jax.grad(fn))(c), exact, rtol=1e-12)
    cs = jnp.array([1.0, 8.0, 27.0])
    np.testing.assert_allclose(jax.vmap(jax.grad(by_closure))(cs), 1 / (3 * cs ** (2 / 3)))


def test_elementwise_roots_and_their_jacobian(rule):
    def roots(c):
        return mml.newton_raphson(
            lambda x, c: x**3 - c, jnp.ones_like(c), args=(c,), elementwise=True
        ).x

    c = jnp.array([1.0, 8.0, 27.0])
    np.testing.assert_allclose(roots(c), [1.0, 2.0, 3.0], rtol=1e-12)
    np.testing.assert_allclose(jax.jacrev(roots)(c), np.diag(1 / (3 * c ** (2 / 3))), atol=1e-12)


def test_minimiser_derivative(rule):
    # argmin sum((x - theta)^2 w) + sum(x^2) = theta w / (w + 1)
    w = jnp.array([1.0, 3.0])

    def argmin(theta):
        f = lambda x, t: jnp.sum((x - t) ** 2 * w) + jnp.sum(x**2)  # noqa: E731
        return mml.bfgs(f, jnp.zeros(2), args=(theta,)).x

    theta = jnp.array([2.0, -1.0])
    np.testing.assert_allclose(argmin(theta), theta * w / (w + 1), rtol=1e-7)
    np.testing.assert_allclose(jax.jacrev(argmin)(theta), np.diag(w / (w + 1)), rtol=1e-7)


def test_an_unused_variable_has_a_zero_derivative_and_leaves_the_others_finite(rule):
    # A leaf that f does not read gives the Hessian a zero row and column: the dense solve made
    # every component's derivative NaN (d sum(x["u"]) / da is [1, 1]), on a SUCCESS run.
    def f(p, a):
        return jnp.sum((p["u"] - a) ** 2)

    x0 = {"u": jnp.zeros(2), "unused": jnp.zeros(1)}
    a = jnp.array([1.0, 2.0])
    jac = jax.jacrev(lambda a: mml.bfgs(f, x0, args=(a,)).x)(a)
    np.testing.assert_allclose(jac["u"], np.eye(2), atol=1e-9)
    np.testing.assert_array_equal(jac["unused"], np.zeros((1, 2)))

    # the same for a fit whose model ignores a parameter (p[2]): the others' derivatives are
    # those of the fit without it
    x = jnp.linspace(0.0, 1.0, 6)
    y = 2.0 * x + 1.0 + 0.1 * jnp.sin(7 * x)
    jac = jax.jacrev(
        lambda y: mml.curve_fit(lambda x, p: p[0] * x + p[1], x, y, jnp.ones(3)).params
    )(y)
    design = np.stack([np.asarray(x), np.ones(6)], axis=1)
    np.testing.assert_allclose(jac[:2], np.linalg.pinv(design), atol=1e-9)
    np.testing.assert_array_equal(jac[2], np.zeros(6))


def test_fit_derivative_is_the_pseudo_inverse(rule):
    x = jnp.linspace(0.0, 1.0, 6)
    y = 2.0 * x + 1.0 + 0.1 * jnp.sin(7 * x)

    def params(y):
        return mml.curve_fit(lambda x, p: p[0] * x + p[1], x, y, jnp.ones(2)).params

    design = np.stack([np.asarray(x), np.ones(6)], axis=1)
    np.testing.assert_allclose(jax.jacrev(params)(y), np.linalg.pinv(design), atol=1e-9)


def test_constrained_derivative(rule):
    # min |x|^2 subject to sum(x) = t: x = t / 3 in every component, dx/dt = 1/3
    def solution(t):
        return mml.minimise_constrained(
            lambda x, t: jnp.sum(x**2), jnp.ones(3), eq=lambda x, t: jnp.sum(x)[None] - t, args=(t,)
        ).x

    np.testing.assert_allclose(solution(2.0), np.full(3, 2.0 / 3.0), rtol=1e-10)
    np.testing.assert_allclose(jax.jacfwd(solution)(2.0), np.full(3, 1.0 / 3.0), rtol=1e-8)


def test_no_traced_program_stays_alive(rule):
    """An implicit rule on jax.closure_convert (session 12) kept every traced program alive
    through that function's cache, about 2 MB a fit's trace."""

    def live_tracers():
        gc.collect()
        return sum(isinstance(o, jax.core.Tracer) for o in gc.get_objects())

    def model(x, p):
        return p[0] * x + p[1]

    mml.curve_fit(model, jnp.arange(5.0), jnp.arange(5.0), jnp.ones(2))
    before = live_tracers()
    for n in range(6, 8):  # (two new traces each: a leak shows; a third cost CI 5 s a rule)
        mml.curve_fit(model, jnp.arange(float(n)), jnp.arange(float(n)), jnp.ones(2))
        mml.newton_raphson(lambda x, c: x**3 - c, jnp.ones(n), args=(jnp.arange(float(n)),))
        mml.bfgs(lambda z: jnp.sum((z - 1.0) ** 2), jnp.zeros(n))
    assert live_tracers() <= before
