"""The one-dimensional Kuramoto-Sivashinsky equation on a periodic domain."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from uqdyn._checks import as_float, as_int
from uqdyn.physics.dynamics import Dynamics, _stable_step_from_spectrum

__all__ = ["KuramotoSivashinsky"]


class KuramotoSivashinsky(Dynamics):
    r"""Kuramoto-Sivashinsky ``u_t = -u u_x - u_xx - u_xxxx`` on ``[0, L)``, periodic.

    Solved pseudo-spectrally on ``n`` equispaced points ``x_j = j L / n``: derivatives are
    exact in Fourier space (:func:`torch.fft.rfft`), the nonlinear term is formed in
    conservative form ``-(u^2)_x / 2`` on the grid and truncated with the 2/3 rule
    (wavenumber indices ``>= n / 3`` are removed), and the linear part ``k^2 - k^4`` acts on
    every resolved wavenumber ``k = 2 pi m / L``, ``m = 0 .. n/2``. The spatial mean of
    ``u`` (the ``k = 0`` mode) is conserved exactly. State shape ``(n,)``; the state batch
    is ``(batch, n)``.

    The system is chaotic for ``L`` above about 13 (``L = 22`` and ``L = 32 pi`` are the
    usual benchmarks) and **stiff**: the fourth-order term gives eigenvalues down to
    ``k_max^2 - k_max^4`` with ``k_max = pi n / L``, so explicit steps must satisfy
    ``dt (k_max^4 - k_max^2) <= 2.6`` for rk4 (see :meth:`stable_dt`). That is about
    ``3.8e-4`` for ``L = 22, n = 64`` and ``1.1e-2`` for ``L = 32 pi, n = 128``.

    This system has no learnable parameters: ``L`` and ``n`` fix the discretisation.

    Parameters
    ----------
    length : float
        Domain length ``L > 0``. Default ``22.0``.
    n : int
        Number of grid points, even and ``>= 8``. Default ``64``.

    References
    ----------
    Kassam and Trefethen, "Fourth-order time-stepping for stiff PDEs", SIAM J. Sci. Comput.
    26, 2005. Cvitanovic, Davidchack and Siminos, "On the state space geometry of the
    Kuramoto-Sivashinsky flow in a periodic domain", SIAM J. Appl. Dyn. Syst. 9, 2010.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import KuramotoSivashinsky, simulate
    >>> system = KuramotoSivashinsky(length=32 * 3.141592653589793, n=128)
    >>> state0 = system.initial_state(2, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 1.0, 101)).shape
    torch.Size([2, 101, 128])
    """

    def __init__(self, length: float = 22.0, n: int = 64) -> None:
        super().__init__()
        self.length = as_float(length, "length", positive=True)
        self.n = as_int(n, "n", minimum=8)
        if self.n % 2:
            raise ValueError(f"n={n!r}; expected an even int >= 8")
        self.state_shape = (self.n,)
        self.spacing = self.length / self.n

    def describe_component(self, index: int) -> str:
        """``"u[index]"`` (the value at grid point ``index``)."""
        return f"u[{index}]"

    def coordinates(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Grid points ``x_j = j L / n``, shape ``(n,)``."""
        dtype = dtype or torch.get_default_dtype()
        return torch.arange(self.n, device=device, dtype=dtype) * self.spacing

    def wavenumbers(
        self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Wavenumbers ``k_m = 2 pi m / L`` of the rfft modes ``m = 0 .. n/2``, shape ``(n/2 + 1,)``."""
        dtype = dtype or torch.get_default_dtype()
        return torch.arange(self.n // 2 + 1, device=device, dtype=dtype) * (
            2.0 * math.pi / self.length
        )

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendency ``-u u_x - u_xx - u_xxxx`` at the grid points.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, n)

        Returns
        -------
        Tensor, shape (batch, n)
        """
        k = self.wavenumbers(device=state.device, dtype=state.dtype)
        keep = torch.arange(k.shape[0], device=state.device) < self.n / 3.0
        u_hat = torch.fft.rfft(state, dim=-1)
        k2 = k * k
        linear = (k2 - k2 * k2) * u_hat
        nonlinear = (-0.5j * k) * torch.fft.rfft(state * state, dim=-1) * keep
        return torch.fft.irfft(linear + nonlinear, n=self.n, dim=-1)

    def stable_dt(self, method: str = "rk4") -> float:
        r"""Explicit stability limit set by the fourth-order term.

        The linear part has real eigenvalues ``k^2 - k^4``, most negative at
        ``k_max = pi n / L``; the step must put ``dt (k_max^4 - k_max^2)`` inside the
        method's stability region: ``<= 2.6`` for rk4 (the half-disc that also leaves room
        for the advection term's imaginary eigenvalues of moderate amplitude), ``<= 2`` for
        forward Euler (and the 2nd/3rd-order methods, checked with Euler's region). Large
        amplitudes ``|u|`` shrink the limit further (advection adds ``i k |u|``).

        Returns
        -------
        float
        """
        k_max = math.pi * self.n / self.length
        decay = k_max**4 - k_max**2
        return _stable_step_from_spectrum(method, max(decay, 0.0), 0.0)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Smooth zero-mean fields: ``sum_{m=1}^{4} a_m cos(2 pi m x / L + phi_m)``.

        ``a_m ~ Normal(0, 1/2)`` (standard deviation ``1/2``) and ``phi_m ~ Uniform(0, 2 pi)``.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, n)
        """
        batch = self._check_batch(batch)
        dtype = dtype or torch.get_default_dtype()
        modes = 4
        amplitude = 0.5 * torch.randn(
            batch, modes, 1, generator=generator, device=device, dtype=dtype
        )
        phase = (2.0 * math.pi) * torch.rand(
            batch, modes, 1, generator=generator, device=device, dtype=dtype
        )
        m = torch.arange(1, modes + 1, device=device, dtype=dtype).reshape(1, modes, 1)
        x = self.coordinates(device=device, dtype=dtype).reshape(1, 1, self.n)
        return (amplitude * torch.cos((2.0 * math.pi / self.length) * m * x + phase)).sum(dim=1)

    def extra_repr(self) -> str:
        return f"length={self.length:.6g}, n={self.n}"
