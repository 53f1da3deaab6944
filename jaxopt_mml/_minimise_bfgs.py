"""Quasi-Newton minimisers: BFGS (dense inverse Hessian) and L-BFGS (fixed-size memory) (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._driver import make_progress
from ._linesearch import zoom_wolfe
from ._minimise_common import (
    MinimiseResult,
    gradient_converged,
    relative_gradient_small,
    run_minimiser,
    scaled_gradient,
)
from ._status import Status
from ._tree import PyTree, check_positive_int, suggest_options, tree_step_small

__all__ = ["bfgs", "lbfgs"]


class _QNState(NamedTuple):
    x: jax.Array
    f: jax.Array
    g: jax.Array
    memory: Any  # the inverse-Hessian model: a matrix (BFGS) or (S, Y, rho) buffers (L-BFGS)
    fresh: jax.Array  # the model is the identity (just started or reset)
    # The first trial of the next steepest-descent search, where the last one found no positive
    # curvature along the step it took (0: none, the default first trial)
    carry: jax.Array
    n_fev: jax.Array
    done: jax.Array  # converged: a batched run keeps calling step on finished elements


# The line search's cap on the step alpha (times the first trial where that is above 1).
_MAX_STEP = 1e10


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


def _init(fun, x0, rtol, atol, dyn, options):
    make_memory, apply_inverse, update = _MODELS[options["model"]]
    max_ls = options["max_linesearch"]
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    f0, g0 = fun.value_and_grad(x0)
    memory0 = make_memory(x0.size, dtype, options)
    converged0 = gradient_converged(g0, atol)
    state = _QNState(
        x0,
        f0,
        g0,
        memory0,
        jnp.asarray(True),
        jnp.zeros((), dtype),
        jnp.asarray(1, jnp.int32),
        converged0,
    )
    progress = make_progress(x0, f0, converged=converged0)

    def step(state: _QNState):
        x, f, g, memory, fresh, carry, n_fev, done = state
        gg = jnp.vdot(g, g)
        p_model = -apply_inverse(memory, g)
        dphi_model = jnp.vdot(g, p_model)
        # A fresh model, or one that rounding made indefinite: steepest descent.
        use_model = ~fresh & (dphi_model < 0)
        fresh = ~use_model
        p = jnp.where(use_model, p_model, -g)
        dphi0 = jnp.where(use_model, dphi_model, -gg)
        # First step (identity model): a step of length about 1 (scipy's choice). After a
        # steepest-descent step that met no positive curvature (s'y <= eps y'y: f linear or
        # concave along it), the last step, which the search grew from there: restarting from
        # length 1 with the search's cap of 1e10 on alpha walked a linear f down by 1e10 |g|^2
        # per iteration, MAX_ITER far above objective_limit. The cap grows with the first trial.
        restart = jnp.minimum(1.0, 1.0 / jnp.sqrt(gg))
        init_step = jnp.where(fresh, jnp.where(carry > 0, carry, restart), 1.0)
        max_step = _MAX_STEP * jnp.maximum(init_step, 1.0)

        def phi(alpha):
            value, grad = fun.value_and_grad(x + alpha * p)
            return value, jnp.vdot(grad, p), grad

        ls = zoom_wolfe(
            phi,
            f,
            dphi0,
            g,
            init_step=init_step,
            max_step=max_step,
            c1=1e-4,
            c2=0.9,
            max_steps=max_ls,
            active=~done,
        )
        s = ls.step_size * p
        x_new = x + s
        g_new = ls.aux
        y = g_new - g
        sy, yy = jnp.vdot(s, y), jnp.vdot(y, y)
        curv_ok = sy > eps * yy  # the pair keeps the model positive definite (as L-BFGS-B)
        rho = 1.0 / jnp.where(curv_ok, sy, 1.0)
        new_memory = update(memory, s, y, rho, jnp.where(curv_ok, yy, 1.0), fresh, curv_ok)
        converged = gradient_converged(g_new, atol)
        # The step the Cauchy test judges: the one taken or the full one proposed, whichever is
        # longer (alpha p, alpha >= the first trial). A step that the search cut short below
        # the proposal (a kink, a wall, a wrong gradient) is not convergence, however small.
        reach = jnp.maximum(ls.step_size, init_step) * p
        # A failed search with a model of past steps is retried once along -g; a failed search
        # along -g is a failure, unless the whole proposed step is within the step tolerance
        # (then rounding, not the model, stopped the search).
        predicted_small = jnp.all(jnp.abs(p) <= atol + rtol * jnp.abs(x))
        failure = jnp.where(
            ls.success | ~fresh,
            int(Status.RUNNING),
            jnp.where(predicted_small, int(Status.RUNNING), int(Status.LINESEARCH_FAILED)),
        )
        converged = jnp.where(ls.success, converged, converged | (fresh & predicted_small))
        # The step the driver's Cauchy test judges (inf: none): not a failed search's, nor a
        # steepest-descent step's, whose first trial has length 1 (or 1 / |g|) and estimates no
        # distance to a minimum (an objective unbounded below, reset to steepest descent at
        # x ~ 1e154, took a unit step there and passed for converged). Nor a model step where
        # the scaled gradient is still large: a model that has not learnt a badly scaled
        # valley's curvature proposes ever shorter steps along it (`relative_gradient_small`).
        # `cauchy` is that test.
        trusted = (
            ls.success
            & use_model
            & relative_gradient_small(scaled_gradient(g_new, x_new), ls.value, rtol)
        )
        judged = jnp.where(trusted, reach, jnp.inf)
        cauchy = tree_step_small(x_new, judged, rtol, atol) & (
            jnp.abs(ls.value - f) <= atol + rtol * jnp.abs(ls.value)
        )
        # A step accepted by the search that rounds away (x unchanged) and meets neither test:
        # the iteration can go no further (a kink, or a gradient that f does not follow).
        stuck = ls.success & ~converged & ~cauchy & jnp.all(x_new == x)
        failure = jnp.where(stuck, int(Status.STAGNATED), failure)
        new_state = _QNState(
            x=x_new,
            f=ls.value,
            g=g_new,
            memory=new_memory,
            fresh=~ls.success | (fresh & ~curv_ok),
            carry=jnp.where(ls.success & fresh & ~curv_ok, ls.step_size, 0.0).astype(carry.dtype),
            n_fev=n_fev + ls.n_eval,
            # What the driver will stop on (its Cauchy test included): the element is finished.
            done=converged | (failure != int(Status.RUNNING)) | cauchy,
        )
        # On a failed search x_new = x (step 0) and the state keeps the old gradient.
        new_state = new_state._replace(
            g=jnp.where(ls.success, g_new, g), f=jnp.where(ls.success, ls.value, f)
        )
        progress = make_progress(
            x_new,
            new_state.f,
            dx=judged,
            df=jnp.where(ls.success, new_state.f - f, jnp.inf),
            converged=converged,
            failure=failure,
        )
        return new_state, progress

    return state, progress, step


def _check_common(max_linesearch):
    return check_positive_int("max_linesearch", max_linesearch)


@suggest_options
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
    objective_limit: float | None = -1e20,
    has_aux: bool = False,
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
    Convergence: ``max|grad f| <= atol`` (absolute, as scipy's ``gtol``), or the driver's Cauchy
    test: a step within ``atol + rtol |x|`` in every component and a change of ``f`` within
    ``atol + rtol |f|``. The step judged is :math:`\max(\alpha_k, \alpha_0) p_k`, the step taken
    or the full step proposed (:math:`\alpha_0 = 1` once the model has curvature) if that is
    longer: a step that the line search cut short is not convergence. The Cauchy test also asks
    for a small scaled gradient, :math:`\max_i |g_i| \max(|x_i|, 1) \le \max(r_{tol}^{2/3},
    \epsilon^{1/3}) |f|` (Dennis & Schnabel's relative gradient, without their floor of 1 on
    :math:`|f|`): in a badly scaled valley whose curvature the model has not learnt, its steps
    shrink long before the minimum (the Moré-Garbow-Hillstrom problems, ``docs/mgh.md``); where
    :math:`f^* = 0` the gradient test ends the run. Memory is :math:`O(n^2)`: use
    :func:`lbfgs` for more than a few thousand parameters.

    Args:
        f: the objective, a scalar function ``f(x, *args)``; ``x`` may be a pytree.
        x0: the starting point (array or pytree of arrays; ints become floats).
        args: extra arguments of ``f``; the minimiser is differentiable with respect to them.
        max_iter: the most iterations.
        rtol, atol: tolerances (default ``sqrt(eps)`` of the dtype).
        max_linesearch: the most function evaluations per line search.
        history: record ``x`` and ``f`` per iteration (``True``: the first 1000; an int: that many).
        verbose: print progress each iteration (``jax.debug.print``).
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
        >>> rosen = lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        >>> res = mml.bfgs(rosen, jnp.array([-1.2, 1.0]))
        >>> print(res.x.round(4), res.success)
        [1. 1.] True

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
        objective_limit=objective_limit,
        has_aux=has_aux,
        cauchy=True,
        static={"model": "bfgs", "max_linesearch": _check_common(max_linesearch)},
    )


@suggest_options
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
    objective_limit: float | None = -1e20,
    has_aux: bool = False,
) -> MinimiseResult:
    r"""Minimise ``f(x, *args)`` by limited-memory BFGS with a strong-Wolfe line search.

    As :func:`bfgs`, but the inverse Hessian is never formed: the product :math:`H_k g` comes from
    the last ``memory`` pairs :math:`(s_i, y_i)` by the two-loop recursion, with the initial
    matrix :math:`\gamma_k I`, :math:`\gamma_k = s_{k-1}^\top y_{k-1} / y_{k-1}^\top y_{k-1}`.
    The pairs live in fixed-size buffers (``memory`` x n), so the cost per iteration is
    :math:`O(\text{memory}\cdot n)` and the shapes never change under ``jit``.

    Args:
        f, x0, args, max_iter, rtol, atol, max_linesearch, history, verbose,
            objective_limit, has_aux: as :func:`bfgs`.
        memory: the number of correction pairs kept.

    Returns:
        :class:`MinimiseResult`.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.lbfgs(lambda x: jnp.sum((x - 3.0) ** 2), jnp.zeros(1000))
        >>> print(res.x.shape, res.x[:3].round(4), res.success)
        (1000,) [3. 3. 3.] True

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
        objective_limit=objective_limit,
        has_aux=has_aux,
        cauchy=True,
        static={
            "model": "lbfgs",
            "memory": check_positive_int("memory", memory),
            "max_linesearch": _check_common(max_linesearch),
        },
    )
