"""Neural ODE process (Norcliffe et al., 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint, odeint_adjoint

from uqdyn._checks import as_float
from uqdyn.physics import Dynamics

from ._base import _LatentNP, _positive_int
from .latent import _LatentEncoder

__all__ = ["NeuralODEProcess", "LatentODE"]


class LatentODE(Dynamics):
    r"""Latent dynamics of a neural ODE process, optionally with a physical model inside.

    The state is ``[l, d]`` with ``l`` the latent position (``latent_dim``) and ``d`` the
    latent control (``control_dim``), which stays constant:

    .. math:: \dot l = f_\theta(l, d, t) + P(t, l_{1:p}) \oplus 0, \qquad \dot d = 0,

    where ``P`` is an optional :class:`~uqdyn.physics.Dynamics` with state shape ``(p,)``
    acting on the first ``p`` latent components (its parameters are learned with the
    network, e.g. an unknown pendulum frequency) and ``f`` a tanh MLP.

    Parameters
    ----------
    latent_dim, control_dim : int
        Sizes of ``l`` and ``d``.
    width : int
        Hidden width of ``f``.
    physics : Dynamics, optional
        Physical model on the first ``p <= latent_dim`` latent components.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.physics import DampedPendulum
    >>> ode = LatentODE(4, 2, 16, physics=DampedPendulum(omega0=1.0, alpha=0.1))
    >>> ode(torch.tensor(0.0), torch.zeros(3, 6)).shape
    torch.Size([3, 6])
    """

    def __init__(
        self, latent_dim: int, control_dim: int, width: int, physics: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.latent_dim = _positive_int(latent_dim, "latent_dim")
        self.control_dim = _positive_int(control_dim, "control_dim", minimum=0)
        self.state_shape = (self.latent_dim + self.control_dim,)
        self.net = nn.Sequential(
            nn.Linear(self.latent_dim + self.control_dim + 1, width),
            nn.Tanh(),
            nn.Linear(width, width),
            nn.Tanh(),
            nn.Linear(width, self.latent_dim),
        )
        self.physics_dim = 0
        if physics is not None:
            if not isinstance(physics, nn.Module):
                raise TypeError(
                    f"physics is a {type(physics).__name__}; expected a uqdyn.physics.Dynamics"
                )
            shape = tuple(getattr(physics, "state_shape", ()))
            if len(shape) != 1 or not 1 <= shape[0] <= self.latent_dim:
                raise ValueError(
                    f"physics has state_shape {shape}; expected (p,) with 1 <= p <= "
                    f"latent_dim={self.latent_dim}"
                )
            self.physics_dim = shape[0]
        self.physics = physics

    def forward(self, t: Tensor, state: Tensor) -> Tensor:
        """Time derivative of ``state (N, latent_dim + control_dim)`` at scalar time ``t``."""
        latent = state[:, : self.latent_dim]
        time = t.to(state.dtype).reshape(1, 1).expand(state.shape[0], 1)
        d_latent = self.net(torch.cat([state, time], dim=-1))
        if self.physics is not None:
            p = self.physics_dim
            d_phys = self.physics(t, latent[:, :p])
            d_latent = torch.cat([d_latent[:, :p] + d_phys, d_latent[:, p:]], dim=-1)
        return torch.cat([d_latent, torch.zeros_like(state[:, self.latent_dim :])], dim=-1)


class NeuralODEProcess(_LatentNP):
    r"""Neural ODE process: a latent ODE whose initial state and control come from the context.

    The context ``{(t_i, y_i)}`` is encoded (mean of ``h([t_i, y_i])``) into
    ``q(L_0, D | C) = N(mu, diag sigma^2)`` over the latent initial state ``L_0`` (at time
    ``t0``) and the latent control ``D``. A draw is integrated with torchdiffeq through the
    :class:`LatentODE` ``dL/dt = f(L, D, t)`` (optionally with a physical model inside) over
    the sorted union of the target times of the batch (backwards for times before ``t0``),
    and each target is decoded from ``[L(t), t]`` to a Gaussian with standard deviation
    bounded below by ``min_std``. The predictive is the equal-weight mixture over ``K``
    latent draws; :meth:`loss` is the negative ELBO per target with ``q(. | C)`` as prior.

    Parameters
    ----------
    y_dim : int
        Number of observed channels (inputs are times: ``x_dim = 1``).
    latent_dim, control_dim : int
        Sizes of ``L`` and ``D``. Default 10 each.
    width : int
        Hidden width of the encoder, the ODE network and the decoder. Default 50.
    t0 : float
        Time of the latent initial state. Default 0.
    physics : Dynamics, optional
        A :mod:`uqdyn.physics` model acting on the first latent components (see
        :class:`LatentODE`); its parameters are learned.
    method, rtol, atol, options :
        Passed to :func:`torchdiffeq.odeint`. Default ``"dopri5"``, 1e-3, 1e-4.
    adjoint : bool
        Back-propagate with :func:`torchdiffeq.odeint_adjoint` (memory independent of the
        number of solver steps). Default ``False``.
    encoder_depth, decoder_depth : int
        Linear layers of the point encoder and the decoder. Default 2 and 3.
    num_samples, num_train_samples, kl_warmup, min_std, min_context :
        As in :class:`LatentNP`; a KL warm-up (e.g. a third of the training steps) keeps a
        briefly trained NDP from ignoring its latent state.

    References
    ----------
    A. Norcliffe, C. Bodnar, B. Day, J. Moss, P. Liò, "Neural ODE Processes", ICLR 2021.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import NeuralODEProcess
    >>> model = NeuralODEProcess(y_dim=1, latent_dim=4, control_dim=2, width=16, num_samples=3)
    >>> t = torch.linspace(0, 1, 8).reshape(1, 8, 1).expand(2, 8, 1)
    >>> model(t[:, :3], torch.sin(t[:, :3]), t).loc.shape
    torch.Size([3, 2, 8, 1])
    """

    def __init__(
        self,
        y_dim: int,
        *,
        latent_dim: int = 10,
        control_dim: int = 10,
        width: int = 50,
        t0: float = 0.0,
        physics: nn.Module | None = None,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        options: dict[str, Any] | None = None,
        adjoint: bool = False,
        encoder_depth: int = 2,
        decoder_depth: int = 3,
        num_samples: int = 16,
        num_train_samples: int = 1,
        kl_warmup: int = 0,
        min_std: float = 0.01,
        min_context: int = 1,
    ) -> None:
        super().__init__(1, y_dim, min_std, min_context, num_samples, num_train_samples, kl_warmup)
        width = _positive_int(width, "width")
        self.t0 = as_float(t0, "t0")
        self.ode = LatentODE(latent_dim, control_dim, width, physics)
        self.latent_dim, self.control_dim = self.ode.latent_dim, self.ode.control_dim
        self.encoder = _LatentEncoder(
            1 + self.y_dim,
            width,
            self.latent_dim + self.control_dim,
            _positive_int(encoder_depth, "encoder_depth"),
        )
        self._build_decoder(self.latent_dim + 1, width, decoder_depth)
        self.method = method
        self.rtol, self.atol = float(rtol), float(atol)
        self.options = dict(options or {})
        self.adjoint = bool(adjoint)

    def _latent(self, x: Tensor, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x, y, mask)

    def _solve(self, state0: Tensor, times: Tensor) -> Tensor:
        """States ``(T, N, S)`` at the increasing ``times (T,)``, from ``state0`` at ``t0``."""
        t0 = torch.full((1,), self.t0, dtype=times.dtype, device=times.device)
        integrate = odeint_adjoint if self.adjoint else odeint
        pieces = []
        before, after = times[times < self.t0], times[times > self.t0]
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.method}
        if self.options:
            kwargs["options"] = self.options
        if before.numel():
            grid = torch.cat([t0, before.flip(0)])
            pieces.append(integrate(self.ode, state0, grid, **kwargs)[1:].flip(0))
        if bool((times == self.t0).any()):
            pieces.append(state0.unsqueeze(0))
        if after.numel():
            grid = torch.cat([t0, after])
            pieces.append(integrate(self.ode, state0, grid, **kwargs)[1:])
        return torch.cat(pieces, dim=0)

    def _decode(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor, z: Tensor
    ) -> tuple[Tensor, Tensor]:
        k, batch, size = z.shape
        times = xt[..., 0]  # (B, Nt)
        union = torch.unique(times)  # sorted
        states = self._solve(z.reshape(k * batch, size), union)  # (U, K*B, S)
        states = states[..., : self.latent_dim].reshape(union.numel(), k, batch, -1)
        states = states.permute(1, 2, 0, 3)  # (K, B, U, L)
        index = torch.searchsorted(union, times.contiguous())  # (B, Nt)
        index = index[None, :, :, None].expand(k, -1, -1, self.latent_dim)
        latent_t = states.gather(2, index)  # (K, B, Nt, L)
        features = torch.cat([latent_t, xt.unsqueeze(0).expand(k, -1, -1, -1)], dim=-1)
        return self._gaussian_head(features)
