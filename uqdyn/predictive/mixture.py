"""Gaussian-mixture predictive distribution (e.g. latent-variable models)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uqdyn._normal import LOG_SQRT_2PI, std_normal_cdf, std_normal_ppf

from ._checks import as_float_tensor, check_finite, check_positive, check_sample_count
from .base import Predictive

__all__ = ["GaussianMixture"]


class GaussianMixture(Predictive):
    r"""Pointwise Gaussian mixtures :math:`F(y) = \sum_k w_k \Phi((y - \mu_k) / \sigma_k)`.

    The component axis comes **first**, as latent samples do in a latent neural process: a
    model drawing ``K`` latent samples and decoding each to a Gaussian gives ``loc`` and
    ``scale`` of shape ``(K, *batch_shape)``.

    Parameters
    ----------
    weights:
        Non-negative component weights, shape ``(K,)`` or broadcastable to
        ``(K, *batch_shape)``; normalised to sum to one over the component axis.
    loc, scale:
        Component means and standard deviations (> 0), shape ``(K, *batch_shape)``
        (broadcastable to each other).
    validate:
        Check finiteness and positivity (one device sync).

    Notes
    -----
    Quantiles are found by bracketed root finding on the mixture CDF: the q-quantile lies
    between the smallest and largest component q-quantiles; bisection narrows the bracket to
    the dtype's resolution and safeguarded Newton steps polish it.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import GaussianMixture
    >>> p = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[-1.0], [1.0]]),
    ...                     torch.ones(2, 1))
    >>> p.quantile(0.5).abs().item() < 1e-5
    True
    """

    kind = "gaussian_mixture"

    def __init__(self, weights: Any, loc: Any, scale: Any, *, validate: bool = True) -> None:
        loc_t = as_float_tensor(loc, "loc")
        scale_t = as_float_tensor(scale, "scale", like=loc_t)
        w = as_float_tensor(weights, "weights", like=loc_t)
        if loc_t.dim() < 1:
            raise ValueError(f"loc has shape {tuple(loc_t.shape)}; expected (K, *batch_shape)")
        try:
            shape = torch.broadcast_shapes(loc_t.shape, scale_t.shape)
        except RuntimeError:
            raise ValueError(
                f"loc of shape {tuple(loc_t.shape)} and scale of shape {tuple(scale_t.shape)} "
                "do not broadcast; expected (K, *batch_shape) each"
            ) from None
        k = shape[0]
        if w.dim() == 1 and len(shape) > 1:
            w = w.reshape((-1,) + (1,) * (len(shape) - 1))
        if w.dim() == 0 or w.shape[0] not in (k, 1):
            raise ValueError(
                f"weights has shape {tuple(w.shape)}; expected (K,) or broadcastable to "
                f"(K, *batch_shape) with K = {k}"
            )
        try:
            shape = torch.broadcast_shapes(shape, w.shape)
        except RuntimeError:
            raise ValueError(
                f"weights of shape {tuple(w.shape)} do not broadcast to {tuple(shape)}"
            ) from None
        if validate:
            check_finite(loc_t, "loc")
            check_positive(scale_t, "scale")
            check_finite(w, "weights")
            if bool((w < 0).any()):
                raise ValueError("weights has negative entries; expected non-negative weights")
        total = w.sum(0, keepdim=True)
        if validate and bool((total <= 0).any()):
            raise ValueError("weights sum to zero; expected a positive total over the components")
        self.weights = (w / total).expand(shape)
        self.loc = loc_t.expand(shape)
        self.scale = scale_t.expand(shape)

    @property
    def n_components(self) -> int:
        return self.loc.shape[0]

    @property
    def batch_shape(self) -> torch.Size:
        return self.loc.shape[1:]

    @property
    def mean(self) -> Tensor:
        return (self.weights * self.loc).sum(0)

    @property
    def variance(self) -> Tensor:
        second = (self.weights * (self.scale.square() + self.loc.square())).sum(0)
        return (second - self.mean.square()).clamp_min(0.0)

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Draws by component selection then Gaussian noise; shape ``(n, *batch_shape)``.

        Differentiable with respect to ``loc`` and ``scale`` (not the weights).
        """
        check_sample_count(n)
        dev, dt = self.loc.device, self.loc.dtype
        u = torch.rand((n, 1, *self.batch_shape), generator=generator, device=dev, dtype=dt)
        cum = self.weights.cumsum(0).unsqueeze(0)
        idx = (u > cum).sum(1, keepdim=True).clamp_max(self.n_components - 1)
        loc = self.loc.unsqueeze(0).expand(n, *self.loc.shape).gather(1, idx).squeeze(1)
        scale = self.scale.unsqueeze(0).expand(n, *self.scale.shape).gather(1, idx).squeeze(1)
        eps = torch.randn((n, *self.batch_shape), generator=generator, device=dev, dtype=dt)
        return loc + scale * eps

    def _component_axis(self, y: Tensor) -> tuple[Tensor, int]:
        """Insert the component axis into ``y (*extra, *batch_shape)``; return (y, axis)."""
        nb = len(self.batch_shape)
        if y.dim() < nb:
            y = y.reshape((1,) * (nb - y.dim()) + tuple(y.shape))
        axis = y.dim() - nb
        return y.unsqueeze(axis), axis

    def cdf(self, y: Any) -> Tensor:
        """Mixture CDF; ``y`` of shape ``(*extra, *batch_shape)`` (broadcastable) gives the
        same shape."""
        y_c, axis = self._component_axis(as_float_tensor(y, "y", like=self.loc))
        return (self.weights * std_normal_cdf((y_c - self.loc) / self.scale)).sum(axis)

    def _pdf_cdf(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """Density and CDF at ``y (L, *batch)``; each ``(L, *batch)``."""
        z = (y.unsqueeze(1) - self.loc) / self.scale
        pdf = (self.weights * torch.exp(-0.5 * z.square() - LOG_SQRT_2PI) / self.scale).sum(1)
        cdf = (self.weights * std_normal_cdf(z)).sum(1)
        return pdf, cdf

    def _quantile(self, levels: Tensor) -> Tensor:
        shape = (-1,) + (1,) * len(self.batch_shape)
        q = levels.reshape(shape)
        z = std_normal_ppf(q)  # (L, 1, ...)
        comp_q = self.loc.unsqueeze(0) + self.scale.unsqueeze(0) * z.unsqueeze(1)  # (L, K, ...)
        lo = comp_q.min(1).values.detach()
        hi = comp_q.max(1).values.detach()
        q = q.expand_as(lo)
        eps = torch.finfo(lo.dtype).eps
        width = (hi - lo).max()
        scale_min = self.scale.min().clamp_min(eps)
        n_iter = int(torch.ceil(torch.log2(width / (eps * scale_min) + 2.0)).clamp(1, 200))
        with torch.no_grad():
            for _ in range(n_iter):
                mid = 0.5 * (lo + hi)
                _, c = self._pdf_cdf(mid)
                below = c < q
                lo = torch.where(below, mid, lo)
                hi = torch.where(below, hi, mid)
                if bool(((hi - lo) <= 4 * eps * (lo.abs() + hi.abs() + scale_min)).all()):
                    break
            x = 0.5 * (lo + hi)
            for _ in range(3):  # safeguarded Newton polish
                pdf, c = self._pdf_cdf(x)
                step = (c - q) / pdf.clamp_min(torch.finfo(x.dtype).tiny)
                cand = x - step
                x = torch.where((cand >= lo) & (cand <= hi) & torch.isfinite(cand), cand, x)
        return x

    def log_prob(self, y: Any) -> Tensor:
        """Elementwise mixture log density; ``y`` of shape ``(*extra, *batch_shape)``."""
        y_c, axis = self._component_axis(as_float_tensor(y, "y", like=self.loc))
        z = (y_c - self.loc) / self.scale
        comp = -0.5 * z.square() - self.scale.log() - LOG_SQRT_2PI
        return torch.logsumexp(comp + self.weights.log(), dim=axis)

    def crps(self, y: Any) -> Tensor:
        """Closed-form mixture CRPS (Grimit et al. 2006), shape ``batch_shape``."""
        from uqdyn.scoring import crps_mixture

        y_t = as_float_tensor(y, "y", like=self.loc)
        return crps_mixture(y_t, self.weights, self.loc, self.scale, component_dim=0)

    def _to(self, *args: Any, **kwargs: Any) -> GaussianMixture:
        return GaussianMixture(
            self.weights.to(*args, **kwargs),
            self.loc.to(*args, **kwargs),
            self.scale.to(*args, **kwargs),
            validate=False,
        )

    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        return {
            "mean": ((), self.mean),
            "stddev": ((), self.stddev),
            "weight": (("component",), self.weights),
            "component_mean": (("component",), self.loc),
            "component_stddev": (("component",), self.scale),
        }
