r"""Taylor series and local models: coefficients, polynomials, linear and quadratic models, and
estimates of the truncation error.

The Taylor expansion of :math:`f` about :math:`x_0` along a direction :math:`u` is
:math:`f(x_0 + s u) = \sum_{k=0}^{n} \frac{s^k}{k!} D^k f(x_0)[u, \dots, u] + R_n(s)`, with the
Lagrange remainder :math:`R_n(s) = \frac{s^{n+1}}{(n+1)!} D^{n+1} f(\xi)[u, \dots, u]` for some
:math:`\xi` on the segment. Higher derivatives come from Taylor-mode AD (``jax.experimental.jet``,
which propagates a truncated power series through each primitive at :math:`O(n^2)` cost), with a
fallback to nested forward mode (``jax.jvp`` of ``jax.jvp`` ..., as nested ``jax.jacfwd``; cost
grows like :math:`2^n`: seconds to minutes from order 8 on) for functions containing primitives
that ``jet`` has no rule for (``lax.while_loop``, linear solves). The failure is
detected while tracing, so the choice costs nothing at run time and works under ``jit``.
A ``lax.scan`` (``jnp.polyval``, so ``ndtri``; ``fori_loop`` with static bounds), for which
``jet`` has no rule either, goes by ``_jet_custom``'s term-by-term evaluation: a scan of its
body's series (``ndtri`` to order 6: 3 s instead of 38).
Functions defined with ``jax.custom_jvp`` (``jax.nn.softplus``, ``jax.nn.relu``, ``jnp.sinc``),
which ``jet`` cannot run, go by nested forward mode up to order 4 (cheap there) and above it
term by term with ``jet``'s rules and, for each custom function, the series of its own
derivative rule (``_jet_custom``; softplus to order 10: 0.5 s instead of two minutes);
``custom_vjp`` functions always the latter way, by their primal (nested forward mode cannot
differentiate them). This module adds the rules that ``jet`` lacks for ``atan``, ``asin``, ``acos``,
``tan``, ``cbrt``, ``exp2``, ``lgamma`` and ``digamma`` (arcsin to order 10 took minutes by the
fallback, a second now), and replaces eleven of ``jet``'s that lose their digits where the
function is smooth (``pow`` through :math:`\log x` near :math:`x_0 = 0`, ``atan2`` through
:math:`x / y` near :math:`y_0 = 0`, ``asinh``, ``expm1``, ``log1p``, ``erfc``, ``atanh``, ``acosh``,
``tanh`` and ``logistic`` by cancellation or overflow) or compute another function (``rem`` as Python's ``%``), while it runs
``jet`` (``_jet_rules``). One case is left, where the derivatives are
infinite: a non-integral power of a base that is exactly 0 (``x ** 2.5``, ``sqrt`` or ``cbrt`` at
0, ``arcsin`` at 1) or whose power underflows (``x ** 2.5`` at ``1e-140``; the recurrence scales
every coefficient by it): up to order 4, for functions holding such a primitive, both engines are
traced and nested forward mode replaces ``jet``'s series when some output element of :math:`f` is
finite but its ``jet`` coefficients are not (a select, decided per mapped element under ``vmap``;
the nested series runs only when needed outside ``vmap``); above order 4 (nested mode's trace
grows like :math:`2^n`) those coefficients stay NaN, as do derivatives that nested forward mode
itself cannot form, and those of functions holding a ``custom_vjp`` function (which nested
forward mode cannot differentiate) at any order.

Every function here works under ``jax.jit`` and ``jax.vmap``; orders are static Python ints.

References:
    A. Griewank and A. Walther, *Evaluating Derivatives*, 2nd ed., SIAM 2008, chapter 13
    (Taylor and tensor coefficients).
    J. Bettencourt, M. J. Johnson and D. Duvenaud, "Taylor-mode automatic differentiation for
    higher-order derivatives in JAX", NeurIPS workshop on program transformations, 2019.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.jet import jet

from ._derivatives import (
    _apply_dense,
    _as_float,
    _check_scalar_output,
    _real_point,
    _tangent_like,
    hessian,
    jacobian,
)
from ._jet_custom import CUSTOM_PRIMITIVES, series_by_rules
from ._jet_rules import accurate_rules
from ._tree import (
    PyTree,
    check_args,
    check_bool,
    check_callable,
    check_choice,
    check_positive_int,
    check_prng_key,
    tree_sub,
    tree_vdot,
)

__all__ = [
    "taylor_coefficients",
    "taylor_polynomial",
    "TaylorPolynomial",
    "linearise",
    "Linearisation",
    "quadratic_model",
    "QuadraticModel",
    "taylor_error",
    "TaylorError",
]

_METHODS = ("auto", "jet", "jacfwd")
# jet's ``factorial_scaled`` option arrived in JAX 0.7 (jax-ml/jax#29676).
_JET_UNSCALED = "factorial_scaled" in inspect.signature(jet).parameters


def _check_order(order: Any) -> int:
    if isinstance(order, bool) or not isinstance(order, int | np.integer):
        raise TypeError(f"order must be a Python int, got {type(order).__name__} {order!r}")
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    return int(order)


# ----------------------------------------------------------------------------------------------
# Directional derivatives of every order: the engine of this module


def _series_jet(g: Callable, leaves: list, dirs: list, order: int) -> list:
    """``[D_u^k g / k!]_{k=0..order}`` (lists of output leaves) by Taylor-mode AD.

    ``jet`` is used unscaled (``factorial_scaled=False``): the input path ``x0 + s u`` has
    coefficients ``[u, 0, ...]`` and the outputs are the Taylor coefficients themselves, so no
    factorial (which ``jet`` would form inexactly as ``exp(lgamma(k + 1))``) enters.
    """
    if order == 0:
        return [g(*leaves)]
    series = [[d] + [jnp.zeros_like(d)] * (order - 1) for d in dirs]
    with accurate_rules():  # pow, atan2, asinh, rem, expm1 ... by rules that keep digits
        if _uses_primitives(jax.make_jaxpr(lambda *a: g(*a))(*leaves), _BY_RULES):
            # jet cannot run custom_jvp functions (softplus, relu, sinc): their own rules;
            # nor a scan (jnp.polyval in ndtri, fori_loop): a scan of the body's series
            primal, terms = series_by_rules(g, leaves, dirs, order)
            scale = [1] * order
        elif _JET_UNSCALED:
            primal, terms = jet(g, tuple(leaves), tuple(series), factorial_scaled=False)
            scale = [1] * order
        else:  # JAX before 0.7: jet returns derivatives only
            primal, terms = jet(g, tuple(leaves), tuple(series))
            scale = [math.factorial(k + 1) for k in range(order)]
    # ``terms`` holds, per output leaf, the list of coefficients of orders 1..order.
    return [primal] + [[t[k] / scale[k] for t in terms] for k in range(order)]


def _series_nested(g: Callable, leaves: list, dirs: list, order: int) -> list:
    """The same by nested forward mode: each level is one ``jax.jvp`` of the level below."""

    def level(k):
        if k == 0:
            return lambda *xs: (g(*xs),)

        inner = level(k - 1)

        def h(*xs):
            primal, tangent = jax.jvp(inner, tuple(xs), tuple(dirs))
            return primal + (tangent[-1],)

        return h

    derivatives = level(order)(*leaves)
    return [[d / math.factorial(k) for d in dk] for k, dk in enumerate(derivatives)]


# Primitives whose ``jet`` rule (``_jet_rules``) can still give non-finite coefficients where the
# function is finite: ``pow`` with a non-integral exponent at a base of exactly 0, or whose power
# underflows, ``cbrt`` at 0 and ``asin``/``acos`` at +-1 (NaN by ``_jet_rules._miller``, where the
# derivatives are infinite). Nested forward mode is the fallback there, up to _GUARD_MAX_ORDER: its
# trace grows like 2^order (``atan2(sin t, cos t)`` at order 8: about a minute), and tracing it
# for every function holding a ``pow`` made order 16 of ``x ** 2.5`` take minutes.
_JET_RISKY = frozenset({"pow", "sqrt", "rsqrt", "cbrt", "asin", "acos"})  # sqrt: x ** (1/2)
_GUARD_MAX_ORDER = 4
_CUSTOM_JVP = frozenset({"custom_jvp_call"})
_CUSTOM_VJP = CUSTOM_PRIMITIVES - _CUSTOM_JVP
# Evaluated term by term by _jet_custom (jet has no rule for them).
_BY_RULES = CUSTOM_PRIMITIVES | {"scan"}


def _uses_primitives(jaxpr: Any, names: frozenset) -> bool:
    """Whether a (closed) jaxpr or any jaxpr nested in its equations' parameters binds one of
    ``names`` (``jit``, ``cond``, ``custom_jvp_call``, loops ... are searched recursively)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in names:
            return True
        stack = list(eqn.params.values())
        while stack:
            value = stack.pop()
            if isinstance(value, tuple | list):
                stack.extend(value)
            elif hasattr(value, "eqns") or hasattr(getattr(value, "jaxpr", None), "eqns"):
                if _uses_primitives(value, names):
                    return True
    return False


def _series_guarded(g: Callable, leaves: list, dirs: list, order: int) -> list:
    """``_series_jet``, with nested forward mode taking over where ``jet`` fails numerically.

    Where ``g``'s value is finite but some ``jet`` coefficient (or ``jet``'s own value) is not, the
    whole series comes from nested forward mode (a select, so it works under ``jit`` and ``vmap``,
    deciding per mapped element). The nested series runs under a ``lax.cond``: unbatched, only when
    needed; under ``vmap`` the ``cond`` becomes a select and both engines run. In that case the
    ``jet`` path sees its inputs through ``stop_gradient``, so that its NaN intermediates do not
    poison reverse-mode derivatives with respect to ``x0`` (those w.r.t. values ``f`` closes over can
    still be NaN there: use forward mode).
    """
    value = g(*leaves)
    probe = _series_jet(g, [jax.lax.stop_gradient(a) for a in leaves], dirs, order)
    finite = [
        jnp.all(jnp.stack([jnp.isfinite(c[i]) for c in probe]), axis=0) for i in range(len(value))
    ]
    failed = jnp.stack(
        [jnp.any(jnp.isfinite(v) & ~ok) for v, ok in zip(value, finite, strict=True)]
    ).any()
    guarded = [jnp.where(failed, jax.lax.stop_gradient(a), a) for a in leaves]
    by_jet = _series_jet(g, guarded, dirs, order)
    by_nested = jax.lax.cond(
        failed,
        lambda: _series_nested(g, leaves, dirs, order),
        lambda: jax.tree.map(jnp.zeros_like, by_jet),
    )
    return jax.tree.map(lambda n, j: jnp.where(failed, n, j), by_nested, by_jet)


def _directional_series(
    f: Callable, x: PyTree, u: PyTree, order: int, args: tuple, method: str
) -> list[PyTree]:
    r""":math:`[D_u^k f(x) / k!]_{k=0..order}`, each with the structure of ``f``'s output.

    ``x`` must already be inexact and ``u`` match it. ``method="auto"`` probes ``jet`` with
    ``jax.eval_shape`` (a separate trace, so a failure leaves nothing behind) and falls back to
    nested forward mode when it raises. When ``f`` contains a primitive whose ``jet`` rule can fail
    numerically (``_JET_RISKY``), both engines are traced and nested forward mode replaces the
    series where an output element's value is finite but its ``jet`` coefficients are not.
    """
    leaves, in_def = jax.tree.flatten(x)
    dirs = in_def.flatten_up_to(u)
    out_def = []

    def g(*xs):
        out_leaves, treedef = jax.tree.flatten(f(jax.tree.unflatten(in_def, list(xs)), *args))
        out_def.append(treedef)
        return out_leaves

    engine = _series_jet if method == "jet" else _series_nested
    if method == "auto":
        try:
            jax.eval_shape(lambda ls, ds: _series_jet(g, ls, ds, order), leaves, dirs)
            engine = _series_jet
        except Exception:  # jet has no rule for some primitive: use nested forward mode
            engine = _series_nested
        if engine is _series_jet and 0 < order <= _GUARD_MAX_ORDER:
            avals = [jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)) for a in leaves]
            jaxpr = jax.make_jaxpr(g)(*avals)
            custom_vjp = _uses_primitives(jaxpr, _CUSTOM_VJP)
            if _uses_primitives(jaxpr, _CUSTOM_JVP) and not custom_vjp:
                # Low orders: nested forward mode runs the custom rules directly, and its few
                # operations compile faster than the rules' series (taylor_error called eagerly).
                engine = _series_nested
            elif _uses_primitives(jaxpr, _JET_RISKY) and not custom_vjp:
                # (not with a custom_vjp function, which nested forward mode cannot
                # differentiate: the guard traced it, and sqrt(g(x)) raised NotImplementedError)
                engine = _series_guarded
        out_def.clear()
    try:
        series = engine(g, leaves, dirs, order)
    except KeyError as e:  # jet's rule table has no entry for a primitive of f
        if engine is not _series_jet:
            raise
        raise NotImplementedError(
            f"method='jet': jax.experimental.jet has no Taylor rule for the primitive {e} "
            "that f uses; use method='auto' (nested forward mode where jet has no rule) or "
            "method='jacfwd'"
        ) from None
    return [jax.tree.unflatten(out_def[-1], list(terms)) for terms in series]


def _stack(coefficients: list[PyTree]) -> PyTree:
    """Stack ``[c_k]`` (pytrees of one structure) along a new leading axis."""
    return jax.tree.map(lambda *cs: jnp.stack(cs), *coefficients)


# ----------------------------------------------------------------------------------------------
# Public API


def taylor_coefficients(
    f: Callable, x0: Any, order: int, *, args: tuple = (), method: str = "auto"
) -> PyTree:
    r"""The Taylor coefficients :math:`c_k = f^{(k)}(x_0) / k!`, :math:`k = 0, \dots, n`.

    So that :math:`f(x) = \sum_{k=0}^{n} c_k (x - x_0)^k + O((x - x_0)^{n+1})`. ``jet`` returns
    derivatives by default; here it runs unscaled and returns the coefficients directly.

    Args:
        f: A function of a scalar, called as ``f(x, *args)``. Its output may be an array or pytree
            (each output element gets its own coefficients).
        x0: The expansion point, a scalar.
        order: :math:`n \ge 0`, a static Python int.
        args: Extra arguments of ``f`` (not differentiated).
        method: ``"auto"`` (``jet``, falling back to nested forward mode where ``jet`` has no rule
            or gives non-finite coefficients for a finite value, as ``x ** 2.0`` at ``x0 <= 0``),
            ``"jet"`` (unguarded) or ``"jacfwd"`` (nested forward mode).

    Returns:
        An array of shape ``(order + 1,) + out.shape`` (a pytree of them for pytree outputs), in the
        output's dtype.

    Raises:
        ValueError: ``order < 0``, ``x0`` not a scalar, or ``method`` unknown (each named).
        TypeError: ``order`` not an int.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> print(mml.taylor_coefficients(jnp.exp, 0.0, 4))     # 1, 1, 1/2, 1/6, 1/24
        [1.         1.         0.5        0.16666667 0.04166667]

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, section 13.2.
    """
    check_callable("f", f)
    args = check_args("taylor_coefficients", args)
    order = _check_order(order)
    check_choice("method", method, _METHODS)
    if not isinstance(
        x0, jax.Array | np.ndarray | np.generic | int | float | complex
    ) or isinstance(x0, bool):
        raise ValueError(f"x0 must be a scalar, got {type(x0).__name__}; use jax.vmap for many")
    x0 = _as_float(x0, "x0")
    if jnp.shape(x0) != ():
        raise ValueError(f"x0 must be a scalar, got shape {jnp.shape(x0)}; use jax.vmap for many")
    return _stack(_directional_series(f, x0, jnp.ones_like(x0), order, args, method))


def _horner(coefficients: Any, dx: jax.Array) -> jax.Array:
    """``sum_k c_k dx^k`` by Horner's rule, ``c`` indexed along its leading axis (or a sequence)."""
    value = coefficients[-1] * jnp.ones_like(dx)
    for k in range(len(coefficients) - 2, -1, -1):
        value = value * dx + coefficients[k]
    return value


class TaylorPolynomial(NamedTuple):
    r"""The polynomial :math:`p(x) = \sum_k c_k (x - x_0)^k`; call it to evaluate (Horner's rule).

    A pytree of arrays: it can be returned from ``jit`` and mapped with ``vmap`` (a batch of them
    made under ``vmap`` is evaluated under ``vmap``; called outside, it raises ValueError).

    Attributes:
        coefficients: :math:`c_0, \dots, c_n` along the leading axis.
        x0: The expansion point.
    """

    coefficients: jax.Array
    x0: jax.Array

    def __call__(self, x: Any) -> jax.Array:
        if jnp.ndim(self.x0) != 0:
            # (a batch of polynomials from jax.vmap, called outside it, read the batch axis as
            # the coefficients' and returned an array of wrong numbers)
            raise ValueError(
                f"this TaylorPolynomial holds a batch of expansion points (x0 of shape "
                f"{jnp.shape(self.x0)}, made under jax.vmap): evaluate it under jax.vmap too, "
                "jax.vmap(lambda p: p(x))(polynomials)"
            )
        dx = jnp.asarray(x) - self.x0
        # each point of x against every output element: shape x.shape + out.shape (dx alone
        # broadcast against out.shape paired the point x[i] with the output element i)
        dx = dx.reshape(dx.shape + (1,) * (jnp.ndim(self.coefficients) - 1))
        return _horner(self.coefficients, dx)


def taylor_polynomial(
    f: Callable, x0: Any, order: int, *, args: tuple = (), method: str = "auto"
) -> TaylorPolynomial:
    r"""The Taylor polynomial of order :math:`n` of a scalar function about :math:`x_0`, as a callable.

    :math:`p(x) = \sum_{k=0}^{n} \frac{f^{(k)}(x_0)}{k!} (x - x_0)^k`, evaluated by Horner's rule
    :math:`p = c_0 + \delta (c_1 + \delta (c_2 + \dots))` with :math:`\delta = x - x_0` (``n``
    multiply-adds, stable). ``x`` may be an array: the polynomial is evaluated at each of its
    elements, giving an array of shape ``x.shape + out.shape`` (as ``jax.vmap`` of the call would).

    Args:
        f, x0, order, args, method: As for :func:`taylor_coefficients`.

    Returns:
        A :class:`TaylorPolynomial` (callable, a pytree: pass it through ``jax.jit`` as an
        argument, or jit ``lambda x: p(x)``).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> p = mml.taylor_polynomial(jnp.sin, 0.0, 5)
        >>> float(p(0.1))      # 0.1 - 0.1**3/6 + 0.1**5/120
        0.0998334...

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, chapter 13.
    """
    check_callable("f", f)
    args = check_args("taylor_polynomial", args)
    coefficients = taylor_coefficients(f, x0, order, args=args, method=method)
    if not isinstance(coefficients, jax.Array):
        raise ValueError("f must return a single array for taylor_polynomial, got a pytree")
    return TaylorPolynomial(coefficients, _as_float(x0))


def _check_point(model: str, x: PyTree, x0: PyTree) -> None:
    """A local model is evaluated at one point of ``x0``'s structure and shapes: a point of
    another shape would broadcast against ``x0`` (``[0.5]`` for a two-vector ``x0`` meant
    ``[0.5, 0.5]``) or fail inside a contraction."""
    x_shape = jax.tree.map(jnp.shape, x)
    if x_shape != jax.tree.map(jnp.shape, x0):
        raise ValueError(
            f"{model} is evaluated at points of x0's structure and shapes "
            f"{jax.tree.map(jnp.shape, x0)}, got {x_shape}; for many points use "
            "jax.vmap(model)"
        )


def _check_unbatched(model: str, derivative: PyTree, out_like: PyTree, x0: PyTree) -> None:
    """A local model made under ``jax.vmap`` holds a batch of models, one more axis on every
    array, and is evaluated under ``vmap`` too: outside it, a batch of points of x0's batched
    shape passed the point check and was contracted across the batch (a wrong number per point
    where the batch size equals the dimension, else dot_general's shape error). Each block of
    ``derivative`` (per leaf of ``out_like``, per leaf of ``x0``) has the two ranks together
    unless the model is batched."""
    ranks = [
        jnp.ndim(o) + jnp.ndim(i) for o in jax.tree.leaves(out_like) for i in jax.tree.leaves(x0)
    ]
    if [jnp.ndim(b) for b in jax.tree.leaves(derivative)] != ranks:
        raise ValueError(
            f"this {model} holds a batch of models (made under jax.vmap): evaluate it under "
            "jax.vmap too, jax.vmap(lambda m, x: m(x))(models, points)"
        )


class Linearisation(NamedTuple):
    r"""The first-order model :math:`m(x) = f(x_0) + J(x_0)(x - x_0)`; call it to evaluate.

    Attributes:
        value: :math:`f(x_0)`.
        jacobian: :math:`J(x_0)`, laid out like ``jax.jacobian`` (shape ``out.shape + x.shape``).
        x0: The expansion point.
    """

    value: PyTree
    jacobian: PyTree
    x0: PyTree

    def __call__(self, x: PyTree) -> PyTree:
        _check_unbatched("Linearisation", self.jacobian, self.value, self.x0)
        _check_point("a Linearisation", x, self.x0)
        step = _apply_dense(self.jacobian, tree_sub(x, self.x0), self.value)
        return jax.tree.map(jnp.add, self.value, step)

    @property
    def model(self) -> Callable[[PyTree], PyTree]:
        """The model as a plain function of ``x`` (the same as calling the linearisation)."""
        return self.__call__


def linearise(f: Callable, x0: PyTree, *, args: tuple = (), mode: str = "auto") -> Linearisation:
    r"""The linear (first-order Taylor) model of a function about :math:`x_0`.

    :math:`m(x) = f(x_0) + J(x_0)(x - x_0)`, with error :math:`O(\|x - x_0\|^2)` for smooth
    :math:`f`. Arrays or pytrees in and out; the Jacobian is formed once, by :func:`jacobian` (forward
    or reverse mode by shape).

    Args:
        f: Function called as ``f(x, *args)``.
        x0: The expansion point.
        args: Extra arguments of ``f`` (not differentiated).
        mode: Jacobian mode: ``"auto"``, ``"fwd"`` or ``"rev"``.

    Returns:
        A :class:`Linearisation` (``value``, ``jacobian``, ``x0``; callable; ``.model``).

    Raises:
        TypeError: ``x0`` is complex (for a holomorphic ``f``, ``jacobian(f, holomorphic=True)``).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> f = lambda x: jnp.array([jnp.exp(x[0]), x[0] * x[1]])
        >>> lin = mml.linearise(f, jnp.array([0.0, 1.0]))
        >>> print(lin(jnp.array([0.1, 1.0])))     # [1 + 0.1, 0.1]
        [1.1 0.1]

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, chapter 3.
    """
    check_callable("f", f)
    args = check_args("linearise", args)
    x0 = _real_point("linearise", "x0", x0)

    def with_value(y):
        out = f(y, *args)
        return out, out

    jac, value = jacobian(with_value, mode=mode, has_aux=True)(x0)
    return Linearisation(value, jac, x0)


class QuadraticModel(NamedTuple):
    r"""The second-order model :math:`q(x) = f_0 + g^\top \delta + \tfrac12 \delta^\top H \delta`.

    With :math:`\delta = x - x_0`; call it to evaluate.

    Attributes:
        value: :math:`f(x_0)`, a scalar.
        gradient: :math:`g = \nabla f(x_0)`, structured like ``x0``.
        hessian: :math:`H = \nabla^2 f(x_0)`, laid out like ``jax.hessian``.
        x0: The expansion point.
    """

    value: jax.Array
    gradient: PyTree
    hessian: PyTree
    x0: PyTree

    def __call__(self, x: PyTree) -> jax.Array:
        _check_unbatched("QuadraticModel", self.hessian, self.gradient, self.x0)
        _check_point("a QuadraticModel", x, self.x0)
        delta = tree_sub(x, self.x0)
        curvature = _apply_dense(self.hessian, delta, self.gradient)
        return self.value + tree_vdot(self.gradient, delta) + 0.5 * tree_vdot(delta, curvature)

    @property
    def model(self) -> Callable[[PyTree], jax.Array]:
        """The model as a plain function of ``x`` (the same as calling the model)."""
        return self.__call__


def quadratic_model(f: Callable, x0: PyTree, *, args: tuple = ()) -> QuadraticModel:
    r"""The quadratic (second-order Taylor) model of a scalar function about :math:`x_0`.

    :math:`q(x) = f(x_0) + \nabla f(x_0)^\top \delta + \tfrac12 \delta^\top \nabla^2 f(x_0) \delta`,
    :math:`\delta = x - x_0`, with error :math:`O(\|\delta\|^3)`: the model Newton's method and trust
    regions minimise. The gradient is one reverse sweep; the Hessian forward-over-reverse.

    Args:
        f: Scalar function called as ``f(x, *args)``.
        x0: The expansion point (array or pytree).
        args: Extra arguments of ``f`` (not differentiated).

    Returns:
        A :class:`QuadraticModel` (``value``, ``gradient``, ``hessian``, ``x0``; callable).

    Raises:
        ValueError: ``f`` is not scalar-valued (the message names ``f``).
        TypeError: ``x0`` is complex.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> q = mml.quadratic_model(lambda x: jnp.sum(jnp.cos(x)), jnp.zeros(2))
        >>> print(q(jnp.array([0.1, 0.2])))           # 2 - (0.01 + 0.04) / 2
        1.975

    References:
        J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, section 2.2;
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, chapter 5.
    """
    check_callable("f", f)
    args = check_args("quadratic_model", args)
    x0 = _real_point("quadratic_model", "x0", x0)
    fx = lambda y: f(y, *args)
    _check_scalar_output(f, jax.eval_shape(fx, x0), "quadratic_model")
    value, gradient = jax.value_and_grad(fx)(x0)
    return QuadraticModel(value, gradient, hessian(fx)(x0), x0)


class TaylorError(NamedTuple):
    r"""The truncation error of a Taylor model over a neighbourhood, from :func:`taylor_error`.

    Attributes:
        max_error: The largest sampled :math:`\|f(x) - T_n(x)\|_\infty` over the neighbourhood.
        lagrange_bound: :math:`\frac{r^{n+1}}{(n+1)!} \max |D^{n+1} f(\xi)[u]^{n+1}|` with the
            maximum taken over the samples and, for an array ``x0``, over ``x0`` along their
            directions (an estimate of the rigorous bound, which needs the supremum); ``nan``
            when ``lagrange=False``.
        x_worst: The sample point with the largest error.
    """

    max_error: jax.Array
    lagrange_bound: jax.Array
    x_worst: PyTree


def taylor_error(
    f: Callable,
    x0: PyTree,
    order: int,
    radius: Any,
    *,
    args: tuple = (),
    n_samples: int = 257,
    key: jax.Array | None = None,
    lagrange: bool = True,
    method: str = "auto",
) -> TaylorError:
    r"""Estimate the truncation error of the order-:math:`n` Taylor model over a ball of radius ``r``.

    The model is :math:`T_n(x_0 + s u) = \sum_{k \le n} \frac{s^k}{k!} D^k f(x_0)[u]^k` (for ``order``
    1 and 2 this is :func:`linearise` and :func:`quadratic_model`; any order works). The estimate
    samples points :math:`x_i = x_0 + s_i u_i` with :math:`|s_i| \le r`, :math:`\|u_i\|_2 = 1`:

    * ``max_error``: :math:`\max_i \|f(x_i) - T_n(x_i)\|_\infty`, a lower estimate of the true maximum.
    * ``lagrange_bound``: along each ray the Lagrange remainder is
      :math:`R_n = \frac{s^{n+1}}{(n+1)!} D^{n+1} f(\xi)[u]^{n+1}` with :math:`\xi` on the segment,
      so :math:`|R_n| \le \frac{r^{n+1}}{(n+1)!} \sup_{\|\xi - x_0\| \le r} |D^{n+1} f(\xi)[u]^{n+1}|`;
      the supremum is estimated by the maximum over the samples (and the sampled directions)
      and, for an array or pytree ``x0``, over :math:`x_0` itself along each sampled direction
      (uniform samples of a ball lie near its sphere).

    For a scalar ``x0`` the samples are a uniform grid of ``n_samples`` points on
    :math:`[x_0 - r, x_0 + r]` (deterministic). For an array or pytree ``x0`` they are uniform in the
    ball (random directions, radii :math:`r U^{1/d}`) drawn with ``key``.

    Args:
        f: Function called as ``f(x, *args)``; its output may be an array (the error is the largest
            over its elements).
        x0: The expansion point.
        order: :math:`n \ge 0`, a static Python int.
        radius: :math:`r > 0`.
        args: Extra arguments of ``f``.
        n_samples: Number of sample points (static).
        key: PRNG key for the multivariate samples, ``jax.random.key(seed)`` or
            ``jax.random.PRNGKey(seed)`` (default ``jax.random.key(0)``).
        lagrange: Also compute the Lagrange estimate (costs one order-``n+1`` expansion per sample,
            two for an array or pytree ``x0``).
        method: ``"auto"``, ``"jet"`` or ``"jacfwd"``, as for :func:`taylor_coefficients`.

    Returns:
        A :class:`TaylorError`.

    Raises:
        ValueError: ``order < 0``, ``radius`` not finite and positive (checked when concrete: Python
            numbers, NumPy and JAX arrays outside a trace) or ``n_samples < 1``.
        TypeError: ``radius`` not a real number, ``x0`` complex, ``lagrange`` not a bool, or
            ``key`` not one PRNG key.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> e = mml.taylor_error(jnp.exp, 0.0, 2, 0.1)
        >>> float(e.max_error) <= float(e.lagrange_bound)    # e^0.1 - 1.105 vs e^0.1 0.1^3/6
        True

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, chapter 13; any calculus text for
        the Lagrange form of the remainder (e.g. Apostol, *Calculus* vol. 1, section 7.7).
    """
    check_callable("f", f)
    args = check_args("taylor_error", args)
    order = _check_order(order)
    n_samples = check_positive_int("n_samples", n_samples)
    lagrange = check_bool("lagrange", lagrange)  # ("no" was truthy: the bound was computed)
    check_choice("method", method, _METHODS)
    if key is not None:  # (checked for a scalar x0 too, which draws no samples)
        check_prng_key("key", key)
    if not isinstance(radius, jax.core.Tracer):
        concrete = np.asarray(radius)
        if not np.issubdtype(concrete.dtype, np.number) or np.iscomplexobj(concrete):
            raise TypeError(f"radius must be a real number, got {radius!r}")
        if concrete.ndim != 0:
            raise ValueError(f"radius must be a scalar, got shape {concrete.shape}")
        if not np.all(np.isfinite(concrete) & (concrete > 0)):
            raise ValueError(f"radius must be finite and > 0, got {radius!r}")
    elif np.ndim(radius) != 0:
        raise ValueError(f"radius must be a scalar, got shape {np.shape(radius)}")
    # (a complex x0 gave a complex bound from the real segment alone, or failed drawing samples)
    x0 = _real_point("taylor_error", "x0", x0)
    leaves, in_def = jax.tree.flatten(x0)
    dtype = jnp.result_type(*leaves)
    radius = jnp.asarray(radius, dtype)

    scalar = jax.tree.structure(x0).num_leaves == 1 and jnp.shape(leaves[0]) == ()
    if scalar:
        s = jnp.linspace(-1.0, 1.0, n_samples, dtype=dtype) * radius
        u = jnp.ones((n_samples,), dtype)
        u_tree = in_def.unflatten([u])
    else:
        key = jax.random.key(0) if key is None else key
        k_dir, k_rad = jax.random.split(key)
        size = sum(leaf.size for leaf in leaves)
        normal = jax.random.normal(k_dir, (n_samples, size), dtype)
        normal = normal / jnp.linalg.norm(normal, axis=1, keepdims=True)
        s = radius * jax.random.uniform(k_rad, (n_samples,), dtype) ** (1.0 / size)
        parts, start = [], 0
        for leaf in leaves:
            parts.append(normal[:, start : start + leaf.size].reshape((n_samples,) + leaf.shape))
            start += leaf.size
        u_tree = in_def.unflatten(parts)

    def at_sample(s_i, u_i):
        u_i = _tangent_like("u", u_i, x0)
        series = _directional_series(f, x0, u_i, order, args, method)
        # in each leaf's own dtype (a float32 leaf beside a float64 one stays float32)
        point = jax.tree.map(lambda a, b: (a + s_i * b).astype(jnp.result_type(a)), x0, u_i)
        model = jax.tree.map(lambda *c: _horner(c, s_i), *series)
        gap = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), f(point, *args), model)
        error = jnp.max(jnp.stack(jax.tree.leaves(gap)))
        if not lagrange:
            return error, jnp.asarray(jnp.nan, error.dtype), point
        # The (n+1)-th derivative along the ray at its end and, for an array x0, at x0: the
        # uniform samples of a d-ball lie near its sphere (radii r U^(1/d)), and in 10
        # dimensions the bound of -exp(-200 |x|^2) to order 1 at 0 (radius 1) came out 6e-9
        # for a sampled error of 1 (its second derivative peaks at x0).
        ends = (point,) if scalar else (point, x0)
        tops = []
        for end in ends:
            top = _directional_series(f, end, u_i, order + 1, args, method)[-1]
            tops.extend(jnp.max(jnp.abs(t)) for t in jax.tree.leaves(top))
        return error, jnp.max(jnp.stack(tops)), point

    errors, tops, points = jax.vmap(at_sample)(s, u_tree)
    worst = jnp.argmax(errors)
    # ``tops`` are coefficients D^{n+1} f / (n+1)!: the factorial is already in.
    bound = jnp.max(tops) * radius ** (order + 1)
    return TaylorError(errors[worst], bound, jax.tree.map(lambda p: p[worst], points))
