"""Small dense symmetric solves for the fitting iterations (private).

Fits have few parameters (k of 2 to a dozen), and batched fits solve one small ``k x k`` system per
dataset per iteration. LAPACK calls on such tiny matrices cost more in dispatch and compile time
than in arithmetic, so for ``k <= UNROLL_MAX`` the Cholesky factorisation and its solves are
unrolled into scalar expressions (vectorised across the batch by ``vmap``, fused by XLA, and fast
to compile). Larger systems use ``jnp.linalg``.

A matrix that is not (numerically) positive definite gives NaN in the factor: callers test for it.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

UNROLL_MAX = 8


def cholesky(a):
    """Lower Cholesky factor of a symmetric positive-definite ``(k, k)`` matrix (NaN if not PD)."""
    k = a.shape[-1]
    if k > UNROLL_MAX:
        return jnp.linalg.cholesky(a)
    low = [[None] * k for _ in range(k)]
    zero = jnp.zeros((), a.dtype)
    for j in range(k):
        s = a[j, j] - sum((low[j][m] * low[j][m] for m in range(j)), zero)
        d = jnp.sqrt(jnp.where(s > 0, s, jnp.nan))
        low[j][j] = d
        for i in range(j + 1, k):
            t = a[i, j] - sum((low[i][m] * low[j][m] for m in range(j)), zero)
            low[i][j] = t / d
    rows = [jnp.stack([low[i][j] if j <= i else zero for j in range(k)]) for i in range(k)]
    return jnp.stack(rows)


def chol_solve(low, b):
    """Solve ``L L^T x = b`` for a vector ``b`` given the lower factor ``L``."""
    k = low.shape[-1]
    if k > UNROLL_MAX:
        return cho_solve((low, True), b)
    z = [None] * k
    for i in range(k):
        z[i] = (b[i] - sum((low[i, m] * z[m] for m in range(i)), jnp.zeros((), b.dtype))) / low[
            i, i
        ]
    x = [None] * k
    for i in reversed(range(k)):
        acc = sum((low[m, i] * x[m] for m in range(i + 1, k)), jnp.zeros((), b.dtype))
        x[i] = (z[i] - acc) / low[i, i]
    return jnp.stack(x)


def chol_inverse(low):
    """``(L L^T)^{-1}`` from the lower factor ``L``."""
    k = low.shape[-1]
    if k > UNROLL_MAX:
        linv = solve_triangular(low, jnp.eye(k, dtype=low.dtype), lower=True)
        return linv.T @ linv
    eye = jnp.eye(k, dtype=low.dtype)
    cols = [chol_solve(low, eye[:, j]) for j in range(k)]
    return jnp.stack(cols, axis=1)
