"""User functions as static arguments of the solvers' compiled programs (private).

``jax.jit`` keeps one compiled program per value of a static argument, compared by ``==``, and a
function equals only itself. A model written inline, ``curve_fit(lambda x, p: ..., ...)`` in a
loop as scipy users do, is a new function object on each call and would compile on each call
(0.1-1.5 s each). :func:`static_function` wraps a user function in an object that equals
another wrapped function when both compute the same thing, judged from what they are made of:

* a plain function or lambda: its code, and the values of everything the code can read that is
  not an argument: closure cells, defaults and the module globals its code names;
* a ``functools.partial``: its function and arguments;
* a tuple or NamedTuple (an optax optimiser is a NamedTuple of closures): its items;
* a dict or list that a library's closure reads (``optax.multi_transform``'s transforms and
  labels, ``inject_hyperparams``' hyperparameters, ``optax.join_schedules``' schedules and
  boundaries): its items, in order (the key is made at every call, so one changed in place
  between calls gives another key; one that holds itself is compared by identity). A dict or
  list that the user's own function reads is compared by identity, as
  below: one used as mutable state (a call counter, ``calls["n"] += 1`` while tracing) would
  otherwise make every call compile anew.

A library's function (JAX, NumPy, scipy, optax, ...) is compared by identity, or, when it is a
closure, by its code and closure values (``optax.adam(0.1)`` made twice gives equal
optimisers; its module's globals are taken as fixed). A concrete JAX array in a library's
closure with at most 1024 elements is compared by its values (shape, dtype, weak type,
placement and bits: ``optax.adam(jnp.asarray(1e-3))`` made twice gives equal optimisers), and
an ``optax.MultiSteps`` by its attributes (set once when it is made).

Values are compared by value when they are immutable (``None``, numbers, strings, NumPy scalars,
tuples of them; floats by their representation and bits, so ``-0.0`` is not ``0.0`` and ``-nan`` is
not ``nan``) and by identity when they are modules, classes, JAX arrays (immutable too; but see
above for a library's small ones), or
functions of JAX, NumPy and the like; a function found among them is judged by these same rules.
Anything else (a NumPy array, a list, a dict, an object of the user's own class: all may be mutated
between calls) is compared by identity *and* makes the function that reads it equal only to itself,
as ``jax.jit`` has it: a lambda made anew around a mutated object compiles anew (also where the
object sits in a tuple or NamedTuple, or is the object of a bound method the function reads). The
judgement is made at every call, so a global the function reads that has been rebound since the
last call, to any value, gives a new compilation rather than a stale result (``jax.jit`` of one
function object would not notice). What is not seen, as with ``jax.jit``: an object mutated in
place (an array written into, a list appended to, an attribute set) and read by the *same* function
object, including objects reached through module or class attributes (modules and classes are
compared by identity and taken as fixed, so a class attribute set between calls is not seen by a
new lambda either), a bound method passed itself (``m.res`` after ``m.c = 9`` is the same function
of the same object, as for ``jax.jit`` of a method), and ``global`` state changed inside a library
module. A library function is recognised by the module its code runs in (its globals), not by
``__module__``, which ``functools.wraps`` copies.
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


def _mutable(key) -> bool:
    """Whether a key holds a value compared by identity that may change in place, also inside
    a tuple's items or a bound method's object (an array in a tuple, written into between
    calls, was read by an equal function: a stale compilation). A function's or partial's key
    is already ``"owned"`` when it holds one."""
    if not isinstance(key, tuple) or not key:
        return False
    if key[0] in ("same", "owned"):
        return True
    if key[0] == "tuple":
        return any(_mutable(k) for k in key[2])
    if key[0] == "dict":
        return any(_mutable(k) or _mutable(v) for k, v in key[1])
    if key[0] == "list":
        return any(_mutable(k) for k in key[1])
    if key[0] == "method":
        return _mutable(key[1]) or _mutable(key[2])
    return False


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
    if type(value) is types.FunctionType:  # where its code runs: __module__ is copied by wraps
        module = value.__globals__.get("__name__", "") or ""
    else:
        module = getattr(value, "__module__", None) or ""
    return module.partition(".")[0] in _LIBRARIES


def _value_key(value, seen: set[int], in_library: bool = False) -> Any:
    """The comparison key of ``value``; ``in_library``: read by a library's closure (see the
    module docstring on dicts)."""
    if isinstance(value, _IMMUTABLE):
        if isinstance(value, float | complex | np.inexact):  # -0.0 == 0.0, but not in a program
            # and by their bits: NaNs of either sign print as "nan", and the sign reaches the
            # program's results (jnp.signbit, copysign, the sign tests of a bracketing solver)
            return (type(value), repr(value), np.asarray(value).tobytes())
        return (type(value), value)
    if isinstance(value, tuple) and (type(value) is tuple or hasattr(value, "_fields")):
        items = tuple(_value_key(v, seen, in_library) for v in value)  # a tuple or NamedTuple
        return _UNKNOWN if any(i is _UNKNOWN for i in items) else ("tuple", type(value), items)
    if type(value) is list and in_library:  # by content, as a library's dicts below
        # (optax.join_schedules holds its schedules and boundaries in lists, and so do the
        # schedules built on it: warmup_cosine_decay_schedule, sgdr_schedule)
        if id(value) in seen:  # a list that holds itself: by identity
            return _UNKNOWN
        seen = seen | {id(value)}
        items = tuple(_value_key(v, seen, True) for v in value)
        return _UNKNOWN if any(i is _UNKNOWN for i in items) else ("list", items)
    if type(value) is dict and in_library:  # by content, in order (made again at every call)
        if id(value) in seen:  # a dict that holds itself: by identity
            return _UNKNOWN
        seen = seen | {id(value)}
        items = tuple(
            (_value_key(k, seen, True), _value_key(v, seen, True)) for k, v in value.items()
        )
        if any(k is _UNKNOWN or v is _UNKNOWN for k, v in items):
            return _UNKNOWN
        return ("dict", items)
    if isinstance(value, (types.ModuleType, type)):
        return ("object", value)
    if _TRACER is not None and isinstance(value, jax.Array) and not isinstance(value, _TRACER):
        if in_library and value.size <= _ARRAY_BY_VALUE:
            key = _array_value_key(value)
            if key is not None:
                return key
        return ("array", _Same(value))  # immutable: the same array holds the same values
    if type(value) is types.FunctionType or isinstance(value, functools.partial):
        return _key(value, seen)
    if callable(value) and _is_library(value):
        try:
            hash(value)
        except TypeError:
            return ("same", _Same(value))
        return ("object", value)
    if _is_library_config(value):
        # (optax.MultiSteps: an object holding the wrapped optimiser and its options, set once
        # in __init__; by identity, each MultiSteps(...) made again compiled anew)
        if id(value) in seen:
            return _UNKNOWN
        attrs = tuple(sorted(vars(value).items()))
        key = _value_key(attrs, seen | {id(value)}, True)
        return _UNKNOWN if key is _UNKNOWN else ("config", type(value), key)
    if isinstance(value, types.MethodType):  # made anew at each attribute access
        return ("method", _value_key(value.__func__, seen), _value_key(value.__self__, seen))
    # Mutable or unknown (a NumPy array, a list, a user's object): by identity, held alive so
    # that its id is not reused; rebinding a name to another such value changes the key.
    return ("same", _Same(value))


# A concrete JAX array read by a library's closure with at most this many elements is compared
# by its values (optax.adam(jnp.asarray(1e-3)) made again compiled anew when compared by
# identity); a larger one, or one that a user's function reads, by identity.
_ARRAY_BY_VALUE = 1024

# Library classes whose instances are configuration set once at construction (compared by their
# attributes, read as a library's closure reads its cells): (top-level module, class name).
_LIBRARY_CONFIGS = frozenset({("optax", "MultiSteps")})


def _array_value_key(value) -> Any:
    """The key of a small concrete JAX array by its values (and everything of it a program
    sees: shape, dtype, weak type, placement), or None where they cannot be read (a deleted
    array): then it is compared by identity."""
    try:
        data = np.asarray(value)
        return (
            "array value",
            data.shape,
            str(data.dtype),
            bool(getattr(value, "weak_type", False)),
            value.sharding,
            data.tobytes(),
        )
    except Exception:  # noqa: BLE001  (whatever a deleted or odd array raises: by identity)
        return None


def _is_library_config(value) -> bool:
    cls = type(value)
    module = (getattr(cls, "__module__", None) or "").partition(".")[0]
    return (module, cls.__name__) in _LIBRARY_CONFIGS and hasattr(value, "__dict__")


_EMPTY_CELL = ("empty cell",)


def _cell_value(cell):
    """A closure cell's value, or a marker for an empty cell (a name the enclosing function
    assigns after making this one, or never: optax's schedules have one). The key is made at
    every call, and the function cannot read an empty cell without failing, so the marker is
    as good as a value: a cell filled later gives another key."""
    try:
        return cell.cell_contents
    except ValueError:
        return _EMPTY_CELL


def _function_key(fn: types.FunctionType, seen: set[int]) -> Any:
    """A plain function: its code and what it reads. A library's function (an optax
    optimiser's closure, say) reads its own module's globals, which are taken as fixed."""
    if id(fn) in seen:  # recursion: the code identifies it
        return ("recursive", fn.__code__)
    seen = seen | {id(fn)}
    cells = tuple(_cell_value(c) for c in fn.__closure__ or ())
    defaults = fn.__defaults__ or ()
    kwdefaults = sorted((fn.__kwdefaults__ or {}).items())
    library = _is_library(fn)
    glob = {} if library else fn.__globals__
    names = tuple(n for n in _global_names(fn.__code__) if n in glob)
    values = (*cells, *defaults, *(v for _, v in kwdefaults), *(glob[n] for n in names))
    keys = tuple(_value_key(v, seen, library) for v in values)
    if any(k is _UNKNOWN for k in keys):
        return _UNKNOWN
    layout = (len(cells), len(defaults), tuple(k for k, _ in kwdefaults), names)
    if any(_mutable(k) for k in keys):  # equal only to itself, and only while it reads the same
        return ("owned", _Same(fn), layout, keys)
    return ("function", fn.__code__, layout, keys)


def _key(fn, seen: set[int] = frozenset()) -> Any:
    if type(fn) is types.FunctionType:
        return _function_key(fn, seen)
    if isinstance(fn, functools.partial):
        inner = _key(fn.func, seen) if callable(fn.func) else _UNKNOWN
        args = _value_key(tuple(fn.args), seen)
        kwargs = _value_key(tuple(sorted(fn.keywords.items())), seen)
        if any(k is _UNKNOWN for k in (inner, args, kwargs)):
            return _UNKNOWN
        if any(_mutable(k) for k in (inner, *args[2], *kwargs[2])):
            return ("owned", _Same(fn), inner, args, kwargs)
        return ("partial", inner, args, kwargs)
    return _UNKNOWN


class StaticValue:
    """A static option held with an equality that reflects what it computes (see the module
    docstring); the option itself is ``.value``. Equal to nothing but another holder."""

    __slots__ = ("value", "key")

    def __init__(self, value):
        key = _value_key(value, frozenset())
        self.value = value
        self.key = ("same", _Same(value)) if key is _UNKNOWN else key

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.key == other.key

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.value!r})"

    @property
    def reads_mutable(self) -> bool:
        """Whether the value holds or reads an object compared by identity that may change in
        place (an array written into between calls, which a cached program would not see)."""
        return _mutable(self.key)


class StaticFunction(StaticValue):
    """A :class:`StaticValue` holding a function, and callable as that function."""

    __slots__ = ("__wrapped__",)

    def __init__(self, fn: Callable):
        super().__init__(fn)
        self.__wrapped__ = fn

    def __call__(self, *args, **kwargs):
        return self.value(*args, **kwargs)


def static_function(fn):
    """``fn`` wrapped as a :class:`StaticFunction` (None and wrapped functions pass through)."""
    if fn is None or isinstance(fn, StaticFunction):
        return fn
    return StaticFunction(fn)
