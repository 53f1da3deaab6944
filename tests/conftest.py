"""Test configuration: float64 is switched on once, here (the library never flips it itself).

Tests of float32 behaviour pass float32 arrays explicitly, which JAX keeps as float32.
"""

import importlib
import os
import shutil
import tempfile

import jax
import pytest

jax.config.update("jax_enable_x64", True)

# JAXOPT_MML_TEST_WIDE_BACKEND=1 runs the suite on a CPU with the code paths that the library
# takes on a GPU or TPU (`_backend.wide_backend`: vectorised vmaps instead of sequential maps,
# wide pools and chunks), to find tests that hold on a CPU only. The GPU's own rounding differs
# again: XLA_FLAGS=--xla_backend_optimization_level=0 changes the CPU's (fusion, reduction
# order), which showed the same tests that rounding decides as a run on an H100 did.
if os.environ.get("JAXOPT_MML_TEST_WIDE_BACKEND") == "1":
    import jaxopt_mml._backend

    for _name in ("_batching", "_fit_curve", "_roots_common", "_special"):
        _module = importlib.import_module(f"jaxopt_mml.{_name}")
        _module.wide_backend = jaxopt_mml._backend.wide_backend = lambda: True

# One persistent compilation cache per test run, shared by pytest-xdist's workers (they inherit
# the variable set here by the controller): a program that one module or worker compiled is
# loaded, not compiled again, by the next (the caches in memory are dropped after each module,
# below). Only programs that took a while to compile are kept.
# JAXOPT_MML_TEST_COMPILE_CACHE=off turns it off. 13% less time for the fitting tests on 2 cores.
_OWN_CACHE = "JAXOPT_MML_TEST_COMPILE_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["JAXOPT_MML_TEST_COMPILE_CACHE"] = tempfile.mkdtemp(prefix="jaxopt_mml_tests_")
_CACHE = os.environ["JAXOPT_MML_TEST_COMPILE_CACHE"]
if _CACHE != "off":
    jax.config.update("jax_compilation_cache_dir", _CACHE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.3)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_sessionfinish(session):
    """The process that made the cache (the controller, or a run without workers) removes it."""
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drop JAX's compiled programs after each test module. A worker of ``pytest -n 2`` runs
    half the suite's ~650 tests in one process, and with every program kept the CI's workers
    crashed (a segfault inside XLA's compile, late in the run, in a different test each time:
    3 runs of 3 on session 14's suite; each crashing test passes alone)."""
    yield
    jax.clear_caches()


# The suite's time is XLA's compile time (about 70% of it, 1400 s of a 2000 s run on 2 cores,
# measured 2026-11-28: one compile per distinct program, almost none repeated). The modules of
# edge cases, misuse and transformation rules (below) compile with XLA's cheaper optimisation
# (JAX's ``jax_disable_most_optimizations``: backend optimisation level 0, LLVM's expensive
# passes off), which takes a fifth off their time. The same programs, the same HLO; the code XLA
# generates differs, and with it rounding in the last bits, as it does between CPUs and GPUs, for
# which these tests are written. The families' main modules, the NIST and Moré-Garbow-Hillstrom
# certifications, the linear-algebra kernels' accuracy and the sharding checks (subprocesses)
# run at XLA's default. JAXOPT_MML_TEST_XLA_OPT=full runs every module at the default.
_CHEAP_COMPILE_MODULES = frozenset(
    {
        "test_constrained_api",
        "test_constrained_robust",
        "test_constrained_steps",
        "test_core_rules",
        "test_fitting_batch",
        "test_fitting_edges",
        "test_fitting_pinned",
        "test_fitting_wrong_turns",
        "test_implicit_rules",
        "test_minimise_steps",
        "test_minimise_unbounded",
        "test_readme",
        "test_roots_rules",
        "test_static",
        "test_taylor_rules",
    }
)
_FULL_OPTIMISATION = os.environ.get("JAXOPT_MML_TEST_XLA_OPT") == "full"


@pytest.fixture(autouse=True, scope="module")
def _xla_optimisation(request):
    """XLA's cheaper optimisation for the modules in ``_CHEAP_COMPILE_MODULES`` (see above)."""
    name = request.module.__name__.rpartition(".")[2]
    cheap = name in _CHEAP_COMPILE_MODULES and not _FULL_OPTIMISATION
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", cheap)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture(autouse=True)
def _xla_default_for_marked(request, _xla_optimisation):
    """A test marked ``xla_default`` runs at XLA's default optimisation in any module: its
    outcome is decided by rounding in the last bits, and the CPU's default code is what it was
    written against (each marked test says what the cheaper code changes)."""
    if request.node.get_closest_marker("xla_default") is None:
        yield
        return
    previous = jax.config.values["jax_disable_most_optimizations"]
    jax.clear_caches()  # (a program compiled for the module's other tests is not reused)
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


# Where the NIST StRD data live: $NIST_STRD_DIR, else ../shared/data/nist_strd beside the checkout.
NIST_DIR = os.environ.get(
    "NIST_STRD_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nist_strd"),
)


@pytest.fixture
def force_matrix_free(monkeypatch):
    """A function that makes the implicit derivatives of problems above 10 unknowns matrix-free
    (``_implicit.DENSE_TANGENT_MAX``) from then on, and returns the list of the keyword
    arguments of each matrix-free solve traced (a function solved afterwards must be traced
    anew: give the solver another function)."""
    from jaxopt_mml import _implicit

    def patch():
        monkeypatch.setattr(_implicit, "DENSE_TANGENT_MAX", 10)
        calls = []
        matrix_free = _implicit.matrix_free_tangent_solve
        monkeypatch.setattr(
            _implicit,
            "matrix_free_tangent_solve",
            lambda g, y, **kw: calls.append(kw) or matrix_free(g, y, **kw),
        )
        return calls

    return patch
