"""Constrained optimisation: many small equality-constrained problems in one call.

Minimum-variance portfolios, one per problem, each with its own covariance, budget and target
return:

    minimise 1/2 w^T S w   subject to   sum(w) = b,   mu^T w = r.

Ours: ``minimise_constrained`` (Newton-KKT), ``jax.vmap`` over the data, run over chunks of 1000
problems with ``lax.map`` (keeps the working set in cache; see the performance notes). Peer: a
loop of scipy SLSQP calls with analytic gradients and ``ftol=1e-14`` (with 1e-12 its answers are
off by up to 1.5e-6). The closed form (one KKT linear solve per problem) is the second oracle.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so
from harness import Case, Impl

import jaxopt_mml as mml

CHUNK = 1000


def _data(n_problems: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n_problems, n, n))
    cov = a @ a.transpose(0, 2, 1) / n + 0.1 * np.eye(n)
    mu = rng.uniform(0.01, 0.15, size=(n_problems, n))
    budget = rng.uniform(0.5, 2.0, size=n_problems)
    target = budget * rng.uniform(0.05, 0.1, size=n_problems)
    return cov, mu, budget, target


def _variance(w, cov, mu, budget, target):
    return 0.5 * w @ cov @ w


def _constraints(w, cov, mu, budget, target):
    return jnp.stack([jnp.sum(w) - budget, mu @ w - target])


def _closed_form(cov, mu, budget, target):
    """The KKT linear system [[S, A^T], [A, 0]] [w; -lam] = [0; c], per problem."""
    n_problems, n = mu.shape
    a = np.stack([np.ones((n_problems, n)), mu], axis=1)
    k = np.zeros((n_problems, n + 2, n + 2))
    k[:, :n, :n] = cov
    k[:, :n, n:] = a.transpose(0, 2, 1)
    k[:, n:, :n] = a
    rhs = np.zeros((n_problems, n + 2))
    rhs[:, n] = budget
    rhs[:, n + 1] = target
    return np.linalg.solve(k, rhs[..., None])[..., 0][:, :n]


def _ours(data, n, long_only=False, chunk=CHUNK):
    n_problems = data[0].shape[0]
    chunk = min(chunk, n_problems)
    bounds = (jnp.zeros(n), None) if long_only else None

    def one(cov, mu, budget, target):
        return mml.minimise_constrained(
            _variance,
            jnp.full((n,), budget / n),
            args=(cov, mu, budget, target),
            eq=_constraints,
            bounds=bounds,
        )

    @jax.jit
    def solve(*args):
        chunks = [u.reshape((n_problems // chunk, chunk) + u.shape[1:]) for u in args]
        res = jax.lax.map(lambda a: jax.vmap(one)(*a), chunks)
        return jax.tree.map(lambda u: u.reshape((n_problems,) + u.shape[2:]), res)

    def make():
        args = [jnp.asarray(u) for u in data]
        return lambda: solve(*args)

    return make


def _scipy(data, n, count, long_only=False):
    bounds = [(0.0, None)] * n if long_only else None

    def make():
        cov, mu, budget, target = (u[:count] for u in data)

        def run():
            out = np.empty((count, n))
            for i in range(count):
                s, m, b, r = cov[i], mu[i], budget[i], target[i]
                res = so.minimize(
                    lambda w, s=s: 0.5 * w @ s @ w,
                    np.full(n, b / n),
                    jac=lambda w, s=s: s @ w,
                    method="SLSQP",
                    bounds=bounds,
                    constraints=[
                        {
                            "type": "eq",
                            "fun": lambda w, m=m, b=b, r=r: np.array([w.sum() - b, m @ w - r]),
                            "jac": lambda w, m=m: np.stack([np.ones(n), m]),
                        }
                    ],
                    options={"ftol": 1e-14, "maxiter": 500},
                )
                out[i] = res.x
            return out

        return run

    return make


def _case(n_problems: int, n: int, peer_count: int) -> Case:
    data = _data(n_problems, n)
    exact = _closed_form(*data)

    def check(ours, peer):
        x = np.asarray(ours.x)
        k = peer.shape[0]
        d_scipy = np.max(np.abs(x[:k] - peer))
        d_exact = np.max(np.abs(x - exact))
        return f"max|x - slsqp| {d_scipy:.1e}, max|x - closed form| {d_exact:.1e}"

    def note(ours):
        ok = np.asarray(ours.success)
        return f"{ok.mean():.1%} success, iterations max {int(np.max(ours.n_iter))}"

    peer_label = "" if peer_count == n_problems else f" (scipy timed on {peer_count})"
    return Case(
        task="constrained portfolios (eq)",
        size=f"{n_problems} x n={n}{peer_label}",
        ours=Impl("mml minimise_constrained", _ours(data, n)),
        peers=[Impl(f"scipy SLSQP loop x{peer_count}", _scipy(data, n, peer_count), False)],
        check=check,
        note=note,
    )


def _long_only_case(n_problems: int, n: int) -> Case:
    """The same portfolios with w >= 0 (augmented Lagrangian + active-set polish), all in one
    ``jax.vmap``: on a CPU the library runs them one after another inside it (the solver's
    nested loops would otherwise wait for the slowest problem at every level; see
    ``jaxopt_mml/_batching.py``). About 1% of them are infeasible (the target return is outside
    [min mu, max mu]): both solvers must say so; the check compares the others."""
    data = _data(n_problems, n, seed=1)

    def check(ours, peer):
        x, ok = np.asarray(ours.x), np.asarray(ours.success)
        ratio = data[3] / data[2]
        feasible = (ratio >= data[1].min(axis=1)) & (ratio <= data[1].max(axis=1))
        d = np.max(np.abs(x[ok] - peer[ok]))
        infeasible_found = np.sum(~ok & ~feasible & (np.asarray(ours.status) == 6))
        return (
            f"max|x - slsqp| {d:.1e} on {ok.sum()} solved; infeasible flagged "
            f"{infeasible_found}/{np.sum(~feasible)}; feasible unsolved {np.sum(feasible & ~ok)}"
        )

    def note(ours):
        ok = np.asarray(ours.success)
        return f"{ok.mean():.1%} success, iterations max {int(np.max(ours.n_iter))}"

    return Case(
        task="constrained portfolios (eq + bounds)",
        size=f"{n_problems} x n={n}",
        ours=Impl("mml minimise_constrained", _ours(data, n, long_only=True, chunk=n_problems)),
        peers=[Impl(f"scipy SLSQP loop x{n_problems}", _scipy(data, n, n_problems, True), False)],
        check=check,
        note=note,
    )


def cases(full: bool) -> list[Case]:
    if not full:
        return [_case(10_000, 10, 10_000), _long_only_case(1000, 10)]
    return [_case(10_000, n, 10_000) for n in (5, 10, 20)] + [
        _long_only_case(10_000, n) for n in (5, 10, 20)
    ]
