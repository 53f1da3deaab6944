"""Small dense symmetric positive-definite solves in the solvers' iterations (private).

Fits have few parameters (k of 2 to a dozen), and batched fits solve one small ``k x k`` system per
dataset per iteration; the constrained Newton-KKT step two per problem (``_constrained_kkt``).
LAPACK calls on such tiny matrices cost more in dispatch and compile time than in arithmetic
(and batched inside a vectorised ``while_loop`` they hung XLA:CPU's runtime, jaxlib 0.10.2),
so the Cholesky factorisation and its triangular solves are written as ``k`` column steps of
vector operations: vectorised across the batch by ``vmap`` and fused by XLA.
Up to ``UNROLL`` parameters the steps are unrolled (the fastest program); above, they run in a
``lax.fori_loop``, as the triangular solves' ``O(k^2)`` unrolled scalar updates made XLA:CPU's
compile time grow steeply (a 16-parameter ``curve_fit``: 7.4 s, against 1.5 s at 8). The rolled
steps run about twice as long under ``vmap`` (10^4 fits of 12 parameters on a 2-core CPU:
10.2 s against 5.4 s, compiled in 2.8 s against 9.8 s; 2.4x at 4 parameters), so the
threshold trades a batch's run time for a compile time that stays bounded.

A matrix that is not (numerically) positive definite gives NaN in the factor: callers test for it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

UNROLL = 8  # the largest k whose steps are unrolled


def diagonal(a):
    """The diagonal of a ``(..., k, k)`` matrix as a strided slice (``jnp.diagonal`` lowers to a
    gather, and under ``vmap`` to extra kernels)."""
    k = a.shape[-1]
    return a.reshape(a.shape[:-2] + (k * k,))[..., :: k + 1]


def gram(jac):
    """``J^T J`` of an ``(n, k)`` Jacobian, as products summed along ``n`` in ``(k, n)`` layout.

    Under ``vmap`` (a batch of fits) this is one reduction over the points, which XLA:CPU runs
    faster than the batched matrix product ``jac.T @ jac`` (one XNNPACK call) on tiny ``k x n``
    matrices: 4 x 64 for 1024 fits, 118 against 165 us per iteration; for the statistics of 10^4
    fits, 1.7 against 5.7 ms (profiled on a 2-core CPU). The sum's rounding may depend on the
    batch's shape (as the product's did): fits agree to rounding across batch sizes.
    """
    jt = jac.T
    return jnp.sum(jt[:, None, :] * jt[None, :, :], axis=-1)


def cholesky(a):
    """Lower Cholesky factor of a symmetric positive-definite ``(k, k)`` matrix (NaN if not PD)."""
    k = a.shape[-1]
    if k == 0:  # (no constraints: the least-squares multipliers of none)
        return a
    if k > UNROLL:
        return _cholesky_rolled(a)
    idx = np.arange(k)  # masks as constants in the program, not kernels
    cols = []
    for j in range(k):
        piv = a[j, j]
        d = jnp.sqrt(jnp.where(piv > 0, piv, jnp.nan))
        # One reciprocal, then products: XLA:CPU does not fuse a division with several users.
        below = jnp.where(idx > j, a[:, j] * (1.0 / d), 0.0)
        cols.append(jnp.where(idx == j, d, below))
        if j + 1 < k:
            a = a - below[:, None] * below[None, :]
    return jnp.stack(cols, axis=1)


def _forward(low, b, rdiag):
    """Solve ``L z = b`` (``b`` a vector or a matrix of columns); ``rdiag = 1 / diag(L)``."""
    z = []
    for i in range(low.shape[-1]):
        acc = b[i]
        for m in range(i):
            acc = acc - low[i, m] * z[m]
        z.append(acc * rdiag[i])
    return jnp.stack(z)


def _backward(low, z, rdiag):
    """Solve ``L^T x = z``; ``rdiag = 1 / diag(L)``."""
    k = low.shape[-1]
    x = [None] * k
    for i in reversed(range(k)):
        acc = z[i]
        for m in range(i + 1, k):
            acc = acc - low[m, i] * x[m]
        x[i] = acc * rdiag[i]
    return jnp.stack(x)


def chol_solve(low, b):
    """Solve ``L L^T x = b`` given the lower factor ``L`` (``b`` a vector or matrix)."""
    if low.shape[-1] == 0:
        return b
    rdiag = 1.0 / diagonal(low)
    if low.shape[-1] > UNROLL:
        return _solve_rolled(low, b, rdiag)
    return _backward(low, _forward(low, b, rdiag), rdiag)


def _pick(u, on):
    """Row ``j`` of ``u`` where ``on = (idx == j)``, by a mask (exact: one nonzero term); under
    ``vmap`` a dynamic slice would be a gather."""
    return jnp.sum(jnp.where(on.reshape(on.shape + (1,) * (u.ndim - 1)), u, 0.0), axis=0)


def _cholesky_rolled(a):
    """``cholesky`` as a ``fori_loop`` over the columns (the same steps)."""
    k = a.shape[-1]
    idx = np.arange(k)

    def column(j, carry):
        a, low = carry
        on_j = idx == j
        col = _pick(a, on_j)  # (row j = column j: a stays symmetric)
        piv = jnp.sum(jnp.where(on_j, col, 0.0))
        d = jnp.sqrt(jnp.where(piv > 0, piv, jnp.nan))
        below = jnp.where(idx > j, col * (1.0 / d), 0.0)
        low = jnp.where(on_j[None, :], jnp.where(on_j, d, below)[:, None], low)
        return a - below[:, None] * below[None, :], low

    return lax.fori_loop(0, k, column, (a, jnp.zeros_like(a)))[1]


def _solve_rolled(low, b, rdiag):
    """``L L^T x = b`` by column steps in ``fori_loop``s."""
    k = low.shape[-1]
    idx = np.arange(k)
    z = b if b.ndim == 2 else b[:, None]
    rd = rdiag[:, None]

    def forward(j, z):  # L z = b: z_j final, then removed from the rows below
        on_j = idx == j
        zj = _pick(z * rd, on_j)
        col = jnp.where(idx > j, _pick(low.T, on_j), 0.0)
        return jnp.where(on_j[:, None], zj[None, :], z - col[:, None] * zj[None, :])

    def backward(i, x):  # L^T x = z, from the last row up
        on_i = idx == k - 1 - i
        xi = _pick(x * rd, on_i)
        row = jnp.where(idx < k - 1 - i, _pick(low, on_i), 0.0)
        return jnp.where(on_i[:, None], xi[None, :], x - row[:, None] * xi[None, :])

    x = lax.fori_loop(0, k, backward, lax.fori_loop(0, k, forward, z))
    return x if b.ndim == 2 else x[:, 0]


def spd_solver(a):
    """``(solve, pd)`` for a symmetric ``(k, k)`` matrix ``a``: ``solve(b) = a^{-1} b`` (``b`` a
    vector or a matrix of columns) by one factorisation, and whether ``a`` is (numerically)
    positive definite (where not, ``solve`` gives NaN).

    Up to ``UNROLL`` the Cholesky factor and unrolled substitutions; above, :func:`inverse_cholesky`
    and ``a^{-1}`` itself, so that each solve is one batched product: the rolled substitutions
    take ``2k`` dependent steps per solve, each a pass over the batch's factors (1000 KKT
    systems of size 12 with three right-hand-side solves: 16 ms, against 4 ms this way).
    """
    if a.shape[-1] <= UNROLL:
        low = cholesky(a)
        return (lambda b: chol_solve(low, b)), jnp.all(jnp.isfinite(low))
    inv_low = inverse_cholesky(a)
    a_inv = inv_low.T @ inv_low
    return (lambda b: a_inv @ b), jnp.all(jnp.isfinite(inv_low))


def inverse_cholesky(a):
    """``L^{-1}`` for the lower Cholesky factor ``L`` of a symmetric positive-definite ``(k, k)``
    matrix (NaN if not PD), so that ``a^{-1} = L^{-T} L^{-1}``, in a ``fori_loop`` over the columns.

    Symmetric Gaussian elimination that records its row operations: each step ``j`` subtracts
    ``l_i = a_ij / a_jj`` times row ``j`` from the rows ``i > j`` of ``a`` (its trailing block,
    as :func:`cholesky` does) and of ``W`` (from ``I``), so that ``W a W^T = diag(pivots)``, and
    ``L^{-1} = diag(pivots)^{-1/2} W``: twice the work of the factor alone, and no substitution.
    """
    k = a.shape[-1]
    idx = np.arange(k)

    def step(j, carry):
        a, w, piv = carry
        on_j = idx == j
        col = _pick(a, on_j)  # (row j = column j: a stays symmetric)
        p = jnp.sum(jnp.where(on_j, col, 0.0))
        mult = jnp.where(idx > j, col * (1.0 / p), 0.0)
        a = a - (p * mult)[:, None] * mult[None, :]
        w = w - mult[:, None] * _pick(w, on_j)[None, :]
        return a, w, jnp.where(on_j, p, piv)

    init = (a, jnp.eye(k, dtype=a.dtype), jnp.zeros((k,), a.dtype))
    _, w, piv = lax.fori_loop(0, k, step, init)
    return (1.0 / jnp.sqrt(jnp.where(piv > 0, piv, jnp.nan)))[:, None] * w
