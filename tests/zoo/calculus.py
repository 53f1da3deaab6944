"""Calculus problems with closed forms, shared by the derivative and Taylor tests."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def _sin_coefficients(x0: float, order: int) -> np.ndarray:
    cycle = (np.sin, np.cos, lambda x: -np.sin(x), lambda x: -np.cos(x))
    return np.array([cycle[k % 4](x0) / math.factorial(k) for k in range(order + 1)])


def _exp_coefficients(x0: float, order: int) -> np.ndarray:
    return np.array([np.exp(x0) / math.factorial(k) for k in range(order + 1)])


def _log1p_coefficients(x0: float, order: int) -> np.ndarray:
    # d^k/dx^k log(1 + x) = (-1)^(k-1) (k-1)! / (1 + x)^k, so c_k = (-1)^(k-1) / (k (1 + x)^k).
    head = [np.log1p(x0)]
    return np.array(head + [(-1) ** (k - 1) / (k * (1 + x0) ** k) for k in range(1, order + 1)])


def _geometric_coefficients(x0: float, order: int) -> np.ndarray:
    # 1 / (1 - x) = sum_k (x - x0)^k / (1 - x0)^(k + 1).
    return np.array([1.0 / (1.0 - x0) ** (k + 1) for k in range(order + 1)])


# name -> (f, coefficients(x0, order), expansion points)
TAYLOR_CLOSED_FORMS = {
    "sin": (jnp.sin, _sin_coefficients, (0.0, 0.7, -2.0)),
    "exp": (jnp.exp, _exp_coefficients, (0.0, 1.3, -0.5)),
    "log(1+x)": (lambda x: jnp.log(1.0 + x), _log1p_coefficients, (0.0, 0.5, -0.3)),
    "1/(1-x)": (lambda x: 1.0 / (1.0 - x), _geometric_coefficients, (0.0, 0.5, -1.0)),
}


def cube_by_while(x):
    """x**3 computed by a ``lax.while_loop`` (jet has no rule for ``while``)."""
    return jax.lax.while_loop(lambda c: c[0] < 3, lambda c: (c[0] + 1, c[1] * x), (0, 1.0 + 0 * x))[
        1
    ]


def cube_by_while_coefficients(x0: float, order: int) -> np.ndarray:
    c = [x0**3, 3 * x0**2, 3 * x0, 1.0]
    return np.array((c + [0.0] * order)[: order + 1])


def resolvent_by_solve(x):
    """1/(2 + x) + 1/(3 + x), by ``jnp.linalg.solve`` of a 2x2 system (no jet rule)."""
    a = jnp.diag(jnp.stack([2.0 + x, 3.0 + x]))
    return jnp.sum(jnp.linalg.solve(a, jnp.ones(2, jnp.result_type(x))))


def resolvent_by_solve_coefficients(x0: float, order: int) -> np.ndarray:
    return np.array(
        [(-1) ** k * (1 / (2 + x0) ** (k + 1) + 1 / (3 + x0) ** (k + 1)) for k in range(order + 1)]
    )


def rosenbrock(x, a=1.0, b=100.0):
    """The Rosenbrock function of two variables."""
    return (a - x[0]) ** 2 + b * (x[1] - x[0] ** 2) ** 2


def rosenbrock_gradient(x, a=1.0, b=100.0):
    return jnp.stack(
        [-2 * (a - x[0]) - 4 * b * x[0] * (x[1] - x[0] ** 2), 2 * b * (x[1] - x[0] ** 2)]
    )


def rosenbrock_hessian(x, a=1.0, b=100.0):
    return jnp.array(
        [
            [2 - 4 * b * x[1] + 12 * b * x[0] ** 2, -4 * b * x[0]],
            [-4 * b * x[0], 2 * b],
        ]
    )
