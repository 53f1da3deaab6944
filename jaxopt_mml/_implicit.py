"""Implicit differentiation of solutions (private core).

A solver's answer ``x*(theta)`` satisfies an optimality condition ``F(x*, theta) = 0`` (a root of
``f``, a zero gradient, the KKT conditions). By the implicit function theorem

    dx*/dtheta = -[dF/dx]^{-1} dF/dtheta,

so derivatives come from one linear solve at the solution, never from unrolling the iterations.
The rule applies to everything ``F`` closes over (the ``args``). It is applied at the point the
solver returns, whatever its status: where a solve failed (``success`` False) the derivative is
the formula's value there, finite and meaningless, or infinite where ``dF/dx`` is singular
(as ``lax.custom_root`` and jaxopt give it); check ``success`` before using it.

Two carriers of the same rule. ``lax.custom_root`` (on jax 0.10, itself a ``custom_jvp``); and,
where ``lax.custom_root`` is a "high" primitive (jax 0.11), the rule written here on
``jax.custom_jvp``, which is not: a jitted program that holds a high primitive is dispatched
through JAX's Python path at every call, 0.1-0.8 ms on an H100's host and 10-75 us on a 2-core
CPU (docs/gpu_benchmark.md). :data:`RULE` chooses (``None``: by that test, made once).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.extend
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = [
    "DENSE_TANGENT_MAX",
    "dense_tangent_solve",
    "matrix_free_tangent_solve",
    "tangent_solve_for",
    "solve_with_implicit_grad",
    "unit_diagonal_where_idle",
    "value_by_envelope",
]

# "custom_root", "custom_jvp", or None: custom_jvp where lax.custom_root is a high primitive.
RULE: str | None = None

# Tangent systems of up to this many unknowns are materialised and solved densely (n forward
# passes and an LU); larger ones matrix-free (Krylov iterations of Jacobian-vector products).
DENSE_TANGENT_MAX = 1000


def unit_diagonal_where_idle(matrix: jax.Array, holds: jax.Array | bool = True) -> jax.Array:
    """``matrix`` with a unit diagonal entry for each unknown whose row and column are both zero
    (and, where ``holds`` is given per row, whose equation holds): such an unknown neither reads
    nor is read by the others, so a solve leaves it alone (its right-hand side) and gives the
    others the solution of the system without it, where the singular matrix gave NaN."""
    nonzero = matrix != 0
    idle = ~jnp.any(nonzero, axis=0) & ~jnp.any(nonzero, axis=1) & holds
    return matrix + jnp.diag(idle.astype(matrix.dtype))


def dense_tangent_solve(g: Callable, y: Any, *, adjust: Callable | None = None) -> Any:
    """Solve the linear system ``g(v) = y`` by materialising ``g``'s matrix (pytrees allowed).

    Suited to the small and medium systems (up to a few thousand unknowns) of this library.

    An unknown whose row and column are both zero (a pytree leaf that ``f`` does not use, a
    parameter the model ignores: the optimality condition neither reads it nor constrains it)
    gets a unit diagonal, so that its derivative is its right-hand side (zero for such an
    unknown) and the others' are those of the system without it; the singular matrix made
    every component NaN. A matrix singular in any other way still gives NaN. ``adjust(matrix,
    y)``, where given, amends the matrix first (a system with a structure of its own: the KKT
    conditions, ``_constrained_problem.kkt_tangent_solve``).
    """
    flat_y, unravel = ravel_pytree(y)

    def g_flat(v):
        return ravel_pytree(g(unravel(v)))[0]

    matrix = jax.jacfwd(g_flat)(flat_y)
    if adjust is not None:
        matrix = adjust(matrix, y)
    return unravel(jnp.linalg.solve(unit_diagonal_where_idle(matrix), flat_y))


def matrix_free_tangent_solve(g: Callable, y: Any, *, symmetric: bool = False) -> Any:
    r"""Solve the linear system ``g(v) = y`` without forming ``g``'s matrix (pytrees allowed).

    By conjugate gradients where ``g`` is symmetric (a Hessian: positive definite at a strict
    minimum), else by restarted GMRES, to a relative residual of :math:`\epsilon^{3/4}`; as a
    ``lax.custom_linear_solve``, so that reverse mode solves the transposed system the same
    way (``lax.custom_root``'s and the ``custom_jvp`` rule's transposition both need it). Each
    iteration is one product with ``g``: for ``n`` unknowns a few dozen products instead of the
    ``n`` that materialising takes, and no ``n x n`` matrix (80 GB at ``n = 10^5``); at most
    about ``10 n`` of them (on a badly conditioned system more than the ``n`` of the dense
    path: 20 s against 1.7 s for a singular Hessian of 1500 unknowns, whose derivative is
    meaningless either way). Where the Krylov method breaks down (float32 and a nearly singular
    system) the derivative is NaN, as a singular dense solve gives it.
    """
    flat_y, unravel = ravel_pytree(y)
    n = flat_y.shape[0]
    tol = float(jnp.finfo(flat_y.dtype).eps) ** 0.75
    # At most about 10n products, JAX's default for CG; its default for GMRES is 10n restarts
    # of 30, 300n products: a badly conditioned system in float32, whose tolerance rounding
    # never lets it meet, ran to that limit (n = 1100, eigenvalues of I - J down to 1e-4: 75 s
    # for one derivative, the answer final after a tenth of it). Fewer (n) cost accuracy on
    # ill-conditioned float64 Hessians (condition 7e5: an error of 2e-3 instead of 7e-6).
    restart = min(n, 30)

    def matvec(v):
        return ravel_pytree(g(unravel(v)))[0]

    if symmetric:

        def solve(mv, b):
            return jax.scipy.sparse.linalg.cg(mv, b, tol=tol, maxiter=10 * n)[0]

        return unravel(lax.custom_linear_solve(matvec, flat_y, solve, symmetric=True))

    def solve(mv, b):
        cycles = -(-10 * n // restart)
        return jax.scipy.sparse.linalg.gmres(mv, b, tol=tol, restart=restart, maxiter=cycles)[0]

    return unravel(lax.custom_linear_solve(matvec, flat_y, solve, transpose_solve=solve))


def tangent_solve_for(size: int, *, symmetric: bool = False) -> Callable:
    """The tangent solve for a system of ``size`` unknowns: :func:`dense_tangent_solve` up to
    :data:`DENSE_TANGENT_MAX`, :func:`matrix_free_tangent_solve` above."""
    if size <= DENSE_TANGENT_MAX:
        return dense_tangent_solve
    return functools.partial(matrix_free_tangent_solve, symmetric=symmetric)


def solve_with_implicit_grad(
    optimality: Callable[[Any], Any],
    x0: Any,
    solve: Callable[[Any], tuple[Any, Any]],
    *,
    tangent_solve: Callable = dense_tangent_solve,
) -> tuple[Any, Any]:
    """Run ``solve(x0) -> (x, aux)`` so that ``x`` is differentiated implicitly.

    Args:
        optimality: ``F(x)``, zero at the solution, with the same structure as ``x``; it closes over
            the parameters (``args``) that derivatives are taken with respect to.
        x0: the initial guess (gets no derivative).
        solve: runs the solver from a guess; returns the solution and auxiliary output (status,
            counts...), which is not differentiated.
        tangent_solve: solves ``g(v) = y`` for the linearisation ``g`` of ``optimality``.

    Returns:
        ``(x, aux)``.
    """
    # Integer and boolean leaves of aux travel as floats (custom_root's rule expects float0
    # tangents for them) and are cast back afterwards.
    dtypes = {}

    def solve_float_aux(guess):
        x, aux = solve(guess)
        leaves, treedef = jax.tree.flatten(aux)
        dtypes["aux"] = (treedef, [jnp.result_type(leaf) for leaf in leaves])
        return x, jax.tree.unflatten(treedef, [_to_float(leaf) for leaf in leaves])

    if _rule() == "custom_root":
        x, aux = lax.custom_root(
            optimality, x0, lambda _f, guess: solve_float_aux(guess), tangent_solve, has_aux=True
        )
    else:
        # The optimality condition and the solver close over the parameters: staged out, their
        # constants become explicit arguments of the custom rule.
        f_staged, f_consts = stage(optimality, x0)
        solve_staged, solve_consts = stage(solve_float_aux, x0)
        x, aux = _root(
            f_staged, solve_staged, tangent_solve, len(f_consts), x0, *f_consts, *solve_consts
        )
    treedef, leaf_dtypes = dtypes["aux"]
    leaves = [leaf.astype(dt) for leaf, dt in zip(jax.tree.leaves(aux), leaf_dtypes, strict=True)]
    return x, jax.tree.unflatten(treedef, leaves)


def _to_float(leaf):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return leaf
    return leaf.astype(jnp.result_type(float))


def _rule() -> str:
    if RULE is not None:
        if RULE not in ("custom_root", "custom_jvp"):
            raise ValueError(
                f"_implicit.RULE must be 'custom_root', 'custom_jvp' or None: {RULE!r}"
            )
        return RULE
    return "custom_jvp" if custom_root_is_high() else "custom_root"


@functools.cache
def custom_root_is_high() -> bool:
    """Whether this JAX makes ``lax.custom_root`` a "high" primitive (jax 0.11 does; 0.10 not)."""

    def probe(c):
        return lax.custom_root(lambda u: u - c, c, lambda f, g: g, lambda g, y: y)

    jaxpr = jax.make_jaxpr(probe)(1.0).jaxpr
    for eqn in jaxpr.eqns:
        is_high = getattr(eqn.primitive, "is_high", None)
        if callable(is_high) and is_high(**eqn.params):
            return True
    return False


class _Staged(NamedTuple):
    """A function of ``x`` staged out as a jaxpr without its constants (which the custom rule
    takes as arguments), and its output's structure."""

    jaxpr: Any
    out_tree: Any

    def __call__(self, x, consts):
        closed = jax.extend.core.ClosedJaxpr(self.jaxpr, list(consts))
        flat = jax.extend.core.jaxpr_as_fun(closed)(*jax.tree.leaves(x))
        return jax.tree.unflatten(self.out_tree, flat)


def stage(fun: Callable, example: Any) -> tuple[_Staged, list]:
    """``fun`` of ``x`` as a :class:`_Staged` and the constants it closes over (traced or not).

    The constants travel as arguments of the custom rule, and only the jaxpr as its static part,
    as in ``lax.custom_root``: JAX keeps the static parts of the calls it has traced, and a
    closure over traced values there (``jax.closure_convert``'s converted function, which it
    caches as well) kept every traced program alive, about 2 MB a fit's trace.
    """
    closed, out_shape = jax.make_jaxpr(fun, return_shape=True)(example)
    jaxpr = closed.jaxpr
    if getattr(jaxpr, "consts", None):  # jax 0.11: a Jaxpr holds its constants' values too
        jaxpr = jaxpr.replace(consts=None)
    return _Staged(jaxpr, jax.tree.structure(out_shape)), list(closed.consts)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _root(f, solve, tangent_solve, n_f, x0, *consts):
    """``solve(x0)`` with its constants ``consts[n_f:]``, differentiated by the implicit function
    theorem with respect to the optimality condition's constants ``consts[:n_f]``; the guess and
    the solver's own constants get no derivative, as in ``lax.custom_root``."""
    return solve(x0, consts[n_f:])


@_root.defjvp
def _root_jvp(f, solve, tangent_solve, n_f, primals, tangents):
    x0, *consts = primals
    f_consts, f_dots = tuple(consts[:n_f]), tuple(tangents[1 : 1 + n_f])
    x, aux = _root(f, solve, tangent_solve, n_f, x0, *consts)
    # F(x*(theta), theta) = 0, so dF/dx . x_dot = -dF/dtheta . theta_dot at the solution.
    _, rhs = jax.jvp(lambda *c: f(x, c), f_consts, f_dots)
    _, linear = jax.linearize(lambda v: f(v, f_consts), x)
    x_dot = jax.tree.map(jnp.negative, tangent_solve(linear, rhs))
    return (x, aux), (x_dot, jax.tree.map(jnp.zeros_like, aux))


def value_by_envelope(val: jax.Array, fun: Callable, point: Any) -> jax.Array:
    """``val = fun(point)`` as a solver computed it, differentiated by the envelope theorem.

    At a solution the derivative of ``fun`` in the solution ``point`` vanishes (a minimiser's
    gradient, a Lagrangian's at a KKT point), so the value's derivative is that of ``fun`` in
    what it closes over (``args``, closure values, traced bounds) with ``point`` held: one
    ``jvp``, run only where a derivative is taken; the primal value stays the solver's own.
    ``point``'s own tangent is not used (where the solution is not unique its implicit tangent
    is NaN, and ``0 * NaN`` would make the value's derivative NaN); ``point`` itself is, so that
    second derivatives see its dependence on the constants. ``fun`` is staged as the implicit
    rule stages its functions (:func:`stage`): no closure over traced values is kept by JAX's
    caches.
    """
    staged, consts = stage(fun, point)
    return _held_value(staged, val, point, *consts)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _held_value(staged, val, point, *consts):
    return val


@_held_value.defjvp
def _held_value_jvp(staged, primals, tangents):
    val, point, *consts = primals
    _, _, *dconsts = tangents
    _, dval = jax.jvp(lambda *c: staged(point, c), tuple(consts), tuple(dconsts))
    return val, dval.astype(val.dtype)
