"""Finite-difference operators on a doubly periodic grid.

Fields have shape ``(..., height, width)``: axis ``-2`` is ``y`` (spacing ``dy``) and axis
``-1`` is ``x`` (spacing ``dx``); index ``[i, j]`` is the point ``(y_i, x_j) = (i dy, j dx)``.
Every operator is built from :func:`torch.roll`, so it is differentiable, runs on the device of
its input, and fuses into few kernels under :func:`torch.compile`.

Staggered (C-grid) quantities use the convention that ``u[i, j]`` lives on the east face
``(y_i, x_{j+1/2})`` and ``v[i, j]`` on the north face ``(y_{i+1/2}, x_j)`` of cell ``(i, j)``.
A flux divergence built from :func:`backward_difference` of face fluxes sums to zero over the
periodic grid (the sum telescopes), which is what makes the conservative schemes of
:mod:`uqdyn.physics` conserve mass to round-off.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import Tensor

from uqdyn._checks import as_float, is_real_scalar

__all__ = [
    "shift",
    "forward_difference",
    "backward_difference",
    "central_difference",
    "face_average",
    "laplacian",
    "flux_divergence",
    "spacing_pair",
]

Axis = Literal["x", "y"]


def _dim(axis: str) -> int:
    if axis == "x":
        return -1
    if axis == "y":
        return -2
    raise ValueError(f"axis must be 'x' or 'y', got {axis!r}")


def shift(field: Tensor, offset: int, axis: Axis) -> Tensor:
    """Periodic neighbour: ``shift(f, k, "x")[..., i, j] = f[..., i, j + k]``.

    Parameters
    ----------
    field : Tensor, shape (..., height, width)
    offset : int
        Neighbour offset (positive: towards larger index).
    axis : {"x", "y"}

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> shift(torch.arange(4.0).reshape(1, 4), 1, "x")
    tensor([[1., 2., 3., 0.]])
    """
    return field.roll(-offset, dims=_dim(axis))


def forward_difference(field: Tensor, spacing: float, axis: Axis) -> Tensor:
    """``(f[j+1] - f[j]) / h``: the derivative at the face ``j + 1/2``.

    Parameters
    ----------
    field : Tensor, shape (..., height, width)
    spacing : float
        Grid spacing ``h`` along ``axis``.
    axis : {"x", "y"}

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> forward_difference(torch.tensor([[0.0, 1.0, 4.0, 9.0]]), 1.0, "x")
    tensor([[ 1.,  3.,  5., -9.]])
    """
    return (shift(field, 1, axis) - field) / spacing


def backward_difference(field: Tensor, spacing: float, axis: Axis) -> Tensor:
    """``(f[j] - f[j-1]) / h``: the derivative at the face ``j - 1/2``.

    Applied to face fluxes ``F[j] = F_{j+1/2}`` it gives the cell divergence.

    Parameters
    ----------
    field : Tensor, shape (..., height, width)
    spacing : float
    axis : {"x", "y"}

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> backward_difference(torch.tensor([[0.0, 1.0, 4.0, 9.0]]), 1.0, "x")
    tensor([[-9.,  1.,  3.,  5.]])
    """
    return (field - shift(field, -1, axis)) / spacing


def central_difference(field: Tensor, spacing: float, axis: Axis) -> Tensor:
    """Second-order centred derivative ``(f[j+1] - f[j-1]) / (2 h)``.

    Parameters
    ----------
    field : Tensor, shape (..., height, width)
    spacing : float
    axis : {"x", "y"}

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> central_difference(torch.tensor([[0.0, 1.0, 2.0, 1.0]]), 1.0, "x")
    tensor([[ 0.,  1.,  0., -1.]])
    """
    return (shift(field, 1, axis) - shift(field, -1, axis)) / (2.0 * spacing)


def face_average(field: Tensor, axis: Axis) -> Tensor:
    """Average onto the face ``j + 1/2``: ``(f[j] + f[j+1]) / 2``.

    Parameters
    ----------
    field : Tensor, shape (..., height, width)
    axis : {"x", "y"}

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> face_average(torch.tensor([[0.0, 2.0, 4.0]]), "x")
    tensor([[1., 3., 2.]])
    """
    return 0.5 * (field + shift(field, 1, axis))


def laplacian(field: Tensor, spacing: tuple[float, float]) -> Tensor:
    """Five-point Laplacian ``(f[i+1]-2f[i]+f[i-1])/dy^2 + (f[j+1]-2f[j]+f[j-1])/dx^2``.

    Second-order accurate; its sum over the periodic grid is zero.

    Parameters
    ----------
    field : Tensor, shape (..., height, width)
    spacing : tuple of float
        ``(dy, dx)``.

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> f = torch.zeros(1, 3, 3); f[0, 1, 1] = 1.0
    >>> laplacian(f, (1.0, 1.0))[0]
    tensor([[ 0.,  1.,  0.],
            [ 1., -4.,  1.],
            [ 0.,  1.,  0.]])
    """
    dy, dx = spacing
    two_f = 2.0 * field
    return (field.roll(1, -2) - two_f + field.roll(-1, -2)) / (dy * dy) + (
        field.roll(1, -1) - two_f + field.roll(-1, -1)
    ) / (dx * dx)


def flux_divergence(flux_x: Tensor, flux_y: Tensor, spacing: tuple[float, float]) -> Tensor:
    """Cell divergence of face fluxes: ``(Fx[j] - Fx[j-1]) / dx + (Fy[i] - Fy[i-1]) / dy``.

    ``flux_x[..., i, j]`` is the flux through the east face ``x_{j+1/2}`` and
    ``flux_y[..., i, j]`` the flux through the north face ``y_{i+1/2}`` of cell ``(i, j)``.
    The result sums to zero over the periodic grid, up to round-off.

    Parameters
    ----------
    flux_x, flux_y : Tensor, shape (..., height, width)
    spacing : tuple of float
        ``(dy, dx)``.

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> fx = torch.randn(2, 8, 8, dtype=torch.float64)
    >>> fy = torch.randn(2, 8, 8, dtype=torch.float64)
    >>> float(flux_divergence(fx, fy, (0.5, 0.5)).sum().abs()) < 1e-12
    True
    """
    dy, dx = spacing
    return backward_difference(flux_x, dx, "x") + backward_difference(flux_y, dy, "y")


def spacing_pair(spacing: Any) -> tuple[float, float]:
    """``(dy, dx)`` from a float (the same in both directions) or a pair; both positive.

    Raises ``ValueError`` naming ``spacing`` for anything else.
    """
    if is_real_scalar(spacing):
        pair = (as_float(spacing, "spacing"),) * 2
    elif isinstance(spacing, (tuple, list)) and len(spacing) == 2:
        pair = (as_float(spacing[0], "spacing[0]"), as_float(spacing[1], "spacing[1]"))
    else:
        raise ValueError(f"spacing must be a positive float or a pair (dy, dx), got {spacing!r}")
    if not all(math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(f"spacing must be positive and finite, got {spacing!r}")
    return pair
