"""The motion-field regularisers of de Bezenac et al. (2018): divergence, magnitude, smoothness.

All derivatives are second-order centred differences on the doubly periodic grid
(:func:`uqdyn.physics.grid.central_difference`); a motion field ``w`` has shape
``(batch, 2, height, width)`` with channel 0 the ``x`` (width) component and channel 1 the
``y`` (height) component, as in :func:`uqdyn.physics.warp`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from uqdyn.physics.grid import central_difference, spacing_pair

__all__ = ["MotionPenalties", "divergence", "motion_penalties"]


class MotionPenalties(NamedTuple):
    """Mean squared divergence, magnitude and gradient of a motion field (each shape ())."""

    divergence: Tensor
    magnitude: Tensor
    smoothness: Tensor


def _check_motion(motion: Any) -> Tensor:
    if not isinstance(motion, Tensor) or not motion.is_floating_point():
        raise TypeError(f"motion must be a floating tensor, got {type(motion).__name__}")
    if motion.ndim < 3 or motion.shape[-3] != 2:
        raise ValueError(
            "motion must have shape (..., 2, height, width) with components (w_x, w_y), "
            f"got {tuple(motion.shape)}"
        )
    return motion


def divergence(motion: Tensor, spacing: float | tuple[float, float] = 1.0) -> Tensor:
    r"""Centred-difference divergence ``d w_x / dx + d w_y / dy`` on the periodic grid.

    Parameters
    ----------
    motion : Tensor, shape (..., 2, height, width)
        ``(w_x, w_y)``.
    spacing : float or (dy, dx)
        Grid spacing. Default ``1.0`` (grid units).

    Returns
    -------
    Tensor, shape (..., height, width)

    Examples
    --------
    >>> import torch
    >>> w = torch.zeros(1, 2, 8, 8); w[:, 0] = torch.arange(8.0)  # w_x = x, not periodic
    >>> divergence(w)[0, 3, 1:7]
    tensor([1., 1., 1., 1., 1., 1.])
    """
    motion = _check_motion(motion)
    dy, dx = spacing_pair(spacing)
    return central_difference(motion[..., 0, :, :], dx, "x") + central_difference(
        motion[..., 1, :, :], dy, "y"
    )


def motion_penalties(motion: Tensor, spacing: float | tuple[float, float] = 1.0) -> MotionPenalties:
    r"""The three regularisers of de Bezenac et al. (2018) on a motion field.

    .. math::

        R_\mathrm{div} = \langle (\nabla\cdot w)^2 \rangle, \qquad
        R_\mathrm{magn} = \langle |w|^2 \rangle = \langle w_x^2 + w_y^2 \rangle, \qquad
        R_\mathrm{grad} = \langle \textstyle\sum_{i \in \{x, y\}} |\nabla w_i|^2 \rangle

    where :math:`\langle\cdot\rangle` is the mean over every grid point (and every leading
    index, e.g. batch and time) and derivatives are centred periodic differences.

    Parameters
    ----------
    motion : Tensor, shape (..., 2, height, width)
        ``(w_x, w_y)``.
    spacing : float or (dy, dx)
        Grid spacing. Default ``1.0`` (grid units).

    Returns
    -------
    MotionPenalties
        ``(divergence, magnitude, smoothness)``, each a tensor of shape ``()``.

    Examples
    --------
    >>> import torch
    >>> w = torch.ones(3, 2, 8, 8)  # uniform: no divergence, no gradient
    >>> [round(float(v), 6) for v in motion_penalties(w)]
    [0.0, 2.0, 0.0]
    """
    motion = _check_motion(motion)
    dy, dx = spacing_pair(spacing)
    div = divergence(motion, (dy, dx))
    magnitude = motion.square().sum(dim=-3)
    gradients = (
        central_difference(motion, dx, "x").square() + central_difference(motion, dy, "y").square()
    )
    return MotionPenalties(
        divergence=div.square().mean(),
        magnitude=magnitude.mean(),
        smoothness=gradients.sum(dim=-3).mean(),
    )
