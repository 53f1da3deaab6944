"""Chi-squared and weighted linear least squares (private module; public through ``jaxopt_mml``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ._fit_data import NAN_POLICIES, check_data, is_concrete, weights
from ._fit_stats import FitResult, fit_statistics
from ._status import Status
from ._tree import (
    as_inexact,
    check_bool,
    check_choice,
    check_numbers,
    dtype_of,
    is_int,
    strong_array,
)

__all__ = ["chi_squared", "linear_fit"]


def chi_squared(model, params, x, y, sigma=None):
    r"""The chi-squared of a model against data: :math:`\sum_i ((y_i - f(x_i; p)) / \sigma_i)^2`.

    The goodness of fit that :func:`curve_fit` and :func:`linear_fit` minimise. Sums over the last
    axis of ``y``, so ``y`` of shape ``(B, N)`` with a model that returns ``(B, N)`` gives ``B``
    values (for per-dataset parameters, ``jax.vmap`` it).

    Args:
        model: ``model(x, params)`` returning predictions broadcastable to ``y``.
        params: the parameters (array or pytree), passed to ``model`` as they are.
        x: the independent variable(s). y: the data.
        sigma: standard deviations of ``y`` (scalar or broadcastable to ``y``); None means 1.

    Returns:
        The chi-squared (a scalar for one dataset), in the data's floating dtype, at least float32
        (float16 and bfloat16 data are summed in float32, as :func:`linear_fit` fits them).
        Differentiable in ``params``, ``y`` and ``sigma``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> x, y = jnp.array([0.0, 1.0, 2.0, 3.0]), jnp.array([1.1, 2.9, 5.1, 6.9])
        >>> line = lambda x, p: p[0] + p[1] * x
        >>> chi2 = mml.chi_squared(line, jnp.array([1.0, 2.0]), x, y, sigma=0.1)
        >>> round(float(chi2), 3)      # four residuals of 0.1 = one sigma each
        4.0
    """
    if not callable(model):
        raise TypeError(f"model must be callable as model(x, params), got {type(model).__name__}")
    check_numbers("y", y)
    check_numbers("sigma", sigma)
    # integers as floats: their squares overflowed (int32 without x64, silently). One array
    # each: as_inexact maps over a pytree, and a list y (as linear_fit and curve_fit take) came
    # back a list of scalars ("'list' object has no attribute 'shape'").
    y = as_inexact(jnp.asarray(y))
    f = as_inexact(jnp.asarray(model(x, params)))
    if y.ndim == 0:
        # (summed over a last axis it does not have: JAX's "axis -1 is out of bounds")
        raise ValueError("y must have shape (N,) or (B, N) (points on its last axis), got a scalar")
    # (complex residuals summed r * r, not |r|^2: a complex "chi-squared" came back)
    for name, value in (("y", y), ("model(x, params)", f), ("sigma", sigma)):
        if value is not None and jnp.iscomplexobj(value):
            raise TypeError(f"chi_squared takes real data; got complex {name}")
    try:
        shape = jnp.broadcast_shapes(jnp.shape(f), y.shape)
    except ValueError:
        shape = None
    if shape != y.shape:
        raise ValueError(
            f"model(x, params) must broadcast to y's shape {y.shape}, got {jnp.shape(f)}"
        )
    # half precision summed in float32, as linear_fit fits such data: 200 residuals of 20
    # sigma overflowed float16 (chi-squared inf)
    dtype = jnp.promote_types(jnp.result_type(y, f), jnp.float32)
    y, f = y.astype(dtype), f.astype(dtype)
    r = y - f
    if sigma is not None:
        sigma = jnp.asarray(sigma)
        try:
            grown = jnp.broadcast_shapes(sigma.shape, y.shape) != y.shape
        except ValueError:
            grown = True
        if grown:
            raise ValueError(
                f"sigma must be a scalar or broadcast to y's shape {y.shape}, got {sigma.shape}"
            )
        r = r / sigma
    return jnp.sum(r * r, axis=-1)


@jax.custom_jvp
def _least_squares(aw, bw):
    """``(params, cov0, keep)``: the least-squares solution of ``aw p = bw`` by the SVD of ``aw``
    with its columns scaled to unit norm (singular values below ``eps max(N, k) s_max`` dropped),
    ``cov0 = (aw^T aw)^+`` (in the scaled columns' sense), and which singular values were kept
    (as 0/1 floats).

    Derivatives by the formulas of the solution, not through the SVD, whose derivative divides by
    differences of singular values and is NaN where two are equal (a balanced two-level design):
    ``dp = C (daw^T r + aw^T (dbw - daw p))``, ``dC = -C (daw^T aw + aw^T daw) C``, ``r = bw - aw p``.
    """
    # Columns scaled to unit norm first (as numpy's polyfit): the rank test then judges the
    # design, not the units of its columns (x ~ 1e8 puts 1e16 between the columns of a
    # quadratic and its smallest singular value below the cut, a well-posed fit "singular").
    norms = jnp.sqrt(jnp.sum(aw * aw, axis=0))
    scale = jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 1.0)
    u, s, vt = jnp.linalg.svd(aw * scale, full_matrices=False)
    eps = jnp.finfo(aw.dtype).eps
    keep = s > eps * max(aw.shape) * s[0]
    sinv = jnp.where(keep, 1.0 / jnp.where(keep, s, 1.0), 0.0)
    params = scale * (vt.T @ (sinv * (u.T @ bw)))
    cov0 = scale[:, None] * ((vt.T * sinv**2) @ vt) * scale[None, :]
    return params, cov0, keep.astype(aw.dtype)


@_least_squares.defjvp
def _least_squares_jvp(primals, tangents):
    aw, bw = primals
    daw, dbw = tangents
    params, cov0, keep = _least_squares(aw, bw)
    r = bw - aw @ params
    dparams = cov0 @ (daw.T @ r + aw.T @ (dbw - daw @ params))
    dgram = daw.T @ aw
    dcov0 = -cov0 @ (dgram + dgram.T) @ cov0
    return (params, cov0, keep), (dparams, dcov0, jnp.zeros_like(keep))


def _solve_one(a, y, w, absolute_sigma):
    k = a.shape[-1]
    aw = jnp.where(w[:, None] != 0, a * w[:, None], 0.0)  # a dropped row may hold NaN
    bw = jnp.where(w != 0, y * w, 0.0)
    params, cov0, keep = _least_squares(aw, bw)
    # fewer rows than columns: the SVD has only N values, and the k - N missing ones are zeros
    full_rank = jnp.all(keep > 0) & (a.shape[0] >= k)
    r = bw - aw @ params
    cost = jnp.sum(r * r)
    cov, chi2, dof, reduced, p_value, r2, cov_ok = fit_statistics(
        r, cost, y, w, k, absolute_sigma, cov0, full_rank
    )
    finite = jnp.all(jnp.isfinite(params)) & jnp.isfinite(chi2)
    status = jnp.where(
        full_rank,
        jnp.where(cov_ok, int(Status.SUCCESS), int(Status.COVARIANCE_UNDEFINED)),
        int(Status.SINGULAR),
    )
    # NaN data under nan_policy='propagate', or an overflow (float32 with tiny sigma)
    status = jnp.where(finite, status, int(Status.NONFINITE))
    return FitResult(
        params=params,
        covariance=cov,
        stderr=jnp.sqrt(jnp.diagonal(cov)),
        chi2=chi2,
        dof=dof,
        reduced_chi2=reduced,
        p_value=p_value,
        r_squared=r2,
        residuals=r,
        n_iter=jnp.asarray(0, jnp.int32),
        success=full_rank & finite,
        status=status.astype(jnp.int32),
    )


def linear_fit(
    x,
    y,
    *,
    sigma=None,
    degree: int | None = None,
    design=None,
    absolute_sigma: bool = False,
    mask=None,
    nan_policy: str = "raise",
) -> FitResult:
    r"""Weighted linear least squares: a polynomial of ``degree`` in ``x``, or any design matrix.

    Minimises :math:`\chi^2(p) = \| W (y - A p) \|^2` with :math:`W = \mathrm{diag}(1/\sigma)`,
    where :math:`A_{ik} = x_i^k` (``k = 0..degree``: ``params[k]`` multiplies ``x**k``, lowest
    power first as in ``numpy.polynomial.polynomial.polyfit``) or ``A = design``. Solved by the SVD
    of :math:`W A D = U \Sigma V^T`, :math:`D` scaling each column to unit norm (stable, and blind
    to the units of the columns; the normal equations would square the condition number):
    :math:`p = D V \Sigma^{-1} U^T W y` and :math:`\mathrm{cov} = D V \Sigma^{-2} V^T D`, scaled
    by ``chi2 / dof`` unless ``absolute_sigma`` (as :func:`curve_fit`). A rank-deficient design
    (a singular value below ``eps * max(N, k) * s_max``) gives the minimum-norm solution (in the
    scaled columns) with ``status = SINGULAR``, ``success = False`` and an infinite covariance.

    ``y`` of shape ``(B, N)`` fits ``B`` datasets at once (``x``/``design``/``sigma``/``mask`` shared
    or per dataset); ``mask`` and ``nan_policy`` behave as in :func:`curve_fit`.

    Args:
        x: the independent variable, shape ``(N,)`` or ``(B, N)`` (ignored when ``design`` is given).
        y: data, ``(N,)`` or ``(B, N)``; the fit runs in its dtype (float16 and bfloat16 data in
            float32; integer data in the default float).
        sigma: standard deviations of ``y``; None means 1.
        degree: polynomial degree; None (the default) means 1, a straight line
            ``p[0] + p[1] x``. Not with ``design`` (a ValueError: the design is the whole model).
        design: a design matrix ``(N, k)`` or ``(B, N, k)`` instead of the polynomial.
        absolute_sigma, mask, nan_policy: as in :func:`curve_fit`.

    Returns:
        :class:`FitResult` (``n_iter = 0``).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> x, y = jnp.array([0.0, 1.0, 2.0, 3.0]), jnp.array([1.1, 2.9, 5.1, 6.9])
        >>> fit = mml.linear_fit(x, y, sigma=0.1)          # straight line
        >>> intercept, slope = fit.params
        >>> round(float(intercept), 4), round(float(slope), 4)
        (1.06, 1.96)

    References:
        G. H. Golub and C. F. Van Loan, *Matrix Computations*, 4th ed. (2013), section 5.5.
        P. R. Bevington and D. K. Robinson, *Data Reduction and Error Analysis* (2003), ch. 6-7.
    """
    nan_policy = check_choice("nan_policy", nan_policy, NAN_POLICIES)
    absolute_sigma = check_bool("absolute_sigma", absolute_sigma)
    # (a complex x, y, sigma or design was cast to the real dtype: its imaginary part dropped,
    # with SUCCESS)
    for name, value in (("x", x), ("y", y), ("sigma", sigma), ("design", design)):
        if name != "x" or design is None:  # (x is ignored when design is given)
            check_numbers(name, value)
        if value is not None and np.issubdtype(dtype_of(value), np.complexfloating):
            raise TypeError(
                f"linear_fit fits real data; got complex {name} (dtype {dtype_of(value)}): fit "
                "its real and imaginary parts as two datasets"
            )
    # y's floating dtype, at least float32 (the SVD has no float16: LAPACK's NotImplementedError)
    y_dtype = dtype_of(y)
    dtype = np.dtype(
        jnp.promote_types(y_dtype, jnp.float32)
        if jnp.issubdtype(y_dtype, jnp.floating)
        else jnp.result_type(float)
    )
    y_shape = np.shape(y)
    n = y_shape[-1] if y_shape else 0
    batch = y_shape[:-1]  # () for one dataset, (B,) for B
    if design is None and degree is None:
        degree = 1
    if design is not None:
        # (a degree beside a design was ignored, silently: the design's columns are the model)
        if degree is not None:
            raise ValueError(
                f"linear_fit: degree={degree!r} and design cannot be given together (design's "
                "columns are the whole model); pass one of them"
            )
        d_shape = np.shape(design)
        if len(d_shape) not in (2, 3) or d_shape[-2] != n or d_shape[:-2] not in ((), batch):
            raise ValueError(
                f"design must have shape (N, k), or (B, N, k) for y of shape (B, N), with "
                f"N = {n} points; got {d_shape} for y of shape {y_shape}"
            )
        x = np.zeros(n, dtype)
    elif not is_int(degree) or degree < 0:
        raise ValueError(f"degree must be a non-negative int, got {degree!r}")
    elif np.shape(x)[:-1] not in ((), batch) or np.ndim(x) == 0:
        raise ValueError(
            f"x must have shape (N,), or (B, N) for y of shape (B, N); got {np.shape(x)} for y "
            f"of shape {y_shape}"
        )
    # (a NumPy integer, as numpy.polyfit's deg takes, was refused; one static value either way)
    degree = int(degree) if design is None else degree
    layout = check_data(x, y, sigma, mask, nan_policy, None)
    if design is not None and nan_policy == "raise" and is_concrete(design, mask):
        # A row that mask drops is as good as deleted (as in curve_fit, and as under jit).
        rows_ok = np.all(np.isfinite(np.asarray(design)), axis=-1)
        if mask is not None:
            rows_ok = rows_ok | ~np.broadcast_to(np.asarray(mask, bool), y_shape)
        if not np.all(rows_ok):
            raise ValueError("design holds NaN or inf; clean it, or pass nan_policy='omit'")
    # Strongly typed, each in its own dtype (as the solvers' starts): a weakly typed sigma (a
    # Python float, jnp.full(N, 0.1)) beside a NumPy one, or a list y, compiled a program of its
    # own for the same shapes. (Each is cast to the fit's dtype inside, as before.)
    x, y, design = (strong_array(v) for v in (x, y, design))
    # (a scalar sigma in the fit's dtype: a Python int, sigma=1, beside a float compiled a
    # program of its own)
    sigma = strong_array(sigma, dtype if np.ndim(sigma) == 0 else None)
    return _linear_jit(
        x, y, sigma, mask, design, degree, absolute_sigma, nan_policy, layout, dtype.name
    )


def _linear_impl(x, y, sigma, mask, design, degree, absolute_sigma, nan_policy, layout, dtype):
    x, y, w, bad = weights(x, y, sigma, mask, nan_policy, layout, dtype)
    if design is None:
        # x^k by repeated products: x ** arange differentiates x^0 as 0 * x^-1, NaN at x = 0
        columns = [jnp.ones_like(x, dtype=dtype)]
        for _ in range(degree):
            columns.append(columns[-1] * x.astype(dtype))
        a = jnp.stack(columns, axis=-1)
    else:
        a = jnp.asarray(design).astype(dtype)
        finite = jnp.all(jnp.isfinite(a), axis=-1)
        if nan_policy == "omit":
            w = jnp.where(finite, w, 0.0)
            a = jnp.where(jnp.isfinite(a), a, 0.0)
        elif nan_policy == "raise":
            bad = bad | jnp.any(~finite & (w != 0), axis=-1)
    if y.ndim == 1:
        res = _solve_one(a, y, w, absolute_sigma)
    else:
        in_a = 0 if a.ndim == 3 else None
        res = jax.vmap(_solve_one, in_axes=(in_a, 0, 0, None))(a, y, w, absolute_sigma)
    # NaN data under jit, or no point left to fit (every point masked or omitted), as curve_fit
    bad = bad | ~jnp.any(w != 0, axis=-1)
    status = jnp.where(bad, int(Status.INVALID_INPUT), res.status).astype(jnp.int32)
    return res._replace(status=status, success=res.success & ~bad)


_linear_jit = jax.jit(_linear_impl, static_argnums=(5, 6, 7, 8, 9))
