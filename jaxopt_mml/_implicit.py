"""Implicit differentiation of solutions through ``lax.custom_root`` (private core).

A solver's answer ``x*(theta)`` satisfies an optimality condition ``F(x*, theta) = 0`` (a root of
``f``, a zero gradient, the KKT conditions). By the implicit function theorem

    dx*/dtheta = -[dF/dx]^{-1} dF/dtheta,

so derivatives come from one linear solve at the solution, never from unrolling the iterations.
``lax.custom_root`` applies this rule to everything ``F`` closes over (the ``args``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = ["dense_tangent_solve", "solve_with_implicit_grad"]


def dense_tangent_solve(g: Callable, y: Any) -> Any:
    """Solve the linear system ``g(v) = y`` by materialising ``g``'s matrix (pytrees allowed).

    Suited to the small and medium systems (up to a few thousand unknowns) of this library.
    """
    flat_y, unravel = ravel_pytree(y)

    def g_flat(v):
        return ravel_pytree(g(unravel(v)))[0]

    matrix = jax.jacfwd(g_flat)(flat_y)
    return unravel(jnp.linalg.solve(matrix, flat_y))


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
    # custom_root's JVP rule mishandles integer auxiliary outputs (it expects float0 tangents),
    # so integer and boolean leaves of aux travel as floats and are cast back afterwards.
    dtypes = {}

    def solve_float_aux(_f, guess):
        x, aux = solve(guess)
        leaves, treedef = jax.tree.flatten(aux)
        dtypes["aux"] = (treedef, [jnp.result_type(leaf) for leaf in leaves])
        return x, jax.tree.unflatten(treedef, [_to_float(leaf) for leaf in leaves])

    x, aux = lax.custom_root(optimality, x0, solve_float_aux, tangent_solve, has_aux=True)
    treedef, leaf_dtypes = dtypes["aux"]
    leaves = [leaf.astype(dt) for leaf, dt in zip(jax.tree.leaves(aux), leaf_dtypes, strict=True)]
    return x, jax.tree.unflatten(treedef, leaves)


def _to_float(leaf):
    leaf = jnp.asarray(leaf)
    if jnp.issubdtype(leaf.dtype, jnp.inexact):
        return leaf
    return leaf.astype(jnp.result_type(float))
