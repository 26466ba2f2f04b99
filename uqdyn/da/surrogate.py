"""Former home of the Lorenz-96 surrogate; the code lives in :mod:`uqdyn.models.surrogate`
(models and training recipes) and :mod:`uqdyn.data.pairs` (the training pairs).

These names are re-exported here so that existing imports keep working.
"""

from uqdyn.data.pairs import lorenz96_pairs
from uqdyn.models.surrogate import (
    DiagonalNormalError,
    PeriodicConvTendency,
    fit_model_error,
    fit_tendency_surrogate,
    one_step_residuals,
)

__all__ = [
    "PeriodicConvTendency",
    "DiagonalNormalError",
    "lorenz96_pairs",
    "fit_tendency_surrogate",
    "fit_model_error",
    "one_step_residuals",
]
