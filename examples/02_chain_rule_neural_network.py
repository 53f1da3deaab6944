"""The multivariate chain rule and backpropagation: a 1-8-8-1 neural network fitted to a curve.

The network is  yhat = W3 . tanh(W2 . tanh(W1 x + b1) + b2) + b3  and the loss is the mean squared
error  L = 1/(2N) sum_i (yhat_i - y_i)^2.  Backpropagation is nothing but the multivariate chain rule
applied layer by layer, from the loss back to each weight:

    dL/dz3 = (yhat - y) / N                             (output layer, linear)
    dL/dW3 = a2^T dL/dz3,  dL/db3 = sum_i dL/dz3
    dL/dz2 = (dL/dz3 W3^T) * tanh'(z2),  tanh'(z) = 1 - tanh(z)^2
    dL/dW2 = a1^T dL/dz2,  ...and so on down to W1.

We write those lines out by hand, check them against ``jax.grad`` (to 1e-10 in float64) and against
finite differences (``mml.check_grad``), then train the network three ways: a hand-written
gradient-descent loop using our chain-rule gradients, ``mml.gradient_descent`` (the same method, so
the same losses step for step) and ``mml.optax_minimise`` with Adam.

Run:  python examples/02_chain_rule_neural_network.py   [--quick]
"""

import _common
import jax
from _common import check, pick

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import jaxopt_mml as mml  # noqa: E402

_common.require("check_grad", "gradient_descent", "optax_minimise")

N_POINTS = 80
GD_STEPS = pick(4000, 400)
ADAM_STEPS = pick(3000, 600)
LEARNING_RATE = 0.25
NOISE = 0.05


# ---------------------------------------------------------------- the data and the network
rng = np.random.default_rng(0)
x = np.linspace(-2.0, 2.0, N_POINTS)
y = np.sin(3.0 * x) * np.exp(-0.5 * x**2) + NOISE * rng.standard_normal(x.shape)


def init_params(rng, sizes=(1, 8, 8, 1)):
    """Xavier-style random weights and zero biases, as a dict pytree."""
    params = {}
    for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
        params[f"W{layer}"] = jnp.asarray(rng.standard_normal((n_in, n_out)) / np.sqrt(n_in))
        params[f"b{layer}"] = jnp.zeros(n_out)
    return params


def forward(params, x):
    """The network and every intermediate activation (kept for the backward pass)."""
    a0 = x[:, None]  # (N, 1)
    z1 = a0 @ params["W1"] + params["b1"]
    a1 = jnp.tanh(z1)
    z2 = a1 @ params["W2"] + params["b2"]
    a2 = jnp.tanh(z2)
    z3 = a2 @ params["W3"] + params["b3"]  # linear output layer
    return z3[:, 0], (a0, a1, a2, z3)


def loss(params, x, y):
    yhat, _ = forward(params, x)
    return 0.5 * jnp.mean((yhat - y) ** 2)


# ---------------------------------------------------------------- backpropagation by hand
def chain_rule_grad(params, x, y):
    """dL/dparams written out with the multivariate chain rule, layer by layer."""
    _, (a0, a1, a2, z3) = forward(params, x)
    n = x.shape[0]
    d3 = (z3 - y[:, None]) / n  # dL/dz3                        (N, 1)
    grads = {"W3": a2.T @ d3, "b3": d3.sum(0)}  # dz3/dW3 = a2
    d2 = (d3 @ params["W3"].T) * (1.0 - a2**2)  # dL/dz2 = dL/dz3 dz3/da2 da2/dz2
    grads |= {"W2": a1.T @ d2, "b2": d2.sum(0)}
    d1 = (d2 @ params["W2"].T) * (1.0 - a1**2)  # dL/dz1 = dL/dz2 dz2/da1 da1/dz1
    grads |= {"W1": a0.T @ d1, "b1": d1.sum(0)}
    return grads


params0 = init_params(rng)
print(f"network 1-8-8-1 (tanh), {N_POINTS} points, {ravel_pytree(params0)[0].size} parameters")

ours = jax.device_get(jax.jit(chain_rule_grad)(params0, x, y))
autodiff = jax.device_get(jax.jit(jax.grad(loss))(params0, x, y))
print("layer  max |chain rule - jax.grad|  max |dL/dw|")
worst = 0.0
for name in sorted(ours):
    diff = np.max(np.abs(ours[name] - autodiff[name]))
    scale = np.max(np.abs(autodiff[name]))
    worst = max(worst, diff / max(scale, 1e-300))
    print(f"  {name:3s}  {diff:.2e}                     {scale:.3e}")
check("chain-rule gradient equals jax.grad to 1e-10 (relative)", worst < 1e-10, f"{worst:.1e}")

# Finite differences agree with the hand-written gradient too (central differences are good to
# about 1e-8 relative in float64: their truncation and rounding errors balance there).
fd = mml.check_grad(loss, params0, chain_rule_grad, args=(x, y))
check(
    "chain-rule gradient agrees with central finite differences",
    fd.max_rel_error < 1e-6,
    f"{fd.max_rel_error:.1e}",
)


# ---------------------------------------------------------------- training
@jax.jit
def train_by_hand(params):
    """Plain gradient descent with the hand-written gradient: w <- w - eta dL/dw."""

    def step(p, _):
        g = chain_rule_grad(p, x, y)
        return jax.tree.map(lambda w, gw: w - LEARNING_RATE * gw, p, g), loss(p, x, y)

    params, losses = jax.lax.scan(step, params, None, length=GD_STEPS)
    return params, jnp.append(losses, loss(params, x, y))


p_hand, losses_hand = train_by_hand(params0)
losses_hand = np.asarray(losses_hand)

gd = mml.gradient_descent(
    loss, params0, args=(x, y), step_size=LEARNING_RATE, max_iter=GD_STEPS, history=GD_STEPS + 1
)
adam = mml.optax_minimise(
    loss, params0, optax.adam(0.01), args=(x, y), max_iter=ADAM_STEPS, history=ADAM_STEPS + 1
)
losses_gd = np.asarray(gd.history.f)
losses_adam = np.asarray(adam.history.f)
n_gd = int(gd.n_iter)

print(f"gradient descent by hand   : loss {losses_hand[0]:.4f} -> {losses_hand[-1]:.5f}")
print(
    f"mml.gradient_descent       : loss {losses_gd[0]:.4f} -> {float(gd.value):.5f} "
    f"({n_gd} steps, {mml.Status(int(gd.status)).name})"
)
print(
    f"mml.optax_minimise (Adam)  : loss {losses_adam[0]:.4f} -> {float(adam.value):.5f} "
    f"({int(adam.n_iter)} steps, {mml.Status(int(adam.status)).name})"
)
print(f"noise floor sigma^2 / 2    : {0.5 * NOISE**2:.5f}")

# ---------------------------------------------------------------- the figure
predict = jax.jit(lambda p, x: forward(p, x)[0])
fig, (ax_fit, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
xs = np.linspace(-2.0, 2.0, 300)
ax_fit.plot(x, y, "k.", ms=4, label="data")
ax_fit.plot(xs, np.sin(3 * xs) * np.exp(-0.5 * xs**2), color="0.6", lw=1, label="true curve")
ax_fit.plot(xs, predict(gd.x, xs), label=f"gradient descent ({n_gd} steps)")
ax_fit.plot(xs, predict(adam.x, xs), label=f"Adam ({int(adam.n_iter)} steps)")
ax_fit.set(xlabel="x", ylabel="y", title="a 1-8-8-1 tanh network fitted by backpropagation")
ax_fit.legend(fontsize=8)
ax_loss.semilogy(losses_hand, lw=3, alpha=0.4, label="gradient descent, chain rule by hand")
ax_loss.semilogy(losses_gd, "--", label="mml.gradient_descent")
ax_loss.semilogy(losses_adam, label="mml.optax_minimise(optax.adam)")
ax_loss.axhline(0.5 * NOISE**2, color="0.5", ls=":", label="noise floor")
ax_loss.set(xlabel="step", ylabel="loss", title="training loss")
ax_loss.legend(fontsize=8)
_common.savefig(fig, "02_chain_rule_neural_network.png")
# Step for step the same method; compare the first 300 steps (later, at the "edge of stability"
# where the loss spikes, rounding differences of 1e-16 are amplified and the two drift apart).
n_cmp = min(n_gd, 300) + 1
same = np.max(np.abs(losses_gd[:n_cmp] - losses_hand[:n_cmp]) / losses_hand[:n_cmp])
check("mml.gradient_descent retraces the hand-written loop", same < 1e-9, f"rel. diff {same:.1e}")
check("gradient descent lowers the loss 10x", losses_hand[-1] < 0.1 * losses_hand[0])
adam_target = pick(4.0, 15.0) * 0.5 * NOISE**2
check(
    "Adam fits the curve down to the noise",
    float(adam.value) < adam_target,
    f"{float(adam.value):.2e} < {adam_target:.2e}",
)
_common.finish()
