"""Newton's method on the KKT system of an equality-constrained problem (private).

The stationary points of the Lagrangian ``L(x, y) = F(x) - y^T h(x)`` solve ``grad L = 0``, that
is ``grad F = J^T y`` and ``h = 0``. One Newton step on this system solves the KKT matrix

    [ H + delta I    -J^T        ] [dx]   [ -(grad F - J^T y) ]
    [ J              delta_c I   ] [dy] = [ -h                ],     H = hess_x L(x, y),

for the step ``dx`` and the change ``dy`` of the multipliers (the course's method: Newton on the stationary
points of the Lagrangian). Three safeguards make it converge from a distance:

* the step ``dx`` is accepted by a backtracking line search on the augmented-Lagrangian merit
  ``phi(x) = F - y+^T h + rho/2 |h|^2`` taken with the new multipliers ``y+ = y + dy``
  (Nocedal & Wright, section 18.5). By the first KKT row its slope is
  ``-dx^T (H + delta I) dx - rho |h|^2``, so ``rho`` only has to cover negative curvature across
  the constraints and stays moderate; unlike the l1 merit it accepts full Newton steps near the
  solution (no Maratos effect). (A search along ``(dx, dy)`` with the old multipliers has the
  extra slope ``-2 h^T dy``, which drives ``rho`` to ``|dy| / |h|`` on a nearly feasible iterate
  with a poor multiplier, and the search then creeps along the constraint in tiny steps).
  ``rho`` is raised as the step needs and halves (down to 1) after each accepted step;
* when the step has negative curvature along the constraints (``t^T H t <= 0`` for its
  tangential part ``t``: the step points to a maximum or a saddle), it is rejected and
  ``delta`` grows past the curvature it revealed (inertia-free curvature test, Chiang & Zavala
  2016); so is a step where ``H + delta I`` has negative curvature along the constraints in
  another direction (the KKT matrix has more than ``m`` negative eigenvalues: its inertia,
  Nocedal & Wright, theorem 16.3), and ``delta`` grows past ``H``'s most negative
  eigenvalue; ``delta`` shrinks again after accepted steps, so the last steps are pure Newton
  steps (a small shifted step is not taken for convergence);
* a tiny ``delta_c`` keeps the matrix regular when the constraint Jacobian loses rank
  (redundant or inconsistent constraints: a penalty ``|J dx + h|^2 / (2 delta_c)`` in effect,
  the sign of IPOPT's regularisation), one per constraint in its own units,
  ``10 eps |J_j|^2``; a failed line search grows ``delta`` as well.

The constraints in small units are first scaled up to unit size at ``x0``
(:func:`constraint_scales`), so that the tests of their violation hold in units of ``x``; the
multipliers returned are those of the constraints as given.

``INFEASIBLE`` means that the run stalled where the gradient ``J^T h`` of the violation
``|h|^2 / 2`` vanishes with ``h != 0``; any other stall off the constraints is ``STAGNATED``.

Each iteration costs one Hessian, one Jacobian and the solve of the ``(n + m)`` system by two
Cholesky factorisations (:func:`kkt_solve`, in JAX, which also gives the inertia); everything
has fixed shapes, so problems batch with ``jax.vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._constrained_problem import (
    Problem,
    constraint_scales,
    nonfinite_constraints,
    scale_of,
    scaled_problem,
    stationarity_tolerance,
    violation_tolerance,
)
from ._driver import iterate, make_progress
from ._linesearch import backtracking
from ._small_linalg import chol_solve, cholesky, diagonal, spd_solver
from ._status import Status
from ._tree import tree_step_small

_RUNNING = int(Status.RUNNING)


class KKTState(NamedTuple):
    x: jax.Array
    y: jax.Array
    value: jax.Array
    grad: jax.Array
    h: jax.Array
    jac: jax.Array
    rho: jax.Array
    delta: jax.Array


def gershgorin_lowest(a):
    """Gershgorin's lower bound on the lowest eigenvalue of a symmetric matrix ``a``:
    ``min_i (a_ii - sum_{j != i} |a_ij|)``."""
    return jnp.min(2.0 * diagonal(a) - jnp.sum(jnp.abs(a), axis=1), initial=jnp.inf)


def kkt_solve(hess, jac, rhs, delta_c):
    """Solve ``[[H, J^T], [J, -delta_c I]] u = rhs`` by Cholesky factorisations; returns
    ``(u, inertia_ok)``.

    The ``(n + m)`` symmetric indefinite system is reduced to two positive-definite ones by the
    augmented form (Golub & Greif 2003): with ``M = H + sigma J^T J`` and ``c = 1 - sigma
    delta_c``, the second row times ``sigma J^T`` added to the first gives
    ``M dx + c J^T w = r1 + sigma J^T r2``, and then ``(c J M^{-1} J^T + delta_c I) w =
    J M^{-1} (r1 + sigma J^T r2) - r2``; ``sigma`` is capped at ``1 / (2 delta_c)`` so that this
    ``m x m`` matrix is positive definite whenever ``M`` is, even where ``J`` loses rank.

    The same factorisation tells the inertia (Nocedal & Wright, theorem 16.3): the matrix has
    exactly ``m`` negative eigenvalues where ``H + J^T J / delta_c`` is positive definite (by
    Sylvester's law, eliminating the ``-delta_c I`` block first), that is where ``H`` is
    positive definite on the constraints' tangent space; ``M`` positive definite (its Cholesky
    factor exists) is sufficient for it, since ``sigma <= 1 / delta_c``, and necessary once
    ``sigma`` exceeds the negative curvature of ``H`` across the constraints (Debreu's lemma).
    ``sigma`` is ``eps^(-1/3)`` times ``max|H| / max|J|^2``: large enough for that in all but
    nearly degenerate problems (where a tangent Hessian that is positive definite is then
    reported as not, and the caller's shift grows: 1 in 400 random float32 saddles, none in
    float64), and small enough that ``M`` stays far better conditioned than at
    ``sigma = 1 / delta_c``. One step of iterative refinement on the whole system brings the
    backward error to a few ``eps`` (checked against NumPy on random KKT systems, saddles and
    rank-deficient ``J`` among them); without it, it reached ``2e-5`` in float64.

    Pure JAX, no LAPACK: batched LAPACK calls inside a vectorised ``while_loop`` hung XLA:CPU's
    runtime (jaxlib 0.10.2, docs/constrained_benchmark.md), and two batched symmetric
    eigensolvers (the inertia test they replace) cost ten times the rest of the iteration.
    """
    n, m = jac.shape[1], jac.shape[0]
    dtype = hess.dtype
    eps = jnp.finfo(dtype).eps
    r1, r2 = rhs[:n], rhs[n:]
    if m == 0:
        solve, inertia_ok = spd_solver(hess)
        return solve(r1), inertia_ok
    h_scale = jnp.max(jnp.abs(hess))
    j_scale2 = jnp.max(jnp.abs(jac)) ** 2
    j_scale2 = jnp.where(j_scale2 > 0, j_scale2, 1.0)
    sigma = jnp.where(h_scale > 0, eps ** (-1.0 / 3.0) * h_scale, j_scale2) / j_scale2
    sigma = jnp.minimum(sigma, 0.5 / delta_c)
    c = 1.0 - sigma * delta_c
    m_solve, inertia_ok = spd_solver(hess + sigma * (jac.T @ jac))
    m_inv_jt = m_solve(jac.T)
    s_solve, _ = spd_solver(c * (jac @ m_inv_jt) + delta_c * jnp.eye(m, dtype=dtype))

    def solve(r1, r2):
        v = m_solve(r1 + sigma * (jac.T @ r2))
        w = s_solve(jac @ v - r2)
        return jnp.concatenate([v - c * (m_inv_jt @ w), w])

    u = solve(r1, r2)
    residual = rhs - jnp.concatenate([hess @ u[:n] + jac.T @ u[n:], jac @ u[:n] - delta_c * u[n:]])
    return u + solve(residual[:n], residual[n:]), inertia_ok


def _evaluate(problem: Problem, x):
    value, grad = jax.value_and_grad(problem.objective)(x)
    h, jac = problem.eq(x), jax.jacfwd(problem.eq)(x)
    return value, grad, h, jac


def _converged(x, y, grad, h, jac, rtol, atol):
    """Each component of ``grad F - J^T y`` within ``atol + rtol max(1, |grad F|, |J^T y|)`` (the
    terms that cancel in it) and each ``|h_j|`` within ``atol + rtol |J_j| max(1, |x|)``."""
    forces = jac.T @ y
    stationary = jnp.abs(grad - forces) <= stationarity_tolerance(grad, forces, rtol, atol)
    feasible = jnp.abs(h) <= violation_tolerance(jac, x, rtol, atol)
    return jnp.all(stationary) & jnp.all(feasible)


def newton_kkt(problem: Problem, x0, y0, *, rtol, atol, max_iter, verbose=False, f_limit=None):
    """Run the Newton-KKT iteration from ``(x0, y0)``; returns ``(x, y, DriverOutput)``.

    ``f_limit``: an iterate feasible to ``sqrt(eps)`` (the stall test's measure) where the
    objective falls below it stops the run with ``UNBOUNDED`` (None: no such test)."""
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    n, m = problem.n, problem.m_eq
    eye_n = jnp.eye(n, dtype=dtype)
    # The constraints in units of x (constraint_scales: those in small units scaled up), so
    # that the tests below do not take a small h for feasibility; y in their units inside.
    # (Equalities only: minimise_constrained refuses ineq and bounds for this method, and the
    # polish passes its active set as equalities; dropped here so that the scales are h's.)
    problem = problem._replace(ineq=lambda x: jnp.zeros((0,), dtype), m_ineq=0)
    scales = constraint_scales(problem, x0)
    problem = scaled_problem(problem, scales)
    if y0 is not None:
        y0 = y0 / scales

    def merit(x, y, rho):
        h = problem.eq(x)
        return problem.objective(x) - jnp.vdot(y, h) + 0.5 * rho * jnp.vdot(h, h)

    def step(state: KKTState):
        x, y, grad, h, jac = state.x, state.y, state.grad, state.h, state.jac
        hess = jax.hessian(lambda u: problem.objective(u) - jnp.vdot(y, problem.eq(u)))(x)
        hess_d = hess + state.delta * eye_n
        # Each constraint in its own units: the system solved with J's rows scaled to unit size,
        # for the change of the multipliers in those units, so that delta_c = 10 eps acts on each
        # row as 10 eps |J_j|^2. Not floored at 1: against the Schur complement ~ |J|^2, a floor
        # swamped a constraint in small units (k (x0 + x1 - 1) = 0 with k = 1e-8 entered as a
        # weak penalty: MAX_ITER at x = 0.4997); nor one delta_c from the largest row (beside a
        # constraint scaled by 1e8, a unit one entered as a penalty of weight 1 / 22: MAX_ITER,
        # 0.35 from the solution). |J_j| floored at eps (its square stays a normal number in
        # float32); a zero row keeps 10 eps.
        row = jnp.max(jnp.abs(jac), axis=1, initial=0.0)
        row = jnp.where(row > 0, jnp.maximum(row, eps), 1.0)
        delta_c = 10.0 * eps
        # Solved for the change dy of the multipliers (not y+ itself), so that delta_c does not
        # move the fixed point: at a KKT point the right-hand side and the step vanish.
        # The two right-hand sides apart (one factorisation) split the step into its tangential
        # part (J dx_t = 0 up to delta_c) and its normal part, which restores feasibility.
        zeros_n, zeros_m = jnp.zeros((n,), dtype), jnp.zeros((m,), dtype)
        rhs = jnp.stack(
            [-jnp.concatenate([grad - jac.T @ y, zeros_m]), -jnp.concatenate([zeros_n, h / row])],
            axis=1,
        )
        parts, inertia_ok = kkt_solve(hess_d, jac / row[:, None], rhs, delta_c)
        # unknowns (dx, -dy), dy back in the constraints' units
        parts = parts * jnp.concatenate([jnp.ones((n,), dtype), -1.0 / row])[:, None]
        finite = inertia_ok & jnp.all(jnp.isfinite(parts))
        parts = jnp.where(finite, parts, 0.0)
        sol = parts[:, 0] + parts[:, 1]
        dx, dy, dx_t = sol[:n], sol[n:], parts[:n, 0]
        y_plus = y + dy

        # Inertia-free curvature test on the tangential part of the step (the direction of the
        # reduced Hessian); curvature across the constraints is the penalty's business. Relative
        # to |H| itself: against a scale floored at 1, a convex QP's Hessian of 2e-10 (x ~ 1e5)
        # counted as negative curvature, and the shifted steps crawled (MAX_ITER). A zero
        # curvature (H = 0 along the step, no shift yet) is rejected all the same.
        # The step's own curvature misses a direction of negative curvature that it does not
        # point along (the Newton step of a quadratic goes to its stationary point, a saddle
        # where the reduced Hessian is indefinite, which then passed the KKT test with SUCCESS):
        # kkt_solve's factorisation also tells whether H_d is positive definite on the
        # constraints' tangent space (the KKT matrix's inertia); where not, the step is rejected.
        curv_t = jnp.vdot(dx_t, hess_d @ dx_t)
        hess_scale = jnp.max(jnp.abs(hess), initial=0.0)
        dx_t2 = jnp.vdot(dx_t, dx_t)
        curv_ok = (
            finite & (curv_t >= jnp.sqrt(eps) * hess_scale * dx_t2) & ((curv_t > 0) | (dx_t2 == 0))
        )

        # The merit takes the new multipliers y+: by the first KKT row its slope along dx is
        # then -dx^T H_d dx - rho |h|^2 (with J dx = -h), and rho need only cover negative
        # curvature across the constraints, which vanishes with h. (With the old multipliers
        # and a search along (dx, dy), the slope has the term -2 h^T dy, which forces
        # rho ~ |dy| / |h| at a nearly feasible iterate with a poor multiplier: rho explodes
        # and the search creeps along the constraint in tiny steps.)
        curv = jnp.maximum(jnp.vdot(dx, hess_d @ dx), 0.0)
        h_jdx = jnp.vdot(h, jac @ dx)
        d0 = jnp.vdot(grad - jac.T @ y_plus, dx)
        need = (d0 + 0.5 * curv) / jnp.where(h_jdx < 0, -h_jdx, 1.0)
        rho = jnp.where((h_jdx < 0) & (d0 + state.rho * h_jdx > -0.5 * curv), 2.0 * need, state.rho)
        rho = jnp.maximum(rho, state.rho)
        dphi0 = d0 + rho * h_jdx

        phi0 = merit(x, y_plus, rho)
        ls = backtracking(lambda a: merit(x + a * dx, y_plus, rho), phi0, dphi0)
        # A negligible Newton step is taken whole: the merit cannot resolve it any more (its
        # predicted change is at the rounding level of phi).
        small = tree_step_small(x, dx, rtol, atol) | (
            jnp.abs(dphi0) <= 100.0 * eps * jnp.maximum(1.0, jnp.abs(phi0))
        )
        accept = curv_ok & (ls.success | small)
        alpha = jnp.where(small, 1.0, ls.step_size)
        alpha = jnp.where(accept, alpha, 0.0)

        step_x = alpha * dx
        x_new = x + step_x
        y_new = y + alpha * dy
        value, grad_new, h_new, jac_new = _evaluate(problem, x_new)

        # The shift shrinks after an accepted step (the last steps are pure Newton steps); after
        # a rejected one it grows past the negative curvature that the step revealed, so one
        # rejection usually suffices, and tenfold after a failed search. rho is kept only with
        # an accepted step, and halves after it (down to 1): a rho raised by one wild step far
        # from the constraints (with a near-singular J) made the later merit a pure penalty,
        # and the search crept along the curved constraint in steps of 1e-4.
        delta0 = 1e-4 * scale_of(hess)
        revealed = 2.0 * (state.delta - curv_t / jnp.maximum(jnp.vdot(dx_t, dx_t), eps))
        # (wrong inertia, no step: twice past Gershgorin's bound on H's lowest eigenvalue, which
        # covers the tangent's curvature)
        revealed = jnp.where(inertia_ok, revealed, -2.0 * gershgorin_lowest(hess))
        grown = jnp.maximum(delta0, 10.0 * state.delta)
        # The shift drops to 0 once small, unless H has (next to) no curvature of its own along
        # the step: there the unshifted step would be rejected and the shift reset to delta0,
        # and a feasible ray where f is linear was walked in cycles of steps 1e4 to 6e5 long
        # (objective_limit out of reach); shrinking on, the steps grow 4x per iteration (down
        # to eps delta0, then 0 all the same).
        h_curv = curv_t - state.delta * dx_t2  # H's own curvature along the tangential step
        tiny = state.delta * 0.25 < 1e-3 * delta0
        drop = tiny & ((h_curv >= state.delta * dx_t2) | (state.delta * 0.25 < eps * delta0))
        delta = jnp.where(
            accept,
            jnp.where(drop, 0.0, state.delta * 0.25),
            jnp.where(
                curv_ok, grown, jnp.maximum(grown, jnp.where(finite | ~inertia_ok, revealed, 0.0))
            ),
        ).astype(dtype)
        rho = jnp.where(accept, jnp.maximum(1.0, 0.5 * rho), state.rho)
        new = KKTState(x_new, y_new, value, grad_new, h_new, jac_new, rho, delta)

        converged = _converged(x_new, y_new, grad_new, h_new, jac_new, rtol, atol)
        # A vanishing accepted step ends the run: at a solution the dtype cannot refine further
        # (feasible to sqrt(eps)), or at a point that minimises the violation without reaching
        # h = 0 (infeasible). So does a failed search once the shift has swamped the Hessian
        # (a failed search grows it, as a rejected step does: the step gets shorter and turns
        # towards the merit's steepest descent).
        # Each constraint against its own gradient (floored at 1), not against the largest row
        # (beside a constraint scaled by 1e8, a unit one counted as feasible up to 1.5 |x|).
        units = jnp.maximum(1.0, jnp.max(jnp.abs(jac_new), axis=1, initial=0.0))
        feasible = jnp.all(jnp.abs(h_new) <= jnp.sqrt(eps) * units * scale_of(x_new))
        stalled = accept & small
        # (a shifted step, delta > 0, is short of the Newton step: small, it is not yet a stall
        # at the solution; delta shrinks to 0 within a few more steps)
        converged = converged | (stalled & feasible & (state.delta == 0))
        stuck = ~converged & ((stalled & ~feasible) | (~accept & (delta > 1e8 * delta0)))
        # INFEASIBLE only where x (nearly) minimises the violation |h|^2 / 2 without reaching 0:
        # its gradient J^T h vanishes. Elsewhere (a stall or a failed search near a
        # rank-deficient J) nothing is known about the constraints: STAGNATED. (It used to be
        # INFEASIBLE after any failed search off the constraints: min |x - (2, 1)|^2 subject to
        # x0 x1 = 1 from (1e-3, 0) stopped there at the first step.)
        # (in each constraint's units, as feasible: the rows over their sizes)
        h_units = h_new / units
        violation_grad = jnp.max(jnp.abs(jac_new.T @ (h_units / units)), initial=0.0)
        infeasible = violation_grad <= 1e-3 * jnp.max(jnp.abs(h_units), initial=0.0)
        failure = jnp.where(
            feasible,
            int(Status.LINESEARCH_FAILED),
            jnp.where(infeasible, int(Status.INFEASIBLE), int(Status.STAGNATED)),
        )
        failure = jnp.where(stuck, failure, _RUNNING)
        if f_limit is not None:
            failure = jnp.where(feasible & (value < f_limit), int(Status.UNBOUNDED), failure)
        failure = nonfinite_constraints(h_new, failure)
        progress = make_progress(
            x_new,
            value,
            dx=step_x,
            df=value - state.value,
            converged=converged,
            failure=failure,
        )
        return new, progress

    value, grad, h, jac = _evaluate(problem, x0)
    if y0 is None:  # least-squares multipliers: min |grad F - J^T y|
        gram = jac @ jac.T + eps * scale_of(jac) ** 2 * jnp.eye(m, dtype=dtype)
        y0 = chol_solve(cholesky(gram), jac @ grad)
        y0 = jnp.where(jnp.all(jnp.isfinite(y0)), y0, 0.0)
    state = KKTState(
        x0,
        y0,
        value,
        grad,
        h,
        jac,
        jnp.asarray(1.0, dtype),
        jnp.asarray(0.0, dtype),
    )
    done = _converged(x0, y0, grad, h, jac, rtol, atol)
    out = iterate(
        step,
        state,
        make_progress(
            x0,
            value,
            converged=done,
            failure=nonfinite_constraints(h, _RUNNING),
        ),
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        cauchy=False,
        verbose=verbose,
        name="minimise_constrained (newton-kkt)",
    )
    return out.state.x, out.state.y * scales, out
