"""The Newton-KKT step's linear algebra: the augmented system's Cholesky solves and inertia.

The step solves ``[[H, J^T], [J, -delta_c I]]`` by two Cholesky factorisations in JAX (no
LAPACK: batched LAPACK calls in the vectorised loop hung XLA:CPU's runtime), and the same
factorisation says whether ``H`` is positive definite on the constraints' tangent space.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from jaxopt_mml._constrained_kkt import gershgorin_lowest, kkt_solve
from jaxopt_mml._small_linalg import UNROLL, inverse_cholesky, spd_solver
from tests.zoo.jaxprs import primitives

LAPACK = {"lu", "eigh", "cholesky", "triangular_solve", "qr", "svd", "householder_product"}
_kkt_solve = jax.jit(jax.vmap(kkt_solve))  # one compile per size for the four kinds


def _system(rng, n, m, kind):
    """A random KKT system: ``H`` positive definite, positive definite on the tangent space of
    ``J`` only (a saddle), or indefinite there; ``J`` of full rank or with two equal rows."""
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    jac = rng.normal(size=(m, n)) * 10.0 ** rng.uniform(-2, 2)
    if kind == "definite":
        ev = rng.uniform(0.1, 10, n)
    elif kind == "saddle":  # negative across the constraints, positive along them
        ev = rng.uniform(0.1, 10, n)
        jac = (q[:, :m] * rng.uniform(0.5, 2.0, m)).T  # J's rows span the negative eigenvectors
        ev[:m] *= -1
    else:  # negative curvature along the tangent space too
        ev = rng.uniform(0.1, 10, n)
        ev[m] = -1.0
        jac = (q[:, :m] * rng.uniform(0.5, 2.0, m)).T
    if kind == "rank-deficient":
        ev = rng.uniform(0.1, 10, n)
        jac[-1] = 2.0 * jac[0]
    hess = (q * ev) @ q.T * 10.0 ** rng.uniform(-3, 3)
    delta_c = 10 * np.finfo(np.float64).eps * max(1.0, np.abs(jac).max()) ** 2
    return hess, jac, delta_c


@pytest.mark.parametrize("n", [4, UNROLL + 3])
@pytest.mark.parametrize("kind", ["definite", "saddle", "indefinite", "rank-deficient"])
def test_kkt_solve_matches_numpy_and_reports_the_inertia(n, kind):
    # Both factorisation paths (unrolled Cholesky up to UNROLL, the inverse factor above), and
    # the inertia: exactly m negative eigenvalues where H is positive definite on J's null space.
    rng = np.random.default_rng([n, len(kind)])
    m = 2
    systems = [_system(rng, n, m, kind) for _ in range(6)]
    hess, jac, dc = (np.stack(u) for u in zip(*systems, strict=True))
    rhs = rng.normal(size=(len(systems), n + m, 2))
    u, ok = _kkt_solve(*(jnp.asarray(a) for a in (hess, jac, rhs, dc)))
    for i in range(len(systems)):
        k = np.block([[hess[i], jac[i].T], [jac[i], -dc[i] * np.eye(m)]])
        if kind != "rank-deficient":  # (there one eigenvalue is -delta_c, below NumPy's rounding)
            n_negative = int(np.sum(np.linalg.eigvalsh(k) < 0))
            assert (n_negative == m) == (kind != "indefinite"), (i, n_negative)
        assert bool(ok[i]) == (kind != "indefinite"), i
        if ok[i]:
            residual = np.abs(k @ np.asarray(u[i]) - rhs[i]).max()
            scale = np.abs(k).max() * np.abs(np.asarray(u[i])).max() + np.abs(rhs[i]).max()
            assert residual <= 1e-14 * scale, (i, residual / scale)


@pytest.mark.parametrize("k", [UNROLL, 13])
def test_spd_solver_and_inverse_cholesky_match_numpy(k):
    rng = np.random.default_rng(k)
    a = rng.normal(size=(2, k, k))
    a = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(k)
    b = rng.normal(size=(k, 3))
    solve, pd = spd_solver(jnp.asarray(a[0]))
    assert bool(pd)
    np.testing.assert_allclose(solve(jnp.asarray(b)), np.linalg.solve(a[0], b), rtol=1e-10)
    inv_low = jax.vmap(inverse_cholesky)(jnp.asarray(a))
    np.testing.assert_allclose(inv_low, np.linalg.inv(np.linalg.cholesky(a)), atol=1e-12)
    a[1, 2, 2] = -1.0  # not positive definite
    assert not bool(spd_solver(jnp.asarray(a[1]))[1])
    assert np.isnan(np.asarray(inverse_cholesky(jnp.asarray(a[1])))).any()


def test_gershgorin_bound_is_below_the_lowest_eigenvalue():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(20, 6, 6))
    a = a + a.transpose(0, 2, 1)
    bound = jax.vmap(gershgorin_lowest)(jnp.asarray(a))
    assert np.all(np.asarray(bound) <= np.linalg.eigvalsh(a)[:, 0])


def _portfolio(w, cov, budget):
    return 0.5 * w @ cov @ w


def _budget(w, cov, budget):
    return jnp.stack([jnp.sum(w) - budget])


def test_vectorised_newton_kkt_calls_no_lapack_and_solves():
    # Batched LAPACK kernels in the vmapped while loop deadlocked XLA:CPU's thread pool
    # (docs/constrained_benchmark.md): the Newton-KKT program holds none.
    rng = np.random.default_rng(0)
    a = rng.normal(size=(8, 4, 4))
    cov = jnp.asarray(a @ a.transpose(0, 2, 1) + 0.1 * np.eye(4))
    budget = jnp.asarray(rng.uniform(0.5, 2.0, 8))

    def one(cov, budget):
        return mml.minimise_constrained(
            _portfolio, jnp.full((4,), budget / 4), args=(cov, budget), eq=_budget
        )

    assert not primitives(jax.vmap(one), cov, budget) & LAPACK
    res = jax.jit(jax.vmap(one))(cov, budget)
    assert bool(jnp.all(res.success))
    ones = np.ones(4)
    inv = np.linalg.inv(np.asarray(cov))
    expected = (inv @ ones) * (np.asarray(budget) / (ones @ inv @ ones))[:, None]
    np.testing.assert_allclose(res.x, expected, rtol=1e-10)


def test_newton_kkt_without_constraints_is_newton():
    # m = 0 (method="newton-kkt" with no eq): the multipliers' 0 x 0 system and the step's
    # positive-definiteness test of H alone; the 0 x 0 Cholesky failed to stack no columns.
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x - 1.0) ** 2 * jnp.arange(1.0, 4.0)), jnp.zeros(3), method="newton-kkt"
    )
    assert bool(res.success)
    np.testing.assert_allclose(res.x, np.ones(3), rtol=1e-12)
    solve, pd = spd_solver(jnp.zeros((0, 0)))
    assert bool(pd) and solve(jnp.zeros((0,))).shape == (0,)
