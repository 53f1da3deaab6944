"""Robust loss functions for least squares, as in ``scipy.optimize.least_squares`` (private).

A robust fit minimises ``sum_i C^2 rho((r_i / C)^2)`` instead of ``sum_i r_i^2``, where ``C`` is
``f_scale`` (the residual size beyond which a point counts as an outlier) and ``rho(z)`` is:

* ``linear``:  ``z`` (ordinary least squares),
* ``huber``:   ``z`` for ``z <= 1``, else ``2 sqrt(z) - 1``,
* ``soft_l1``: ``2 (sqrt(1 + z) - 1)``,
* ``cauchy``:  ``log(1 + z)``.

Gauss-Newton-type solvers handle ``rho`` by rescaling the residuals and the Jacobian each iteration
(Triggs et al., *Bundle adjustment: a modern synthesis*, 2000, section 4.3; scipy's
``scale_for_robust_loss_function``), so that ``J_s^T J_s`` approximates the Hessian of the robust cost.
"""

from __future__ import annotations

import jax.numpy as jnp

LOSSES = ("linear", "huber", "soft_l1", "cauchy")


def rho(loss: str, z):
    """``(rho(z), rho'(z), rho''(z))`` for ``z = (r / C)^2``."""
    if loss == "linear":
        return z, jnp.ones_like(z), jnp.zeros_like(z)
    if loss == "huber":
        small = z <= 1.0
        sz = jnp.sqrt(jnp.where(small, 1.0, z))
        r0 = jnp.where(small, z, 2.0 * sz - 1.0)
        r1 = jnp.where(small, 1.0, 1.0 / sz)
        r2 = jnp.where(small, 0.0, -0.5 / (sz * jnp.where(small, 1.0, z)))
        return r0, r1, r2
    if loss == "soft_l1":
        t = 1.0 + z
        st = jnp.sqrt(t)
        return 2.0 * (st - 1.0), 1.0 / st, -0.5 / (t * st)
    if loss == "cauchy":
        t = 1.0 + z
        return jnp.log1p(z), 1.0 / t, -1.0 / (t * t)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def robust_cost(loss: str, r, f_scale):
    """The robust cost ``sum C^2 rho((r / C)^2)`` (equal to ``sum r^2`` for the linear loss)."""
    if loss == "linear":
        return jnp.sum(r * r)
    c2 = f_scale * f_scale
    return c2 * jnp.sum(rho(loss, (r * r) / c2)[0])


def robust_scale(loss: str, r, jac, f_scale):
    """Rescaled ``(r_s, J_s, cost)`` whose Gauss-Newton model matches the robust cost to 2nd order.

    ``J_s = sqrt(rho' + 2 z rho'') J`` and ``r_s = rho' r / sqrt(rho' + 2 z rho'')`` (scipy's rule,
    with the curvature factor floored at machine epsilon).
    """
    r_s, jac_s, cost, _ = robust_scale_with_factor(loss, r, jac, f_scale)
    return r_s, jac_s, cost


def robust_scale_with_factor(loss: str, r, jac, f_scale, weight_floor: float = 0.0):
    """:func:`robust_scale` and the rows' factor ``sqrt(rho' + 2 z rho'')`` (1 for least squares).

    ``weight_floor``: the squared factor is floored at ``weight_floor * rho'`` too (``rho'`` is
    iteratively reweighted least squares' weight, positive; 0: scipy's floor ``eps`` alone). A
    point where the loss has no curvature (a Huber outlier) or a negative one (a Cauchy outlier)
    then still weighs in ``J_s^T J_s``: with every point an outlier (a start far from the data,
    ``f_scale`` small) the floor ``eps`` made ``J_s^T J_s`` about ``eps`` times too small, and a
    Gauss-Newton step ``1 / eps`` times too long for a line search to cut back."""
    if loss == "linear":
        return r, jac, jnp.sum(r * r), 1.0
    c2 = f_scale * f_scale
    z = (r * r) / c2
    r0, r1, r2 = rho(loss, z)
    eps = jnp.finfo(r.dtype).eps
    jscale = jnp.sqrt(jnp.maximum(r1 + 2.0 * r2 * z, jnp.maximum(eps, weight_floor * r1)))
    return r * (r1 / jscale), jac * jscale[:, None], c2 * jnp.sum(r0), jscale
