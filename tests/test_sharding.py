"""Sharded batches: placement, padding, one compiled call per device set, several hosts.

The multi-device checks live in ``tests/sharding_worker.py`` and run in fresh processes with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (XLA reads the flag once, at start-up), under
a timeout so that a hang in XLA:CPU's thread pool fails these tests instead of stalling CI.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxopt_mml as mml

WORKER = Path(__file__).with_name("sharding_worker.py")
ROOT = WORKER.parent.parent
TIMEOUT_S = 240  # a hang fails here; a quiet 2-core machine needs about a quarter of it

# Every check the 4-device worker must report (a crash that drops one fails its test).
CHECKS = [
    "placement",
    "gspmd_flow",
    "shard_map",
    "single_device_mesh",
    "replicated_argument",
    "chunked",
    "grad_jit_vmap",
    "errors",
    "curve_fit",
    "newton_raphson",
    "bfgs",
    "minimise_constrained",
]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["SHARDING_WORKER_TIMEOUT"] = str(TIMEOUT_S - 5)  # dump stacks before we kill it
    env.pop("XLA_FLAGS", None)
    # The N devices are the host's CPU devices: on a machine with a GPU, JAX's default backend
    # would be that one GPU (every check failed so on an H100).
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _reports(text: str) -> dict[str, dict]:
    out = {}
    for line in text.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            out[rec["check"]] = rec
    return out


@pytest.fixture(scope="module")
def four_devices():
    """Run every check once, in one fresh process with 4 host devices."""
    try:
        proc = subprocess.run(
            [sys.executable, str(WORKER), "checks", "4"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            env=_env(),
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"4-device worker hung for {TIMEOUT_S} s (XLA:CPU deadlock?):\n{e.stderr}")
    return proc, _reports(proc.stdout)


@pytest.mark.parametrize("name", CHECKS)
def test_four_devices(four_devices, name):
    proc, reports = four_devices
    assert name in reports, f"worker exit {proc.returncode}, no report for {name}:\n{proc.stderr}"
    if reports[name]["ok"] is None:
        pytest.skip(reports[name]["detail"])
    assert reports[name]["ok"], reports[name]["detail"] + "\n" + proc.stderr[-3000:]


def test_two_hosts_each_get_their_own_rows():
    """Two processes joined by jax.distributed (2 host devices each) run one global batch."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(WORKER), "hosts", "2", str(port)]
    procs = [
        subprocess.Popen(
            cmd + [str(pid)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
            cwd=ROOT,
        )
        for pid in (0, 1)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT_S))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("the 2-process run hung")
    for pid, (p, (stdout, stderr)) in enumerate(zip(procs, outs, strict=True)):
        rec = _reports(stdout).get(f"host{pid}")
        assert rec and rec["ok"], f"process {pid} exit {p.returncode}:\n{stderr[-3000:]}"


# In-process, on this process's devices (one CPU device here): the same code paths.


def test_shard_batch_one_device_round_trip():
    tree = {"y": np.arange(12.0).reshape(6, 2), "n": np.arange(6)}
    batch = mml.shard_batch(tree)
    n_dev = jax.device_count()
    assert batch.size == 6 and batch.axis == 0
    assert batch.tree["y"].shape[0] % n_dev == 0
    assert batch.tree["y"].sharding.spec == jax.sharding.PartitionSpec("batch")
    chex.assert_trees_all_equal(mml.unshard(batch), tree)


def test_shard_batch_pads_with_the_last_row_on_any_axis():
    mesh = mml.batch_mesh(jax.devices()[:1] * 1)
    x = np.arange(15.0).reshape(3, 5)
    batch = mml.shard_batch(x, mesh, axis=1)
    assert batch.size == 5
    np.testing.assert_array_equal(mml.unshard(batch), x)
    np.testing.assert_array_equal(mml.unshard(batch.tree, 2, axis=1), x[:, :2])


def test_sharded_single_device_matches_vmap_and_traces_once():
    @chex.assert_max_traces(n=1)
    def batched(c, scale):
        return jax.vmap(lambda ci: {"root": jnp.sqrt(ci) * scale, "ok": ci > 0})(c)

    run = mml.sharded(in_axes=(0, None))(batched)
    c = jnp.linspace(1.0, 4.0, 8)
    out = run(c, 2.0)
    chex.assert_trees_all_close(out["root"], 2.0 * jnp.sqrt(c))
    out2 = run(mml.shard_batch(c + 1.0), 2.0)  # same shapes: no new trace
    assert isinstance(out2, mml.ShardedBatch) and out2.size == 8
    chex.assert_trees_all_close(mml.unshard(out2)["root"], 2.0 * jnp.sqrt(c + 1.0))


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda: mml.shard_batch(np.ones(3), axis=-1), "axis"),
        (lambda: mml.shard_batch({"a": np.ones((2, 3)), "b": np.float64(1.0)}), "batch axis 0"),
        (lambda: mml.batch_mesh([]), "at least one device"),
        # a string made a mesh of its characters, one device met "'Device' object is not
        # iterable"
        (lambda: mml.batch_mesh("abc"), "devices must be a sequence of jax.Device"),
        (lambda: mml.batch_mesh(jax.devices()[0]), "devices must be a sequence of jax.Device"),
        (lambda: mml.sharded(lambda x: x, out_axes=-1), "out_axes"),
        (lambda: mml.sharded(3), "callable"),
        (lambda: mml.sharded(lambda x: x, in_axes=None)(np.ones(2)), "batched"),
        (lambda: mml.sharded_map(lambda x: x, np.ones(2), in_axes=(0.5,)), "in_axes"),
        # a string was read per character ("in_axes has 3 entries"), a float met Python's
        # "'float' object is not iterable"
        (lambda: mml.sharded(lambda x: x, in_axes="abc")(np.ones(2)), "in_axes must be an int"),
        (lambda: mml.sharded(lambda x: x, in_axes=0.5)(np.ones(2)), "in_axes must be an int"),
    ],
)
def test_misuse_is_a_clear_error(call, words):
    with pytest.raises((ValueError, TypeError), match=words):
        call()


def test_sharded_batch_is_a_pytree_with_static_size_and_axis():
    # size and axis were pytree leaves: jit traced them (then hashing a tracer crashed sharded)
    # and tree.map rewrote them.
    x = jnp.arange(3.0)
    batch = mml.shard_batch(x)
    assert jax.tree.leaves(batch) == [batch.tree]
    doubled = jax.tree.map(lambda a: 2 * a, batch)
    assert (doubled.size, doubled.axis) == (3, 0)
    traced = jax.jit(mml.shard_batch)(x)
    assert (traced.size, traced.axis) == (3, 0)
    out = jax.jit(mml.sharded(jnp.sqrt))(batch)
    np.testing.assert_allclose(mml.unshard(out), np.sqrt(np.arange(3.0)))


def test_unshard_checks_size():
    batch = mml.shard_batch(jnp.arange(3.0))
    for bad in (-1, 4):
        with pytest.raises(ValueError, match="size"):
            mml.unshard(batch, size=bad)
    with pytest.raises(ValueError, match="size"):
        mml.unshard(jnp.arange(3.0), size=10)
    np.testing.assert_array_equal(mml.unshard(batch, size=2), [0.0, 1.0])


def test_unshard_checks_axis():
    # A string met Python's "tuple indices must be integers", an axis past the leaf's rank
    # "tuple index out of range"; neither named axis
    for bad, match in (("0", "axis must be an int"), (2, "axis 2 is out of range")):
        with pytest.raises(ValueError, match=match):
            mml.unshard(np.ones((4, 2)), size=2, axis=bad)
    assert mml.unshard(np.ones((4, 3)), size=2, axis=1).shape == (4, 2)
