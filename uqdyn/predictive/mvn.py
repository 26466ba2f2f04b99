"""Joint Gaussian predictive distribution (full or low-rank covariance)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.distributions import LowRankMultivariateNormal
from torch.distributions import MultivariateNormal as _TorchMVN

from ._checks import as_float_tensor, check_finite, check_sample_count
from .base import Predictive
from .normal import Normal

__all__ = ["MultivariateNormal"]


class MultivariateNormal(Predictive):
    r"""Jointly Gaussian predictions over the last axis: :math:`Y \sim \mathcal N(\mu, \Sigma)`.

    The joint distribution (``log_prob``, ``sample``) couples the ``n`` points of the last axis
    (e.g. the targets of one task); the marginal methods (``cdf``, ``quantile``, ``crps``,
    ``interval``) use the Gaussian marginals :math:`\mathcal N(\mu_i, \Sigma_{ii})`.

    Give exactly one of ``covariance_matrix``, ``scale_tril`` or ``cov_factor`` (with
    ``cov_diag``, covariance :math:`W W^\top + \mathrm{diag}(d)`).

    Parameters
    ----------
    loc:
        Means, shape ``(*batch, n)``.
    covariance_matrix:
        Shape ``(*batch, n, n)``, symmetric positive definite.
    scale_tril:
        Lower Cholesky factor, shape ``(*batch, n, n)``.
    cov_factor, cov_diag:
        Low-rank factor ``(*batch, n, r)`` and positive diagonal ``(*batch, n)``.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import MultivariateNormal
    >>> p = MultivariateNormal(torch.zeros(3), covariance_matrix=torch.eye(3))
    >>> p.sample(5).shape
    torch.Size([5, 3])
    """

    kind = "multivariate_normal"

    def __init__(
        self,
        loc: Any,
        covariance_matrix: Any = None,
        *,
        scale_tril: Any = None,
        cov_factor: Any = None,
        cov_diag: Any = None,
    ) -> None:
        loc_t = as_float_tensor(loc, "loc")
        if loc_t.dim() < 1:
            raise ValueError(f"loc has shape {tuple(loc_t.shape)}; expected (*batch, n)")
        check_finite(loc_t, "loc")
        given = [
            name
            for name, v in (
                ("covariance_matrix", covariance_matrix),
                ("scale_tril", scale_tril),
                ("cov_factor", cov_factor),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"got {given or 'none'}; expected exactly one of covariance_matrix, scale_tril "
                "or cov_factor (with cov_diag)"
            )
        n = loc_t.shape[-1]
        if cov_factor is not None:
            if cov_diag is None:
                raise ValueError("cov_factor given without cov_diag; expected both")
            factor = as_float_tensor(cov_factor, "cov_factor", like=loc_t)
            diag = as_float_tensor(cov_diag, "cov_diag", like=loc_t)
            if factor.dim() < 2 or factor.shape[-2] != n:
                raise ValueError(
                    f"cov_factor has shape {tuple(factor.shape)}; expected (*batch, {n}, rank)"
                )
            if diag.shape[-1:] != (n,):
                raise ValueError(f"cov_diag has shape {tuple(diag.shape)}; expected (*batch, {n})")
            if bool((diag <= 0).any()) or not bool(torch.isfinite(diag).all()):
                raise ValueError("cov_diag has non-positive or non-finite entries; expected > 0")
            self._dist: Any = LowRankMultivariateNormal(loc_t, factor, diag, validate_args=False)
        else:
            matrix_name = given[0]
            matrix = as_float_tensor(
                covariance_matrix if covariance_matrix is not None else scale_tril,
                matrix_name,
                like=loc_t,
            )
            if matrix.dim() < 2 or matrix.shape[-2:] != (n, n):
                raise ValueError(
                    f"{matrix_name} has shape {tuple(matrix.shape)}; expected (*batch, {n}, {n})"
                )
            check_finite(matrix, matrix_name)
            if covariance_matrix is not None:
                tril, info = torch.linalg.cholesky_ex(matrix)
                if bool((info > 0).any()):
                    raise ValueError(
                        "covariance_matrix is not positive definite (Cholesky failed); add "
                        "jitter to its diagonal or pass scale_tril"
                    )
            else:
                tril = matrix
                if bool((torch.diagonal(tril, dim1=-2, dim2=-1) <= 0).any()):
                    raise ValueError("scale_tril has a non-positive diagonal; expected > 0")
            loc_b = loc_t.expand(torch.broadcast_shapes(loc_t.shape, tril.shape[:-1]))
            self._dist = _TorchMVN(loc_b, scale_tril=tril, validate_args=False)

    @classmethod
    def from_gpytorch(cls, dist: Any) -> Predictive:
        """Convert a gpytorch (multitask) multivariate normal.

        A gpytorch ``MultivariateNormal`` with mean ``(*batch, n)`` becomes a
        ``MultivariateNormal`` over ``n`` points. A ``MultitaskMultivariateNormal`` with mean
        ``(*batch, n, t)`` becomes a joint Gaussian over the ``n * t`` values flattened
        point-major (task fastest), whatever gpytorch's internal ordering.

        The covariance is densified; for very large ``n`` prefer taking the marginal
        ``Normal(dist.mean, dist.stddev)``.
        """
        mean = dist.mean
        cov = dist.covariance_matrix
        if (
            mean.dim() >= 2
            and hasattr(dist, "num_tasks")
            and cov.shape[-1] == mean.shape[-1] * mean.shape[-2]
        ):
            n, t = mean.shape[-2:]
            if not getattr(dist, "_interleaved", True):
                # gpytorch orders task-major here: permute to point-major (task fastest).
                idx = torch.arange(n * t, device=mean.device).reshape(t, n).T.reshape(-1)
                cov = cov[..., idx, :][..., :, idx]
            mean = mean.reshape(*mean.shape[:-2], n * t)
        return cls(mean, covariance_matrix=cov)

    @property
    def batch_shape(self) -> torch.Size:
        return self._dist.mean.shape

    @property
    def mean(self) -> Tensor:
        return self._dist.mean

    @property
    def variance(self) -> Tensor:
        return self._dist.variance

    @property
    def scale_tril(self) -> Tensor:
        """Lower Cholesky factor of the covariance, shape ``(*batch, n, n)``."""
        return self._dist.scale_tril

    @property
    def cov_factor(self) -> Tensor | None:
        """Low-rank factor ``W (*batch, n, r)`` when built from one, else ``None``."""
        return self._dist.cov_factor if isinstance(self._dist, LowRankMultivariateNormal) else None

    @property
    def cov_diag(self) -> Tensor | None:
        """Diagonal ``d (*batch, n)`` of a low-rank covariance, else ``None``."""
        return self._dist.cov_diag if isinstance(self._dist, LowRankMultivariateNormal) else None

    @property
    def covariance_matrix(self) -> Tensor:
        """Dense covariance, shape ``(*batch, n, n)``."""
        return self._dist.covariance_matrix

    def marginal(self) -> Normal:
        """The independent Gaussian marginals as a :class:`Normal`."""
        return Normal(self.mean, self.stddev, validate=False)

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Joint reparameterised draws, shape ``(n, *batch_shape)``."""
        n = check_sample_count(n)
        if generator is None:
            return self._dist.rsample((n,))
        if isinstance(self._dist, LowRankMultivariateNormal):
            w = self._dist.cov_factor
            eps_w = torch.randn(
                (n, *w.shape[:-2], w.shape[-1]), generator=generator, device=w.device, dtype=w.dtype
            )
            eps_d = torch.randn(
                (n, *self.batch_shape), generator=generator, device=w.device, dtype=w.dtype
            )
            return (
                self.mean
                + (w @ eps_w.unsqueeze(-1)).squeeze(-1)
                + self._dist.cov_diag.sqrt() * eps_d
            )
        tril = self._dist.scale_tril
        eps = torch.randn(
            (n, *self.batch_shape), generator=generator, device=tril.device, dtype=tril.dtype
        )
        return self.mean + (tril @ eps.unsqueeze(-1)).squeeze(-1)

    def cdf(self, y: Any) -> Tensor:
        """Marginal CDFs, shape ``batch_shape``."""
        return self.marginal().cdf(y)

    def _quantile(self, levels: Tensor) -> Tensor:
        return self.marginal()._quantile(levels)

    def log_prob(self, y: Any) -> Tensor:
        """Joint log density of ``y (*batch, n)`` over the last axis; shape ``(*batch,)``."""
        y_t = as_float_tensor(y, "y", like=self.mean)
        if y_t.shape[-1:] != self.batch_shape[-1:]:
            raise ValueError(
                f"y has shape {tuple(y_t.shape)}; expected a last axis of {self.batch_shape[-1]}"
            )
        return self._dist.log_prob(y_t)

    def crps(self, y: Any) -> Tensor:
        """Marginal Gaussian CRPS, shape ``batch_shape``."""
        return self.marginal().crps(y)

    def _to(self, *args: Any, **kwargs: Any) -> MultivariateNormal:
        d = self._dist
        if isinstance(d, LowRankMultivariateNormal):
            return MultivariateNormal(
                d.loc.to(*args, **kwargs),
                cov_factor=d.cov_factor.to(*args, **kwargs),
                cov_diag=d.cov_diag.to(*args, **kwargs),
            )
        return MultivariateNormal(
            d.loc.to(*args, **kwargs), scale_tril=d.scale_tril.to(*args, **kwargs)
        )

    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        return {"mean": ((), self.mean), "stddev": ((), self.stddev)}
