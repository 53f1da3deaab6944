"""The "sandpit": gradient descent, momentum, Newton and BFGS on Rosenbrock and Himmelblau.

Gradient descent steps downhill,  x <- x - eta grad f(x).  In a long curved valley (Rosenbrock's
banana, f = (1 - x)^2 + 100 (y - x^2)^2) the gradient points mostly across the valley, so a stable
step is tiny and progress along the valley floor is slow. Momentum accumulates the steps that agree
(v <- beta v - eta grad f; x <- x + v) and rolls along the floor. Newton's method uses the Hessian
to jump to the minimum of the local quadratic model,  x <- x - H^{-1} grad f,  and BFGS builds an
approximation of H^{-1} from the gradients it has seen. The paths are recorded with ``history=``.

Himmelblau's function, (x^2 + y - 11)^2 + (x + y^2 - 7)^2, has four minima: which one a method
reaches depends on the start; we map that for a grid of starts solved in one ``jax.vmap`` call.

Run:  python examples/05_sandpit.py   [--quick]
"""

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("gradient_descent", "newton_minimise", "bfgs")

GD_ITER = pick(5000, 1500)
FAST_ITER = 200
GRID = pick(40, 16)


def rosenbrock(p):
    x, y = p
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def himmelblau(p):
    x, y = p
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


HIMMELBLAU_MINIMA = np.array(  # to double precision: |grad| < 1e-13 at each
    [
        [3.0, 2.0],
        [-2.805118086952745, 3.131312518250573],
        [-3.779310253377747, -3.283185991286170],
        [3.584428340330492, -1.848126526964404],
    ]
)


def run_all(f, x0, eta):
    """The four methods from one start, each with its path recorded."""
    x0 = jnp.asarray(x0)
    return {
        "gradient descent": mml.gradient_descent(
            f, x0, step_size=eta, max_iter=GD_ITER, history=GD_ITER + 1
        ),
        "momentum 0.9": mml.gradient_descent(
            f, x0, step_size=eta, momentum=0.9, max_iter=GD_ITER, history=GD_ITER + 1
        ),
        "Newton": mml.newton_minimise(f, x0, max_iter=FAST_ITER, history=FAST_ITER + 1),
        "BFGS": mml.bfgs(f, x0, max_iter=FAST_ITER, history=FAST_ITER + 1),
    }


def report(title, results, minima):
    print(title)
    for name, r in results.items():
        dist = float(np.min(np.linalg.norm(np.asarray(r.x) - minima, axis=-1)))
        print(
            f"  {name:17s} {int(r.n_iter):5d} steps  f = {float(r.value):.3e}  "
            f"|x - x*| = {dist:.1e}  {mml.Status(int(r.status)).name}"
        )


ros = run_all(rosenbrock, [-1.2, 1.0], 1e-3)
report("Rosenbrock from (-1.2, 1), minimum at (1, 1):", ros, np.array([[1.0, 1.0]]))
him = run_all(himmelblau, [-0.5, -0.5], 0.01)
report("Himmelblau from (-0.5, -0.5), distance to the nearest minimum:", him, HIMMELBLAU_MINIMA)
for name, r in him.items():
    near = np.min(np.linalg.norm(np.asarray(r.x) - HIMMELBLAU_MINIMA, axis=1))
    check(f"{name} reaches a minimum of Himmelblau", bool(r.success) and near < 1e-5, f"{near:.1e}")

for name in ("Newton", "BFGS"):
    r = ros[name]
    check(
        f"{name} reaches Rosenbrock's minimum",
        bool(r.success) and float(jnp.max(jnp.abs(r.x - 1.0))) < 1e-6,
    )
check("Newton takes fewer steps than BFGS", int(ros["Newton"].n_iter) < int(ros["BFGS"].n_iter))
check(
    "gradient descent creeps: far from done after all its steps",
    float(ros["gradient descent"].value) > 1e3 * float(ros["BFGS"].value),
)
check(
    "momentum gets further along the valley than plain gradient descent",
    float(ros["momentum 0.9"].value) < float(ros["gradient descent"].value),
)

# Which of Himmelblau's minima BFGS reaches from each start of a grid, in one batched call.
side = np.linspace(-5, 5, GRID)
SX, SY = np.meshgrid(side, side)
starts = jnp.asarray(np.stack([SX.ravel(), SY.ravel()], axis=1))
batch = jax.jit(jax.vmap(lambda s: mml.bfgs(himmelblau, s, max_iter=FAST_ITER)))(starts)
ends = np.asarray(batch.x)
dist = np.linalg.norm(ends[:, None] - HIMMELBLAU_MINIMA[None], axis=2)
which = np.where(np.asarray(batch.success) & (dist.min(axis=1) < 1e-4), dist.argmin(axis=1), -1)
print(
    f"BFGS from {len(starts)} starts on Himmelblau: {np.mean(which >= 0):.1%} reach a minimum; "
    f"counts per minimum {np.bincount(which[which >= 0], minlength=4)}; "
    f"steps mean {np.mean(batch.n_iter):.1f}, max {int(np.max(batch.n_iter))}"
)
check("BFGS from (almost) every start reaches one of the four minima", np.mean(which >= 0) > 0.97)
check("each of the four minima is reached from some start", set(which[which >= 0]) == {0, 1, 2, 3})

# ---------------------------------------------------------------- the figure
colors = {"gradient descent": "C0", "momentum 0.9": "C1", "Newton": "C3", "BFGS": "C2"}


def draw_paths(ax, f, results, box, levels, title):
    xs = np.linspace(*box[:2], 300)
    ys = np.linspace(*box[2:], 300)
    X, Y = np.meshgrid(xs, ys)
    Z = np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(np.stack([X.ravel(), Y.ravel()], 1))))
    ax.contour(X, Y, Z.reshape(X.shape), levels=levels, colors="0.6", linewidths=0.6)
    for name, r in results.items():
        path = np.asarray(r.history.x)
        path = path[np.all(np.isfinite(path), axis=1)]
        ax.plot(
            path[:, 0],
            path[:, 1],
            ".-",
            ms=2,
            lw=1,
            color=colors[name],
            label=f"{name}: {int(r.n_iter)} steps",
        )
    ax.plot(*path[0], "ko")
    ax.set(xlim=box[:2], ylim=box[2:], xlabel="x", ylabel="y", title=title)
    ax.legend(fontsize=7, loc="lower right")


fig, axes = plt.subplots(2, 2, figsize=(11, 10), constrained_layout=True)
draw_paths(
    axes[0, 0],
    rosenbrock,
    ros,
    (-1.6, 1.6, -0.6, 1.8),
    np.geomspace(1e-2, 1e3, 14),
    "Rosenbrock: paths from (-1.2, 1)",
)
axes[0, 0].plot([1], [1], "k*", ms=12)
draw_paths(
    axes[0, 1],
    himmelblau,
    him,
    (-5, 5, -5, 5),
    np.geomspace(0.1, 500, 16),
    "Himmelblau: paths from (-0.5, -0.5)",
)
axes[0, 1].plot(*HIMMELBLAU_MINIMA.T, "k*", ms=12)

ax = axes[1, 0]
for name, r in ros.items():
    ax.semilogy(np.asarray(r.history.f), color=colors[name], label=name)
ax.set(
    xscale="symlog",
    xlabel="step",
    ylabel="f",
    title="Rosenbrock: f against the step",
    ylim=(1e-20, 1e2),
)
ax.legend(fontsize=8)

ax = axes[1, 1]
palette = np.array(
    [[0, 0, 0], [0.84, 0.15, 0.16], [0.12, 0.47, 0.71], [0.17, 0.63, 0.17], [0.58, 0.4, 0.74]]
)
ax.imshow(
    palette[which + 1].reshape(GRID, GRID, 3),
    origin="lower",
    extent=(-5, 5, -5, 5),
    interpolation="nearest",
)
ax.plot(*HIMMELBLAU_MINIMA.T, "w*", ms=12)
ax.set(
    xlabel="x0",
    ylabel="y0",
    title=f"Himmelblau: where BFGS goes from {GRID * GRID} starts",
)
_common.savefig(fig, "05_sandpit.png")
_common.finish()
