"""The off-the-grid convolutional CNP for 1-D point sets (Gordon et al., 2020)."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from uqdyn._checks import as_float
from uqdyn.predictive import Normal

from ._base import _check_mask, _check_points, _ConditionalNP, _positive_int
from ._conv import (
    _DENSITY_EPS,
    ARCHITECTURES,
    _check_choice,
    _check_positive_float,
    _ConvStack,
    _gaussian_weights,
    _inverse_softplus,
    _kernel_for_receptive_field,
    _seeded,
)

__all__ = ["OffGridConvCNP"]


class OffGridConvCNP(_ConditionalNP):
    r"""Convolutional CNP for 1-D inputs: point sets onto a grid, a CNN, back to the targets.

    **Encoder.** A uniform grid ``t_j`` with ``points_per_unit`` points per unit of ``x``
    covers the real context and target inputs of the batch plus ``margin`` on each side
    (snapped to multiples of ``1 / points_per_unit``, so shifting every input by a multiple of
    the spacing shifts the grid with it). Each output channel ``c`` gives a density and a data
    channel (set convolution, learnable length scale ``l``):

    .. math::

        d_c(t) = \sum_i m_{ic}\, \phi_l(t - x_i), \qquad
        h_c(t) = \frac{\sum_i m_{ic}\, y_{ic}\, \phi_l(t - x_i)}{d_c(t) + \epsilon},
        \qquad \phi_l(u) = e^{-u^2 / (2 l^2)},

    with ``m_{ic}`` the context mask (a NaN value of a real point counts as unobserved in that
    channel).

    **CNN** on ``[d, h]`` (plain, residual or U-Net, zero padding), then **decoder**: a set
    convolution of the grid features back to each target input,
    ``r(x_t) = sum_j phi_{l'}(x_t - t_j) f_j``, and an MLP to ``[mu, rho]`` with
    ``sigma = min_std + (1 - min_std) softplus(rho)``. Without any position input the model is
    translation equivariant: it predicts the same at ``x + s`` from a context shifted by ``s``.

    Same interface as the other models of :mod:`uqdyn.models.neural_process`:
    ``forward(x_context (B, Nc, 1), y_context (B, Nc, y_dim), x_target (B, Nt, 1), *,
    mask_context=None) -> Normal (B, Nt, y_dim)``, :meth:`loss` and :meth:`predict` on a
    :class:`uqdyn.data.Task` (NaN target values are left out of the loss).

    Parameters
    ----------
    y_dim : int
        Output dimension. Default 1.
    points_per_unit : float
        Grid density. Default 64.
    margin : float
        Grid extension beyond the extreme inputs, in units of ``x``. Default 0.1.
    width : int
        CNN channels. Default 64.
    depth : int
        CNN layers (``"cnn"``, ``"resnet"``) or U-Net levels. Default 6.
    receptive_field : float, optional
        Receptive field of the ``"cnn"``/``"resnet"`` stack in units of ``x``; sets the
        kernel size ``ceil(1 + (receptive_field * points_per_unit - 1) / depth)`` (made odd).
        Default 2.0 when ``kernel_size`` is not given.
    kernel_size : int, optional
        Odd convolution size (instead of ``receptive_field``; 5 for the U-Net by default).
    architecture : {"resnet", "cnn", "unet"}
        Default ``"resnet"``.
    init_lengthscale : float, optional
        Initial encoder and decoder length scales in units of ``x``; default one grid
        spacing ``1 / points_per_unit``.
    decoder_depth : int
        Linear layers of the pointwise decoder. Default 1.
    min_std : float
        Lower bound of the predictive standard deviation. Default 0.01.
    min_context : int
        Smallest number of real context points per task; default 0 (an empty context gives
        zero density everywhere, the learned unconditional prediction).
    seed : int, optional
        When given, the initial weights depend only on it.

    References
    ----------
    J. Gordon, W. P. Bruinsma, A. Y. K. Foong, J. Requeima, Y. Dubois, R. E. Turner,
    "Convolutional Conditional Neural Processes", ICLR 2020.

    Examples
    --------
    >>> import torch
    >>> from uqdyn.models.neural_process import OffGridConvCNP
    >>> model = OffGridConvCNP(points_per_unit=16, width=8, depth=2, seed=0)
    >>> xc, yc, xt = torch.rand(4, 10, 1), torch.randn(4, 10, 1), torch.rand(4, 7, 1)
    >>> model(xc, yc, xt).batch_shape
    torch.Size([4, 7, 1])
    """

    def __init__(
        self,
        y_dim: int = 1,
        *,
        points_per_unit: float = 64.0,
        margin: float = 0.1,
        width: int = 64,
        depth: int = 6,
        receptive_field: float | None = None,
        kernel_size: int | None = None,
        architecture: str = "resnet",
        init_lengthscale: float | None = None,
        decoder_depth: int = 1,
        min_std: float = 0.01,
        min_context: int = 0,
        seed: int | None = None,
    ) -> None:
        super().__init__(1, y_dim, min_std, min_context)
        self.points_per_unit = _check_positive_float(points_per_unit, "points_per_unit")
        self.margin = as_float(margin, "margin", nonnegative=True)
        width = _positive_int(width, "width")
        depth = _positive_int(depth, "depth")
        self.architecture = _check_choice(architecture, "architecture", ARCHITECTURES)
        if kernel_size is not None and receptive_field is not None:
            raise ValueError(
                f"kernel_size={kernel_size!r} and receptive_field={receptive_field!r}; "
                "expected at most one of them"
            )
        if kernel_size is None:
            if self.architecture == "unet":
                if receptive_field is not None:
                    raise ValueError(
                        "receptive_field sets the kernel of the 'cnn' and 'resnet' stacks; "
                        "give the U-Net a kernel_size"
                    )
                kernel_size = 5
            else:
                rf = _check_positive_float(
                    2.0 if receptive_field is None else receptive_field, "receptive_field"
                )
                kernel_size = _kernel_for_receptive_field(rf * self.points_per_unit, depth)
        kernel_size = _positive_int(kernel_size, "kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size}; expected an odd int")
        self.kernel_size = kernel_size
        ls = 1.0 / self.points_per_unit if init_lengthscale is None else init_lengthscale
        ls = _check_positive_float(ls, "init_lengthscale")
        with _seeded(seed):
            self.raw_encoder_lengthscale = nn.Parameter(torch.tensor(_inverse_softplus(ls)))
            self.raw_decoder_lengthscale = nn.Parameter(torch.tensor(_inverse_softplus(ls)))
            self.cnn = _ConvStack(
                1, 2 * self.y_dim, width, depth, kernel_size, self.architecture, "zeros"
            )
            self._build_decoder(width, width, decoder_depth)

    @property
    def receptive_field(self) -> float:
        """Receptive field of the CNN in units of ``x`` (``"cnn"``/``"resnet"``)."""
        points = self.cnn.depth * (self.kernel_size - 1) + 1
        return points / self.points_per_unit

    def _param_dtype(self) -> torch.dtype:
        return self.raw_encoder_lengthscale.dtype

    def _prepare(
        self,
        x_context: Any,
        y_context: Any,
        x_target: Any,
        mask_context: Any,
        *args: Any,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """As the base, but the returned mask is per channel, ``(B, Nc, y_dim)``.

        A real context point with a NaN value in channel ``c`` is unobserved in that channel.
        """
        nan = None
        if isinstance(y_context, Tensor) and y_context.is_floating_point():
            nan = torch.isnan(y_context)
            y_context = torch.where(nan, torch.zeros((), dtype=y_context.dtype), y_context)
        xc, yc, xt, mc = super()._prepare(
            x_context, y_context, x_target, mask_context, *args, **kwargs
        )
        channel_mask = mc.unsqueeze(-1).expand(yc.shape)
        if nan is not None:
            channel_mask = channel_mask & ~nan.to(channel_mask.device)
        return xc, yc, xt, channel_mask

    def _grid(
        self, xc: Tensor, point_mask: Tensor, xt: Tensor, target_mask: Tensor | None
    ) -> Tensor:
        """Grid ``(G, 1)`` over the real context and target inputs of the batch.

        Padded points do not move it: only real points set its extent.
        """
        ppu = self.points_per_unit
        inf = torch.tensor(math.inf, dtype=xt.dtype, device=xt.device)
        if target_mask is None:
            ends = [xt.min(), xt.max()]
        else:
            ends = [
                torch.where(target_mask, xt[..., 0], inf).min(),
                torch.where(target_mask, xt[..., 0], -inf).max(),
            ]
        if xc.shape[1] > 0:  # a task without real context points contributes +-inf
            ends += [
                torch.where(point_mask, xc[..., 0], inf).min(),
                torch.where(point_mask, xc[..., 0], -inf).max(),
            ]
        values = [v for v in torch.stack(ends).tolist() if math.isfinite(v)]  # one sync
        lo, hi = min(values), max(values)
        first = math.floor((lo - self.margin) * ppu)
        last = math.ceil((hi + self.margin) * ppu)
        n = last - first + 1
        multiple = self.cnn.multiple
        n = -(-n // multiple) * multiple
        first -= (n - (last - first + 1)) // 2
        index = torch.arange(first, first + n, device=xc.device, dtype=xc.dtype)
        return (index / ppu).unsqueeze(-1)

    def _predict_params(
        self, xc: Tensor, yc: Tensor, mc: Tensor, xt: Tensor, mt: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        grid = self._grid(xc, mc.any(-1), xt, mt)  # (G, 1)
        ls_enc = nn.functional.softplus(self.raw_encoder_lengthscale) + 1e-6
        ls_dec = nn.functional.softplus(self.raw_decoder_lengthscale) + 1e-6
        weights = _gaussian_weights(xc, grid, ls_enc)  # (B, G, Nc)
        m = mc.to(yc.dtype)
        density = weights @ m  # (B, G, y_dim)
        data = (weights @ (m * yc)) / (density + _DENSITY_EPS)
        features = self.cnn(torch.cat([density, data], dim=-1).transpose(1, 2))  # (B, W, G)
        to_targets = _gaussian_weights(grid, xt, ls_dec)  # (B, Nt, G)
        return self._gaussian_head(to_targets @ features.transpose(1, 2))

    def predict(self, task: Any, **kwargs: Any) -> Normal:
        """Predictive ``Normal (B, Nt, y_dim)`` at the targets of ``task`` (a Task).

        As ``self(task.x_context, task.y_context, task.x_target, mask_context=...)``, except
        that padded targets (``mask_target`` False) do not extend the internal grid, so the
        predictions at the real targets are those that :meth:`loss` scores.
        """
        if kwargs:
            raise TypeError(f"predict() got unexpected keyword arguments {sorted(kwargs)}")
        xc, yc, xt, mc = self._prepare(
            task.x_context, task.y_context, task.x_target, getattr(task, "mask_context", None)
        )
        mt = getattr(task, "mask_target", None)
        if mt is not None:
            mt = _check_mask(mt, "mask_target", (xt.shape[0], xt.shape[1]), xt.device)
        return Normal(*self._predict_params(xc, yc, mc, xt, mt))

    def loss(self, task: Any) -> Tensor:
        """Negative Gaussian log-likelihood per target point, averaged over the tasks.

        As :meth:`uqdyn.models.neural_process.CNP.loss`; target entries that are NaN (or in
        padded target points) are left out, and a task's sum is divided by its number of
        target points with at least one observed entry.
        """
        for attr in ("x_context", "y_context", "x_target", "y_target"):
            if not hasattr(task, attr):
                raise TypeError(
                    f"task is a {type(task).__name__} without {attr!r}; expected a uqdyn.data.Task"
                )
        yt_raw = _check_points(task.y_target, "y_target", self._param_dtype())
        nan = torch.isnan(yt_raw)
        clean = SimpleNamespace(
            x_context=task.x_context,
            y_context=task.y_context,
            mask_context=getattr(task, "mask_context", None),
            x_target=task.x_target,
            y_target=torch.where(nan, torch.zeros((), dtype=yt_raw.dtype), yt_raw),
            mask_target=getattr(task, "mask_target", None),
        )
        xc, yc, mc, xt, yt, mt = self._prepare_task(clean)
        keep = mt.unsqueeze(-1) & ~nan.to(mt.device)
        points = keep.any(-1).sum(1)
        if bool((points == 0).any()):
            raise ValueError(
                f"task {int((points == 0).nonzero()[0])} has no observed target value; the "
                "loss needs at least one per task"
            )
        loc, scale = self._predict_params(xc, yc, mc, xt, mt)
        z = (yt - loc) / scale
        logp = -0.5 * z.square() - scale.log() - 0.5 * math.log(2.0 * math.pi)
        loglik = (logp * keep.to(logp.dtype)).sum((1, 2))
        return -(loglik / points.to(loglik.dtype)).mean()
