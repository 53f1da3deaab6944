"""Time batched ``curve_fit`` at several pool widths (``lanes=``): how the default was chosen.

    python benchmarks/lanes.py                      # Gaussian peak, float64, CPU-sized batches
    python benchmarks/lanes.py --f32 --task gauss2d --sizes 1000000,10000000 --lanes 1/1,1/8,1/32

``--lanes`` takes absolute widths (``1024``) or fractions of the batch (``1/8``); ``default`` is
the backend's default (:func:`jaxopt_mml._fit_curve.pool_lanes`). Each width is a compile of its
own. Prints one line per (size, width): compile, steady-state median and fits per second; with
``--out`` also writes them as JSON with the device and versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _width(spec: str, batch: int) -> int | None:
    if spec == "default":
        return None
    if "/" in spec:
        return max(1, int(batch * Fraction(spec)))
    return int(spec)


def _problem(task: str, batch: int, dtype):
    import jax.numpy as jnp

    if task == "peak":
        from tasks import fitting

        x, y, p0 = fitting._data(batch, fitting.N_POINTS, dtype)
        return fitting._model, jnp.asarray(x), jnp.asarray(y), jnp.asarray(p0), {}
    from tasks import gpufit

    xy, y, p0, _ = gpufit._data(batch)
    return gpufit._model, jnp.asarray(xy), jnp.asarray(y), jnp.asarray(p0), {"max_iter": 10}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=("peak", "gauss2d"), default="peak")
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--lanes", default="default,1/1,1/8,128,1024")
    parser.add_argument("--f32", action="store_true")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of repeats per width")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", not args.f32)
    import harness
    import numpy as np

    import jaxopt_mml as mml
    from jaxopt_mml._fit_curve import pool_lanes

    dtype = np.float32 if args.f32 else np.float64
    env = harness.environment()
    print(f"# pool widths, {args.task}, {np.dtype(dtype).name}, on {env['device']}", flush=True)
    rows = []
    for batch in (int(s) for s in args.sizes.split(",")):
        model, x, y, p0, opts = _problem(args.task, batch, dtype)
        for spec in args.lanes.split(","):
            lanes = _width(spec, batch)
            width = pool_lanes(batch, lanes)

            def make(lanes=lanes, model=model, x=x, y=y, p0=p0, opts=opts):
                return lambda: mml.curve_fit(model, x, y, p0, lanes=lanes, **opts)

            t = harness.measure(harness.Impl(spec, make), budget_s=args.budget)
            row = dict(
                batch=batch,
                lanes=spec,
                width=width,
                steady_s=t.steady_s,
                compile_s=t.compile_s,
                repeats=t.repeats,
                error=t.error,
            )
            if t.output is not None:
                row["mean_iter"] = float(np.mean(np.asarray(t.output.n_iter)))
            rows.append(row)
            if t.error:
                print(f"B={batch:>9} lanes={spec:>8} ({width:>8}): {t.error}", flush=True)
            else:
                print(
                    f"B={batch:>9} lanes={spec:>8} ({width:>8}): steady "
                    f"{harness.fmt_time(t.steady_s):>9}, compile {harness.fmt_time(t.compile_s):>8},"
                    f" {batch / t.steady_s:,.0f} fits/s, {t.repeats} repeats",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"environment": env, "task": args.task, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
