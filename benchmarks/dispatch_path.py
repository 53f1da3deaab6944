"""Does a call of ours take JAX's C++ dispatch path, and if not, why?

    python benchmarks/dispatch_path.py [--f32]

A jitted function's later calls with the same shapes should run through JAX's C++ fast path
(a few microseconds of host time). JAX falls back to its Python path on every call when the
compiled program has effects, host callbacks, or outputs it cannot hand back directly; on a GPU,
where a small fit is bound by host time, that costs a large share of the call. For each case
this prints the steady-state time per call, how many times per call JAX entered its Python
dispatch (``_pjit_call_impl_python``; 0 means the fast path), and, where ``_get_fastpath_data``
refused, the values it looked at. Cases: trivial programs (a sum, a while loop, a
``lax.custom_root``) as controls, then ``curve_fit``, ``newton_raphson`` and ``bfgs``, under
the user's ``jax.jit`` and as called plainly.
"""

from __future__ import annotations

import argparse
import functools
import timeit

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import pjit


def _counting(module, name, counter):
    original = getattr(module, name)

    @functools.wraps(original)
    def wrapped(*args, **kwargs):
        counter[name] = counter.get(name, 0) + 1
        return original(*args, **kwargs)

    setattr(module, name, wrapped)


def _explain_refusals(refusals):
    original = pjit._get_fastpath_data

    @functools.wraps(original)
    def wrapped(executable, out_tree, args_flat, out_flat, effects, *rest, **kwargs):
        data = original(executable, out_tree, args_flat, out_flat, effects, *rest, **kwargs)
        if data is None:
            call = getattr(executable, "unsafe_call", None)
            refusals.append(
                {
                    "executable": type(executable).__name__,
                    "unsafe_call": type(call).__name__,
                    "ordered_effects": getattr(call, "ordered_effects", "?"),
                    "has_unordered_effects": getattr(call, "has_unordered_effects", "?"),
                    "has_host_callbacks": getattr(call, "has_host_callbacks", "?"),
                    "jaxpr effects": list(effects),
                    "output types": sorted({type(x).__name__ for x in out_flat}),
                }
            )
        return data

    pjit._get_fastpath_data = wrapped


def _cases(dtype):
    import jaxopt_mml as mml

    def model(x, p):
        a, mu, s, c = p
        return a * jnp.exp(-((x - mu) ** 2) / (2 * s**2)) + c

    x = jnp.linspace(-3, 3, 64, dtype=dtype)
    noise = 0.05 * np.random.default_rng(0).standard_normal(64)
    y = (model(x, jnp.array([1.0, 0.2, 0.7, 0.1], dtype)) + noise).astype(dtype)
    p0 = jnp.array([1.2, 0.1, 0.8, 0.12], dtype)
    c = jnp.linspace(0, 5, 1000, dtype=dtype)
    x0 = jnp.ones(1000, dtype)

    def cubic(x, c):
        return x**3 - 2 * x - c

    def rosen(z):
        return (1 - z[0]) ** 2 + 100 * (z[1] - z[0] ** 2) ** 2

    def custom_root_sqrt(a):
        def solve(f, x):
            return jax.lax.while_loop(
                lambda v: jnp.abs(f(v)) > 1e-6, lambda v: v - f(v) / (2 * v), x
            )

        return jax.lax.custom_root(lambda v: v**2 - a, a, solve, lambda g, y: y / 2.0)

    z0 = jnp.array([-1.2, 1.0], dtype)
    return {
        "control: jit(sum)": (jax.jit(jnp.sum), (x,)),
        "control: jit(while_loop)": (
            jax.jit(lambda v: jax.lax.while_loop(lambda u: u < 10, lambda u: u + 1, v)),
            (jnp.asarray(0, dtype),),
        ),
        "control: jit(custom_root)": (jax.jit(custom_root_sqrt), (jnp.asarray(2.0, dtype),)),
        "jit(curve_fit), B=1": (jax.jit(lambda y, p0: mml.curve_fit(model, x, y, p0)), (y, p0)),
        "curve_fit, B=1 (plain call)": (lambda y, p0: mml.curve_fit(model, x, y, p0), (y, p0)),
        "jit(newton_raphson), 1000 roots": (
            jax.jit(lambda x0, c: mml.newton_raphson(cubic, x0, args=(c,), elementwise=True)),
            (x0, c),
        ),
        "newton_raphson, 1000 roots (plain call)": (
            lambda x0, c: mml.newton_raphson(cubic, x0, args=(c,), elementwise=True),
            (x0, c),
        ),
        "jit(bfgs), Rosenbrock": (jax.jit(lambda z: mml.bfgs(rosen, z)), (z0,)),
    }


def _call(fn, args):
    return jax.block_until_ready(fn(*args))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--f32", action="store_true", help="float32 (default float64)")
    options = parser.parse_args()
    if not options.f32:
        jax.config.update("jax_enable_x64", True)
    dtype = jnp.float32 if options.f32 else jnp.float64
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    counter, refusals = {}, []
    _counting(pjit, "_pjit_call_impl_python", counter)
    _explain_refusals(refusals)
    for name, (fn, args) in _cases(dtype).items():
        for _ in range(3):
            jax.block_until_ready(fn(*args))
        counter.clear()
        refusals.clear()
        calls = 20
        for _ in range(calls):
            jax.block_until_ready(fn(*args))
        python_per_call = counter.get("_pjit_call_impl_python", 0) / calls
        seconds = min(timeit.repeat(functools.partial(_call, fn, args), number=calls, repeat=5))
        print(
            f"{name:42s} {1e6 * seconds / calls:9.1f} us/call   python dispatch/call {python_per_call:.1f}"
        )
        seen = []
        for refusal in refusals:
            if refusal not in seen:
                seen.append(refusal)
                print(f"    fast path refused: {refusal}")


if __name__ == "__main__":
    main()
