"""User functions as static arguments of the solvers' compiled programs (private).

``jax.jit`` keeps one compiled program per value of a static argument, compared by ``==``, and a
function equals only itself. A model written inline, ``curve_fit(lambda x, p: ..., ...)`` in a
loop as scipy users do, is a new function object on each call and would compile on each call
(0.1-1.5 s each). :func:`static_function` wraps a user function in an object that equals
another wrapped function when both compute the same thing, judged from what they are made of:

* a plain function or lambda: its code, and the values of everything the code can read that is
  not an argument: closure cells, defaults and the module globals its code names;
* a ``functools.partial``: its function and arguments;
* a tuple or NamedTuple (an optax optimiser is a NamedTuple of closures): its items.

A library's function (JAX, NumPy, scipy, optax, ...) is compared by identity, or, when it is a
closure, by its code and closure values (``optax.adam(0.1)`` made twice gives equal
optimisers; its module's globals are taken as fixed).

Values are compared by value when they are immutable (``None``, numbers, strings, NumPy scalars,
tuples of them) and by identity when they are modules, classes, JAX arrays (immutable too), or
functions of JAX, NumPy and the like; a function found among them is judged by these same rules.
Anything else (a NumPy array, a list, an object of the user's own class: all may be mutated
between calls) makes the function equal only to itself, as ``jax.jit`` has it. The judgement is
made at every call, so a global the function reads that has been rebound since the last call
gives a new compilation rather than a stale result (``jax.jit`` of one function object would not
notice). What is not seen: a mutable object reached through a module attribute, or ``global``
state changed inside a library module.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

__all__ = ["StaticFunction", "StaticValue", "static_function"]

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, np.generic)
# Callables from these packages are taken to be fixed (compared by identity).
_LIBRARIES = frozenset(
    ("jax", "jaxlib", "numpy", "scipy", "optax", "math", "cmath", "builtins", "operator")
)
_UNKNOWN = object()  # a value that can only be compared by identity
# A traced value is not a fixed array. Should a later jax move the class, arrays are not
# recognised at all (compared by identity through their function): slower, never wrong.
_TRACER = getattr(getattr(jax, "core", None), "Tracer", None)


class _Same:
    """Compares the object it holds by identity (a JAX array's ``==`` is elementwise)."""

    __slots__ = ("obj",)

    def __init__(self, obj):
        self.obj = obj

    def __eq__(self, other) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


@functools.lru_cache(maxsize=1024)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    """The names ``code`` (and the functions defined in it) may look up as globals."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names.update(_global_names(const))
    return tuple(sorted(names))


def _is_library(value) -> bool:
    module = getattr(value, "__module__", None) or ""
    return module.partition(".")[0] in _LIBRARIES


def _value_key(value, seen: set[int]) -> Any:
    if isinstance(value, _IMMUTABLE):
        return (type(value), value)
    if isinstance(value, tuple) and (type(value) is tuple or hasattr(value, "_fields")):
        items = tuple(_value_key(v, seen) for v in value)  # a tuple or a NamedTuple
        return _UNKNOWN if any(i is _UNKNOWN for i in items) else ("tuple", type(value), items)
    if isinstance(value, (types.ModuleType, type)):
        return ("object", value)
    if _TRACER is not None and isinstance(value, jax.Array) and not isinstance(value, _TRACER):
        return ("array", _Same(value))  # immutable: the same array holds the same values
    if type(value) is types.FunctionType or isinstance(value, functools.partial):
        return _key(value, seen)
    if callable(value) and _is_library(value):
        try:
            hash(value)
        except TypeError:
            return _UNKNOWN
        return ("object", value)
    return _UNKNOWN


def _function_key(fn: types.FunctionType, seen: set[int]) -> Any:
    """A plain function: its code and what it reads. A library's function (an optax
    optimiser's closure, say) reads its own module's globals, which are taken as fixed."""
    if id(fn) in seen:  # recursion: the code identifies it
        return ("recursive", fn.__code__)
    seen = seen | {id(fn)}
    try:
        cells = [c.cell_contents for c in fn.__closure__ or ()]
    except ValueError:  # an empty cell (a name assigned after the function was made)
        return _UNKNOWN
    glob = {} if _is_library(fn) else fn.__globals__
    parts = (
        [_value_key(v, seen) for v in cells],
        [_value_key(v, seen) for v in fn.__defaults__ or ()],
        [(k, _value_key(v, seen)) for k, v in sorted((fn.__kwdefaults__ or {}).items())],
        [(n, _value_key(glob[n], seen)) for n in _global_names(fn.__code__) if n in glob],
    )
    for part in parts:
        for item in part:
            if item is _UNKNOWN or (isinstance(item, tuple) and item[-1] is _UNKNOWN):
                return _UNKNOWN
    return ("function", fn.__code__) + tuple(tuple(p) for p in parts)


def _key(fn, seen: set[int] = frozenset()) -> Any:
    if type(fn) is types.FunctionType:
        return _function_key(fn, seen)
    if isinstance(fn, functools.partial):
        inner = _key(fn.func, seen) if callable(fn.func) else _UNKNOWN
        args = _value_key(tuple(fn.args), seen)
        kwargs = _value_key(tuple(sorted(fn.keywords.items())), seen)
        if _UNKNOWN in (inner, args, kwargs):
            return _UNKNOWN
        return ("partial", inner, args, kwargs)
    return _UNKNOWN


class StaticFunction:
    """A callable equal to another that computes the same thing (see the module docstring)."""

    __slots__ = ("fn", "key", "__wrapped__")

    def __init__(self, fn: Callable):
        key = _key(fn)
        self.fn = fn
        self.key = ("identity", fn) if key is _UNKNOWN else key
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, StaticFunction) and self.key == other.key

    def __repr__(self) -> str:
        return f"StaticFunction({self.fn!r})"


def static_function(fn):
    """``fn`` wrapped as a :class:`StaticFunction` (None and wrapped functions pass through)."""
    if fn is None or isinstance(fn, StaticFunction):
        return fn
    return StaticFunction(fn)


class StaticValue:
    """Any static option (an optax optimiser, a NamedTuple of functions) held with the same
    notion of equality as :class:`StaticFunction`; the option itself is ``.value``."""

    __slots__ = ("value", "key")

    def __init__(self, value):
        key = _value_key(value, frozenset())
        self.value = value
        self.key = ("identity", value) if key is _UNKNOWN else key

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return isinstance(other, StaticValue) and self.key == other.key

    def __repr__(self) -> str:
        return f"StaticValue({self.value!r})"
