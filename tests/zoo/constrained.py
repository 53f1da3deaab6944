"""Constrained test problems: Hock-Schittkowski problems and the course's closed-form problems.

The Hock-Schittkowski (HS) problems are transcribed from W. Hock and K. Schittkowski, *Test
Examples for Nonlinear Programming Codes*, Lecture Notes in Economics and Mathematical Systems 187,
Springer (1981), with the published start ``x0``, solution ``x_star`` and optimal value ``f_star``.
Constraints follow this library's convention: ``eq(x) = 0`` and ``ineq(x) >= 0``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

INF = np.inf


@dataclasses.dataclass(frozen=True)
class HSProblem:
    name: str
    f: Callable
    x0: tuple
    x_star: tuple
    f_star: float
    eq: Callable | None = None
    ineq: Callable | None = None
    bounds: tuple | None = None

    @property
    def m_eq(self) -> int:
        return 0 if self.eq is None else int(np.size(self.eq(jnp.asarray(self.x0))))

    @property
    def m_ineq(self) -> int:
        return 0 if self.ineq is None else int(np.size(self.ineq(jnp.asarray(self.x0))))


# --- equality constraints only -------------------------------------------------------------

HS6 = HSProblem(
    "HS6",
    f=lambda x: (1.0 - x[0]) ** 2,
    eq=lambda x: jnp.array([10.0 * (x[1] - x[0] ** 2)]),
    x0=(-1.2, 1.0),
    x_star=(1.0, 1.0),
    f_star=0.0,
)

HS7 = HSProblem(
    "HS7",
    f=lambda x: jnp.log(1.0 + x[0] ** 2) - x[1],
    eq=lambda x: jnp.array([(1.0 + x[0] ** 2) ** 2 + x[1] ** 2 - 4.0]),
    x0=(2.0, 2.0),
    x_star=(0.0, np.sqrt(3.0)),
    f_star=-np.sqrt(3.0),
)

HS28 = HSProblem(
    "HS28",
    f=lambda x: (x[0] + x[1]) ** 2 + (x[1] + x[2]) ** 2,
    eq=lambda x: jnp.array([x[0] + 2.0 * x[1] + 3.0 * x[2] - 1.0]),
    x0=(-4.0, 1.0, 1.0),
    x_star=(0.5, -0.5, 0.5),
    f_star=0.0,
)

HS39 = HSProblem(
    "HS39",
    f=lambda x: -x[0],
    eq=lambda x: jnp.array([x[1] - x[0] ** 3 - x[2] ** 2, x[0] ** 2 - x[1] - x[3] ** 2]),
    x0=(2.0, 2.0, 2.0, 2.0),
    x_star=(1.0, 1.0, 0.0, 0.0),
    f_star=-1.0,
)

HS48 = HSProblem(
    "HS48",
    f=lambda x: (x[0] - 1.0) ** 2 + (x[1] - x[2]) ** 2 + (x[3] - x[4]) ** 2,
    eq=lambda x: jnp.array(
        [x[0] + x[1] + x[2] + x[3] + x[4] - 5.0, x[2] - 2.0 * (x[3] + x[4]) + 3.0]
    ),
    x0=(3.0, 5.0, -3.0, 2.0, -2.0),
    x_star=(1.0, 1.0, 1.0, 1.0, 1.0),
    f_star=0.0,
)

# --- inequality constraints and bounds ------------------------------------------------------

HS21 = HSProblem(
    "HS21",
    f=lambda x: 0.01 * x[0] ** 2 + x[1] ** 2 - 100.0,
    ineq=lambda x: jnp.array([10.0 * x[0] - x[1] - 10.0]),
    bounds=((2.0, -50.0), (50.0, 50.0)),
    x0=(-1.0, -1.0),
    x_star=(2.0, 0.0),
    f_star=-99.96,
)

HS35 = HSProblem(
    "HS35",
    f=lambda x: (
        9.0
        - 8.0 * x[0]
        - 6.0 * x[1]
        - 4.0 * x[2]
        + 2.0 * x[0] ** 2
        + 2.0 * x[1] ** 2
        + x[2] ** 2
        + 2.0 * x[0] * x[1]
        + 2.0 * x[0] * x[2]
    ),
    ineq=lambda x: jnp.array([3.0 - x[0] - x[1] - 2.0 * x[2]]),
    bounds=((0.0, 0.0, 0.0), (INF, INF, INF)),
    x0=(0.5, 0.5, 0.5),
    x_star=(4.0 / 3.0, 7.0 / 9.0, 4.0 / 9.0),
    f_star=1.0 / 9.0,
)

HS71 = HSProblem(
    "HS71",
    f=lambda x: x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2],
    eq=lambda x: jnp.array([x[0] ** 2 + x[1] ** 2 + x[2] ** 2 + x[3] ** 2 - 40.0]),
    ineq=lambda x: jnp.array([x[0] * x[1] * x[2] * x[3] - 25.0]),
    bounds=((1.0, 1.0, 1.0, 1.0), (5.0, 5.0, 5.0, 5.0)),
    x0=(1.0, 5.0, 5.0, 1.0),
    x_star=(1.0, 4.74299963, 3.82114998, 1.37940829),
    f_star=17.0140173,
)

EQUALITY = (HS6, HS7, HS28, HS39, HS48)
INEQUALITY = (HS21, HS35, HS71)
ALL = EQUALITY + INEQUALITY
