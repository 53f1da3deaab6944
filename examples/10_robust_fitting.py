"""Robust fitting: a straight line through data with outliers, least squares against huber and cauchy.

Least squares minimises sum_i z_i with z_i = (r_i / sigma_i)^2: one point 10 sigma off contributes as
much as a hundred points 1 sigma off, so a few outliers drag the fit. A robust loss replaces z by
rho(z), which grows more slowly for large residuals (the conventions of scipy's least_squares):

    linear   rho(z) = z                          (ordinary least squares)
    huber    rho(z) = z if z <= 1, else 2 sqrt(z) - 1     (quadratic core, linear tails)
    cauchy   rho(z) = log(1 + z)                 (tails that barely count)

Minimising sum rho(z_i) is a weighted least squares problem whose weight rho'(z_i) falls with the
residual: outliers are down-weighted automatically. Residuals are measured in units of sigma, so the
loss switches from quadratic to robust at about one standard deviation.

Run:  python examples/10_robust_fitting.py   [--quick]
"""

import _common
import jax
from _common import check

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("curve_fit")

TRUTH = np.array([2.0, 0.5])  # intercept, slope
N, SIGMA, N_OUT = 60, 0.3, 9

rng = np.random.default_rng(10)
x = np.sort(rng.uniform(0.0, 10.0, N))
y = TRUTH[0] + TRUTH[1] * x + SIGMA * rng.standard_normal(N)
outliers = rng.choice(N, N_OUT, replace=False)
y[outliers] += rng.uniform(2.0, 6.0, N_OUT) * np.where(x[outliers] > 5, 1.0, 0.3)
is_out = np.zeros(N, bool)
is_out[outliers] = True


def line(x, p):
    return p[0] + p[1] * x


p0 = jnp.array([0.0, 1.0])
sigma = np.full(N, SIGMA)
fits = {
    loss: mml.curve_fit(line, x, y, p0, sigma=sigma, absolute_sigma=True, loss=loss)
    for loss in ("linear", "huber", "cauchy")
}
# For comparison, least squares without the outliers: an infinite sigma gives a point no weight
# (same shapes as above, so the compiled least-squares fit is reused).
clean = mml.curve_fit(line, x, y, p0, sigma=np.where(is_out, np.inf, SIGMA), absolute_sigma=True)
print(
    f"a line through {N} points, {N_OUT} of them outliers (truth: intercept {TRUTH[0]}, slope {TRUTH[1]})"
)
print("  loss      intercept          slope             |error| / stderr (worst)   steps")
errors = {}
for loss, fit in {**fits, "clean data only": clean}.items():
    p, e = np.asarray(fit.params), np.asarray(fit.stderr)
    errors[loss] = np.max(np.abs(p - TRUTH) / e)
    print(
        f"  {loss:8s}  {p[0]:.3f} +- {e[0]:.3f}    {p[1]:.4f} +- {e[1]:.4f}      {errors[loss]:6.1f}"
        f"              {int(fit.n_iter)}  {mml.Status(int(fit.status)).name}"
    )

check("every fit converges", all(bool(f.success) for f in fits.values()))
check("least squares is dragged far off by the outliers", errors["linear"] > 5)
for loss in ("huber", "cauchy"):
    p = np.asarray(fits[loss].params)
    close = np.max(np.abs(p - np.asarray(clean.params)) / np.asarray(clean.stderr))
    check(f"{loss} stays near the fit without the outliers", close < 2.0, f"{close:.2f} stderr")
dist = {
    loss: np.max(np.abs(np.asarray(fits[loss].params - clean.params)) / np.asarray(clean.stderr))
    for loss in fits
}
check(
    "cauchy resists the outliers better than huber", dist["cauchy"] < dist["huber"] < dist["linear"]
)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(
    1, 3, figsize=(15, 4.4), constrained_layout=True, gridspec_kw={"width_ratios": [1.4, 1, 1]}
)
colors = {"linear": "C3", "huber": "C1", "cauchy": "C2"}
ax = axes[0]
ax.errorbar(x[~is_out], y[~is_out], yerr=SIGMA, fmt="ko", ms=3, capsize=0, label="data")
ax.plot(x[is_out], y[is_out], "o", mfc="none", mec="m", ms=8, label="outliers")
xs = np.linspace(0, 10, 50)
ax.plot(xs, TRUTH[0] + TRUTH[1] * xs, "k:", label="truth")
for loss, fit in fits.items():
    p = np.asarray(fit.params)
    ax.plot(xs, p[0] + p[1] * xs, color=colors[loss], label=f"{loss}: slope {p[1]:.3f}")
ax.set(xlabel="x", ylabel="y", title="least squares against robust losses")
ax.legend(fontsize=8)

ax = axes[1]
z = np.linspace(0, 25, 300)
rho = {"linear": z, "huber": np.where(z <= 1, z, 2 * np.sqrt(z) - 1), "cauchy": np.log1p(z)}
for loss in fits:
    ax.plot(np.sqrt(z), rho[loss], color=colors[loss], label=loss)
ax.set(xlabel="|residual| / sigma", ylabel="ρ(z), z = (r/σ)²", title="the losses", ylim=(0, 12))
ax.legend(fontsize=8)

ax = axes[2]
for loss, fit in fits.items():
    r = (y - np.asarray(line(jnp.asarray(x), fit.params))) / SIGMA
    ax.plot(x, r, "o", ms=4, color=colors[loss], alpha=0.7, label=loss)
ax.axhspan(-1, 1, color="0.9")
ax.set(xlabel="x", ylabel="(y - fit) / σ", title="residuals: robust fits leave the outliers out")
ax.legend(fontsize=8)
_common.savefig(fig, "10_robust_fitting.png")
_common.finish()
