"""The :class:`Predictive` base class: the one output type of every uqdyn model."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["Predictive"]


def _as_levels(q: Any, like: Tensor) -> tuple[Tensor, bool]:
    """Quantile levels as a 1-D tensor on ``like``'s device/dtype; also whether q was scalar."""
    scalar = isinstance(q, (float, int)) or (
        isinstance(q, (Tensor, np.ndarray)) and np.ndim(q) == 0
    )
    levels = torch.as_tensor(np.asarray(q, dtype=np.float64) if not isinstance(q, Tensor) else q)
    levels = levels.to(device=like.device, dtype=like.dtype).reshape(-1)
    if levels.numel() == 0:
        raise ValueError("q is empty; expected at least one quantile level in (0, 1)")
    if not bool(((levels > 0) & (levels < 1)).all()):
        raise ValueError(f"q={q!r}; expected quantile levels strictly between 0 and 1")
    return levels, scalar


class Predictive(ABC):
    """A predictive distribution p(y | x) over a batch of real values.

    Every uqdyn model returns a Predictive. Its *marginal* at each point is a univariate
    distribution; ``batch_shape`` is the shape of the predicted values, batch-first, e.g.
    ``(batch, points, y_dim)`` for point sets or ``(batch, channels, height, width)`` for
    gridded fields. All methods follow the device and dtype of the stored tensors.

    Subclasses implement ``mean``, ``variance``, ``sample``, ``cdf``, ``_quantile`` and
    ``crps``; ``log_prob`` where a density exists.
    """

    #: Short name of the family, used in ``to_xarray`` attributes and reports.
    kind: str = "predictive"

    # ------------------------------------------------------------------ summary statistics
    @property
    @abstractmethod
    def batch_shape(self) -> torch.Size:
        """Shape of the predicted values (the marginals)."""

    @property
    @abstractmethod
    def mean(self) -> Tensor:
        """Predictive mean, shape ``batch_shape``."""

    @property
    @abstractmethod
    def variance(self) -> Tensor:
        """Predictive (marginal) variance, shape ``batch_shape``."""

    @property
    def stddev(self) -> Tensor:
        """Predictive (marginal) standard deviation, shape ``batch_shape``."""
        return self.variance.sqrt()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    # ------------------------------------------------------------------ distribution functions
    @abstractmethod
    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples; shape ``(n, *batch_shape)`` (samples first)."""

    @abstractmethod
    def cdf(self, y: Tensor) -> Tensor:
        """Marginal CDF ``P(Y <= y)``; ``y`` broadcastable to ``batch_shape``."""

    @abstractmethod
    def _quantile(self, levels: Tensor) -> Tensor:
        """Marginal quantiles for 1-D ``levels (L,)``; shape ``(L, *batch_shape)``."""

    def quantile(self, q: float | Sequence[float] | Tensor) -> Tensor:
        """Marginal quantile function.

        Parameters
        ----------
        q:
            A level in (0, 1), or a 1-D sequence/tensor of ``L`` levels.

        Returns
        -------
        Tensor of shape ``batch_shape`` for a scalar level, ``(L, *batch_shape)`` otherwise.
        """
        levels, scalar = _as_levels(q, self.mean)
        out = self._quantile(levels)
        return out[0] if scalar else out

    def interval(self, level: float = 0.9) -> tuple[Tensor, Tensor]:
        """Central prediction interval with nominal coverage ``level``.

        Returns
        -------
        (lower, upper), each of shape ``batch_shape``: the ``(1 - level) / 2`` and
        ``(1 + level) / 2`` quantiles.
        """
        if not isinstance(level, (float, int)) or not 0.0 < float(level) < 1.0:
            raise ValueError(f"level={level!r}; expected a number strictly between 0 and 1")
        bounds = self.quantile([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        return bounds[0], bounds[1]

    def log_prob(self, y: Tensor) -> Tensor:
        """Log predictive density of ``y``; see each subclass for its shape."""
        raise NotImplementedError(f"{type(self).__name__} has no density; log_prob is undefined")

    @abstractmethod
    def crps(self, y: Tensor) -> Tensor:
        """Continuous ranked probability score of ``y`` (marginal), shape ``batch_shape``."""

    # ------------------------------------------------------------------ conversion
    @abstractmethod
    def to(self, *args: Any, **kwargs: Any) -> Predictive:
        """A copy with every tensor moved/cast as ``Tensor.to(*args, **kwargs)``."""

    @abstractmethod
    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        """Variables for :meth:`to_xarray`: name -> (leading extra dims, tensor)."""

    def to_xarray(
        self,
        dims: Sequence[str] | None = None,
        coords: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> Any:
        """The distribution's parameters as an ``xarray.Dataset`` with named dims.

        Parameters
        ----------
        dims:
            Names for the ``batch_shape`` axes; default ``dim_0, dim_1, ...``.
        coords:
            Coordinates passed to the Dataset.
        name:
            Stored as the ``name`` attribute (e.g. the predicted variable).

        Returns
        -------
        ``xarray.Dataset`` whose variables depend on the family (``mean`` and ``stddev``
        always; ``forecast`` with a leading ``member`` dim for ensembles; ``weight``,
        ``component_mean``, ``component_stddev`` with a ``component`` dim for mixtures).
        """
        import xarray as xr

        shape = tuple(self.batch_shape)
        if dims is None:
            dims = tuple(f"dim_{i}" for i in range(len(shape)))
        dims = tuple(dims)
        if len(dims) != len(shape):
            raise ValueError(
                f"dims={dims} names {len(dims)} axes; expected {len(shape)} for batch_shape {shape}"
            )
        data_vars = {}
        for var, (lead, tensor) in self._xarray_vars().items():
            array = tensor.detach().cpu().numpy()
            data_vars[var] = (tuple(lead) + dims, array)
        attrs = {"predictive": self.kind}
        if name is not None:
            attrs["name"] = name
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, dtype={self.dtype})"
