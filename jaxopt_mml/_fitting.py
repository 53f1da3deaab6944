"""The fitting family: chi-squared, linear regression and nonlinear curve fitting.

Public names (re-exported by ``jaxopt_mml``): :func:`chi_squared`, :func:`linear_fit`,
:func:`curve_fit` and their result :class:`FitResult`. The pieces live in private modules:
``_fit_data`` (inputs, masks, bounds), ``_fit_losses`` (robust losses), ``_fit_lm`` (the
iterations), ``_fit_stats`` (covariance and statistics), ``_fit_linear`` and ``_fit_curve``.
"""

from ._fit_curve import curve_fit
from ._fit_linear import chi_squared, linear_fit
from ._fit_stats import FitResult

__all__ = ["FitResult", "chi_squared", "curve_fit", "linear_fit"]
