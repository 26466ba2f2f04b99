"""A conditional-neural-process Fourier neural operator: forecasts conditioned on a context set.

:class:`ConditionalFNO` forecasts a target field from its input field *and* a context set of
observed (input field, output field) pairs of the same system, as a conditional neural
process (Garnelo et al., 2018) conditions on context points: every pair is encoded to a
vector, the vectors are mean-pooled into one representation ``r`` (permutation invariant,
missing pairs left out), and ``r`` modulates a Fourier neural operator (FiLM, Perez et al.,
2018) whose Gaussian head gives a :class:`~uqdyn.predictive.Normal`. Its batch is
:class:`ContextFieldBatch`; it trains through :func:`uqdyn.train.fit`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn._seed import seeded
from uqdyn.predictive import Normal

from .batch import FieldPairBatch, _describe, check_batch, check_fields
from .fno import FNO2d, gaussian_nll
from .spectral import _modes_pair

__all__ = ["ContextFieldBatch", "ConditionalFNO"]


@dataclass(frozen=True, eq=False)
class ContextFieldBatch:
    """Target pairs of fields with a context set of observed pairs from the same system.

    Entry ``b`` of the batch is one task (one environment: one setting of the unknown
    parameters of a PDE, say): ``K`` context pairs ``(context_inputs[b, k],
    context_targets[b, k])`` observed in that environment and one target pair ``(inputs[b],
    targets[b])`` to forecast there. Context pairs may live on another grid than the target
    pair (the model pools them over space).

    Attributes
    ----------
    context_inputs : Tensor, shape (batch, K, in_channels, height_c, width_c)
        Input fields of the context pairs. NaN marks an unobserved value.
    context_targets : Tensor, shape (batch, K, out_channels, height_c, width_c)
        The fields one step later, same grid; NaN marks an unobserved value.
    inputs : Tensor, shape (batch, in_channels, height, width)
        Complete, finite input fields of the target pairs.
    targets : Tensor, shape (batch, out_channels, height, width)
        The fields to forecast. Entries outside ``mask`` may hold anything (NaN included).
    context_mask : Tensor of bool, shape (batch, K), optional
        ``True`` for a real context pair; a ``False`` pair (any values, NaN included) never
        changes a result. ``None`` (default): every pair real (a pair without any finite
        value counts as missing either way).
    mask : Tensor of bool, shape (batch, height, width) or (batch, out_channels, height, width), optional
        ``True`` where a target is observed, as in :class:`FieldPairBatch`. ``None``
        (default): every target observed.

    Examples
    --------
    >>> import torch
    >>> batch = ContextFieldBatch(
    ...     torch.zeros(2, 3, 1, 8, 8), torch.zeros(2, 3, 1, 8, 8),
    ...     torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16),
    ... )
    >>> batch.to("cpu").context_inputs.shape
    torch.Size([2, 3, 1, 8, 8])
    """

    context_inputs: Tensor
    context_targets: Tensor
    inputs: Tensor
    targets: Tensor
    context_mask: Tensor | None = None
    mask: Tensor | None = None

    def to(self, device: torch.device | str) -> ContextFieldBatch:
        """The batch on ``device`` (what :func:`uqdyn.train.fit` calls)."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return ContextFieldBatch(
            self.context_inputs.to(device),
            self.context_targets.to(device),
            self.inputs.to(device),
            self.targets.to(device),
            move(self.context_mask),
            move(self.mask),
        )


def _masked_mean(h: Tensor, present: Tensor) -> Tensor:
    """Mean of ``h (B, K, D)`` over the pairs ``present (B, K)``; ``(B, D)``, zero if none."""
    weights = present.to(h.dtype).unsqueeze(-1)
    return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class ConditionalFNO(nn.Module):
    r"""A Fourier neural operator conditioned on a context set of observed field pairs.

    The conditional-neural-process form (Garnelo et al., 2018) of :class:`FNOForecaster`:
    the forecast of a target field depends on its input field ``x`` and on ``K`` pairs
    :math:`(x_k, y_k)` observed in the same environment (same PDE, unknown parameters),

    .. math::

        r_k = \frac{1}{|\Omega|}\int_\Omega h([\tilde x_k, \tilde y_k, o^x_k, o^y_k])\,
              \mathrm d\omega, \qquad
        r = \frac{1}{|C|} \sum_{k \in C} r_k, \qquad
        p(y \mid x, C) = \mathcal N\big(\mu(x, r), \sigma(x, r)^2\big).

    The encoder ``h`` is a small :class:`FNO2d` over the concatenated pair with NaN
    (unobserved) values set to zero (:math:`\tilde x_k, \tilde y_k`) and the observed
    indicators :math:`o_k` as extra channels; its output is averaged over the grid (a mean
    over pixels, a discretised integral, so ``r_k`` hardly depends on the context
    resolution) and over the real context pairs ``C`` (permutation invariant; a masked pair
    contributes exactly nothing; an empty context gives ``r = 0``). A small MLP maps ``r``
    to a per-channel scale and shift of every Fourier layer of the processor (FiLM),

    .. math:: v_{l+1} = \operatorname{gelu}\big((K_l v_l + W_l v_l)\,(1 + \gamma_l(r))
              + \beta_l(r)\big),

    (no activation after the last layer) and the head gives the mean (added to ``x`` when
    ``residual``) and the scale :math:`\operatorname{softplus}(s) +` ``min_scale`` per
    pixel and channel. :meth:`loss` is the Gaussian negative log-likelihood averaged over the
    observed target entries, as :meth:`FNOForecaster.loss`. Every part is pointwise, acts on
    physical wavenumbers or averages over space, so the context and the target may come on
    different grids and the same weights serve every resolution.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the forecast field (the same for context pairs).
    modes : int or (modes_y, modes_x)
        Wavenumbers kept per axis by each Fourier layer of the processor. Default 12.
    width : int
        Channels of the processor's Fourier layers. Default 32.
    depth : int
        Fourier layers of the processor. Default 4.
    representation : int
        Size of the context representation ``r``. Default 32.
    encoder_modes, encoder_width, encoder_depth : int, optional
        The encoder FNO; default: ``modes``, ``width`` and ``max(1, depth // 2)``.
    residual : bool, optional
        Forecast the mean as ``inputs + network``; default (``None``): when
        ``in_channels == out_channels``.
    min_scale : float
        Floor of the predicted standard deviation. Default ``1e-4``.
    min_context : int
        Smallest number of real context pairs a task may have. Default 1; with 0 a task
        without context is forecast from ``r = 0``.
    seed : int
        Seed of the initial weights (built under :func:`uqdyn.seeded`). Default 0.

    References
    ----------
    M. Garnelo et al., "Conditional Neural Processes", ICML 2018. Z. Li et al., "Fourier
    Neural Operator for Parametric Partial Differential Equations", ICLR 2021. E. Perez et
    al., "FiLM: Visual Reasoning with a General Conditioning Layer", AAAI 2018.

    Examples
    --------
    >>> import torch
    >>> model = ConditionalFNO(1, 1, modes=4, width=8, depth=2, representation=8)
    >>> context_x, context_y = torch.randn(3, 5, 1, 16, 16), torch.randn(3, 5, 1, 16, 16)
    >>> model.predict(context_x, context_y, torch.randn(3, 1, 32, 32)).batch_shape
    torch.Size([3, 1, 32, 32])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        modes: int | tuple[int, int] = 12,
        width: int = 32,
        depth: int = 4,
        representation: int = 32,
        encoder_modes: int | tuple[int, int] | None = None,
        encoder_width: int | None = None,
        encoder_depth: int | None = None,
        residual: bool | None = None,
        min_scale: float = 1e-4,
        min_context: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.modes = _modes_pair(modes)
        self.width = as_int(width, "width", minimum=1)
        self.depth = as_int(depth, "depth", minimum=1)
        self.representation = as_int(representation, "representation", minimum=1)
        enc_modes = self.modes if encoder_modes is None else _modes_pair(encoder_modes)
        enc_width = self.width if encoder_width is None else encoder_width
        enc_width = as_int(enc_width, "encoder_width", minimum=1)
        enc_depth = max(1, self.depth // 2) if encoder_depth is None else encoder_depth
        enc_depth = as_int(enc_depth, "encoder_depth", minimum=1)
        if residual is None:
            residual = self.in_channels == self.out_channels
        elif not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool or None, got {type(residual).__name__}")
        if residual and self.in_channels != self.out_channels:
            raise ValueError(
                f"residual=True needs in_channels == out_channels, got {self.in_channels} and "
                f"{self.out_channels}"
            )
        self.residual = residual
        self.min_scale = as_float(min_scale, "min_scale", nonnegative=True)
        self.min_context = as_int(min_context, "min_context", minimum=0)
        pair_channels = 2 * (self.in_channels + self.out_channels)  # values and indicators
        with seeded(seed):
            self.encoder = FNO2d(
                pair_channels, self.representation, modes=enc_modes, width=enc_width,
                depth=enc_depth,
            )  # fmt: skip
            self.film = nn.Sequential(
                nn.Linear(self.representation, self.width),
                nn.GELU(),
                nn.Linear(self.width, 2 * self.depth * self.width),
            )
            self.processor = FNO2d(
                self.in_channels, 2 * self.out_channels, modes=self.modes, width=self.width,
                depth=self.depth,
            )  # fmt: skip

    # ------------------------------------------------------------------ computation
    def _dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def _represent(
        self, context_inputs: Tensor, context_targets: Tensor, present: Tensor
    ) -> Tensor:
        """``r`` of shape ``(B, representation)``: pooled codes of the ``present (B, K)`` pairs.

        Only the real pairs are encoded (chosen by ``present`` alone), so the values of a
        missing pair, NaN included, never enter a computation.
        """
        batch, pairs = present.shape
        fields = torch.cat([context_inputs, context_targets], dim=2).flatten(0, 1)
        chosen = present.flatten().nonzero().squeeze(1)
        codes = fields.new_zeros(batch * pairs, self.representation)
        if chosen.numel() > 0:
            fields = fields.index_select(0, chosen)  # (real pairs, C_in + C_out, Hc, Wc)
            observed = ~torch.isnan(fields)
            zero = torch.zeros((), dtype=fields.dtype, device=fields.device)
            stacked = torch.cat(
                [torch.where(observed, fields, zero), observed.to(fields.dtype)], dim=1
            )
            features = self.encoder(stacked).mean(dim=(-2, -1))  # mean over the grid
            codes = codes.index_copy(0, chosen, features)
        return _masked_mean(codes.reshape(batch, pairs, self.representation), present)

    def _process(self, inputs: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        film = self.film(r).reshape(r.shape[0], self.depth, 2, self.width)
        raw = self.processor(inputs, film)
        loc, scale = raw[:, : self.out_channels], raw[:, self.out_channels :]
        if self.residual:
            loc = inputs + loc
        return loc, F.softplus(scale) + self.min_scale

    def forward(
        self,
        context_inputs: Tensor,
        context_targets: Tensor,
        inputs: Tensor,
        context_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of the forecast, each ``(batch, out_channels, H, W)``.

        Arguments as in :meth:`predict` (checked there, not here).
        """
        present = self._present(context_inputs, context_targets, context_mask)
        return self._process(inputs, self._represent(context_inputs, context_targets, present))

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _present(
        context_inputs: Tensor, context_targets: Tensor, context_mask: Tensor | None
    ) -> Tensor:
        """Real pairs: in ``context_mask`` and with at least one observed value; ``(B, K)``."""
        has_value = torch.cat(
            [(~torch.isnan(context_inputs)).flatten(2), (~torch.isnan(context_targets)).flatten(2)],
            dim=2,
        ).any(dim=2)
        return has_value if context_mask is None else has_value & context_mask

    def _check_context(
        self,
        context_inputs: Any,
        context_targets: Any,
        context_mask: Any,
        batch: int,
        dtype: torch.dtype,
    ) -> tuple[Tensor, Tensor, Tensor]:
        for name, value, channels, label in (
            ("context_inputs", context_inputs, self.in_channels, "in_channels"),
            ("context_targets", context_targets, self.out_channels, "out_channels"),
        ):
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(
                    f"{name} must be a floating torch.Tensor of shape (batch, K, {label}, "
                    f"height, width), got {_describe(value)}"
                )
            if value.ndim != 5 or value.shape[0] != batch or value.shape[2] != channels:
                raise ValueError(
                    f"{name} must have shape ({batch}, K, {channels}, height, width) for "
                    f"{batch} target field(s) and {label}={channels}, got {tuple(value.shape)}"
                )
            if value.dtype != dtype:
                raise TypeError(
                    f"{name} are {value.dtype} but the model's parameters are {dtype}; "
                    "expected the same dtype"
                )
            if bool(torch.isinf(value).any()):
                raise ValueError(
                    f"{name} hold infinite values; expected finite values, NaN where a value "
                    "was not observed"
                )
        ci, ct = cast(Tensor, context_inputs), cast(Tensor, context_targets)
        if ci.shape[1] != ct.shape[1] or ci.shape[-2:] != ct.shape[-2:]:
            raise ValueError(
                f"context_targets must have the K and grid of context_inputs "
                f"{tuple(ci.shape)}: ({batch}, {ci.shape[1]}, {self.out_channels}, "
                f"{ci.shape[-2]}, {ci.shape[-1]}), got {tuple(ct.shape)}"
            )
        if context_mask is not None:
            if not isinstance(context_mask, Tensor) or context_mask.dtype != torch.bool:
                raise TypeError(
                    f"context_mask must be a bool Tensor of shape ({batch}, {ci.shape[1]}) "
                    f"(batch, K) or None, got {_describe(context_mask)}"
                )
            if tuple(context_mask.shape) != (batch, ci.shape[1]):
                raise ValueError(
                    f"context_mask must have shape ({batch}, {ci.shape[1]}) (batch, K), got "
                    f"{tuple(context_mask.shape)}"
                )
        present = self._present(ci, ct, context_mask)
        counts = present.sum(dim=1)
        if int(counts.min()) < self.min_context:
            b = int(counts.argmin())
            raise ValueError(
                f"task {b} has {int(counts[b])} real context pair(s) (context_inputs shape "
                f"{tuple(ci.shape)}; a pair is real when context_mask says so and it holds an "
                f"observed value); ConditionalFNO was built with min_context={self.min_context}"
            )
        return ci, ct, present

    def _checked(self, batch: Any) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        if not isinstance(batch, ContextFieldBatch):
            raise TypeError(
                "batch must be a uqdyn.models.operator.ContextFieldBatch(context_inputs, "
                f"context_targets, inputs, targets, context_mask, mask), got "
                f"{type(batch).__name__}"
            )
        inputs, targets, observed = check_batch(
            FieldPairBatch(batch.inputs, batch.targets, batch.mask),
            self.in_channels,
            self.out_channels,
            self._dtype(),
        )
        ci, ct, present = self._check_context(
            batch.context_inputs, batch.context_targets, batch.context_mask, inputs.shape[0],
            inputs.dtype,
        )  # fmt: skip
        return ci, ct, present, inputs, targets, observed

    # ------------------------------------------------------------------ public
    def encode(
        self, context_inputs: Tensor, context_targets: Tensor, context_mask: Tensor | None = None
    ) -> Tensor:
        """The context representation ``r``, shape ``(batch, representation)``.

        Parameters
        ----------
        context_inputs : Tensor, shape (batch, K, in_channels, height_c, width_c)
        context_targets : Tensor, shape (batch, K, out_channels, height_c, width_c)
            NaN marks an unobserved value.
        context_mask : Tensor of bool, shape (batch, K), optional
            ``False`` for a missing pair.
        """
        if not isinstance(context_inputs, Tensor) or context_inputs.ndim < 1:
            raise TypeError(
                "context_inputs must be a floating torch.Tensor of shape (batch, K, "
                f"in_channels, height, width), got {_describe(context_inputs)}"
            )
        ci, ct, present = self._check_context(
            context_inputs, context_targets, context_mask, context_inputs.shape[0], self._dtype()
        )
        return self._represent(ci, ct, present)

    def predict(
        self,
        context_inputs: Tensor,
        context_targets: Tensor,
        inputs: Tensor,
        context_mask: Tensor | None = None,
    ) -> Normal:
        """The forecast of the target fields, a Normal of batch shape ``(batch, out_channels, H, W)``.

        Parameters
        ----------
        context_inputs : Tensor, shape (batch, K, in_channels, height_c, width_c)
            Input fields of the context pairs (NaN = not observed); any grid.
        context_targets : Tensor, shape (batch, K, out_channels, height_c, width_c)
            Their next fields (NaN = not observed).
        inputs : Tensor, shape (batch, in_channels, height, width)
            Complete, finite input fields to forecast from.
        context_mask : Tensor of bool, shape (batch, K), optional
            ``False`` for a missing pair (its values never change the forecast).
        """
        inputs = check_fields(inputs, self.in_channels, self._dtype())
        ci, ct, present = self._check_context(
            context_inputs, context_targets, context_mask, inputs.shape[0], inputs.dtype
        )
        loc, scale = self._process(inputs, self._represent(ci, ct, present))
        return Normal(loc, scale)

    def loss(self, batch: ContextFieldBatch) -> Tensor:
        """Gaussian negative log-likelihood per observed target entry, a ``()`` tensor."""
        ci, ct, present, inputs, targets, observed = self._checked(batch)
        loc, scale = self._process(inputs, self._represent(ci, ct, present))
        return gaussian_nll(loc, scale, targets, observed)

    def predict_batch(self, batch: ContextFieldBatch) -> tuple[Normal, Tensor, Tensor | None]:
        """``(forecast, targets, mask)``: a Normal, the targets and the ``(batch, C, H, W)`` mask."""
        ci, ct, present, inputs, targets, observed = self._checked(batch)
        loc, scale = self._process(inputs, self._represent(ci, ct, present))
        return Normal(loc, scale), targets, observed
