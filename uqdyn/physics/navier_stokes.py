"""Two-dimensional incompressible Navier-Stokes in vorticity form, pseudo-spectral."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uqdyn.physics.dynamics import _GridDynamics, _stable_step_from_spectrum, positive_parameter

__all__ = ["NavierStokes"]


class NavierStokes(_GridDynamics):
    r"""Incompressible 2D Navier-Stokes for the vorticity ``w`` on a periodic square.

    .. math::

        \partial_t w + \mathbf{u} \cdot \nabla w = \nu \Delta w + f, \qquad
        \mathbf{u} = (\partial_y \psi, -\partial_x \psi), \quad -\Delta \psi = w

    solved pseudo-spectrally: derivatives and the Poisson inversion are exact in Fourier
    space, the product ``u . grad w`` is formed on the grid and truncated with the 2/3 rule.
    The forcing is that of the neural-operator benchmarks (Li et al. 2021),
    ``f(x, y) = A (sin(2 pi (x + y) / L) + cos(2 pi (x + y) / L))``. State shape
    ``(1, height, width)`` (the vorticity).

    Parameters
    ----------
    size : tuple of int
        ``(height, width)``; even sizes. Default ``(64, 64)``.
    length : float or tuple of float
        Domain length. Default ``1.0``.
    viscosity : float or Tensor, shape () or (batch,)
        ``nu > 0`` (stored through its logarithm). Default ``1e-3``.
    forcing_amplitude : float or Tensor, shape () or (batch,)
        ``A`` (unconstrained). Default ``0.1``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Li, Kovachki, Azizzadenesheli et al., "Fourier neural operator for parametric partial
    differential equations", ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import NavierStokes, simulate
    >>> system = NavierStokes(size=(32, 32))
    >>> state0 = system.initial_state(2, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 0.1, 3), step_size=0.01).shape
    torch.Size([2, 3, 1, 32, 32])
    """

    parameter_names = ("viscosity", "forcing_amplitude")
    component_names = ("w (vorticity)",)

    def __init__(
        self,
        size: tuple[int, int] = (64, 64),
        length: float | tuple[float, float] = 1.0,
        *,
        viscosity: float | Tensor = 1e-3,
        forcing_amplitude: float | Tensor = 0.1,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_grid(size, length)
        if self.size[0] % 2 or self.size[1] % 2:
            raise ValueError(f"size must be even for the spectral solver, got {self.size}")
        self.state_shape = (1, *self.size)
        self.raw_viscosity = self.log_parameter(viscosity, "viscosity", dtype=dtype)
        self.forcing_amplitude = self.physical_parameter(
            forcing_amplitude, "forcing_amplitude", dtype=dtype
        )

    viscosity = positive_parameter("Kinematic viscosity ``nu``, shape () or (batch,).")

    def _wavenumbers(self, like: Tensor) -> tuple[Tensor, Tensor]:
        height, width = self.size
        ly, lx = self.length
        ky = torch.fft.fftfreq(height, d=ly / height, device=like.device, dtype=like.dtype)
        kx = torch.fft.rfftfreq(width, d=lx / width, device=like.device, dtype=like.dtype)
        return 2 * math.pi * ky.reshape(-1, 1), 2 * math.pi * kx.reshape(1, -1)

    def forcing_field(self, like: Tensor) -> Tensor:
        """The forcing pattern ``sin(2 pi (x + y)/L) + cos(2 pi (x + y)/L)``, shape (height, width)."""
        y, x = self.coordinates(device=like.device, dtype=like.dtype)
        phase = (
            2 * math.pi * (x.reshape(1, -1) / self.length[1] + y.reshape(-1, 1) / self.length[0])
        )
        return torch.sin(phase) + torch.cos(phase)

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Vorticity tendency.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 1, height, width)

        Returns
        -------
        Tensor, shape (batch, 1, height, width)
        """
        height, width = self.size
        ky, kx = self._wavenumbers(state)
        k2 = kx * kx + ky * ky
        inverse_k2 = torch.where(k2 > 0, 1.0 / torch.where(k2 > 0, k2, 1.0), 0.0)
        dealias = (ky.abs() < (2.0 / 3.0) * ky.abs().max()) & (kx < (2.0 / 3.0) * kx.max())
        w_hat = torch.fft.rfft2(state)
        psi_hat = w_hat * inverse_k2
        shape = (height, width)
        u = torch.fft.irfft2(1j * ky * psi_hat, s=shape)
        v = torch.fft.irfft2(-1j * kx * psi_hat, s=shape)
        dw_dx = torch.fft.irfft2(1j * kx * w_hat, s=shape)
        dw_dy = torch.fft.irfft2(1j * ky * w_hat, s=shape)
        advection_hat = torch.fft.rfft2(u * dw_dx + v * dw_dy) * dealias
        viscosity = self.per_sample(self.viscosity, state)
        tendency_hat = -advection_hat - viscosity * k2 * w_hat
        forcing = self.per_sample(self.forcing_amplitude, state) * self.forcing_field(state)
        return torch.fft.irfft2(tendency_hat, s=shape) + forcing

    def stable_dt(self, method: str = "rk4") -> float:
        """Viscous step limit ``nu k_max^2``; the advective CFL limit depends on the flow.

        With velocities ``|u| <= U`` a further limit ``dt <~ 2.6 / (U k_max)`` applies;
        :func:`simulate` checks the solution for non-finite values.

        Returns
        -------
        float
        """
        ly, lx = self.length
        k_max2 = (math.pi * self.size[0] / ly) ** 2 + (math.pi * self.size[1] / lx) ** 2
        return _stable_step_from_spectrum(
            method, float(self.viscosity.detach().max()) * k_max2, 0.0
        )

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Gaussian random fields ``N(0, 7^{3/2} (-Delta + 49)^{-2.5})`` (Li et al. 2021).

        Zero mean; spectrum ``sqrt(2) 7^{3/2} (4 pi^2 |k|^2 + 49)^{-5/4}`` per mode on the
        unit square (``k`` in cycles per domain length).

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, 1, height, width)
        """
        batch = self._check_batch(batch)
        dtype = dtype or torch.get_default_dtype()
        height, width = self.size
        cy = torch.fft.fftfreq(height, d=1.0 / height, device=device, dtype=dtype).reshape(-1, 1)
        cx = torch.fft.fftfreq(width, d=1.0 / width, device=device, dtype=dtype).reshape(1, -1)
        amplitude = math.sqrt(2.0) * 7.0**1.5 * (4 * math.pi**2 * (cx**2 + cy**2) + 49.0) ** -1.25
        amplitude[0, 0] = 0.0
        shape = (batch, 1, height, width)
        real = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        imag = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        coefficients = torch.complex(real, imag) * amplitude * (height * width)
        return torch.fft.ifft2(coefficients).real
