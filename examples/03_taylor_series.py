"""Taylor series: sin, exp and a 2-D function approximated at orders 0..6.

The Taylor polynomial of order n of f about x0 is

    T_n(x) = sum_{k=0}^{n} f^(k)(x0) / k! (x - x0)^k,

and its error shrinks like |x - x0|^(n+1) as x approaches x0 (Taylor's theorem: the Lagrange
remainder is f^(n+1)(xi) / (n+1)! (x - x0)^(n+1)). On a log-log plot of the error against the
distance, order n is a straight line of slope n + 1.

In two dimensions the same series, read along a ray x0 + t u, is the one-dimensional series of
g(t) = f(x0 + t u), whose coefficients are the directional derivatives of f. Its first two orders are
the linear model  f(x0) + grad f . dx  (the tangent plane, ``mml.linearise``) and the quadratic model
f(x0) + grad f . dx + 1/2 dx^T H dx  (``mml.quadratic_model``), the model behind Newton's method.

Run:  python examples/03_taylor_series.py   [--quick]
"""

import math

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require(
    "taylor_coefficients", "taylor_polynomial", "linearise", "quadratic_model", "taylor_error"
)

ORDERS = range(7)
N_RAYS = pick(48, 16)
GRID = pick(81, 31)

# ---------------------------------------------------------------- coefficients of sin and exp
coefficients = jax.jit(mml.taylor_coefficients, static_argnums=(0, 2))  # compiled: one dispatch
c_sin = np.asarray(coefficients(jnp.sin, 0.0, 6))
c_exp = np.asarray(coefficients(jnp.exp, 0.0, 6))


@jax.jit
def all_orders(x_at, x):
    """T_0(x) .. T_6(x) of sin and of exp about x_at (one compiled call for all 14 polynomials)."""
    return {
        name: jnp.stack([mml.taylor_polynomial(fn, x_at, n)(x) for n in ORDERS])
        for name, fn in (("sin", jnp.sin), ("exp", jnp.exp))
    }


true_sin = np.array([0, 1, 0, -1 / 6, 0, 1 / 120, 0])
true_exp = np.array([1 / math.factorial(k) for k in ORDERS])
print("k    sin: f^(k)(0)/k!      exp: f^(k)(0)/k!")
for k in ORDERS:
    print(f"{k}    {c_sin[k]:+.15f}    {c_exp[k]:.15f}")
check("coefficients of sin = 0, 1, 0, -1/6, ...", np.allclose(c_sin, true_sin, rtol=0, atol=1e-14))
check("coefficients of exp = 1/k!", np.allclose(c_exp, true_exp, rtol=1e-13, atol=0))

# ---------------------------------------------------------------- error against the distance
# Distances from 0.05 to 0.5: far enough that order 6 (error ~ h^7 / 7!) stays above rounding.
h = np.geomspace(0.05, 0.5, 12)
x0 = 0.5
errors_exp = {}
slopes_exp = {}
T_exp = np.asarray(all_orders(x0, jnp.asarray(x0 + h))["exp"])
for n in ORDERS:
    errors_exp[n] = np.abs(np.exp(x0 + h) - T_exp[n])
    slopes_exp[n] = np.polyfit(np.log(h), np.log(errors_exp[n]), 1)[0]
print("exp about 0.5: log-log slope of the error against the distance, order 0..6:")
print("  " + "  ".join(f"{slopes_exp[n]:.2f}" for n in ORDERS))
check(
    "the error of order n shrinks like distance^(n+1)",
    all(abs(slopes_exp[n] - (n + 1)) < 0.15 for n in ORDERS),
)


# ---------------------------------------------------------------- a 2-D function
def f2(p):
    x, y = p
    return jnp.sin(x) * jnp.cos(y) + 0.25 * x * y


p0 = jnp.array([0.4, -0.3])


def series_along(u):
    """Coefficients of g(t) = f2(p0 + t u), i.e. the multivariate Taylor series read along u."""
    return mml.taylor_coefficients(lambda t: f2(p0 + t * u), 0.0, 6)


@jax.jit
def taylor_2d(points):
    """T_0 .. T_6 of f2 about p0 at each point (the series along the ray through the point)."""

    def one(p):
        d = p - p0
        t = jnp.linalg.norm(d)
        u = jnp.where(t > 0, d / jnp.where(t > 0, t, 1.0), jnp.array([1.0, 0.0]))
        terms = series_along(u) * t ** jnp.arange(7)
        return jnp.cumsum(terms)  # T_0, T_1, ..., T_6

    return jax.vmap(one)(points)


lin_fn = mml.linearise(f2, p0)  # callable models (they also hold the value, Jacobian, Hessian)
quad_fn = mml.quadratic_model(f2, p0)

angles = np.linspace(0, 2 * np.pi, N_RAYS, endpoint=False)
units = np.stack([np.cos(angles), np.sin(angles)], axis=1)
dist = np.geomspace(0.05, 0.6, 10)
pts = (np.asarray(p0) + dist[:, None, None] * units[None]).reshape(-1, 2)
T = np.asarray(taylor_2d(jnp.asarray(pts))).reshape(len(dist), N_RAYS, 7)
exact = np.asarray(jax.jit(jax.vmap(f2))(jnp.asarray(pts))).reshape(len(dist), N_RAYS)
err2d = np.max(np.abs(T - exact[..., None]), axis=1)  # worst direction, per distance and order
slopes_2d = [np.polyfit(np.log(dist), np.log(err2d[:, n]), 1)[0] for n in ORDERS]
print("2-D f = sin x cos y + xy/4 about (0.4, -0.3): slopes, order 0..6:")
print("  " + "  ".join(f"{s:.2f}" for s in slopes_2d))
check(
    "in 2-D too, order n errs like distance^(n+1)",
    all(abs(slopes_2d[n] - (n + 1)) < 0.25 for n in ORDERS),
)

lin_vals = np.asarray(jax.jit(jax.vmap(lin_fn))(jnp.asarray(pts)))
quad_vals = np.asarray(jax.jit(jax.vmap(quad_fn))(jnp.asarray(pts)))
check(
    "the linear model is the order-1 series",
    np.allclose(lin_vals, T.reshape(-1, 7)[:, 1], rtol=0, atol=1e-12),
)
check(
    "the quadratic model is the order-2 series",
    np.allclose(quad_vals, T.reshape(-1, 7)[:, 2], rtol=0, atol=1e-12),
)

# Taylor's theorem bounds the error over a neighbourhood: |R_3| <= r^4 / 4! max |f^(4)| = e r^4 / 24.
err = jax.jit(mml.taylor_error, static_argnums=(0, 2))(jnp.exp, x0, 3, 0.5)
grid_r = np.linspace(x0 - 0.5, x0 + 0.5, 2001)
actual = np.max(np.abs(np.exp(grid_r) - np.asarray(all_orders(x0, jnp.asarray(grid_r))["exp"][3])))
bound = np.exp(x0 + 0.5) * 0.5**4 / 24
print(
    f"order 3 of exp about 0.5 within radius 0.5: largest error {float(err.max_error):.4e} "
    f"(dense grid: {actual:.4e}); Lagrange bound {float(err.lagrange_bound):.4e} "
    f"(closed form e r^4 / 4! = {bound:.4e})"
)
check("taylor_error finds the largest error", abs(float(err.max_error) - actual) < 1e-3 * actual)
check(
    "the Lagrange bound holds and is the closed form",
    abs(float(err.lagrange_bound) - bound) < 1e-3 * bound and float(err.lagrange_bound) >= actual,
)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(2, 3, figsize=(14, 8.4), constrained_layout=True)
colors = plt.cm.viridis(np.linspace(0, 0.9, 7))
for ax, name, lim, (lo, hi) in [
    (axes[0, 0], "sin", (-1.6, 1.6), (-2 * np.pi, 2 * np.pi)),
    (axes[0, 1], "exp", (-0.5, 8), (-3, 2)),
]:
    xs = np.linspace(lo, hi, 300)
    ax.plot(xs, getattr(np, name)(xs), "k", lw=2.5, label=f"{name} x")
    T_plot = np.asarray(all_orders(0.0, jnp.asarray(xs))[name])
    for n in ORDERS:
        ax.plot(xs, T_plot[n], color=colors[n], lw=1, label=f"order {n}")
    ax.set(ylim=lim, xlabel="x", title=f"Taylor polynomials of {name} x about 0")
    ax.legend(fontsize=7, ncol=2)

ax = axes[0, 2]
for n in ORDERS:
    ax.loglog(
        h, errors_exp[n], "o-", ms=3, color=colors[n], label=f"order {n}: slope {slopes_exp[n]:.2f}"
    )
ax.xaxis.set_minor_formatter(plt.NullFormatter())
ax.set(
    xlabel="distance |x - x0|", ylabel="|exp x - T_n(x)|", title="exp about 0.5: error vs distance"
)
ax.legend(fontsize=7)

ax = axes[1, 0]
for n in ORDERS:
    ax.loglog(
        dist, err2d[:, n], "o-", ms=3, color=colors[n], label=f"order {n}: slope {slopes_2d[n]:.2f}"
    )
ax.xaxis.set_minor_formatter(plt.NullFormatter())
ax.set(
    xlabel="distance |x - x0|", ylabel="max error over directions", title="2-D: error vs distance"
)
ax.legend(fontsize=7)

xs = np.linspace(-0.6, 1.4, GRID)
ys = np.linspace(-1.3, 0.7, GRID)
X, Y = np.meshgrid(xs, ys)
grid = jnp.asarray(np.stack([X.ravel(), Y.ravel()], axis=1))
Z = np.asarray(jax.jit(jax.vmap(f2))(grid)).reshape(X.shape)
ZL = np.asarray(jax.jit(jax.vmap(lin_fn))(grid)).reshape(X.shape)
ZQ = np.asarray(jax.jit(jax.vmap(quad_fn))(grid)).reshape(X.shape)
levels = float(f2(p0)) + np.linspace(-0.3, 0.3, 7)  # the middle one passes through p0
ax = axes[1, 1]
ax.contour(X, Y, Z, levels=levels, colors="k", linewidths=1.2)
ax.contour(X, Y, ZL, levels=levels, colors="C0", linewidths=0.8, linestyles="--")
ax.contour(X, Y, ZQ, levels=levels, colors="C3", linewidths=0.8, linestyles=":")
ax.plot(*np.asarray(p0), "ko")
ax.plot([], [], "k", label="f = sin x cos y + xy/4")
ax.plot([], [], "C0--", label="linear model (tangent plane)")
ax.plot([], [], "C3:", label="quadratic model")
ax.set(xlabel="x", ylabel="y", aspect="equal", title="contours of f and its models about p0")
ax.legend(fontsize=7, loc="lower left")

ax = axes[1, 2]
T_grid = np.asarray(taylor_2d(grid)).reshape(X.shape + (7,))
err_q = np.log10(np.abs(T_grid[..., 2] - Z) + 1e-17)
err_6 = np.log10(np.abs(T_grid[..., 6] - Z) + 1e-17)
im = ax.contourf(X, Y, err_6, levels=np.arange(-16, 1, 1), cmap="magma")
ax.contour(X, Y, err_q, levels=[-6, -4, -2], colors="w", linewidths=0.8)
ax.plot(*np.asarray(p0), "wo")
fig.colorbar(im, ax=ax, label="log10 |f - T_6|")
ax.set(
    xlabel="x",
    ylabel="y",
    aspect="equal",
    title="order-6 error (white: order 2 at 1e-6, 1e-4, 1e-2)",
)
_common.savefig(fig, "03_taylor_series.png")
_common.finish()
