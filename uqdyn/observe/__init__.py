"""Observation operators: what an instrument sees of a state.

Each operator is an ``nn.Module``; ``op(state, generator=None)`` takes gridded states
``(B, C, H, W)`` or vector states ``(B, D)`` and returns an :class:`Observed` with the
observed ``values``, the boolean ``mask`` (``True`` = observed), the noise standard
deviation ``noise_std`` and the realized noise-free operator (``Observed.apply``,
``Observed.matrix``) for data assimilation. Random parameters are drawn per sample from the
distributions documented on each operator. Operators chain with :class:`Compose`.
"""

from uqdyn.observe.base import Compose, ObservationOperator, Observed
from uqdyn.observe.masks import BlockMask, CloudMask, RandomPixelMask
from uqdyn.observe.transforms import Blur, GaussianNoise, StationSubsample

__all__ = [
    "Observed",
    "ObservationOperator",
    "Compose",
    "RandomPixelMask",
    "CloudMask",
    "BlockMask",
    "StationSubsample",
    "Blur",
    "GaussianNoise",
]
