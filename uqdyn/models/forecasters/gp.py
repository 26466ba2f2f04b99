"""A Gaussian-process forecaster on forecast origins: lagged values in, one GP per lead."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.forecast import Climatology
from uqdyn.models.gp import ExactGP
from uqdyn.predictive import Normal, Predictive

from ._base import WindowArrays, WindowForecaster

__all__ = ["GPForecaster"]


class GPForecaster(WindowForecaster):
    r"""Direct multi-step GP regression from a window of past values to each lead time.

    For every origin and point the inputs are the ``C`` normalised context values (see
    :class:`~uqdyn.forecast.normalize.WindowNormalizer`; an unobserved context value is
    imputed by the window's centre, 0 in normalised units, and flagged by an indicator
    input), optionally the seasonal phase of the origin (``season_features``); the output at
    lead ``h`` is the normalised target. One exact GP per lead
    (:class:`~uqdyn.models.gp.ExactGP`, hyperparameters started from the data with
    lengthscales at each input's full range, then fitted by the marginal likelihood) learns :math:`z_{t_0 + h} = f_h(z_{t_0-C+1}, \dots, z_{t_0}) +
    \varepsilon`; with the default ``"linear + matern52"`` kernel this is a Bayesian AR(C)
    model with a non-linear correction. The predictive is Gaussian, back in the user's units.

    In normalised units the noise variance is kept above 1e-3 (a thousandth of the data's
    variance), which keeps the exact GP well conditioned when windows repeat.

    Training rows are the (origin, point) pairs with an observed target; at most
    ``max_points`` of them (a seeded random subset) enter each GP, which bounds the cost of
    the exact GP on gridded data.

    Parameters
    ----------
    kernel:
        :func:`~uqdyn.models.gp.make_kernel` specification.
    steps, lr, optimizer:
        Iterations, learning rate and optimiser (``"lbfgs"``, with a strong-Wolfe line
        search, or ``"adam"``) of the marginal-likelihood fit of each GP.
    max_points:
        Largest training set per GP.
    climatology, center, scale:
        Of the :class:`~uqdyn.forecast.normalize.WindowNormalizer`.
    season_features:
        Add the cosine and sine of the origin's seasonal phase to the inputs.
    seed:
        Seed of the training subset.
    """

    def __init__(
        self,
        *,
        kernel: str = "linear + matern52",
        steps: int = 50,
        lr: float = 1.0,
        optimizer: str = "lbfgs",
        max_points: int = 2000,
        climatology: Climatology | None = None,
        center: str | None = "last",
        scale: str | None = "global",
        season_features: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(
            climatology=climatology,
            center=center,
            scale=scale,
            season_features=season_features,
            seed=seed,
        )
        max_points = as_int(max_points, "max_points", minimum=10)
        self.kernel = kernel
        self.steps = steps
        self.lr = lr
        self.optimizer = optimizer
        self.max_points = max_points
        self.gps: list[ExactGP] = []
        self._use_mask: bool = False

    def __repr__(self) -> str:
        return f"GPForecaster(kernel={self.kernel!r}, normalizer={self.normalizer!r})"

    def _features(self, rows: WindowArrays) -> Tensor:
        ctx = rows.context
        parts = [np.nan_to_num(ctx, nan=0.0)]
        if self._use_mask:
            parts.append(np.isfinite(ctx).astype(np.float64))
        parts.append(rows.origin_features)
        return torch.as_tensor(np.concatenate(parts, axis=1), dtype=torch.float64)

    def _fit(self, rows: WindowArrays, valid_rows: WindowArrays | None) -> None:
        self._use_mask = bool((~np.isfinite(rows.context)).any())
        x_all = self._features(rows)
        rng = np.random.default_rng(self.seed)
        self.gps = []
        for lead in range(rows.target.shape[1]):
            y = rows.target[:, lead]
            keep = np.flatnonzero(np.isfinite(y) & np.isfinite(x_all.numpy()).all(1))
            if keep.size < 3:
                raise ValueError(
                    f"lead {lead} has {keep.size} training target(s); expected at least 3 "
                    "observed targets"
                )
            if keep.size > self.max_points:
                keep = np.sort(rng.choice(keep, self.max_points, replace=False))
            gp = ExactGP(x_all.shape[1], kernel=self.kernel, min_noise=1e-3, max_jitter_tries=6)
            x, y_t = x_all[keep], torch.as_tensor(y[keep], dtype=torch.float64)
            # start smooth: lengthscales at the inputs' full range (not the tenth ExactGP
            # starts from), so that the fit only adds wiggles the data ask for
            gp.condition(x, y_t)
            gp._start_from_data(
                x, y_t[:, None], span=10.0 * (x.amax(0) - x.amin(0)).clamp_min(1e-3)
            )
            gp.fit(
                x,
                y_t,
                steps=self.steps,
                lr=self.lr,
                optimizer=self.optimizer,
                init_from_data=False,
                progress=False,
            )
            self.gps.append(gp)

    def _predict(self, rows: WindowArrays) -> Predictive:
        x = self._features(rows)
        locs, scales = [], []
        for gp in self.gps:
            # in chunks: the marginal variances of a large batch of rows never need the
            # dense covariance between all of them
            parts = [gp.predict(chunk) for chunk in torch.split(x, 2048)]
            locs.append(torch.cat([p.mean[:, 0] for p in parts]))
            scales.append(torch.cat([p.stddev[:, 0] for p in parts]))
        return Normal(torch.stack(locs, dim=1), torch.stack(scales, dim=1), validate=False)

    def hyperparameters(self) -> list[dict[str, Any]]:
        """Per lead: the fitted noise variance and kernel parameters (for reports)."""
        out = []
        for gp in self.gps:
            entry = {name: p.detach().cpu().numpy().tolist() for name, p in gp.named_parameters()}
            entry["noise"] = float(gp.likelihood.noise.detach().reshape(-1)[0])
            out.append(entry)
        return out
