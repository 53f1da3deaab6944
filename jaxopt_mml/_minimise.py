"""Unconstrained minimisation: gradient descent, Newton, BFGS, L-BFGS and any optax optimiser.

Every minimiser takes ``f(x, *args) -> scalar`` and a starting point ``x0`` (an array or a pytree
of arrays) and returns a :class:`MinimiseResult` (``x``, ``value``, ``grad_norm``, ``n_iter``,
``n_fev``, ``success``, ``status``, ``history``), with ``x`` in the structure of ``x0``.

* jit: each call is compiled once per ``f``, shapes and static options, then cached; float options
  (tolerances, a fixed step size) are traced, so new values do not recompile (gradient descent's
  ``momentum`` is static: a concrete float, one compilation per value). Pass the same ``f``
  object (not a fresh ``lambda`` each call) to reuse the compilation.
* vmap: ``jax.vmap(lambda x0: mml.bfgs(f, x0))(starts)`` (or over ``args``) solves a batch with
  per-element ``status`` and ``n_iter``. The batched while loop runs until the *slowest* element
  stops; finished elements are frozen, so the results are exact, but the wall time is that of the
  worst start. Bound it with ``max_iter`` suited to the problem.
* grad: the minimiser is differentiable with respect to ``args`` by implicit differentiation of
  ``grad f(x*, args) = 0``: ``dx*/dargs = -H^{-1} d(grad f)/dargs``, one linear solve at the
  solution (the Hessian materialised from n Hessian-vector products), never by unrolling the
  iterations. It is taken at the point returned: where ``success`` is False it means nothing.
* Failure is data: ``status`` says why a run stopped (``Status.NONFINITE`` for NaN in ``x0``,
  ``MAX_ITER``, ``LINESEARCH_FAILED``...); a non-scalar ``f`` raises ``ValueError`` at trace time.
"""

from ._minimise_bfgs import bfgs, lbfgs
from ._minimise_common import MinimiseResult
from ._minimise_gd import gradient_descent
from ._minimise_newton import newton_minimise
from ._minimise_optax import optax_minimise

__all__ = [
    "MinimiseResult",
    "bfgs",
    "gradient_descent",
    "lbfgs",
    "newton_minimise",
    "optax_minimise",
]
