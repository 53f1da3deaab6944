"""Roots of equations: safeguarded Newton-Raphson, bisection and bracketed Newton.

Public: :func:`newton_raphson`, :func:`bisection`, :func:`bracketed_newton`, :class:`RootResult`,
:func:`fixed_point`, :class:`FixedPointResult`. The algorithms live in ``_roots_newton.py``,
``_roots_bracket.py`` and ``_roots_fixed_point.py``; what they share (the result,
option checks, the per-element mapping) in ``_roots_common.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _roots_common
from ._implicit import dense_tangent_solve, solve_with_implicit_grad
from ._roots_bracket import bisection, bracketed_newton
from ._roots_common import (
    RootResult,
    broadcast_problem,
    check_floating_output,
    check_scalar_output,
    check_square,
    float_dtype,
    make_result,
    map_chunks,
    reject_unknown,
    scalar_tangent_solve,
    wrap_scalar_f,
)
from ._roots_fixed_point import FixedPointResult, fixed_point
from ._roots_newton import decode_status, masked_newton, scalar_newton, system_newton
from ._static import static_function
from ._tree import (
    PyTree,
    as_strong_inexact,
    check_args,
    check_callable,
    check_not_half,
    check_positive_int,
    default_tolerances,
    promote,
    tree_dtype,
)

__all__ = [
    "RootResult",
    "FixedPointResult",
    "newton_raphson",
    "bisection",
    "bracketed_newton",
    "fixed_point",
]

# The step size's floor, 2**-steps, by default: a scalar step shrinks up to 16x per trial, a
# system's halves.
_SCALAR_LS_STEPS, _SYSTEM_LS_STEPS = 60, 30
_NEWTON_OPTIONS = ("args", "rtol", "atol", "max_iter", "elementwise", "linesearch_steps")
# Dense Jacobians larger than this (bytes) are refused in system mode, with a hint.
_MAX_JACOBIAN_BYTES = 2**32


def newton_raphson(
    f: Callable[..., Any],
    x0: PyTree,
    *,
    args: tuple = (),
    rtol: float | None = None,
    atol: float | None = None,
    max_iter: int = 100,
    elementwise: bool | None = None,
    linesearch_steps: int | None = None,
    **options: Any,
) -> RootResult:
    r"""Solve ``f(x, *args) = 0`` by Newton-Raphson with a backtracking safeguard.

    Each iteration takes the Newton step :math:`d = -J(x)^{-1} F(x)` (for a scalar equation
    :math:`d = -f(x)/f'(x)`), with ``J`` from forward-mode AD, and backtracks along it on the merit
    :math:`m(x) = \tfrac12 \|F(x)\|^2` until the Armijo condition
    :math:`m(x + \alpha d) \le m(x) - 10^{-4} \alpha \|F(x)\|^2` holds. Near a root the full step is
    taken and convergence is quadratic; far from one the line search stops the divergence and the
    cycling of plain Newton (``arctan`` from 2; :math:`x^3 - 2x + 2` from 0). Where ``J`` is singular
    to working precision (or the Newton step is not a descent direction) the step is the
    regularised Gauss-Newton step :math:`-(J^T J + \mu I)^{-1} J^T F`,
    :math:`\mu = \sqrt{\epsilon} \max_i (J^T J)_{ii}` (nearly the least-squares step of least
    norm; steepest descent on ``m`` where that fails too): dependent but consistent equations
    (:math:`x_1 + x_2 = 2` twice) are solved, as by scipy's ``hybr`` and ``lm``, and a system with
    no root ends ``SINGULAR`` at a stationary point of ``m``.

    Convergence: the next Newton step is within tolerance in every element,
    :math:`|d_i| \le atol + rtol |x_i|` (an estimate of the error left), or ``f(x) = 0`` exactly;
    that last step is taken too (squaring the error near a simple root, as scipy's and
    optimistix's Newton do) and ``fun`` is ``f`` at the returned ``x``. At a root of multiplicity
    :math:`m` Newton converges linearly and its step is :math:`1/m` of the error, so the returned
    ``x`` can be up to :math:`(m - 1)(atol + rtol |x|)` from it (as with ``scipy.optimize.newton``):
    for :math:`m \ge 3` tighten the tolerances, or solve :math:`f / f'`, whose roots are simple.

    Modes (decided from the static shapes, never from values):

    * ``elementwise=None`` (default): a 0-d ``x0`` is one scalar equation; anything else (an array
      or a pytree) is a system :math:`F: R^n \to R^n`, solved as one problem with one status.
    * ``elementwise=True``: ``f`` is a scalar equation applied elementwise, like
      ``scipy.optimize.newton`` with arrays: ``x0`` and every leaf of ``args`` are broadcast together
      and each element is solved on its own (the scalar solver's iteration applied to whole
      arrays under a per-element mask), with its own ``status`` and ``n_iter``; ``f`` is called
      with one element of ``x`` and of each ``args`` leaf.
      Data shared by all elements (coefficients, tables) belong in a closure, not in ``args``.
      This is the mode for millions of roots in one call.
    * ``elementwise=False``: always a system (a 0-d ``x0`` is a system of one equation).

    Why not elementwise by default for arrays, as ``scipy.optimize.newton`` does: a system solved
    per element would be silently wrong, while an elementwise equation solved as a system is only
    slower (and a large one is refused with a pointer to ``elementwise=True``).

    In the scalar and per-element modes the backtracking is folded into the iterations (one trial
    point per iteration, ``n_iter`` counts them, the step size carried between iterations), which
    keeps the batched loop lean; in system mode each iteration backtracks on ``F`` alone and then
    forms the Jacobian and one LU solve at the accepted point.

    The solve is compiled as one program per ``f`` (and shapes and options): calling it again with
    the same ``f``, or the same lambda written again (the same code and the same values it reads),
    reuses the compilation; inside the caller's ``jax.jit`` it is inlined.

    Failure is reported in ``status`` (never raised): ``NONFINITE`` for NaN/inf in ``x0`` or ``f``
    (at once), ``SINGULAR`` when no descent direction exists (``f'(x) = 0`` with ``f(x) != 0``),
    ``LINESEARCH_FAILED`` / ``STAGNATED`` at a local minimum of ``|f|`` that is not a root,
    ``PRECISION_LIMIT`` when the tolerances are below the dtype's rounding, ``MAX_ITER``.

    The root is differentiable with respect to ``args`` (and anything ``f`` closes over) by implicit
    differentiation: :math:`dx^*/d\theta = -J^{-1} \partial F / \partial\theta` at the root
    returned (where ``success`` is False, at the point returned: a finite value that means
    nothing, or infinite where :math:`J` is singular there).

    Args:
        f: ``f(x, *args)``, the same shape (pytree structure) as ``x``.
        x0: the starting point: a scalar, an array or a pytree of arrays.
        args: extra arguments of ``f`` (a tuple).
        rtol: relative tolerance on ``x`` (default ``eps ** 0.75`` of the dtype).
        atol: absolute tolerance on ``x`` (default ``eps ** 0.75``).
        max_iter: the largest number of iterations (scalar modes: trial points).
        elementwise: the mode, see above. With ``True`` a list or tuple ``x0`` is taken as an
            array of starts, as ``scipy.optimize.newton`` takes it.
        linesearch_steps: the step size's floor is ``2**-linesearch_steps``, below which the
            search ends in ``LINESEARCH_FAILED``; default 60 for scalar equations (a rejected
            step shrinks 2 to 16 times, by quadratic interpolation), 30 for a system (halvings).

    Returns:
        :class:`RootResult`; in per-element mode every field has the broadcast shape.

    Raises:
        ValueError: when ``f``'s output shape differs from ``x``'s, or shapes do not broadcast.
        TypeError: for unknown options (scipy's names are pointed to ours), or when ``f``
            returns integer, boolean or complex values (Newton needs a real floating ``f``).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.newton_raphson(lambda x, c: x**3 - c, 1.0, args=(2.0,))
        >>> round(float(res.x), 6), bool(res.success)     # cbrt(2)
        (1.259921, True)
        >>> c = jnp.linspace(1.0, 8.0, 1_000_000)
        >>> res = mml.newton_raphson(lambda x, c: x**3 - c, 1.0, args=(c,), elementwise=True)
        >>> res.x.shape, bool(res.success.all()), float(res.x[-1])
        ((1000000,), True, 2.0)

    References:
        J. Nocedal and S. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, section 11.2.
        J. E. Dennis and R. B. Schnabel, *Numerical Methods for Unconstrained Optimization and
        Nonlinear Equations*, SIAM 1996, chapter 6.
    """
    check_callable("f", f)
    reject_unknown("newton_raphson", options, _NEWTON_OPTIONS)
    # (as Python ints: jit's cache tells np.int64(50) from 50, a compilation each)
    max_iter = check_positive_int("max_iter", max_iter)
    if linesearch_steps is not None:
        linesearch_steps = check_positive_int("linesearch_steps", linesearch_steps)
    args = check_args("newton_raphson", args, arrays=True)
    if elementwise is not None:
        # (a NumPy bool or 1 passed `in (None, True, False)` but not `is True`: np.True_ was
        # solved as one system, with one status)
        if not isinstance(elementwise, bool | np.bool_):
            raise TypeError(f"elementwise must be None, True or False, got {elementwise!r}")
        elementwise = bool(elementwise)
    if elementwise is True and isinstance(x0, list | tuple):
        # one equation per element: a list of starts is an array, as scipy.optimize.newton
        # takes it (it was refused as a pytree of several leaves)
        x0 = jnp.asarray(x0)
    x0 = as_strong_inexact(x0, "x0")
    if not jax.tree.leaves(x0):
        raise ValueError("newton_raphson: x0 has no array leaves")
    dtype = float_dtype(tree_dtype(x0))
    rtol, atol = default_tolerances(dtype, rtol, atol, power=0.75)
    # One jitted program per (f, shapes, options): an eager call compiles once and is cached for
    # an equal f (see _static); inside the caller's jit this is inlined.
    return _newton_jit(
        x0,
        args,
        f=static_function(f),
        elementwise=elementwise,
        rtol=rtol,
        atol=atol,
        max_iter=max_iter,
        ls_steps=linesearch_steps,
    )


@functools.partial(
    jax.jit, static_argnames=("f", "elementwise", "rtol", "atol", "max_iter", "ls_steps")
)
def _newton_jit(x0, args, *, f, elementwise, rtol, atol, max_iter, ls_steps) -> RootResult:
    leaves = jax.tree.leaves(x0)
    dtype = float_dtype(tree_dtype(x0))
    scalar_x0 = isinstance(x0, jax.Array) and x0.ndim == 0
    if not (elementwise is None and scalar_x0):  # (a scalar equation runs in half precision)
        check_not_half("newton_raphson", "x0", dtype)
    # A system of several leaves is solved in their common dtype (f sees them so); its root and
    # f there come back in x0's dtypes, leaf by leaf (one leaf: the dtype solved in).
    x0, restore = promote(x0, dtype)
    scalar_steps = _SCALAR_LS_STEPS if ls_steps is None else ls_steps
    opts = dict(rtol=rtol, atol=atol, max_iter=max_iter, ls_steps=scalar_steps)

    if elementwise is True:
        if len(leaves) != 1 or not isinstance(x0, jax.Array):
            raise ValueError(
                "newton_raphson: elementwise=True needs x0 to be one array (or scalar), got a "
                f"pytree with {len(leaves)} leaves"
            )
        return _newton_elementwise(f, x0, args, dtype, opts)
    if elementwise is None and scalar_x0:
        g = wrap_scalar_f(f, dtype)
        out = jax.eval_shape(lambda x, a: f(x, *a), x0, args)
        if getattr(out, "shape", None) != ():
            raise ValueError(
                f"newton_raphson: f(x0, *args) has shape {getattr(out, 'shape', out)} but x0 is "
                "a scalar; f must return one value per unknown. To solve one equation per element "
                "of args, pass elementwise=True (x0 is broadcast against args)."
            )
        check_floating_output("newton_raphson", out)
        x, fun, status, n_iter = _scalar_with_grad(g, x0, args, opts)
        return make_result(x, fun, status, n_iter, _scalar_n_fev(n_iter))
    opts["ls_steps"] = _SYSTEM_LS_STEPS if ls_steps is None else ls_steps
    res = _newton_system(f, x0, args, dtype, opts)
    return res._replace(x=restore(res.x), fun=restore(res.fun))


def _scalar_n_fev(n_iter):
    # f at the start; per iteration f with f' at x and f at the trial point; f at the end.
    return 2 + 2 * n_iter


def _scalar_with_grad(g: Callable, x0: jax.Array, args: tuple, opts: dict) -> tuple:
    """One scalar Newton solve, its root differentiated implicitly w.r.t. ``args``.

    Returns ``(x, fun, status, n_iter)``.
    """

    def solve(guess):
        state, fun, out = scalar_newton(lambda x: g(x, *args), guess, **opts)
        return state.x, (fun, out.status, out.n_iter)

    x, (fun, status, n_iter) = solve_with_implicit_grad(
        lambda x: g(x, *args), x0, solve, tangent_solve=scalar_tangent_solve
    )
    return x, fun, status, n_iter


def _newton_elementwise(f, x0, args, dtype, opts) -> RootResult:
    shape, flat, args_flat, in_axes = broadcast_problem("newton_raphson", {"x0": x0}, args)
    g = wrap_scalar_f(f, dtype)
    args_elem = jax.tree.map(
        lambda a, ax: jax.ShapeDtypeStruct(a.shape[1:] if ax == 0 else a.shape, a.dtype),
        args_flat,
        in_axes,
    )
    out = check_scalar_output("newton_raphson", f, dtype, args_elem)
    check_floating_output("newton_raphson", out)
    n = int(np.prod(shape))
    if n == 0:  # nothing to solve (the masked iteration's reductions need an element)
        empty = jnp.zeros((0,), jnp.int32)
        return make_result(flat["x0"], jnp.zeros((0,), dtype), empty, empty, empty, shape)

    def f_flat(x, args):
        # g on whole arrays, called per element (f is written for one element).
        return jax.vmap(g, in_axes=(0,) + tuple(in_axes))(x, *args)

    def solve(guess):
        x, code = map_chunks(
            lambda x0, args: masked_newton(lambda x: f_flat(x, args), x0, **opts),
            (guess,),
            args_flat,
            in_axes,
            n,
            _roots_common.masked_chunk(),
        )
        return x, decode_status(code)

    x, (status, n_iter) = solve_with_implicit_grad(
        lambda x: f_flat(x, args_flat), flat["x0"], solve, tangent_solve=scalar_tangent_solve
    )
    fun = f_flat(x, args_flat)
    return make_result(x, fun, status, n_iter, _scalar_n_fev(n_iter), shape)


def _newton_system(f, x0, args, dtype, opts) -> RootResult:
    out = jax.eval_shape(lambda x, a: f(x, *a), x0, args)
    check_floating_output("newton_raphson", out)
    check_square("newton_raphson", x0, out)
    in_shapes = [u.shape for u in jax.tree.leaves(x0)]
    n = sum(int(np.prod(s)) for s in in_shapes)
    if n == 0:
        raise ValueError("newton_raphson: x0 has no elements (size 0): there is no system to solve")
    if n * n * jnp.dtype(dtype).itemsize > _MAX_JACOBIAN_BYTES:
        raise ValueError(
            f"newton_raphson: a system of {n} unknowns needs a dense {n}x{n} Jacobian "
            f"({n * n * jnp.dtype(dtype).itemsize / 2**30:.0f} GiB). If f acts elementwise (one "
            "equation per element, like scipy.optimize.newton with arrays), pass elementwise=True."
        )

    def g(x):
        return jax.tree.map(lambda u: jnp.asarray(u).astype(dtype), f(x, *args))

    def solve(guess):
        state, drv, unravel = system_newton(g, guess, **opts)
        return unravel(state.x), (unravel(state.fx), drv.status, drv.n_iter, state.n_fev)

    x, (fun, status, n_iter, n_fev) = solve_with_implicit_grad(
        g, x0, solve, tangent_solve=dense_tangent_solve
    )
    return make_result(x, fun, status, n_iter, n_fev)
