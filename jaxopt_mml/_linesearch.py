"""Line searches shared by the solvers (private core).

A line search looks along a descent direction ``d`` from ``x`` for a step ``alpha`` that decreases
a merit ``phi(alpha) = m(x + alpha d)`` enough. Each returns a :class:`LineSearchResult`; a search
that finds no acceptable step says so in ``success`` and the caller reports
``Status.LINESEARCH_FAILED``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._tree import tree_where

__all__ = ["LineSearchResult", "WolfeResult", "backtracking", "zoom_wolfe"]


class LineSearchResult(NamedTuple):
    step_size: jax.Array
    value: jax.Array
    n_eval: jax.Array
    success: jax.Array


def backtracking(
    phi: Callable[[jax.Array], jax.Array],
    phi0: jax.Array,
    dphi0: jax.Array,
    *,
    init_step: float | jax.Array = 1.0,
    shrink: float = 0.5,
    c1: float = 1e-4,
    max_steps: int = 30,
) -> LineSearchResult:
    """Backtracking (Armijo) line search.

    Shrinks ``alpha`` from ``init_step`` by ``shrink`` until the sufficient-decrease condition

        phi(alpha) <= phi(0) + c1 * alpha * phi'(0)

    holds with a finite value. ``dphi0`` must be negative (a descent direction).

    Reference: Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithm 3.1.
    """
    dtype = jnp.result_type(phi0)
    alpha0 = jnp.asarray(init_step, dtype)
    value0 = phi(alpha0)

    def accepted(alpha, value):
        return jnp.isfinite(value) & (value <= phi0 + c1 * alpha * dphi0)

    def cond(carry):
        alpha, value, n = carry
        return (~accepted(alpha, value)) & (n < max_steps)

    def body(carry):
        alpha, _, n = carry
        alpha = alpha * shrink
        return alpha, phi(alpha), n + 1

    alpha, value, n = lax.while_loop(cond, body, (alpha0, value0, jnp.asarray(1, jnp.int32)))
    return LineSearchResult(
        step_size=alpha, value=value, n_eval=n, success=accepted(alpha, value) & (dphi0 < 0)
    )


class WolfeResult(NamedTuple):
    """The outcome of :func:`zoom_wolfe`.

    ``success`` says the step is usable (positive, finite, with sufficient decrease); ``wolfe``
    says it also met the strong curvature condition. ``aux`` is the auxiliary output of ``phi`` at
    the accepted step (the gradient, typically), so that the caller need not evaluate again.
    """

    step_size: jax.Array
    value: jax.Array
    slope: jax.Array
    aux: Any
    n_eval: jax.Array
    success: jax.Array
    wolfe: jax.Array


_BRACKET, _ZOOM, _DONE = 0, 1, 2
# While bracketing, each trial step is this many times the last (More & Thuente's largest
# extrapolation; MINPACK's dcsrch and so scipy's BFGS use the same bound).
_GROW = 4.0


def _cubic_minimiser(a, fa, da, b, fb, db):
    """The minimiser of the cubic that interpolates ``phi`` and ``phi'`` at ``a`` and ``b``.

    Nocedal & Wright eq. (3.59); NaN where the cubic has no minimiser (the caller safeguards).
    """
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    d2 = jnp.sign(b - a) * jnp.sqrt(d1 * d1 - da * db)
    return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


def zoom_wolfe(
    phi: Callable[[jax.Array], tuple[jax.Array, jax.Array, Any]],
    phi0: jax.Array,
    dphi0: jax.Array,
    aux0: Any,
    *,
    init_step: float | jax.Array = 1.0,
    max_step: float = 1e10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_steps: int = 30,
    active: jax.Array | bool = True,
) -> WolfeResult:
    """Line search for the strong Wolfe conditions by bracketing and zoom.

    Looks for ``alpha > 0`` with

        phi(alpha) <= phi(0) + c1 * alpha * phi'(0)        (sufficient decrease)
        |phi'(alpha)| <= c2 * |phi'(0)|                    (curvature)

    First the trial step grows (by 4x from ``init_step``, up to ``max_step``) until an interval
    is known to hold such a step; then the interval shrinks by safeguarded cubic interpolation.
    Near a minimum, where ``phi`` changes by no more than rounding (``10 eps |phi(0)|``), sufficient
    decrease is judged by the slope instead (``phi'(alpha) <= (1 - 2 c1) |phi'(0)|``, Hager &
    Zhang's approximate Wolfe condition), so that rounding in ``f`` does not fail the search.
    Each iteration of the single ``while_loop`` evaluates ``phi`` once, which keeps the search
    cheap under ``jax.vmap``. A non-finite trial value counts as "too far" and shrinks the step.
    If ``max_steps`` evaluations pass without a Wolfe point, the best step with sufficient decrease
    found so far is returned (``wolfe=False``, ``success=True``); ``success`` is False only when no
    step decreased ``phi`` at all (or ``dphi0 >= 0``: not a descent direction).

    Args:
        phi: ``phi(alpha) -> (value, slope, aux)``: the merit along the line, its derivative in
            ``alpha``, and anything the caller wants back at the accepted step (e.g. the gradient).
        phi0, dphi0, aux0: the same at ``alpha = 0``; ``dphi0`` must be negative.
        init_step: the first trial step.
        max_step: the largest step tried.
        c1, c2: the Wolfe constants, ``0 < c1 < c2 < 1`` (0.9 suits quasi-Newton methods).
        max_steps: the most evaluations of ``phi`` (static).
        active: when False the search returns at once (no evaluation, ``success=False``). A
            batched solver passes False for elements that have already stopped, so that they do
            not keep the batch's line-search loop running.

    References: Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 3.5 and 3.6;
    Hager & Zhang, SIAM J. Optim. 16 (2005) 170-192 (approximate Wolfe conditions).
    """
    dtype = jnp.result_type(phi0)
    zero = jnp.zeros((), dtype)
    eps = jnp.finfo(dtype).eps
    max_step = jnp.asarray(max_step, dtype)
    descent = (dphi0 < 0) & jnp.asarray(active)
    dphi0 = jnp.asarray(dphi0, dtype)
    flat_tol = 10.0 * eps * jnp.abs(phi0)

    # carry: phase, lo (a, f, d, aux), hi (a, f, d), evaluations. While bracketing, the next
    # trial is _GROW times lo's step; whether the search met the Wolfe conditions is read from
    # lo at the end. (Each carried array is a kernel per iteration on XLA:CPU: carry few.)
    init = (
        jnp.where(descent, _BRACKET, _DONE).astype(jnp.int32),
        (zero, jnp.asarray(phi0, dtype), dphi0, aux0),
        (zero, jnp.asarray(phi0, dtype), dphi0),
        jnp.asarray(0, jnp.int32),
    )

    def cond(carry):
        phase, _, _, n = carry
        return (phase != _DONE) & (n < max_steps)

    def curvature_ok(d):
        return jnp.abs(d) <= -c2 * dphi0

    def advance(carry, a, f, d, aux):
        """Classify the trial ``a`` (value ``f``, slope ``d``) and update the bracket."""
        phase, lo, hi, n = carry
        a_lo, f_lo, d_lo, _ = lo
        a_hi, f_hi, d_hi = hi
        f = jnp.where(jnp.isfinite(f) & jnp.isfinite(d), f, jnp.inf)
        # Where f differs from phi(0) by rounding only, its comparisons mean nothing: judge the
        # trial by its slope (the approximate Wolfe condition of Hager & Zhang, 2005).
        flat = jnp.abs(f - phi0) <= flat_tol
        too_far = jnp.where(
            flat,
            d > -(1.0 - 2.0 * c1) * dphi0,
            (f > phi0 + c1 * a * dphi0) | (f >= f_lo),
        )
        wolfe = (~too_far) & curvature_ok(d)
        # too far: the trial becomes hi. Otherwise it becomes lo; in the zoom phase the old lo
        # becomes hi when the slope points back towards it (N&W Alg. 3.6); while bracketing,
        # a non-negative slope also closes the bracket with the old lo as hi.
        flip = (~too_far) & (d * (a_hi - a_lo) >= 0)
        flip = jnp.where(phase == _BRACKET, (~too_far) & (d >= 0), flip)
        new_hi = jax.tree.map(
            lambda t, o, h: jnp.where(too_far, t, jnp.where(flip, o, h)),
            (a, f, d),
            (a_lo, f_lo, d_lo),
            (a_hi, f_hi, d_hi),
        )
        new_lo = tree_where(too_far, lo, (a, f, d, aux))

        at_cap = (phase == _BRACKET) & (a >= max_step)
        bracketed = too_far | flip
        tiny = jnp.abs(new_hi[0] - new_lo[0]) <= eps * jnp.maximum(new_lo[0], eps)
        phase = jnp.where(
            phase == _BRACKET,
            jnp.where(bracketed, _ZOOM, jnp.where(at_cap, _DONE, _BRACKET)),
            jnp.where(tiny, _DONE, _ZOOM),
        )
        phase = jnp.where(wolfe, _DONE, phase).astype(jnp.int32)
        return phase, new_lo, new_hi, n + 1

    def body(carry):
        phase, lo, hi, _ = carry
        a_lo, f_lo, d_lo, _ = lo
        a_hi, f_hi, d_hi = hi
        # The trial point: the growing step while bracketing, else an interpolated point.
        width = a_hi - a_lo
        cubic = _cubic_minimiser(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi)
        left = jnp.minimum(a_lo, a_hi) + 0.1 * jnp.abs(width)
        right = jnp.maximum(a_lo, a_hi) - 0.1 * jnp.abs(width)
        inside = jnp.isfinite(cubic) & (cubic >= left) & (cubic <= right)
        zoom_trial = jnp.where(inside, cubic, 0.5 * (a_lo + a_hi))
        a = jnp.where(phase == _BRACKET, jnp.minimum(_GROW * a_lo, max_step), zoom_trial)
        return advance(carry, a, *phi(a))

    # The first trial is evaluated before the loop: most searches of a quasi-Newton method end
    # there, and under vmap the loop then runs only for the elements that need more. (Inside the
    # loop, bracketing has a positive lo: the first trial became lo.)
    a1 = jnp.minimum(jnp.asarray(init_step, dtype), max_step)
    first = advance(init, a1, *phi(a1))
    init = tree_where(descent, first, init)

    _, lo, _, n = lax.while_loop(cond, body, init)
    a, f, d, aux = lo
    # lo is never "too far"; it met the Wolfe conditions exactly when the search stopped on
    # them (a lo that met them would have ended the search when it was tried).
    return WolfeResult(
        step_size=a,
        value=f,
        slope=d,
        aux=aux,
        n_eval=n,
        success=descent & (a > 0),
        wolfe=(a > 0) & curvature_ok(d),
    )
