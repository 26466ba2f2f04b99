"""Convolutional conditional neural processes on the grid (Gordon et al., 2020).

:class:`ConvCNP` maps partially observed gridded fields to a Gaussian predictive field;
:class:`ConvCNPEnsemble` is a deep ensemble of independently initialised ConvCNPs;
:class:`GridTask` is their training batch. The off-the-grid model for point sets is
:class:`~uqdyn.models.neural_process.OffGridConvCNP`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_int
from uqdyn.predictive import GaussianMixture, Normal

from ._base import _check_min_std, _positive_int
from ._conv import (
    ARCHITECTURES,
    PADDINGS,
    _check_choice,
    _check_positive_float,
    _ConvStack,
    _GridSetConv,
    _seeded,
)
from ._modules import _bounded_scale

__all__ = ["GridTask", "ConvCNP", "ConvCNPEnsemble"]

_LOG_SQRT_2PI = 0.9189385332046727


@dataclass(frozen=True, eq=False)
class GridTask:
    """A batch of gridded context/target fields for :class:`ConvCNP`.

    ``NaN`` marks a value that was not observed, as does ``False`` in a mask; a mask may be
    ``None`` (every finite value observed) or shared by the channels (``(B, H, W)``).

    Attributes
    ----------
    y_context : Tensor, shape (B, C_in, H, W)
        Observed context fields (e.g. past frames as channels).
    mask_context : bool Tensor, shape (B, C_in, H, W) or (B, H, W), or None
        ``True`` where the context is observed.
    y_target : Tensor, shape (B, C_out, H, W)
        Fields to predict (e.g. future frames, or the full field of an inverse problem).
    mask_target : bool Tensor, shape (B, C_out, H, W) or (B, H, W), or None
        ``True`` where the target enters the loss.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import GridTask
    >>> task = GridTask(torch.randn(2, 3, 8, 8), None, torch.randn(2, 1, 8, 8), None)
    >>> task.batch_size
    2
    """

    y_context: Tensor
    mask_context: Tensor | None
    y_target: Tensor
    mask_target: Tensor | None

    @property
    def batch_size(self) -> int:
        """Number of tasks ``B``."""
        return int(self.y_context.shape[0])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GridTask:
        """Move to ``device``; cast the floating tensors (not the masks) to ``dtype``."""
        moved: dict[str, Tensor | None] = {}
        for f in fields(self):
            t = getattr(self, f.name)
            if t is not None:
                t = t.to(device=device, dtype=dtype if t.is_floating_point() else None)
            moved[f.name] = t
        return GridTask(**moved)  # type: ignore[arg-type]


def _check_field(value: Any, name: str, channels: int, dtype: torch.dtype) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(
            f"{name} is a {type(value).__name__}; expected a torch.Tensor (batch, channels, "
            "height, width)"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} has dtype {value.dtype}; expected a floating dtype")
    if value.dim() != 4 or value.shape[1] != channels:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}; expected (batch, {channels}, height, width)"
        )
    if value.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {value.dtype} but the model parameters are {dtype}; convert the "
            f"inputs or the model (e.g. model.to({value.dtype}))"
        )
    return value


def _observed(values: Tensor, mask: Any, name: str, mask_name: str) -> tuple[Tensor, Tensor]:
    """``(values with unobserved entries zeroed, observed mask)``, both ``values.shape``.

    An entry is observed where ``mask`` (``None``: everywhere) is ``True`` and the value is not
    NaN; an infinite observed value is an error.
    """
    shape = tuple(values.shape)
    if mask is None:
        keep = torch.ones(shape, dtype=torch.bool, device=values.device)
    else:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise TypeError(
                f"{mask_name} is {getattr(mask, 'dtype', type(mask).__name__)}; expected a bool "
                f"tensor of shape {shape} or {(shape[0], *shape[2:])}"
            )
        if tuple(mask.shape) == (shape[0], *shape[2:]):
            mask = mask.unsqueeze(1)
        elif tuple(mask.shape) != shape:
            raise ValueError(
                f"{mask_name} has shape {tuple(mask.shape)}; expected {shape} or "
                f"{(shape[0], *shape[2:])} (shared by the channels)"
            )
        keep = mask.expand(shape).to(values.device)
    keep = keep & ~torch.isnan(values)
    if bool(torch.isinf(values[keep]).any()):
        raise ValueError(
            f"{name} has infinite values at observed entries; expected finite values where "
            f"{mask_name} is True (NaN marks an unobserved value)"
        )
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.where(keep, values, zero), keep


class ConvCNP(nn.Module):
    r"""Convolutional conditional neural process on the grid (Gordon et al., 2020).

    The context fields ``y (B, C_in, H, W)`` with observation mask ``m`` (``False`` or NaN:
    not observed; unobserved values are set to zero before use, so they never change the
    output) are encoded per channel by a set convolution onto the grid: with ``G_c`` a
    normalised Gaussian kernel of learnable length scale ``l_c``,

    .. math::

        d_c = G_c * m_c \quad \text{(density)}, \qquad
        h_c = \frac{G_c * (m_c\, y_c)}{d_c + \epsilon} \quad \text{(data)}.

    The ``2 C_in`` channels ``[d, h]`` go through a translation-equivariant CNN (no position
    input, so shifting the context shifts the prediction) and a pointwise Gaussian head:

    .. math:: p(y^*_{o,i,j} \mid \text{context}) = \mathcal N(\mu_{o,i,j}, \sigma_{o,i,j}^2),
       \quad \sigma = \sigma_{\min} + (1 - \sigma_{\min})\,\mathrm{softplus}(\rho).

    The density channel tells the network where data are missing (land, gaps, sparse
    stations), so its uncertainty grows away from observations. A fully unobserved context is
    allowed: every channel is zero and the answer is the learned unconditional field.

    Parameters
    ----------
    in_channels : int
        Context channels ``C_in`` (e.g. number of past frames times variables).
    out_channels : int, optional
        Predicted channels ``C_out`` (e.g. number of lead frames); default ``in_channels``.
    width : int
        Channels of the CNN. Default 64.
    depth : int
        Convolution layers (``"cnn"``, ``"resnet"``) or resolution levels (``"unet"``).
        Default 4.
    kernel_size : int
        Odd convolution size. Default 5. The receptive field of ``"cnn"``/``"resnet"`` is
        ``depth * (kernel_size - 1) + 1`` grid points plus the set convolution's reach.
    architecture : {"resnet", "cnn", "unet"}
        Residual CNN (default), plain CNN, or U-Net (``H`` and ``W`` divisible by
        ``2**depth``; equivariant to shifts by multiples of ``2**depth``).
    padding : {"circular", "zeros"}
        ``"circular"`` for periodic fields (exact equivariance to circular shifts), ``"zeros"``
        otherwise. Default ``"circular"``.
    init_lengthscale : float
        Initial set-convolution length scale in grid points. Default 1.0.
    min_std : float
        Lower bound of the predictive standard deviation. Default 0.01.
    seed : int, optional
        When given, the initial weights depend only on it (torch's global RNG is left as it
        was).

    References
    ----------
    J. Gordon, W. P. Bruinsma, A. Y. K. Foong, J. Requeima, Y. Dubois, R. E. Turner,
    "Convolutional Conditional Neural Processes", ICLR 2020.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import ConvCNP
    >>> model = ConvCNP(3, 2, width=16, depth=2, seed=0)
    >>> y = torch.randn(4, 3, 16, 16)
    >>> mask = torch.rand(4, 16, 16) < 0.3          # observed pixels, shared by the channels
    >>> model(y, mask_context=mask).batch_shape
    torch.Size([4, 2, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        width: int = 64,
        depth: int = 4,
        kernel_size: int = 5,
        architecture: str = "resnet",
        padding: str = "circular",
        init_lengthscale: float = 1.0,
        min_std: float = 0.01,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = (
            self.in_channels
            if out_channels is None
            else _positive_int(out_channels, "out_channels")
        )
        width = _positive_int(width, "width")
        depth = _positive_int(depth, "depth")
        kernel_size = _positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size}; expected an odd int")
        self.architecture = _check_choice(architecture, "architecture", ARCHITECTURES)
        self.padding = _check_choice(padding, "padding", PADDINGS)
        init_lengthscale = _check_positive_float(init_lengthscale, "init_lengthscale")
        self.min_std = _check_min_std(min_std)
        with _seeded(seed):
            self.setconv = _GridSetConv(self.in_channels, 2, init_lengthscale, self.padding)
            self.cnn = _ConvStack(
                2, 2 * self.in_channels, width, depth, kernel_size, self.architecture, padding
            )
            self.head = nn.Conv2d(width, 2 * self.out_channels, 1)

    def _param_dtype(self) -> torch.dtype:
        return self.head.weight.dtype

    def _encode(self, y_context: Any, mask_context: Any) -> tuple[Tensor, Tensor]:
        """Validated ``(values zeroed where unobserved, observed mask)``, ``(B, C_in, H, W)``."""
        y = _check_field(y_context, "y_context", self.in_channels, self._param_dtype())
        multiple = self.cnn.multiple
        if y.shape[-2] % multiple or y.shape[-1] % multiple:
            raise ValueError(
                f"y_context has shape {tuple(y.shape)}; the U-Net with depth {self.cnn.depth} "
                f"needs height and width divisible by {multiple}"
            )
        return _observed(y, mask_context, "y_context", "mask_context")

    def _params(self, y: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        features = self.cnn(self.setconv(y, mask))
        loc, raw = self.head(features).split(self.out_channels, dim=1)
        return loc, _bounded_scale(raw, self.min_std)

    def forward(self, y_context: Tensor, *, mask_context: Tensor | None = None) -> Normal:
        """Predictive ``Normal`` over the target fields.

        Parameters
        ----------
        y_context : Tensor, shape (B, C_in, H, W)
            Context fields; NaN entries count as unobserved.
        mask_context : bool Tensor, shape (B, C_in, H, W) or (B, H, W), optional
            ``True`` where observed (default: wherever ``y_context`` is not NaN).

        Returns
        -------
        Normal
            ``loc`` and ``scale`` of shape ``(B, C_out, H, W)``.
        """
        y, mask = self._encode(y_context, mask_context)
        return Normal(*self._params(y, mask))

    def predict(self, task: GridTask) -> Normal:
        """Predictive at the grid of ``task``: ``self(task.y_context, mask_context=...)``."""
        return self(task.y_context, mask_context=task.mask_context)

    def predict_batch(self, task: GridTask) -> tuple[Normal, Tensor, Tensor]:
        """``(predict(task), y_target, mask)`` for validation by :func:`uqdyn.train.fit`.

        All three have shape ``(B, C_out, H, W)``: unobserved targets (masked or NaN) are
        zeros in ``y_target`` and ``False`` in the mask.
        """
        prediction = self.predict(task)
        yt, mt = self._target(task, prediction.mean)
        return prediction, yt, mt

    def _target(self, task: Any, like: Tensor) -> tuple[Tensor, Tensor]:
        if not isinstance(task, GridTask):
            raise TypeError(f"task is a {type(task).__name__}; expected a GridTask")
        yt = _check_field(task.y_target, "y_target", self.out_channels, self._param_dtype())
        if yt.shape[0] != like.shape[0] or yt.shape[-2:] != like.shape[-2:]:
            raise ValueError(
                f"y_target has shape {tuple(yt.shape)} and y_context {tuple(like.shape)}; "
                "expected the same batch size and grid"
            )
        yt, mt = _observed(yt, task.mask_target, "y_target", "mask_target")
        counts = mt.flatten(1).sum(1)
        if bool((counts == 0).any()):
            raise ValueError(
                f"task {int((counts == 0).nonzero()[0])} has no observed target entry; the loss "
                "needs at least one per task"
            )
        return yt, mt

    @staticmethod
    def _loglik(loc: Tensor, scale: Tensor, yt: Tensor, mt: Tensor) -> Tensor:
        """Mean log density per observed target entry of each task; ``(B,)``."""
        z = (yt - loc) / scale
        logp = -0.5 * z.square() - scale.log() - _LOG_SQRT_2PI
        keep = mt.to(logp.dtype)
        return (logp * keep).flatten(1).sum(1) / keep.flatten(1).sum(1)

    def loss(self, task: GridTask) -> Tensor:
        r"""Negative Gaussian log-likelihood per observed target entry, averaged over tasks.

        ``-(1/B) sum_b (1/|T_b|) sum_{(o,i,j) in T_b} log N(y_{oij}; mu_{oij}, sigma_{oij}^2)``
        over the observed target entries ``T_b`` (``mask_target`` and not NaN); a scalar.
        """
        if not isinstance(task, GridTask):
            raise TypeError(f"task is a {type(task).__name__}; expected a GridTask")
        y, mask = self._encode(task.y_context, task.mask_context)
        yt, mt = self._target(task, y)
        loc, scale = self._params(y, mask)
        return -self._loglik(loc, scale, yt, mt).mean()


class ConvCNPEnsemble(nn.Module):
    r"""Deep ensemble of ``members`` independently initialised :class:`ConvCNP`\ s.

    Member ``k`` is built with seed ``seed + k`` (when ``seed`` is given); all members see the
    same batches and :meth:`loss` is the mean of their losses, so each trains as it would
    alone (Adam is invariant to the ``1 / members`` factor; only a global gradient-norm clip
    couples them). The predictive is the equal-weight mixture of the members' Gaussians
    (Lakshminarayanan et al., 2017): the spread between members adds the epistemic
    uncertainty that one network's variance leaves out.

    Parameters
    ----------
    in_channels, out_channels
        As in :class:`ConvCNP`.
    members : int
        Ensemble size ``K``. Default 5.
    seed : int, optional
        Seed of member 0; member ``k`` uses ``seed + k``.
    **kwargs
        Further :class:`ConvCNP` arguments (``width``, ``depth``, ``padding``, ...).

    References
    ----------
    B. Lakshminarayanan, A. Pritzel, C. Blundell, "Simple and Scalable Predictive Uncertainty
    Estimation using Deep Ensembles", NeurIPS 2017.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import ConvCNPEnsemble
    >>> model = ConvCNPEnsemble(2, 1, members=3, width=8, depth=2, seed=0)
    >>> model(torch.randn(4, 2, 8, 8)).loc.shape          # components first
    torch.Size([3, 4, 1, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        *,
        members: int = 5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        members = _positive_int(members, "members")
        if seed is not None:
            seed = as_int(seed, "seed")
        self.members = nn.ModuleList(
            ConvCNP(in_channels, out_channels, seed=None if seed is None else seed + k, **kwargs)
            for k in range(members)
        )

    def forward(self, y_context: Tensor, *, mask_context: Tensor | None = None) -> GaussianMixture:
        """Equal-weight mixture of the members' predictives.

        Parameters
        ----------
        y_context : Tensor, shape (B, C_in, H, W)
        mask_context : bool Tensor, shape (B, C_in, H, W) or (B, H, W), optional

        Returns
        -------
        GaussianMixture
            ``loc`` and ``scale`` of shape ``(K, B, C_out, H, W)``, weights ``1 / K``.
        """
        first: ConvCNP = self.members[0]  # type: ignore[assignment]
        y, mask = first._encode(y_context, mask_context)
        params = [m._params(y, mask) for m in self.members]  # type: ignore[operator]
        loc = torch.stack([p[0] for p in params])
        scale = torch.stack([p[1] for p in params])
        weights = torch.ones(loc.shape[0], dtype=loc.dtype, device=loc.device)
        return GaussianMixture(weights, loc, scale)

    def predict(self, task: GridTask) -> GaussianMixture:
        """Mixture predictive at the grid of ``task``."""
        return self(task.y_context, mask_context=task.mask_context)

    def predict_batch(self, task: GridTask) -> tuple[GaussianMixture, Tensor, Tensor]:
        """``(predict(task), y_target, mask)`` as :meth:`ConvCNP.predict_batch`."""
        prediction = self.predict(task)
        yt, mt = self.members[0]._target(task, prediction.mean)  # type: ignore[operator]
        return prediction, yt, mt

    def loss(self, task: GridTask) -> Tensor:
        """Mean over the members of their :meth:`ConvCNP.loss`; a scalar."""
        losses = [m.loss(task) for m in self.members]  # type: ignore[operator]
        return torch.stack(losses).mean()
