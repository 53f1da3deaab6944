"""Newton's method for minimisation, safeguarded for indefinite Hessians (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ._driver import make_progress
from ._linesearch import backtracking
from ._minimise_common import (
    MinimiseResult,
    gradient_small,
    relative_gradient_small,
    run_minimiser,
    scaled_gradient,
)
from ._status import Status
from ._tree import PyTree, check_choice, check_positive_int, suggest_options

__all__ = ["newton_minimise"]

# linear_solver="auto" materialises the Hessian up to this many unknowns, else uses CG.
AUTO_DENSE_MAX = 200
# Hessians up to this size are diagonalised by unrolled Jacobi rotations instead of LAPACK.
JACOBI_MAX = 4


class _NewtonState(NamedTuple):
    x: jax.Array
    f: jax.Array
    grad_norm: jax.Array  # max|grad f(x)|, from the step that started at x (NaN before the first)
    cauchy: jax.Array  # the last step passed the Cauchy test (judged at the start of the next)
    n_iter: jax.Array  # Newton steps; the driver also counts the final step that only checks
    n_fev: jax.Array
    stretch: jax.Array  # the first trial of the next line search (1: the full step p)


def _jacobi_eigh(a):
    """Symmetric eigendecomposition of a tiny matrix by cyclic Jacobi rotations (Golub & Van Loan
    Alg. 8.5.3), unrolled: plain arithmetic that batches well under ``vmap``, where a LAPACK call
    per matrix would dominate. One rotation is exact for n = 2; a few sweeps suffice for n <= 4.
    """
    n = a.shape[0]
    v = jnp.eye(n, dtype=a.dtype)
    sweeps = 1 if n == 2 else 8
    for _ in range(sweeps):
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p, q]
                nonzero = apq != 0
                theta = (a[q, q] - a[p, p]) / (2.0 * jnp.where(nonzero, apq, 1.0))
                t = jnp.sign(theta) / (jnp.abs(theta) + jnp.sqrt(theta * theta + 1.0))
                t = jnp.where(nonzero, jnp.where(theta == 0, 1.0, t), 0.0)
                c = 1.0 / jnp.sqrt(t * t + 1.0)
                s = t * c
                j = jnp.eye(n, dtype=a.dtype)
                j = j.at[p, p].set(c).at[q, q].set(c).at[p, q].set(s).at[q, p].set(-s)
                a = j.T @ a @ j
                v = v @ j
    return jnp.diagonal(a), v


def _dense_direction(hvp, g):
    """-|H|^{-1} g, with |H| = Q diag(mu) Q' (eigenvalue modification, N&W 3.4).

    An eigenvalue that is safely positive, ``lambda_i > n eps max|lambda|`` (above the rounding
    error of the eigendecomposition), is kept: a positive-definite Hessian of condition up to
    about ``1 / (n eps)`` gets the plain Newton step. The others are not trusted:
    ``mu_i = max(|lambda_i|, delta)``, ``delta = sqrt(eps) max(1, max|lambda|)``, so negative
    curvature becomes positive (the direction descends and leaves saddle points along the
    directions of negative curvature) and (numerically) zero curvature bounds the step. ``H`` is
    formed column by column from the Hessian-vector product (as ``jax.jacfwd`` of the gradient).

    Also returns the direction of most negative curvature ``v`` (a unit eigenvector) and its
    eigenvalue, and whether that curvature is significantly negative (``< -delta``): where the
    gradient vanishes there, ``x`` is a saddle point (or a maximum), not a minimum.
    """
    n = g.shape[0]
    h = jax.vmap(hvp)(jnp.eye(n, dtype=g.dtype))
    h = 0.5 * (h + h.T)
    lam, q = _jacobi_eigh(h) if n <= JACOBI_MAX else jnp.linalg.eigh(h)
    eps = jnp.finfo(g.dtype).eps
    scale = jnp.max(jnp.abs(lam))
    delta = jnp.sqrt(eps) * jnp.maximum(1.0, scale)
    kept = lam > n * eps * scale
    lowest = jnp.argmin(lam)
    curvature = _Curvature(q[:, lowest], lam[lowest], lam[lowest] < -delta)
    lam = jnp.where(kept, lam, jnp.maximum(jnp.abs(lam), delta))
    # A modified step is no estimate of the distance to a minimum (a lifted eigenvalue shortens
    # it along that direction): the caller does not apply the Cauchy test to it.
    return -(q @ ((q.T @ g) / lam)), jnp.all(kept), curvature


class _Curvature(NamedTuple):
    direction: jax.Array  # unit eigenvector of the lowest eigenvalue
    value: jax.Array  # that eigenvalue
    negative: jax.Array  # significantly negative: below -sqrt(eps) max(1, max|lambda|)


def _escape(x, g, curvature):
    """A step off a saddle point along the direction of negative curvature ``v`` (the sign that
    does not ascend), of length ``max(1, max|x|)``, and the slope its sufficient-decrease test
    uses: the quadratic model's decrease per unit step, ``g.p + lambda |p|^2 / 2 < 0`` (at a
    saddle ``g.p`` is about 0; Moré & Sorensen's curvilinear search, with ``alpha`` for ``alpha^2``:
    stricter, so any step it accepts also decreases ``f`` by the model's share)."""
    v = curvature.direction
    t = jnp.maximum(1.0, jnp.max(jnp.abs(x)))
    p = jnp.where(jnp.vdot(g, v) > 0, -t, t) * v
    return p, jnp.vdot(g, p) + 0.5 * curvature.value * t * t


def _cg_direction(hvp, g, max_cg):
    """Truncated conjugate gradients on H p = -g (Newton-CG, N&W Alg. 7.1).

    Stops at the forcing tolerance ``min(0.5, sqrt|g|) |g|`` (superlinear convergence), or on
    meeting non-positive curvature, where it returns the last iterate (or the scaled
    steepest-descent direction at the first step), so the direction always descends. The Hessian
    is never formed: ``H v`` is one forward-over-reverse product through the linearised gradient.
    """
    eps = jnp.finfo(g.dtype).eps
    gg = jnp.vdot(g, g)
    gnorm = jnp.sqrt(gg)
    tol = jnp.minimum(0.5, jnp.sqrt(gnorm)) * gnorm

    def cond(carry):
        _, _, _, _, j, done = carry
        return (~done) & (j < max_cg)

    def body(carry):
        z, r, d, rr, j, _ = carry
        bd = hvp(d)
        # d'Hd and d'd as one matrix-vector product: XLA on CPU compiles a dot as a library
        # call, where each vector reduction is two generated kernels.
        curv, dd = jnp.stack([bd, d]) @ d
        negative = curv <= eps * dd
        a = rr / jnp.where(negative, 1.0, curv)
        r_new = r + a * bd
        rr_new = jnp.vdot(r_new, r_new)
        # Negative curvature at the first step: steepest descent, scaled by the curvature's
        # magnitude along it, |g|^2 / |g'Hg| (as scipy's Newton-CG), so that a unit step is sane.
        # Otherwise the last iterate; r, d and rr are not used after the loop stops.
        sd = -(rr / jnp.maximum(jnp.abs(curv), eps * dd)) * g
        z_out = jnp.where(negative, jnp.where(j == 0, sd, z), z + a * d)
        small = jnp.sqrt(rr_new) <= tol
        return z_out, r_new, -r_new + (rr_new / rr) * d, rr_new, j + 1, negative | small

    init = (jnp.zeros_like(g), g, -g, gg, jnp.asarray(0, jnp.int32), gnorm == 0)
    z, *_ = lax.while_loop(cond, body, init)
    return z


def _init(fun, x0, rtol, atol, dyn, options):
    solver, max_cg, max_ls = options["linear_solver"], options["max_cg"], options["max_linesearch"]
    max_iter = options["max_iter"]
    f0 = fun.value(x0)
    state = _NewtonState(
        x=x0,
        f=f0,
        grad_norm=jnp.full_like(f0, jnp.nan),
        cauchy=jnp.asarray(False),
        n_iter=jnp.asarray(0, jnp.int32),
        n_fev=jnp.asarray(1, jnp.int32),
        stretch=jnp.ones_like(f0),
    )

    def newton_step(x, f, g, hvp, g_small, stretch):
        """The safeguarded Newton direction and the backtracking search along it; at a saddle
        point (dense Hessian only: a vanishing gradient and significant negative curvature),
        the step along the negative curvature instead (``saddle``)."""
        if solver == "dense":
            p, exact, curvature = _dense_direction(hvp, g)
            saddle = g_small & curvature.negative
            p_off, slope_off = _escape(x, g, curvature)
            p = jnp.where(saddle, p_off, p)
            slope = jnp.where(saddle, slope_off, jnp.vdot(g, p))
        else:
            p, exact, saddle = _cg_direction(hvp, g, max_cg), True, jnp.asarray(False)
            slope = jnp.vdot(g, p)
        init = jnp.where(saddle, 1.0, stretch)
        ls = backtracking(
            lambda a: fun.value(x + a * p), f, slope, init_step=init, max_steps=max_ls
        )
        return p, ls, exact & ~saddle, saddle, init, slope

    def step(state: _NewtonState):
        """Test the gradient at x (one linearisation gives it and H v); if not converged, step.

        The gradient is evaluated once per iteration: the test for the point that the last step
        reached happens here, at the start of the next, so the run ends with one driver step that
        tests and discards its step (a select, not a branch: the same under ``vmap``); it counts
        in neither ``n_iter`` nor, beyond its linearisation, ``n_fev``.
        """
        x, f, _, cauchy, n_iter, n_fev, stretch = state
        g, hvp = jax.linearize(fun.grad, x)
        g_max = jnp.max(jnp.abs(g))
        p, ls, exact, saddle, init, slope = newton_step(
            x, f, g, hvp, gradient_small(g_max, atol), stretch
        )
        # When the full Newton step is itself within the step tolerance, x has converged as far
        # as the dtype allows, and a failed search only means rounding. Both tests of a short
        # Newton step (that one, and the Cauchy test of the last step) ask for a small scaled
        # gradient too: where the curvature is huge or infinite (a kink, |x|^1.5 at 0) the step
        # is short, or 0, far from any minimum (as for BFGS: `relative_gradient_small`). (The
        # step's reductions stacked into one were fewer kernels but a slower step: 53 against
        # 44 ms on Rosenbrock n = 1000.)
        flat = relative_gradient_small(scaled_gradient(g, x), f, rtol)
        predicted_small = jnp.all(jnp.abs(p) <= atol + rtol * jnp.abs(x)) & flat
        # A truncated CG step is no estimate of the distance to the minimum: stopped at the
        # forcing tolerance (a residual up to min(0.5, sqrt|g|) |g|) on an ill-conditioned
        # Hessian, its first iterate ~ |g| / lambda_max can be hundreds of times shorter than the
        # Newton step along the flat directions, and passed the Cauchy test there (float32
        # Rosenbrock n = 4: SUCCESS 0.019 from the minimum, 30x the step tolerance, |g| = 0.013).
        # With CG the step proposed at the new point must be short as well. (As a max, not
        # jnp.all: the boolean reduction in the stopping test made Rosenbrock n = 1000 run 20%
        # slower, 81 against 66 ms on a 2-core CPU; the max costs 69 ms, the same iterations.
        # It is not shared with predicted_small, the same test: written as this max there too,
        # the run took 77-81 ms again.)
        if solver == "cg":
            short = (jnp.max(jnp.abs(p) - atol - rtol * jnp.abs(x)) <= 0) & flat
        else:
            short = flat
        converged = ((cauchy & short) | gradient_small(g_max, atol)) & ~saddle
        stop = converged | (n_iter >= max_iter)
        x_trial = x + ls.step_size * p
        # One reduction for two tests: the full Newton step p (the search's first trial, where
        # that was stretched) is small in every component (the Cauchy test, judged next step so
        # that the gradient reported is fresh; the full step, not the one taken: a step that the
        # line search cut short is not convergence), and the
        # trial point is finite (NaN propagates through max; the driver's non-finite test is off).
        excess = jnp.max(
            jnp.where(
                jnp.isfinite(x_trial), jnp.abs(init * p) - atol - rtol * jnp.abs(x_trial), jnp.nan
            )
        )
        finite = ~jnp.isnan(excess)
        moved = ~stop & ls.success & finite
        x_new = jnp.where(moved, x_trial, x)
        f_new = jnp.where(moved, ls.value, f)
        cauchy = (
            moved & exact & (excess <= 0) & (jnp.abs(f_new - f) <= atol + rtol * jnp.abs(f_new))
        )
        failure = jnp.where(
            stop,
            jnp.where(converged, int(Status.RUNNING), int(Status.MAX_ITER)),
            jnp.where(
                ls.success,
                jnp.where(finite, int(Status.RUNNING), int(Status.NONFINITE)),
                jnp.where(predicted_small, int(Status.RUNNING), int(Status.LINESEARCH_FAILED)),
            ),
        )
        # A gradient that is NaN or inf where f is finite (sqrt or a norm at 0) gives no step:
        # NONFINITE, as for the other minimisers (it read LINESEARCH_FAILED, whose advice is
        # to check the gradient against finite differences).
        failure = jnp.where(~stop & ~jnp.isfinite(g_max), int(Status.NONFINITE), failure)
        new_state = _NewtonState(
            x=x_new,
            f=f_new,
            grad_norm=g_max,
            cauchy=cauchy,
            n_iter=n_iter + (~stop).astype(jnp.int32),
            n_fev=n_fev + 1 + jnp.where(stop, 0, ls.n_eval),
            # A first trial taken in full that decreased f by 90% or more of the linear
            # prediction alpha g'p: the model's curvature along p (lifted where the Hessian's
            # is not safely positive) far exceeds f's, and the step is short of what f allows
            # (a trust region's "very successful" step): the next search starts 4 times
            # further. Otherwise from the full step. On a linear f (zero Hessian, lifted to
            # sqrt(eps)) Newton moved by |g| / sqrt(eps) per iteration: MAX_ITER at f = -6.7e10,
            # never near objective_limit.
            stretch=jnp.where(
                moved & ~saddle & (ls.step_size == init) & (ls.value - f <= 0.9 * init * slope),
                4.0 * init,
                1.0,
            ).astype(stretch.dtype),
        )
        converged = (stop & converged) | (~stop & ~ls.success & predicted_small)
        return new_state, make_progress(x_new, f_new, converged=converged, failure=failure)

    finite0 = jnp.all(jnp.isfinite(x0)) & jnp.isfinite(f0)
    nonfinite = jnp.where(finite0, int(Status.RUNNING), int(Status.NONFINITE))
    return state, make_progress(x0, f0, failure=nonfinite), step


@suggest_options
def newton_minimise(
    f: Callable[..., jax.Array],
    x0: PyTree,
    *,
    args: tuple = (),
    linear_solver: str = "auto",
    max_iter: int = 200,
    rtol: float | None = None,
    atol: float | None = None,
    max_cg: int | None = None,
    max_linesearch: int = 30,
    history: bool | int = False,
    verbose: bool = False,
    objective_limit: float | None = -1e20,
    has_aux: bool = False,
) -> MinimiseResult:
    r"""Minimise ``f(x, *args)`` by Newton's method, safe where the Hessian is not positive definite.

    Each step solves a model of the Newton system :math:`\nabla^2 f(x_k)\, p = -\nabla f(x_k)` and
    backtracks (Armijo) along :math:`p` from the full step :math:`\alpha = 1` (from 4 times the
    last first trial where that was taken in full and decreased ``f`` by at least 90% of its
    linear prediction :math:`\alpha \nabla f^\top p`: a model whose curvature along :math:`p`
    far exceeds ``f``'s, as where a zero or negative curvature was lifted):

    * ``linear_solver="dense"``: the exact Hessian (``jax.hessian``), with its eigenvalues
      :math:`\lambda_i` that are not safely positive (:math:`\lambda_i \le n\varepsilon
      \max|\lambda|`) replaced by :math:`\max(|\lambda_i|, \delta)`,
      :math:`\delta = \sqrt{\varepsilon}\max(1, \max|\lambda|)`. Near a minimum this is plain
      Newton (quadratic convergence, for a condition number up to about :math:`1/(n\varepsilon)`);
      where the Hessian is indefinite the step still descends and moves *away* from saddle points,
      where plain Newton would step uphill onto them. Where the gradient has vanished but the
      Hessian has an eigenvalue below :math:`-\delta` (a saddle point or a maximum, which the
      gradient test alone would accept), the step goes along that eigenvector instead, length
      :math:`\max(1, \max|x|)`, backtracking until ``f`` decreases by a share of the quadratic
      model's :math:`\lambda_{min} |p|^2 / 2` (Moré & Sorensen): a run reports SUCCESS only at a
      point where the Hessian is positive semi-definite to that tolerance.
    * ``linear_solver="cg"``: truncated conjugate gradients with Hessian-vector products (Newton-CG),
      stopped at the forcing tolerance :math:`\min(0.5, \sqrt{|g|})|g|` or at the first direction of
      non-positive curvature; memory :math:`O(n)`, for large problems.
    * ``"auto"`` (default): dense up to 200 unknowns, CG above.

    Convergence: ``max|grad f| <= atol`` (absolute, as scipy's ``gtol``: see
    ``gradient_converged``), the Cauchy test (a full Newton step :math:`p` within
    ``atol + rtol |x|`` in every component, taken by the line search with a change of ``f``
    within ``atol + rtol |f|``; neither a step that the line search cut short nor a dense step
    whose Hessian was modified counts), or a full Newton step within the tolerance when rounding
    stops the line search.

    Each iteration linearises the gradient once (``jax.linearize``), which gives both
    :math:`\nabla f(x_k)` and the products :math:`\nabla^2 f(x_k) v`; the convergence test for
    the point a step reaches is made at the start of the next iteration, so a run ends with one
    pass of the loop that only tests (it is not counted in ``n_iter``; ``n_fev`` counts every
    call of ``f`` or of its linearised gradient).

    Args:
        f: the objective, a scalar function ``f(x, *args)``; ``x`` may be a pytree.
        x0: the starting point (array or pytree of arrays).
        args: extra arguments of ``f``; the minimiser is differentiable with respect to them.
        linear_solver: ``"auto"``, ``"dense"`` or ``"cg"``.
        max_iter: the most Newton iterations.
        rtol, atol: tolerances (default ``sqrt(eps)`` of the dtype).
        max_cg: the most CG iterations per Newton step (default: the number of unknowns).
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
        >>> f = lambda x: x[0] ** 2 + x[1] ** 4 / 4 - x[1] ** 2 / 2   # a saddle at the origin
        >>> print(mml.newton_minimise(f, jnp.array([0.5, 0.1])).x.round(4))  # not the saddle
        [0. 1.]

    References:
        Nocedal & Wright, *Numerical Optimization*, 2nd ed., sections 3.4 and 7.1 (Algorithm 7.1);
        Gill, Murray & Wright, *Practical Optimization* (1981), section 4.4.2; Moré & Sorensen,
        "On the use of directions of negative curvature in a modified Newton method", Math.
        Programming 16 (1979) 1-20.
    """
    check_choice("linear_solver", linear_solver, ("auto", "dense", "cg"))
    n = sum(int(jnp.size(u)) for u in jax.tree.leaves(x0))
    if linear_solver == "auto":
        linear_solver = "dense" if n <= AUTO_DENSE_MAX else "cg"
    max_cg = n if max_cg is None else check_positive_int("max_cg", max_cg)
    return run_minimiser(
        _init,
        f,
        x0,
        args,
        name="newton_minimise",
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        history=history,
        verbose=verbose,
        objective_limit=objective_limit,
        has_aux=has_aux,
        cauchy=False,  # the step applies the Cauchy test itself
        self_counting=True,
        check_finite=False,  # the step moves only to finite points; the start is checked
        static={
            "linear_solver": linear_solver,
            "max_cg": max_cg,
            "max_linesearch": check_positive_int("max_linesearch", max_linesearch),
        },
    )
