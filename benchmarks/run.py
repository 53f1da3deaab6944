"""Benchmark jaxopt_mml against its peers on the same work, in one run.

    python benchmarks/run.py            # quick mode (a few minutes on a 2-core CPU)
    python benchmarks/run.py --full     # every size (meant for GPUs and long runs)
    python benchmarks/run.py --only roots,fitting
    python benchmarks/run.py --devices  # scaling over 1, 2 and 4 host devices (docs/sharding.md)

Prints one table (task, size, our time and compile time, each peer's time, the ratio) and writes a
JSON record (device, versions, date) and a markdown table under ``benchmarks/results/``.
Each module in ``benchmarks/tasks/`` contributes its cases through ``cases(full)``, and runs in a
process of its own with a watchdog per case (``isolate.py``: a case without result for
``--case-timeout`` seconds is killed and reported as such; ``--in-process`` runs all here).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--full", action="store_true", help="run every size (long; for GPUs)")
    parser.add_argument("--only", default="", help="comma-separated task-module names to run")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats after warm-up")
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of repeats per impl")
    parser.add_argument("--f32", action="store_true", help="run in float32 (default float64)")
    parser.add_argument("--out", default=str(HERE / "results"), help="results folder")
    parser.add_argument(
        "--devices",
        nargs="?",
        const="1,2,4",
        default=None,
        metavar="COUNTS",
        help="batched fits and roots on 1, 2, 4 host devices, one process per count",
    )
    parser.add_argument(
        "--case-timeout",
        type=float,
        default=300.0,
        help="seconds a case may run without result before it is killed (see isolate.py)",
    )
    parser.add_argument(
        "--in-process", action="store_true", help="run every module in this process (no watchdog)"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--start-case", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--progress", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.devices:
        import devices  # benchmarks/devices.py: each device count in its own process

        extra = ["--full"] * args.full + ["--f32"] * args.f32
        return devices.main(["--counts", args.devices, "--out", args.out, *extra])

    child_env = dict(os.environ)
    if not args.child and not args.in_process:
        # The children run the work; this process only names the device. On a GPU it must not
        # take the memory that JAX preallocates (75%) away from them.
        os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    import jax

    jax.config.update("jax_enable_x64", not args.f32)

    import harness
    import isolate
    import tasks

    if args.child:  # one module's cases, for isolate.run_module
        isolate.child(
            args.child, args.start_case, Path(args.progress), args.repeats, args.budget, args.full
        )
        return 0

    wanted = {w for w in args.only.split(",") if w}
    modules = [m.name for m in pkgutil.iter_modules(tasks.__path__) if not m.name.startswith("_")]
    unknown = wanted - set(modules)
    if unknown:
        parser.error(f"unknown task module(s) {sorted(unknown)}; have {modules}")
    mode = "full" if args.full else "quick"
    env = harness.environment()
    print(f"# jaxopt_mml benchmarks ({mode}) on {env['device']}, {env['cpu_count']} CPU cores")
    print(harness.HEADER, flush=True)
    rows = []
    for name in sorted(modules):
        if wanted and name not in wanted:
            continue
        if not args.in_process:
            child_args = ["--repeats", str(args.repeats), "--budget", str(args.budget)]
            child_args += ["--full"] * args.full + ["--f32"] * args.f32
            rows.extend(isolate.run_module(name, child_args, args.case_timeout, child_env))
            continue
        module = importlib.import_module(f"tasks.{name}")
        for case in module.cases(args.full):
            rows.extend(harness.run_case(case, repeats=args.repeats, budget_s=args.budget))
    # A float32 or partial run is named for what it ran, so that it does not replace the table
    # of the whole float64 suite (latest_<device>_<mode>.md).
    label = "_".join([mode] + ["f32"] * args.f32 + sorted(wanted))
    json_path, md_path = harness.write_results(rows, env, Path(args.out), label)
    print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
