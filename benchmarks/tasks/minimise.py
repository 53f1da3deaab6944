"""Unconstrained minimisation: batched 2-D Rosenbrock and Rosenbrock n = 1000 against the peers.

1. ``rosen2 x B``: B random starts of 2-D Rosenbrock in one call (ours: ``jit(vmap(bfgs))`` and
   ``jit(vmap(newton_minimise))``) against a scipy BFGS loop and optimistix BFGS under
   ``jit(vmap)``; every start to the global minimum (gradient tolerances about 1e-8 for all).
2. ``rosen1000``: the chained Rosenbrock function, n = 1000, from the standard start
   (-1.2, 1, -1.2, 1, ...) to f < 1e-10, against scipy Newton-CG (with ``hessp``), jaxopt LBFGS
   and optax lbfgs run in a ``lax.while_loop``. Ours: ``lbfgs`` and ``newton_minimise`` (CG).
"""

from __future__ import annotations

import warnings

import harness
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so

import jaxopt_mml as mml


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def _starts(batch, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(-2.0, 2.0, batch), rng.uniform(-1.0, 3.0, batch)], axis=1)


def _warm():
    # The first jit in a process pays one-off start-up costs; keep them out of our compile time.
    jax.block_until_ready(jax.jit(lambda x: x + 1.0)(jnp.zeros(3)))


# --- 1. many 2-D starts ---------------------------------------------------------------------------


def _ours_batch(starts, solver=mml.bfgs):
    def make():
        _warm()
        x0 = jnp.asarray(starts)
        fn = jax.jit(jax.vmap(lambda x: solver(rosen, x, max_iter=200)))
        return lambda: fn(x0)

    return make


def _optx_batch(starts):
    def make():
        import optimistix as optx

        solver = optx.BFGS(rtol=1e-8, atol=1e-8)
        x0 = jnp.asarray(starts)

        def one(x):
            sol = optx.minimise(lambda y, _: rosen(y), solver, x, max_steps=200, throw=False)
            return sol.value

        fn = jax.jit(jax.vmap(one))
        return lambda: fn(x0)

    return make


def _scipy_batch(starts):
    def make():
        f = so.rosen
        jac = so.rosen_der

        def run():
            return np.stack(
                [
                    so.minimize(f, s, jac=jac, method="BFGS", options={"gtol": 1e-8}).x
                    for s in starts
                ]
            )

        return run

    return make


def _xs(out):
    return np.asarray(out.x if hasattr(out, "x") else out)


def _batch_check(ours, peer):
    xo, xp = _xs(ours), _xs(peer)
    ok_o = np.all(np.abs(xo - 1.0) < 1e-5, axis=1)
    ok_p = np.all(np.abs(xp - 1.0) < 1e-5, axis=1)
    return f"at (1,1): ours {ok_o.mean():.1%}, peer {ok_p.mean():.1%}"


def _batch_note(out):
    it = np.asarray(out.n_iter)
    f = np.asarray(out.value)
    return (
        f"success {np.mean(np.asarray(out.success)):.1%}, max f {f.max():.1e}, "
        f"iterations mean {it.mean():.1f} / max {it.max()}"
    )


# --- 2. Rosenbrock n = 1000 -------------------------------------------------------------------------


def _x0_1000():
    return np.tile([-1.2, 1.0], 500)


def _ours_1000(solver):
    def make():
        _warm()
        x0 = jnp.asarray(_x0_1000())
        fn = jax.jit(lambda x: solver(rosen, x, max_iter=20_000))
        return lambda: fn(x0)

    return make


def _jaxopt_1000():
    def make():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import jaxopt
        solver = jaxopt.LBFGS(rosen, maxiter=20_000, tol=1e-6)
        x0 = jnp.asarray(_x0_1000())
        fn = jax.jit(lambda x: solver.run(x).params)
        return lambda: fn(x0)

    return make


def _optax_1000():
    def make():
        import optax

        opt = optax.lbfgs()
        vg = optax.value_and_grad_from_state(rosen)

        def run(x):
            def body(c):
                x, st, k = c
                v, g = vg(x, state=st)
                u, st = opt.update(g, st, x, value=v, grad=g, value_fn=rosen)
                return optax.apply_updates(x, u), st, k + 1

            def cond(c):
                _, st, k = c
                g = optax.tree.get(st, "grad")
                return (k == 0) | ((k < 20_000) & (optax.tree.norm(g) > 1e-6))

            return jax.lax.while_loop(cond, body, (x, opt.init(x), 0))[0]

        x0 = jnp.asarray(_x0_1000())
        fn = jax.jit(run)
        return lambda: fn(x0)

    return make


def _scipy_ncg_1000():
    def make():
        x0 = _x0_1000()

        def run():
            return so.minimize(
                so.rosen,
                x0,
                jac=so.rosen_der,
                hessp=so.rosen_hess_prod,
                method="Newton-CG",
                options={"xtol": 1e-12, "maxiter": 100_000},
            ).x

        return run

    return make


def _f1000(out):
    return float(so.rosen(np.asarray(out.x if hasattr(out, "x") else out, dtype=np.float64)))


def _check_1000(ours, peer):
    return f"f ours {_f1000(ours):.1e}, peer {_f1000(peer):.1e}"


def _note_1000(out):
    return (
        f"f {float(out.value):.1e}, status {int(out.status)}, "
        f"{int(out.n_iter)} iterations, {int(out.n_fev)} evaluations"
    )


def cases(full: bool) -> list[harness.Case]:
    batch = 1000
    starts = _starts(batch)
    peers_1000 = [
        harness.Impl("scipy Newton-CG (hessp)", _scipy_ncg_1000(), compiled=False),
        harness.Impl("jaxopt LBFGS jit", _jaxopt_1000()),
        harness.Impl("optax lbfgs while_loop", _optax_1000()),
    ]
    out = [
        harness.Case(
            task="minimise rosen2 batch (bfgs)",
            size=f"B={batch}",
            ours=harness.Impl("jit(vmap(bfgs))", _ours_batch(starts)),
            peers=[
                harness.Impl("scipy BFGS loop", _scipy_batch(starts), compiled=False),
                harness.Impl("optimistix BFGS jit(vmap)", _optx_batch(starts)),
            ],
            check=_batch_check,
            note=_batch_note,
        ),
        harness.Case(
            task="minimise rosen2 batch (newton)",
            size=f"B={batch}",
            ours=harness.Impl(
                "jit(vmap(newton_minimise))", _ours_batch(starts, mml.newton_minimise)
            ),
            peers=[harness.Impl("optimistix BFGS jit(vmap)", _optx_batch(starts))],
            check=_batch_check,
            note=_batch_note,
        ),
        harness.Case(
            task="minimise rosen1000 f<1e-10 (lbfgs)",
            size="n=1000",
            ours=harness.Impl("lbfgs jit", _ours_1000(mml.lbfgs)),
            peers=peers_1000,
            check=_check_1000,
            note=_note_1000,
        ),
        harness.Case(
            task="minimise rosen1000 f<1e-10 (newton-cg)",
            size="n=1000",
            ours=harness.Impl("newton_minimise cg jit", _ours_1000(mml.newton_minimise)),
            peers=peers_1000[1:2],
            check=_check_1000,
            note=_note_1000,
        ),
    ]
    if full:
        big = _starts(10_000, seed=1)
        out.append(
            harness.Case(
                task="minimise rosen2 batch (bfgs)",
                size="B=10000",
                ours=harness.Impl("jit(vmap(bfgs))", _ours_batch(big)),
                peers=[harness.Impl("optimistix BFGS jit(vmap)", _optx_batch(big))],
                check=_batch_check,
                note=_batch_note,
            )
        )
    return out
