"""Newton-Raphson: iterations drawn as tangents, a classic trap, and the basins of z^3 - 1.

Newton's method replaces f by its tangent (its first-order Taylor model) at the current guess and
jumps to where the tangent crosses zero:

    x_{k+1} = x_k - f(x_k) / f'(x_k)        (in n dimensions: x_{k+1} = x_k - J(x_k)^{-1} F(x_k)).

Near a simple root the number of correct digits doubles each step. Far from one, the tangent can
throw the iterate away: from x0 = 2, plain Newton on arctan(x) diverges. ``mml.newton_raphson``
keeps the step only if it reduces |f| (else it backtracks), so it converges from there.

Which root a start reaches is a basin of attraction. For z^3 - 1 in the complex plane, written as the
real system F(x, y) = (x^3 - 3xy^2 - 1, 3x^2 y - y^3), the three basins meet in a fractal. We compute
them as a million batched solves: ``jax.vmap`` over one million starting points in one call.

Run:  python examples/04_newton_raphson.py   [--quick]
"""

import time

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("newton_raphson")

SIDE = pick(1000, 160)  # SIDE^2 starting points: a million in full mode
MAX_ITER = 60


# ---------------------------------------------------------------- 1-D: tangents
def cubic(x):
    return x**3 - 2.0 * x - 5.0  # Newton's own example (1669); root 2.0945514815...


def plain_newton(f, x0, steps):
    """Textbook Newton iterates, for drawing: x <- x - f(x) / f'(x)."""
    df = jax.grad(f)
    xs = [float(x0)]
    for _ in range(steps):
        x = xs[-1]
        xs.append(x - float(f(x)) / float(df(x)))
    return np.array(xs)


x0 = 3.5
iterates = plain_newton(cubic, x0, 6)
res = mml.newton_raphson(cubic, jnp.asarray(x0))
root = 2.0945514815423265
print("Newton on x^3 - 2x - 5 from x0 = 3.5:")
for k, xk in enumerate(iterates):
    print(f"  x_{k} = {xk:.16f}   |x_k - root| = {abs(xk - root):.1e}")
print(
    f"mml.newton_raphson: x = {float(res.x):.16f} in {int(res.n_iter)} steps, "
    f"{mml.Status(int(res.status)).name}"
)
check("mml.newton_raphson finds the root", bool(res.success) and abs(float(res.x) - root) < 1e-12)
errs = np.abs(iterates - root)
check(
    "quadratic convergence: e_{k+1} ~ e_k^2",
    errs[4] < 10 * errs[3] ** 2 and errs[3] < 10 * errs[2] ** 2,
)

# ---------------------------------------------------------------- the arctan trap
trap = plain_newton(jnp.arctan, 2.0, 4)
safe = mml.newton_raphson(jnp.arctan, jnp.asarray(2.0))
print(f"plain Newton on arctan from 2: {np.array2string(trap, precision=3)} (diverges)")
print(
    f"mml.newton_raphson on arctan from 2: x = {float(safe.x):.2e} in {int(safe.n_iter)} steps, "
    f"{mml.Status(int(safe.status)).name}"
)
check("plain Newton diverges on arctan from 2", abs(trap[-1]) > 100)
check("the safeguarded Newton converges to 0", bool(safe.success) and abs(float(safe.x)) < 1e-10)


# ---------------------------------------------------------------- basins of z^3 - 1
def z3_minus_1(v):
    x, y = v
    return jnp.array([x**3 - 3 * x * y**2 - 1.0, 3 * x**2 * y - y**3])


roots = np.array([[1.0, 0.0], [-0.5, np.sqrt(3) / 2], [-0.5, -np.sqrt(3) / 2]])
solve_all = jax.jit(jax.vmap(lambda v: mml.newton_raphson(z3_minus_1, v, max_iter=MAX_ITER)))

side = np.linspace(-1.5, 1.5, SIDE)  # an even SIDE keeps the singular start z = 0 off the grid
X, Y = np.meshgrid(side, side)
starts = jnp.asarray(np.stack([X.ravel(), Y.ravel()], axis=1))
t = time.perf_counter()
sol = jax.block_until_ready(solve_all(starts))
t_first = time.perf_counter() - t
found = np.asarray(sol.x)
ok = np.asarray(sol.success)
n_iter = np.asarray(sol.n_iter)
dist = np.linalg.norm(found[:, None, :] - roots[None], axis=2)
which = np.where(ok & (dist.min(axis=1) < 1e-10), dist.argmin(axis=1), -1)

print(
    f"basins of z^3 - 1: {starts.shape[0]:,} starts in one call: {t_first:.2f} s, compilation included"
)
print(f"  converged: {ok.mean():.4%}; iterations mean {n_iter.mean():.1f}, max {n_iter.max()}")
print(f"  status counts: { {k.name: v for k, v in mml.summarise_status(sol.status).items()} }")
in_disc = (X.ravel() ** 2 + Y.ravel() ** 2) <= 1.5**2
shares = [np.mean(which[in_disc] == r) for r in range(3)]
print(f"  share of the disc |z| <= 1.5 in each basin: {np.round(shares, 4)}")
check("at least 99% of the starts converge to a root", np.mean(which >= 0) > 0.99)
check("the three basins are equal by symmetry (within 1%)", max(shares) - min(shares) < 0.01)
near = np.linalg.norm(np.asarray(starts)[:, None, :] - roots[None], axis=2) < 0.3
check(
    "every start near a root converges to that root",
    all(np.all(which[near[:, r]] == r) for r in range(3)),
)


# The textbook picture: plain (undamped) Newton in complex arithmetic, 40 fixed steps.
@jax.jit
def plain_basins(z):
    def step(z, _):
        return z - (z**3 - 1) / (3 * z**2), None

    z, _ = jax.lax.scan(step, z, None, length=40)
    return z


z_end = np.asarray(plain_basins(jnp.asarray(X.ravel() + 1j * Y.ravel())))
which_plain = np.argmin(np.abs(z_end[:, None] - (roots[:, 0] + 1j * roots[:, 1])[None]), axis=1)
which_plain = np.where(np.isfinite(z_end), which_plain, -1)
agree = np.mean(which_plain == which)
print(f"  plain Newton sends {agree:.1%} of the starts to the same root as the safeguarded one")

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(2, 2, figsize=(11, 10), constrained_layout=True)
ax = axes[0, 0]
xs = np.linspace(1.5, 3.7, 200)
ax.plot(xs, np.asarray(cubic(xs)), "k", lw=2, label="f(x) = x³ - 2x - 5")
ax.axhline(0, color="0.5", lw=0.8)
for k in range(4):
    a, b = iterates[k], iterates[k + 1]
    ax.plot([a, a], [0, float(cubic(a))], "C3:", lw=1)
    ax.plot([a, b], [float(cubic(a)), 0], "C3-", lw=1.2)
    ax.annotate(
        f"x{k}", (a, 0), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8
    )
ax.set(xlabel="x", title="Newton's tangents: x ← x - f(x)/f'(x)")
ax.legend(fontsize=8)

ax = axes[0, 1]
xs = np.linspace(-6, 16, 400)
ax.plot(xs, np.arctan(xs), "k", lw=2, label="arctan x")
for k in range(2):
    a, b = trap[k], trap[k + 1]
    ax.plot([a, a], [0, np.arctan(a)], "C3:", lw=1)
    ax.plot([a, b], [np.arctan(a), 0], "C3-", lw=1)
    ax.annotate(
        f"x{k}", (a, 0), textcoords="offset points", xytext=(0, -12), ha="center", fontsize=8
    )
ax.annotate(
    f"x2 = {trap[2]:.1f}, x3 = {trap[3]:.0f}, ...",
    (trap[2], 0),
    textcoords="offset points",
    xytext=(-110, 14),
    fontsize=8,
    color="C3",
)
ax.plot(trap[:3], np.zeros(3), "C3o", ms=4, label="plain Newton from 2: diverges")
ax.plot(
    [float(safe.x)], [0], "C2*", ms=14, label=f"mml.newton_raphson: 0 in {int(safe.n_iter)} steps"
)
ax.axhline(0, color="0.5", lw=0.8)
ax.set(xlabel="x", xlim=(-6, 16), title="the trap, and the safeguard on |f|")
ax.legend(fontsize=8, loc="upper left")

cmap = ListedColormap(["black", "#d62728", "#1f77b4", "#2ca02c"])
for ax, labels, title in [
    (axes[1, 0], which_plain, "plain Newton (the textbook fractal)"),
    (axes[1, 1], which, f"mml.newton_raphson: {SIDE * SIDE:,} solves in one call"),
]:
    shade = 1.0 - 0.6 * np.clip(n_iter / 25, 0, 1) if labels is which else 1.0
    rgb = cmap((labels + 1) / 3)[:, :3] * np.reshape(shade, (-1, 1))
    ax.imshow(rgb.reshape(SIDE, SIDE, 3), origin="lower", extent=(-1.5, 1.5, -1.5, 1.5))
    ax.plot(roots[:, 0], roots[:, 1], "w*", ms=10)
    ax.set(xlabel="Re z", ylabel="Im z", title="basins of z³ - 1: " + title)
axes[1, 1].text(
    -1.45,
    -1.45,
    "darker: more steps; the safeguard on |f|\nmakes the basins larger and tamer",
    color="w",
    fontsize=8,
    va="bottom",
)
_common.savefig(fig, "04_newton_raphson.png")
_common.finish()
