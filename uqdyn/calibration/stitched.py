"""The :class:`Stitched` predictive: several forecasts of one batch, chosen point by point."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.predictive import Predictive

__all__ = ["Stitched"]


class Stitched(Predictive):
    r"""A forecast that follows ``parts[index[i]]`` at point ``i``.

    All parts share one ``batch_shape`` ``S``. Every marginal quantity is the chosen part's:
    ``mean``, ``variance``, ``cdf(y)``, ``quantile(q)``, ``crps(y)``, ``log_prob(y)`` (for
    parts with an elementwise density) and ``sample`` (each part draws, then each point
    keeps its part's draw; the joint structure *within* a part is kept only among points of
    that part). This is what grouped recalibration and per-group selection return when some
    groups keep the raw forecast or a rescaled one and others get a CDF map: each point is
    then exactly what its own recalibration would give it.

    Each method evaluates every part over the whole batch, so the cost is the sum of the
    parts' costs.

    Parameters
    ----------
    parts:
        Predictives of the same ``batch_shape``, dtype and device; at least one.
    index:
        Integer tensor broadcastable to ``S`` with values in ``[0, len(parts))``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import Stitched
    >>> p = Stitched([Normal(torch.zeros(3), 1.0), Normal(torch.zeros(3), 2.0)],
    ...              torch.tensor([0, 1, 1]))
    >>> p.stddev
    tensor([1., 2., 2.])
    """

    kind = "stitched"

    def __init__(self, parts: Sequence[Predictive], index: Any) -> None:
        parts = list(parts)
        if not parts:
            raise ValueError("parts is empty; expected at least one Predictive")
        for i, part in enumerate(parts):
            if not isinstance(part, Predictive):
                raise TypeError(f"parts[{i}] is a {type(part).__name__}; expected a Predictive")
        first = parts[0]
        for i, part in enumerate(parts[1:], start=1):
            if part.batch_shape != first.batch_shape:
                raise ValueError(
                    f"parts[{i}] has batch_shape {tuple(part.batch_shape)} but parts[0] has "
                    f"{tuple(first.batch_shape)}; expected one batch_shape"
                )
            if part.dtype != first.dtype or part.device != first.device:
                raise ValueError(
                    f"parts[{i}] is {part.dtype} on {part.device} but parts[0] is "
                    f"{first.dtype} on {first.device}; expected one dtype and device"
                )
        idx = torch.as_tensor(index).detach()
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise TypeError(f"index has dtype {idx.dtype}; expected integer part numbers")
        idx = idx.to(device=first.device, dtype=torch.int64)
        try:
            idx = idx.expand(first.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"index has shape {tuple(idx.shape)}; expected a shape broadcastable to "
                f"batch_shape {tuple(first.batch_shape)}"
            ) from None
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(parts)):
            raise ValueError(
                f"index has values in [{int(idx.min())}, {int(idx.max())}]; expected values "
                f"in [0, {len(parts)})"
            )
        self.parts = parts
        self.index = idx

    def _pick(self, values: Sequence[Tensor], lead: int = 0) -> Tensor:
        """Choose among per-part tensors of one shape ``(*lead_dims, *broadcast(S, ...))``."""
        stacked = torch.stack(torch.broadcast_tensors(*values))  # (P, *shape)
        shape = stacked.shape[1:]
        index = self.index
        if index.dim() > len(shape) - lead:
            raise ValueError(
                f"part values of shape {tuple(shape)} do not cover batch_shape "
                f"{tuple(self.batch_shape)}"
            )
        index = index.reshape((1,) * lead + tuple(index.shape))
        index = index.expand(shape).unsqueeze(0)
        return stacked.gather(0, index).squeeze(0)

    # ------------------------------------------------------------------ Predictive interface
    @property
    def batch_shape(self) -> torch.Size:
        return self.parts[0].batch_shape

    @property
    def device(self) -> torch.device:
        return self.parts[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.parts[0].dtype

    @property
    def mean(self) -> Tensor:
        """The chosen part's mean, shape ``batch_shape``."""
        return self._pick([p.mean for p in self.parts])

    @property
    def variance(self) -> Tensor:
        """The chosen part's variance, shape ``batch_shape``."""
        return self._pick([p.variance for p in self.parts])

    def cdf(self, y: Any) -> Tensor:
        """The chosen part's CDF at ``y``, shape ``batch_shape`` (broadcast with ``y``)."""
        return self._pick([p.cdf(y) for p in self.parts])

    def _quantile(self, levels: Tensor) -> Tensor:
        return self._pick([p._quantile(levels) for p in self.parts], lead=1)

    def crps(self, y: Any) -> Tensor:
        """The chosen part's CRPS of ``y``, shape ``batch_shape``."""
        return self._pick([p.crps(y) for p in self.parts])

    def log_prob(self, y: Any) -> Tensor:
        """The chosen part's log density; every part needs an elementwise density."""
        values = [p.log_prob(y) for p in self.parts]
        nd = len(self.batch_shape)
        for p, v in zip(self.parts, values, strict=True):
            if v.dim() < nd or v.shape[v.dim() - nd :] != self.batch_shape:
                raise NotImplementedError(
                    f"{type(p).__name__}.log_prob has shape {tuple(v.shape)}; a stitched "
                    f"density needs elementwise densities of batch_shape {tuple(self.batch_shape)}"
                )
        return self._pick(values)

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Each part's draws at its own points; shape ``(n, *batch_shape)``."""
        n = as_int(n, "n", minimum=1)
        return self._pick([p.sample(n, generator=generator) for p in self.parts], lead=1)

    def _to(self, *args: Any, **kwargs: Any) -> Stitched:
        parts = [p.to(*args, **kwargs) for p in self.parts]
        return Stitched(parts, self.index.to(parts[0].device))

    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        return {"mean": ((), self.mean), "stddev": ((), self.stddev), "part": ((), self.index)}
