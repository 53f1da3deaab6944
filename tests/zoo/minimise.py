"""Test problems for the minimisers: each with a start, the minimiser it should reach and f there.

The functions are module-level objects, so repeated solves reuse one compilation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
import numpy as np


class MinProblem(NamedTuple):
    name: str
    f: object
    x0: np.ndarray
    x_star: np.ndarray
    f_star: float


def _rotation(n, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return q


_Q5 = _rotation(5, 0)
A_WELL = _Q5 @ np.diag([1.0, 1.5, 2.0, 3.0, 4.0]) @ _Q5.T
A_ILL = _Q5 @ np.diag(np.logspace(0, 4, 5)) @ _Q5.T  # condition number 1e4
B5 = np.array([1.0, -2.0, 0.5, 3.0, -1.0])
X_WELL = np.linalg.solve(A_WELL, B5)
X_ILL = np.linalg.solve(A_ILL, B5)


def bowl(x, a, b):
    """The quadratic 0.5 x'Ax - b'x (minimiser A^{-1} b)."""
    return 0.5 * x @ (a @ x) - b @ x


def bowl_well(x):
    return bowl(x, jnp.asarray(A_WELL), jnp.asarray(B5))


def bowl_ill(x):
    return bowl(x, jnp.asarray(A_ILL), jnp.asarray(B5))


def rosenbrock(x):
    """The chained Rosenbrock function, sum 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 (scipy's rosen)."""
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def himmelblau(x):
    return (x[0] ** 2 + x[1] - 11.0) ** 2 + (x[0] + x[1] ** 2 - 7.0) ** 2


HIMMELBLAU_MINIMA = np.array(
    [[3.0, 2.0], [-2.805118, 3.131312], [-3.779310, -3.283186], [3.584428, -1.848126]]
)
HIMMELBLAU_STARTS = HIMMELBLAU_MINIMA + np.array([0.4, -0.3])


def beale(x):
    return (
        (1.5 - x[0] + x[0] * x[1]) ** 2
        + (2.25 - x[0] + x[0] * x[1] ** 2) ** 2
        + (2.625 - x[0] + x[0] * x[1] ** 3) ** 2
    )


def booth(x):
    return (x[0] + 2.0 * x[1] - 7.0) ** 2 + (2.0 * x[0] + x[1] - 5.0) ** 2


def matyas(x):
    return 0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]


def saddle(x):
    """x^2 + y^4/4 - y^2/2: a saddle at the origin, minima at (0, +-1) with f = -1/4."""
    return x[0] ** 2 + x[1] ** 4 / 4.0 - x[1] ** 2 / 2.0


SADDLE_START = np.array([0.5, 0.1])  # the Hessian is indefinite here: plain Newton heads uphill


def _rosen_start(n):
    return np.linspace(0.0, 1.5, n) if n > 2 else np.array([-1.2, 1.0])


PROBLEMS = [
    MinProblem("bowl_well", bowl_well, np.zeros(5), X_WELL, float(-0.5 * B5 @ X_WELL)),
    MinProblem("bowl_ill", bowl_ill, np.zeros(5), X_ILL, float(-0.5 * B5 @ X_ILL)),
    MinProblem("rosen2", rosenbrock, _rosen_start(2), np.ones(2), 0.0),
    MinProblem("rosen10", rosenbrock, _rosen_start(10), np.ones(10), 0.0),
    MinProblem("rosen100", rosenbrock, _rosen_start(100), np.ones(100), 0.0),
    MinProblem("beale", beale, np.array([1.0, 1.0]), np.array([3.0, 0.5]), 0.0),
    MinProblem("booth", booth, np.array([0.0, 0.0]), np.array([1.0, 3.0]), 0.0),
    MinProblem("matyas", matyas, np.array([5.0, -3.0]), np.zeros(2), 0.0),
    MinProblem("saddle", saddle, SADDLE_START, np.array([0.0, 1.0]), -0.25),
]
BY_NAME = {p.name: p for p in PROBLEMS}
