"""Test configuration: float64 is switched on once, here (the library never flips it itself).

Tests of float32 behaviour pass float32 arrays explicitly, which JAX keeps as float32.
"""

import os

import jax

jax.config.update("jax_enable_x64", True)

# Where the NIST StRD data live: $NIST_STRD_DIR, else ../shared/data/nist_strd beside the checkout.
NIST_DIR = os.environ.get(
    "NIST_STRD_DIR",
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "nist_strd"),
)
