"""Multivariate ensemble scores: energy score and variogram score."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from uqdyn._arrays import ArrayLike, Reduction, Restore, is_xarray, prepare
from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar

from ._common import (
    DEFAULT_MEMBER_NAME,
    Dim,
    check_core_sizes,
    check_nan_policy,
    finish,
    normalise_weights,
)
from ._lazy import dask_aware

__all__ = ["energy_score", "variogram_score"]

#: Upper bound on the elements of one (chunk, M, M) pair-distance block in the energy score.
_PAIR_BLOCK_ELEMENTS = 1 << 22


def _moveaxis(value: Any, source: int, destination: int) -> Any:
    if isinstance(value, Tensor):
        return value.movedim(source, destination)
    return np.moveaxis(np.asarray(value), source, destination)


def _shape(value: Any) -> tuple[int, ...]:
    if isinstance(value, Tensor) or is_xarray(value):
        return tuple(value.shape)
    return tuple(np.shape(value))


def _check_member_weights(weights: Any, forecasts: Any, member_dim: int | str) -> None:
    """ValueError naming both shapes when the member weights' last axis is not M long."""
    if weights is None:
        return
    fshape, wshape = _shape(forecasts), _shape(weights)
    if is_xarray(forecasts):
        name = member_dim if isinstance(member_dim, str) else DEFAULT_MEMBER_NAME
        if name not in forecasts.dims:
            return  # reported by _prepare_multivariate
        members = forecasts.sizes[name]
        if not is_xarray(weights) or name not in weights.dims:
            raise ValueError(
                f"member_weights has shape {wshape}; expected a DataArray with the member dim "
                f"{name!r} of forecasts {dict(forecasts.sizes)}"
            )
        got = weights.sizes[name]
    else:
        if not is_integer_scalar(member_dim) or not fshape:
            return
        axis = as_int(member_dim, "member_dim")
        if not -len(fshape) <= axis < len(fshape):
            return
        members = fshape[axis]
        got = wshape[-1] if wshape else 1
        if not wshape:
            raise ValueError(
                f"member_weights is a scalar; expected shape ({members},) or (*batch, "
                f"{members}) for forecasts of shape {fshape}"
            )
    if got != members:
        raise ValueError(
            f"member_weights has shape {wshape} but forecasts has shape {fshape} with {members} "
            f"members on member_dim; expected member_weights of shape ({members},) or "
            f"(*batch, {members}) (members last)"
        )


def _prepare_multivariate(
    obs: Any, forecasts: Any, member_dim: int | str, event_dim: int | str, weights: Any
) -> tuple[Tensor, Tensor, Tensor | None, Restore]:
    """obs ``(*batch, D)``, forecasts ``(*batch, M, D)``, weights ``(*batch, M)`` or None."""
    _check_member_weights(weights, forecasts, member_dim)
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
        names = ["obs", "forecasts"] + ([] if weights is None else ["member_weights"])
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
        names.append("member_weights")
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


def _member_weights(
    fc: Tensor, w: Tensor | None, nan_policy: str
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Forecasts and normalised member weights after ``nan_policy``; points left empty.

    Under ``"omit"`` a member with a NaN variable gets weight 0 (its values are zeroed so
    they cannot reach the sums); ``empty`` marks points with no member (or weight) left.
    Returns ``(fc, weights or None, empty or None)``.
    """
    if nan_policy != "omit":
        if w is not None:
            w = normalise_weights(w, "member_weights")
        return fc, w, None
    bad = torch.isnan(fc).any(-1)  # (*batch, M)
    if w is None and not bool(bad.any()):
        return fc, None, None
    base = torch.ones(fc.shape[:-1], dtype=fc.dtype, device=fc.device) if w is None else w
    if bool((base < 0).any()):
        raise ValueError("member_weights has negative entries; expected weights >= 0")
    base = torch.where(bad | torch.isnan(base), 0.0, base.expand(bad.shape))
    total = base.sum(-1, keepdim=True)
    empty = (total <= 0).squeeze(-1)
    base = torch.where(total > 0, base / torch.where(total > 0, total, 1.0), 1.0 / base.shape[-1])
    fc = torch.where(bad.unsqueeze(-1), 0.0, fc)
    return fc, base, empty


@dask_aware(
    {"forecasts": ("member_dim", "event_dim"), "obs": "event_dim", "member_weights": "member_dim"},
)
def energy_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    member_dim: int | str = -2,
    event_dim: int | str = -1,
    estimator: str = "nrg",
    member_weights: ArrayLike | None = None,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Energy score of a multivariate ensemble forecast.

    ``ES = 1/M sum_m ||x_m - y|| - 1/(2 M^2) sum_mk ||x_m - x_k||`` (``"nrg"``, the standard
    estimator, as scoringrules' ``es_ensemble``) or with ``1/(2 M (M - 1))`` in the second
    term (``"fair"``). With member weights ``w`` (normalised):
    ``sum_m w_m ||x_m - y|| - 1/2 sum_mk w_m w_k ||x_m - x_k||``, the pair term divided by
    ``1 - sum_m w_m^2`` for ``"fair"`` (scoringrules' ``ens_w``). ``||.||`` is the Euclidean
    norm over the variables. Cost O(N M^2 D) time; memory O(N M D) plus one block of pair
    distances of at most 2^22 elements (blocks of points, never an ``(N, M, M, D)`` tensor).

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
    member_weights:
        Optional non-negative ensemble member weights, shape ``(M,)`` or ``(*batch, M)``
        (members on the last axis; for xarray a DataArray with the member dim); a last axis
        of another length is a ValueError naming both shapes.
    dim, weights:
        Batch axes to average over (ints; dim names for xarray) and reduction weights
        broadcastable to the score (e.g. cos-latitude): ``sum(w s) / sum(w)``.
    nan_policy:
        ``"propagate"``: a NaN entry gives NaN at that point. ``"omit"``: members with a NaN
        variable are dropped per point (weight 0; a point left with no member is NaN) and
        NaN points are left out of reductions. ``"raise"``: ValueError.
    reduction, skipna, mask:
        ``"none"`` returns the pointwise score (a weighted mean over ``dim`` when given);
        ``"mean"``/``"sum"`` reduce over ``dim`` (all points when ``None``), ignoring NaN
        points when ``skipna`` and points where the boolean ``mask`` is False.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

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
    check_nan_policy(nan_policy)
    y, fc, w, restore = _prepare_multivariate(obs, forecasts, member_dim, event_dim, member_weights)
    members = check_core_sizes({"forecasts": fc.transpose(-1, -2)}, "member")
    named = {"obs": y, "forecasts": fc} | ({} if w is None else {"member_weights": w})
    check_nan_policy(nan_policy, named)
    if w is None and estimator == "fair" and members < 2:
        raise ValueError("estimator='fair' needs at least 2 members; got 1")
    fc, w, empty = _member_weights(fc, w, nan_policy)
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
    score = skill - spread
    if empty is not None:
        score = torch.where(empty, torch.nan, score)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )


@dask_aware(
    {"forecasts": ("member_dim", "event_dim"), "obs": "event_dim", "member_weights": "member_dim"},
)
def variogram_score(
    obs: ArrayLike,
    forecasts: ArrayLike,
    *,
    p: float = 0.5,
    member_dim: int | str = -2,
    event_dim: int | str = -1,
    estimator: str = "nrg",
    pair_weights: ArrayLike | None = None,
    member_weights: ArrayLike | None = None,
    dim: Dim = None,
    weights: ArrayLike | None = None,
    nan_policy: str = "propagate",
    reduction: Reduction = "none",
    skipna: bool = False,
    mask: Any = None,
) -> Any:
    """Variogram score of order ``p`` of a multivariate ensemble forecast.

    With ``v_ij = |y_i - y_j|^p``, ``v_mij = |x_mi - x_mj|^p`` and normalised member weights
    ``w_m`` (``1/M`` by default), ``vbar_ij = sum_m w_m v_mij``:

    * ``"nrg"`` (standard): ``VS_p = sum_ij c_ij (v_ij - vbar_ij)^2``;
    * ``"fair"``: ``sum_m w_m sum_ij c_ij (v_mij - v_ij)^2 - 1/(2 (1 - sum_m w_m^2))
      sum_mk w_m w_k sum_ij c_ij (v_mij - v_kij)^2``, which for equal weights is
      ``sum_ij c_ij ((v_ij - vbar_ij)^2 - s_ij^2 / M)`` with ``s_ij^2`` the unbiased member
      variance of ``v_mij``: an unbiased estimate of the score of the distribution the
      members are drawn from.

    These are scoringrules' ``vs_ensemble`` (``estimator``, ``ens_w``; its ``w`` is
    ``pair_weights`` here). Only the pairs ``i < j`` are formed (the terms are symmetric and
    vanish for ``i = j``), in closed form over the members: O(N M D^2) time and memory,
    never ``(M, M, D, D)``. Typical orders are ``p = 0.5`` and ``p = 1``.

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
    estimator:
        ``"nrg"`` or ``"fair"`` (needs 2 members).
    pair_weights:
        Optional non-negative pair weights ``c_ij``, shape ``(D, D)``; default all ones.
    member_weights:
        Optional non-negative member weights, shape ``(M,)`` or ``(*batch, M)``.
    dim, weights, nan_policy, reduction, skipna, mask:
        As in :func:`energy_score`.

    Returns
    -------
    Score of shape ``(*batch_without_dim,)``, of the caller's kind.

    References
    ----------
    Scheuerer & Hamill (2015), "Variogram-based proper scoring rules for probabilistic
    forecasts of multivariate quantities", MWR 143(4); Ferro (2014), QJRMS 140(683) (fair
    scores).

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
    if estimator not in ("nrg", "fair"):
        raise ValueError(f"estimator={estimator!r}; expected 'nrg' or 'fair'")
    check_nan_policy(nan_policy)
    y, fc, w, restore = _prepare_multivariate(obs, forecasts, member_dim, event_dim, member_weights)
    members = check_core_sizes({"forecasts": fc.transpose(-1, -2)}, "member")
    named = {"obs": y, "forecasts": fc} | ({} if w is None else {"member_weights": w})
    check_nan_policy(nan_policy, named)
    if estimator == "fair" and members < 2:
        raise ValueError("estimator='fair' needs at least 2 members; got 1")
    fc, w, empty = _member_weights(fc, w, nan_policy)
    dims = fc.shape[-1]
    rows, cols = torch.triu_indices(dims, dims, offset=1, device=fc.device)
    if pair_weights is None:
        pair_w = torch.full((rows.numel(),), 2.0, dtype=fc.dtype, device=fc.device)
    else:
        w_mat = pair_weights.values if is_xarray(pair_weights) else pair_weights
        w_t = torch.as_tensor(np.asarray(w_mat) if not isinstance(w_mat, Tensor) else w_mat).to(
            device=fc.device, dtype=fc.dtype
        )
        if w_t.shape != (dims, dims):
            raise ValueError(
                f"pair_weights has shape {tuple(w_t.shape)}; expected ({dims}, {dims}) pair "
                "weights for forecasts with that many variables"
            )
        if bool((w_t < 0).any()) or bool(torch.isnan(w_t).any()):
            raise ValueError("pair_weights has negative or NaN entries; expected weights >= 0")
        pair_w = w_t[rows, cols] + w_t[cols, rows]
    vobs = (y[..., rows] - y[..., cols]).abs() ** p  # (*batch, P)
    vfc = (fc[..., rows] - fc[..., cols]).abs() ** p  # (*batch, M, P)
    if w is None:
        vbar = vfc.mean(-2)
    else:
        wm = w.expand(fc.shape[:-1]).unsqueeze(-1)
        vbar = (wm * vfc).sum(-2)
    score = ((vobs - vbar) ** 2 * pair_w).sum(-1)
    if estimator == "fair":
        if w is None:
            spread = ((vfc - vbar.unsqueeze(-2)) ** 2).sum(-2) / (members * (members - 1))
        else:
            var_w = (wm * (vfc - vbar.unsqueeze(-2)) ** 2).sum(-2)
            spread = var_w * (1.0 / (1.0 - (w * w).sum(-1, keepdim=True)) - 1.0)
        score = score - (spread * pair_w).sum(-1)
    if empty is not None:
        score = torch.where(empty, torch.nan, score)
    return finish(
        score, restore, reduction, skipna, mask, dim=dim, weights=weights, nan_policy=nan_policy
    )
