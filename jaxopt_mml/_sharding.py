"""Batched solves and fits sharded across devices and hosts.

Every batched entry point of jaxopt_mml is a ``jax.vmap`` of a per-problem solver under
``jax.jit``, and the problems of a batch never talk to each other. So a batch spreads across devices
with no communication at all: each device solves its own rows. This module places a batch on a
1-D device mesh and runs a batched function on it in one compiled call.

Two ways to run a batch on many devices, and why :func:`sharded` uses the second:

* ``jax.jit`` on inputs with a ``NamedSharding`` (GSPMD). It works with every entry point as is: the
  sharding flows through ``vmap`` and the results come back sharded over the batch axis. But a
  vmapped ``lax.while_loop`` keeps looping while *any* element runs, and under GSPMD "any" is taken
  over the global batch: XLA inserts an all-reduce per iteration, every device waits for the
  slowest element on any device, and all devices run as many iterations as the worst straggler.
* ``jax.shard_map`` (used by :func:`sharded`): each device runs the batched function on its own
  shard, with its own while loop, stopping when its own elements are done. The compiled program
  has no collective at all (no all-reduce, no all-gather), which the tests check in the HLO.

Padding and trimming. A JAX array is split into equal shards, so a batch of ``B`` rows on ``D``
devices is padded to a multiple of ``D`` by repeating its last row (a well-posed problem that
converges like its neighbour, so padding never adds a straggler). :class:`ShardedBatch` carries
the number of real rows; :func:`unshard` copies the results to the host and drops the padding.

Across hosts (``jax.distributed.initialize``), each process passes its own rows to
:func:`shard_batch`; the mesh spans every device of every process and each process reads back its
own rows with :func:`unshard`. See ``docs/sharding.md``.

On CPU with several host devices, jaxlib 0.10's LAPACK kernels can deadlock the shared thread
pool when each device's call is large (rows x cost >= 200,000); ``sharded(..., chunk=c)`` keeps
every call below that size.

Example:
    >>> import jax, jax.numpy as jnp
    >>> import jaxopt_mml as mml
    >>> solve = mml.sharded(jax.vmap(lambda c: c ** 0.5))
    >>> out = solve(mml.shard_batch(jnp.arange(10.0)))  # padded to a multiple of the devices
    >>> mml.unshard(out).shape
    (10,)

References:
    JAX documentation: "Distributed arrays and automatic parallelization" (``NamedSharding``,
    GSPMD), "Manual parallelism with shard_map", and "Multi-process environments"
    (``jax.distributed.initialize``, ``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ._tree import PyTree

__all__ = ["ShardedBatch", "batch_mesh", "shard_batch", "unshard", "sharded", "sharded_map"]

try:  # jax >= 0.6
    _shard_map = jax.shard_map
    _NO_CHECK = {"check_vma": False}
except AttributeError:  # pragma: no cover - older jax
    from jax.experimental.shard_map import shard_map as _shard_map

    _NO_CHECK = {"check_rep": False}


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class ShardedBatch:
    """A batch placed across a mesh, with the number of real (unpadded) rows.

    A pytree whose only children are ``tree``'s leaves: ``size`` and ``axis`` are static
    metadata, so a ``ShardedBatch`` passes through ``jax.jit`` and ``jax.tree.map`` unchanged.

    Attributes:
        tree: the pytree of arrays, each sharded over its batch axis, padded to a multiple of the
            number of devices (of this process's devices, across hosts).
        size: the number of real rows (this process's rows, across hosts); rows past it are
            padding (copies of the last real row).
        axis: the batch axis of every leaf.
    """

    tree: PyTree
    size: int
    axis: int = 0

    def __post_init__(self):
        for name in ("size", "axis"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise TypeError(f"ShardedBatch {name} must be a non-negative int, got {value!r}")

    def tree_flatten(self):
        return (self.tree,), (self.size, self.axis)

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(children[0], *aux)


def batch_mesh(devices: Sequence[jax.Device] | None = None, *, axis_name: str = "batch") -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process, ``jax.devices()``).

    Args:
        devices: the devices to spread the batch over.
        axis_name: the name of the mesh axis.

    Returns:
        ``jax.sharding.Mesh`` with one axis, ``axis_name``.

    Example:
        >>> import jax, jaxopt_mml as mml
        >>> mesh = mml.batch_mesh()
        >>> mesh.axis_names, mesh.size == len(jax.devices())
        (('batch',), True)
    """
    given = devices
    if devices is not None:
        # (a string made a mesh of its characters, which failed later in shard_batch with
        # "'numpy.str_' object has no attribute 'process_index'"; one device met "'Device'
        # object is not iterable")
        is_iterable = hasattr(devices, "__iter__") and not isinstance(devices, str)
        devices = list(devices) if is_iterable else None
        if devices is None or not all(isinstance(d, jax.Device) for d in devices):
            raise TypeError(
                f"devices must be a sequence of jax.Device (jax.devices()), got {given!r}"
            )
    devices = jax.devices() if devices is None else devices
    if not devices:
        raise ValueError("devices must name at least one device")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _mesh_axes(mesh: Mesh):
    """The spec entry that splits one array axis over every axis of the mesh."""
    names = tuple(mesh.axis_names)
    return names[0] if len(names) == 1 else names


def _spec(mesh: Mesh, axis: int | None) -> P:
    if axis is None:
        return P()
    return P(*([None] * axis), _mesh_axes(mesh))


def _local_count(mesh: Mesh) -> int:
    """How many of the mesh's devices belong to this process (all of them in one process)."""
    pid = jax.process_index()
    return sum(1 for d in mesh.devices.flat if d.process_index == pid)


def _check_mesh(mesh: Mesh | None) -> Mesh:
    if mesh is None:
        return batch_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {type(mesh).__name__}")
    return mesh


def _batch_len(tree: PyTree, axis: int, what: str) -> int:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{what} has no arrays to shard")
    sizes = set()
    for leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) <= axis:
            raise ValueError(
                f"{what}: every leaf needs a batch axis {axis}, got a leaf of shape {shape}"
            )
        sizes.add(shape[axis])
    if len(sizes) != 1:
        raise ValueError(f"{what}: leaves disagree on the batch size along axis {axis}: {sizes}")
    (n,) = sizes
    if n == 0:
        raise ValueError(f"{what}: the batch is empty")
    return n


def _pad(leaf, pad: int, axis: int):
    """Append ``pad`` copies of the last row along ``axis`` (NumPy for host data)."""
    if pad == 0:
        return leaf
    xp = jnp if isinstance(leaf, jax.Array) else np
    leaf = xp.asarray(leaf)
    last = xp.take(leaf, xp.asarray([leaf.shape[axis] - 1]), axis=axis)
    return xp.concatenate([leaf, xp.repeat(last, pad, axis=axis)], axis=axis)


def _place(leaf, sharding: NamedSharding):
    """Put one leaf on ``sharding``: a no-op when it is already there."""
    if isinstance(leaf, jax.core.Tracer):  # under jit, grad or vmap: a traced placement
        return jax.device_put(leaf, sharding)
    if isinstance(leaf, jax.Array) and leaf.sharding == sharding:
        return leaf
    if jax.process_count() == 1:
        return jax.device_put(leaf, sharding)
    # Across hosts a leaf holds this process's rows; JAX assembles the global array.
    return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))


def shard_batch(tree: PyTree, mesh: Mesh | None = None, *, axis: int = 0) -> ShardedBatch:
    """Place a batch across the devices of ``mesh``, padding it to divide evenly.

    The batch of ``B`` rows is padded to the next multiple of the device count by repeating the
    last row (so the padding is a well-posed problem), then each leaf is put on a
    ``NamedSharding(mesh, PartitionSpec(..., 'batch'))`` that splits the batch axis over the mesh.

    Across hosts, every process passes its own rows (the same number on every process); they are
    padded to a multiple of that process's devices and assembled into one global array.

    Args:
        tree: a pytree of arrays (NumPy or JAX) sharing the batch size along ``axis``.
        mesh: the mesh to use (default :func:`batch_mesh`: all devices, one axis).
        axis: the batch axis of every leaf.

    Returns:
        :class:`ShardedBatch` ``(tree, size, axis)``: the sharded, padded tree and the number of
        real rows, which :func:`unshard` uses to drop the padding.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> batch = mml.shard_batch({"y": jnp.ones((5, 3)), "p0": jnp.zeros((5, 2))})
        >>> batch.size, batch.tree["y"].sharding.spec      # 5 real rows, split over the devices
        (5, P('batch',))
    """
    if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
        raise ValueError(f"axis must be a non-negative int, got {axis!r}")
    mesh = _check_mesh(mesh)
    n = _batch_len(tree, axis, "shard_batch(tree)")
    d = _local_count(mesh)
    pad = -n % d
    sharding = NamedSharding(mesh, _spec(mesh, axis))
    placed = jax.tree.map(lambda leaf: _place(_pad(leaf, pad, axis), sharding), tree)
    return ShardedBatch(placed, n, axis)


def _addressable(leaf) -> bool:
    """Whether this process holds all of ``leaf`` (NumPy arrays and scalars included)."""
    return not isinstance(leaf, jax.Array) or leaf.is_fully_addressable


def _local_rows(leaf, axis: int) -> np.ndarray:
    """This process's rows of a global array, in order, on the host (each shard read once)."""
    if _addressable(leaf):
        return np.asarray(leaf)
    shards = sorted(leaf.addressable_shards, key=lambda s: s.index[axis].start or 0)
    seen, parts = set(), []
    for s in shards:  # replicas along other mesh axes hold the same rows: read them once
        start = s.index[axis].start or 0
        if start not in seen:
            seen.add(start)
            parts.append(np.asarray(s.data))
    return np.concatenate(parts, axis=axis)


def unshard(tree: PyTree | ShardedBatch, size: int | None = None, *, axis: int = 0) -> PyTree:
    """Copy a sharded batch to the host as NumPy arrays, dropping the padding.

    A trimmed batch of, say, 10,001 rows cannot stay split over 4 devices (JAX shards are equal),
    so the rows come back to the host: each device's shard is read once. Across hosts, each
    process gets its own rows. To keep working on the devices instead, keep the padded tree.

    Args:
        tree: a :class:`ShardedBatch` (its ``size`` and ``axis`` are used), or a pytree of arrays.
        size: the number of real rows to keep (default: all, or the batch's ``size``).
        axis: the batch axis (ignored for a :class:`ShardedBatch`).

    Returns:
        The same pytree with NumPy leaves of ``size`` rows along ``axis``.

    Example:
        >>> import jax.numpy as jnp, jaxopt_mml as mml
        >>> batch = mml.shard_batch(jnp.arange(5.0))   # padded to a multiple of the devices
        >>> print(mml.unshard(batch))                   # the 5 real rows, as NumPy, on the host
        [0. 1. 2. 3. 4.]
    """
    real = None
    if isinstance(tree, ShardedBatch):
        real = tree.size
        size = tree.size if size is None else size
        tree, axis = tree.tree, tree.axis
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise ValueError(f"size must be a non-negative int, got {size!r}")
        if real is not None and size > real:
            raise ValueError(f"size {size} is more than the batch's {real} real rows")

    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise ValueError(f"axis must be an int, got {axis!r}")

    def one(leaf):
        used = size is not None or not _addressable(leaf)  # (else the leaf is read whole)
        if used and not -np.ndim(leaf) <= axis < np.ndim(leaf):
            # (Python's "tuple index out of range" or NumPy's AxisError, naming no option)
            raise ValueError(f"axis {axis} is out of range for a leaf of shape {np.shape(leaf)}")
        rows = _local_rows(leaf, axis)
        if size is not None and size > rows.shape[axis]:
            raise ValueError(f"size {size} is more than the {rows.shape[axis]} rows held")
        return rows if size is None else np.take(rows, np.arange(size), axis=axis)

    return jax.tree.map(one, tree)


def _norm_in_axes(in_axes, n_args: int) -> tuple[int | None, ...]:
    if in_axes is None or isinstance(in_axes, int):
        in_axes = (in_axes,) * n_args
    if not isinstance(in_axes, list | tuple):
        # (a string was read as one entry per character, "in_axes has 3 entries"; a float met
        # Python's "'float' object is not iterable")
        raise ValueError(
            f"in_axes must be an int, None or a sequence of them (one per positional argument), "
            f"got {in_axes!r}"
        )
    in_axes = tuple(in_axes)
    if len(in_axes) != n_args:
        raise ValueError(f"in_axes has {len(in_axes)} entries for {n_args} positional arguments")
    for a in in_axes:
        if a is not None and (isinstance(a, bool) or not isinstance(a, int) or a < 0):
            raise ValueError(f"in_axes entries must be None or non-negative ints, got {a!r}")
    if all(a is None for a in in_axes):
        raise ValueError("in_axes: at least one argument must be batched")
    return in_axes


def _in_chunks(fn: Callable, axes: tuple[int | None, ...], out_axes: int, chunk: int):
    """``fn`` over its batch in slices of ``chunk`` rows, one after another (``lax.map``).

    The local batch is padded to a multiple of ``chunk`` by its last row; the padding is dropped
    from the outputs. Every slice runs its own while loops, so a straggler holds ``chunk`` rows.
    """

    def run(*args):
        n = _batch_len([a for a, ax in zip(args, axes, strict=True) if ax is not None][0],
                       next(ax for ax in axes if ax is not None), "fn argument")  # fmt: skip
        n_chunks = -(-n // chunk)
        if n_chunks <= 1:
            return fn(*args)

        def split(leaf, ax):  # (.., n at ax, ..) -> (n_chunks, chunk, ..)
            leaf = jnp.moveaxis(leaf, ax, 0)
            leaf = _pad(leaf, n_chunks * chunk - n, 0)
            return leaf.reshape((n_chunks, chunk) + leaf.shape[1:])

        pieces = tuple(
            None if ax is None else jax.tree.map(lambda u, ax=ax: split(u, ax), a)
            for a, ax in zip(args, axes, strict=True)
        )

        def one(piece):
            call = [
                a if ax is None else jax.tree.map(lambda u, ax=ax: jnp.moveaxis(u, 0, ax), p)
                for a, ax, p in zip(args, axes, piece, strict=True)
            ]
            return fn(*call)

        out = jax.lax.map(one, pieces)

        def join(leaf):  # (n_chunks, .., chunk at out_axes + 1, ..) -> (.., n at out_axes, ..)
            leaf = jnp.moveaxis(leaf, out_axes + 1, 1)
            leaf = leaf.reshape((n_chunks * chunk,) + leaf.shape[2:])[:n]
            return jnp.moveaxis(leaf, 0, out_axes)

        return jax.tree.map(join, out)

    return run


@functools.lru_cache(maxsize=64)
def _compile(
    fn: Callable, mesh: Mesh, axes: tuple[int | None, ...], out_axes: int, chunk: int | None
):
    """``jit(shard_map(fn))``, one per function, mesh, axes and chunk: wrappers share it."""
    body = _shard_map(
        fn if chunk is None else _in_chunks(fn, axes, out_axes, chunk),
        mesh=mesh,
        in_specs=tuple(_spec(mesh, a) for a in axes),
        out_specs=_spec(mesh, out_axes),
        **_NO_CHECK,  # nothing is communicated; constant loop carries are per-shard values
    )
    return jax.jit(body)


def _check_chunk(chunk) -> int | None:
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be None or a positive int, got {chunk!r}")
    return chunk


def sharded(
    fn: Callable | None = None,
    *,
    mesh: Mesh | None = None,
    in_axes: int | None | Sequence[int | None] = 0,
    out_axes: int = 0,
    chunk: int | None = None,
) -> Callable:
    """Run a batched function on every device, each on its own shard, in one compiled call.

    ``fn`` takes batched arguments (e.g. ``jax.vmap(solver)`` or a batched entry point such as
    ``curve_fit`` with ``y`` of shape ``(B, N)``) and returns a pytree whose every leaf carries the
    batch on ``out_axes``. The wrapper is ``jax.jit(jax.shard_map(fn, ...))``: each device calls
    ``fn`` on its ``B / D`` rows, with its own while loops, and no data crosses devices (the
    compiled program has no collective). Replicated arguments (``in_axes`` ``None``) are copied to
    every device once.

    With ``chunk``, each device runs ``fn`` on slices of ``chunk`` rows one after another
    (``lax.map``): a straggler then holds ``chunk`` rows instead of the whole shard, the working
    set stays in cache, and (on CPU with several host devices, jaxlib 0.10) each LAPACK call stays
    below the size at which jaxlib splits it over the shared thread pool, which can deadlock
    (see ``docs/sharding.md``). Results are the same rows either way.

    Arguments may be arrays (placed on the mesh if they are not already; their batch must divide
    by the device count) or :class:`ShardedBatch` values from :func:`shard_batch`, in which case
    the result is a :class:`ShardedBatch` with the same ``size``. Compiled once per shape.

    Args:
        fn: the batched function (positional arguments only). Used bare, ``@sharded``, or with
            options, ``@sharded(mesh=...)``.
        mesh: the device mesh (default :func:`batch_mesh`, built at the first call, so the wrapper
            may be created before ``jax.distributed.initialize``).
        in_axes: the batch axis of each positional argument (an int for all), ``None`` for an
            argument shared by every problem (like ``jax.vmap``).
        out_axes: the batch axis of every output leaf.
        chunk: rows per call of ``fn`` on each device (``None``: the whole shard at once).

    Returns:
        The wrapped function; outputs are sharded over the batch axis (``NamedSharding`` with the
        batch spec), never gathered.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_mml as mml
        >>> def one_fit(y, x):
        ...     return mml.curve_fit(lambda x, p: p[0] + p[1] * x, x, y, jnp.zeros(2)).params
        >>> x = jnp.arange(4.0)
        >>> ys = jnp.stack([1.0 + 2.0 * x, 3.0 - x])             # two datasets
        >>> fit = mml.sharded(jax.vmap(one_fit, in_axes=(0, None)), in_axes=(0, None))
        >>> print(mml.unshard(fit(mml.shard_batch(ys), x)).round(3))   # NumPy, padding dropped
        [[ 1.  2.]
         [ 3. -1.]]
    """
    if fn is None:
        return functools.partial(
            sharded, mesh=mesh, in_axes=in_axes, out_axes=out_axes, chunk=chunk
        )
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if isinstance(out_axes, bool) or not isinstance(out_axes, int) or out_axes < 0:
        raise ValueError(f"out_axes must be a non-negative int, got {out_axes!r}")
    _check_chunk(chunk)
    if mesh is not None:
        _check_mesh(mesh)

    @functools.wraps(fn)
    def wrapper(*args):
        mesh_ = _check_mesh(mesh)
        axes = _norm_in_axes(in_axes, len(args))
        sizes = {a.size for a in args if isinstance(a, ShardedBatch)}
        if len(sizes) > 1:
            raise ValueError(f"ShardedBatch arguments disagree on their size: {sorted(sizes)}")
        d = _local_count(mesh_)
        placed = []
        for i, (arg, ax) in enumerate(zip(args, axes, strict=True)):
            if isinstance(arg, ShardedBatch):
                if ax is None or arg.axis != ax:
                    raise ValueError(
                        f"argument {i} is a ShardedBatch on axis {arg.axis}, "
                        f"but in_axes[{i}] is {ax!r}"
                    )
                if _batch_len(arg.tree, ax, f"argument {i}") % d:
                    raise ValueError(
                        f"argument {i}: a ShardedBatch of {_batch_len(arg.tree, ax, '')} rows "
                        f"does not divide over this mesh's {d} devices; shard it with "
                        "shard_batch(tree, mesh) for the same mesh"
                    )
                arg = arg.tree
            elif ax is not None and _batch_len(arg, ax, f"argument {i}") % d:
                raise ValueError(
                    f"argument {i}: batch of {_batch_len(arg, ax, f'argument {i}')} rows does "
                    f"not divide over {d} devices; pass shard_batch(arg) (pads it) or use "
                    "sharded_map"
                )
            sharding = NamedSharding(mesh_, _spec(mesh_, ax))
            placed.append(jax.tree.map(lambda leaf, s=sharding: _place(leaf, s), arg))
        try:
            compiled = _compile(fn, mesh_, axes, out_axes, chunk)
        except TypeError:  # an unhashable callable: compiled afresh at every call
            compiled = _compile.__wrapped__(fn, mesh_, axes, out_axes, chunk)
        out = compiled(*placed)
        return ShardedBatch(out, sizes.pop(), out_axes) if sizes else out

    return wrapper


def sharded_map(
    fn: Callable,
    *args,
    mesh: Mesh | None = None,
    in_axes: int | None | Sequence[int | None] = 0,
    out_axes: int = 0,
    chunk: int | None = None,
) -> ShardedBatch:
    """Shard ``args``, run the batched ``fn`` on every device, and return a :class:`ShardedBatch`.

    The one-call form of :func:`shard_batch` + :func:`sharded`: batched arguments are padded and
    placed, ``fn`` runs once per device on its shard, and the outputs stay sharded; read them with
    :func:`unshard`. The compiled function is cached per ``fn`` (pass the same function object, not
    a fresh lambda, to avoid recompiling).

    Args:
        fn: the batched function.
        *args: its positional arguments.
        mesh: the device mesh (default: all devices).
        in_axes: batch axis per argument, ``None`` for shared arguments.
        out_axes: the batch axis of the outputs.
        chunk: rows per call of ``fn`` on each device (see :func:`sharded`).

    Returns:
        :class:`ShardedBatch` of the outputs and the number of real rows.

    Example:
        >>> import jax, jax.numpy as jnp, jaxopt_mml as mml
        >>> def solve_one(c):
        ...     return mml.newton_raphson(lambda x, c: x**2 - c, 1.0, args=(c,)).x
        >>> print(mml.unshard(mml.sharded_map(jax.vmap(solve_one), jnp.array([4.0, 9.0]))))
        [2. 3.]
    """
    mesh = _check_mesh(mesh)
    axes = _norm_in_axes(in_axes, len(args))
    batched = [
        shard_batch(a, mesh, axis=ax) if ax is not None and not isinstance(a, ShardedBatch) else a
        for a, ax in zip(args, axes, strict=True)
    ]
    return sharded(fn, mesh=mesh, in_axes=axes, out_axes=out_axes, chunk=chunk)(*batched)
