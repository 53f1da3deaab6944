"""minimise_constrained from many starts: every run must end at a KKT point that is a local minimum.

Regression for the globalisation of Newton-KKT: from (0.5, 0.5) the extremes of x^2 y on the unit
circle used to stall near (1, 0) (the merit penalty exploded and the line search crept along the
circle), and the augmented Lagrangian's inner Newton could end at a constrained maximum. Each
batch is one vmapped compile; the second-order check is the reduced Hessian of the Lagrangian
on the tangent space of the constraints (the bordered-Hessian test).
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml
from tests.zoo import constrained as zoo

METHODS = ["newton-kkt", "augmented-lagrangian"]


def _x2y(p):
    return p[0] ** 2 * p[1]


def _circle(p):
    return jnp.array([p @ p - 1.0])


def _starts_around_origin():
    angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False) + 0.1
    ring = [np.stack([r * np.cos(angles), r * np.sin(angles)], axis=1) for r in (0.5, 1.0, 1.5)]
    rng = np.random.default_rng(0)
    extra = rng.uniform(-2.0, 2.0, size=(60, 2))
    extra = extra[np.linalg.norm(extra, axis=1) > 0.2][:28]
    return jnp.asarray(np.concatenate(ring + [extra]))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _smallest_reduced_curvature(f, eq, x, multipliers):
    """Smallest eigenvalue of Z^T hess(f + lambda . h) Z, Z a basis of the null space of J_h."""

    def one(x, lam):
        hess = jax.hessian(lambda u: f(u) + lam @ eq(u))(x)
        jac = jax.jacfwd(eq)(x)
        m = jac.shape[0]
        basis = jnp.linalg.qr(jac.T, mode="complete")[0][:, m:]
        return jnp.linalg.eigvalsh(basis.T @ hess @ basis)[0]

    return jax.vmap(one)(x, multipliers)


def _assert_local_minima(f, eq, res, starts, kkt_tol):
    bad = ~(
        np.asarray(res.success)
        & (np.asarray(res.kkt_residual) < kkt_tol)
        & (np.asarray(res.max_violation) < kkt_tol)
    )
    assert not bad.any(), (
        f"not a KKT point from {np.asarray(starts)[bad]}: x = {np.asarray(res.x)[bad]}, "
        f"status {np.asarray(res.status)[bad]}, kkt_residual {np.asarray(res.kkt_residual)[bad]}"
    )
    curvature = np.asarray(_smallest_reduced_curvature(f, eq, res.x, res.multipliers_eq))
    assert (curvature > 1e-3).all(), (
        f"not a minimum from {np.asarray(starts)[curvature <= 1e-3]}: "
        f"x = {np.asarray(res.x)[curvature <= 1e-3]}"
    )


@pytest.mark.parametrize("method", METHODS)
def test_x2y_on_the_circle_from_a_grid_of_starts_reaches_a_local_minimum(method):
    starts = _starts_around_origin()
    solve = jax.jit(
        jax.vmap(lambda x0: mml.minimise_constrained(_x2y, x0, eq=_circle, method=method))
    )
    res = solve(starts)
    _assert_local_minima(_x2y, _circle, res, starts, kkt_tol=1e-8)
    # The local minima: (+-sqrt(2/3), -1/sqrt(3)) and (0, 1).
    minima = np.array([[np.sqrt(2 / 3), -1 / np.sqrt(3)], [-np.sqrt(2 / 3), -1 / np.sqrt(3)]])
    minima = np.concatenate([minima, [[0.0, 1.0]]])
    distance = np.min(np.linalg.norm(np.asarray(res.x)[:, None] - minima[None], axis=2), axis=1)
    assert distance.max() < 1e-6
    # No creeping along the circle (it used to take all 500 iterations from (0.5, 0.5)).
    assert int(res.n_iter.max()) <= 40


def test_x2y_from_the_natural_start_goes_to_the_nearby_minimum_like_slsqp():
    res = mml.minimise_constrained(_x2y, jnp.array([0.5, 0.5]), eq=_circle)
    assert bool(res.success)
    np.testing.assert_allclose(res.x, [0.0, 1.0], atol=1e-8)
    assert float(res.kkt_residual) < 1e-8


# HS7 has a second local minimum, (0, -sqrt(3)) with f = sqrt(3), which some starts reach.
_LOCAL_VALUES = {"HS7": (-np.sqrt(3.0), np.sqrt(3.0))}
_NONLINEAR = [p for p in zoo.EQUALITY if p.name in ("HS6", "HS7", "HS39")]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("problem", _NONLINEAR, ids=lambda p: p.name)
def test_equality_zoo_from_perturbed_starts_reaches_a_local_minimum(problem, method):
    x0 = np.asarray(problem.x0, float)
    rng = np.random.default_rng(1)
    starts = jnp.asarray(x0 + rng.normal(size=(24, x0.size)) * (0.5 * np.abs(x0) + 0.5))
    solve = jax.jit(
        jax.vmap(lambda s: mml.minimise_constrained(problem.f, s, eq=problem.eq, method=method))
    )
    res = solve(starts)
    _assert_local_minima(problem.f, problem.eq, res, starts, kkt_tol=1e-7)
    values = np.asarray(_LOCAL_VALUES.get(problem.name, (problem.f_star,)))
    gap = np.min(np.abs(np.asarray(res.value)[:, None] - values[None]), axis=1)
    assert gap.max() < 1e-6


_ELLIPSE = {"ineq": lambda x: jnp.array([1.0 - x[0] ** 2 / 4 - x[1] ** 2])}


@pytest.mark.parametrize(
    ("f", "x0", "kwargs", "expected"),
    [
        (lambda x: x[0], [1.0], {"ineq": lambda x: x}, [0.0]),
        (lambda x: x[0] ** 2 + x[1], [1.0, 1.0], {"ineq": lambda x: x[1:2]}, [0.0, 0.0]),
        (
            lambda x: x[0] + 2 * x[1],
            [2.0, 2.0],
            {"ineq": lambda x: jnp.array([x[0] + x[1] - 1.0]), "bounds": (0.0, None)},
            [1.0, 0.0],
        ),
        (  # HS3
            lambda x: x[1] + 1e-5 * (x[1] - x[0]) ** 2,
            [10.0, 1.0],
            {"bounds": (jnp.array([-jnp.inf, 0.0]), jnp.inf)},
            [0.0, 0.0],
        ),
        (
            lambda x: x[0] + x[1],
            [0.0, 0.0],
            {**_ELLIPSE, "maximise": True},
            [0.8 * 5**0.5, 0.2 * 5**0.5],
        ),
    ],
    ids=["x-ineq", "x1-ineq", "lp", "hs3", "ellipse-max"],
)
def test_objective_linear_where_only_an_inequality_or_bound_limits_it(f, x0, kwargs, expected):
    # The augmented Lagrangian's Hessian is singular along (x, slack) there: the inner Newton
    # step was ~1/eps long, no backtracking could shorten it, and the run never left x0.
    res = mml.minimise_constrained(f, jnp.array(x0), **kwargs)
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.x, expected, atol=1e-6)
    assert int(res.n_iter) < 20


def test_degenerate_feasible_problem_is_not_reported_infeasible():
    # HS13: the inequality's gradient vanishes at the solution (1, 0); the augmented Lagrangian
    # ends 3e-7 off the constraint, which proves no infeasibility.
    res = mml.minimise_constrained(
        lambda x: (x[0] - 2.0) ** 2 + x[1] ** 2,
        jnp.array([-2.0, -2.0]),
        ineq=lambda x: jnp.array([(1.0 - x[0]) ** 3 - x[1]]),
        bounds=(0.0, None),
    )
    assert int(res.status) != mml.Status.INFEASIBLE
    assert float(res.max_violation) < 1e-5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ineq": lambda x: jnp.array([1.0 - x[0]])},
        {"bounds": (-jnp.inf, 1.0)},
    ],
)
def test_objective_unbounded_below_is_not_success(kwargs):
    # min x with only an upper limit: the iterates run off to -inf. At x = -1.8e16 the projected
    # gradient x - clip(x - 1) rounded to 0 (stationary!), and the active-set polish turned the
    # run into SUCCESS; it must end in a failure status.
    res = mml.minimise_constrained(lambda x: x[0], jnp.array([0.0]), max_iter=30, **kwargs)
    assert not bool(res.success), (res.x, mml.Status(int(res.status)))


@pytest.mark.parametrize(
    "f, kwargs",
    [
        # Newton-KKT: min x0 on the line x1 = 1, and the same maximised
        (lambda x: x[0], {"eq": lambda x: jnp.array([x[1] - 1.0])}),
        (lambda x: -x[0], {"eq": lambda x: jnp.array([x[1] - 1.0]), "maximise": True}),
        # the augmented Lagrangian: an inequality, and a bound on one side only
        (lambda x: -x[0], {"ineq": lambda x: jnp.array([x[0] - x[1]])}),
        (lambda x: x[0] + x[1] ** 2, {"bounds": (None, jnp.array([5.0, 5.0]))}),
    ],
)
def test_objective_unbounded_on_the_feasible_set_is_unbounded(f, kwargs):
    # These ran to max_iter (MAX_ITER, or PRECISION_LIMIT at x = 1e16): the constrained solvers
    # had no objective_limit. A feasible iterate past the limit now says UNBOUNDED, as the
    # unconstrained minimisers do; without a limit the run is still no success.
    res = mml.minimise_constrained(f, jnp.array([1.0, 1.0]), objective_limit=-1e4, **kwargs)
    assert int(res.status) == mml.Status.UNBOUNDED, mml.Status(int(res.status))
    assert float(res.max_violation) < 1e-6
    assert abs(float(res.value)) > 1e4
    off = mml.minimise_constrained(
        f, jnp.array([1.0, 1.0]), objective_limit=None, max_iter=20, **kwargs
    )
    assert int(off.status) not in (mml.Status.SUCCESS, mml.Status.UNBOUNDED)


@pytest.mark.parametrize("maximise", [False, True])
def test_newton_kkt_reaches_the_default_objective_limit_along_a_linear_ray(maximise):
    # With the default limit (-1e20) the linear ray x1 = 1 was walked in cycles of shifted
    # steps 1e4 to 6e5 long (the shift dropped to 0, the next step was rejected for its zero
    # curvature and the shift reset): 100 iterations reached x0 = -5e7, MAX_ITER. The shift
    # now shrinks on where H has no curvature of its own along the step: UNBOUNDED.
    sign = -1.0 if maximise else 1.0
    res = mml.minimise_constrained(
        lambda x: sign * x[0],
        jnp.array([1.0, 1.0]),
        eq=lambda x: jnp.array([x[1] - 1.0]),
        maximise=maximise,
    )
    assert int(res.status) == mml.Status.UNBOUNDED, mml.Status(int(res.status))
    assert abs(float(res.value)) > 1e20


def test_objective_limit_is_traced_and_leaves_bounded_problems_alone():
    @jax.jit
    @chex.assert_max_traces(n=1)
    def solve(limit):
        return mml.minimise_constrained(
            lambda x: (x[0] - 3.0) ** 2 + x[1],
            jnp.array([0.0, 2.0]),
            eq=lambda x: jnp.array([x[1] - 2.0]),
            objective_limit=limit,
        )

    near = solve(1.0)  # the minimum's value, 2, is above the limit
    far = solve(3.0)  # below it: UNBOUNDED at the first feasible iterate past it
    assert int(near.status) == mml.Status.SUCCESS
    np.testing.assert_allclose(near.x, [3.0, 2.0], rtol=1e-10)
    assert int(far.status) == mml.Status.UNBOUNDED
    with pytest.raises(ValueError, match="objective_limit"):
        mml.minimise_constrained(lambda x: x @ x, jnp.ones(2), objective_limit=float("nan"))


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_augmented_lagrangian_does_not_stop_where_the_projection_left_a_saddle():
    # The first projected step clipped x and y onto their bound 0, where the gradient of xyz
    # (yz, xz, xy) is exactly 0: first-order stationary, and the run ended there, at the
    # maximisation's global MINIMUM (0, 0, 1), with SUCCESS. The inner solver now leaves a
    # stationary point along negative curvature that points into the box.
    res = mml.minimise_constrained(
        lambda x: x[0] * x[1] * x[2],
        jnp.array([0.0216247, 0.95157662, 0.67006794]),
        eq=lambda x: x.sum() - 1.0,
        bounds=(0.0, None),
        maximise=True,
    )
    assert int(res.status) == mml.Status.SUCCESS
    np.testing.assert_allclose(res.x, [1 / 3, 1 / 3, 1 / 3], rtol=1e-7)
    # and with inequalities: (0, 0, 2.5) was a saddle (f grows along (t, t, 0)) after 1 iteration
    res = mml.minimise_constrained(
        lambda x: x[0] * x[1] + x[2] - 0.1 * x @ x,
        jnp.array([0.1, 0.2, 0.3]),
        ineq=lambda x: jnp.array([4 - x[0] ** 2 - x[1] ** 2, 3 - x[2] - x[0]]),
        bounds=(0.0, 2.5),
        maximise=True,
    )
    assert int(res.status) == mml.Status.SUCCESS
    np.testing.assert_allclose(res.x, [1.2205502, 1.5843791, 1.7794498], rtol=1e-6)


def test_newton_kkt_step_onto_a_saddle_of_a_quadratic_is_not_success():
    # x0^2 - x1^2 + x2^2 on the plane x2 = 1 is unbounded below (along x1); its one stationary
    # point there, (0, 0, 1), is a saddle. The Newton step from (0.5, 0.2, 0) lands on it, and
    # its tangential part (-0.5, -0.2, 0) has positive curvature, so the curvature test on the
    # step passed and the saddle came back with SUCCESS after one iteration.
    res = mml.minimise_constrained(
        lambda x: 0.5 * (x[0] ** 2 - x[1] ** 2 + x[2] ** 2),
        jnp.array([0.5, 0.2, 0.0]),
        eq=lambda x: jnp.array([x[2] - 1.0]),
        method="newton-kkt",
        max_iter=20,
    )
    assert not bool(res.success), (res.x, mml.Status(int(res.status)))
    assert abs(float(res.x[1])) > 1.0  # it went downhill


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_float32_feasible_qp_is_not_reported_infeasible():
    # An ill-conditioned convex QP (Q of condition ~1e5, entries ~1700) with 2 equalities, 4
    # inequalities and bounds, feasible by construction; float64 solves it. In float32 the
    # augmented Lagrangian stalls at the largest penalty with violation 0.04 and the projected
    # gradient of the violation passed "small" (J^T c is small along J's weak directions): it
    # reported INFEASIBLE. The linearised constraints say the violation can be halved there.
    Q = np.array(
        [
            [302.37833292, -674.58640789, 240.40073449, -494.25616478, 366.82325434],
            [-674.58640789, 1692.35819844, -652.10858168, 1163.48165364, -891.67541383],
            [240.40073449, -652.10858168, 357.9332852, -439.66679189, 549.6308588],
            [-494.25616478, 1163.48165364, -439.66679189, 832.8719119, -636.01312792],
            [366.82325434, -891.67541383, 549.6308588, -636.01312792, 996.47543918],
        ]
    )
    c = np.array([-0.19596737, -3.48382443, 1.15717094, 1.73660573, -0.84064943])
    E = np.array(
        [
            [0.25377316, -0.27920146, 0.12416504, -0.34104087, 0.02356914],
            [-2.49759976, 1.25636453, -1.0066649, 0.22613129, -0.89272823],
        ]
    )
    e = np.array([0.4229813, 1.50646439])
    G = np.array(
        [
            [-1.17654289, -0.07749089, 0.91510187, -0.70129511, -0.41320392],
            [-1.57086973, 0.178333, -1.04412393, -1.01836446, -1.64058996],
            [-0.14540024, 1.72248622, 0.92045669, -1.45965296, 1.70037629],
            [-0.52306444, 0.4751755, 0.33535686, 2.50957035, -1.25441339],
        ]
    )
    h = np.array([0.50709268, 4.92952893, -1.16124216, -1.66756476])
    lo = np.array([-1.67605663, -1.93690046, -2.14422745, -2.36441879, -2.68965768])
    hi = np.array([1.27596169, 1.05792098, 2.69892699, 1.69472275, 2.21002026])
    x0 = np.array([-0.60342702, -1.24002794, -0.02669689, -1.45438074, 0.61652127])

    def run(dt):
        def cv(a):
            return jnp.asarray(a, dt)

        return mml.minimise_constrained(
            lambda x: 0.5 * x @ (cv(Q) @ x) + cv(c) @ x,
            cv(x0),
            eq=lambda x: cv(E) @ x - cv(e),
            ineq=lambda x: cv(G) @ x - cv(h),
            bounds=(cv(lo), cv(hi)),
        )

    assert int(run(jnp.float64).status) == mml.Status.SUCCESS
    res = run(jnp.float32)
    assert int(res.status) != mml.Status.INFEASIBLE


# --- tolerances in the right units -------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "x0", "dtype"),
    [(1e8, [0.0], jnp.float64), (1e4, [0.9999], jnp.float64), (1e4, [0.0, 0.0], jnp.float32)],
)
def test_large_gradient_towards_a_bound_is_not_stationary_at_the_start(scale, x0, dtype):
    # min scale |x - 2|^2 with x <= 1: the projected step (the gradient clipped to the distance
    # to the bound, at most 1) was tested against a tolerance in gradient units (rtol * 4e8 = 6):
    # SUCCESS at the start, x = 0, with kkt_residual 4e8.
    def f(x, c):
        return c * jnp.sum((x - 2.0) ** 2)

    solve = jax.jit(
        lambda c: mml.minimise_constrained(f, jnp.asarray(x0, dtype), args=(c,), bounds=(None, 1.0))
    )
    res = solve(jnp.asarray(scale, dtype))
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.x, np.ones(len(x0)), rtol=0, atol=1e-6)
    assert float(res.kkt_residual) == 0.0
    np.testing.assert_allclose(res.multipliers_bounds, 2.0 * scale, rtol=1e-6)


def _big_linear_cost(x, t):
    # x0 held at 0 by a cost of 1e9 per unit; the minimum over x0 >= 0 is (0, t).
    return 1e9 * x[0] + jnp.cosh(x[1] - t) + (x[1] - t) ** 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bounds": (jnp.array([0.0, -jnp.inf]), jnp.inf)},
        {"ineq": lambda x, t: x[:1]},
        {"eq": lambda x, t: x[:1], "method": "augmented-lagrangian"},
        {"eq": lambda x, t: x[:1]},
    ],
    ids=["bounds", "ineq", "eq-al", "eq-kkt"],
)
def test_one_large_gradient_component_does_not_loosen_the_others(kwargs):
    # One tolerance for all, atol + rtol |grad f|_inf ~ 15, let the free variable x1 stop at 4.0
    # (bounds) or 4.39 (inequality, equality) with df/dx1 = -5 or -1.6 and SUCCESS.
    def solve(t):
        return mml.minimise_constrained(
            _big_linear_cost, jnp.array([1.0, 0.0]), args=(t,), **kwargs
        )

    ts = jnp.array([5.0, 3.0])
    res = jax.jit(jax.vmap(solve))(ts)
    assert np.all(np.asarray(res.success)), np.asarray(res.status)
    np.testing.assert_allclose(res.x, np.stack([np.zeros(2), ts], axis=1), rtol=0, atol=1e-8)
    assert float(jnp.max(res.kkt_residual)) < 1e-8
    # d x1* / d t = 1 (implicit differentiation at the solution).
    slope = jax.vmap(jax.grad(lambda t: solve(t).x[1]))(ts)
    np.testing.assert_allclose(slope, [1.0, 1.0], rtol=1e-6)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_one_large_gradient_component_float32():
    # The same in float32, with the bound and with Newton-KKT (the augmented Lagrangian cannot
    # build a multiplier of 1e9 at float32's largest penalty: it ends STAGNATED, not SUCCESS).
    x0 = jnp.array([1.0, 0.0], jnp.float32)
    t = jnp.float32(5.0)
    for kwargs in ({"bounds": (jnp.array([0.0, -jnp.inf]), jnp.inf)}, {"eq": lambda x, t: x[:1]}):
        res = mml.minimise_constrained(_big_linear_cost, x0, args=(t,), **kwargs)
        assert bool(res.success), int(res.status)
        np.testing.assert_allclose(res.x, [0.0, 5.0], rtol=0, atol=1e-3)
    res = mml.minimise_constrained(_big_linear_cost, x0, args=(t,), ineq=lambda x, t: x[:1])
    assert bool(res.success) == bool(abs(float(res.x[1]) - 5.0) < 1e-3)


def test_inequality_holds_to_its_documented_tolerance_at_large_x():
    # g = 1 - x0 / 1e6 >= 0 with |J| = 1e-6: the violation's tolerance atol + rtol |J| |x| is
    # 4.5e-8 here; |J| floored at 1 made it rtol |x| = 0.03, and g = -0.024 passed as SUCCESS.
    s = 1e6
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x / s - 2.0) ** 2),
        jnp.zeros(2),
        ineq=lambda x: jnp.array([1.0 - x[0] / s]),
    )
    assert bool(res.success), int(res.status)
    tol = np.sqrt(np.finfo(np.float64).eps)
    assert float(res.max_violation) <= tol + tol * 1e-6 * 2e6
    np.testing.assert_allclose(res.x, [1e6, 2e6], rtol=1e-9)
    np.testing.assert_allclose(res.multipliers_ineq, [-2.0], rtol=1e-6)


@pytest.mark.parametrize("s", [1e4, 1e5, 1e6])
def test_newton_kkt_convex_qp_at_large_x(s):
    # min |x / s - (3, 1)|^2 s.t. (x0 + x1) / s = 2: the Hessian 2 / s^2 failed the curvature
    # test against a scale floored at 1, and the shifted steps crawled: MAX_ITER at s >= 1e5.
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x / s - jnp.array([3.0, 1.0])) ** 2),
        jnp.zeros(2),
        eq=lambda x: jnp.array([(x[0] + x[1]) / s - 2.0]),
    )
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.x / s, [2.0, 0.0], rtol=0, atol=1e-9)
    assert int(res.n_iter) <= 3


def test_newton_kkt_equality_in_small_units():
    # min |x|^2 s.t. k (x0 + x1 - 1) = 0: the KKT regularisation delta_c = 10 eps max(1, |J|)^2
    # swamped a Jacobian of k (its Schur complement ~ k^2): the constraint entered as a weak
    # penalty. k = 1e-7 ended at 0.5000032 with SUCCESS, 1e-8 at 0.499681 and 1e-10 at 3e-4
    # with MAX_ITER (scipy's SLSQP and trust-constr: (0.5, 0.5)). (k in args: one compile.)
    # From x = 0, where |h| = k: k = 1e-12 met atol there, SUCCESS at 0 iterations (the
    # constraints are now scaled up to unit size at the start).
    for k, x0 in ((1e-7, (3.0, -1.0)), (1e-8, (3.0, -1.0)), (1e-10, (3.0, -1.0)), (1e-12, (0, 0))):
        res = mml.minimise_constrained(
            lambda x, k: x @ x,
            jnp.array(x0, float),
            args=(k,),
            eq=lambda x, k: k * (x[0] + x[1] - 1.0),
        )
        assert bool(res.success), (k, int(res.status))
        np.testing.assert_allclose(res.x, [0.5, 0.5], rtol=0, atol=1e-10)
        np.testing.assert_allclose(res.multipliers_eq, [-1.0 / k], rtol=1e-8)
        assert int(res.n_iter) <= 3


def test_augmented_lagrangian_constraints_in_small_units_are_met():
    # min |x|^2 s.t. k (x0 + x1 - 1) = 0, (x2 - x0 + 0.1) / k = 0, k (x0 - x1 - 0.2) >= 0:
    # the minimum (0.6, 0.4, 0.5). At x = 0, |c| = k met atol for k = 1e-9 and 1e-12: SUCCESS
    # at (0.05, 0, -0.05) in 4 iterations; at k = 1e-6 the penalty rho k^2 could not enforce
    # them, STAGNATED at (0.063, 0.019, -0.037) (scipy's SLSQP: the minimum). Constraints in
    # small units are now scaled up to unit size at the start. (k in args: one compile.)
    for k in (1e-6, 1e-9, 1e-12):
        res = mml.minimise_constrained(
            lambda x, k: x @ x,
            jnp.zeros(3),
            args=(k,),
            eq=lambda x, k: jnp.stack([k * (x[0] + x[1] - 1.0), (x[2] - x[0] + 0.1) / k]),
            ineq=lambda x, k: k * (x[0] - x[1] - 0.2),
        )
        assert bool(res.success), (k, int(res.status))
        np.testing.assert_allclose(res.x, [0.6, 0.4, 0.5], rtol=0, atol=1e-8)
        # grad f + J_h^T lam + J_g^T mu = 0: k lam_1 = -1.5, lam_2 / k = -1, k mu = -0.7
        np.testing.assert_allclose(
            np.asarray(res.multipliers_eq) * [k, 1 / k], [-1.5, -1.0], rtol=1e-6
        )
        np.testing.assert_allclose(res.multipliers_ineq * k, [-0.7], rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_newton_kkt_constraints_of_very_different_scales(dtype):
    # min |x|^2 + x0 s.t. k1 (x0 + x1 - 1) = 0, x2 - x0 - 0.3 = 0, k2 (x1 - x2 + 0.1) = 0: the
    # minimum (0.4, 0.6, 0.7). One KKT regularisation delta_c = 10 eps |J|^2 from the largest
    # row made the unit row a penalty of weight 1 / 22: (k1, k2) = (1e8, 1e-8) ran to MAX_ITER
    # 0.34 away in float64; in float32 it stopped with SUCCESS 0.7 away, (1e-3, 1e3) 0.73 away
    # (a stall judged feasible against the largest row). delta_c is now per row, 10 eps |J_j|^2,
    # and each row's violation judged against its own gradient. Inconsistent rows,
    # 1e8 (x0 - 1) = 0 and x0 - 1.5 = 0, stopped with SUCCESS at a violation of 0.5.
    tol = 1e-9 if dtype == jnp.float64 else 1e-4

    def h(x, k1, k2):
        return jnp.stack([k1 * (x[0] + x[1] - 1), x[2] - x[0] - 0.3, k2 * (x[1] - x[2] + 0.1)])

    for k1, k2 in ((1e-8, 1e8), (1e8, 1e-8), (1e-3, 1e3)):
        res = mml.minimise_constrained(
            lambda x, k1, k2: x @ x + x[0],
            jnp.array([3.0, -2.0, 5.0], dtype),
            args=(k1, k2),
            eq=h,
            method="newton-kkt",
        )
        assert bool(res.success), (k1, k2, int(res.status))
        np.testing.assert_allclose(res.x, [0.4, 0.6, 0.7], rtol=0, atol=tol)
    # (and 1e-8 (x0 - 1) = 0 beside x0 - 1.5 = 0 with SUCCESS at 1.5, until the constraints in
    # small units were scaled up)
    if dtype == jnp.float64:
        for k in (1e8, 1e-8):
            res = mml.minimise_constrained(
                lambda x, k: x @ x,
                jnp.zeros(2),
                args=(k,),
                eq=lambda x, k: jnp.stack([k * (x[0] - 1.0), x[0] - 1.5]),
            )
            assert int(res.status) == int(mml.Status.INFEASIBLE), (k, int(res.status))


def test_a_constraint_in_large_units_does_not_loosen_the_others():
    # One violation tolerance for all, atol + rtol |J|_inf |x| with |J| = 1e8 from the equality,
    # let the inequality x1 <= 1 end violated by 1.0 with SUCCESS; each constraint is judged
    # against its own gradient.
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x - 2.0) ** 2),
        jnp.zeros(2),
        eq=lambda x: jnp.array([1e8 * (x[0] - 1.0)]),
        ineq=lambda x: jnp.array([1.0 - x[1]]),
    )
    assert bool(res.success), int(res.status)
    tol = np.sqrt(np.finfo(np.float64).eps)
    assert float(res.max_violation) <= 2.0 * tol
    np.testing.assert_allclose(res.x, [1.0, 1.0], rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    "scale, k, x0, expected",
    [
        # F (|x - 2|^2) on x0 <= 1 (as k (1 - x0) >= 0) and x1 <= 1: the minimum (1, 1).
        # k = 1e6 ended at x0 = 1e-7 with MAX_ITER; F = 1e-6, k = 1e4 at x0 = 6e-5 with SUCCESS.
        (1.0, 1e6, (0.0, 0.0), (1.0, 1.0)),
        (1e-6, 1e4, (0.0, 0.0), (1.0, 1.0)),
        (1e-3, 1e8, (0.0, 0.0), (1.0, 1.0)),
    ],
)
def test_an_inequality_in_large_units_is_met_and_its_multiplier_is_in_its_units(
    scale, k, x0, expected
):
    res = mml.minimise_constrained(
        lambda x: scale * jnp.sum((x - 2.0) ** 2),
        jnp.array(x0),
        ineq=lambda x: jnp.array([k * (1.0 - x[0]), 1.0 - x[1]]),
    )
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.x, expected, rtol=0, atol=1e-7)
    # grad f + J_g^T mu = 0: -2 F - k mu_1 = 0 and -2 F - mu_2 = 0.
    np.testing.assert_allclose(res.multipliers_ineq, [-2 * scale / k, -2 * scale], rtol=1e-6)


@pytest.mark.parametrize("x0", [0.0, 1e-6, 1e-3])
def test_a_curved_inequality_in_large_units_from_where_it_is_flat(x0):
    # |x - 2|^2 in the disc 1e3 (1 - |x|^2) >= 0: the minimum (1, 1) / sqrt 2. The constraint's
    # gradient vanishes at 0 (no scaling at the start helps), and its slack's valley curves by
    # 2e3: the inner Newton ran to its cap in every outer step, and the solver to MAX_ITER.
    # (With the cheaper code this module compiles to, the start 1e-6 also ran the outer loop to
    # its cap: the gradient's rounding floor was estimated from one rounding of c.)
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x - 2.0) ** 2),
        jnp.full(2, x0),
        ineq=lambda x: jnp.array([1e3 * (1.0 - x @ x)]),
        method="augmented-lagrangian",
    )
    assert bool(res.success), int(res.status)
    np.testing.assert_allclose(res.x, np.full(2, np.sqrt(0.5)), rtol=1e-8)
    assert int(res.n_iter) < 30


def test_a_curved_inequality_in_large_units_in_float32_stops_at_its_rounding_floor():
    # In float32 the penalty's curvature rho |J|^2 (J ~ 1e3) times eps exceeds grad f itself:
    # no outer iteration can tell more. It ran 100 outer iterations to MAX_ITER; now it stops
    # at once with PRECISION_LIMIT (the polish cannot certify the point), never SUCCESS there.
    res = mml.minimise_constrained(
        lambda x: jnp.sum((x - 2.0) ** 2),
        jnp.zeros(2, jnp.float32),
        ineq=lambda x: jnp.array([1e3 * (1.0 - x @ x)]),
        method="augmented-lagrangian",
    )
    assert res.x.dtype == jnp.float32
    assert int(res.status) == int(mml.Status.PRECISION_LIMIT)
    assert int(res.n_iter) < 30


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bounds": (-5.0, 5.0)},
        {"eq": lambda x, a: jnp.array([x[0] - x[1] - 0.1 * a])},
        {"ineq": lambda x, a: jnp.array([2.0 - x[0]])},
    ],
    ids=["bounds", "eq", "ineq"],
)
def test_the_value_is_differentiable_where_the_minimiser_is_not_unique(kwargs):
    # f = (x0 + x1 - a)^2 + a^2 has a line of minimisers (f* = a^2 where the constraint leaves
    # the line feasible): the implicit dx is NaN there, and the value's derivative, taken
    # through x*, was NaN. By the envelope theorem it is the Lagrangian's derivative. (With
    # the equality the minimiser is unique: a control.)
    def value(a):
        f = lambda x, a: (x[0] + x[1] - a) ** 2 + a**2
        return mml.minimise_constrained(f, jnp.array([0.3, -0.2]), args=(a,), **kwargs).value

    np.testing.assert_allclose(jax.grad(value)(1.5), 3.0, rtol=1e-6)


@pytest.mark.slow  # (one of the suite's slowest: CI's time limit)
def test_the_value_derivative_by_the_envelope_theorem_moves_every_constant():
    # args in f, in eq and ineq, and in a traced bound (active: its multiplier enters).
    def solve(a):
        f = lambda x, a: (x[0] - a) ** 2 + a * x[1] ** 2 + x[2] ** 2
        return mml.minimise_constrained(
            f,
            jnp.array([0.5, 0.5, 0.5]),
            args=(a,),
            eq=lambda x, a: jnp.array([x[0] + x[1] - 1.0 - a]),
            ineq=lambda x, a: jnp.array([x[1] - 0.1 * a]),
            bounds=(jnp.array([-5.0, -5.0, a]), jnp.array([5.0, 5.0, 5.0])),
        )

    a = 0.7
    assert float(solve(a).multipliers_bounds[2]) < -1.0  # the bound x2 >= a is active
    h = 1e-5
    fd = (solve(a + h).value - solve(a - h).value) / (2 * h)
    np.testing.assert_allclose(jax.grad(lambda a: solve(a).value)(a), fd, rtol=1e-8)
    fd2 = (solve(a + 1e-4).value - 2 * solve(a).value + solve(a - 1e-4).value) / 1e-8
    np.testing.assert_allclose(jax.hessian(lambda a: solve(a).value)(a), fd2, rtol=1e-6)
    # The solution as well (the docstring said bounds get no derivative): x2 = a on its bound.
    dx = jax.jacfwd(lambda a: solve(a).x)(a)
    np.testing.assert_allclose(dx, (solve(a + h).x - solve(a - h).x) / (2 * h), atol=1e-8)
    assert float(dx[2]) == 1.0
