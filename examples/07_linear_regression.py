"""Linear regression: a straight line through data with error bars, and what chi-squared says.

With measurements y_i +- sigma_i at x_i and the model y = a + b x, the best parameters minimise

    chi^2(a, b) = sum_i ((y_i - a - b x_i) / sigma_i)^2 .

chi^2 is a quadratic bowl in (a, b), so setting its gradient to zero gives the normal equations and a
closed form (computed here by hand to check the library, which solves the same problem by QR). The
covariance of the parameters is the inverse of half the Hessian of chi^2, C = (J^T W J)^{-1}, and
the contour chi^2 = chi^2_min + 1 is the ellipse of one standard error. A good fit has chi^2 close
to its number of degrees of freedom N - 2; the p-value is the chance of a chi^2 at least this large
if the model is right. The residuals divided by sigma should scatter like a unit normal.

Run:  python examples/07_linear_regression.py   [--quick]
"""

import _common
import jax
from _common import check

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from jax.scipy.special import gammaincc  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("linear_fit", "chi_squared")

TRUE_A, TRUE_B = 1.5, 0.8
rng = np.random.default_rng(2)
x = np.linspace(0.0, 10.0, 20)
sigma = rng.uniform(0.4, 1.4, x.size)
y = TRUE_A + TRUE_B * x + sigma * rng.standard_normal(x.size)

design = np.stack([np.ones_like(x), x], axis=1)  # columns: 1, x  ->  params (a, b)
fit = mml.linear_fit(
    jnp.asarray(x), jnp.asarray(y), sigma=jnp.asarray(sigma), design=jnp.asarray(design)
)
a, b = np.asarray(fit.params)
sa, sb = np.asarray(fit.stderr)
print(f"y = a + b x fitted to {x.size} points with error bars:")
print(f"  a = {a:.4f} +- {sa:.4f}   (truth {TRUE_A})")
print(f"  b = {b:.4f} +- {sb:.4f}   (truth {TRUE_B})")
print(
    f"  chi2 = {float(fit.chi2):.3f} for {int(fit.dof)} degrees of freedom "
    f"(reduced {float(fit.reduced_chi2):.3f}), p-value {float(fit.p_value):.3f}, "
    f"R^2 = {float(fit.r_squared):.4f}"
)

# The closed form from the normal equations (sums weighted by w = 1 / sigma^2).
w = 1.0 / sigma**2
S, Sx, Sy, Sxx, Sxy = w.sum(), (w * x).sum(), (w * y).sum(), (w * x * x).sum(), (w * x * y).sum()
delta = S * Sxx - Sx**2
a_cf, b_cf = (Sxx * Sy - Sx * Sxy) / delta, (S * Sxy - Sx * Sy) / delta
chi2_cf = np.sum(w * (y - a_cf - b_cf * x) ** 2)
dof = x.size - 2
p_cf = float(gammaincc(dof / 2, chi2_cf / 2))
cov_abs = np.array([[Sxx, -Sx], [-Sx, S]]) / delta  # (J^T W J)^{-1}
check("parameters equal the closed form", np.allclose([a, b], [a_cf, b_cf], rtol=1e-10, atol=0))
check(
    "chi2 and dof equal the closed form",
    abs(float(fit.chi2) - chi2_cf) < 1e-9 * chi2_cf and int(fit.dof) == dof,
)
check("p-value = Q(dof/2, chi2/2)", abs(float(fit.p_value) - p_cf) < 1e-10, f"{p_cf:.6f}")
# Covariance as in scipy's curve_fit without absolute_sigma: scaled by the reduced chi-squared.
cov = np.asarray(fit.covariance)
scale = cov[0, 0] / cov_abs[0, 0]
print(f"  covariance = {scale:.4f} x (J^T W J)^-1 (reduced chi2 = {chi2_cf / dof:.4f})")
check(
    "covariance is (J^T W J)^-1, scaled as documented",
    np.allclose(cov, cov_abs, rtol=1e-9) or np.allclose(cov, cov_abs * chi2_cf / dof, rtol=1e-9),
)
check(
    "the truth lies within 3 standard errors", abs(a - TRUE_A) < 3 * sa and abs(b - TRUE_B) < 3 * sb
)


def line(x, p):
    return p[0] + p[1] * x


# chi^2 is a quadratic bowl: its Hessian is 2 J^T W J = 2 C^-1 (with absolute sigma).
hess = np.asarray(jax.hessian(lambda p: mml.chi_squared(line, p, x, y, sigma))(fit.params))
check("Hessian of chi2 = 2 (J^T W J)", np.allclose(hess, 2 * np.linalg.inv(cov_abs), rtol=1e-10))

# ---------------------------------------------------------------- the figure
fig, axes = plt.subplots(
    1, 3, figsize=(15, 4.4), constrained_layout=True, gridspec_kw={"width_ratios": [1.3, 1, 1]}
)
ax = axes[0]
xs = np.linspace(-0.5, 10.5, 100)
J = np.stack([np.ones_like(xs), xs], axis=1)
band = np.sqrt(np.einsum("ij,jk,ik->i", J, cov, J))
ax.errorbar(x, y, yerr=sigma, fmt="ko", ms=4, capsize=2, label="data +- sigma")
ax.plot(xs, a + b * xs, "C3", label=f"fit: a = {a:.2f} ± {sa:.2f}, b = {b:.3f} ± {sb:.3f}")
ax.fill_between(
    xs,
    a + b * xs - band,
    a + b * xs + band,
    color="C3",
    alpha=0.25,
    label="± 1 standard error of the line",
)
ax.plot(xs, TRUE_A + TRUE_B * xs, "k:", lw=1, label="truth")
ax.set(
    xlabel="x",
    ylabel="y",
    title=f"χ² = {float(fit.chi2):.1f} for {dof} dof, p = {float(fit.p_value):.2f}",
)
ax.legend(fontsize=8, loc="upper left")

ax = axes[1]
pulls = (y - (a + b * x)) / sigma
ax.axhspan(-1, 1, color="0.9")
ax.axhline(0, color="k", lw=0.8)
ax.plot(x, pulls, "ko")
ax.vlines(x, 0, pulls, colors="k", lw=0.8)
ax.set(xlabel="x", ylabel="(y - fit) / sigma", title="normalised residuals", ylim=(-3.5, 3.5))

ax = axes[2]
A, B = np.meshgrid(
    np.linspace(a - 4 * sa, a + 4 * sa, 121), np.linspace(b - 4 * sb, b + 4 * sb, 121)
)
chi2_grid = np.asarray(
    jax.jit(jax.vmap(lambda p: mml.chi_squared(line, p, x, y, sigma)))(
        jnp.asarray(np.stack([A.ravel(), B.ravel()], 1))
    )
).reshape(A.shape)
cs = ax.contour(A, B, chi2_grid - chi2_cf, levels=[1, 2.3, 4, 9, 16], colors="C0")
ax.clabel(cs, fmt="Δχ²=%g", fontsize=7)
t = np.linspace(0, 2 * np.pi, 200)
ell = np.linalg.cholesky(cov_abs) @ np.stack([np.cos(t), np.sin(t)])
ax.plot(a + ell[0], b + ell[1], "C3--", lw=1.5, label="1σ ellipse from the covariance")
ax.plot(a, b, "C3+", ms=12)
ax.plot(TRUE_A, TRUE_B, "k*", ms=10, label="truth")
ax.set(xlabel="a (intercept)", ylabel="b (slope)", title="χ² - χ²_min over the parameters")
ax.legend(fontsize=8)
_common.savefig(fig, "07_linear_regression.png")
_common.finish()
