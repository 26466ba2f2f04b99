"""The :class:`Predictive` base class: the one output type of every uqdyn model."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_float, is_real_scalar

__all__ = ["Predictive"]

_P = TypeVar("_P", bound="Predictive")


def _as_levels(q: Any, like: Tensor) -> tuple[Tensor, bool]:
    """Quantile levels as a 1-D tensor on ``like``'s device/dtype; also whether q was scalar."""
    scalar = is_real_scalar(q) or (isinstance(q, (Tensor, np.ndarray)) and np.ndim(q) == 0)
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

    A Predictive may carry **labels**: names for the ``batch_shape`` axes and coordinates
    (e.g. ``("origin", "lead", "lat", "lon")`` with the forecast's times and grid), set by
    :meth:`with_labels` (forecast models do it) and used by :meth:`to_xarray`, so a forecast
    goes back onto the user's coordinates. Labels never change any number.
    """

    #: Short name of the family, used in ``to_xarray`` attributes and reports.
    kind: str = "predictive"
    #: Names of the ``batch_shape`` axes (``None``: unlabelled), see :meth:`with_labels`.
    dims: tuple[str, ...] | None = None
    #: Coordinates for :meth:`to_xarray` (``None``: none), see :meth:`with_labels`.
    coords: dict[str, Any] | None = None

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
        level = as_float(level, "level")
        if not 0.0 < level < 1.0:
            raise ValueError(f"level={level!r}; expected a number strictly between 0 and 1")
        bounds = self.quantile([(1.0 - level) / 2.0, (1.0 + level) / 2.0])
        return bounds[0], bounds[1]

    def log_prob(self, y: Tensor) -> Tensor:
        """Log predictive density of ``y``; see each subclass for its shape."""
        raise NotImplementedError(f"{type(self).__name__} has no density; log_prob is undefined")

    @abstractmethod
    def crps(self, y: Tensor) -> Tensor:
        """Continuous ranked probability score of ``y`` (marginal), shape ``batch_shape``."""

    # ------------------------------------------------------------------ labels
    def with_labels(
        self: _P, dims: Sequence[str] | None, coords: Mapping[str, Any] | None = None
    ) -> _P:
        """A shallow copy labelled with dim names and coordinates (tensors are shared).

        Parameters
        ----------
        dims:
            One name per ``batch_shape`` axis, e.g. ``("origin", "lead", "lat", "lon")``;
            ``None`` removes the labels.
        coords:
            Coordinates in any form ``xarray.Dataset`` accepts (``{name: values}`` or
            ``{name: (dims, values)}``), for the labelled dims and extra ones such as a
            ``valid_time`` of dims ``("origin", "lead")``.

        Returns
        -------
        The same family, same numbers, with :attr:`dims` and :attr:`coords` set.
        """
        out = copy.copy(self)
        if dims is None:
            out.dims, out.coords = None, None
            return out
        names = tuple(str(d) for d in dims)
        shape = tuple(self.batch_shape)
        if len(names) != len(shape):
            raise ValueError(
                f"dims={names} names {len(names)} axes; expected {len(shape)} for batch_shape "
                f"{shape}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"dims={names} repeats a name; expected distinct names")
        out.dims = names
        out.coords = dict(coords) if coords is not None else None
        return out

    def _labelled_like(self, other: _P) -> _P:
        """``other`` with this Predictive's labels when the batch shapes agree."""
        if self.dims is None or tuple(other.batch_shape) != tuple(self.batch_shape):
            return other
        return other.with_labels(self.dims, self.coords)

    # ------------------------------------------------------------------ conversion
    def to(self, *args: Any, **kwargs: Any) -> Predictive:
        """A copy with every tensor moved/cast as ``Tensor.to(*args, **kwargs)`` (labels kept)."""
        return self._labelled_like(self._to(*args, **kwargs))

    def _to(self, *args: Any, **kwargs: Any) -> Predictive:
        """The family's copy with every tensor moved/cast (without labels)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement to()")

    @abstractmethod
    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        """Variables for :meth:`to_xarray`: name -> (leading extra dims, tensor)."""

    def to_xarray(
        self,
        dims: Sequence[str] | None = None,
        coords: Mapping[str, Any] | None = None,
        name: str | None = None,
        *,
        quantiles: Sequence[float] | None = None,
    ) -> Any:
        """The distribution's parameters as an ``xarray.Dataset`` with named dims.

        Parameters
        ----------
        dims:
            Names for the ``batch_shape`` axes; default the labels of :meth:`with_labels`,
            else ``dim_0, dim_1, ...``.
        coords:
            Coordinates passed to the Dataset, added to (and overriding) the labels' ones.
        name:
            Stored as the ``name`` attribute (e.g. the predicted variable).
        quantiles:
            Levels in (0, 1): adds ``quantile_forecast`` with a leading ``quantile`` dim.

        Returns
        -------
        ``xarray.Dataset`` whose variables depend on the family (``mean`` and ``stddev``
        always; ``forecast`` with a leading ``member`` dim for ensembles; ``weight``,
        ``component_mean``, ``component_stddev`` with a ``component`` dim for mixtures).
        """
        import xarray as xr

        shape = tuple(self.batch_shape)
        if dims is None:
            dims = (
                self.dims if self.dims is not None else tuple(f"dim_{i}" for i in range(len(shape)))
            )
        dims = tuple(dims)
        if len(dims) != len(shape):
            raise ValueError(
                f"dims={dims} names {len(dims)} axes; expected {len(shape)} for batch_shape {shape}"
            )
        all_coords: dict[str, Any] = {}
        if self.coords is not None and self.dims is not None and tuple(dims) == self.dims:
            all_coords.update(self.coords)
        if coords is not None:
            all_coords.update(coords)
        data_vars = {}
        for var, (lead, tensor) in self._xarray_vars().items():
            array = tensor.detach().cpu().numpy()
            data_vars[var] = (tuple(lead) + dims, array)
        if quantiles is not None:
            levels = [float(q) for q in quantiles]
            with torch.no_grad():
                values = self.quantile(levels).detach().cpu().numpy()
            data_vars["quantile_forecast"] = (("quantile",) + dims, values)
            all_coords["quantile"] = levels
        attrs = {"predictive": self.kind}
        if name is not None:
            attrs["name"] = name
        return xr.Dataset(data_vars, coords=all_coords or None, attrs=attrs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_shape={tuple(self.batch_shape)}, dtype={self.dtype})"
