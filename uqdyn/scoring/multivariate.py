"""Multivariate ensemble scores: energy score and variogram score."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, Restore, is_xarray, prepare
from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar

from ._common import DEFAULT_MEMBER_NAME, check_core_sizes, finish, normalise_weights

__all__ = ["energy_score", "variogram_score"]

#: Upper bound on the elements of one (chunk, M, M) pair-distance block in the energy score.
_PAIR_BLOCK_ELEMENTS = 1 << 22


def _moveaxis(value: Any, source: int, destination: int) -> Any:
    if isinstance(value, Tensor):
        return value.movedim(source, destination)
    return np.moveaxis(np.asarray(value), source, destination)


def _prepare_multivariate(
    obs: Any, forecasts: Any, member_dim: int | str, event_dim: int | str, weights: Any
) -> tuple[Tensor, Tensor, Tensor | None, Restore]:
    """obs ``(*batch, D)``, forecasts ``(*batch, M, D)``, weights ``(*batch, M)`` or None."""
    if is_xarray(forecasts):
        member = member_dim if isinstance(member_dim, str) else None
        if member is None and member_dim == -2:
            member = DEFAULT_MEMBER_NAME
        if member is None or not isinstance(event_dim, str):
            raise TypeError(
                f"member_dim={member_dim!r}, event_dim={event_dim!r} for xarray input; expected "
                "dim names (member_dim may be left at its default for a 'member' dim)"
            )
        if member not in forecasts.dims or event_dim not in forecasts.dims:
            raise ValueError(
                f"forecasts has dims {forecasts.dims}; expected dims {member!r} and {event_dim!r}"
            )
        arrays = [obs, forecasts] + ([] if weights is None else [weights])
        names = ["obs", "forecasts"] + ([] if weights is None else ["weights"])
        xr_core: list[Any] = [None, member] + ([] if weights is None else [member])
        tensors, full = prepare(*arrays, names=names, core=xr_core)
        axis = full.dims.index(event_dim)
        y = tensors[0].movedim(axis, -1)
        fc = tensors[1].movedim(axis, -1)  # (*batch, M, D)
        w = None if weights is None else tensors[2].movedim(axis, -1)[..., 0]
        kept = tuple(d for d in full.dims if d != event_dim)
        coords = {k: v for k, v in full.coords.items() if set(v.dims) <= set(kept)}
        shape = torch.Size(s for i, s in enumerate(full.batch_shape) if i != axis)
        return y, fc, w, Restore("xarray", shape, kept, coords)
    for name, value in (("member_dim", member_dim), ("event_dim", event_dim)):
        if not is_integer_scalar(value):
            raise TypeError(
                f"{name}={value!r} is a {describe_type(value)}; expected an int axis for array "
                "input"
            )
    ndim = np.ndim(forecasts) if not isinstance(forecasts, Tensor) else forecasts.dim()
    if ndim < 2:
        raise ValueError(f"forecasts has {ndim} axes; expected at least 2 (members, variables)")
    m, e = as_int(member_dim, "member_dim"), as_int(event_dim, "event_dim")
    if not (-ndim <= m < ndim and -ndim <= e < ndim) or m % ndim == e % ndim:
        raise ValueError(
            f"member_dim={m}, event_dim={e} for forecasts with {ndim} axes; expected two "
            "distinct axes in range"
        )
    m_neg, e_neg = m % ndim - ndim, e % ndim - ndim
    obs_event = e_neg if m_neg < e_neg else e_neg + 1  # counted from the end, member removed
    fc = _moveaxis(_moveaxis(forecasts, e_neg, -1), m_neg if m_neg < e_neg else m_neg - 1, -1)
    # fc now (*batch, D, M): the member axis is prepare's core axis, D a batch axis.
    obs_ndim = np.ndim(obs) if not isinstance(obs, Tensor) else obs.dim()
    if obs_ndim < -obs_event:
        raise ValueError(
            f"obs has {obs_ndim} axes; expected a variables axis at {obs_event} matching "
            f"forecasts of {ndim} axes"
        )
    y = _moveaxis(obs, obs_event, -1)
    arrays = [y, fc]
    names = ["obs", "forecasts"]
    core: list[Any] = [None, -1]
    if weights is not None:
        w_in = weights if isinstance(weights, Tensor) else np.asarray(weights)
        arrays.append(w_in[..., None, :])  # (*batch, 1, M): broadcast over the variables
        names.append("weights")
        core.append(-1)
    tensors, full = prepare(*arrays, names=names, core=core)
    if tensors[0].shape[-1] != tensors[1].shape[-2]:
        raise ValueError(
            f"obs has {tensors[0].shape[-1]} variables and forecasts "
            f"{tensors[1].shape[-2]}; expected matching variables axes"
        )
    w = None if weights is None else tensors[2][..., 0, :]
    restore = Restore(full.kind, full.batch_shape[:-1])
    return tensors[0], tensors[1].transpose(-1, -2), w, restore


def _pair_distance_sum(fc: Tensor, w: Tensor | None) -> Tensor:
    """``sum_mk w_m w_k ||x_m - x_k||`` (``w = 1`` when None) for ``fc (B, M, D)``, in blocks."""
    batch, members = fc.shape[0], fc.shape[1]
    rows = max(1, _PAIR_BLOCK_ELEMENTS // max(1, members * members))
    parts = []
    for start in range(0, batch, rows):
        block = fc[start : start + rows]
        dist = torch.cdist(block, block, compute_mode="donot_use_mm_for_euclid_dist")
        if w is not None:
            wb = w[start : start + rows]
            dist = dist * wb.unsqueeze(-1) * wb.unsqueeze(-2)
        parts.append(dist.sum((-1, -2)))
    if not parts:
        return fc.new_zeros(0)
    return torch.cat(parts)


def energy_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -2,
    event_dim: int | str = -1,
    estimator: str = "nrg",
    weights: ArrayLike | None = None,
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Energy score of a multivariate ensemble forecast.

    ``ES = 1/M sum_m ||x_m - y|| - 1/(2 M^2) sum_mk ||x_m - x_k||`` (``"nrg"``, the standard
    estimator, as scoringrules' ``es_ensemble``) or with ``1/(2 M (M - 1))`` in the second
    term (``"fair"``). With member weights ``w`` (normalised):
    ``sum_m w_m ||x_m - y|| - 1/2 sum_mk w_m w_k ||x_m - x_k||``, the pair term divided by
    ``1 - sum_m w_m^2`` for ``"fair"``. ``||.||`` is the Euclidean norm over the variables.
    Cost O(N M^2 D) time, pair distances formed in blocks of bounded memory. A NaN entry
    gives NaN at that point.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch, D)`` with variables on ``event_dim``.
    forecasts:
        Ensemble, shape ``(*batch, M, D)`` (members on ``member_dim``, variables on
        ``event_dim``; scoringrules' layout).
    member_dim, event_dim:
        Axes of ``forecasts``; negative values count from the end, and ``obs`` has the same
        layout without the member axis. For ``xarray.DataArray`` input both are dim names (the
        default ``member_dim`` means ``"member"``).
    estimator:
        ``"nrg"`` (standard) or ``"fair"``.
    weights:
        Optional non-negative member weights, shape ``(M,)`` or ``(*batch, M)`` (members on
        the last axis; for xarray a DataArray with the member dim).
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score; ``"mean"``/``"sum"`` reduce over all points,
        ignoring NaN points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of shape ``(*batch,)`` (0-d after a reduction), of the caller's kind.

    References
    ----------
    Gneiting & Raftery (2007), JASA 102(477); Gneiting, Stanberry, Grimit, Held & Johnson
    (2008), "Assessing probabilistic forecasts of multivariate quantities", TEST 17(2).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import energy_score
    >>> energy_score(torch.zeros(1, 2), torch.tensor([[[3.0, 4.0], [0.0, 0.0]]]))
    tensor([1.2500])
    """
    if estimator not in ("nrg", "fair"):
        raise ValueError(f"estimator={estimator!r}; expected 'nrg' or 'fair'")
    y, fc, w, restore = _prepare_multivariate(obs, forecasts, member_dim, event_dim, weights)
    members = check_core_sizes({"forecasts": fc.transpose(-1, -2)}, "member")
    if weights is not None:
        w = normalise_weights(w, "weights")  # type: ignore[arg-type]
    elif estimator == "fair" and members < 2:
        raise ValueError("estimator='fair' needs at least 2 members; got 1")
    batch_shape = fc.shape[:-2]
    flat = fc.reshape(-1, members, fc.shape[-1])
    w_flat = None if w is None else w.expand(*batch_shape, members).reshape(-1, members)
    err = torch.linalg.vector_norm(fc - y.unsqueeze(-2), dim=-1)
    pairs = _pair_distance_sum(flat, w_flat).reshape(batch_shape)
    if w is None:
        skill = err.mean(-1)
        denom = members * members if estimator == "nrg" else members * (members - 1)
        spread = pairs / (2 * denom)
    else:
        skill = (w * err).sum(-1)
        spread = 0.5 * pairs
        if estimator == "fair":
            spread = spread / (1.0 - (w * w).sum(-1))
    return finish(skill - spread, restore, reduction, skipna, mask)


def variogram_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    p: float = 0.5,
    member_dim: int | str = -2,
    event_dim: int | str = -1,
    weights: ArrayLike | None = None,
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Variogram score of order ``p`` of a multivariate ensemble forecast.

    ``VS_p = sum_ij w_ij (|y_i - y_j|^p - 1/M sum_m |x_mi - x_mj|^p)^2`` over variable pairs
    ``i, j`` (the standard estimator, as scoringrules' ``vs_ensemble``); typical orders are
    ``p = 0.5`` and ``p = 1``. Only the pairs ``i < j`` are formed (the bracket is symmetric),
    costing O(N M D^2) time and memory. A NaN entry gives NaN at that point.

    Parameters
    ----------
    obs:
        Observations, shape ``(*batch, D)``.
    forecasts:
        Ensemble, shape ``(*batch, M, D)``.
    p:
        Order of the variogram, > 0.
    member_dim, event_dim:
        As in :func:`energy_score`.
    weights:
        Optional non-negative pair weights ``w_ij``, shape ``(D, D)``; default all ones.
    reduction, skipna, mask:
        As in :func:`energy_score`.

    Returns
    -------
    Score of shape ``(*batch,)`` (0-d after a reduction), of the caller's kind.

    References
    ----------
    Scheuerer & Hamill (2015), "Variogram-based proper scoring rules for probabilistic
    forecasts of multivariate quantities", MWR 143(4).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.scoring import variogram_score
    >>> variogram_score(torch.tensor([[0.0, 1.0]]), torch.tensor([[[0.0, 0.0], [0.0, 4.0]]]))
    tensor([0.])
    """
    p = as_float(p, "p")
    if not p > 0:
        raise ValueError(f"p={p!r}; expected a positive order such as 0.5 or 1")
    y, fc, _, restore = _prepare_multivariate(obs, forecasts, member_dim, event_dim, None)
    members = check_core_sizes({"forecasts": fc.transpose(-1, -2)}, "member")
    del members
    dims = fc.shape[-1]
    rows, cols = torch.triu_indices(dims, dims, offset=1, device=fc.device)
    if weights is None:
        pair_w = torch.full((rows.numel(),), 2.0, dtype=fc.dtype, device=fc.device)
    else:
        w_mat = weights.values if is_xarray(weights) else weights
        w_t = torch.as_tensor(np.asarray(w_mat) if not isinstance(w_mat, Tensor) else w_mat).to(
            device=fc.device, dtype=fc.dtype
        )
        if w_t.shape != (dims, dims):
            raise ValueError(
                f"weights has shape {tuple(w_t.shape)}; expected ({dims}, {dims}) pair weights"
            )
        if bool((w_t < 0).any()):
            raise ValueError("weights has negative entries; expected pair weights >= 0")
        pair_w = w_t[rows, cols] + w_t[cols, rows]
    vobs = (y[..., rows] - y[..., cols]).abs() ** p
    vfc = ((fc[..., rows] - fc[..., cols]).abs() ** p).mean(-2)
    score = ((vobs - vfc) ** 2 * pair_w).sum(-1)
    return finish(score, restore, reduction, skipna, mask)
