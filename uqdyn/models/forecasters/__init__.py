"""Learned forecasters over forecast origins, with the interface of the references.

Each has ``fit(train_origins, valid_origins=None)`` and ``predict(origins)`` returning a
Predictive over ``(origin, lead, *space)`` in the user's units, labelled with the origins'
coordinates, like :class:`uqdyn.forecast.Persistence` and the other references:

* :class:`GPForecaster`: one exact GP per lead on the lagged, normalised window (a
  Bayesian autoregression with a non-linear correction);
* :class:`NPForecaster`: a conditional (or attentive) neural process per window, optionally
  a deep ensemble;
* :class:`ConvCNPForecaster`: a convolutional CNP on gridded fields (past frames in, one
  channel per lead; land and gaps as density channels), optionally a deep ensemble.

Both normalise each window (anomalies from a climatology, centring, scaling; see
:class:`uqdyn.forecast.normalize.WindowNormalizer`) and treat NaN as not observed.
"""

from .convcnp import ConvCNPForecaster
from .gp import GPForecaster
from .neural_process import NPForecaster

__all__ = ["GPForecaster", "NPForecaster", "ConvCNPForecaster"]
