"""Run the Moré-Garbow-Hillstrom test set against scipy and write docs/mgh.md.

    PYTHONPATH=. python benchmarks/mgh.py [--out docs/mgh.md] [--only NAME,NAME]

The 35 problems of Moré, Garbow and Hillstrom (ACM TOMS 7, 1981; `tests/zoo/mgh.py`), each from
the standard start x0 and from 10 x0 and 100 x0 (10 and 100 where x0 = 0), float64:

1. minimisation of f(x) = |r(x)|^2: ``bfgs``, ``lbfgs`` and ``newton_minimise`` (each
   ``jit(vmap)`` over the three starts) against scipy's BFGS and L-BFGS-B (exact gradients from
   JAX);
2. least squares: ``curve_fit`` (Levenberg-Marquardt) on ``model(x, p) = r(p)``, ``y = 0``, the
   three starts as one batch, against ``scipy.optimize.least_squares`` ("lm", exact Jacobian);
3. the square systems (m = n): ``newton_raphson`` against ``scipy.optimize.root`` ("hybr", exact
   Jacobian).

Every solver gets the same budget (5000 iterations for the minimisers, 1000 for the fits, 100
for Newton) and gradient tolerances of about 1e-8 (scipy's defaults otherwise). A result is
judged against the published minimum f* where the paper gives one (``|f - f*| <= 1e-5 f* +
1e-12``), and every reported success (ours and the peers') is checked for being a minimum: scipy's BFGS (or
``least_squares``) restarted from it at tight tolerances must not lower f by more than ``1e-6 |f|
+ 1e-12 f(x0)`` (else the row is marked as a false success, the worst outcome); a root must
have ``|F|^2 <= 1e-10 (1 + |F(x0)|^2)``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.zoo import mgh  # noqa: E402

MIN_ITER = 5000
FIT_ITER = 1000
ROOT_ITER = 100
GTOL = 1e-8
FACTORS = (1.0, 10.0, 100.0)
# How close to f* is "at f*", and how much a restart must gain to call a success improvable:
# relative to f, plus absolute and in units of f at the standard start (f0). float32 (``--float32``:
# ours in float32, f re-evaluated in float64 at the returned point) cannot resolve f to 1e-6.
JUDGE = {
    "float64": dict(match_rel=1e-5, match_abs=1e-12, match_f0=0.0, gain_rel=1e-6, gain_f0=1e-12),
    "float32": dict(match_rel=1e-3, match_abs=0.0, match_f0=1e-7, gain_rel=1e-3, gain_f0=1e-7),
}
PRECISION = {"dtype": "float64"}


def _judge():
    return JUDGE[PRECISION["dtype"]]


def starts(p) -> np.ndarray:
    """x0, 10 x0 and 100 x0 (MINPACK's rule: the factor itself where x0 = 0)."""
    return np.stack([mgh.start(p, f) for f in FACTORS])


def matches(f: float, fstar: float | None, f0: float) -> bool | None:
    if fstar is None or not np.isfinite(f):
        return None if fstar is None else False
    j = _judge()
    return abs(f - fstar) <= j["match_rel"] * abs(fstar) + j["match_abs"] + j["match_f0"] * f0


def _ours_dtype(x0s) -> jax.Array:
    return jnp.asarray(x0s, PRECISION["dtype"])


def _status_name(code: int) -> str:
    import jaxopt_mml as mml

    return mml.Status(int(code)).name


def _ours(f, x, status, success, n_iter) -> list[dict]:
    """One record per start from a batched result of ours."""
    return [
        dict(
            f=float(f[i]),
            x=np.asarray(x[i]),
            status=_status_name(status[i]),
            ok=bool(success[i]),
            it=int(n_iter[i]),
        )
        for i in range(len(f))
    ]


def _scipy(f, x, success, it) -> dict:
    return dict(f=float(f), x=x, status="ok" if success else "fail", ok=bool(success), it=int(it))


# --- oracles ---------------------------------------------------------------------------------


def _quiet(solve, *args, **kwargs):
    """A scipy call with its warnings silenced (their outcomes are judged from the results)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return solve(*args, **kwargs)


def _np_fun(fun):
    jf = jax.jit(fun)
    return lambda x: np.asarray(jf(jnp.asarray(x)))


def _gain(f: float, f0: float) -> float:
    j = _judge()
    return j["gain_rel"] * abs(f) + j["gain_f0"] * f0


def improvable_lsq(res, x: np.ndarray, f: float, f0: float) -> bool:
    import scipy.optimize as so

    fun, jac = _np_fun(res), _np_fun(jax.jacfwd(res))
    r = _quiet(
        so.least_squares,
        fun,
        x,
        jac=jac,
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=20000,
    )
    return bool(2 * r.cost < f - _gain(f, f0))


# --- 1. minimisation ---------------------------------------------------------------------------


def ours_min(solver, obj, x0s):
    import jaxopt_mml as mml

    fn = jax.jit(jax.vmap(lambda x: getattr(mml, solver)(obj, x, max_iter=MIN_ITER)))
    r = fn(_ours_dtype(x0s))
    return _ours(r.value, r.x, r.status, r.success, r.n_iter)


def scipy_min(method, obj, x0s):
    import scipy.optimize as so

    fun, grad = _np_fun(obj), _np_fun(jax.grad(obj))
    out = []
    for x0 in x0s:
        opts = {"maxiter": MIN_ITER, "gtol": GTOL}
        if method == "L-BFGS-B":
            opts = {"maxiter": MIN_ITER, "gtol": GTOL, "ftol": 1e-15}
        r = _quiet(so.minimize, lambda z: float(fun(z)), x0, jac=grad, method=method, options=opts)
        out.append(_scipy(r.fun, r.x, r.success, r.nit))
    return out


# --- 2. least squares --------------------------------------------------------------------------


def ours_fit(p, x0s):
    import jaxopt_mml as mml

    res = p.residual
    x0s = _ours_dtype(x0s)
    xdummy = jnp.arange(p.m, dtype=x0s.dtype)
    fit = mml.curve_fit(
        lambda x, q: res(q), xdummy, jnp.zeros((len(x0s), p.m), x0s.dtype), x0s, max_iter=FIT_ITER
    )
    return _ours(fit.chi2, fit.params, fit.status, fit.success, fit.n_iter)


def scipy_lsq(p, x0s):
    import scipy.optimize as so

    fun, jac = _np_fun(p.residual), _np_fun(jax.jacfwd(p.residual))
    out = []
    for x0 in x0s:
        r = _quiet(so.least_squares, fun, x0, jac=jac, method="lm", max_nfev=FIT_ITER * 10)
        out.append(_scipy(2 * r.cost, r.x, r.success, r.nfev))
    return out


# --- 3. square systems -------------------------------------------------------------------------


def ours_root(p, x0s):
    import jaxopt_mml as mml

    fn = jax.jit(jax.vmap(lambda x: mml.newton_raphson(p.residual, x, max_iter=ROOT_ITER)))
    r = fn(_ours_dtype(x0s))
    return _ours(jnp.sum(r.fun**2, axis=1), r.x, r.status, r.success, r.n_iter)


def scipy_root(p, x0s):
    import scipy.optimize as so

    fun, jac = _np_fun(p.residual), _np_fun(jax.jacfwd(p.residual))
    out = []
    for x0 in x0s:
        r = _quiet(so.root, fun, x0, jac=jac, method="hybr")
        out.append(_scipy(np.sum(r.fun**2), r.x, r.success, r.nfev))
    return out


# --- the table -----------------------------------------------------------------------------------


def cell(r: dict, fstar, f0: float, ours: bool) -> str:
    """``f``, and what it means: = (the published f*), local (another stationary point), or the
    status; a false success (SUCCESS at an improvable point) in bold."""
    f = f"{r['f']:.4g}"
    if r.get("false"):
        return f"**{f} FALSE SUCCESS**"
    if not r["ok"]:
        return f"{f} {r['status'] if ours else 'fail'}"
    m = matches(r["f"], fstar, f0)
    return f"{f} =" if m else (f"{f} other" if m is False else f)


def summary(results, names, fstars):
    """``fstars``: (f*, f at the standard start) per problem."""
    out = []
    for k in names:
        rows = [(res[k], fs) for res, fs in zip(results, fstars, strict=True) if k in res]
        solved = sum(r["ok"] and bool(matches(r["f"], *fs)) for rr, fs in rows for r in rr)
        ok = sum(r["ok"] for rr, _ in rows for r in rr)
        false = sum(bool(r.get("false")) for rr, _ in rows for r in rr)
        total = sum(len(rr) for rr, _ in rows)
        out.append(f"| {k} | {total} | {ok} | {solved} | {false} |")
    return out


def _f0(p) -> float:
    """f at the standard start: the problem's scale of f."""
    return float(mgh.objective(p)(jnp.asarray(p.x0)))


def _in_float64(p, records: list[dict]) -> list[dict]:
    """Our float32 records with f re-evaluated in float64 at the returned point."""
    obj = mgh.objective(p)
    for r in records:
        r["f"] = float(obj(jnp.asarray(r["x"], jnp.float64)))
    return records


def rows(p, results: dict, names: list, n_ours: int) -> list[str]:
    """The table's rows of problem ``p``, one per start; the first ``n_ours`` names are ours."""
    fs = "-" if p.fstar is None else f"{p.fstar:.6g}"
    f0 = _f0(p)
    return [
        f"| {p.name} | {p.n}, {p.m} | {fac:g} | {fs} | "
        + " | ".join(cell(results[k][i], p.fstar, f0, j < n_ours) for j, k in enumerate(names))
        + " |"
        for i, fac in enumerate(FACTORS)
    ]


# What the float64 table's remaining marks are (docs/mgh.md; written from its runs).
F64_FINDINGS = [
    (
        "Our successes still marked false are of two kinds: stops by the absolute gradient test "
        "(scipy's `gtol`, max|g| <= 1.5e-8) where the scale of x makes it loose (Powell badly "
        "scaled, x1 ~ 1e-5), and asymptotes, where f decreases towards a limit as parameters go "
        "to infinity and a restart only moves further out (Kowalik-Osborne from 100 x0). The "
        "quasi-Newton step-and-value test on flat stretches of ill-conditioned problems (Watson "
        "n = 9 and Osborne 1 from 100 x0 until session 13) now waits for a scaled gradient small "
        "relative to |f| itself, not to max(|f|, 1). Slow rather than wrong: Levenberg-Marquardt on the "
        "zero-residual problems whose Jacobian is singular at the solution (Powell singular, "
        "extended Powell: f = 1e-39 after 1000 iterations, still MAX_ITER: near x* = 0 the columns "
        "of J differ by 1e9, and the step solves the normal equations, whose condition (1e18) "
        "is past float64's; MINPACK's QR is not) and on the large-residual Brown-Dennis from 10 x0 "
        "(linear convergence: 1271 iterations to its strict tests, scipy's looser ftol stops "
        "after 56)."
    ),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(HERE.parent / "docs" / "mgh.md"))
    parser.add_argument("--only", default="")
    parser.add_argument(
        "--float32", action="store_true", help="ours in float32 (docs/mgh_float32.md)"
    )
    args = parser.parse_args(argv)
    if args.float32:
        PRECISION["dtype"] = "float32"
        if args.out == parser.get_default("out"):
            args.out = str(HERE.parent / "docs" / "mgh_float32.md")
    jax.config.update("jax_enable_x64", True)
    only = set(filter(None, args.only.split(",")))
    problems = [p for p in mgh.PROBLEMS if not only or p.name in only]
    systems = {p.name for p in mgh.square_systems()}
    t_all = time.perf_counter()

    min_names = ["bfgs", "lbfgs", "newton_minimise", "scipy BFGS", "scipy L-BFGS-B"]
    fit_names = ["curve_fit (lm)", "scipy least_squares (lm)"]
    root_names = ["newton_raphson", "scipy root (hybr)"]
    min_res, fit_res, root_res, fstars, root_fstars = [], [], [], [], []
    rows_min, rows_fit, rows_root = [], [], []
    for p in problems:
        t0 = time.perf_counter()
        x0s = starts(p)
        obj = mgh.objective(p)
        f0 = _f0(p)
        res = {k: _in_float64(p, ours_min(k, obj, x0s)) for k in min_names[:3]}
        res["scipy BFGS"] = scipy_min("BFGS", obj, x0s)
        res["scipy L-BFGS-B"] = scipy_min("L-BFGS-B", obj, x0s)
        for k in min_names:
            for r in res[k]:
                r["false"] = r["ok"] and mgh.improvable(
                    p, r["x"], r["f"], rel=_judge()["gain_rel"], f0_share=_judge()["gain_f0"]
                )
        fres = {
            "curve_fit (lm)": _in_float64(p, ours_fit(p, x0s)),
            "scipy least_squares (lm)": scipy_lsq(p, x0s),
        }
        for r in fres["curve_fit (lm)"] + fres["scipy least_squares (lm)"]:
            r["false"] = r["ok"] and improvable_lsq(p.residual, r["x"], r["f"], f0)
        min_res.append(res)
        fit_res.append(fres)
        fstars.append((p.fstar, f0))
        rows_min += rows(p, res, min_names, 3)
        rows_fit += rows(p, fres, fit_names, 1)
        if p.name in systems:
            rres = {
                "newton_raphson": _in_float64(p, ours_root(p, x0s)),
                "scipy root (hybr)": scipy_root(p, x0s),
            }
            for r in rres["newton_raphson"] + rres["scipy root (hybr)"]:
                r["false"] = r["ok"] and r["f"] > 1e-10 * (
                    1.0 + float(np.sum(np.square(np.asarray(p.residual(jnp.asarray(x0s[0]))))))
                )
            root_res.append(rres)
            root_fstars.append((p.fstar, f0))
            rows_root += rows(p, rres, root_names, 1)
        print(f"{p.name}: {time.perf_counter() - t0:.1f} s", flush=True)
        for line in rows_min[-3:] + rows_fit[-3:] + (rows_root[-3:] if p.name in systems else []):
            print("  ", line, flush=True)
    elapsed = time.perf_counter() - t_all

    def table(names):
        return [
            "| problem | n, m | start | f* | " + " | ".join(names) + " |",
            "|---" * (4 + len(names)) + "|",
        ]

    f32 = PRECISION["dtype"] == "float32"
    lines = [
        "# The Moré-Garbow-Hillstrom test set against scipy" + (", ours in float32" if f32 else ""),
        "",
        (__doc__ or "").split("\n\n", 2)[2].strip(),
        "",
    ]
    if f32:
        lines += [
            "**This table: ours in float32** (`--float32`; the float64 table is "
            "[mgh.md](mgh.md)): the starts are cast to float32 and every solver of ours runs in "
            "float32 at its default tolerances (`rtol = atol = sqrt(eps) = 3.45e-4`); f is "
            "evaluated in float64 at the point returned. scipy runs in float64, as the reference. "
            "float32 cannot resolve f to 1e-6, so here `=` means within `1e-3 f* + 1e-7 f(x0)` "
            "and a success is improvable if a float64 restart gains more than "
            "`1e-3 |f| + 1e-7 f(x0)`.",
            "",
        ]
    else:
        lines += ["The same with ours in float32: [mgh_float32.md](mgh_float32.md).", ""]
    lines += [
        "Cells: the final f = |r|^2 (for systems |F|^2); `=` where it equals the published f*; "
        "`other` where a run stopped successfully at another stationary point (a local minimum "
        "the paper does not list, or a saddle that a gradient method cannot tell from one); a "
        "status where the run failed (scipy's failures: `fail`).",
        "",
        *([] if f32 else F64_FINDINGS),
        "",
        f"Generated by `PYTHONPATH=. python benchmarks/mgh.py{' --float32' if f32 else ''}` "
        f"(jax {jax.__version__}, "
        f"{elapsed:.0f} s including compiles).",
        "",
        "## Summary",
        "",
        "| solver | runs | success reported | at the published f* | false successes |",
        "|---|---|---|---|---|",
        *summary(min_res, min_names, fstars),
        *summary(fit_res, fit_names, fstars),
        *summary(root_res, root_names, root_fstars),
        "",
        "## Notes on the problems",
        "",
        *[f"- {p.name}: {p.note}" for p in problems if p.note],
        "",
        "## Minimisation of f = |r(x)|^2",
        "",
        *table(min_names),
        *rows_min,
        "",
        "## Least squares",
        "",
        *table(fit_names),
        *rows_fit,
        "",
        "## Square systems F(x) = 0",
        "",
        *table(root_names),
        *rows_root,
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
