"""Least-squares iterations for curve fitting: Levenberg-Marquardt, Gauss-Newton, gradient descent.

Each method is an ``init``/``step`` pair run by :func:`jaxopt_mml._driver.iterate` on a flat
parameter vector ``u``. The residual function ``residual(u) -> r`` returns the weighted residuals
``(y - f) / sigma``; robust losses rescale ``r`` and ``J = dr/du`` each iteration
(:mod:`._fit_losses`). ``r`` and ``J`` come from one forward-mode pass (``jax.jacfwd``).

**Levenberg-Marquardt** (More 1978; Nielsen 1999; Madsen, Nielsen & Tingleff 2004). With
``g = J^T r``, ``A = J^T J`` and the MINPACK scaling ``D = diag(max_k diag(A_k))`` (the running
maximum of the squared column norms, which makes the method invariant to the parameters' units),
the step solves the damped normal equations

    (A + lambda D) h = -g

by Cholesky in the equilibrated variables ``D^{1/2} h``. With bounds (a change of variables
``p(u)``) ``A`` includes the change of variables' own curvature where it is positive
(:func:`with_bound_curvature`), in Gauss-Newton too; a parameter held on its bound (where the
change of variables is flat) while the data pull it off takes a Newton step of its own in ``p``
(:func:`release_from_bounds`, Levenberg-Marquardt only). Geodesic acceleration (Transtrum &
Sethna 2012) adds the second-order correction ``a = -(A + lambda D)^{-1} J^T r''_vv`` (one
forward-over-forward pass for the directional second derivative ``r''_vv``) and rejects steps with
``2 |a| > 1.5 |v|`` (in the scaled norm; Transtrum and Sethna suggest 0.75, which rejects more
steps than needed here): such steps leave the region where the linear model
holds, and accepting them is how parameters "evaporate" to infinity from a poor start (NIST's
BoxBOD, Eckerle4 and MGH10 from their first starts). With a robust loss ``r''_vv`` is scaled
as the rows of ``J`` are (:mod:`._fit_losses`: the loss's curvature factor held fixed over the
step; it was off for robust losses before): in a differential fuzz of 2688 robust fits against
scipy it reaches the minimum in 95.3% of them instead of 94.0%, in 5% fewer iterations. The
gain ratio ``rho = (cost(u) - cost(u + h)) / (v^T (lambda D v - g))`` decides: ``rho >= 1e-4``
(MINPACK's rule) accepts the step and sets ``lambda *= max(1/3, 1 - (2 rho - 1)^3)`` (Nielsen's
smooth update, few iterations near the solution); otherwise ``lambda *= nu, nu *= 2``; a step
damped below the resolution of the cost cuts ``lambda`` at once (:func:`_unblind`). Each
iteration computes ``r`` and ``J`` at the current point (one ``jacfwd``), the second derivative
there, and only the residual at the trial point. The state carries no ``N``-sized array: under
``vmap`` a while loop copies its whole carry (by a select) every iteration, and recomputing
``J`` costs less than carrying it.

**Gauss-Newton** solves ``A h = -g`` (with a damping of ``16 eps``, :func:`_tiny_damping`) and
backtracks along ``h`` (Armijo) on the cost. With a robust loss its rows' curvature factor is
floored at ``1e-3`` of the IRLS weight ``rho'`` (``_LINE_SEARCH_WEIGHT_FLOOR``), not at scipy's
``eps`` alone, so that points where the loss has no curvature (outliers) do not leave ``A``
singular and the step too long for the line search.
**Gradient descent** steps along ``-g`` with a backtracking line search whose first trial is twice the
last accepted step: slow (linear convergence at the rate set by the conditioning of ``A``), but the
course's first method. Its own steps say little of the distance left to the minimum, so its
convergence tests judge the Gauss-Newton step from the current point instead (a ``k x k`` solve
per iteration); it often needs its whole ``max_iter`` to reach the default ``rtol``.

Convergence (relative, as MINPACK's ``ftol``/``xtol``/``gtol``): the predicted and actual relative
reductions of the cost are both below ``rtol**2`` (the cost is quadratic in the parameters' error);
or every parameter's step, scaled up by the damping of that parameter,
``max(1, lambda D_i / A_ii) |h_i|``, is below ``rtol |u_i| + atol`` or changes the residuals by
less than ``rtol |r|`` (``|J_i| |h_i|``; a step made small by heavy damping is not convergence;
floored at the rounding of the weighted data, :func:`rounding_floor`, which a fit to exact data
reaches); or the gradient is orthogonal to the residuals to machine precision; or the cost
refused a step whose undamped predicted reduction is below what the cost resolves
(``_RESOLVE`` roundings, or the noise seen on steps predicted to change it by less than one
rounding, :func:`_noise`). With bounds the step test allows for the resolution of the change of
variables (``2 eps`` times the bounds' size). A fit whose damping grows past ``1 / eps**2`` (no
step lowers the cost measurably, short of those tests) ends ``PRECISION_LIMIT``.

References: J. J. More, Lecture Notes in Mathematics 630 (1978); H. B. Nielsen, IMM-REP-1999-05;
M. K. Transtrum and J. P. Sethna, "Improvements to the Levenberg-Marquardt algorithm for nonlinear
least-squares minimization", arXiv:1201.5885 (2012).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._driver import make_progress
from ._fit_data import Bounds, resolution, slopes, to_external, to_internal
from ._fit_losses import robust_cost, robust_scale, robust_scale_with_factor
from ._fit_stats import spd_inverse
from ._linesearch import backtracking
from ._small_linalg import chol_solve, cholesky, diagonal, gram
from ._status import Status

METHODS = ("lm", "gauss-newton", "gradient-descent")
DEFAULT_MAX_ITER = {"lm": 200, "gauss-newton": 200, "gradient-descent": 20000}
_RUNNING = int(Status.RUNNING)


class LSState(NamedTuple):
    u: jax.Array  # parameters (flat, unconstrained)
    cost: jax.Array  # robust cost at u (sum r^2 for the linear loss; 0 before the first step)
    lam: jax.Array  # LM damping (GD: the last step size; 0 before the first step)
    nu: jax.Array  # LM damping growth factor
    dscale: jax.Array  # running max of squared column norms
    n_accepted: jax.Array
    last_q: jax.Array  # LM: the last accepted step's size in tolerances (inf before one)
    last_act: jax.Array  # LM: the last accepted step's reduction of the cost (inf before one)
    noise: jax.Array  # LM: the cost's rounding noise seen at u (:func:`_noise`; 0 before any)


class Problem(NamedTuple):
    """What the iterations need: the residual function of ``u`` and the loss (static), and
    ``to_params``, the map from ``u`` to the parameters where they differ (bounds: the step
    test is on the parameters, not on ``u``, whose scale the change of variables sets), and
    ``slopes``, the change of variables' ``u -> (p'(u), p''(u), |p'(u)| / max |p'|)`` (see
    :func:`._fit_data.slopes`), and ``from_params``, its inverse (for
    :func:`release_from_bounds`), ``resolution``, how finely ``to_params`` can place each
    parameter (the rounding of ``bound +- distance``: ``2 eps`` times the bounds' size), and
    ``data_scale``, the weighted data ``|w y|`` per point, whose rounding bounds how well the
    residuals resolve a step (:func:`rounding_floor`)."""

    residual: object
    loss: str
    f_scale: object
    to_params: object = None
    slopes: object = None
    from_params: object = None
    resolution: object = 0.0
    data_scale: object = None  # |w y| per point: the scale of the residuals' rounding


def make_problem(
    residual, loss: str, f_scale, *, bounds: Bounds | None = None, data_scale=None
) -> Problem:
    """The :class:`Problem` of ``residual(p)``; with ``bounds``, of the unconstrained variables
    ``u`` of MINUIT's change of variables (``_fit_data.to_external``), as ``curve_fit`` and
    ``least_squares`` both run it."""
    if bounds is None:
        return Problem(residual=residual, loss=loss, f_scale=f_scale, data_scale=data_scale)

    def to_params(u):
        return to_external(u, bounds)

    return Problem(
        residual=lambda u: residual(to_params(u)),
        loss=loss,
        f_scale=f_scale,
        to_params=to_params,
        slopes=lambda u: slopes(u, bounds),
        from_params=lambda p: to_internal(p, bounds),
        resolution=resolution(bounds),
        data_scale=data_scale,
    )


def stationarity(problem: Problem, u):
    """``J^T rho' r`` at ``u``, zero at a solution: the optimality condition that implicit
    differentiation linearises (in ``u``: a parameter held on its bound gets derivative 0)."""
    r, jac = value_and_jacfwd(problem.residual, u)
    rs, js, _ = robust_scale(problem.loss, r, jac, problem.f_scale)
    return js.T @ rs


def final_status(status, n_accepted, stop_cost, cos, near, rtol, jac):
    """The driver's status with what it cannot see, at the point a fit returns.

    A stop without any accepted step (``n_accepted == 0``, at a cost ``stop_cost > 0``) short of
    a stationary point (the gradient's cosine ``cos`` above ``rtol``, and not ``near``: the
    caller's test that the Gauss-Newton step would gain little) means the dtype could not
    resolve the cost's change near the start; it and a damping that ran away (``STAGNATED``)
    are ``PRECISION_LIMIT``. A Jacobian ``jac`` that is not finite is ``NONFINITE`` (the step
    was then NaN, set to 0, and passed the step test: the fit stopped at its start)."""
    succ = int(Status.SUCCESS)
    stalled = (status == succ) & (n_accepted == 0) & (cos > rtol) & (stop_cost > 0) & ~near
    status = jnp.where(
        stalled | (status == int(Status.STAGNATED)), int(Status.PRECISION_LIMIT), status
    )
    return jnp.where(jnp.all(jnp.isfinite(jac)), status, int(Status.NONFINITE))


def is_half(dtype) -> bool:
    """Whether ``dtype`` is float16 or bfloat16 (static)."""
    return jnp.finfo(dtype).bits < 32


def unresolved_in_half(problem: Problem, u, rtol, atol):
    """Whether a half-precision fit at ``u`` is short of its minimum: the Gauss-Newton step
    from ``u`` fails the step test (:func:`_step_small`, the undamped step), would still lower
    the cost by more than ``rtol`` of it, and moves the residuals by more than their rounding
    (``False`` in float32 and float64, where this costs nothing).

    The convergence tests allow for the dtype's rounding with margins (the gradient test at
    ``16 eps``, a failed line search within ``256 eps`` of the cost, the Gauss-Newton steps'
    damping of ``16 eps``) that lie far below the default ``rtol = sqrt(eps)`` in float32 and
    float64, and imply it there; in float16 and bfloat16 they are as large as ``rtol`` itself
    (``16 eps = 0.125`` in bfloat16), and passed far from the minimum: least squares of
    Rosenbrock's residuals from (-1.2, 1) in bfloat16 stopped with SUCCESS at (0.71, 0.5), cost
    0.043 (Levenberg-Marquardt, on the gradient test) and at (-1.08, 1.16), cost 2.2
    (Gauss-Newton, on the step test), the minimum (1, 1) with cost 0 being representable. The
    step is solved in float32 from the residuals and Jacobian that the dtype gives (bfloat16's
    own ``k eps`` test of regularity refuses a correlation of 0.99 between two columns). With
    bounds it is the step of the iterations' model in ``u`` (:func:`with_bound_curvature`): a
    parameter held on its bound by the data adds nothing. Where ``J^T J`` is singular (in
    float32) nothing is judged."""
    if not is_half(u.dtype):
        return jnp.asarray(False)
    dtype, f32 = u.dtype, jnp.float32
    r, jac = value_and_jacfwd(problem.residual, u)
    rs, js, cost = robust_scale(problem.loss, r, jac, problem.f_scale)
    g = js.T @ rs
    colnorm = jnp.sqrt(diagonal(gram(js)))
    rs32, js32, cost32 = rs.astype(f32), js.astype(f32), cost.astype(f32)
    a = gram(js32)
    g32 = js32.T @ rs32
    if problem.slopes is not None:
        d1, d2, _ = (t.astype(f32) for t in problem.slopes(u))
        e = g32 * (d2 / d1)
        a = a + np.eye(a.shape[0], dtype=f32) * jnp.where(jnp.isfinite(e), jnp.maximum(e, 0.0), 0)
    inverse, regular = spd_inverse(a)
    gn = inverse @ g32
    h = -gn.astype(dtype)
    floor = rounding_floor(problem.data_scale, colnorm)
    state = init(u)._replace(cost=cost)
    small = _step_small(problem, state, h, rtol, atol, colnorm, g, 1.0, floor)
    at_rounding = jnp.all(jnp.abs(h) * colnorm <= floor)
    gains = g32 @ gn > jnp.asarray(rtol, f32) * cost32
    return regular & gains & ~small & ~at_rounding & jnp.isfinite(cost)


def with_bound_curvature(problem: Problem, u, a, g):
    """``J^T J`` plus the change of variables' own curvature, where it is positive.

    With bounds the residuals are ``r(p(u))`` and the Hessian of ``|r|^2 / 2`` in ``u`` has,
    beside ``J^T J`` and the model's own second derivatives, the diagonal term
    ``E_i = (J_p^T r)_i p''(u_i) = g_i p''(u_i) / p'(u_i)`` (``g = J^T r`` in ``u``). Gauss-Newton
    drops it with the rest, but near a bound ``p' -> 0`` and ``J^T J`` vanishes in that
    parameter while ``E_i`` does not: where the data push the parameter against its bound
    (``E_i > 0``) the true model is ``E_i (u_i - u*)^2 / 2`` and the Gauss-Newton one is flat, so
    its steps overshoot, the damping climbs and the fit creeps onto the bound linearly (runs of
    hundreds of iterations, and stops with SUCCESS short of the bound once the damped steps are
    small). With ``E_i`` the step lands on the bound as Newton's would. Where ``E_i < 0`` (the
    data pull the parameter away from its bound) it is left out, which keeps the matrix
    positive semidefinite; it vanishes at an interior minimum either way (``J_p^T r -> 0``)."""
    if problem.slopes is None:
        return a
    e = _bound_curvature(problem, u, g)
    e = jnp.where(jnp.isfinite(e), jnp.maximum(e, 0.0), 0.0)
    return a + np.eye(a.shape[0], dtype=a.dtype) * e


def _bound_curvature(problem: Problem, u, g):
    """``E_i = g_i p''(u_i) / p'(u_i)``, the change of variables' term of the Hessian."""
    d1, d2, _ = problem.slopes(u)
    return g * (d2 / d1)


_NEAR_BOUND = 0.1  # |p'| / max |p'| under which a parameter may be released from its bound


def release_from_bounds(problem: Problem, u, a, g, lam):
    """Steps that take parameters off a bound that the data pull them away from.

    On a bound the change of variables is at an extremum (``p'(u) = 0``): the parameter is flat
    in ``u``, its column of ``J`` vanishes with ``p'`` and so does its gradient, and no step of
    the Gauss-Newton model moves it. Where the data push it against the bound that is right
    (the bound is active); where they pull it off (``E_i = (J_p^T r)_i p''_i < 0``: the cost
    has a maximum in ``u_i`` there, a saddle) the fit is stuck at a point that is no minimum,
    and stopped there with SUCCESS (a bounded rational fit with a robust loss, 17% above the
    minimum in cost: a parameter that the first, poor, steps had pressed onto its bound).

    A parameter is released where it is near its bound (``|p'|`` under a tenth of its largest:
    within 0.25% of the span of a two-sided bound, 0.005 of a one-sided one) and that negative
    curvature outweighs the Gauss-Newton one (``-E_i > (J^T J)_ii``; away from the bounds this
    also holds for a parameter that has drifted out of the data's reach, whose Newton step is
    no rescue). It takes the damped Newton step of its own one-dimensional model in ``p``,
    ``dp = -g_p / (H_p (1 + lam))``, ``g_p = g_i / p'`` and ``H_p = (J^T J)_ii / p'^2`` (``p'`` is
    never exactly 0: :func:`._fit_data.slopes`), mapped back to ``u`` by the inverse transform.
    Returns the step in ``u`` (0 elsewhere), the released mask, and the step's predicted and
    undamped (``lam = 0``) reductions of the cost.
    """
    d1, d2, rel = problem.slopes(u)
    e = g * (d2 / d1)
    m = diagonal(a)
    gp = g / d1
    hp = m / (d1 * d1)
    near = rel < _NEAR_BOUND
    released = near & (e < 0) & (m < -e) & (hp > 0) & jnp.isfinite(gp) & jnp.isfinite(hp)
    hp_safe = jnp.where(released, hp, 1.0)
    dp = jnp.where(released, -gp / (hp_safe * (1.0 + lam)), 0.0)
    target = problem.from_params(problem.to_params(u) + dp)
    step = jnp.where(released, target - u, 0.0)
    pred = jnp.sum(jnp.where(released, -(2.0 * gp * dp + hp * dp * dp), 0.0))
    gain = jnp.sum(jnp.where(released, gp * gp / hp_safe, 0.0))
    return step, released, pred, gain


_EARLY_MAX = 64.0  # the longest step (in tolerances) after which a fit may stop early
_EARLY_DAMPING = 2.0  # nor after a step damped more than this (not Gauss-Newton's regime),
# nor after one that lowered the cost by more than rtol of it (as the step test)
_ACCEL_RATIO = 1.5  # bound on 2 |a| / |v| (Transtrum & Sethna suggest <= 0.75; 1.5 passes NIST)


def _second_directional(problem: Problem, u, v):
    """``d^2/dt^2 r(u + t v)`` at 0 (one forward-over-forward pass), of the raw residuals."""

    def dir_deriv(w):
        return jax.jvp(problem.residual, (w,), (v,))[1]

    return jax.jvp(dir_deriv, (u,), (v,))[1]


def value_and_jacfwd(fun, u):
    """``(fun(u), J)`` in one forward-mode pass, ``J[:, i] = d fun / d u_i``.

    As ``jax.jacfwd`` with ``has_aux``, but the tangent basis is a NumPy constant: jacfwd builds
    it in the program, and inside a loop XLA hoists it into kernels of their own."""
    basis = np.eye(u.shape[0], dtype=u.dtype)
    r, jac = jax.vmap(lambda t: jax.jvp(fun, (u,), (t,)), out_axes=(None, 1))(basis)
    return r, jac


# The line-search methods' floor on a robust loss's curvature factor, relative to the IRLS
# weight rho' (see :func:`._fit_losses.robust_scale_with_factor`): a direction that outliers
# alone determine gets at most 1000 times the IRLS step, which 10 of the search's 30 halvings
# undo. Levenberg-Marquardt's damping copes with scipy's floor (eps) and keeps it.
_LINE_SEARCH_WEIGHT_FLOOR = 1e-3


def _value_and_jac(problem: Problem, u, weight_floor: float = 0.0):
    """``(r_s, J_s, cost, rows)`` at ``u``: the residuals and Jacobian rescaled for the robust
    loss, its cost, and the rows' factor (1 for least squares; see
    :func:`._fit_losses.robust_scale_with_factor`)."""
    r, jac = value_and_jacfwd(problem.residual, u)
    return robust_scale_with_factor(problem.loss, r, jac, problem.f_scale, weight_floor)


def _cost(problem: Problem, u):
    return robust_cost(problem.loss, problem.residual(u), problem.f_scale)


def _finite(*arrays):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in arrays]))


def gradient_cosine(g, diag, cost):
    """``max_j |J_j . r| / (|J_j| sqrt(cost))`` from ``g = J^T r`` and the squared column norms
    ``diag``: 0 at a stationary point (MINPACK's gtol measure; ``sqrt(cost) = |r|`` for least
    squares, and the robust cost's root for robust losses)."""
    denom = jnp.sqrt(diag) * jnp.sqrt(cost)
    cos = jnp.where(denom > 0, jnp.abs(g) / jnp.where(denom > 0, denom, 1.0), 0.0)
    return jnp.max(cos, initial=0.0)


def init(u0, *, method: str = "lm", lam0: float = 1e-3):
    """The first state, with no evaluation of the model: every step recomputes ``r`` and ``J``
    at the current point, which is cheaper than carrying ``N x (k + 1)`` values through the loop
    (under ``vmap`` every carried array is copied by a select per iteration), and lets a batched
    driver start a problem at no cost. The scaling ``D`` starts at 0 and takes the first step's
    ``diag(J^T J)``; gradient descent's first step size (``lam = 0``) comes from its first step."""
    dtype = u0.dtype
    return LSState(
        u=u0,
        cost=jnp.zeros((), dtype),
        lam=jnp.asarray(lam0 if method == "lm" else 0.0, dtype),
        nu=jnp.asarray(2.0, dtype),
        dscale=jnp.zeros(u0.shape, dtype),
        n_accepted=jnp.asarray(0, jnp.int32),
        last_q=jnp.asarray(jnp.inf, dtype),
        last_act=jnp.asarray(jnp.inf, dtype),
        noise=jnp.zeros((), dtype),
    )


def _damped_factor(a, dscale, lam):
    """Cholesky factor of ``A + lam D`` in the equilibrated variables ``D^{1/2} h``, and
    ``D^{-1/2}``: ``h = s * chol_solve(chol, rhs * s)`` solves ``(A + lam D) h = rhs``."""
    s = 1.0 / jnp.sqrt(dscale)
    m = a * s[:, None] * s[None, :] + lam * np.eye(a.shape[0], dtype=a.dtype)
    return cholesky(m), s


def _damped_solve(a, g, dscale, lam):
    """Solve ``(A + lam D) h = -g`` by Cholesky of the equilibrated matrix; NaN if it fails."""
    chol, s = _damped_factor(a, dscale, lam)
    return chol_solve(chol, -g * s) * s


def _tests(
    problem: Problem,
    state: LSState,
    h,
    act,
    pred,
    rtol,
    atol,
    cos,
    colnorm,
    g,
    damping,
    floor,
    gain=None,
):
    """The convergence tests: the cost's reduction (MINPACK's ftol, at ``rtol**2`` since the cost
    is quadratic in the parameters' error), a step small in every parameter, or a gradient
    orthogonal to the residuals (gtol).

    A parameter's step is small when ``d_i |h_i| <= rtol |u_i| + atol`` (relative), or when its
    effect on the residuals is: ``d_i |h_i| |J_i| <= rtol |r|`` (``|J_i|`` the column norm
    ``colnorm``), ``d_i`` undoing the damping of that parameter's step (``damping``, see
    :func:`_damping`; 1 for Gauss-Newton and gradient descent). The second test is relative to
    the parameter's statistical uncertainty (``|r| / |J_i|`` is about ``sqrt(dof)`` standard
    errors), and serves parameters near zero, which a purely relative test would chase to
    ``rtol |u_i|`` (a tiny absolute accuracy, far below their standard error). With bounds the
    first test is on the parameters' step (the change of variables would set its scale: ``u``
    grows like ``|p - bound|`` for a one-sided bound); the second is the same in either
    variables.
    """
    cost = state.cost
    # (at least 4 eps: a cost cannot resolve relative changes near its rounding, and a test
    # stricter than that waits for the damping to shrink the predicted reduction instead)
    ftol = _ftol(rtol, cost.dtype, 4.0)
    # The predicted reduction scaled back up by the damping, as the step is in the step test
    # (``gain``; ``pred`` for the undamped methods): a reduction made small by heavy damping is
    # not convergence (robust losses from a start where every point is an outlier drove lam to
    # 1e20 and stopped at a non-stationary point, SUCCESS; a float32 fit whose rate parameter's
    # step was damped 1e8-fold stopped 25% above the minimum in chi2).
    gain = pred if gain is None else gain
    ftest = (jnp.abs(act) <= ftol * cost) & (gain <= ftol * cost) & (act <= 2.0 * pred)
    # (and a step that still lowers the cost by more than rtol of it is not small, whatever its
    # length: parameters known far better than rtol (stderr 1e-5 of their value, float32's
    # rtol 3.4e-4) passed the relative test while the step cut the cost by 3%, and the fit
    # stopped with chi2 twice the minimum; unless the cost is rounding itself: fitted to exact
    # data, its evaluations differ by about itself)
    xtest = _step_small(problem, state, h, rtol, atol, colnorm, g, damping, floor) & (
        jnp.abs(act) <= jnp.maximum(rtol * cost, _cost_rounding(problem.data_scale, cost))
    )
    gtest = cos <= 16 * jnp.finfo(cost.dtype).eps
    return ftest | xtest | gtest | (cost == 0)


def _below_default(rtol, dtype):
    """``rtol`` where it is below its default ``sqrt(eps)``, else 1: the factor that takes the
    cost tests' floors out (see :func:`_ftol`)."""
    eps = float(jnp.finfo(dtype).eps)
    return jnp.where(rtol < jnp.asarray(eps**0.5, dtype), rtol, 1.0)


def _ftol(rtol, dtype, floor):
    """The relative reduction of the cost below which it has converged: ``rtol**2``, floored at
    ``floor`` roundings of the cost (what it resolves) for ``rtol`` at or above its default
    ``sqrt(eps)``; ``rtol**2`` alone below it.

    The cost resolves relative changes of about ``eps``, and so the parameters to about
    ``sqrt(eps)`` in units of their error: ``rtol`` below that is honoured by the step test or
    not at all. A test floored at the cost's rounding (MINPACK's "ftol too small", its info 6, is
    a failure) stopped Gauss-Newton with SUCCESS at rtol=1e-12 on an exponential decay with the
    parameters 1.5e-11 (relative) from the minimum, where Levenberg-Marquardt's step test gets
    within 2e-14. Now such a fit ends on the step test, or with ``PRECISION_LIMIT``."""
    eps = jnp.finfo(dtype).eps
    r2 = rtol * rtol
    return jnp.where(rtol < jnp.asarray(float(eps) ** 0.5, dtype), r2, jnp.maximum(r2, floor * eps))


def _step_small(problem: Problem, state: LSState, h, rtol, atol, colnorm, g, damping, floor):
    """The step test of :func:`_tests`: every parameter's step is within its tolerance.

    The statistical test, ``|J_i| hs_i <= rtol |r|``, also asks that the step's first-order
    effect on the cost, ``|g_i| hs_i``, be within ``rtol`` of it: the same for least squares
    (``|g_i| <= |J_i| |r|``), but a robust loss's rescaled ``J`` says little of the cost where
    residuals are beyond the loss's inflection (their rows are scaled by ``sqrt(eps)``, and a
    Cauchy fit far from its minimum passed the test on a step of 0.04 with the gradient at 1e5).
    Where ``rtol |r|`` is below the residuals' rounding (``floor``, :func:`rounding_floor`) the
    rounding is the tolerance, and ``floor |r|`` that of the cost's change.
    """
    hs, hp, tol, stat = _step_scales(problem, state, h, rtol, atol, damping, floor)
    by_stat = (hs * colnorm <= stat) & (jnp.abs(g) * hs <= _cost_tolerance(state, rtol, floor))
    return jnp.all((hp <= tol) | by_stat)


def _cost_tolerance(state: LSState, rtol, floor):
    """``rtol cost``, or ``floor |r|`` where larger: the statistical test's bound on a step's
    first-order effect on the cost (:func:`_step_small`)."""
    return jnp.maximum(rtol * state.cost, floor * jnp.sqrt(state.cost))


def _cost_rounding(data_scale, cost):
    """How far the cost's evaluations may differ by the rounding of the residuals (``d``:
    ``eps |w y|`` in norm, :func:`rounding_floor`): ``d (2 |r| + d)``; 0 without
    ``data_scale``."""
    if data_scale is None:
        return jnp.zeros_like(cost)
    d = jnp.finfo(cost.dtype).eps * jnp.sqrt(jnp.sum(jnp.square(data_scale)))
    return d * (2.0 * jnp.sqrt(cost) + d)


def rounding_floor(data_scale, colnorm):
    """Per parameter, the change of the residuals below their rounding: ``eps`` times the
    weighted data's size where that parameter acts, ``sqrt(sum_j J_ji^2 (w_j y_j)^2) / |J_i|``,
    taken at its bound ``eps max_j |w_j y_j|`` (0 for ``data_scale`` None, and for a parameter
    without effect).

    The statistical step test asks ``|J_i| |h_i| <= rtol |r|``, which a fit to exact data (``|r|``
    at the rounding of the data, ``eps |w y|``) cannot meet: its Gauss-Newton steps fit that
    rounding, as long as ``|r|`` itself. A parameter whose true value is 0 then passes neither
    that test nor the relative one (``rtol |p_i|``), and noise-free data fitted to their minimum
    ended ``PRECISION_LIMIT`` (Levenberg-Marquardt, after 70-140 iterations) or
    ``LINESEARCH_FAILED`` (Gauss-Newton), where a nonzero true value ended ``SUCCESS``. Such a
    step moves the residuals by less than the rounding of the data it is fitted to, measured
    where the parameter acts (a parameter that only small data values feel keeps their finer
    resolution). The floor is what the rounding, as random, gives the projection ``J_i^T r /
    |J_i|``; residuals of a few roundings that the model cannot follow project coherently
    beyond it, and stay ``PRECISION_LIMIT`` (float32 data 1e7 + 0 or 1, whose best constant
    1e7 + 0.3 lies between two float32 values, 4.6 standard errors from either)."""
    if data_scale is None:
        return jnp.zeros_like(colnorm)
    # Bounded by eps max |w y| (a weighted mean of the data's sizes): that bound is the floor.
    # The projection itself, a pass over J per iteration, made a batch of 10^4 peak fits 25%
    # slower (2-core CPU); the bound is looser only for exact data spanning decades.
    eps = jnp.finfo(colnorm.dtype).eps
    return jnp.where(colnorm > 0, eps * jnp.max(data_scale), 0.0)


def _step_scales(problem: Problem, state: LSState, h, rtol, atol, damping, floor):
    """What the step test compares: the step ``hs``, scaled back up by the damping (a step made
    small by heavy damping is not convergence), the parameters' step ``hp`` likewise (``hs``
    itself without bounds), its relative tolerance ``rtol |p + hp| + atol`` (plus, with bounds,
    the resolution of the change of variables, ``Problem.resolution``) and the statistical one
    for ``hs |J_i|``, ``rtol |r|`` (or the residuals' rounding ``floor``, where larger).

    With bounds the parameters' step is at least ``|p'(u) h|``: a step below the resolution of
    ``u`` leaves ``p`` unchanged, and a difference of 0 scaled up by any damping passed the test
    (a robust fit damped 1e14-fold after its model's curvature had collapsed stopped with
    SUCCESS at 24x the minimum's cost)."""
    hs = _undamped(jnp.abs(h), damping)
    stat = jnp.maximum(rtol * jnp.sqrt(state.cost), floor)
    if problem.to_params is None:
        return hs, hs, rtol * jnp.abs(state.u + h) + atol, stat
    p_new = problem.to_params(state.u + h)
    dp = jnp.maximum(
        jnp.abs(p_new - problem.to_params(state.u)), jnp.abs(problem.slopes(state.u)[0] * h)
    )
    hp = _undamped(dp, damping)
    # (p is placed no finer than its bound's rounding: a bound at 1e8 with p ~ 0.3 makes that
    # 1.5e-8, above rtol |p|, and 1 fit in 8 cycled its damping at one point for 100 iterations
    # to PRECISION_LIMIT)
    return hs, hp, rtol * jnp.abs(p_new) + atol + problem.resolution, stat


def _undamped(step, damping):
    """``step * damping``, 0 for no step (whatever the damping, which may overflow to inf);
    NaN stays NaN (fails every test)."""
    return jnp.where(step == 0, 0.0, step * damping)


def _damping(lam, dscale, curvature):
    """Per parameter, how many times the damping shortened its step: ``max(1, lam D_i / M_ii)``,
    ``M`` the model's matrix (``J^T J``, with bounds' curvature); 1 for ``M_ii = 0``, a
    parameter with no effect on the residuals, whose step is 0.

    The step in parameter ``i`` alone is ``-g_i / (M_ii + lam D_i)``, the Gauss-Newton one
    ``-g_i / M_ii``. With ``D`` the running maximum of ``diag(J^T J)`` the ratio ``D_i / M_ii``
    is about 1 for most fits, and this is ``max(1, lam)``; but a parameter whose column has
    shrunk since (a rate that drifted to where its term no longer reaches the data: ``M_ii``
    1e-8 of ``D_i`` in a float32 fit of two exponentials) takes steps damped by a factor of
    ``1e4`` at ``lam = 1e-4``, and a step test on the damped step stopped that fit with SUCCESS
    at chi2 15% above the minimum."""
    ratio = lam * dscale / jnp.where(curvature > 0, curvature, 1.0)
    return jnp.where(curvature > 0, jnp.maximum(ratio, 1.0), 1.0)


# A step is taken where it achieves this much of its predicted reduction (MINPACK's 1e-4): with
# a robust loss (then without geodesic acceleration) a first step of 1e12 that achieved 3e-13 of
# its prediction was taken, every exponential of the model underflowed, and the fit stopped
# there (COVARIANCE_UNDEFINED, success) at 15x the minimum's cost.
_RHO_MIN = 1e-4
_RESOLVE = 64.0  # a predicted reduction below this many roundings of the cost is not judged
_NULL_CUT = 64.0  # the further cut after a step that left the cost unchanged


def _resolution(cost):
    """``_RESOLVE`` roundings of the cost: changes below this are not judged."""
    # (eps first: a NumPy bfloat16 eps times a Python float is a float32, which made a bfloat16
    # fit's damping float32 and its loop's carry change dtype)
    return jnp.finfo(cost.dtype).eps * cost * _RESOLVE


def _unblind(lam, nu, lam_old, pred, gain, cost, accept, act, damping):
    """The damping after a step too short to be judged.

    An accepted step whose predicted reduction is within ``_RESOLVE`` roundings of the cost,
    while the undamped (Gauss-Newton) one is not and the damping makes the difference: its gain
    ratio is rounding noise (the step may not even change the parameters), and the usual update
    (at most a third down per accepted step) keeps the damping where it is. It is cut instead in
    proportion, to where the next step's predicted reduction is about ``_RESOLVE`` roundings of
    the cost. Likewise, and ``_NULL_CUT`` times further, after a heavily damped step that left
    the cost exactly as it was. ``nu`` is left alone, so that where larger steps fail again the
    damping climbs ever faster (and a fit that the dtype cannot resolve still ends
    PRECISION_LIMIT).

    The damping reaches such heights where the model's curvature collapsed for a while: a robust
    loss with every residual beyond its inflection (the curvature factor floored at eps) took
    the damping to 1e15 and, once the points were back in range, the fit crept on with steps of
    1e-17 and stopped with SUCCESS at 17x the minimum's cost."""
    floor = _resolution(cost)
    dmax = jnp.max(damping)
    # (the damping shortened the step enough to matter: in a degenerate valley, undamped, the
    # per-parameter gain exceeds the predicted reduction by cancellation, not by damping, and
    # cutting nothing there only sent the fit along the valley with steps that failed)
    unjudged = accept & (pred < floor) & (gain > floor) & (pred * dmax > floor)
    # A heavily damped step that left the cost exactly as it was (below the resolution of u),
    # whatever its prediction: a cut to where the prediction is resolvable can leave it there,
    # and the damping then cycled between that cut and its growth after each null step. (Not an
    # undamped one: a float32 optimum between two representable values must end on the step
    # test, PRECISION_LIMIT.)
    null = (act == 0) & (gain > floor) & (dmax > _NULL_CUT)
    blind = unjudged | null
    cut = lam_old * jnp.minimum(pred / floor, 1.0) / jnp.where(null, _NULL_CUT, 1.0)
    return jnp.where(blind, jnp.minimum(cut, lam), lam), nu


def _noise(noise, pred, act, cost, ok):
    """The cost's rounding noise at the current point: the largest change of the cost seen on
    a trial step that the model predicts to change it by less than one of its roundings.

    Residuals computed with cancellation inside the model (MGH's trigonometric function:
    ``n - sum cos x_j`` near 1e-3 from terms near 10) leave the cost noisy at thousands of
    roundings, a level the outside cannot see. There, at the minimum, the undamped step's
    predicted reduction (~2000 roundings) never materialised, the damping cycled between its
    growth and :func:`_unblind`'s cuts, and the fit spent 130 iterations at one point before
    ending ``PRECISION_LIMIT`` (or, with other roundings, stopped at once with success). With
    the noise measured, a reduction left below it is convergence (``lm_step``); the noise is
    measured afresh after each accepted step."""
    blind = ok & (jnp.abs(pred) <= jnp.finfo(cost.dtype).eps * cost)
    return jnp.where(blind, jnp.maximum(noise, jnp.abs(act)), noise)


def _step_ratio(problem: Problem, state: LSState, h, rtol, atol, colnorm, g, damping, floor):
    """The step's size in units of the step test's tolerance: per parameter the smaller of
    ``hp_i / tol_i`` and the statistical test's ratio (the larger of ``hs_i |J_i| / stat`` and
    ``hs_i |g_i| / (rtol cost)``: see :func:`_step_small`), the largest over the parameters, so
    that the step test passes where this is <= 1."""
    hs, hp, rel, stat = _step_scales(problem, state, h, rtol, atol, damping, floor)
    by_rel = _ratio(hp, rel)
    cost_tol = _cost_tolerance(state, rtol, floor)
    by_stat = jnp.maximum(_ratio(hs * colnorm, stat), _ratio(jnp.abs(g) * hs, cost_tol))
    return jnp.max(jnp.minimum(by_rel, by_stat))


def _ratio(step, tol):
    """``step / tol``, with ``0 / 0 = 0`` and ``step / 0 = inf``."""
    safe = jnp.where(tol > 0, tol, 1.0)
    return jnp.where(tol > 0, step / safe, jnp.where(step > 0, jnp.inf, 0.0))


def _current_cost(state: LSState, cost_with_jac):
    """The cost at the current point that trial costs are compared with.

    Once a step has been accepted, it is the cost that step's trial evaluation gave, so that
    trial costs are always compared with costs computed the same way. The value-and-Jacobian pass
    rounds differently (XLA fuses it differently, on GPUs notably): compared across the two
    passes, steps of rounding size near the minimum passed or failed at random, held the damping
    up and kept converged fits from stopping (seen on an H100; tested by emulation).
    """
    return jnp.where(state.n_accepted > 0, state.cost, cost_with_jac)


def lm_step(problem: Problem, rtol, atol):
    def step(state: LSState):
        # r, J and the cost at the current point; the trial point needs only its cost.
        r, jac, cost, rows = _value_and_jac(problem, state.u)
        cost = _current_cost(state, cost)
        state = state._replace(cost=cost)
        a = gram(jac)
        g = jac.T @ r
        diag = diagonal(a)
        dscale = jnp.maximum(state.dscale, diag)
        dsafe = jnp.where(dscale > 0, dscale, 1.0)  # a column that is 0 so far: unit scale
        model = with_bound_curvature(problem, state.u, a, g)
        # one factor for the step and its correction
        chol, s = _damped_factor(model, dsafe, state.lam)
        v = chol_solve(chol, -g * s) * s
        solved = jnp.all(jnp.isfinite(v))
        v = jnp.where(solved, v, 0.0)
        # Geodesic acceleration; a robust loss's r''_vv is scaled as its rows of J are (the
        # loss's curvature factor held fixed over the step).
        rvv = _second_directional(problem, state.u, v) * rows
        acc = chol_solve(chol, -(jac.T @ rvv) * s) * s
        dn = jnp.sqrt(dsafe)
        # 2 |a| <= ratio |v| in the scaled norm (compared squared: no square roots).
        acc_ok = 4.0 * jnp.sum((dn * acc) ** 2) <= _ACCEL_RATIO**2 * jnp.sum((dn * v) ** 2)
        acc = jnp.where(jnp.all(jnp.isfinite(acc)), acc, 0.0)
        h = v + 0.5 * acc
        if problem.slopes is None:
            pred = v @ (state.lam * dsafe * v - g)
            gain_released = 0.0
        else:
            # parameters held on a bound that the data pull them off take a step of their own
            release, released, pred_rel, gain_released = release_from_bounds(
                problem, state.u, a, g, state.lam
            )
            h = jnp.where(released, release, h)
            v = jnp.where(released, 0.0, v)
            pred = -(2.0 * (g @ v) + v @ (model @ v)) + pred_rel
        u_new = state.u + h
        r_new = problem.residual(u_new)
        cost_new = robust_cost(problem.loss, r_new, problem.f_scale)
        act = cost - cost_new
        ok = solved & jnp.isfinite(cost_new)  # a sum over r: non-finite with any r_i
        act = jnp.where(ok, act, -jnp.inf)
        rho = act / jnp.where(pred > 0, pred, 1.0)
        accept = ok & (pred > 0) & (act > 0) & (rho >= _RHO_MIN) & acc_ok
        lam_acc = state.lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        lam = jnp.where(accept, lam_acc, state.lam * state.nu)
        nu = jnp.where(accept, 2.0, 2.0 * state.nu)
        # The gradient test at the current point: a stationary point stops without a step.
        cos = gradient_cosine(g, diag, cost)
        colnorm = jnp.sqrt(diag)
        damping = _damping(state.lam, dsafe, diagonal(model))
        # The Gauss-Newton reduction, parameter by parameter: g_i^2 / M_ii = |g_i v_i| d_i (for
        # a diagonal M; pred = sum |g_i v_i| at lam = 0). A parameter that has no effect left
        # (g_i = 0 at a degenerate minimum) adds nothing however damped its step.
        gain = jnp.sum(_undamped(jnp.abs(g * v), damping)) + gain_released
        lam, nu = _unblind(lam, nu, state.lam, pred, gain, cost, accept, act, damping)
        floor = rounding_floor(problem.data_scale, colnorm)
        converged = _tests(
            problem, state, h, act, pred, rtol, atol, cos, colnorm, g, damping, floor, gain
        )
        # A step that the cost refused where the reduction left (undamped) is below what the
        # cost can resolve, its noise or _RESOLVE roundings: as Gauss-Newton's failed search at
        # its floor (_finish_line_step), converged; in parameters about 1e-7 sqrt(dof) standard
        # errors from the minimum in float64. (Brown-Dennis, 2e-15 off its minimum's cost,
        # grew its damping past 1/eps^2 for 20 more iterations and ended PRECISION_LIMIT.)
        noise = _noise(state.noise, pred, act, cost, ok)
        unresolved = gain <= jnp.minimum(
            jnp.maximum(noise, _resolution(cost)), rtol * cost * _below_default(rtol, cost.dtype)
        )
        converged = converged | (ok & acc_ok & ~accept & unresolved)
        # The next step, predicted from the rate at which the last two accepted steps shrank,
        # would pass the step test: stop now rather than take it (one iteration in six here).
        # Only after a clear contraction (at least 4x) and for a step at most _EARLY_MAX
        # tolerances long, so that an erratic sequence cannot stop a fit far out; and not on the
        # rate from the first step, which is rarely in the quadratic regime (in a narrow valley
        # a long first step then a short one along the valley stopped a float32 fit after two
        # iterations, 0.08 standard errors out).
        q = _step_ratio(problem, state, h, rtol, atol, colnorm, g, damping, floor)
        last = state.last_q
        early = (state.n_accepted >= 2) & (q * q <= last) & (4.0 * q <= last) & (q <= _EARLY_MAX)
        early = early & (jnp.max(damping) <= _EARLY_DAMPING) & (act <= rtol * cost)
        # And, unless the reduction is negligible (below rtol^1.5 of the cost: about
        # sqrt(rtol^1.5 dof) standard errors, 0.02 in float32 at dof = 60; or within the cost's
        # rounding, where its ratio is noise), the cost's reductions contract with the steps as
        # near a minimum, where a step's reduction goes as its length squared: at least as the
        # 1.5th power (early stops of the peak fits show 2). A float32 fit of Osborne 1 from
        # 100 x0, its steps and its reductions of 1e-4 of the cost both shrinking 4-fold (a
        # gradient that does not vanish), stopped early at 1.8e4 times the minimum's cost.
        shrink_act, shrink_q = act / state.last_act, q / last
        rtol_15 = jnp.asarray(rtol, cost.dtype) ** 1.5
        negligible = act <= jnp.maximum(_resolution(cost), rtol_15 * cost)
        early = early & (negligible | (shrink_act * shrink_act <= shrink_q**3))
        converged = converged | (accept & early)
        converged = converged & (ok | ~solved)  # a non-finite trial is never convergence
        new = LSState(
            u=jnp.where(accept, u_new, state.u),
            cost=jnp.where(accept, cost_new, cost),
            lam=lam,
            nu=nu,
            dscale=dscale,
            n_accepted=state.n_accepted + accept.astype(jnp.int32),
            last_q=jnp.where(accept, q, state.last_q),
            last_act=jnp.where(accept, act, state.last_act),
            noise=jnp.where(accept, 0.0, noise),
        )
        df = jnp.where(accept, cost_new - cost, 0.0)
        # (the cap in Python floats, and below the dtype's largest number: float16's 1 / eps^2
        # overflowed to inf in NumPy with a RuntimeWarning at trace time, and no damping
        # could pass it)
        info = jnp.finfo(lam.dtype)
        cap = min(float(info.eps) ** -2, 0.5 * float(info.max))
        failure = jnp.where(lam > cap, int(Status.STAGNATED), _RUNNING)
        progress = make_progress(new.u, new.cost, dx=h, df=df, converged=converged, failure=failure)
        return new, progress

    return step


def gn_step(problem: Problem, rtol, atol):
    def step(state: LSState):
        r, jac, cost, _ = _value_and_jac(problem, state.u, _LINE_SEARCH_WEIGHT_FLOOR)
        cost = _current_cost(state, cost)
        a = gram(jac)
        g = jac.T @ r
        dscale = jnp.maximum(state.dscale, diagonal(a))
        h = _gauss_newton_step(problem, state.u, a, g, dscale)
        solved = jnp.all(jnp.isfinite(h))
        h = jnp.where(solved, h, 0.0)
        dphi0 = 2.0 * (g @ h)
        search = backtracking(lambda t: _cost(problem, state.u + t * h), cost, dphi0)
        state = state._replace(cost=cost, dscale=dscale)
        # How many times the 16 eps damping (in the running maximum's units) shortened each
        # parameter's step, and the undamped reduction: against a column that has shrunk since
        # (a rate that drifted where its term no longer reaches the data) that damping
        # outweighs the column's curvature, and the tests judged a step ~1e6 times too short:
        # an exponential from p0 = (1, -5) stopped with SUCCESS at 5600 times the minimum's
        # chi2, its gradient cosine 1.6e-4 (11 of 800 random starts of exponential and peak
        # fits, cosines up to 0.65; 112 of 800 in float32).
        model = with_bound_curvature(problem, state.u, a, g)
        dsafe = jnp.where(dscale > 0, dscale, 1.0)
        damping = _damping(_tiny_damping(a.dtype), dsafe, diagonal(model))
        gh = jnp.abs(g * h)
        surplus = jnp.sum(jnp.where(damping > 1.0, _undamped(gh, damping) - gh, 0.0))
        return _finish_line_step(
            problem, state, jac, search, h, g, rtol, atol, solved, h, damping, surplus
        )

    return step


def gd_step(problem: Problem, rtol, atol):
    def step(state: LSState):
        r_raw, jac_raw = value_and_jacfwd(problem.residual, state.u)
        r, jac, cost, _ = robust_scale_with_factor(problem.loss, r_raw, jac_raw, problem.f_scale)
        cost = _current_cost(state, cost)
        g = jac.T @ r
        h = -g
        dphi0 = -2.0 * (g @ g)
        # The first trial step is twice the last accepted one; at the start 1 / trace(J^T W J)
        # (twice a step below 1 / L for the cost's gradient), W the IRLS weights rho', which
        # bound the loss's curvature (rho'' <= 0). (J_s^T J_s, whose rows scipy's floor eps
        # leaves where a loss has no curvature, made the first step 1 / eps too long where
        # every point starts as an outlier: LINESEARCH_FAILED at p0.)
        irls = robust_scale_with_factor(problem.loss, r_raw, jac_raw, problem.f_scale, 1.0)[1]
        trace = jnp.sum(irls * irls)
        last = jnp.where(state.lam > 0, state.lam, 0.5 / jnp.where(trace > 0, trace, 1.0))
        search = backtracking(
            lambda t: _cost(problem, state.u + t * h), cost, dphi0, init_step=2.0 * last
        )
        state = state._replace(cost=cost)
        a = gram(jac)
        judged = _gauss_newton_step(problem, state.u, a, g, diagonal(a))
        new, progress = _finish_line_step(
            problem, state, jac, search, h, g, rtol, atol, jnp.asarray(True), judged
        )
        lam = jnp.where(search.success, search.step_size, last)
        return new._replace(lam=lam), progress

    return step


STEPS = {"lm": lm_step, "gauss-newton": gn_step, "gradient-descent": gd_step}


def _gauss_newton_step(problem: Problem, u, a, g, scale):
    """The Gauss-Newton step from ``u`` (``a = J^T J``, ``g = J^T r``, with the bounds'
    curvature), in the variables equilibrated by ``scale`` (Gauss-Newton: the running maximum of
    ``diag(a)``; gradient descent, whose tests judge this step: ``diag(a)``).

    Damped by ``16 eps`` in those units, which changes it by about that relative amount where
    ``J^T J`` is well conditioned, and gives 0 (not NaN) along a direction that does not change
    the residuals (a parameter without effect: ``g`` has no component there)."""
    model = with_bound_curvature(problem, u, a, g)
    return _damped_solve(model, g, jnp.where(scale > 0, scale, 1.0), _tiny_damping(a.dtype))


def _tiny_damping(dtype):
    """The damping of the Gauss-Newton steps, ``16 eps`` in equilibrated units: it changes a
    step by about that relative amount where ``J^T J`` is well conditioned, and gives 0, not a
    singular system, in a parameter without curvature (one held on its bound, where the change
    of variables is flat, or one without effect on the model)."""
    return jnp.asarray(16.0 * jnp.finfo(dtype).eps, dtype)


def _finish_line_step(
    problem, state, jac, search, h, g, rtol, atol, solved, judged, damping=1.0, surplus=0.0
):
    """Accept the line search's point (its cost is ``search.value``) and test convergence.

    The step and cost tests judge the Gauss-Newton step from the current point, ``judged``, not
    the line search's ``t h``. For Gauss-Newton that is its full step ``h``: a short step is the
    search cutting a step that the linear model got wrong, not convergence. Gradient descent's
    steps say little of the distance left (it converges linearly, at a rate set by the
    conditioning of ``J^T J``: a test on its steps stopped fits 3000 times further from the
    minimum than ``rtol``, and one at a point 1e-3 above the minimum in chi2), and the
    Gauss-Newton step, a ``k x k`` solve, estimates that distance. The gradient test runs at the
    current point (where ``r`` and ``J`` are known): a stationary point stops without a step,
    as in Levenberg-Marquardt."""
    t = search.step_size
    dx = t * h
    cost_new = search.value
    act = state.cost - cost_new
    # (a step that does not lower the cost is not taken: at a trial step of 1e-9 Armijo's
    # sufficient decrease is below the cost's rounding, and such "accepted" null steps repeated
    # until MAX_ITER at the minimum)
    ok = search.success & solved & jnp.isfinite(cost_new) & _finite(state.u + dx)
    accept = ok & (act > 0)
    pred = -(2.0 * (g @ judged) + jnp.sum((jac @ judged) ** 2))
    # (Gauss-Newton: ``damping``, how many times its 16 eps damping shortened each parameter's
    # step, 1 unless a column has shrunk ~1e7-fold since the start; ``surplus``, what that
    # damping took off the predicted reduction, parameter by parameter. The tests judge the
    # step and the reduction without it.)
    gain = pred + surplus
    colnorm = jnp.sqrt(jnp.sum(jac * jac, axis=0))
    cos = gradient_cosine(g, colnorm * colnorm, state.cost)
    gtest = cos <= 16 * jnp.finfo(state.cost.dtype).eps
    floor = rounding_floor(problem.data_scale, colnorm)
    small = _tests(
        problem, state, judged, act, pred, rtol, atol, cos, colnorm, g, damping, floor, gain
    )
    converged = (accept & small) | gtest | (state.cost == 0)
    # A failed search where the Gauss-Newton step is itself within the step tolerance, or its
    # predicted reduction within a few hundred roundings of the cost: rounding, not the model,
    # stopped it (at the minimum no step lowers the cost measurably; Armijo's test cannot tell
    # a reduction of 30 ulps, and residuals computed from model values far larger than
    # themselves leave the cost noisy at 100-200 ulps). Converged, not LINESEARCH_FAILED; in
    # parameters that is about 1e-6 standard errors (float64) from the minimum.
    ftol = _ftol(rtol, state.cost.dtype, 256.0)
    at_floor = (gain <= ftol * state.cost) | _step_small(
        problem, state, judged, rtol, atol, colnorm, g, damping, floor
    )
    converged = converged | (~accept & solved & at_floor)
    new = state._replace(
        u=jnp.where(accept, state.u + dx, state.u),
        cost=jnp.where(accept, cost_new, state.cost),
        n_accepted=state.n_accepted + accept.astype(jnp.int32),
    )
    # No decrease along a descent direction whose predicted reduction is below rtol of the
    # cost but above its rounding floor: the cost's rounding (residuals computed from large
    # model values cancel) hides what is left, short of the tolerance.
    resolution = (gain <= rtol * state.cost) & jnp.isfinite(cost_new)
    failed = jnp.where(resolution, int(Status.PRECISION_LIMIT), int(Status.LINESEARCH_FAILED))
    failure = jnp.where(
        accept | converged, _RUNNING, jnp.where(solved, failed, int(Status.SINGULAR))
    )
    df = jnp.where(accept, cost_new - state.cost, 0.0)
    progress = make_progress(new.u, new.cost, dx=dx, df=df, converged=converged, failure=failure)
    return new, progress
