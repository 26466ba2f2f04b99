"""Two-species reaction-diffusion systems on a periodic grid: FitzHugh-Nagumo and Gray-Scott."""

from __future__ import annotations

import torch
from torch import Tensor

from uqdyn.physics.dynamics import _GridDynamics, _stable_step_from_spectrum, positive_parameter
from uqdyn.physics.grid import laplacian

__all__ = ["FitzHughNagumo", "GrayScott"]


class FitzHughNagumo(_GridDynamics):
    r"""FitzHugh-Nagumo reaction-diffusion, as in APHYNITY and LEADS.

    .. math::

        \partial_t u = a \Delta u + u - u^3 - k - v, \qquad
        \partial_t v = b \Delta v + u - v

    on a doubly periodic grid (five-point Laplacian). State shape ``(2, height, width)``
    with channels ``(u, v)``.

    Parameters
    ----------
    size : tuple of int
        ``(height, width)``. Default ``(32, 32)``.
    length : float or tuple of float
        Domain length (the domain ``[-1, 1]^2`` has length 2). Default ``2.0``.
    a, b : float or Tensor, shape () or (batch,)
        Diffusion coefficients of ``u`` and ``v`` (> 0, stored through their logarithm).
        Defaults ``1e-3`` and ``5e-3``.
    k : float or Tensor, shape () or (batch,)
        Excitability threshold (unconstrained). Default ``5e-3``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Yin, Le Guen, Dona et al., "Augmenting physical models with deep networks for complex
    dynamics forecasting" (APHYNITY), ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import FitzHughNagumo, simulate
    >>> system = FitzHughNagumo(size=(16, 16))
    >>> state0 = system.initial_state(2, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 0.5, 6)).shape
    torch.Size([2, 6, 2, 16, 16])
    """

    parameter_names = ("a", "b", "k")
    component_names = ("u (activator)", "v (inhibitor)")

    def __init__(
        self,
        size: tuple[int, int] = (32, 32),
        length: float | tuple[float, float] = 2.0,
        *,
        a: float | Tensor = 1e-3,
        b: float | Tensor = 5e-3,
        k: float | Tensor = 5e-3,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_grid(size, length)
        self.state_shape = (2, *self.size)
        self.raw_a = self.log_parameter(a, "a", dtype=dtype)
        self.raw_b = self.log_parameter(b, "b", dtype=dtype)
        self.k = self.physical_parameter(k, "k", dtype=dtype)

    a = positive_parameter("Diffusion coefficient of ``u``, shape () or (batch,).")

    b = positive_parameter("Diffusion coefficient of ``v``, shape () or (batch,).")

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of ``(u, v)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 2, height, width)

        Returns
        -------
        Tensor, shape (batch, 2, height, width)
        """
        u, v = state[:, 0:1], state[:, 1:2]
        lap = laplacian(state, self.spacing)
        du = (
            self.per_sample(self.a, state) * lap[:, 0:1]
            + u
            - u**3
            - self.per_sample(self.k, state)
            - v
        )
        dv = self.per_sample(self.b, state) * lap[:, 1:2] + u - v
        return torch.cat([du, dv], dim=1)

    def stable_dt(self, method: str = "rk4") -> float:
        """Largest stable fixed step: diffusion limit plus the reaction Jacobian for ``|u| <= 1``.

        Decay rates up to ``4 max(a, b) (1/dx^2 + 1/dy^2) + 4`` and oscillation up to 1.

        Returns
        -------
        float
        """
        dy, dx = self.spacing
        diffusion = max(float(self.a.detach().max()), float(self.b.detach().max()))
        decay = 4.0 * diffusion * (1.0 / dx**2 + 1.0 / dy**2) + 4.0
        return _stable_step_from_spectrum(method, decay, 1.0)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Independent uniform ``[0, 1]`` values for ``u`` and ``v`` at every grid point.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, 2, height, width)
        """
        batch = self._check_batch(batch)
        return torch.rand(batch, *self.state_shape, generator=generator, device=device, dtype=dtype)


class GrayScott(_GridDynamics):
    r"""Gray-Scott reaction-diffusion.

    .. math::

        \partial_t u = D_u \Delta u - u v^2 + F (1 - u), \qquad
        \partial_t v = D_v \Delta v + u v^2 - (F + k) v

    on a doubly periodic grid (five-point Laplacian). State shape ``(2, height, width)``
    with channels ``(u, v)``.

    Parameters
    ----------
    size : tuple of int
        ``(height, width)``. Default ``(64, 64)``.
    length : float or tuple of float
        Domain length. Default ``2.5`` (Pearson 1993).
    diffusion_u, diffusion_v : float or Tensor, shape () or (batch,)
        ``D_u, D_v > 0`` (stored through their logarithm). Defaults ``2e-5`` and ``1e-5``.
    feed, kill : float or Tensor, shape () or (batch,)
        Feed rate ``F > 0`` and kill rate ``k > 0``. Defaults ``0.04`` and ``0.06``.
    dtype : torch.dtype, optional
        Dtype of the physical parameters; numbers are converted straight to it (positive
        ones take their logarithm in it). Default: a tensor argument's own dtype, else
        :func:`torch.get_default_dtype`.

    References
    ----------
    Pearson, "Complex patterns in a simple system", Science 261, 1993.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import GrayScott, simulate
    >>> system = GrayScott(size=(16, 16))
    >>> state0 = system.initial_state(1, generator=torch.Generator().manual_seed(0))
    >>> simulate(system, state0, torch.linspace(0.0, 10.0, 3), step_size=0.5).shape
    torch.Size([1, 3, 2, 16, 16])
    """

    parameter_names = ("diffusion_u", "diffusion_v", "feed", "kill")
    component_names = ("u (substrate)", "v (catalyst)")

    def __init__(
        self,
        size: tuple[int, int] = (64, 64),
        length: float | tuple[float, float] = 2.5,
        *,
        diffusion_u: float | Tensor = 2e-5,
        diffusion_v: float | Tensor = 1e-5,
        feed: float | Tensor = 0.04,
        kill: float | Tensor = 0.06,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self._setup_grid(size, length)
        self.state_shape = (2, *self.size)
        self.raw_diffusion_u = self.log_parameter(diffusion_u, "diffusion_u", dtype=dtype)
        self.raw_diffusion_v = self.log_parameter(diffusion_v, "diffusion_v", dtype=dtype)
        self.raw_feed = self.log_parameter(feed, "feed", dtype=dtype)
        self.raw_kill = self.log_parameter(kill, "kill", dtype=dtype)

    diffusion_u = positive_parameter("``D_u``, shape () or (batch,).")

    diffusion_v = positive_parameter("``D_v``, shape () or (batch,).")

    feed = positive_parameter("Feed rate ``F``, shape () or (batch,).")

    kill = positive_parameter("Kill rate ``k``, shape () or (batch,).")

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Tendencies of ``(u, v)``.

        Parameters
        ----------
        t : Tensor, shape ()
        state : Tensor, shape (batch, 2, height, width)

        Returns
        -------
        Tensor, shape (batch, 2, height, width)
        """
        u, v = state[:, 0:1], state[:, 1:2]
        lap = laplacian(state, self.spacing)
        feed = self.per_sample(self.feed, state)
        uvv = u * v * v
        du = self.per_sample(self.diffusion_u, state) * lap[:, 0:1] - uvv + feed * (1.0 - u)
        dv = (
            self.per_sample(self.diffusion_v, state) * lap[:, 1:2]
            + uvv
            - (feed + self.per_sample(self.kill, state)) * v
        )
        return torch.cat([du, dv], dim=1)

    def stable_dt(self, method: str = "rk4") -> float:
        """Largest stable fixed step for ``0 <= u, v <= 1``.

        Decay rates up to ``4 max(D_u, D_v) (1/dx^2 + 1/dy^2) + 3 + F + k`` (Gershgorin
        bound of the reaction Jacobian).

        Returns
        -------
        float
        """
        dy, dx = self.spacing
        diffusion = max(
            float(self.diffusion_u.detach().max()), float(self.diffusion_v.detach().max())
        )
        reaction = 3.0 + float(self.feed.detach().max()) + float(self.kill.detach().max())
        decay = 4.0 * diffusion * (1.0 / dx**2 + 1.0 / dy**2) + reaction
        return _stable_step_from_spectrum(method, decay, 0.0)

    def initial_state(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """The trivial state ``u = 1, v = 0`` seeded with 1 to 3 square patches.

        Each patch (side ``height // 8`` by ``width // 8`` cells, uniformly placed, periodic)
        sets ``u = 0.5, v = 0.25`` as in Pearson (1993); then 1% uniform noise is added.

        Parameters
        ----------
        batch : int
        generator : torch.Generator, optional
        device, dtype : optional

        Returns
        -------
        Tensor, shape (batch, 2, height, width)
        """
        batch = self._check_batch(batch)
        dtype = dtype or torch.get_default_dtype()
        height, width = self.size
        side_y, side_x = max(1, height // 8), max(1, width // 8)
        rows = torch.arange(height, device=device).reshape(1, 1, height, 1)
        cols = torch.arange(width, device=device).reshape(1, 1, 1, width)
        patches = 3
        top = torch.randint(0, height, (batch, patches, 1, 1), generator=generator, device=device)
        left = torch.randint(0, width, (batch, patches, 1, 1), generator=generator, device=device)
        count = torch.randint(1, patches + 1, (batch, 1, 1, 1), generator=generator, device=device)
        active = torch.arange(patches, device=device).reshape(1, patches, 1, 1) < count
        inside = (torch.remainder(rows - top, height) < side_y) & (
            torch.remainder(cols - left, width) < side_x
        )
        seeded = (inside & active).any(dim=1, keepdim=True).to(dtype)
        u = 1.0 - 0.5 * seeded
        v = 0.25 * seeded
        noise = torch.rand(batch, 2, height, width, generator=generator, device=device, dtype=dtype)
        return torch.cat([u, v], dim=1) + 0.01 * noise
