"""Station subsampling, Gaussian blur and additive Gaussian noise."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from uqdyn._checks import as_int
from uqdyn.observe.base import (
    ObservationOperator,
    Observed,
    _check_range,
    _pick,
    _rand,
    _randn,
    _uniform_per_sample,
)

__all__ = ["StationSubsample", "Blur", "GaussianNoise"]


class StationSubsample(ObservationOperator):
    """Observe a state at a sparse network of stations.

    Gridded states ``(B, C, H, W)`` become ``(B, C, S)``: the values at ``S`` grid points;
    vector states ``(B, D)`` become ``(B, S)``: ``S`` of their components. Either the network
    is fixed (``locations``), or a new one is drawn for every sample: ``n_stations``
    locations uniformly without replacement. The station coordinates are returned in
    ``Observed.coordinates``: ``(B, S, 2)`` grid indices (row, column) or ``(B, S, 1)``
    component indices.

    Parameters
    ----------
    locations:
        Fixed network: integer tensor ``(S, 2)`` of (row, column) grid indices for gridded
        states, or ``(S,)`` component indices for vector states. Build a random fixed
        network with :meth:`random_network`.
    n_stations:
        Number of stations drawn per sample (when ``locations`` is not given).

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import StationSubsample
    >>> net = StationSubsample.random_network(20, (32, 32), generator=torch.Generator().manual_seed(0))
    >>> obs = StationSubsample(locations=net)(torch.randn(4, 3, 32, 32))
    >>> obs.values.shape, obs.coordinates.shape
    (torch.Size([4, 3, 20]), torch.Size([4, 20, 2]))
    """

    locations: Tensor | None

    def __init__(self, locations: Tensor | None = None, *, n_stations: int | None = None) -> None:
        super().__init__()
        if (locations is None) == (n_stations is None):
            raise ValueError(
                f"received locations={'None' if locations is None else 'a tensor'} and "
                f"n_stations={n_stations!r}; expected exactly one of them"
            )
        if locations is not None:
            if not isinstance(locations, Tensor) or locations.dtype.is_floating_point:
                raise TypeError(
                    f"locations must be an integer tensor; received "
                    f"{getattr(locations, 'dtype', type(locations).__name__)}"
                )
            if not (locations.dim() == 1 or (locations.dim() == 2 and locations.shape[1] == 2)):
                raise ValueError(
                    f"locations has shape {tuple(locations.shape)}; expected (S, 2) grid "
                    "indices or (S,) component indices"
                )
            if locations.shape[0] == 0 or bool((locations < 0).any()):
                raise ValueError("locations must be a non-empty set of non-negative indices")
            self.register_buffer("locations", locations.long())
            self.n_stations = int(locations.shape[0])
        else:
            self.locations = None
            self.n_stations = as_int(n_stations, "n_stations", minimum=1)

    @staticmethod
    def random_network(
        n_stations: int,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Draw ``n_stations`` distinct grid points of a ``shape = (H, W)`` grid.

        Returns
        -------
        Long tensor ``(n_stations, 2)`` of (row, column) indices.
        """
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"shape={tuple(shape)}; expected (height, width) with positive sizes")
        height, width = as_int(shape[0], "shape[0]"), as_int(shape[1], "shape[1]")
        n_stations = as_int(n_stations, "n_stations")
        if not 1 <= n_stations <= height * width:
            raise ValueError(
                f"n_stations={n_stations}; expected 1 <= n_stations <= {height * width}"
            )
        flat = torch.randperm(height * width, generator=generator)[:n_stations]
        return torch.stack([flat // width, flat % width], dim=1)

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        if obs.layout == "stations":
            raise ValueError("StationSubsample received station observations; apply it once")
        values = obs.values
        batch, device = values.shape[0], values.device
        is_grid = obs.layout == "grid"
        spatial = tuple(values.shape[2:]) if is_grid else (int(values.shape[1]),)
        n_locations = int(torch.tensor(spatial).prod())
        if self.locations is not None:
            loc = self.locations.to(device)
            if is_grid != (loc.dim() == 2):
                raise ValueError(
                    f"locations has shape {tuple(loc.shape)} but the values are {obs.layout} of "
                    f"shape {tuple(values.shape)}; expected (S, 2) for grids, (S,) for vectors"
                )
            coords = loc.view(self.n_stations, -1)
            if bool((coords >= torch.tensor(spatial, device=device)).any()):
                raise ValueError(
                    f"locations exceed the spatial shape {spatial} of values {tuple(values.shape)}"
                )
            coords = coords.expand(batch, -1, -1)
        else:
            if self.n_stations > n_locations:
                raise ValueError(
                    f"n_stations={self.n_stations} exceeds the {n_locations} locations of values "
                    f"{tuple(values.shape)}"
                )
            keys = _rand((batch, n_locations), generator, device, torch.float64)
            flat = keys.argsort(dim=1)[:, : self.n_stations]
            if is_grid:
                coords = torch.stack([flat // spatial[1], flat % spatial[1]], dim=-1)
            else:
                coords = flat[..., None]
        if is_grid:
            flat_index = coords[..., 0] * spatial[1] + coords[..., 1]  # (B, S)
        else:
            flat_index = coords[..., 0]

        def stage(v: Tensor, index: int | None) -> Tensor:
            idx = _pick(flat_index, index)
            if is_grid:
                v = v.flatten(2)
                idx = idx[:, None, :].expand(v.shape[0], v.shape[1], -1)
                return torch.gather(v, 2, idx)
            return torch.gather(v, 1, idx.expand(v.shape[0], -1))

        return obs.then(
            stage(values, None),
            _gather_like(obs.mask, flat_index, is_grid),
            _gather_like(obs.noise_std, flat_index, is_grid),
            stage,
            layout="stations",
            coordinates=coords.contiguous(),
        )

    def extra_repr(self) -> str:
        kind = "fixed" if self.locations is not None else "random per sample"
        return f"n_stations={self.n_stations}, {kind}"


def _gather_like(t: Tensor, flat_index: Tensor, is_grid: bool) -> Tensor:
    if is_grid:
        t = t.flatten(2)
        return torch.gather(t, 2, flat_index[:, None, :].expand(-1, t.shape[1], -1))
    return torch.gather(t, 1, flat_index)


def _heat_transfer(height: int, width: int, sigma: Tensor) -> Tensor:
    """``exp(-2 pi^2 sigma^2 |f|^2)`` on the rfft2 frequencies: ``(B, 1, H, W // 2 + 1)``."""
    fy = torch.fft.fftfreq(height, device=sigma.device, dtype=sigma.dtype)
    fx = torch.fft.rfftfreq(width, device=sigma.device, dtype=sigma.dtype)
    f2 = fy[:, None].square() + fx[None, :].square()
    return torch.exp(-2.0 * torch.pi**2 * sigma.view(-1, 1, 1, 1).square() * f2)


class Blur(ObservationOperator):
    """Gaussian blur of gridded states on a periodic grid.

    ``Blur(u) = G_sigma * u``, the circular convolution with a Gaussian of standard deviation
    ``sigma`` grid cells, computed in Fourier space by multiplying each mode with frequency
    ``f`` (cycles per cell) by ``exp(-2 pi^2 sigma^2 |f|^2)``; equivalently the heat flow
    ``exp(sigma^2 / 2 * Laplacian)``. The mean of every channel is preserved exactly and the
    map is linear and differentiable in the state. ``sigma ~ Uniform(lo, hi)`` per sample
    when a range is given. Blur must come before masks, stations and noise.

    Parameters
    ----------
    sigma:
        Kernel standard deviation in grid cells (``>= 0``), or a ``(lo, hi)`` range.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import Blur
    >>> x = torch.randn(2, 1, 32, 32, requires_grad=True)
    >>> Blur(sigma=2.0)(x).values.sum().backward()
    """

    def __init__(self, sigma: float | Sequence[float] = 1.0) -> None:
        super().__init__()
        self.sigma = _check_range(sigma, "sigma", low=0.0, high=float("inf"), high_open=True)

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        if obs.layout != "grid":
            raise ValueError(
                f"Blur needs gridded values (batch, channels, height, width); received "
                f"{obs.layout} values of shape {tuple(obs.values.shape)}"
            )
        if not bool(obs.mask.all()) or bool((obs.noise_std != 0).any()):
            raise ValueError(
                "Blur received masked or noisy values; expected Blur before masks and noise "
                "(e.g. Compose(Blur(...), CloudMask(...), GaussianNoise(...)))"
            )
        height, width = int(obs.values.shape[-2]), int(obs.values.shape[-1])
        sigma = _uniform_per_sample(self.sigma, obs.values.shape[0], generator, obs.values.device)
        transfer = _heat_transfer(height, width, sigma)

        def stage(v: Tensor, index: int | None) -> Tensor:
            spectrum = torch.fft.rfft2(v) * _pick(transfer, index).to(v.dtype)
            return torch.fft.irfft2(spectrum, s=(height, width))

        return obs.then(stage(obs.values, None), obs.mask, obs.noise_std, stage)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class GaussianNoise(ObservationOperator):
    """Additive Gaussian observation noise with known standard deviation.

    ``y = H(x) + sigma_b * eps`` with ``eps ~ N(0, I)`` at the observed entries (hidden
    entries stay 0). ``sigma_b = sigma``, or ``sigma_b ~ Uniform(lo, hi)`` per sample when a
    range is given. The noise standard deviation is reported in ``Observed.noise_std`` so
    that ``R = diag(sigma_b^2)`` (:meth:`Observed.observed_error_variance`) and the
    likelihood (:meth:`Observed.log_likelihood`) are available to inference. Noise added
    twice adds variances.

    Parameters
    ----------
    sigma:
        Noise standard deviation ``>= 0``, or a ``(lo, hi)`` range.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.observe import GaussianNoise
    >>> obs = GaussianNoise(sigma=0.1)(torch.zeros(1000, 3))
    >>> obs.error_variance.shape
    torch.Size([1000, 3])
    """

    def __init__(self, sigma: float | Sequence[float] = 0.1) -> None:
        super().__init__()
        self.sigma = _check_range(sigma, "sigma", low=0.0, high=float("inf"), high_open=True)

    def observation_error_variance(self) -> Tensor:
        """``sigma^2`` for a fixed ``sigma``: the diagonal entry of ``R``, shape ``()``.

        For a random ``sigma`` the variance differs per sample: read it from
        ``Observed.error_variance`` instead.
        """
        if self.sigma[0] != self.sigma[1]:
            raise ValueError(
                f"sigma={self.sigma} is random per sample; read Observed.error_variance instead"
            )
        return torch.tensor(self.sigma[0] ** 2)

    def observe(self, obs: Observed, generator: torch.Generator | None) -> Observed:
        values = obs.values
        sigma = _uniform_per_sample(self.sigma, values.shape[0], generator, values.device)
        sigma = sigma.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
        eps = _randn(tuple(values.shape), generator, values.device, values.dtype)
        noise = torch.where(obs.mask, sigma * eps, torch.zeros_like(eps))
        noise_std = torch.sqrt(obs.noise_std.square() + sigma.square().expand(values.shape))

        def stage(v: Tensor, index: int | None) -> Tensor:
            return v

        return obs.then(values + noise, obs.mask, noise_std, stage)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"
