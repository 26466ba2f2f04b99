"""uqdyn: probabilistic modeling and uncertainty quantification of physical dynamics.

Every model in uqdyn answers with a :class:`uqdyn.predictive.Predictive` distribution
p(y | x), scored by :mod:`uqdyn.scoring` and checked by :mod:`uqdyn.calibration`.

The top level holds the version and the seeding helpers :func:`seed_everything` and
:func:`seeded` (imported on first use, so ``import uqdyn`` stays light); import the
subpackages explicitly.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from uqdyn._seed import seed_everything, seeded

try:
    __version__ = version("uqdyn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__", "seed_everything", "seeded"]


def __getattr__(name: str) -> Any:
    if name in ("seed_everything", "seeded"):
        from uqdyn import _seed

        return getattr(_seed, name)
    raise AttributeError(f"module 'uqdyn' has no attribute {name!r}")
