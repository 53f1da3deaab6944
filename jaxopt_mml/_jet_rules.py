"""Taylor-mode (``jet``) rules that stay accurate where JAX's lose their digits, and those it
lacks (private).

JAX's ``jax.experimental.jet`` propagates truncated Taylor series (coefficients ``u_0 .. u_n``
of ``u(s)``) through each primitive. Eleven of its rules are wrong or ill-conditioned at points
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
* ``expm1``, ``log1p``, ``erfc``, ``atanh`` and ``acosh`` go through ``exp(x) - 1``,
  ``log(1 + x)``, ``1 - erf(x)``, ``log((1 + x) / (1 - x)) / 2`` and ``log(x + sqrt(x^2 - 1))``:
  ``log1p(1e-20)`` came out 0, ``erfc(6)`` 0 (it is 2e-17), ``expm1`` and ``atanh`` at ``1e-10``
  8e-8 off, ``acosh(1e200)`` inf with NaN coefficients. Here each value is the primitive's own,
  the series that of ``exp``, ``log(1 + x)``, and of the derivatives ``-2 exp(-x^2) / sqrt(pi)``,
  ``1 / (1 - x^2)`` (its constant term as ``(1 - x_0)(1 + x_0)``) and
  ``(x - 1)^(-1/2) (x + 1)^(-1/2)``; ``asinh``'s ``(1 + x^2)^(-1/2)`` is scaled by a power of 2
  near ``|x_0|`` (``1 + x_0^2`` overflowed from ``1e154`` on).
* ``tanh`` goes through ``2 logistic(2 x) - 1`` (``tanh(1e-20)`` was 0), and ``logistic``'s
  recurrence forms ``1 - s_0``, which rounds to 0 for large ``x_0`` (the derivatives ``e^-40`` of
  ``sigmoid`` at 40, ``4 e^-60`` of ``tanh`` at 30, came back 0). Here ``tanh`` by its
  differential equation ``t' = x' (1 - t^2)`` with the constant term ``sech(x_0)^2``, and
  ``logistic`` with ``1 - s_0`` as ``logistic(-x_0)``.

:func:`accurate_rules` installs these for the duration of a ``jet`` call of this library and
puts JAX's back afterwards.

It also adds rules for primitives ``jet`` has none for (without them the caller falls back to
nested forward mode, whose cost grows like 2^n): ``atan``, ``asin`` and ``acos`` as the integral
of ``x' / (1 + x^2)`` and ``+-x' (1 - x^2)^(-1/2)`` (Miller's recurrence); ``tan`` by its
differential equation ``t' = x' (1 + t^2)``, one coefficient at a time; ``cbrt`` by Miller's
recurrence from the real cube root; ``exp2`` as ``exp(x log 2)``; ``lgamma`` and ``digamma`` from
their derivatives at ``x_0`` (``digamma``, ``polygamma``) composed with ``x(s) - x_0``.
"""

from __future__ import annotations

import contextlib
import math
import threading

import jax.numpy as jnp
import jax.scipy.special as _special
from jax import lax
from jax.experimental import jet as _jet

__all__ = ["accurate_rules"]

_LOCK = threading.RLock()


def _miller(a: list, c, b0=None) -> list:
    """Coefficients of ``a(s) ** c`` for a constant ``c`` (``a_0 != 0``), its value ``b0`` where
    given (the real cube root of a negative base, which ``pow`` makes NaN).

    Every coefficient is a multiple of ``b_0 = a_0 ** c``: where that is 0 (a base of 0, or a
    power that underflows, ``(1e-140) ** 2.5``) the recurrence would return zeros for
    coefficients that are infinite or merely tiny or huge (``c_3 = 3e69`` there). They are NaN
    instead, so that the caller's fallback (nested forward mode) takes over; the recurrence
    itself divides by a finite stand-in for ``a_0 = 0``, and the NaN is selected in at the end,
    so that a select between this and another series has no NaN to pass to reverse-mode
    derivatives."""
    b0 = lax.pow(a[0], c) if b0 is None else b0
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


def _recip(u: list) -> list:
    """``1 / u(s)``, term by term (``u_0 != 0``)."""
    v = [1 / u[0]]
    for k in range(1, len(u)):
        v.append(-sum(u[i] * v[k - i] for i in range(1, k + 1)) / u[0])
    return v


def _one_plus(c, u: list) -> list:
    """``c + u(s)`` (a constant added to the value only)."""
    return [c + u[0]] + list(u[1:])


def _by_derivative_series(primitive, dphi):
    """The rule of ``phi(x)`` from the series of its derivative: ``dphi(x)`` maps the series of
    ``x(s)`` (order ``n - 1``) to that of ``phi'(x(s))``; then ``phi(x(s))`` is ``phi(x_0)``
    (the primitive's own value) plus the integral of ``phi'(x(s)) x'(s)``."""

    def rule(primals_in, series_in, **params):
        (x0,) = primals_in
        x = [x0] + list(series_in[0])
        out = _integrate(primitive.bind(x0, **params), _mul(dphi(x[:-1]), _derivative(x)))
        return out[0], out[1:]

    return rule


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


def _asinh_derivative(x: list) -> list:
    # (1 + x^2)^(-1/2) as (s^-2 + (x / s)^2)^(-1/2) / s, s a power of 2 near |x_0| (at least
    # 1): 1 + x_0^2 overflowed from |x_0| = 1e154 on, and NaN coefficients came back there.
    scale = jnp.exp2(jnp.floor(jnp.log2(jnp.maximum(1.0, jnp.abs(x[0])))))
    y = [t / scale for t in x]
    return [t / scale for t in _miller(_one_plus(1.0 / scale**2, _mul(y, y)), -0.5)]


def _rem_rule(primals_in, series_in):
    x0, y0 = primals_in
    value = lax.rem(x0, y0)
    quotient = lax.round((x0 - value) / y0)  # trunc(x / y), an integer
    return value, [a - quotient * b for a, b in zip(series_in[0], series_in[1], strict=True)]


def _expm1_rule(primals_in, series_in, **params):
    # exp's series; the value expm1(x_0) itself (jet's exp(x_0) - 1 cancels near 0).
    (x0,) = primals_in
    out = _exp([x0] + list(series_in[0]))
    return lax.expm1_p.bind(x0, **params), out[1:]


def _log1p_rule(primals_in, series_in, **params):
    # log's series of 1 + x(s); the value log1p(x_0) itself (jet's log(1 + x_0) is 0 below 1e-16).
    (x0,) = primals_in
    out = _log([1.0 + x0] + list(series_in[0]))
    return lax.log1p_p.bind(x0, **params), out[1:]


def _erfc_derivative(x: list) -> list:
    # erfc' = -2 / sqrt(pi) exp(-x^2); the value is erfc(x_0) itself (jet's 1 - erf(x_0) is 0
    # from x_0 = 6 on, where erfc is 2e-17).
    return [(-2.0 / math.sqrt(math.pi)) * t for t in _exp([-t for t in _mul(x, x)])]


def _atanh_derivative(x: list) -> list:
    # atanh' = 1 / (1 - x^2), its constant term as (1 - x_0)(1 + x_0); jet's
    # 0.5 log((1 + x) / (1 - x)) cancels near 0.
    square = _mul(x, x)
    return _recip([(1.0 - x[0]) * (1.0 + x[0])] + [-t for t in square[1:]])


def _acosh_derivative(x: list) -> list:
    # acosh' = (x - 1)^(-1/2) (x + 1)^(-1/2); jet's log(x + sqrt(x^2 - 1)) overflows from
    # x_0 = 1e154 on (inf and NaN where acosh is 355).
    return _mul(_miller(_one_plus(-1.0, x), -0.5), _miller(_one_plus(1.0, x), -0.5))


def _tanh_rule(primals_in, series_in, **params):
    # t' = x' (1 - t^2), as tan's, with the constant term of 1 - t^2 as sech(x_0)^2: jet's
    # 2 logistic(2 x) - 1 cancelled near 0 (tanh(1e-20) was 0) and 1 - t_0^2 rounds to 0 for
    # |x_0| > 19 (the derivatives 4 e^(-2 |x_0|) came back 0).
    (x0,) = primals_in
    x = [x0] + list(series_in[0])
    xp = _derivative(x)
    t = [lax.tanh_p.bind(x0, **params)]
    w = [(1.0 / lax.cosh(x0)) ** 2]  # 1 - t^2, term by term
    for k in range(1, len(x)):
        m = k - 1
        if m > 0:
            w.append(-sum(t[i] * t[m - i] for i in range(m + 1)))
        t.append(sum(xp[j] * w[m - j] for j in range(m + 1)) / k)
    return t[0], t[1:]


def _logistic_rule(primals_in, series_in, **params):
    # s' = s (1 - s), jet's recurrence with 1 - s_0 as logistic(-x_0): 1 - s_0 rounds to 0 for
    # x_0 > 37, and the derivatives e^(-x_0) came back 0.
    (x0,) = primals_in
    u = [x0] + list(series_in[0])
    v = [lax.logistic_p.bind(x0, **params)]
    rest = lax.logistic_p.bind(-x0, **params)  # 1 - s_0
    e = [v[0] * rest]  # s (1 - s), term by term
    for k in range(1, len(u)):
        v.append(sum(j * e[k - j] * u[j] for j in range(1, k + 1)) / k)
        e.append(rest * v[k] - sum(v[j] * v[k - j] for j in range(1, k + 1)))
    return v[0], v[1:]


def _atan_derivative(x: list) -> list:
    return _recip(_one_plus(1.0, _mul(x, x)))  # 1 / (1 + x^2)


def _asin_acos_derivative(sign):
    def dphi(x: list) -> list:
        square = _mul(x, x)
        base = [1.0 - square[0]] + [-t for t in square[1:]]
        return [sign * t for t in _miller(base, -0.5)]  # +-(1 - x^2)^(-1/2)

    return dphi


def _tan_rule(primals_in, series_in, **params):
    # t' = x' (1 + t^2): the coefficient k of t needs those of 1 + t^2 below k only.
    (x0,) = primals_in
    x = [x0] + list(series_in[0])
    xp = _derivative(x)
    t = [lax.tan_p.bind(x0, **params)]
    w = []  # 1 + t^2, term by term
    for k in range(1, len(x)):
        m = k - 1
        w.append((1.0 if m == 0 else 0.0) + sum(t[i] * t[m - i] for i in range(m + 1)))
        t.append(sum(xp[j] * w[m - j] for j in range(m + 1)) / k)
    return t[0], t[1:]


def _cbrt_rule(primals_in, series_in, **params):
    (x0,) = primals_in
    x = [x0] + list(series_in[0])
    b = _miller(
        x, 1.0 / 3.0, b0=lax.cbrt_p.bind(x0, **params)
    )  # the real cube root of a negative x0
    return b[0], b[1:]


def _exp2_rule(primals_in, series_in, **params):
    (x0,) = primals_in
    log2 = math.log(2.0)
    out = _exp([x0 * log2] + [t * log2 for t in series_in[0]])
    return lax.exp2_p.bind(x0, **params), out[1:]


def _by_derivatives_at_x0(primitive, derivative):
    """The rule of ``phi(x)`` whose ``k``-th derivative at ``x_0`` is ``derivative(k, x_0)``:
    ``sum_k phi^(k)(x_0) / k! (x(s) - x_0)^k`` (Faa di Bruno by powers of the series)."""

    def rule(primals_in, series_in, **params):
        (x0,) = primals_in
        n = len(series_in[0])
        dx = [jnp.zeros_like(x0)] + list(series_in[0])
        out = [jnp.zeros_like(x0)] * (n + 1)
        power = dx
        for k in range(1, n + 1):
            c = derivative(k, x0) / math.factorial(k)
            out = [o + c * p for o, p in zip(out, power, strict=True)]
            power = _mul(power, dx)
        return primitive.bind(x0, **params), out[1:]

    return rule


def _polygamma(k, x0):
    return _special.polygamma(k, x0)


_RULES = {
    lax.pow_p: _pow_rule,
    lax.atan2_p: _atan2_rule,
    lax.asinh_p: _by_derivative_series(lax.asinh_p, _asinh_derivative),
    lax.rem_p: _rem_rule,
    lax.expm1_p: _expm1_rule,
    lax.log1p_p: _log1p_rule,
    lax.erfc_p: _by_derivative_series(lax.erfc_p, _erfc_derivative),
    lax.atanh_p: _by_derivative_series(lax.atanh_p, _atanh_derivative),
    lax.acosh_p: _by_derivative_series(lax.acosh_p, _acosh_derivative),
    lax.tanh_p: _tanh_rule,
    lax.logistic_p: _logistic_rule,
    # No rule in jax.experimental.jet (nested forward mode, 2^n, was the fallback: arcsin to
    # order 10 took minutes):
    lax.atan_p: _by_derivative_series(lax.atan_p, _atan_derivative),
    lax.asin_p: _by_derivative_series(lax.asin_p, _asin_acos_derivative(1.0)),
    lax.acos_p: _by_derivative_series(lax.acos_p, _asin_acos_derivative(-1.0)),
    lax.tan_p: _tan_rule,
    lax.cbrt_p: _cbrt_rule,
    lax.exp2_p: _exp2_rule,
    lax.lgamma_p: _by_derivatives_at_x0(
        lax.lgamma_p, lambda k, x0: lax.digamma(x0) if k == 1 else _polygamma(k - 1, x0)
    ),
    lax.digamma_p: _by_derivatives_at_x0(lax.digamma_p, _polygamma),
}


@contextlib.contextmanager
def accurate_rules():
    """JAX's ``jet`` rules for pow, atan2, asinh, rem, expm1, log1p, erfc, atanh, acosh, tanh
    and logistic replaced by this module's, and its rules for the primitives ``jet`` lacks installed, in this
    block.

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
