"""Nonlinear least squares of a residual function: ``least_squares`` (private).

``curve_fit`` fits a model to data; many problems are least squares without data in that form
(a system of equations solved in the least-squares sense, residuals that mix several datasets or
penalties, scipy's ``least_squares``, jaxopt's ``LevenbergMarquardt`` and ``GaussNewton`` and
optimistix's ``least_squares`` all take a residual function). This module runs the same
iterations as ``curve_fit`` (:mod:`._fit_lm`: Levenberg-Marquardt, Gauss-Newton, gradient
descent; robust losses; bounds by MINUIT's change of variables) on ``fun(x, *args)``, with the
driver and implicit differentiation of every other solver.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._driver import iterate, make_progress
from ._fit_data import Bounds, make_bounds, to_external, to_internal
from ._fit_lm import (
    DEFAULT_MAX_ITER,
    METHODS,
    STEPS,
    final_status,
    gradient_cosine,
    init,
    make_problem,
    stationarity,
    unresolved_in_half,
    value_and_jacfwd,
)
from ._fit_losses import LOSSES, robust_scale
from ._fit_stats import spd_inverse
from ._implicit import solve_with_implicit_grad
from ._small_linalg import diagonal, gram
from ._static import static_function
from ._status import Status
from ._tree import (
    as_strong_inexact,
    check_args,
    check_bool,
    check_choice,
    check_positive_int,
    check_real_output,
    default_tolerances,
    is_concrete,
    is_real_scalar,
    promote,
    suggest_options,
    tree_dtype,
    value_of_pair,
)

__all__ = ["LeastSquaresResult", "least_squares"]

PyTree = Any


class LeastSquaresResult(NamedTuple):
    """The result of :func:`least_squares`.

    Attributes:
        x: the solution, with ``x0``'s structure and dtypes.
        cost: half the (robust) sum of squares at ``x``,
            :math:`\\tfrac12 \\sum_i C^2 \\rho(f_i^2 / C^2)` (:math:`\\tfrac12 \\sum_i f_i^2` for
            the linear loss), as scipy's ``least_squares`` reports it.
        fun: the residuals at ``x``, with ``fun``'s output structure.
        jac: the Jacobian of the residuals at ``x``, ``(m, n)``: the residuals' leaves
            flattened and concatenated against ``x``'s (``jax.flatten_util.ravel_pytree``'s
            order); for ``x`` and residuals that are vectors, :math:`\\partial f_i / \\partial x_j`.
            With the linear loss and residuals :math:`(y - f)/\\sigma`,
            ``inv(jac.T @ jac)`` is the covariance of ``x`` (``curve_fit`` computes it).
        grad_norm: the largest component of the cost's gradient :math:`J^T \\rho' f` at ``x``
            (scipy's ``optimality``); with bounds, of the projected gradient
            ``x - clip(x - g, lower, upper)`` (0 for a parameter held on a bound that the
            gradient pushes against).
        n_iter: iterations taken.
        success: whether a convergence test passed.
        status: a :class:`Status` code (see :func:`least_squares`).
        aux: with ``has_aux=True``, the auxiliary output of ``fun`` at ``x``; else ``None``.
    """

    x: PyTree
    cost: jax.Array
    fun: PyTree
    jac: jax.Array
    grad_norm: jax.Array
    n_iter: jax.Array
    success: jax.Array
    status: jax.Array
    aux: Any = None


@dataclasses.dataclass(frozen=True)
class _Spec:
    """The static part of a solve (a static argument of the jit-compiled runner)."""

    fun: Callable
    method: str
    loss: str
    max_iter: int
    bounded: bool
    has_aux: bool = False


def _run(spec: _Spec, x0, args, lo, hi, f_scale, rtol, atol):
    x0, restore = promote(x0, tree_dtype(x0))
    flat0, unravel = ravel_pytree(x0)
    dtype = flat0.dtype
    fun = value_of_pair(spec.fun, "least_squares", "fun") if spec.has_aux else spec.fun
    out_shape = _check_residuals(fun, x0, args)  # (at trace time only)
    out_unravel = ravel_pytree(jax.tree.map(lambda s: jnp.zeros(s.shape, dtype), out_shape))[1]
    bounds = Bounds(lo, hi) if spec.bounded else None

    def residual(p, a):
        flat = [jnp.ravel(leaf).astype(dtype) for leaf in jax.tree.leaves(fun(unravel(p), *a))]
        return jnp.concatenate(flat) if len(flat) > 1 else flat[0]

    def problem():
        return make_problem(lambda p: residual(p, args), spec.loss, f_scale, bounds=bounds)

    def solve(guess):
        state = init(guess, method=spec.method)
        out = iterate(
            STEPS[spec.method](problem(), rtol, atol),
            state,
            make_progress(state.u, state.cost),
            max_iter=spec.max_iter,
            rtol=rtol,
            atol=atol,
            cauchy=False,
            name="least_squares",
        )
        return out.state.u, (out.n_iter, out.status, out.state.n_accepted, out.state.cost)

    def optimality(u):
        return stationarity(problem(), u)

    u0 = to_internal(flat0, bounds) if spec.bounded else flat0
    u, (n_iter, status, n_accepted, last_cost) = solve_with_implicit_grad(optimality, u0, solve)
    p = to_external(u, bounds) if spec.bounded else u

    r, jac = value_and_jacfwd(lambda q: residual(q, args), p)
    rs, js, cost = robust_scale(spec.loss, r, jac, f_scale)
    g = js.T @ rs
    grad = g if bounds is None else p - jnp.clip(p - g, bounds.lo, bounds.hi)
    status = _final_status(status, n_accepted, last_cost, js, g, grad, cost, rtol)
    # float16 and bfloat16: a success is confirmed by the Gauss-Newton step from the result
    short = unresolved_in_half(problem(), u, rtol, atol)
    status = jnp.where((status == int(Status.SUCCESS)) & short, int(Status.PRECISION_LIMIT), status)
    if bounds is not None:
        # (what the eager call raises for, traced bounds or x0 give as a status)
        bad = jnp.any(~(lo < hi)) | jnp.any((flat0 < lo) | (flat0 > hi))
        status = jnp.where(bad, int(Status.INVALID_INPUT), status)
    status = jnp.where((f_scale > 0) & jnp.isfinite(f_scale), status, int(Status.INVALID_INPUT))
    status = status.astype(jnp.int32)
    return LeastSquaresResult(
        x=restore(unravel(p)),
        cost=0.5 * cost,
        fun=out_unravel(r),
        jac=jac,
        grad_norm=jnp.max(jnp.abs(grad)),
        n_iter=n_iter,
        success=status == int(Status.SUCCESS),
        status=status,
        aux=spec.fun(unravel(p), *args)[1] if spec.has_aux else None,
    )


def _final_status(status, n_accepted, last_cost, js, g, grad, cost, rtol):
    """:func:`._fit_lm.final_status`, with ``near`` (the Gauss-Newton step from ``x`` would
    lower the cost by at most ``rtol`` of it) and the gradient's cosine taken on ``grad``, the
    gradient ``g`` projected onto the bounds where there are any (a parameter held on its bound
    by the gradient counts as stationary there)."""
    a = gram(js)
    inverse, regular = spd_inverse(a)
    near = regular & (g @ (inverse @ g) <= rtol * cost)
    # (with bounds, of the projected gradient: a parameter held on its bound keeps a gradient.
    # Bounds of +-1e30 resolve a parameter only to 4e14, and x0 = 1 was placed at -2.2e14:
    # SUCCESS after one iteration at a cost of 2.5e28, where curve_fit says PRECISION_LIMIT)
    cos = gradient_cosine(grad, diagonal(a), cost)
    return final_status(status, n_accepted, last_cost, cos, near, rtol, js)


_run_jit = jax.jit(_run, static_argnums=(0,))


@suggest_options
def least_squares(
    fun: Callable,
    x0: PyTree,
    *,
    args: tuple = (),
    method: str = "lm",
    loss: str = "linear",
    f_scale: float = 1.0,
    bounds=None,
    max_iter: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    has_aux: bool = False,
) -> LeastSquaresResult:
    r"""Minimise a sum of squares of residuals ``fun(x, *args)``, as scipy's ``least_squares``.

    Finds a local minimum of

    .. math:: F(x) = \tfrac12 \sum_i C^2 \rho\big(f_i(x)^2 / C^2\big)

    (:math:`\tfrac12 \sum_i f_i(x)^2` for ``loss="linear"``) from ``x0``, with the iterations of
    :func:`curve_fit` (which calls this with :math:`f = (y - \mathrm{model}(x, p)) / \sigma`):

    * ``"lm"``: Levenberg-Marquardt, :math:`(J^T J + \lambda D) h = -J^T f` with MINPACK's
      scaling ``D`` (the running maximum of :math:`\mathrm{diag}(J^T J)`), Nielsen's update of
      :math:`\lambda` and geodesic acceleration (Transtrum and Sethna), ``J`` by forward-mode
      AD (one pass per parameter: suited to more residuals than parameters);
    * ``"gauss-newton"``: :math:`J^T J h = -J^T f` with a backtracking line search;
    * ``"gradient-descent"``: steepest descent on :math:`F` with a line search (slow).

    It stops when the cost's predicted and actual relative reductions are below ``rtol**2``,
    when every parameter's step (undamped) is below ``rtol |x_i| + atol`` or moves the
    residuals by less than ``rtol |f|``, or when the gradient is orthogonal to the residuals
    to machine precision (MINPACK's ``ftol``, ``xtol`` and ``gtol``); or where ``F = 0``.

    ``x`` may be a pytree, and ``fun`` may return one (its leaves' residuals are concatenated).
    Bounds are kept by a smooth change of variables (MINUIT's), so every iterate lies within
    them. Under ``jax.vmap`` each problem gets its own status; the solution is differentiable
    with respect to ``args`` by implicit differentiation of :math:`J^T \rho' f = 0`.

    Args:
        fun: the residuals ``fun(x, *args)``: an array (any shape) or a pytree of arrays.
        x0: the starting point (an array or a pytree of arrays; ints become floats).
        args: extra arguments of ``fun``; the solution is differentiable with respect to them.
        method: ``"lm"`` (default), ``"gauss-newton"`` or ``"gradient-descent"``.
        loss: ``"linear"``, ``"huber"``, ``"soft_l1"`` or ``"cauchy"``, as in scipy.
        f_scale: the residual scale ``C`` beyond which a residual counts as an outlier.
        bounds: ``(lower, upper)``, each a scalar or with ``x0``'s structure; ``+-inf`` (or
            ``None``) for no bound. ``x0`` must lie within them. A parameter is resolved only
            to about ``eps`` times its distance from its bound (the span midway between two):
            bounds of +-1e30 as "no bound" cannot place ``x0 = 1`` (``PRECISION_LIMIT``); use
            ``+-inf``.
        max_iter: the most iterations (default 200; 20000 for gradient descent).
        rtol, atol: tolerances (default ``sqrt(eps)`` of the dtype and 0).
        has_aux: ``fun`` returns ``(residuals, aux)`` (jaxopt's and optimistix's
            ``has_aux``); ``aux`` is evaluated at the solution and returned in the result's
            ``aux`` field (differentiable, through ``x``).

    Returns:
        :class:`LeastSquaresResult`; ``status`` is ``SUCCESS``, ``MAX_ITER``,
        ``PRECISION_LIMIT`` (the dtype cannot resolve the cost's change: no step lowered it
        measurably; or, in float16 and bfloat16, the Gauss-Newton step from ``x`` would still
        lower it by more than ``rtol`` of it: use float32), ``LINESEARCH_FAILED`` or ``SINGULAR`` (Gauss-Newton, gradient descent),
        ``NONFINITE`` (NaN or inf in ``x0``, the residuals or their Jacobian) or
        ``INVALID_INPUT`` (traced bounds crossed or not holding ``x0``, ``f_scale <= 0``).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> def residuals(x):   # Rosenbrock as least squares
        ...     return jnp.array([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])
        >>> res = mml.least_squares(residuals, jnp.array([-1.2, 1.0]))
        >>> print(res.x.round(6), float(res.cost) < 1e-20, res.success)
        [1. 1.] True True

    References:
        J. J. More, "The Levenberg-Marquardt algorithm: implementation and theory", Lecture Notes
        in Mathematics 630 (1978). H. B. Nielsen, IMM-REP-1999-05. M. K. Transtrum and J. P.
        Sethna, arXiv:1201.5885 (2012). scipy.optimize.least_squares.
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable as fun(x, *args), got {type(fun).__name__}")
    args = check_args("least_squares", args, arrays=True)
    method = check_choice("method", method, METHODS)
    loss = check_choice("loss", loss, LOSSES)
    max_iter = (
        DEFAULT_MAX_ITER[method] if max_iter is None else check_positive_int("max_iter", max_iter)
    )
    if np.ndim(f_scale) != 0 or not is_real_scalar(f_scale):
        raise TypeError(f"f_scale must be a real number (the residual scale C), got {f_scale!r}")
    if is_concrete(f_scale) and not 0 < float(f_scale) < math.inf:
        raise ValueError(f"f_scale must be positive and finite, got {f_scale!r}")
    x0 = as_strong_inexact(x0, "x0")
    leaves, treedef = jax.tree.flatten(x0)
    n = sum(np.size(leaf) for leaf in leaves)
    if n == 0:
        raise ValueError("x0 must hold at least one number (an array or a pytree of arrays)")
    dtype = np.dtype(tree_dtype(x0))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(f"x0 must be real, got dtype {dtype}")
    rtol, atol = default_tolerances(dtype, rtol, 0.0 if atol is None else atol, traced=True)

    b = make_bounds(bounds, (n,), lambda t: ravel_pytree(t)[0], dtype, treedef, "x0")
    if b is not None and is_concrete(x0, *b):
        flat = np.asarray(ravel_pytree(x0)[0])
        if np.any(flat < np.asarray(b.lo)) or np.any(flat > np.asarray(b.hi)):
            raise ValueError("x0 must lie within bounds (lower <= x0 <= upper)")
    lo, hi = (None, None) if b is None else b
    spec = _Spec(
        static_function(fun), method, loss, max_iter, b is not None, check_bool("has_aux", has_aux)
    )
    return _run_jit(
        spec,
        x0,
        args,
        lo,
        hi,
        jnp.asarray(f_scale, dtype),
        jnp.asarray(rtol, dtype),
        jnp.asarray(atol, dtype),
    )


def _check_residuals(fun, x0, args):
    """``fun(x0, *args)``'s output shapes; they must be real residuals, at least one."""
    try:
        out = jax.eval_shape(lambda x, a: fun(x, *a), x0, args)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"fun(x, *args) failed on x0's structure: {exc}") from exc
    except (KeyError, IndexError, AttributeError) as exc:
        # (p[0] on a dict x0: a bare KeyError named neither fun nor x0)
        raise TypeError(
            f"fun(x, *args) failed on x0's structure {jax.tree.structure(x0)}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    leaves = jax.tree.leaves(out)
    if not leaves or not sum(math.prod(leaf.shape) for leaf in leaves):
        raise ValueError("fun(x, *args) must return at least one residual (got none)")
    for leaf in leaves:
        check_real_output("fun(x, *args)", leaf.dtype)
    return out
