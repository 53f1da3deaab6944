"""Bracketing root finders: bisection and bracketed (safe) Newton, per element (private).

Both keep a bracket ``[lo, hi]`` with ``f(lo)`` and ``f(hi)`` of opposite signs and shrink it every
step, so they converge for any continuous ``f``. Both solve scalar equations; arrays of brackets
(and ``args``) are solved elementwise, each element with its own status. A sign change that is
no root (a pole, a jump) is told by ``|f|`` at the bracket's ends, which does not decrease as the
bracket shrinks around it: ``Status.SINGULAR``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ._driver import iterate, make_progress
from ._implicit import solve_with_implicit_grad
from ._roots_common import (
    RootResult,
    broadcast_problem,
    check_scalar_output,
    float_dtype,
    make_result,
    map_elements,
    reject_unknown,
    scalar_tangent_solve,
    wrap_scalar_f,
)
from ._roots_newton import polish
from ._static import static_function
from ._status import Status
from ._tree import (
    check_args,
    check_callable,
    check_positive_int,
    default_tolerances,
)

_RUNNING = int(Status.RUNNING)


class _Bracket(NamedTuple):
    lo: jax.Array
    hi: jax.Array
    flo: jax.Array
    fhi: jax.Array
    x: jax.Array
    fx: jax.Array
    dfx: jax.Array
    dx_old: jax.Array
    dx_older: jax.Array  # the step before dx_old (rtsafe's "fast enough" test compares with it)
    # the last step tried a guess (a point next to an end, or the secant point) that did not
    # halve the bracket: the next step does not guess again
    guess_failed: jax.Array
    # the largest |f| at the ends the bracket has dropped on each side (-1: none yet)
    dropped_lo: jax.Array
    dropped_hi: jax.Array


def _same_sign(a, b):
    return jnp.signbit(a) == jnp.signbit(b)


def _shrink(s, x, fx):
    """``s`` with its bracket cut at ``x`` to the part where ``f`` changes sign (and the |f| of
    the end dropped recorded on its side)."""
    left = _same_sign(fx, s.flo)  # the root lies in [x, hi]
    return s._replace(
        lo=jnp.where(left, x, s.lo),
        hi=jnp.where(left, s.hi, x),
        flo=jnp.where(left, fx, s.flo),
        fhi=jnp.where(left, s.fhi, fx),
        dropped_lo=jnp.where(left, jnp.maximum(s.dropped_lo, jnp.abs(s.flo)), s.dropped_lo),
        dropped_hi=jnp.where(left, s.dropped_hi, jnp.maximum(s.dropped_hi, jnp.abs(s.fhi))),
    )


def _tol(x, rtol, atol):
    return atol + rtol * jnp.abs(x)


def _midpoint(lo, hi):
    """The middle of ``[lo, hi]``, without overflow: ``hi - lo`` overflows for ends of opposite
    signs near the largest float, ``hi / 2 - lo / 2`` never does (and equals ``(hi - lo) / 2``
    exactly whenever that is finite, halving being exact above the subnormals)."""
    return lo + (hi / 2 - lo / 2)


def _init(f, lower, upper, x0, with_derivative):
    """Order the bracket, evaluate its ends, start at ``x0`` (or the middle)."""
    lo, hi = jnp.minimum(lower, upper), jnp.maximum(lower, upper)
    width = hi - lo
    flo, fhi = f(lo), f(hi)
    invalid = _same_sign(flo, fhi) & (flo != 0) & (fhi != 0)
    # Tested on the ends themselves: bracketed Newton's first shrink may drop the end where f is
    # NaN, and its status then depended on that NaN's sign bit (NONFINITE, BRACKET_INVALID or a
    # run to SUCCESS) where bisection reports NONFINITE. An infinite f at an end has a sign, all
    # that either solver reads there (log x on [0, 2], as scipy's bisect and brentq take it);
    # an infinite end itself is no bracket (its middle is inf: "two adjacent floats").
    ends_defined = ~jnp.isnan(flo) & ~jnp.isnan(fhi) & jnp.isfinite(lo) & jnp.isfinite(hi)
    root_lo, root_hi = flo == 0, fhi == 0
    none = -jnp.ones_like(flo)
    zero = jnp.zeros_like(lo)
    state = _Bracket(lo, hi, flo, fhi, lo, flo, zero, width, width, zero != 0, none, none)
    if with_derivative:
        x = _midpoint(lo, hi) if x0 is None else jnp.clip(x0, lo, hi)
        fx, dfx = jax.jvp(f, (x,), (jnp.ones_like(x),))
        state = _shrink(state, x, fx)
    else:  # start at the better end; the first step evaluates the middle
        use_lo = jnp.abs(flo) <= jnp.abs(fhi)
        x, fx = jnp.where(use_lo, lo, hi), jnp.where(use_lo, flo, fhi)
        dfx = jnp.zeros_like(x)
    # An end that is a root: collapse the bracket onto it.
    root = root_lo | root_hi
    x = jnp.where(
        root_lo, jnp.minimum(lower, upper), jnp.where(root_hi, jnp.maximum(lower, upper), x)
    )
    fx = jnp.where(root, jnp.zeros_like(fx), fx)
    lo, hi = jnp.where(root, x, state.lo), jnp.where(root, x, state.hi)
    state = state._replace(lo=lo, hi=hi, x=x, fx=fx, dfx=dfx, dx_old=hi - lo, dx_older=width)
    return state, invalid, ends_defined


def _narrow(s: _Bracket, rtol, atol):
    """The bracket is within the tolerance (or two adjacent floats)."""
    mid = _midpoint(s.lo, s.hi)
    unsplittable = (mid <= s.lo) | (mid >= s.hi)  # adjacent floats: nothing left to bisect
    # x is an end of the bracket, so the root is within its width of x: the width is what must
    # be within the tolerance (as scipy's bisect; half of it let x miss the tolerance by up to
    # 2x). hi / 2 - lo / 2: the width itself may overflow (an infinite width never converges).
    return (s.hi / 2 - s.lo / 2 <= 0.5 * _tol(s.x, rtol, atol)) | unsplittable


def _finished(s: _Bracket, rtol, atol):
    return (s.fx == 0) | _narrow(s, rtol, atol)


def _singular(s: _Bracket):
    """The bracket shrank, but ``|f|`` at its ends did not decrease: on each side that the
    bracket moved, ``|f|`` at the end now is at least the largest ``|f|`` at the ends it dropped
    there (and it moved on one side at least). Near a root of a continuous ``f``, ``|f|`` at the
    ends falls with the bracket's width; across a pole it grows (``1/x``), across a jump it stays
    (``sign(x)``): the sign change is no root. (An end that never moved counts as not
    decreasing, so that a root next to an end where ``f`` is infinite, ``log x + 30`` on
    ``[0, 1]``, is still told by the end that moved.)"""
    lo_up = (s.dropped_lo < 0) | (jnp.abs(s.flo) >= s.dropped_lo)
    hi_up = (s.dropped_hi < 0) | (jnp.abs(s.fhi) >= s.dropped_hi)
    moved = (s.dropped_lo >= 0) | (s.dropped_hi >= 0)
    return lo_up & hi_up & moved


def _run(f, lower, upper, x0, *, rtol, atol, max_iter, newton):
    dtype = lower.dtype
    rtol_, atol_ = jnp.asarray(rtol, dtype), jnp.asarray(atol, dtype)
    state, invalid, ends_defined = _init(f, lower, upper, x0, newton)
    failure0 = jnp.where(invalid, int(Status.BRACKET_INVALID), _RUNNING)
    # NaN at an end is reported as NONFINITE by the driver through f (below); an infinite f at
    # the end bisection starts from (both ends infinite) is capped, as the driver takes it for
    # a non-finite iterate.
    big = jnp.finfo(dtype).max
    fnorm0 = jnp.where(ends_defined, jnp.minimum(jnp.abs(state.fx), big), jnp.nan)
    progress = make_progress(
        state.x,
        fnorm0,
        converged=_finished(state, rtol_, atol_) & ~invalid,
        failure=failure0,
    )

    def step(s: _Bracket):
        mid = _midpoint(s.lo, s.hi)
        if newton:
            xn = s.x - s.fx / s.dfx
            inside = (xn > s.lo) & (xn < s.hi)  # False for NaN/inf as well
            # rtsafe's test: the Newton step at most half the step before the last one (the
            # last one, a bisection's, is half the bracket: where the root lies near an end the
            # Newton step is about the bracket, and compared with the last step it was never
            # taken: x (1 + x) - 1e-20 on [0, 1] bisected 38 times)
            fast = jnp.abs(2 * s.fx) <= jnp.abs(s.dx_older * s.dfx)
            use_newton = inside & fast
            # A Newton step that lands on an end, or past it by no more than the rounding of
            # x, says that the root is nearer to that end than x can resolve (x - 1e-20 on
            # [0, 1]: from 0.5 the step lands on 0 exactly). It was never taken (nor "fast":
            # it is as long as the last bisection), and bisection alone took 66 steps there
            # and ran out of max_iter for x - 1e-100. The point eps |x - end| inside that end
            # is tried instead: where the root is there, the bracket shrinks by eps (and the
            # Newton step from it lands inside); where it is not, the next step may not try
            # such a point again, so the bracket still at least halves every other step.
            eps = jnp.finfo(dtype).eps
            at_lo = xn <= s.lo
            end = jnp.where(at_lo, s.lo, s.hi)
            # (x may be that end itself, where its Newton step rounds to 0: x**2 - 2 with
            # rtol = atol = 0 reached the float nearest sqrt(2) in 4 steps and then bisected
            # the rest of the bracket, 54 steps in all. Then the float next to x is tried.)
            other = jnp.where(at_lo, s.hi, s.lo)
            near = end + (other - end) * eps
            near = jnp.where(near == end, jnp.nextafter(end, other), near)
            slack = 4 * eps * jnp.maximum(jnp.abs(s.x), jnp.abs(end))
            onto_end = ~inside & (jnp.abs(xn - end) <= slack) & ~s.guess_failed
            try_near = onto_end & (near > s.lo) & (near < s.hi) & ~use_newton
            # A Newton step that leaves the bracket by more (f bends away from its tangent:
            # log1p(x) - 1e-20 on [0, 1], whose steps from the right all end below 0 by about
            # x^2 / 2) was a bisection: 33 of them before x was near enough to 1e-20 for the
            # step to land inside, where brentq takes 2 steps. The secant of the bracket's ends
            # is tried instead (1.2e-20 here); where it does not halve the bracket, the next
            # step does not guess again, as above.
            secant = s.lo + (s.hi - s.lo) * (s.flo / (s.flo - s.fhi))  # NaN for inf / inf
            # (only where the step left the bracket by less than half its width, a hint that
            # the root is near that end: from afar the secant of 1/x - 1 on [1e-6, 1e6] crawls)
            past = jnp.abs(xn - end) <= (s.hi / 2 - s.lo / 2)
            try_secant = (
                ~inside & past & ~try_near & ~s.guess_failed & (secant > s.lo) & (secant < s.hi)
            )
            guess = try_near | try_secant
            x = jnp.where(
                use_newton, xn, jnp.where(try_near, near, jnp.where(try_secant, secant, mid))
            )
            fx, dfx = jax.jvp(f, (x,), (jnp.ones_like(x),))
        else:
            x = mid
            fx, dfx = f(x), s.dfx
        new = _shrink(s, x, fx)
        if newton:
            # (where a point next to an end is tried, the bracket halves where the root is
            # next to that end: f(near) has the sign of the other end)
            guess_failed = guess & (new.hi / 2 - new.lo / 2 > (s.hi / 2 - s.lo / 2) / 2)
        else:
            guess_failed = s.guess_failed
        new = new._replace(
            x=x, fx=fx, dfx=dfx, dx_old=x - s.x, dx_older=s.dx_old, guess_failed=guess_failed
        )
        narrow = _narrow(new, rtol_, atol_) & (fx != 0)
        converged = narrow
        if newton:
            # An infinite f'(x) makes the Newton step 0 whatever f(x) is: no estimate.
            predicted = (jnp.abs(fx / dfx) <= _tol(x, rtol_, atol_)) & jnp.isfinite(dfx)
            inside = (x - fx / dfx >= new.lo) & (x - fx / dfx <= new.hi)
            converged = converged | (predicted & inside)
            narrow = narrow & ~(predicted & inside)
        # A bracket shrunk to the tolerance around a pole or a jump of f, not a root
        failure = jnp.where(narrow & _singular(new), int(Status.SINGULAR), _RUNNING)
        prog = make_progress(
            x,
            jnp.abs(fx),
            dx=x - s.x,
            df=jnp.abs(fx) - jnp.abs(s.fx),
            converged=converged | (fx == 0),
            failure=failure,
        )
        return new, prog

    out = iterate(step, state, progress, max_iter=max_iter, rtol=rtol, atol=atol, cauchy=False)
    s = out.state
    if newton:  # take the final Newton step too where it stays in the bracket
        d = -s.fx / s.dfx
        d = jnp.where((s.x + d >= s.lo) & (s.x + d <= s.hi), d, jnp.zeros_like(d))
        x, fx = polish(f, s.x, s.fx, d, out.status)
        s = s._replace(x=x, fx=fx)
    return s, out


def _real_array(func: str, what: str, value: Any) -> jax.Array:
    """``value`` (a bracket end or the start) as an array of real numbers; misuse named: a complex
    end was refused as a "complex x0" (bisection has no x0), and None or a string with JAX's
    message about ``jnp.array``, which named neither the solver nor the argument."""
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or not (
        jnp.issubdtype(array.dtype, jnp.floating)
        or jnp.issubdtype(array.dtype, jnp.integer)
        or jnp.issubdtype(array.dtype, jnp.bool_)
    ):
        got = f"{type(value).__name__} {value!r}" if array is None else f"dtype {array.dtype}"
        raise TypeError(f"{func}: {what} must be a real number or an array of them, got {got}")
    return array


def _bracket_solver(name: str, newton: bool):
    known = ("args", "rtol", "atol", "max_iter") + (("x0",) if newton else ())

    def solver(f, lower, upper, *, args=(), rtol=None, atol=None, max_iter=None, **opts):
        # x0 is an option of bracketed Newton only: bisection reports it as unknown.
        x0 = opts.pop("x0", None) if newton else None
        check_callable("f", f)
        reject_unknown(name, opts, known)
        if max_iter is None:
            max_iter = 100
        max_iter = check_positive_int("max_iter", max_iter)  # a Python int: one program
        args = check_args(name, args, arrays=True)
        named = {"lower": lower, "upper": upper}
        if x0 is not None:
            named["x0"] = x0
        arrays = {k: _real_array(name, k, v) for k, v in named.items()}
        dtype = float_dtype(jnp.result_type(*arrays.values()))
        arrays = {k: v.astype(dtype) for k, v in arrays.items()}
        rtol, atol = default_tolerances(dtype, rtol, atol, power=0.75)
        return run(arrays, args, f=static_function(f), rtol=rtol, atol=atol, max_iter=max_iter)

    @functools.partial(jax.jit, static_argnames=("f", "rtol", "atol", "max_iter"))
    def run(arrays, args, *, f, rtol, atol, max_iter):
        dtype = jnp.result_type(*arrays.values())
        shape, flat, args_flat, in_axes = broadcast_problem(name, arrays, args)
        g = wrap_scalar_f(f, dtype)
        args_elem = jax.tree.map(
            lambda a, ax: jax.ShapeDtypeStruct(a.shape[1:] if ax == 0 else a.shape, a.dtype),
            args_flat,
            in_axes,
        )
        check_scalar_output(name, f, dtype, args_elem)
        keys = tuple(flat)

        def solve_one(*xs_and_args):
            *xs, args_i = xs_and_args
            named = dict(zip(keys, xs, strict=True))

            def fun(x):
                return g(x, *args_i)

            def solve(_guess):
                state, out = _run(
                    fun,
                    named["lower"],
                    named["upper"],
                    named.get("x0"),
                    rtol=rtol,
                    atol=atol,
                    max_iter=max_iter,
                    newton=newton,
                )
                return state.x, (state.fx, out.status, out.n_iter)

            x, (fun_x, status, n_iter) = solve_with_implicit_grad(
                fun, named["lower"], solve, tangent_solve=scalar_tangent_solve
            )
            return x, fun_x, status, n_iter

        n = int(np.prod(shape))
        x, fun, status, n_iter = map_elements(
            solve_one, tuple(flat[k] for k in keys), args_flat, in_axes, n
        )
        # The bracket's ends (for bracketed Newton also its start and final step), one per step.
        return make_result(x, fun, status, n_iter, n_iter + (4 if newton else 2), shape)

    solver.__name__ = name
    return solver


def bisection(
    f: Callable[..., Any],
    lower: Any,
    upper: Any,
    *,
    args: tuple = (),
    rtol: float | None = None,
    atol: float | None = None,
    max_iter: int = 100,
    **options: Any,
) -> RootResult:
    r"""Find a root of a scalar equation ``f(x, *args) = 0`` in ``[lower, upper]`` by bisection.

    Halves the bracket at every step, keeping the half where ``f`` changes sign. After ``k`` steps
    the bracket is :math:`2^{-k}` of the original, so it converges (linearly) for any ``f`` that is
    continuous on the bracket. Stops when the bracket, one of whose ends is ``x``, is narrower
    than :math:`atol + rtol |x|` (so ``x`` is within that of the root, as with scipy's
    ``bisect``), when ``f(x) = 0``, or when the bracket is two adjacent floats.

    ``lower``, ``upper`` and every leaf of ``args`` are broadcast together; each element is solved
    on its own (``jax.vmap``), with its own status. A bracket without a sign change gives
    ``Status.BRACKET_INVALID`` (no exception); NaN or inf in the bracket, or NaN in ``f`` at its
    ends, gives ``Status.NONFINITE``, while an infinite ``f`` at an end counts by its sign
    (``log x`` on ``[0, 2]``, as scipy's ``bisect`` takes it). The root is differentiable w.r.t.
    ``args`` (implicit function theorem).

    A bracket can hold a sign change that is no root: a pole (``1/x`` on ``[-1, 2]``, ``tan x``
    on ``[1, 2]``) or a jump (``sign(x)``). Bisection converges to it all the same (so do scipy's
    ``bisect`` and ``brentq``, silently); here, where the bracket shrinks to the tolerance while
    ``|f|`` at its ends does not decrease (on each side where the bracket moved, ``|f|`` at the
    end is at least the largest ``|f|`` at the ends dropped there), the status is
    ``Status.SINGULAR`` (as MATLAB's ``fzero`` flags a "singular point"), with ``x`` where ``f``
    changes sign. Near a root of a continuous ``f`` that ``|f|`` falls with the bracket, however
    steeply ``f`` rises (``cbrt``, ``atan(1e10 x)``). A jump towards which ``|f|`` still decreases
    (``x + sign(x)``: ``|f|`` falls to 1, not to 0) is not told from a root: check ``fun``.

    Args:
        f: ``f(x, *args)`` for a scalar ``x`` (elementwise over arrays).
        lower, upper: the bracket (either order).
        args: extra arguments of ``f``, split per element.
        rtol, atol: tolerances on ``x`` (default ``eps ** 0.75`` of the dtype).
        max_iter: the largest number of halvings (60 reach float64 rounding from a unit bracket).

    Returns:
        :class:`RootResult` with the broadcast shape.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> res = mml.bisection(lambda x: jnp.cos(x) - x, 0.0, 1.0)
        >>> print(round(float(res.x), 4), mml.Status(int(res.status)).name)
        0.7391 SUCCESS

    References:
        R. L. Burden and J. D. Faires, *Numerical Analysis*, 9th ed., section 2.1.
    """
    return _BISECTION(
        f, lower, upper, args=args, rtol=rtol, atol=atol, max_iter=max_iter, **options
    )


def bracketed_newton(
    f: Callable[..., Any],
    lower: Any,
    upper: Any,
    *,
    x0: Any = None,
    args: tuple = (),
    rtol: float | None = None,
    atol: float | None = None,
    max_iter: int = 100,
    **options: Any,
) -> RootResult:
    r"""Newton-Raphson kept inside a bracket ``[lower, upper]`` (a safe Newton, "rtsafe").

    From ``x0`` (default the middle of the bracket) each step tries the Newton step
    :math:`x - f(x)/f'(x)` (``f'`` by forward-mode AD, together with ``f`` in one ``jax.jvp``) and takes
    it when it lands strictly inside the current bracket and shrinks ``|f|`` fast enough
    (:math:`|2 f(x)| \le |\Delta x_{\text{prev}} f'(x)|`, :math:`\Delta x_{\text{prev}}` the
    step before the last one, as in rtsafe); otherwise it bisects. A Newton step that rounds onto
    an end of the bracket (a root nearer to it than ``x`` resolves) tries the point
    ``eps`` times the bracket's width inside that end instead (at least the next float: with
    ``rtol = atol = 0`` it ends on two adjacent floats), and one that leaves the bracket past an end by
    less than half its width (``f`` bends away from its tangent near a root next to that end)
    the secant of the bracket's ends; after such a guess that did not halve the bracket the
    next step bisects rather than guessing again. The bracket shrinks
    around the root at every step, so it converges for any continuous ``f`` with a sign change,
    quadratically once Newton takes over. Converged when the next Newton step, inside the bracket,
    is within :math:`atol + rtol|x|`, or the bracket (``x`` is one of its ends) is narrower than
    that, or ``f(x) = 0``. At a root of multiplicity :math:`m \ge 3` the Newton step
    underestimates the error :math:`m`-fold: ``x`` can then be up to
    :math:`(m - 1)(atol + rtol|x|)` from the root (:func:`bisection`'s bound holds for any root).

    Elementwise over arrays like :func:`bisection`; an invalid bracket is
    ``Status.BRACKET_INVALID``, a pole or a jump of ``f`` that the bracket shrank around is
    ``Status.SINGULAR`` (as for :func:`bisection`). The root is differentiable w.r.t. ``args``.

    Args:
        f: ``f(x, *args)`` for a scalar ``x``.
        lower, upper: the bracket (either order).
        x0: the starting point (clipped into the bracket); default the middle.
        args: extra arguments of ``f``, split per element.
        rtol, atol: tolerances on ``x`` (default ``eps ** 0.75`` of the dtype).
        max_iter: the largest number of steps.

    Returns:
        :class:`RootResult` with the broadcast shape.

    Example:
        >>> import jaxopt_mml as mml
        >>> res = mml.bracketed_newton(lambda x, c: x**3 - c, 0.0, 3.0, args=(2.0,))
        >>> round(float(res.x), 6)    # cbrt(2)
        1.259921

    References:
        W. H. Press et al., *Numerical Recipes*, 3rd ed., section 9.4 (rtsafe).
    """
    return _BRACKETED_NEWTON(
        f, lower, upper, x0=x0, args=args, rtol=rtol, atol=atol, max_iter=max_iter, **options
    )


_BISECTION = _bracket_solver("bisection", newton=False)
_BRACKETED_NEWTON = _bracket_solver("bracketed_newton", newton=True)
