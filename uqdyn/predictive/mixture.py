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
        n = check_sample_count(n)
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

    def _quantile(self, levels: Tensor) -> Tensor:
        shape = (-1,) + (1,) * len(self.batch_shape)
        return self.quantile_each(levels.reshape(shape).expand(-1, *self.batch_shape))

    def quantile_each(self, levels: Tensor) -> Tensor:
        """Quantiles at levels that differ from point to point: ``levels (L, *batch_shape)``
        gives ``out[l, i] = F_i^{-1}(levels[l, i])``, shape ``(L, *batch_shape)``.

        Safeguarded Newton iteration (``rtsafe``) in the bracket spanned by the component
        quantiles; each element stops once converged, so the cost follows the elements still
        moving rather than the slowest one times the whole batch. Not differentiable.
        """
        batch = self.batch_shape
        n_lev = levels.shape[0]
        with torch.no_grad():
            w = self.weights.detach().reshape(self.n_components, -1)  # (K, B)
            loc = self.loc.detach().reshape(self.n_components, -1)
            scale = self.scale.detach().reshape(self.n_components, -1)
            q = levels.detach().to(loc).reshape(n_lev, -1)  # (L, B)
            z = std_normal_ppf(q)  # (L, B)
            comp_q = loc.unsqueeze(1) + scale.unsqueeze(1) * z.unsqueeze(0)  # (K, L, B)
            lo, hi = comp_q.min(0).values, comp_q.max(0).values
            # start from the moment-matched normal's quantile, inside the bracket
            mean = (w * loc).sum(0)
            sd = ((w * (scale.square() + loc.square())).sum(0) - mean.square()).clamp_min(0).sqrt()
            x = torch.minimum(torch.maximum(mean + sd * z, lo), hi)
            eps, tiny = torch.finfo(x.dtype).eps, torch.finfo(x.dtype).tiny
            floor = scale.min(0).values.clamp_min(tiny)  # (B,) absolute part of the tolerance
            x, lo, hi = x.reshape(-1), lo.reshape(-1), hi.reshape(-1)
            q = q.reshape(-1)
            col = torch.arange(loc.shape[1], device=x.device).repeat(n_lev)  # batch index
            last_step = (hi - lo).abs()
            active = (torch.isfinite(x) & (hi > lo)).nonzero().squeeze(1)
            params = torch.stack([w, loc, scale])  # (3, K, B), gathered once per step
            for _ in range(200):
                if active.numel() == 0:
                    break
                xa, la, ha, qa, c_idx = x[active], lo[active], hi[active], q[active], col[active]
                wa, loca, scalea = params[:, :, c_idx]  # each (K, n)
                za = (xa - loca) / scalea
                pdf = (wa * torch.exp(-0.5 * za.square() - LOG_SQRT_2PI) / scalea).sum(0)
                c = (wa * std_normal_cdf(za)).sum(0)
                below = c < qa
                la = torch.where(below, xa, la)
                ha = torch.where(below, ha, xa)
                newton = xa - (c - qa) / pdf.clamp_min(tiny)
                step = (newton - xa).abs()
                tol = 4 * eps * (xa.abs() + floor[c_idx])
                # a Newton step inside the bracket and at least halving the last step; else
                # bisection (a converging Newton sequence may sit on one end of the bracket)
                ok = (newton >= la) & (newton <= ha) & (step <= 0.5 * last_step[active])
                ok |= step <= tol
                x_new = torch.where(ok, newton, 0.5 * (la + ha))
                moved = (x_new - xa).abs()
                x[active], lo[active], hi[active], last_step[active] = x_new, la, ha, moved
                active = active[(moved > tol) & (ha - la > tol)]
        return x.reshape(n_lev, *batch)

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
