"""Derivatives: partial derivatives, the Jacobian and Hessian of a surface, and which way is uphill.

The surface  f(x, y) = x exp(-x^2 - y^2)  has the partial derivatives

    df/dx = (1 - 2x^2) exp(-x^2 - y^2),    df/dy = -2xy exp(-x^2 - y^2),

and its gradient  grad f = (df/dx, df/dy)  points uphill, across the contours, with length equal to
the steepest slope. The directional derivative along a unit vector u is  grad f . u = |grad f| cos(t):
largest along the gradient, zero along the contour. The Hessian (the matrix of second derivatives)
classifies the stationary points: both eigenvalues negative at a maximum, both positive at a minimum.
For a vector function, the Jacobian holds every partial derivative of every output; for the map from
polar to Cartesian coordinates its determinant is r. Along a path r(t), the multivariate chain rule
gives  d/dt f(r(t)) = sum_i df/dx_i dx_i/dt  (``mml.total_derivative``).

Run:  python examples/01_derivatives.py   [--quick]
"""

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("jacobian", "hessian", "hvp", "directional_derivative", "total_derivative")

GRID = pick(17, 11)  # arrows per side of the gradient field
N_ANGLES = pick(361, 91)


def f(p):
    x, y = p
    return x * jnp.exp(-(x**2) - y**2)


def grad_closed_form(p):
    x, y = p
    e = np.exp(-(x**2) - y**2)
    return np.array([(1 - 2 * x**2) * e, -2 * x * y * e])


def hessian_closed_form(p):
    x, y = p
    e = np.exp(-(x**2) - y**2)
    fxx = (4 * x**3 - 6 * x) * e
    fxy = (1 - 2 * x**2) * (-2 * y) * e
    fyy = (4 * x * y**2 - 2 * x) * e
    return np.array([[fxx, fxy], [fxy, fyy]])


# ---------------------------------------------------------------- partial derivatives and the gradient
p = jnp.array([0.3, 0.6])
grad_f = jax.jit(jax.grad(f))
g = np.asarray(grad_f(p))
print(f"at p = {np.asarray(p)}: f = {float(f(p)):.6f}")
print(f"  gradient by autodiff   : {g}")
print(f"  gradient, closed form  : {grad_closed_form(np.asarray(p))}")
err = np.max(np.abs(g - grad_closed_form(np.asarray(p))))
check("partial derivatives equal the closed form", err < 1e-14, f"{err:.1e}")

# The directional derivative along u(t) = (cos t, sin t): |grad f| cos(t - angle of grad f).
angles = np.linspace(-np.pi, np.pi, N_ANGLES)
units = jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
slopes = np.asarray(jax.jit(jax.vmap(lambda u: mml.directional_derivative(f, p, u)))(units))
uphill = angles[np.argmax(slopes)]
print(
    f"  steepest ascent along {np.degrees(uphill):.1f} deg with slope {slopes.max():.6f}; "
    f"the gradient points along {np.degrees(np.arctan2(g[1], g[0])):.1f} deg, |grad f| = "
    f"{np.linalg.norm(g):.6f}"
)
check(
    "directional derivative = grad f . u",
    np.allclose(slopes, np.asarray(units) @ g, rtol=0, atol=1e-14),
)
check(
    "the steepest slope is |grad f|, along the gradient",
    abs(slopes.max() - np.linalg.norm(g)) < 1e-3 * np.linalg.norm(g)
    and abs(uphill - np.arctan2(g[1], g[0])) <= angles[1] - angles[0],
)

# ---------------------------------------------------------------- the Hessian at the stationary points
hess_f = jax.jit(mml.hessian(f))
print("stationary points (grad f = 0) and their Hessians:")
for name, point in [("maximum", (2**-0.5, 0.0)), ("minimum", (-(2**-0.5), 0.0))]:
    q = jnp.array(point)
    h = np.asarray(hess_f(q))
    eig = np.linalg.eigvalsh(h)
    kind = "maximum" if np.all(eig < 0) else "minimum" if np.all(eig > 0) else "saddle"
    print(f"  {np.round(point, 4)}: f = {float(f(q)):+.6f}, Hessian eigenvalues {eig} -> {kind}")
    check(f"gradient vanishes at the {name}", np.max(np.abs(np.asarray(grad_f(q)))) < 1e-15)
    check(
        f"Hessian equals the closed form at the {name}",
        np.allclose(h, hessian_closed_form(point), atol=1e-14),
    )
    check(f"the eigenvalues say {name}", kind == name)

# A Hessian-vector product without forming the Hessian.
v = jnp.array([1.0, -2.0])
hv = np.asarray(mml.hvp(f, p, v))
check("hvp(f, p, v) = H(p) v", np.allclose(hv, np.asarray(hess_f(p)) @ np.asarray(v), atol=1e-14))


# ---------------------------------------------------------------- the Jacobian of a vector function
def polar_to_cartesian(q):
    r, t = q
    return jnp.array([r * jnp.cos(t), r * jnp.sin(t)])


q = jnp.array([2.0, 0.7])
jac_fwd = np.asarray(mml.jacobian(polar_to_cartesian, mode="fwd")(q))
jac_rev = np.asarray(mml.jacobian(polar_to_cartesian, mode="rev")(q))
jac_auto = np.asarray(mml.jacobian(polar_to_cartesian)(q))
print(f"Jacobian of (r, t) -> (r cos t, r sin t) at r = 2, t = 0.7:\n{jac_auto}")
print(f"  det J = {np.linalg.det(jac_auto):.12f} (= r)")
expected = np.array([[np.cos(0.7), -2 * np.sin(0.7)], [np.sin(0.7), 2 * np.cos(0.7)]])
check("Jacobian equals the closed form", np.allclose(jac_auto, expected, atol=1e-14))
check("forward and reverse mode agree", np.allclose(jac_fwd, jac_rev, atol=1e-15))
check("det J = r", abs(np.linalg.det(jac_auto) - 2.0) < 1e-13)


# ---------------------------------------------------------------- the chain rule along a path
def path(t):
    """A circle of radius 0.8 around the origin."""
    return 0.8 * jnp.array([jnp.cos(t), jnp.sin(t)])


ts = jnp.linspace(0.0, 2 * np.pi, pick(200, 50))
dfdt = np.asarray(jax.jit(jax.vmap(mml.total_derivative(f, path)))(ts))
by_hand = np.asarray(
    jax.jit(jax.vmap(lambda t: jnp.dot(jax.grad(f)(path(t)), jax.jacfwd(path)(t))))(ts)
)
f_on_path = np.asarray(jax.jit(jax.vmap(lambda t: f(path(t))))(ts))
check(
    "total derivative = sum of df/dx_i dx_i/dt",
    np.allclose(dfdt, by_hand, atol=1e-14),
    f"max |diff| {np.max(np.abs(dfdt - by_hand)):.1e}",
)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(1, 3, figsize=(14, 4.4), constrained_layout=True)
ax = axes[0]
xs = np.linspace(-2, 2, 200)
X, Y = np.meshgrid(xs, xs)
Z = X * np.exp(-(X**2) - Y**2)
ax.contourf(X, Y, Z, levels=20, cmap="RdBu_r")
ax.contour(X, Y, Z, levels=20, colors="k", linewidths=0.3)
xa = np.linspace(-2, 2, GRID)
XA, YA = np.meshgrid(xa, xa)
G = np.asarray(jax.jit(jax.vmap(grad_f))(jnp.stack([XA.ravel(), YA.ravel()], axis=1)))
ax.quiver(
    XA,
    YA,
    G[:, 0].reshape(XA.shape),
    G[:, 1].reshape(XA.shape),
    color="0.15",
    width=0.004,
    scale=12,
)
ax.quiver([p[0]], [p[1]], [g[0]], [g[1]], color="gold", width=0.008, scale=4, zorder=5)
ax.plot([p[0]], [p[1]], "o", color="gold", mec="k", label="p, with grad f(p)")
ax.plot([2**-0.5], [0], "w^", ms=9, mec="k", label="maximum (H negative definite)")
ax.plot([-(2**-0.5)], [0], "wv", ms=9, mec="k", label="minimum (H positive definite)")
circle = np.asarray(jax.vmap(path)(ts))
ax.plot(circle[:, 0], circle[:, 1], "g-", lw=1.5, label="path r(t)")
ax.set(
    xlabel="x", ylabel="y", title="f = x exp(-x²-y²): the gradient points uphill", aspect="equal"
)
ax.legend(fontsize=7, loc="lower left", framealpha=0.9)

ax = axes[1]
ax.plot(np.degrees(angles), slopes, label="directional derivative along u")
ax.axhline(np.linalg.norm(g), color="C3", ls="--", label="|grad f|")
ax.axvline(np.degrees(np.arctan2(g[1], g[0])), color="C3", ls=":", label="direction of grad f")
ax.axhline(0, color="0.5", lw=0.5)
ax.set(xlabel="direction of u (degrees)", ylabel="slope", title=f"slopes at p = {np.asarray(p)}")
ax.legend(fontsize=8)

ax = axes[2]
ax.plot(ts, f_on_path, label="f(r(t))")
ax.plot(ts, dfdt, label="d/dt f(r(t)), total derivative")
ax.plot(ts[::5], by_hand[::5], "k.", ms=4, label="sum of df/dx_i dx_i/dt")
ax.axhline(0, color="0.5", lw=0.5)
ax.set(xlabel="t", title="the chain rule along the path")
ax.legend(fontsize=8)
_common.savefig(fig, "01_derivatives.png")
_common.finish()
