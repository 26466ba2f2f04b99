"""CoDA: a hypernetwork decodes a low-dimensional context per environment into weights."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
from torch import Tensor, nn
from torch.func import functional_call

from uqdyn._checks import as_float, as_int

from .base import MultiEnvironmentModel, Tendency, _Adaptation, build_network, stacked_call
from .batch import EnvironmentBatch

__all__ = ["CoDA"]

_REGULARIZATIONS = ("l1", "l2")


class _Context(nn.Module):
    """One context vector ``c``, shape ``(context_dim,)``, started at zero."""

    def __init__(self, context_dim: int, like: Tensor) -> None:
        super().__init__()
        self.value = nn.Parameter(like.new_zeros(context_dim))


class CoDA(MultiEnvironmentModel):
    r"""CoDA (Kirchmeyer et al., ICML 2022): weights ``theta_e = theta + W c_e``.

    ``network()`` builds one vector field whose parameters, flattened, are the shared
    weights ``theta`` (``P`` numbers); the hypernetwork is the linear map
    ``W: R^d -> R^P`` and each environment has a context ``c_e in R^d`` (started at zero;
    ``W`` starts ``N(0, hyper_init_std^2)``). Environment ``e``'s field is the network
    evaluated with ``theta + W c_e`` (:func:`torch.func.functional_call`). The objective is

    .. math::

        \frac{1}{N}\sum_{b,t,i} (\hat X_{b,t,i} - X_{b,t,i})^2
        + \lambda_\xi \sum_{e \in \text{batch}} \|c_e\|_2^2 + \lambda_\Omega\,\Omega(W),

    with ``Omega(W) = sum |W_ij|`` (``regularization="l1"``) or ``sum W_ij^2`` (``"l2"``).
    A new environment (:meth:`adapt`) fits its context alone, from zero, with ``theta``
    and ``W`` frozen (bit for bit): ``d`` numbers per environment, and the rollout error
    plus ``lambda_xi ||c||^2`` is its objective.

    Parameters
    ----------
    network : callable () -> nn.Module
        Builds the vector field ``(batch, *state_shape) -> (batch, *state_shape)``.
    n_envs : int
        Training environments.
    state_shape : tuple of int
    context_dim : int
        ``d``. Default 2.
    regularization : {"l1", "l2"}
        ``Omega``. Default ``"l1"``.
    context_penalty, hyper_penalty : float
        ``lambda_xi`` and ``lambda_Omega`` (>= 0). Defaults ``1e-4`` and ``1e-6``.
    hyper_init_std : float
        Standard deviation of the initial ``W``. Default ``1e-2`` (> 0: with ``W = 0`` no
        gradient would reach the contexts).
    physics, method, step_size, noise_std, seed
        As for :class:`LEADS`.

    References
    ----------
    Kirchmeyer, Yin, Donà, Baskiotis, Rakotomamonjy, Gallinari, "Generalizing to New
    Physical Systems via Context-Informed Dynamics Model", ICML 2022.

    Examples
    --------
    >>> from uqdyn.models.hybrid import MLPAugmentation
    >>> model = CoDA(lambda: MLPAugmentation(2, hidden=8), n_envs=9, state_shape=(2,))
    >>> tuple(model.contexts.shape), tuple(model.hyper.shape)
    ((9, 2), (130, 2))
    """

    def __init__(
        self,
        network: Callable[[], nn.Module],
        n_envs: int,
        state_shape: tuple[int, ...],
        *,
        context_dim: int = 2,
        regularization: str = "l1",
        context_penalty: float = 1e-4,
        hyper_penalty: float = 1e-6,
        hyper_init_std: float = 1e-2,
        physics: nn.Module | None = None,
        method: str = "rk4",
        step_size: float | None = None,
        noise_std: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            state_shape, physics=physics, method=method, step_size=step_size, noise_std=noise_std
        )
        n_envs = as_int(n_envs, "n_envs", minimum=1)
        context_dim = as_int(context_dim, "context_dim", minimum=1)
        if regularization not in _REGULARIZATIONS:
            raise ValueError(
                f"regularization={regularization!r}; expected one of {_REGULARIZATIONS}"
            )
        self.regularization = regularization
        self.context_penalty = as_float(context_penalty, "context_penalty", nonnegative=True)
        self.hyper_penalty = as_float(hyper_penalty, "hyper_penalty", nonnegative=True)
        hyper_init_std = as_float(hyper_init_std, "hyper_init_std", positive=True)
        self.seed = as_int(seed, "seed", minimum=0)
        self.net = build_network(network, self.seed)
        self._names = [name for name, _ in self.net.named_parameters()]
        if not self._names:
            raise ValueError("network() built a module without parameters; nothing to decode")
        sizes = [p.numel() for _, p in self.net.named_parameters()]
        self._offsets = [0, *torch.tensor(sizes).cumsum(0).tolist()]
        like = next(self.net.parameters())
        generator = torch.Generator().manual_seed(self.seed + 1)
        hyper = torch.randn(sum(sizes), context_dim, generator=generator, dtype=torch.float64)
        self.hyper = nn.Parameter((hyper_init_std * hyper).to(like))
        self.contexts = nn.Parameter(like.new_zeros(n_envs, context_dim))

    @property
    def n_envs(self) -> int:
        return int(self.contexts.shape[0])

    @property
    def context_dim(self) -> int:
        """``d``."""
        return int(self.contexts.shape[1])

    def weights(self, context: Tensor) -> dict[str, Tensor]:
        """The network's parameters for ``context``: ``theta + W c``, by parameter name.

        Parameters
        ----------
        context : Tensor, shape (context_dim,) or (E, context_dim)

        Returns
        -------
        dict of str to Tensor
            Same names and shapes as ``net.named_parameters()`` (with a leading ``E`` axis
            for several contexts).
        """
        lead = context.shape[:-1]
        offsets = context @ self.hyper.T  # (*lead, P)
        out = {}
        for k, (name, theta) in enumerate(self.net.named_parameters()):
            piece = offsets[..., self._offsets[k] : self._offsets[k + 1]]
            out[name] = theta + piece.reshape(*lead, *theta.shape)
        return out

    def _field_for(self, context: Tensor) -> Tendency:
        weights = self.weights(context)
        return lambda x: functional_call(self.net, weights, (x,))

    def _tendency(self, env: int) -> Tendency:
        return self._field_for(self.contexts[env])

    def _batched_tendency(self, envs: list[int]) -> Tendency:
        params = self.weights(self.contexts[envs])
        return lambda x: stacked_call(self.net, params, x)

    def hyper_norm(self) -> Tensor:
        """``Omega(W)``: ``sum |W|`` (l1) or ``sum W^2`` (l2), shape ``()``."""
        return self.hyper.abs().sum() if self.regularization == "l1" else self.hyper.pow(2).sum()

    def penalty(self, batch: EnvironmentBatch) -> Tensor:
        """``lambda_xi sum_{e in batch} ||c_e||^2 + lambda_Omega Omega(W)``."""
        envs = torch.unique(batch.env)
        context_term = self.contexts[envs].pow(2).sum()
        return self.context_penalty * context_term + self.hyper_penalty * self.hyper_norm()

    def _adaptation(self, seed: int) -> _Adaptation:
        part = _Context(self.context_dim, self.contexts.detach())

        def tendency(p: nn.Module, x: Tensor) -> Tensor:
            return self._field_for(cast(Tensor, p.value))(x)

        def penalty(p: nn.Module, batch: EnvironmentBatch) -> Tensor:
            return self.context_penalty * cast(Tensor, p.value).pow(2).sum()

        return _Adaptation(self, part, tendency, penalty)

    def _commit(self, part: nn.Module) -> None:
        value = cast(Tensor, part.value).detach().to(self.contexts)
        self.contexts = nn.Parameter(torch.cat([self.contexts.detach(), value[None]]))
