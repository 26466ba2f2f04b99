"""Independent (diagonal) Gaussian predictive distribution."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uqdyn._normal import LOG_SQRT_2PI, std_normal_cdf, std_normal_ppf

from ._checks import as_float_tensor, broadcast, check_finite, check_positive, check_sample_count
from .base import Predictive

__all__ = ["Normal"]


class Normal(Predictive):
    r"""Independent Gaussian marginals :math:`Y_i \sim \mathcal N(\mu_i, \sigma_i^2)`.

    Parameters
    ----------
    loc:
        Means, any shape, e.g. ``(batch, points, y_dim)``.
    scale:
        Standard deviations (> 0), broadcastable to ``loc``.
    validate:
        Check that ``loc`` is finite and ``scale`` positive (one device sync). Turn off inside
        training loops where the network guarantees it.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> p = Normal(torch.zeros(2, 3), torch.ones(2, 3))
    >>> p.interval(0.9)[1][0, 0].item()  # doctest: +ELLIPSIS
    1.644...
    """

    kind = "normal"

    def __init__(self, loc: Any, scale: Any, *, validate: bool = True) -> None:
        loc_t = as_float_tensor(loc, "loc")
        scale_t = as_float_tensor(scale, "scale", like=loc_t)
        loc_t, scale_t = broadcast("loc", loc_t, "scale", scale_t)
        if validate:
            check_finite(loc_t, "loc")
            check_positive(scale_t, "scale")
        self.loc = loc_t
        self.scale = scale_t

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape

    @property
    def mean(self) -> Tensor:
        return self.loc

    @property
    def variance(self) -> Tensor:
        return self.scale.square()

    @property
    def stddev(self) -> Tensor:
        return self.scale

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws ``loc + scale * eps``; shape ``(n, *batch_shape)``."""
        n = check_sample_count(n)
        eps = torch.randn(
            (n, *self.batch_shape),
            generator=generator,
            device=self.loc.device,
            dtype=self.loc.dtype,
        )
        return self.loc + self.scale * eps

    def cdf(self, y: Any) -> Tensor:
        """:math:`\\Phi((y - \\mu) / \\sigma)`, shape ``batch_shape`` (broadcast)."""
        y_t = as_float_tensor(y, "y", like=self.loc)
        return std_normal_cdf((y_t - self.loc) / self.scale)

    def _quantile(self, levels: Tensor) -> Tensor:
        shape = (-1,) + (1,) * len(self.batch_shape)
        z = std_normal_ppf(levels.reshape(shape))
        return self.loc + self.scale * z

    def log_prob(self, y: Any) -> Tensor:
        """Elementwise Gaussian log density, shape ``batch_shape`` (broadcast with ``y``)."""
        y_t = as_float_tensor(y, "y", like=self.loc)
        z = (y_t - self.loc) / self.scale
        return -0.5 * z.square() - self.scale.log() - LOG_SQRT_2PI

    def crps(self, y: Any) -> Tensor:
        """Closed-form Gaussian CRPS (Gneiting et al. 2005), shape ``batch_shape``."""
        from uqdyn.scoring import crps_normal

        y_t = as_float_tensor(y, "y", like=self.loc)
        return crps_normal(y_t, self.loc, self.scale)

    def _to(self, *args: Any, **kwargs: Any) -> Normal:
        return Normal(self.loc.to(*args, **kwargs), self.scale.to(*args, **kwargs), validate=False)

    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        return {"mean": ((), self.loc), "stddev": ((), self.scale)}
