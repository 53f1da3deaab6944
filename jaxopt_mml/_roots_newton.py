"""Safeguarded Newton-Raphson, run by the driver (private): a scalar and a system variant.

Both take the Newton step ``d = -J(x)^{-1} F(x)`` (``-f/f'`` for a scalar) and safeguard it by
backtracking on the merit ``m(x) = |F(x)|^2 / 2``, whose slope along a Newton step is ``-|F(x)|^2``
(Armijo; the full step is tried first and is accepted near a root). Both are converged when the
Newton step is within tolerance, ``|d_i| <= atol + rtol |x_i|`` for every element (an estimate of
the error left), or ``F(x) = 0`` exactly; that last step is taken too (near a simple root it squares
the error, as scipy's and optimistix's Newton do) and ``F`` is evaluated at the returned point.

They fail with ``SINGULAR`` when no descent direction exists (``J`` singular and the merit's
gradient ``J^T F`` zero, e.g. ``f'(x) = 0`` for a scalar), ``LINESEARCH_FAILED`` when backtracking
finds no decrease (at a local minimum of ``|F|`` that is not a root; ``PRECISION_LIMIT`` when the
step is already at rounding level) and ``STAGNATED`` when an accepted step no longer moves ``x``.

* :func:`scalar_newton` (per element under ``vmap``): built for throughput, see its docstring.
* :func:`system_newton`: forward-mode Jacobian and one LU solve per iteration, backtracking with
  ``_linesearch.backtracking`` (evaluations of ``F`` alone) before the Jacobian at the new point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._driver import iterate, make_progress
from ._linesearch import backtracking
from ._status import Status

_RUNNING = int(Status.RUNNING)


def _code(status: Status) -> np.int32:
    """A status code as an int32 constant (Python ints would widen selects to int64 in x64)."""
    return np.int32(int(status))


class NewtonState(NamedTuple):
    x: jax.Array
    fx: jax.Array
    d: jax.Array
    n_fev: jax.Array


def _system_direction(fx, jac):
    """The Newton step, or steepest descent on the merit where the Newton step is unusable."""
    d = jnp.linalg.solve(jac, -fx)
    slope = jnp.vdot(fx, jac @ d)  # = -|F|^2 when the solve is accurate
    newton_ok = jnp.all(jnp.isfinite(d)) & (slope < 0)
    grad = jac.T @ fx
    grad_ok = jnp.all(jnp.isfinite(grad)) & jnp.any(grad != 0)
    d = jnp.where(newton_ok, d, jnp.where(grad_ok, -grad, jnp.zeros_like(grad)))
    return d, ~(newton_ok | grad_ok)


def _converged(x, fx, d, singular, rtol, atol):
    small = jnp.all(jnp.abs(d) <= atol + rtol * jnp.abs(x))
    return jnp.all(fx == 0) | (small & ~singular)


def _merit(fx):
    return 0.5 * jnp.sum(fx * fx)


def _system_solve(f: Callable, x0: jax.Array, *, rtol, atol, max_iter, ls_steps):
    """Safeguarded Newton for ``F(x) = 0`` on a flat vector ``x0``; returns ``(state, output)``.

    The state carries ``x``, ``F(x)`` and the Newton step already solved for, so that an iteration
    costs the line search, one Jacobian and one LU solve.
    """
    eye = jnp.eye(x0.shape[0], dtype=x0.dtype)

    def value_and_deriv(x):
        fx, lin = jax.linearize(f, x)
        return fx, jax.vmap(lin, out_axes=1)(eye)

    direction = _system_direction
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    rtol_ = jnp.asarray(rtol, dtype)
    atol_ = jnp.asarray(atol, dtype)

    fx0, jac0 = value_and_deriv(x0)
    d0, singular0 = direction(fx0, jac0)
    conv0 = _converged(x0, fx0, d0, singular0, rtol_, atol_)
    state = NewtonState(x0, fx0, d0, jnp.asarray(1, jnp.int32))
    fail0 = jnp.where(singular0 & ~conv0, int(Status.SINGULAR), _RUNNING)
    progress = make_progress(x0, jnp.sqrt(2 * _merit(fx0)), converged=conv0, failure=fail0)

    def step(s: NewtonState):
        m0 = _merit(s.fx)
        # An element that has already stopped (a root, or no step left) is only stepped when it is
        # batched with running ones (vmap), and its result is discarded: let its search accept at
        # once, so that it does not hold the batch's inner loop at rounding-level merits.
        done = _converged(s.x, s.fx, s.d, False, rtol_, atol_)

        def phi(a):
            return jnp.where(done, jnp.zeros_like(m0), _merit(f(s.x + a * s.d)))

        ls = backtracking(phi, m0, -2 * m0, max_steps=ls_steps)
        x = jnp.where(ls.success, s.x + ls.step_size * s.d, s.x)
        fx, jac = value_and_deriv(x)
        d, singular = direction(fx, jac)
        converged = _converged(x, fx, d, singular, rtol_, atol_)
        at_rounding = jnp.all(jnp.abs(s.d) <= 64 * eps * jnp.abs(s.x))
        ls_failure = jnp.where(
            at_rounding, int(Status.PRECISION_LIMIT), int(Status.LINESEARCH_FAILED)
        )
        stagnated = jnp.where(at_rounding, int(Status.PRECISION_LIMIT), int(Status.STAGNATED))
        failure = jnp.where(singular, int(Status.SINGULAR), _RUNNING)
        failure = jnp.where(jnp.all(x == s.x), stagnated, failure)
        failure = jnp.where(ls.success, failure, ls_failure)
        failure = jnp.where(converged, _RUNNING, failure)
        new = NewtonState(x, fx, d, s.n_fev + ls.n_eval + 1)
        fnorm = jnp.sqrt(2 * _merit(fx))
        prog = make_progress(
            x,
            fnorm,
            dx=x - s.x,
            df=fnorm - jnp.sqrt(2 * m0),
            converged=converged,
            failure=failure,
        )
        return new, prog

    out = iterate(step, state, progress, max_iter=max_iter, rtol=rtol, atol=atol, cauchy=False)
    x, fx = polish(f, out.state.x, out.state.fx, out.state.d, out.status)
    return out.state._replace(x=x, fx=fx, n_fev=out.state.n_fev + 1), out


def polish(f, x, fx, d, status):
    """After convergence take the last Newton step ``d`` too (its size was the error estimate).

    Near a simple root this squares the error, as the Newton iterations of scipy and optimistix
    do by returning the point after their final step; ``f`` is evaluated there so that ``fun``
    belongs to the returned ``x``. Kept only where the new value is finite.
    """
    take = status == int(Status.SUCCESS)
    x_new = x + jnp.where(take, d, jnp.zeros_like(d))
    f_new = f(x_new)
    keep = take & jnp.all(jnp.isfinite(f_new))
    return jnp.where(keep, x_new, x), jnp.where(keep, f_new, fx)


class ScalarState(NamedTuple):
    x: jax.Array
    alpha: jax.Array


def scalar_newton(f: Callable, x0: jax.Array, *, rtol, atol, max_iter, ls_steps, c1=1e-4):
    """Newton on a scalar equation ``f(x) = 0``, built to be cheap under ``vmap``.

    Each iteration evaluates ``f`` and ``f'`` at ``x`` in one ``jax.jvp``, forms the Newton step
    ``d = -f/f'`` and either stops (``|d| <= atol + rtol |x|``: the step is taken and the loop
    ends) or tries ``x + alpha d``: accepted when it satisfies the Armijo condition on ``f^2/2``
    (then ``alpha`` doubles, up to 1), else ``alpha`` is halved and ``x`` kept. When ``alpha`` has
    fallen below ``2**-ls_steps`` the next iteration stops with ``LINESEARCH_FAILED`` (a local
    minimum of ``|f|`` that is not a root).

    Why this shape: under ``vmap`` over millions of elements each loop iteration costs a few
    passes over the batch, and XLA recomputes the step inside the update of every carried array.
    So the backtracking is folded into the driver's iterations (no inner loop), the state is only
    ``x`` and ``alpha`` (``f`` is recomputed, not carried), and the status is decided from ``f`` and
    ``f'`` at ``x`` alone (the reported progress is the pair ``x, f(x)`` of this iteration). This
    measured about 2x faster than a nested line search over a larger state
    (``benchmarks/tasks/roots.py``). ``n_iter`` counts trial points. Returns the final state,
    ``f`` at the final ``x`` and the driver's output.
    """
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    rtol_, atol_ = jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype)
    min_alpha = 0.5**ls_steps

    fx0 = f(x0)
    state = ScalarState(x0, jnp.ones_like(x0))
    progress = make_progress(x0, jnp.abs(fx0), converged=fx0 == 0)

    def step(s: ScalarState):
        fx, dfx = jax.jvp(f, (s.x,), (jnp.ones_like(s.x),))
        d = -fx / dfx
        # f' = 0 (or overflow) gives a non-finite step: no comparison below is true for it, and
        # its trial point is non-finite, so it is never accepted.
        singular = ~jnp.isfinite(d)
        converged = (fx == 0) | (jnp.abs(d) <= atol_ + rtol_ * jnp.abs(s.x))
        alpha = jnp.where(converged, jnp.ones_like(s.alpha), s.alpha)
        trial = s.x + alpha * d
        # The stopping decision uses only f and f' at x (not the trial point), so that under
        # vmap the status does not repeat the trial's work: the search has failed when the
        # halvings went below the floor (in an earlier iteration), or a step no longer moves x.
        exhausted = alpha < min_alpha
        code = jnp.where(exhausted, _code(Status.LINESEARCH_FAILED), _code(Status.STAGNATED))
        at_rounding = jnp.abs(d) <= 64 * eps * jnp.abs(s.x)
        code = jnp.where(at_rounding, _code(Status.PRECISION_LIMIT), code)
        code = jnp.where(exhausted | (trial == s.x), code, _code(Status.RUNNING))
        code = jnp.where(singular, _code(Status.SINGULAR), code)
        failure = jnp.where(converged, _code(Status.RUNNING), code)

        ft = f(trial)
        m0, mt = fx * fx, ft * ft
        # Armijo, and a strict decrease (in float32 the Armijo margin rounds away for tiny alpha).
        armijo = (mt <= m0 * (1 - 2 * c1 * alpha)) & (mt < m0) & ~exhausted
        accept = jnp.isfinite(ft) & (armijo | converged)
        x = jnp.where(accept, trial, s.x)
        new_alpha = jnp.where(accept, jnp.minimum(2 * alpha, 1), 0.5 * alpha)
        # The progress reports the point where f was evaluated in this iteration (a consistent
        # pair x, f(x)); the step just decided is in the state.
        prog = make_progress(s.x, jnp.abs(fx), converged=converged, failure=failure)
        return ScalarState(x, new_alpha), prog

    out = iterate(step, state, progress, max_iter=max_iter, rtol=rtol, atol=atol, cauchy=False)
    return out.state, f(out.state.x), out


def system_newton(f: Callable, x0: Any, *, rtol, atol, max_iter, ls_steps):
    """Newton on ``F(x) = 0`` for a pytree ``x``; returns ``(state, output, unravel)``."""
    x0_flat, unravel = ravel_pytree(x0)
    dtype = x0_flat.dtype

    def f_flat(x):
        return ravel_pytree(f(unravel(x)))[0].astype(dtype)

    state, out = _system_solve(
        f_flat, x0_flat, rtol=rtol, atol=atol, max_iter=max_iter, ls_steps=ls_steps
    )
    return state, out, unravel
