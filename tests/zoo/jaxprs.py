"""Reading jaxprs in tests: the primitives a traced function uses, nested jaxprs included.

Printing a jaxpr is no contract: newer JAX (0.11) prints a nested ``jit`` by name without its
body, so a test that looks for a primitive walks the equations instead of searching the text.
"""

from __future__ import annotations

import jax
from jax.extend import core


def primitives(fn, *args) -> set[str]:
    """The names of every primitive in ``jax.make_jaxpr(fn)(*args)``, at any depth."""
    names: set[str] = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            names.add(eqn.primitive.name)
            for param in eqn.params.values():
                for sub in param if isinstance(param, tuple | list) else (param,):
                    if isinstance(sub, core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names
