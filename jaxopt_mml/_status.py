"""Status codes shared by every solver, with messages that say what to do.

Failure is data: each solver returns an integer ``status`` (one per element when batched) rather
than raising on a traced value. On the host, :func:`raise_for_status` turns a failed result into a
readable :class:`SolverError`, and :func:`status_message` explains a single code.
"""

from __future__ import annotations

import enum
from collections import Counter
from typing import Any

import numpy as np

from ._tree import is_concrete

__all__ = ["Status", "SolverError", "status_message", "raise_for_status", "summarise_status"]


class Status(enum.IntEnum):
    """Why a solver stopped. ``SUCCESS`` is 0; every other code is a failure.

    ``RUNNING`` (-1) is internal to the iteration driver and never appears in a returned result.
    """

    RUNNING = -1
    SUCCESS = 0
    MAX_ITER = 1
    NONFINITE = 2
    LINESEARCH_FAILED = 3
    SINGULAR = 4
    BRACKET_INVALID = 5
    INFEASIBLE = 6
    STAGNATED = 7
    PRECISION_LIMIT = 8
    COVARIANCE_UNDEFINED = 9
    INVALID_INPUT = 10
    UNBOUNDED = 11


_MESSAGES = {
    Status.RUNNING: "the solver was still running (internal state; please report this as a bug).",
    Status.SUCCESS: "converged: the termination test on rtol/atol was met.",
    Status.MAX_ITER: (
        "stopped at max_iter without meeting the tolerances. Raise max_iter, loosen rtol/atol, "
        "or start closer to the solution."
    ),
    Status.NONFINITE: (
        "a NaN or inf appeared in the iterate, the function value, its derivatives (gradient, "
        "Jacobian) or the constraints. Check the starting point and args for NaN, and that the "
        "function is defined and differentiable on the path (no log/sqrt of negatives, no sqrt "
        "or norm at 0, whose derivative is inf or NaN there, no overflow); with an optax "
        "optimiser, also its learning rate or schedule (NaN, or so large that the iterates "
        "overflow); the last finite iterate is returned."
    ),
    Status.LINESEARCH_FAILED: (
        "the line search found no step that decreases the merit function. The gradient may be "
        "wrong or inaccurate (check it with check_grad), the tolerances may be below what the "
        "dtype can resolve, a root finder may sit at a local minimum of |f| that is not a root, "
        "or its Newton step may overshoot by more than 2**linesearch_steps (start closer, or "
        "raise linesearch_steps). Or f is not differentiable at x (a kink: abs, max or min of "
        "pieces, clip), where the gradient does not vanish even at a minimum, so no gradient "
        "test can confirm one (grad_norm stays large; x may still be at or near the minimum): "
        "smooth f (sqrt(x**2 + d**2) for |x|, logsumexp for a max), or write the kink as "
        "constraints (|x| <= t, minimising t) for minimise_constrained."
    ),
    Status.SINGULAR: (
        "the Jacobian or Hessian is singular (or numerically so) and no step could be computed. "
        "Start elsewhere, or reparameterise so that the parameters are identifiable. From "
        "bisection or bracketed_newton: f changes sign across a singularity, not a root: the "
        "bracket shrank to the tolerance while |f| at its ends did not decrease (a pole such "
        "as 1/x or tan x, or a jump such as sign(x)); x is where f changes sign. Check f for a "
        "division by zero or a branch there, or bracket the root away from that point."
    ),
    Status.BRACKET_INVALID: (
        "the bracket does not contain a sign change: f(lower) and f(upper) have the same sign. "
        "Give lower/upper with f(lower) * f(upper) <= 0."
    ),
    Status.INFEASIBLE: (
        "no point satisfying the constraints was found: the constraints may be inconsistent. "
        "Check them, or start from a feasible point; max_violation says how far off it is."
    ),
    Status.STAGNATED: (
        "the iterate stopped changing before the convergence test was met: the problem may be "
        "badly scaled or the tolerances too tight for the dtype, a root finder may sit at a "
        "local minimum of |f| that is not a root, a minimiser may sit on a kink of f (abs, max: "
        "see LINESEARCH_FAILED), or a constrained solver could not reduce the "
        "constraints' violation further. Rescale the variables (and f) to order 1, loosen "
        "rtol/atol or use float64, or start elsewhere (for constraints, nearer to feasible)."
    ),
    Status.PRECISION_LIMIT: (
        "the dtype cannot resolve the problem to the requested tolerances: what the method can "
        "still gain is below the rounding of f (or chi-squared). float32 is often the cause "
        "(float16 and bfloat16 fits: use float32); "
        "with gradient descent, a narrow valley leaves decreases along the gradient below that "
        "rounding in float64 too. Use float64 (jax.config.update('jax_enable_x64', True)), a "
        "second-order method (Levenberg-Marquardt or Gauss-Newton for a fit; newton_minimise, "
        "bfgs or lbfgs), or loosen rtol/atol."
    ),
    Status.COVARIANCE_UNDEFINED: (
        "the fit converged (its parameters are usable) but its covariance cannot be estimated "
        "(singular Jacobian or no degrees of freedom); covariance and stderr are inf. Fit more "
        "points than parameters (dof > 0), or fix or remove the parameters that the data cannot "
        "tell apart (a zero or dependent column of the Jacobian)."
    ),
    Status.INVALID_INPUT: (
        "the input holds NaN or inf (in x0, data or sigma), leaves nothing to fit (every "
        "point masked or omitted), gives bounds with lower >= upper or a start outside them, "
        "or an option outside its range under jit (a step_size that is not finite and > 0). "
        "Clean the input, or use nan_policy='omit' where the function offers it."
    ),
    Status.UNBOUNDED: (
        "the objective fell below objective_limit (default -1e20): the problem looks unbounded "
        "below. Check the objective's sign (minimising what should be maximised) and whether a "
        "constraint, bound or regularising term is missing; where values that low are real, "
        "pass a lower objective_limit (or None). x is the first iterate found below the limit "
        "(for minimise_constrained, the first feasible one)."
    ),
}


class SolverError(RuntimeError):
    """Raised on the host by :func:`raise_for_status` for a failed result."""


def _host_codes(func: str, status: Any) -> np.ndarray:
    """``status`` read on the host; a traced one (inside ``jit``) is named as such (it met JAX's
    TracerArrayConversionError, which named neither the function nor what to do instead)."""
    if not is_concrete(status):
        raise TypeError(
            f"{func} reads status codes on the host: call it outside jax.jit, vmap and grad "
            "(inside, branch on result.success with jnp.where or lax.cond)"
        )
    return np.asarray(status)


def status_message(status: Any) -> str:
    """The message for one status code: what happened and what to do about it.

    Example:
        >>> import jaxopt_mml as mml
        >>> mml.status_message(mml.Status.BRACKET_INVALID).split(". ")[0]
        'BRACKET_INVALID: the bracket does not contain a sign change: f(lower) and f(upper) have the same sign'
    """
    value = _host_codes("status_message", status)
    if value.shape != () or not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"status must be one integer Status code, got {status!r}")
    code = Status(int(value))
    return f"{code.name}: {_MESSAGES[code]}"


def summarise_status(status: Any) -> dict[Status, int]:
    """Counts of each status code in a (possibly batched) status array, on the host.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.bisection(lambda x, c: x**2 - c, 0.0, 2.0, args=(jnp.array([1.0, 2.0, 9.0]),))
        >>> mml.summarise_status(res.status)       # 3 lies outside [0, 2]
        {<Status.SUCCESS: 0>: 2, <Status.BRACKET_INVALID: 5>: 1}
    """
    codes = _host_codes("summarise_status", status)
    if not np.issubdtype(codes.dtype, np.integer):
        raise TypeError(f"status codes are integers, got dtype {codes.dtype}")
    codes = codes.ravel()
    return {Status(int(k)): int(v) for k, v in sorted(Counter(codes.tolist()).items())}


def raise_for_status(result: Any) -> Any:
    """Raise :class:`SolverError` if any element of ``result`` failed; return ``result`` otherwise.

    Host-side only (it reads concrete values): call it outside ``jit``. Works for any result with a
    ``status`` field, batched or not, and names how many elements failed with which code. An
    element fails where its ``success`` is False (where the result has that field): a fit whose
    only problem is its covariance (``COVARIANCE_UNDEFINED``, ``success`` True) does not raise.

    Example:
        >>> import jaxopt_mml as mml
        >>> res = mml.newton_raphson(lambda x: x**2 - 2.0, 1.0)
        >>> round(float(mml.raise_for_status(res).x), 6)      # succeeded: the result comes back
        1.414214
        >>> res = mml.newton_raphson(lambda x: x**2 - 2.0, 10.0, max_iter=3)
        >>> mml.raise_for_status(res)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        jaxopt_mml._status.SolverError: solver failed:
          MAX_ITER: stopped at max_iter without meeting the tolerances. Raise max_iter, ...
    """
    if not hasattr(result, "status"):
        hint = {
            "LagrangePoints": "check n_converged instead",
            "ShardedBatch": "call it on unshard(result), which drops the padding rows",
        }.get(type(result).__name__, "")
        raise TypeError(
            f"raise_for_status needs a solver result with a status field, got "
            f"{type(result).__name__}" + (f" ({hint})" if hint else "")
        )
    codes = _host_codes("raise_for_status", result.status).ravel()
    success = getattr(result, "success", None)
    ok = codes == int(Status.SUCCESS) if success is None else np.asarray(success).ravel()
    counts = summarise_status(codes)
    failed = summarise_status(codes[~ok])
    if not failed:
        return result
    total = sum(counts.values())
    lines = [
        f"{n} of {total} element(s): {status_message(code)}" if total > 1 else status_message(code)
        for code, n in failed.items()
    ]
    raise SolverError("solver failed:\n  " + "\n  ".join(lines))
