"""Derivatives: jacobian (mode choice), hessian, hvp, directional and total derivatives, check_grad."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from tests.zoo.calculus import rosenbrock, rosenbrock_gradient, rosenbrock_hessian


def tall(x):  # R^2 -> R^3
    return jnp.stack([x[0] * x[1], jnp.sin(x[0]), x[1] ** 2])


def tall_jacobian(x):
    return jnp.array([[x[1], x[0]], [jnp.cos(x[0]), 0.0], [0.0, 2 * x[1]]])


def wide(x):  # R^3 -> R^2
    return jnp.stack([x[0] * x[1] * x[2], jnp.exp(x[0]) + x[2]])


def wide_jacobian(x):
    return jnp.array([[x[1] * x[2], x[0] * x[2], x[0] * x[1]], [jnp.exp(x[0]), 0.0, 1.0]])


# ---------------------------------------------------------------------------------------------
# jacobian


@pytest.mark.parametrize("mode", ["auto", "fwd", "rev"])
def test_jacobian_matches_closed_form_in_every_mode(mode):
    x2, x3 = jnp.array([0.3, -1.2]), jnp.array([0.5, 2.0, -0.7])
    j_tall, j_wide = jax.jit(
        lambda a, b: (mml.jacobian(tall, mode=mode)(a), mml.jacobian(wide, mode=mode)(b))
    )(x2, x3)
    chex.assert_trees_all_close(j_tall, tall_jacobian(x2), rtol=1e-14)
    chex.assert_trees_all_close(j_wide, wide_jacobian(x3), rtol=1e-14)


def _counting_identity():
    """``x -> x`` with a custom VJP: forward mode is impossible, reverse mode counts its calls."""
    calls = []

    @jax.custom_vjp
    def ident(x):
        return x

    def fwd(x):
        return x, None

    def bwd(_, g):
        calls.append(1)
        return (g,)

    ident.defvjp(fwd, bwd)
    return ident, calls


def test_jacobian_auto_picks_forward_for_tall_and_reverse_for_wide():
    ident, calls = _counting_identity()
    tall_ct = lambda x: jnp.concatenate([ident(x), ident(x) ** 2])  # R^2 -> R^4
    wide_ct = lambda x: jnp.sum(ident(x) ** 2, keepdims=True)  # R^3 -> R^1
    square_ct = lambda x: ident(x) ** 2  # R^2 -> R^2: inputs no larger than outputs -> fwd
    x2, x3 = jnp.array([1.0, 2.0]), jnp.array([1.0, 2.0, 3.0])

    # A custom_vjp function cannot be differentiated in forward mode: the error proves "fwd".
    for f, x in [(tall_ct, x2), (square_ct, x2)]:
        with pytest.raises(TypeError, match="forward-mode"):
            mml.jacobian(f)(x)
        with pytest.raises(TypeError, match="forward-mode"):
            mml.jacobian(f, mode="fwd")(x)
    # ... while reverse mode runs the custom backward pass.
    assert not calls
    chex.assert_trees_all_close(jax.jit(mml.jacobian(wide_ct))(x3), 2 * x3[None, :])
    assert calls, "auto should have used reverse mode for a wide Jacobian"
    calls.clear()
    chex.assert_trees_all_close(
        jax.jit(mml.jacobian(tall_ct, mode="rev"))(x2),
        jnp.concatenate([jnp.eye(2), jnp.diag(2 * x2)]),
    )
    assert calls
    assert mml.jacobian(tall).mode == "auto" and mml.jacobian(tall, mode="rev").mode == "rev"


def test_jacobian_unknown_mode_raises_naming_mode():
    with pytest.raises(ValueError, match="mode"):
        mml.jacobian(tall, mode="forward")


def test_jacobian_auto_of_a_wide_complex_valued_function_is_forward_mode():
    # R^3 -> C^1 is wide: "auto" chose reverse mode, which refuses complex outputs ("jacrev
    # requires real-valued outputs"), while forward mode has the Jacobian
    x = jnp.array([0.5, -1.0, 2.0])
    f = lambda x: jnp.exp(1j * x[:1] * x[1:2]) + x[2]
    j = jax.jit(mml.jacobian(f))(x)
    expected = jnp.array([[x[1], x[0], 0.0]]) * 1j * jnp.exp(1j * x[0] * x[1]) + jnp.array(
        [[0.0, 0.0, 1.0]]
    )
    chex.assert_trees_all_close(j, expected, rtol=1e-14)
    chex.assert_trees_all_close(mml.jacobian(f, mode="fwd")(x), expected, rtol=1e-14)


def test_jacobian_and_hessian_of_holomorphic_functions():
    # a complex input met JAX's "For holomorphic differentiation, pass holomorphic=True", an
    # option jacobian and hessian did not have (TypeError: unexpected keyword argument)
    z = jnp.array([1.0 + 1.0j, 2.0 - 0.5j])
    for mode in ("auto", "fwd", "rev"):
        j = mml.jacobian(lambda z: jnp.sum(z**3, keepdims=True), mode=mode, holomorphic=True)(z)
        chex.assert_trees_all_close(j, 3 * z[None, :] ** 2, rtol=1e-14)
    h = jax.jit(mml.hessian(lambda z: jnp.sum(z**3), holomorphic=True))(z)
    chex.assert_trees_all_close(h, jnp.diag(6 * z), rtol=1e-14)
    with pytest.raises(TypeError, match="holomorphic"):
        mml.jacobian(jnp.sin, holomorphic="yes")


def test_jacobian_auto_takes_numpy_integer_argnums_as_jax_does():
    # mode="auto" counted the selected inputs with isinstance(argnums, int), and iterated over
    # np.int64(1): "'numpy.int64' object is not iterable" (mode="fwd" / "rev" took it)
    f = lambda x, y: x * y
    x, y = jnp.array([1.0, 2.0]), jnp.array([3.0, 4.0, 5.0])
    j = mml.jacobian(lambda a, b: jnp.outer(a, b).ravel(), argnums=np.int64(1))(x, y)
    chex.assert_trees_all_close(j, jax.jacfwd(lambda b: jnp.outer(x, b).ravel())(y))
    both = mml.jacobian(f, argnums=(np.int64(0), 1))(x[:1], 3.0)
    chex.assert_trees_all_close(both, (jnp.array([[3.0]]), jnp.array([1.0])))
    with pytest.raises(TypeError, match="argnums"):
        mml.jacobian(f, argnums="0")(x, 3.0)


def test_numpy_integer_argnums_gives_the_same_layout_in_every_mode():
    # jax.jacrev reads an argnums that is no Python int as a sequence and wraps its result in a
    # tuple: np.int64(0) gave an array in forward mode, a 1-tuple in reverse mode (mode="auto"
    # for a scalar f) and from hessian; argnums of other types met Python's messages
    f = lambda x: x @ x
    x = np.array([0.5, 1.0])
    for mode in ("auto", "rev"):
        np.testing.assert_allclose(mml.jacobian(f, argnums=np.int64(0), mode=mode)(x), 2 * x)
    np.testing.assert_allclose(mml.hessian(f, argnums=np.int64(0))(x), 2 * np.eye(2))
    for bad in ("0", None, 2.5):
        with pytest.raises(TypeError, match="argnums"):
            mml.jacobian(f, argnums=bad, mode="rev")
        with pytest.raises(TypeError, match="argnums"):
            mml.hessian(f, argnums=bad)


def test_jacobian_pytrees_in_and_out_with_aux_and_argnums():
    def f(p, scale):
        out = {"u": scale * p["a"] * p["b"][0], "v": jnp.stack([p["a"], p["b"][1] ** 2, 1.0])}
        return out, jnp.sum(p["b"])

    p = {"a": jnp.asarray(2.0), "b": jnp.array([3.0, -1.0])}
    ref, _ = jax.jit(jax.jacobian(f, has_aux=True))(p, 0.5)
    for mode in ("auto", "fwd", "rev"):
        jac, aux = jax.jit(mml.jacobian(f, mode=mode, has_aux=True))(p, 0.5)
        chex.assert_trees_all_close(jac, ref)
        chex.assert_trees_all_close(aux, 2.0)
        chex.assert_shape(jac["v"]["b"], (3, 2))
    both = jax.jit(mml.jacobian(lambda x, y: x * y, argnums=(0, 1)))(jnp.array([1.0, 2.0]), 3.0)
    chex.assert_trees_all_close(both, (3.0 * jnp.eye(2), jnp.array([1.0, 2.0])))
    # An aux that is no JAX type, as jax.jacobian (reverse mode) takes it: "auto" chose reverse
    # mode here but failed in the shape evaluation that chooses
    wide = lambda x: (jnp.sum(x**2), "label")
    jac, aux = mml.jacobian(wide, has_aux=True)(jnp.array([1.0, 2.0]))
    chex.assert_trees_all_close(jac, jnp.array([2.0, 4.0]))
    assert aux == "label"


def test_jacobian_jit_vmap_float32_and_no_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(xs):
        return jax.vmap(mml.jacobian(tall))(xs)

    xs = jnp.arange(8.0, dtype=jnp.float32).reshape(4, 2) / 4
    out = batched(xs)
    batched(xs + 1)  # same shapes: no retrace
    assert out.dtype == jnp.float32
    chex.assert_trees_all_close(out, jax.vmap(tall_jacobian)(xs), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# hessian, hvp, directional_derivative


def test_hessian_matches_closed_form_and_rejects_vector_f():
    x = jnp.array([-1.2, 1.0])
    h, aux = jax.jit(mml.hessian(lambda x: (rosenbrock(x), x[0]), has_aux=True))(x)
    chex.assert_trees_all_close(h, rosenbrock_hessian(x), rtol=1e-14)
    chex.assert_trees_all_close(aux, x[0])
    with pytest.raises(ValueError, match="f must return a scalar"):
        mml.hessian(tall)(x)


def test_has_aux_without_an_aux_is_named():
    # hessian indexed the output's shape struct: "'ShapeDtypeStruct' object is not subscriptable"
    x = jnp.array([-1.2, 1.0])
    with pytest.raises(TypeError, match=r"has_aux=True: f must return a pair .* shape \(\)"):
        mml.hessian(rosenbrock, has_aux=True)(x)
    with pytest.raises(TypeError, match=r"has_aux=True: f must return a pair .* shape \(3,\)"):
        mml.jacobian(tall, has_aux=True)(x)


def test_has_aux_list_pair_and_forced_modes():
    # jax.jacobian and jax.hessian take a list [output, aux] as the pair; mml's "auto" mode and
    # hessian refused it ("got list"). A forced mode skipped the check: mode="fwd" with an f that
    # returns no pair leaked a tracer (UnexpectedTracerError) where "auto" named has_aux.
    x = jnp.array([-1.2, 1.0])
    pair = lambda x: [rosenbrock(x), x[0]]
    for mode in ("auto", "fwd", "rev"):
        jac, aux = mml.jacobian(pair, mode=mode, has_aux=True)(x)
        chex.assert_trees_all_close(jac, jax.grad(rosenbrock)(x))
        chex.assert_trees_all_close(aux, x[0])
        with pytest.raises(TypeError, match=r"has_aux=True: f must return a pair .* shape \(3,\)"):
            mml.jacobian(tall, mode=mode, has_aux=True)(x)
    h, aux = mml.hessian(pair, has_aux=True)(x)
    chex.assert_trees_all_close(h, rosenbrock_hessian(x), rtol=1e-14)
    chex.assert_trees_all_close(aux, x[0])


def test_hessian_pytree_jit_vmap_no_retrace():
    f = lambda p: p["a"] ** 2 * jnp.sum(p["b"] ** 3)
    p = {"a": jnp.asarray(2.0), "b": jnp.array([1.0, -1.0])}
    chex.assert_trees_all_close(jax.jit(mml.hessian(f))(p), jax.jit(jax.hessian(f))(p))

    @jax.jit
    @chex.assert_max_traces(n=1)
    def batched(xs):
        return jax.vmap(mml.hessian(rosenbrock))(xs)

    xs = jnp.array([[0.0, 1.0], [1.0, 1.0], [-1.2, 1.0]])
    chex.assert_trees_all_close(batched(xs), jax.vmap(rosenbrock_hessian)(xs), rtol=1e-14)
    batched(xs * 2)


def test_hvp_equals_hessian_times_v_with_args():
    x, v = jnp.array([-1.2, 1.0]), jnp.array([0.3, -2.0])
    chex.assert_trees_all_close(
        jax.jit(lambda x, v, a, b: mml.hvp(rosenbrock, x, v, args=(a, b)))(x, v, 1.0, 50.0),
        rosenbrock_hessian(x, 1.0, 50.0) @ v,
        rtol=1e-14,
    )
    f = lambda p, c: c * jnp.sum(p["w"] ** 2) * p["s"]
    p = {"w": jnp.array([1.0, 2.0]), "s": jnp.asarray(3.0)}
    t = {"w": jnp.array([1.0, 0.0]), "s": jnp.asarray(1.0)}
    # H = c [[2s I, 2w], [2w^T, 0]] -> H t = c (2 s t_w + 2 w t_s, 2 w.t_w)
    chex.assert_trees_all_close(
        jax.jit(lambda p, t, c: mml.hvp(f, p, t, args=(c,)))(p, t, 2.0),
        {"w": 2.0 * jnp.array([8.0, 4.0]), "s": jnp.asarray(4.0)},
    )


def test_hvp_and_directional_bad_input():
    x = jnp.array([1.0, 2.0])
    with pytest.raises(ValueError, match="f must return a scalar"):
        mml.hvp(tall, x, x)
    with pytest.raises(ValueError, match="v must have the shape"):
        mml.hvp(rosenbrock, x, jnp.ones(3))
    with pytest.raises(ValueError, match="v must have the same pytree structure"):
        mml.directional_derivative(rosenbrock, x, (x,))


def test_hvp_and_directional_jit_vmap_float32_no_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def both(xs, vs):
        h = jax.vmap(lambda x, v: mml.hvp(rosenbrock, x, v, args=(1.0, 100.0)))(xs, vs)
        d = jax.vmap(lambda x, v: mml.directional_derivative(tall, x, v))(xs, vs)
        return h, d

    xs = jnp.array([[0.0, 1.0], [1.0, 1.0], [-1.2, 1.0]], jnp.float32)
    vs = jnp.array([[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]], jnp.float32)
    h, d = both(xs, vs)
    both(xs + 1, vs)
    assert h.dtype == jnp.float32 and d.dtype == jnp.float32
    chex.assert_trees_all_close(
        h, jnp.einsum("nij,nj->ni", jax.vmap(rosenbrock_hessian)(xs), vs), rtol=1e-5
    )
    chex.assert_trees_all_close(
        d, jnp.einsum("nij,nj->ni", jax.vmap(tall_jacobian)(xs), vs), rtol=1e-5
    )


def test_directional_derivative_scalar_is_gradient_dot_v():
    x, v = jnp.array([-1.2, 1.0]), jnp.array([0.6, 0.8])
    dd = jax.jit(mml.directional_derivative, static_argnums=0)
    np.testing.assert_allclose(dd(rosenbrock, x, v), rosenbrock_gradient(x) @ v, rtol=1e-14)
    np.testing.assert_allclose(
        dd(rosenbrock, x, v, args=(2.0, 10.0)), rosenbrock_gradient(x, 2.0, 10.0) @ v, rtol=1e-14
    )


# ---------------------------------------------------------------------------------------------
# total_derivative


def _field(x, c):  # f(x, y, z) = c x^2 y + sin(z) y
    return c * x[0] ** 2 * x[1] + jnp.sin(x[2]) * x[1]


def _helix(t):
    return jnp.stack([jnp.cos(t), jnp.sin(t), t**2])


def test_total_derivative_equals_sum_of_partials():
    c = 1.7
    d = jax.jit(mml.total_derivative(_field, _helix))
    for t in (0.0, 0.4, 2.5):
        x, y, z = np.cos(t), np.sin(t), t**2
        partials = np.array([2 * c * x * y, c * x**2 + np.sin(z), np.cos(z) * y])
        velocity = np.array([-np.sin(t), np.cos(t), 2 * t])
        np.testing.assert_allclose(d(t, c), np.sum(partials * velocity), rtol=1e-13, atol=1e-15)


def test_total_derivative_pytree_path_jit_vmap_no_retrace():
    f = lambda p: p["r"] * jnp.sum(p["q"] ** 2)
    path = lambda t: {"r": jnp.exp(t), "q": jnp.stack([t, 2 * t])}  # f = 5 t^2 e^t

    @jax.jit
    @chex.assert_max_traces(n=1)
    def d(ts):
        return jax.vmap(mml.total_derivative(f, path))(ts)

    ts = jnp.linspace(-1.0, 1.0, 5)
    chex.assert_trees_all_close(d(ts), 5 * (2 * ts + ts**2) * jnp.exp(ts), rtol=1e-13)
    d(ts + 1)
    with pytest.raises(ValueError, match="t must be a scalar"):
        mml.total_derivative(f, path)(ts)


# ---------------------------------------------------------------------------------------------
# check_grad


def test_check_grad_accepts_ad_and_closed_form_rejects_wrong():
    x = jnp.array([-1.2, 1.0])
    assert float(mml.check_grad(rosenbrock, x)) < 1e-8
    assert mml.check_grad(rosenbrock, x, rosenbrock_gradient).max_rel_error < 1e-8
    out = mml.check_grad(
        rosenbrock, x, rosenbrock_gradient, args=(2.0, 10.0)
    )  # args reach f and grad
    assert out.max_rel_error < 1e-8
    chex.assert_shape(out.errors, (2,))
    wrong = lambda x: rosenbrock_gradient(x) * jnp.array([1.0, 1.01])  # 1 % off in one component
    out = mml.check_grad(rosenbrock, x, wrong)
    np.testing.assert_allclose(out.max_rel_error, 0.01 / 1.01, rtol=1e-5)
    assert np.argmax(out.errors) == 1
    # A gradient given as a value, and a pytree point.
    assert mml.check_grad(rosenbrock, x, rosenbrock_gradient(x) + 1.0).max_rel_error > 0.01
    f = lambda p: jnp.sum(p["a"] * jnp.exp(p["b"]))
    p = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([0.1, -0.3])}
    assert mml.check_grad(f, p).max_rel_error < 1e-8


def test_check_grad_in_padded_batches(monkeypatch):
    monkeypatch.setattr("jaxopt_mml._derivatives._CHECK_GRAD_CHUNK", 3)  # 7 = 3 + 3 + 1 (padded)
    weights = jnp.arange(1.0, 8.0)
    f = lambda x: jnp.sum(jnp.sin(x) * weights)
    x = jnp.linspace(0.0, 1.0, 7)
    out = mml.check_grad(f, x)
    np.testing.assert_allclose(out.fd_grad, np.cos(x) * weights, rtol=1e-9)
    assert out.max_rel_error < 1e-8


def test_check_grad_finite_differences_agree_with_scipy():
    from scipy.optimize import approx_fprime

    x = np.array([-1.2, 1.0, 0.4])
    f = lambda x: jnp.sum(jnp.exp(0.3 * x) * x**2) + x[0] * x[2]
    ours = mml.check_grad(f, jnp.asarray(x)).fd_grad
    theirs = approx_fprime(x, lambda y: float(f(jnp.asarray(y))), 1e-8)  # forward differences
    np.testing.assert_allclose(ours, theirs, rtol=1e-6)


def test_check_grad_float32_and_bad_input():
    x = jnp.array([-1.2, 1.0], jnp.float32)
    out = mml.check_grad(rosenbrock, x)
    assert out.max_rel_error < 1e-3
    assert out.fd_grad.dtype == np.float64
    with pytest.raises(ValueError, match="f must return a scalar"):
        mml.check_grad(tall, x)
    with pytest.raises(ValueError, match="grad must have"):
        mml.check_grad(rosenbrock, x, (x, x))
    with pytest.raises(ValueError, match="eps"):
        mml.check_grad(rosenbrock, x, eps=0.0)
    # inf gave NaN errors, True a unit step, a string or a vector NumPy's errors
    for eps in (np.inf, True, "1e-3", np.array([1e-3, 1e-3])):
        with pytest.raises(ValueError, match="eps must be a finite number > 0"):
            mml.check_grad(rosenbrock, x, eps=eps)
    with pytest.raises(TypeError, match="host-side"):
        jax.jit(lambda y: mml.check_grad(rosenbrock, y).max_rel_error)(x)


def test_check_grad_pytree_mixing_float32_and_float64_leaves():
    # Each leaf is perturbed by its own dtype's step: float64's (6e-6) on a float32 leaf was
    # rounded away there, and a correct gradient reported 1.4e-2 at a = 0.5.
    f = lambda p: jnp.sum(jnp.sin(p["a"]) * p["a"] ** 2) * p["b"]
    p = {"a": jnp.array([1.0, 2.0, 0.5], jnp.float32), "b": jnp.float64(2.0)}
    out = mml.check_grad(f, p)
    assert out.max_rel_error < 1e-3  # as for an all-float32 p (1.1e-4)
    assert out.errors[3] < 1e-8  # the float64 leaf keeps float64's accuracy
    wrong = lambda p: {"a": jax.grad(f)(p)["a"], "b": 1.01 * jax.grad(f)(p)["b"]}
    assert mml.check_grad(f, p, wrong).max_rel_error > 5e-3


def test_check_grad_correct_gradient_at_a_stationary_point_is_no_error():
    # The exact gradient is 0 there and the central difference is truncation error (h^2 f'''/6):
    # relative to max(|g|, |d|) alone that read as a 100 % error.
    rosen3 = lambda x: jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)
    for x in (jnp.ones(3), jnp.array([1.0 + 1e-7, 1.0, 1.0]), jnp.array([1.0 + 1e-5, 1.0, 1.0])):
        assert mml.check_grad(rosen3, x).max_rel_error < 2e-5
    assert mml.check_grad(rosenbrock, jnp.ones(2), rosenbrock_gradient).max_rel_error < 2e-5
    assert mml.check_grad(lambda x: jnp.sum(x**2 + x**3), jnp.zeros(2)).max_rel_error < 2e-5
    assert mml.check_grad(lambda x: jnp.sum(x**3), jnp.zeros(2)).max_rel_error < 2e-5  # f'' = 0 too
    assert mml.check_grad(lambda x: 1e6 + jnp.sum(x**2), jnp.zeros(2)).max_rel_error < 2e-5
    assert mml.check_grad(rosen3, jnp.ones(3, jnp.float32)).max_rel_error < 1e-2  # eps32^(1/3)
    # A wrong gradient is still caught there, and the floor is no absolute scale that would hide
    # a wrong gradient of a function with tiny values.
    # (1e-4 is far beyond the difference's error, 1.5e-8 in x_2: about 1, where against that
    # error over eps^(1/3) it read 4e-2).
    wrong = lambda x: jax.grad(rosen3)(x) + jnp.array([0.0, 1e-4, 0.0])
    out = mml.check_grad(rosen3, jnp.ones(3), wrong)
    assert out.max_rel_error > 1e-2 and np.argmax(out.errors) == 1
    wrong = lambda x: jax.grad(rosen3)(x) + jnp.array([0.0, 0.0, 1e-6])  # x_3 enters quadratically
    assert mml.check_grad(rosen3, jnp.ones(3), wrong).max_rel_error > 0.5
    tiny = lambda x: 1e-20 * jnp.sum(x**2)
    assert mml.check_grad(tiny, jnp.ones(2)).max_rel_error < 1e-8
    out = mml.check_grad(tiny, jnp.ones(2), lambda x: 4e-20 * x)  # twice the true gradient
    np.testing.assert_allclose(out.max_rel_error, 0.5, rtol=1e-6)


@pytest.mark.parametrize("noisy", ["inner_tolerance", "float32_inside"])
def test_check_grad_catches_a_wrong_gradient_of_a_noisy_function(noisy):
    # The difference's error (6e-4 here) over eps^(1/3) was a floor of ~100, above the gradient
    # itself: a gradient off by 100 % reported 1.4e-2 (inner tolerance) or 1.6e-3 (float32).
    if noisy == "inner_tolerance":  # f known to 1e-8, as from an inner iterative solve
        f = lambda x: jnp.sum(jnp.sin(x) + jax.lax.stop_gradient(1e-8 * jnp.sin(1e8 * x)))
    else:
        f = lambda x: jnp.sum(jnp.sin(x.astype(jnp.float32)))
    x = jnp.array([0.5, 1.0, 2.0])
    assert mml.check_grad(f, x, jnp.cos).max_rel_error < 1e-3
    assert mml.check_grad(f, x, lambda x: 2.0 * jnp.cos(x)).max_rel_error > 0.4
    assert mml.check_grad(f, x, lambda x: 1.1 * jnp.cos(x)).max_rel_error > 0.05


def test_check_grad_of_a_float32_function_at_float64_points_is_right_everywhere():
    # f computes in float32 at a float64 x: with float64's step (6e-6) its difference was noisy
    # to ~1e-2, and the Richardson estimate of that noise came out small at half of these points
    # (a correct gradient reported up to 0.3); the step and the rounding are now float32's.
    f = lambda x: jnp.sum(jnp.sin(x.astype(jnp.float32)))
    points = np.random.default_rng(0).uniform(-3.0, 3.0, (12, 3))
    for x in points:
        assert mml.check_grad(f, jnp.asarray(x), jnp.cos).max_rel_error < 1e-3, x
        assert mml.check_grad(f, jnp.asarray(x), lambda x: 1.1 * jnp.cos(x)).max_rel_error > 0.05


def test_check_grad_compiles_once_per_function_and_shape():
    # the perturbed evaluations were a jax.jit of a lambda made in each call: the same f at a
    # point of the same shape compiled again (traced under vmap once more) at every call
    class Traces:  # a class attribute: f reads no mutable object (which compiles every call)
        batched = 0

    def f(x, a):
        Traces.batched += type(x["u"]).__name__ == "BatchTracer"
        return a * sum(jnp.sum(jnp.sin(t) * t) for t in jax.tree.leaves(x))

    p = {"u": jnp.array([0.5, 1.0]), "v": jnp.asarray(2.0)}
    g = lambda p, a: jax.tree.map(lambda t: a * (jnp.cos(t) * t + jnp.sin(t)), p)
    for shift in (0.0, 0.25):
        point = jax.tree.map(lambda t, s=shift: t + s, p)
        assert mml.check_grad(f, point, g, args=(3.0,)).max_rel_error < 1e-8
    assert mml.check_grad(f, point, args=(3.0,)).max_rel_error < 1e-8
    assert Traces.batched == 1
    # ... but an f reading an array written into between calls sees the new values
    data = np.zeros(2)
    h = lambda x: jnp.sum((x - data) ** 2)
    for value in (0.0, 1.0):
        data[:] = value
        assert mml.check_grad(h, jnp.array([1.0, 3.0])).max_rel_error < 1e-8


def test_check_grad_empty_x_and_grad_shapes_leaf_by_leaf():
    out = mml.check_grad(lambda x: jnp.sum(x), jnp.zeros((0,)))
    assert out.max_rel_error == 0.0 and float(out) == 0.0
    chex.assert_shape((out.errors, out.grad, out.fd_grad), ((0,), (0,), (0,)))
    with pytest.raises(ValueError, match="grad must have"):
        mml.check_grad(lambda x: jnp.sum(x), jnp.zeros((0,)), jnp.zeros((1,)))
    # The same number of components in the wrong shape is no gradient of x.
    with pytest.raises(ValueError, match=r"grad must have the shapes of x.*\(4,\).*\(2, 2\)"):
        mml.check_grad(lambda x: jnp.sum(x), jnp.zeros((2, 2)), jnp.ones(4))
    p = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    f = lambda p: jnp.sum(p["a"]) + jnp.sum(p["b"])
    with pytest.raises(ValueError, match="grad must have the shapes of x"):
        mml.check_grad(f, p, {"a": jnp.ones(3), "b": jnp.ones(2)})
    assert mml.check_grad(f, p, {"a": jnp.ones(2), "b": jnp.ones(3)}).max_rel_error < 1e-8


def test_misuse_is_named():
    # Each raised something internal (or dropped an imaginary part silently) before.
    with pytest.raises(ValueError, match="argnums 2"):
        mml.jacobian(lambda a, b: a * b, argnums=2)(1.0, 2.0)
    # (a forced mode, and hessian, met JAX's message about `static_argnums`)
    for mode in ("fwd", "rev"):
        with pytest.raises(ValueError, match=r"argnums \(0, 2\) selects argument 2"):
            mml.jacobian(lambda a, b: a * b, argnums=(0, 2), mode=mode)(1.0, 2.0)
    with pytest.raises(ValueError, match="argnums 2 selects argument 2"):
        mml.hessian(lambda a, b: a**2 * b, argnums=2)(1.0, 2.0)
    # An argument twice, or none: JAX's "unsupported operand type(s) for ** or pow():
    # 'NoneType' and 'int'" (from inside f) and "Too few leaves for PyTreeDef" named no option.
    for mode in ("auto", "fwd", "rev"):
        for twice in ((0, 0), (1, -1)):
            with pytest.raises(ValueError, match="selects an argument twice"):
                mml.jacobian(lambda a, b: a**2 * b, argnums=twice, mode=mode)(1.0, 2.0)
        with pytest.raises(ValueError, match="argnums selects no argument"):
            mml.jacobian(lambda a, b: a**2 * b, argnums=(), mode=mode)
    with pytest.raises(ValueError, match="selects an argument twice"):
        mml.hessian(lambda a, b: a**2 * b, argnums=[0, 0])(1.0, 2.0)
    with pytest.raises(ValueError, match="argnums selects no argument"):
        mml.hessian(lambda a, b: a**2 * b, argnums=[])
    with pytest.raises(TypeError, match="complex where x is real"):
        mml.hvp(lambda x: jnp.sum(x**3), jnp.ones(2), jnp.ones(2) + 1j)
    with pytest.raises(TypeError, match="real x"):
        mml.check_grad(lambda z: jnp.sum(jnp.abs(z) ** 2), jnp.array([1 + 1j, 2.0]))
    with pytest.raises(ValueError, match="x0 must be a scalar, got dict"):
        mml.taylor_coefficients(jnp.sin, {"a": 1.0}, 2)
    with pytest.raises(ValueError, match="radius must be a scalar"):
        mml.taylor_error(jnp.exp, 0.0, 1, jnp.array([0.1, 0.2]))


def test_complex_points_are_refused_where_no_holomorphic_option_exists():
    # hvp of a real f at a complex x gave JAX's conjugated gradient's derivative, 2 conj(v) for
    # sum |z|^2 (whose Hessian as a function of (Re z, Im z) is 2 I); a holomorphic f, and
    # linearise / quadratic_model, met JAX's advice to pass a holomorphic=True they do not take
    z = jnp.array([1.0 + 1.0j, 2.0 - 0.5j])
    with pytest.raises(TypeError, match="hvp takes a real x"):
        mml.hvp(lambda z: jnp.sum(jnp.abs(z) ** 2), z, z)
    with pytest.raises(TypeError, match="linearise takes a real x0"):
        mml.linearise(lambda z: z**3, z)
    with pytest.raises(TypeError, match="quadratic_model takes a real x0"):
        mml.quadratic_model(lambda z: jnp.sum(jnp.abs(z) ** 2), z)


def test_check_grad_refuses_complex_values_it_would_compare_by_their_real_parts():
    # NumPy dropped the imaginary parts (a ComplexWarning): a wrong gradient 2x + 5j, or an f
    # with a complex value, passed on its real parts alone
    x = jnp.array([1.0, 2.0])
    with pytest.raises(TypeError, match="grad must be real"):
        mml.check_grad(lambda x: jnp.sum(x**2), x, 2 * x + 5j)
    with pytest.raises(TypeError, match="check_grad's f must return real floating"):
        mml.check_grad(lambda x: jnp.sum(x**2) * (1 + 1j), x, 2 * x)


def test_check_grad_eps_below_the_dtypes_resolution_is_named():
    # x +- h rounded back to x: 0 / 0 gave max_rel_error nan with NumPy's divide warnings
    f = lambda x: jnp.sum(jnp.sin(x) * x)
    with pytest.raises(ValueError, match=r"eps=1e-09 is too small.*component\(s\) \[0, 1\]"):
        mml.check_grad(f, jnp.array([1.0, 2.0], jnp.float32), eps=1e-9)
    with pytest.raises(ValueError, match=r"eps=1e-20 is too small.*component\(s\) \[1\]"):
        mml.check_grad(f, jnp.array([0.0, 2.0]), eps=1e-20)


def test_args_that_are_no_tuple_are_a_type_error_naming_the_function():
    # One rule for every f(x, *args) of the library (_tree.check_args): the calculus helpers met
    # Python's "argument after * must be an iterable, not float", naming neither args nor them.
    f = lambda x, c: jnp.sum(c * x**2)  # noqa: E731
    x = jnp.array([1.0, 2.0])
    calls = {
        "hvp": lambda a: mml.hvp(f, x, x, args=a),
        "directional_derivative": lambda a: mml.directional_derivative(f, x, x, args=a),
        "check_grad": lambda a: mml.check_grad(f, x, args=a),
        "taylor_coefficients": lambda a: mml.taylor_coefficients(f, x, 2, args=a),
        "taylor_polynomial": lambda a: mml.taylor_polynomial(f, x, 2, args=a),
        "linearise": lambda a: mml.linearise(f, x, args=a),
        "quadratic_model": lambda a: mml.quadratic_model(f, x, args=a),
        "taylor_error": lambda a: mml.taylor_error(f, x, 2, x, args=a),
        "bfgs": lambda a: mml.bfgs(f, x, args=a),
        "newton_raphson": lambda a: mml.newton_raphson(lambda x, c: c * x - 1.0, 1.0, args=a),
        "minimise_constrained": lambda a: mml.minimise_constrained(f, x, args=a),
        "lagrange_stationary_points": lambda a: mml.lagrange_stationary_points(
            f, lambda x, c: jnp.array([x @ x - 1.0]), jnp.ones((2, 2)), args=a
        ),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=rf"^{name}: args must be a tuple .* got float"):
            call(2.0)
    np.testing.assert_allclose(mml.hvp(f, x, x, args=[2.0]), 4.0 * x)  # a list is taken


def test_check_grad_step_that_leaves_the_domain_shrinks():
    """log x at x = 1e-10: x - h < 0 gave f = NaN, so a NaN error for the right gradient and a
    wrong one alike (scipy's check_grad too). The step of such a component now shrinks to the
    relative eps |x_i| (then by halves) until f is finite on the stencil; the others keep theirs."""
    f = lambda x: jnp.sum(jnp.log(x))  # noqa: E731
    x = jnp.array([1e-10, 2.0])
    out = mml.check_grad(f, x)
    assert out.max_rel_error < 1e-8
    np.testing.assert_allclose(out.fd_grad, [1e10, 0.5], rtol=1e-8)
    assert mml.check_grad(f, x, lambda x: 2.0 / x).max_rel_error > 0.4
    assert out.errors[1] < 1e-9  # (its step stays eps^(1/3) max(1, |x_i|))
    # no finite difference at all (f(x) = NaN): a NaN error with a warning that says so
    with pytest.warns(RuntimeWarning, match="not finite"):
        assert np.isnan(mml.check_grad(f, jnp.array([-1.0, 2.0])).max_rel_error)


def test_jacobian_and_hessian_take_integer_points_as_hvp_does():
    """hvp, directional_derivative, check_grad and the solvers make an integer x the default
    float; jacobian and hessian raised JAX's TypeError ("jacfwd requires real-valued inputs ...
    pass holomorphic=True"), naming no argument. Now they convert the differentiated arguments'
    integer leaves the same way (the others are left alone: an integer power stays one)."""
    f = lambda x: jnp.sum(x**3)  # noqa: E731
    xi, xf = jnp.array([1, 2]), jnp.array([1.0, 2.0])
    for mode in ("auto", "fwd", "rev"):
        np.testing.assert_array_equal(mml.jacobian(f, mode=mode)(xi), mml.jacobian(f)(xf))
    np.testing.assert_array_equal(mml.hessian(f)(xi), mml.hessian(f)(xf))
    np.testing.assert_array_equal(mml.hessian(f)(xi) @ jnp.ones(2), mml.hvp(f, xi, jnp.ones(2)))
    assert mml.jacobian(f)(xi).dtype == mml.hvp(f, xi, jnp.ones(2)).dtype
    assert float(mml.jacobian(lambda x, n: x**n)(2, 3)) == 12.0
    assert float(mml.hessian(lambda x, n: x**n)(2, 3)) == 12.0
