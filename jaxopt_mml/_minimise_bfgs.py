"""Quasi-Newton minimisers: BFGS (dense inverse Hessian) and L-BFGS (fixed-size memory) (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._driver import make_progress
from ._linesearch import WOLFE_DONE, WolfeSearch, wolfe_advance, wolfe_run, wolfe_start
from ._minimise_common import MinimiseResult, gradient_converged, run_minimiser
from ._status import Status
from ._tree import PyTree, check_positive_int, tree_where

__all__ = ["bfgs", "lbfgs"]


class _QNState(NamedTuple):
    x: jax.Array  # the current iterate (the base point of the line search)
    f: jax.Array
    g: jax.Array
    memory: Any  # the inverse-Hessian model: a matrix (BFGS) or (S, Y, rho) buffers (L-BFGS)
    fresh: jax.Array  # the model is the identity (just started or reset)
    # Folded line search only (else None): the direction from x, the slope g'p along it and the
    # search along it, one evaluation per driver step.
    p: jax.Array | None
    dphi0: jax.Array | None
    search: WolfeSearch | None
    stopped: jax.Array | None  # inner line search only: converged or failed (vmap keeps stepping)
    n_iter: jax.Array  # iterations (line searches ended); folded, driver steps are evaluations
    n_fev: jax.Array


# --- the two inverse-Hessian models -------------------------------------------------------------


def _bfgs_memory(n, dtype, options):
    return jnp.eye(n, dtype=dtype)


def _bfgs_apply(memory, g):
    return memory @ g


def _bfgs_update(memory, s, y, rho, yy, fresh, ok):
    """H+ = (I - rho s y') H (I - rho y s') + rho s s' (N&W eq. 6.17), H scaled first if fresh."""
    h = jnp.where(fresh, jnp.eye(s.size, dtype=s.dtype) / (rho * yy), memory)
    hy = h @ y
    yhy = jnp.vdot(y, hy)
    updated = (
        h - rho * (jnp.outer(s, hy) + jnp.outer(hy, s)) + (rho * rho * yhy + rho) * jnp.outer(s, s)
    )
    return jnp.where(ok, updated, memory)


def _lbfgs_memory(n, dtype, options):
    m = options["memory"]
    return (
        jnp.zeros((m, n), dtype),
        jnp.zeros((m, n), dtype),
        jnp.zeros((m,), dtype),
        jnp.asarray(0, jnp.int32),
        jnp.asarray(1.0, dtype),
    )


def _lbfgs_apply(memory, g):
    """The two-loop recursion (N&W Alg. 7.4) over circular buffers, newest pair first.

    Slot ``k - 1 (mod m)`` holds the newest pair; unused or forgotten slots have ``rho = 0`` and
    drop out of both loops.
    """
    s_buf, y_buf, rho, k, gamma = memory
    m = rho.shape[0]
    newest_first = (k - 1 - jnp.arange(m)) % m

    def backward(q, i):
        a = rho[i] * jnp.vdot(s_buf[i], q)
        return q - a * y_buf[i], a

    q, alphas = lax.scan(backward, g, newest_first)

    def forward(r, inp):
        i, a = inp
        b = rho[i] * jnp.vdot(y_buf[i], r)
        return r + (a - b) * s_buf[i], None

    # The initial matrix gamma I, gamma = s'y / y'y of the newest pair (N&W eq. 7.20).
    r, _ = lax.scan(forward, gamma * q, (newest_first[::-1], alphas[::-1]))
    return r


def _lbfgs_update(memory, s, y, rho, yy, fresh, ok):
    """Write the pair into the next slot (in place); a fresh model first forgets all pairs."""
    s_buf, y_buf, rho_buf, k, gamma = memory
    rho_buf = jnp.where(fresh, 0.0, rho_buf)
    s_buf = s_buf.at[k].set(jnp.where(ok, s, s_buf[k]))
    y_buf = y_buf.at[k].set(jnp.where(ok, y, y_buf[k]))
    rho_buf = rho_buf.at[k].set(jnp.where(ok, rho, rho_buf[k]))
    k = jnp.where(ok, (k + 1) % rho_buf.shape[0], k)
    gamma = jnp.where(ok, 1.0 / (rho * yy), gamma)
    return s_buf, y_buf, rho_buf, k, gamma


_MODELS = {
    "bfgs": (_bfgs_memory, _bfgs_apply, _bfgs_update),
    "lbfgs": (_lbfgs_memory, _lbfgs_apply, _lbfgs_update),
}


# --- the shared step ----------------------------------------------------------------------------

# Up to this many unknowns the line search is folded into the driver's loop (one evaluation per
# driver step); above, it runs in an inner loop. Tiny problems are the ones solved in large
# batches, where an inner loop runs until the slowest element's search ends (folded: 1000 starts
# of 2-D Rosenbrock about 10% faster). A single problem does better with the inner loop (the
# folded step computes the model update at every evaluation: n = 8 about 15% slower folded).
FOLD_MAX = 4


def _direction(apply_inverse, memory, g, gg, fresh):
    """The quasi-Newton direction ``-H g``, or ``-g`` for a fresh model or an uphill ``-H g``.

    Returns ``(p, g'p, first trial step, fresh)``: a fresh model's first trial step has length
    about 1 (scipy's choice); a model that rounding made indefinite is reset (fresh).
    """
    p_model = -apply_inverse(memory, g)
    use_model = ~fresh & (jnp.vdot(g, p_model) < 0)
    p = jnp.where(use_model, p_model, -g)
    dphi0 = jnp.where(use_model, jnp.vdot(g, p_model), -gg)
    init_step = jnp.where(use_model, 1.0, jnp.minimum(1.0, 1.0 / jnp.sqrt(gg)))
    return p, dphi0, init_step.astype(g.dtype), ~use_model


def _init(fun, x0, rtol, atol, dyn, options):
    make_memory, apply_inverse, update = _MODELS[options["model"]]
    max_ls, max_iter = options["max_linesearch"], options["max_iter"]
    fold = x0.size <= FOLD_MAX
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    f0, g0 = fun.value_and_grad(x0)
    memory0 = make_memory(x0.size, dtype, options)
    state = _QNState(
        x=x0,
        f=f0,
        g=g0,
        memory=memory0,
        fresh=jnp.asarray(True),
        p=None,
        dphi0=None,
        search=None,
        stopped=jnp.asarray(False),
        n_iter=jnp.asarray(0, jnp.int32),
        n_fev=jnp.asarray(1, jnp.int32),
    )
    if fold:
        p0, dphi0, step0, fresh0 = _direction(
            apply_inverse, memory0, g0, jnp.vdot(g0, g0), state.fresh
        )
        search0 = wolfe_start(f0, dphi0, g0, init_step=step0)
        state = state._replace(fresh=fresh0, p=p0, dphi0=dphi0, search=search0, stopped=None)
    # The driver's non-finite test is off (see run_minimiser): a non-finite start is reported here,
    # and the line search rejects non-finite trial points, so every accepted iterate is finite.
    finite0 = jnp.all(jnp.isfinite(x0)) & jnp.isfinite(f0) & jnp.all(jnp.isfinite(g0))
    progress = make_progress(
        x0,
        f0,
        converged=gradient_converged(g0, f0, f0, rtol, atol) & finite0,
        failure=jnp.where(finite0, int(Status.RUNNING), int(Status.NONFINITE)),
    )

    def phi(x, p):
        def along(alpha):
            x_t = x + alpha * p
            f_t, g_t = fun.value_and_grad(x_t)
            # 0 * x_t makes the slope NaN at a non-finite trial point, which the search rejects.
            return f_t, jnp.sum(g_t * p + 0.0 * x_t), g_t

        return along

    def step(state: _QNState):
        """Advance the line search; where it has ended, take the step and start the next search.

        Folded (small problems): one evaluation of ``f`` and its gradient per driver step, so
        that under ``vmap`` no element waits in an inner loop for another's line search; the
        step, the model update and the next direction are computed every time and kept where
        the search has ended. Otherwise the search runs to its end in an inner loop.
        """
        x, f, g, memory, fresh, p, dphi0, search, stopped, n_iter, n_fev = state
        if fold:
            # A search starts only along a descent direction (g'p < 0: g = 0 has converged).
            search = wolfe_advance(search, *phi(x, p)(search.trial), f, dphi0, c1=1e-4, c2=0.9)
            ended = (search.phase == WOLFE_DONE) | (search.n >= max_ls)
            n_fev = n_fev + 1
        else:
            p, dphi0, init_step, fresh = _direction(apply_inverse, memory, g, jnp.vdot(g, g), fresh)
            search = wolfe_start(f, dphi0, g, init_step=init_step, active=~stopped)
            search = wolfe_run(phi(x, p), search, f, dphi0, c1=1e-4, c2=0.9, max_steps=max_ls)
            ended = jnp.asarray(True)
            n_fev = n_fev + search.n
        a, f_new, _, g_new = search.lo
        success = a > 0
        s = a * p
        x_new = x + s
        y = g_new - g
        g_next = jnp.where(success, g_new, g)
        sy, yy, gg_next = jnp.vdot(s, y), jnp.vdot(y, y), jnp.vdot(g_next, g_next)
        g_max = jnp.max(jnp.abs(g_new))
        step_excess = jnp.max(jnp.abs(s) - atol - rtol * jnp.abs(x_new))
        predicted_excess = jnp.max(jnp.abs(p) - atol - rtol * jnp.abs(x))
        curv_ok = sy > eps * yy  # the pair keeps the model positive definite (as L-BFGS-B)
        rho = 1.0 / jnp.where(curv_ok, sy, 1.0)
        new_memory = update(
            memory, s, y, rho, jnp.where(curv_ok, yy, 1.0), fresh, ended & success & curv_ok
        )
        # Converged: the gradient test, or the Cauchy test (a step small in every component and
        # a change of f within the tolerances; the driver's own test is off, see bfgs).
        converged = success & (
            (g_max <= atol + rtol * jnp.minimum(jnp.abs(f_new), jnp.abs(f0)))
            | ((step_excess <= 0) & (jnp.abs(f_new - f) <= atol + rtol * jnp.abs(f_new)))
        )
        # A failed search with a model of past steps is retried along -g (a fresh model); a
        # failed search along -g is a failure, unless the whole proposed step is within the step
        # tolerance (then rounding, not the model, stopped the search).
        gave_up = ~success & fresh
        converged = ended & (converged | (gave_up & (predicted_excess <= 0)))
        n_iter = n_iter + ended.astype(jnp.int32)
        failure = jnp.where(
            gave_up & (predicted_excess > 0),
            int(Status.LINESEARCH_FAILED),
            jnp.where(n_iter >= max_iter, int(Status.MAX_ITER), int(Status.RUNNING)),
        )
        failure = jnp.where(ended & ~converged, failure, int(Status.RUNNING))
        # The next search: from x_new after a success; from x along -g after a failure. With an
        # inner loop, none once stopped (a vmapped loop keeps stepping stopped elements, which
        # must not keep the inner loop running); folded, the driver freezes them.
        x_next = jnp.where(success, x_new, x)
        f_next = jnp.where(success, f_new, f)
        fresh_next = ~success | (fresh & ~curv_ok)
        stopped = converged | (failure != int(Status.RUNNING))
        new_state = _QNState(
            x=x_next,
            f=f_next,
            g=g_next,
            memory=new_memory,
            fresh=fresh_next,
            p=None,
            dphi0=None,
            search=None,
            stopped=stopped,
            n_iter=n_iter,
            n_fev=n_fev,
        )
        if fold:
            p_next, dphi_next, step_next, fresh_next = _direction(
                apply_inverse, new_memory, g_next, gg_next, fresh_next
            )
            restart = wolfe_start(f_next, dphi_next, g_next, init_step=step_next)
            new_state = _QNState(
                x=jnp.where(ended, x_next, x),
                f=jnp.where(ended, f_next, f),
                g=jnp.where(ended, g_next, g),
                memory=new_memory,
                fresh=jnp.where(ended, fresh_next, fresh),
                p=jnp.where(ended, p_next, p),
                dphi0=jnp.where(ended, dphi_next, dphi0),
                search=tree_where(ended, restart, search),
                stopped=None,
                n_iter=n_iter,
                n_fev=n_fev,
            )
        return new_state, make_progress(
            new_state.x, new_state.f, converged=converged, failure=failure
        )

    return state, progress, step


def _check_common(max_linesearch):
    return check_positive_int("max_linesearch", max_linesearch)


def bfgs(
    f: Callable[..., jax.Array],
    x0: PyTree,
    *,
    args: tuple = (),
    max_iter: int = 1000,
    rtol: float | None = None,
    atol: float | None = None,
    max_linesearch: int = 30,
    history: bool | int = False,
    verbose: bool = False,
) -> MinimiseResult:
    r"""Minimise ``f(x, *args)`` by BFGS with a strong-Wolfe line search.

    The quasi-Newton method keeps a dense approximation :math:`H_k` of the inverse Hessian and
    steps along :math:`p_k = -H_k \nabla f(x_k)` with a step :math:`\alpha_k` meeting the strong
    Wolfe conditions (bracketing and zoom, :math:`c_1 = 10^{-4}`, :math:`c_2 = 0.9`). With
    :math:`s_k = \alpha_k p_k`, :math:`y_k = \nabla f_{k+1} - \nabla f_k`, :math:`\rho_k = 1 /
    y_k^\top s_k`:

    .. math:: H_{k+1} = (I - \rho_k s_k y_k^\top) H_k (I - \rho_k y_k s_k^\top)
              + \rho_k s_k s_k^\top,

    with :math:`H_0 = I` scaled by :math:`y^\top s / y^\top y` before the first update. Pairs
    with :math:`y^\top s \le 0` (possible only if the line search stopped short) are skipped.
    Convergence: ``max|grad f| <= atol + rtol min(|f|, |f(x0)|)``, or the Cauchy test (a step
    small in every component and a change of ``f`` within the tolerances). Memory is
    :math:`O(n^2)`: use :func:`lbfgs` for more than a few thousand parameters.

    For up to 4 unknowns the line search is folded into the iterations of the jit-compiled
    loop: each turn evaluates ``f`` and its gradient once, and the quasi-Newton step is taken
    on the turn where the search ends. Under ``jax.vmap`` the loop then runs for as many turns
    as the slowest element needs evaluations, instead of waiting at every iteration for the
    slowest element's line search. ``n_iter`` counts iterations (line searches) either way.

    Args:
        f: the objective, a scalar function ``f(x, *args)``; ``x`` may be a pytree.
        x0: the starting point (array or pytree of arrays; ints become floats).
        args: extra arguments of ``f``; the minimiser is differentiable with respect to them.
        max_iter: the most iterations.
        rtol, atol: tolerances (default ``sqrt(eps)`` of the dtype).
        max_linesearch: the most function evaluations per line search.
        history: record ``x`` and ``f`` per iteration (``True``: the first 1000; an int: that many).
        verbose: print progress each iteration (``jax.debug.print``).

    Returns:
        :class:`MinimiseResult`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        >>> res = mml.bfgs(rosen, jnp.array([-1.2, 1.0]))
        >>> res.x, res.success      # ~[1, 1], True

    References:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 6.1, 3.5, 3.6.
    """
    return run_minimiser(
        _init,
        f,
        x0,
        args,
        name="bfgs",
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        history=history,
        verbose=verbose,
        cauchy=False,  # the step applies the Cauchy test itself
        self_counting=True,
        check_finite=False,  # the step reports a non-finite start; trials are checked
        static={"model": "bfgs", "max_linesearch": _check_common(max_linesearch)},
    )


def lbfgs(
    f: Callable[..., jax.Array],
    x0: PyTree,
    *,
    args: tuple = (),
    memory: int = 10,
    max_iter: int = 2000,
    rtol: float | None = None,
    atol: float | None = None,
    max_linesearch: int = 30,
    history: bool | int = False,
    verbose: bool = False,
) -> MinimiseResult:
    r"""Minimise ``f(x, *args)`` by limited-memory BFGS with a strong-Wolfe line search.

    As :func:`bfgs`, but the inverse Hessian is never formed: the product :math:`H_k g` comes from
    the last ``memory`` pairs :math:`(s_i, y_i)` by the two-loop recursion, with the initial
    matrix :math:`\gamma_k I`, :math:`\gamma_k = s_{k-1}^\top y_{k-1} / y_{k-1}^\top y_{k-1}`.
    The pairs live in fixed-size buffers (``memory`` x n), so the cost per iteration is
    :math:`O(\text{memory}\cdot n)` and the shapes never change under ``jit``.

    Args:
        f, x0, args, max_iter, rtol, atol, max_linesearch, history, verbose: as :func:`bfgs`.
        memory: the number of correction pairs kept.

    Returns:
        :class:`MinimiseResult`.

    Example:
        >>> res = mml.lbfgs(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(1000))

    References:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed., Algorithms 7.4 and 7.5; Liu & Nocedal,
        Math. Programming 45 (1989) 503-528.
    """
    return run_minimiser(
        _init,
        f,
        x0,
        args,
        name="lbfgs",
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        history=history,
        verbose=verbose,
        cauchy=False,  # the step applies the Cauchy test itself
        self_counting=True,
        check_finite=False,  # the step reports a non-finite start; trials are checked
        static={
            "model": "lbfgs",
            "memory": check_positive_int("memory", memory),
            "max_linesearch": _check_common(max_linesearch),
        },
    )
