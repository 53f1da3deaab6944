"""Batched fits on 1, 2, 4... devices: throughput against the device count.

    PYTHONPATH=. python benchmarks/devices.py                  # quick: 4,096 fits on 1, 2, 4
    PYTHONPATH=. python benchmarks/devices.py --full           # 100,000 fits
    PYTHONPATH=. python benchmarks/devices.py --counts 1,2 --modes shard_map,gspmd

Each device count runs in its own process, started with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` (XLA reads it once, at start-up; on a GPU
machine the devices are the GPUs there, and ``--counts`` picks meshes over the first D). The same
batch of Gaussian-peak fits (``curve_fit``, N = 64 points, 4 parameters, starts 20% off; a
Levenberg-Marquardt on the core driver while ``curve_fit`` is not in the library) is spread with
:func:`jaxopt_mml.sharded` (``jit`` of ``shard_map``: each device fits its own rows, in chunks
of ``--chunk`` rows, and nothing is communicated). ``--modes gspmd`` adds plain ``jit`` on sharded
inputs for comparison. Reported per count: the median time of ``--repeats`` calls and the compile
time; from the best call, fits per second, the speed-up over the first count and the efficiency
(speed-up / devices); the CPU time per call (all threads, with the cores it kept busy) and the load
average. The best call is the one least disturbed by other processes on a shared machine.

Host devices share the machine's cores: on an n-core CPU expect scaling up to n devices, not past
it (a 2-core machine scales to 2 at best, and 4 devices gain nothing over 2).

``benchmarks/run.py --devices`` calls :func:`main` (see ``run_devices`` for the rows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------
# The child: one device count, one process.


def _roots(batch: int, dtype):
    """Scalar Newton roots of x^3 - 2x - c, elementwise (``newton_raphson``), start 2."""
    import numpy as np

    import jaxopt_mml as mml

    c = np.random.default_rng(0).uniform(1.0, 10.0, batch).astype(dtype)  # one root > 1.6
    x0 = np.full_like(c, 2.0)

    def f(x, cc):
        return x**3 - 2.0 * x - cc

    def roots(x, cc):
        return mml.newton_raphson(f, x, args=(cc,), elementwise=True)

    return "newton_raphson, x^3 - 2x - c", roots, (x0, c)


def _problem(batch: int, dtype):
    """The batched fit to time: Gaussian peaks, N = 64 points, 4 parameters, starts 20% off.

    Uses ``jaxopt_mml.curve_fit`` (y of shape (B, N)) when the library has it, else a
    Levenberg-Marquardt on the core driver (the same work shape). Returns (name, fn, args).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxopt_mml as mml

    rng = np.random.default_rng(0)
    x = np.linspace(-3.0, 3.0, 64)
    truth = np.stack(
        [rng.uniform(1, 3, batch), rng.uniform(-1, 1, batch), rng.uniform(0.5, 1.5, batch),
         rng.uniform(-0.5, 0.5, batch)], 1,
    )  # fmt: skip
    A, mu, s, c = (truth[:, i : i + 1] for i in range(4))
    y = A * np.exp(-((x - mu) ** 2) / (2 * s**2)) + c + 0.05 * rng.standard_normal((batch, 64))
    p0 = truth * rng.uniform(0.8, 1.2, truth.shape)
    y, p0, x = (np.asarray(v, dtype) for v in (y, p0, x))

    def model(xv, p):
        return p[0] * jnp.exp(-((xv - p[1]) ** 2) / (2 * p[2] ** 2)) + p[3]

    if hasattr(mml, "curve_fit"):

        def fits(yb, pb):
            return mml.curve_fit(model, x, yb, pb)

        return "curve_fit (LM), Gaussian peak, N=64", fits, (y, p0)

    from jaxopt_mml._driver import iterate, make_progress

    def one_fit(yi, pi):
        def chi2(p):
            r = model(x, p) - yi
            return r @ r

        def step(state):
            p, lam, f = state
            r = model(x, p) - yi
            J = jax.jacfwd(lambda q: model(x, q))(p)
            JTJ = J.T @ J
            dp = -jnp.linalg.solve(JTJ + lam * jnp.diag(jnp.diag(JTJ)), J.T @ r)
            f_new = chi2(p + dp)
            ok = f_new < f
            new = (
                jnp.where(ok, p + dp, p),
                jnp.where(ok, lam / 3, lam * 2),
                jnp.where(ok, f_new, f),
            )
            df = jnp.where(ok, f_new - f, jnp.inf)
            return new, make_progress(new[0], new[2], dx=dp, df=df)

        f0 = chi2(pi)
        lam0 = jnp.asarray(1e-3, dtype)
        out = iterate(step, (pi, lam0, f0), make_progress(pi, f0), max_iter=100, rtol=1e-6,
                      atol=1e-10)  # fmt: skip
        return {"params": out.progress.x, "chi2": out.progress.f, "n_iter": out.n_iter,
                "status": out.status}  # fmt: skip

    return "Gaussian LM on the core driver (curve_fit not merged)", jax.vmap(one_fit), (y, p0)


def _child(
    n_dev: int,
    batch: int,
    repeats: int,
    f32: bool,
    chunk: int | None,
    modes: list[str],
    problem: str = "fit",
) -> dict:
    import jax

    jax.config.update("jax_enable_x64", not f32)
    import numpy as np

    import jaxopt_mml as mml

    assert jax.device_count() >= n_dev, f"{jax.device_count()} devices, want {n_dev}"
    mesh = mml.batch_mesh(jax.devices()[:n_dev])
    make = _roots if problem == "roots" else _problem
    name, fn, args = make(batch, np.float32 if f32 else np.float64)
    res = {"devices": n_dev, "batch": batch, "problem": name, "platform": jax.devices()[0].platform}

    placed = [mml.shard_batch(a, mesh) for a in args]
    gspmd, spmd = jax.jit(fn), mml.sharded(fn, mesh=mesh, chunk=chunk)
    runs = {
        "shard_map": lambda: spmd(*placed),
        "gspmd": lambda: gspmd(*(p.tree for p in placed)),
    }
    for key, call in runs.items():
        if key not in modes:
            continue
        print(f"devices {n_dev}: {key}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = jax.block_until_ready(call())
        first = time.perf_counter() - t0
        times = []
        cpu0 = time.process_time()
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = jax.block_until_ready(call())
            times.append(time.perf_counter() - t0)
        cpu = (time.process_time() - cpu0) / repeats  # CPU seconds per call, all threads
        steady = statistics.median(times)
        tree = out.tree if isinstance(out, mml.ShardedBatch) else out
        tree = tree if isinstance(tree, dict) else tree._asdict()
        status = np.asarray(tree["status"])[:batch]
        res[key] = {
            "steady_s": steady,
            "best_s": min(times),
            "compile_s": max(first - steady, 0.0),
            "cpu_s": cpu,
            "load": os.getloadavg()[0],
            "success": float(np.mean(status == 0)),
            "n_iter_mean": float(np.mean(np.asarray(tree["n_iter"])[:batch])),
        }
    return res


# ---------------------------------------------------------------------------------------------
# The parent: one child per device count, then the table.


def _run_child(n_dev, batch, repeats, f32, chunk, modes, problem, timeout_s) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={n_dev}"])
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n_dev),
           "--batch", str(batch), "--repeats", str(repeats), "--modes", ",".join(modes),
           "--problem", problem]  # fmt: skip
    cmd += ["--chunk", str(chunk or 0)] + (["--f32"] if f32 else [])
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"devices": n_dev, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"devices": n_dev, "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:120]}
    return json.loads(lines[-1])


def run_devices(
    counts=(1, 2, 4),
    *,
    batch: int | None = None,
    full: bool = False,
    f32: bool = False,
    repeats: int = 10,
    chunk: int | None = 1024,
    modes: tuple[str, ...] = ("shard_map",),
    problem: str = "fit",
    timeout_s: float = 120.0,
) -> list[dict]:
    """Time the same batch of fits on each device count; one child process per count.

    Returns rows in the format of ``benchmarks/harness.py`` (``task``, ``size``, ``ours_s``,
    ``ours_compile_s``, ``ours_error``, ``note``), one per (count, formulation), where ``note``
    holds fits/s, the speed-up over the first count and the efficiency (speed-up / devices), all
    from the best of ``repeats`` calls.
    """
    if problem not in ("fit", "roots"):
        raise ValueError(f"problem must be 'fit' or 'roots', got {problem!r}")
    sizes = {"fit": (4_096, 100_000), "roots": (1 << 20, 1 << 24)}[problem]
    if problem == "roots":
        chunk = None  # scalar Newton: no LAPACK, and one vmap over the shard is fastest
    batch = batch or sizes[full]
    results = [_run_child(d, batch, repeats, f32, chunk, modes, problem, timeout_s) for d in counts]
    rows = []
    unit = {"fit": "fits", "roots": "roots"}[problem]
    for key in modes:
        base = next((r[key]["best_s"] for r in results if key in r), None)
        base_dev = next((r["devices"] for r in results if key in r), 1)
        for r in results:
            label = "jit, GSPMD" if key == "gspmd" else f"sharded, chunk {chunk}"
            row = {"task": f"{problem} on devices ({label})", "size": f"B={batch}, D={r['devices']}",
                   "ours_s": None, "ours_compile_s": None, "ours_error": r.get("error"),
                   "note": "", "devices": r["devices"], "batch": batch}  # fmt: skip
            if key in r:
                t = r[key]
                speedup = base / t["best_s"] * base_dev
                row.update(
                    ours_s=t["steady_s"],
                    ours_compile_s=t["compile_s"],
                    per_s=batch / t["best_s"],
                    best_s=t["best_s"],
                    speedup=speedup,
                    efficiency=speedup / r["devices"],
                    note=(
                        f"best {t['best_s'] * 1e3:.1f} ms: {batch / t['best_s']:,.0f} {unit}/s, "
                        f"speed-up {speedup:.2f}x, "
                        f"efficiency {speedup / r['devices']:.2f}, CPU {t['cpu_s'] * 1e3:.0f} ms/call "
                        f"({t['cpu_s'] / t['steady_s']:.2f} cores busy), "
                        f"load {t['load']:.1f}, success {t['success']:.3f}, "
                        f"iters {t['n_iter_mean']:.1f}; {r['problem']}"
                    ),
                )
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--counts", default="1,2,4", help="device counts, comma-separated")
    parser.add_argument("--batch", type=int, default=None, help="problems per batch")
    parser.add_argument(
        "--problem", default="fit", choices=("fit", "roots"), help="batched fits or roots"
    )
    parser.add_argument("--full", action="store_true", help="a larger batch")
    parser.add_argument("--f32", action="store_true", help="float32 (default float64)")
    parser.add_argument("--repeats", type=int, default=10, help="timed repeats after warm-up")
    parser.add_argument("--out", default=None, help="write the results record to this folder")
    parser.add_argument(
        "--chunk", type=int, default=1024, help="rows per call on each device (0: all at once)"
    )
    parser.add_argument(
        "--modes", default="shard_map", help="formulations: shard_map (sharded) and/or gspmd (jit)"
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child is not None:
        res = _child(
            args.child,
            args.batch,
            args.repeats,
            args.f32,
            args.chunk or None,
            args.modes.split(","),
            args.problem,
        )
        print(json.dumps(res), flush=True)
        return 0

    sys.path.insert(0, str(HERE))
    import harness

    counts = [int(c) for c in args.counts.split(",") if c]
    rows = run_devices(counts, batch=args.batch, full=args.full, f32=args.f32,
                       repeats=args.repeats, chunk=args.chunk or None,
                       modes=tuple(args.modes.split(",")), problem=args.problem)  # fmt: skip
    print(f"# batched {args.problem} against the device count ({os.cpu_count()} CPU cores here)")
    print(harness.HEADER)
    for row in rows:
        print(harness.format_row(row))
    if args.out:
        import jax

        jax.config.update("jax_enable_x64", not args.f32)
        mode = ("full" if args.full else "quick") + "-devices"
        paths = harness.write_results(rows, harness.environment(), Path(args.out), mode)
        print("wrote", *paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
