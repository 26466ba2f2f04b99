"""Observation operators of :mod:`uqdyn.observe` as the ``H`` of ensemble filters."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from uqdyn.observe import ObservationOperator

__all__ = ["LinearObservation", "realize_observation"]


@dataclass(frozen=True)
class LinearObservation:
    """A realized linear observation ``y = H x + e``, ``e ~ N(0, diag(R))``, in numpy.

    Built by :func:`realize_observation` from a :mod:`uqdyn.observe` operator: the same mask,
    stations and blur it draws, frozen, so every filter cycle uses one ``H``.

    Attributes
    ----------
    H : numpy.ndarray, shape (Ny, Nx)
        The realized noise-free operator.
    R : numpy.ndarray, shape (Ny,)
        Observation-error variances (the diagonal of the covariance).
    indices : numpy.ndarray of int, shape (Ny,), or None
        The observed state components when every row of ``H`` picks one component (masks
        and station subsampling); ``None`` for blurring operators.
    """

    H: np.ndarray
    R: np.ndarray
    indices: np.ndarray | None

    @property
    def Ny(self) -> int:  # noqa: N802 - the DA name
        """Number of observations."""
        return int(self.H.shape[0])

    @property
    def Nx(self) -> int:  # noqa: N802 - the DA name
        """State size."""
        return int(self.H.shape[1])

    def __call__(self, x: Any, t: float | None = None) -> np.ndarray:
        """``H x`` for a state ``(Nx,)`` or an ensemble ``(N, Nx)``: ``(Ny,)`` or ``(N, Ny)``."""
        array = np.asarray(x, dtype=np.float64)
        if array.ndim not in (1, 2) or array.shape[-1] != self.Nx:
            raise ValueError(
                f"x has shape {array.shape}; expected (Nx,) or (N, Nx) with Nx = {self.Nx}"
            )
        if not np.isfinite(array).all():
            raise ValueError("x holds non-finite values; expected finite states")
        return array @ self.H.T

    def hx(self, x: Any) -> np.ndarray:
        """filterpy's measurement function ``hx(x)`` (the same as calling the object)."""
        return self(x)

    def sample(self, x: Any, rng: np.random.Generator) -> np.ndarray:
        """Synthetic observations ``H x + e`` with ``e ~ N(0, diag(R))``, shape of ``H x``."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng is a {type(rng).__name__}; expected a numpy Generator")
        clean = self(x)
        return clean + np.sqrt(self.R) * rng.standard_normal(clean.shape)

    def to_dapper(self, *, localization_batch: int | None = None) -> dict[str, Any]:
        """The ``Obs`` mapping of a DAPPER ``HiddenMarkovModel``.

        Parameters
        ----------
        localization_batch : int, optional
            With ``indices`` (a selection operator), add DAPPER's ``nd_Id_localization`` of a
            periodic 1-d state, updated in batches of this many state components (needed by
            LETKF and other local filters; DAPPER's Lorenz-96 settings use 2).

        Returns
        -------
        dict
            ``{"M": Ny, "model": self, "linear": lambda x, t: H, "noise": GaussRV(C=diag(R))}``
            (and ``"localizer"``).
        """
        if localization_batch is not None:
            if (
                isinstance(localization_batch, bool)
                or not isinstance(localization_batch, int)
                or localization_batch < 1
            ):
                raise ValueError(
                    f"localization_batch={localization_batch!r}; expected None or a positive int"
                )
            if self.indices is None:
                raise ValueError(
                    "localization_batch needs a selection operator (mask or stations); this "
                    "observation blurs, so it has no observed indices"
                )
        from dapper.mods import GaussRV
        from dapper.tools.localization import nd_Id_localization
        from dapper.tools.matrices import CovMat

        obs: dict[str, Any] = {
            "M": self.Ny,
            "model": self,
            "linear": lambda *_: self.H,
            "noise": GaussRV(C=CovMat(self.R, "diag")),
        }
        if localization_batch is not None:
            obs["localizer"] = nd_Id_localization((self.Nx,), (localization_batch,), self.indices)
        return obs


def realize_observation(
    operator: ObservationOperator,
    state_dim: int,
    *,
    generator: torch.Generator | None = None,
    noise_std: float | None = None,
) -> LinearObservation:
    """Freeze one realization of a :mod:`uqdyn.observe` operator as a linear ``H`` and ``R``.

    The operator is applied once to a vector state ``(1, state_dim)``; its realized mask,
    stations or blur becomes ``H`` (:meth:`uqdyn.observe.Observed.matrix`) and its noise
    standard deviation the diagonal of ``R``.

    Parameters
    ----------
    operator : ObservationOperator
        E.g. ``Compose(StationSubsample(locations=idx), GaussianNoise(sigma=1.0))``.
    state_dim : int
        ``Nx``.
    generator : torch.Generator, optional
        Source of the operator's random parameters (the mask, the stations, the noise level).
    noise_std : float, optional
        Observation-error standard deviation to use instead of the operator's (needed when
        the operator adds no noise, because a filter needs ``R > 0``).

    Returns
    -------
    LinearObservation

    Raises
    ------
    ValueError
        If nothing is observed, or ``R`` would be zero at an observed entry.
    """
    if not isinstance(operator, ObservationOperator):
        raise TypeError(
            f"operator is a {type(operator).__name__}; expected a uqdyn.observe ObservationOperator"
        )
    if isinstance(state_dim, bool) or not isinstance(state_dim, int) or state_dim < 1:
        raise ValueError(f"state_dim={state_dim!r}; expected a positive int")
    if noise_std is not None and not (
        isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std > 0
    ):
        raise ValueError(f"noise_std={noise_std!r}; expected None or a positive float")
    with torch.no_grad():
        observed = operator(torch.zeros(1, state_dim, dtype=torch.float64), generator)
        H = observed.matrix(0).to(torch.float64).cpu().numpy()
        R = observed.observed_error_variance(0).to(torch.float64).cpu().numpy()
    if H.shape[0] == 0:
        raise ValueError(
            f"the realized {type(operator).__name__} observes nothing; expected at least one "
            "observed entry"
        )
    if noise_std is not None:
        R = np.full(H.shape[0], float(noise_std) ** 2)
    elif not (R > 0).all():
        raise ValueError(
            f"the realized {type(operator).__name__} adds no noise to "
            f"{int((R <= 0).sum())} observed entries, so R would be singular; expected an "
            "operator ending with GaussianNoise(sigma > 0) or noise_std="
        )
    selection = (np.count_nonzero(H, axis=1) == 1) & np.isclose(H.max(axis=1), 1.0)
    indices = np.argmax(H, axis=1) if bool(selection.all()) else None
    return LinearObservation(H=H, R=R, indices=indices)
