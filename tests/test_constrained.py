"""minimise_constrained on closed-form problems and the Hock-Schittkowski problems, scipy as oracle."""

import functools
import warnings

import chex
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import jaxopt_mml as mml
from tests.zoo import constrained as zoo


def _circle(p):
    return jnp.array([p @ p - 1.0])


def _x2y(p):
    return p[0] ** 2 * p[1]


@pytest.mark.parametrize("maximise", [False, True])
def test_extremes_of_x2y_on_the_unit_circle(maximise):
    # grad f = (2xy, x^2) = -lam (2x, 2y): x^2 = 2 y^2, y = -+1/sqrt(3), lam = -+1/sqrt(3).
    start = jnp.array([0.5, 0.5 if maximise else -0.5])
    res = mml.minimise_constrained(_x2y, start, eq=_circle, maximise=maximise)
    s = 1.0 if maximise else -1.0
    assert bool(res.success)
    chex.assert_trees_all_close(
        res.x, jnp.array([np.sqrt(2 / 3), s / np.sqrt(3)]), atol=1e-9, rtol=0
    )
    chex.assert_trees_all_close(res.value, s * 2 / (3 * np.sqrt(3)), atol=1e-10, rtol=0)
    chex.assert_trees_all_close(res.multipliers_eq, jnp.array([-s / np.sqrt(3)]), atol=1e-9)
    assert float(res.kkt_residual) < 1e-8 and float(res.max_violation) < 1e-8


def test_largest_box_of_given_surface():
    # maximise xyz subject to 2(xy + yz + zx) = S: the cube of side a = sqrt(S/6); lam = -a/4.
    area = 24.0

    def surface(v):
        x, y, z = v
        return jnp.array([2 * (x * y + y * z + z * x) - area])

    res = mml.minimise_constrained(
        lambda v: v[0] * v[1] * v[2], jnp.array([1.0, 2.0, 3.0]), eq=surface, maximise=True
    )
    a = np.sqrt(area / 6)
    assert bool(res.success)
    chex.assert_trees_all_close(res.x, jnp.full(3, a), atol=1e-9, rtol=0)
    chex.assert_trees_all_close(res.value, a**3, atol=1e-9, rtol=0)
    chex.assert_trees_all_close(res.multipliers_eq, jnp.array([-a / 4]), atol=1e-9)


def test_closest_point_of_a_plane_to_the_origin():
    # minimise |x|^2 subject to a.x = b: x = b a / |a|^2, lam = -2 b / |a|^2.
    a, b = jnp.array([1.0, -2.0, 2.0]), 6.0
    res = mml.minimise_constrained(
        lambda x, a, b: x @ x,
        jnp.array([5.0, 5.0, -5.0]),
        args=(a, b),
        eq=lambda x, a, b: jnp.array([a @ x - b]),
    )
    assert bool(res.success)
    chex.assert_trees_all_close(res.x, b * a / (a @ a), atol=1e-12, rtol=0)
    chex.assert_trees_all_close(res.multipliers_eq, jnp.array([-2 * b / (a @ a)]), atol=1e-12)


def _bounds(p):
    if p.bounds is None:
        return None
    return jnp.asarray(p.bounds[0]), jnp.asarray(p.bounds[1])


@functools.cache
def _solve(name):
    p = {q.name: q for q in zoo.ALL}[name]
    return mml.minimise_constrained(p.f, jnp.asarray(p.x0), eq=p.eq, ineq=p.ineq, bounds=_bounds(p))


@pytest.mark.parametrize("problem", zoo.ALL, ids=lambda p: p.name)
def test_hock_schittkowski_from_published_start(problem):
    res = _solve(problem.name)
    assert int(res.status) == mml.Status.SUCCESS, mml.status_message(res.status)
    np.testing.assert_allclose(res.x, problem.x_star, atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.value, problem.f_star, atol=1e-6, rtol=0)
    assert float(res.max_violation) < 1e-7
    assert float(res.kkt_residual) < 1e-6


def _scipy_constraints(p, kind):
    cons = []
    if kind == "slsqp":
        if p.eq is not None:
            cons.append({"type": "eq", "fun": lambda x: np.asarray(p.eq(jnp.asarray(x)))})
        if p.ineq is not None:
            cons.append({"type": "ineq", "fun": lambda x: np.asarray(p.ineq(jnp.asarray(x)))})
        return cons
    if p.eq is not None:
        cons.append(so.NonlinearConstraint(lambda x: np.asarray(p.eq(jnp.asarray(x))), 0.0, 0.0))
    if p.ineq is not None:
        cons.append(
            so.NonlinearConstraint(lambda x: np.asarray(p.ineq(jnp.asarray(x))), 0.0, np.inf)
        )
    return cons


def _f_np(p):
    return lambda x: float(p.f(jnp.asarray(x)))


@pytest.mark.parametrize("problem", zoo.ALL, ids=lambda p: p.name)
def test_matches_scipy_slsqp_with_multipliers(problem):
    res = _solve(problem.name)
    bounds = None if problem.bounds is None else list(zip(*problem.bounds, strict=True))
    ref = so.minimize(
        _f_np(problem),
        np.asarray(problem.x0),
        method="SLSQP",
        bounds=bounds,
        constraints=_scipy_constraints(problem, "slsqp"),
        options={"ftol": 1e-12, "maxiter": 500},
    )
    # SLSQP ends HS71 with status 8 (no descent left at its precision) at the right point.
    assert ref.status in (0, 8), ref.message
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    # SLSQP's multipliers (equalities first) satisfy grad f = sum m grad c: ours are -m.
    ours = np.concatenate([res.multipliers_eq, res.multipliers_ineq])
    np.testing.assert_allclose(ours, -np.asarray(ref.multipliers), atol=1e-5)


@pytest.mark.parametrize("problem", zoo.ALL, ids=lambda p: p.name)
def test_matches_scipy_trust_constr_with_multipliers(problem):
    res = _solve(problem.name)
    bounds = None if problem.bounds is None else so.Bounds(*problem.bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = so.minimize(
            _f_np(problem),
            np.asarray(problem.x0),
            method="trust-constr",
            bounds=bounds,
            constraints=_scipy_constraints(problem, "trust-constr"),
            options={"gtol": 1e-12, "xtol": 1e-12, "maxiter": 3000},
        )
    # trust-constr is an interior-point method: accurate to about 1e-5 here.
    np.testing.assert_allclose(res.x, ref.x, atol=1e-4)
    v = list(ref.v)
    if problem.eq is not None:
        np.testing.assert_allclose(res.multipliers_eq, v.pop(0), atol=1e-3)
    if problem.ineq is not None:
        np.testing.assert_allclose(res.multipliers_ineq, v.pop(0), atol=1e-3)
    if problem.bounds is not None:
        np.testing.assert_allclose(res.multipliers_bounds, v.pop(0), atol=1e-3)


def test_kkt_conditions_hold_in_the_documented_convention():
    # grad f + J_h^T lam + J_g^T mu + nu = 0, mu <= 0 and nu <= 0 at lower bounds (minimising).
    import jax

    p = zoo.HS71
    res = _solve("HS71")
    x = res.x
    stationarity = (
        jax.grad(p.f)(x)
        + jax.jacfwd(p.eq)(x).T @ res.multipliers_eq
        + jax.jacfwd(p.ineq)(x).T @ res.multipliers_ineq
        + res.multipliers_bounds
    )
    np.testing.assert_allclose(stationarity, 0.0, atol=1e-6)
    assert np.all(np.asarray(res.multipliers_ineq) <= 0)
    assert float(res.multipliers_bounds[0]) < 0  # x1 sits on its lower bound


def _portfolios(rng, k, n, target_range):
    """k random minimum-variance problems: covariances, mean returns, budgets, target returns."""
    a = rng.normal(size=(k, n, n))
    cov = a @ a.transpose(0, 2, 1) / n + 0.1 * np.eye(n)
    mu = rng.uniform(0.01, 0.15, size=(k, n))
    budget = rng.uniform(0.5, 2.0, size=k)
    return cov, mu, budget, budget * rng.uniform(*target_range, size=k)


def _solve_long_only(cov, mu, budget, target):
    """minimise w'Sw/2 subject to sum(w) = b, mu'w = r, w >= 0: all problems in one vmap."""
    import jax

    n = mu.shape[1]

    def one(s, m, b, r):
        return mml.minimise_constrained(
            lambda w, s, m, b, r: 0.5 * w @ s @ w,
            jnp.full((n,), b / n),
            args=(s, m, b, r),
            eq=lambda w, s, m, b, r: jnp.stack([jnp.sum(w) - b, m @ w - r]),
            bounds=(jnp.zeros(n), None),
        )

    return jax.jit(jax.vmap(one))(cov, mu, budget, target)


def _slsqp_long_only(s, m, b, r):
    n = m.shape[0]
    return so.minimize(
        lambda w: 0.5 * w @ s @ w,
        np.full(n, b / n),
        jac=lambda w: s @ w,
        method="SLSQP",
        bounds=[(0.0, None)] * n,
        constraints=[{"type": "eq", "fun": lambda w: np.array([w.sum() - b, m @ w - r])}],
        options={"ftol": 1e-14, "maxiter": 500},
    ).x


def test_long_only_portfolios_batched_match_slsqp_or_are_infeasible():
    # 24 random problems at once. Where r/b lies outside [min mu, max mu] no long-only
    # portfolio exists: INFEASIBLE.
    cov, mu, budget, target = _portfolios(np.random.default_rng(3), 24, 6, (0.02, 0.14))
    res = _solve_long_only(cov, mu, budget, target)
    ratio = target / budget
    feasible = (ratio >= mu.min(axis=1)) & (ratio <= mu.max(axis=1))
    assert 0 < feasible.sum() < len(ratio)  # both kinds are present
    np.testing.assert_array_equal(np.asarray(res.success), feasible)
    assert np.all(np.asarray(res.status)[~feasible] == mml.Status.INFEASIBLE)
    # The bounds hold exactly (the polish's Newton steps left weights of -4e-24 with SUCCESS:
    # NaN for an objective or a caller that takes sqrt(w) or log(w)).
    assert np.all(np.asarray(res.x) >= 0.0)
    for i in np.flatnonzero(feasible):
        ref = _slsqp_long_only(cov[i], mu[i], budget[i], target[i])
        np.testing.assert_allclose(res.x[i], ref, atol=1e-6)


@pytest.mark.parametrize(("n", "k", "pick"), [(10, 1000, (420, 833)), (20, 10000, (844, 3032))])
def test_long_only_portfolios_near_many_bounds_are_solved(n, k, pick):
    # Problems of the benchmark's generator (seed 1) on which the projected Newton inner solver
    # used to crawl: a variable on its bound was freed and clipped back at every step (n = 10,
    # 420: STAGNATED), gradient steps on the binding variables, off by the penalty's curvature,
    # failed the line search (833: reported INFEASIBLE though feasible), or variables free at
    # the solution sat in a band of nearly active ones too wide for the penalty's scale and
    # were held and freed in turn (n = 20, 844: STAGNATED; 3032: INFEASIBLE).
    data = _portfolios(np.random.default_rng(1), k, n, (0.05, 0.1))
    cov, mu, budget, target = (u[np.asarray(pick)] for u in data)
    ratio = target / budget
    assert np.all((ratio > mu.min(axis=1)) & (ratio < mu.max(axis=1)))  # feasible
    res = _solve_long_only(cov, mu, budget, target)
    np.testing.assert_array_equal(np.asarray(res.status), [0, 0])
    for i in range(2):
        ref = _slsqp_long_only(cov[i], mu[i], budget[i], target[i])
        np.testing.assert_allclose(res.x[i], ref, atol=1e-6)
