"""What every minimiser shares: the result type, input checks and the jit-compiled runner (private).

Each solver module supplies ``init(problem, x0, rtol, atol, dynamic, static) -> (state, Progress,
step)``, with a state that has the fields ``f`` (the value), ``g`` (the gradient; or
``grad_norm``, its largest component) and ``n_fev``. :func:`run_minimiser`
validates the input, flattens pytree parameters (``ravel_pytree``) when the solver works on vectors,
runs the solver on the iteration driver, wraps the run in implicit differentiation of
``grad f(x, *args) = 0`` and returns a :class:`MinimiseResult` in the caller's structure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from ._driver import History, check_loop_options, iterate
from ._implicit import solve_with_implicit_grad, tangent_solve_for, value_by_envelope
from ._static import static_function
from ._status import Status
from ._tree import (
    PyTree,
    as_strong_inexact,
    check_args,
    check_bool,
    check_real_output,
    default_tolerances,
    dtype_of,
    is_concrete,
    promote,
    tree_dtype,
    tree_max_abs,
    value_of_pair,
)

__all__ = ["MinimiseResult"]


class MinimiseResult(NamedTuple):
    """The result of every minimiser (a pytree: it batches under ``jax.vmap``).

    Attributes:
        x: the minimiser found, in the structure and dtypes of ``x0`` (an array or a pytree;
            a pytree mixing float32 and float64 leaves is solved in float64, as ``f`` sees it,
            and each leaf returned in its own dtype).
        value: ``f(x, *args)``.
        grad_norm: the largest absolute component of the gradient at ``x``.
        n_iter: the number of iterations.
        n_fev: the number of evaluations of ``f`` (each with its gradient), line searches included.
        success: ``status == Status.SUCCESS``.
        status: a :class:`Status` code.
        history: with ``history=True`` (or a length), a :class:`History` of ``x`` (same structure
            as ``x0``, with a leading iteration axis) and ``f`` per iteration; else ``None``.
        aux: with ``has_aux=True``, the auxiliary output of ``f`` at ``x``; else ``None``.
    """

    x: PyTree
    value: jax.Array
    grad_norm: jax.Array
    n_iter: jax.Array
    n_fev: jax.Array
    success: jax.Array
    status: jax.Array
    history: History | None = None
    aux: Any = None


class Problem(NamedTuple):
    """The objective seen by a solver: ``x`` is a flat vector (or the pytree, for optax)."""

    value: Callable[[Any], jax.Array]
    value_and_grad: Callable[[Any], tuple[jax.Array, Any]]
    grad: Callable[[Any], Any]


def gradient_converged(g: PyTree, atol: jax.Array) -> jax.Array:
    """The first-order test ``max_i |g_i| <= atol`` (scipy's ``gtol``, on the largest component).

    Absolute, on purpose. A gradient has the units of ``f`` per unit of ``x``, and ``f`` itself
    gives it no scale: ``|f|`` holds any constant offset, and for ``f* = 0`` a test
    ``|g| <= rtol |f|`` is met *far* from the minimum (for ``f = (x - c)^2`` wherever
    ``|x - c| >= 2 / rtol``: at ``x = 0`` for ``c = 1e4`` in float32). Where rounding keeps the
    gradient above ``atol`` (a large ``f*`` in float32, say), the methods with a model step stop on
    that step instead (a full step within ``atol + rtol |x|``: the Cauchy test of the driver or of
    Newton), or report the line search that rounding stopped.
    """
    return gradient_small(tree_max_abs(g), atol)


def gradient_small(g_max: jax.Array, atol: jax.Array) -> jax.Array:
    """:func:`gradient_converged` from ``g_max = max_i |g_i|``, for a solver that keeps it."""
    return g_max <= atol


def relative_gradient_small(g_scaled: jax.Array, f: jax.Array, rtol) -> jax.Array:
    """Dennis & Schnabel's scaled gradient test, the guard of a quasi-Newton Cauchy test
    (``g_scaled``: :func:`scaled_gradient`), and of Newton's tests of a short step.

    ``max_i |g_i| max(|x_i|, 1) <= max(rtol^(2/3), eps^(1/3)) |f|``: the relative change of ``f``
    per relative change of ``x`` (unit typical sizes of ``x``). A quasi-Newton model that has not
    learnt the curvature of a badly scaled valley proposes ever shorter steps there, which pass
    the step-and-value test far from any minimum (MGH's Meyer problem: BFGS stopped at ``f =
    1.1e5``, ``|g| = 567``, against ``f* = 87.9``); the gradient tells. ``rtol^(2/3)`` is
    Dennis & Schnabel's ``eps^(1/3)`` at the default ``rtol = sqrt(eps)`` (6e-6 in float64).

    Their denominator is ``max(|f|, typf)``, with ``typf`` the typical size of ``f`` at the
    minimum, 1 by default; here ``typf = 0``. With 1, a minimum whose value is small was passed
    early: float32 BFGS stopped on Bard's problem at ``f = 9.98e-3`` against ``f* = 8.21e-3``
    (|g| = 2.4e-3), and the float64 runs of docs/mgh.md reported 3 improvable successes. Where
    ``f* = 0`` the guard never passes near the minimum (``g ~ sqrt(f)``): the absolute gradient
    test, ``max|g| <= atol``, ends those runs.

    Reference: J. E. Dennis, R. B. Schnabel, *Numerical Methods for Unconstrained Optimization and
    Nonlinear Equations* (1983), section 7.2.
    """
    eps = jnp.finfo(f.dtype).eps
    tol = jnp.maximum(jnp.asarray(rtol, f.dtype) ** (2.0 / 3.0), eps ** (1.0 / 3.0))
    return g_scaled <= tol * jnp.abs(f)


def scaled_gradient(g: jax.Array, x: jax.Array) -> jax.Array:
    """``max_i |g_i| max(|x_i|, 1)``, the numerator of :func:`relative_gradient_small`."""
    return jnp.max(jnp.abs(g) * jnp.maximum(jnp.abs(x), 1.0))


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The static part of a run (hashable: it is a static argument of the jit-compiled runner)."""

    init: Callable
    f: Callable
    flat: bool
    max_iter: int
    history: int
    verbose: bool
    cauchy: bool
    name: str
    static: tuple
    self_counting: bool
    check_finite: bool
    has_aux: bool = False


def _check_scalar(f, x0, args, has_aux=False):
    out = jax.eval_shape(lambda x, a: f(x, *a), x0, args)
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        shape = getattr(out, "shape", type(out).__name__)
        if has_aux:
            raise ValueError(
                f"with has_aux=True, the value of f's pair (value, aux) must be a scalar, got "
                f"output of shape {shape}"
            )
        hint = ""
        if isinstance(out, tuple | list) and len(out) == 2:
            hint = " (an f that returns a pair (value, aux) needs has_aux=True)"
        raise ValueError(f"f must return a scalar, got output of shape {shape}{hint}")
    check_real_output("f", out.dtype)


def _run(spec: _Spec, x0, args, rtol, atol, dyn, limit):
    f = value_of_pair(spec.f, spec.name) if spec.has_aux else spec.f
    # The solve runs in the leaves' common dtype (f sees them so); x and its history come back
    # in x0's dtypes, leaf by leaf.
    x0, restore = promote(x0, tree_dtype(x0))
    _check_scalar(f, x0, args, spec.has_aux)
    if spec.flat:
        flat0, unravel = ravel_pytree(x0)
    else:
        flat0, unravel = x0, lambda u: u

    # f's value in x0's dtype: an f computing in float64 from a float32 x0 (data in float64
    # under x64) would otherwise change the loop carry's dtype
    dtype = jnp.result_type(*jax.tree.leaves(flat0))

    def value(x, a):
        # (jnp.asarray: a constant objective may return a Python float)
        return jnp.asarray(f(unravel(x), *a)).astype(dtype)

    def solve(guess):
        fun = Problem(
            value=lambda x: value(x, args),
            value_and_grad=lambda x: jax.value_and_grad(value)(x, args),
            grad=lambda x: jax.grad(value)(x, args),
        )
        options = dict(spec.static, max_iter=spec.max_iter)
        state, progress, step = spec.init(fun, guess, rtol, atol, dyn, options)
        out = iterate(
            step,
            state,
            progress,
            # A self-counting solver stops itself after max_iter iterations and a final test.
            max_iter=min(spec.max_iter + 1, 2**31 - 1) if spec.self_counting else spec.max_iter,
            rtol=rtol,
            atol=atol,
            cauchy=spec.cauchy,
            history=spec.history,
            verbose=spec.verbose,
            name=spec.name,
            count=(lambda st: st.n_iter) if spec.self_counting else None,
            check_finite=spec.check_finite,
            f_limit=limit,
        )
        state = out.state
        if hasattr(state, "grad_norm"):
            # A solver that tests the gradient at the start of its step (Newton) holds the last
            # tested point's; a stop on the objective limit moved x after that test, and a stop
            # before any step (f NaN at x0: NONFINITE) left none (NaN, where the others report
            # the gradient at x0).
            grad_norm = lax.cond(
                (out.status == int(Status.UNBOUNDED)) | jnp.isnan(state.grad_norm),
                lambda: tree_max_abs(fun.grad(state.x)).astype(state.grad_norm.dtype),
                lambda: state.grad_norm,
            )
        else:
            grad_norm = tree_max_abs(state.g)
        aux = (
            state.f,
            grad_norm,
            state.n_iter if spec.self_counting else out.n_iter,
            state.n_fev,
            out.status,
            out.history,
        )
        # Every minimiser's state holds the iterate it reports (the driver's progress.x): read
        # it there, so that XLA need not carry the progress's copy of x through the loop.
        return state.x, aux

    def optimality(x):
        return jax.grad(value)(x, args)

    # The tangent system is the Hessian at the solution: materialised (n Hessian-vector
    # products) and solved densely up to 1000 unknowns, by conjugate gradients above (at
    # n = 2000 a gradient through lbfgs took 0.48 s, the solve itself 9 ms).
    x, (val, gnorm, n_iter, n_fev, status, hist) = solve_with_implicit_grad(
        optimality,
        flat0,
        solve,
        # (flat0 is the pytree itself for optax: count its elements)
        tangent_solve=tangent_solve_for(
            sum(int(np.size(leaf)) for leaf in jax.tree.leaves(flat0)), symmetric=True
        ),
    )
    if hist is not None:
        hist = hist._replace(x=restore(jax.vmap(unravel)(hist.x) if spec.flat else hist.x))
    aux = spec.f(unravel(x), *args)[1] if spec.has_aux else None
    return MinimiseResult(
        x=restore(unravel(x)),
        # f_x = 0 at the minimum: the value's derivative is f's in args (envelope theorem)
        value=value_by_envelope(val, lambda u: value(u, args), x),
        grad_norm=gnorm,
        n_iter=n_iter,
        n_fev=n_fev,
        success=status == int(Status.SUCCESS),
        status=status,
        history=hist,
        aux=aux,
    )


_run_jit = jax.jit(_run, static_argnums=(0,))


def run_minimiser(
    init: Callable,
    f: Callable,
    x0: PyTree,
    args: tuple,
    *,
    name: str,
    max_iter: int,
    rtol: float | None,
    atol: float | None,
    history: bool | int,
    verbose: bool,
    cauchy: bool,
    flat: bool = True,
    self_counting: bool = False,
    check_finite: bool = True,
    objective_limit: float | None = None,
    dynamic: dict | None = None,
    static: dict | None = None,
    has_aux: bool = False,
) -> MinimiseResult:
    """Validate the input and run ``init``'s solver, jit-compiled once per static configuration.

    ``self_counting=True`` is for a solver that tests the point a step reaches at the start of
    the next step (where it evaluates the gradient anyway), so that a run ends with one driver
    step that only tests. Its state counts the iterations (``n_iter``), its step reports
    ``Status.MAX_ITER`` when ``n_iter`` reaches ``options["max_iter"]``, and the history is
    recorded per iteration. ``check_finite=False`` is for a solver that guarantees finite
    progress itself (a non-finite start reported as ``Status.NONFINITE`` by its initial
    progress, steps only to finite points): the driver then skips its non-finite test, which
    under ``vmap`` selects every carried array on the new status every step.

    ``objective_limit``: the public option (see :func:`check_objective_limit`), traced.
    ``dynamic`` options (floats) are traced, so new values do not recompile; ``static`` options
    (ints, strings, callables) are part of the compilation key.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    args = check_args(name, args, arrays=True)
    max_iter, history = check_loop_options(max_iter, history)
    x0 = as_strong_inexact(x0, "x0")  # (promoted inside the jit)
    if not jax.tree.leaves(x0):
        raise ValueError("x0 must hold at least one array")
    if not any(np.size(leaf) for leaf in jax.tree.leaves(x0)):
        raise ValueError("x0 has no elements (size 0): there is nothing to minimise")
    dtype = tree_dtype(x0)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"x0 must be real, got dtype {dtype}")
    rtol, atol = default_tolerances(dtype, rtol, atol, traced=True)
    spec = _Spec(
        init=init,
        f=static_function(f),
        flat=flat,
        max_iter=max_iter,
        history=history,
        verbose=check_bool("verbose", verbose),
        cauchy=cauchy,
        name=name,
        static=tuple(sorted((static or {}).items())),
        self_counting=self_counting,
        check_finite=check_finite,
        has_aux=check_bool("has_aux", has_aux),
    )
    dyn = {k: jnp.asarray(v, dtype) for k, v in (dynamic or {}).items()}
    limit = jnp.asarray(check_objective_limit(objective_limit), dtype)
    return _run_jit(spec, x0, args, jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype), dyn, limit)


def check_objective_limit(value) -> Any:
    """The ``objective_limit`` option: a real scalar (traced or not; ``-inf`` or ``None``: off).

    Every minimiser stops with ``Status.UNBOUNDED`` at the first iterate where ``f`` falls below
    it (MATLAB's ``ObjectiveLimit``, also -1e20 by default): on a problem unbounded below, a
    line search otherwise walks on until ``max_iter``, overflow (``NONFINITE``) or a line
    search that rounding stops, each reported with advice that does not fit.
    """
    if value is None:
        return -jnp.inf
    if isinstance(value, bool) or np.ndim(value) != 0:
        raise ValueError(f"objective_limit must be a real scalar or None, got {value!r}")
    if isinstance(value, int):
        # A Python int beyond int64 (-10**20, the default written as an integer) has no JAX
        # dtype ("got dtype object"); the limit is compared in f's floating dtype anyway.
        try:
            value = float(value)
        except OverflowError:  # beyond float64 too: -10**400 is no limit
            value = -np.inf if value < 0 else np.inf
    dtype = dtype_of(value)
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(f"objective_limit must be a real scalar or None, got dtype {dtype}")
    if is_concrete(value) and np.isnan(float(value)):
        raise ValueError("objective_limit must not be NaN (None switches the test off)")
    return value
