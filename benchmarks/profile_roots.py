"""Where a batched root-finding call's time goes: kernels per call and their time, ours and peers.

    python benchmarks/profile_roots.py --sizes 1000,1000000

The benchmark's roots of x^3 - 2x - c (``benchmarks/tasks/roots.py``): ours
(``newton_raphson(..., elementwise=True)`` under ``jit``), optimistix's Newton under
``jit(vmap)`` and plain Newton with 30 fixed steps, each profiled as in
``benchmarks/profile_fit.py`` (wall time per call, device kernels and their total time).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,1000000")
    args = parser.parse_args(argv)

    import jax

    jax.config.update("jax_enable_x64", True)
    from profile_fit import profile
    from tasks import roots

    print(f"# {jax.devices()[0]}, jax {jax.__version__}")
    for n in (int(s) for s in args.sizes.split(",")):
        for impl in (roots._ours(n), roots._optimistix(n), roots._plain(n)):
            try:
                fn = impl.make()
            except ImportError as exc:
                print(f"{impl.name}: {exc}")
                continue
            profile(f"n={n} {impl.name}", fn, top=8)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
