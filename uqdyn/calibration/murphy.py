r"""Murphy diagrams: elementary scores of quantile and expectile forecasts over thresholds.

Every consistent scoring function of a quantile or an expectile is a mixture of elementary
scores ``S_theta`` over thresholds ``theta`` (Ehm, Gneiting, Jordan & Krüger 2016). With
``x`` the forecast, ``y`` the observation and ``alpha`` the level:

* quantile: ``S_theta(x, y) = (1{y < x} - alpha) (1{theta < x} - 1{theta < y})``
  ``= (1 - alpha) 1{y <= theta < x} + alpha 1{x <= theta < y}``;
* expectile: ``S_theta(x, y) = |1{y < x} - alpha| ((y - theta)_+ - (y - x)_+ - (x - theta)
  1{theta < x})`` ``= (1 - alpha) |y - theta| 1{y <= theta < x} + alpha |y - theta|
  1{x <= theta < y}``.

Integrated over all thresholds (Lebesgue measure):

* ``int S_theta dtheta = (1{y < x} - alpha)(x - y)``, the pinball loss
  (:func:`uqdyn.scoring.quantile_score`) itself;
* ``int S_theta dtheta = 1/2 |1{y < x} - alpha| (x - y)^2``, **half** the expectile score
  ``|1{y < x} - alpha| (x - y)^2``; for ``alpha = 1/2`` that is ``(x - y)^2 / 4``, a quarter of
  the squared error.

A Murphy diagram plots the mean elementary score against ``theta``: a forecast whose curve is
below another's everywhere is better under every consistent score of the functional.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, is_xarray, prepare
from uqdyn._checks import as_float, as_int
from uqdyn.scoring._common import Dim, check_nan_policy, finish

__all__ = ["MurphyDiagram", "murphy_diagram", "elementary_score"]

FUNCTIONALS = ("quantile", "expectile")


class MurphyDiagram(NamedTuple):
    """Result of :func:`murphy_diagram`.

    Attributes
    ----------
    theta:
        The thresholds, shape ``(T,)`` (numpy).
    score:
        Mean (or pointwise) elementary score, shape ``(*kept, T)`` of the caller's kind
        (xarray: trailing dim ``theta`` with the thresholds as coordinate).
    underforecast:
        The part from ``x <= theta < y`` (forecast below the observation).
    overforecast:
        The part from ``y <= theta < x``; ``score = underforecast + overforecast``.
    """

    theta: np.ndarray
    score: Any
    underforecast: Any
    overforecast: Any


def elementary_score(
    obs: Tensor, forecast: Tensor, theta: Tensor, functional: str, level: float
) -> tuple[Tensor, Tensor]:
    """``(under, over)`` parts of the elementary score, shape ``(*batch, T)``.

    ``obs`` and ``forecast`` are broadcast tensors ``(*batch,)``, ``theta`` is ``(T,)``.
    NaN in ``obs`` or ``forecast`` gives NaN.
    """
    y = obs.unsqueeze(-1)
    x = forecast.unsqueeze(-1)
    under = ((x <= theta) & (theta < y)).to(y.dtype) * level
    over = ((y <= theta) & (theta < x)).to(y.dtype) * (1.0 - level)
    if functional == "expectile":
        dist = (y - theta).abs()
        under = under * dist
        over = over * dist
    bad = torch.isnan(y) | torch.isnan(x)
    nan = torch.full((), torch.nan, dtype=y.dtype, device=y.device)
    return torch.where(bad, nan, under), torch.where(bad, nan, over)


def _default_thetas(y: Tensor, x: Tensor, n: int) -> Tensor:
    values = torch.cat([y.reshape(-1), x.reshape(-1)])
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        raise ValueError("obs and forecast have no finite value; cannot choose thresholds")
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        lo, hi = lo - 0.5, hi + 0.5
    return torch.linspace(lo, hi, n, dtype=y.dtype, device=y.device)


def murphy_diagram(
    obs: ArrayLike,
    forecast: ArrayLike,
    *,
    functional: str = "quantile",
    level: float = 0.5,
    thetas: ArrayLike | None = None,
    n_thetas: int = 201,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: str = "mean",
    skipna: bool = False,
    mask: Any = None,
) -> MurphyDiagram:
    r"""Elementary scores of point forecasts of a quantile or an expectile over thresholds.

    See the module docstring for the elementary scores and their integrals: the integral over
    ``theta`` of the quantile elementary score is the pinball loss, that of the expectile
    elementary score half the expectile score.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch,)``.
    forecast:
        Point forecasts of the functional, shape broadcastable with ``obs``.
    functional:
        ``"quantile"`` or ``"expectile"`` (``level=0.5``: the median, the mean).
    level:
        The level ``alpha`` in (0, 1).
    thetas:
        Thresholds, 1-d (array, tensor, list). Default: ``n_thetas`` evenly spaced from the
        smallest to the largest finite value of ``obs`` and ``forecast`` (the elementary
        scores vanish outside that range).
    n_thetas:
        Number of default thresholds (>= 2).
    dim, weights, nan_policy, skipna, mask:
        As for every score: the points reduced over (``None``: all of them with
        ``reduction="mean"``), reduction weights, NaN handling, boolean mask.
    reduction:
        ``"mean"`` (default: the Murphy diagram of the mean score), ``"sum"`` or ``"none"``
        (pointwise elementary scores, shape ``(*batch, T)``).

    Returns
    -------
    :class:`MurphyDiagram`.

    References
    ----------
    Ehm, Gneiting, Jordan & Krüger (2016), "Of quantiles and expectiles: consistent scoring
    functions, Choquet representations and forecast rankings", JRSS-B 78(3), 505-562.

    Examples
    --------
    >>> import torch
    >>> m = murphy_diagram(torch.tensor([0.0]), torch.tensor([1.0]), thetas=[-0.5, 0.5, 1.5])
    >>> m.score
    tensor([0.0000, 0.5000, 0.0000])
    """
    if functional not in FUNCTIONALS:
        raise ValueError(f"functional={functional!r}; expected one of {FUNCTIONALS}")
    alpha = as_float(level, "level")
    if not 0 < alpha < 1:
        raise ValueError(f"level={level!r}; expected a level strictly in (0, 1)")
    (y, x), restore = prepare(obs, forecast, names=["obs", "forecast"])
    check_nan_policy(nan_policy, {"obs": y, "forecast": x})
    if thetas is None:
        n = as_int(n_thetas, "n_thetas")
        if n < 2:
            raise ValueError(f"n_thetas={n_thetas!r}; expected an int >= 2")
        theta = _default_thetas(y, x, n)
    else:
        if is_xarray(thetas):
            thetas = thetas.values
        t_np = (
            thetas.detach().cpu().numpy()
            if isinstance(thetas, Tensor)
            else np.asarray(thetas, dtype=np.float64)
        )
        if t_np.ndim != 1 or t_np.size == 0 or not np.all(np.isfinite(t_np)):
            raise ValueError(
                f"thetas has shape {t_np.shape}; expected a non-empty 1-d array of finite "
                "thresholds"
            )
        theta = torch.as_tensor(t_np, dtype=y.dtype, device=y.device)
    under, over = elementary_score(y, x, theta, functional, alpha)
    kwargs = {"dim": dim, "weights": weights, "nan_policy": nan_policy, "extra_dims": ("theta",)}
    parts = [
        finish(t, restore, reduction, skipna, mask, **kwargs)  # type: ignore[arg-type]
        for t in (under + over, under, over)
    ]
    theta_np = theta.detach().cpu().numpy()
    if restore.kind == "xarray":
        parts = [p.assign_coords(theta=theta_np) for p in parts]
    return MurphyDiagram(theta_np, *parts)
