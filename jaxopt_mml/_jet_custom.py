r"""Taylor mode through functions defined with ``jax.custom_jvp`` (private).

``jax.experimental.jet`` cannot run a ``custom_jvp`` function (``jax.nn.softplus``, ``relu``,
``log_sigmoid``, ``jnp.sinc``, ``xlogy``): it calls the primal function outside its trace and
fails with ``UnexpectedTracerError``. Inlining the primal instead would be wrong where the custom
rule exists for a reason: ``sinc`` selects the constant 1 at 0, whose series is 1 + 0 s + ...,
while the rule knows the true derivatives there.

Here a jaxpr of ``f`` is evaluated term by term with ``jet``'s own rules (``jet_rules``, with
``_jet_rules``' additions), and a ``custom_jvp_call`` with inputs :math:`x(s)` (order :math:`n`)
gets its series from its **own derivative rule**: for :math:`y = \phi(x)`,

.. math::  y(s) = \phi(x_0) + \int_0^s \dot y(\sigma)\, d\sigma, \qquad
           \dot y(s) = \mathrm{jvp}_\phi\big(x(s), x'(s)\big),

where the series of the tangent output :math:`\dot y` is needed to order :math:`n - 1` only: the
rule's jaxpr is evaluated the same way at order :math:`n - 1` (a ``custom_jvp_call`` inside it,
as softplus's rule holds softplus itself, recurses at a lower order, down to 0). Nested ``jit``
and ``custom_vjp`` functions are evaluated inline (the latter by its primal: its rule is for
reverse mode only). A ``scan`` (which ``jet`` has no rule for) becomes a scan of the same length
whose body is evaluated this way, carrying the series of its floating-point carries. A primitive
without a ``jet`` rule raises ``KeyError`` as ``jet`` does, so that the caller's fallback (nested
forward mode) takes over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import jax
import jax.extend.core as jex
import jax.numpy as jnp
from jax.experimental import jet as _jet

__all__ = ["CUSTOM_PRIMITIVES", "series_by_rules"]

CUSTOM_PRIMITIVES = frozenset({"custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr"})
_INLINE = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}


def _bind(eqn, values: list) -> list:
    """Evaluate one equation on plain values (as ``jax.core.eval_jaxpr`` does)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(params, tuple):  # JAX before 0.7: (subfuns, params)
        subfuns, params = params
        values = [*subfuns, *values]
    ctx = getattr(eqn, "ctx", None)  # the equation's context (JAX >= 0.4.31)
    with ctx.manager if ctx is not None else contextlib.nullcontext():
        out = eqn.primitive.bind(*values, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _custom_jvp_series(eqn, primals: list, series: list, order: int):
    """Output primals and series of a ``custom_jvp_call`` from its derivative rule."""
    values = _bind(eqn, primals)
    # (called by _eval only with order > 0 and some input series)
    if not all(jnp.issubdtype(jnp.result_type(p), jnp.inexact) for p in primals):
        # Integer inputs have float0 tangents; nested forward mode handles them.
        raise KeyError("custom_jvp_call with integer inputs")

    def tangent(xs, ts):
        return jax.jvp(lambda *a: tuple(_bind(eqn, list(a))), tuple(xs), tuple(ts))[1]

    # Inputs of the rule: x(s) to order n - 1 and x'(s) = sum (j + 1) x_{j+1} s^j to order n - 1.
    t_primals, t_series = [], []
    for p, s in zip(primals, series, strict=True):
        if s is None:
            t_primals.append(jnp.zeros_like(p))
            t_series.append(None)
        else:
            d = [(j + 1) * s[j] for j in range(order)]
            t_primals.append(d[0])
            t_series.append(d[1:])
    x_series = [None if s is None else s[: order - 1] for s in series]
    n_in = len(primals)
    closed = jax.make_jaxpr(lambda *a: tangent(a[:n_in], a[n_in:]))(*primals, *t_primals)
    d_primals, d_series = _eval(
        closed.jaxpr, closed.consts, primals + t_primals, x_series + t_series, order - 1
    )
    out_series = []
    for y0, d0, ds in zip(values, d_primals, d_series, strict=True):
        dots = [d0] + (list(ds) if ds is not None else [jnp.zeros_like(d0)] * (order - 1))
        out_series.append(
            [jnp.asarray(dots[k] / (k + 1), jnp.result_type(y0)) for k in range(order)]
        )
    return values, out_series


def _scan_series(eqn, primals: list, series: list, order: int):
    """Output primals and series of a ``scan`` (``jnp.polyval``, ``fori_loop`` with static
    bounds): a scan of the same length whose body evaluates the original body term by term.

    The series of a floating-point carry is carried as ``order`` arrays (zeros where the input's
    is None: a loop may give it terms in later iterations); an integer carry (a counter) has
    none. ``jet`` has no rule for ``scan``: ``ndtri`` (five polyvals) went by nested forward mode,
    38 s to order 6."""
    params = eqn.params
    body = params["jaxpr"]
    n_consts, n_carry = params["num_consts"], params["num_carry"]

    def zeros(p):
        return [jnp.zeros(jnp.shape(p), jnp.result_type(p))] * order

    def inexact(p):
        return jnp.issubdtype(jnp.result_type(p), jnp.inexact)

    c_p, c_s = primals[:n_consts], series[:n_consts]
    k_p = primals[n_consts : n_consts + n_carry]
    k_s = [
        (s if s is not None else zeros(p)) if inexact(p) else None
        for p, s in zip(k_p, series[n_consts : n_consts + n_carry], strict=True)
    ]
    x_p, x_s = primals[n_consts + n_carry :], series[n_consts + n_carry :]
    y_avals = [v.aval for v in eqn.outvars[n_carry:]]

    def step(carry, xs):
        carry_p, carry_s = carry
        xs_p, xs_s = xs
        p_out, s_out = _eval(
            body.jaxpr, body.consts, c_p + carry_p + xs_p, c_s + carry_s + xs_s, order
        )
        new_s = []
        for p, s, old in zip(p_out[:n_carry], s_out[:n_carry], carry_s, strict=True):
            if old is None:
                new_s.append(None)  # an integer carry (its series, if any, is zero)
            else:
                new_s.append([jnp.asarray(t, jnp.result_type(p)) for t in (s or zeros(p))])
        y_s = [
            [jnp.asarray(t, a.dtype) for t in s] if s is not None else zeros(p)
            for p, s, a in zip(p_out[n_carry:], s_out[n_carry:], y_avals, strict=True)
        ]
        return (list(p_out[:n_carry]), new_s), (list(p_out[n_carry:]), y_s)

    (k_p, k_s), (y_p, y_s) = jax.lax.scan(
        step,
        (list(k_p), k_s),
        (list(x_p), x_s),
        length=params["length"],
        reverse=params["reverse"],
    )
    y_s = [s if inexact(p) else None for p, s in zip(y_p, y_s, strict=True)]
    return k_p + y_p, k_s + y_s


def _own(primal, series):
    """A rule's output in this module's form: jet's ``zero_series`` (comparisons, integer
    operations) as None, its ``zero_term`` entries as zeros."""
    if series is _jet.zero_series:
        return primal, None
    return primal, [
        jnp.zeros(jnp.shape(primal), jnp.result_type(primal)) if t is _jet.zero_term else t
        for t in series
    ]


def _eval(jaxpr, consts: list, primals: list, series: list, order: int):
    """``(primals, series)`` of ``jaxpr``'s outputs; a series is a list of ``order`` Taylor
    coefficients, or None where it is zero."""
    if order == 0:
        series = [None] * len(series)
    env = {}

    def read(v):
        if isinstance(v, jex.Literal):
            return v.val, None
        return env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = (c, None)
    for v, p, s in zip(jaxpr.invars, primals, series, strict=True):
        env[v] = (p, s)
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        p_in = [p for p, _ in ins]
        s_in = [s for _, s in ins]
        name = eqn.primitive.name
        if all(s is None for s in s_in):
            outs = [(o, None) for o in _bind(eqn, p_in)]
        elif name in _INLINE:
            inner = eqn.params[_INLINE[name]]
            outs = list(zip(*_eval(inner.jaxpr, inner.consts, p_in, s_in, order), strict=True))
        elif name in ("custom_vjp_call", "custom_vjp_call_jaxpr"):
            inner = eqn.params.get("call_jaxpr", eqn.params.get("fun_jaxpr"))
            outs = list(zip(*_eval(inner.jaxpr, inner.consts, p_in, s_in, order), strict=True))
        elif name == "custom_jvp_call":
            outs = list(zip(*_custom_jvp_series(eqn, p_in, s_in, order), strict=True))
        elif name == "scan":
            outs = list(zip(*_scan_series(eqn, p_in, s_in, order), strict=True))
        else:
            rule = _jet.jet_rules[eqn.primitive]  # KeyError: no rule (the caller falls back)
            full = [
                [jnp.zeros(jnp.shape(p), jnp.result_type(p))] * order if s is None else s
                for p, s in zip(p_in, s_in, strict=True)
            ]
            p_out, s_out = rule(p_in, full, **eqn.params)
            if eqn.primitive.multiple_results:
                outs = [_own(p, s) for p, s in zip(p_out, s_out, strict=True)]
            else:
                outs = [_own(p_out, s_out)]
        for v, out in zip(eqn.outvars, outs, strict=True):
            env[v] = out
    results = [read(v) for v in jaxpr.outvars]
    return [p for p, _ in results], [s for _, s in results]


def series_by_rules(g: Callable, leaves: list, dirs: list, order: int) -> tuple[list, list]:
    """``jet(g, leaves, [[d, 0, ...]], factorial_scaled=False)`` for a ``g`` (list of arrays to
    list of arrays) that may hold ``custom_jvp`` functions: ``(primals, terms)`` with ``terms[i]``
    the ``order`` coefficients of output ``i``. Run inside ``_jet_rules.accurate_rules()``."""
    closed = jax.make_jaxpr(lambda *a: g(*a))(*leaves)  # a fresh trace: g records its output
    series = [[d] + [jnp.zeros_like(d)] * (order - 1) for d in dirs]
    primals, out = _eval(closed.jaxpr, closed.consts, list(leaves), series, order)
    terms = [
        [jnp.zeros_like(p)] * order
        if s is None
        else [jnp.asarray(t, jnp.result_type(p)) for t in s]
        for p, s in zip(primals, out, strict=True)
    ]
    return primals, terms
