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

__all__ = [
    "LineSearchResult",
    "WolfeResult",
    "WolfeSearch",
    "backtracking",
    "wolfe_advance",
    "wolfe_run",
    "wolfe_start",
    "zoom_wolfe",
]


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


WOLFE_BRACKET, WOLFE_ZOOM, WOLFE_DONE = 0, 1, 2


class WolfeSearch(NamedTuple):
    """The state of a strong-Wolfe search between two evaluations of ``phi``.

    ``lo`` is ``(a, phi(a), phi'(a), aux)`` of the best step with sufficient decrease so far (step
    0 at the start), ``hi`` the other end ``(a, phi, phi')`` of the bracket, ``trial`` the step to
    evaluate next, ``n`` the evaluations so far. A solver may carry it in its own state and call :func:`wolfe_advance` once per
    evaluation (the search folded into the solver's iterations), or run :func:`zoom_wolfe`.
    """

    phase: jax.Array
    lo: tuple
    hi: tuple
    trial: jax.Array
    n: jax.Array


def _cubic_minimiser(a, fa, da, b, fb, db):
    """The minimiser of the cubic that interpolates ``phi`` and ``phi'`` at ``a`` and ``b``.

    Nocedal & Wright eq. (3.59); NaN where the cubic has no minimiser (the caller safeguards).
    """
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    d2 = jnp.sign(b - a) * jnp.sqrt(d1 * d1 - da * db)
    return b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)


def wolfe_start(
    phi0: jax.Array,
    dphi0: jax.Array,
    aux0: Any,
    *,
    init_step: float | jax.Array = 1.0,
    max_step: float | jax.Array = 1e10,
    active: jax.Array | bool = True,
) -> WolfeSearch:
    """A new search from ``alpha = 0``; it is done at once unless ``active`` and ``dphi0 < 0``."""
    dtype = jnp.result_type(phi0)
    zero = jnp.zeros((), dtype)
    phi0 = jnp.asarray(phi0, dtype)
    dphi0 = jnp.asarray(dphi0, dtype)
    descent = (dphi0 < 0) & jnp.asarray(active)
    return WolfeSearch(
        phase=jnp.where(descent, WOLFE_BRACKET, WOLFE_DONE).astype(jnp.int32),
        lo=(zero, phi0, dphi0, aux0),
        hi=(zero, phi0, dphi0),
        trial=jnp.minimum(jnp.asarray(init_step, dtype), jnp.asarray(max_step, dtype)),
        n=jnp.asarray(0, jnp.int32),
    )


def wolfe_advance(
    search: WolfeSearch,
    f: jax.Array,
    d: jax.Array,
    aux: Any,
    phi0: jax.Array,
    dphi0: jax.Array,
    *,
    max_step: float | jax.Array = 1e10,
    c1: float = 1e-4,
    c2: float = 0.9,
) -> WolfeSearch:
    """Take in ``phi(trial) = f``, ``phi'(trial) = d`` (and ``aux``) and choose the next trial.

    The trial counts as "too far" when it lacks sufficient decrease, does not improve on ``lo``,
    or is not finite: it becomes ``hi``. Otherwise it becomes ``lo``, and the old ``lo`` becomes
    ``hi`` when the slope points back towards it (N&W Alg. 3.6; while bracketing, any
    non-negative slope). The search is done at a Wolfe point, when the bracket has shrunk to
    rounding, or when the growing step reaches ``max_step``. The next trial doubles the step while
    bracketing, else is the safeguarded cubic interpolant of the bracket (bisection where the
    cubic leaves its middle 80%).
    """
    dtype = jnp.result_type(phi0)
    eps = jnp.finfo(dtype).eps
    max_step = jnp.asarray(max_step, dtype)
    phase, lo, hi, a, n = search
    a_lo, f_lo, d_lo, _ = lo
    a_hi, f_hi, d_hi = hi
    f = jnp.where(jnp.isfinite(f) & jnp.isfinite(d), f, jnp.inf)
    # Where f differs from phi(0) by rounding only, its comparisons mean nothing: judge the
    # trial by its slope (the approximate Wolfe condition of Hager & Zhang, 2005).
    flat = jnp.abs(f - phi0) <= 10.0 * eps * jnp.abs(phi0)
    too_far = jnp.where(
        flat,
        d > -(1.0 - 2.0 * c1) * dphi0,
        (f > phi0 + c1 * a * dphi0) | (f >= f_lo),
    )
    wolfe = (~too_far) & (jnp.abs(d) <= -c2 * dphi0)
    bracketing = phase == WOLFE_BRACKET
    flip = (~too_far) & jnp.where(bracketing, d >= 0, d * (a_hi - a_lo) >= 0)
    a_hi, f_hi, d_hi = jax.tree.map(
        lambda t, o, h: jnp.where(too_far, t, jnp.where(flip, o, h)),
        (a, f, d),
        (a_lo, f_lo, d_lo),
        (a_hi, f_hi, d_hi),
    )
    lo = tree_where(too_far, lo, (a, f, d, aux))
    a_lo, f_lo, d_lo, _ = lo

    at_cap = bracketing & (a >= max_step)
    tiny = jnp.abs(a_hi - a_lo) <= eps * jnp.maximum(a_lo, eps)
    phase = jnp.where(
        bracketing,
        jnp.where(too_far | flip, WOLFE_ZOOM, jnp.where(at_cap, WOLFE_DONE, WOLFE_BRACKET)),
        jnp.where(tiny, WOLFE_DONE, WOLFE_ZOOM),
    )
    phase = jnp.where(wolfe, WOLFE_DONE, phase).astype(jnp.int32)

    width = a_hi - a_lo
    cubic = _cubic_minimiser(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi)
    left = jnp.minimum(a_lo, a_hi) + 0.1 * jnp.abs(width)
    right = jnp.maximum(a_lo, a_hi) - 0.1 * jnp.abs(width)
    inside = jnp.isfinite(cubic) & (cubic >= left) & (cubic <= right)
    trial = jnp.where(
        phase == WOLFE_BRACKET,
        jnp.minimum(2.0 * a, max_step),
        jnp.where(inside, cubic, 0.5 * (a_lo + a_hi)),
    )
    return WolfeSearch(phase, lo, (a_hi, f_hi, d_hi), trial, n + 1)


def wolfe_run(
    phi: Callable[[jax.Array], tuple[jax.Array, jax.Array, Any]],
    search: WolfeSearch,
    phi0: jax.Array,
    dphi0: jax.Array,
    *,
    max_step: float | jax.Array = 1e10,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_steps: int = 30,
) -> WolfeSearch:
    """Run ``search`` to its end (or ``max_steps`` evaluations) with a ``while_loop``.

    The first trial is evaluated before the loop: most searches of a quasi-Newton method end
    there, and under vmap the loop then runs only for the elements that need more.
    """

    def body(s):
        return wolfe_advance(s, *phi(s.trial), phi0, dphi0, max_step=max_step, c1=c1, c2=c2)

    def cond(s):
        return (s.phase != WOLFE_DONE) & (s.n < max_steps)

    search = tree_where(cond(search), body(search), search)
    return lax.while_loop(cond, body, search)


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

    First the trial step grows (doubling from ``init_step``, up to ``max_step``) until an interval
    is known to hold such a step; then the interval shrinks by safeguarded cubic interpolation.
    Near a minimum, where ``phi`` changes by no more than rounding (``10 eps |phi(0)|``), sufficient
    decrease is judged by the slope instead (``phi'(alpha) <= (1 - 2 c1) |phi'(0)|``, Hager &
    Zhang's approximate Wolfe condition), so that rounding in ``f`` does not fail the search.
    Each iteration of the single ``while_loop`` evaluates ``phi`` once (:func:`wolfe_advance`).
    A non-finite trial value counts as "too far" and shrinks the step.
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
        active: when False the search returns at once (no evaluation, ``success=False``).

    References: Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 3.5 and 3.6;
    Hager & Zhang, SIAM J. Optim. 16 (2005) 170-192 (approximate Wolfe conditions).
    """
    dtype = jnp.result_type(phi0)
    phi0 = jnp.asarray(phi0, dtype)
    dphi0 = jnp.asarray(dphi0, dtype)
    search = wolfe_start(phi0, dphi0, aux0, init_step=init_step, max_step=max_step, active=active)
    descent = search.phase != WOLFE_DONE
    search = wolfe_run(
        phi, search, phi0, dphi0, max_step=max_step, c1=c1, c2=c2, max_steps=max_steps
    )
    a, f, d, aux = search.lo
    # lo has sufficient decrease (or is step 0); a Wolfe point ends the search, so it is the lo.
    return WolfeResult(
        step_size=a,
        value=f,
        slope=d,
        aux=aux,
        n_eval=search.n,
        success=descent & (a > 0),
        wolfe=(a > 0) & (jnp.abs(d) <= -c2 * dphi0),
    )
