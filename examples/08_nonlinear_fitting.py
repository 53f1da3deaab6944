"""Nonlinear fitting: a Gaussian fitted to a histogram of heights, two ways.

The model  n(x) = A exp(-(x - mu)^2 / (2 s^2))  is fitted to the counts of a histogram, each with
its Poisson uncertainty sqrt(n). The course's method is gradient descent on chi-squared,

    p <- p - eta grad chi^2(p),   grad chi^2 = -2 J^T W (y - n(x; p)),

which works but needs many small steps, because chi^2 is far steeper along A than along mu and s.
Levenberg-Marquardt (the default of ``mml.curve_fit``, as of scipy's) solves the linearised least
squares problem at each step, (J^T W J + lambda D) dp = J^T W r, blending Gauss-Newton (lambda -> 0)
and gradient descent (large lambda): it reaches the same minimum in a handful of steps. We draw both
paths through parameter space over the contours of chi^2.

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
GD_STEPS = pick(20000, 4000)
TRUE_MU, TRUE_S = 171.0, 7.5

rng = np.random.default_rng(42)
heights = rng.normal(TRUE_MU, TRUE_S, N_PEOPLE)
edges = np.arange(145.0, 197.5, 2.0)
counts, _ = np.histogram(heights, edges)
x = 0.5 * (edges[1:] + edges[:-1])
sigma = np.sqrt(np.maximum(counts, 1.0))  # Poisson errors (at least 1 for empty bins)
x, y, sigma = jnp.asarray(x), jnp.asarray(counts, float), jnp.asarray(sigma)
true_A = N_PEOPLE * 2.0 / (np.sqrt(2 * np.pi) * TRUE_S)  # bin width 2


def gaussian(x, p):
    A, mu, s = p[0], p[1], p[2]
    return A * jnp.exp(-0.5 * ((x - mu) / s) ** 2)


def chi2(p):
    return mml.chi_squared(gaussian, p, x, y, sigma)


p0 = jnp.array([450.0, 165.0, 10.0])  # by eye: a rough height, centre and width
print(
    f"{N_PEOPLE} heights in {x.size} bins; start p0 = (A, mu, s) = {np.asarray(p0)}, "
    f"chi2(p0) = {float(chi2(p0)):.1f}"
)

# The course's way: gradient descent on chi-squared, with a backtracking line search.
gd = mml.gradient_descent(
    chi2, p0, step_size="backtracking", max_iter=GD_STEPS, history=GD_STEPS + 1
)
# The way used in practice: Levenberg-Marquardt.
lm = mml.curve_fit(gaussian, x, y, p0, sigma=sigma, absolute_sigma=True)
lm_path = [np.asarray(p0)] + [
    np.asarray(
        mml.curve_fit(gaussian, x, y, p0, sigma=sigma, absolute_sigma=True, max_iter=k).params
    )
    for k in range(1, int(lm.n_iter) + 1)
]
lm_path = np.array(lm_path)

p_lm, err_lm = np.asarray(lm.params), np.asarray(lm.stderr)
p_gd = np.asarray(gd.x)
print(
    f"gradient descent: {int(gd.n_iter)} steps, chi2 = {float(gd.value):.4f}, "
    f"p = {np.round(p_gd, 4)}, {mml.Status(int(gd.status)).name}"
)
print(
    f"Levenberg-Marquardt: {int(lm.n_iter)} steps, chi2 = {float(lm.chi2):.4f} for {int(lm.dof)} dof, "
    f"p-value {float(lm.p_value):.3f}"
)
for name, v, e, t in zip(("A", "mu", "s"), p_lm, err_lm, (true_A, TRUE_MU, TRUE_S), strict=True):
    print(f"  {name:2s} = {v:9.4f} +- {e:.4f}   (truth {t:.4f})")

check("LM converges", bool(lm.success))
check("LM takes a handful of steps", int(lm.n_iter) <= 20, f"{int(lm.n_iter)}")
check(
    "LM: the truth within 3 standard errors",
    np.all(np.abs(p_lm - [true_A, TRUE_MU, TRUE_S]) < 3 * err_lm),
)
check("gradient descent needs many more steps", int(gd.n_iter) > 10 * int(lm.n_iter))
gap = float(gd.value) - float(lm.chi2)
if _common.QUICK:
    check("gradient descent lowers chi2 100-fold", float(gd.value) < 0.01 * float(chi2(p0)))
else:
    check(
        "gradient descent reaches LM's minimum (chi2 within 1)", -1e-9 < gap < 1.0, f"gap {gap:.2e}"
    )
check("the fit is acceptable (p-value > 0.01)", float(lm.p_value) > 0.01)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
ax = axes[0]
xs = np.linspace(145, 197, 300)
ax.bar(np.asarray(x), np.asarray(y), width=2.0, color="0.85", edgecolor="0.6", label="histogram")
ax.errorbar(np.asarray(x), np.asarray(y), yerr=np.asarray(sigma), fmt="none", ecolor="k", capsize=2)
ax.plot(xs, np.asarray(gaussian(xs, p0)), "0.5", ls=":", label="start")
ax.plot(
    xs,
    np.asarray(gaussian(xs, jnp.asarray(p_gd))),
    "C0",
    lw=3,
    alpha=0.6,
    label=f"gradient descent ({int(gd.n_iter)} steps)",
)
ax.plot(
    xs,
    np.asarray(gaussian(xs, jnp.asarray(p_lm))),
    "C3--",
    label=f"Levenberg-Marquardt ({int(lm.n_iter)} steps)",
)
ax.set(
    xlabel="height (cm)",
    ylabel="people per 2 cm",
    title=f"μ = {p_lm[1]:.2f} ± {err_lm[1]:.2f}, s = {p_lm[2]:.2f} ± {err_lm[2]:.2f} cm",
)
ax.legend(fontsize=8)

ax = axes[1]
path_gd = np.asarray(gd.history.x)
path_gd = path_gd[np.all(np.isfinite(path_gd), axis=1)]
M, S = np.meshgrid(np.linspace(158, 178, 121), np.linspace(4, 14, 121))
grid = jnp.asarray(np.stack([np.full(M.size, p_lm[0]), M.ravel(), S.ravel()], 1))
Z = np.asarray(jax.jit(jax.vmap(chi2))(grid)).reshape(M.shape)
ax.contour(M, S, Z, levels=np.geomspace(Z.min() + 1, Z.max(), 14), colors="0.6", linewidths=0.6)
ax.plot(path_gd[:, 1], path_gd[:, 2], "C0.-", ms=2, lw=0.8, label="gradient descent")
ax.plot(lm_path[:, 1], lm_path[:, 2], "C3o-", ms=4, label="Levenberg-Marquardt")
ax.plot(p0[1], p0[2], "ko", label="start")
ax.set(xlabel="μ (cm)", ylabel="s (cm)", title="paths through (μ, s); contours at the best A")
ax.legend(fontsize=8)

ax = axes[2]
ax.semilogy(np.asarray(gd.history.f) - float(lm.chi2) + 1e-12, "C0", label="gradient descent")
lm_chi2 = [float(chi2(jnp.asarray(p))) for p in lm_path]
ax.semilogy(np.asarray(lm_chi2) - float(lm.chi2) + 1e-12, "C3o-", label="Levenberg-Marquardt")
ax.set(xscale="symlog", xlabel="step", ylabel="χ² - χ²_min", title="convergence")
ax.legend(fontsize=8)
_common.savefig(fig, "08_nonlinear_fitting.png")
_common.finish()
