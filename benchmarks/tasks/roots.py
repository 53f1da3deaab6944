"""Roots of x^3 - 2x - c for many values of c at once (float64).

Every c has |c| in [2, 10], where x^3 - 2x - c has exactly one real root (three real roots need
|c| < 4 sqrt(6) / 9 ~ 1.09); c's sign is random. Every solver starts from x0 = 2 sign(c), on the
root's side of the local extrema of the cubic, with the same tolerances (rtol = atol = 1e-10):

* ours: ``newton_raphson(..., elementwise=True)`` under ``jax.jit``;
* ``scipy.optimize.newton`` with arrays and ``fprime`` (its vectorised Newton);
* ``optimistix.root_find(f, optx.Newton(rtol, atol), ...)`` under ``jax.jit(jax.vmap(...))``;
* a reference, not a peer: plain Newton with 30 fixed steps in ``jnp`` (no safeguard, no status,
  no convergence test), the floor that the loop machinery is measured against.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from harness import Case, Impl

import jaxopt_mml as mml

RTOL = ATOL = 1e-10
MAX_ITER = 50


def _problem(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = rng.uniform(2.0, 10.0, n) * rng.choice([-1.0, 1.0], n)
    return 2.0 * np.sign(c), c


def _cubic(x, c):
    return x**3 - 2.0 * x - c


def _ours(n: int) -> Impl:
    def make():
        x0, c = (jnp.asarray(a) for a in _problem(n))
        solve = jax.jit(
            lambda x0, c: mml.newton_raphson(
                _cubic, x0, args=(c,), elementwise=True, rtol=RTOL, atol=ATOL
            )
        )
        return lambda: solve(x0, c)

    return Impl("jaxopt_mml newton_raphson", make)


def _scipy(n: int) -> Impl:
    def make():
        import scipy.optimize as so

        x0, c = _problem(n)

        def fprime(x, c):
            return 3.0 * x**2 - 2.0

        return lambda: so.newton(
            _cubic, x0, fprime=fprime, args=(c,), tol=ATOL, rtol=RTOL, maxiter=MAX_ITER
        )

    return Impl("scipy.optimize.newton (arrays)", make, compiled=False)


def _optimistix(n: int) -> Impl:
    def make():
        import optimistix as optx

        x0, c = (jnp.asarray(a) for a in _problem(n))
        solver = optx.Newton(rtol=RTOL, atol=ATOL)

        def one(x0, c):
            sol = optx.root_find(
                lambda y, c: _cubic(y, c), solver, x0, args=c, max_steps=MAX_ITER, throw=False
            )
            return sol.value

        solve = jax.jit(jax.vmap(one))
        return lambda: solve(x0, c)

    return Impl("optimistix Newton jit(vmap)", make)


def _plain(n: int) -> Impl:
    def make():
        x0, c = (jnp.asarray(a) for a in _problem(n))

        def newton_step(_, x):
            return x - _cubic(x, c) / (3.0 * x**2 - 2.0)

        solve = jax.jit(lambda x0: jax.lax.fori_loop(0, 30, newton_step, x0))
        return lambda: solve(x0)

    return Impl("plain jnp Newton, 30 fixed steps (reference)", make)


def _check(ours, peer) -> str:
    x_peer = np.asarray(peer)
    return f"max|dx| {np.max(np.abs(np.asarray(ours.x) - x_peer)):.1e}"


def _note(ours) -> str:
    n_iter = np.asarray(ours.n_iter)
    return (
        f"success {100 * np.mean(np.asarray(ours.success)):.1f}%, "
        f"iterations mean {n_iter.mean():.2f} / max {n_iter.max()}"
    )


def cases(full: bool) -> list[Case]:
    sizes = [10**3, 10**5, 10**6] + ([10**7] if full else [])
    return [
        Case(
            task="roots x^3-2x-c",
            size=f"{n:.0e}".replace("e+0", "e"),
            ours=_ours(n),
            peers=[_scipy(n), _optimistix(n), _plain(n)],
            check=_check,
            note=_note,
        )
        for n in sizes
    ]
