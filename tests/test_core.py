"""The shared solver core: the driver, statuses, line search, implicit differentiation."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxopt_mml as mml
from jaxopt_mml._driver import iterate, iterate_pool, make_progress
from jaxopt_mml._implicit import dense_tangent_solve, solve_with_implicit_grad
from jaxopt_mml._linesearch import backtracking
from jaxopt_mml._tree import default_tolerances


def _halving(x0, *, max_iter=100, history=0):
    """A toy solver: x <- x / 2, merit |x|; converges by the Cauchy test."""

    def step(x):
        new = x / 2
        return new, make_progress(new, jnp.abs(new), dx=new - x, df=jnp.abs(new) - jnp.abs(x))

    return iterate(
        step,
        x0,
        make_progress(x0, jnp.abs(x0)),
        max_iter=max_iter,
        rtol=1e-6,
        atol=1e-6,
        history=history,
    )


def test_driver_converges_and_counts():
    out = _halving(jnp.asarray(1.0))
    assert int(out.status) == mml.Status.SUCCESS
    # |dx| = x_k/2^... the step test |dx| <= 1e-6 (1 + |x|) first holds at k = 20.
    assert int(out.n_iter) == 20
    assert abs(float(out.progress.x)) < 2e-6


def test_driver_max_iter():
    out = _halving(jnp.asarray(1.0), max_iter=3)
    assert int(out.status) == mml.Status.MAX_ITER
    assert int(out.n_iter) == 3
    np.testing.assert_allclose(out.progress.x, 0.125)


def test_driver_nonfinite_start_stops_at_once():
    out = _halving(jnp.asarray(jnp.nan))
    assert int(out.status) == mml.Status.NONFINITE
    assert int(out.n_iter) == 0


def test_driver_nonfinite_step_keeps_last_finite():
    def step(x):
        new = jnp.where(x > 3.5, jnp.inf, x + 1.0)
        return new, make_progress(new, new, dx=new - x, df=jnp.ones_like(x))

    x0 = jnp.asarray(0.0)
    out = iterate(step, x0, make_progress(x0, x0), max_iter=50, rtol=0.0, atol=0.0, history=10)
    assert int(out.status) == mml.Status.NONFINITE
    assert float(out.progress.x) == 4.0
    assert int(out.n_iter) == 5
    # x = 0, 1, 2, 3, 4 are recorded; the step to inf is rejected and leaves no entry.
    h = out.history
    assert int(h.length) == 5
    np.testing.assert_array_equal(h.f[:5], [0.0, 1.0, 2.0, 3.0, 4.0])
    np.testing.assert_array_equal(h.x[:5], [0.0, 1.0, 2.0, 3.0, 4.0])
    assert np.all(np.isnan(np.asarray(h.f[5:])))


def test_driver_check_finite_off_keeps_every_step():
    # A solver that tracks non-finite values itself: the driver neither stops nor rolls back.
    def step(x):
        new = jnp.where(x > 3.5, jnp.inf, x + 1.0)
        return new, make_progress(new, new, converged=jnp.isinf(new))

    x0 = jnp.asarray(0.0)
    out = iterate(
        step, x0, make_progress(x0, x0), max_iter=50, rtol=0.0, atol=0.0, check_finite=False
    )
    assert int(out.status) == mml.Status.SUCCESS
    assert float(out.state) == np.inf
    assert int(out.n_iter) == 5


def test_driver_step_failure_is_reported():
    def step(x):
        return x, make_progress(x, x, failure=mml.Status.SINGULAR)

    x0 = jnp.asarray(1.0)
    out = iterate(step, x0, make_progress(x0, x0), max_iter=10, rtol=1e-8, atol=1e-8)
    assert int(out.status) == mml.Status.SINGULAR
    assert int(out.n_iter) == 1


def test_driver_vmap_is_per_element_and_jit_does_not_retrace():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(x0):
        out = jax.vmap(lambda x: _halving(x, max_iter=25))(x0)
        return out.n_iter, out.status

    n, s = run(jnp.asarray([1.0, 0.0, 1e6]))
    assert n.tolist()[1] == 1  # x0 = 0: dx = 0 on the first step
    assert n[2] > n[0]
    assert s.tolist() == [0, 0, mml.Status.MAX_ITER]
    run(jnp.asarray([2.0, 3.0, 4.0]))  # same shapes: no second trace


def test_driver_history_pads_with_nan():
    out = _halving(jnp.asarray(1.0), max_iter=3, history=6)
    h = out.history
    assert int(h.length) == 4
    np.testing.assert_allclose(h.f[:4], [1.0, 0.5, 0.25, 0.125])
    assert np.all(np.isnan(np.asarray(h.f[4:])))


def test_driver_rejects_bad_options():
    with pytest.raises(ValueError, match="max_iter"):
        _halving(jnp.asarray(1.0), max_iter=-1)
    with pytest.raises(ValueError, match="history"):
        _halving(jnp.asarray(1.0), history=-2)


def _halving_step(x):
    new = jnp.where(x > 3e5, jnp.inf, x / 2)  # starts above 3e5 blow up: NONFINITE
    return new, make_progress(new, jnp.abs(new), dx=new - x, df=jnp.abs(new) - jnp.abs(x))


@pytest.mark.parametrize("lanes", [1, 3, 64])
def test_pool_matches_vmapped_driver(lanes):
    # Problems of very different lengths (0 to MAX_ITER steps), bad starts and blow-ups: every
    # problem's iterate, step count and status are those of the one-problem driver.
    x0 = jnp.asarray([1.0, 0.0, 1e6, 3.0, jnp.nan, 1e-3, 5e5, 7.0, 2.0**-30, 1e4, 0.5])

    def one(x):
        return iterate(
            _halving_step, x, make_progress(x, jnp.abs(x)), max_iter=25, rtol=1e-6, atol=1e-6
        )

    ref = jax.vmap(one)(x0)
    out = iterate_pool(
        lambda i, x: _halving_step(x),
        lambda i: (x0[i], make_progress(x0[i], jnp.abs(x0[i]))),
        x0.shape[0],
        lanes=lanes,
        max_iter=25,
        rtol=1e-6,
        atol=1e-6,
    )
    statuses = set(np.asarray(ref.status).tolist())
    assert {0, int(mml.Status.MAX_ITER), int(mml.Status.NONFINITE)} <= statuses
    np.testing.assert_array_equal(out.status, ref.status)
    np.testing.assert_array_equal(out.n_iter, ref.n_iter)
    np.testing.assert_array_equal(out.state, ref.state)


def test_pool_step_sees_its_problem_index_and_max_iter_zero():
    data = jnp.arange(7.0)

    def step(i, x):  # converges in one step to the problem's own datum
        return data[i], make_progress(data[i], 0.0, converged=True)

    out = iterate_pool(
        step,
        lambda i: (jnp.asarray(-1.0), make_progress(-1.0, 0.0)),
        7,
        lanes=2,
        max_iter=5,
        rtol=0.0,
        atol=0.0,
    )
    np.testing.assert_array_equal(out.state, data)
    np.testing.assert_array_equal(out.n_iter, np.ones(7))
    out = iterate_pool(
        step,
        lambda i: (jnp.asarray(-1.0), make_progress(-1.0, 0.0)),
        7,
        lanes=2,
        max_iter=0,
        rtol=0.0,
        atol=0.0,
    )
    assert set(np.asarray(out.status).tolist()) == {int(mml.Status.MAX_ITER)}
    np.testing.assert_array_equal(out.state, -np.ones(7))
    with pytest.raises(ValueError, match="lanes"):
        iterate_pool(
            step,
            lambda i: (0.0, make_progress(0.0, 0.0)),
            7,
            lanes=0,
            max_iter=5,
            rtol=0.0,
            atol=0.0,
        )


def test_status_messages_and_raise():
    for code in mml.Status:
        assert code.name in mml.status_message(code)
    res = type("R", (), {"status": np.array([0, 1, 1, 2])})()
    with pytest.raises(mml.SolverError, match="2 of 4 element"):
        mml.raise_for_status(res)
    ok = type("R", (), {"status": np.array(0)})()
    assert mml.raise_for_status(ok) is ok
    assert mml.summarise_status(np.array([0, 0, 4])) == {
        mml.Status.SUCCESS: 2,
        mml.Status.SINGULAR: 1,
    }
    # float codes were truncated (0.7 counted as SUCCESS)
    with pytest.raises(TypeError, match="integers"):
        mml.summarise_status(np.array([0.7, 1.9]))
    # a ShardedBatch's hint was LagrangePoints'
    with pytest.raises(TypeError, match="unshard"):
        mml.raise_for_status(mml.shard_batch(jnp.zeros(4)))


def test_status_messages_say_what_to_do():
    # STAGNATED offered causes only, and not the root finders' (a local minimum of |f|) or the
    # constrained solvers' (a violation that stops falling); COVARIANCE_UNDEFINED offered no
    # remedy at all
    stagnated = mml.status_message(mml.Status.STAGNATED)
    assert "local minimum of |f|" in stagnated and "violation" in stagnated
    assert "Rescale" in stagnated and "start elsewhere" in stagnated
    assert "more points than parameters" in mml.status_message(mml.Status.COVARIANCE_UNDEFINED)
    # PRECISION_LIMIT named the dtype alone: a float64 gradient-descent fit stalled in a narrow
    # valley was told to use float64
    precision = mml.status_message(mml.Status.PRECISION_LIMIT)
    assert "gradient descent" in precision and "second-order method" in precision


def test_points_that_hold_no_numbers_are_refused_by_name():
    # A string x0 (x, v, t) met JAX's "Value 'ab' with dtype <U2 is not a valid JAX array type"
    # (minimise_constrained its message about the jit's arguments), naming no argument
    f = lambda x: jnp.sum(x**2)  # noqa: E731
    xs = jnp.ones(2)
    calls = {
        "x0": [
            lambda: mml.bfgs(f, "ab"),
            lambda: mml.newton_raphson(lambda x: x, {"a": "b"}),
            lambda: mml.minimise_constrained(f, "ab", bounds=(0.0, 1.0)),
            lambda: mml.linearise(f, "ab"),
            lambda: mml.quadratic_model(f, ["a", "b"]),
        ],
        "x": [lambda: mml.hvp(f, "ab", xs), lambda: mml.check_grad(f, "ab")],
        "v": [lambda: mml.directional_derivative(f, xs, "ab"), lambda: mml.hvp(f, xs, "ab")],
        "t": [lambda: mml.total_derivative(f, lambda t: jnp.stack([t, t]))("a")],
    }
    for name, fns in calls.items():
        for call in fns:
            with pytest.raises(TypeError, match=f"^{name} must hold real numbers, got dtype <U"):
                call()


def test_functions_that_are_not_callable_are_refused_by_name():
    # Python's "'float' object is not callable" (or JAX's "Expected a callable value") named
    # none: for minimise_constrained, was it f, eq or ineq? The minimisers named f already.
    xs, f = jnp.ones(2), (lambda x: jnp.sum(x**2))  # noqa: E731
    eq = lambda x: x[:1]  # noqa: E731
    calls = {
        "f": [
            lambda: mml.newton_raphson(1.0, 1.0),
            lambda: mml.bisection(1.0, 0.0, 1.0),
            lambda: mml.minimise_constrained(1.0, xs, eq=eq),
            lambda: mml.lagrange_stationary_points(1.0, eq, jnp.ones((2, 2))),
            lambda: mml.jacobian(1.0),
            lambda: mml.hessian(1.0),
            lambda: mml.hvp(1.0, xs, xs),
            lambda: mml.check_grad(1.0, xs),
            lambda: mml.taylor_polynomial(1.0, 0.0, 2),
            lambda: mml.quadratic_model(1.0, xs),
        ],
        "eq": [lambda: mml.minimise_constrained(f, xs, eq=1.0)],
        "ineq": [lambda: mml.minimise_constrained(f, xs, ineq="g")],
        "path": [lambda: mml.total_derivative(f, 1.0)],
    }
    for name, fns in calls.items():
        for call in fns:
            with pytest.raises(TypeError, match=f"^{name} must be callable, got"):
                call()


def test_backtracking_armijo():
    phi = lambda a: (1.0 - 3.0 * a) ** 2  # phi'(0) = -6, minimum at 1/3
    res = backtracking(phi, phi(0.0), -6.0)
    assert bool(res.success)
    assert float(res.value) <= 1.0 + 1e-4 * float(res.step_size) * -6.0
    assert float(res.step_size) == 0.5  # 1.0 gives 4 > 1; 0.5 gives 0.25
    bad = backtracking(phi, phi(0.0), 6.0)  # not a descent direction
    assert not bool(bad.success)


def test_implicit_grad_of_a_root():
    # x* = c^(1/3) solves x^3 - c = 0; dx*/dc = 1 / (3 c^(2/3)).
    def root(c):
        def solve(x0):
            def step(x):
                new = x - (x**3 - c) / (3 * x**2)
                return new, make_progress(new, jnp.abs(new**3 - c), dx=new - x, df=0.0)

            out = iterate(
                step, x0, make_progress(x0, jnp.abs(x0**3 - c)), max_iter=50, rtol=1e-14, atol=1e-14
            )
            return out.progress.x, out.status

        x, status = solve_with_implicit_grad(lambda x: x**3 - c, jnp.asarray(1.0), solve)
        return x

    c = 5.0
    np.testing.assert_allclose(root(c), c ** (1 / 3), rtol=1e-13)
    np.testing.assert_allclose(jax.grad(root)(c), 1 / (3 * c ** (2 / 3)), rtol=1e-12)


def test_dense_tangent_solve_pytree():
    A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    g = lambda t: {
        "a": A[0, 0] * t["a"] + A[0, 1] * t["b"],
        "b": A[1, 0] * t["a"] + A[1, 1] * t["b"],
    }
    y = {"a": jnp.asarray(1.0), "b": jnp.asarray(2.0)}
    v = dense_tangent_solve(g, y)
    np.testing.assert_allclose([v["a"], v["b"]], np.linalg.solve(np.asarray(A), [1.0, 2.0]))


def test_default_tolerances_follow_dtype():
    r64, a64 = default_tolerances(jnp.float64)
    r32, _ = default_tolerances(jnp.float32)
    assert r64 < 1e-7 < r32
    assert default_tolerances(jnp.float64, 1e-3, 0.0) == (1e-3, 0.0)


def test_history_length_counts_only_recorded_entries_after_a_nonfinite_step():
    # The rejected step was sent past the buffer (dropped) but the length became the buffer's.
    res = mml.gradient_descent(
        lambda x: jnp.sum(x**4), jnp.array([1.0]), step_size=10.0, history=20, max_iter=15
    )
    assert mml.Status(int(res.status)) == mml.Status.NONFINITE
    length = int(res.history.length)
    assert length < 20
    assert np.all(np.isfinite(np.asarray(res.history.f[:length])))
    assert np.all(np.isnan(np.asarray(res.history.f[length:])))


def test_status_helpers_edge_cases():
    for bad in (2.5, 0.9, True, np.array([0, 1])):
        with pytest.raises(ValueError, match="status"):
            mml.status_message(bad)
    assert mml.status_message(np.int32(2)).startswith("NONFINITE")
    # a fit whose only problem is its covariance converged: success True, nothing to raise
    line = mml.linear_fit(np.array([0.0, 1.0]), np.array([1.0, 3.0]))
    assert mml.Status(int(line.status)) == mml.Status.COVARIANCE_UNDEFINED
    assert mml.raise_for_status(line) is line
    points = mml.lagrange_stationary_points(
        lambda x: x[0] * x[1], lambda x: jnp.array([x @ x - 1.0]), jnp.ones((2, 2)) * 0.5
    )
    with pytest.raises(TypeError, match="status"):
        mml.raise_for_status(points)


def test_status_helpers_inside_jit_say_so():
    # JAX's TracerArrayConversionError named neither the helper nor what to do instead.
    calls = {
        "raise_for_status": lambda s: mml.raise_for_status(mml.RootResult(s, s, s == 0, s, s, s)),
        "status_message": mml.status_message,
        "summarise_status": mml.summarise_status,
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"{name} reads status codes on the host"):
            jax.jit(call)(jnp.asarray(0, jnp.int32))


def test_args_that_hold_no_numbers_are_refused_by_name():
    # A string or a function in args (jaxopt's run(x0, *args) met the same) failed inside the
    # solver's jit with JAX's "Error interpreting argument to <function _run> ... not marked as
    # static using the static_argnums": an internal function, an option the caller cannot set
    f = lambda x, c, kind: jnp.sum((x - c) ** 2)  # noqa: E731
    g = lambda x, c, kind: x - c  # noqa: E731
    xs = jnp.zeros(2)
    calls = [
        ("bfgs", "args[1]", lambda a: mml.bfgs(f, xs, args=a)),
        ("optax_minimise", "args[1]", lambda a: mml.optax_minimise(f, xs, optax.sgd(0.1), args=a)),
        ("newton_raphson", "args[1]", lambda a: mml.newton_raphson(g, xs, args=a)),
        ("bisection", "args[1]", lambda a: mml.bisection(g, 0.0, 2.0, args=a)),
        ("least_squares", "args[1]", lambda a: mml.least_squares(g, xs, args=a)),
        ("minimise_constrained", "args[1]", lambda a: mml.minimise_constrained(f, xs, args=a)),
        ("hvp", "args[1]", lambda a: mml.hvp(f, xs, xs, args=a)),
    ]
    for name, where, call in calls:
        for bad in ("l2", jnp.sum):
            with pytest.raises(TypeError, match=rf"^{name}: {re.escape(where)} is a .*functools"):
                call((1.0, bad))
    # numbers of every kind pass, nested too
    h = lambda x, d, t: jnp.sum((x - d["c"] * t[2]) ** 2) * t[1]  # noqa: E731
    res = mml.bfgs(h, xs, args=({"c": np.float32(1.0)}, (True, 2, np.arange(2), None)))
    assert bool(res.success)


def test_args_of_numpy_low_precision_dtypes_pass_the_numbers_check():
    # NumPy arrays of ml_dtypes' bfloat16, float8 and int4 (np.asarray of a JAX bfloat16 array)
    # have dtype.kind 'V': check_args(arrays=True) refused them as holding no numbers, though JAX
    # traces them. Each call gets past args to the routine's own check of rtol=-1 (no compile).
    import ml_dtypes

    f = lambda x, c: jnp.sum((x - c.astype(x.dtype)) ** 2)  # noqa: E731
    xs = jnp.zeros(2)
    good = [
        np.asarray(jnp.ones(2, jnp.bfloat16)),
        ml_dtypes.bfloat16(1.5),
        np.ones(2, jnp.float8_e4m3fn),
        np.ones(2, jnp.int4),
    ]
    for c in good:
        for call in (mml.bfgs, mml.least_squares):
            with pytest.raises(ValueError, match="rtol must be"):
                call(f if call is mml.bfgs else lambda x, c: x - c, xs, args=(c,), rtol=-1.0)
    with pytest.raises(TypeError, match=r"args\[0\] is a ndarray"):
        mml.bfgs(f, xs, args=(np.array([1.0, 2.0], dtype=object),), rtol=-1.0)


@pytest.mark.parametrize(
    "call, hint",
    [
        (
            lambda: mml.bfgs(lambda x: jnp.sum(x**2), jnp.ones(2), maxiter=10),
            "'maxiter' (use max_iter)",
        ),
        (lambda: mml.lbfgs(lambda x: jnp.sum(x**2), jnp.ones(2), tol=1e-3), "'tol' (use atol)"),
        (
            lambda: mml.least_squares(lambda x: x - 1.0, jnp.ones(2), max_steps=5),
            "'max_steps' (use max_iter)",
        ),
        (
            lambda: mml.curve_fit(
                lambda x, p: p[0] * x, jnp.ones(3), jnp.ones(3), jnp.ones(1), max_iters=3
            ),
            "'max_iters' (did you mean 'max_iter'?)",
        ),
    ],
)
def test_peer_option_names_are_pointed_to_ours(call, hint):
    # jaxopt's maxiter/tol and optimistix's max_steps met Python's bare "unexpected keyword
    # argument" in the minimisers and fits (the root finders named ours already)
    with pytest.raises(TypeError, match="Known options") as info:
        call()
    assert hint in str(info.value)


def test_leading_arguments_pass_by_keyword_through_the_option_check():
    # suggest_options took only keyword-only names as known: bfgs(f=f, x0=x0), scipy's
    # curve_fit(model, x, y, p0=p0) and optax_minimise(f, x0, optimizer=opt) were refused as
    # "unknown option(s): 'x0'" although the signatures name them. Each call here reaches the
    # routine's own check of rtol=-1.0 (no compile), so the leading arguments got through.
    import optax

    f = lambda x: jnp.sum((x - 1.0) ** 2)  # noqa: E731
    x0 = jnp.zeros(2)
    xs = jnp.linspace(0.0, 1.0, 5)
    calls = [
        lambda: mml.bfgs(f=f, x0=x0, rtol=-1.0),
        lambda: mml.lbfgs(f, x0=x0, rtol=-1.0),
        lambda: mml.gradient_descent(f=f, x0=x0, rtol=-1.0),
        lambda: mml.newton_minimise(f, x0=x0, rtol=-1.0),
        lambda: mml.optax_minimise(f, x0, optimizer=optax.sgd(0.1), rtol=-1.0),
        lambda: mml.least_squares(fun=lambda x: x - 1.0, x0=x0, rtol=-1.0),
        lambda: mml.curve_fit(lambda x, p: p[0] * x + p[1], xs, xs, p0=x0, rtol=-1.0),
        lambda: mml.curve_fit(model=lambda x, p: p[0] * x, x=xs, y=xs, p0=x0[:1], rtol=-1.0),
        lambda: mml.minimise_constrained(f=f, x0=x0, rtol=-1.0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="rtol must be"):
            call()
    with pytest.raises(TypeError, match="unknown option"):
        mml.bfgs(f, x1=x0)
