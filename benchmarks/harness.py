"""Timing, tables and result records for ``benchmarks/run.py``.

A task module in ``benchmarks/tasks/`` defines ``cases(full: bool) -> list[Case]``. Each case runs
our implementation and its peers on the same work; every implementation is timed the same way:

* the first call (compile + run for JAX code) is timed alone;
* then the call is repeated (up to ``repeats`` times, within a time budget) and the median taken:
  that is the steady-state time;
* compile time = first call - steady state (reported for JAX code only).

Ratios are peer time / our time, measured in the same run: above 1 means we are faster.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib
import json
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np


@dataclasses.dataclass
class Impl:
    """One implementation of a case.

    ``make()`` does the setup (building data, jitting) and returns a zero-argument callable that
    does the work and returns its output (JAX arrays are blocked on by the harness). ``compiled``
    says whether the first call includes a compilation.
    """

    name: str
    make: Callable[[], Callable[[], Any]]
    compiled: bool = True


@dataclasses.dataclass
class Case:
    """Our implementation against its peers on one piece of work.

    ``check(ours_output, peer_output) -> str`` (optional) returns a short agreement note, such as
    ``"max|dx| 3e-15"``, shown beside the peer's ratio. ``note`` adds a remark to our row
    (iterations, success rate...): ``note(ours_output) -> str``.
    """

    task: str
    size: str
    ours: Impl
    peers: list[Impl]
    check: Callable[[Any, Any], str] | None = None
    note: Callable[[Any], str] | None = None


@dataclasses.dataclass
class Timing:
    name: str
    steady_s: float | None
    compile_s: float | None
    repeats: int
    output: Any = None
    error: str | None = None


def _block(out: Any) -> Any:
    return jax.block_until_ready(out)


def measure(impl: Impl, *, repeats: int = 5, budget_s: float = 3.0) -> Timing:
    """Time one implementation: the first call, warm-up calls, then a median over repeats.

    The calls just after a compilation run slower than the steady state (for a fit of one
    dataset, 0.8 ms, 0.5 ms, 0.3 ms, then 0.16 ms), so compiled implementations get up to three
    untimed warm-up calls (within 0.3 s). Fast calls get more repeats (up to 50 within
    ``budget_s``), so that their median is not that of a handful of noisy samples.
    """
    try:
        fn = impl.make()
        t0 = time.perf_counter()
        out = _block(fn())
        first = time.perf_counter() - t0
        times = [] if impl.compiled else [first]
        per_call = first
        if impl.compiled:
            t0 = time.perf_counter()
            warm = 0
            while warm < 3 and (warm == 0 or time.perf_counter() - t0 < 0.3):
                out = _block(fn())
                warm += 1
            per_call = (time.perf_counter() - t0) / warm
        # As many repeats as the budget allows: at least one, at most max(repeats, 50).
        n = max(1, min(max(repeats, 50), int(budget_s / max(per_call, 1e-6))))
        while len(times) < n:
            t0 = time.perf_counter()
            out = _block(fn())
            times.append(time.perf_counter() - t0)
        steady = statistics.median(times)
        compile_s = max(first - steady, 0.0) if impl.compiled else None
        return Timing(impl.name, steady, compile_s, len(times), output=out)
    except Exception as exc:  # a peer that is missing or fails must not stop the run
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Timing(impl.name, None, None, 0, error=detail.splitlines()[-1][:120])


def success_and_iterations(out: Any) -> str:
    """A note on a solver's batched result: the share of successes and the iterations taken
    (mean / max), from its ``success`` and ``n_iter`` fields."""
    it = np.asarray(out.n_iter)
    return (
        f"success {np.mean(np.asarray(out.success)):.1%}, "
        f"iterations mean {it.mean():.1f} / max {it.max()}"
    )


def fmt_time(t: float | None) -> str:
    if t is None:
        return "-"
    if t < 1e-3:
        return f"{t * 1e6:.0f} us"
    if t < 1:
        return f"{t * 1e3:.1f} ms"
    return f"{t:.2f} s"


def run_case(case: Case, *, repeats: int, budget_s: float) -> list[dict]:
    """Run one case; one row per peer (or one row alone when there are no peers)."""
    ours = measure(case.ours, repeats=repeats, budget_s=budget_s)
    note = ""
    if case.note is not None and ours.error is None:
        try:
            note = case.note(ours.output)
        except Exception as exc:
            note = f"note failed: {exc}"
    base = {
        "task": case.task,
        "size": case.size,
        "ours_s": ours.steady_s,
        "ours_compile_s": ours.compile_s,
        "ours_error": ours.error,
        "note": note,
    }
    rows = []
    for peer_impl in case.peers or [None]:
        row = dict(base)
        if peer_impl is not None:
            peer = measure(peer_impl, repeats=repeats, budget_s=budget_s)
            agree = ""
            if case.check is not None and peer.error is None and ours.error is None:
                try:
                    agree = case.check(ours.output, peer.output)
                except Exception as exc:
                    agree = f"check failed: {exc}"
            ratio = (
                peer.steady_s / ours.steady_s
                if peer.steady_s is not None and ours.steady_s
                else None
            )
            row.update(
                peer=peer.name,
                peer_s=peer.steady_s,
                peer_compile_s=peer.compile_s,
                peer_error=peer.error,
                ratio=ratio,
                agree=agree,
            )
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


HEADER = (
    "| task | size | ours | ours compile | peer | peer time | peer compile | ratio | agreement "
    "| note |\n|---|---|---|---|---|---|---|---|---|---|"
)


def format_row(row: dict) -> str:
    ours = fmt_time(row["ours_s"]) if not row.get("ours_error") else f"error: {row['ours_error']}"
    peer = row.get("peer", "-")
    if row.get("peer_error"):
        peer_t = f"n/a ({row['peer_error'][:60]})"
    else:
        peer_t = fmt_time(row.get("peer_s"))
    ratio = f"{row['ratio']:.1f}x" if row.get("ratio") else "-"
    return (
        f"| {row['task']} | {row['size']} | {ours} | {fmt_time(row['ours_compile_s'])} | {peer} "
        f"| {peer_t} | {fmt_time(row.get('peer_compile_s'))} | {ratio} | {row.get('agree', '')} "
        f"| {row.get('note', '')} |"
    )


def environment() -> dict:
    """Device, library versions, date and host for the results record."""
    versions = {}
    for mod in ("jax", "jaxlib", "numpy", "scipy", "optax", "optimistix", "jaxopt", "jaxopt_mml"):
        try:
            versions[mod] = importlib.import_module(mod).__version__
        except Exception:
            versions[mod] = None
    dev = jax.devices()[0]
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "device": f"{dev.platform}: {getattr(dev, 'device_kind', '')}",
        "n_devices": jax.device_count(),
        "x64": bool(jax.config.jax_enable_x64),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def write_results(rows: list[dict], env: dict, out_dir: Path, mode: str) -> tuple[Path, Path]:
    """Write the JSON record and the markdown table; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("-", "")[:15]
    platform_name = env["device"].split(":")[0]
    json_path = out_dir / f"{stamp}_{platform_name}_{mode}.json"
    md_path = out_dir / f"latest_{platform_name}_{mode}.md"

    def clean(v):
        if isinstance(v, np.generic):
            return v.item()
        return v

    json_path.write_text(
        json.dumps(
            {
                "environment": env,
                "mode": mode,
                "rows": [{k: clean(v) for k, v in r.items()} for r in rows],
            },
            indent=1,
        )
    )
    md_path.write_text(markdown(rows, env, mode))
    return json_path, md_path


def markdown(rows: list[dict], env: dict, mode: str) -> str:
    """The markdown table of a run's rows, headed by its device, date and versions."""
    lines = [
        f"Device: {env['device']} ({env['cpu_count']} CPU cores on the host), "
        f"date {env['date']}, mode {mode}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        "",
        HEADER,
        *[format_row(r) for r in rows],
        "",
        "Times are steady-state medians after warm-up; compile = first call - steady state. "
        "Ratio = peer time / our time in this run (above 1: we are faster).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python benchmarks/harness.py RECORD.json TABLE.md: re-render a table
    import sys

    record = json.loads(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text(markdown(record["rows"], record["environment"], record["mode"]))
