"""minimise_constrained: bad input, jit/vmap/grad, float32, pytrees, and the Lagrange helper."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
import jaxopt_mml._backend


def _sq(x, *args):
    return x @ x


def _plane(x, a, b):
    return jnp.array([a @ x - b])


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["newton-kkt", "augmented-lagrangian"])
def test_inconsistent_equalities_are_infeasible_not_nan(method):
    res = mml.minimise_constrained(
        lambda x: x[0] ** 2,
        jnp.array([3.0]),
        eq=lambda x: jnp.array([x[0], x[0] - 1.0]),
        method=method,
    )
    assert int(res.status) == mml.Status.INFEASIBLE
    assert not bool(res.success)
    # The least-squares compromise x = 1/2 violates both constraints by 1/2.
    np.testing.assert_allclose(res.max_violation, 0.5, atol=1e-6)
    np.testing.assert_allclose(res.x, [0.5], atol=1e-6)
    for leaf in jax.tree.leaves(res):
        assert np.all(np.isfinite(np.asarray(leaf)))


def test_inconsistent_inequalities_are_infeasible():
    res = mml.minimise_constrained(
        _sq, jnp.array([0.3, 0.0]), ineq=lambda x: jnp.array([x[0] - 1.0, -x[0]])
    )
    assert int(res.status) == mml.Status.INFEASIBLE
    np.testing.assert_allclose(res.max_violation, 0.5, atol=1e-4)
    assert np.isfinite(float(res.value))


@pytest.mark.parametrize(
    "ineq, violation",
    [
        # -|x|^2 - 1 >= 0: the violation is least at x = 0, where the gradient vanishes
        (lambda x: jnp.array([-(x @ x) - 1.0]), 1.0),
        # 1 - |x|^2 >= 0 and x_0 >= 2: least violation at x_0 = 1.165, x_1 = x_2 = 0
        (lambda x: jnp.array([1.0 - x @ x, x[0] - 2.0]), 0.8346269569),
    ],
)
def test_infeasible_where_the_constraint_gradients_vanish_is_infeasible(ineq, violation):
    # The augmented Lagrangian ends next to the least violation with tiny constraint gradients
    # in some directions (x ~ 1e-11 there); the linearised constraints, trusted for a step of
    # any length, promised feasibility 1e10 away and the run was reported STAGNATED.
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x - jnp.array([1.0, 2.0, 3.0])) ** 2), jnp.zeros(3), ineq=ineq
    )
    assert int(res.status) == mml.Status.INFEASIBLE, mml.Status(int(res.status))
    np.testing.assert_allclose(res.max_violation, violation, rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"bounds": (jnp.zeros(3), jnp.ones(2))}, "bounds upper"),
        ({"bounds": (jnp.zeros(3),)}, "bounds must be a pair"),
        ({"eq": lambda x, *a: jnp.ones((2, 2))}, "eq"),
        ({"ineq": lambda x, *a: jnp.ones((2, 2))}, "ineq"),
        ({"eq": _plane, "method": "nope"}, "method"),
        ({"bounds": (0.0, 1.0), "method": "newton-kkt"}, "newton-kkt"),
        ({"eq": _plane, "rtol": True}, "rtol"),
        ({"eq": _plane, "rtol": jnp.array([1e-6])}, "rtol"),
    ],
)
def test_static_misuse_raises_value_error_at_trace_time(kwargs, match):
    kwargs.setdefault("args", (jnp.ones(3), 1.0))
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda x0: mml.minimise_constrained(_sq, x0, **kwargs)).lower(jnp.zeros(3))


def test_an_x0_without_elements_is_refused_by_name():
    # As the unconstrained minimisers refuse it: with bounds it met NumPy's "zero-size array to
    # reduction operation max"; with an equality it came back INFEASIBLE with a multiplier 4.5e14
    f = lambda x: jnp.sum(x)  # noqa: E731
    for kwargs in ({"bounds": (0.0, 1.0)}, {"eq": lambda x: jnp.ones(1)}, {}):
        with pytest.raises(ValueError, match="x0 has no elements"):
            mml.minimise_constrained(f, jnp.zeros(0), **kwargs)


def test_traced_or_string_tolerances_raise_type_error_naming_them():
    # float(rtol) ran before the check: a string passed, a traced value raised an error that
    # did not name the option.
    with pytest.raises(TypeError, match="atol"):
        mml.minimise_constrained(_sq, jnp.zeros(3), eq=_plane, args=(jnp.ones(3), 1.0), atol="1e-6")
    with pytest.raises(TypeError, match="rtol"):
        jax.jit(
            lambda t: mml.minimise_constrained(
                _sq, jnp.zeros(3), eq=_plane, args=(jnp.ones(3), 1.0), rtol=t
            )
        )(1e-6)


def test_scipy_per_variable_bounds_are_refused_not_misread():
    # For two variables scipy's [(0, 1), (0, 1)] also reads as (lower, upper) = ((0, 1), (0, 1)):
    # it fixed x at (0, 1) with SUCCESS. Refused as ambiguous; other sizes say how to convert.
    f = lambda x: jnp.sum((x - 0.25) ** 2)  # noqa: E731
    with pytest.raises(ValueError, match="per-variable pairs"):
        mml.minimise_constrained(f, jnp.zeros(2), bounds=[(0.0, 1.0), (0.0, 1.0)])
    with pytest.raises(ValueError, match="per-variable pairs"):
        mml.minimise_constrained(f, jnp.zeros(3), bounds=[(0.0, 1.0)] * 3)
    # the tuple (lower, upper), and a list of two vectors, mean what they say
    for bounds in (((0.0, 0.0), (1.0, 1.0)), [jnp.zeros(2), jnp.ones(2)]):
        res = mml.minimise_constrained(f, jnp.zeros(2), bounds=bounds)
        np.testing.assert_allclose(res.x, [0.25, 0.25], atol=1e-8)


def test_non_scalar_objective_raises():
    with pytest.raises(ValueError, match="scalar"):
        mml.minimise_constrained(lambda x: x, jnp.zeros(2), eq=lambda x: x[:1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eq": lambda x: (1.0 - x.sum()) + 5j}, "eq"),
        ({"ineq": lambda x: jnp.array([1.0 - x[0]]) * (1 + 1j)}, "ineq"),
        ({"f": lambda x: x @ x + 1j * x[0]}, "f"),
        ({"f": lambda x: jnp.array(1)}, "f"),
    ],
)
def test_complex_or_integer_outputs_raise_type_error(kwargs, match):
    # The outputs were cast to x's dtype: an equality 1 - x0 - x1 + 5j = 0 "held" (SUCCESS).
    kwargs = {"f": _sq, **kwargs}
    with pytest.raises(TypeError, match=match):
        mml.minimise_constrained(kwargs.pop("f"), jnp.zeros(2), **kwargs)
    if "eq" in kwargs:
        with pytest.raises(TypeError, match="eq"):
            mml.lagrange_stationary_points(_sq, kwargs["eq"], jnp.zeros((2, 2)))


def test_complex_start_raises_type_error_naming_it():
    # JAX's grad failed instead, with its advice about holomorphic functions (f real, or an
    # eq whose output is real) or a message naming f (f complex at a complex start).
    f = lambda x: jnp.sum(jnp.abs(x) ** 2)  # noqa: E731
    for kwargs in ({}, {"bounds": (0.0, 1.0)}, {"eq": lambda x: jnp.sum(jnp.abs(x)) - 1.0}):
        with pytest.raises(TypeError, match="x0 must be real"):
            mml.minimise_constrained(f, jnp.ones(2, complex), **kwargs)
    with pytest.raises(TypeError, match="starts must be real"):
        mml.lagrange_stationary_points(
            lambda x: x[0] * x[1], lambda x: x @ x - 1, jnp.ones((2, 2), complex)
        )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_start_raises_type_error_naming_it(dtype):
    # float16 met LAPACK's "NotImplementedError: Unsupported dtype float16", bfloat16 the loop's
    # "carry input and carry output must have equal types"; newton_raphson names x0 for them.
    f = lambda x: jnp.sum((x - 0.5) ** 2)  # noqa: E731
    for kwargs in ({"bounds": (0.0, 1.0)}, {"eq": lambda x: x[0] - x[1]}):
        with pytest.raises(
            TypeError, match="minimise_constrained: x0 of dtype .*cast x0 to float32"
        ):
            mml.minimise_constrained(f, jnp.zeros(2, dtype), **kwargs)
    with pytest.raises(TypeError, match="starts of dtype"):
        mml.lagrange_stationary_points(f, lambda x: x[0] - x[1], jnp.zeros((1, 2), dtype))


def test_outputs_that_are_no_array_raise_type_error_naming_the_function():
    # A dict (x0 may be one), None or arrays of several shapes met JAX's "not a valid JAX
    # array type" or NumPy's concatenate message, naming none of f, eq or ineq.
    p0 = {"a": 0.0, "b": jnp.zeros(2)}
    f = lambda p: p["a"] ** 2 + jnp.sum(p["b"] ** 2)  # noqa: E731
    for kwargs, name in (
        ({"eq": lambda p: {"e1": p["a"] - 1.0, "e2": p["b"][0]}}, "eq"),
        ({"ineq": lambda p: (1.0 - p["a"], 1.0 - p["b"])}, "ineq"),
        ({"eq": lambda p: None}, "eq"),
        ({"f": lambda p: {"value": f(p)}}, "f"),
    ):
        kwargs = {"f": f, **kwargs}
        with pytest.raises(TypeError, match=rf"^{name}\(x, \*args\) must return"):
            mml.minimise_constrained(kwargs.pop("f"), p0, **kwargs)
    with pytest.raises(TypeError, match=r"^eq\(x, \*args\) must return"):
        mml.lagrange_stationary_points(
            f, lambda p: {"e": p["a"] - 1.0}, jax.tree.map(lambda v: jnp.stack([v, v]), p0)
        )


def test_lagrange_points_without_starts_raise_value_error():
    # starts of shape (0, n) raised IndexError ("index is out of bounds for axis 0 with size 0").
    with pytest.raises(ValueError, match="at least one start"):
        mml.lagrange_stationary_points(
            lambda x: x[0] * x[1], lambda x: x @ x - 1, jnp.zeros((0, 2))
        )


def test_bounds_that_are_no_real_numbers_raise_type_error():
    # A complex bound was cast to x's real dtype, its imaginary part dropped (SUCCESS at the
    # real part's bound); a string met NumPy's "could not convert string to float".
    f = lambda x: jnp.sum((x - 2.0) ** 2)  # noqa: E731
    for bounds, side in (
        ((0.0, 1.0 + 1j), "upper"),
        ((np.zeros(2), np.full(2, 1.0 + 1j)), "upper"),
        (("a", 1.0), "lower"),
    ):
        with pytest.raises(TypeError, match=f"bounds {side} must hold real numbers"):
            mml.minimise_constrained(f, jnp.zeros(2), bounds=bounds)


def test_args_that_are_no_tuple_are_named_as_passed():
    # The check ran inside the jit, where args=2.0 had become a tracer: "got DynamicJaxprTracer".
    with pytest.raises(TypeError, match="args must be a tuple of extra arguments, got float"):
        mml.minimise_constrained(lambda x, s: jnp.sum((x - s) ** 2), jnp.zeros(2), args=2.0)


def test_nan_start_is_a_status():
    res = mml.minimise_constrained(_sq, jnp.array([jnp.nan, 0.0]), eq=lambda x: x[:1] - 1.0)
    assert int(res.status) == mml.Status.NONFINITE


@pytest.mark.parametrize("kind", ["eq", "ineq"])
def test_nan_or_inf_constraint_is_nonfinite(kind):
    # A constraint NaN or inf at x0: the driver tested x and f only, so the augmented Lagrangian
    # ran 100 outer iterations at x0 to MAX_ITER (log x >= 0 from x = 0 within bounds: SUCCESS
    # with max_violation inf) and Newton-KKT STAGNATED. One compilation: a is traced.
    def con(x, a):
        return jnp.array([jnp.log(a) - x @ x])

    opts = {kind: con, "bounds": (-3.0, 3.0)} if kind == "ineq" else {kind: con}
    for a in [jnp.nan, 0.0, jnp.inf, 4.0]:
        res = mml.minimise_constrained(
            lambda x, a: jnp.sum((x - 2.0) ** 2), jnp.ones(2), args=(jnp.asarray(a),), **opts
        )
        expected = mml.Status.SUCCESS if a == 4.0 else mml.Status.NONFINITE
        assert int(res.status) == expected, (a, int(res.status))
    np.testing.assert_allclose(res.x, [np.sqrt(np.log(4.0) / 2)] * 2, rtol=1e-7)


# --- jit, vmap, no recompilation ---------------------------------------------------------------


def test_vmap_over_args_and_no_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(a, b):
        return jax.vmap(
            lambda a, b: mml.minimise_constrained(_sq, jnp.zeros(3), args=(a, b), eq=_plane)
        )(a, b)

    key = jax.random.key(0)
    for i in range(2):
        a = jax.random.normal(jax.random.fold_in(key, i), (50, 3))
        b = jnp.linspace(-2.0, 3.0, 50)
        res = solve(a, b)
        expected = b[:, None] * a / jnp.sum(a * a, axis=1, keepdims=True)
        chex.assert_trees_all_close(res.x, expected, atol=1e-10)
        assert bool(jnp.all(res.success))


def test_a_weakly_typed_start_reuses_the_compilation():
    # jnp.full(2, 0.5) (weakly typed) after jnp.ones(2) compiled a program of its own.
    traces = []

    def f(x):
        traces.append(1)
        return jnp.sum((x - 0.3) ** 2)

    for solve in (
        lambda x0: mml.minimise_constrained(f, x0, eq=lambda x: x[0] - x[1], max_iter=3).x,
        lambda x0: mml.lagrange_stationary_points(f, lambda x: x[0] - x[1], x0[None]).x,
    ):
        solve(jnp.ones(2))
        n = len(traces)
        solve(jnp.full(2, 0.5))
        assert len(traces) <= n + 1  # (lagrange_stationary_points checks f's output eagerly)


def test_vmap_with_inequalities_and_bounds():
    # minimise (x - c)^2 + (y - c)^2 subject to x + y <= 1, 0 <= x, y <= 0.4.
    def solve(c):
        return mml.minimise_constrained(
            lambda v, c: jnp.sum((v - c) ** 2),
            jnp.array([0.1, 0.1]),
            args=(c,),
            ineq=lambda v, c: jnp.array([1.0 - v[0] - v[1]]),
            bounds=(jnp.zeros(2), jnp.full(2, 0.4)),
        )

    c = jnp.array([-1.0, 0.2, 0.45, 3.0])
    res = jax.jit(jax.vmap(solve))(c)
    expected = jnp.clip(c, 0.0, 0.4)[:, None] * jnp.ones(2)
    chex.assert_trees_all_close(res.x, expected, atol=1e-7)
    assert bool(jnp.all(res.success))
    # Lower bound active (c = -1): nu = -grad f = 2(x - c) ... with trust-constr's sign, <= 0.
    np.testing.assert_allclose(res.multipliers_bounds[0], [-2.0, -2.0], atol=1e-6)
    np.testing.assert_allclose(res.multipliers_bounds[3], [5.2, 5.2], atol=1e-6)
    np.testing.assert_allclose(res.multipliers_ineq, 0.0, atol=1e-7)


def _hs35_objective(x, t):
    return (9.0 - 8.0 * x[0] - 6.0 * x[1] - 4.0 * x[2] + 2.0 * x[0] ** 2 + 2.0 * x[1] ** 2) + (
        x[2] ** 2 + 2.0 * x[0] * x[1] + 2.0 * x[0] * x[2]
    )


def _hs35_ineq(x, t):
    return jnp.array([t - x[0] - x[1] - 2.0 * x[2]])


def _hs35_bounded(t, **options):
    # HS35 with a moving right-hand side t; x >= 0 plus an upper bound on x1. (The functions are
    # module-level: the same objects in every call, so each program compiles once, not per t.)
    return mml.minimise_constrained(
        _hs35_objective,
        jnp.array([0.5, 0.5, 0.5]),
        args=(t,),
        ineq=_hs35_ineq,
        bounds=(jnp.zeros(3), jnp.array([1.2, jnp.inf, jnp.inf])),
        **options,
    )


def _hs35_x(t):
    return _hs35_bounded(t).x


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_vmapped_augmented_lagrangian_equals_a_loop_and_differentiates():
    # On a CPU vmap solves the problems one after another inside the program (_batching); the
    # results, their derivatives and nested vmaps must be those of one problem at a time. On a
    # GPU or TPU the loop is vectorised: its batched linear algebra rounds otherwise, a problem
    # may stop one iteration sooner or later, and the results agree to the solver's tolerance
    # (this test failed on an H100 at 1e-12). t = 4 is avoided: there the inequality holds with
    # equality at the unconstrained minimum (1, 1, 1) with a zero multiplier, x(t) has a kink,
    # and which one-sided derivative a solve returns is rounding's call (on an H100 the
    # vectorised solve gave the left one, the loop the right).
    sequential = not jaxopt_mml._backend.wide_backend()
    tol, dtol = (1e-12, 1e-10) if sequential else (1e-7, 1e-6)
    ts = jnp.array([2.5, 3.0, 3.5, 4.25])

    solve_x = _hs35_x
    batched = jax.jit(jax.vmap(_hs35_bounded))(ts)
    looped = jax.tree.map(lambda *u: jnp.stack(u), *[_hs35_bounded(t) for t in ts])
    if sequential:
        chex.assert_trees_all_close(batched, looped, atol=tol)
    else:
        chex.assert_trees_all_close((batched.x, batched.value), (looped.x, looped.value), atol=tol)
        np.testing.assert_array_equal(batched.status, looped.status)
    jac_loop = jnp.stack([jax.jacfwd(solve_x)(t) for t in ts])
    chex.assert_trees_all_close(jax.vmap(jax.jacrev(solve_x))(ts), jac_loop, atol=dtol)
    grad = jax.grad(lambda ts: jnp.sum(jax.vmap(solve_x)(ts)))(ts)
    chex.assert_trees_all_close(grad, jnp.sum(jac_loop, axis=1), atol=dtol)
    if not jaxopt_mml._backend.wide_backend():  # (a CPU)
        # The sequential map: the solver's arrays hold one problem's 3 variables, not all 5
        # problems' (read in the lowered program: JAX 0.11 hides the map in a primitive of its
        # own; vectorised, the counts are 228 and 853).
        text = jax.jit(jax.vmap(solve_x)).lower(jnp.append(ts, 4.5)).as_text()
        assert text.count("tensor<3xf64>") > 10 * text.count("tensor<5x3xf64>")


@pytest.mark.slow
def test_vmapped_augmented_lagrangian_under_jacfwd_of_vmap_and_nested_vmap():
    # The rest of the transformations of the test above (slow: each compiles the solve anew).
    sequential = not jaxopt_mml._backend.wide_backend()
    tol, dtol = (1e-12, 1e-10) if sequential else (1e-7, 1e-6)
    ts = jnp.array([2.5, 3.0, 3.5, 4.25])
    jac_loop = jnp.stack([jax.jacfwd(_hs35_x)(t) for t in ts])
    full = jax.jacfwd(jax.vmap(_hs35_x))(ts)  # (batch, n, batch): block diagonal
    chex.assert_trees_all_close(jnp.einsum("iji->ij", full), jac_loop, atol=dtol)
    nested = jax.vmap(jax.vmap(_hs35_x))(jnp.stack([ts, ts + 0.25]))
    chex.assert_trees_all_close(nested[0], jax.vmap(_hs35_x)(ts), atol=tol)


@pytest.mark.slow
def test_vmapped_augmented_lagrangian_differentiates_through_its_loops():
    # Without implicit differentiation forward mode runs through the (vectorised) loops; where a
    # bound is active (t = 2.5, 3) the held variables' unit rows make repeated eigenvalues, at
    # which eigh's own derivative is NaN (the Newton step has a derivative rule of its own).
    ts = jnp.array([2.5, 3.0, 3.5, 4.25])
    jac_loop = jnp.stack([jax.jacfwd(_hs35_x)(t) for t in ts])
    unrolled = jax.vmap(jax.jacfwd(lambda t: _hs35_bounded(t, implicit_diff=False).x))(ts)
    chex.assert_trees_all_close(unrolled, jac_loop, atol=1e-6)


def test_float32_easy_problem():
    a = jnp.array([1.0, -2.0, 2.0], jnp.float32)
    res = mml.minimise_constrained(
        _sq, jnp.ones(3, jnp.float32), args=(a, jnp.float32(6.0)), eq=_plane
    )
    assert res.x.dtype == jnp.float32 and res.value.dtype == jnp.float32
    assert bool(res.success)
    np.testing.assert_allclose(res.x, 6.0 * np.asarray(a) / 9.0, atol=1e-5)
    res = mml.minimise_constrained(
        _sq,
        jnp.ones(2, jnp.float32),
        ineq=lambda x: jnp.array([x[0] + x[1] - 1.0], jnp.float32),
    )
    assert bool(res.success) and res.x.dtype == jnp.float32
    np.testing.assert_allclose(res.x, [0.5, 0.5], atol=1e-4)


def test_pytree_parameters_and_bounds():
    x0 = {"a": jnp.array([2.0, 2.0]), "b": jnp.array(3.0)}

    def f(p):
        return jnp.sum(p["a"] ** 2) + p["b"] ** 2

    res = mml.minimise_constrained(
        f,
        x0,
        eq=lambda p: jnp.array([p["a"][0] + p["b"] - 2.0]),
        bounds=({"a": jnp.array([-jnp.inf, 0.5]), "b": -jnp.inf}, None),
    )
    assert bool(res.success)
    np.testing.assert_allclose(res.x["a"], [1.0, 0.5], atol=1e-7)
    np.testing.assert_allclose(res.x["b"], 1.0, atol=1e-7)
    np.testing.assert_allclose(res.multipliers_bounds["a"], [0.0, -1.0], atol=1e-6)


def test_mixed_dtype_pytree_is_solved_as_f_sees_it_in_float64():
    # f saw a float32 leaf rounded to float32 (ravel_pytree's unravel) at every evaluation while
    # the solve ran in float64 at float64's tolerances: MAX_ITER at the solution (kkt_residual
    # 6e-8 from the rounding). f sees the promoted leaves now; x comes back in x0's dtypes.
    seen = []

    def f(p):
        seen.append(p["a"].dtype)
        return jnp.sum((p["a"] - 1 / 3) ** 2) + (p["b"] - 1 / 3) ** 2 + p["a"][0] * p["b"] * 0.1

    x0 = {"a": jnp.array([1.0, 2.0], jnp.float32), "b": jnp.asarray(3.0, jnp.float64)}
    res = mml.minimise_constrained(f, x0, bounds=(0.0, 1.0), max_iter=20)
    assert bool(res.success), mml.Status(int(res.status))
    assert seen[-1] == jnp.float64
    chex.assert_trees_all_equal_dtypes(res.x, x0)
    chex.assert_trees_all_equal_dtypes(res.multipliers_bounds, x0)
    t = (2 / 3) / 2.1  # a0 = b = t: 2 (t - 1/3) + 0.1 t = 0; a1 = 1/3
    np.testing.assert_allclose(res.x["a"], [t, 1 / 3], rtol=1e-7)
    np.testing.assert_allclose(res.x["b"], t, rtol=1e-12)


# --- implicit differentiation ------------------------------------------------------------------


def _fd(fun, theta, h=1e-4):
    """Central differences, both sides in one vmapped (compiled once) call."""
    lo, hi = jax.vmap(fun)(jnp.array([theta - h, theta + h]))
    return (hi - lo) / (2 * h)


def test_implicit_gradient_equality_matches_finite_differences():
    # The extreme of x^2 y on a circle of radius r: d/dr of the solution and its multiplier.
    def solve(r):
        res = mml.minimise_constrained(
            lambda p, r: p[0] ** 2 * p[1],
            jnp.array([0.5, -0.5]),
            args=(r,),
            eq=lambda p, r: jnp.array([p @ p - r**2]),
        )
        return jnp.concatenate([res.x, res.multipliers_eq])

    r = 1.3
    jac = jax.jit(jax.jacobian(solve))(r)
    np.testing.assert_allclose(jac, _fd(solve, r), rtol=1e-6, atol=1e-9)
    # Closed form: x = r sqrt(2/3), y = -r / sqrt(3), lam = r / sqrt(3) (trust-constr sign).
    np.testing.assert_allclose(jac, [np.sqrt(2 / 3), -1 / np.sqrt(3), 1 / np.sqrt(3)], rtol=1e-8)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_implicit_gradient_with_active_inequality_and_bound():
    solve = _hs35_bounded
    t = 3.0
    # One compiled forward-mode pass gives the solution and its derivative.
    res, tangent = jax.jit(lambda t: jax.jvp(solve, (t,), (1.0,)))(t)
    assert bool(res.success)
    assert float(res.multipliers_ineq[0]) < -1e-3  # active inequality
    assert float(res.multipliers_bounds[0]) > 1e-3  # active upper bound on x1
    jac = tangent.x
    np.testing.assert_allclose(jac, _fd(lambda t: solve(t).x, t), atol=1e-6)
    assert abs(float(jac[0])) < 1e-10  # x1 stays on its bound


# --- the teaching form -------------------------------------------------------------------------


def test_lagrange_stationary_points_of_x2y_on_the_circle():
    starts = jax.random.normal(jax.random.key(1), (64, 2))
    pts = mml.lagrange_stationary_points(
        lambda p: p[0] ** 2 * p[1], lambda p: jnp.array([p @ p - 1.0]), starts
    )
    assert len(pts.kind) == 6
    s = 2 / (3 * np.sqrt(3))
    np.testing.assert_allclose(pts.value, [-s, -s, 0.0, 0.0, s, s], atol=1e-9)
    by_point = {
        (round(float(x), 6) + 0.0, round(float(y), 6) + 0.0): k
        for (x, y), k in zip(pts.x, pts.kind, strict=True)
    }
    assert by_point[(0.0, 1.0)] == "minimum"  # f = x^2 >= 0 near (0, 1)
    assert by_point[(0.0, -1.0)] == "maximum"
    assert pts.kind[:2] == ("minimum", "minimum") and pts.kind[-2:] == ("maximum", "maximum")
    # trust-constr convention: grad f + lam grad h = 0; at the minima y = -1/sqrt(3), lam = 1/sqrt(3).
    np.testing.assert_allclose(pts.multipliers[:2, 0], 1 / np.sqrt(3), atol=1e-8)
    assert pts.count.sum() == pts.n_converged


def test_lagrange_stationary_points_saddle():
    # f = x y z on the plane x + y + z = 3: (1, 1, 1) is a local maximum, (3, 0, 0) a saddle.
    starts = jnp.array([[1.2, 0.9, 0.8], [2.8, 0.1, 0.1], [0.1, 2.9, -0.1]])
    pts = mml.lagrange_stationary_points(
        lambda v: v[0] * v[1] * v[2], lambda v: jnp.array([jnp.sum(v) - 3.0]), starts
    )
    kinds = {
        tuple(np.round(np.asarray(x), 6) + 0.0): k for x, k in zip(pts.x, pts.kind, strict=True)
    }
    assert kinds[(1.0, 1.0, 1.0)] == "maximum"
    assert kinds[(3.0, 0.0, 0.0)] == "saddle"
    assert kinds[(0.0, 3.0, 0.0)] == "saddle"


def test_lagrange_stationary_points_with_constraints_of_different_scales():
    # |x|^2 on x + y + z = 1 (scaled by 1e8) and y = z: the minimum (1/3, 1/3, 1/3). J's rows
    # differ in scale by 1e8, which is not a rank deficiency (the point was "degenerate").
    starts = jnp.array([[0.3, 0.2, 0.1], [1.0, -1.0, 2.0]])
    pts = mml.lagrange_stationary_points(
        lambda v: v @ v,
        lambda v: jnp.stack([1e8 * (jnp.sum(v) - 1.0), v[1] - v[2]]),
        starts,
    )
    assert pts.kind == ("minimum",)
    # To the solver's default rtol (eps ** 0.5): the KKT matrix's condition is ~1e16 here.
    np.testing.assert_allclose(pts.x, [[1 / 3, 1 / 3, 1 / 3]], rtol=1.5e-8)
    # grad f + lam grad h = 0: 2/3 + 1e8 lam1 = 0, and lam2 = 0.
    np.testing.assert_allclose(pts.multipliers[0, 0], -2 / 3 * 1e-8, rtol=1.5e-8)
    assert abs(pts.multipliers[0, 1]) < 1.5e-8 * 2 / 3  # rtol times |grad f|


def test_lagrange_stationary_points_of_a_linear_objective():
    # f = x + y on the ellipse x^2/4 + y^2 = 1. Newton used to start at lam = 0, where grad L
    # has a singular Jacobian (zero Hessian block): no start converged.
    starts = jax.random.normal(jax.random.key(1), (64, 2)) * 1.5
    pts = mml.lagrange_stationary_points(
        lambda p: p[0] + p[1], lambda p: jnp.array([p[0] ** 2 / 4 + p[1] ** 2 - 1.0]), starts
    )
    a, b = 4 / np.sqrt(5), 1 / np.sqrt(5)
    assert pts.kind == ("minimum", "maximum")
    np.testing.assert_allclose(pts.x, [[-a, -b], [a, b]], atol=1e-8)
    np.testing.assert_allclose(pts.multipliers[:, 0], [np.sqrt(5) / 2, -np.sqrt(5) / 2], atol=1e-8)
    np.testing.assert_allclose(pts.value, [-np.sqrt(5), np.sqrt(5)], atol=1e-8)
    assert pts.n_converged == 64


def test_lagrange_stationary_points_on_a_curve_of_them_and_at_a_cusp():
    # |x|^2 on the unit circle: every point is stationary (lam = -1), degenerate.
    starts = jax.random.normal(jax.random.key(2), (6, 2))
    pts = mml.lagrange_stationary_points(
        lambda p: p @ p, lambda p: jnp.array([p @ p - 1.0]), starts
    )
    assert pts.n_converged == 6 and set(pts.kind) == {"degenerate"}
    np.testing.assert_allclose(np.linalg.norm(pts.x, axis=1), 1.0, atol=1e-8)
    # f = y on x^2 = y^3: the minimum (0, 0) is no Lagrange point (J = 0); nothing may pass
    # for one (a point near the cusp with lam ~ 5e3 and x^2 - y^3 = 5e-7 did).
    pts = mml.lagrange_stationary_points(
        lambda p: p[1], lambda p: jnp.array([p[0] ** 2 - p[1] ** 3]), starts
    )
    for x in np.asarray(pts.x).reshape(-1, 2):
        assert abs(x[0] ** 2 - x[1] ** 3) < 1e-7


def test_lagrange_stationary_points_at_a_degenerate_point_is_one_degenerate_point():
    # On y = 0, x^3 has one stationary point, an inflection. Newton converges linearly there
    # and the starts ended over |x| < 1e-4: 15 "distinct" points, minima for x > 0 and maxima
    # for x < 0. x^4 + y: 16 copies of one minimum (the second-order test says nothing there).
    starts = jax.random.normal(jax.random.key(0), (16, 2))
    for f in (lambda p: p[0] ** 3 + p[1] ** 2, lambda p: p[0] ** 4 + p[1]):
        pts = mml.lagrange_stationary_points(f, lambda p: jnp.array([p[1]]), starts)
        assert pts.kind == ("degenerate",) and int(pts.count[0]) == pts.n_converged == 16
        np.testing.assert_allclose(pts.x[0], [0.0, 0.0], atol=2e-3)


def test_lagrange_stationary_points_float32_merges_duplicates():
    # Newton stops at sqrt(eps) ~ 3e-4 in float32; the fixed unique_tol = 1e-6 kept 28 copies of
    # the 6 points. The default now follows the tolerance; an explicit value still applies.
    starts = jax.random.normal(jax.random.key(0), (32, 2)).astype(jnp.float32)
    args = (lambda p: p[0] ** 2 * p[1], lambda p: jnp.array([p @ p - 1.0]), starts)
    pts = mml.lagrange_stationary_points(*args)
    assert np.asarray(pts.x).dtype == np.float32
    assert len(pts.kind) == 6 and pts.count.sum() == pts.n_converged
    assert sorted(pts.kind) == ["maximum"] * 3 + ["minimum"] * 3
    s = 2 / (3 * np.sqrt(3))
    np.testing.assert_allclose(pts.value, [-s, -s, 0.0, 0.0, s, s], atol=1e-3)
    assert len(mml.lagrange_stationary_points(*args, unique_tol=0.0).kind) > 6
    with pytest.raises(ValueError, match="unique_tol"):
        mml.lagrange_stationary_points(*args, unique_tol=-1.0)


@pytest.mark.parametrize("unique_tol", ["1e-3", True, 1e-3j, np.array([1e-3, 1e-3])])
def test_lagrange_stationary_points_unique_tol_of_a_wrong_type_is_named(unique_tol):
    # Compared bare, a string or an array raised Python's or NumPy's own error (naming no
    # option), and True ran as 1. Raised before anything is compiled.
    with pytest.raises(TypeError, match="unique_tol"):
        mml.lagrange_stationary_points(
            lambda p: p[0], lambda p: p[1], jnp.zeros((2, 2)), unique_tol=unique_tol
        )


def test_an_unused_variable_leaves_the_others_derivatives_finite():
    # x[2], which neither f nor the constraint reads: its bound multiplier couples to it in the
    # KKT system (stationarity reads nu), so the zero row-and-column test did not see it and
    # every implicit derivative was NaN on a SUCCESS run (bfgs gave the identity and 0).
    def solve(a):
        res = mml.minimise_constrained(
            lambda x, a: jnp.sum((x[:2] - a) ** 2),
            jnp.zeros(3),
            args=(a,),
            eq=lambda x, a: x[:1] - 0.5,
        )
        return res.x, res.success

    jac, success = jax.jacfwd(solve, has_aux=True)(jnp.array([1.0, 2.0]))
    assert bool(success)
    # x[0] is held at 0.5 by the constraint, x[1] = a[1]
    np.testing.assert_allclose(jac, [[0.0, 0.0], [0.0, 1.0], [0.0, 0.0]], atol=1e-9)
    np.testing.assert_array_equal(jac[2], [0.0, 0.0])


def test_lagrange_points_under_a_transformation_raise_a_type_error_that_says_why():
    # The points are merged on the host: traced (args, the starts, or a value f closes over;
    # under jax.jit here, as under grad or vmap) JAX's TracerArrayConversionError named an
    # array of the starts' shape and not the function.
    starts = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    h = lambda p, *a: (p @ p - 1.0)[None]

    def by_args(a):
        return mml.lagrange_stationary_points(lambda p, a: a * p[0], h, starts, args=(a,)).value

    def by_closure(a):
        return mml.lagrange_stationary_points(lambda p: a * p[0], h, starts).value

    def by_starts(s):
        return mml.lagrange_stationary_points(lambda p: p[0], h, s).value

    for fun, arg in ((by_args, 2.0), (by_closure, 2.0), (by_starts, starts)):
        with pytest.raises(TypeError, match="lagrange_stationary_points runs on the host"):
            jax.jit(fun)(arg)


def test_bounds_as_lists_and_nan_bounds():
    # scipy's style of bounds (lists) for an array x0 was refused; NaN bounds gave NONFINITE.
    f = lambda x: jnp.sum((x - 1.0) ** 2)
    res = mml.minimise_constrained(f, jnp.zeros(2), bounds=([0.0, 0.0], [0.5, 0.5]))
    np.testing.assert_allclose(res.x, [0.5, 0.5], atol=1e-8)
    with pytest.raises(ValueError, match="NaN"):
        mml.minimise_constrained(f, jnp.zeros(2), bounds=(jnp.nan, 1.0))
    with pytest.raises(ValueError, match="shape"):
        mml.minimise_constrained(f, jnp.zeros(2), bounds=([0.0, 0.0, 0.0], 1.0))


def test_crossed_bounds_raise_or_are_infeasible():
    # lower > upper (an empty box) used to return success=True with max_violation 1.
    with pytest.raises(ValueError, match="bounds"):
        mml.minimise_constrained(_sq, jnp.array([0.5, 0.5]), bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="bounds"):
        mml.minimise_constrained(
            _sq, jnp.array([0.5, 0.5]), bounds=(jnp.array([0.0, 2.0]), jnp.array([1.0, 1.0]))
        )

    @jax.jit
    def solve(lower):
        return mml.minimise_constrained(
            _sq, jnp.array([0.5, 0.5]), bounds=(lower, 1.0), ineq=lambda x: x[:1] + 1.0
        )

    res = jax.vmap(solve)(jnp.array([[0.0, 0.0], [0.0, 2.0]]))
    np.testing.assert_array_equal(res.status, [mml.Status.SUCCESS, mml.Status.INFEASIBLE])
    np.testing.assert_array_equal(res.success, [True, False])


@pytest.mark.parametrize(
    ("x0", "expected"), [((1e-3, 0.0), mml.Status.SUCCESS), ((0.0, 0.0), None)]
)
def test_newton_kkt_near_a_rank_deficient_jacobian_is_not_infeasible(x0, expected):
    # min |x - (2, 1)|^2 s.t. x0 x1 = 1 is feasible; from near the origin (J ~ 0) Newton-KKT
    # reported INFEASIBLE after its first failed line search.
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x - jnp.array([2.0, 1.0])) ** 2),
        jnp.array(x0),
        eq=lambda x: jnp.array([x[0] * x[1] - 1.0]),
    )
    assert int(res.status) != mml.Status.INFEASIBLE
    if expected is not None:
        assert int(res.status) == expected
        np.testing.assert_allclose(res.x, [1.8667604, 0.53568739], atol=1e-7)


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_lagrange_point_kinds_do_not_depend_on_scaling(scale):
    # A threshold on the bordered Hessian's eigenvalues mixed the scales of J and of H: with f
    # scaled by 1e8 (1e4 in float32) every point was "degenerate".
    for f_scale, h_scale in ((scale, 1.0), (1.0, scale)):
        pts = mml.lagrange_stationary_points(
            lambda x, c=f_scale: c * x[0] * x[1],
            lambda x, c=h_scale: jnp.array([c * (x @ x - 1.0)]),
            jnp.array([[0.6, 0.8], [-0.6, 0.8], [0.6, -0.8], [-0.6, -0.8]]),
        )
        assert sorted(pts.kind) == ["maximum", "maximum", "minimum", "minimum"], pts.kind


def test_lagrange_points_one_large_gradient_component_does_not_loosen_the_others():
    # One tolerance for all, rtol |grad f|_inf ~ 15, let the free variable stop at x1 = 4.0 and
    # 6.17 ("degenerate", grad L = -5.1 and 7.9); there is one stationary point, the minimum.
    pts = mml.lagrange_stationary_points(
        lambda x: 1e9 * x[0] + jnp.cosh(x[1] - 5.0) + (x[1] - 5.0) ** 4,
        lambda x: x[:1],
        jnp.array([[1.0, 0.0], [0.0, 2.0], [3.0, 9.0]]),
    )
    assert pts.kind == ("minimum",)
    np.testing.assert_allclose(pts.x, [[0.0, 5.0]], rtol=0, atol=1e-8)
    np.testing.assert_allclose(pts.multipliers, [[-1e9]], rtol=1e-12)
    assert pts.count.tolist() == [3]


def test_lagrange_points_a_constraint_in_small_units_is_met():
    # |x|^2 on k (x + y - 1) = 0: the minimum (0.5, 0.5) with lam = -1 / k. With k = 1e-9 each
    # start stopped near where it began (|x| < 0.02, 16 "minima" from 16 starts), its small h
    # taken for feasibility; with k = 1e-12 all at one point near the origin. Constraints in
    # small units are now scaled up to unit size at each start. (k in args: one compile.)
    starts = jax.random.normal(jax.random.key(0), (8, 2))
    for k in (1e-9, 1e-12):
        pts = mml.lagrange_stationary_points(
            lambda p, k: p @ p, lambda p, k: k * (p[0] + p[1] - 1.0), starts, args=(k,)
        )
        assert pts.kind == ("minimum",)
        assert pts.count.tolist() == [8]
        np.testing.assert_allclose(pts.x, [[0.5, 0.5]], rtol=0, atol=1e-8)
        np.testing.assert_allclose(pts.multipliers * k, [[-1.0]], rtol=1e-7)


def test_lagrange_points_a_constraint_in_large_units_does_not_loosen_the_others():
    # The only feasible point of (1e8 (x0 - 1), 1 - x1) = 0 is (1, 1); judged against |J| = 1e8
    # for both constraints, the starts stopped at x1 = 2.25 and 1.02.
    pts = mml.lagrange_stationary_points(
        lambda x: jnp.sum((x - 2.0) ** 2),
        lambda x: jnp.array([1e8 * (x[0] - 1.0), 1.0 - x[1]]),
        jnp.array([[0.0, 0.0], [3.0, 3.0]]),
    )
    np.testing.assert_allclose(pts.x, [[1.0, 1.0]], rtol=0, atol=1e-12)


def test_lagrange_points_are_represented_by_their_most_accurate_start():
    """Starts that reach one point are merged, and "each point is represented by the start that
    reached it with the smallest |grad L|": in float32 (Newton stops at ~3e-4) the reported
    residual is the smallest among the end points that merged into it (the end points
    themselves: ``unique_tol=0``)."""

    def f(p):
        return p[0] ** 2 * p[1]

    def h(p):
        return jnp.array([p @ p - 1.0])

    def residual(x, lam):  # max |(grad f + J^T lam, h)| in float64
        x, lam = jnp.asarray(x, jnp.float64), jnp.asarray(lam, jnp.float64)
        g = jax.grad(lambda u: f(u) + lam @ h(u))(x)
        return float(jnp.max(jnp.abs(jnp.concatenate([g, h(x)]))))

    starts = jax.random.normal(jax.random.key(0), (32, 2)).astype(jnp.float32)
    pts = mml.lagrange_stationary_points(f, h, starts)
    ends = mml.lagrange_stationary_points(f, h, starts, unique_tol=0.0)
    r_ends = np.array([residual(x, lam) for x, lam in zip(ends.x, ends.multipliers, strict=True)])
    assert len(pts.kind) == 6  # the six stationary points, 0.5 or more apart
    for x, lam in zip(pts.x, pts.multipliers, strict=True):
        near = np.max(np.abs(np.asarray(ends.x) - x), axis=1) < 0.1
        assert residual(x, lam) <= 2.0 * r_ends[near].min() + 1e-7


def test_lagrange_points_with_redundant_constraints_are_degenerate():
    """Two copies of one constraint: ``J`` has rank 1 < m = 2, the bordered Hessian is singular
    (rank 4 of 5), and the second-order test says nothing: "degenerate" (not "minimum")."""
    pts = mml.lagrange_stationary_points(
        lambda x: x @ x,
        lambda x: jnp.array([jnp.sum(x) - 1.0, 2.0 * jnp.sum(x) - 2.0]),
        jax.random.normal(jax.random.key(1), (4, 3)),
    )
    np.testing.assert_allclose(pts.x, [[1 / 3, 1 / 3, 1 / 3]], atol=1e-8)
    assert np.linalg.matrix_rank(pts.bordered_hessian[0]) < 5
    assert pts.kind == ("degenerate",)


def test_lagrange_points_outside_the_domain_of_f_are_dropped():
    """``log(x0) - x0^2 / 2 + x1^2`` on ``x1 = 0``: ``grad f = (1/x0 - x0, 2 x1)`` vanishes at
    ``x0 = 1`` and at ``x0 = -1``, where f is NaN but JAX's derivative of log (1/x) is finite.
    The start at ``x0 < 0`` "converged" there and was listed as a maximum with value NaN."""
    pts = mml.lagrange_stationary_points(
        lambda p: jnp.log(p[0]) - 0.5 * p[0] ** 2 + p[1] ** 2,
        lambda p: jnp.array([p[1]]),
        jnp.array([[1.5, 0.3], [-1.5, 0.3]]),
    )
    assert np.all(np.isfinite(pts.value))
    np.testing.assert_allclose(pts.x, [[1.0, 0.0]], atol=1e-8)
    assert pts.kind == ("maximum",) and pts.n_converged == 1
