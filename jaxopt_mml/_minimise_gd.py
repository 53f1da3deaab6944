"""Gradient descent: fixed step, optax schedule or Armijo backtracking; momentum (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._driver import make_progress
from ._linesearch import backtracking
from ._minimise_common import (
    MinimiseResult,
    gradient_converged,
    relative_gradient_small,
    run_minimiser,
    scaled_gradient,
)
from ._static import static_function
from ._status import Status
from ._tree import (
    PyTree,
    check_bool,
    check_positive_int,
    is_concrete,
    is_real_scalar,
    suggest_options,
)

__all__ = ["gradient_descent"]

_LINE_SEARCHES = ("backtracking", "armijo")


class _GDState(NamedTuple):
    x: jax.Array
    f: jax.Array
    g: jax.Array
    velocity: jax.Array
    count: jax.Array  # steps taken (the schedule's argument)
    alpha: jax.Array  # the last accepted line-search step (a schedule: its largest value yet)
    n_fev: jax.Array


def _init(fun, x0, rtol, atol, dyn, options):
    mode, schedule = options["mode"], options["schedule"]
    momentum, nesterov, max_ls = options["momentum"], options["nesterov"], options["max_ls"]
    f0, g0 = fun.value_and_grad(x0)
    dtype = x0.dtype
    state = _GDState(
        x0,
        f0,
        g0,
        jnp.zeros_like(x0),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(0.0 if mode == "schedule" else 1.0, dtype),
        jnp.asarray(1, jnp.int32),
    )
    invalid = jnp.asarray(False)
    if mode == "fixed":
        # A traced step size that is not a finite positive number (the eager call raises): a
        # negative one ascended until overflow (NONFINITE), 0 ran to MAX_ITER without moving.
        step_size = dyn["step_size"]
        invalid = ~((step_size > 0) & jnp.isfinite(step_size))
    progress = make_progress(
        x0,
        f0,
        converged=gradient_converged(g0, atol),
        failure=jnp.where(invalid, int(Status.INVALID_INPUT), int(Status.RUNNING)),
    )

    def step(state: _GDState):
        x, f, g, v, count, alpha_prev, n_fev = state
        # (a zero velocity, at the start or after a reset, makes the direction the gradient's)
        along_g = jnp.all(v == 0) if momentum else jnp.asarray(True)
        # Momentum in optax's form: v <- mu v + g; direction g + mu v (Nesterov) or v.
        v = momentum * v + g
        d = g + momentum * v if nesterov else v
        failure = jnp.asarray(int(Status.RUNNING), jnp.int32)
        if mode == "fixed":
            alpha = dyn["step_size"]
            n_ls = 0
        elif mode == "schedule":
            # A schedule's value that is not finite, or negative beyond the rounding of its
            # largest value yet, is a step size out of range: stop at x with INVALID_INPUT, as
            # for a fixed step. It stepped instead: a schedule going negative ascended to x ~
            # 1e67 (MAX_ITER, float64) or overflow (NONFINITE, float32), a NaN one ended
            # NONFINITE, blaming f. The rounding is the schedule's own dtype's: optax computes
            # in float32, and compiled, optax.linear_schedule(0.04, 0.0, 30) gives -4.7e-9 at
            # its end (x / 30 as x * (1 / 30)), in a float64 run too.
            raw = jnp.asarray(schedule(count))
            if raw.shape != () or not jnp.issubdtype(raw.dtype, jnp.number):
                # (a vector step met "while_loop body function carry input and carry output
                # must have equal types", naming no option)
                raise ValueError(
                    "step_size: a schedule must return a real scalar, got shape "
                    f"{raw.shape} and dtype {raw.dtype}"
                )
            own = raw.dtype if jnp.issubdtype(raw.dtype, jnp.inexact) else dtype
            eps = max(float(jnp.finfo(own).eps), float(jnp.finfo(dtype).eps))
            alpha = raw.astype(dtype)
            bad = ~jnp.isfinite(alpha) | (alpha < -16.0 * eps * alpha_prev)
            failure = jnp.where(bad, int(Status.INVALID_INPUT), failure)
            alpha_prev = jnp.where(bad, alpha_prev, jnp.maximum(alpha_prev, alpha))
            alpha = jnp.where(bad, 0.0, jnp.maximum(alpha, 0.0))
            n_ls = 0
        else:
            # Line search: keep only a momentum direction that descends.
            descends = jnp.vdot(g, d) > 0
            d = jnp.where(descends, d, g)
            v = jnp.where(descends, v, g)
            ls = backtracking(
                lambda a: fun.value(x - a * d),
                f,
                -jnp.vdot(g, d),
                init_step=2.0 * alpha_prev,
                max_steps=max_ls,
            )
            # A step that Armijo's test accepts with no decrease at all: its sufficient-decrease
            # margin rounded away next to f. If the step's predicted decrease is itself below
            # f's rounding, f cannot resolve the progress left (a large f, or offset, in
            # float32): PRECISION_LIMIT. Otherwise the trial (twice the last step) overshot
            # across a valley to an equal value: stay, and try a quarter of it next.
            flat = ls.success & (ls.value >= f)
            eps = jnp.finfo(dtype).eps
            resolvable = ls.step_size * jnp.vdot(g, d) > 4.0 * eps * jnp.abs(f)
            moved = ls.success & ~flat
            # A search that ran out of halvings while its last trial still moves x by a
            # decrease f can resolve: the first trial was too long, not the direction wrong (a
            # first trial 2|g| away, 1e10 for f = 1e9 |x - 1|^2 from 3, failed at x0). Stay,
            # and go on halving from there next iteration.
            short = ~ls.success & resolvable & jnp.any(x - ls.step_size * d != x)
            # A momentum direction along which the search ends so (it steps across a valley
            # whose walls the gradient does not point at) says nothing of the rounding along
            # the gradient: stay, drop the velocity and search along the gradient next, from
            # the same first trial (momentum 0.99 on an offset quadratic stopped so with
            # PRECISION_LIMIT at |g| = 2.5e-4, 8e5 ulps above the minimum).
            stuck = (flat & ~resolvable) | ~(ls.success | short)
            retry = stuck & descends & ~along_g
            v = jnp.where(retry, 0.0, v)
            alpha = jnp.where(moved, ls.step_size, 0.0)
            alpha_prev = jnp.where(
                moved,
                ls.step_size,
                jnp.where((flat | short) & ~retry, 0.25 * ls.step_size, alpha_prev),
            )
            failure = jnp.where(ls.success | short, failure, int(Status.LINESEARCH_FAILED))
            # Where the gradient is still large next to f (Dennis & Schnabel's scaled gradient
            # test, as the quasi-Newton Cauchy guard), rounding is not what stopped the search:
            # f is not differentiable there (a kink such as |x| or a max of pieces, where the
            # gradient never becomes small) or its gradient is wrong. LINESEARCH_FAILED, as
            # newton_minimise reports: PRECISION_LIMIT blamed the dtype and advised float64
            # (f = |x0| + |x1| ended so at its minimum with |g| = 1, a max of three planes
            # 0.37 above its minimum with |g| = 1).
            at_floor = relative_gradient_small(scaled_gradient(g, x), f, rtol)
            failure = jnp.where(
                flat & ~resolvable,
                jnp.where(at_floor, int(Status.PRECISION_LIMIT), int(Status.LINESEARCH_FAILED)),
                failure,
            )
            failure = jnp.where(retry, int(Status.RUNNING), failure)
            n_ls = ls.n_eval
        dx = -alpha * d
        x_new = x + dx
        f_new, g_new = fun.value_and_grad(x_new)
        new_state = _GDState(x_new, f_new, g_new, v, count + 1, alpha_prev, n_fev + 1 + n_ls)
        converged = gradient_converged(g_new, atol)
        progress = make_progress(
            x_new,
            f_new,
            dx=dx,
            df=f_new - f,
            converged=converged,
            failure=jnp.where(converged, int(Status.RUNNING), failure),
        )
        return new_state, progress

    return state, progress, step


@suggest_options
def gradient_descent(
    f: Callable[..., jax.Array],
    x0: PyTree,
    *,
    args: tuple = (),
    step_size: float | Callable | str = "backtracking",
    max_iter: int = 10_000,
    rtol: float | None = None,
    atol: float | None = None,
    momentum: float = 0.0,
    nesterov: bool = False,
    max_linesearch: int = 30,
    history: bool | int = False,
    verbose: bool = False,
    objective_limit: float | None = -1e20,
    has_aux: bool = False,
) -> MinimiseResult:
    r"""Minimise ``f(x, *args)`` by gradient descent, with optional (Nesterov) momentum.

    The update, in optax's momentum convention (``momentum = 0``: plain steepest descent):

    .. math:: v_{k+1} = \mu v_k + \nabla f(x_k), \qquad
              x_{k+1} = x_k - \alpha_k d_k, \quad
              d_k = v_{k+1} \ \text{(heavy ball)} \ \text{or}\ \nabla f(x_k) + \mu v_{k+1}
              \ \text{(Nesterov)}.

    The step :math:`\alpha_k` is

    * a float: fixed (stable for a quadratic when :math:`\alpha < 2/L`, :math:`L` the largest
      Hessian eigenvalue); traced, so a new value does not recompile (a traced value that is not
      finite and positive returns ``x0`` with ``Status.INVALID_INPUT``; the eager call raises);
    * a callable of the step count, e.g. an optax schedule (``optax.exponential_decay(...)``),
      part of the compilation key, compared by what it is made of (the same schedule made
      again reuses the compilation);
    * ``"backtracking"`` or ``"armijo"`` (default): the largest of :math:`2\alpha_{k-1},
      \alpha_{k-1}, \alpha_{k-1}/2, \dots` with sufficient decrease
      :math:`f(x - \alpha d) \le f(x) - 10^{-4}\alpha\, \nabla f^\top d`; a momentum direction that
      does not descend is replaced by the gradient, and one along which the search fails or
      ends at a step too short for ``f`` to resolve drops the velocity (``x`` stays, and the
      next search is along the gradient). A search that runs out of
      ``max_linesearch`` halvings while its last trial still moves ``x`` by a decrease that ``f``
      can resolve stays at ``x`` and goes on halving at the next iteration; one that does not
      is ``Status.LINESEARCH_FAILED``.

    Convergence: ``max|grad f| <= atol`` (absolute, as scipy's ``gtol``; ``rtol`` is not used: a
    gradient has no relative scale free of constant offsets in ``f``). There is no Cauchy test:
    small steps do not mean convergence here. With the line search, a step accepted with no
    decrease of ``f`` stops with ``Status.PRECISION_LIMIT`` where the step's predicted decrease is
    below ``f``'s rounding (otherwise the step is not taken and the next trial is shorter), and
    with ``Status.LINESEARCH_FAILED`` instead where the gradient is still large next to ``f``
    (:math:`\max_i |g_i| \max(|x_i|, 1) > \max(r_{tol}^{2/3}, \epsilon^{1/3}) |f|`): there
    ``f`` is not differentiable (a kink, as ``|x|``, whose gradient never becomes small) or its
    gradient is wrong, and rounding is not the cause. Gradient descent converges linearly, at a rate set by the condition number
    :math:`\kappa`: about :math:`\kappa \log(1/\text{tol})` iterations; prefer :func:`bfgs`,
    :func:`lbfgs` or :func:`newton_minimise` for ill-conditioned problems.

    Args:
        f: the objective, a scalar function ``f(x, *args)``; ``x`` may be a pytree.
        x0: the starting point (array or pytree of arrays).
        args: extra arguments of ``f``; the minimiser is differentiable with respect to them.
        step_size: a float, a schedule ``count -> step``, or ``"backtracking"``/``"armijo"``.
        max_iter: the most iterations.
        rtol, atol: tolerances (default ``sqrt(eps)`` of the dtype); only ``atol`` is used.
        momentum: the momentum coefficient :math:`\mu \in [0, 1)`; static (a concrete float:
            a new value compiles a new program), unlike the tolerances and the step size.
        nesterov: use Nesterov's look-ahead form of momentum.
        max_linesearch: the most backtracking steps per iteration.
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
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.gradient_descent(lambda x: jnp.sum((x - 1.0) ** 2), jnp.zeros(3), step_size=0.1)
        >>> print(res.x.round(3), res.success)   # to max|grad f| <= atol (sqrt(eps))
        [1. 1. 1.] True

    References:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed., sections 2.2 and 3.1; Polyak (1964);
        Nesterov (1983); Sutskever et al., ICML 2013 (momentum in this form).
    """
    dynamic = {}
    schedule = None
    if isinstance(step_size, str):
        if step_size not in _LINE_SEARCHES:
            raise ValueError(
                f"step_size must be a float, a schedule or one of {_LINE_SEARCHES}, "
                f"got {step_size!r}"
            )
        mode = "linesearch"
    elif callable(step_size):
        mode, schedule = "schedule", static_function(step_size)  # a rebound global recompiles
    elif is_real_scalar(step_size):
        # Traced where the user's jit traces it: then a value that is not finite and positive
        # stops the run at x0 with Status.INVALID_INPUT.
        if is_concrete(step_size) and not 0 < float(step_size) < np.inf:
            raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
        mode = "fixed"
        dynamic["step_size"] = step_size
    else:
        raise TypeError(
            f"step_size must be a float, a schedule or a line-search name, got {step_size!r}"
        )
    if is_real_scalar(momentum) and not is_concrete(momentum):
        raise ValueError(
            "momentum is static: pass a concrete float in [0, 1), not a traced value (each value "
            "compiles a program of its own)"
        )
    if not is_real_scalar(momentum) or not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be a float in [0, 1), got {momentum!r}")
    return run_minimiser(
        _init,
        f,
        x0,
        args,
        name="gradient_descent",
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        history=history,
        verbose=verbose,
        objective_limit=objective_limit,
        has_aux=has_aux,
        cauchy=False,
        dynamic=dynamic,
        static={
            "mode": mode,
            "schedule": schedule,
            "momentum": float(momentum),
            "nesterov": check_bool("nesterov", nesterov),
            "max_ls": check_positive_int("max_linesearch", max_linesearch),
        },
    )
