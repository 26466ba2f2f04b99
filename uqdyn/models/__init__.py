"""Probabilistic models; each returns a :class:`uqdyn.predictive.Predictive`.

Import the families from their subpackages, e.g. ``uqdyn.models.neural_process`` and
``uqdyn.models.gp``.
"""

__all__: list[str] = []
