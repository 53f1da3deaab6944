"""Lagrange multipliers: extremes along a constraint, where the gradients are parallel.

To find the extremes of f(x, y) on the curve h(x, y) = 0, walk along the curve: f stops changing
where its gradient has no component along the curve, i.e. where grad f is parallel to grad h,

    grad f = lambda grad h,    h = 0,

three equations for (x, y, lambda): the stationary points of the Lagrangian L = f - lambda h. For
f = x^2 y on the unit circle there are six, and the bordered Hessian tells the maxima from the minima
(``mml.lagrange_stationary_points`` solves from many starts at once and classifies them).
``mml.minimise_constrained`` goes straight to one extreme, Newton's method on the same equations.
Its multipliers follow scipy's trust-constr (grad f + lambda h' = 0), the opposite sign of the
course's lambda; -lambda is the rate at which the best value changes as the constraint moves.

With an inequality g(x) >= 0 the multiplier is zero when the constraint is not active (the
unconstrained minimum is feasible) and has a fixed sign when it is (the solution is pushed against
the boundary): complementary slackness, mu g = 0.

Run:  python examples/06_lagrange_multipliers.py   [--quick]
"""

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("minimise_constrained", "lagrange_stationary_points")

N_STARTS = pick(256, 64)


def f(p, r=1.0):
    return p[0] ** 2 * p[1]


def circle(p, r=1.0):
    return jnp.array([p[0] ** 2 + p[1] ** 2 - r**2])


# ---------------------------------------------------------------- all stationary points
starts = jnp.asarray(np.random.default_rng(6).normal(size=(N_STARTS, 2)))
pts = mml.lagrange_stationary_points(f, circle, starts, rtol=1e-13, atol=1e-13)
xs, kinds = np.asarray(pts.x), list(pts.kind)
course_lambda = -np.asarray(pts.multipliers)[:, 0]  # grad f = lambda grad h
print(
    f"stationary points of x^2 y on the unit circle ({pts.n_converged} of {N_STARTS} starts converged):"
)
print("      x          y        f(x, y)    lambda    kind")
for p, v, lam, kind in zip(xs, np.asarray(pts.value), course_lambda, kinds, strict=True):
    print(f"  {p[0]:+.6f}  {p[1]:+.6f}  {v:+.6f}  {lam:+.6f}  {kind}")

extreme = 2 / (3 * np.sqrt(3))
expected = sorted(
    [(-extreme, "minimum")] * 2 + [(0.0, "minimum"), (0.0, "maximum")] + [(extreme, "maximum")] * 2
)
found = sorted(zip(np.round(np.asarray(pts.value), 9) + 0.0, kinds, strict=True))
check(
    "six stationary points: 3 minima and 3 maxima, at f = -2/(3 sqrt 3), 0, 2/(3 sqrt 3)",
    len(found) == 6
    and all(abs(a[0] - b[0]) < 1e-9 and a[1] == b[1] for a, b in zip(found, expected, strict=True)),
)
grad_f = np.asarray(jax.vmap(jax.grad(f))(jnp.asarray(xs)))
grad_h = 2 * xs
cross = grad_f[:, 0] * grad_h[:, 1] - grad_f[:, 1] * grad_h[:, 0]
check(
    "grad f is parallel to grad h at each of them",
    np.max(np.abs(cross)) < 1e-10,
    f"max |grad f x grad h| = {np.max(np.abs(cross)):.1e}",
)
# grad f = (2xy, x^2) = lambda (2x, 2y): lambda = y where x != 0, and 0 at (0, +-1) where grad f = 0.
lambda_closed = np.where(np.abs(xs[:, 0]) > 1e-6, xs[:, 1], 0.0)
check("lambda equals its closed form", np.allclose(course_lambda, lambda_closed, atol=1e-10))


# ---------------------------------------------------------------- straight to the extremes
# jit-compile each solver call once (radius r as an argument, so a new radius does not recompile).
@jax.jit
def extreme_on_circle(x0, r):
    return (
        mml.minimise_constrained(f, x0, args=(r,), eq=circle, maximise=True),
        mml.minimise_constrained(f, x0 * jnp.array([1.0, -1.0]), args=(r,), eq=circle),
    )


x0 = jnp.array([0.5, 0.5])
best_max, best_min = extreme_on_circle(x0, 1.0)
for name, res in (("maximum", best_max), ("minimum", best_min)):
    print(
        f"minimise_constrained ({name}): x = {np.round(np.asarray(res.x), 8)}, f = {float(res.value):+.10f}, "
        f"multiplier {float(res.multipliers_eq[0]):+.6f}, {int(res.n_iter)} steps, "
        f"{mml.Status(int(res.status)).name}"
    )
check(
    "the maximum is 2/(3 sqrt 3) at (sqrt(2/3), 1/sqrt 3)",
    bool(best_max.success)
    and abs(float(best_max.value) - extreme) < 1e-12
    and np.allclose(np.abs(np.asarray(best_max.x)), [np.sqrt(2 / 3), 1 / np.sqrt(3)], atol=1e-10),
)
check(
    "the minimum is -2/(3 sqrt 3)",
    bool(best_min.success) and abs(float(best_min.value) + extreme) < 1e-12,
)

# The multiplier is a sensitivity: on a circle of radius r the maximum is r^3 2/(3 sqrt 3), so
# d max / dr = 2 r^2 / sqrt 3; by the envelope theorem it is -multiplier x dh/dr = lambda 2r.
d_dr = jax.jit(jax.grad(lambda r: extreme_on_circle(x0, r)[0].value))(1.0)
print(
    f"d(max)/dr by implicit differentiation: {float(d_dr):.10f} (closed form 2/sqrt 3 = {2 / np.sqrt(3):.10f}, "
    f"envelope theorem -2 r multiplier = {-2 * float(best_max.multipliers_eq[0]):.10f})"
)
check(
    "the derivative of the optimum with respect to the constraint",
    abs(float(d_dr) - 2 / np.sqrt(3)) < 1e-8,
)


# ---------------------------------------------------------------- an inequality
def dist2(p, c):
    return jnp.sum((p - c) ** 2)


def inside_disc(p, c):
    return jnp.array([1.0 - p[0] ** 2 - p[1] ** 2])  # g >= 0: inside the unit disc


targets = {"outside": jnp.array([2.0, 1.0]), "inside": jnp.array([0.3, 0.2])}
closest = jax.jit(
    lambda c: mml.minimise_constrained(dist2, jnp.zeros(2), args=(c,), ineq=inside_disc)
)
ineq_res = {k: closest(c) for k, c in targets.items()}
for k, res in ineq_res.items():
    print(
        f"closest point of the unit disc to {np.asarray(targets[k])} ({k}): x = {np.round(np.asarray(res.x), 8)}, "
        f"mu = {float(res.multipliers_ineq[0]):+.8f}, g(x) = {float(inside_disc(res.x, 0)[0]):+.1e}, "
        f"{mml.Status(int(res.status)).name}"
    )
out, inn = ineq_res["outside"], ineq_res["inside"]
check(
    "outside: the solution is the projection (2, 1)/sqrt 5 on the circle",
    bool(out.success)
    and np.allclose(np.asarray(out.x), np.array([2.0, 1.0]) / np.sqrt(5), atol=1e-7),
)
check(
    "outside: active constraint, mu = 1 - sqrt 5 (trust-constr sign: <= 0)",
    abs(float(out.multipliers_ineq[0]) - (1 - np.sqrt(5))) < 1e-6,
)
check(
    "inside: inactive constraint, the unconstrained minimum, mu = 0",
    bool(inn.success)
    and np.allclose(np.asarray(inn.x), [0.3, 0.2], atol=1e-7)
    and abs(float(inn.multipliers_ineq[0])) < 1e-8,
)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(1, 2, figsize=(12, 5.6), constrained_layout=True)
t = np.linspace(0, 2 * np.pi, 300)
ax = axes[0]
X, Y = np.meshgrid(np.linspace(-1.5, 1.5, 200), np.linspace(-1.5, 1.5, 200))
cs = ax.contour(X, Y, X**2 * Y, levels=np.linspace(-1, 1, 21), cmap="RdBu_r", linewidths=0.8)
ax.contour(X, Y, X**2 * Y, levels=[-extreme, extreme], colors="k", linewidths=1.2, linestyles="--")
ax.plot(np.cos(t), np.sin(t), "k", lw=2, label="constraint x² + y² = 1")
style = {"maximum": ("^", "C3"), "minimum": ("v", "C0")}
for kind in ("maximum", "minimum"):
    sel = [i for i, k in enumerate(kinds) if k == kind]
    ax.plot(
        xs[sel, 0], xs[sel, 1], style[kind][0], color=style[kind][1], ms=11, mec="k", label=kind
    )
for i in range(len(xs)):
    gf, gh = (
        grad_f[i] / np.linalg.norm(grad_h[i]) * 0.6,
        grad_h[i] / np.linalg.norm(grad_h[i]) * 0.4,
    )
    ax.arrow(*xs[i], *gh, color="k", width=0.008, length_includes_head=True)
    if np.linalg.norm(gf) > 1e-3:
        ax.arrow(*xs[i], *gf, color="C2", width=0.012, length_includes_head=True, alpha=0.8)
ax.plot([], [], "k-", label="∇h")
ax.plot([], [], "C2-", lw=3, label="∇f = λ∇h")
ax.set(
    xlim=(-1.6, 1.6),
    ylim=(-1.6, 1.6),
    aspect="equal",
    xlabel="x",
    ylabel="y",
    title="f = x²y on the unit circle: ∇f ∥ ∇h at the extremes",
)
ax.legend(fontsize=8, loc="lower left")

ax = axes[1]
X, Y = np.meshgrid(np.linspace(-1.5, 2.5, 200), np.linspace(-1.5, 2.0, 200))
ax.fill(np.cos(t), np.sin(t), color="0.9", label="feasible: x² + y² ≤ 1")
for k, res, col in (("outside", out, "C3"), ("inside", inn, "C0")):
    c = np.asarray(targets[k])
    ax.contour(
        X,
        Y,
        (X - c[0]) ** 2 + (Y - c[1]) ** 2,
        levels=np.linspace(0.05, 4, 10) ** 2,
        colors=col,
        linewidths=0.6,
        alpha=0.6,
    )
    ax.plot(*c, "x", color=col, ms=10, mew=2)
    ax.plot(
        *np.asarray(res.x),
        "o",
        color=col,
        ms=9,
        mec="k",
        label=f"{k}: μ = {round(float(res.multipliers_ineq[0]), 3) + 0.0:+.3f}",
    )
xo = np.asarray(out.x)
ax.arrow(
    *xo,
    *((xo - np.asarray(targets["outside"])) * 0.55),
    color="C2",
    width=0.035,
    length_includes_head=True,
)
ax.arrow(*xo, *(-xo * 0.35), color="k", width=0.008, length_includes_head=True)
ax.plot([], [], "C2-", lw=3, label="∇f = -μ ∇g at the active solution")
ax.plot([], [], "k-", label="∇g (g = 1 - x² - y²)")
ax.set(
    aspect="equal",
    xlim=(-1.5, 2.5),
    ylim=(-1.5, 2.0),
    xlabel="x",
    ylabel="y",
    title="closest point of the disc: active (red) and inactive (blue)",
)
ax.legend(fontsize=8, loc="upper left")
_common.savefig(fig, "06_lagrange_multipliers.png")
_common.finish()
