"""Fixed points: a deep-equilibrium layer z = tanh(W z + U u) for a batch of inputs (float64).

n = 64 hidden units, inputs u of 16, B inputs in one call, tolerances sqrt(eps) (1.5e-8). Two
regimes of the same layer, W symmetric:

* "saturating": eigenvalues of W over [-0.99, 0.99], inputs N(0, 1): tanh's slope (0.4-0.8)
  makes the map contract fast; plain iteration takes 44 iterations on average, 94 at most,
  Anderson 23 and 35 (at most 500 iterations);
* "near-linear": eigenvalues over [0, 0.99], inputs 100x smaller: the map contracts as W does,
  slowly along its top eigenvectors; plain iteration takes about 570 on average and 880 at
  most, Anderson 98 and 150 (at most 3000).

``--full`` adds B = 10^4 of the first and a W of Gaussian entries scaled to norm 0.9 (its
eigenvalues fill a disc of radius about 0.45: plain iteration and Anderson both take about 16).

* ours: ``jax.jit(jax.vmap(fixed_point))`` (Anderson, memory 5, and ``method="iteration"``),
  and the gradient of ``sum(z**2)`` over the batch with respect to U (implicit
  differentiation: the training step of a deep equilibrium model);
* jaxopt ``AndersonAcceleration`` (history 5) and ``FixedPointIteration``, and optimistix
  ``fixed_point`` with ``FixedPointIteration``, under ``jit(vmap)`` (their implicit
  differentiation for the gradient);
* ``scipy.optimize.fixed_point(method="iteration")`` on the whole batch as one array (its
  default ``del2``, Steffensen's acceleration applied elementwise, does not converge on this
  coupled map within 500 iterations).

The agreement column is the largest difference from our z (or gradient).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from harness import Case, Impl, success_and_iterations

import jaxopt_mml as mml

N_HIDDEN, N_IN = 64, 16
MAX_ITER = {"saturating": 500, "near-linear": 3000, "Gaussian W": 500}
TOL = float(np.finfo(np.float64).eps) ** 0.5


class _Problem(NamedTuple):
    w: np.ndarray
    u_mat: np.ndarray
    inputs: np.ndarray
    max_iter: int


def _problem(batch: int, kind: str, seed: int = 0) -> _Problem:
    rng = np.random.default_rng(seed)
    scale = 1.0
    if kind == "Gaussian W":
        w = rng.standard_normal((N_HIDDEN, N_HIDDEN))
        w = 0.9 * w / np.linalg.norm(w, 2)
    else:
        q = np.linalg.qr(rng.standard_normal((N_HIDDEN, N_HIDDEN)))[0]
        low = -0.99 if kind == "saturating" else 0.0
        w = (q * np.linspace(low, 0.99, N_HIDDEN)) @ q.T
        scale = 1.0 if kind == "saturating" else 0.01
    u_mat = rng.standard_normal((N_HIDDEN, N_IN)) / 4
    inputs = scale * rng.standard_normal((batch, N_IN))
    return _Problem(w, u_mat, inputs, MAX_ITER[kind])


def layer(z, u_mat, w, u):
    return jnp.tanh(w @ z + u_mat @ u)


def _batched(solve, p: _Problem, grad: bool):
    """``solve(u_mat, u) -> z`` over the batch of inputs, or the gradient of sum(z**2) over
    it with respect to U; returns the timed thunk."""
    u_mat, inputs = jnp.asarray(p.u_mat), jnp.asarray(p.inputs)
    if not grad:
        fn = jax.jit(jax.vmap(solve, in_axes=(None, 0)))
        return lambda: fn(u_mat, inputs)
    fn = jax.jit(jax.grad(lambda um: jnp.sum(jax.vmap(lambda u: solve(um, u))(inputs) ** 2)))
    return lambda: fn(u_mat)


def _ours(p: _Problem, grad: bool, method: str = "anderson"):
    def make():
        w = jnp.asarray(p.w)

        def solve(um, u):
            res = mml.fixed_point(
                layer, jnp.zeros(N_HIDDEN), args=(um, w, u), method=method, max_iter=p.max_iter
            )
            return res if not grad else res.x

        return _batched(solve, p, grad)

    return Impl(f"jit(vmap(fixed_point)) {method}" + (" grad" if grad else ""), make)


def _jaxopt(p: _Problem, grad: bool, anderson: bool):
    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jaxopt
        w = jnp.asarray(p.w)

        def fun(z, um, u):
            return layer(z, um, w, u)

        if anderson:
            solver = jaxopt.AndersonAcceleration(fun, history_size=5, maxiter=p.max_iter, tol=TOL)
        else:
            solver = jaxopt.FixedPointIteration(fun, maxiter=p.max_iter, tol=TOL)
        return _batched(lambda um, u: solver.run(jnp.zeros(N_HIDDEN), um, u).params, p, grad)

    name = "AndersonAcceleration" if anderson else "FixedPointIteration"
    return Impl(f"jaxopt {name} jit(vmap)", make)


def _optimistix(p: _Problem, grad: bool):
    def make():
        import optimistix as optx

        w = jnp.asarray(p.w)
        solver = optx.FixedPointIteration(rtol=TOL, atol=TOL)

        def solve(um, u):
            sol = optx.fixed_point(
                lambda z, a: layer(z, a[0], w, a[1]),
                solver,
                jnp.zeros(N_HIDDEN),
                args=(um, u),
                max_steps=p.max_iter,
                throw=False,
            )
            return sol.value

        return _batched(solve, p, grad)

    return Impl("optimistix FixedPointIteration jit(vmap)", make)


def _scipy(p: _Problem):
    def make():
        import scipy.optimize as so

        drive = p.inputs @ p.u_mat.T  # (B, n)

        def fun(z):
            return np.tanh(z @ p.w.T + drive)

        return lambda: so.fixed_point(
            fun, np.zeros_like(drive), xtol=TOL, maxiter=p.max_iter, method="iteration"
        )

    return Impl("scipy fixed_point (iteration), batch as one array", make, compiled=False)


def _values(out):
    return np.asarray(out.x if hasattr(out, "x") else out, np.float64)


def _check(ours, peer):
    return f"max|d| {np.max(np.abs(_values(ours) - _values(peer))):.1e}"


def _note(out):
    return success_and_iterations(out) if hasattr(out, "n_iter") else ""


def cases(full: bool) -> list[Case]:
    out = []
    runs = [(1000, "saturating", True), (1000, "near-linear", False)]
    if full:
        runs += [(10_000, "saturating", True), (1000, "Gaussian W", False)]
    for batch, kind, with_grad in runs:
        p = _problem(batch, kind)
        for grad in (False, True) if with_grad else (False,):
            peers = [
                _jaxopt(p, grad, anderson=True),
                _jaxopt(p, grad, anderson=False),
                _optimistix(p, grad),
            ]
            if not grad:
                peers.insert(0, _ours(p, grad, method="iteration"))
                peers.append(_scipy(p))
            out.append(
                Case(
                    task=f"fixed point DEQ layer n=64, {kind}" + (" (gradient)" if grad else ""),
                    size=f"B={batch}",
                    ours=_ours(p, grad),
                    peers=peers,
                    check=_check,
                    note=_note,
                )
            )
    return out
