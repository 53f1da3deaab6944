"""Nonlinear fitting: a Gaussian fitted to a histogram of heights, by gradient descent and by LM.

The model  n(x) = A exp(-(x - mu)^2 / (2 s^2))  is fitted to the counts of a histogram, each with
its Poisson uncertainty sqrt(n). The course's method is gradient descent on chi-squared,

    p <- p - eta grad chi^2(p),   grad chi^2 = -2 J^T W (y - n(x; p)),

which is at the mercy of the units: with A in people, chi^2 is ~20,000 times more curved along mu
and s than along A, a stable step is tiny in A, and the descent stalls. Measure A in hundreds of
people instead and the bowl is nearly round: the same method converges in a few hundred steps.

Levenberg-Marquardt (the default of ``mml.curve_fit``, as of scipy's) needs no such care: each step
solves the linearised least-squares problem (J^T W J + lambda D) dp = J^T W r, with the scaling D
built in, blending Gauss-Newton (lambda -> 0) and gradient descent (large lambda). It reaches the
minimum in about ten steps. We draw all three paths through parameter space.

Run:  python examples/08_nonlinear_fitting.py   [--quick]
"""

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("curve_fit", "chi_squared", "gradient_descent")

N_PEOPLE = 5000
RAW_STEPS = pick(20000, 3000)
SCALED_STEPS = 1000
TRUE_MU, TRUE_S = 171.0, 7.5

rng = np.random.default_rng(42)
heights = rng.normal(TRUE_MU, TRUE_S, N_PEOPLE)
edges = np.arange(145.0, 197.5, 2.0)
counts, _ = np.histogram(heights, edges)
x = 0.5 * (edges[1:] + edges[:-1])
sigma = np.sqrt(np.maximum(counts, 1.0))  # Poisson errors (at least 1 for empty bins)
x, y, sigma = jnp.asarray(x), jnp.asarray(counts, float), jnp.asarray(sigma)
true_A = N_PEOPLE * 2.0 / (np.sqrt(2 * np.pi) * TRUE_S)  # bin width 2
truth = np.array([true_A, TRUE_MU, TRUE_S])


def gaussian(x, p):
    A, mu, s = p[0], p[1], p[2]
    return A * jnp.exp(-0.5 * ((x - mu) / s) ** 2)


def chi2(p):
    return mml.chi_squared(gaussian, p, x, y, sigma)


UNITS = jnp.array([100.0, 1.0, 1.0])  # A in hundreds of people, mu and s in cm


def chi2_scaled(q):
    return chi2(q * UNITS)


p0 = jnp.array([450.0, 165.0, 10.0])  # by eye: a rough height, centre and width
print(
    f"{N_PEOPLE} heights in {x.size} bins; start (A, mu, s) = {np.asarray(p0)}, chi2 = {float(chi2(p0)):.1f}"
)
curv = np.linalg.eigvalsh(np.asarray(jax.hessian(chi2)(truth)))
curv_scaled = np.linalg.eigvalsh(np.asarray(jax.hessian(chi2_scaled)(truth / UNITS)))
print(
    f"curvatures of chi2 (Hessian eigenvalues): {curv.round(3)} in people and cm, "
    f"{curv_scaled.round(1)} with A in hundreds"
)

# The course's way: gradient descent on chi-squared with a fixed learning rate.
raw = mml.gradient_descent(chi2, p0, step_size=2e-4, max_iter=RAW_STEPS, history=RAW_STEPS + 1)
scaled = mml.gradient_descent(
    chi2_scaled, p0 / UNITS, step_size=3e-4, max_iter=SCALED_STEPS, history=SCALED_STEPS + 1
)
# The way used in practice: Levenberg-Marquardt. curve_fit keeps no history, so we watch it work:
# the model reports every parameter vector it is evaluated at (jax.debug.callback runs on the host).
evaluated = []


def watched_gaussian(x, p):
    jax.debug.callback(lambda q: evaluated.append(np.array(q)), p)
    return gaussian(x, p)


lm = mml.curve_fit(watched_gaussian, x, y, p0, sigma=sigma, absolute_sigma=True)
# LM evaluates the model at each trial step; where it accepts one it evaluates there again (for the
# Jacobian). Points seen twice in a row are the accepted iterates; points seen once were rejected
# (and the damping raised).
runs = [[evaluated[0], 1]]
for q in evaluated[1:]:
    if np.array_equal(q, runs[-1][0]):
        runs[-1][1] += 1
    else:
        runs.append([q, 1])
lm_path = np.array([q for q, n in runs if n > 1])
lm_rejected = np.array(
    [q for q, n in runs if n == 1 and not any(np.array_equal(q, a) for a in lm_path)]
).reshape(-1, 3)
print(f"LM: {len(lm_path) - 1} accepted steps and {len(lm_rejected)} rejected trial steps")

p_lm, err_lm = np.asarray(lm.params), np.asarray(lm.stderr)
chi2_min = float(lm.chi2)
for name, r, p in (
    ("gradient descent, A in people  ", raw, np.asarray(raw.x)),
    ("gradient descent, A in hundreds", scaled, np.asarray(scaled.x) * np.asarray(UNITS)),
):
    print(
        f"{name}: {int(r.n_iter):5d} steps, chi2 = {float(r.value):9.4f}, "
        f"(A, mu, s) = {np.round(p, 3)}, {mml.Status(int(r.status)).name}"
    )
print(
    f"Levenberg-Marquardt            : {int(lm.n_iter):5d} steps, chi2 = {chi2_min:9.4f} for "
    f"{int(lm.dof)} dof, p-value {float(lm.p_value):.3f}"
)
for name, v, e, t in zip(("A", "mu", "s"), p_lm, err_lm, truth, strict=True):
    print(f"  {name:2s} = {v:9.4f} +- {e:.4f}   (truth {t:.4f})")

check(
    "LM converges in a handful of steps",
    bool(lm.success) and int(lm.n_iter) <= 20,
    f"{int(lm.n_iter)}",
)
check("LM: the truth within 3 standard errors", np.all(np.abs(p_lm - truth) < 3 * err_lm))
check("the fit is acceptable (p-value > 0.01)", float(lm.p_value) > 0.01)
check("the accepted LM steps end at curve_fit's answer", np.allclose(lm_path[-1], p_lm, rtol=1e-12))
check(
    "gradient descent in good units reaches LM's minimum",
    bool(scaled.success) and abs(float(scaled.value) - chi2_min) < 1e-6 * chi2_min,
)
check("... in many more steps than LM", int(scaled.n_iter) > 5 * int(lm.n_iter))
check("gradient descent in bad units stalls far from it", float(raw.value) - chi2_min > 1.0)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), constrained_layout=True)
colors = {"raw": "C0", "scaled": "C2", "lm": "C3"}
ax = axes[0]
xs = np.linspace(145, 197, 300)
ax.bar(np.asarray(x), np.asarray(y), width=2.0, color="0.85", edgecolor="0.6", label="histogram")
ax.errorbar(np.asarray(x), np.asarray(y), yerr=np.asarray(sigma), fmt="none", ecolor="k", capsize=2)
model = jax.jit(jax.vmap(gaussian, in_axes=(None, 0)))
curves = np.asarray(model(jnp.asarray(xs), jnp.stack([p0, raw.x, scaled.x * UNITS, lm.params])))
ax.plot(xs, curves[0], "0.5", ls=":", label="start")
ax.plot(
    xs, curves[1], colors["raw"], label=f"gradient descent, A in people ({int(raw.n_iter)} steps)"
)
ax.plot(
    xs,
    curves[2],
    colors["scaled"],
    lw=3,
    alpha=0.6,
    label=f"gradient descent, A in hundreds ({int(scaled.n_iter)})",
)
ax.plot(xs, curves[3], colors["lm"], ls="--", label=f"Levenberg-Marquardt ({int(lm.n_iter)} steps)")
ax.set(
    ylim=(0, 760),
    xlabel="height (cm)",
    ylabel="people per 2 cm",
    title=f"μ = {p_lm[1]:.2f} ± {err_lm[1]:.2f} cm, s = {p_lm[2]:.2f} ± {err_lm[2]:.2f} cm",
)
ax.legend(fontsize=7, loc="upper left")


def finite_rows(a):
    a = np.asarray(a)
    return a[np.all(np.isfinite(a), axis=1)]


path_raw = finite_rows(raw.history.x)
path_scaled = finite_rows(scaled.history.x) * np.asarray(UNITS)
ax = axes[1]
A, M = np.meshgrid(np.linspace(250, 650, 121), np.linspace(164, 174, 121))
grid = jnp.asarray(np.stack([A.ravel(), M.ravel(), np.full(A.size, p_lm[2])], 1))
Z = np.asarray(jax.jit(jax.vmap(chi2))(grid)).reshape(A.shape)
ax.contour(A, M, Z - chi2_min, levels=np.geomspace(1, 3e4, 12), colors="0.6", linewidths=0.6)
ax.plot(
    path_raw[:, 0],
    path_raw[:, 1],
    ".-",
    color=colors["raw"],
    ms=2,
    lw=0.8,
    label="gradient descent, A in people",
)
ax.plot(
    path_scaled[:, 0],
    path_scaled[:, 1],
    ".-",
    color=colors["scaled"],
    ms=2,
    lw=0.8,
    label="gradient descent, A in hundreds",
)
ax.plot(lm_path[:, 0], lm_path[:, 1], "o-", color=colors["lm"], ms=4, label="Levenberg-Marquardt")
ax.plot(
    lm_rejected[:, 0],
    lm_rejected[:, 1],
    "x",
    color=colors["lm"],
    ms=6,
    alpha=0.6,
    label="LM trial steps it rejected",
)
ax.plot(p0[0], p0[1], "ko", label="start")
ax.plot(*p_lm[:2], "k*", ms=12)
ax.set(
    xlabel="A (people per bin)",
    ylabel="μ (cm)",
    title="paths through (A, μ); contours of χ² at the best s",
)
ax.legend(fontsize=7, loc="lower right")

ax = axes[2]
gap = lambda f: np.maximum(np.asarray(f) - chi2_min, 1e-13)  # noqa: E731
lm_chi2 = np.asarray(jax.jit(jax.vmap(chi2))(jnp.asarray(lm_path)))
ax.loglog(
    np.arange(1, len(path_raw) + 1),
    gap(finite_rows(raw.history.f[:, None])[:, 0]),
    color=colors["raw"],
    label="gradient descent, A in people",
)
ax.loglog(
    np.arange(1, len(path_scaled) + 1),
    gap(finite_rows(scaled.history.f[:, None])[:, 0]),
    color=colors["scaled"],
    label="gradient descent, A in hundreds",
)
ax.loglog(
    np.arange(1, len(lm_path) + 1),
    gap(lm_chi2),
    "o-",
    color=colors["lm"],
    label="Levenberg-Marquardt",
)
ax.set(xlabel="iterate (1 = start)", ylabel="χ² - χ²_min", title="convergence", ylim=(1e-13, 1e5))
ax.legend(fontsize=8)
_common.savefig(fig, "08_nonlinear_fitting.png")
_common.finish()
