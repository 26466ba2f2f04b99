"""Neural operators: resolution-free probabilistic forecasters of gridded fields.

:class:`FNOForecaster` is a Fourier neural operator (Li et al., ICLR 2021) with a Gaussian
head: it maps a field ``(batch, in_channels, H, W)`` on a periodic grid to the
:class:`~uqdyn.predictive.Normal` of the next field ``(batch, out_channels, H, W)``, trained
by the Gaussian negative log-likelihood of the observed pixels of :class:`FieldPairBatch`
batches through :func:`uqdyn.train.fit`. Its Fourier layers (:class:`SpectralConv2d`) act
on physical wavenumbers, so weights fitted on one grid forecast on finer ones.
:class:`FNOEnsemble` (:func:`fno_ensemble`) makes a deep ensemble of them, forecasting a
:class:`~uqdyn.predictive.GaussianMixture`. The backbone is uqdyn's own :class:`FNO2d`
(any dtype) or, with ``backbone="neuralop"``, the neuraloperator package's FNO
(``pip install 'uqdyn[operator]'``).
"""

from .batch import FieldPairBatch
from .conditional import ConditionalFNO, ContextFieldBatch
from .fno import FNO2d, FNOEnsemble, FNOForecaster, fno_ensemble, gaussian_nll
from .spectral import SpectralConv2d, kept_modes

__all__ = [
    "FNOForecaster",
    "FNOEnsemble",
    "fno_ensemble",
    "FieldPairBatch",
    "ConditionalFNO",
    "ContextFieldBatch",
    "FNO2d",
    "SpectralConv2d",
    "kept_modes",
    "gaussian_nll",
]
