"""jaxopt_mml: multivariate calculus for machine learning, as fast JAX routines.

Derivatives, Taylor series, root finding, minimisation, constrained optimisation and chi-squared
fitting; every routine is jit-compiled, vectorisable with ``jax.vmap`` and differentiable.

    >>> import jaxopt_mml as mml

This module only re-exports the public names of the private modules, one per family.
"""

from ._status import *  # noqa: I001  (core first)
from ._derivatives import *
from ._taylor import *
from ._roots import *
from ._minimise import *
from ._constrained import *
from ._fitting import *
from ._sharding import *

from . import _constrained, _derivatives, _fitting, _minimise, _roots, _sharding, _status, _taylor

__version__ = "0.1.0"

__all__ = sorted(
    name
    for module in (
        _status,
        _derivatives,
        _taylor,
        _roots,
        _minimise,
        _constrained,
        _fitting,
        _sharding,
    )
    for name in module.__all__
)
