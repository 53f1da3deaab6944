"""The fitting family: chi-squared, linear regression and nonlinear curve fitting.

Public names (re-exported by ``jaxopt_mml``): :func:`chi_squared`, :func:`linear_fit`,
:func:`curve_fit`, :func:`least_squares` and their results :class:`FitResult` and
:class:`LeastSquaresResult`. The pieces live in private modules: ``_fit_data`` (inputs, masks,
bounds), ``_fit_losses`` (robust losses), ``_fit_lm`` (the iterations), ``_fit_stats``
(covariance and statistics), ``_fit_linear``, ``_fit_curve`` and ``_fit_least_squares`` (the
same iterations on a residual function).
"""

from ._fit_curve import curve_fit
from ._fit_least_squares import LeastSquaresResult, least_squares
from ._fit_linear import chi_squared, linear_fit
from ._fit_stats import FitResult

__all__ = [
    "FitResult",
    "LeastSquaresResult",
    "chi_squared",
    "curve_fit",
    "least_squares",
    "linear_fit",
]
