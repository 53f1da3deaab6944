"""Small pytree and dtype helpers shared by the solvers (private)."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def tree_where(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``jnp.where`` with a scalar predicate."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def tree_all_finite(tree: PyTree) -> jax.Array:
    """True when every element of every leaf is finite."""
    leaves = [jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def tree_max_abs(tree: PyTree) -> jax.Array:
    """The infinity norm of a pytree (0 for an empty tree)."""
    leaves = [jnp.max(jnp.abs(leaf), initial=0.0) for leaf in jax.tree.leaves(tree)]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.asarray(0.0)


def tree_vdot(a: PyTree, b: PyTree) -> jax.Array:
    """The inner product of two pytrees of the same structure."""
    parts = jax.tree.leaves(jax.tree.map(lambda u, v: jnp.vdot(u, v), a, b))
    return sum(parts[1:], parts[0]) if parts else jnp.asarray(0.0)


def tree_axpy(alpha: jax.Array, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y`` leafwise."""
    return jax.tree.map(lambda u, v: alpha * u + v, x, y)


def tree_sub(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.subtract, a, b)


def tree_scale(alpha: jax.Array, x: PyTree) -> PyTree:
    return jax.tree.map(lambda u: alpha * u, x)


def tree_zeros_like(x: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, x)


def tree_step_small(x: PyTree, dx: PyTree, rtol: jax.Array, atol: jax.Array) -> jax.Array:
    """The step test ``|dx_i| <= atol + rtol * |x_i|`` for every element."""
    leaves = jax.tree.leaves(
        jax.tree.map(lambda u, d: jnp.all(jnp.abs(d) <= atol + rtol * jnp.abs(u)), x, dx)
    )
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def as_inexact(tree: PyTree, name: str | None = None) -> PyTree:
    """Convert every leaf to a JAX array of floating dtype (ints become the default float).

    With ``name`` (an argument's), a leaf that holds no numbers is a TypeError naming it (a
    string met JAX's "not a valid JAX array type", which named no argument)."""
    if name is not None:
        check_numbers(name, tree)

    def convert(leaf):
        arr = jnp.asarray(leaf)
        if not jnp.issubdtype(arr.dtype, jnp.inexact):
            arr = arr.astype(jnp.result_type(float))
        return arr

    return jax.tree.map(convert, tree)


def check_numbers(name: str, value) -> None:
    """Raise TypeError naming ``name`` unless every leaf of ``value`` holds numbers (or bools).

    A string (an ``x0``, a fit's ``y``, ``sigma`` or bound) met NumPy's or JAX's own message
    ("ufunc 'less_equal' did not contain a loop", "not a valid JAX array type"), naming no
    argument.
    """
    for leaf in jax.tree.leaves(value):
        try:
            dtype = dtype_of(leaf)
        except (TypeError, ValueError):  # ragged sequences
            dtype = np.dtype(object)
        # (jnp's issubdtype: NumPy's does not count bfloat16 as a number)
        if not (jnp.issubdtype(dtype, jnp.number) or dtype == np.dtype(bool)):
            raise TypeError(f"{name} must hold real numbers, got dtype {dtype}")


def as_strong_inexact(tree: PyTree, name: str | None = None) -> PyTree:
    """:func:`as_inexact` with every leaf strongly typed, each in its own dtype: a solver's
    compiled program is then keyed by the dtypes alone, not by how ``x0`` was made (a weakly
    typed ``jnp.full(2, 0.5)``, or a Python number, beside an array of the same dtype compiled
    a program of its own)."""
    return jax.tree.map(lambda u: u.astype(u.dtype), as_inexact(tree, name))


def strong_array(value: Any, dtype: Any = None) -> Any:
    """``value`` (data, not a pytree; None passes) as an array of a strong dtype, its own or
    ``dtype``: a jitted program is then keyed by the dtype, not by how the data were made (a
    Python float, ``jnp.full(n, 0.2)`` or a list beside a NumPy array compiled a program of their
    own; a list went in as one argument per element). Host values become NumPy arrays (no
    dispatch: a JAX conversion of a Python float costs 50-80 us per call); a weakly typed JAX
    array or tracer, or one of another dtype, is converted; a strongly typed one of the dtype
    passes as it is."""
    if value is None:
        return None
    if isinstance(value, jax.Array):  # (tracers as well)
        target = value.dtype if dtype is None else np.dtype(dtype)
        return value.astype(target) if value.aval.weak_type or value.dtype != target else value
    return np.asarray(value, dtype)


def promote(tree: PyTree, dtype: Any) -> tuple[PyTree, Callable[[PyTree], PyTree]]:
    """Every leaf of ``tree`` cast to ``dtype`` (a solve's common dtype), and ``restore``, which
    casts each leaf of a tree of the same structure back to the dtype of its leaf in ``tree``
    (a leading axis, as of a history, is kept).

    A solver computes in the promoted dtype of a pytree mixing float32 and float64 leaves, as
    ``f`` sees them, and returns its ``x`` (and the trees shaped like it) in ``x0``'s structure
    and dtypes: a float32 leaf comes back float32, as ``jax.flatten_util.ravel_pytree``'s
    ``unravel`` gives it back (it came back float64).
    """
    leaves, treedef = jax.tree.flatten(tree)
    dtypes = [jnp.result_type(leaf) for leaf in leaves]

    def restore(other: PyTree) -> PyTree:
        parts = treedef.flatten_up_to(other)
        return treedef.unflatten(
            [jnp.asarray(u).astype(d) for u, d in zip(parts, dtypes, strict=True)]
        )

    return treedef.unflatten([jnp.asarray(u).astype(dtype) for u in leaves]), restore


def is_concrete(*trees) -> bool:
    """True when no leaf is a tracer (so that values can be read on the host)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


def dtype_of(a) -> np.dtype:
    """The dtype JAX gives an input (``jnp.asarray(a).dtype``) without converting it.

    Works for NumPy and JAX arrays (read, not copied), scalars and nested sequences. Canonical:
    without ``jax_enable_x64`` a float64 input is float32 here, as it is once JAX holds it, so
    that no later step asks for float64 (JAX warns on each such request). ``np.result_type``
    would convert a JAX array through a path NumPy deprecates, and rejects lists.
    """
    dt = getattr(a, "dtype", None)
    return np.dtype(jax.dtypes.canonicalize_dtype(dt if dt is not None else np.asarray(a).dtype))


def tree_dtype(tree: PyTree) -> np.dtype:
    """The common floating dtype of a pytree's leaves."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.result_type(float)
    return jnp.result_type(*[dtype_of(leaf) for leaf in leaves])


def default_tolerances(
    dtype: Any,
    rtol: float | None = None,
    atol: float | None = None,
    *,
    power: float = 0.5,
    traced: bool = False,
) -> tuple[Any, Any]:
    """Tolerances defaulted from the dtype's machine epsilon: ``eps ** power`` for each not given.

    ``power = 0.5`` gives ``1.5e-8`` in float64 and ``3.5e-4`` in float32; quadratically convergent
    methods (Newton) can ask for ``power = 0.75`` (``1.8e-12`` and ``6.4e-6``). A tolerance must be
    a real scalar; ``traced=True`` where the solver takes it as a traced argument (a traced value
    passes through unchecked; a concrete one is checked and returned as a float), else a traced
    value raises TypeError.
    """
    eps = float(jnp.finfo(dtype).eps)
    default = eps**power
    out = []
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is None:
            out.append(default)
            continue
        if isinstance(value, bool) or np.ndim(value) != 0:
            raise ValueError(f"{name} must be a real scalar, got {value!r}")
        kind = dtype_of(value)
        if not (np.issubdtype(kind, np.integer) or np.issubdtype(kind, np.floating)):
            raise TypeError(f"{name} must be a real number, got {value!r}")
        if not is_concrete(value):
            if not traced:
                raise TypeError(
                    f"{name} must be a concrete number (a static option here), got a traced value"
                )
            out.append(value)
            continue
        if not (np.isfinite(float(value)) and float(value) >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        out.append(float(value))
    return out[0], out[1]


def check_callable(name: str, fn: Any) -> None:
    """A function argument (``f``, ``eq``, ``path``...) must be callable, else a TypeError naming
    it (Python's "'float' object is not callable" named none: ``f``, ``eq`` or ``ineq``?)."""
    if not callable(fn):
        raise TypeError(f"{name} must be callable, got {type(fn).__name__}")


def check_args(func: str, args: Any, *, arrays: bool = False) -> tuple:
    """``args``, the extra arguments of ``f(x, *args)``, must be a tuple (or a list): anything
    else is a TypeError naming ``func`` (a bare value met Python's "argument after * must be an
    iterable", or was checked inside a jit as a tracer).

    ``arrays=True`` (the routines that pass ``args`` to a compiled program as traced arrays, the
    solvers): every leaf must be numbers (an array, a NumPy or Python scalar, a bool). A string,
    a function or another object met JAX's "Error interpreting argument to <function _run> as an
    abstract array ... not marked as static using the static_argnums", naming an internal
    function and an option the caller cannot set (jaxopt's ``run(x0, *args)`` fails alike); the
    TypeError names the leaf and the way to pass it (a closure or ``functools.partial``)."""
    if not isinstance(args, tuple | list):
        raise TypeError(
            f"{func}: args must be a tuple of extra arguments, got {type(args).__name__} "
            "(f is called as f(x, *args); e.g. args=(c,))"
        )
    args = tuple(args)
    if arrays:
        for path, leaf in jax.tree_util.tree_flatten_with_path(args)[0]:
            if _holds_numbers(leaf):
                continue
            where = "args" + jax.tree_util.keystr(path)
            raise TypeError(
                f"{func}: {where} is a {type(leaf).__name__} ({leaf!r:.40}); JAX traces args as "
                "arrays (that is what makes the result differentiable and vmappable in them), so "
                "each of their leaves must hold numbers. Give any other value (a string, a function, "
                "an object) to f through a closure or functools.partial, e.g. "
                "f=functools.partial(f, kind='l2') or f=lambda x, *a: f0(x, *a, 'l2')"
            )
    return args


def _holds_numbers(leaf: Any) -> bool:
    """A leaf JAX can trace as an array: a JAX array (or tracer), or a NumPy or Python number
    (bool included) or array of them."""
    if isinstance(leaf, jax.Array) or hasattr(leaf, "__jax_array__"):
        return True
    if isinstance(leaf, bool | int | float | complex | np.generic | np.ndarray):
        # (jnp.issubdtype, not dtype.kind: NumPy arrays of ml_dtypes' bfloat16, float8 and int4,
        # np.asarray of a JAX bfloat16 array, have kind 'V' and are numbers JAX traces)
        dtype = np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype))
        return bool(jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))
    return False


def is_int(value: Any) -> bool:
    """An integer, Python's or NumPy's (``np.int64(100)`` from a computation); not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_real_scalar(value: Any) -> bool:
    """A real number: Python's, NumPy's, or a 0-d array (concrete or traced); not a bool."""
    if isinstance(value, bool | str) or callable(value) or np.ndim(value) != 0:
        return False
    dtype = dtype_of(value)
    return np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)


def check_int(name: str, value: Any, *, minimum: int) -> int:
    """Validate a static integer option of at least ``minimum``, raising TypeError (no int) or
    ValueError (too small) that names it."""
    if not is_int(value):
        raise TypeError(f"{name} must be a Python int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_int(name: str, value: Any) -> int:
    """Validate a static integer option of at least 1, raising TypeError/ValueError that names it."""
    return check_int(name, value, minimum=1)


def check_bool(name: str, value: Any) -> bool:
    """Validate a static flag, True or False (a Python or NumPy bool), raising TypeError that
    names it (``bool()`` took any value: ``maximise="no"`` maximised)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_not_half(func: str, name: str, dtype) -> None:
    """A solve whose linear algebra (LU, Cholesky, eigh, SVD) runs in ``dtype`` needs float32 or
    float64: float16 and bfloat16 are a TypeError naming ``func`` and the argument (LAPACK's
    ``NotImplementedError: Unsupported dtype float16``, or a loop's carry changing its dtype,
    named neither)."""
    if jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype).itemsize < 4:
        raise TypeError(
            f"{func}: {name} of dtype {jnp.dtype(dtype).name}: its solves run in float32 or "
            f"float64; cast {name} to float32"
        )


def check_real_output(what: str, dtype) -> None:
    """A user function's output must be real floating-point, raising TypeError that names it: an
    integer or boolean one has no derivative, a complex one lost its imaginary part in the cast
    to the parameters' dtype (an equality ``1 - x + 5j = 0`` "held" with SUCCESS)."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{what} must return real floating values, got dtype {dtype}")


def check_prng_key(name: str, key: Any) -> None:
    """One JAX PRNG key: a new-style ``jax.random.key(0)`` (0-d, a key dtype) or a raw
    ``jax.random.PRNGKey(0)`` (uint32 of the default implementation's key shape). Anything else,
    a batch of keys included, is a TypeError naming it (JAX's 'invalid PRNG key data' or 'split
    accepts a single key' named no argument)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        ok = np.shape(key) == ()
    else:
        raw_shape = jax.eval_shape(jax.random.PRNGKey, 0).shape
        ok = dtype == np.uint32 and np.shape(key) == raw_shape
    if not ok:
        got = (
            f"an array of dtype {dtype} and shape {np.shape(key)}"
            if dtype is not None
            else f"{type(key).__name__} {key!r}"
        )
        raise TypeError(
            f"{name} must be one JAX PRNG key, jax.random.key(seed) or jax.random.PRNGKey(seed); "
            f"got {got}"
        )


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """Validate a static string option against its allowed values."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


# Option names of scipy, jaxopt and optimistix that have another name here.
_PEER_NAMES = {
    "maxiter": "max_iter",
    "max_steps": "max_iter",
    "tol": "atol",
    "xtol": "atol",
    "gtol": "atol",
    "ftol": "rtol",
}


def reject_unknown(
    func: str, options: dict, known: tuple[str, ...], names: dict | None = None
) -> None:
    """Raise TypeError naming unknown keyword ``options`` of ``func``, each with the name it has
    here (``names`` adds to the peers' names mapped by default) or, for a misspelling, the
    nearest of ``known``."""
    if not options:
        return
    names = {**_PEER_NAMES, **(names or {})}
    hints = []
    for name in options:
        if name in names:
            hints.append(f"{name!r} (use {names[name]})")
        else:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise TypeError(
        f"{func}() got unknown option(s): {', '.join(hints)}. Known options: {', '.join(known)}."
    )


def suggest_options(fn: Callable) -> Callable:
    """``fn`` refusing an unknown keyword option with the name it has here (:func:`reject_unknown`):
    scipy's, jaxopt's and optimistix's ``maxiter``, ``max_steps``, ``tol``... met Python's bare
    "unexpected keyword argument" (the root finders, which take ``**options``, said so)."""
    params = inspect.signature(fn).parameters.values()
    known = tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)
    # Accepted by keyword: the options and the leading arguments a caller may name
    # (``bfgs(f=f, x0=x0)``, ``curve_fit(model, x, y, p0=p0)``, scipy's spelling).
    known_set = frozenset(
        p.name
        for p in params
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        unknown = {name: v for name, v in kwargs.items() if name not in known_set}
        reject_unknown(fn.__name__, unknown, known)
        return fn(*args, **kwargs)

    return wrapper


def first_of_pair(out: Any, message: Callable[[str], str]) -> Any:
    """``out[0]`` for an ``out`` that is a pair ``(value, aux)`` (a tuple or a list, as JAX's
    ``has_aux`` takes it); anything else is a TypeError whose text is ``message(got)``, ``got``
    describing what came instead."""
    if isinstance(out, tuple | list) and len(out) == 2:
        return out[0]
    if hasattr(out, "shape"):
        got = f"an array of shape {np.shape(out)}"
    elif isinstance(out, tuple | list):
        got = f"a {type(out).__name__} of length {len(out)}"
    else:
        got = type(out).__name__
    raise TypeError(message(got))


def value_of_pair(f: Callable, name: str, what: str = "f") -> Callable:
    """The first part of ``f``'s output, for an ``f`` that returns ``(value, aux)``
    (``has_aux=True``); a TypeError naming ``name``, ``what`` and what ``f`` returned otherwise."""

    def value(x, *args):
        return first_of_pair(
            f(x, *args),
            lambda got: (
                f"{name}: with has_aux=True, {what} must return a pair (value, aux), got {got}"
            ),
        )

    return value
