"""Augmented Lagrangian with a projected Newton inner solver, for inequalities and bounds (private).

Inequalities become equalities with slacks, ``c(x, s) = [h(x); g(x) - s] = 0`` with ``s >= 0``, so
the problem is: minimise ``F(x)`` subject to ``c(z) = 0`` and the box ``lower <= z <= upper``
(``z = (x, s)``, the slacks bounded below by 0). Each outer iteration

1. minimises the augmented Lagrangian over the box (the bounds are kept by projection),

       Phi(z) = F(x) - y^T c(z) + rho/2 |c(z)|^2,

   by a projected Newton method (Bertsekas 1982): the variables at or near a bound that the
   gradient pushes outwards step onto it and are held there, as are those on a bound that the
   Newton step pushes outwards; the others take a Newton step with the
   negative eigenvalues of their Hessian flipped (so that it never heads for a saddle or a
   maximum of ``Phi``), and a backtracking search runs along the projected path, on which the
   slacks are kept at their minimising values ``max(0, g(x) - y/rho)`` (so that ``Phi`` is, in
   ``x``, the Powell-Hestenes-Rockafellar function of Birgin & Martinez);
2. updates the multipliers, ``y <- y - rho c(z)`` (inequality multipliers clipped at 0), and
   raises ``rho`` tenfold when the violation fell by less than 4x.

It stops when each constraint's violation and each component of the projected gradient of the
Lagrangian (which equals that of ``Phi`` with the updated ``y``; in gradient units, the
components that push a variable at its bound out of the box left out) are within tolerance.
When ``rho`` has reached its cap and the violation still does not fall, the problem is reported
``INFEASIBLE`` if the point (nearly) minimises the violation over the box (its projected
gradient is small, and the linearised constraints cannot halve it), and ``STAGNATED`` otherwise.

The constraints are first scaled by their gradients at the start (to at most 100, as IPOPT
does), so that one in large units does not dominate the penalty, and one in small units up to
unit size, so that the penalty can enforce it and the tests do not take its small values for
feasibility; the multipliers returned are those of the constraints as given.

Both loops are init/step pieces run by ``_driver.iterate``; every step has fixed shapes.

References: Conn, Gould & Toint, "A globally convergent augmented Lagrangian algorithm...",
SIAM J. Numer. Anal. 28 (1991); Birgin & Martinez, *Practical Augmented Lagrangian Methods*,
SIAM (2014); Bertsekas, SIAM J. Control Optim. 20 (1982).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._constrained_kkt import newton_kkt
from ._constrained_problem import (
    Primal,
    Problem,
    bound_multipliers,
    constraint_scales,
    is_feasible,
    kkt_map,
    lagrangian_gradient,
    nonfinite_constraints,
    projected_gradient,
    scale_of,
    scaled_problem,
    stationarity_tolerance,
    violation_tolerance,
)
from ._driver import iterate, make_progress
from ._linesearch import backtracking
from ._status import Status

_RUNNING = int(Status.RUNNING)
# The trust radius of the inner Newton steps along each eigendirection, relative to max(1, |z|).
_STEP_RADIUS = 10.0


class _InnerState(NamedTuple):
    z: jax.Array
    value: jax.Array
    grad: jax.Array
    escape: jax.Array  # a direction of negative curvature out of a stationary z, or 0


class ALState(NamedTuple):
    z: jax.Array
    y: jax.Array
    rho: jax.Array
    viol: jax.Array
    value: jax.Array
    inner_iter: jax.Array


def _out_of_box(z, d, lo, hi):
    """Where a move along ``d`` leaves the box: ``z`` on a bound and ``d`` pointing outwards.
    (``_out_of_box(z, -grad, ...)``: the variables that the gradient pushes against the box.)"""
    return ((z <= lo) & (d < 0)) | ((z >= hi) & (d > 0))


def _violation_reducible(z, c, jac, grad, lo, hi, constraints):
    """Whether the violation can be halved within the box near ``z`` (``grad = J^T c``, the
    violation's gradient; ``constraints`` the map ``z -> c``).

    The least-norm Gauss-Newton step on ``|c|^2 / 2`` in the variables not held by the box,
    ``d = -J_F^+ c``, along the projected path: if at ``t d`` for one of ``t = 1, 1/2, 1/4, 1/8``
    the constraints themselves, or their linear model ``|c + J t d|`` within the trust radius
    ``10 max(1, |z|)`` of the inner Newton steps, are at most half ``|c|``, ``z`` does not
    minimise the violation, whatever its projected gradient says (that test alone passed for
    ill-conditioned ``J``, where ``J^T c`` is small although ``c`` is not: a feasible float32
    QP was reported INFEASIBLE). At a stationary point of the violation over the box no such
    point exists (0 is the minimum of the convex linearised problem there), so the test never
    hides infeasibility there. The linear model alone trusted a step of any length: where the
    constraints' gradients vanish at the minimum of the violation (``-|x|^2 - 1 >= 0``, at
    ``x ~ 1e-11``) it promised feasibility 1e10 away, and an infeasible problem was STAGNATED."""
    held = _out_of_box(z, -grad, lo, hi)  # pushed against the box
    d = jnp.linalg.lstsq(jnp.where(held, 0.0, jac), -c)[0]  # (0 in the held variables)
    t = np.array([1.0, 0.5, 0.25, 0.125], dtype=z.dtype)[:, None]
    steps = jnp.clip(z + t * d, lo, hi) - z  # the projected path
    target = 0.25 * jnp.sum(c * c)
    linear = jnp.sum((c + steps @ jac.T) ** 2, axis=1)
    within = jnp.max(jnp.abs(steps), axis=1) <= _STEP_RADIUS * scale_of(z)
    actual = jax.vmap(lambda s: jnp.sum(constraints(z + s) ** 2))(steps)
    ok = (jnp.isfinite(linear) & within & (linear <= target)) | (
        jnp.isfinite(actual) & (actual <= target)
    )
    return jnp.any(ok)


def _projected_gradient_norm(z, grad, lo, hi):
    """``max |P(z - grad) - z|`` for the projection ``P`` on the box, written as the step
    ``-grad`` clipped to the distances to the bounds: ``z - clip(z - grad)`` itself rounds
    ``grad`` away where ``|z| >> |grad|`` (an objective unbounded below was "stationary" at
    ``z = -1.8e16``, where ``z - 1`` rounds to ``z``). A step (in the units of ``z``, at most the
    distance to a bound): no stationarity test, which needs gradient units (see
    :func:`_stationary`; a gradient of 4e8 one unit from its bound passed as a step of 1)."""
    return jnp.max(jnp.abs(jnp.clip(-grad, lo - z, hi - z)), initial=0.0)


def _stationary(z, grad, lo, hi, tol):
    """Whether each component of the projected gradient is within ``tol`` (gradient units)."""
    return jnp.all(jnp.abs(projected_gradient(z, grad, lo, hi)) <= tol)


def _escape_direction(z, grad, hess, lo, hi):
    """A direction of negative curvature out of a stationary ``z`` that stays in the box, or 0.

    A projected gradient that vanishes is first-order stationarity only: where the projected
    path clipped variables onto a bound at which their gradient is exactly 0 (bilinear terms:
    maximise ``xyz`` on ``x + y + z = 1``, ``x, y, z >= 0`` stopped at ``(0, 0, 1)``, its
    minimum, with SUCCESS), the point can be a saddle. Over the variables not pushed against
    the box, the eigenvector of the Hessian's lowest eigenvalue, signed and cut so that it
    points into the box at the bounds, is a direction of descent to second order where its
    curvature is negative beyond ``sqrt(eps)`` of the Hessian's scale; its length is
    ``max(1, |z|)``."""
    dtype = z.dtype
    eps = jnp.finfo(dtype).eps
    free = ~_out_of_box(z, -grad, lo, hi)
    reduced = jnp.where(free[:, None] & free[None, :], hess, 0.0)
    lam, vec = jnp.linalg.eigh(0.5 * (reduced + reduced.T))
    v = jnp.where(free, vec[:, 0], 0.0)
    tol = jnp.sqrt(eps) * jnp.maximum(1.0, jnp.max(jnp.abs(hess), initial=0.0))
    best, best_curv = jnp.zeros_like(z), jnp.asarray(0.0, dtype)
    for sign in (1.0, -1.0):
        d = jnp.where(_out_of_box(z, sign * v, lo, hi), 0.0, sign * v)
        d2 = jnp.vdot(d, d)
        curv = jnp.vdot(d, hess @ d) / jnp.where(d2 > 0, d2, 1.0)
        better = (lam[0] < -tol) & (curv < -tol) & (curv < best_curv)
        best = jnp.where(better, d / jnp.sqrt(jnp.where(d2 > 0, d2, 1.0)), best)
        best_curv = jnp.where(better, curv, best_curv)
    return best * scale_of(z)


def _flipped_solver(a, g, floor, radius):
    """``x -> (V M V^T)^{-1} x`` for the eigendecomposition ``a = V L V^T`` of a symmetric ``a``,
    with ``M = max(|L|, floor, |V^T g| / radius)``: negative curvature flipped, and no component
    of the step ``-(V M V^T)^{-1} g`` along an eigenvector longer than ``radius``.

    The last term is a trust region on each eigendirection. Where ``a`` is singular or nearly so
    along a direction in which ``g`` is not zero (a linear objective, or one flat along a
    direction that only a bound or an inequality limits: the slack formulation makes the
    augmented Lagrangian's Hessian exactly singular along ``(x, s)``), the step would otherwise
    be ``|g| / floor`` long, ~1/eps, and no backtracking could shorten it to an acceptable one.
    It changes no direction whose Newton step is shorter than ``radius``: near a minimum, where
    ``g`` vanishes, the steps are pure Newton steps."""
    lam, vec = jnp.linalg.eigh(a)
    lam = jnp.maximum(jnp.maximum(jnp.abs(lam), floor), jnp.abs(vec.T @ g) / radius)
    return lambda x: vec @ ((vec.T @ x) / lam)


@jax.custom_jvp
def _flipped_newton_step(a, g, floor, radius):
    """The Newton step ``-M^{-1} g`` with negative curvature flipped and each eigencomponent no
    longer than ``radius`` (see :func:`_flipped_solver`)."""
    return -_flipped_solver(a, g, floor, radius)(g)


@_flipped_newton_step.defjvp
def _flipped_newton_step_jvp(primals, tangents):
    # The derivative of -M^{-1} g with dM = da: exact where ``a`` is positive definite and the
    # step within the radius (M = a), the common case near a minimum. (eigh's own derivative is
    # NaN at repeated eigenvalues, which the held variables' unit rows make: forward mode
    # through the iterations, with implicit_diff=False, gave NaN wherever a bound was active.)
    a, g, floor, radius = primals
    da, dg, _, _ = tangents
    solve = _flipped_solver(a, g, floor, radius)
    d = -solve(g)
    return d, -solve(dg + da @ d)


def projected_newton(fun, z0, lo, hi, omega, *, max_iter, tol, reset=None, f_limit=None):
    """Minimise ``fun`` over the box ``[lo, hi]`` from ``z0`` until each component of the
    projected gradient is within ``omega`` (a scalar or one per component); returns the driver's
    output (``state.z``, ``state.grad``). ``reset(z)``, where given, moves a point to one of no
    larger ``fun`` in the box (the slacks to their minimising values): it is applied to the start
    and along the search path. ``fun`` below ``f_limit`` stops the run (``UNBOUNDED``)."""
    if reset is None:
        reset = lambda z: z  # noqa: E731
    z0 = reset(z0)
    dtype = z0.dtype
    eps = jnp.finfo(dtype).eps
    value_and_grad = jax.value_and_grad(fun)

    def second_order(z, grad, stationary):
        # Only at a first-order stationary point where a variable sits on a bound that its
        # gradient does not push it against (the projection's doing; an interior saddle is
        # what the flipped Newton steps avoid): there one Hessian and one eigendecomposition
        # more, elsewhere nothing (the bounded portfolios ran 40% slower with the test at
        # every stationary point).
        held = _out_of_box(z, -grad, lo, hi)
        loose = jnp.any(((z <= lo) | (z >= hi)) & ~held)
        return lax.cond(
            stationary & loose,
            lambda: _escape_direction(z, grad, jax.hessian(fun)(z), lo, hi),
            lambda: jnp.zeros_like(z),
        )

    def step(st: _InnerState):
        z, value, grad = st.z, st.value, st.grad
        hess = jax.hessian(fun)(z)
        # The band of nearly active variables (Bertsekas's epsilon): the projected step scaled
        # by the Hessian's diagonal, a Newton-like distance to the projected point. (With the
        # raw gradient, whose scale grows with the penalty rho, the band stayed at its cap of
        # 1e-2; variables inside it but free at the solution were held and freed in turn, and
        # 1 in 300 20-asset portfolios stalled.)
        hd = jnp.abs(jnp.diagonal(hess))
        scaled_grad = grad / jnp.where(hd > 0, hd, 1.0)
        width = jnp.minimum(_projected_gradient_norm(z, scaled_grad, lo, hi), 1e-2)
        near_lo, near_hi = z - lo <= width, hi - z <= width
        binding = (near_lo & (grad > 0)) | (near_hi & (grad < 0))
        # No eigencomponent of a Newton step goes further than this (see _flipped_solver): the
        # size of the iterate, and at least 1.
        radius = _STEP_RADIUS * scale_of(z)

        def newton(held):
            # Newton on the free variables. Where their Hessian is not positive definite (far
            # from a minimum: plain Newton heads for a saddle or a maximum of the augmented
            # Lagrangian just as well) its negative eigenvalues are flipped, |lambda| (Gill,
            # Murray & Wright, section 4.4.2); a diagonally scaled gradient step is the last
            # resort.
            free = ~held
            g = jnp.where(held, 0.0, grad)
            reduced = jnp.where(free[:, None] & free[None, :], hess, 0.0) + jnp.diag(
                jnp.where(held, 1.0, 0.0).astype(dtype)
            )
            scale = jnp.maximum(1.0, jnp.max(hd))
            d = _flipped_newton_step(0.5 * (reduced + reduced.T), g, eps * scale, radius)
            # Held variables do not move: eigh of the block-diagonal matrix mixes the blocks at
            # rounding level, and a held variable on its bound stepped off it by an ulp or two,
            # where the gradient pushing it back counted as unresolved (MAX_ITER at the solution).
            d = jnp.where(held, 0.0, d)
            descent = jnp.vdot(g, d) < -jnp.sqrt(eps) * jnp.linalg.norm(g) * jnp.linalg.norm(d)
            ok = jnp.all(jnp.isfinite(d)) & (descent | jnp.all(g == 0))
            scaled = -g / jnp.maximum(hd, jnp.sqrt(eps) * scale)
            return jnp.where(ok, d, scaled)

        # Variables on a bound whose Newton step points out of the box are held as well (else
        # they are freed, clipped back and freed again: the projected iteration zigzags, or
        # crawls along a path clipped after a tiny step). Holding one changes the others' step,
        # so this repeats until no free variable on a bound is pushed out (one or two passes
        # in practice, at most one per variable).
        def pushed_out(d):
            return _out_of_box(z, d, lo, hi)

        def more(carry):
            held, d, k = carry
            return jnp.any(pushed_out(d) & ~held) & (k < z.shape[0])

        def hold(carry):
            held, d, k = carry
            held = held | pushed_out(d)
            return held, newton(held), k + 1

        _, d, _ = lax.while_loop(more, hold, (binding, newton(binding), 0))
        # At a first-order stationary point that is a saddle, along its negative curvature.
        escaping = jnp.any(st.escape != 0)
        d = jnp.where(escaping, st.escape, d)
        # Variables pushed outwards by the gradient move onto their bound (Bertsekas): the step
        # is the distance to it (a gradient step's length is off by the curvature, here up to
        # the penalty rho: too long, the projected path fails the Armijo test; scaled by the
        # Hessian's diagonal, it can stop short of the bound and the variable zigzags in and
        # out of the binding set).
        d = jnp.where(binding & ~escaping, jnp.where(near_lo & (grad > 0), lo, hi) - z, d)

        def path(a):
            return reset(jnp.clip(z + a * d, lo, hi))

        # The projected Armijo rule (Bertsekas): fun(z(a)) <= fun(z) + c1 grad . (z(a) - z),
        # written for the core backtracking as phi(a) = fun(z(a)) - c1 grad . (z(a) - z) with a
        # vanishing slope (the path is not linear in a once a bound is hit).
        c1 = 1e-4
        slope = -eps * jnp.maximum(1.0, jnp.abs(value))
        ls = backtracking(
            lambda a: fun(path(a)) - c1 * jnp.vdot(grad, path(a) - z), value, slope, c1=1.0
        )
        z_new = jnp.where(ls.success, path(ls.step_size), z)
        value_new, grad_new = value_and_grad(z_new)
        stationary = _stationary(z_new, grad_new, lo, hi, omega)
        escape = second_order(z_new, grad_new, stationary)
        converged = stationary & jnp.all(escape == 0)
        failure = jnp.where(ls.success | converged, _RUNNING, int(Status.LINESEARCH_FAILED))
        progress = make_progress(
            z_new,
            value_new,
            dx=z_new - z,
            df=value_new - value,
            converged=converged,
            failure=failure,
        )
        return _InnerState(z_new, value_new, grad_new, escape), progress

    value0, grad0 = value_and_grad(z0)
    stationary0 = _stationary(z0, grad0, lo, hi, omega)
    escape0 = second_order(z0, grad0, stationary0)
    done = stationary0 & jnp.all(escape0 == 0)
    return iterate(
        step,
        _InnerState(z0, value0, grad0, escape0),
        make_progress(z0, value0, converged=done),
        max_iter=max_iter,
        rtol=tol,
        atol=tol,
        name="projected newton",
        f_limit=f_limit,
    )


def augmented_lagrangian(
    problem: Problem, x0, *, rtol, atol, max_iter, max_inner_iter, verbose=False, f_limit=None
):
    """Run the augmented-Lagrangian method from ``x0``; returns ``(Primal, DriverOutput)``.

    The method runs on the constraints scaled by their gradients at ``x0`` (see
    :func:`constraint_scales`); the multipliers returned are those of the problem as given.
    ``f_limit``: an outer iterate feasible to the KKT test's tolerance where the objective is
    below it ends the run with ``UNBOUNDED`` (an inner run stops once the augmented Lagrangian
    falls below it); None: no such test.
    """
    x0 = jnp.clip(x0, problem.lower, problem.upper)
    scales = constraint_scales(problem, x0, _GRADIENT_MAX)
    original, problem = problem, scaled_problem(problem, scales)
    dtype = x0.dtype
    eps = float(jnp.finfo(dtype).eps)
    n, m_eq, m_ineq = problem.n, problem.m_eq, problem.m_ineq
    lo = jnp.concatenate([problem.lower, jnp.zeros((m_ineq,), dtype)])
    hi = jnp.concatenate([problem.upper, jnp.full((m_ineq,), jnp.inf, dtype)])
    rho_max = eps ** (-2.0 / 3.0)
    inner_tol = eps**0.75

    def constraints(z):
        x, s = z[:n], z[n:]
        return jnp.concatenate([problem.eq(x), problem.ineq(x) - s])

    def augmented(z, y, rho):
        c = constraints(z)
        return problem.objective(z[:n]) - jnp.vdot(y, c) + 0.5 * rho * jnp.vdot(c, c)

    def stationarity(z, grad):
        # Each component of z against the terms that cancel in it: grad F and J^T y+ =
        # grad F - grad Phi (grad = grad Phi, the Lagrangian's gradient with the updated
        # multipliers y+; the slacks' grad F is 0).
        grad_f = jnp.concatenate([jax.grad(problem.objective)(z[:n]), jnp.zeros((m_ineq,), dtype)])
        return stationarity_tolerance(grad_f, grad_f - grad, rtol, atol)

    def optimal_slacks(z, y, rho):
        # Phi is a convex quadratic in each slack, y_j - rho (g_j - s_j) its derivative: the
        # minimiser over s >= 0 is max(0, g - y / rho). Along the inner search the slacks are
        # kept there (Phi of x alone is then the Powell-Hestenes-Rockafellar function): with the
        # slacks free, the valley s = g(x) curves as g does (1e3 (1 - |x|^2): by 2e3 per unit
        # of x squared), the projected path left it after the shortest step, and the inner
        # Newton ran to its cap in every outer iteration.
        x = z[:n]
        s = jnp.maximum(problem.ineq(x) - y[m_eq:] / rho, 0.0)
        return jnp.concatenate([x, s])

    def step(st: ALState):
        tol_kkt = stationarity(st.z, jax.grad(augmented)(st.z, st.y, st.rho))
        omega = jnp.maximum(0.5 * tol_kkt, 0.1 * jnp.minimum(st.viol, 1.0))
        inner = projected_newton(
            lambda z: augmented(z, st.y, st.rho),
            st.z,
            lo,
            hi,
            omega,
            max_iter=max_inner_iter,
            tol=inner_tol,
            reset=lambda z: optimal_slacks(z, st.y, st.rho),
            f_limit=f_limit,
        )
        z, grad = inner.state.z, inner.state.grad
        c = constraints(z)
        viol = jnp.max(jnp.abs(c), initial=0.0)
        y = st.y - st.rho * c
        y = y.at[m_eq:].set(jnp.maximum(y[m_eq:], 0.0))
        jac = jax.jacfwd(constraints)(z)
        # grad = grad Phi holds rho J^T c, and c is known to its rounding, about eps |J| |z|
        # per constraint: the gradient cannot be told from zero below rho |J|^T eps |J| |z|.
        # Where rho |J|^2 is large (a constraint in large units whose gradient vanished at x0,
        # so that the scaling there left it as given) that floor exceeds the tolerance, and the
        # multipliers random-walked with c's rounding: 1e3 (1 - |x|^2) >= 0 from x = 0 sat at
        # the solution for 100 outer iterations. The estimate counts one rounding of c; its
        # evaluation and the product rho J^T c round a few times over: a factor 4 (with one
        # rounding alone, the same run stopped or not by the code XLA generated: the start
        # 1e-6 ran to the cap with XLA's optimisations off).
        abs_jac = jnp.abs(jac)
        floor = 4.0 * st.rho * (abs_jac.T @ (eps * (abs_jac @ jnp.abs(z))))
        tol_kkt = stationarity(z, grad)
        # Each constraint of (h, g) against |J_j| |x|, J_j its Jacobian in x (in z, the slacks'
        # -I would floor it at 1).
        feasible = jnp.all(jnp.abs(c) <= violation_tolerance(jac[:, :n], z[:n], rtol, atol))
        slow = (viol > 0.25 * st.viol) & ~feasible
        rho = jnp.where(slow, jnp.minimum(10.0 * st.rho, rho_max), st.rho)
        converged = feasible & _stationary(z, grad, lo, hi, tol_kkt)
        # Stationary only to that floor: no further outer iteration can tell more, so stop with
        # PRECISION_LIMIT and leave the verdict to the polish, whose Newton-KKT step and tests on
        # the problem itself make it SUCCESS or leave it (a float32 run from x = 0 at a point
        # the floor of which exceeded grad f itself stays PRECISION_LIMIT).
        at_floor = feasible & ~converged & _stationary(z, grad, lo, hi, tol_kkt + floor)
        # At the largest penalty the violation no longer falls: infeasible if z (nearly)
        # minimises the violation |c|^2 / 2 over the box, else the method has stagnated. A
        # violation below eps**(1/3) is what a feasible but degenerate problem leaves there
        # (HS13: the constraint's gradient vanishes at the solution, so does that of |c|^2, and
        # the penalty rho c J cannot outweigh grad f): it proves nothing, STAGNATED.
        stuck = slow & (st.rho >= rho_max) & ~converged
        violation_grad = jac.T @ c  # of |c|^2 / 2
        violation_pg = _projected_gradient_norm(z, violation_grad, lo, hi)
        candidate = (violation_pg <= 0.1 * viol * scale_of(jac)) & (
            viol > eps ** (1.0 / 3.0) * scale_of(jac) * scale_of(z)
        )
        # (the least-squares solve only where it decides something)
        reducible = lax.cond(
            stuck & candidate,
            lambda: _violation_reducible(z, c, jac, violation_grad, lo, hi, constraints),
            lambda: jnp.asarray(False),
        )
        infeasible = candidate & ~reducible
        failure = jnp.where(infeasible, int(Status.INFEASIBLE), int(Status.STAGNATED))
        failure = jnp.where(
            stuck, failure, jnp.where(at_floor, int(Status.PRECISION_LIMIT), _RUNNING)
        )
        value = problem.objective(z[:n])
        if f_limit is not None:
            failure = jnp.where(feasible & (value < f_limit), int(Status.UNBOUNDED), failure)
        progress = make_progress(
            z[:n],
            value,
            dx=z[:n] - st.z[:n],
            df=value - st.value,
            converged=converged,
            failure=nonfinite_constraints(c, failure),
        )
        new = ALState(z, y, rho, viol, value, st.inner_iter + inner.n_iter)
        return new, progress

    z0 = jnp.concatenate([x0, jnp.maximum(problem.ineq(x0), 0.0)])
    c0 = constraints(z0)
    value0 = problem.objective(x0)
    viol0 = jnp.max(jnp.abs(c0), initial=0.0)
    rho0 = jnp.clip(
        10.0 * jnp.maximum(1.0, jnp.abs(value0)) / jnp.maximum(1.0, 0.5 * jnp.vdot(c0, c0)),
        1e-8,
        1e8,
    ).astype(dtype)
    state = ALState(
        z0,
        jnp.zeros((m_eq + m_ineq,), dtype),
        rho0,
        viol0,
        value0,
        jnp.asarray(0, jnp.int32),
    )
    out = iterate(
        step,
        state,
        make_progress(x0, value0, failure=nonfinite_constraints(c0, _RUNNING)),
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        cauchy=False,
        verbose=verbose,
        name="minimise_constrained (augmented-lagrangian)",
    )
    z = out.state.z
    x = z[:n]
    y = out.state.y * scales  # the multipliers of the constraints as given
    y_eq, y_ineq = y[:m_eq], y[m_eq:]
    zero_nu = jnp.zeros((n,), dtype)
    grad_l = lagrangian_gradient(original, Primal(x, y_eq, y_ineq, zero_nu))
    nu = bound_multipliers(original, x, grad_l)
    al = Primal(x, y_eq, y_ineq, nu)
    # Active inequalities: a slack held at 0 by the projection, or a multiplier above the
    # constraint's value (the projection form of complementarity, min(y, g) = 0, as kkt_map).
    # (A positive multiplier alone took rounding for activity: an inactive constraint's y is
    # y - rho (y / rho), ~1e-16, and the polish that made it an equality was refused.)
    active = (z[n:] <= 0.0) | (y_ineq > original.ineq(x))
    return polish(original, al, active, out, rtol=rtol, atol=atol)


# A constraint whose gradient at the start is larger than this (in its largest component) is
# scaled down to it, as in IPOPT (Waechter & Biegler 2006, section 3.8: g_max = 100). The
# augmented Lagrangian is not invariant to a constraint's scale: its penalty term rho/2 |c|^2
# has curvature rho |grad c_j|^2, and with 1e3 (1 - x) beside f's unit gradients the outer loop
# ran to its iteration cap (with 1e6, it ended at x = 0 instead of 1); one in small units is
# scaled up (constraint_scales), or rho |grad c_j|^2 stays below f's curvature up to rho's cap.
_GRADIENT_MAX = 100.0


def polish(problem: Problem, z: Primal, active_ineq, out, *, rtol, atol):
    """Finish on the active set: Newton-KKT with the active inequalities and bounds as equalities.

    The augmented Lagrangian converges linearly; once it has found the active set (slacks and
    variables held exactly on their bounds by the projection), Newton's method on the KKT system
    of the equality-constrained problem converges quadratically to machine precision. The
    polished point is kept only when Newton succeeds, stays close, keeps the inactive
    constraints satisfied and the multipliers' signs right; otherwise the augmented-Lagrangian
    point stands.
    """
    x = z.x
    dtype = x.dtype
    eps = jnp.finfo(dtype).eps
    n, m_eq, m_ineq = problem.n, problem.m_eq, problem.m_ineq
    at_lower, at_upper = x <= problem.lower, x >= problem.upper
    lower = jnp.where(at_lower, problem.lower, 0.0)
    upper = jnp.where(at_upper, problem.upper, 0.0)

    def active_eq(u):
        g = jnp.where(active_ineq, problem.ineq(u), 0.0)
        b = jnp.where(at_lower, u - lower, jnp.where(at_upper, u - upper, 0.0))
        return jnp.concatenate([problem.eq(u), g, b])

    sub = problem._replace(eq=active_eq, m_eq=m_eq + m_ineq + n)
    y0 = jnp.concatenate([z.y_eq, jnp.where(active_ineq, z.y_ineq, 0.0), z.nu])
    rtol_p, atol_p = eps**0.75, eps**0.75
    x_p, y_p, out_p = newton_kkt(sub, x, y0, rtol=rtol_p, atol=atol_p, max_iter=10)
    # Back into the box: Newton's steps meet an active bound to rounding only (long-only
    # portfolios ended with weights of -4e-24 under SUCCESS, NaN for sqrt(w) or log(w)), and may
    # cross an inactive one by up to the tolerance that the tests below allow.
    x_p = jnp.clip(x_p, problem.lower, problem.upper)
    polished = Primal(x_p, y_p[:m_eq], y_p[m_eq : m_eq + m_ineq], y_p[m_eq + m_ineq :])

    grad_f = jax.grad(problem.objective)(x_p)
    tol_kkt = atol + rtol * scale_of(grad_f)
    # A bound multiplier's sign must push the variable into the box; a variable fixed by
    # lower == upper may be pushed either way (its polish was refused, leaving 7e-10 errors).
    signs_ok = jnp.all(polished.y_ineq >= -tol_kkt) & jnp.all(
        (at_lower & at_upper) | jnp.where(at_lower, polished.nu >= -tol_kkt, polished.nu <= tol_kkt)
    )
    # Where the augmented Lagrangian itself did not converge, the polished point must also meet
    # the stationarity test: Newton-KKT's "no step left" stop holds no evidence at a huge x
    # (an objective unbounded below ran to x = -1e18 and was polished into SUCCESS there).
    r = kkt_map(problem, polished)
    forces = grad_f - r.x  # J^T y + nu
    stationary = jnp.all(jnp.abs(r.x) <= stationarity_tolerance(grad_f, forces, rtol, atol))
    complementary = jnp.max(jnp.abs(jnp.concatenate([r.y_ineq, r.nu])), initial=0.0) <= tol_kkt
    evidence = (out.status == int(Status.SUCCESS)) | (stationary & complementary)
    keep = (
        (out.status != int(Status.UNBOUNDED))
        & (out_p.status == int(Status.SUCCESS))
        & evidence
        & is_feasible(problem, x_p, rtol, atol)
        & signs_ok
        & (jnp.max(jnp.abs(x_p - x), initial=0.0) <= 1e-2 * scale_of(x))
    )
    polished = polished._replace(y_ineq=jnp.maximum(polished.y_ineq, 0.0))
    result = jax.tree.map(lambda a, b: jnp.where(keep, a, b), polished, z)
    status = jnp.where(keep, int(Status.SUCCESS), out.status).astype(jnp.int32)
    out = out._replace(status=status, n_iter=out.n_iter + out_p.n_iter)
    return result, out
