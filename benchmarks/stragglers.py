"""The slowest fits of a batched Gaussian-peak fit, and their iterations one by one.

    python benchmarks/stragglers.py --size 100000 --top 3 --out stragglers.json

A batched fit runs until its slowest fit stops, so one fit that needs many iterations costs the
whole batch their number of loop turns. This script fits the benchmark's batch
(``tasks/fitting.py``), takes the ``top`` fits with the most iterations, and replays each
through the Levenberg-Marquardt step (``_fit_lm.lm_step``, the one ``curve_fit`` runs) on the same
device, recording per iteration the parameters, chi-squared, the damping and the convergence
flag; it also refits each alone with ``curve_fit``. Run it where a straggler appears (the
roundings differ between CPU and GPU, and so do the paths of ill-conditioned fits).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None, help="steps to replay (default n_iter)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from tasks import fitting

    import jaxopt_mml as mml
    from jaxopt_mml import _fit_lm
    from jaxopt_mml._tree import default_tolerances

    x, y, p0 = fitting._data(args.size, fitting.N_POINTS, np.float64)
    xj = jnp.asarray(x)
    fit = mml.curve_fit(fitting._model, xj, jnp.asarray(y), jnp.asarray(p0))
    n_iter = np.asarray(fit.n_iter)
    order = np.argsort(-n_iter, kind="stable")[: args.top]
    counts = np.bincount(n_iter)
    print(
        f"# {jax.devices()[0]}: B={args.size}, n_iter histogram { ({k: int(c) for k, c in enumerate(counts) if c}) }"
    )
    rtol, atol = default_tolerances(np.dtype(np.float64), None, 0.0)
    records = []
    for i in order:
        yi = jnp.asarray(y[i])
        problem = _fit_lm.Problem(
            residual=lambda u, yi=yi: yi - fitting._model(xj, u), loss="linear", f_scale=1.0
        )
        step = jax.jit(_fit_lm.lm_step(problem, rtol, atol))
        state = _fit_lm.init(jnp.asarray(p0[i]))
        trace = []
        for _ in range(args.steps or int(n_iter[i]) + 1):
            state, prog = step(state)
            trace.append(
                dict(
                    u=np.asarray(state.u).tolist(),
                    cost=float(state.cost),
                    lam=float(state.lam),
                    dx=np.asarray(prog.dx).tolist(),
                    df=float(prog.df),
                    converged=bool(prog.converged),
                    failure=int(prog.failure),
                )
            )
        alone = mml.curve_fit(fitting._model, xj, yi, jnp.asarray(p0[i]))
        rec = dict(
            index=int(i),
            n_iter=int(n_iter[i]),
            status=int(fit.status[i]),
            params=np.asarray(fit.params[i]).tolist(),
            alone_n_iter=int(alone.n_iter),
            alone_status=int(alone.status),
            y=np.asarray(y[i]).tolist(),
            p0=np.asarray(p0[i]).tolist(),
            trace=trace,
        )
        records.append(rec)
        first = next((k for k, t in enumerate(trace) if t["converged"]), None)
        print(
            f"fit {i}: n_iter {rec['n_iter']} status {rec['status']}, alone {rec['alone_n_iter']}"
            f" / {rec['alone_status']}; replay converged first at step {first}; "
            f"last cost {trace[-1]['cost']:.6e}, lam {trace[-1]['lam']:.2e}, params {rec['params']}"
        )
    if args.out:
        Path(args.out).write_text(json.dumps({"device": str(jax.devices()[0]), "fits": records}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
