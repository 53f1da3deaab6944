"""Line searches shared by the solvers (private core).

A line search looks along a descent direction ``d`` from ``x`` for a step ``alpha`` that decreases
a merit ``phi(alpha) = m(x + alpha d)`` enough. Each returns a :class:`LineSearchResult`; a search
that finds no acceptable step says so in ``success`` and the caller reports
``Status.LINESEARCH_FAILED``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["LineSearchResult", "backtracking"]


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
