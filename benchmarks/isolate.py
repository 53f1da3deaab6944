"""Each task module of ``run.py`` in a process of its own, with a watchdog per case.

One case that never returns must not take the whole run with it: on the 2-core CPU the
vectorised Newton-KKT program of the constrained task hung XLA:CPU's runtime (every worker idle,
the main thread waiting; docs/constrained_benchmark.md), and ``run.py`` then never printed its
table. Here the parent starts ``run.py --child MODULE`` for each module; the child appends a
line to a progress file as each case starts and ends (its rows, as JSON). A case without news
for ``timeout_s`` is killed and recorded as a row whose error says so; the module is then
restarted after that case. The rows of all modules come back in order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _clean(v):
    return v.item() if isinstance(v, np.generic) else v


def child(module_name: str, start: int, progress: Path, repeats: int, budget_s: float, full: bool):
    """Run the cases of one module from case ``start`` on, reporting to ``progress``."""
    import importlib

    import harness

    module = importlib.import_module(f"tasks.{module_name}")
    for i, case in enumerate(module.cases(full)):
        if i < start:
            continue
        _append(progress, {"start": i, "task": case.task, "size": case.size})
        rows = harness.run_case(case, repeats=repeats, budget_s=budget_s)
        _append(progress, {"done": i, "rows": rows})  # (NumPy scalars: _append's default)


def _append(path: Path, record: dict) -> None:
    with path.open("a") as fh:
        fh.write(json.dumps(record, default=_clean) + "\n")


def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # (a line being written)
            break
    return out


def run_module(
    module_name: str, child_args: list[str], timeout_s: float, env: dict | None = None
) -> list[dict]:
    """All rows of one task module, each case watched; a silent case becomes an error row."""
    import harness

    rows: list[dict] = []
    start = 0
    with tempfile.TemporaryDirectory() as tmp:
        while True:
            progress = Path(tmp) / f"progress_{start}.jsonl"
            cmd = [sys.executable, str(HERE / "run.py"), "--child", module_name]
            cmd += ["--start-case", str(start), "--progress", str(progress), *child_args]
            proc = subprocess.Popen(cmd, env=env)
            seen, last = 0, time.monotonic()
            while proc.poll() is None:
                time.sleep(0.5)
                n = len(_read(progress))
                if n != seen:
                    seen, last = n, time.monotonic()
                elif time.monotonic() - last > timeout_s:
                    proc.kill()
                    proc.wait()
                    break
            records = _read(progress)
            for r in records:
                rows.extend(r.get("rows", []))
            if proc.returncode == 0:
                return rows
            started = [r for r in records if "start" in r]
            finished = {r["done"] for r in records if "done" in r}
            hung = [r for r in started if r["start"] not in finished]
            if not hung:  # it failed outside a case (import, cases()): nothing to resume
                rows.append(_error_row(module_name, "-", f"module failed (exit {proc.returncode})"))
                return rows
            bad = hung[0]
            why = (
                f"no result in {timeout_s:.0f} s: killed (a hang? docs/constrained_benchmark.md)"
                if proc.returncode in (-9, 137)
                else f"the process died (exit {proc.returncode})"
            )
            row = _error_row(bad["task"], bad["size"], why)
            print(harness.format_row(row), flush=True)
            rows.append(row)
            start = bad["start"] + 1


def _error_row(task: str, size: str, error: str) -> dict:
    return {
        "task": task,
        "size": size,
        "ours_s": None,
        "ours_compile_s": None,
        "ours_error": error,
        "note": "",
    }
