"""Taylor-mode (``jet``) rules that stay accurate where JAX's lose their digits (private).

JAX's ``jax.experimental.jet`` propagates truncated Taylor series (coefficients ``u_0 .. u_n``
of ``u(s)``) through each primitive. Four of its rules are wrong or ill-conditioned at points
where the function is smooth:

* ``pow(x, y)`` goes through ``exp(y log x)``: the series of ``log x`` divides by ``x_0`` at
  every order, so near ``x_0 = 0`` the coefficients of ``x ** 2.0`` come out finite and wrong
  (``c_4 = -101`` at ``x_0 = 1e-9``), and NaN for ``x_0 <= 0``. Here, for the constant part
  ``c = y_0`` of the exponent, J. C. P. Miller's recurrence (Knuth, TAOCP vol. 2, 4.7)
  ``k x_0 b_k = sum_{j=1..k} (c j - (k - j)) x_j b_{k-j}``, exact for integral ``c`` (its
  factors vanish) and valid for negative ``x_0``; at ``x_0 = 0`` with an integral ``c >= 0``,
  the series raised to ``c`` by squaring; times ``exp((y - y_0) log x)`` where the exponent has
  a series of its own.
* ``atan2(x, y)`` goes through ``x / y``: near ``y_0 = 0`` the quotient's series explodes
  (``c_3 = -6.8e16`` for ``atan2(sin t, cos t)`` at ``t = pi/2``). Here
  ``theta' = (y x' - x y') / (x^2 + y^2)``, whose denominator vanishes only at the origin.
* ``asinh`` goes through ``log(x + sqrt(x^2 + 1))``, which cancels for large negative ``x``.
  Here ``asinh' = (1 + x^2)^(-1/2)`` by Miller's recurrence (its base is at least 1).
* ``rem`` (C's ``fmod``) was computed as ``x - y floor(x / y)`` (Python's ``%``): wrong for
  ``x / y < 0``, its value included. Here ``x - y trunc(x / y)``.

:func:`accurate_rules` installs these for the duration of a ``jet`` call of this library and
puts JAX's back afterwards.
"""

from __future__ import annotations

import contextlib
import threading

import jax.numpy as jnp
from jax import lax
from jax.experimental import jet as _jet

__all__ = ["accurate_rules"]

_LOCK = threading.RLock()


def _miller(a: list, c) -> list:
    """Coefficients of ``a(s) ** c`` for a constant ``c`` (``a_0 != 0``).

    Every coefficient is a multiple of ``b_0 = a_0 ** c``: where that is 0 (a base of 0, or a
    power that underflows, ``(1e-140) ** 2.5``) the recurrence would return zeros for
    coefficients that are infinite or merely tiny or huge (``c_3 = 3e69`` there). They are NaN
    instead, so that the caller's fallback (nested forward mode) takes over; the recurrence
    itself divides by a finite stand-in for ``a_0 = 0``, and the NaN is selected in at the end,
    so that a select between this and another series has no NaN to pass to reverse-mode
    derivatives."""
    b0 = lax.pow(a[0], c)
    b = [b0]
    a0 = jnp.where(a[0] == 0, 1.0, a[0])
    for k in range(1, len(a)):
        total = sum((c * j - (k - j)) * a[j] * b[k - j] for j in range(1, k + 1))
        b.append(total / (k * a0))
    lost = b0 == 0
    return [b0] + [jnp.where(lost, jnp.nan, t) for t in b[1:]]


def _integral_power(a: list, c) -> list:
    """``a(s) ** c`` for an integral ``0 <= c`` by squaring (bits of ``c`` up to the order:
    where ``a_0 = 0`` a higher power has no term of that order), for the base 0 that Miller's
    recurrence divides by."""
    n = len(a)
    one = [jnp.ones_like(a[0])] + [jnp.zeros_like(a[0])] * (n - 1)
    result, square = one, a
    bits = max(1, n.bit_length())
    c_int = jnp.clip(jnp.round(c), 0, 2**bits - 1).astype(jnp.int32)
    for i in range(bits):
        take = (c_int >> i) & 1 == 1
        product = _mul(result, square)
        result = [jnp.where(take, p, r) for p, r in zip(product, result, strict=True)]
        square = _mul(square, square)
    too_high = jnp.round(c) >= 2**bits  # every term of order < n vanishes
    return [jnp.where(too_high, jnp.zeros_like(r), r) for r in result]


def _mul(u: list, v: list) -> list:
    return [sum(u[i] * v[k - i] for i in range(k + 1)) for k in range(len(u))]


def _integrate(value, d: list) -> list:
    """``[value, d_0 / 1, d_1 / 2, ...]``: the series whose derivative has coefficients ``d``."""
    return [value] + [d[k - 1] / k for k in range(1, len(d) + 1)]


def _derivative(u: list) -> list:
    return [(j + 1) * u[j + 1] for j in range(len(u) - 1)]


def _log(u: list) -> list:
    v = [lax.log(u[0])]
    for k in range(1, len(u)):
        v.append((u[k] - sum(j * v[j] * u[k - j] for j in range(1, k)) / k) / u[0])
    return v


def _exp(u: list) -> list:
    v = [lax.exp(u[0])]
    for k in range(1, len(u)):
        v.append(sum(j * u[j] * v[k - j] for j in range(1, k + 1)) / k)
    return v


def _pow_rule(primals_in, series_in):
    x0, y0 = primals_in
    x = [x0] + list(series_in[0])
    y = [y0] + list(series_in[1])
    at_zero = (x0 == 0) & (y0 >= 0) & (y0 == jnp.round(y0))
    b = [
        jnp.where(at_zero, p, m)
        for p, m in zip(_integral_power(x, y0), _miller(x, y0), strict=True)
    ]
    varying = jnp.zeros((), bool)
    for t in y[1:]:
        varying = varying | jnp.any(t != 0)
    # exp((y - y_0) log x), needed only where the exponent varies (log's series divides by x_0).
    dy = [jnp.zeros_like(y0)] + y[1:]
    log_x = _log([jnp.where(varying, x0, 1.0)] + x[1:])  # log 1 where unused: no NaN to select
    prod = _mul(b, _exp(_mul(dy, log_x)))
    # The value is x0 ** y0 itself (exp(0 * log 0) would make it NaN at a base of 0).
    out = [jnp.where(varying, p, q) for p, q in zip(prod[1:], b[1:], strict=True)]
    return b[0], out


def _atan2_rule(primals_in, series_in):
    x0, y0 = primals_in
    x = [x0] + list(series_in[0])
    y = [y0] + list(series_in[1])
    n = len(x) - 1
    xp, yp = _derivative(x), _derivative(y)
    num = [a - b for a, b in zip(_mul(y[:n], xp), _mul(x[:n], yp), strict=True)]
    den = [a + b for a, b in zip(_mul(x[:n], x[:n]), _mul(y[:n], y[:n]), strict=True)]
    d = []
    for m in range(n):  # num / den, term by term
        d.append((num[m] - sum(den[i] * d[m - i] for i in range(1, m + 1))) / den[0])
    out = _integrate(lax.atan2(x0, y0), d)
    return out[0], out[1:]


def _asinh_rule(primals_in, series_in):
    (x0,) = primals_in
    x = [x0] + list(series_in[0])
    n = len(x) - 1
    base = [a + b for a, b in zip([jnp.ones_like(x0)] + [0.0] * n, _mul(x, x), strict=True)]
    c = _miller(base[:n], -0.5)  # (1 + x^2)^(-1/2)
    out = _integrate(lax.asinh(x0), _mul(c, _derivative(x)))
    return out[0], out[1:]


def _rem_rule(primals_in, series_in):
    x0, y0 = primals_in
    value = lax.rem(x0, y0)
    quotient = lax.round((x0 - value) / y0)  # trunc(x / y), an integer
    return value, [a - quotient * b for a, b in zip(series_in[0], series_in[1], strict=True)]


_RULES = {
    lax.pow_p: _pow_rule,
    lax.atan2_p: _atan2_rule,
    lax.asinh_p: _asinh_rule,
    lax.rem_p: _rem_rule,
}


@contextlib.contextmanager
def accurate_rules():
    """JAX's ``jet`` rules for pow, atan2, asinh and rem replaced by this module's, in this block.

    Held under a lock (a ``jet`` traced meanwhile by another thread of this library waits; one of
    another library's would see these rules, which compute the same functions).
    """
    with _LOCK:
        saved = {p: _jet.jet_rules.get(p) for p in _RULES}
        _jet.jet_rules.update(_RULES)
        try:
            yield
        finally:
            for p, rule in saved.items():
                if rule is None:
                    _jet.jet_rules.pop(p, None)
                else:
                    _jet.jet_rules[p] = rule
