"""The one iteration driver that every solver runs on.

A solver is two pure pieces: an initial ``(state, Progress)`` and a ``step(state) -> (state,
Progress)``. :func:`iterate` owns the ``lax.while_loop``, counts steps, applies the ``rtol``/``atol``
termination test, detects non-finite values, records the history and sets the :class:`Status`.
Solvers never write their own outer loop; they report what they know through :class:`Progress`.

Termination (all tests per problem; batch with ``jax.vmap``):

* the solver's own test (``Progress.converged``, e.g. a gradient norm below tolerance), or
* the Cauchy test, when ``cauchy=True``: the last step was small in every element,
  ``|dx_i| <= atol + rtol |x_i|``, *and* the merit barely changed, ``|df| <= atol + rtol |f|``.

A minimiser may also give a lower limit on the merit (``f_limit``): an iterate below it stops
the loop with ``Status.UNBOUNDED`` (MATLAB's ``ObjectiveLimit``).

A step that produces a NaN or inf in ``x`` or ``f`` is rejected: the loop stops with
``Status.NONFINITE`` and the last finite iterate is returned. A step may also report a failure of its
own (``Progress.failure``, e.g. ``Status.SINGULAR``), which stops the loop with that status.

Under ``jax.vmap`` the loop runs until the slowest element stops; finished elements are frozen (their
state and ``n_iter`` no longer change), so per-element results are exact, but the wall time is set by
the stragglers. Keep ``max_iter`` suited to the problem when batching, or give a batch of
independent problems to :func:`iterate_pool`, which runs them through a fixed number of lanes
and hands a lane the next problem as soon as its own stops (same tests, same statuses).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._status import Status
from ._tree import (
    PyTree,
    check_int,
    check_positive_int,
    tree_all_finite,
    tree_step_small,
    tree_where,
)

__all__ = [
    "Progress",
    "History",
    "DriverOutput",
    "iterate",
    "iterate_pool",
    "make_progress",
    "check_loop_options",
]

_RUNNING = int(Status.RUNNING)
_MAX_COUNT = 2**31 - 1  # the largest int32: iteration counters are int32


class Progress(NamedTuple):
    """What a solver reports to the driver after each step (and at its start).

    Attributes:
        x: the current iterate (a pytree).
        f: a scalar merit: the objective, ``|F(x)|``, or chi-squared.
        dx: the step just taken, same structure as ``x``.
        df: the change of ``f`` in that step (``inf`` at the start).
        converged: the solver's own convergence test (bool scalar).
        failure: a :class:`Status` code the step detected, or ``Status.RUNNING`` for none.
    """

    x: PyTree
    f: jax.Array
    dx: PyTree
    df: jax.Array
    converged: jax.Array
    failure: jax.Array


class History(NamedTuple):
    """Fixed-size per-iteration record: entry ``k`` holds the iterate after ``k`` steps.

    ``x`` leaves and ``f`` have a leading axis of the requested length; entries past ``length``
    (the number recorded: ``min(n_iter + 1, len)``, one fewer after a step rejected as
    non-finite, which is not recorded) are NaN so that plots skip them.
    """

    x: PyTree
    f: jax.Array
    length: jax.Array


class DriverOutput(NamedTuple):
    state: Any
    progress: Progress
    n_iter: jax.Array
    status: jax.Array
    history: History | None


def make_progress(
    x: PyTree,
    f: jax.Array,
    *,
    dx: PyTree | None = None,
    df: jax.Array | None = None,
    converged: jax.Array | bool = False,
    failure: jax.Array | int = _RUNNING,
) -> Progress:
    """Build a :class:`Progress`; ``dx`` and ``df`` default to ``inf`` (no step taken yet)."""
    f = jnp.asarray(f)
    if dx is None:
        dx = jax.tree.map(lambda u: jnp.full_like(u, jnp.inf), x)
    if df is None:
        df = jnp.full_like(f, jnp.inf)
    return Progress(
        x=x,
        f=f,
        dx=dx,
        df=jnp.asarray(df, dtype=f.dtype),
        converged=jnp.asarray(converged, dtype=bool),
        failure=jnp.asarray(failure, dtype=jnp.int32),
    )


def check_loop_options(max_iter: Any, history: Any) -> tuple[int, int]:
    """Validate the driver's static options; ``history=True`` means 1000 entries."""
    # NumPy integers count as such (np.int64(100) from a computation), as for the solvers' other
    # integer options; no int ("10", 10.0) is a TypeError as there (it was a ValueError here)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    # The iteration counters are int32: a larger max_iter (2**31 and up) wrapped around when the
    # loop compared a counter with it (2**31 read as -2**31: MAX_ITER at the start, x0 returned;
    # without x64 an OverflowError naming no option). No run reaches 2**31 - 1 iterations anyway.
    max_iter = min(int(max_iter), _MAX_COUNT)
    if isinstance(history, bool | np.bool_):
        history = 1000 if history else 0
    if not isinstance(history, int | np.integer):  # ("10" was a ValueError, as max_iter's was)
        raise TypeError(
            f"history must be a bool or an int, got {type(history).__name__} {history!r}"
        )
    if history < 0:
        raise ValueError(f"history must be a bool or a non-negative int, got {history!r}")
    return int(max_iter), int(history)


def _decide(
    progress: Progress, rtol, atol, cauchy: bool, check_finite: bool = True, f_limit=None
) -> jax.Array:
    """The status after a step: UNBOUNDED, NONFINITE, the step's failure, SUCCESS, or RUNNING."""
    converged = progress.converged
    if cauchy:
        step_small = tree_step_small(progress.x, progress.dx, rtol, atol)
        value_small = jnp.abs(progress.df) <= atol + rtol * jnp.abs(progress.f)
        converged = converged | (step_small & value_small)
    status = jnp.where(converged, int(Status.SUCCESS), _RUNNING)
    status = jnp.where(progress.failure != _RUNNING, progress.failure, status)
    if check_finite:
        x_finite = tree_all_finite(progress.x)
        finite = x_finite & jnp.all(jnp.isfinite(progress.f))
        status = jnp.where(finite, status, int(Status.NONFINITE))
    if f_limit is not None:
        # f below the limit (-inf included, NaN not) at a finite x: the problem looks unbounded
        # (a solver that skips the finite test steps only to finite points)
        below = progress.f < f_limit
        if check_finite:
            below = below & x_finite
        status = jnp.where(below, int(Status.UNBOUNDED), status)
    return status.astype(jnp.int32)


def _record(history: History | None, k: jax.Array, progress: Progress) -> History | None:
    if history is None:
        return None
    x = jax.tree.map(lambda buf, v: buf.at[k].set(v, mode="drop"), history.x, progress.x)
    f = history.f.at[k].set(progress.f, mode="drop")
    # Entries at or past the buffer's end are dropped (a rejected non-finite step is sent
    # there): the length then stays as it was (it is the buffer's length once k passes it).
    length = jnp.where(k < history.f.shape[0], k + 1, history.length).astype(jnp.int32)
    return History(x=x, f=f, length=length)


def iterate(
    step,
    state: Any,
    progress: Progress,
    *,
    max_iter: int,
    rtol: float,
    atol: float,
    cauchy: bool = True,
    history: int = 0,
    verbose: bool = False,
    name: str = "solver",
    check_finite: bool = True,
    count=None,
    f_limit=None,
) -> DriverOutput:
    """Run ``step`` from ``(state, progress)`` until it converges, fails or reaches ``max_iter``.

    Args:
        step: ``step(state) -> (state, Progress)``, pure and jit-able.
        state: the solver's initial state (any pytree).
        progress: the initial :class:`Progress` (from :func:`make_progress`).
        max_iter: the largest number of steps (static).
        rtol: relative tolerance of the Cauchy test.
        atol: absolute tolerance of the Cauchy test.
        cauchy: apply the Cauchy step-and-value test (else only ``Progress.converged``).
        history: record ``x`` and ``f`` for the first ``history`` iterates (0: none; static).
        verbose: print ``n_iter``, ``f`` and the status each step with ``jax.debug.print``.
        name: the solver's name in verbose output.
        check_finite: detect non-finite progress (NONFINITE, last finite iterate kept). A solver
            that reports non-finite values per element in its own state (and never a non-finite
            progress) passes False: the step's state is then kept unconditionally, which spares
            a select of every state array per iteration.
        count: ``count(state) -> int``, the solver's own iteration number, for a solver whose
            driver steps are not all iterations (a final step that only tests convergence, or a
            line search folded into the loop). History entry ``k`` then holds the iterate after
            ``k`` of the solver's iterations (other steps rewrite the same entry), and verbose
            output prints that number. ``None``: every driver step is an iteration.
        f_limit: a lower limit on ``f`` (a scalar, traced or not), for minimisers: an iterate
            with ``f < f_limit`` (``-inf`` included) at a finite ``x`` stops the loop with
            ``Status.UNBOUNDED`` and is the one returned. ``None``: no such test.

    Returns:
        :class:`DriverOutput` with the final state and progress, ``n_iter``, ``status`` (never
        ``RUNNING``: a loop that ran out of steps reports ``MAX_ITER``) and the history.
    """
    max_iter, history = check_loop_options(max_iter, history)

    dtype = jnp.result_type(progress.f)
    rtol = jnp.asarray(rtol, dtype=dtype)
    atol = jnp.asarray(atol, dtype=dtype)
    if f_limit is not None:
        f_limit = jnp.asarray(f_limit, dtype=dtype)

    hist = None
    if history:
        hist = History(
            x=jax.tree.map(
                lambda u: jnp.full((history,) + jnp.shape(u), jnp.nan, jnp.result_type(u)),
                progress.x,
            ),
            f=jnp.full((history,), jnp.nan, dtype),
            length=jnp.asarray(0, jnp.int32),
        )
        hist = _record(hist, jnp.asarray(0, jnp.int32), progress)

    # At the start only the solver's own test counts (dx is inf), plus non-finite input.
    status0 = _decide(
        progress, rtol, atol, cauchy=False, check_finite=check_finite, f_limit=f_limit
    )

    def cond(carry):
        _, _, k, status, _ = carry
        return (status == _RUNNING) & (k < max_iter)

    def body(carry):
        state, prog, k, was, hist = carry
        new_state, new_prog = step(state)
        k = k + 1
        k_solver = k if count is None else count(new_state)
        status = _decide(new_prog, rtol, atol, cauchy, check_finite, f_limit)
        if check_finite:
            keep = status != int(Status.NONFINITE)
            state = tree_where(keep, new_state, state)
            prog = tree_where(keep, new_prog, prog)
            k_record = jnp.where(keep, k_solver, history)
        else:
            state, prog, k_record = new_state, new_prog, k_solver
        hist = _record(hist, k_record, prog) if hist is not None else None
        if verbose:
            # the step that runs out of max_iter ends the run: print the status it ends with
            shown = jnp.where((status == _RUNNING) & (k >= max_iter), int(Status.MAX_ITER), status)
            _print_progress(name, k_solver, new_prog.f, shown, was == _RUNNING)
        return state, prog, k, status, hist

    carry = (state, progress, jnp.asarray(0, jnp.int32), status0, hist)
    state, prog, n_iter, status, hist = lax.while_loop(cond, body, carry)
    status = jnp.where(status == _RUNNING, int(Status.MAX_ITER), status).astype(jnp.int32)
    return DriverOutput(state=state, progress=prog, n_iter=n_iter, status=status, history=hist)


def _print_progress(name: str, k, f, status, running) -> None:
    """One line per iteration: ``name iter k: f = ..., running`` (or the status that ended it).

    A host callback, so that the status prints by name; under ``vmap`` it runs once per element,
    and an element that had already stopped (a vmapped loop runs until its slowest element
    stops, computing, then discarding, steps for the others) prints nothing."""

    def show(k, f, status, running):
        if bool(running):
            state = "running" if int(status) == _RUNNING else Status(int(status)).name
            print(f"{name} iter {int(k)}: f = {float(f):.6e}, {state}")

    jax.debug.callback(show, k, f, status, running, ordered=False)


def _lane_where(mask: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """``jnp.where`` per lane: ``mask`` has the leading (lane) axis of every leaf."""

    def pick(a, b):
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, on_true, on_false)


class _LanePacker:
    """Packs a pytree of per-lane arrays (leading axis: lanes) into one ``(lanes, m)`` array per
    dtype, and back. Built from an example tree; the pack/unpack are reshapes, concatenations and
    slices, which XLA fuses into their producers and consumers."""

    def __init__(self, example: PyTree):
        leaves, self.treedef = jax.tree.flatten(example)
        self.dtypes = sorted({jnp.dtype(a.dtype).name for a in leaves})
        self.layout = []  # per leaf: (group, start, size, trailing shape)
        fill = dict.fromkeys(self.dtypes, 0)
        for a in leaves:
            g = self.dtypes.index(jnp.dtype(a.dtype).name)
            size = int(np.prod(a.shape[1:], dtype=int))
            self.layout.append((g, fill[self.dtypes[g]], size, a.shape[1:]))
            fill[self.dtypes[g]] += size

    def pack(self, tree: PyTree) -> tuple:
        leaves = jax.tree.leaves(tree)
        groups = [[] for _ in self.dtypes]
        for a, (g, _, size, _) in zip(leaves, self.layout, strict=True):
            groups[g].append(a.reshape(a.shape[0], size))
        return tuple(jnp.concatenate(parts, axis=1) for parts in groups)

    def unpack(self, packed: tuple) -> PyTree:
        leaves = [
            packed[g][:, start : start + size].reshape((packed[g].shape[0],) + shape)
            for g, start, size, shape in self.layout
        ]
        return jax.tree.unflatten(self.treedef, leaves)


def iterate_pool(
    step,
    start,
    n_problems: int,
    *,
    lanes: int,
    max_iter: int,
    rtol: float,
    atol: float,
    cauchy: bool = True,
    check_finite: bool = True,
) -> DriverOutput:
    """Run ``n_problems`` independent problems through a pool of ``lanes`` solver lanes.

    The batched counterpart of :func:`iterate`, with the same per-problem termination tests and
    statuses. A ``jax.vmap`` of :func:`iterate` runs every problem until the slowest one stops
    (finished problems keep being computed and discarded). Here each loop turn advances all
    lanes by one step; a lane whose problem has stopped writes its result out and takes the next
    unstarted problem. Every lane stays busy until the queue is empty, so the work is about the
    total number of steps the problems need rather than ``n_problems x`` the slowest one, and the
    working set (``lanes`` problems) stays in cache however large the batch. Each problem takes
    the steps :func:`iterate` would take for it alone, up to rounding: XLA may sum a batched
    reduction in another order than a single one, so results agree to rounding (and a problem
    near its stopping test may stop one step apart), not bitwise across widths.

    Args:
        step: ``step(i, state) -> (state, Progress)``: one step of problem ``i`` (a traced int
            index; the step looks up the problem's data by it). Called under ``jax.vmap``.
        start: ``start(i) -> (state, Progress)``: problem ``i``'s initial state. Called under
            ``jax.vmap`` each turn for the lanes being refilled; keep it cheap.
        n_problems: the number of problems (static).
        lanes: the pool's width (static; at most ``n_problems`` are used).
        max_iter, rtol, atol, cauchy, check_finite: as for :func:`iterate`, per problem.

    Returns:
        :class:`DriverOutput` whose ``state``, ``n_iter`` and ``status`` have a leading axis
        ``n_problems`` (``progress`` and ``history`` are None: the pool carries only what each
        problem needs, as every carried array costs a copy per turn).
    """
    max_iter, _ = check_loop_options(max_iter, 0)
    n = check_positive_int("n_problems", n_problems)
    width = min(check_positive_int("lanes", lanes), n)

    def decide(prog, cauchy_now):
        rt = jnp.asarray(rtol, jnp.result_type(prog.f))
        at = jnp.asarray(atol, jnp.result_type(prog.f))
        return jax.vmap(lambda p: _decide(p, rt, at, cauchy_now, check_finite))(prog)

    def load(i):
        state, prog = jax.vmap(start)(i)
        status = decide(prog, False)
        if max_iter == 0:
            status = jnp.where(status == _RUNNING, int(Status.MAX_ITER), status)
        return state, status

    lane_idx = jnp.asarray(np.arange(width, dtype=np.int32))
    state, status = load(lane_idx)
    k = jnp.zeros((width,), jnp.int32)
    # Each lane's record (state, k, status) travels packed: one array per dtype, so that taking
    # a step, refilling a lane and writing a result out are one select or scatter per dtype
    # rather than one per state leaf (every one a kernel of its own, at every turn).
    packer = _LanePacker((state, k, status))
    rec = packer.pack((state, k, status))
    out = tuple(jnp.zeros((n,) + a.shape[1:], a.dtype) for a in rec)
    active = jnp.ones((width,), bool)

    def cond(carry):
        return jnp.any(carry[1])

    def body(carry):
        idx, active, rec, queued, out = carry
        state, k, status = packer.unpack(rec)
        new_state, new_prog = jax.vmap(step)(idx, state)
        new_status = decide(new_prog, cauchy)
        # A lane loaded with a start that already stopped (e.g. non-finite) takes no step; a
        # non-finite step is not taken (the last finite iterate is kept).
        running = status == _RUNNING
        take = running
        if check_finite:
            take = take & (new_status != int(Status.NONFINITE))
        state = _lane_where(take, new_state, state)
        k = jnp.where(running, k + 1, k)
        new_status = jnp.where(
            (new_status == _RUNNING) & (k >= max_iter), int(Status.MAX_ITER), new_status
        )
        status = jnp.where(running, new_status, status)
        rec = packer.pack((state, k, status))

        done = active & (status != _RUNNING)
        target = jnp.where(done, idx, n)  # index n is out of range: dropped
        out = tuple(o.at[target].set(r, mode="drop") for o, r in zip(out, rec, strict=True))
        # Refill the lanes that stopped with the next problems in the queue.
        nxt = queued + jnp.cumsum(done, dtype=jnp.int32) - 1
        refill = done & (nxt < n)
        idx = jnp.where(refill, nxt, idx)
        f_state, f_status = load(jnp.minimum(idx, n - 1))
        fresh = packer.pack((f_state, jnp.zeros_like(k), f_status))
        rec = tuple(jnp.where(refill[:, None], f, r) for f, r in zip(fresh, rec, strict=True))
        active = (active & ~done) | refill
        queued = jnp.minimum(queued + jnp.sum(done, dtype=jnp.int32), n)
        return idx, active, rec, queued, out

    queued = jnp.asarray(width, jnp.int32)
    out = lax.while_loop(cond, body, (lane_idx, active, rec, queued, out))[-1]
    out_state, out_k, out_status = packer.unpack(out)
    return DriverOutput(out_state, None, out_k, out_status, None)
