"""Nonlinear curve fitting: :func:`curve_fit` (private module; public through ``jaxopt_mml``)."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._backend import wide_backend
from ._driver import iterate, iterate_pool, make_progress
from ._fit_data import (
    NAN_POLICIES,
    Bounds,
    check_shapes,
    check_values,
    is_concrete,
    make_bounds,
    may_drop,
    shared_x_for,
    to_external,
    to_internal,
    weights,
)
from ._fit_lm import (
    DEFAULT_MAX_ITER,
    METHODS,
    STEPS,
    final_status,
    gradient_cosine,
    init,
    make_problem,
    rounding_floor,
    stationarity,
    unresolved_in_half,
    value_and_jacfwd,
)
from ._fit_losses import LOSSES, robust_scale
from ._fit_stats import FitResult, fit_statistics, spd_inverse
from ._implicit import solve_with_implicit_grad
from ._small_linalg import diagonal, gram
from ._static import static_function
from ._status import Status
from ._tree import (
    check_bool,
    check_choice,
    check_numbers,
    check_positive_int,
    check_real_output,
    default_tolerances,
    dtype_of,
    is_real_scalar,
    strong_array,
    suggest_options,
)

__all__ = ["curve_fit"]

# The pool of a batched fit (see _fit_batched and pool_lanes): an eighth of the batch, within
# [_MIN_LANES, _MAX_LANES] on a CPU, and no wider than fills _LANE_BYTES with the lanes' arrays
# (cache-bound); at least _WIDE_LANES on a GPU (launch-bound).
_MAX_LANES = 4096
_MIN_LANES = 128
_LANE_BYTES = 16 * 2**20
_WIDE_LANES = 2**14


class _Layout(NamedTuple):
    """How flat parameter vectors map to the user's pytree (static, hashable)."""

    treedef: object
    shapes: tuple
    sizes: tuple

    def unravel(self, flat):
        parts, start = [], 0
        for shape, size in zip(self.shapes, self.sizes, strict=True):
            parts.append(flat[start : start + size].reshape(shape))
            start += size
        return jax.tree.unflatten(self.treedef, parts)

    def ravel(self, tree):
        leaves = jax.tree.leaves(tree)
        return jnp.concatenate([jnp.ravel(leaf) for leaf in leaves]) if leaves else jnp.zeros(0)


class _Config(NamedTuple):
    layout: _Layout
    method: str
    loss: str
    absolute_sigma: bool
    max_iter: int
    rtol: float
    atol: float
    bounded: bool
    data: object  # _fit_data.Layout
    p0_batched: bool
    nan_policy: str
    dtype: str
    lanes: int | None  # the pool's width in a batched fit (None for one dataset)


def _residual_fn(model, layout, x, y, w):
    used = w != 0  # NaN weights (nan_policy='propagate') propagate

    def residual(p):
        f = model(x, layout.unravel(p)).astype(y.dtype)  # float64 x with float32 data: y's dtype
        return jnp.where(used, (y - f) * w, 0.0)

    return residual


class _Fit(NamedTuple):
    """One fit's solver state, iteration count and status."""

    state: object  # LSState
    n_iter: jax.Array
    status: jax.Array


def _problem(model, cfg: _Config, x, y, w, lo, hi, f_scale):
    res_p = _residual_fn(model, cfg.layout, x, y, w)
    bounds = _bounds(cfg, lo, hi) if cfg.bounded else None
    return make_problem(res_p, cfg.loss, f_scale, bounds=bounds, data_scale=_data_scale(y, w))


def _data_scale(y, w):
    """``|w y|`` at the used points (0 elsewhere): the scale of each residual's rounding (see
    :func:`._fit_lm.rounding_floor`; NaN data under ``nan_policy='propagate'`` give no floor)."""
    return jnp.abs(jnp.where(w != 0, y * w, 0.0))


def _bounds(cfg: _Config, lo, hi) -> Bounds:
    return Bounds(jnp.asarray(lo, cfg.dtype), jnp.asarray(hi, cfg.dtype))


def _to_params(cfg: _Config, lo, hi):
    if not cfg.bounded:
        return lambda u: u
    bounds = _bounds(cfg, lo, hi)
    return lambda u: to_external(u, bounds)


def _start(cfg: _Config, p0, lo, hi) -> _Fit:
    u0 = to_internal(p0, Bounds(lo, hi)) if cfg.bounded else p0
    state = init(u0, method=cfg.method)
    return _Fit(state, jnp.asarray(0, jnp.int32), jnp.asarray(int(Status.MAX_ITER), jnp.int32))


def _step(model, cfg: _Config, x, y, w, lo, hi, f_scale):
    return STEPS[cfg.method](_problem(model, cfg, x, y, w, lo, hi, f_scale), cfg.rtol, cfg.atol)


def _advance(model, cfg: _Config, x, y, w, lo, hi, f_scale, fit: _Fit) -> _Fit:
    """Run the iterations of one fit through the driver."""
    out = iterate(
        _step(model, cfg, x, y, w, lo, hi, f_scale),
        fit.state,
        make_progress(fit.state.u, fit.state.cost),
        max_iter=cfg.max_iter,
        rtol=cfg.rtol,
        atol=cfg.atol,
        cauchy=False,
        name="curve_fit",
    )
    return _Fit(out.state, out.n_iter, out.status)


def _finish(model, cfg: _Config, x, y, w, bad, fit: _Fit, lo, hi, f_scale):
    """Statistics of one fit; ``params`` gets implicit derivatives (``_implicit``)."""
    to_p = _to_params(cfg, lo, hi)
    s = lax.stop_gradient(fit.state)
    status = fit.status

    def optimality(u):
        return stationarity(_problem(model, cfg, x, y, w, lo, hi, f_scale), u)

    u, _ = solve_with_implicit_grad(optimality, s.u, lambda guess: (guess, ()))
    p = to_p(u)
    res_p = _residual_fn(model, cfg.layout, x, y, w)

    r, jac = value_and_jacfwd(res_p, p)  # r and J in one pass
    rs, js, cost = robust_scale(cfg.loss, r, jac, f_scale)
    a = gram(js)
    cov0, regular = spd_inverse(a, jnp.sum(w != 0))
    cov, chi2, dof, reduced, p_value, r2, cov_ok = fit_statistics(
        r, cost, y, w, p.shape[0], cfg.absolute_sigma, cov0, regular
    )
    succ = int(Status.SUCCESS)
    g = js.T @ rs
    diag = diagonal(a)
    cos = gradient_cosine(g, diag, cost)  # scale-free: the same in p as in u
    # A fit that stopped without accepting a step, short of a stationary point: the dtype could
    # not resolve the cost's change near p0. Unless p0 was already as good as the minimum (a
    # warm start): the Gauss-Newton step from p would lower the cost by at most rtol of it
    # (about sqrt(rtol dof) standard errors from the minimum), or move the residuals by less
    # than their rounding (p0 at the minimum of exact data).
    gn = cov0 @ g
    colnorm = jnp.sqrt(diag)
    floor = rounding_floor(_data_scale(y, w), colnorm)
    at_rounding = jnp.all(jnp.abs(gn) * colnorm <= floor)
    near = regular & ((g @ gn <= cfg.rtol * cost) | at_rounding)
    # A Jacobian that is not finite at the result (finite residuals) is NONFINITE: the model's
    # derivative is NaN or infinite there (sqrt(p^2) at p = 0; x = inf under
    # nan_policy='propagate'). (Unused points' rows are 0 here: the residuals select them away
    # in forward mode.)
    status = final_status(status, s.n_accepted, s.cost, cos, near, cfg.rtol, js)
    # float16 and bfloat16: a success is confirmed by the Gauss-Newton step from the result
    short = unresolved_in_half(
        _problem(model, cfg, x, y, w, lo, hi, f_scale), s.u, cfg.rtol, cfg.atol
    )
    status = jnp.where((status == succ) & short, int(Status.PRECISION_LIMIT), status)
    # Nothing to fit (every point masked, omitted or of zero weight): invalid input.
    status = jnp.where(bad | ~jnp.any(w != 0), int(Status.INVALID_INPUT), status)
    success = status == succ
    status = jnp.where(success & ~cov_ok, int(Status.COVARIANCE_UNDEFINED), status)
    stderr = jnp.sqrt(diagonal(cov))
    return FitResult(
        params=cfg.layout.unravel(p),
        covariance=cov,
        stderr=cfg.layout.unravel(stderr),
        chi2=chi2,
        dof=dof,
        reduced_chi2=reduced,
        p_value=p_value,
        r_squared=r2,
        residuals=r,
        n_iter=fit.n_iter,
        success=success,
        status=status.astype(jnp.int32),
    )


def _fit_one(model, cfg: _Config, x, y, w, bad, p0, lo, hi, f_scale):
    fit = _start(cfg, p0, lo, hi)
    fit = _advance(model, cfg, x, y, w, lo, hi, f_scale, fit)
    return _finish(model, cfg, x, y, _opaque(w), bad, fit, lo, hi, f_scale)


def _fit_batched(model, cfg: _Config, x, y, w, bad, p0, lo, hi, f_scale, *, dropping):
    """Fit B datasets through the driver's pool of lanes (:func:`iterate_pool`).

    A vmapped while loop runs until its slowest member stops. Instead, each loop turn advances
    every lane by one iteration, and a lane whose fit has stopped takes the next dataset: the
    work is the total of the iterations the fits need, a few slow fits cost only their own
    iterations, and on a CPU the working set stays in cache. The width is ``cfg.lanes`` (see
    :func:`pool_lanes`). Each fit takes the one-dataset solver's iterations, up to rounding (see
    :func:`iterate_pool`).
    """

    def data(i):
        return (x[i] if cfg.data.x_batched else x), y[i], w[i]

    def start(i):
        state = _start(cfg, p0[i] if cfg.p0_batched else p0, lo, hi).state
        return state, make_progress(state.u, state.cost)

    def step(i, state):
        return _step(model, cfg, *data(i), lo, hi, f_scale)(state)

    out = iterate_pool(
        step,
        start,
        y.shape[0],
        lanes=cfg.lanes,
        max_iter=cfg.max_iter,
        rtol=cfg.rtol,
        atol=cfg.atol,
        cauchy=False,
    )
    fits = _Fit(out.state, out.n_iter, out.status)

    def finish(xx, yy, ww, bb, ff):
        if not cfg.data.x_batched and dropping:
            xx = shared_x_for(xx, ww != 0)
        return _finish(model, cfg, xx, yy, ww, bb, ff, lo, hi, f_scale)

    xa = 0 if cfg.data.x_batched else None
    return jax.vmap(finish, in_axes=(xa, 0, 0, 0, 0))(x, y, _opaque(w), bad, fits)


def _opaque(w):
    """``w``, hidden from XLA's constant folding.

    Without ``sigma`` and ``mask`` the weights are a broadcast constant, and the statistics'
    reductions over them (points used, ``sum w^2``) are constant expressions that XLA folds at
    compile time, by an interpreter, one element at a time: 3.3 s of the 5.2 s compile of
    10^5 fits of 64 points (0.3 s at 10^4). Computed at run time they cost a pass over ``B x N``
    values."""
    return lax.optimization_barrier(w)


def pool_lanes(
    batch: int, lanes: int | None, n_points: int = 64, n_params: int = 4, itemsize: int = 8
) -> int:
    """The width of a batched fit's pool: ``lanes`` if given, else the backend's default.

    On a CPU an eighth of the batch within 128 to 4096 lanes, and no more than keeps the lanes'
    per-point arrays (the Jacobian, residuals and data: about ``n_points (n_params + 4)`` numbers
    a lane) within 16 MiB, so that the working set stays in cache; batches of 500 to 2000 refill
    lanes too (17-30% faster there than one lane per fit). Measured on a 2-core CPU with a 32 MiB
    L3 cache, peak fits of 64 points: B = 10^5 in 401 ms with 4096 lanes, 420 ms with 2048, 457
    ms with 1024; 256 points, B = 10^4: 256 to 1024 lanes alike, 2048 (33 MiB) 20% slower.

    On a GPU or TPU, where each loop turn costs a fixed launch overhead and the device needs
    many fits in flight, an eighth of the batch but at least 2^14 lanes (all of a
    batch up to that size). Measured on an H100 (docs/gpu_benchmark.md; float64 peak fits,
    B = 10^4: all 10^4 lanes 4.5-5.5 ms, 4096 lanes 5.1 ms, 1024 lanes 9.3 ms; B = 10^5: 2^14
    lanes 14.8 ms, 4096 19.7 ms, 1562 43.2 ms, all 10^5 189 ms (one fit ran long and held them);
    2-D Gaussians, B = 10^7: B / 8 lanes 0.92 s, B / 32 1.01 s, all 1.14 s).
    """
    if lanes is not None:
        return min(check_positive_int("lanes", lanes), batch)
    if wide_backend():
        return min(batch, max(_WIDE_LANES, batch // 8))
    fit_in_cache = _LANE_BYTES // (n_points * (n_params + 4) * itemsize)
    widest = min(_MAX_LANES, max(_MIN_LANES, fit_in_cache))
    return min(batch, widest, max(_MIN_LANES, batch // 8))


def _flat_p0(cfg: _Config, p0):
    leaves = [jnp.asarray(leaf) for leaf in jax.tree.leaves(p0)]
    if cfg.p0_batched:
        b = cfg.data.batch
        # (sizes, not -1: an empty batch's leaves have no size to infer one from)
        flat = [leaf.reshape(b, size) for leaf, size in zip(leaves, cfg.layout.sizes, strict=True)]
        return jnp.concatenate(flat, axis=1).astype(cfg.dtype)
    return jnp.concatenate([leaf.ravel() for leaf in leaves]).astype(cfg.dtype)


def _fit_impl(model, cfg: _Config, x, y, sigma, mask, p0, lo, hi, f_scale):
    x, y, w, bad = weights(x, y, sigma, mask, cfg.nan_policy, cfg.data, cfg.dtype)
    p0 = _flat_p0(cfg, p0)
    if cfg.bounded:
        # What the eager call raises for (crossed or NaN bounds, p0 outside them), traced
        # bounds or p0 turn into INVALID_INPUT: the change of variables would otherwise fit
        # within an empty box and report success.
        bad = bad | jnp.any(~(lo < hi)) | jnp.any((p0 < lo) | (p0 > hi), axis=-1)
    f_scale = jnp.asarray(f_scale, cfg.dtype)
    # What the eager call raises for: a traced f_scale <= 0 fitted as |f_scale| with SUCCESS.
    bad = bad | ~((f_scale > 0) & jnp.isfinite(f_scale))
    if cfg.data.batch is None:
        return _fit_one(model, cfg, x, y, w, bad, p0, lo, hi, f_scale)
    if cfg.data.batch == 0:
        # An empty batch (as linear_fit and jax.vmap take it): results with a leading axis 0,
        # shaped as one fit's (the pool needs a problem to start its lanes with).
        def one(a, per_dataset):
            return jax.ShapeDtypeStruct(a.shape[1:] if per_dataset else a.shape, a.dtype)

        shapes = jax.eval_shape(
            lambda xx, yy, ww, bb, pp: _fit_one(model, cfg, xx, yy, ww, bb, pp, lo, hi, f_scale),
            one(x, cfg.data.x_batched),
            *(one(a, True) for a in (y, w, bad)),
            one(p0, cfg.p0_batched),
        )
        return jax.tree.map(lambda s: jnp.zeros((0,) + s.shape, s.dtype), shapes)
    dropping = may_drop(sigma, mask, cfg.nan_policy)
    return _fit_batched(model, cfg, x, y, w, bad, p0, lo, hi, f_scale, dropping=dropping)


_fit_jit = jax.jit(_fit_impl, static_argnums=(0, 1))


@suggest_options
def curve_fit(
    model,
    x,
    y,
    p0,
    *,
    sigma=None,
    absolute_sigma: bool = False,
    bounds=None,
    method: str = "lm",
    loss: str = "linear",
    f_scale: float = 1.0,
    nan_policy: str = "raise",
    mask=None,
    max_iter: int | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    x_per_dataset: bool | None = None,
    lanes: int | None = None,
) -> FitResult:
    r"""Fit ``model(x, params)`` to data ``y`` by (weighted, robust) nonlinear least squares.

    Minimises :math:`\chi^2(p) = \sum_i \big((y_i - f(x_i; p)) / \sigma_i\big)^2` (or the robust
    cost :math:`\sum_i C^2 \rho(r_i^2 / C^2)` for ``loss != "linear"``) from the start ``p0``, then
    returns the best-fit parameters with their covariance and goodness-of-fit statistics.

    Methods (``method``):

    * ``"lm"``: Levenberg-Marquardt with MINPACK's scaled damping
      :math:`(J^T J + \lambda D) h = -J^T r`, ``D`` the running maximum of
      :math:`\mathrm{diag}(J^T J)`, and Nielsen's update of :math:`\lambda`. Certified on the
      27 NIST StRD nonlinear problems from both starts (``docs/nist_lre.md``).
    * ``"gauss-newton"``: :math:`J^T J h = -J^T r` with a backtracking (Armijo) line search.
    * ``"gradient-descent"``: steepest descent on :math:`\chi^2` with a backtracking line search
      (slow; for teaching and comparison). It stops when the Gauss-Newton step from its point
      passes the tests below (its own short steps would stop it far from the minimum), which
      at the default ``rtol`` often takes more than its ``max_iter`` (20000): ``MAX_ITER``.

    **Batched fits.** ``y`` of shape ``(B, N)`` fits ``B`` datasets in one compiled call, each with
    its own result (every field of the :class:`FitResult` gets a leading axis ``B``). ``x`` (shape
    ``(B, N)`` or ``(B, k, N)``), ``sigma`` (``(B, N)``), ``mask`` and ``p0`` (leaves with leading
    axis ``B``) may be given per dataset or shared. Datasets of different lengths: pad them to a
    common ``N`` and pass ``mask`` (False on padding) or ``sigma=inf`` there (with finite ``y``);
    the shapes, and so the compiled code, stay the same. Batches run through a pool of lanes
    (``lanes``): each loop turn advances every lane by one iteration,
    and a lane whose fit has stopped takes the next dataset, so that a few slow fits do not hold
    the whole batch (a vmapped loop runs until its slowest member stops) and the working set
    stays in cache. The function also works under the user's ``jax.jit`` and ``jax.vmap``.

    **Compilation.** The compiled fit is cached on ``model`` and the shapes. ``model`` is
    recognised by what it is made of (its code and the values it reads), so a ``lambda`` written
    again per call reuses the compilation too.

    Args:
        model: ``model(x, params) -> (N,)`` predictions; ``params`` has ``p0``'s structure.
        x: the independent variable(s), passed to ``model`` as given (last axis = points).
        y: data, shape ``(N,)`` or ``(B, N)``.
        p0: the starting parameters: an array or a pytree of arrays (required: there is no
            sensible default for a nonlinear model). The fit runs in the common dtype of ``y``
            and ``p0``'s arrays; Python numbers in ``p0`` follow it (weakly typed, as in JAX).
        sigma: standard deviations of ``y`` (scalar, ``(N,)`` or ``(B, N)``); ``None``: all 1.
            ``inf`` gives a point no weight. Not a covariance matrix (scipy's 2-D ``sigma``):
            whiten ``y`` and the model by its Cholesky factor instead.
        absolute_sigma: if True, ``sigma`` is absolute and the covariance is
            :math:`(J^T J)^{-1}`; if False (scipy's default) it is scaled by ``chi2 / dof``.
        bounds: ``(lower, upper)``, each a scalar or with ``p0``'s structure (one dataset's;
            a flat sequence for an array, list or tuple ``p0``, but a dict for a dict, whose
            leaves are sorted by key), ``+-inf`` for none; shared by every dataset of a batch.
            Enforced by a smooth change of variables (MINUIT's), so that every iterate and the
            result lie within the bounds. ``p0`` must lie within them. Where the data push a parameter against its bound the
            change of variables' own curvature is added to :math:`J^T J` (it flattens the
            Gauss-Newton model there), so that a fit converges onto an active bound as fast as
            to an interior minimum; where they pull a parameter held on its bound away from it
            (the change of variables is flat there), Levenberg-Marquardt gives it a Newton step
            of its own in the parameter, so it does not stay stuck (Gauss-Newton and gradient
            descent have no such release). A parameter is resolved only to about ``eps`` times
            its distance from its bound (``eps`` times the span midway between two): bounds of +-1e10 as
            "no bound" leave a parameter of order 1 to 2e-6 in float64 (``PRECISION_LIMIT``
            where the fit needs more); use ``+-inf`` instead.
        method: ``"lm"``, ``"gauss-newton"`` or ``"gradient-descent"``.
        loss: ``"linear"`` (least squares), ``"huber"``, ``"soft_l1"`` or ``"cauchy"``, as in
            ``scipy.optimize.least_squares``; ``f_scale`` is the residual scale ``C`` (in units of
            ``sigma``) beyond which a point counts as an outlier.
        nan_policy: ``"raise"`` (default): NaN or inf in ``x``, ``y`` or ``sigma`` raises
            ValueError when the data are concrete; under ``jit`` (traced data) nothing can be
            raised, and such a fit returns ``status = INVALID_INPUT`` instead. An eager
            call's host-side work, these checks included, costs about 0.1 ms on a CPU and 0.5
            ms on a GPU (where the checks' answer comes back from the device): for many small
            fits, call ``curve_fit`` inside ``jax.jit`` (or batch the datasets). ``"omit"``: drop
            those points (weight 0; works under ``jit`` and keeps the shapes). ``"propagate"``:
            compute anyway; NaN data end in ``status = NONFINITE``.
        mask: booleans broadcastable to ``y``; False drops a point (same as deleting it).
        max_iter: iteration limit (default 200 for ``lm`` and ``gauss-newton``, 20000 for
            ``gradient-descent``).
        rtol: relative tolerance (default ``sqrt(eps)`` of the dtype: 1.5e-8 in float64) on the
            reduction of the cost and on the (scaled) step, as MINPACK's ``ftol`` and ``xtol``.
            With ``"lm"`` a fit also stops when its next step, predicted from how much the last
            two accepted steps shrank (at least 4x), would pass the step test: the parameters
            are then about ``rtol`` from the minimum (one iteration fewer in most fits).
            Below ``sqrt(eps)`` the cost cannot certify ``rtol`` (it resolves relative changes
            of about ``eps``): such a fit succeeds on its step test or ends
            ``PRECISION_LIMIT``, as MINPACK's "ftol too small" (118 of 200 peak fits at
            ``rtol = 1e-12`` in float64; the other 82 within 9e-12 of the minimum).
        atol: absolute tolerance added to the step test
            :math:`\max(1, \lambda) |h_i| \le r_{tol} |p_i| + a_{tol}`; default 0, as purely
            relative tests serve badly scaled problems (NIST's) best. (The cost test uses
            ``rtol**2``: the cost is quadratic in the parameters' error.)
        x_per_dataset: whether ``x`` holds one array per dataset in a batched fit (default:
            when its leading axis equals ``B``); set it where that is ambiguous (``x`` of shape
            ``(k, N)`` with ``k == B`` predictors).
        lanes: the width of a batched fit's pool (how many fits advance together; static). Default:
            an eighth of the batch, 128 to 4096 on a CPU (fewer for many points) and at least
            2^14 on a GPU or TPU. Each fit's result is the same for every width up to rounding
            (XLA's batched sums round with the batch's shape; a fit may stop one iteration
            apart, within ``rtol``).

    Returns:
        :class:`FitResult`. ``success`` says whether the fit converged; ``status`` is
        ``SUCCESS``, ``COVARIANCE_UNDEFINED`` (the fit converged but the covariance cannot be
        estimated: singular Jacobian or ``dof <= 0``; ``covariance`` and ``stderr`` are inf and
        ``success`` stays True, the counterpart of scipy's ``OptimizeWarning``),
        ``PRECISION_LIMIT`` (the dtype cannot resolve the problem to ``rtol``: float32 data
        whose chi-squared does not change measurably near ``p0``, so that no step was ever
        accepted; a float32 parameter whose remaining effect on chi-squared is below the
        dtype's resolution; a Gauss-Newton or gradient-descent search that finds no decrease
        where the predicted one is below ``rtol`` of chi-squared: gradient descent in a narrow
        valley, in float64 too, where the decrease along the gradient is below the cost's
        rounding; a float16 or bfloat16 fit that stopped where the Gauss-Newton step would
        still gain more than ``rtol`` of chi-squared: use float32),
        ``MAX_ITER``, ``LINESEARCH_FAILED`` or ``SINGULAR`` (Gauss-Newton and gradient
        descent), ``INVALID_INPUT`` (NaN data under jit, or no point left to fit) or
        ``NONFINITE``. Derivatives of ``params`` with respect to
        ``y`` (and ``sigma``, ``x``) come from implicit differentiation of the optimality
        condition :math:`J^T r = 0` (in the bounds' unconstrained variables: a parameter held
        on an active bound has derivative 0, and the others move as a refit would).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> def model(x, p):
        ...     return p[0] * jnp.exp(-p[1] * x)
        >>> x = jnp.linspace(0.0, 4.0, 50)
        >>> y = model(x, jnp.array([2.0, 1.3])) + 0.01 * jnp.cos(17.0 * x)   # data with a wiggle
        >>> fit = mml.curve_fit(model, x, y, jnp.array([1.0, 1.0]))
        >>> print(fit.params.round(2), fit.success)    # also fit.stderr, fit.reduced_chi2, ...
        [2.  1.3] True

    References:
        J. J. More, "The Levenberg-Marquardt algorithm: implementation and theory", Lecture Notes
        in Mathematics 630 (1978). H. B. Nielsen, "Damping parameter in Marquardt's method",
        IMM-REP-1999-05. K. Madsen, H. B. Nielsen, O. Tingleff, *Methods for non-linear least
        squares problems* (2004). NIST StRD nonlinear regression,
        https://www.itl.nist.gov/div898/strd/nls/nls_main.shtml.
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, params), got {type(model).__name__}")
    method = check_choice("method", method, METHODS)
    loss = check_choice("loss", loss, LOSSES)
    nan_policy = check_choice("nan_policy", nan_policy, NAN_POLICIES)
    absolute_sigma = check_bool("absolute_sigma", absolute_sigma)
    max_iter = (
        DEFAULT_MAX_ITER[method] if max_iter is None else check_positive_int("max_iter", max_iter)
    )
    if np.ndim(f_scale) != 0:
        raise ValueError(f"f_scale must be a scalar, got shape {np.shape(f_scale)}")
    if not is_real_scalar(f_scale):
        # (a string met NumPy's "could not convert string to float", None Python's float()
        # message; True fitted as 1.0)
        raise TypeError(f"f_scale must be a real number (the residual scale C), got {f_scale!r}")
    if is_concrete(f_scale) and not 0 < float(f_scale) < math.inf:
        raise ValueError(
            f"f_scale must be positive and finite (the residual scale C), got {f_scale!r}"
        )

    leaves, treedef = jax.tree.flatten(p0)
    if not leaves:
        raise ValueError("p0 must hold at least one parameter (an array or a pytree of arrays)")
    shapes = [np.shape(leaf) for leaf in leaves]
    dtypes = [dtype_of(leaf) for leaf in leaves]
    for dt in dtypes:
        if not (jnp.issubdtype(dt, jnp.number) or dt == np.dtype(bool)):
            raise TypeError(f"p0 must hold numbers, got a leaf of dtype {dt}")
    # Python numbers in p0 (scipy's p0=[1.0, 0.0]) are weakly typed, as in JAX: they follow the
    # data's dtype (float32 data with such a p0 was fitted in float64)
    weak = [
        leaf if isinstance(leaf, int | float) and not isinstance(leaf, bool) else dt
        for leaf, dt in zip(leaves, dtypes, strict=True)
    ]
    check_numbers("y", y)
    check_numbers("sigma", sigma)
    dtype = jnp.result_type(*weak, dtype_of(y))
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise TypeError("curve_fit fits real data and parameters; got complex input")
    # (a complex sigma or bound was cast to the fit's real dtype, its imaginary part dropped)
    for name, value in (("sigma", sigma), ("bounds", bounds)):
        for leaf in jax.tree.leaves(value):
            if np.issubdtype(dtype_of(leaf), np.complexfloating):
                raise TypeError(f"curve_fit takes real {name}; got dtype {dtype_of(leaf)}")
    dtype = np.dtype(dtype)
    rtol, atol = default_tolerances(dtype, rtol, 0.0 if atol is None else atol)

    data = check_shapes(x, y, sigma, mask, x_per_dataset)
    batch = data.batch
    p0_batched = batch is not None and _p0_looks_batched(p0, shapes, batch)
    elem = [shape[1:] if p0_batched else shape for shape in shapes]
    layout = _Layout(treedef, tuple(elem), tuple(math.prod(e) for e in elem))
    n_params = sum(layout.sizes)
    if n_params == 0:  # (an empty array met NumPy's "need at least one array to stack")
        raise ValueError(f"p0 must hold at least one parameter, got {n_params} (shapes {elem})")
    # Raises now for data on the host; for data on a GPU, once the fit is dispatched.
    check_pending = check_values(x, y, sigma, mask, nan_policy, data.x_batched, p0)

    b = make_bounds(bounds, (n_params,), layout.ravel, dtype, treedef)
    if b is None:
        lo = hi = None
    else:
        lo, hi = b
        if is_concrete(p0, lo, hi):
            p = np.concatenate(
                [
                    np.reshape(leaf, (batch, size) if p0_batched else (-1,))
                    for leaf, size in zip(leaves, layout.sizes, strict=True)
                ],
                axis=-1,
            )
            if np.any(p < np.asarray(lo)) or np.any(p > np.asarray(hi)):
                raise ValueError("p0 must lie within bounds (lower <= p0 <= upper)")

    model = static_function(model)  # an inline lambda, written again, reuses the compilation
    _check_model(model, layout, x, data, dtype, p0_batched, x_per_dataset)
    if lanes is not None:
        check_positive_int("lanes", lanes)
    cfg = _Config(
        layout=layout,
        method=method,
        loss=loss,
        absolute_sigma=absolute_sigma,
        max_iter=max_iter,
        rtol=rtol,
        atol=atol,
        bounded=b is not None,
        data=data,
        p0_batched=p0_batched,
        nan_policy=nan_policy,
        dtype=dtype.name,
        lanes=None if batch is None else pool_lanes(batch, lanes, data.n, n_params, dtype.itemsize),
    )
    # p0 in the fit's dtype, strongly typed: a weakly typed p0 (jnp.full(2, 0.5)) beside an
    # array of the same dtype compiled a program of its own (_flat_p0 casts it so anyway); a
    # host p0 stays on the host (a JAX conversion was 15% of a one-dataset fit's call)
    p0 = jax.tree.map(lambda leaf: strong_array(leaf, dtype), p0)
    # y, sigma, mask and f_scale as strongly typed arrays, each in its own dtype (cast to the
    # fit's inside, as before; a scalar sigma and f_scale in the fit's, below): a weakly typed
    # sigma (jnp.full(N, 0.2)), a Python float beside a NumPy one, or a list (passed as N
    # scalars) compiled a program of its own for the same shapes. (x reaches the model as
    # given: its weak type may decide the model's dtype.)
    y, mask = strong_array(y), strong_array(mask)
    # A scalar sigma and f_scale in the fit's dtype: a Python int (sigma=1, f_scale=2) or a
    # NumPy float32 scalar beside a float compiled a program of their own (1-2 s each).
    sigma = strong_array(sigma, dtype if np.ndim(sigma) == 0 else None)
    f_scale = strong_array(f_scale, dtype)
    out = _fit_jit(model, cfg, x, y, sigma, mask, p0, lo, hi, f_scale)
    check_pending()
    return out


def _check_model(model, layout, x, data, dtype, p0_batched, x_per_dataset):
    x_shape = tuple(np.shape(x)[1:] if data.x_batched else np.shape(x))
    x_dtype = dtype_of(x)
    if not jnp.issubdtype(x_dtype, jnp.inexact):  # as _fit_data.weights passes it to the model
        x_dtype = np.dtype(dtype)
    try:
        _check_model_cached(model, layout, x_shape, x_dtype, data.n, np.dtype(dtype))
    except (TypeError, ValueError) as exc:
        # A batch's x or p0 read per dataset by their leading axis B, where the user meant k
        # predictors or a (B, k) parameter: the model's own error did not say how they were read.
        notes = []
        if data.x_batched and x_per_dataset is None:
            notes.append(
                f"x of shape {np.shape(x)} was read as one x per dataset (its leading axis is "
                f"B = {data.batch}); pass x_per_dataset=False if it holds {data.batch} predictors"
            )
        if p0_batched:
            shapes = layout.shapes[0] if len(layout.shapes) == 1 else list(layout.shapes)
            notes.append(
                f"p0 was read as one start per dataset (its leading axis is B = {data.batch}), "
                f"each of shape {shapes}; to share a p0 of its shape, broadcast it to (B, ...)"
            )
        if not notes:
            raise
        raise type(exc)(f"{exc} ({'; '.join(notes)})") from exc


@functools.lru_cache(maxsize=256)
def _check_model_cached(model, layout, x_shape, x_dtype, n, dtype):
    """Trace ``model`` once per (model, structure, shapes) to check its output shape."""
    x_one = jax.ShapeDtypeStruct(x_shape, x_dtype)
    p_one = jax.ShapeDtypeStruct((sum(layout.sizes),), dtype)
    try:
        out = jax.eval_shape(lambda xx, pp: model(xx, layout.unravel(pp)), x_one, p_one)
    except Exception as exc:
        raise TypeError(f"model(x, params) failed on x and p0's structure: {exc}") from exc
    if not hasattr(out, "shape") or tuple(out.shape) != (n,):
        raise ValueError(
            f"model(x, params) must return one value per point, shape ({n},); "
            f"got {getattr(out, 'shape', type(out).__name__)}"
        )
    # (an integer prediction left the fit at p0 with success = True)
    check_real_output("model(x, params)", out.dtype)


def _p0_looks_batched(p0, shapes, batch):
    """A bare array ``p0`` is per dataset when it is ``(B, k)``; a pytree when every leaf has a
    leading axis ``B`` (pass a plain array, or vmap yourself, where this is ambiguous)."""
    if len(shapes) == 1 and jax.tree.structure(p0).num_nodes == 1:
        return len(shapes[0]) == 2 and shapes[0][0] == batch
    return all(len(shape) >= 1 and shape[0] == batch for shape in shapes)
