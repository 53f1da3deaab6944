"""Count the operations per loop turn of the compiled batched fit, ours and jaxopt's.

    python benchmarks/kernels.py --size 10000 --out-dir /tmp/hlo

On a GPU every operation left in a while loop's body after XLA's fusion passes (a fusion, a
library call, a copy, a scatter) is a kernel launch at every turn of the loop, so their number
bounds how fast a turn can be when the batch is small. This compiles ``curve_fit`` on the
benchmark's Gaussian-peak batch (float64) and jaxopt's LevenbergMarquardt under ``jit(vmap)``
for the current backend, prints for each while loop the operations in its body, and writes the
optimised HLO text of both to ``--out-dir``.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

_FREE = ("parameter", "tuple", "get-tuple-element", "constant", "bitcast", "after-all")


def loop_bodies(text: str) -> dict[str, collections.Counter]:
    """Per while-loop body computation: a count of its operations by kind (free ones left out)."""
    comps, name = {}, None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if head:
            name = head.group(1)
            comps[name] = []
        elif line.startswith("}"):
            name = None
        elif name is not None and "=" in line:
            comps[name].append(line)
    bodies = set(re.findall(r"body=%?([\w.\-]+)", text))
    out = {}
    for body in sorted(bodies):
        kinds = collections.Counter()
        for line in comps.get(body, []):
            op = re.search(r"\s([\w\-]+)\(", line.split("=", 1)[1])
            kind = op.group(1) if op else "?"
            if kind == "custom-call":
                target = re.search(r'custom_call_target="([^"]+)"', line)
                kind = f"custom-call:{target.group(1) if target else '?'}"
            if kind not in _FREE:
                kinds[kind] += 1
        out[body] = kinds
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np
    from tasks import fitting

    import jaxopt_mml as mml
    from jaxopt_mml import _fit_curve as fc

    x, y, p0 = (jnp.asarray(a) for a in fitting._data(args.size, fitting.N_POINTS, np.float64))
    captured = {}
    real = fc._fit_jit
    fc._fit_jit = lambda *a: captured.setdefault("args", a)
    try:
        mml.curve_fit(fitting._model, x, y, p0)
    finally:
        fc._fit_jit = real
    texts = {"ours": real.lower(*captured["args"]).compile().as_text()}
    try:
        import jaxopt

        solver = jaxopt.LevenbergMarquardt(fitting._residual)
        f = jax.jit(jax.vmap(lambda p, yy: solver.run(p, x, yy).params))
        texts["jaxopt"] = f.lower(p0, y).compile().as_text()
    except Exception as exc:  # jaxopt missing
        print(f"jaxopt: {exc}")
    print(f"# {jax.devices()[0]}, B={args.size}")
    for who, text in texts.items():
        if args.out_dir:
            Path(args.out_dir).mkdir(parents=True, exist_ok=True)
            (Path(args.out_dir) / f"{who}_{jax.default_backend()}_{args.size}.hlo.txt").write_text(
                text
            )
        for body, kinds in loop_bodies(text).items():
            print(f"{who} {body}: {sum(kinds.values())} ops per turn: {dict(kinds.most_common())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
