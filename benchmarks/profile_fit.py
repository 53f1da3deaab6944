"""Where a small batched fit's time goes on the current backend: kernels, launches and host work.

    python benchmarks/profile_fit.py --sizes 1,10000 [--trace-dir /tmp/trace]

For the benchmark's Gaussian-peak fits (float64), ours (``curve_fit`` as users call it, and its
compiled function alone, without the Python-side checks) and jaxopt's LevenbergMarquardt under
``jit(vmap)``: the steady-state wall time per call, and from a profiler trace (read back with
``jax.profiler.ProfileData``) the device's kernels per call, their total time and the largest.
Where the wall time is far above the kernels' total, launches and host synchronisation (a while
loop's condition is read by the host at every turn on a GPU) are the cost, not arithmetic.
Also: the cost of one turn of an empty ``lax.while_loop`` on this backend.
"""

from __future__ import annotations

import argparse
import collections
import glob
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def wall(fn, repeats=30):
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


_SHOWN = []


def device_events(trace_dir):
    """Per kernel name: (count, total ns) over the device planes of the trace in trace_dir."""
    from jax.profiler import ProfileData

    counts, totals = collections.Counter(), collections.Counter()
    for path in glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True):
        for plane in ProfileData.from_file(path).planes:
            if not _SHOWN:  # once: what the trace holds
                print(
                    f"  plane {plane.name}: "
                    + ", ".join(
                        f"{line.name} ({sum(1 for _ in line.events)})" for line in plane.lines
                    )
                )
            if "device:" not in plane.name.lower() and "gpu" not in plane.name.lower():
                continue
            for line in plane.lines:
                if "stream" not in line.name.lower():
                    continue
                for ev in line.events:
                    counts[ev.name] += 1
                    totals[ev.name] += ev.duration_ns
    _SHOWN.append(True)
    return counts, totals


def profile(name, fn, calls=5, top=12):
    import jax

    jax.block_until_ready(fn())
    t = wall(fn)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        for _ in range(calls):
            jax.block_until_ready(fn())
        jax.profiler.stop_trace()
        counts, totals = device_events(d)
    n = sum(counts.values()) / calls
    busy = sum(totals.values()) / calls / 1e3
    print(
        f"{name}: wall {t * 1e6:.0f} us per call; {n:.0f} device events per call, "
        f"{busy:.0f} us of them"
    )
    for k, v in totals.most_common(top):
        print(f"    {v / calls / 1e3:8.1f} us  {counts[k] / calls:6.1f}x  {k[:100]}")


def one_size(b):
    """Profile ours and jaxopt's fits of b Gaussian peaks."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from tasks import fitting

    import jaxopt_mml as mml
    from jaxopt_mml import _fit_curve as fc

    x, y, p0 = (jnp.asarray(a) for a in fitting._data(b, fitting.N_POINTS, np.float64))
    yy, pp = (y[0], p0[0]) if b == 1 else (y, p0)
    ours = lambda: mml.curve_fit(fitting._model, x, yy, pp)  # noqa: E731
    captured = {}
    real = fc._fit_jit
    fc._fit_jit = lambda *a: captured.setdefault("args", a)
    try:
        ours()
    finally:
        fc._fit_jit = real
    res = ours()
    print(
        f"B={b}: ours n_iter mean {float(jnp.mean(res.n_iter)):.2f} max {int(jnp.max(res.n_iter))}"
    )
    profile(f"B={b} ours curve_fit", ours)
    profile(f"B={b} ours compiled alone", lambda: real(*captured["args"]))
    host_breakdown(b, ours, real, captured["args"])
    for k in (1, 4):
        profile(
            f"B={b} ours max_iter={k}",
            lambda k=k: mml.curve_fit(fitting._model, x, yy, pp, max_iter=k, rtol=1e-300),
            top=0,
        )
    try:
        import jaxopt

        solver = jaxopt.LevenbergMarquardt(fitting._residual)
        f = jax.jit(jax.vmap(lambda p, yy: solver.run(p, x, yy).params))
        profile(f"B={b} jaxopt jit(vmap)", lambda: f(p0, y))
    except ImportError as exc:
        print(f"jaxopt: {exc}")


def host_breakdown(b, ours, real, args):
    """Wall time of ``curve_fit`` with parts of its host side left out, and a cProfile of it."""
    import cProfile
    import pstats

    from jaxopt_mml import _fit_curve as fc

    variants = {
        "host side alone (no fit)": ("_fit_jit", lambda *a: None),
        "no value checks": ("check_values", lambda *a, **k: lambda: None),
        "static arguments reused": ("_fit_jit", lambda m, c, *rest: real(*args[:2], *rest)),
    }
    for name, (attr, patch) in variants.items():
        saved = getattr(fc, attr)
        setattr(fc, attr, patch)
        try:
            print(f"B={b} ours {name}: wall {wall(ours) * 1e6:.0f} us per call")
        finally:
            setattr(fc, attr, saved)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20):
        import jax

        jax.block_until_ready(ours())
    prof.disable()
    print(f"B={b} cProfile of 20 calls, by own time:")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10000")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from jax import lax

    print(f"# {jax.devices()[0]}, jax {jax.__version__}")
    loop = jax.jit(
        lambda n: lax.while_loop(
            lambda c: c[0] < n, lambda c: (c[0] + 1, c[1] * 1.5), (0, jnp.ones(4))
        )[1]
    )
    t1, t21 = wall(lambda: loop(1)), wall(lambda: loop(21))
    print(f"empty while loop: {(t21 - t1) / 20 * 1e6:.1f} us per turn, {t1 * 1e6:.0f} us for one")
    for b in (int(s) for s in args.sizes.split(",")):
        one_size(b)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
