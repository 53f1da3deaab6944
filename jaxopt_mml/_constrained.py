"""Constrained optimisation: Lagrange multipliers, inequality constraints and bounds.

:func:`minimise_constrained` solves

    minimise (or maximise)  f(x, *args)
    subject to              h(x, *args) = 0        (``eq``)
                            g(x, *args) >= 0       (``ineq``)
                            lower <= x <= upper    (``bounds``)

and returns the solution with its Lagrange multipliers; :func:`lagrange_stationary_points` (in
``_lagrange_points.py``) is the teaching form, every stationary point of the Lagrangian from many
starts, classified by the bordered Hessian.

Multipliers follow scipy's ``trust-constr`` (``res.v``): with the Lagrangian

    L(x, lambda, mu, nu) = f(x) + lambda . h(x) + mu . g(x) + nu . x

the solution satisfies ``grad_x L = 0``. For a minimisation ``mu <= 0`` (zero where ``g > 0``),
``nu <= 0`` at a lower bound and ``nu >= 0`` at an upper bound, and ``-lambda`` is the sensitivity
of the optimal value to the right-hand side: for ``h(x) = c``, ``d f* / d c = -lambda``. (The
course's ``grad f = lambda grad h`` uses the opposite sign: its lambda is ``-multipliers_eq``.)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ._batching import sequential_under_vmap
from ._constrained_al import augmented_lagrangian
from ._constrained_kkt import newton_kkt
from ._constrained_problem import (
    Primal,
    check_bounds,
    kkt_map,
    kkt_residual,
    kkt_tangent_solve,
    make_problem,
    max_violation,
    zeros_primal,
)
from ._implicit import solve_with_implicit_grad, value_by_envelope
from ._lagrange_points import LagrangePoints, lagrange_stationary_points
from ._minimise_common import check_objective_limit
from ._static import static_function
from ._status import Status
from ._tree import (
    PyTree,
    as_strong_inexact,
    check_args,
    check_bool,
    check_callable,
    check_choice,
    check_numbers,
    check_positive_int,
    default_tolerances,
    suggest_options,
)

__all__ = [
    "ConstrainedResult",
    "LagrangePoints",
    "lagrange_stationary_points",
    "minimise_constrained",
]

_METHODS = ("auto", "newton-kkt", "augmented-lagrangian")


class ConstrainedResult(NamedTuple):
    """The result of :func:`minimise_constrained` (a pytree; batched under ``jax.vmap``).

    Attributes:
        x: the solution, with the structure and dtypes of ``x0`` (a pytree mixing float32 and
            float64 leaves is solved in float64, as ``f`` sees it).
        value: ``f(x, *args)`` (the objective as given, also when maximising).
        multipliers_eq: ``lambda``, one per equality constraint (``trust-constr`` convention:
            ``grad f + J_h^T lambda + J_g^T mu + nu = 0``).
        multipliers_ineq: ``mu``, one per inequality constraint (``<= 0`` when minimising, 0 where
            the constraint is inactive).
        multipliers_bounds: ``nu``, shaped like ``x`` (``<= 0`` on a lower bound, ``>= 0`` on an
            upper bound when minimising, 0 off the bounds).
        kkt_residual: infinity norm of the stationarity and complementarity conditions.
        max_violation: the largest violation of any constraint or bound (0 when feasible).
        n_iter: outer iterations taken; with the augmented Lagrangian, the polish's Newton-KKT
            steps (at most 10) are counted too, so it can exceed ``max_iter``.
        success: ``status == Status.SUCCESS``.
        status: a :class:`Status` code; ``INFEASIBLE`` when no feasible point was found (the
            multipliers then hold the last iterate's values, which can be very large);
            ``UNBOUNDED`` at a feasible iterate whose objective passed ``objective_limit``.
    """

    x: PyTree
    value: jax.Array
    multipliers_eq: jax.Array
    multipliers_ineq: jax.Array
    multipliers_bounds: PyTree
    kkt_residual: jax.Array
    max_violation: jax.Array
    n_iter: jax.Array
    success: jax.Array
    status: jax.Array


@suggest_options
def minimise_constrained(
    f,
    x0: PyTree,
    *,
    args: tuple = (),
    eq=None,
    ineq=None,
    bounds=None,
    maximise: bool = False,
    method: str = "auto",
    rtol: float | None = None,
    atol: float | None = None,
    max_iter: int = 100,
    max_inner_iter: int = 50,
    implicit_diff: bool = True,
    verbose: bool = False,
    objective_limit: float | None = -1e20,
) -> ConstrainedResult:
    r"""Minimise (or maximise) ``f(x, *args)`` subject to equalities, inequalities and bounds.

    Methods:

    * ``"newton-kkt"`` (equality constraints only; the default for them): Newton's method on the
      stationary points of the Lagrangian, the KKT system
      :math:`\nabla f = J^T y,\ h = 0`, solved for the step and the new multipliers at once,
      with a line search on the augmented-Lagrangian merit
      :math:`\phi = f - y^T h + \tfrac{\rho}{2}\|h\|^2` and a Hessian shift when the step has
      negative curvature. Quadratic convergence near the solution.
    * ``"augmented-lagrangian"`` (the default with inequalities or bounds): inequalities become
      equalities with slacks, :math:`g(x) - s = 0,\ s \ge 0`; each outer iteration minimises
      :math:`F - y^T c + \tfrac{\rho}{2}\|c\|^2` over the box of bounds by a projected Newton
      method (Bertsekas 1982), the slacks kept at their minimising values
      :math:`\max(0, g - y/\rho)` along its search, then updates
      :math:`y \leftarrow y - \rho c` and raises :math:`\rho` when the violation does not fall
      by 4x (Conn, Gould & Toint; Birgin & Martinez).
      The constraints are scaled by their gradients at ``x0`` (to at most 100, as IPOPT does,
      and those in small units up to unit size); the multipliers returned are those of the
      constraints as given.
      Once it has converged, the active inequalities and bounds it found are treated as
      equalities and Newton-KKT polishes the point to machine precision (kept only when the
      multipliers' signs and the inactive constraints confirm the active set). At the largest
      penalty a violation that no longer falls gives ``INFEASIBLE`` where the point minimises
      the violation, ``STAGNATED`` otherwise. A point stationary only to the rounding floor of
      the penalty term (:math:`\rho |J|^T \varepsilon |J| |z|`, above the tolerance where the
      constraints are in large units and ``x0`` left them unscaled) ends the outer loop with
      ``PRECISION_LIMIT``, which the polish turns into ``SUCCESS`` when its own tests pass.

    Batching: ``jax.vmap`` works for both methods, with per-problem statuses. Newton-KKT is
    vectorised (one loop over the batch, until its slowest problem stops). The augmented
    Lagrangian's loops are nested three deep, and vectorised each level would wait for the
    slowest problem at every turn of the level above; so on a CPU a vmapped call solves the
    problems one after another (a ``lax.map``) inside the same compiled program (1000 bounded
    10-asset portfolios: 0.2 s that way, 1.9 s vectorised in chunks of 250). On a GPU, and with
    ``implicit_diff=False``, it stays vectorised.

    Args:
        f: the objective, ``f(x, *args) -> scalar``; ``x`` has the structure of ``x0``.
        x0: the starting point (an array or a pytree of arrays).
        args: extra arguments of ``f``, ``eq`` and ``ineq``; the solution is differentiable with
            respect to them (implicit differentiation of the KKT conditions at the solution, which
            selects its active set; assumes strict complementarity and linearly independent
            active constraint gradients). So are traced ``bounds`` (an active bound moves the
            solution with it) and values that ``f``, ``eq`` and ``ineq`` close over; ``x0`` gets
            no derivative. Taken at the point returned: where ``success`` is False (e.g.
            ``INFEASIBLE``) it means nothing.
        eq: ``eq(x, *args) -> array`` of equality constraints ``h(x) = 0``.
        ineq: ``ineq(x, *args) -> array`` of inequality constraints ``g(x) >= 0`` (the sign
            convention of scipy's SLSQP ``'ineq'``; write ``a(x) <= b`` as ``b - a(x) >= 0``).
        bounds: ``(lower, upper)``, each a scalar or shaped like ``x0``, with ``-inf`` / ``inf``
            (or ``None`` for a whole side) where a side is free. A lower bound above its upper
            bound raises ``ValueError`` (or, for traced bounds, gives ``INFEASIBLE``).
        maximise: maximise ``f`` instead.
        method: ``"auto"``, ``"newton-kkt"`` or ``"augmented-lagrangian"``.
        rtol, atol: tolerances of the KKT test, component by component: each component ``k``
            of the projected gradient of the Lagrangian within
            ``atol + rtol max(1, |df/dx_k|, |(J^T lambda + J_g^T mu + nu)_k|)`` (the terms that
            cancel in it), and each constraint's violation within
            ``atol + rtol |J_j| max(1, |x|)`` (``J_j`` its gradient; infinity norms), where a
            constraint smaller than unit size at ``x0`` (its gradient there, or its value per
            unit of ``x`` where that vanishes) is first scaled up to unit size, both methods
            (else ``1e-8 (x0 + x1 - 1) = 0`` met ``atol`` at ``x = 0``); default
            ``eps**0.75`` of the dtype for ``"newton-kkt"`` (quadratic convergence makes it
            cheap) and ``sqrt(eps)`` for the augmented Lagrangian.
        max_iter: largest number of (outer) iterations.
        max_inner_iter: largest number of projected-Newton steps per outer iteration (augmented
            Lagrangian only).
        implicit_diff: differentiate the solution implicitly through the KKT conditions.
        verbose: print each outer iteration.
        objective_limit: stop with ``Status.UNBOUNDED`` at the first iterate that is feasible
            (to the method's own test) where ``f`` falls below this (rises above
            ``-objective_limit`` when maximising); default ``-1e20``, as the unconstrained
            minimisers and MATLAB's ``ObjectiveLimit``. A problem unbounded below on its
            feasible set (a sign error, a missing constraint or bound) is then named as such
            instead of running to ``max_iter``. The iterates must get there: along a feasible
            ray where ``f`` is linear, Newton-KKT's steps grow 4x per iteration (past ``-1e20``
            in about 60), but the augmented Lagrangian's inner steps are held at about
            ``1 / (eps |H|)`` (``1e17`` per outer iteration in float64), so a limit at the
            problem's own scale (``-1e6`` where values of ``1e3`` are expected) names such a
            problem within ``max_iter`` where ``-1e20`` may not. ``None`` switches the test off.
            Traced: a new value does not recompile.

    Returns:
        :class:`ConstrainedResult`.

    Raises:
        ValueError / TypeError: at trace time, when ``x0`` is complex, ``f`` is not scalar, a
            constraint is not 1-D, the bounds do not match ``x0`` or cross (``lower > upper``),
            or an option is unknown.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.minimise_constrained(
        ...     lambda x: x @ x, jnp.array([1.0, 0.0, 0.0]),
        ...     eq=lambda x: jnp.array([x[0] + 2 * x[1] + 3 * x[2] - 14.0]))
        >>> [round(v, 3) for v in res.x.tolist()]  # the point of the plane closest to the origin
        [1.0, 2.0, 3.0]

    References:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed., chapters 12, 17 and 18.
        Bertsekas, "Projected Newton methods for optimization problems with simple constraints",
        SIAM J. Control Optim. 20 (1982). Birgin & Martinez, *Practical Augmented Lagrangian
        Methods for Constrained Optimization*, SIAM (2014). Chiang & Zavala, "An inertia-free
        filter line-search algorithm for large-scale nonlinear programming", Comput. Optim.
        Appl. 64 (2016).
    """
    check_callable("f", f)
    for name, fn in (("eq", eq), ("ineq", ineq)):
        if fn is not None:
            check_callable(name, fn)
    check_choice("method", method, _METHODS)
    # (before the jit: inside, a tracer)
    args = check_args("minimise_constrained", args, arrays=True)
    max_iter = check_positive_int("max_iter", max_iter)
    max_inner_iter = check_positive_int("max_inner_iter", max_inner_iter)
    check_numbers("x0", x0)  # (a string met JAX's message about the jit's arguments)
    check_bounds(bounds, x0)
    # The given tolerances checked here, before float() (which took True for 1.0, and a traced
    # value with an error that did not name the option); their defaults come from the dtype.
    default_tolerances(jnp.float64, 0.0 if rtol is None else rtol, 0.0 if atol is None else atol)
    limit = check_objective_limit(objective_limit)
    # One jitted program per (functions, shapes, options): a repeated eager call with the same
    # f reuses the compilation; inside the caller's jit it is inlined.
    return _minimise_constrained_jit(
        as_strong_inexact(x0),
        args,
        bounds,
        limit,
        f=static_function(f),
        eq=static_function(eq),
        ineq=static_function(ineq),
        maximise=check_bool("maximise", maximise),
        method=method,
        rtol=None if rtol is None else float(rtol),
        atol=None if atol is None else float(atol),
        max_iter=max_iter,
        max_inner_iter=max_inner_iter,
        implicit_diff=check_bool("implicit_diff", implicit_diff),
        verbose=check_bool("verbose", verbose),
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "f",
        "eq",
        "ineq",
        "maximise",
        "method",
        "rtol",
        "atol",
        "max_iter",
        "max_inner_iter",
        "implicit_diff",
        "verbose",
    ),
)
def _minimise_constrained_jit(
    x0,
    args,
    bounds,
    limit,
    *,
    f,
    eq,
    ineq,
    maximise,
    method,
    rtol,
    atol,
    max_iter,
    max_inner_iter,
    implicit_diff,
    verbose,
) -> ConstrainedResult:
    problem, x_flat = make_problem(f, x0, args, eq, ineq, bounds, maximise)
    simple = ineq is None and bounds is None
    if method == "auto":
        method = "newton-kkt" if simple else "augmented-lagrangian"
    if method == "newton-kkt" and not simple:
        raise ValueError(
            "method='newton-kkt' handles equality constraints only; use "
            "method='augmented-lagrangian' (or 'auto') with ineq or bounds"
        )
    # Newton's method converges quadratically: it affords eps**0.75; the augmented Lagrangian
    # converges linearly in its outer loop and stops at sqrt(eps).
    power = 0.75 if method == "newton-kkt" else 0.5
    rtol, atol = default_tolerances(x_flat.dtype, rtol, atol, power=power)
    # the limit on F = s f (s = -1 when maximising): f above -limit there
    limit = jnp.asarray(limit, x_flat.dtype)

    def solve(guess: Primal):
        if method == "newton-kkt":
            x, y, out = newton_kkt(
                problem,
                guess.x,
                None,
                rtol=rtol,
                atol=atol,
                max_iter=max_iter,
                verbose=verbose,
                f_limit=limit,
            )
            z = Primal(x, y, guess.y_ineq, guess.nu)
        else:
            z, out = augmented_lagrangian(
                problem,
                guess.x,
                rtol=rtol,
                atol=atol,
                max_iter=max_iter,
                max_inner_iter=max_inner_iter,
                verbose=verbose,
                f_limit=limit,
            )
        return z, (out.n_iter, out.status)

    if method == "augmented-lagrangian" and implicit_diff:
        # Nested loops: under vmap on a CPU, one problem after another (see _batching). Only
        # inside the implicit rule (_implicit), which never differentiates the solve; without
        # implicit differentiation, forward mode runs through the loops, vectorised.
        solve = sequential_under_vmap(solve)
    guess = zeros_primal(problem, x_flat)
    if implicit_diff:
        z, (n_iter, status) = solve_with_implicit_grad(
            lambda zz: kkt_map(problem, zz), guess, solve, tangent_solve=kkt_tangent_solve
        )
    else:
        z, (n_iter, status) = solve(guess)
    # Traced bounds escape check_bounds: an empty box (a lower bound above its upper bound) has
    # no feasible point, whatever the solve made of it.
    crossed = jnp.any(problem.lower > problem.upper)
    status = jnp.where(crossed, int(Status.INFEASIBLE), status)
    return _result(problem, z, n_iter, status)


def _value(problem, z: Primal) -> jax.Array:
    """``f(x*)``, differentiated by the envelope theorem (:func:`value_by_envelope`): as
    ``L = F - y_eq.h - y_ineq.g - nu.(x - b)`` (``b`` the active bound) at fixed ``(x, y, nu)``,
    where the problem's constants (``args``, closure values, traced bounds) move. Through ``x*``
    the derivative would be ``F_x dx + F_args``, and ``dx`` is NaN where the minimiser is not
    unique (a singular KKT matrix), although the value is smooth there."""

    def lagrangian(zz: Primal):
        x = zz.x
        bound = jnp.where(zz.nu > 0, problem.lower, jnp.where(zz.nu < 0, problem.upper, x))
        return problem.sign * (
            problem.objective(x)
            - jnp.vdot(zz.y_eq, problem.eq(x))
            - jnp.vdot(zz.y_ineq, problem.ineq(x))
            - jnp.vdot(zz.nu, x - bound)
        )

    return value_by_envelope(problem.sign * problem.objective(z.x), lagrangian, z)


def _result(problem, z: Primal, n_iter, status) -> ConstrainedResult:
    x = z.x
    violation = max_violation(problem, x)
    status = jnp.asarray(status, jnp.int32)
    residual = kkt_residual(problem, z)
    # Internal multipliers solve grad F = J^T y + nu for F = sign f; trust-constr's satisfy
    # grad f + J^T v + nu' = 0, so v = -sign y.
    s = -problem.sign
    return ConstrainedResult(
        x=problem.unravel(x),
        value=_value(problem, z),
        multipliers_eq=s * z.y_eq,
        multipliers_ineq=s * z.y_ineq,
        multipliers_bounds=problem.unravel(s * z.nu),
        kkt_residual=residual,
        max_violation=violation,
        n_iter=jnp.asarray(n_iter, jnp.int32),
        success=status == int(Status.SUCCESS),
        status=status,
    )
