"""The constrained problem in flat form, its validation and its KKT conditions (private).

Every constrained solver works on a flat parameter vector ``x`` (the raveled pytree) and sees

* ``F(x) = s f(x, *args)``, the objective it minimises (``s = -1`` when maximising);
* ``h(x)``, the equality constraints (``h = 0``), shape ``(m_e,)``;
* ``g(x)``, the inequality constraints (``g >= 0``), shape ``(m_i,)``;
* ``lower <= x <= upper``, the bounds (``-inf`` / ``inf`` where a side is free).

Internally the multipliers ``y_e``, ``y_i`` and ``nu`` (the bound multipliers, one per element of
``x``) follow the *sensitivity* convention of the minimised problem:

    grad F(x) = J_h(x)^T y_e + J_g(x)^T y_i + nu,   y_i >= 0,   y_i * g = 0,
    nu_k >= 0 where x_k = lower_k,   nu_k <= 0 where x_k = upper_k,   nu_k = 0 in between.

The public result converts them to scipy's ``trust-constr`` convention (see ``_constrained.py``).
The same conditions, written as one smooth-at-the-solution map (the projection form of the
complementarity conditions), give the implicit derivative of the solution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._implicit import dense_tangent_solve
from ._status import Status
from ._tree import (
    PyTree,
    as_inexact,
    check_args,
    check_not_half,
    check_real_output,
    dtype_of,
    tree_dtype,
)


class Problem(NamedTuple):
    """A constrained problem in flat form; the functions close over ``args``."""

    objective: Callable[[jax.Array], jax.Array]
    eq: Callable[[jax.Array], jax.Array]
    ineq: Callable[[jax.Array], jax.Array]
    lower: jax.Array
    upper: jax.Array
    n: int
    m_eq: int
    m_ineq: int
    unravel: Callable[[jax.Array], PyTree]  # flat -> x0 (its structure and dtypes): results
    sign: float


class Primal(NamedTuple):
    """A primal-dual point in the internal convention (all flat)."""

    x: jax.Array
    y_eq: jax.Array
    y_ineq: jax.Array
    nu: jax.Array


def _flat_output(name: str, fn: Callable | None, unravel, x_flat, args, dtype) -> Callable:
    """Wrap a constraint function as flat ``x -> (m,)`` and check its output shape at trace time."""
    if fn is None:
        return lambda x: jnp.zeros((0,), dtype)
    if not callable(fn):
        raise TypeError(f"{name} must be a callable {name}(x, *args) -> array, got {fn!r}")

    def flat(x):
        return jnp.ravel(jnp.asarray(fn(unravel(x), *args))).astype(dtype)

    out = _output_shape(
        name, "a scalar or a 1-D array of constraint values", fn, unravel, x_flat, args
    )
    if len(out.shape) > 1:
        raise ValueError(
            f"{name}(x, *args) must return a scalar or a 1-D array of constraint values, "
            f"got shape {out.shape}"
        )
    check_real_output(f"{name}(x, *args)", out.dtype)
    return flat


def _output_shape(name: str, what: str, fn: Callable, unravel, x_flat, args):
    """The shape and dtype of ``jnp.asarray(fn(x, *args))``; an output that is no array (a dict,
    None, arrays of several shapes) is a TypeError naming ``name`` (JAX's own said that an
    object array is not a valid JAX type)."""
    raw = jax.eval_shape(lambda x: fn(unravel(x), *args), x_flat)
    try:
        return jax.eval_shape(jnp.asarray, raw)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name}(x, *args) must return {what}, got {jax.tree.structure(raw)} with leaves "
            f"{[getattr(leaf, 'shape', leaf) for leaf in jax.tree.leaves(raw)]}"
        ) from None


def _flat_bounds(bounds, x0: PyTree, n: int, dtype, xp=jnp) -> tuple[jax.Array, jax.Array]:
    """The bounds as two flat vectors of length ``n``; ``xp`` is ``jnp`` (traced) or ``np``."""
    if bounds is None:
        return xp.full((n,), -np.inf, dtype), xp.full((n,), np.inf, dtype)
    scipy_style = (
        "; scipy.optimize.minimize's per-variable pairs [(l0, u0), (l1, u1), ...] are "
        "bounds=(lower, upper) here: ((l0, l1, ...), (u0, u1, ...))"
    )
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise ValueError(
            "bounds must be a pair (lower, upper), each shaped like x0 or a scalar" + scipy_style
        )
    if (
        isinstance(bounds, list)
        and n == 2
        and all(isinstance(b, tuple | list) and len(b) == 2 for b in bounds)
    ):
        # For two variables scipy's [(l0, u0), (l1, u1)] also reads as (lower, upper) =
        # ((l0, u0), (l1, u1)): [(0, 1), (0, 1)] fixed x at (0, 1), silently. Ambiguous as a
        # list; a tuple (lower, upper) says which is meant.
        raise ValueError(
            "bounds given as a list of two pairs is ambiguous for two variables"
            + scipy_style
            + "; pass the pair (lower, upper) as a tuple"
        )
    structure = jax.tree.structure(x0)
    flats = []
    for side, fill, value in (("lower", -np.inf, bounds[0]), ("upper", np.inf, bounds[1])):
        if value is None:
            flats.append(xp.full((n,), fill, dtype))
            continue
        # (a complex bound was cast to x's real dtype, its imaginary part dropped; a string met
        # NumPy's float() message)
        for leaf in jax.tree.leaves(value):
            kind = dtype_of(leaf)
            if not (jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)):
                raise TypeError(f"bounds {side} must hold real numbers, got dtype {kind}")
        if structure.num_leaves == 1 and isinstance(value, list | tuple):
            value = xp.asarray(value)  # scipy's style, [0.0, 0.0], for an array x0
        if jax.tree.structure(value) == structure:
            leaves_v, leaves_x = jax.tree.leaves(value), jax.tree.leaves(x0)
            parts = []
            for lv, lx in zip(leaves_v, leaves_x, strict=True):
                lv = xp.asarray(lv, dtype)
                if lv.shape not in ((), np.shape(lx)):
                    raise ValueError(
                        f"bounds {side} has a leaf of shape {lv.shape} where x0 has shape "
                        f"{np.shape(lx)}"
                    )
                parts.append(xp.ravel(xp.broadcast_to(lv, np.shape(lx))))
            flats.append(xp.concatenate(parts) if parts else xp.zeros((0,), dtype))
        elif isinstance(value, int | float) or (hasattr(value, "shape") and np.ndim(value) == 0):
            flats.append(xp.full((n,), xp.asarray(value, dtype)))
        else:
            raise ValueError(
                f"bounds {side} must be a scalar or have the structure and shapes of x0 "
                f"({structure}), got {jax.tree.structure(value)}"
            )
    return flats[0], flats[1]


def nonfinite_constraints(c, failure):
    """``NONFINITE`` where a constraint value (or a slack: an inequality of ``inf``) is NaN or
    inf, else ``failure``: the driver tests only ``x`` and ``f``. (A NaN constraint made every
    merit NaN: the augmented Lagrangian took no step and ended at ``x0`` with ``MAX_ITER``,
    Newton-KKT ``STAGNATED``.)"""
    return jnp.where(jnp.all(jnp.isfinite(c)), failure, int(Status.NONFINITE))


def check_bounds(bounds, x0: PyTree) -> None:
    """Validate concrete ``bounds`` on the host, before tracing: their shapes, and that no lower
    bound exceeds its upper bound (an empty box), which raises ``ValueError``. Traced bounds
    (inside the caller's ``jit`` or ``vmap``) are left to the solve, which reports a crossed pair
    as ``INFEASIBLE``."""
    if bounds is None or any(isinstance(v, jax.core.Tracer) for v in jax.tree.leaves(bounds)):
        return
    n = sum(int(np.size(leaf)) for leaf in jax.tree.leaves(x0))
    lower, upper = _flat_bounds(bounds, x0, n, np.float64, xp=np)
    if np.any(np.isnan(lower)) or np.any(np.isnan(upper)):
        raise ValueError("bounds hold NaN; use -inf / inf (or None) for a side without a bound")
    crossed = np.flatnonzero(lower > upper)
    if crossed.size:
        k = int(crossed[0])
        raise ValueError(
            f"bounds must have lower <= upper: lower > upper at {crossed.size} of the {n} flat "
            f"positions of x0 (the first, position {k}: lower {lower[k]} > upper {upper[k]})"
        )


def make_problem(
    f, x0, args, eq, ineq, bounds, maximise: bool, *, caller: str = "minimise_constrained"
) -> tuple[Problem, jax.Array]:
    """Validate the inputs at trace time and build the flat :class:`Problem` and ``x0``."""
    if not callable(f):
        raise TypeError(f"f must be a callable f(x, *args) -> scalar, got {f!r}")
    args = check_args(caller, args)
    x0 = as_inexact(x0, "x0" if caller == "minimise_constrained" else "starts")
    if not jax.tree.leaves(x0):
        raise ValueError("x0 must hold at least one parameter")
    dtype = tree_dtype(x0)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        # (JAX's grad then failed with its advice about holomorphic functions)
        raise TypeError(f"x0 must be real, got dtype {dtype}; split a complex x into real parts")
    check_not_half(caller, "starts" if caller == "lagrange_stationary_points" else "x0", dtype)
    # f, eq and ineq see x in the leaves' common dtype, the solve's (a float32 leaf beside a
    # float64 one was rounded to float32 for them at every evaluation, below the float64
    # tolerances: MAX_ITER on easy problems); the results come back in x0's dtypes (unravel).
    _, unravel = ravel_pytree(x0)
    x_flat, unravel_promoted = ravel_pytree(jax.tree.map(lambda u: u.astype(dtype), x0))
    n = x_flat.shape[0]
    if n == 0:
        # (as for the unconstrained minimisers: bounds met NumPy's "zero-size array to reduction
        # operation max", an equality the INFEASIBLE of a 0-vector with multipliers of 4.5e14)
        name = "x0" if caller == "minimise_constrained" else "each start"
        raise ValueError(f"{name} has no elements (size 0): there is nothing to solve for")
    out = _output_shape("f", "a scalar", f, unravel_promoted, x_flat, args)
    if out.shape != ():
        raise ValueError(f"f(x, *args) must return a scalar, got shape {out.shape}")
    check_real_output("f(x, *args)", out.dtype)
    sign = -1.0 if maximise else 1.0

    def objective(x):
        return sign * jnp.asarray(f(unravel_promoted(x), *args)).astype(dtype)

    h = _flat_output("eq", eq, unravel_promoted, x_flat, args, dtype)
    g = _flat_output("ineq", ineq, unravel_promoted, x_flat, args, dtype)
    m_eq = jax.eval_shape(h, x_flat).shape[0]
    m_ineq = jax.eval_shape(g, x_flat).shape[0]
    lower, upper = _flat_bounds(bounds, x0, n, dtype)
    problem = Problem(objective, h, g, lower, upper, n, m_eq, m_ineq, unravel, sign)
    return problem, x_flat


def lagrangian_gradient(problem: Problem, z: Primal) -> jax.Array:
    """``grad F - J_h^T y_e - J_g^T y_i`` (without the bound multipliers)."""

    def lagrangian(x):
        return (
            problem.objective(x)
            - jnp.vdot(z.y_eq, problem.eq(x))
            - jnp.vdot(z.y_ineq, problem.ineq(x))
        )

    return jax.grad(lagrangian)(z.x)


def kkt_map(problem: Problem, z: Primal) -> Primal:
    """The KKT conditions as one map that is zero at a KKT point (projection form).

    Stationarity ``grad F - J_h^T y_e - J_g^T y_i - nu``, feasibility ``h``, and complementarity as
    ``min(y_i, g)`` and ``x - clip(x - nu, lower, upper)``. Under strict complementarity the map is
    smooth at the solution and its derivative selects the active set by itself, which is what the
    implicit derivative of the solution needs.
    """
    stationarity = lagrangian_gradient(problem, z) - z.nu
    complementarity_ineq = jnp.minimum(z.y_ineq, problem.ineq(z.x))
    complementarity_bounds = z.x - jnp.clip(z.x - z.nu, problem.lower, problem.upper)
    return Primal(stationarity, problem.eq(z.x), complementarity_ineq, complementarity_bounds)


def kkt_tangent_solve(g: Callable, y: Primal) -> Primal:
    """Solve the linearised KKT system ``g(v) = y`` (for implicit differentiation), densely.

    As :func:`~._implicit.dense_tangent_solve`, and a variable that neither ``f`` nor the
    constraints read (a pytree leaf the problem ignores), free inside its bounds, gets a zero
    derivative and leaves the others' those of the problem without it. Its column is zero, but
    its row is not: stationarity reads its bound multiplier (``grad_k L - nu_k``), whose own row
    is ``nu_k`` (the bound inactive), so the zero row-and-column test missed it and the singular
    matrix made every derivative NaN. A unit entry for ``x_k`` in its stationarity row makes the
    pair ``(x_k, nu_k)`` a block of its own, ``dx_k`` the sum of its two right-hand sides (zero
    for such a variable).
    """
    return dense_tangent_solve(g, y, adjust=_unit_entry_for_unused_variables)


def _unit_entry_for_unused_variables(matrix, y: Primal):
    """The KKT matrix with a unit entry for each unused variable (see :func:`kkt_tangent_solve`)."""
    n, size = y.x.shape[0], matrix.shape[0]
    # -nu_k in stationarity row k, +nu_k in the bounds' complementarity row k (inactive bound)
    e_nu = jnp.zeros((n, size), matrix.dtype).at[jnp.arange(n), size - n + jnp.arange(n)].set(1)
    idle = (
        ~jnp.any(matrix[:, :n] != 0, axis=0)
        & jnp.all(matrix[:n] == -e_nu, axis=1)
        & jnp.all(matrix[size - n :] == e_nu, axis=1)
    )
    return matrix.at[jnp.arange(n), jnp.arange(n)].add(idle.astype(matrix.dtype))


def max_violation(problem: Problem, x: jax.Array) -> jax.Array:
    """The largest violation of any constraint or bound at ``x`` (0 when feasible)."""
    dtype = x.dtype
    parts = [
        jnp.max(jnp.abs(problem.eq(x)), initial=0.0),
        jnp.max(-problem.ineq(x), initial=0.0),
        jnp.max(problem.lower - x, initial=0.0),
        jnp.max(x - problem.upper, initial=0.0),
    ]
    return jnp.max(jnp.stack(parts)).astype(dtype)


def kkt_residual(problem: Problem, z: Primal) -> jax.Array:
    """The infinity norm of stationarity and complementarity (feasibility is ``max_violation``)."""
    r = kkt_map(problem, z)
    parts = [jnp.max(jnp.abs(leaf), initial=0.0) for leaf in (r.x, r.y_ineq, r.nu)]
    return jnp.max(jnp.stack(parts))


def bound_multipliers(problem: Problem, x: jax.Array, grad_lagrangian: jax.Array) -> jax.Array:
    """``nu``: the part of the Lagrangian gradient held by the bounds where ``x`` sits on one
    (all of it, of either sign, for a variable fixed by ``lower == upper``)."""
    at_lower = x <= problem.lower
    at_upper = x >= problem.upper
    nu = jnp.where(at_lower, jnp.maximum(grad_lagrangian, 0.0), 0.0)
    nu = jnp.where(at_upper, jnp.minimum(grad_lagrangian, 0.0), nu)
    return jnp.where(at_lower & at_upper, grad_lagrangian, nu)


def zeros_primal(problem: Problem, x: jax.Array) -> Primal:
    dtype = x.dtype
    return Primal(
        x,
        jnp.zeros((problem.m_eq,), dtype),
        jnp.zeros((problem.m_ineq,), dtype),
        jnp.zeros((problem.n,), dtype),
    )


def scale_of(value: Any) -> jax.Array:
    """``max(1, |value|_inf)``: the scale that relative tolerances multiply."""
    return jnp.maximum(1.0, jnp.max(jnp.abs(value), initial=0.0))


def projected_gradient(x: jax.Array, grad: jax.Array, lower, upper) -> jax.Array:
    """The gradient with the components that push a variable out of the box at its bound zeroed
    (``min(grad, 0)`` on a lower bound, ``max(grad, 0)`` on an upper one): in gradient units,
    unlike the projected step ``x - clip(x - grad)``, which a bound close by cuts to the distance
    to it (a gradient of 4e8 one unit from its bound passed a tolerance of 6 as a step of 1)."""
    pushed_out = ((x <= lower) & (grad > 0)) | ((x >= upper) & (grad < 0))
    return jnp.where(pushed_out, 0.0, grad)


def stationarity_tolerance(grad_f: jax.Array, forces: jax.Array, rtol, atol) -> jax.Array:
    """``atol + rtol max(1, |grad F|_k, |forces|_k)`` for each component ``k`` of ``x``.

    ``forces`` are the constraints' terms of the Lagrangian gradient (``J^T y + nu``), which
    cancel ``grad F`` at a solution: each component is judged against the size of the terms that
    cancel in it, so that a huge gradient held by an active constraint does not loosen the test
    of the other variables (one component of 1e9 held by a bound let the free variable stop
    with ``df/dx = -5``)."""
    return atol + rtol * stationarity_scale(grad_f, forces)


def stationarity_scale(grad_f: jax.Array, forces: jax.Array) -> jax.Array:
    """``max(1, |grad F|_k, |forces|_k)`` per component: see :func:`stationarity_tolerance`."""
    return jnp.maximum(1.0, jnp.maximum(jnp.abs(grad_f), jnp.abs(forces)))


def violation_tolerance(jac: jax.Array, x: jax.Array, rtol, atol) -> jax.Array:
    """``atol + rtol |J_j| max(1, |x|)`` for each constraint ``j`` (``J_j`` its gradient, infinity
    norms): the rounding of a constraint evaluated at ``x``. ``|J_j|`` is not floored at 1 (with
    ``g = 1 - x_0 / 1e6`` a floor let ``g = -0.024`` pass at ``x ~ 1e6``)."""
    return atol + rtol * jnp.max(jnp.abs(jac), axis=1, initial=0.0) * scale_of(x)


def constraint_jacobian(problem: Problem, x: jax.Array) -> jax.Array:
    """The Jacobian in ``x`` of the equalities, then the inequalities: ``(m_eq + m_ineq, n)``."""
    return jax.jacfwd(lambda u: jnp.concatenate([problem.eq(u), problem.ineq(u)]))(x)


def constraint_scales(problem: Problem, x0: jax.Array, gradient_max: float | None = None):
    """One positive factor per constraint (equalities, then inequalities) that the solvers
    multiply it by, so that they see it in units of ``x`` (same feasible set; a multiplier of
    the scaled constraint times the factor is that of the constraint as given).

    A constraint's size at ``x0`` is ``max(|grad c_j(x0)|_inf, |c_j(x0)| / max(1, |x0|_inf))``:
    its gradient, or where that vanishes (``x0`` at a critical point of ``c_j``) its value per
    unit of ``x``. One smaller than 1 is scaled up to 1: every test of a constraint's violation
    holds ``atol`` in the constraint's own units, and ``k (x0 + x1 - 1) = 0`` with ``k = 1e-8``
    met it at the start ``x = 0``, SUCCESS there, far from the solution (0.5, 0.5) (the
    augmented Lagrangian's penalty ``rho k^2`` could not have enforced it either). With
    ``gradient_max``, a constraint whose gradient is larger is scaled down to it (IPOPT's
    gradient scaling, Waechter & Biegler 2006, section 3.8). A size of 0 (or below the
    smallest normal number) or a non-finite one leaves the constraint as it is. Constants: no
    derivative flows through them (the solution does not depend on them)."""
    x0 = jax.lax.stop_gradient(x0)
    dtype = x0.dtype
    c = jnp.concatenate([problem.eq(x0), problem.ineq(x0)])
    grad = jnp.max(jnp.abs(constraint_jacobian(problem, x0)), axis=1, initial=0.0)
    size = jnp.maximum(grad, jnp.abs(c) / scale_of(x0))
    small = jnp.isfinite(size) & (size < 1.0) & (size >= jnp.finfo(dtype).tiny)
    scales = jnp.where(small, 1.0 / jnp.where(small, size, 1.0), 1.0)
    if gradient_max is not None:
        big = jnp.isfinite(grad) & (grad > gradient_max)
        scales = jnp.where(big, gradient_max / jnp.where(big, grad, 1.0), scales)
    return jax.lax.stop_gradient(scales.astype(dtype))


def scaled_problem(problem: Problem, scales) -> Problem:
    """The problem with its constraints multiplied by ``scales`` (same feasible set)."""
    m_eq = problem.m_eq
    eq, ineq = problem.eq, problem.ineq
    return problem._replace(
        eq=lambda x: scales[:m_eq] * eq(x),
        ineq=lambda x: scales[m_eq:] * ineq(x),
    )


def is_feasible(problem: Problem, x: jax.Array, rtol, atol) -> jax.Array:
    """Whether each constraint's violation at ``x`` (``|h_j|``, ``max(-g_j, 0)``) is within its
    :func:`violation_tolerance`, and each bound's within ``atol + rtol max(1, |x|)`` (its
    gradient is a unit vector)."""
    c = jnp.concatenate([jnp.abs(problem.eq(x)), jnp.maximum(-problem.ineq(x), 0.0)])
    jac = constraint_jacobian(problem, x)
    bounds = jnp.maximum(problem.lower - x, x - problem.upper)
    return jnp.all(c <= violation_tolerance(jac, x, rtol, atol)) & jnp.all(
        bounds <= atol + rtol * scale_of(x)
    )
