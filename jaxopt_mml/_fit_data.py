"""Input checks, weights, masks and parameter bounds for the fitting routines (private).

Conventions shared by :func:`curve_fit`, :func:`linear_fit` and :func:`chi_squared`:

* ``y`` has shape ``(N,)`` for one dataset or ``(B, N)`` for ``B`` datasets.
* ``x`` is passed to the model as given; its last axis indexes the points (``(N,)`` or ``(k, N)``
  for ``k`` predictors). In a batched fit ``x`` is per dataset when its leading axis is ``B``
  (``(B, N)`` or ``(B, k, N)``), else shared; ``x_per_dataset`` settles the ambiguous case
  ``k == B``.
* ``sigma`` is a scalar, ``(N,)`` (shared) or ``(B, N)``; ``inf`` gives a point no weight (padding);
  a covariance matrix ``(N, N)`` (scipy's 2-D ``sigma``) is refused, naming it.
* ``mask`` (bool, broadcastable to ``y``): False drops a point.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._tree import check_numbers, dtype_of, is_concrete

NAN_POLICIES = ("raise", "omit", "propagate")


class Layout(NamedTuple):
    """Static facts about the data: the batch size (None for one dataset), N and x's batching."""

    batch: int | None
    n: int
    x_batched: bool


def check_data(x, y, sigma, mask, nan_policy: str, x_per_dataset: bool | None) -> Layout:
    """Check shapes, and values where they are known (:func:`check_values`), now."""
    layout = check_shapes(x, y, sigma, mask, x_per_dataset)
    check_values(x, y, sigma, mask, nan_policy, layout.x_batched)()
    return layout


def check_shapes(x, y, sigma, mask, x_per_dataset: bool | None) -> Layout:
    """Check the shapes of the data (and mask's dtype); the static facts about them."""
    y_shape = np.shape(y)
    if len(y_shape) not in (1, 2):
        raise ValueError(f"y must have shape (N,) or (B, N) for B datasets, got shape {y_shape}")
    n = y_shape[-1]
    if n == 0:
        raise ValueError("y must hold at least one point, got N = 0")
    batch = y_shape[0] if len(y_shape) == 2 else None
    try:
        x_dtype = dtype_of(x)
    except (TypeError, ValueError):  # ragged sequences
        x_dtype = np.dtype(object)
    if not (jnp.issubdtype(x_dtype, jnp.number) or x_dtype == np.dtype(bool)):
        # (a dict, or arrays of different lengths, met NumPy's isfinite message)
        raise TypeError(
            f"x must be an array of numbers, shape (N,) or (k, N) for k predictors (a sequence "
            f"of k arrays of N points is stacked), got {type(x).__name__}"
        )
    x_shape = np.shape(x)
    if len(x_shape) >= 1 and x_shape[-1] != n:
        raise ValueError(
            f"x must have its last axis equal to the number of points N = {n} (y's last axis), "
            f"got x of shape {x_shape}"
        )
    auto = batch is not None and len(x_shape) >= 2 and x_shape[0] == batch
    if x_per_dataset is None:
        x_batched = auto
    else:
        if not isinstance(x_per_dataset, bool | np.bool_):
            raise TypeError(f"x_per_dataset must be True, False or None, got {x_per_dataset!r}")
        x_batched = bool(x_per_dataset)
        if x_batched and batch is None:
            raise ValueError("x_per_dataset=True needs a batch of datasets, y of shape (B, N)")
        if x_batched and not auto:
            raise ValueError(
                f"x_per_dataset=True needs x with a leading axis B = {batch} (y's), got {x_shape}"
            )
    if sigma is not None:
        s_shape = np.shape(sigma)
        if s_shape == (n, n) and s_shape != y_shape:
            # scipy's curve_fit takes a 2-D sigma as y's covariance matrix
            raise ValueError(
                f"sigma must hold standard deviations (a scalar, (N,) or (B, N)), got shape "
                f"{s_shape}: a covariance matrix of y is not supported; whiten instead (with "
                "L = cholesky(cov), fit solve(L, y) by solve(L, model(x, p)), sigma=None)"
            )
        if len(s_shape) > len(y_shape):
            raise ValueError(
                f"sigma must have at most y's {len(y_shape)} axes, got shape {s_shape}"
            )
        if not _broadcasts_to(s_shape, y_shape):
            raise ValueError(
                f"sigma must be a scalar or broadcast to y's shape {y_shape}, got shape {s_shape}"
            )
    if mask is not None:
        if dtype_of(mask) != np.dtype(bool):
            raise TypeError(f"mask must be a boolean array, got dtype {dtype_of(mask)}")
        if not _broadcasts_to(np.shape(mask), y_shape):
            raise ValueError(f"mask must broadcast to y's shape {y_shape}, got {np.shape(mask)}")
    return Layout(batch=batch, n=n, x_batched=x_batched)


def check_values(x, y, sigma, mask, nan_policy: str, x_batched: bool, p0=None):
    """Check concrete values: data under ``nan_policy='raise'``, sigma's sign, ``p0`` finite.

    Returns a function of no arguments that raises ``ValueError`` for bad values. Data on the
    host are checked with NumPy before this returns (the function then does nothing). Data held
    by a GPU or TPU are checked by one jitted reduction on the device, whose flags (one integer)
    are read when the function is called: call it after dispatching the work on the data, so
    that the round trip overlaps that work where the runtime dispatches it asynchronously. The
    read of that one integer took 0.2-0.35 ms on an H100 (jax 0.11.2; docs/gpu_benchmark.md).
    """
    values = nan_policy == "raise" and is_concrete(x, y, sigma, mask)
    positive = sigma is not None and is_concrete(sigma)
    p0 = jax.tree.leaves(p0) if p0 is not None and is_concrete(p0) else []
    if not values:
        x = y = None  # only sigma's sign is checked (where the mask keeps a point, if known)
        mask = mask if is_concrete(mask) else None
    if not positive:
        sigma = None
    data = values or positive
    if not (data or p0):
        return _nothing
    if on_accelerator(x, y, sigma, mask) or (not data and on_accelerator(p0)):
        # One reduction on the device and one integer back, rather than the data to the host
        # (data on the host are checked there, with p0 read back if it is on the device).
        # Evaluated now even where curve_fit is being traced (concrete data or p0 closed over
        # by a jitted caller): staged into that trace, the flags would be a tracer to read.
        with jax.ensure_compile_time_eval():
            flags = _bad_flags_jit(x, y, sigma, mask, p0, x_batched)
        return lambda: _raise_for(_unpack(int(jax.device_get(flags))), values)
    bad = _bad_values(x, y, sigma, mask, x_batched, np)
    bad.append(not all(np.all(np.isfinite(np.asarray(leaf))) for leaf in p0))
    _raise_for([bool(b) for b in bad], values)
    return _nothing


def _nothing():
    return None


def _raise_for(bad, values: bool):
    """Raise for the flags ``(sigma <= 0, y, x, sigma NaN, p0)`` of :func:`_bad_values` (NaN
    data only where ``values``: under ``nan_policy='raise'``)."""
    if bad[0]:
        raise ValueError("sigma must be positive (use inf, or mask, to give a point no weight)")
    names = [name for name, b in zip(("y", "x", "sigma"), bad[1:4], strict=True) if b]
    if values and names:
        raise ValueError(
            f"{' and '.join(names)} hold(s) NaN or inf; clean the data, or pass "
            "nan_policy='omit' to drop those points"
        )
    if bad[4]:
        raise ValueError("p0 holds NaN or inf; give a finite starting point")


def _unpack(flags: int) -> list[bool]:
    return [bool(flags >> i & 1) for i in range(5)]


@functools.partial(jax.jit, static_argnums=5)
def _bad_flags_jit(x, y, sigma, mask, p0, x_batched):
    """:func:`_bad_values` on the device, with ``p0`` not finite, packed into one int32."""
    bad = _bad_values(x, y, sigma, mask, x_batched, jnp)
    bad.append(~jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in p0] or [True])))
    return sum(jnp.asarray(b, jnp.int32) << i for i, b in enumerate(bad))


def _broadcasts_to(shape, target) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without growing it."""
    try:
        return np.broadcast_shapes(shape, target) == tuple(target)
    except ValueError:
        return False


def on_accelerator(*trees) -> bool:
    """True when a leaf is a JAX array held by a GPU or TPU (reading it on the host is a copy)."""
    return any(
        isinstance(leaf, jax.Array) and any(d.platform != "cpu" for d in leaf.devices())
        for leaf in jax.tree.leaves(trees)
    )


def _bad_values(x, y, sigma, mask, x_batched, xp):
    """``(sigma <= 0, y non-finite, x non-finite, sigma NaN)``, each only where ``mask`` keeps a
    point (a masked point is as good as deleted); ``x`` and ``y`` None: only sigma is checked.
    ``xp``: NumPy on the host, or jax.numpy (jitted, below)."""
    false = xp.zeros((), bool)
    if sigma is None:
        sig_bad = sig_nan = false
    else:
        sig = xp.asarray(sigma)
        kept = True
        if mask is not None:  # a shared sigma counts where any dataset keeps the point
            shape = np.broadcast_shapes(np.shape(sig), np.shape(mask))
            sig, kept = xp.broadcast_to(sig, shape), xp.broadcast_to(xp.asarray(mask), shape)
        sig_bad = xp.any((sig <= 0) & kept)
        sig_nan = xp.any(xp.isnan(sig) & kept)
    if y is None:
        return [sig_bad, false, false, sig_nan]
    y = xp.asarray(y)
    keep = xp.ones(y.shape, bool) if mask is None else xp.broadcast_to(xp.asarray(mask), y.shape)
    y_bad = xp.any(~xp.isfinite(y) & keep)
    x = xp.asarray(x)
    n = y.shape[-1]
    if x.ndim == 0:
        return [sig_bad, y_bad, ~xp.isfinite(x), sig_nan]
    # x's last axis is the points: a point's x is bad if any of its values is not finite
    lead = 1 if x_batched else 0
    k = int(np.prod(x.shape[lead:-1]))  # (not -1: an empty batch has no size to infer it from)
    x_fin = xp.all(xp.isfinite(x.reshape(x.shape[:lead] + (k, n))), axis=lead)
    x_keep = keep if x_batched or y.ndim == 1 else xp.any(keep, axis=0)
    x_bad = xp.any(~x_fin & x_keep)
    return [sig_bad, y_bad, x_bad, sig_nan]


def _point_mask_from_x(x, n):
    """Per point: are all of x's values at that point finite (last axis = points)?"""
    if x.ndim == 0 or x.shape[-1] != n:
        return jnp.broadcast_to(jnp.all(jnp.isfinite(x)), (n,))
    fin = jnp.isfinite(x)
    return jnp.all(fin.reshape(-1, n), axis=0) if x.ndim > 1 else fin


def weights(x, y, sigma, mask, nan_policy: str, layout: Layout, dtype):
    """Traced part: ``(x, y, w, bad)`` with ``w = 1 / sigma`` (0 at dropped points; a point is
    used where ``w != 0``, NaN included under ``nan_policy='propagate'``) and ``bad`` per dataset
    (``sigma <= 0`` at a used point, or NaN/inf in used data where ``nan_policy='raise'``, where
    the eager call would have raised)."""
    y = jnp.asarray(y).astype(dtype)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        x = x.astype(dtype)
    sig = jnp.ones((), dtype) if sigma is None else jnp.asarray(sigma).astype(dtype)
    sig = jnp.broadcast_to(sig, y.shape)
    keep = jnp.ones(y.shape, bool) if mask is None else jnp.broadcast_to(jnp.asarray(mask), y.shape)
    if layout.x_batched:
        xfin = jax.vmap(lambda xi: _point_mask_from_x(xi, layout.n))(x)
    else:
        xfin = jnp.broadcast_to(_point_mask_from_x(x, layout.n), y.shape)
    finite = jnp.isfinite(y) & xfin & ~jnp.isnan(sig)
    # sigma <= 0 at a used point: the eager call raises; traced, it is INVALID_INPUT (a negative
    # sigma would otherwise fit as |sigma|, and 0 as an infinite weight)
    bad = jnp.any(keep & (sig <= 0), axis=-1)
    if nan_policy == "raise":
        bad = bad | jnp.any(~finite & keep, axis=-1)
    elif nan_policy == "omit":
        keep = keep & finite
        y = jnp.where(keep, y, 0.0)
    # 1 / sigma only where the point is kept: a masked point may hold sigma = 0, and the
    # discarded branch's -1 / sigma^2 = -inf times its zero cotangent made reverse-mode
    # derivatives in that sigma NaN (forward mode gave 0)
    # (propagate: a NaN sigma gives a NaN weight, and the fit NONFINITE)
    used = keep if nan_policy == "propagate" else keep & ~jnp.isnan(sig)
    w = jnp.where(used, 1.0 / jnp.where(used, sig, 1.0), 0.0)
    # x where no dataset that reads it uses the point (masked, omitted, or sigma = inf) -> a
    # used point's x: the model's output there is discarded, but reverse-mode derivatives
    # through it multiply a zero cotangent by its partial derivatives there, NaN where x is not
    # finite or the model is singular (NaN gradients of chi2, stderr, ...). (Only where a point
    # can be dropped: with every point used, XLA folded the constant test at compile time,
    # 0.4-0.6 s more for 10^4 fits.)
    if may_drop(sigma, mask, nan_policy):
        x = _fill_unused(x, _x_kept(w != 0, x, layout))
    return x, y, w.astype(dtype), bad


def may_drop(sigma, mask, nan_policy: str) -> bool:
    """Whether a point can be unused (static): a mask or sigma given, or NaN data omitted."""
    return mask is not None or sigma is not None or nan_policy == "omit"


def _fill_unused(x, kept):
    """``x`` with its values at points not ``kept`` (broadcast to ``x``'s shape, last axis =
    points) replaced by those at the first kept point of their row (0 where that is not finite
    or no point is kept): a value where the model is evaluated at a used point, so finite with
    finite derivatives wherever the fit is (padding at ``x = 0`` for ``p0 log(x) + p1`` gave NaN
    reverse-mode gradients of chi2 and stderr, although the fit equalled the one without it).
    Unused points' outputs are discarded, so a model that treats points independently (as
    masking, equal to deleting the points, assumes) fits the same."""
    if x.ndim == 0:
        return jnp.where(jnp.isfinite(x) | kept, x, 0.0)
    first = jnp.argmax(kept, axis=-1, keepdims=True)
    safe = jnp.take_along_axis(x, first, axis=-1)
    safe = jnp.where(jnp.isfinite(safe) & jnp.any(kept, axis=-1, keepdims=True), safe, 0.0)
    return jnp.where(kept, x, safe)


def _x_kept(keep, x, layout: Layout):
    """Whether some dataset that reads each of ``x``'s values keeps that point (``keep``: per
    dataset and point), broadcast to ``x``'s shape (its last axis indexes the points)."""
    if x.ndim == 0:
        return jnp.any(keep)
    if layout.batch is None or layout.x_batched:
        per_point = keep  # (N,), or (B, N) for x of shape (B, N) or (B, k, N)
        if layout.x_batched and x.ndim > 2:
            per_point = per_point.reshape(keep.shape[:1] + (1,) * (x.ndim - 2) + keep.shape[1:])
    else:
        per_point = jnp.any(keep, axis=0)  # a shared x: any dataset keeps the point
    return jnp.broadcast_to(per_point, x.shape)


def shared_x_for(x, used):
    """A shared ``x`` as one dataset of a batch sees it: the values at points that this dataset
    does not use (``used``, shape ``(N,)``) replaced by a used point's (:func:`_fill_unused`), as
    :func:`weights` replaces them for points that no dataset uses. Where another dataset keeps
    such a point, the model's NaN partial derivatives there multiplied this dataset's zero
    cotangents in reverse mode (NaN gradients of its chi2 and stderr, which a fit of the
    dataset alone gives finite)."""
    kept = jnp.any(used) if x.ndim == 0 else jnp.broadcast_to(used, x.shape)
    return _fill_unused(x, kept)


class Bounds(NamedTuple):
    lo: jax.Array
    hi: jax.Array


def _flattens_as_written(treedef) -> bool:
    """Whether a pytree's leaves come out in the order they are written: an array, or lists,
    tuples and NamedTuples only. A dict's come out sorted by key (and a custom node's as it
    says), so that a flat sequence of bounds matches them only by chance."""
    node = treedef.node_data()
    if node is None or node[0] is type(None):
        return True
    return issubclass(node[0], list | tuple) and all(
        _flattens_as_written(child) for child in treedef.children()
    )


def make_bounds(
    bounds, p0_flat_shape, ravel, dtype, treedef=None, name: str = "p0"
) -> Bounds | None:
    """Flatten ``bounds=(lower, upper)`` (scalars, arrays or pytrees like ``p0``) to ``(k,)``.

    A side that is neither a scalar nor of ``p0``'s structure (``treedef``) is taken in flat
    order only where ``p0``'s leaves flatten in the order they are written (an array, a list or
    tuple): for a dict ``p0`` a list of bounds is a ``ValueError`` (it was matched to the keys in
    sorted order, silently). ``name``: the starting point's argument, for the messages
    (``least_squares``'s is ``x0``, and its bounds are not shared by a batch of datasets)."""
    if bounds is None:
        return None
    if not isinstance(bounds, tuple | list) or len(bounds) != 2:
        raise ValueError(
            f"bounds must be a pair (lower, upper) of scalars or of {name}'s structure"
        )
    flat = []
    for side, b in zip(("lower", "upper"), bounds, strict=True):
        if b is None:
            b = jnp.inf if side == "upper" else -jnp.inf
        check_numbers(f"bounds {side}", b)
        if not isinstance(b, dict | list | tuple) and np.ndim(b) == 0:
            flat.append(jnp.full(p0_flat_shape, b, dtype))
            continue
        if treedef is not None and not _flattens_as_written(treedef):
            try:
                treedef.flatten_up_to(b)
            except (ValueError, TypeError):
                raise ValueError(
                    f"bounds {side} must be a scalar or have {name}'s structure {treedef}, got "
                    f"{jax.tree.structure(b)}: {name}'s leaves are not in the order they are "
                    "written (a dict's are sorted by key), so a flat list cannot be matched to "
                    "them"
                ) from None
        try:
            fb = jnp.asarray(ravel(b), dtype)
        except Exception:
            raise ValueError(
                f"bounds {side} must be a scalar or have {name}'s structure and shapes"
            ) from None
        if fb.shape != p0_flat_shape:
            shared = (
                "one dataset's p0 structure and shapes (bounds are shared by every dataset)"
                if name == "p0"
                else f"{name}'s structure and shapes"
            )
            raise ValueError(
                f"bounds {side} must be a scalar or have {shared}, got {fb.shape} values for "
                f"{p0_flat_shape[0]} parameters"
            )
        flat.append(fb)
    lo, hi = flat
    if is_concrete(lo, hi) and (np.any(np.isnan(np.asarray(lo))) or np.any(np.isnan(hi))):
        raise ValueError("bounds hold NaN; use -inf / inf (or None) for a side without a bound")
    if is_concrete(lo, hi) and np.any(np.asarray(lo) >= np.asarray(hi)):
        raise ValueError("bounds must have lower < upper for every parameter")
    return Bounds(lo, hi)


_NUDGE = 1e-6


def _one_sided(u):
    """``sqrt(u^2 + 1) - 1`` written without cancellation: ``u^2 / (sqrt(u^2 + 1) + 1)``."""
    return u * u / (jnp.sqrt(u * u + 1.0) + 1.0)


def resolution(b: Bounds):
    """How finely :func:`to_external` can place each parameter: it computes ``p`` as a bound
    plus or minus a distance, rounded to a quantum (an ulp) of at most ``eps`` times the bound's
    size; a step of one or two quanta, ``2 eps |bound|``, is at that floor (0 for a free
    parameter)."""
    size = jnp.maximum(
        jnp.where(jnp.isfinite(b.lo), jnp.abs(b.lo), 0.0),
        jnp.where(jnp.isfinite(b.hi), jnp.abs(b.hi), 0.0),
    )
    return 2.0 * jnp.finfo(size.dtype).eps * size


def to_internal(p, b: Bounds):
    """Parameters -> unconstrained variables ``u`` (MINUIT's transforms; see :func:`to_external`)."""
    lo, hi = b.lo, b.hi
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    # A start on a bound is moved slightly inside: the transforms are flat there, so a parameter
    # that starts exactly on its bound would never move (scipy's make_strictly_feasible, likewise).
    # The move is relative to the bound itself (and at most a millionth of the span): relative
    # to the span alone, a start at 1 within bounds (0, 1e8) was moved to 100.
    span = jnp.where(has_lo & has_hi, hi - lo, jnp.inf)

    def gap(bound):
        return _NUDGE * jnp.minimum(span, jnp.maximum(1.0, jnp.abs(bound)))

    p = jnp.clip(p, jnp.where(has_lo, lo + gap(lo), lo), jnp.where(has_hi, hi - gap(hi), hi))
    lo0 = jnp.where(has_lo, lo, 0.0)
    hi0 = jnp.where(has_hi, hi, 0.0)
    # Two-sided: sin^2(a) = (p - lo) / span and cos^2(a) = (hi - p) / span, a = pi/4 + u/2;
    # arctan2 of the two roots is accurate at both ends (arcsin(2 f - 1) is not near f = 0, 1).
    above, below = jnp.maximum(p - lo0, 0.0), jnp.maximum(hi0 - p, 0.0)
    both = 2.0 * jnp.arctan2(jnp.sqrt(above), jnp.sqrt(below)) - 0.5 * np.pi
    # One-sided: t = sqrt(u^2 + 1) - 1 is the distance from the bound, so u = sqrt(t (t + 2)).
    lower = jnp.sqrt(above * (above + 2.0))
    upper = jnp.sqrt(below * (below + 2.0))
    return jnp.where(has_lo & has_hi, both, jnp.where(has_lo, lower, jnp.where(has_hi, upper, p)))


def slopes(u, b: Bounds):
    """``(p'(u), p''(u), |p'(u)| / max |p'|)`` of the transforms of :func:`to_external`
    (``(1, 0, 1)`` for a free parameter), ``p'`` never exactly 0.

    Two-sided, with ``a = pi/4 + u/2`` as :func:`to_external` computes it:
    ``p' = (hi - lo) sin(a) cos(a)`` and ``p'' = (hi - lo) (cos^2 a - sin^2 a) / 2``; one-sided:
    ``p' = +-u / sqrt(u^2 + 1)`` and ``p'' = +-(u^2 + 1)^(-3/2)``. On a bound ``p' = 0`` (the
    transform's extremum, where the parameter is flat in ``u``): it is replaced by a tiny number
    there (``tiny**(1/4)`` of the dtype, so that its square is still normal), so that ``J = J_p p'``
    keeps the direction and size of ``J_p`` (``J_p = J / p'``) and a parameter on its bound can
    tell whether the data pull it off (see :func:`._fit_lm.release_from_bounds`)."""
    lo, hi = b.lo, b.hi
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    span = jnp.where(has_lo & has_hi, hi - lo, 0.0)
    a = 0.25 * np.pi + 0.5 * u
    sa, ca = jnp.sin(a), jnp.cos(a)
    root = jnp.sqrt(u * u + 1.0)
    side = jnp.where(has_lo, 1.0, -1.0)
    d1 = jnp.where(
        has_lo & has_hi, span * sa * ca, jnp.where(has_lo | has_hi, side * u / root, 1.0)
    )
    d2 = jnp.where(
        has_lo & has_hi,
        0.5 * span * (ca * ca - sa * sa),
        jnp.where(has_lo | has_hi, side / (root * root * root), 0.0),
    )
    # |p'| / max |p'|: 1 far from the bounds, 0 on one
    rel = jnp.where(
        has_lo & has_hi, jnp.abs(2.0 * sa * ca), jnp.where(has_lo | has_hi, jnp.abs(u) / root, 1.0)
    )
    tiny = np.asarray(np.finfo(np.dtype(u.dtype)).tiny ** 0.25, u.dtype)
    # Added, not selected: where p' is exactly 0 (u exactly on the transform's flat point, where
    # a fit onto an active two-sided bound ends) jnp.where(d1 == 0, tiny, d1) had derivative 0,
    # and the implicit rule (which differentiates J = J_p p' once more in u) lost p'' there: the
    # bounded parameter got the free parameter's derivative instead of 0.
    return d1 + jnp.where(d1 == 0, tiny, 0.0), d2, rel


@jax.custom_jvp
def to_external(u, b: Bounds):
    """Unconstrained ``u`` -> parameters, always within ``[lower, upper]``.

    Two-sided: ``lo + (hi - lo) (1 + sin u) / 2``; lower only: ``lo - 1 + sqrt(u^2 + 1)``;
    upper only: ``hi + 1 - sqrt(u^2 + 1)`` (James, *MINUIT Reference Manual*, 1994, section 1.3).
    Each is evaluated as the bound plus or minus a distance computed without cancellation
    (``(1 + sin u) / 2 = sin^2(pi/4 + u/2)``, measured from the nearer bound, and
    ``sqrt(u^2 + 1) - 1 = u^2 / (sqrt(u^2 + 1) + 1)``), so that a parameter near its bound keeps
    its relative precision: ``1 + sin u`` itself holds ``p - lo`` only to ``eps`` absolute.
    """
    lo, hi = b.lo, b.hi
    has_lo, has_hi = jnp.isfinite(lo), jnp.isfinite(hi)
    lo0 = jnp.where(has_lo, lo, 0.0)
    hi0 = jnp.where(has_hi, hi, 0.0)
    span = hi0 - lo0
    a = 0.25 * np.pi + 0.5 * u
    sin2, cos2 = jnp.sin(a) ** 2, jnp.cos(a) ** 2
    both = jnp.where(sin2 <= cos2, lo0 + span * sin2, hi0 - span * cos2)
    t = _one_sided(u)
    p = jnp.where(
        has_lo & has_hi,
        both,
        jnp.where(has_lo, lo0 + t, jnp.where(has_hi, hi0 - t, u)),
    )
    return jnp.clip(p, lo, hi)


@to_external.defjvp
def _to_external_jvp(primals, tangents):
    """The transform's derivative in ``u`` is :func:`slopes`'s ``p'`` (never exactly 0); in the
    bounds, ``cos^2 a`` and ``sin^2 a`` (two-sided) or 1 (one-sided, the bound present)."""
    u, b = primals
    du, db = tangents
    has_lo, has_hi = jnp.isfinite(b.lo), jnp.isfinite(b.hi)
    a = 0.25 * np.pi + 0.5 * u
    w_hi = jnp.where(has_lo & has_hi, jnp.sin(a) ** 2, jnp.where(has_hi, 1.0, 0.0))
    w_lo = jnp.where(has_lo & has_hi, jnp.cos(a) ** 2, jnp.where(has_lo, 1.0, 0.0))
    d_lo = jnp.where(has_lo, db.lo, 0.0)
    d_hi = jnp.where(has_hi, db.hi, 0.0)
    return to_external(u, b), slopes(u, b)[0] * du + w_lo * d_lo + w_hi * d_hi
