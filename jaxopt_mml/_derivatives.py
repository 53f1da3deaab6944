r"""Derivatives: Jacobians with automatic mode choice, Hessians, Hessian-vector products,
directional and total derivatives, and a finite-difference gradient check.

Forward mode (a JVP, :math:`\dot y = J \dot x`) costs one evaluation of ``f`` per *input*
direction; reverse mode (a VJP, :math:`\bar x = J^\top \bar y`) one per *output* direction. A dense
Jacobian of :math:`f: \mathbb{R}^n \to \mathbb{R}^m` is therefore cheapest in forward mode when
:math:`n \le m` (tall) and in reverse mode when :math:`n > m` (wide); :func:`jacobian` picks for you.

Every function here except :func:`check_grad` (host-side by design) works under ``jax.jit``,
``jax.vmap`` and ``jax.grad``. Extra data are passed as ``f(x, *args)`` (scipy's rule).

References:
    A. Griewank and A. Walther, *Evaluating Derivatives: Principles and Techniques of Algorithmic
    Differentiation*, 2nd ed., SIAM, 2008 (chapters 3-5: forward and reverse mode, their costs;
    chapter 5.4: Hessian-vector products by forward-over-reverse).
    B. A. Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6(1), 1994.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ._static import static_function
from ._tree import (
    PyTree,
    as_inexact,
    check_args,
    check_bool,
    check_callable,
    check_choice,
    check_numbers,
    check_real_output,
    dtype_of,
    first_of_pair,
    is_concrete,
    is_int,
    is_real_scalar,
)

__all__ = [
    "jacobian",
    "hessian",
    "hvp",
    "directional_derivative",
    "total_derivative",
    "check_grad",
    "GradCheck",
]

_MODES = ("auto", "fwd", "rev")
_CHECK_GRAD_CHUNK = 256  # components per batch in check_grad (times four: +-h, +-2h)
# check_grad: a discrepancy beyond this many times the finite difference's estimated error is
# measured as a relative error, whatever the floor (see check_grad).
_FD_ERROR_MARGIN = 10.0
# The most times check_grad shortens a step whose stencil leaves f's domain (non-finite values).
_CHECK_GRAD_RETRIES = 40


# ----------------------------------------------------------------------------------------------
# Small private helpers (also used by the Taylor module)


def _as_float(tree: PyTree, name: str | None = None) -> PyTree:
    """``as_inexact``, with Python scalars made strongly typed (so results are not weak-typed);
    with ``name``, a leaf that holds no numbers is a TypeError naming it."""
    return jax.tree.map(lambda a: a.astype(a.dtype), as_inexact(tree, name))


def _real_point(caller: str, name: str, x: PyTree) -> PyTree:
    """``_as_float(x)``, refusing a complex point with a TypeError naming the caller and ``name``.

    JAX's own error for a complex input asks for ``holomorphic=True``, an option these callers
    do not have, and the gradient of a real ``f`` of a complex ``x`` is JAX's conjugate one (an
    ``hvp`` of ``sum |z|^2`` came back as ``2 conj(v)``, not ``2 v``)."""
    x = _as_float(x, name)
    for leaf in jax.tree.leaves(x):
        if jnp.iscomplexobj(leaf):
            raise TypeError(
                f"{caller} takes a real {name}, got dtype {leaf.dtype}: JAX differentiates complex "
                "inputs as holomorphic functions; use jacobian(f, holomorphic=True) or "
                "hessian(f, holomorphic=True) for those"
            )
    return x


def _tree_size(tree: PyTree) -> int:
    """The number of scalars over all leaves of a pytree (of arrays or shape-dtype structs)."""
    return sum(math.prod(np.shape(leaf)) for leaf in jax.tree.leaves(tree))


def _check_argnums(argnums: Any) -> int | tuple[int, ...]:
    """``argnums`` as Python ints: one, or a tuple of them; else a TypeError naming it.

    An index may be a NumPy integer, as ``jax.jacobian`` takes it; it is passed on as a Python
    int, since ``jax.jacrev`` reads anything that is no ``int`` as a sequence of indices and
    wraps the result in a tuple (``jax.jacfwd`` does not): ``argnums=np.int64(0)`` gave an array
    in forward mode and a 1-tuple in reverse mode, and so from ``hessian``. Other types met
    Python's messages ("'float' object is not iterable"), which named no option."""
    if is_int(argnums):
        return int(argnums)
    if isinstance(argnums, list | tuple) and all(is_int(i) for i in argnums):
        if not argnums:  # (JAX: "Too few leaves for PyTreeDef")
            raise ValueError("argnums selects no argument: give at least one index")
        return tuple(int(i) for i in argnums)
    raise TypeError(f"argnums must be an int or a sequence of ints, got {argnums!r}")


def _selected(args: Sequence[Any], argnums: int | tuple[int, ...]) -> Any:
    """The positional arguments that ``argnums`` (checked by :func:`_check_argnums`) selects
    (one, or a tuple of them)."""
    single = isinstance(argnums, int)
    indices = (argnums,) if single else argnums
    for i in indices:
        if not -len(args) <= i < len(args):
            raise ValueError(
                f"argnums {argnums!r} selects argument {i}, but the function was called with "
                f"{len(args)} positional argument(s)"
            )
    if len({i % len(args) for i in indices}) < len(indices):  # (JAX: a NoneType in f)
        raise ValueError(f"argnums {argnums!r} selects an argument twice")
    if single:
        return args[argnums]
    return tuple(args[i] for i in indices)


def _float_selected(args: Sequence[Any], argnums: int | tuple[int, ...]) -> tuple:
    """``args`` with the integer and boolean leaves of the differentiated arguments made the
    default float (as :func:`hvp`, ``check_grad`` and the solvers take an integer ``x``, and as
    ``jnp.asarray(x, float)`` would): ``jacobian`` and ``hessian`` of an integer point raised
    JAX's TypeError ("jacfwd requires real-valued inputs ... pass holomorphic=True"), which
    named no argument and, from ``hessian``, pointed at complex numbers. Floating and complex
    leaves, and the arguments not differentiated, are left as they are."""
    indices = {i % len(args) for i in ((argnums,) if isinstance(argnums, int) else argnums)}

    def convert(leaf):
        try:
            dtype = dtype_of(leaf)
        except (TypeError, ValueError):  # not an array: JAX's own message, as before
            return leaf
        if jnp.issubdtype(dtype, jnp.integer) or dtype == np.dtype(bool):
            return jnp.asarray(leaf).astype(jnp.result_type(float))
        return leaf

    return tuple(jax.tree.map(convert, a) if i in indices else a for i, a in enumerate(args))


def _resolve_mode(mode: str, in_size: int, out_size: int) -> str:
    """``"auto"`` becomes forward mode when the inputs are no larger than the outputs."""
    if mode != "auto":
        return mode
    return "fwd" if in_size <= out_size else "rev"


def _check_scalar_output(f: Callable, out: PyTree, caller: str) -> None:
    """Raise ValueError naming ``f`` unless ``out`` (an eval_shape result) is one scalar."""
    leaves = jax.tree.leaves(out)
    if len(leaves) != 1 or np.shape(leaves[0]) != ():
        shapes = [tuple(np.shape(leaf)) for leaf in leaves]
        raise ValueError(
            f"f must return a scalar (one array of shape ()) for {caller}, "
            f"got outputs of shapes {shapes} from {getattr(f, '__name__', f)!r}"
        )


def _without_aux(f: Callable, out: Any, has_aux: bool) -> Any:
    """``f``'s output without its aux: with ``has_aux`` the first of the pair ``f`` must return.

    Anything else is a TypeError naming ``has_aux`` (``hessian`` indexed an array's shape
    struct: "'ShapeDtypeStruct' object is not subscriptable"). A list ``[output, aux]`` is a
    pair, as JAX's transformations take it (refused here, it raised where ``jax.jacobian`` and
    ``jax.hessian`` answer)."""
    if not has_aux:
        return out
    return first_of_pair(
        out,
        lambda got: (
            f"has_aux=True: f must return a pair (output, aux), got {got} "
            f"from {getattr(f, '__name__', f)!r}"
        ),
    )


def _tangent_like(name: str, v: PyTree, x: PyTree) -> PyTree:
    """Check that tangent ``v`` matches primal ``x`` in structure and shapes; cast to x's dtypes."""
    check_numbers(name, v)
    x_def, v_def = jax.tree.structure(x), jax.tree.structure(v)
    if x_def != v_def:
        raise ValueError(f"{name} must have the same pytree structure as x: {v_def} vs {x_def}")

    def cast(t, p):
        t = jnp.asarray(t)
        if t.shape != jnp.shape(p):
            raise ValueError(f"{name} must have the shape of x: got {t.shape}, expected {p.shape}")
        if jnp.iscomplexobj(t) and not jnp.iscomplexobj(p):
            raise TypeError(f"{name} is complex where x is real: its imaginary part would be lost")
        return t.astype(jnp.result_type(p))

    return jax.tree.map(cast, v, x)


def _apply_dense(jac: PyTree, dx: PyTree, out_like: PyTree) -> PyTree:
    r"""Contract a dense pytree Jacobian (as ``jax.jacobian`` lays it out) with a tangent ``dx``.

    ``jac`` has the structure of ``out_like`` on the outside, and under each output leaf the structure
    of ``dx`` with blocks of shape ``out_leaf.shape + dx_leaf.shape``. The result has the structure and
    shapes of ``out_like``: :math:`(J\,dx)_j = \sum_k J_{jk} \cdot dx_k`.
    """
    out_def = jax.tree.structure(out_like)
    in_leaves, in_def = jax.tree.flatten(dx)
    rows = []
    for out_leaf, block in zip(jax.tree.leaves(out_like), out_def.flatten_up_to(jac), strict=True):
        total = jnp.zeros(jnp.shape(out_leaf), jnp.result_type(out_leaf))
        for j_block, d in zip(in_def.flatten_up_to(block), in_leaves, strict=True):
            total = total + jnp.tensordot(j_block, d, axes=jnp.ndim(d)).astype(total.dtype)
        rows.append(total)
    return jax.tree.unflatten(out_def, rows)


# ----------------------------------------------------------------------------------------------
# Jacobians and Hessians


def jacobian(
    f: Callable,
    argnums: int | Sequence[int] = 0,
    mode: str = "auto",
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    r"""The Jacobian of ``f``, in forward or reverse mode, chosen by shape.

    For :math:`f: \mathbb{R}^n \to \mathbb{R}^m`, :math:`J_{ij} = \partial f_i / \partial x_j`.
    Forward mode builds :math:`J` column by column with :math:`n` JVPs (``jax.jacfwd``); reverse mode
    row by row with :math:`m` VJPs (``jax.jacrev``). With ``mode="auto"`` the choice is made when the
    returned function is called: forward when :math:`n \le m` (sizes counted over all pytree leaves
    of the differentiated arguments and of the output), reverse otherwise; forward whatever the
    sizes when an output is complex (real inputs, complex outputs: reverse mode refuses them).

    Args:
        f: The function to differentiate; arrays or pytrees in and out.
        argnums: Which positional argument(s) to differentiate with respect to, as in
            ``jax.jacobian``. Integer (and boolean) leaves of these arguments become the default
            float dtype, as for :func:`hvp` and the solvers (``jax.jacobian`` raises there).
        mode: ``"auto"`` (default), ``"fwd"`` or ``"rev"``.
        has_aux: ``f`` returns ``(output, aux)``; the returned function then gives ``(J, aux)``.
        holomorphic: ``f`` is holomorphic in complex inputs (complex outputs): the complex
            derivative, as ``jax.jacobian(..., holomorphic=True)``, whose error for a complex
            input without it asks for this option.

    Returns:
        A function with ``f``'s signature returning the Jacobian, laid out like ``jax.jacobian``'s
        (output structure outside, input structure inside, blocks of shape
        ``out.shape + in.shape``). Its ``mode`` attribute is the requested mode.

    Raises:
        ValueError: ``mode`` is not one of ``"auto"``, ``"fwd"``, ``"rev"``; ``argnums`` is an
            empty sequence; when called, if ``argnums`` selects an argument that is not there,
            or one twice.
        TypeError: ``argnums`` is not an int (Python's or NumPy's) or a sequence of them, or
            ``has_aux`` or ``holomorphic`` is not a bool; when called, if ``has_aux`` is True
            and ``f`` returns no ``(output, aux)`` pair (a tuple or a list), in every mode.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> f = lambda x: jnp.array([x[0] * x[1], jnp.sin(x[0]), x[1] ** 2])
        >>> mml.jacobian(f)(jnp.array([1.0, 2.0])).shape    # tall: 2 JVPs, forward mode
        (3, 2)

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, sections 3.1-3.3 and 4.6.
    """
    check_callable("f", f)
    check_choice("mode", mode, _MODES)
    argnums = _check_argnums(argnums)
    has_aux = check_bool("has_aux", has_aux)
    holomorphic = check_bool("holomorphic", holomorphic)

    def jac_fn(*args, **kwargs):
        chosen = mode
        # (in every mode: a forced mode met JAX's message about `static_argnums`)
        _selected(args, argnums)
        args = _float_selected(args, argnums)
        selected = _selected(args, argnums)
        if mode == "auto" or has_aux:
            # (the output alone: an aux that is no JAX type, which jax.jacrev passes through,
            # failed eval_shape). With has_aux the pair is checked in every mode: a forced
            # mode="fwd" with an f that returns no pair leaked a tracer (UnexpectedTracerError)
            # where "auto" named has_aux.
            out = jax.eval_shape(lambda *a: _without_aux(f, f(*a, **kwargs), has_aux), *args)
        if mode == "auto":
            chosen = _resolve_mode(mode, _tree_size(selected), _tree_size(out))
            # a complex output of real inputs has a Jacobian in forward mode only (jax.jacrev
            # refuses complex outputs): a wide R^n -> C^m raised where jacfwd had the answer
            if any(
                jnp.issubdtype(leaf.dtype, jnp.complexfloating) for leaf in jax.tree.leaves(out)
            ):
                chosen = "fwd"
        transform = jax.jacfwd if chosen == "fwd" else jax.jacrev
        return transform(f, argnums=argnums, has_aux=has_aux, holomorphic=holomorphic)(
            *args, **kwargs
        )

    jac_fn.mode = mode
    jac_fn.__name__ = f"jacobian({getattr(f, '__name__', 'f')})"
    jac_fn.__doc__ = f"The Jacobian of {getattr(f, '__name__', 'f')} (mode={mode!r})."
    return jac_fn


def hessian(
    f: Callable,
    argnums: int | Sequence[int] = 0,
    *,
    has_aux: bool = False,
    holomorphic: bool = False,
) -> Callable:
    r"""The Hessian :math:`H_{ij} = \partial^2 f / \partial x_i \partial x_j` of a scalar function.

    Computed forward-over-reverse (``jax.jacfwd(jax.jacrev(f))``): one reverse sweep gives the
    gradient, whose Jacobian (square, so forward mode) is the Hessian. Cost: :math:`n` HVPs.

    Args:
        f: A scalar-valued function (output shape ``()``).
        argnums: Which positional argument(s) to differentiate with respect to; their integer
            (and boolean) leaves become the default float dtype, as in :func:`jacobian`.
        has_aux: ``f`` returns ``(value, aux)``; the returned function then gives ``(H, aux)``.
        holomorphic: ``f`` is holomorphic in complex inputs (a complex scalar output): the
            complex second derivative, as ``jax.hessian(..., holomorphic=True)``.

    Returns:
        A function with ``f``'s signature returning the Hessian (for an input of shape ``s``, an
        array of shape ``s + s``; for pytrees, nested like ``jax.hessian``).

    Raises:
        ValueError: when called, if ``f`` does not return a scalar (the message names ``f``);
            ``argnums`` is an empty sequence, or (when called) selects an argument that is not
            there, or one twice.
        TypeError: ``argnums`` is not an int or a sequence of ints, or ``has_aux`` or
            ``holomorphic`` is not a bool; when called, if ``has_aux`` is True and ``f`` returns
            no ``(value, aux)`` pair.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> print(mml.hessian(lambda x: x[0] ** 2 * x[1])(jnp.array([1.0, 3.0])))
        [[6. 2.]
         [2. 0.]]

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, chapter 5.
    """
    check_callable("f", f)
    argnums = _check_argnums(argnums)
    has_aux = check_bool("has_aux", has_aux)
    holomorphic = check_bool("holomorphic", holomorphic)

    def hess_fn(*args, **kwargs):
        _selected(args, argnums)  # (an index out of range met JAX's message about static_argnums)
        args = _float_selected(args, argnums)
        out = jax.eval_shape(lambda *a: _without_aux(f, f(*a, **kwargs), has_aux), *args)
        _check_scalar_output(f, out, "hessian")
        inner = jax.jacrev(f, argnums=argnums, has_aux=has_aux, holomorphic=holomorphic)
        outer = jax.jacfwd(inner, argnums=argnums, has_aux=has_aux, holomorphic=holomorphic)
        return outer(*args, **kwargs)

    return hess_fn


def hvp(f: Callable, x: PyTree, v: PyTree, *, args: tuple = ()) -> PyTree:
    r"""The Hessian-vector product :math:`H(x)\,v` of a scalar function, without forming :math:`H`.

    Forward-over-reverse: :math:`H v = \frac{d}{d\epsilon} \nabla f(x + \epsilon v)|_{\epsilon=0}`,
    a JVP of the gradient. Costs a small constant times one gradient, for any dimension.

    Args:
        f: Scalar function, called as ``f(x, *args)``.
        x: The point (array or pytree).
        v: The direction, with the structure and shapes of ``x``.
        args: Extra arguments of ``f`` (not differentiated).

    Returns:
        :math:`H v`, with the structure of ``x``.

    Raises:
        ValueError: ``f`` is not scalar-valued (names ``f``), or ``v`` does not match ``x``.
        TypeError: ``x`` is complex.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> f = lambda x, a: a * jnp.sum(x ** 3)
        >>> print(mml.hvp(f, jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0]), args=(2.0,)))  # 12 x
        [12.  0.]

    References:
        Pearlmutter, Neural Computation 6(1), 1994; Griewank and Walther, SIAM 2008, section 5.4.
    """
    check_callable("f", f)
    args = check_args("hvp", args, arrays=True)
    x = _real_point("hvp", "x", x)
    v = _tangent_like("v", v, x)
    _check_scalar_output(f, jax.eval_shape(f, x, *args), "hvp")
    grad_f = jax.grad(lambda y: f(y, *args))
    return jax.jvp(grad_f, (x,), (v,))[1]


def directional_derivative(f: Callable, x: PyTree, v: PyTree, *, args: tuple = ()) -> PyTree:
    r"""The directional derivative :math:`D_v f(x) = J(x)\,v = \frac{d}{d\epsilon} f(x+\epsilon v)|_0`.

    One JVP (forward mode); for a scalar ``f`` this is :math:`\nabla f(x) \cdot v`. ``v`` is used as
    given (not normalised): divide by its norm for the slope per unit length.

    Args:
        f: Function called as ``f(x, *args)``; arrays or pytrees in and out.
        x: The point.
        v: The direction, with the structure and shapes of ``x``.
        args: Extra arguments of ``f`` (not differentiated).

    Returns:
        :math:`J v`, with the structure of ``f``'s output.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> f = lambda x: x[0] ** 2 + 3 * x[1]
        >>> print(mml.directional_derivative(f, jnp.array([1.0, 1.0]), jnp.array([1.0, 1.0])))
        5.0

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, section 3.1.
    """
    check_callable("f", f)
    args = check_args("directional_derivative", args)
    x = _as_float(x, "x")
    v = _tangent_like("v", v, x)
    return jax.jvp(lambda y: f(y, *args), (x,), (v,))[1]


def total_derivative(f: Callable, path: Callable) -> Callable:
    r"""The total derivative of ``f`` along a path: :math:`\frac{d}{dt} f(\gamma(t))`.

    By the multivariate chain rule,
    :math:`\frac{d}{dt} f(\gamma(t)) = \sum_i \frac{\partial f}{\partial x_i}(\gamma(t))\,
    \frac{d\gamma_i}{dt}(t) = J_f(\gamma(t))\,\gamma'(t)`, evaluated here as a single JVP of
    :math:`t \mapsto f(\gamma(t))` with unit tangent (no Jacobian is formed).

    Args:
        f: Function of the point, called as ``f(x, *args)``.
        path: :math:`\gamma`, a function of a scalar ``t`` returning a point (array or pytree).

    Returns:
        A function ``d(t, *args)`` of a scalar ``t`` giving :math:`\frac{d}{dt} f(\gamma(t), *args)`
        with the structure of ``f``'s output. It raises ValueError naming ``t`` for a non-scalar ``t``
        (use ``jax.vmap`` over many times).

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> f = lambda x: x[0] * x[1]
        >>> path = lambda t: jnp.stack([jnp.cos(t), jnp.sin(t)])    # d/dt (cos t sin t) = cos 2t
        >>> float(mml.total_derivative(f, path)(0.0))
        1.0

    References:
        Griewank and Walther, *Evaluating Derivatives*, SIAM 2008, section 3.1 (the chain rule as
        tangent propagation).
    """
    check_callable("f", f)
    check_callable("path", path)

    def d(t, *args):
        t = _as_float(t, "t")
        if jnp.shape(t) != ():
            raise ValueError(f"t must be a scalar, got shape {jnp.shape(t)}; vmap over many times")
        return jax.jvp(lambda s: f(path(s), *args), (t,), (jnp.ones_like(t),))[1]

    return d


# ----------------------------------------------------------------------------------------------
# Gradient check (host-side)


class GradCheck(NamedTuple):
    """The result of :func:`check_grad`; ``float(result)`` is ``max_rel_error``.

    Attributes:
        max_rel_error: The largest per-component relative error (a Python float).
        errors: Per-component relative errors, flattened like ``jax.flatten_util.ravel_pytree(x)``.
        grad: The checked gradient, flattened, in float64.
        fd_grad: The central finite-difference gradient (step :math:`h_i`), flattened, in float64.
    """

    max_rel_error: float
    errors: np.ndarray
    grad: np.ndarray
    fd_grad: np.ndarray

    def __float__(self) -> float:
        return float(self.max_rel_error)


def _perturbed_values_of(points: jax.Array, args: tuple, *, f: Callable, like: tuple) -> jax.Array:
    """``f(unravel(p), *args)`` for each row ``p`` of ``points``; ``like`` is ``x``'s treedef and
    its leaves' shapes and dtypes, which ``unravel`` is rebuilt from."""
    treedef, leaves = like
    _, unravel = ravel_pytree(jax.tree.unflatten(treedef, [jnp.zeros(s, d) for s, d in leaves]))
    return jax.vmap(lambda p: f(unravel(p), *args))(points)


_perturbed_values = jax.jit(_perturbed_values_of, static_argnames=("f", "like"))


def check_grad(
    f: Callable,
    x: PyTree,
    grad: Callable | PyTree | None = None,
    *,
    args: tuple = (),
    eps: float | None = None,
) -> GradCheck:
    r"""Compare a gradient with central finite differences; return the largest relative error.

    For each component :math:`i` (over all pytree leaves),
    :math:`d_i = \frac{f(x + h_i e_i) - f(x - h_i e_i)}{(x_i + h_i) - (x_i - h_i)}` with
    :math:`h_i = \epsilon \max(1, |x_i|)` and :math:`\epsilon = \varepsilon^{1/3}` by default
    (:math:`\varepsilon` the machine epsilon of the component's dtype, leaf by leaf where a pytree
    mixes float32 and float64, or of ``f``'s output where that is coarser, as for an ``f`` that
    computes in float32 at a float64 ``x``: the step that balances the :math:`O(h^2)` truncation
    error against the :math:`O(\varepsilon/h)` rounding error). The perturbed points are rounded to
    their leaves' dtypes and the actual step is used in the quotient. Where a perturbed value is
    not finite (a stencil leaving ``f``'s domain: ``log x`` at ``x = 10^{-10}``, where
    :math:`x - h < 0`), that component's step shrinks to the relative :math:`\epsilon |x_i|`
    (the stencil keeps the sign of :math:`x_i`) and then by halves, until ``f`` is finite on it;
    the other components keep :math:`h_i`. A component left without a finite difference (or an
    ``f(x)`` that is not finite) has error NaN, with a ``RuntimeWarning`` naming it.

    The error of component :math:`i` is :math:`|g_i - d_i| / \max(|g_i|, |d_i|, \phi_i)`: relative to
    the larger of the two, with a floor :math:`\phi_i` below which a component counts as zero:

    * :math:`\varepsilon^{1/3} \max(\|g\|_\infty, \|d\|_\infty)`: components negligible next to the
      whole gradient do not report rounding noise as error;
    * :math:`\max(\rho_i, \tau_i) / \varepsilon^{1/3}`, the estimated error of :math:`d_i` itself
      over :math:`\varepsilon^{1/3}`: the rounding error :math:`\rho_i = \varepsilon \max|f| / h_i`
      (over the stencil) and the truncation error :math:`\tau_i = |d_i^{(2h)} - d_i| / 3 \approx
      h_i^2 |\partial_i^3 f| / 6` (Richardson: a central difference with step :math:`2 h_i`).

    So at or near a stationary point, where :math:`|g_i|` is itself below the finite difference's
    error, a correct gradient reports at most about :math:`\varepsilon^{1/3}` (:math:`6\times10^{-6}`
    in float64, :math:`5\times10^{-3}` in float32) rather than 1. A discrepancy beyond ten times
    the difference's estimated error, :math:`|g_i - d_i| > 10 \max(\rho_i, \tau_i)`, is a wrong
    gradient whatever the floor: the error is then at least
    :math:`(|g_i - d_i| - 10 \max(\rho_i, \tau_i)) / \max(|g_i|, |d_i|,
    \varepsilon^{1/3} \max(\|g\|_\infty, \|d\|_\infty))`, so that a gradient off by 100 % still
    reports about 0.5 where the difference is noisy (``f`` computed in float32 for a float64 ``x``,
    or by an inner solver to a tolerance) and the floor exceeds the gradient itself.

    This is a host-side diagnostic (not jit-able, not vmappable): the ``4n`` perturbed evaluations run
    as a jitted ``vmap`` of ``f`` (compiled once per ``f`` and shapes of ``x``, as the solvers are;
    in batches of 256 components, to bound memory), and the differences and errors are computed
    with NumPy in float64. ``f`` itself runs in ``x``'s dtype
    (float64 when ``jax_enable_x64`` is on); with float32 inputs expect errors near
    :math:`\varepsilon_{32}^{2/3} \approx 2\times10^{-5}` for a correct gradient away from stationary
    points, near :math:`10^{-10}` in float64. An empty ``x`` gives an error of 0.

    Args:
        f: Scalar function, called as ``f(x, *args)``.
        x: The point (array or pytree).
        grad: The gradient to check: a function called as ``grad(x, *args)``, or its value (a pytree
            like ``x``), or None for the AD gradient ``jax.grad(f)``.
        args: Extra arguments of ``f`` and ``grad``.
        eps: The relative finite-difference step (default: the cube root of machine epsilon).

    Returns:
        A :class:`GradCheck`; ``float(check_grad(...))`` is the largest relative error.

    Raises:
        ValueError: ``f`` is not scalar-valued, ``grad`` does not match ``x`` (pytree structure and
            every leaf's shape), or ``eps`` is not a finite number > 0 or so small that a
            perturbed component rounds back to ``x``.
        TypeError: called under a JAX transformation (``x`` is a tracer), a complex ``x`` or
            ``grad``, or an ``f`` whose value is not real floating-point.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> f = lambda x: jnp.sum(jnp.sin(x) * x)
        >>> bad = lambda x: jnp.cos(x) * x          # forgot the sin(x) term
        >>> float(mml.check_grad(f, jnp.array([0.5, 1.0]), bad)) > 0.1
        True

    References:
        J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006, section 8.1
        (central differences and the choice of step); scipy.optimize.check_grad.
    """
    check_callable("f", f)
    args = check_args("check_grad", args, arrays=True)
    leaves = jax.tree.leaves((x, args))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        raise TypeError("check_grad is a host-side diagnostic: call it outside jit/vmap/grad")
    if eps is not None:
        if not (is_real_scalar(eps) and is_concrete(eps)) or not 0 < float(eps) < np.inf:
            raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    x = _as_float(x, "x")
    if any(jnp.iscomplexobj(leaf) for leaf in jax.tree.leaves(x)):
        raise TypeError(
            "check_grad takes real x (finite differences of a complex x would drop "
            "its imaginary parts)"
        )
    out_shape = jax.eval_shape(f, x, *args)
    _check_scalar_output(f, out_shape, "check_grad")
    # (a complex f, or grad, had its imaginary part dropped by NumPy with a ComplexWarning: the
    # real parts alone were compared)
    check_real_output("check_grad's f", out_shape.dtype)
    if grad is None:
        g = jax.grad(f)(x, *args)
    elif callable(grad):
        g = grad(x, *args)
    else:
        g = grad
    if jax.tree.structure(g) != jax.tree.structure(x):
        raise ValueError(
            f"grad must have the pytree structure of x: {jax.tree.structure(g)} "
            f"vs {jax.tree.structure(x)}"
        )
    for g_leaf, x_leaf in zip(jax.tree.leaves(g), jax.tree.leaves(x), strict=True):
        if jnp.iscomplexobj(g_leaf):
            raise TypeError(f"grad must be real, got a leaf of dtype {jnp.result_type(g_leaf)}")
        if np.shape(g_leaf) != np.shape(x_leaf):
            raise ValueError(
                f"grad must have the shapes of x leaf by leaf: got {np.shape(g_leaf)} "
                f"for a leaf of shape {np.shape(x_leaf)}"
            )
    g = np.asarray(ravel_pytree(jax.tree.map(jnp.asarray, g))[0], dtype=np.float64)
    flat, unravel = ravel_pytree(x)
    if flat.size == 0:  # nothing to check
        empty = np.zeros((0,))
        return GradCheck(0.0, empty, empty, empty)
    dtype = flat.dtype
    # Each component's own machine epsilon: a pytree may mix float32 and float64 leaves, which
    # ravel_pytree promotes to float64 (and unravel casts back): a float32 leaf moved by float64's
    # step rounded it away (a correct gradient reported 1.4e-2). And f resolves its value no
    # better than its output's dtype: an f that computes in float32 at a float64 x has float32's
    # rounding, and a float64-sized step made its difference noisy to ~1e-2 of the gradient (a
    # correct gradient then reported up to 0.3 at half the points tried).
    out_dtype = out_shape.dtype
    out_eps = float(jnp.finfo(out_dtype).eps) if jnp.issubdtype(out_dtype, jnp.floating) else 0.0
    machine_eps = np.concatenate(
        [
            np.full(np.size(leaf), max(float(jnp.finfo(leaf.dtype).eps), out_eps))
            for leaf in jax.tree.leaves(x)
        ]
    )
    step = machine_eps ** (1.0 / 3.0) if eps is None else float(eps)

    x64 = np.asarray(flat, dtype=np.float64)
    n = x64.size
    h = step * np.maximum(1.0, np.abs(x64))
    round_trip = jax.vmap(lambda row: ravel_pytree(unravel(row))[0])

    def stencil(h):
        """Rows x + h, x - h, x + 2h, x - 2h (the last two estimate the truncation error),
        rounded to their leaves' dtypes (unravel casts each leaf back): the quotient uses the
        step actually taken."""
        rows = np.stack([x64 + h, x64 - h, x64 + 2 * h, x64 - 2 * h])
        return np.array(round_trip(jnp.asarray(rows, dtype)), dtype=np.float64)

    shifted = stencil(h)
    # an eps below the dtype's resolution at x: x +- h rounded back to x, and 0 / 0 came back as
    # a NaN error with NumPy's divide warnings
    lost = np.flatnonzero((shifted[0] == shifted[1]) & np.isfinite(x64))
    if lost.size:
        raise ValueError(
            f"eps={eps!r} is too small: x +- eps max(1, |x_i|) rounds back to x_i in its dtype at "
            f"component(s) {lost[:8].tolist()}; use a larger eps (the default is the cube root "
            "of the machine epsilon)"
        )
    # one compiled program per f and x's structure: a jit of a lambda made here compiled anew
    # at every call, also for the same f at a point of the same shape. Not for an f that reads
    # an object which may change in place (a NumPy array written into between calls): the
    # cached program would keep the old one, while jax.grad above sees the new.
    like = (jax.tree.structure(x), tuple((a.shape, a.dtype) for a in jax.tree.leaves(x)))
    f_static = static_function(f)
    if f_static.reads_mutable:  # a program of its own (a lambda made here: jit's cache misses)
        evaluate = jax.jit(lambda p, a: _perturbed_values_of(p, a, f=f, like=like))
    else:
        evaluate = functools.partial(_perturbed_values, f=f_static, like=like)
    chunk = min(n, _CHECK_GRAD_CHUNK)  # bounded memory; one compiled shape (last chunk padded)

    def values_at(shifted, which):
        """f at the four perturbed points of each component in ``which`` (shape (4, len))."""
        out_values = np.empty((4, which.size))
        for start in range(0, which.size, chunk):
            index = which[np.arange(start, start + chunk) % which.size]
            rows = np.arange(chunk)
            points = np.broadcast_to(x64, (4, chunk, n)).copy()
            points[:, rows, index] = shifted[:, index]
            out = evaluate(jnp.asarray(points.reshape(4 * chunk, n), dtype), args)
            out = np.asarray(out, dtype=np.float64).reshape(4, chunk)
            stop = min(chunk, which.size - start)
            out_values[:, start : start + stop] = out[:, :stop]
        return out_values

    values = values_at(shifted, np.arange(n))
    # A stencil that leaves f's domain (log x at x = 1e-10: x - h < 0) gave a NaN difference
    # and a NaN error, for a right gradient and a wrong one alike (scipy's check_grad too).
    # Where a perturbed value is not finite (and f(x) is), the step shrinks: first to the
    # relative step eps |x_i| (x_i +- 2h keeps x_i's sign), then by halves; the components whose
    # stencil is finite are not touched.
    finite_at_x = True
    if np.any(~np.isfinite(values)):
        finite_at_x = bool(np.isfinite(float(f(x, *args))))
    if not finite_at_x:
        warnings.warn(
            "check_grad: f(x) is not finite: no finite difference at x (errors NaN)",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        for _ in range(_CHECK_GRAD_RETRIES):
            bad = np.flatnonzero(~np.all(np.isfinite(values), axis=0) & np.isfinite(x64))
            relative = np.broadcast_to(step, (n,))[bad] * np.abs(x64[bad])
            shorter = np.where(relative < h[bad], relative, h[bad] / 2)
            resolvable = shorter > machine_eps[bad] * np.abs(x64[bad])
            bad, shorter = bad[resolvable], shorter[resolvable]
            if not bad.size:
                break
            retry = np.copy(h)
            retry[bad] = shorter
            moved = stencil(retry)
            bad = bad[moved[0, bad] != moved[1, bad]]  # a step that rounds away is no difference
            if not bad.size:
                break
            h[bad] = retry[bad]
            shifted[:, bad] = moved[:, bad]
            values[:, bad] = values_at(shifted, bad)
        left = np.flatnonzero(~np.all(np.isfinite(values), axis=0))
        if left.size:
            warnings.warn(
                f"check_grad: f is not finite at some of x +- h, x +- 2h for component(s) "
                f"{left[:8].tolist()}, even with the step shortened to eps |x_i| and halved "
                "towards the dtype's resolution: no finite difference there (error NaN). Is x "
                "inside f's domain, away from its edge?",
                RuntimeWarning,
                stacklevel=2,
            )
    width = shifted[0] - shifted[1]
    fd = (values[0] - values[1]) / width
    fd_wide = (values[2] - values[3]) / (shifted[2] - shifted[3])

    # The estimated error of fd (rounding plus truncation), over eps^(1/3): a discrepancy within
    # the finite difference's own error then reports at most about eps^(1/3).
    root_eps = machine_eps ** (1.0 / 3.0)
    with np.errstate(invalid="ignore", over="ignore"):
        rounding = machine_eps * np.max(np.abs(values), axis=0) / (width / 2)
        truncation = np.abs(fd_wide - fd) / 3.0  # h^2 f_iii / 6, from steps h and 2h (Richardson)
    scale = max(np.max(np.abs(g), initial=0.0), np.max(np.abs(fd), initial=0.0))
    fd_error = np.fmax(rounding, truncation)
    share = np.maximum(
        root_eps * scale, np.finfo(np.float64).tiny
    )  # the gradient's eps^(1/3) share
    floor = np.fmax(fd_error / root_eps, share)
    magnitude = np.maximum(np.abs(g), np.abs(fd))
    errors = np.abs(g - fd) / np.maximum(magnitude, floor)
    # A discrepancy far beyond the difference's own estimated error is a wrong gradient whatever
    # that floor: with the error taken off, it is measured relative to the component itself
    # (and the whole gradient's eps^(1/3) share). Where the difference is noisy (f computed in
    # float32 for a float64 x, or by an inner solver to 1e-8) the floor, its error over
    # eps^(1/3), exceeded the gradient itself: a gradient off by 100 % reported 1e-2.
    with np.errstate(invalid="ignore"):
        excess = np.abs(g - fd) - _FD_ERROR_MARGIN * fd_error
        beyond = np.maximum(excess, 0.0) / np.maximum(magnitude, share)
    errors = np.where(np.isnan(errors), errors, np.fmax(errors, beyond))
    return GradCheck(float(np.max(errors, initial=0.0)), errors, g, fd)
