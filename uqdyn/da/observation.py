"""Observation operators for ensemble filters: realized :mod:`uqdyn.observe` operators as a
linear ``H``, nonlinear operators ``h(x)``, and Gaussian errors with a diagonal or full
(correlated) covariance ``R``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from uqdyn._checks import as_float, as_int, describe_type, is_integer_scalar
from uqdyn.observe import ObservationOperator

__all__ = [
    "LinearObservation",
    "NonlinearObservation",
    "check_covariance",
    "realize_observation",
]

# Relative asymmetry of R tolerated as round-off (|R - R^T| <= tol * max |R|).
_SYMMETRY_TOLERANCE = 1e-10


def check_covariance(R: Any, ny: int, name: str = "R") -> tuple[np.ndarray, np.ndarray]:
    """Validate an observation-error covariance and return it with its Cholesky factor.

    Parameters
    ----------
    R : array, shape (Ny,) or (Ny, Ny)
        Variances of independent errors (the diagonal), or a full covariance matrix, which
        must be symmetric (up to round-off, ``1e-10`` relative) and positive definite.
    ny : int
        ``Ny``, the number of observations.
    name : str
        The argument name used in error messages.

    Returns
    -------
    (R, L) : numpy.ndarray, numpy.ndarray
        ``R`` as float64 (its shape unchanged; an exactly symmetrised copy when full) and
        the lower Cholesky factor ``L (Ny, Ny)`` with ``L @ L.T = R`` (``diag(sqrt(R))`` for
        a diagonal).

    Raises
    ------
    TypeError
        If ``R`` is not a real numeric array.
    ValueError
        For a wrong shape, non-finite or non-positive variances, an asymmetric matrix or
        one that is not positive definite.
    """
    try:
        array = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{name} is a {type(R).__name__}; expected a real array ({ny},) or ({ny}, {ny})"
        ) from error
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds non-finite values; expected a finite covariance")
    if array.shape == (ny,):
        if not (array > 0).all():
            bad = np.flatnonzero(array <= 0)[:10].tolist()
            raise ValueError(
                f"{name} has non-positive variances at observations {bad}; expected R > 0"
            )
        return array, np.diag(np.sqrt(array))
    if array.shape != (ny, ny):
        raise ValueError(
            f"{name} has shape {array.shape}; expected ({ny},) (variances) or ({ny}, {ny}) "
            f"(a covariance matrix) for Ny = {ny}"
        )
    asymmetry = float(np.abs(array - array.T).max())
    if asymmetry > _SYMMETRY_TOLERANCE * float(np.abs(array).max()):
        raise ValueError(
            f"{name} is not symmetric (max |R - R^T| = {asymmetry:.3g}); expected a "
            "symmetric positive-definite covariance"
        )
    array = (array + array.T) / 2
    try:
        cholesky = np.linalg.cholesky(array)
    except np.linalg.LinAlgError as error:
        smallest = float(np.linalg.eigvalsh(array).min())
        raise ValueError(
            f"{name} is not positive definite (smallest eigenvalue {smallest:.3g}); expected "
            "a symmetric positive-definite covariance"
        ) from error
    return array, cholesky


def _states(x: Any, nx: int) -> tuple[np.ndarray, bool]:
    """``x`` as a finite float64 ``(N, Nx)`` array, and whether it was one state ``(Nx,)``."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != nx:
        raise ValueError(f"x has shape {array.shape}; expected (Nx,) or (N, Nx) with Nx = {nx}")
    if not np.isfinite(array).all():
        raise ValueError("x holds non-finite values; expected finite states")
    return np.atleast_2d(array), array.ndim == 1


class _GaussianObservation:
    """Shared behaviour of ``y = h(x) + e``, ``e ~ N(0, R)``: sampling, DAPPER, filterpy.

    Subclasses provide ``Ny``, ``Nx``, ``R``, ``indices``, ``_cholesky`` and ``_apply``.
    """

    R: np.ndarray
    indices: np.ndarray | None
    _cholesky: np.ndarray

    @property
    def Ny(self) -> int:  # noqa: N802 - the DA name
        raise NotImplementedError

    @property
    def Nx(self) -> int:  # noqa: N802 - the DA name
        raise NotImplementedError

    def _apply(self, states: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def diagonal(self) -> bool:
        """Whether the errors are independent (``R`` given as the ``(Ny,)`` variances)."""
        return self.R.ndim == 1

    @property
    def covariance(self) -> np.ndarray:
        """The full error covariance, shape ``(Ny, Ny)`` (``diag(R)`` for variances)."""
        return np.diag(self.R) if self.diagonal else self.R.copy()

    @property
    def cholesky(self) -> np.ndarray:
        """Lower Cholesky factor ``L (Ny, Ny)`` of the covariance, ``L @ L.T = R``."""
        return self._cholesky.copy()

    def __call__(self, x: Any, t: float | None = None) -> np.ndarray:
        """``h(x)`` for a state ``(Nx,)`` or an ensemble ``(N, Nx)``: ``(Ny,)`` or ``(N, Ny)``.

        ``t`` is accepted for DAPPER's calling convention and not used.
        """
        states, single = _states(x, self.Nx)
        out = self._apply(states)
        return out[0] if single else out

    def hx(self, x: Any) -> np.ndarray:
        """filterpy's measurement function ``hx(x)`` (the same as calling the object)."""
        return self(x)

    def sample(self, x: Any, rng: np.random.Generator) -> np.ndarray:
        """Synthetic observations ``h(x) + e``, ``e ~ N(0, R)``, shape of ``h(x)``.

        The errors are ``L z`` with standard normal ``z`` and the Cholesky factor ``L`` of
        ``R`` (``sqrt(R) z`` for independent errors); each row of an ensemble gets its own.
        """
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng is a {type(rng).__name__}; expected a numpy Generator")
        clean = self(x)
        z = rng.standard_normal(clean.shape)
        if self.diagonal:
            return clean + np.sqrt(self.R) * z
        return clean + z @ self._cholesky.T

    def to_filterpy(self) -> tuple[Callable[[Any], np.ndarray], np.ndarray]:
        """``(hx, R)`` for a filterpy filter: ``kf.hx = hx`` (or ``hx=`` at construction)
        and ``kf.R = R``, the full ``(Ny, Ny)`` covariance."""
        return self.hx, self.covariance

    def _localizer(
        self,
        localization_batch: int | str | None,
        state_shape: tuple[int, ...] | None,
        periodic: bool,
    ) -> Any:
        if localization_batch is None:
            return None
        automatic = isinstance(localization_batch, str)
        if automatic and localization_batch != "auto":
            raise ValueError(
                f"localization_batch={localization_batch!r}; expected 'auto', None or a "
                "positive int"
            )
        if not automatic:
            if not is_integer_scalar(localization_batch):
                raise TypeError(
                    f"localization_batch={localization_batch!r} is a "
                    f"{describe_type(localization_batch)}; expected 'auto', None or a positive int"
                )
            localization_batch = as_int(localization_batch, "localization_batch", minimum=1)
        if self.indices is None:
            if automatic:
                return None
            raise ValueError(
                "localization_batch needs the observed state components (indices); this "
                "observation has none (it blurs, or none were given), so it cannot be localized"
            )
        shape = (self.Nx,) if state_shape is None else tuple(state_shape)
        shape = tuple(as_int(s, f"state_shape[{i}]", minimum=1) for i, s in enumerate(shape))
        if math.prod(shape) != self.Nx:
            raise ValueError(
                f"state_shape={state_shape!r}; expected positive ints whose product is Nx = "
                f"{self.Nx}"
            )
        batch = 1 if automatic else int(localization_batch)  # type: ignore[arg-type]
        from dapper.tools.localization import nd_Id_localization

        return nd_Id_localization(shape, (batch,) * len(shape), self.indices, periodic=periodic)

    def _dapper_noise(self) -> Any:
        from dapper.mods import GaussRV
        from dapper.tools.matrices import CovMat

        kind = "diag" if self.diagonal else "full"
        return GaussRV(C=CovMat(self.R, kind))


def _check_indices(indices: Any, nx: int, ny: int | None) -> np.ndarray | None:
    if indices is None:
        return None
    array = np.asarray(indices)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            f"indices has shape {array.shape} and dtype {array.dtype}; expected a 1-d integer "
            "array of observed state components"
        )
    if ny is not None and array.shape[0] != ny:
        raise ValueError(f"indices has {array.shape[0]} entries; expected Ny = {ny}")
    if array.size and (array.min() < 0 or array.max() >= nx):
        raise ValueError(f"indices must lie in [0, {nx}); got {array.min()}..{array.max()}")
    return array.astype(np.int64)


@dataclass(frozen=True, eq=False)
class LinearObservation(_GaussianObservation):
    """A linear observation ``y = H x + e``, ``e ~ N(0, R)``, in numpy.

    Built by :func:`realize_observation` from a :mod:`uqdyn.observe` operator (the same
    mask, stations and blur it draws, frozen, so every filter cycle uses one ``H``) or
    directly.

    Attributes
    ----------
    H : numpy.ndarray, shape (Ny, Nx)
        The noise-free operator.
    R : numpy.ndarray, shape (Ny,) or (Ny, Ny)
        Observation-error variances (independent errors) or a full, correlated covariance
        (symmetric positive definite; checked, see :func:`check_covariance`).
    indices : numpy.ndarray of int, shape (Ny,), or None
        The state component each observation sits at, when every row of ``H`` picks one
        component (masks and station subsampling); ``None`` for blurring operators. Needed
        for localization.

    Examples
    --------
    >>> import numpy as np
    >>> R = np.array([[1.0, 0.5], [0.5, 1.0]])
    >>> obs = LinearObservation(H=np.eye(4)[[0, 2]], R=R, indices=np.array([0, 2]))
    >>> obs(np.arange(8.0).reshape(2, 4)).tolist()
    [[0.0, 2.0], [4.0, 6.0]]
    """

    H: np.ndarray
    R: np.ndarray
    indices: np.ndarray | None = None
    _cholesky: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        H = np.asarray(self.H, dtype=np.float64)
        if H.ndim != 2 or H.shape[0] < 1 or H.shape[1] < 1 or not np.isfinite(H).all():
            raise ValueError(f"H has shape {H.shape}; expected a finite (Ny, Nx) matrix")
        R, cholesky = check_covariance(self.R, H.shape[0])
        object.__setattr__(self, "H", H)
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "indices", _check_indices(self.indices, H.shape[1], H.shape[0]))
        object.__setattr__(self, "_cholesky", cholesky)

    @property
    def Ny(self) -> int:  # noqa: N802 - the DA name
        """Number of observations."""
        return int(self.H.shape[0])

    @property
    def Nx(self) -> int:  # noqa: N802 - the DA name
        """State size."""
        return int(self.H.shape[1])

    def _apply(self, states: np.ndarray) -> np.ndarray:
        return states @ self.H.T

    def to_dapper(
        self,
        *,
        localization_batch: int | str | None = "auto",
        state_shape: tuple[int, ...] | None = None,
        periodic: bool = True,
    ) -> dict[str, Any]:
        """The ``Obs`` mapping of a DAPPER ``HiddenMarkovModel``, localizer included.

        Parameters
        ----------
        localization_batch : "auto", int or None
            DAPPER's ``nd_Id_localization`` over the state grid, updating the state in
            batches of this many components per axis: what LETKF and DAPPER's other local
            filters read from ``HMM.Obs.localizer``. ``"auto"`` (default): batches of 1 (one
            local analysis per state component) when :attr:`indices` is known, no localizer
            otherwise; an int requires :attr:`indices`; ``None``: no localizer.
        state_shape : tuple of int, optional
            Grid of the state for the distances (default ``(Nx,)``, a 1-d ring such as
            Lorenz-96; ``(height, width)`` for a flattened field).
        periodic : bool
            Periodic distances (default, as Lorenz-96 and uqdyn's periodic grids).

        Returns
        -------
        dict
            ``{"M": Ny, "model": self, "linear": lambda x, t: H, "noise": GaussRV(C=R),
            "localizer": ...}`` (``R`` as a diagonal or full ``CovMat``).
        """
        localizer = self._localizer(localization_batch, state_shape, periodic)
        obs: dict[str, Any] = {
            "M": self.Ny,
            "model": self,
            "linear": lambda *_: self.H,
            "noise": self._dapper_noise(),
        }
        if localizer is not None:
            obs["localizer"] = localizer
        return obs


@dataclass(frozen=True, eq=False)
class NonlinearObservation(_GaussianObservation):
    """A nonlinear observation ``y = h(x) + e``, ``e ~ N(0, R)``, vectorised over members.

    Attributes
    ----------
    h : callable
        ``h(E (N, Nx)) -> (N, Ny)``: numpy float64 in, array out, one row per member (one
        call for a whole ensemble, as DAPPER calls it). A single state ``(Nx,)`` is passed as
        ``(1, Nx)``. Outputs are checked for shape and finiteness.
    R : numpy.ndarray, shape (Ny,) or (Ny, Ny)
        Error variances or a full symmetric positive-definite covariance.
    state_dim : int
        ``Nx``.
    indices : numpy.ndarray of int, shape (Ny,), optional
        The state component each observation sits at (e.g. ``h(E) = E[:, idx] ** 2`` sits
        at ``idx``), for localization.
    jacobian : callable, optional
        ``jacobian(x (Nx,)) -> (Ny, Nx)``, passed to DAPPER as ``Obs.linear`` (needed by
        its extended Kalman filter and variational methods, not by the EnKFs).

    Examples
    --------
    >>> import numpy as np
    >>> idx = np.arange(0, 6, 2)
    >>> obs = NonlinearObservation(lambda E: E[:, idx] ** 2, R=np.ones(3), state_dim=6,
    ...                            indices=idx)
    >>> obs(np.arange(6.0)).tolist()
    [0.0, 4.0, 16.0]
    """

    h: Callable[[np.ndarray], Any]
    R: np.ndarray
    state_dim: int
    indices: np.ndarray | None = None
    jacobian: Callable[[np.ndarray], Any] | None = None
    _cholesky: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not callable(self.h):
            raise TypeError(
                f"h is a {type(self.h).__name__}; expected a callable (N, Nx) -> (N, Ny)"
            )
        if self.jacobian is not None and not callable(self.jacobian):
            raise TypeError(
                f"jacobian is a {type(self.jacobian).__name__}; expected None or a callable "
                "x (Nx,) -> (Ny, Nx)"
            )
        object.__setattr__(self, "state_dim", as_int(self.state_dim, "state_dim", minimum=1))
        shape = np.shape(self.R)
        if len(shape) not in (1, 2):
            raise ValueError(
                f"R has shape {shape}; expected (Ny,) variances or an (Ny, Ny) covariance"
            )
        R, cholesky = check_covariance(self.R, int(shape[0]))
        object.__setattr__(self, "R", R)
        object.__setattr__(
            self, "indices", _check_indices(self.indices, self.state_dim, R.shape[0])
        )
        object.__setattr__(self, "_cholesky", cholesky)

    @property
    def Ny(self) -> int:  # noqa: N802 - the DA name
        """Number of observations."""
        return int(self.R.shape[0])

    @property
    def Nx(self) -> int:  # noqa: N802 - the DA name
        """State size."""
        return self.state_dim

    def _apply(self, states: np.ndarray) -> np.ndarray:
        out = self.h(states)
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        array = np.asarray(out, dtype=np.float64)
        if array.shape != (states.shape[0], self.Ny):
            raise ValueError(
                f"h returned shape {array.shape} for states of shape {states.shape}; expected "
                f"({states.shape[0]}, {self.Ny}) (one row of Ny = {self.Ny} per member)"
            )
        if not np.isfinite(array).all():
            raise ValueError("h returned non-finite values; expected finite observations")
        return array

    def to_dapper(
        self,
        *,
        localization_batch: int | str | None = "auto",
        state_shape: tuple[int, ...] | None = None,
        periodic: bool = True,
    ) -> dict[str, Any]:
        """The ``Obs`` mapping of a DAPPER ``HiddenMarkovModel`` (see
        :meth:`LinearObservation.to_dapper` for the localizer arguments).

        Returns
        -------
        dict
            ``{"M": Ny, "model": self, "noise": GaussRV(C=R)}`` plus ``"linear"`` (the
            ``jacobian``, when given) and ``"localizer"`` (when :attr:`indices` is known).
        """
        localizer = self._localizer(localization_batch, state_shape, periodic)
        obs: dict[str, Any] = {"M": self.Ny, "model": self, "noise": self._dapper_noise()}
        if self.jacobian is not None:
            jacobian = self.jacobian
            obs["linear"] = lambda x, *_: np.asarray(jacobian(np.asarray(x)), dtype=np.float64)
        if localizer is not None:
            obs["localizer"] = localizer
        return obs


def realize_observation(
    operator: ObservationOperator,
    state_dim: int,
    *,
    generator: torch.Generator | None = None,
    noise_std: float | None = None,
    noise_cov: Any = None,
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
    noise_cov : array, shape (Ny,) or (Ny, Ny), optional
        Observation-error variances or a full, correlated covariance (symmetric positive
        definite) to use instead of the operator's; ``Ny`` is the number of entries the
        realized operator observes. Not together with ``noise_std``.

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
    state_dim = as_int(state_dim, "state_dim", minimum=1)
    if noise_std is not None:
        noise_std = as_float(noise_std, "noise_std", positive=True)
    with torch.no_grad():
        observed = operator(torch.zeros(1, state_dim, dtype=torch.float64), generator)
        H = observed.matrix(0).to(torch.float64).cpu().numpy()
        R = observed.observed_error_variance(0).to(torch.float64).cpu().numpy()
    if H.shape[0] == 0:
        raise ValueError(
            f"the realized {type(operator).__name__} observes nothing; expected at least one "
            "observed entry"
        )
    if noise_std is not None and noise_cov is not None:
        raise ValueError("noise_std and noise_cov are both given; expected at most one")
    if noise_cov is not None:
        R = noise_cov  # validated (shape, symmetry, positive definiteness) below
    elif noise_std is not None:
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
