"""Test configuration: float64 is switched on once, here (the library never flips it itself).

Tests of float32 behaviour pass float32 arrays explicitly, which JAX keeps as float32.
"""

import os

import jax
import pytest

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="module")
def _fresh_jax_caches():
    """Drop JAX's compiled programs after each test module. A worker of ``pytest -n 2`` runs
    half the suite's ~650 tests in one process, and with every program kept the CI's workers
    crashed (a segfault inside XLA's compile, late in the run, in a different test each time:
    3 runs of 3 on session 14's suite; each crashing test passes alone)."""
    yield
    jax.clear_caches()


# Where the NIST StRD data live: $NIST_STRD_DIR, else ../shared/data/nist_strd beside the checkout.
NIST_DIR = os.environ.get(
    "NIST_STRD_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nist_strd"),
)
