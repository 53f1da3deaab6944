"""Problems for the fitting tests and benchmarks: the NIST StRD nonlinear suite and simple models."""

from __future__ import annotations

import functools
import json
import os

import jax.numpy as jnp
import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_NIST_DIR = os.path.join(_HERE, "..", "..", "..", "shared", "data", "nist_strd")


def nist_dir() -> str:
    """``$NIST_STRD_DIR``, else ``../shared/data/nist_strd`` beside the checkout (as conftest)."""
    return os.environ.get("NIST_STRD_DIR", DEFAULT_NIST_DIR)


def nist_available() -> bool:
    return os.path.isfile(os.path.join(nist_dir(), "index.json"))


@functools.cache
def nist_index() -> dict:
    with open(os.path.join(nist_dir(), "index.json")) as fh:
        return json.load(fh)


_NAMES = {
    "exp": jnp.exp,
    "log": jnp.log,
    "sin": jnp.sin,
    "cos": jnp.cos,
    "arctan": jnp.arctan,
    "pi": jnp.pi,
    "sqrt": jnp.sqrt,
}


@functools.cache
def nist_model(name: str):
    """``model(x, p)`` for a NIST problem, built once per name (so that compiles are cached)."""
    entry = nist_index()[name]
    code = compile(entry["model"], f"<nist {name}>", "eval")
    k = entry["n_params"]

    def model(x, p):
        scope = dict(_NAMES, x=x, **{f"b{i + 1}": p[i] for i in range(k)})
        return eval(code, {"__builtins__": {}}, scope)  # noqa: S307 (trusted data file)

    model.__name__ = f"nist_{name}"
    return model


@functools.cache
def nist_data(name: str):
    """``(x, y)`` as float64 numpy arrays (Nelson: ``x`` of shape (2, n), ``y = log(y)``)."""
    entry = nist_index()[name]
    raw = np.loadtxt(os.path.join(nist_dir(), entry["file"]), skiprows=60)
    y = raw[:, 0]
    x = raw[:, 1:].T if raw.shape[1] > 2 else raw[:, 1]
    if entry.get("response") == "log(y)":
        y = np.log(y)
    return x, y


def lre(estimate, certified):
    """Log relative error: correct significant digits, capped at 15 (absolute error if 0)."""
    estimate = np.asarray(estimate, float)
    certified = np.asarray(certified, float)
    err = np.abs(estimate - certified)
    scale = np.where(certified != 0, np.abs(certified), 1.0)
    with np.errstate(divide="ignore"):
        out = -np.log10(err / scale)
    return np.clip(np.where(np.isfinite(estimate), out, 0.0), 0.0, 15.0)


NIST_MAX_ITER = 3000  # MGH10 from start 1 needs about 1,800 iterations


def fit_nist(name: str, max_iter: int = NIST_MAX_ITER):
    """Fit one NIST problem from both starts in one batched call.

    Returns ``(fit, entry, param LREs (2, k), stderr LREs (2, k))``.
    """
    import jaxopt_mml as mml

    entry = nist_index()[name]
    x, y = nist_data(name)
    p0 = jnp.asarray([entry["start1"], entry["start2"]], jnp.float64)
    ys = jnp.broadcast_to(jnp.asarray(y), (2, y.shape[-1]))
    fit = mml.curve_fit(
        nist_model(name), jnp.asarray(x), ys, p0, max_iter=max_iter, x_per_dataset=False
    )
    lre_p = lre(fit.params, np.asarray(entry["certified_params"])[None])
    lre_s = lre(fit.stderr, np.asarray(entry["certified_std_errs"])[None])
    return fit, entry, lre_p, lre_s


def gaussian_peak(x, p):
    """``A exp(-(x - mu)^2 / (2 s^2)) + c`` with ``p = (A, mu, s, c)``."""
    return p[0] * jnp.exp(-((x - p[1]) ** 2) / (2.0 * p[2] ** 2)) + p[3]


def exp_decay(x, p):
    """``a exp(-b x) + c``."""
    return p[0] * jnp.exp(-p[1] * x) + p[2]


def peak_data(batch: int, n: int = 64, noise: float = 0.05, seed: int = 0, dtype=np.float64):
    """The benchmark's Gaussian peaks: ``x (n,)``, ``y (batch, n)``, truth and starts 20% off."""
    rng = np.random.default_rng(seed)
    x = np.linspace(-5.0, 5.0, n)
    truth = np.stack(
        [
            rng.uniform(1.0, 3.0, batch),
            rng.uniform(-1.0, 1.0, batch),
            rng.uniform(0.6, 1.5, batch),
            rng.uniform(0.2, 1.0, batch),
        ],
        axis=1,
    )
    clean = truth[:, :1] * np.exp(-((x - truth[:, 1:2]) ** 2) / (2 * truth[:, 2:3] ** 2))
    y = clean + truth[:, 3:4] + noise * rng.standard_normal((batch, n))
    sign = rng.choice([-1.0, 1.0], size=truth.shape)
    p0 = truth * (1.0 + 0.2 * sign)
    return x.astype(dtype), y.astype(dtype), truth.astype(dtype), p0.astype(dtype)
