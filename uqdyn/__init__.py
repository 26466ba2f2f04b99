"""uqdyn: probabilistic modeling and uncertainty quantification of physical dynamics.

Every model in uqdyn answers with a :class:`uqdyn.predictive.Predictive` distribution
p(y | x), scored by :mod:`uqdyn.scoring` and checked by :mod:`uqdyn.calibration`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("uqdyn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
