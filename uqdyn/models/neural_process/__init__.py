"""The neural-process family: conditional, latent, attentive, convolutional, neural-ODE NPs.

Every point-set model takes ``(x_context (B, Nc, x_dim), y_context (B, Nc, y_dim), x_target
(B, Nt, x_dim))`` with an optional boolean ``mask_context (B, Nc)`` (padded points never
change a prediction), returns a :class:`uqdyn.predictive.Predictive` over
``(B, Nt, y_dim)`` and offers ``loss(task)`` and ``predict(task)`` for
:class:`uqdyn.data.Task` batches:

* :class:`CNP`, :class:`AttentiveCNP` and :class:`OffGridConvCNP` (1-D inputs, translation
  equivariant) answer with a :class:`~uqdyn.predictive.Normal` and are trained by the
  conditional log-likelihood;
* :class:`LatentNP`, :class:`AttentiveNP` and :class:`NeuralODEProcess` answer with a
  :class:`~uqdyn.predictive.GaussianMixture` over latent draws (components first) and are
  trained by the ELBO with the context posterior as prior (optionally with a KL warm-up,
  ``kl_warmup``), natively or through pyro's SVI (:mod:`uqdyn.models.neural_process.svi`).

The gridded models take fields ``y_context (B, C_in, H, W)`` with a boolean mask (NaN also
means "not observed") and are trained on :class:`GridTask` batches: :class:`ConvCNP`
answers with a :class:`~uqdyn.predictive.Normal` ``(B, C_out, H, W)``,
:class:`ConvCNPEnsemble` with an equal-weight :class:`~uqdyn.predictive.GaussianMixture`
``(K, B, C_out, H, W)``.
"""

from .attentive import AttentiveCNP, AttentiveNP
from .cnp import CNP
from .convcnp import ConvCNP, ConvCNPEnsemble, GridTask
from .latent import LatentNP
from .ode import LatentODE, NeuralODEProcess
from .offgrid import OffGridConvCNP

__all__ = [
    "CNP",
    "LatentNP",
    "AttentiveCNP",
    "AttentiveNP",
    "NeuralODEProcess",
    "LatentODE",
    "ConvCNP",
    "ConvCNPEnsemble",
    "GridTask",
    "OffGridConvCNP",
]
