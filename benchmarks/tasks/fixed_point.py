"""Fixed points: a deep-equilibrium layer z = tanh(W z + U u) for a batch of inputs (float64).

n = 64 hidden units, inputs of 16, W symmetric with eigenvalues spread over [-0.99, 0.99] (a
contraction whose slow directions plain iteration resolves slowly: about 45 iterations on
average, 95 at most, where Anderson takes 23 and 35), B inputs u in one call, tolerances
sqrt(eps) (1.5e-8), at most 500 iterations. ``--full`` adds B = 10^4 and a W of Gaussian
entries scaled to norm 0.9 (its eigenvalues fill a disc of radius about 0.45: plain iteration
and Anderson both take about 16 iterations there, and plain iteration is the cheaper).

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

import jax
import jax.numpy as jnp
import numpy as np
from harness import Case, Impl

import jaxopt_mml as mml

N_HIDDEN, N_IN = 64, 16
MAX_ITER = 500
TOL = float(np.finfo(np.float64).eps) ** 0.5


def _problem(batch: int, symmetric: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    if symmetric:
        q = np.linalg.qr(rng.standard_normal((N_HIDDEN, N_HIDDEN)))[0]
        w = (q * np.linspace(-0.99, 0.99, N_HIDDEN)) @ q.T
    else:
        w = rng.standard_normal((N_HIDDEN, N_HIDDEN))
        w = 0.9 * w / np.linalg.norm(w, 2)
    u_mat = rng.standard_normal((N_HIDDEN, N_IN)) / 4
    inputs = rng.standard_normal((batch, N_IN))
    return w, u_mat, inputs


def layer(z, u_mat, w, u):
    return jnp.tanh(w @ z + u_mat @ u)


def _ours(w, u_mat, inputs, grad: bool, method: str = "anderson"):
    def make():
        w_, u_, x_ = (jnp.asarray(a) for a in (w, u_mat, inputs))

        def solve(um, u):
            return mml.fixed_point(
                layer, jnp.zeros(N_HIDDEN), args=(um, w_, u), method=method, max_iter=MAX_ITER
            )

        if not grad:
            fn = jax.jit(jax.vmap(solve, in_axes=(None, 0)))
            return lambda: fn(u_, x_)
        fn = jax.jit(jax.grad(lambda um: jnp.sum(jax.vmap(lambda u: solve(um, u).x)(x_) ** 2)))
        return lambda: fn(u_)

    return Impl(f"jit(vmap(fixed_point)) {method}" + (" grad" if grad else ""), make)


def _jaxopt(w, u_mat, inputs, grad: bool, anderson: bool):
    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jaxopt
        w_, u_, x_ = (jnp.asarray(a) for a in (w, u_mat, inputs))

        def fun(z, um, u):
            return layer(z, um, w_, u)

        if anderson:
            solver = jaxopt.AndersonAcceleration(fun, history_size=5, maxiter=MAX_ITER, tol=TOL)
        else:
            solver = jaxopt.FixedPointIteration(fun, maxiter=MAX_ITER, tol=TOL)

        def solve(um, u):
            return solver.run(jnp.zeros(N_HIDDEN), um, u).params

        if not grad:
            fn = jax.jit(jax.vmap(solve, in_axes=(None, 0)))
            return lambda: fn(u_, x_)
        fn = jax.jit(jax.grad(lambda um: jnp.sum(jax.vmap(lambda u: solve(um, u))(x_) ** 2)))
        return lambda: fn(u_)

    name = "AndersonAcceleration" if anderson else "FixedPointIteration"
    return Impl(f"jaxopt {name} jit(vmap)", make)


def _optimistix(w, u_mat, inputs, grad: bool):
    def make():
        import optimistix as optx

        w_, u_, x_ = (jnp.asarray(a) for a in (w, u_mat, inputs))
        solver = optx.FixedPointIteration(rtol=TOL, atol=TOL)

        def solve(um, u):
            sol = optx.fixed_point(
                lambda z, a: layer(z, a[0], w_, a[1]),
                solver,
                jnp.zeros(N_HIDDEN),
                args=(um, u),
                max_steps=MAX_ITER,
                throw=False,
            )
            return sol.value

        if not grad:
            fn = jax.jit(jax.vmap(solve, in_axes=(None, 0)))
            return lambda: fn(u_, x_)
        fn = jax.jit(jax.grad(lambda um: jnp.sum(jax.vmap(lambda u: solve(um, u))(x_) ** 2)))
        return lambda: fn(u_)

    return Impl("optimistix FixedPointIteration jit(vmap)", make)


def _scipy(w, u_mat, inputs):
    def make():
        import scipy.optimize as so

        drive = inputs @ u_mat.T  # (B, n)

        def fun(z):
            return np.tanh(z @ w.T + drive)

        return lambda: so.fixed_point(
            fun, np.zeros_like(drive), xtol=TOL, maxiter=MAX_ITER, method="iteration"
        )

    return Impl("scipy fixed_point (iteration), batch as one array", make, compiled=False)


def _values(out):
    return np.asarray(out.x if hasattr(out, "x") else out, np.float64)


def _check(ours, peer):
    return f"max|d| {np.max(np.abs(_values(ours) - _values(peer))):.1e}"


def _note(out):
    if not hasattr(out, "n_iter"):
        return ""
    it = np.asarray(out.n_iter)
    return (
        f"success {np.mean(np.asarray(out.success)):.1%}, "
        f"iterations mean {it.mean():.1f} / max {it.max()}"
    )


def cases(full: bool) -> list[Case]:
    out = []
    problems = [(1000, True)] + ([(10_000, True), (1000, False)] if full else [])
    for batch, symmetric in problems:
        w, u_mat, inputs = _problem(batch, symmetric)
        kind = "symmetric W" if symmetric else "Gaussian W"
        for grad in (False, True):
            peers = [
                _jaxopt(w, u_mat, inputs, grad, anderson=True),
                _jaxopt(w, u_mat, inputs, grad, anderson=False),
                _optimistix(w, u_mat, inputs, grad),
            ]
            if not grad:
                peers.insert(0, _ours(w, u_mat, inputs, grad, method="iteration"))
                peers.append(_scipy(w, u_mat, inputs))
            out.append(
                Case(
                    task=f"fixed point DEQ layer n=64, {kind}" + (" (gradient)" if grad else ""),
                    size=f"B={batch}",
                    ours=_ours(w, u_mat, inputs, grad),
                    peers=peers,
                    check=_check,
                    note=_note,
                )
            )
    return out
