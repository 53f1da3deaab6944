"""Input checks, weights, masks and parameter bounds for the fitting routines (private).

Conventions shared by :func:`curve_fit`, :func:`linear_fit` and :func:`chi_squared`:

* ``y`` has shape ``(N,)`` for one dataset or ``(B, N)`` for ``B`` datasets.
* ``x`` is passed to the model as given; its last axis indexes the points (``(N,)`` or ``(k, N)``
  for ``k`` predictors). In a batched fit ``x`` is per dataset when its leading axis is ``B`` and
  it has one more axis than ``(N,)``-shaped... i.e. ``x.shape == (B, N)`` or ``(B, k, N)``;
  otherwise it is shared by all datasets.
* ``sigma`` is a scalar, ``(N,)`` (shared) or ``(B, N)``; ``inf`` gives a point no weight (padding).
* ``mask`` (bool, broadcastable to ``y``): False drops a point.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NAN_POLICIES = ("raise", "omit", "propagate")


def is_concrete(*trees) -> bool:
    """True when no leaf is a tracer (so that values can be read on the host)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(trees))


class Data(NamedTuple):
    x: object
    y: jax.Array
    w: jax.Array  # 1 / sigma, 0 where a point is dropped
    bad: jax.Array  # per dataset: the input holds NaN/inf where nan_policy='raise' (traced)
    x_batched: bool
    batch: int | None


def _point_mask_from_x(x, n):
    """Per point: are all of x's values at that point finite (last axis = points)?"""
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != n:
        return jnp.all(jnp.isfinite(x)) * jnp.ones((n,), bool)
    fin = jnp.isfinite(x)
    return jnp.all(fin.reshape(-1, n), axis=0) if x.ndim > 1 else fin


def prepare(x, y, sigma, mask, nan_policy: str, dtype) -> Data:
    """Validate shapes, build weights and masks, and apply ``nan_policy``."""
    y = jnp.asarray(y)
    if not jnp.issubdtype(y.dtype, jnp.inexact):
        y = y.astype(dtype)
    y = y.astype(dtype)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must have shape (N,) or (B, N) for B datasets, got shape {y.shape}")
    n = y.shape[-1]
    if n == 0:
        raise ValueError("y must hold at least one point, got N = 0")
    batch = y.shape[0] if y.ndim == 2 else None
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(dtype)
    x_batched = batch is not None and x.ndim >= 2 and x.shape[0] == batch and x.shape[-1] == n
    if x.ndim >= 1 and x.shape[-1] != n:
        raise ValueError(
            f"x must have its last axis equal to the number of points N = {n} (y's last axis), "
            f"got x of shape {x.shape}"
        )
    if sigma is None:
        sig = jnp.ones((), dtype)
    else:
        sig = jnp.asarray(sigma, dtype)
        try:
            jnp.broadcast_shapes(sig.shape, y.shape)
        except ValueError:
            raise ValueError(
                f"sigma must be a scalar or broadcast to y's shape {y.shape}, got shape {sig.shape}"
            ) from None
        if sig.ndim > y.ndim:
            raise ValueError(f"sigma must have at most y's {y.ndim} axes, got shape {sig.shape}")
        if is_concrete(sig) and np.any(np.asarray(sig) <= 0):
            raise ValueError("sigma must be positive (use inf, or mask, to give a point no weight)")
    sig = jnp.broadcast_to(sig, y.shape)
    keep = jnp.ones(y.shape, bool)
    if mask is not None:
        m = jnp.asarray(mask)
        if m.dtype != bool:
            raise TypeError(f"mask must be a boolean array, got dtype {m.dtype}")
        try:
            keep = jnp.broadcast_to(m, y.shape)
        except ValueError:
            raise ValueError(f"mask must broadcast to y's shape {y.shape}, got {m.shape}") from None

    if x_batched:
        xfin = jax.vmap(lambda xi: _point_mask_from_x(xi, n))(x)
    else:
        xfin = jnp.broadcast_to(_point_mask_from_x(x, n), y.shape)
    finite = jnp.isfinite(y) & xfin & ~jnp.isnan(sig)
    bad = jnp.zeros(y.shape[:-1], bool)
    if nan_policy == "raise":
        if is_concrete(x, y, sig, keep):
            where = np.asarray(~finite & keep)
            if where.any():
                names = []
                if not np.all(np.isfinite(np.asarray(y))[np.asarray(keep)]):
                    names.append("y")
                if not np.all(np.asarray(xfin)):
                    names.append("x")
                if np.any(np.isnan(np.asarray(sig))):
                    names.append("sigma")
                raise ValueError(
                    f"{' and '.join(names) or 'the data'} hold(s) NaN or inf at {int(where.sum())} "
                    "point(s); clean the data, or pass nan_policy='omit' to drop those points"
                )
        bad = jnp.any(~finite & keep, axis=-1)
    elif nan_policy == "omit":
        keep = keep & finite
        y = jnp.where(keep, y, 0.0)
        if x_batched:
            x = jnp.where(jnp.isfinite(x), x, 0.0)
        elif is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
            x = jnp.where(jnp.isfinite(x), x, 0.0)
        elif not is_concrete(x):
            x = jnp.where(jnp.isfinite(x), x, 0.0)
    w = jnp.where(keep & ~jnp.isnan(sig), 1.0 / jnp.where(jnp.isnan(sig), 1.0, sig), 0.0)
    return Data(x=x, y=y, w=w.astype(dtype), bad=bad, x_batched=x_batched, batch=batch)


class Bounds(NamedTuple):
    lo: jax.Array
    hi: jax.Array


def make_bounds(bounds, p0_flat_shape, ravel, dtype) -> Bounds | None:
    """Flatten ``bounds=(lower, upper)`` (scalars, arrays or pytrees like ``p0``) to ``(k,)``."""
    if bounds is None:
        return None
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper) of scalars or of p0's structure")
    flat = []
    for name, b in zip(("lower", "upper"), bounds, strict=True):
        if b is None:
            b = jnp.inf if name == "upper" else -jnp.inf
        if jnp.ndim(b) == 0 and not isinstance(b, dict | list | tuple):
            flat.append(jnp.full(p0_flat_shape, b, dtype))
            continue
        try:
            fb = jnp.asarray(ravel(b), dtype)
        except Exception:
            raise ValueError(
                f"bounds {name} must be a scalar or have p0's structure and shapes"
            ) from None
        if fb.shape != p0_flat_shape:
            raise ValueError(
                f"bounds {name} must be a scalar or have p0's structure and shapes, got {fb.shape} "
                f"values for {p0_flat_shape[0]} parameters"
            )
        flat.append(fb)
    lo, hi = flat
    if is_concrete(lo, hi) and np.any(np.asarray(lo) >= np.asarray(hi)):
        raise ValueError("bounds must have lower < upper for every parameter")
    return Bounds(lo, hi)


def to_internal(p, b: Bounds):
    """Parameters -> unconstrained variables ``u`` (MINUIT's transforms)."""
    lo, hi = b.lo, b.hi
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    p = jnp.clip(p, lo, hi)
    span = jnp.where(has_lo & has_hi, hi - lo, 1.0)
    both = jnp.arcsin(jnp.clip(2.0 * (p - jnp.where(has_lo, lo, 0.0)) / span - 1.0, -1.0, 1.0))
    lower = jnp.sqrt(jnp.maximum((p - jnp.where(has_lo, lo, 0.0) + 1.0) ** 2 - 1.0, 0.0))
    upper = jnp.sqrt(jnp.maximum((jnp.where(has_hi, hi, 0.0) - p + 1.0) ** 2 - 1.0, 0.0))
    return jnp.where(has_lo & has_hi, both, jnp.where(has_lo, lower, jnp.where(has_hi, upper, p)))


def to_external(u, b: Bounds):
    """Unconstrained ``u`` -> parameters, always within ``[lower, upper]``.

    Two-sided: ``lo + (hi - lo) (1 + sin u) / 2``; lower only: ``lo - 1 + sqrt(u^2 + 1)``;
    upper only: ``hi + 1 - sqrt(u^2 + 1)`` (James, *MINUIT Reference Manual*, 1994, section 1.3).
    """
    lo, hi = b.lo, b.hi
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo0 = jnp.where(has_lo, lo, 0.0)
    hi0 = jnp.where(has_hi, hi, 0.0)
    both = lo0 + (hi0 - lo0) * 0.5 * (1.0 + jnp.sin(u))
    root = jnp.sqrt(u * u + 1.0)
    p = jnp.where(
        has_lo & has_hi,
        both,
        jnp.where(has_lo, lo0 - 1.0 + root, jnp.where(has_hi, hi0 + 1.0 - root, u)),
    )
    return jnp.clip(p, lo, hi)
