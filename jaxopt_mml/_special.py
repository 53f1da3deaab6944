"""The regularised upper incomplete gamma function ``Q(a, x)`` (private).

``Q(a, x) = Gamma(a, x) / Gamma(a) = 1 / Gamma(a) int_x^inf t^(a-1) e^-t dt`` for ``a > 0``,
``x >= 0``; ``chi2.sf(c, k) = Q(k / 2, c / 2)``. Replaces ``jax.scipy.special.gammaincc``, whose
relative error grows with ``a`` (8e-10 at ``a = 5e5`` in float64, 50% in float32) and whose run
time does too (``O(sqrt(a))`` loop steps). Per element, one of:

* Temme's uniform asymptotic expansion [1] (DLMF 8.12) for ``a > 20`` and
  ``-0.7 <= (x - a) / a <= 1``, where the recurrences below would need ``O(sqrt(a))`` steps. With
  ``lambda = x / a``, ``eta = sign(lambda - 1) sqrt(2 (lambda - 1 - log lambda))``,

      Q(a, x) = erfc(eta sqrt(a / 2)) / 2 + exp(-a eta^2 / 2) / sqrt(2 pi a) sum_k C_k(eta) a^-k,

  ``C_k(eta) = sum_n d[k, n] eta^n`` (DLMF 8.12.12), coefficients computed exactly (rational
  arithmetic) at the first trace, once per process (not at import). The terms do not cancel:
  the relative accuracy holds into the far tail.
  ``erfc(|z|) = Q(1/2, z^2)`` is computed by the recurrences below (one run per element: the
  element's own ``Q(a, x)`` or this).
* ``x < max(a + 1, 1.5)``: ``Q = 1 - P`` (``Q`` is not small there) with the power series
  ``P(a, x) = x^a e^-x / Gamma(a) sum_n x^n / (a (a + 1) ... (a + n))`` (DLMF 8.7.1).
* elsewhere Legendre's continued fraction ``Q = x^a e^-x / Gamma(a) / (x + 1 - a - 1 (1 - a) /
  (x + 3 - a - ...))`` (DLMF 8.9.2) by the modified Lentz method [2].

Both recurrences run side by side in one ``fori_loop`` of 90 steps (they converge within 82
wherever they are used), which costs less compile time than a ``while_loop`` with a convergence
test. The prefactor ``x^a e^-x / Gamma(a)`` uses Stirling's series (no ``lgamma``), as
``exp(-a (lambda - 1 - log lambda)) sqrt(a / (2 pi)) / Gamma*(a)`` for ``a >= 10`` so that no
large logarithms cancel. (XLA's ``erfc`` and a ``lax.cond`` that skips the recurrences when no
element needs them were measured and dropped: 0.2-0.5 s more compile time.)

References:
    [1] N. M. Temme, "The asymptotic expansion of the incomplete gamma functions", SIAM J. Math.
        Anal. 10 (1979) 757-766.
    [2] W. H. Press et al., Numerical Recipes, 3rd ed. (2007), section 6.2 (``gser``, ``gcf``).
    [3] NIST Digital Library of Mathematical Functions, sections 5.11, 8.7, 8.9, 8.12.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from ._backend import wide_backend

__all__ = ["gammaincc"]

_TEMME_MIN_A = 20.0  # Temme's expansion for a > 20 ...
_TEMME_T = (-0.7, 1.0)  # ... and -0.7 <= (x - a) / a <= 1 (then -1.004 <= eta <= 0.784)
_TEMME_ETA_MAX = 1.005  # a bound on |eta| there
_TEMME_MIN_SUM = 0.25  # |sum_k C_k(eta) a^-k| >= 0.27 there (C_0 is -0.42 .. -0.27)
_TEMME_K = 13  # terms C_0 .. C_12 in 1 / a (C_12 / 20^12 < 2e-16 |C_0|) ...
_TEMME_N = 40  # ... and up to 40 Taylor terms of each C_k in eta, fewer where they are not needed
_STIRLING_MIN_A = 10.0  # Stirling's series for log Gamma*(a) from here (8 terms: < 1e-16)
_SERIES_MAX_X = 1.5  # the power series for x < max(a + 1, 1.5), the continued fraction beyond
_STEPS = 90  # both converge within 82 steps wherever they are used (module docstring)


def _unroll() -> int:
    """Loop steps per turn: 1 on a CPU (compile time); 10 on a GPU or TPU, where every loop turn
    costs kernel launches and a synchronisation with the host (9 turns instead of 90)."""
    return 10 if wide_backend() else 1


def _bernoulli(n: int) -> list[Fraction]:
    """Bernoulli numbers ``B_0 .. B_n`` (``B_1 = -1/2``)."""
    b = [Fraction(1)]
    for m in range(1, n + 1):
        b.append(-sum(math.comb(m + 1, j) * b[j] for j in range(m)) / (m + 1))
    return b


def _stirling_log_coefficients(n: int) -> list[Fraction]:
    """``s_j`` of ``log Gamma*(a) = sum_j s_j a^-j`` (``s_{2i-1} = B_2i / (2i (2i - 1))``)."""
    b = _bernoulli(n + 1)
    return [Fraction(0)] + [
        b[j + 1] / (j * (j + 1)) if j % 2 else Fraction(0) for j in range(1, n + 1)
    ]


@functools.cache
def _temme_coefficients(n_k: int, n_eta: int) -> np.ndarray:
    """``d[k, n]`` of ``C_k(eta) = sum_n d[k, n] eta^n`` (DLMF 8.12.11-13), exactly.

    ``lambda - 1 = mu(eta) = sum_m alpha_m eta^m`` inverts ``eta^2 / 2 = mu - log(1 + mu)``:
    differentiating gives ``mu mu' = eta (1 + mu)``, a recursion for ``alpha``. Then ``d[0, n] =
    (n + 2) alpha_{n+2}`` (``d[0, 0] = -1/3``) and ``d[k, n] = (-1)^k g_k d[0, n] + (n + 2)
    d[k-1, n+2]``, with ``g_k`` the coefficients of ``Gamma*(a) = sum_k g_k a^-k`` (DLMF 5.11.3).
    """
    m = n_eta + 2 * n_k + 2
    alpha = [Fraction(0), Fraction(1)]
    for j in range(2, m + 1):
        cross = sum((j + 1 - i) * alpha[i] * alpha[j + 1 - i] for i in range(2, j))
        alpha.append((alpha[j - 1] - cross) / (j + 1))
    s = _stirling_log_coefficients(n_k)
    g = [Fraction(1)]  # g = exp(sum_j s_j a^-j), by g' = (log g)' g
    for j in range(1, n_k):
        g.append(sum(i * s[i] * g[j - i] for i in range(1, j + 1)) / j)
    d0 = [Fraction(-1, 3)] + [(j + 2) * alpha[j + 2] for j in range(1, m - 2)]
    rows = [d0]
    for k in range(1, n_k):
        prev = rows[-1]
        rows.append(
            [(-1) ** k * g[k] * d0[j] + (j + 2) * prev[j + 2] for j in range(len(prev) - 2)]
        )
    return np.array([[float(c) for c in row[:n_eta]] for row in rows])


@functools.cache
def _temme_rows(dtype) -> tuple[tuple[float, ...], ...]:
    """The coefficients of each ``C_k`` that ``dtype`` needs, ``rows[k][n] = d[k, n]``.

    Row ``k`` stops where the terms after it, bounded by ``|d[k, n]| |eta|^n 20^-k`` with
    ``|eta| <= 1.005``, sum to at most a 13th of ``eps min |sum_k C_k a^-k| / 16``: over all
    rows less than ``eps / 60`` of the sum, relative. Rows with no term left are dropped. float64
    keeps 7-31 terms a row (268 in all; 13 x 26 before), float32 6 rows (57 terms), float16 3
    rows (19 terms).
    """
    eps = float(jnp.finfo(dtype).eps)
    table = _temme_coefficients(_TEMME_K, _TEMME_N)
    bound = np.abs(table) * _TEMME_ETA_MAX ** np.arange(_TEMME_N)
    bound *= _TEMME_MIN_A ** -np.arange(_TEMME_K, dtype=float)[:, None]
    tails = np.cumsum(bound[:, ::-1], axis=1)[:, ::-1]  # tails[k, n]: row k from term n on
    allowed = eps * _TEMME_MIN_SUM / 16 / _TEMME_K
    rows = [table[k, : int(np.argmax(tails[k] <= allowed))] for k in range(_TEMME_K)]
    while not rows[-1].size:
        rows.pop()
    return tuple(tuple(float(v) for v in row) for row in rows)


# log Gamma*(a) = sum_i s_{2i-1} a^(1-2i), i = 1..8: as a polynomial in 1 / a^2, times 1 / a.
_STIRLING = np.array([float(c) for c in _stirling_log_coefficients(15)[1::2]])
_ATANH = np.array([1.0 / (2 * j + 3) for j in range(11)])


def _log1pmx(t):
    """``t - log(1 + t)`` (``= lambda - 1 - log lambda`` for ``t = lambda - 1``).

    For ``|t| < 0.3``, where the difference cancels, ``t^2 / (2 + t) - 2 u^3 sum_j u^2j / (2j + 3)``
    with ``u = t / (2 + t)`` (from ``log(1 + t) = 2 atanh(u)``; ``u^2 < 0.032``, 11 terms).
    """
    near = jnp.abs(t) < 0.3
    tn = jnp.where(near, t, 0.0)
    u = tn / (2.0 + tn)
    series = tn * tn / (2.0 + tn) - 2.0 * u**3 * jnp.polyval(
        jnp.asarray(_ATANH[::-1], t.dtype), u * u
    )
    return jnp.where(near, series, t - jnp.log1p(t))


def _log_prefactor(a, x, f):
    """``log(x^a e^-x / Gamma(a))``; ``f = t - log(1 + t)``, ``t = (x - a) / a`` (for ``a >= 10``).

    Stirling's series ``log Gamma(z) = (z - 1/2) log z - z + log(2 pi) / 2 + S(z)``: for
    ``a >= 10`` at ``z = a``, as ``-a f + log(a / (2 pi)) / 2 - S(a)`` (no large logarithms
    cancel); below at ``z = a + 8``, with ``Gamma(a) = Gamma(a + 8) / (a (a + 1) ... (a + 7))``.
    Cheaper to compile than ``lax.lgamma``, and as accurate.
    """
    large = a >= _STIRLING_MIN_A
    z = jnp.where(large, a, a + 8.0)
    inv = 1.0 / z
    s_z = jnp.polyval(jnp.asarray(_STIRLING[::-1], a.dtype), inv * inv) * inv
    rising = a * (a + 1.0) * (a + 2.0) * (a + 3.0) * (a + 4.0) * (a + 5.0) * (a + 6.0) * (a + 7.0)
    rising = jnp.where(large, 1.0, rising)
    log_gamma = (z - 0.5) * jnp.log(z) - z + 0.5 * math.log(2.0 * math.pi) + s_z - jnp.log(rising)
    small_value = a * jnp.log(x) - x - log_gamma
    large_value = -a * f + 0.5 * jnp.log(a / (2.0 * math.pi)) - s_z
    return jnp.where(large, large_value, small_value)


def _q_by_recurrence(a, x, f):
    """``Q(a, x)`` by the power series of ``P`` or Legendre's continued fraction, ``x > 0``.

    Both run side by side for ``_STEPS`` steps in one ``fori_loop`` (a static trip count: no
    per-element convergence test to compile); each element keeps the one it needs. ``f`` as in
    :func:`_log_prefactor`. Accurate outside Temme's region.
    """
    tiny = jnp.finfo(a.dtype).tiny
    upward = (x < a + 1.0) | (x < _SERIES_MAX_X)

    def step(i, state):
        term, total, b, c, d, h = state
        n = i.astype(a.dtype)
        term = term * x / (a + n)  # series: x^n / (a (a + 1) ... (a + n))
        an = -n * (n - a)  # fraction: a_n = -n (n - a), b_n = x + 2n + 1 - a (modified Lentz)
        b = b + 2.0
        d = an * d + b
        d = 1.0 / jnp.where(jnp.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = jnp.where(jnp.abs(c) < tiny, tiny, c)
        return term, total + term, b, c, d, h * (c * d)

    b0 = jnp.where(upward, 1.0, x + 1.0 - a)
    state = (1.0 / a, 1.0 / a, b0, jnp.full_like(a, 1.0 / tiny), 1.0 / b0, 1.0 / b0)
    _, total, _, _, _, fraction = lax.fori_loop(1, _STEPS + 1, step, state, unroll=_unroll())
    prefactor = jnp.exp(_log_prefactor(a, x, f))
    return jnp.where(upward, 1.0 - prefactor * total, prefactor * fraction)


def _temme_tail(a, f, eta):
    """``exp(-a eta^2 / 2) / sqrt(2 pi a) sum_k C_k(eta) a^-k`` (``f = eta^2 / 2``).

    Horner's rule in ``eta`` for each ``C_k`` (:func:`_temme_rows`), then in ``1 / a``. On a CPU
    each ``C_k`` is a chain of its own on arrays of ``eta``'s shape, its coefficients Python
    numbers: as one chain on a ``(..., K)`` array sliced per ``k`` at the end (the same
    arithmetic: the shorter rows padded with leading zeros), XLA:CPU emitted the chain once per
    slice with the constant row's indexing, and LLVM took 0.3 s to compile that one kernel for
    10^4 p-values (0.05 s for one). On a GPU or TPU the ``(..., K)`` form is used, as it was in
    every GPU run before 2026-11-28: after the separate chains replaced it (1300 operations, 13 x
    26 terms then), a fit's compile time on an H200 was 1.5-2 s longer, in the part that computes
    its statistics (the fit under a jit that keeps params alone: 0.3 s). The powers
    ``eta ** arange(n)`` cost an exp and a log per entry (2.2 ms more for 10^4 p-values on a
    2-core CPU, 4% of a batched fit of 10^4 datasets), and a stack of products compiled slower.
    """
    rows = _temme_rows(np.dtype(eta.dtype))
    inv_a = 1.0 / a
    if wide_backend():
        width = max(len(row) for row in rows)
        d = np.zeros((len(rows), width), eta.dtype)  # C_k(eta) = sum_n d[k, n] eta^n
        for k, row in enumerate(rows):
            d[k, : len(row)] = row
        e = eta[..., None]
        c = jnp.broadcast_to(d[:, -1], eta.shape + (len(rows),))
        for n in range(width - 2, -1, -1):
            c = c * e + d[:, n]
        chains = [c[..., k] for k in range(len(rows))]
    else:
        chains = []
        for row in rows:
            c = jnp.full_like(eta, row[-1])
            for coefficient in row[-2::-1]:
                c = c * eta + coefficient
            chains.append(c)
    total = chains[-1]
    for c in chains[-2::-1]:
        total = total * inv_a + c
    return jnp.exp(-a * f) / jnp.sqrt(2.0 * math.pi * a) * total


@jax.custom_jvp
def gammaincc(a, x):
    """Regularised upper incomplete gamma function ``Q(a, x)`` (see the module docstring).

    Elementwise on broadcast ``a`` and ``x`` of one floating dtype. ``Q(a, 0) = 1``,
    ``Q(a, inf) = 0``, ``Q(inf, x) = 1`` for finite ``x``; NaN for ``a <= 0``, ``x < 0`` or NaN
    input. Differentiable in ``x`` (``dQ/dx = -x^(a-1) e^-x / Gamma(a)``), not in ``a``.

    Example:
        >>> round(float(gammaincc(jnp.asarray(1.0), jnp.asarray(2.0))), 6)  # e^-2
        0.135335
    """
    a, x = jnp.broadcast_arrays(a, x)
    valid = (a > 0) & (x >= 0)  # False for NaN
    regular = valid & (x > 0) & jnp.isfinite(x) & jnp.isfinite(a)
    a_raw, x_raw = a, x
    a = jnp.where(regular, a, 1.0)
    x = jnp.where(regular, x, 1.0)
    t = (x - a) / a
    temme = (a > _TEMME_MIN_A) & (t >= _TEMME_T[0]) & (t <= _TEMME_T[1])
    f = _log1pmx(t)
    eta = jnp.sign(t) * jnp.sqrt(2.0 * jnp.where(temme, f, 0.0))
    z = eta * jnp.sqrt(0.5 * a)
    # One run of the recurrences per element: Q(a, x) itself, or erfc(|z|) = Q(1/2, z^2) for
    # Temme's leading term (then a = 1/2 < 10: f is not used).
    z2 = jnp.maximum(z * z, jnp.finfo(x.dtype).tiny)
    q_rec = _q_by_recurrence(jnp.where(temme, 0.5, a), jnp.where(temme, z2, x), f)
    half_erfc = jnp.where(z >= 0, 0.5 * q_rec, 1.0 - 0.5 * q_rec)
    temme_a = jnp.where(temme, a, 2.0 * _TEMME_MIN_A)
    q = jnp.where(temme, half_erfc + _temme_tail(temme_a, jnp.where(temme, f, 0.0), eta), q_rec)
    edge = jnp.where(jnp.isinf(x_raw), 0.0, 1.0)  # x = inf; x = 0 or a = inf (finite x): 1
    del a_raw
    return jnp.where(regular, q, jnp.where(valid, edge, jnp.nan))


def _gammaincc_jvp(primals, tangents):
    a, x = primals
    da, dx = tangents
    q = gammaincc(a, x)
    # Symbolic zeros (an input not differentiated) are told apart from a tangent that is zero:
    # dQ/da is not implemented, and a tangent in a gives NaN rather than a silently wrong zero,
    # linearly (NaN * da), so that reverse mode can transpose it (a where(da == 0, 0, NaN) made
    # jax.grad in a fail with a bare AssertionError).
    a_free = not isinstance(da, SymbolicZero)
    if not a_free:
        da = jnp.zeros_like(a)
    if isinstance(dx, SymbolicZero):
        dx = jnp.zeros_like(x)
    a, x, da, dx = jnp.broadcast_arrays(a, x, da, dx)
    inner = (x > 0) & jnp.isfinite(x) & (a > 0) & jnp.isfinite(a)
    a_s, x_s = jnp.where(inner, a, 1.0), jnp.where(inner, x, 1.0)
    f = _log1pmx((x_s - a_s) / a_s)
    density = jnp.exp(_log_prefactor(a_s, x_s, f)) / x_s  # x^(a-1) e^-x / Gamma(a)
    at_zero = jnp.where(a < 1, -jnp.inf, jnp.where(a == 1, -1.0, 0.0))  # the limit x -> 0+
    dq_dx = jnp.where(inner, -density, jnp.where(x == 0, at_zero, 0.0))
    tangent = dq_dx * dx
    return q, tangent + jnp.nan * da if a_free else tangent


gammaincc.defjvp(_gammaincc_jvp, symbolic_zeros=True)
