"""Batched fitting: 100,000 noisy peaks fitted in one call, and the check that the errors are honest.

Each dataset is a Gaussian peak on a flat background, y = A exp(-(x - mu)^2 / (2 s^2)) + c, at 64
points with Gaussian noise of known sigma = 0.05, every one with its own true parameters. Passing
``y`` of shape (B, 64) and ``p0`` of shape (B, 4) to ``mml.curve_fit`` fits all B datasets in one
compiled call, each with its own parameters, covariance, chi-squared and status.

Are the standard errors right? For each fit and parameter the pull  (fit - truth) / stderr  should
be a draw from a unit normal if the errors are honest: mean 0, standard deviation 1. Likewise
chi-squared should average its degrees of freedom (60) and the p-values should be uniform on [0, 1].
With many fits these become sharp tests of the whole chain: model, Jacobian, covariance, statistics.

Run:  python examples/09_batched_fitting.py   [--quick]
"""

import math
import time

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("curve_fit")

B = pick(100_000, 2_000)
N = 64
NOISE = 0.05
NAMES = ("A", "mu", "s", "c")


def peak(x, p):
    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3]


rng = np.random.default_rng(9)
x = np.linspace(-5.0, 5.0, N)
truth = np.stack(
    [
        rng.uniform(1.0, 3.0, B),  # A
        rng.uniform(-1.5, 1.5, B),  # mu
        rng.uniform(0.6, 1.5, B),  # s
        rng.uniform(-0.2, 0.2, B),  # c
    ],
    axis=1,
)
clean = truth[:, :1] * np.exp(-0.5 * ((x - truth[:, 1:2]) / truth[:, 2:3]) ** 2) + truth[:, 3:]
y = clean + NOISE * rng.standard_normal((B, N))
# Start 20% off the truth in each parameter (c is offset by 0.05 since it may be near 0).
p0 = truth * (1 + 0.2 * rng.choice([-1.0, 1.0], truth.shape)) + [0, 0, 0, 0.05]

x, y, p0 = jnp.asarray(x), jnp.asarray(y), jnp.asarray(p0)


def fit_all(y, p0):
    return mml.curve_fit(peak, x, y, p0, sigma=NOISE, absolute_sigma=True)


t0 = time.perf_counter()
fit = jax.block_until_ready(fit_all(y, p0))
elapsed = time.perf_counter() - t0
print(f"{B:,} peaks of {N} points fitted in one call: {elapsed:.2f} s, compilation included")

ok = np.asarray(fit.success)
params, stderr = np.asarray(fit.params), np.asarray(fit.stderr)
n_iter = np.asarray(fit.n_iter)
print(f"  converged: {ok.mean():.3%}; iterations mean {n_iter.mean():.1f}, max {n_iter.max()}")
print(f"  status counts: { {k.name: v for k, v in mml.summarise_status(fit.status).items()} }")
pulls = ((params - truth) / stderr)[ok]
chi2, dof, p_value = np.asarray(fit.chi2)[ok], np.asarray(fit.dof), np.asarray(fit.p_value)[ok]
print("  parameter  pull mean  pull std   median stderr")
for k, name in enumerate(NAMES):
    print(
        f"  {name:9s}  {pulls[:, k].mean():+.4f}    {pulls[:, k].std():.4f}     {np.median(stderr[:, k]):.4f}"
    )
print(
    f"  chi2: mean {chi2.mean():.3f} for {int(np.ravel(dof)[0])} dof; "
    f"p-values below 0.05: {np.mean(p_value < 0.05):.2%}"
)

tol = 5 / np.sqrt(ok.sum())  # five standard errors of a mean of unit-variance draws
check("(almost) every fit converges", ok.mean() > 0.999, f"{ok.mean():.4%}")
check(
    "pulls have mean 0",
    np.all(np.abs(pulls.mean(axis=0)) < tol + 0.01),
    f"{np.round(pulls.mean(axis=0), 4)}, tolerance {tol + 0.01:.3f}",
)
check(
    "pulls have standard deviation 1: the errors are honest",
    np.all(np.abs(pulls.std(axis=0) - 1) < 2 * tol + 0.02),
    f"{np.round(pulls.std(axis=0), 4)}, tolerance {2 * tol + 0.02:.3f}",
)
dof0 = float(np.ravel(dof)[0])
check(
    "chi2 averages its degrees of freedom",
    abs(chi2.mean() / dof0 - 1) < 5 * np.sqrt(2 / dof0 / ok.sum()) + 0.01,
)
check(
    "p-values are uniform (5% below 0.05)",
    abs(np.mean(p_value < 0.05) - 0.05) < 5 * np.sqrt(0.05 * 0.95 / ok.sum()),
)

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(2, 5, figsize=(19, 7.2), constrained_layout=True)
bins_pull = np.linspace(-4.5, 4.5, 61)
grid = np.linspace(-4.5, 4.5, 200)
normal = np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi)
errors = (params - truth)[ok]
for k, name in enumerate(NAMES):
    ax = axes[0, k]
    half = 5 * np.median(stderr[ok, k])
    ax.hist(errors[:, k], bins=60, range=(-half, half), color="C3", alpha=0.7)
    ax.set(
        xlabel=f"{name}_fit - {name}_true", title=f"error of the fitted {name} ({ok.sum():,} fits)"
    )
    ax.axvspan(
        -np.median(stderr[ok, k]),
        np.median(stderr[ok, k]),
        color="0.85",
        zorder=0,
        label=f"± median stderr {np.median(stderr[ok, k]):.4f}",
    )
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1, k]
    ax.hist(
        pulls[:, k],
        bins=bins_pull,
        density=True,
        color="C0",
        alpha=0.7,
        label=f"mean {pulls[:, k].mean():+.3f}\nstd {pulls[:, k].std():.3f}",
    )
    ax.plot(grid, normal, "k", lw=1.5, label="unit normal")
    ax.set(xlabel=f"({name}_fit - {name}_true) / stderr", title=f"pulls of {name}")
    ax.legend(fontsize=8, loc="upper left")

ax = axes[0, 4]
c2 = np.linspace(20, 110, 200)
pdf = np.exp((dof0 / 2 - 1) * np.log(c2) - c2 / 2 - (dof0 / 2) * np.log(2) - math.lgamma(dof0 / 2))
ax.hist(
    chi2,
    bins=60,
    range=(20, 110),
    density=True,
    color="C2",
    alpha=0.7,
    label=f"mean {chi2.mean():.2f}",
)
ax.plot(c2, pdf, "k", lw=1.5, label=f"χ² distribution, {int(dof0)} dof")
ax.set(xlabel="χ²", title="χ² of each fit")
ax.legend(fontsize=8, loc="upper left")
ax = axes[1, 4]
ax.hist(
    p_value,
    bins=20,
    range=(0, 1),
    density=True,
    color="C2",
    alpha=0.7,
    label=f"{np.mean(p_value < 0.05):.1%} below 0.05",
)
ax.axhline(1, color="k", lw=1.5, label="uniform")
ax.set(xlabel="p-value", title="p-values", ylim=(0, 1.6))
ax.legend(fontsize=8, loc="upper left")
_common.savefig(fig, "09_batched_fitting.png")
_common.finish()
