"""Probabilistic precipitation nowcasters.

Every nowcaster has ``nowcast(inputs, steps, members, *, seed=0) -> Ensemble`` with
``inputs (batch, n_input, H, W)`` measured rain in mm/h (NaN where not observed) and
members ``(members, batch, steps, H, W)`` in mm/h.
"""

from .generative import GenerativeNowcaster, fair_crps, fit_generative_nowcaster

__all__ = [
    "GenerativeNowcaster",
    "fair_crps",
    "fit_generative_nowcaster",
]
