"""Learned surrogates of dynamics and their model error, for forecasting and DA.

* :class:`PeriodicConvTendency`: a local, translation-equivariant network for the tendency
  ``dx/dt`` of a periodic 1-d chain such as Lorenz-96; a :class:`~uqdyn.physics.Dynamics`,
  so :class:`uqdyn.da.ForecastOperator` integrates it like the true model. Its
  :meth:`~PeriodicConvTendency.loss` is the error of one classical RK4 step on pairs
  ``(x(t), x(t + dt))`` (from :func:`uqdyn.data.pairs.lorenz96_pairs`), so
  :func:`uqdyn.train.fit` trains it; :func:`fit_tendency_surrogate` is the recipe.
* :class:`DiagonalNormalError`: the model-error Predictive of a stochastic forecast, a
  Normal with a learned bias and standard deviation per variable (random-walk scaling in
  ``dt``), fitted by maximum likelihood on held-out one-step residuals
  (:func:`fit_model_error`, which reports whether it converged).
"""

from uqdyn.models.surrogate.model_error import DiagonalNormalError, ModelErrorFit, fit_model_error
from uqdyn.models.surrogate.tendency import (
    PeriodicConvTendency,
    fit_tendency_surrogate,
    one_step_loss,
    one_step_residuals,
)

__all__ = [
    "PeriodicConvTendency",
    "fit_tendency_surrogate",
    "one_step_loss",
    "one_step_residuals",
    "DiagonalNormalError",
    "ModelErrorFit",
    "fit_model_error",
]
