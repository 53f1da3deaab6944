"""Fixed points of maps: ``fixed_point`` (private).

A fixed point :math:`x^* = f(x^*)` is a root of :math:`F(x) = f(x) - x`, but the maps whose fixed
points are wanted (a deep equilibrium layer, a self-consistent field, a value iteration, the
stationary distribution of a Markov chain) are usually contractions whose Jacobian nobody
wants to form: the methods here call ``f`` once per iteration and never differentiate it while
iterating. Its derivatives are taken only for the solution's implicit derivative.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._driver import iterate, make_progress
from ._implicit import solve_with_implicit_grad, tangent_solve_for
from ._roots_common import check_floating_output, check_square, float_dtype, reject_unknown
from ._small_linalg import spd_solver
from ._static import static_function
from ._status import Status
from ._tree import (
    PyTree,
    as_strong_inexact,
    check_args,
    check_callable,
    check_choice,
    check_not_half,
    check_positive_int,
    default_tolerances,
    is_real_scalar,
    promote,
    tree_dtype,
    tree_where,
)

__all__ = ["FixedPointResult", "fixed_point"]

_RUNNING = int(Status.RUNNING)
_METHODS = ("anderson", "iteration")
_OPTIONS = ("args", "method", "memory", "mixing", "rtol", "atol", "max_iter")


class FixedPointResult(NamedTuple):
    """The result of :func:`fixed_point`.

    Attributes:
        x: the fixed point (same structure and dtypes as ``x0``; the last finite iterate on
            failure).
        residual: ``f(x, *args) - x`` at the returned ``x`` (same structure).
        success: ``status == Status.SUCCESS``.
        status: a :class:`Status` code (int32).
        n_iter: the number of iterations taken.
        n_fev: the number of evaluations of ``f``.
    """

    x: PyTree
    residual: PyTree
    success: jax.Array
    status: jax.Array
    n_iter: jax.Array
    n_fev: jax.Array


class _State(NamedTuple):
    xs: jax.Array  # (m, n) the last m iterates, the newest (the current iterate) last
    gs: jax.Array  # (m, n) their residuals f(x) - x
    gram: jax.Array  # (m, m) gs gs^T / scale^2, updated a row at a time
    scale: jax.Array  # the largest |element| of the newest residual (1 where that is 0)
    count: jax.Array  # how many of the newest slots are in use
    n_fev: jax.Array


def _mix(s: _State, mixing: float, ridge: float) -> jax.Array:
    """The next iterate: Anderson's combination of the remembered iterates (type II).

    With residuals :math:`g_i = f(x_i) - x_i` of the last ``m`` iterates, the weights solve
    :math:`\\min_\\alpha \\|\\sum_i \\alpha_i g_i\\|^2 + \\lambda \\|\\alpha\\|^2` subject to
    :math:`\\sum_i \\alpha_i = 1`, that is :math:`\\alpha = z / \\sum z` with
    :math:`(G G^T + \\lambda I) z = 1`; then :math:`x^+ = \\sum_i \\alpha_i (x_i + \\beta g_i)`.
    :math:`\\lambda` is ``ridge`` times each :math:`|g_i|^2` (on the diagonal: scale-free, and a
    residual far smaller than the first ones keeps its weight): it bounds the condition of the
    Gram matrix, which squares that of the residuals. One slot in use gives the
    plain (damped) step :math:`x + \\beta g`.
    """
    m = s.xs.shape[0]
    if m == 1:
        return s.xs[-1] + mixing * s.gs[-1]
    used = np.arange(m) >= m - s.count
    gram = jnp.where(used[:, None] & used[None, :], s.gram, 0)
    # unused slots: a unit diagonal and a zero right-hand side, so their weight is 0
    gram = gram + jnp.diag(jnp.where(used, ridge * jnp.diagonal(gram), 1))
    z = spd_solver(gram)[0](used.astype(gram.dtype))
    alpha = z / jnp.sum(z)
    # (products summed, not a matrix product: under vmap a batched dot of tiny matrices is
    # slower than a fused reduction on a CPU)
    return jnp.sum(alpha[:, None] * (s.xs + mixing * s.gs), axis=0)


def _scale(g: jax.Array) -> jax.Array:
    """The Gram matrix's unit for the newest residual ``g``: its largest ``|g_i|`` (1 for a
    zero ``g``)."""
    scale = jnp.max(jnp.abs(g), initial=0)
    return jnp.where(scale > 0, scale, 1).astype(g.dtype)


def _push(s: _State, x: jax.Array, g: jax.Array) -> _State:
    """``s`` with ``(x, g)`` as its newest iterate (the oldest dropped) and the Gram matrix's
    new row: ``m n`` products instead of ``m^2 n``. (Shifted, not a ring buffer: under vmap a
    per-lane slot index is a scatter.)

    The Gram matrix is kept in units of the newest residual's largest element squared (the
    weights do not depend on its unit): ``g . g`` itself overflows for residuals above
    ``1e154`` (``1e19`` in float32) and underflows below ``1e-154`` (``1e-19``), which made the
    weights NaN, the extrapolation rejected and even the plain step NONFINITE."""
    m = s.xs.shape[0]
    xs = jnp.concatenate([s.xs[1:], x[None]])
    gs = jnp.concatenate([s.gs[1:], g[None]])
    if m == 1:  # (plain iteration: no Gram matrix)
        return _State(xs, gs, s.gram, s.scale, s.count, s.n_fev + 1)
    scale = _scale(g)
    ratio = s.scale / scale
    row = jnp.sum(gs * (g / scale)[None, :], axis=1) / scale
    gram = jnp.pad(s.gram[1:, 1:] * ratio * ratio, ((0, 1), (0, 1)))
    gram = gram.at[-1, :].set(row).at[:, -1].set(row)
    return _State(xs, gs, gram, scale, jnp.minimum(s.count + 1, m), s.n_fev + 1)


def _solve(f: Callable, x0: jax.Array, *, method, memory, mixing, rtol, atol, max_iter):
    """Iterate from the flat ``x0``; returns the driver's output."""
    # (more than n + 1 residuals of n unknowns are linearly dependent: the ridge would decide)
    m = 1 if method == "iteration" else min(memory, x0.shape[0] + 1)
    eps = float(jnp.finfo(x0.dtype).eps)
    ridge = float(np.sqrt(eps))

    def residual(x):
        return f(x) - x

    g0 = residual(x0)
    scale0 = _scale(g0)
    state = _State(
        xs=jnp.zeros((m,) + x0.shape, x0.dtype).at[-1].set(x0),
        gs=jnp.zeros((m,) + x0.shape, x0.dtype).at[-1].set(g0),
        gram=jnp.zeros((m, m), x0.dtype).at[-1, -1].set(jnp.sum((g0 / scale0) ** 2)),
        scale=scale0,
        count=jnp.asarray(1, jnp.int32),
        n_fev=jnp.asarray(1, jnp.int32),
    )
    rt, at = jnp.asarray(rtol, x0.dtype), jnp.asarray(atol, x0.dtype)

    def test(x, g):
        """(finite, converged) by one reduction: the largest excess of |g_i| over its
        tolerance, NaN or inf where g is not finite (a finite g needs a finite x and f(x):
        inf - inf is NaN)."""
        worst = jnp.max(jnp.abs(g) - (at + rt * jnp.abs(x)), initial=-jnp.inf)
        return worst < jnp.inf, worst <= 0

    def progress(ok, small):
        # Only the test and the failure: the driver's Cauchy test and finite test are off, so
        # it reads neither x nor f, and an empty x keeps n-sized arrays out of its carry.
        return make_progress(
            (),
            jnp.zeros((), x0.dtype),
            converged=small,
            failure=jnp.where(ok, _RUNNING, int(Status.NONFINITE)),
        )

    def step(s: _State):
        x = _mix(s, mixing, ridge)
        g = residual(x)
        ok, small = test(x, g)
        # An extrapolation that left f's domain (or overflowed) is rejected: the memory is
        # cleared and the next step is the plain one from the current iterate. A plain step
        # that does so ends the run (NONFINITE, the current iterate kept). (The driver's own
        # finite test is off: one select here keeps the state.)
        pushed = _push(s, x, g)
        kept = s._replace(count=jnp.asarray(1, jnp.int32), n_fev=pushed.n_fev)
        new = tree_where(ok, pushed, kept)
        return new, progress(ok | (s.count > 1), small)

    drv = iterate(
        step,
        state,
        progress(*test(x0, g0)),
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        cauchy=False,
        name="fixed_point",
        check_finite=False,
    )
    return drv


def fixed_point(
    f: Callable[..., Any],
    x0: PyTree,
    *,
    args: tuple = (),
    method: str = "anderson",
    memory: int = 5,
    mixing: float = 1.0,
    rtol: float | None = None,
    atol: float | None = None,
    max_iter: int = 100,
    **options: Any,
) -> FixedPointResult:
    r"""Find a fixed point :math:`x = f(x, *args)` by Anderson acceleration or plain iteration.

    ``method="iteration"`` is the (damped) fixed-point iteration
    :math:`x_{k+1} = x_k + \beta (f(x_k) - x_k)`, :math:`\beta` = ``mixing`` (1: Picard's
    :math:`x_{k+1} = f(x_k)`; below 1: Krasnosel'skii-Mann), which converges linearly, at the
    rate of the map's contraction, from any start where :math:`f` is a contraction.

    ``method="anderson"`` (default) extrapolates from the last ``memory`` iterates
    :math:`x_i` and residuals :math:`g_i = f(x_i) - x_i` (Anderson's type II mixing, as in
    Walker and Ni): the weights :math:`\alpha` minimise :math:`\|\sum_i \alpha_i g_i\|` subject
    to :math:`\sum_i \alpha_i = 1` (with a ridge of :math:`\sqrt{\epsilon}` relative to each
    :math:`|g_i|^2`; at most ``n + 1`` iterates of ``n`` unknowns are used), and :math:`x_{k+1} = \sum_i \alpha_i (x_i + \beta g_i)`. On a
    linear map it is GMRES in disguise (exact after ``n + 1`` iterations with memory ``n``); on
    a smooth map it is much faster than plain iteration and converges on some maps where plain
    iteration does not (a Jacobian eigenvalue below -1). An extrapolation that gives a
    non-finite ``f`` is rejected: the memory is cleared and the plain step taken instead.

    Each iteration calls ``f`` once; ``f`` is never differentiated while iterating.

    Convergence: :math:`|f(x)_i - x_i| \le atol + rtol |x_i|` for every element. The error left
    in :math:`x` is about the residual divided by :math:`1 - L`, :math:`L` the map's
    contraction factor near the fixed point: for a slow contraction tighten the tolerances.

    Failure is reported in ``status``: ``MAX_ITER`` (not converged: raise ``max_iter``, or try
    ``mixing < 1`` where the iteration oscillates), ``NONFINITE`` (NaN or inf in ``x0`` or in
    ``f`` along the path; the last finite iterate is returned).

    The fixed point is differentiable with respect to ``args`` (and what ``f`` closes over) by
    implicit differentiation of :math:`f(x, \theta) - x = 0`:
    :math:`dx^*/d\theta = (I - \partial_x f)^{-1} \partial_\theta f`, a dense solve up to
    1000 unknowns and GMRES (matrix-free, by Jacobian-vector products) above. Where
    ``success`` is False the derivative is the formula's value at the point returned.

    Args:
        f: ``f(x, *args)``, of the same structure and shapes as ``x``.
        x0: the starting point: a scalar, an array or a pytree of arrays (solved as one vector
            in their common dtype; float32 or float64).
        args: extra arguments of ``f`` (a tuple).
        method: ``"anderson"`` or ``"iteration"``.
        memory: the number of iterates Anderson's extrapolation uses (``m``; 1 is plain
            iteration). Its linear algebra is an ``m x m`` solve per iteration.
        mixing: :math:`\beta \in (0, 1]`, the damping of each step.
        rtol: relative tolerance (default :math:`\sqrt{\epsilon}` of the dtype).
        atol: absolute tolerance (default :math:`\sqrt{\epsilon}`).
        max_iter: the largest number of iterations.

    Returns:
        :class:`FixedPointResult`.

    Raises:
        ValueError: when ``f``'s output structure or shapes differ from ``x0``'s, or an option
            is out of range.
        TypeError: for unknown options, or ``f`` returning non-floating values.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.fixed_point(jnp.cos, 1.0)               # the Dottie number
        >>> round(float(res.x), 4), bool(res.success)
        (0.7391, True)
        >>> # its derivative in a parameter: x = a cos x, dx/da = cos x / (1 + a sin x)
        >>> dx_da = jax.grad(lambda a: mml.fixed_point(lambda x, a: a * jnp.cos(x), 1.0,
        ...                                            args=(a,)).x)(1.0)
        >>> round(float(dx_da), 3)
        0.442

    References:
        D. G. Anderson, Iterative procedures for nonlinear integral equations, *J. ACM* 12 (1965)
        547-560.
        H. F. Walker and P. Ni, Anderson acceleration for fixed-point iterations, *SIAM J. Numer.
        Anal.* 49 (2011) 1715-1735.
        S. Bai, J. Z. Kolter and V. Koltun, Deep equilibrium models, *NeurIPS* 2019.
    """
    check_callable("f", f)
    reject_unknown("fixed_point", options, _OPTIONS)
    method = check_choice("method", method, _METHODS)
    memory = check_positive_int("memory", memory)
    max_iter = check_positive_int("max_iter", max_iter)
    if not is_real_scalar(mixing) or isinstance(mixing, jax.core.Tracer):
        raise TypeError(f"mixing must be a real number in (0, 1], got {mixing!r}")
    mixing = float(mixing)
    if not 0 < mixing <= 1:
        raise ValueError(f"mixing must be in (0, 1], got {mixing!r}")
    args = check_args("fixed_point", args, arrays=True)
    x0 = as_strong_inexact(x0, "x0")
    if not jax.tree.leaves(x0):
        raise ValueError("fixed_point: x0 has no array leaves")
    dtype = float_dtype(tree_dtype(x0))
    check_not_half("fixed_point", "x0", dtype)
    rtol, atol = default_tolerances(dtype, rtol, atol)
    return _fixed_point_jit(
        x0,
        args,
        f=static_function(f),
        method=method,
        memory=memory,
        mixing=mixing,
        rtol=rtol,
        atol=atol,
        max_iter=max_iter,
    )


@functools.partial(
    jax.jit, static_argnames=("f", "method", "memory", "mixing", "rtol", "atol", "max_iter")
)
def _fixed_point_jit(x0, args, *, f, method, memory, mixing, rtol, atol, max_iter):
    dtype = float_dtype(tree_dtype(x0))
    x0, restore = promote(x0, dtype)
    out = jax.eval_shape(lambda x, a: f(x, *a), x0, args)
    check_floating_output("fixed_point", out)
    check_square("fixed_point", x0, out)
    flat0, unravel = ravel_pytree(x0)

    def g(x):  # f on the pytree, in the solve's dtype
        return jax.tree.map(lambda u: jnp.asarray(u).astype(dtype), f(x, *args))

    def f_flat(v):
        return ravel_pytree(g(unravel(v)))[0]

    def optimality(x):
        return jax.tree.map(jnp.subtract, g(x), x)

    def solve(guess):
        drv = _solve(
            f_flat,
            ravel_pytree(guess)[0],
            method=method,
            memory=memory,
            mixing=mixing,
            rtol=rtol,
            atol=atol,
            max_iter=max_iter,
        )
        return unravel(drv.state.xs[-1]), (drv.status, drv.n_iter, drv.state.n_fev)

    tangent_solve = tangent_solve_for(flat0.shape[0])
    x, (status, n_iter, n_fev) = solve_with_implicit_grad(
        optimality, x0, solve, tangent_solve=tangent_solve
    )
    residual = optimality(x)
    status = status.astype(jnp.int32)
    return FixedPointResult(
        x=restore(x),
        residual=restore(residual),
        success=status == int(Status.SUCCESS),
        status=status,
        n_iter=n_iter,
        n_fev=n_fev + 1,
    )
