"""Batching a solver one problem at a time under ``jax.vmap`` (private core).

``jax.vmap`` of a ``lax.while_loop`` runs until the slowest element stops, and a loop nested in
it does so at every turn of the outer one: a solver with nested loops (the augmented
Lagrangian's outer iterations, its projected-Newton inner solves, their line searches) pays the
slowest problem's count at each level, multiplied. On a CPU, where one problem's step is
already a few short vector kernels, running the problems one after another in a ``lax.map``
is then faster: 1000 bounded portfolios (``benchmarks/tasks/constrained.py``) took 0.19 s that
way and 1.9 s vectorised in chunks of 250 (2-core CPU; docs/constrained_benchmark.md). On a GPU
the vectorised loop stays: there every kernel launch costs the same for one problem or
thousands.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.extend as jex

from ._backend import wide_backend

__all__ = ["sequential_under_vmap"]


def sequential_under_vmap(fun: Callable) -> Callable:
    """``fun`` as is, except that ``jax.vmap`` of it runs it over the batch in a ``lax.map``,
    one problem after another (on a CPU; unchanged on a GPU or TPU).

    ``fun`` may close over traced values (the user's ``args``, batched or not): they are traced
    into its jaxpr and passed to ``jax.custom_batching.sequential_vmap`` as arguments, since it
    cannot see batched values in a closure. Only for functions that are not differentiated
    themselves (a solver inside the implicit-differentiation rule of ``_implicit``, whose
    derivatives come from the optimality conditions): ``custom_vmap`` has no reverse mode, and
    its forward mode under ``vmap`` fails
    (``jax.jacfwd`` batches the tangents alone, and the sequential map then has nothing to map).
    """
    if wide_backend():
        return fun

    def wrapped(*args):
        closed, shape = jax.make_jaxpr(fun, return_shape=True)(*args)

        def run(consts, *inputs):
            call = jex.core.jaxpr_as_fun(jex.core.ClosedJaxpr(closed.jaxpr, consts))
            return call(*jax.tree.leaves(inputs))

        flat = jax.custom_batching.sequential_vmap(run)(list(closed.consts), *args)
        return jax.tree.unflatten(jax.tree.structure(shape), flat)

    return wrapped
