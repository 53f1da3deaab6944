"""The fit result and its statistics: covariance, standard errors, chi-squared, p-value (private).

For weighted residuals ``r_i = (y_i - f(x_i; p)) / sigma_i`` and the weighted Jacobian
``J = dr/dp`` at the best fit:

* ``chi2 = sum_i r_i^2`` with ``dof = n - k`` degrees of freedom (``n`` points used, ``k``
  parameters), ``reduced_chi2 = chi2 / dof``;
* ``p_value = P(X >= chi2)`` for ``X ~ chi2(dof)``: the survival function ``Q(dof/2, chi2/2)``
  (the regularised upper incomplete gamma function);
* ``covariance = (J^T J)^{-1}``, multiplied by ``chi2 / dof`` unless ``absolute_sigma`` (scipy's
  ``curve_fit`` convention: without absolute errors the scale of ``sigma`` is estimated from the
  scatter); ``stderr = sqrt(diag(covariance))``;
* ``r_squared = 1 - sum w (y - f)^2 / sum w (y - ybar_w)^2`` with ``w = 1 / sigma^2`` and the
  weighted mean ``ybar_w``.

The covariance is the inverse of the column-equilibrated ``J^T J`` (see :func:`spd_inverse`); when
that matrix is singular to working precision (condition number beyond ``1 / (k eps)``) or when
``dof <= 0`` (and ``absolute_sigma`` is off), the covariance cannot be estimated: it is ``inf`` and
the status is ``COVARIANCE_UNDEFINED``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._small_linalg import diagonal
from ._special import gammaincc
from ._tree import as_inexact

__all__ = ["FitResult", "chi2_sf"]


class FitResult(NamedTuple):
    """The result of :func:`curve_fit` or :func:`linear_fit` (batched fits: a leading axis ``B``).

    Attributes:
        params: the best-fit parameters (same structure as ``p0``; an array for ``linear_fit``).
        covariance: the ``(k, k)`` covariance of the flattened parameters (order of
            ``jax.flatten_util.ravel_pytree(params)``); ``inf`` when it cannot be estimated.
        stderr: standard errors ``sqrt(diag(covariance))``, same structure as ``params``.
        chi2: ``sum r_i^2`` of the weighted residuals at the best fit.
        dof: degrees of freedom ``n - k`` (``n``: points that count, after masks and
            ``nan_policy='omit'``).
        reduced_chi2: ``chi2 / dof`` (NaN when ``dof <= 0``).
        p_value: probability of a chi-squared at least this large if the model and sigma are right.
        r_squared: the (weighted) coefficient of determination.
        residuals: weighted residuals ``(y - f(x; params)) / sigma`` (0 at omitted points).
        n_iter: iterations taken (0 for ``linear_fit``).
        success: whether the fit itself converged (the parameters are trustworthy). It stays
            True when only the covariance is undefined; see ``status``.
        status: a :class:`Status` code: ``SUCCESS``, or why the fit or its covariance failed
            (``COVARIANCE_UNDEFINED``, ``MAX_ITER``, ``PRECISION_LIMIT``, ``INVALID_INPUT``...).
    """

    params: Any
    covariance: jax.Array
    stderr: Any
    chi2: jax.Array
    dof: jax.Array
    reduced_chi2: jax.Array
    p_value: jax.Array
    r_squared: jax.Array
    residuals: jax.Array
    n_iter: jax.Array
    success: jax.Array
    status: jax.Array


def chi2_sf(chi2, dof):
    """Survival function of the chi-squared distribution, ``Q(dof / 2, chi2 / 2)``.

    Equal to ``scipy.stats.chi2.sf`` (relative error below 1e-11 in float64 for ``dof`` from 1 to
    1e6, down to ``p ~ 1e-300``). ``1`` for ``chi2 <= 0``, ``0`` for ``chi2 = inf``; NaN where
    ``dof <= 0`` or an input is NaN. See :mod:`jaxopt_mml._special` for the method.
    """
    chi2 = as_inexact(chi2)
    dof = jnp.asarray(dof, chi2.dtype)
    safe = jnp.where(dof > 0, dof, 1.0)
    # chi2 >= 0 (and NaN) kept whole (jnp.maximum would halve the derivative at 0, a tie): at 0
    # it is the right-hand one, as chi2 cannot be negative.
    x = 0.5 * jnp.where(chi2 < 0, 0.0, chi2)
    return jnp.where(dof > 0, gammaincc(0.5 * safe, x), jnp.nan)


def spd_inverse(a, n_terms=None):
    r"""Inverse of a symmetric positive semi-definite ``(k, k)`` matrix and whether it is regular.

    Equilibrates ``a`` to unit diagonal and inverts it by the sweep operator (Gauss-Jordan
    elimination without pivoting, kept symmetric): sweeping pivot ``j`` of ``S`` maps

    .. math::
        S_{jj} \to -1/S_{jj}, \quad S_{ij} \to S_{ij}/S_{jj}, \quad
        S_{il} \to S_{il} - S_{ij} S_{jl} / S_{jj} \ (i, l \ne j),

    and sweeping every pivot in turn leaves ``-S^{-1}`` (Goodnight 1979). The pivots are those of
    the Cholesky factorisation squared (the diagonal of the successive Schur complements), so the
    matrix is declared singular when one falls below ``k eps`` (a condition number beyond
    ``1 / (k eps)``); the accuracy is that of a Cholesky-based inverse (both err by about
    ``cond * eps``). ``a = J^T J`` summed over ``n_terms`` points (given) carries rounding
    errors of about ``sqrt(n_terms) eps`` relative in its equilibrated entries (``eps`` of the
    sum's accumulation: float32 for float16 and bfloat16, which jnp.sum adds in float32), and
    a pivot below ``sqrt(n_terms) eps`` is then that noise, not information: singular too. (An
    unidentifiable model, ``p0 p2 exp(p1 x)``, 500 points in float32: 45 of 600 fits had
    pivots of 4-16 eps, above ``k eps``, and a finite covariance with standard errors up to
    9.3 where none exists.) The pivots run in a ``fori_loop`` whose one pass updates the whole matrix:
    under ``vmap`` a few vector kernels over all the fits, where LAPACK's Cholesky and triangular
    solve are one library call per small matrix (5 ms for 10^4 fits of 4 parameters on a CPU,
    against 0.3 ms).

    References:
        J. H. Goodnight, "A tutorial on the SWEEP operator", The American Statistician 33 (1979).
    """
    k = a.shape[-1]
    eps = jnp.finfo(a.dtype).eps
    d = jnp.sqrt(diagonal(a))
    ok_d = jnp.all(d > 0) & jnp.all(jnp.isfinite(d))
    dinv = jnp.where(d > 0, 1.0 / jnp.where(d > 0, d, 1.0), 0.0)
    idx = np.arange(k)
    a_s = jnp.where(ok_d, a * dinv[:, None] * dinv[None, :], np.eye(k, dtype=a.dtype))

    def sweep(j, carry):
        s, min_pivot = carry
        on_j = idx == j
        # Row j by a mask, not a dynamic slice: under a batch of tangents (jax.hessian of a
        # fit, called eagerly) XLA:CPU fused two slices of one name and failed to compile.
        row = jnp.sum(jnp.where(on_j[:, None], s, 0.0), axis=0)
        pivot = jnp.sum(jnp.where(on_j, row, 0.0))
        rp = 1.0 / jnp.where(pivot > 0, pivot, 1.0)  # a bad pivot only flags the matrix
        t = row * rp
        edge = jnp.where(on_j[:, None], t[None, :], t[:, None])  # row and column j
        edge = jnp.where(on_j[:, None] & on_j[None, :], -rp, edge)
        s = jnp.where(on_j[:, None] | on_j[None, :], edge, s - row[:, None] * t[None, :])
        return s, jnp.minimum(min_pivot, pivot)

    s, min_pivot = lax.fori_loop(0, k, sweep, (a_s, jnp.asarray(jnp.inf, a.dtype)))
    inv_s = -s
    floor = k * eps
    if n_terms is not None:
        # The sum's rounding is that of the dtype it is accumulated in: jnp.sum adds float16 and
        # bfloat16 terms in float32 (a bfloat16 line fit of 2000 points has a pivot of 0.25, and
        # its covariance agrees with float64's to 1%, where sqrt(2000) eps = 0.35 of bfloat16
        # declared it undefined), then rounds once (within k eps).
        acc_eps = jnp.finfo(jnp.promote_types(a.dtype, jnp.float32)).eps
        floor = jnp.maximum(floor, jnp.sqrt(jnp.asarray(n_terms, jnp.float32)) * acc_eps)
    regular = ok_d & (min_pivot > floor) & jnp.all(jnp.isfinite(inv_s))
    inv_s = jnp.where(regular, inv_s, 0.0)
    return inv_s * dinv[:, None] * dinv[None, :], regular


def fit_statistics(residuals, cost, y, weights, n_params, absolute_sigma: bool, cov0, regular):
    """Covariance and goodness-of-fit statistics of one fit (see the module docstring).

    Args:
        residuals: weighted residuals ``(y - f) * w``, 0 where a point is omitted.
        cost: the minimised cost (``chi2`` for the linear loss, the robust cost otherwise).
        y: the data (for ``r_squared``); weights: ``1 / sigma`` (0 at omitted points).
        n_params: ``k``; absolute_sigma: see :func:`curve_fit`.
        cov0: the unscaled covariance ``(J^T J)^{-1}``; regular: whether it could be computed.

    Returns:
        ``(covariance, chi2, dof, reduced_chi2, p_value, r_squared, cov_ok)``.
    """
    dtype = residuals.dtype
    used = weights != 0
    n = jnp.sum(used)
    dof = (n - n_params).astype(jnp.int32)
    chi2 = jnp.sum(residuals * residuals)
    doff = dof.astype(dtype)
    reduced = jnp.where(dof > 0, chi2 / jnp.where(dof > 0, doff, 1.0), jnp.nan)
    p_value = chi2_sf(chi2, doff)
    w2 = weights * weights
    ybar = jnp.sum(w2 * jnp.where(used, y, 0.0)) / jnp.sum(w2)
    ss_tot = jnp.sum(w2 * jnp.where(used, y - ybar, 0.0) ** 2)
    # undefined (NaN) for data with no spread about their mean, whatever the fit
    r_squared = jnp.where(ss_tot > 0, 1.0 - chi2 / jnp.where(ss_tot > 0, ss_tot, 1.0), jnp.nan)
    if absolute_sigma:
        ok = regular
        cov = cov0
    else:
        ok = regular & (dof > 0)
        cov = cov0 * (cost / jnp.where(dof > 0, doff, 1.0))
    cov = jnp.where(ok, cov, jnp.inf)
    return cov, chi2, dof, reduced, p_value, r_squared, ok
