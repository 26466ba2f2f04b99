"""Ensemble (sample-based) predictive distribution."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from uqdyn._checks import as_float

from ._checks import as_float_tensor, check_sample_count
from .base import Predictive
from .normal import Normal

__all__ = ["Ensemble"]

_ESTIMATORS = ("nrg", "fair", "pwm", "afair")


class Ensemble(Predictive):
    r"""A forecast given by ``M`` members (samples), optionally weighted.

    Members come **first**, as torch samples do: ``members`` has shape
    ``(M, *batch_shape)``, e.g. ``(M, batch, channels, height, width)`` for GAN samples of
    gridded fields or ``(M, batch, time, dim)`` for an ensemble of trajectories.

    The distribution is the (weighted) empirical distribution of the members:
    :math:`F(y) = \sum_m w_m 1\{x_m \le y\}` and ``quantile(q)`` is its generalised inverse
    :math:`\inf\{x : F(x) \ge q\}`. NaN members propagate to NaN statistics at that point.

    Parameters
    ----------
    members:
        Shape ``(M, *batch_shape)``, ``M >= 1``.
    weights:
        Optional non-negative member weights, shape ``(M,)``, normalised to sum to one.
    estimator:
        CRPS estimator used by :meth:`crps`: ``"nrg"`` (standard, empirical CDF; the
        properscoring/xskillscore convention), ``"fair"`` (unbiased; the WeatherBench 2
        convention), ``"pwm"`` (probability-weighted moments, equal to fair) or ``"afair"``
        (almost fair, ``alpha * fair + (1 - alpha) * nrg``).
    alpha:
        Mixing weight of the ``"afair"`` estimator.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.predictive import Ensemble
    >>> ens = Ensemble(torch.randn(50, 4, 10))
    >>> ens.crps(torch.zeros(4, 10)).shape
    torch.Size([4, 10])
    """

    kind = "ensemble"

    def __init__(
        self,
        members: Any,
        weights: Any = None,
        *,
        estimator: str = "nrg",
        alpha: float = 0.95,
    ) -> None:
        m = as_float_tensor(members, "members")
        if m.dim() < 1 or m.shape[0] < 1:
            raise ValueError(
                f"members has shape {tuple(m.shape)}; expected (M, *batch_shape) with M >= 1"
            )
        if estimator not in _ESTIMATORS:
            raise ValueError(f"estimator={estimator!r}; expected one of {_ESTIMATORS}")
        alpha = as_float(alpha, "alpha")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha!r}; expected a number in [0, 1]")
        self.members = m
        self.estimator = estimator
        self.alpha = alpha
        self.weights: Tensor | None = None
        if weights is not None:
            w = as_float_tensor(weights, "weights", like=m)
            if w.shape != (m.shape[0],):
                raise ValueError(
                    f"weights has shape {tuple(w.shape)}; expected ({m.shape[0]},), one per member"
                )
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError("weights has negative or non-finite entries; expected >= 0")
            total = w.sum()
            if not bool(total > 0):
                raise ValueError("weights sum to zero; expected a positive total")
            self.weights = w / total

    @property
    def n_members(self) -> int:
        return self.members.shape[0]

    @property
    def batch_shape(self) -> torch.Size:
        return self.members.shape[1:]

    def _w(self) -> Tensor:
        """Weights shaped ``(M, 1, ..., 1)`` for broadcasting against members."""
        shape = (-1,) + (1,) * len(self.batch_shape)
        if self.weights is None:
            m = self.members
            return torch.full(
                (self.n_members,), 1.0 / self.n_members, device=m.device, dtype=m.dtype
            ).reshape(shape)
        return self.weights.reshape(shape)

    @property
    def mean(self) -> Tensor:
        if self.weights is None:
            return self.members.mean(0)
        return (self._w() * self.members).sum(0)

    @property
    def variance(self) -> Tensor:
        """Unbiased member variance, shape ``batch_shape``.

        ``sum_m w_m (x_m - mean)^2 / (1 - sum_m w_m^2)``: the ``ddof = 1`` sample variance for
        equal weights. Zero for a one-member ensemble.
        """
        if self.n_members == 1:
            return torch.zeros_like(self.members[0])
        w = self._w()
        dev2 = (self.members - self.mean).square()
        return (w * dev2).sum(0) / (1.0 - w.square().sum())

    def sample(self, n: int = 1, *, generator: torch.Generator | None = None) -> Tensor:
        """Whole members drawn with replacement (by weight); shape ``(n, *batch_shape)``.

        Drawing whole members keeps the spatial and temporal correlation within a member.
        """
        n = check_sample_count(n)
        probs = self._w().reshape(-1)
        idx = torch.multinomial(probs, n, replacement=True, generator=generator)
        return self.members.index_select(0, idx)

    def cdf(self, y: Any) -> Tensor:
        """Empirical CDF :math:`\\sum_m w_m 1\\{x_m \\le y\\}`, shape ``batch_shape``."""
        y_t = as_float_tensor(y, "y", like=self.members)
        le = (self.members <= y_t).to(self.members.dtype)
        out = (self._w() * le).sum(0)
        nan = torch.isnan(self.members).any(0) | torch.isnan(y_t)
        return torch.where(nan, torch.nan, out)

    def _quantile(self, levels: Tensor) -> Tensor:
        sorted_m, order = torch.sort(self.members, dim=0)
        w = self._w().expand_as(self.members)
        cum = torch.gather(w, 0, order).cumsum(0)  # (M, *batch)
        q = levels.reshape((-1,) + (1,) * (1 + len(self.batch_shape)))  # (L, 1, 1...)
        # generalised inverse: first member whose cumulative weight reaches q
        tol = 8 * torch.finfo(cum.dtype).eps
        idx = (cum.unsqueeze(0) < q - tol).sum(1).clamp_max(self.n_members - 1)  # (L, *batch)
        out = torch.gather(
            sorted_m.unsqueeze(0).expand(len(levels), *sorted_m.shape), 1, idx.unsqueeze(1)
        ).squeeze(1)
        nan = torch.isnan(self.members).any(0)
        return torch.where(nan, torch.nan, out)

    def crps(self, y: Any) -> Tensor:
        """Ensemble CRPS with this ensemble's ``estimator``, shape ``batch_shape``."""
        from uqdyn.scoring import crps_ensemble

        y_t = as_float_tensor(y, "y", like=self.members)
        kwargs: dict[str, Any] = {"member_dim": 0, "estimator": self.estimator}
        if self.weights is not None:
            kwargs["member_weights"] = self.weights
        if self.estimator == "afair":
            kwargs["alpha"] = self.alpha
        return crps_ensemble(y_t, self.members, **kwargs)

    def to_normal(self) -> Normal:
        """Gaussian fit to the members (mean and unbiased standard deviation)."""
        return Normal(self.mean, self.stddev)

    def _to(self, *args: Any, **kwargs: Any) -> Ensemble:
        return Ensemble(
            self.members.to(*args, **kwargs),
            None if self.weights is None else self.weights.to(*args, **kwargs),
            estimator=self.estimator,
            alpha=self.alpha,
        )

    def _xarray_vars(self) -> dict[str, tuple[tuple[str, ...], Tensor]]:
        return {
            "forecast": (("member",), self.members),
            "mean": ((), self.mean),
            "stddev": ((), self.stddev),
        }
