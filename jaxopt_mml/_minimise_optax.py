"""Any optax optimiser, run inside the jit-compiled driver loop (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ._driver import make_progress
from ._minimise_common import MinimiseResult, gradient_converged, run_minimiser
from ._static import StaticValue
from ._tree import PyTree, suggest_options, tree_sub

__all__ = ["optax_minimise"]


class _OptaxState(NamedTuple):
    x: PyTree
    opt_state: Any
    f: jax.Array
    g: PyTree
    n_fev: jax.Array


def _tree_get(state, key):
    try:
        return optax.tree.get(state, key)
    except (KeyError, ValueError):
        return None


def _stores_last(state) -> bool:
    """Whether the one line search in ``state`` (the state node with ``value`` and ``grad``) is
    the optimiser's last transformation: nothing that follows it in the chain holds a state.

    Only then is its stored value the objective's at the new point: a transformation chained
    after it (``optax.chain(optax.lbfgs(), optax.scale(0.5))``, a clip, ``MultiSteps``, which
    applies the update every k calls only) changes the update after the search evaluated f, so
    that the stored value and gradient belong to another point. (A stateless transformation
    has an empty state, which counts.)"""

    def is_node(n):
        if isinstance(n, tuple) and len(n) == 0:  # optax.EmptyState(), ()
            return True
        fields = getattr(n, "_fields", ())
        return "value" in fields and "grad" in fields

    nodes = jax.tree.leaves(state, is_leaf=is_node)
    return bool(nodes) and "value" in getattr(nodes[-1], "_fields", ())


def _init(fun, x0, rtol, atol, dyn, options):
    opt = optax.with_extra_args_support(options["optimizer"].value)
    f0, g0 = fun.value_and_grad(x0)
    opt_state0 = opt.init(x0)
    # Optimisers with a line search (optax.lbfgs, scale_by_zoom_linesearch...) store the value
    # and gradient at the new point in their state: reuse them instead of evaluating again.
    # scale_by_backtracking_linesearch stores the gradient only with store_grad=True (its
    # default stores the value alone): then evaluate both (a gradient costs the value anyway).
    # Only where the line search is the last transformation: one chained after it changes the
    # step after the search evaluated f (optax.chain(optax.lbfgs(), optax.scale(0.5)) reported
    # the value and gradient of the search's point, not of x: SUCCESS with max|grad f| = 1.55e-8
    # above atol = 1.49e-8, its reported 1.34e-8 that of another point).
    stores_value = (
        _tree_get(opt_state0, "value") is not None
        and _tree_get(opt_state0, "grad") is not None
        and _stores_last(opt_state0)
    )
    counts_ls = _tree_get(opt_state0, "num_linesearch_steps") is not None
    value_and_grad = optax.value_and_grad_from_state(fun.value) if stores_value else None
    state = _OptaxState(x0, opt_state0, f0, g0, jnp.asarray(1, jnp.int32))
    progress = make_progress(x0, f0, converged=gradient_converged(g0, atol))

    def step(state: _OptaxState):
        x, opt_state, f, g, n_fev = state
        updates, opt_state = opt.update(g, opt_state, x, value=f, grad=g, value_fn=fun.value)
        x_new = optax.apply_updates(x, updates)
        if stores_value:
            f_new, g_new = value_and_grad(x_new, state=opt_state)
            # value_and_grad_from_state evaluates f again where the stored value is not finite
            # (a line search whose every trial was NaN or inf stores that value, with step 0)
            stored = jnp.asarray(_tree_get(opt_state, "value"))
            n_fev = n_fev + (~jnp.isfinite(stored)).astype(jnp.int32)
        else:
            f_new, g_new = fun.value_and_grad(x_new)
            n_fev = n_fev + 1
        if counts_ls:
            n_fev = n_fev + jnp.asarray(_tree_get(opt_state, "num_linesearch_steps"), jnp.int32)
        progress = make_progress(
            x_new,
            f_new,
            dx=tree_sub(x_new, x),
            df=f_new - f,
            converged=gradient_converged(g_new, atol),
        )
        return _OptaxState(x_new, opt_state, f_new, g_new, n_fev), progress

    return state, progress, step


@suggest_options
def optax_minimise(
    f: Callable[..., jax.Array],
    x0: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    args: tuple = (),
    max_iter: int = 10_000,
    rtol: float | None = None,
    atol: float | None = None,
    history: bool | int = False,
    verbose: bool = False,
    objective_limit: float | None = -1e20,
    has_aux: bool = False,
) -> MinimiseResult:
    r"""Minimise ``f(x, *args)`` with any optax optimiser, inside one jit-compiled loop.

    Each iteration is ``updates, state = optimizer.update(grad, state, x, value=f, grad=grad,
    value_fn=...)`` followed by ``x = optax.apply_updates(x, updates)``, so optimisers that need the
    objective itself work too: ``optax.lbfgs()`` and anything chained with
    ``optax.scale_by_zoom_linesearch`` or ``scale_by_backtracking_linesearch`` (with or without
    ``store_grad``). Where the optimiser stores both the value and the gradient at the new point in
    its state (a line search that is its last transformation), they are reused
    (``optax.value_and_grad_from_state``) instead of evaluated again; after a transformation
    chained behind the search they are not the new point's, and f is evaluated. Parameters keep their pytree
    structure, so optax masks and ``multi_transform`` labels apply as usual.

    The optimiser is part of the compilation key, compared by what it is made of:
    ``optax.adam(1e-2)`` made again for each solve reuses the compilation; another learning rate
    or optimiser compiles anew.

    Convergence: ``max|grad f| <= atol`` (absolute, as scipy's ``gtol``; ``rtol`` is not used: a
    gradient has no relative scale free of constant offsets in ``f``). There is no Cauchy test: a
    small learning rate makes small steps far from a minimum. Expect many iterations from first-order optimisers such as
    ``optax.adam``: raise ``max_iter`` or loosen the tolerances; ``optax.lbfgs()`` converges like
    :func:`lbfgs`.

    Args:
        f: the objective, a scalar function ``f(x, *args)``; ``x`` may be a pytree.
        x0: the starting point (array or pytree of arrays).
        optimizer: an optax ``GradientTransformation`` (with or without extra-args support).
        args: extra arguments of ``f``; the minimiser is differentiable with respect to them.
        max_iter: the most iterations.
        rtol, atol: tolerances (default ``sqrt(eps)`` of the dtype); only ``atol`` is used.
        history: record ``x`` and ``f`` per iteration (``True``: the first 1000; an int: that many).
        verbose: print progress each iteration.
        objective_limit: stop with ``Status.UNBOUNDED`` at the first iterate where ``f`` falls
            below this (default ``-1e20``, MATLAB's ``ObjectiveLimit``): a problem unbounded
            below (a sign error, a missing constraint or regulariser) is then named as such.
            ``None`` switches the test off. Traced: a new value does not recompile.
        has_aux: ``f`` returns ``(value, aux)`` (jaxopt's ``has_aux``: metrics, predictions);
            ``aux`` is evaluated at the solution and returned in the result's ``aux`` field
            (differentiable, through ``x``).

    Returns:
        :class:`MinimiseResult`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml, optax
        >>> rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        >>> res = mml.optax_minimise(rosen, jnp.array([-1.2, 1.0]), optax.lbfgs())
        >>> print(res.x.round(4), res.success)
        [1. 1.] True

    References:
        DeepMind et al., *The DeepMind JAX Ecosystem* (optax), 2020.
    """
    if not isinstance(
        optimizer, optax.GradientTransformation | optax.GradientTransformationExtraArgs
    ):
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(
                f"optimizer must be an optax GradientTransformation, got {type(optimizer).__name__}"
            )
    return run_minimiser(
        _init,
        f,
        x0,
        args,
        name="optax_minimise",
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        history=history,
        verbose=verbose,
        objective_limit=objective_limit,
        has_aux=has_aux,
        cauchy=False,
        flat=False,
        # An optimiser made again (optax.adam(0.1) in a loop) reuses the compilation.
        static={"optimizer": StaticValue(optimizer)},
    )
