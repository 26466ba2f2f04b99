"""The :class:`Recalibrated` predictive: a forecast composed with a monotone calibration map."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from uqdyn._normal import SQRT2, std_normal_cdf, std_normal_pdf
from uqdyn.predictive import Predictive

__all__ = ["Recalibrated"]


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of ``(xp, fp)`` at ``x`` (any shape), clamped to ends."""
    idx = torch.searchsorted(xp, x.contiguous(), right=True).clamp(1, len(xp) - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    t = ((x - x0) / (x1 - x0).clamp_min(torch.finfo(xp.dtype).tiny)).clamp(0.0, 1.0)
    return f0 + t * (f1 - f0)


class Recalibrated(Predictive):
    r"""A forecast recalibrated by a monotone map of its CDF: :math:`F_R(y) = R(F(y))`.

    ``R: [0, 1] -> [0, 1]`` is piecewise linear through the knots ``(knots_x, knots_y)``,
    strictly increasing with :math:`R(0) = 0` and :math:`R(1) = 1` (as fitted by
    :class:`~uqdyn.calibration.IsotonicRecalibrator`, Kuleshov et al. 2018). Then
    ``cdf(y)`` :math:`= R(F(y))` and ``quantile(q)`` :math:`= F^{-1}(R^{-1}(q))` are exact,
    and ``log_prob(y)`` :math:`= \log f(y) + \log R'(F(y))` for families with an
    elementwise density.

    ``mean``, ``variance``, ``crps`` and ``sample`` are those of a numerical approximation:
    with :math:`q = \Phi(z)`, the function :math:`z \mapsto Q_R(\Phi(z))` is evaluated at
    ``n_nodes`` equally spaced nodes :math:`z_k \in [-z_{max}, z_{max}]` (:math:`z_{max} = 8`
    in float64, about 4.9 in float32 where :math:`\Phi(\pm z_{max})` is representable) and
    interpolated linearly in ``z`` (extrapolated linearly beyond the end nodes). For this
    approximation, with :math:`Z \sim N(0, 1)`,

    * ``sample`` returns the interpolant at standard normal draws (exact inverse transform),
      independently at each point: ``R`` recalibrates the marginals, so the joint structure
      of a ``MultivariateNormal`` base or of ensemble members is not kept;
    * ``mean`` and ``variance`` are the exact moments, from closed-form Gaussian integrals
      over each linear piece;
    * ``crps`` is exact too, from
      :math:`\mathrm{CRPS}(F, y) = 2 \int_0^1 (1\{y < Q(q)\} - q)(Q(q) - y)\,dq =
      2 \int_{F(y)}^1 (Q(q) - y)\,dq - 2 \int_0^1 q\,(Q(q) - y)\,dq`.

    The approximation is exact for a Gaussian base with the identity map (``Q`` is linear in
    ``z``); otherwise its error is of order :math:`h^2` in the node spacing ``h``, from the
    curvature of ``Q`` in ``z`` and the kinks of ``R`` (for a Gaussian base and a map with three
    interior knots, at the default 201 nodes: relative errors about 2e-4 in the variance and
    below 1e-4 in the CRPS). The node
    quantiles take ``n_nodes * prod(batch_shape)`` values of memory.

    Parameters
    ----------
    base:
        The forecast being recalibrated, ``batch_shape`` ``S``.
    knots_x, knots_y:
        Knots of ``R``, shape ``(K,)`` each, ``K >= 2``, both strictly increasing from 0 to 1.
    n_nodes:
        Interpolation nodes for mean, variance, CRPS and sampling.

    References
    ----------
    Kuleshov, Fenner & Ermon (2018), Accurate uncertainties for deep learning using
    calibrated regression, ICML.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Normal
    >>> from uqdyn.calibration import Recalibrated
    >>> knots = torch.tensor([0.0, 1.0])
    >>> p = Recalibrated(Normal(torch.zeros(3), torch.ones(3)), knots, knots)
    >>> p.quantile(0.5)
    tensor([0., 0., 0.])
    """

    kind = "recalibrated"

    def __init__(self, base: Predictive, knots_x: Any, knots_y: Any, *, n_nodes: int = 201) -> None:
        if not isinstance(base, Predictive):
            raise TypeError(f"base is a {type(base).__name__}; expected a uqdyn Predictive")
        if isinstance(n_nodes, bool) or not isinstance(n_nodes, int) or n_nodes < 3:
            raise ValueError(f"n_nodes={n_nodes!r}; expected an integer >= 3")
        kx = torch.as_tensor(knots_x).detach().to(device=base.device, dtype=torch.float64)
        ky = torch.as_tensor(knots_y).detach().to(device=base.device, dtype=torch.float64)
        for name, k in (("knots_x", kx), ("knots_y", ky)):
            if k.dim() != 1 or len(k) < 2:
                raise ValueError(f"{name} has shape {tuple(k.shape)}; expected (K,) with K >= 2")
            if not bool((k[1:] > k[:-1]).all()) or float(k[0]) != 0.0 or float(k[-1]) != 1.0:
                raise ValueError(f"{name} must increase strictly from 0 to 1; got {k.tolist()}")
        if kx.shape != ky.shape:
            raise ValueError(
                f"knots_x has shape {tuple(kx.shape)} and knots_y {tuple(ky.shape)}; expected "
                "the same length"
            )
        self.base = base
        self.knots_x = kx
        self.knots_y = ky
        self.n_nodes = n_nodes
        self._piece_cache: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    # ---------------------------------------------------------------- the calibration map
    def calibration_map(self, p: Tensor) -> Tensor:
        """:math:`R(p)` for base probabilities ``p`` (any shape, same dtype back)."""
        return _interp(p.to(torch.float64), self.knots_x, self.knots_y).to(p.dtype)

    def _inverse_map(self, q: Tensor) -> Tensor:
        """:math:`R^{-1}(q)`, kept strictly inside (0, 1) in ``q``'s dtype."""
        eps = torch.finfo(q.dtype).eps
        v = _interp(q.to(torch.float64), self.knots_y, self.knots_x)
        return v.clamp(eps, 1.0 - eps).to(q.dtype)

    # ---------------------------------------------------------------- interpolant
    def _pieces(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Linear pieces ``alpha + beta * z`` of ``Q_R(Phi(z))`` on ``[lower, upper]``.

        Returns ``alpha, beta`` of shape ``(n_nodes - 1, *S)`` and the piece bounds
        ``lower, upper`` of shape ``(n_nodes - 1,)`` (the outer bounds are -inf and +inf).
        """
        if self._piece_cache is None:
            dtype, device = self.base.dtype, self.base.device
            z_max = min(8.0, -_ndtri(4.0 * torch.finfo(dtype).eps))
            z = torch.linspace(-z_max, z_max, self.n_nodes, dtype=torch.float64, device=device)
            levels = self._inverse_map(std_normal_cdf(z).to(dtype))
            nodes = torch.cummax(self.base._quantile(levels), 0).values  # (N, *S), monotone
            z = z.to(dtype).reshape((-1,) + (1,) * len(self.batch_shape))
            beta = (nodes[1:] - nodes[:-1]) / (z[1:] - z[:-1])
            alpha = nodes[:-1] - beta * z[:-1]
            inf = torch.full((1,), torch.inf, dtype=dtype, device=device)
            inner = z.reshape(-1)[1:-1]
            lower = torch.cat([-inf, inner])
            upper = torch.cat([inner, inf])
            self._piece_cache = (alpha, beta, lower, upper)
        return self._piece_cache

    def _expand(self, bound: Tensor) -> Tensor:
        return bound.reshape((-1,) + (1,) * len(self.batch_shape))

    # ---------------------------------------------------------------- Predictive interface
    @property
    def batch_shape(self) -> torch.Size:
        return self.base.batch_shape

    @property
    def device(self) -> torch.device:
        return self.base.device

    @property
    def dtype(self) -> torch.dtype:
        return self.base.dtype

    @property
    def mean(self) -> Tensor:
        """Mean of the interpolated quantile function, shape ``batch_shape``."""
        alpha, beta, lower, upper = self._pieces()
        m0, m1, _ = _gauss_moments(self._expand(lower), self._expand(upper))
        return (alpha * m0 + beta * m1).sum(0)

    @property
    def variance(self) -> Tensor:
        """Variance of the interpolated quantile function, shape ``batch_shape``."""
        alpha, beta, lower, upper = self._pieces()
        m0, m1, m2 = _gauss_moments(self._expand(lower), self._expand(upper))
        centred = alpha - (alpha * m0 + beta * m1).sum(0)
        return (centred.square() * m0 + 2.0 * centred * beta * m1 + beta.square() * m2).sum(0)

    def cdf(self, y: Any) -> Tensor:
        """:math:`R(F(y))`, shape ``batch_shape`` (broadcast with ``y``)."""
        return self.calibration_map(self.base.cdf(y))

    def _quantile(self, levels: Tensor) -> Tensor:
        return self.base._quantile(self._inverse_map(levels))

    def log_prob(self, y: Any) -> Tensor:
        """:math:`\\log f(y) + \\log R'(F(y))` for bases with an elementwise density."""
        base_lp = self.base.log_prob(y)
        p = self.base.cdf(y)
        if base_lp.shape != p.shape:
            raise NotImplementedError(
                f"{type(self.base).__name__}.log_prob is a joint density of shape "
                f"{tuple(base_lp.shape)}; a recalibrated density needs elementwise marginals "
                f"of shape {tuple(p.shape)}"
            )
        kx, ky = self.knots_x, self.knots_y
        idx = torch.searchsorted(kx, p.to(torch.float64).contiguous(), right=True)
        idx = idx.clamp(1, len(kx) - 1)
        slope = (ky[idx] - ky[idx - 1]) / (kx[idx] - kx[idx - 1])
        return base_lp + slope.log().to(base_lp.dtype)

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Inverse-transform draws of the interpolant; shape ``(n, *batch_shape)``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}; expected a positive integer number of samples")
        alpha, beta, lower, _ = self._pieces()
        z = torch.randn(
            (n, *self.batch_shape), generator=generator, device=self.device, dtype=self.dtype
        )
        idx = (torch.searchsorted(lower[1:].contiguous(), z.contiguous(), right=True)).unsqueeze(1)
        a = alpha.unsqueeze(0).expand(n, *alpha.shape).gather(1, idx).squeeze(1)
        b = beta.unsqueeze(0).expand(n, *beta.shape).gather(1, idx).squeeze(1)
        return a + b * z

    def crps(self, y: Any) -> Tensor:
        """CRPS of the interpolant (closed form per linear piece), shape ``batch_shape``."""
        alpha, beta, lower, upper = self._pieces()
        y_t = torch.as_tensor(y, device=self.device, dtype=self.dtype)
        shift = alpha - y_t  # pieces of Q - y
        lo, hi = self._expand(lower), self._expand(upper)
        # z_c = sup{z : Q(z) <= y}: the last point where a piece of Q - y is <= 0
        with torch.no_grad():
            tiny = torch.finfo(beta.dtype).tiny
            reach = torch.where(beta > 0, torch.minimum(-shift / beta.clamp_min(tiny), hi), hi)
            start = torch.where(torch.isfinite(lo), shift + beta * lo, shift)
            nonempty = torch.where(torch.isfinite(lo) | (beta <= 0), start <= 0, True)
            z_c = torch.where(nonempty, reach, -torch.inf).max(0).values
        m0, m1, _ = _gauss_moments(torch.maximum(lo, z_c), torch.maximum(hi, z_c))
        above = (shift * m0 + beta * m1).sum(0)  # int_{F(y)}^1 (Q - y) dq
        j0, j1 = _gauss_phi_moments(lo, hi)
        weighted = (shift * j0 + beta * j1).sum(0)  # int_0^1 q (Q - y) dq
        return 2.0 * (above - weighted)

    def to(self, *args: Any, **kwargs: Any) -> Recalibrated:
        return Recalibrated(
            self.base.to(*args, **kwargs),
            self.knots_x.cpu(),
            self.knots_y.cpu(),
            n_nodes=self.n_nodes,
        )

    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        out: dict[str, tuple[tuple[str, ...], Tensor]] = {
            "mean": ((), self.mean),
            "stddev": ((), self.stddev),
        }
        for name, (lead, tensor) in self.base._xarray_vars().items():
            if name not in ("mean", "stddev"):
                out[f"base_{name}"] = (lead, tensor)
        out["base_mean"] = ((), self.base.mean)
        out["base_stddev"] = ((), self.base.stddev)
        return out


def _zstd_normal_pdf(z: Tensor) -> Tensor:
    """``z * phi(z)``, zero at infinite ``z``."""
    return torch.where(
        torch.isfinite(z), z * std_normal_pdf(z), torch.zeros((), dtype=z.dtype, device=z.device)
    )


def _gauss_moments(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:math:`\\int_a^b z^j \\phi(z)\\,dz` for ``j = 0, 1, 2`` (``a <= b``, may be infinite)."""
    m0 = std_normal_cdf(b) - std_normal_cdf(a)
    m1 = std_normal_pdf(a) - std_normal_pdf(b)
    m2 = m0 + _zstd_normal_pdf(a) - _zstd_normal_pdf(b)
    return m0, m1, m2


def _gauss_phi_moments(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """:math:`\\int_a^b z^j \\Phi(z) \\phi(z)\\,dz` for ``j = 0, 1``."""

    def antiderivatives(z: Tensor) -> tuple[Tensor, Tensor]:
        cdf = std_normal_cdf(z)
        # d/dz [-Phi phi + Phi(sqrt2 z) / (2 sqrt(pi))] = z Phi phi
        return 0.5 * cdf.square(), -cdf * std_normal_pdf(z) + std_normal_cdf(SQRT2 * z) / (
            2.0 * math.sqrt(math.pi)
        )

    fa0, fa1 = antiderivatives(a)
    fb0, fb1 = antiderivatives(b)
    return fb0 - fa0, fb1 - fa1


def _ndtri(p: float) -> float:
    """Standard normal quantile of a float."""
    return SQRT2 * float(torch.erfinv(torch.tensor(2.0 * p - 1.0, dtype=torch.float64)))
