"""Defaults that depend on the kind of processor the code is compiled for.

A CPU runs a batch a few vector lanes at a time: there the batched solvers keep their working set
small (chunks, a narrow pool of solver lanes) so that it stays in cache. A GPU (or TPU) needs
hundreds of thousands of independent elements in flight to fill it, and each turn of a loop costs
a fixed launch and synchronisation overhead: there the same solvers run wide.
"""

from __future__ import annotations

import jax


def wide_backend() -> bool:
    """True when the default backend is an accelerator (GPU or TPU), False on a CPU.

    Read at trace time: it chooses static sizes (chunks, pool widths), never a computation's result.
    """
    return jax.default_backend() != "cpu"
