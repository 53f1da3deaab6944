"""What the root finders share: the result type, option checks and the elementwise mapping (private).

Two modes:

* **per element** (scalar equations): ``x0`` is an array (or a scalar) and ``f`` acts elementwise,
  ``f(x, *args)[i] = g(x[i], *args[i])``. Each element is solved on its own, with its own
  ``status`` and ``n_iter`` (Newton: one masked problem over whole arrays, :func:`map_chunks`;
  the bracketing solvers: ``jax.vmap`` of the scalar solver, :func:`map_elements`). Every leaf of
  ``args`` is broadcast against ``x0`` and split per element, as NumPy broadcasting would pair them.
* **system**: ``f: R^n -> R^n`` on a pytree ``x``; one Jacobian and one linear solve per step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from . import _tree
from ._backend import wide_backend
from ._status import Status
from ._tree import PyTree

# Elementwise problems larger than this run as lax.map over chunks of about this many elements,
# so that the loop's working set stays in cache and stragglers hold only their chunk (measured on
# a 2-core CPU; odd chunk sizes, like 15625, are ~2x slower: see _chunk_size).
CHUNK = 65536
# The same for the masked Newton iteration (one fused pass per iteration over a complex state).
# Measured on a 2-core CPU at 10^6 roots (median): 2^18 chunks 22 ms, 2^16 26 ms, unchunked 29 ms
# (its 16 MB state and temporaries are fresh pages on every call: ~4000 page faults); chunking
# costs compile time (slices, updates, buffers), so problems up to one chunk are not chunked.
MASKED_CHUNK = 2**18
# On a GPU one iteration over 10^7 elements is a single sub-millisecond kernel, while every chunk
# costs a loop of its own (a launch and a host synchronisation per iteration): there the problem
# is chunked only beyond this size, to bound the memory of the temporaries.
WIDE_CHUNK = 2**24


def masked_chunk() -> int:
    """The chunk size of the masked Newton iteration for the backend being compiled for."""
    return WIDE_CHUNK if wide_backend() else MASKED_CHUNK


_SCIPY_NAMES = {
    "maxiter": "max_iter",
    "tol": "atol",
    "xtol": "atol",
    "fprime": "nothing: derivatives come from JAX (forward mode)",
    "fprime2": "nothing: Halley's method is not offered",
    "a": "lower",
    "b": "upper",
}


class RootResult(NamedTuple):
    """The result of a root finder; every field has the batch shape in per-element mode.

    Attributes:
        x: the root (same structure and dtypes as ``x0``, a system of float32 and float64
            leaves solved in float64; the last finite iterate on failure).
        fun: ``f(x, *args)`` at the returned ``x``.
        success: ``status == Status.SUCCESS``.
        status: a :class:`Status` code (int32), one per element in per-element mode.
        n_iter: the number of iterations taken.
        n_fev: the number of evaluations of ``f`` (a value with its derivative counts as one).
    """

    x: PyTree
    fun: PyTree
    success: jax.Array
    status: jax.Array
    n_iter: jax.Array
    n_fev: jax.Array


def reject_unknown(func: str, options: dict[str, Any], known: tuple[str, ...]) -> None:
    """Raise TypeError naming unknown keyword options (with scipy's names mapped to ours)."""
    _tree.reject_unknown(func, options, known, _SCIPY_NAMES)


def check_square(func: str, x0: PyTree, out: Any) -> None:
    """``f(x0, *args)`` (``out``, shapes) must have ``x0``'s structure and shapes: a ValueError
    naming ``func`` otherwise."""
    in_struct, out_struct = jax.tree.structure(x0), jax.tree.structure(out)
    in_shapes = [u.shape for u in jax.tree.leaves(x0)]
    out_shapes = [getattr(u, "shape", None) for u in jax.tree.leaves(out)]
    if in_struct != out_struct or in_shapes != out_shapes:
        raise ValueError(
            f"{func}: f(x, *args) must have the same structure and shapes as x, but x0 has "
            f"{in_struct} with shapes {in_shapes} and f(x0, *args) has {out_struct} with "
            f"shapes {out_shapes}."
        )


def float_dtype(x: jax.Array) -> np.dtype:
    """The floating dtype to solve in: ``x``'s own, or the default float for integers."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        if jnp.issubdtype(dtype, jnp.complexfloating):
            raise TypeError(f"complex x0 is not supported (got {dtype}); split it into real parts")
        dtype = jnp.result_type(float)
    return dtype


def check_real_output(out) -> None:
    """``f``'s output (arrays or shape structs) must be real numbers: a complex value cast to
    the real solve dtype would lose its imaginary part, and with it the equation."""
    for leaf in jax.tree.leaves(out):
        dtype = np.dtype(leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf))
        # jnp's issubdtype: numpy's does not count bfloat16 as floating
        if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.integer)):
            if jnp.issubdtype(dtype, jnp.complexfloating):
                hint = (
                    "For a complex equation, solve its real and imaginary parts as a system of "
                    "two real equations."
                )
            else:  # (a bool was told to split a complex equation)
                hint = "A root is where f changes sign: return a number (x - 0.3), not a test."
            raise TypeError(f"f must return real numbers, got dtype {dtype}. {hint}")


def check_floating_output(func: str, out) -> None:
    """For Newton's methods ``f``'s output must be floating-point: an integer one (``floor(x)``
    cast to int) has a zero derivative everywhere, which ended in ``SINGULAR`` (or ``SUCCESS``
    where it happened to be 0). A TypeError naming ``func`` and ``f``; complex first gets
    :func:`check_real_output`'s advice. (Bisection takes integer outputs: it needs only signs.)"""
    check_real_output(out)
    for leaf in jax.tree.leaves(out):
        _tree.check_real_output(f"{func}: f", np.dtype(leaf.dtype))


def wrap_scalar_f(f: Callable, dtype) -> Callable:
    """``f(x, *args)`` with its output cast to the solve dtype (args may promote it)."""

    def g(x, *args):
        out = jnp.asarray(f(x, *args))
        check_real_output(out)
        return out.astype(dtype)

    return g


def check_scalar_output(func: str, f: Callable, dtype, args_elem: tuple):
    """In per-element mode ``f`` must map one element (and its args) to one value; returns
    ``f``'s output for one element (a shape struct)."""
    x = jax.ShapeDtypeStruct((), dtype)
    out = jax.eval_shape(lambda x, a: f(x, *a), x, args_elem)
    shape = getattr(out, "shape", None)
    if shape != ():
        raise ValueError(
            f"{func}: f must map each element of x to one value in per-element mode, but "
            f"f(x_i, *args_i) has shape {shape} for a scalar x_i. For a system of equations pass "
            "elementwise=False (newton_raphson); data shared by all elements belong in a closure, "
            "not in args (each leaf of args is split per element)."
        )
    return out


def broadcast_problem(func: str, arrays: dict[str, jax.Array], args: tuple):
    """Broadcast the named arrays and every leaf of ``args`` to one batch shape.

    Returns ``(shape, arrays, args_flat, in_axes)``: the arrays flattened to ``(N,)``; the args
    with batched leaves flattened to ``(N,)`` and 0-d leaves left whole (``in_axes`` None for them).
    """
    arg_leaves, treedef = jax.tree.flatten(args)
    arg_leaves = [jnp.asarray(leaf) for leaf in arg_leaves]
    shapes = [jnp.shape(a) for a in arrays.values()] + [jnp.shape(a) for a in arg_leaves]
    try:
        shape = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        # (no args: the list of shapes ended in ", .")
        detail = ", ".join(
            [f"{k}: {jnp.shape(v)}" for k, v in arrays.items()]
            + [f"args leaf {i}: {a.shape}" for i, a in enumerate(arg_leaves)]
        )
        raise ValueError(
            f"{func}: in per-element mode {', '.join(arrays)} and every leaf of args are broadcast "
            f"together, but these shapes do not broadcast: {detail}. Data shared by all "
            "elements belong in a closure over f, not in args."
        ) from None
    flat = {k: jnp.broadcast_to(v, shape).reshape(-1) for k, v in arrays.items()}
    leaves, axes = [], []
    for leaf in arg_leaves:
        if leaf.ndim == 0:
            leaves.append(leaf)
            axes.append(None)
        else:
            leaves.append(jnp.broadcast_to(leaf, shape).reshape(-1))
            axes.append(0)
    return (
        shape,
        flat,
        jax.tree.unflatten(treedef, leaves),
        jax.tree.unflatten(treedef, axes),
    )


def map_elements(solve_one: Callable, flat: tuple, args, in_axes, n: int, chunk: int | None = None):
    """``vmap(solve_one)`` over ``n`` elements; in chunks (``lax.map``) when ``n`` is large.

    ``flat`` holds arrays of shape ``(n,)``; ``args``/``in_axes`` as from :func:`broadcast_problem`.
    """
    batched = jax.vmap(solve_one, in_axes=(0,) * len(flat) + (in_axes,))
    return map_chunks(batched, flat, args, in_axes, n, chunk)


def map_chunks(solve_batch: Callable, flat: tuple, args, in_axes, n: int, chunk: int | None = None):
    """``solve_batch(*flat, args)`` on whole arrays; in chunks (``lax.map``) when ``n`` is large.

    ``flat`` holds arrays of shape ``(n,)``; ``args``/``in_axes`` as from :func:`broadcast_problem`
    (the leaves with axis 0 are split into chunks with ``flat``, the others passed whole). The
    chunk size is an even divisor of ``n`` near ``chunk`` when one exists (else the input is padded
    by repeating its last element), so the body compiles once.
    """
    chunk = (WIDE_CHUNK if wide_backend() else CHUNK) if chunk is None else chunk
    leaves, treedef = jax.tree.flatten(args)
    axes = treedef.flatten_up_to(in_axes)
    mapped = [i for i, ax in enumerate(axes) if ax is not None]

    def one(xs, mapped_leaves):
        full = list(leaves)
        for i, leaf in zip(mapped, mapped_leaves, strict=True):
            full[i] = leaf
        return solve_batch(*xs, jax.tree.unflatten(treedef, full))

    mapped_leaves = [leaves[i] for i in mapped]
    if n <= chunk:
        return one(tuple(flat), mapped_leaves)
    size = _chunk_size(n, chunk)
    n_pad = -n % size

    def split(a):
        if n_pad:
            a = jnp.concatenate([a, jnp.broadcast_to(a[-1:], (n_pad,) + a.shape[1:])])
        return a.reshape((-1, size) + a.shape[1:])

    out = lax.map(
        lambda xs: one(*xs),
        (tuple(split(a) for a in flat), [split(a) for a in mapped_leaves]),
    )
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[:n], out)


def _chunk_size(n: int, chunk: int) -> int:
    """An even divisor of ``n`` in ``(chunk / 2, chunk]``, else ``chunk`` (and the input is padded).

    Odd sizes are avoided: XLA's CPU loops over an odd-sized chunk measured ~2x slower.
    """
    for size in range(chunk - chunk % 2, chunk // 2, -2):
        if n % size == 0:
            return size
    return chunk


def make_result(x, fun, status, n_iter, n_fev, shape: tuple | None = None) -> RootResult:
    """Assemble a :class:`RootResult` (reshaping flat per-element outputs to ``shape``).

    A stop at the dtype's rounding (``PRECISION_LIMIT``, ``STAGNATED``) where ``fun`` is exactly 0
    at the returned ``x`` is ``SUCCESS``: ``x`` is a root. (The stop is decided from ``f`` as
    evaluated inside the loop; ``fun`` is evaluated again at the end, by code that XLA compiles
    apart and that may round differently in the last bit, as it did for ``x**3 - 3`` with XLA's
    optimisations off: ``fun = 0`` was reported with ``PRECISION_LIMIT``.)
    """
    exact = jnp.asarray(True)
    for leaf in jax.tree.leaves(fun):  # (a system's equations: every one, in every leaf)
        exact = exact & jnp.all(leaf == 0, axis=tuple(range(jnp.ndim(status), leaf.ndim)))
    for leaf in jax.tree.leaves(x):
        exact = exact & jnp.all(jnp.isfinite(leaf), axis=tuple(range(jnp.ndim(status), leaf.ndim)))
    at_rounding = (status == int(Status.PRECISION_LIMIT)) | (status == int(Status.STAGNATED))
    status = jnp.where(exact & at_rounding, int(Status.SUCCESS), status).astype(status.dtype)
    res = RootResult(x, fun, status == int(Status.SUCCESS), status, n_iter, n_fev)
    if shape is None:
        return res
    return jax.tree.map(lambda a: a.reshape(shape), res)


def scalar_tangent_solve(g: Callable, y: jax.Array) -> jax.Array:
    """Solve the 1x1 linear system ``g(v) = y`` of a scalar root (for implicit differentiation)."""
    return y / g(jnp.ones_like(y))
