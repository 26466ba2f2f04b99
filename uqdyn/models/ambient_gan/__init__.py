"""AmbientGAN: generative models of clean fields trained from corrupted measurements.

* :class:`MeasurementModel` wraps a :mod:`uqdyn.observe` operator (masks, blur, noise) and
  draws its random parameters per sample; :class:`Measured` is what it returns, and the only
  input a discriminator accepts.
* :class:`AmbientGAN`: unconditional ``G(z)`` (Bora et al., ICLR 2018).
* :class:`ConditionalAmbientGAN`: ``G(z, y)`` for inverse problems (gap filling, denoising),
  trained from single corrupted measurements by splitting each into a condition and a
  held-out part; ``predict(y, members=K)`` returns a :class:`uqdyn.predictive.Ensemble` of
  clean fields ``(K, B, C, H, W)``.
* Both follow the training contract of :func:`uqdyn.train.fit` (``loss(batch)`` on
  measurements, ``predict_batch((measurements, truth))`` an Ensemble for validation);
  :func:`fit_ambient_gan` is the recipe (normalisation, batches, two-group Adam of
  :func:`gan_optimizer`; checkpoints and resume come with ``fit``).

The shallow-water gap-filling benchmark (data, baselines, scores) is
``benchmarks/ambient_gan_harness.py``, run by ``examples/ambient_gan_shallow_water.py``.
"""

from uqdyn.models.ambient_gan.measurement import Measured, MeasurementModel, as_measured
from uqdyn.models.ambient_gan.model import AmbientGAN, ConditionalAmbientGAN
from uqdyn.models.ambient_gan.networks import (
    ConditionalGenerator,
    Generator,
    MeasurementDiscriminator,
)
from uqdyn.models.ambient_gan.train import fit_ambient_gan, gan_optimizer, measurement_statistics

__all__ = [
    "Measured",
    "MeasurementModel",
    "as_measured",
    "AmbientGAN",
    "ConditionalAmbientGAN",
    "Generator",
    "ConditionalGenerator",
    "MeasurementDiscriminator",
    "fit_ambient_gan",
    "gan_optimizer",
    "measurement_statistics",
]
