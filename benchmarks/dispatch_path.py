"""Does a call of ours take JAX's C++ dispatch path, and what does the Python path cost?

    python benchmarks/dispatch_path.py [--f32] [--size-b 10000]

A jitted function's later calls with the same shapes should run through JAX's C++ fast path (a
few microseconds of host time). JAX 0.11 sends a program whose jaxpr holds a "high" primitive
through Python at every call instead: ``_run_python_pjit``, then ``_to_lojax``, which lowers the
jaxpr and binds it eagerly. On jax 0.11.2, ``lax.custom_root`` is such a primitive
(``call_hi_primitive``); jax 0.10.2 has no such path. Since session 13 the library carries its
implicit rule on ``jax.custom_jvp`` where ``lax.custom_root`` is high (``_implicit.RULE``).

For each case this prints the steady-state time per call and how many times per call JAX entered
``_run_python_pjit`` and ``_to_lojax`` (0 and 0: the C++ path), and for jitted cases the high
primitives in the jaxpr: with the library's own choice of rule, then with each rule forced
(JAX's caches cleared before each, so that every program is traced anew).
"""

from __future__ import annotations

import argparse
import timeit

import jax
import jax.numpy as jnp
from jax import lax
from jax._src import core, pjit

_COUNTED = ("_run_python_pjit", "_to_lojax")


def _count_calls(counts):
    for name in _COUNTED:
        original = getattr(pjit, name, None)
        if original is None:  # (jax 0.10 has no _to_lojax)
            continue

        def wrapped(*args, _original=original, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        setattr(pjit, name, wrapped)


def _high_primitives(jaxpr, path=""):
    found = []
    for eqn in jaxpr.eqns:
        is_high = getattr(eqn.primitive, "is_high", None)
        if callable(is_high) and is_high(**eqn.params):
            found.append(f"{path}/{eqn.primitive.name}")
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else [value]:
                if isinstance(sub, core.ClosedJaxpr):
                    sub = sub.jaxpr
                if isinstance(sub, core.Jaxpr):
                    found += _high_primitives(sub, f"{path}/{eqn.primitive.name}")
    return found


def _cases(dtype, size_b):
    import jaxopt_mml as mml

    def model(x, p):
        a, mu, s, c = p
        return a * jnp.exp(-((x - mu) ** 2) / (2 * s**2)) + c

    x = jnp.linspace(-3, 3, 64, dtype=dtype)
    y1 = model(x, jnp.array([1.0, 0.2, 0.7, 0.1], dtype))
    yb = (y1 + 0.05 * jax.random.normal(jax.random.key(0), (size_b, 64))).astype(dtype)
    p0 = jnp.array([1.2, 0.1, 0.8, 0.12], dtype)
    c = jnp.linspace(0, 5, 1000, dtype=dtype)

    def cubic(v, c):
        return v**3 - 2 * v - c

    def rosen(z):
        return (1 - z[0]) ** 2 + 100 * (z[1] - z[0] ** 2) ** 2

    def fit(y, p0):
        return mml.curve_fit(model, x, y, p0)

    def roots(c):
        return mml.newton_raphson(cubic, jnp.ones_like(c), args=(c,), elementwise=True)

    def count_to_ten(v):
        return lax.while_loop(lambda u: u < 10, lambda u: u + 1, v)

    return {
        "control: jit(while_loop)": (jax.jit(count_to_ten), (jnp.asarray(0, dtype),)),
        "jit(curve_fit), B=1": (jax.jit(fit), (y1, p0)),
        f"jit(curve_fit), B={size_b}": (jax.jit(fit), (yb, p0)),
        "curve_fit, B=1 (plain call)": (fit, (y1, p0)),
        "jit(newton_raphson), 1000 roots": (jax.jit(roots), (c,)),
        "jit(bfgs), Rosenbrock": (
            jax.jit(lambda z: mml.bfgs(rosen, z)),
            (jnp.array([-1.2, 1.0], dtype),),
        ),
    }


def _call(fn, args):
    return jax.block_until_ready(fn(*args))


def _run(tag, cases, counts):
    for name, (fn, args) in cases.items():
        for _ in range(3):
            _call(fn, args)
        counts.clear()
        calls = 20
        for _ in range(calls):
            _call(fn, args)
        per_call = {k: v / calls for k, v in sorted(counts.items())}
        seconds = min(
            timeit.repeat(lambda fn=fn, args=args: _call(fn, args), number=calls, repeat=7)
        )
        print(
            f"{tag:18s} {name:34s} {1e6 * seconds / calls:9.1f} us/call  python path/call {per_call}"
        )
        if hasattr(fn, "trace"):
            high = sorted(set(_high_primitives(jax.make_jaxpr(fn)(*args).jaxpr)))
            print(f"{'':18s} high primitives: {high or 'none'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--f32", action="store_true", help="float32 (default float64)")
    parser.add_argument("--size-b", type=int, default=10_000, help="the batched fit's B")
    options = parser.parse_args()
    if not options.f32:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float32 if options.f32 else jnp.float64
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    from jaxopt_mml import _implicit

    counts = {}
    _count_calls(counts)
    print(f"lax.custom_root is high here: {_implicit.custom_root_is_high()}")
    try:
        for rule in (None, "custom_root", "custom_jvp"):
            _implicit.RULE = rule
            jax.clear_caches()  # (else the programs traced before are reused)
            _run(rule or f"auto ({_implicit._rule()})", _cases(dtype, options.size_b), counts)
    finally:
        _implicit.RULE = None


if __name__ == "__main__":
    main()
