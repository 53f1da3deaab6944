"""The teaching form of Lagrange multipliers: every stationary point of the Lagrangian (private).

For ``f`` subject to ``h(x) = 0`` the stationary points of ``L(x, lam) = f(x) + lam . h(x)`` solve

    grad f(x) + J(x)^T lam = 0,    h(x) = 0.

:func:`lagrange_stationary_points` runs Newton's method on this system from many starts at once
(``jax.vmap``), keeps the starts that converged, merges duplicates, and classifies each point by
the inertia of the bordered Hessian

    B = [[0, J], [J^T, hess_x L]]       (size m + n).

With ``J`` of full rank, ``B`` has ``m`` positive and ``m`` negative eigenvalues more than the
Hessian of ``L`` restricted to the tangent space of the constraints (the classical test of signs of
the bordered minors says the same): a **minimum** when ``B`` has ``n`` positive and ``m`` negative
eigenvalues, a **maximum** when it has ``m`` positive and ``n`` negative, a **saddle** otherwise,
and **degenerate** when ``B`` is singular (the second-order test says nothing). The inertia is
computed from the restricted Hessian itself, relative to the Hessian's scale, so that it does
not depend on how ``f`` and ``h`` are scaled against each other.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._constrained_problem import (
    constraint_scales,
    make_problem,
    scale_of,
    scaled_problem,
    stationarity_scale,
    violation_tolerance,
)
from ._driver import iterate, make_progress
from ._linesearch import backtracking
from ._static import static_function
from ._status import Status
from ._tree import (
    PyTree,
    as_strong_inexact,
    check_args,
    check_callable,
    check_not_half,
    check_positive_int,
    default_tolerances,
    is_real_scalar,
)

__all__ = ["LagrangePoints", "lagrange_stationary_points"]

KINDS = ("minimum", "maximum", "saddle", "degenerate")
# The trust radius of the Newton steps along each singular direction, relative to max(1, |z|).
_STEP_RADIUS = 10.0


class LagrangePoints(NamedTuple):
    """Distinct stationary points of the Lagrangian (host arrays, one row per point).

    Attributes:
        x: the points, with the structure of one start and a leading axis.
        multipliers: ``lam`` for each point (``grad f + J^T lam = 0``, as in ``trust-constr``;
            the course's ``grad f = lam grad h`` has the opposite sign).
        value: ``f`` at each point.
        kind: ``"minimum"``, ``"maximum"``, ``"saddle"`` or ``"degenerate"`` for each point.
        bordered_hessian: ``[[0, J], [J^T, hess_x L]]`` at each point, shape ``(k, m+n, m+n)``.
        count: how many starts converged to each point.
        n_converged: how many starts converged at all (the others are dropped).
    """

    x: PyTree
    multipliers: np.ndarray
    value: np.ndarray
    kind: tuple[str, ...]
    bordered_hessian: np.ndarray
    count: np.ndarray
    n_converged: int


class _State(NamedTuple):
    z: jax.Array
    residual: jax.Array


def _newton_lagrange(problem, x0, *, rtol, atol, max_iter):
    """Newton's method on ``grad L = 0`` in ``(x, lam)``, with a line search on ``|grad L|^2``.

    The step comes from the singular value decomposition ``A = U S V^T`` of the Jacobian of
    ``r = grad L``: ``d = -V M^{-1} U^T r`` with ``M = max(S, eps s_max, |U^T r| / radius)``, the
    Newton step wherever each of its components along ``V`` is shorter than ``radius`` (a
    trust region per singular direction). Where ``A`` is singular (a linear ``f`` at
    ``lam = 0``; a curve of stationary points, as for ``f = |x|^2`` on a circle) the plain Newton
    step is undefined or ~1/eps long, and no backtracking can shorten it. It is a descent
    direction of ``|r|^2`` always (its slope is ``-sum s_i (u_i . r)^2 / m_i``).
    """
    n, m = problem.n, problem.m_eq
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps

    def residual(z):
        x, lam = z[:n], z[n:]
        grad = jax.grad(lambda u: problem.objective(u) + jnp.vdot(lam, problem.eq(u)))(x)
        return jnp.concatenate([grad, problem.eq(x)])

    def merit(z, w):
        r = residual(z) * w
        return 0.5 * jnp.vdot(r, r)

    def scales(z):
        # The sizes that stationarity and feasibility are judged against, as in
        # minimise_constrained: each component of grad f + J^T lam against the larger of its
        # two terms (one scale for all, a component of grad f of 1e9 held by the constraint
        # let the other stop at df/dx = -5), each constraint against |J_j| |x|.
        x, lam = z[:n], z[n:]
        grad_f = jax.grad(problem.objective)(x)
        jac_h = jax.jacfwd(problem.eq)(x)
        return stationarity_scale(grad_f, jac_h.T @ lam), jac_h

    def converged_at(z, r):
        # (Relative to |(x, lam)|, a point near the cusp of x^2 = y^3 with lam ~ 5e3 passed for
        # f = y, with x^2 - y^3 = 5e-7.)
        kkt, jac_h = scales(z)
        return jnp.all(jnp.abs(r[:n]) <= atol + rtol * kkt) & jnp.all(
            jnp.abs(r[n:]) <= violation_tolerance(jac_h, z[:n], rtol, atol)
        )

    def step(st: _State):
        z, r = st
        # Newton on the residual in the units of the convergence test (each block over its
        # scale), and the line search on that residual's square: unweighted, a constraint in
        # large units (h scaled by 1e4) made the merit all feasibility, and the tangential
        # steps Newton needs were cut to nothing (no start converged).
        # (Each constraint's weight is floored at |J_j| = 1, or a vanishing J_j would blow it
        # up.)
        kkt, jac_h = scales(z)
        viol = jnp.maximum(1.0, jnp.max(jnp.abs(jac_h), axis=1, initial=0.0)) * scale_of(z[:n])
        w = jnp.concatenate([1.0 / kkt, 1.0 / viol])
        jac = w[:, None] * jax.jacfwd(residual)(z)
        rw = w * r
        u, sv, vt = jnp.linalg.svd(jac)
        ur = u.T @ rw
        radius = _STEP_RADIUS * scale_of(z)
        sv_mod = jnp.maximum(jnp.maximum(sv, eps * sv[0]), jnp.abs(ur) / radius)
        d = -vt.T @ jnp.where(sv_mod > 0, ur / jnp.where(sv_mod > 0, sv_mod, 1.0), 0.0)
        phi0 = 0.5 * jnp.vdot(rw, rw)
        ls = backtracking(lambda a: merit(z + a * d, w), phi0, jnp.vdot(jac.T @ rw, d))
        z_new = z + jnp.where(ls.success, ls.step_size, 0.0) * d
        r_new = residual(z_new)
        norm = jnp.max(jnp.abs(r_new))
        converged = converged_at(z_new, r_new)
        failure = jnp.where(ls.success | converged, -1, int(Status.LINESEARCH_FAILED))
        progress = make_progress(
            z_new,
            norm,
            dx=z_new - z,
            df=norm - jnp.max(jnp.abs(r)),
            converged=converged,
            failure=failure,
        )
        return _State(z_new, r_new), progress

    # The least-squares multipliers, argmin |grad f + J^T lam| (Nocedal & Wright, eq. 18.21),
    # not lam = 0, where a linear f makes the Jacobian of grad L singular whenever n > m.
    grad0 = jax.grad(problem.objective)(x0)
    jac0 = jax.jacfwd(problem.eq)(x0)
    gram = jac0 @ jac0.T + eps * scale_of(jac0) ** 2 * jnp.eye(m, dtype=dtype)
    lam0 = -jnp.linalg.solve(gram, jac0 @ grad0)
    lam0 = jnp.where(jnp.all(jnp.isfinite(lam0)), lam0, 0.0)
    z0 = jnp.concatenate([x0, lam0])
    r0 = residual(z0)
    norm0 = jnp.max(jnp.abs(r0))
    out = iterate(
        step,
        _State(z0, r0),
        make_progress(z0, norm0, converged=converged_at(z0, r0)),
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        cauchy=False,
        name="lagrange_stationary_points",
    )
    return out.state.z, out.status, out.state.residual


def _bordered_hessian(problem, z):
    n, m = problem.n, problem.m_eq
    x, lam = z[:n], z[n:]
    hess = jax.hessian(lambda u: problem.objective(u) + jnp.vdot(lam, problem.eq(u)))(x)
    jac = jax.jacfwd(problem.eq)(x)
    dtype = x.dtype
    return jnp.block([[jnp.zeros((m, m), dtype), jac], [jac.T, hess]])


def _reduced_hessian(bordered, n: int, m: int, eps: float):
    """Eigenvalues of ``Z^T H Z`` (ascending) and ``H``'s scale; None where ``J`` is not of full
    rank (the tangent space is not ``n - m`` dimensional). The rank is judged on ``J`` with unit
    rows: a constraint's scale (``h`` or ``1e8 h``) changes neither the tangent space nor the
    rank, and on the raw rows one constraint scaled by 1e8 made every point "degenerate"."""
    jac, hess = bordered[:m, m:], bordered[m:, m:]
    norms = np.linalg.norm(jac, axis=1, keepdims=True)
    _, sv, vt = np.linalg.svd(jac / np.where(norms > 0, norms, 1.0))
    if m and (sv.size < m or sv[-1] <= np.sqrt(eps) * sv[0]):
        return None
    z = vt[m:].T
    w = np.linalg.eigvalsh(z.T @ hess @ z) if n > m else np.zeros(0)
    return w, max(np.max(np.abs(w), initial=0.0), np.max(np.abs(hess), initial=0.0))


def _classify(bordered, bordered_next, n: int, m: int, eps: float) -> str:
    """The kind of a point from its bordered Hessian, by the inertia of ``Z^T H Z``: the Hessian
    of ``L`` on the tangent space of the constraints (``Z`` an orthonormal basis of ``J``'s null
    space). The same inertia as ``B``'s less ``m`` of each sign, judged relative to each block's
    own scale (a threshold on ``B``'s eigenvalues mixes the scales of ``J`` and of ``H``: with
    ``f`` or ``h`` scaled by 1e4 in float32 every point was "degenerate").

    ``bordered_next`` is ``B`` one Newton step further: where an eigenvalue moves by a tenth of
    itself over that step, it is not resolved at the point found, and only a vanishing one
    moves so (at a degenerate point Newton converges linearly and the step is of the size of
    the remaining error: on ``x^3`` the eigenvalue ``6x`` halves). Judged at the end point
    alone, such a point was a "minimum" or a "maximum" by the side that a start came from.
    """
    here = _reduced_hessian(bordered, n, m, eps)
    if here is None:
        return "degenerate"
    w, scale = here
    tiny = np.sqrt(eps) * scale
    n_pos, n_neg = int(np.sum(w > tiny)), int(np.sum(w < -tiny))
    if n_pos + n_neg < n - m or (scale == 0.0 and n > m):
        return "degenerate"
    there = _reduced_hessian(bordered_next, n, m, eps)
    if there is None or not np.all(np.abs(there[0] - w) <= 0.1 * np.abs(w) + tiny):
        return "degenerate"
    if n_pos == n - m:
        return "minimum"
    if n_neg == n - m:
        return "maximum"
    return "saddle"


@functools.partial(jax.jit, static_argnames=("f", "eq", "rtol", "atol", "max_iter"))
def _solve_all(starts, args, *, f, eq, rtol, atol, max_iter):
    """Newton on the Lagrangian from every start (one compiled program per functions, shapes and
    options), with the bordered Hessian and the value at each end point."""

    def one(start):
        problem, x0 = make_problem(
            f, start, args, eq, None, None, False, caller="lagrange_stationary_points"
        )
        n = problem.n
        # Newton on the constraints in units of x (constraint_scales: those in small units
        # scaled up), or its tests take their small values for feasibility: with h scaled by
        # 1e-9 every start "converged" where it began, near the origin. lam and h back in the
        # constraints' own units for the rest.
        scales = constraint_scales(problem, x0)
        z, status, residual = _newton_lagrange(
            scaled_problem(problem, scales), x0, rtol=rtol, atol=atol, max_iter=max_iter
        )
        z = jnp.concatenate([z[:n], z[n:] * scales])
        residual = jnp.concatenate([residual[:n], residual[n:] / scales])
        bordered = _bordered_hessian(problem, z)
        # One more Newton step from the end point (least squares: B may be singular there):
        # its length is how far the point may be from the stationary point it estimates
        # (1/2 to 1/4 of the error where the stationary point is degenerate and Newton
        # converges linearly; about the rounding where it is not); the bordered Hessian at
        # the stepped point tells whether the second-order test holds still over that distance.
        # The solve's residual (grad L, h) at z, in the bordered Hessian's order (lam, x).
        r = jnp.concatenate([residual[n:], residual[:n]])
        d = -jnp.linalg.lstsq(bordered, r)[0]
        step = jnp.concatenate([d[problem.m_eq :], d[: problem.m_eq]])
        bordered_next = _bordered_hessian(problem, z + step)
        spread = jnp.max(jnp.abs(step[:n]), initial=0.0)
        res = jnp.max(jnp.abs(residual))
        # The driver judges grad L alone: where f is NaN and its gradient finite (log(x) at
        # x < 0, whose derivative JAX gives as 1/x), a start "converged" to a point outside f's
        # domain, listed with value NaN and a kind.
        value = problem.objective(z[:n])
        status = jnp.where(
            (status == int(Status.SUCCESS)) & ~jnp.isfinite(value), int(Status.NONFINITE), status
        )
        return z, status, res, value, bordered, bordered_next, spread

    return jax.vmap(one)(starts)


def lagrange_stationary_points(
    f,
    eq,
    starts: PyTree,
    *,
    args: tuple = (),
    rtol: float | None = None,
    atol: float | None = None,
    max_iter: int = 50,
    unique_tol: float | None = None,
) -> LagrangePoints:
    """All stationary points of the Lagrangian of ``f`` subject to ``eq(x) = 0``, classified.

    Newton's method solves ``grad f + J^T lam = 0, h = 0`` from every start at once (one
    ``jax.vmap``-ed, jit-compiled solve); points reached by several starts are merged; each is
    classified by the bordered Hessian (see the module notes). The solves run compiled; the
    merging runs on the host, so this helper itself is not ``jit``-able (the number of distinct
    points is data-dependent): under ``jax.jit``, ``jax.grad`` or ``jax.vmap`` it raises
    ``TypeError``.

    Args:
        f: the objective ``f(x, *args) -> scalar``.
        eq: the equality constraints ``eq(x, *args) -> array``, ``h(x) = 0``.
        starts: starting points with a leading batch axis (an array ``(k, ...)`` or a pytree
            whose leaves share the leading axis ``k``).
        args: extra arguments of ``f`` and ``eq``.
        rtol, atol: tolerances of the convergence test: each component ``k`` of ``grad L``
            within ``atol + rtol max(1, |df/dx_k|, |(J^T lam)_k|)`` and each ``|h_j|`` within
            ``atol + rtol |J_j| max(1, |x|)`` (``J_j`` its gradient; infinity norms), a
            constraint smaller than unit size at the start (its gradient, or its value per unit
            of ``x`` where that vanishes) first scaled up to unit size; default
            ``sqrt(eps)`` of the dtype.
        max_iter: largest number of Newton steps per start.
        unique_tol: points closer than ``unique_tol * (1 + |x|)`` (infinity norm), widened by
            how far each may be from the point it estimates (four times one more Newton step
            from it: large only at a degenerate point, where Newton converges linearly), are
            one point; default ``100 * max(rtol, atol)``: Newton stops once ``|grad L|`` is within the
            tolerance, so the starts that reach one point agree to a few times it (1.5e-6 in
            float64, 3.5e-2 in float32, where a fixed 1e-6 left one point in as many copies
            as starts).

    Returns:
        :class:`LagrangePoints`, sorted by value.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_mml as mml
        >>> starts = jax.random.normal(jax.random.key(0), (64, 2))
        >>> pts = mml.lagrange_stationary_points(
        ...     lambda p: p[0] ** 2 * p[1], lambda p: jnp.array([p @ p - 1.0]), starts)
        >>> pts.kind   # minima at (+-sqrt(2/3), -1/sqrt 3) and (0, 1); maxima mirrored in y
        ('minimum', 'minimum', 'maximum', 'minimum', 'maximum', 'maximum')

    References:
        Apostol, *Calculus*, vol. II, section 9.14; Magnus & Neudecker, *Matrix Differential
        Calculus*, chapter 7 (the bordered Hessian).
    """
    check_callable("f", f)
    if eq is not None:
        check_callable("eq", eq)
    # (before the jit: inside, a tracer)
    args = check_args("lagrange_stationary_points", args, arrays=True)
    if eq is None:
        raise ValueError("eq is required: lagrange_stationary_points finds h(x) = 0 stationarity")
    max_iter = check_positive_int("max_iter", max_iter)
    leaves = jax.tree.leaves(starts)
    if not leaves or any(jnp.ndim(leaf) < 1 for leaf in leaves):
        raise ValueError("starts must have a leading batch axis on every leaf")
    k = jnp.shape(leaves[0])[0]
    if any(jnp.shape(leaf)[0] != k for leaf in leaves):
        raise ValueError("every leaf of starts must have the same leading (batch) size")
    if k == 0:  # (its first row, the template, raised IndexError)
        raise ValueError("starts must hold at least one start, got a leading (batch) axis of 0")
    template = jax.tree.map(lambda leaf: jnp.asarray(leaf)[0], starts)
    dtype = ravel_pytree(template)[0].dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError(
            f"starts must be real, got dtype {dtype}; split a complex x into real parts"
        )
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    check_not_half("lagrange_stationary_points", "starts", dtype)
    rtol, atol = default_tolerances(dtype, rtol, atol)
    if unique_tol is None:
        unique_tol = 100.0 * max(float(rtol), float(atol))
    else:
        # (compared bare, a string or an array raised Python's own error, and True ran as 1)
        if not is_real_scalar(unique_tol):
            raise TypeError(f"unique_tol must be a real number or None, got {unique_tol!r}")
        if not float(unique_tol) >= 0.0:
            raise ValueError(
                f"unique_tol must be a non-negative number or None, got {unique_tol!r}"
            )
    unique_tol = float(unique_tol)

    solved = _solve_all(
        as_strong_inexact(starts, "starts"),
        args,
        f=static_function(f),
        eq=static_function(eq),
        rtol=float(rtol),
        atol=float(atol),
        max_iter=max_iter,
    )
    # Traced (jax.jit, grad or vmap of args, of the starts, or of a value f or eq closes over):
    # the merging below needs the values, and JAX's own error named only an array's shape.
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(solved)):
        raise TypeError(
            "lagrange_stationary_points runs on the host (the number of distinct points depends "
            "on the values), so it cannot be called under jax.jit, jax.grad or jax.vmap. To "
            "differentiate a point it found, solve its conditions from there with "
            "minimise_constrained (or newton_raphson on grad L = 0, h = 0) under the transformation."
        )
    z, status, res, value, bordered, bordered_next, spread = jax.device_get(solved)
    problem, x_flat = make_problem(
        f, template, args, eq, None, None, False, caller="lagrange_stationary_points"
    )
    n, m = problem.n, problem.m_eq
    ok = status == int(Status.SUCCESS)
    # Starts in turn join the first point within unique_tol, widened by how far each end point
    # may be from the stationary point it estimates (four times one more Newton step: at a
    # degenerate point Newton converges linearly, and the starts end spread over far more than
    # the tolerance: on x^4, |x| up to 1.5e-3 in float64; capped at unique_tol^(1/4)); each point is represented by the start that
    # reached it with the smallest |grad L|.
    scale = 1.0 + np.max(np.abs(z[:, :n]), axis=1, initial=0.0)
    spread = np.where(np.isfinite(spread), np.minimum(4.0 * spread, unique_tol**0.25 * scale), 0.0)
    points, counts = [], []
    for i in np.flatnonzero(ok):
        xi = z[i, :n]
        for j, p in enumerate(points):
            near = unique_tol * (1.0 + np.max(np.abs(xi))) + spread[i] + spread[p]
            if np.max(np.abs(z[p, :n] - xi)) <= near:
                counts[j] += 1
                if res[i] < res[p]:
                    points[j] = i
                break
        else:
            points.append(i)
            counts.append(1)
    order = sorted(range(len(points)), key=lambda j: value[points[j]])
    idx = np.asarray([points[j] for j in order], dtype=int)
    eps = np.finfo(dtype).eps
    kinds = []
    for i in idx:
        kinds.append(_classify(bordered[i], bordered_next[i], n, m, eps))
    x_points = jax.vmap(problem.unravel)(jnp.asarray(z[idx, :n].reshape(len(idx), n)))
    return LagrangePoints(
        x=jax.device_get(x_points),
        multipliers=z[idx, n:],
        value=value[idx],
        kind=tuple(kinds),
        bordered_hessian=bordered[idx],
        count=np.asarray([counts[j] for j in order], dtype=int),
        n_converged=int(np.sum(ok)),
    )
