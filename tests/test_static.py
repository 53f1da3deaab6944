"""User functions as static arguments: an inline lambda written again reuses its compilation, and
nothing it reads can change without a new one (jaxopt_mml._static)."""

import functools
from typing import NamedTuple

import chex
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from jaxopt_mml import _constrained, _fit_curve, _lagrange_points, _minimise_common, _roots
from jaxopt_mml._static import StaticValue, static_function

K = 2.0  # rebound by the tests below: a global that functions read


def _compilations(jitted, calls):
    before = jitted._cache_size()
    for call in calls:
        call()
    return jitted._cache_size() - before


def test_inline_lambdas_compile_once_per_entry_point():
    x = np.linspace(0.0, 4.0, 20)
    y = 2.0 * np.exp(-0.7 * x) + 0.3
    cases = [
        (_roots._newton_jit, lambda: mml.newton_raphson(lambda u: u**2 - 2.0, 1.0)),
        (
            _minimise_common._run_jit,
            lambda: mml.bfgs(lambda u: jnp.sum((u - 3.0) ** 2), np.zeros(2)),
        ),
        (
            _constrained._minimise_constrained_jit,
            lambda: mml.minimise_constrained(
                lambda u: jnp.sum(u**2), np.ones(2), eq=lambda u: u[0] + u[1] - 1.0
            ),
        ),
        (
            _fit_curve._fit_jit,
            lambda: mml.curve_fit(lambda t, p: p[0] * jnp.exp(-p[1] * t) + p[2], x, y, np.ones(3)),
        ),
        (
            _lagrange_points._solve_all,
            lambda: mml.lagrange_stationary_points(
                lambda u: u[0] ** 2 * u[1], lambda u: jnp.array([u @ u - 1.0]), np.ones((4, 2))
            ),
        ),
    ]
    for jitted, call in cases:
        assert _compilations(jitted, [call, call, call]) <= 1


def test_a_rebound_global_gives_a_new_compilation_not_a_stale_result():
    global K
    roots = []
    for k in (2.0, 3.0, 3.0):
        K = k
        roots.append(float(mml.newton_raphson(lambda u: u**2 - K, 1.0).x))  # noqa: B023
    K = 2.0
    np.testing.assert_allclose(roots, [np.sqrt(2.0), np.sqrt(3.0), np.sqrt(3.0)], rtol=1e-12)


def _helper(u):
    return u**2 - K


def test_a_function_is_judged_by_the_globals_it_reads_at_each_call():
    """The same function object, with a global it reads rebound between calls (``jax.jit`` of
    one function would return the first result again)."""
    global K
    roots = []
    for k in (5.0, 7.0):
        K = k
        roots.append(float(mml.newton_raphson(_helper, 1.0).x))
        roots.append(float(mml.newton_raphson(lambda u: _helper(u), 1.0).x))
    K = 2.0
    np.testing.assert_allclose(roots, np.sqrt([5.0, 5.0, 7.0, 7.0]), rtol=1e-12)


def test_closures_defaults_and_partials_compare_by_value():
    def make(c, power=2):
        return lambda u: u**power - c

    assert static_function(make(2.0)) == static_function(make(2.0))
    assert static_function(make(2.0)) != static_function(make(3.0))
    assert static_function(make(2, power=2)) != static_function(make(2.0, power=2))  # int vs float
    assert static_function(make(2.0, power=3)) != static_function(make(2.0, power=2))
    assert hash(static_function(make(2.0))) == hash(static_function(make(2.0)))

    def g(u, c):
        return u**2 - c

    assert static_function(functools.partial(g, c=2.0)) == static_function(
        functools.partial(g, c=2.0)
    )
    assert static_function(functools.partial(g, c=2.0)) != static_function(
        functools.partial(g, c=3.0)
    )


class _Config:
    k = 2.0

    def residual(self, u):
        return u**2 - self.k


class _Named(NamedTuple):
    c: np.ndarray


@pytest.mark.parametrize(
    "value",
    [np.array(2.0), [2.0], {"k": 2.0}, _Config()],
    ids=["numpy", "list", "dict", "object"],
)
def test_mutable_or_array_values_fall_back_to_identity(value):
    def make():
        return lambda u: u - (value if not isinstance(value, (list, dict, _Config)) else 0.0)

    a, b = make(), make()
    assert static_function(a) != static_function(b)
    assert static_function(a) == static_function(a)


def test_dicts_read_by_a_library_closure_compare_by_content():
    # optax.multi_transform and inject_hyperparams hold dicts in their closures: compared by
    # identity, an optimiser made anew at each call compiled anew (0.4-0.9 s a call).
    optax = pytest.importorskip("optax")

    def make(labels, lr=0.2):
        return optax.multi_transform({"fast": optax.sgd(0.3), "slow": optax.sgd(lr)}, labels)

    labels = {"a": "fast", "b": "slow"}
    assert StaticValue(make(labels)) == StaticValue(make(dict(labels)))
    assert StaticValue(make(labels)) != StaticValue(make(labels, lr=0.1))
    assert StaticValue(make(labels)) != StaticValue(make({"a": "slow", "b": "slow"}))
    before = StaticValue(make(labels))
    labels["a"] = "slow"  # changed in place: another key (the key is made at every call)
    assert StaticValue(make(labels)) != before
    cyclic = {"a": "fast"}
    cyclic["self"] = cyclic
    assert StaticValue(make(cyclic)) != StaticValue(make(cyclic))


def test_optax_optimisers_holding_dicts_compile_once():
    optax = pytest.importorskip("optax")
    x0 = {"a": jnp.zeros(2), "b": jnp.zeros(3)}

    def solve():
        opt = optax.multi_transform(
            {"fast": optax.sgd(0.3), "slow": optax.sgd(0.2)}, {"a": "fast", "b": "slow"}
        )
        f = lambda p: jnp.sum((p["a"] - 1.0) ** 2) + jnp.sum((p["b"] + 2.0) ** 2)  # noqa: E731
        assert bool(mml.optax_minimise(f, x0, opt, max_iter=200).success)

    assert _compilations(_minimise_common._run_jit, [solve, solve]) == 1


def test_an_object_attribute_read_through_a_lambda_is_never_stale():
    cfg = _Config()
    roots = []
    for k in (2.0, 7.0):
        cfg.k = k
        roots.append(float(mml.newton_raphson(lambda u: u**2 - cfg.k, 1.0).x))
    np.testing.assert_allclose(roots, np.sqrt([2.0, 7.0]), rtol=1e-12)


def test_a_mutable_value_inside_a_tuple_or_a_method_is_never_stale():
    # The identity marker of an array inside a tuple (or of a bound method's object) was
    # buried in the tuple's key: a fresh lambda reading it was equal to the last one, and the
    # old compiled program ran with the old values (success at the old root).
    params = (np.array([2.0]),)
    named = _Named(np.array(2.0))
    cfg = _Config()
    roots = {"tuple": [], "namedtuple": [], "method": []}
    for k in (2.0, 9.0):
        params[0][0] = k
        named.c[...] = k
        cfg.k = k
        roots["tuple"].append(float(mml.newton_raphson(lambda u: u**2 - params[0][0], 1.0).x))
        roots["namedtuple"].append(float(mml.newton_raphson(lambda u: u**2 - named.c, 1.0).x))
        roots["method"].append(float(mml.newton_raphson(lambda u: cfg.residual(u), 1.0).x))
    for name, got in roots.items():
        np.testing.assert_allclose(got, [np.sqrt(2.0), 3.0], rtol=1e-12, err_msg=name)

    # a tuple of immutable values still compares by value (no new compilation)
    def make(c):
        return lambda u: u - c[0]

    assert static_function(make((2.0,))) == static_function(make((2.0,)))
    assert static_function(make((2.0,))) != static_function(make((3.0,)))


def test_jax_arrays_compare_by_identity():
    """A JAX array cannot change: the same array read by two lambdas makes them equal, an equal
    but distinct array does not (its values are not compared)."""
    a, b = jnp.asarray([2.0, 3.0]), jnp.asarray([2.0, 3.0])

    def make(c):
        return lambda u: u - c

    assert static_function(make(a)) == static_function(make(a))
    assert static_function(make(a)) != static_function(make(b))
    roots = [mml.newton_raphson(make(c), jnp.zeros(2)).x for c in (a, b * 2)]
    np.testing.assert_allclose(roots[1], 2 * np.asarray(roots[0]), rtol=1e-12)


def test_an_optax_optimiser_made_again_reuses_the_compilation():
    import optax

    def run(lr):
        return mml.optax_minimise(lambda u: jnp.sum((u - 3.0) ** 2), np.zeros(2), optax.adam(lr))

    assert _compilations(_minimise_common._run_jit, [lambda: run(0.1)] * 3) <= 1
    assert static_function(optax.adam(0.1).update) == static_function(optax.adam(0.1).update)
    assert static_function(optax.adam(0.1).update) != static_function(optax.adam(0.2).update)
    fast, slow = run(0.5), run(0.001)  # a different learning rate is a different program
    assert float(fast.value) < float(slow.value)


DATA = np.array([1.0, 2.0])  # rebound by the test below
TABLE = {"slope": 3.0}


def _objective(u):
    return jnp.sum((u - DATA) ** 2)


def _root_of(u):
    return u**3 - TABLE["slope"] ** 3


def test_the_same_function_reading_a_rebound_mutable_global_is_never_stale():
    # The same function object reading a global NumPy array or dict: rebinding the global gave
    # the old compilation's result (the function was keyed by its identity alone).
    global DATA, TABLE
    first = mml.bfgs(_objective, np.zeros(2)).x
    DATA = np.array([3.0, 4.0])
    second = mml.bfgs(_objective, np.zeros(2)).x
    np.testing.assert_allclose([first, second], [[1.0, 2.0], [3.0, 4.0]], rtol=1e-7)
    roots = []
    for slope in (3.0, 5.0):
        TABLE = {"slope": slope}
        roots.append(float(mml.newton_raphson(_root_of, 1.0).x))
    np.testing.assert_allclose(roots, [3.0, 5.0], rtol=1e-10)


def test_signed_zeros_are_different_values():
    def make(c):
        return lambda u: u - jnp.arctan2(c, -1.0)

    assert static_function(make(0.0)) != static_function(make(-0.0))
    xs = [float(mml.newton_raphson(make(c), 0.0).x) for c in (0.0, -0.0)]
    np.testing.assert_allclose(xs, [np.pi, -np.pi], rtol=1e-12)


def test_nans_of_either_sign_are_different_values():
    # repr(-nan) == repr(nan) == "nan": the second call reused the program built for the first
    def make(c):
        return lambda u: u - jnp.where(jnp.signbit(c), 2.0, 3.0)

    assert static_function(make(-np.nan)) != static_function(make(np.nan))
    xs = [float(mml.newton_raphson(make(c), 0.0).x) for c in (-np.nan, np.nan)]
    np.testing.assert_allclose(xs, [2.0, 3.0], rtol=1e-12)


SCALE = 8.0


@functools.wraps(jnp.cbrt)
def _wrapped_like_a_library_function(u):
    return u**3 - SCALE


def test_a_user_function_wrapped_with_a_library_name_still_reads_its_globals():
    global SCALE
    roots = []
    for scale in (8.0, 27.0):
        SCALE = scale
        roots.append(float(mml.newton_raphson(_wrapped_like_a_library_function, 1.0).x))
    np.testing.assert_allclose(roots, [2.0, 3.0], rtol=1e-10)


LR = 0.1


def test_a_gradient_descent_schedule_reading_a_rebound_global_is_never_stale():
    global LR

    def schedule(k):
        return LR

    f = lambda u: jnp.sum(u**2)  # noqa: E731
    LR = 0.1
    slow = mml.gradient_descent(f, np.ones(2), step_size=schedule, max_iter=3).x
    LR = 0.5  # one step to the minimum
    fast = mml.gradient_descent(f, np.ones(2), step_size=schedule, max_iter=3).x
    np.testing.assert_allclose(slow, 0.8**3 * np.ones(2), rtol=1e-12)
    np.testing.assert_allclose(fast, np.zeros(2), atol=1e-12)


class _Quadratic:
    """A callable object that is not hashable (a dataclass with eq, an equinox module...)."""

    __hash__ = None

    def __init__(self, centre):
        self.centre = np.asarray(centre)

    def __call__(self, u):
        return jnp.sum((u - self.centre) ** 2)


def test_unhashable_callables_are_accepted():
    res = mml.bfgs(_Quadratic([1.0, 2.0]), np.zeros(2))
    np.testing.assert_allclose(res.x, [1.0, 2.0], rtol=1e-7)
    fit = mml.curve_fit(_Fitted(), np.linspace(0, 1, 10), 2 * np.linspace(0, 1, 10), np.ones(1))
    np.testing.assert_allclose(fit.params, [2.0], rtol=1e-8)


class _Fitted:
    __hash__ = None

    def __call__(self, x, p):
        return p[0] * x


def test_an_optax_schedule_made_again_reuses_the_compilation():
    # optax's schedules close over a cell that stays empty: it made the optimiser equal only to
    # itself, and every call compiled anew.
    import optax

    def run(rate):
        opt = optax.adam(optax.exponential_decay(0.1, 10, rate))
        return mml.optax_minimise(lambda u: jnp.sum((u - 3.0) ** 2), np.zeros(2), opt, max_iter=50)

    assert _compilations(_minimise_common._run_jit, [lambda: run(0.9)] * 3) <= 1
    fast, slow = run(0.99), run(0.01)  # another decay rate is another program
    assert float(fast.value) < float(slow.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda v: mml.minimise_constrained(
            lambda x: jnp.sum(x**2), jnp.ones(2), eq=lambda x: x[:1] - 1.0, maximise=v
        ),
        lambda v: mml.minimise_constrained(
            lambda x: jnp.sum(x**2), jnp.ones(2), eq=lambda x: x[:1] - 1.0, implicit_diff=v
        ),
        lambda v: mml.bfgs(lambda x: jnp.sum(x**2), jnp.ones(2), verbose=v),
        lambda v: mml.gradient_descent(lambda x: jnp.sum(x**2), jnp.ones(2), nesterov=v),
        lambda v: mml.linear_fit(jnp.arange(4.0), jnp.arange(4.0), absolute_sigma=v),
    ],
)
def test_flags_are_true_or_false_and_say_so(call):
    # bool() took any value: maximise="no" maximised.
    with pytest.raises(TypeError, match="must be True or False"):
        call("no")
    call(np.bool_(False))  # a NumPy bool is a bool


@pytest.mark.parametrize(
    "call",
    [
        lambda k: mml.bfgs(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(2), max_iter=k),
        lambda k: mml.bfgs(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(2), history=k),
        lambda k: mml.newton_raphson(lambda x: x**2 - 2.0, jnp.ones(3), max_iter=k),
        lambda k: mml.bisection(lambda x: x**2 - 2.0, 0.0, 2.0, max_iter=k),
        lambda k: mml.minimise_constrained(
            lambda x: jnp.sum(x**2), jnp.ones(2), eq=lambda x: x[:1] - 1.0, max_iter=k
        ),
        lambda k: mml.curve_fit(
            lambda x, p: p[0] * x + p[1], jnp.arange(5.0), jnp.arange(5.0), jnp.ones(2), max_iter=k
        ),
    ],
)
def test_numpy_integers_are_integers(call):
    # max_iter and history refused np.int64 (other integer options took it).
    python, numpy = call(20), call(np.int64(20))
    chex.assert_trees_all_equal(python, numpy)
    with pytest.raises(ValueError, match="must be"):
        call(-1)


def test_an_optax_optimiser_with_an_array_rate_or_multisteps_made_again_compiles_once():
    """A concrete JAX array in a library's closure was compared by identity, and an
    optax.MultiSteps (an object, not a NamedTuple of closures) too: optax.adam(jnp.asarray(0.1))
    or MultiSteps(adam(0.1), 2) made again compiled anew at every call. Small arrays there are
    compared by value (shape, dtype, bits) and MultiSteps by its attributes; another value is
    another program."""
    import optax

    def run(opt):
        return mml.optax_minimise(lambda u: jnp.sum((u - 3.0) ** 2), np.zeros(2), opt, max_iter=3)

    makers = [
        lambda: optax.adam(jnp.asarray(0.1)),
        lambda: optax.MultiSteps(optax.adam(0.1), every_k_schedule=2),
    ]
    for make in makers:
        assert _compilations(_minimise_common._run_jit, [lambda m=make: run(m())] * 3) <= 1
    assert StaticValue(optax.sgd(jnp.asarray(0.1))) != StaticValue(optax.sgd(jnp.asarray(0.2)))
    assert StaticValue(optax.sgd(jnp.asarray(0.0))) != StaticValue(optax.sgd(jnp.asarray(-0.0)))
    assert StaticValue(optax.sgd(jnp.asarray(0.1, jnp.float32))) != StaticValue(
        optax.sgd(jnp.asarray(0.1))
    )
    ms = functools.partial(optax.MultiSteps, optax.adam(0.1))
    assert StaticValue(ms(every_k_schedule=2)) != StaticValue(ms(every_k_schedule=3))
    fast, slow = (run(optax.sgd(jnp.asarray(r))) for r in (0.1, 0.01))
    assert float(fast.value) < float(slow.value)
