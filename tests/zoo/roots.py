"""Root-finding problems shared by the tests: scalar equations (with brackets) and systems.

Each scalar problem gives ``f(x, *args)`` in jnp, its derivative in numpy for scipy's Newton, a
start ``x0`` and a bracket with a sign change; each system gives ``F(x, *args)`` and ``x0``.
scipy (``newton``, ``brentq``, ``fsolve``) is the oracle; a few have closed-form roots too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Scalar:
    name: str
    f: Callable  # f(x, *args), jnp
    fprime: Callable  # f'(x, *args), numpy (for scipy.optimize.newton)
    x0: float
    bracket: tuple[float, float]
    args: tuple = ()
    root: float | None = None  # closed form, where known

    def f_np(self, x, *args):
        return np.asarray(self.f(jnp.asarray(x), *args))


@dataclasses.dataclass(frozen=True)
class System:
    name: str
    f: Callable  # F(x, *args) on a flat jnp vector
    x0: Any
    args: tuple = ()
    root: Any = None


SCALAR = [
    Scalar(
        "cubic",
        lambda x, c: x**3 - 2 * x - c,
        lambda x, c: 3 * x**2 - 2,
        2.0,
        (1.0, 3.0),
        (5.0,),
    ),
    Scalar("cos_fixed_point", lambda x: jnp.cos(x) - x, lambda x: -np.sin(x) - 1, 1.0, (0.0, 1.0)),
    Scalar(
        "exp", lambda x: jnp.exp(x) - 3.0, lambda x: np.exp(x), 0.0, (0.0, 2.0), root=np.log(3.0)
    ),
    Scalar("log", lambda x: jnp.log(x) - 1.0, lambda x: 1 / x, 2.0, (1.0, 4.0), root=np.e),
    Scalar(
        "kepler",
        lambda x, e, m: x - e * jnp.sin(x) - m,
        lambda x, e, m: 1 - e * np.cos(x),
        1.0,
        (0.0, np.pi),
        (0.6, 1.2),
    ),
    Scalar(
        "tanh",
        lambda x: jnp.tanh(2 * x) - 0.5,
        lambda x: 2 / np.cosh(2 * x) ** 2,
        0.0,
        (-1.0, 1.0),
        root=np.arctanh(0.5) / 2,
    ),
    Scalar(
        "wilkinson_like",
        lambda x: (x - 1) * (x - 2) * (x - 3) * (x - 4),
        lambda x: (
            (x - 2) * (x - 3) * (x - 4)
            + (x - 1) * (x - 3) * (x - 4)
            + (x - 1) * (x - 2) * (x - 4)
            + (x - 1) * (x - 2) * (x - 3)
        ),
        3.3,
        (2.6, 3.5),
        root=3.0,
    ),
]


def _broyden_tridiagonal(x):
    left = jnp.concatenate([jnp.zeros(1), x[:-1]])
    right = jnp.concatenate([x[1:], jnp.zeros(1)])
    return (3 - 2 * x) * x - left - 2 * right + 1


_A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, -1.0], [0.5, -1.0, 2.0]])
_B = np.array([1.0, -2.0, 0.5])

SYSTEMS = [
    System(
        "circle_line",
        lambda x: jnp.stack([x[0] ** 2 + x[1] ** 2 - 4.0, x[0] - x[1]]),
        np.array([1.0, 0.5]),
        root=np.full(2, np.sqrt(2.0)),
    ),
    System(
        "powell_badly_scaled",
        lambda x: jnp.stack([1e4 * x[0] * x[1] - 1, jnp.exp(-x[0]) + jnp.exp(-x[1]) - 1.0001]),
        np.array([0.0, 1.0]),
    ),
    System(
        "linear",
        lambda x, a, b: a @ x - b,
        np.zeros(3),
        (jnp.asarray(_A), jnp.asarray(_B)),
        root=np.linalg.solve(_A, _B),
    ),
    System("broyden_tridiagonal", _broyden_tridiagonal, -np.ones(10)),
    System(
        "trig_exp",
        lambda x: jnp.stack(
            [jnp.sin(x[0]) + x[1] ** 2 - 0.5, jnp.exp(x[0] * 0.5) - x[1] - 1.2, x[2] ** 3 - x[0]]
        ),
        np.array([0.3, 0.2, 0.5]),
    ),
]
