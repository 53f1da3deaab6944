"""Safeguarded Newton-Raphson, run by the driver (private): a scalar and a system variant.

Both take the Newton step ``d = -J(x)^{-1} F(x)`` (``-f/f'`` for a scalar) and safeguard it by
backtracking on a merit whose slope along the Newton step is known (Armijo; the full step is tried
first and is accepted near a root): ``|f(x)|`` for a scalar (slope ``-|f(x)|``), and for a system
``m(x) = |F(x)|^2 / 2`` (slope ``-|F(x)|^2``) divided by ``max|F|^2`` at the search's start, so
that neither is squared out of the dtype's range (``|f|`` of ``1e-20`` or ``1e20`` in float32). Both are converged when the
Newton step is within tolerance, ``|d_i| <= atol + rtol |x_i|`` for every element (an estimate of
the error left; for a system only a step whose linear model solves the equations counts, not
the Gauss-Newton or steepest-descent step taken where ``J`` is singular unless ``F`` lies in its
range; for a scalar the whole step must also lower ``|f|``, unless ``f`` is at
rounding level: near a cusp the step is short far from any root), or ``F(x) = 0`` exactly; that
last step is taken too (near a simple root it squares
the error, as scipy's and optimistix's Newton do) and ``F`` is evaluated at the returned point.

They fail with ``SINGULAR`` when no descent direction exists (``J`` singular and the merit's
gradient ``J^T F`` zero, e.g. ``f'(x) = 0`` for a scalar) or a system's step is short and no
Newton step (a stationary point of the merit that is no root), ``LINESEARCH_FAILED`` when backtracking
finds no decrease (at a local minimum of ``|F|`` that is not a root; ``PRECISION_LIMIT`` when the
step is already at rounding level) and ``STAGNATED`` when an accepted step no longer moves ``x``.

* :func:`scalar_newton`: one scalar equation, the backtracking folded into the iterations.
* :func:`masked_newton`: the same iteration on whole arrays of independent scalar equations, run
  as one masked problem (the per-element mode; built for throughput, see its docstring).
* :func:`system_newton`: forward-mode Jacobian and one LU solve per iteration, backtracking with
  ``_linesearch.backtracking`` (evaluations of ``F`` alone) before the Jacobian at the new point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from ._driver import iterate, make_progress
from ._implicit import unit_diagonal_where_idle
from ._linesearch import backtracking
from ._status import Status

_RUNNING = int(Status.RUNNING)


def _fcode(status: Status, dtype) -> np.floating:
    """A status code as a constant of the floating ``dtype`` (exact: the codes are small)."""
    return np.dtype(dtype).type(int(status))


class NewtonState(NamedTuple):
    x: jax.Array
    fx: jax.Array
    d: jax.Array
    slope: jax.Array  # the merit's slope along d, in units of max|F|^2 (-|F|^2 for Newton's)
    n_fev: jax.Array
    steep: jax.Array  # d is the Cauchy step (retrying a failed Newton search)


def _cauchy_step(fx, jac):
    """The minimiser of the merit's quadratic model along steepest descent, ``-t J^T F`` with
    ``t = |J^T F|^2 / |J J^T F|^2`` (computed on ``F / max|F|``: no overflow)."""
    scale = _scale(fx)
    g = jac.T @ (fx / scale)
    jg = jac @ g
    denom = jnp.vdot(jg, jg)
    t = jnp.where(denom > 0, jnp.vdot(g, g) / jnp.where(denom > 0, denom, 1.0), 0.0)
    return -(t * scale) * g


def _scale(fx):
    """``max|F|``, or 1 where ``F = 0``: ``F / scale`` has components of order one."""
    scale = jnp.max(jnp.abs(fx))
    return jnp.where(scale > 0, scale, jnp.ones_like(scale))


def _gauss_newton_system(fx, jac):
    """``(J^T J + mu I, -J^T F / max|F|)``: the regularised Gauss-Newton system whose solution
    :func:`_gauss_newton_step` scales back and checks."""
    u = fx / _scale(fx)
    jtj = jac.T @ jac
    eps = jnp.finfo(jtj.dtype).eps
    big = jnp.max(jnp.diagonal(jtj))
    mu = jnp.sqrt(eps) * jnp.where(big > 0, big, 1.0)
    return jtj + mu * jnp.eye(jtj.shape[0], dtype=jtj.dtype), -(jac.T @ u)


def _gauss_newton_step(fx, jac, x, du):
    """``(d, consistent)`` from ``du``, the solution of :func:`_gauss_newton_system`'s system
    (solved by the caller, batched with the Newton system): the Gauss-Newton step
    ``d = -(J^T J + mu I)^{-1} J^T F`` with
    ``mu = sqrt(eps) max_i (J^T J)_ii``, nearly the least-squares step of least norm where ``J``
    is singular, and whether its linear model nearly solves each equation (``|F_i + (J d)_i| <=
    |F_i| / 10 + sqrt(eps) max|F|``: ``F`` in ``J``'s range, as for a consistent system of
    dependent equations, whose roots are not isolated; equation by equation, so that one
    equation left unsolved, ``1e-14 = 0``, is not hidden by others still far from solved), an
    equation at rounding level (``|F_i| <= 64 eps sum_j |J_ij x_j|``) counting as solved.
    Computed on ``F / max|F|`` (no overflow)."""
    scale = _scale(fx)
    u = fx / scale
    eps = jnp.finfo(u.dtype).eps
    solved = jnp.abs(u + jac @ du) <= 0.1 * jnp.abs(u) + jnp.sqrt(eps)
    at_rounding = jnp.abs(fx) <= 64 * eps * (jnp.abs(jac) @ jnp.abs(x))
    consistent = jnp.all(solved | at_rounding)
    return du * scale, consistent


def _system_direction(fx, jac, x):
    """``(d, slope, singular, newton)``: the Newton step, or where it is unusable the (regularised)
    Gauss-Newton step on the merit, or steepest descent where that fails too; ``newton`` where
    the step's linear model solves the equations (the Newton step, or a Gauss-Newton step at a
    singular ``J`` whose range holds ``F``): only then does a short step mean a root.
    ``slope``: the merit's (``|F / max|F||^2 / 2``) along ``d``, for the line search: ``-|F|^2``
    in those units for the Newton step, less steep for the others (a Gauss-Newton step on
    inconsistent equations descends only by the part of ``F`` in ``J``'s range). ``singular``
    where no descent direction exists.

    The tests are made on ``F / max|F|``, so that neither a tiny nor a huge ``F`` (``1e-20`` or
    ``1e20`` in float32) underflows or overflows them.
    """
    # An unknown that no equation reads, with an equation that reads no unknown and holds
    # (a zero row and column of J, F = 0 there: a pytree leaf f ignores, its equation 0 = 0)
    # gets a unit diagonal, so that it is not moved and the others take the Newton step of the
    # system without it (as dense_tangent_solve does for the derivatives); the singular J sent
    # every iteration to steepest descent, and MAX_ITER after 100 (scipy's hybr and lm
    # converge). An equation that reads no unknown and does not hold still makes J singular.
    # The Newton and the Gauss-Newton systems in one batched solve: a second LAPACK call in a
    # lax.cond, batched under vmap, deadlocked XLA:CPU's thread pool (25600 starts of a 2 x 2
    # system hung; 8100 did not)
    mat, rhs = _gauss_newton_system(fx, jac)
    both = jnp.linalg.solve(
        jnp.stack([unit_diagonal_where_idle(jac, holds=fx == 0), mat]),
        jnp.stack([-fx, rhs])[..., None],
    )[..., 0]
    d = both[0]
    scale = _scale(fx)
    u = fx / scale

    def slope(step):  # = -|F|^2 / scale^2 for an accurate Newton step
        return jnp.vdot(u, (jac @ step) / scale)

    def descends(step):
        return jnp.all(jnp.isfinite(step)) & (slope(step) < 0)

    # J singular to working precision: the Newton step is rounding noise of size up to
    # 1 / eps along J's null space, and can descend (such a step of 5e13 went where F was
    # noise of 5e-4, from |F| = 0.3, and the next step, short beside |x|, was taken for
    # convergence: SUCCESS). Its terms then cancel in J d = -F: by a factor that bounds J's
    # condition number from below, 1e11 to 1e16 for such steps (from LU pivots of 1e-11 to
    # eps, which do not show the singularity reliably: one of 6e-12 beside a singular value
    # of 4e-16), up to 1e7 for valid steps near a nearly singular J. Beyond 1 / sqrt(eps), and
    # longer than x, the Gauss-Newton step is taken. (Newton's steps to a root where J is
    # singular, Powell's singular function, cancel by 1 / |x| and more, but halve x.)
    cancel = jnp.max(jnp.abs(jac) @ jnp.abs(d)) / scale
    eps = jnp.finfo(cancel.dtype).eps
    accurate = (cancel * jnp.sqrt(eps) <= 1) | (
        (cancel * eps <= 0.01) & (jnp.max(jnp.abs(d)) <= jnp.max(jnp.abs(x)))
    )
    newton_ok = accurate & descends(d)
    # Where J is singular (dependent equations, x1 + x2 = 2 twice), or so nearly that the
    # Newton step does not descend, the Gauss-Newton step: steepest descent alone crept to
    # the roots of consistent dependent equations and ended MAX_ITER after 100 steps at
    # |F| = 2e-12, where scipy's hybr and lm converge in 6-10 evaluations.
    gn, consistent = _gauss_newton_step(fx, jac, x, both[1])
    gn_ok = descends(gn)
    grad_u = jac.T @ u
    grad_ok = jnp.all(jnp.isfinite(grad_u)) & jnp.any(grad_u != 0)
    grad = jac.T @ fx
    d = jnp.where(
        newton_ok, d, jnp.where(gn_ok, gn, jnp.where(grad_ok, -grad, jnp.zeros_like(grad)))
    )
    m_slope = jnp.where(newton_ok, -jnp.vdot(u, u), slope(d))
    return d, m_slope, ~(newton_ok | gn_ok | grad_ok), newton_ok | (gn_ok & consistent)


def _converged(x, fx, d, newton, rtol, atol):
    """A root: ``F = 0``, or a Newton step ``d`` within the tolerances. Only a Newton step
    estimates the distance to a root: a short steepest-descent step (``newton`` False) means a
    flat merit, and at a singular J that is no root (``|F| = 2.8`` with ``J^T F = 1e-16``)."""
    return jnp.all(fx == 0) | (_short(x, d, rtol, atol) & newton)


def _short(x, d, rtol, atol):
    """The step ``d`` within the tolerances, ``|d_i| <= atol + rtol |x_i|`` for every element."""
    return jnp.all(jnp.abs(d) <= atol + rtol * jnp.abs(x))


def _merit(fx, scale):
    """``|F|^2 / 2`` in units of ``scale`` (a constant through a line search)."""
    u = fx / scale
    return 0.5 * jnp.sum(u * u)


def _norm(fx):
    """``|F|`` without overflow or underflow."""
    scale = _scale(fx)
    return scale * jnp.sqrt(2 * _merit(fx, scale))


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
    d0, slope0, singular0, newton0 = direction(fx0, jac0, x0)
    conv0 = _converged(x0, fx0, d0, newton0, rtol_, atol_)
    state = NewtonState(x0, fx0, d0, slope0, jnp.asarray(1, jnp.int32), jnp.asarray(False))
    stationary0 = _short(x0, d0, rtol_, atol_) & ~newton0
    fail0 = jnp.where((singular0 | stationary0) & ~conv0, int(Status.SINGULAR), _RUNNING)
    progress = make_progress(x0, _norm(fx0), converged=conv0, failure=fail0)

    def step(s: NewtonState):
        # The merit of this step's search is |F|^2 / 2 in units of max|F(x)| at its start: the
        # same Armijo test as on |F|^2 / 2, with m0 between 1/2 and n/2 whatever the size of F.
        scale = _scale(s.fx)
        m0 = _merit(s.fx, scale)
        # An element that has already stopped (a root, or no step left) is only stepped when it is
        # batched with running ones (vmap), and its result is discarded: let its search accept at
        # once, so that it does not hold the batch's inner loop at rounding-level merits.
        done = _converged(s.x, s.fx, s.d, jnp.asarray(True), rtol_, atol_)

        def phi(a):
            return jnp.where(done, jnp.zeros_like(m0), _merit(f(s.x + a * s.d), scale))

        ls = backtracking(phi, m0, s.slope, max_steps=ls_steps)
        x = jnp.where(ls.success, s.x + ls.step_size * s.d, s.x)
        fx, jac = value_and_deriv(x)
        d, m_slope, singular, newton = direction(fx, jac, x)
        converged = _converged(x, fx, d, newton, rtol_, atol_)
        at_rounding = jnp.all(jnp.abs(s.d) <= 64 * eps * jnp.abs(s.x))
        ls_failure = jnp.where(
            at_rounding, int(Status.PRECISION_LIMIT), int(Status.LINESEARCH_FAILED)
        )
        stagnated = jnp.where(at_rounding, int(Status.PRECISION_LIMIT), int(Status.STAGNATED))
        # A short step that is no Newton step: |F| is at a stationary point that is no root,
        # where J is singular (the Gauss-Newton steps of inconsistent equations crept on
        # there until MAX_ITER)
        stationary = _short(x, d, rtol_, atol_) & ~newton
        failure = jnp.where(singular | stationary, int(Status.SINGULAR), _RUNNING)
        # Stuck where J is singular (no Newton step, and the steepest-descent step rounds
        # away): a local minimum of |F| that is no root, which SINGULAR names.
        stagnated = jnp.where(newton, stagnated, int(Status.SINGULAR))
        failure = jnp.where(jnp.all(x == s.x), stagnated, failure)
        # A failed search along a Newton step is retried once along the Cauchy step (steepest
        # descent on the merit): near a nearly singular J the Newton step is huge and valid,
        # and backtracking cannot shorten it enough (1 in 60 random systems stopped at
        # |F| = 0.4 with J^T F far from 0, where hybr went on to the root).
        retry = ~ls.success & ~s.steep & ~done & ~converged
        failure = jnp.where(ls.success, failure, ls_failure)
        failure = jnp.where(converged | retry, _RUNNING, failure)
        d = jnp.where(retry, _cauchy_step(fx, jac), d)
        m_slope = jnp.where(retry, -2 * _merit(fx, _scale(fx)), m_slope)
        new = NewtonState(x, fx, d, m_slope, s.n_fev + ls.n_eval + 1, retry)
        fnorm = _norm(fx)
        prog = make_progress(
            x,
            fnorm,
            dx=x - s.x,
            df=fnorm - _norm(s.fx),
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


def _scalar_update(f: Callable, x, alpha, *, rtol, atol, min_alpha, c1):
    """One folded Newton iteration at ``x`` with step size ``alpha`` (elementwise on arrays).

    Evaluates ``f`` and ``f'`` at ``x`` in one ``jax.jvp`` and ``f`` at one trial point. Returns
    ``(x_new, alpha_new, fx, code)``: ``fx = f(x)`` and the :class:`Status` decided from ``f`` and
    ``f'`` at ``x`` and ``f`` at the trial point (``RUNNING``, ``SUCCESS`` or a failure), as a
    float of ``x``'s dtype so that the per-element mode keeps the whole iteration in one
    floating-point pass.

    With ``d = -f/f'`` the convergence test ``|d| <= atol + rtol |x|`` is evaluated as
    ``|f| <= (atol + rtol |x|) |f'|`` (likewise the rounding-level test), so the division has one
    use, the trial point: XLA then fuses it into the pass instead of writing ``d`` out first.
    """
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    fx, dfx = jax.jvp(f, (x,), (jnp.ones_like(x),))
    afx, adfx, ax = jnp.abs(fx), jnp.abs(dfx), jnp.abs(x)
    # An infinite f'(x) (cbrt at 0) makes the step 0 whatever f(x) is: no convergence, SINGULAR.
    inf_slope = adfx == jnp.inf
    step_small = (afx <= (atol + rtol * ax) * adfx) & ~inf_slope
    at_rounding = afx <= 64 * eps * ax * adfx
    # Converged at rounding level: the whole step is taken (a shortened one would leave its
    # error, 30 ulps in float32, where the whole one squares it).
    alpha = jnp.where(step_small & at_rounding, jnp.ones_like(alpha), alpha)
    trial = x - alpha * (fx / dfx)
    # f' = 0 (or an overflowing step) gives a non-finite trial point: SINGULAR, never accepted.
    singular = ~jnp.isfinite(trial) | inf_slope
    # The search has failed when the shrinking step went below the floor (in an earlier
    # iteration), or a step no longer moves x.
    exhausted = alpha < min_alpha
    ft = f(trial)
    aft = jnp.abs(ft)
    # Armijo on the merit |f| (slope -|f| along the Newton step; |f|, not f^2, which would
    # overflow or underflow for |f| beyond about 1e19 or below 1e-19 in float32), and a strict
    # decrease (in float32 the Armijo margin rounds away for tiny alpha).
    armijo = (aft <= afx * (1 - c1 * alpha)) & (aft < afx) & ~exhausted
    # A short Newton step is convergence when the whole step also lowers |f| (or f is at the
    # rounding level of x f'): near a cusp, where f' is huge and varies wildly, the step is
    # short and wrong (sqrt|x| + 1 near 0, which has no root: |f/f'| = 2e-12 with f = 1 passed),
    # and only steps that the search has shortened lower |f| there.
    # (A non-finite f(trial) fails armijo; at rounding level the step is not taken then.)
    converged = (fx == 0) | (step_small & ((armijo & (alpha == 1)) | at_rounding))
    code = jnp.where(
        exhausted, _fcode(Status.LINESEARCH_FAILED, dtype), _fcode(Status.STAGNATED, dtype)
    )
    code = jnp.where(at_rounding, _fcode(Status.PRECISION_LIMIT, dtype), code)
    code = jnp.where(exhausted | (trial == x), code, _fcode(Status.RUNNING, dtype))
    code = jnp.where(singular, _fcode(Status.SINGULAR, dtype), code)
    code = jnp.where(converged, _fcode(Status.SUCCESS, dtype), code)
    accept = jnp.isfinite(ft) & ~singular & (armijo | converged)
    x_new = jnp.where(accept, trial, x)
    # A rejected step shrinks towards the minimiser of the quadratic through |f| at 0 (slope
    # -|f|) and at alpha, alpha |f| / (2 excess), as in Dennis & Schnabel's A6.3.1, here rounded
    # down to a power of two from 1/2 to 1/16: a Newton step that overshoots by 10^15 (x^3 -
    # 1e15 from 1) is cut to size in a dozen trials, where 30 halvings ran out. alpha stays a
    # power of two, so afx * alpha is exact, and no division or contraction into an FMA can
    # round differently in the per-element solver (its results equal the scalar solver's).
    pull = afx * alpha
    excess = (aft - afx) + pull  # the quadratic's curvature times alpha^2 (> 0: rejected)
    shrink = jnp.where(
        pull >= excess,
        0.5,
        jnp.where(2 * pull >= excess, 0.25, jnp.where(4 * pull >= excess, 0.125, 0.0625)),
    )
    shrink = jnp.where(jnp.isfinite(aft), shrink, 0.0625)
    alpha_new = jnp.where(accept, jnp.minimum(2 * alpha, 1.0), shrink * alpha)
    return x_new, alpha_new, fx, code


def _update_options(dtype, rtol, atol, ls_steps, c1):
    return dict(
        rtol=jnp.asarray(rtol, dtype), atol=jnp.asarray(atol, dtype), min_alpha=0.5**ls_steps, c1=c1
    )


def scalar_newton(f: Callable, x0: jax.Array, *, rtol, atol, max_iter, ls_steps, c1=1e-4):
    """Newton on a scalar equation ``f(x) = 0`` (one problem; see :func:`masked_newton` for many).

    Each iteration evaluates ``f`` and ``f'`` at ``x`` in one ``jax.jvp``, forms the Newton step
    ``d = -f/f'`` and either stops (``|d| <= atol + rtol |x|`` with a finite ``f'``, and the
    whole step lowers ``|f|`` as below, or ``f`` is at the rounding level of ``x f'``: the step
    is taken and the loop ends; near a cusp a short step is no sign of a root) or tries
    ``x + alpha d``: accepted when it satisfies the Armijo
    condition on ``|f|``, ``|f(x + alpha d)| <= (1 - c1 alpha) |f(x)|`` (then ``alpha`` doubles,
    up to 1), else ``alpha`` shrinks 2 to 16 times (by quadratic interpolation) and ``x`` is kept. An infinite ``f'(x)`` (a zero step whatever
    ``f(x)`` is) stops with ``SINGULAR``, as ``f'(x) = 0`` does. When ``alpha`` has
    fallen below ``2**-ls_steps`` the next iteration stops with ``LINESEARCH_FAILED`` (a local
    minimum of ``|f|`` that is not a root).

    The backtracking is folded into the driver's iterations (no inner loop), the state is only
    ``x`` and ``alpha`` (``f`` is recomputed, not carried), and the status is decided from ``f`` and
    ``f'`` at ``x`` alone (the reported progress is the pair ``x, f(x)`` of this iteration).
    ``n_iter`` counts trial points. Returns the final state, ``f`` at the final ``x`` and the
    driver's output.
    """
    opts = _update_options(x0.dtype, rtol, atol, ls_steps, c1)
    fx0 = f(x0)
    state = ScalarState(x0, jnp.ones_like(x0))
    progress = make_progress(x0, jnp.abs(fx0), converged=fx0 == 0)

    def step(s: ScalarState):
        x, alpha, fx, code = _scalar_update(f, s.x, s.alpha, **opts)
        code = code.astype(jnp.int32)
        converged = code == int(Status.SUCCESS)
        failure = jnp.where(converged, _RUNNING, code)
        # The progress reports the point where f was evaluated in this iteration (a consistent
        # pair x, f(x)); the step just decided is in the state.
        prog = make_progress(s.x, jnp.abs(fx), converged=converged, failure=failure)
        return ScalarState(x, alpha), prog

    out = iterate(step, state, progress, max_iter=max_iter, rtol=rtol, atol=atol, cauchy=False)
    return out.state, f(out.state.x), out


class MaskedState(NamedTuple):
    z: jax.Array  # x + i alpha, one complex array (see masked_newton)
    k: jax.Array  # the iterations taken so far (= n_iter of every running element)


# A stopped element keeps its status and n_iter in its alpha slot: -(n_iter * 16 + status + 1),
# an integer that the float holds exactly (float32: up to 2**24, so n_iter < 2**20).
_STATUS_BITS = 4
_STATUS_SLOTS = 1 << _STATUS_BITS
MASKED_MAX_ITER = 2**20 - 1


def decode_status(code: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(status, n_iter)`` from the status codes returned by :func:`masked_newton`."""
    code = (-code).astype(jnp.int32)
    return (code & (_STATUS_SLOTS - 1)) - 1, code >> _STATUS_BITS


def masked_newton(f: Callable, x0: jax.Array, *, rtol, atol, max_iter, ls_steps, c1=1e-4):
    """:func:`scalar_newton` for an elementwise ``f`` on an array ``x0``, run as ONE problem.

    Each driver iteration applies the folded Newton iteration of :func:`scalar_newton` to every
    element of the arrays and keeps the result only where the element is still running; an
    element stops exactly as the scalar solver would (its own convergence test, failure code, or
    a non-finite ``f`` at ``x``: ``NONFINITE``, ``x`` kept), and the driver stops when none is
    running (or at ``max_iter``: those left get ``MAX_ITER``). The per-element results equal
    those of ``vmap(scalar_newton)``.

    Why this shape: XLA on CPU writes each array that a loop iteration produces in a fused pass
    of its own, each pass recomputing what it needs (``f``, ``f'``, the trial point), and it
    does not fuse a division that has several uses. So the iteration produces ONE array: the
    state is ``x`` and the step size ``alpha`` packed as the complex number ``z = x + i alpha``
    (a stopped element needs no step size, so its status and ``n_iter`` are stored in ``alpha``
    as a non-positive integer, ``-(16 n_iter + status + 1)``; a running element's ``n_iter`` is
    the shared count ``k``), and the division has one use (see :func:`_scalar_update`). An
    iteration is then one elementwise pass (``f`` and ``f'`` at ``x``
    by ``jax.jvp``, ``f`` at the trial point, the Armijo test and the status as selects) and one
    max-reduction of ``alpha`` telling the driver whether any element still runs
    (``check_finite=False``: the non-finite test is per element here). There is no ``vmap`` of
    a while loop, which would add a select of every carried array per iteration. The pass is
    bound by its arithmetic, about 75 vector instructions per 4 float64 elements on x86 (a plain
    Newton step takes about 10): the Newton step and the Armijo test are a third of them, the
    tolerance and finiteness tests, the status and the masking the rest.

    Returns ``(x, code)``: the roots and the status codes (``MAX_ITER`` for the elements still
    running at the end), which :func:`decode_status` splits into ``(status, n_iter)``.
    """
    if max_iter > MASKED_MAX_ITER:
        raise ValueError(
            f"max_iter must be at most {MASKED_MAX_ITER} in per-element mode, got {max_iter}"
        )
    dtype = x0.dtype
    opts = _update_options(dtype, rtol, atol, ls_steps, c1)
    one = np.dtype(dtype).type(1)

    def stopped(status, n_iter):
        return -(n_iter * _STATUS_SLOTS + one) - status

    fx0 = f(x0)
    # At the start: NONFINITE or SUCCESS (f(x0) = 0) with n_iter = 0, else running (alpha = 1).
    status0 = jnp.where(fx0 == 0, _fcode(Status.SUCCESS, dtype), _fcode(Status.RUNNING, dtype))
    status0 = jnp.where(
        jnp.isfinite(x0) & jnp.isfinite(fx0), status0, _fcode(Status.NONFINITE, dtype)
    )
    alpha0 = jnp.where(status0 < 0, one, stopped(status0, 0))
    state = MaskedState(lax.complex(x0, alpha0), jnp.zeros((), jnp.int32))

    zero = jnp.zeros((), dtype)

    def progress(alpha):
        # The driver sees only whether any element still runs (alpha > 0).
        return make_progress(zero, zero, converged=jnp.max(alpha) <= 0)

    def step(s: MaskedState):
        x, alpha = jnp.real(s.z), jnp.imag(s.z)
        x_new, alpha_new, fx, code = _scalar_update(f, x, alpha, **opts)
        running, finite = alpha > 0, jnp.isfinite(fx)
        code = jnp.where(finite, code, _fcode(Status.NONFINITE, dtype))
        k = s.k + 1
        alpha_new = jnp.where(code < 0, alpha_new, stopped(code, k.astype(dtype)))
        z = lax.complex(jnp.where(running & finite, x_new, x), jnp.where(running, alpha_new, alpha))
        # The barrier makes the reduction read alpha back from z: otherwise XLA forwards
        # imag(complex(x, alpha)) to alpha and writes alpha in a second pass of its own.
        z = lax.optimization_barrier(z)
        return MaskedState(z, k), progress(jnp.imag(z))

    # The initial progress says "running" without a reduction: an element stopped at the start
    # is frozen (alpha <= 0) in the first iteration.
    out = iterate(
        step,
        state,
        make_progress(zero, zero),
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        cauchy=False,
        check_finite=False,
    )
    z, k = out.state

    def stamp_max_iter(z):
        alpha = jnp.imag(z)
        stop = stopped(_fcode(Status.MAX_ITER, dtype), k.astype(dtype))
        return jnp.real(z), jnp.where(alpha > 0, stop, alpha)

    # Only when the loop ran out of iterations are elements left running (MAX_ITER). The
    # conditional also writes x out as a real array: a kernel that reads x from z instead (f at
    # the root, say) is vectorised around the complex layout, and LLVM then contracts its
    # multiply-adds differently from its scalar remainder loop, so its rounding would depend
    # on the element's position in the array (tests/test_sharding.py compares bitwise).
    ran_out = out.status == int(Status.MAX_ITER)
    return lax.cond(ran_out, stamp_max_iter, lambda z: (jnp.real(z), jnp.imag(z)), z)


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
