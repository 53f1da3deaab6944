"""The regularised upper incomplete gamma function ``Q(a, x)``, cheap to compile (private).

``Q(a, x) = Gamma(a, x) / Gamma(a) = 1 / Gamma(a) int_x^inf t^(a-1) e^-t dt`` for ``a > 0``,
``x >= 0``. ``jax.scipy.special.gammaincc`` computes it too, but its XLA expansion (two while
loops, ~500 HLO operations) costs about 0.3 s of compile time on a small CPU, and on XLA:CPU any
``while`` loop costs ~0.1 s. This one has no loop and one ``lgamma``: every sum has a fixed number
of terms, evaluated side by side. Per element, one of:

* Temme's uniform asymptotic expansion [1] (DLMF 8.12) for ``a > 20`` and
  ``-0.7 <= (x - a) / a <= 1``, where the sums below would need ``O(sqrt(a))`` terms. With
  ``lambda = x / a``, ``eta = sign(lambda - 1) sqrt(2 (lambda - 1 - log lambda))``,

      Q(a, x) = erfc(eta sqrt(a / 2)) / 2 + exp(-a eta^2 / 2) / sqrt(2 pi a) sum_k C_k(eta) a^-k,

  ``C_k(eta) = sum_n d[k, n] eta^n`` (DLMF 8.12.12), with coefficients computed exactly (rational
  arithmetic) at import. The two terms do not cancel: the relative accuracy holds into the far
  tail. ``erfc(|z|) = Q(1/2, z^2)`` is computed by the sums below.
* ``x < a + 1``: ``Q = 1 - P`` (``Q`` is not small there) with the power series (DLMF 8.7.1)
  ``P(a, x) = x^a e^-x / Gamma(a + 1) sum_k x^k / ((a + 1) ... (a + k))``.
* ``x >= a + 1``: the downward recurrence ``Q(a, x) = x^(a-1) e^-x / Gamma(a) + Q(a - 1, x)``
  (DLMF 8.8.2) down to ``a0 = a - ceil(a) + 1`` in ``(0, 1]``, i.e. ``Q = x^(a-1) e^-x / Gamma(a)
  sum_k (a - 1) ... (a - k) / x^k + Q(a0, x)``, and ``Q(a0, x) = x^(a0-1) e^-x / Gamma(a0) int_0^inf
  e^-v (1 + v / x)^(a0 - 1) dv`` by Gauss-Laguerre quadrature (exact for integer ``a``: ``a0 = 1``).

Outside Temme's region the ratio of successive terms is at most 1/2 (``a > 20``) or the sums are
short (``a <= 20``): 56 terms suffice everywhere (at most 50 matter); the ``k``-th term is
``exp(+-k log x - lgamma(b +- k) + lgamma(b))``, one ``lgamma`` of all of them. The prefactor
``x^a e^-x / Gamma(a)`` is evaluated as ``exp(-a (lambda - 1 - log lambda)) sqrt(a / (2 pi)) /
Gamma*(a)`` for ``a >= 10``, with Stirling's series for ``log Gamma*(a)``, so that no large
logarithms cancel.

References:
    [1] N. M. Temme, "The asymptotic expansion of the incomplete gamma functions", SIAM J. Math.
        Anal. 10 (1979) 757-766.
    [2] NIST Digital Library of Mathematical Functions, sections 5.11, 8.7, 8.8, 8.12.
    [3] A. R. DiDonato and A. H. Morris, "Computation of the incomplete gamma function ratios and
        their inverse", ACM TOMS 12 (1986) 377-393.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["gammaincc"]

_TEMME_MIN_A = 20.0  # Temme's expansion for a > 20 ...
_TEMME_T = (-0.7, 1.0)  # ... and -0.7 <= (x - a) / a <= 1 (then |eta| < 0.85)
_TEMME_K = 13  # terms C_0 .. C_12 in 1 / a
_TEMME_N = 26  # Taylor terms of each C_k in eta (truncation below 1e-16 relative there)
_STIRLING_MIN_A = 10.0  # Stirling's series for log Gamma*(a) from here (8 terms: < 1e-16)
_SERIES_MAX_X = 1.5  # the power series for x < max(a + 1, 1.5), the continued fraction beyond
_STEPS = 80  # both converge within 75 steps outside Temme's region (module docstring)


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


_TEMME_D = _temme_coefficients(_TEMME_K, _TEMME_N)
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


def _log_prefactor(a, x, lgamma_a):
    """``log(x^a e^-x / Gamma(a))``: directly for ``a < 10``, by Stirling's series beyond."""
    large = a >= _STIRLING_MIN_A
    a_large = jnp.where(large, a, _STIRLING_MIN_A)
    inv2 = 1.0 / (a_large * a_large)
    log_gamma_star = jnp.polyval(jnp.asarray(_STIRLING[::-1], a.dtype), inv2) / a_large
    stirling = -a_large * _log1pmx((x - a_large) / a_large)
    stirling = stirling + 0.5 * jnp.log(a_large / (2.0 * math.pi)) - log_gamma_star
    return jnp.where(large, stirling, a * jnp.log(x) - x - lgamma_a)


def _q_by_recurrence(a, x):
    """``Q(a, x)`` by the power series of ``P`` or Legendre's continued fraction, ``x > 0``.

    One ``fori_loop`` of ``_STEPS`` steps runs both recurrences on a stacked state (one XLA
    kernel per step: the loop costs little compile time). Accurate outside Temme's region.
    """
    eps = jnp.finfo(a.dtype).eps
    tiny = jnp.finfo(a.dtype).tiny
    upward = (x < a + 1.0) | (x < _SERIES_MAX_X)
    b0 = x + 1.0 - a

    def step(i, state):
        n = i.astype(a.dtype)
        term, total, b, c, d, h = (state[..., j] for j in range(6))
        term = term * x / (a + n)  # series: x^n / (a (a + 1) ... (a + n))
        an = -n * (n - a)  # fraction: a_n = -n (n - a), b_n = x + 2n + 1 - a (modified Lentz)
        b = b + 2.0
        d = an * d + b
        d = 1.0 / jnp.where(jnp.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = jnp.where(jnp.abs(c) < tiny, tiny, c)
        return jnp.stack([term, total + term, b, c, d, h * (c * d)], axis=-1)

    inv_b0 = 1.0 / jnp.where(upward, 1.0, b0)
    state = jnp.stack([1.0 / a, 1.0 / a, b0, jnp.full_like(a, 1.0 / tiny), inv_b0, inv_b0], -1)
    state = lax.fori_loop(1, _STEPS + 1, step, state)
    del eps
    prefactor = jnp.exp(_log_prefactor(a, x, lax.lgamma(a)))
    return jnp.where(upward, 1.0 - prefactor * state[..., 1], prefactor * state[..., 5])


def _temme_tail(a, f, eta):
    """``exp(-a eta^2 / 2) / sqrt(2 pi a) sum_k C_k(eta) a^-k`` (``f = eta^2 / 2``)."""
    powers = eta[..., None] ** jnp.arange(_TEMME_N, dtype=a.dtype)
    c = powers @ jnp.asarray(_TEMME_D.T, a.dtype)  # (..., K): C_k(eta)
    inv_powers = (1.0 / a)[..., None] ** jnp.arange(_TEMME_K, dtype=a.dtype)
    return jnp.exp(-a * f) / jnp.sqrt(2.0 * math.pi * a) * jnp.sum(c * inv_powers, axis=-1)


@jax.custom_jvp
def gammaincc(a, x):
    """Regularised upper incomplete gamma function ``Q(a, x)`` (see the module docstring).

    Elementwise on broadcast ``a`` and ``x`` of one floating dtype. ``Q(a, 0) = 1``,
    ``Q(a, inf) = 0``, ``Q(inf, x) = 1`` for finite ``x``; NaN for ``a <= 0``, ``x < 0`` or NaN
    input. Differentiable in ``x`` (``dQ/dx = -x^(a-1) e^-x / Gamma(a)``), not in ``a``.

    Example:
        >>> float(gammaincc(jnp.asarray(1.0), jnp.asarray(2.0)))  # e^-2
        0.1353352832366127
    """
    a, x = jnp.broadcast_arrays(a, x)
    valid = (a > 0) & (x >= 0)  # False for NaN
    regular = valid & (x > 0) & jnp.isfinite(x) & jnp.isfinite(a)
    a = jnp.where(regular, a, 1.0)
    x = jnp.where(regular, x, 1.0)
    t = (x - a) / a
    temme = (a > _TEMME_MIN_A) & (t >= _TEMME_T[0]) & (t <= _TEMME_T[1])
    f = jnp.where(temme, _log1pmx(t), 0.0)
    eta = jnp.sign(t) * jnp.sqrt(2.0 * f)
    z = eta * jnp.sqrt(0.5 * a)
    q_rec = _q_by_recurrence(jnp.where(temme, 1.0, a), jnp.where(temme, 1.0, x))
    temme_a = jnp.where(temme, a, 2.0 * _TEMME_MIN_A)
    q_temme = 0.5 * lax.erfc(z) + _temme_tail(temme_a, f, eta)
    q = jnp.where(temme, q_temme, q_rec)
    edge = jnp.where(x == 0, 1.0, jnp.where(jnp.isinf(x), 0.0, 1.0))  # x = 0, x = inf, a = inf
    return jnp.where(regular, q, jnp.where(valid, edge, jnp.nan))


@gammaincc.defjvp
def _gammaincc_jvp(primals, tangents):
    a, x = primals
    da, dx = tangents
    q = gammaincc(a, x)
    a, x, da, dx = jnp.broadcast_arrays(a, x, da, dx)
    inner = (x > 0) & jnp.isfinite(x) & (a > 0) & jnp.isfinite(a)
    a_s, x_s = jnp.where(inner, a, 1.0), jnp.where(inner, x, 1.0)
    density = jnp.exp(_log_prefactor(a_s, x_s, lax.lgamma(a_s))) / x_s  # x^(a-1) e^-x / Gamma(a)
    at_zero = jnp.where(a < 1, -jnp.inf, jnp.where(a == 1, -1.0, 0.0))  # the limit x -> 0+
    dq_dx = jnp.where(inner, -density, jnp.where(x == 0, at_zero, 0.0))
    # dQ/da is not implemented: a tangent in a gives NaN rather than a silently wrong zero.
    dq_da = jnp.where(da == 0, 0.0, jnp.nan)
    return q, dq_dx * dx + dq_da
