"""Probabilistic Fourier neural operator forecasters of gridded fields."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn._normal import LOG_SQRT_2PI
from uqdyn._seed import seeded
from uqdyn.predictive import GaussianMixture, Normal

from .batch import FieldPairBatch, check_batch, check_fields
from .spectral import SpectralConv2d, _modes_pair

__all__ = ["FNO2d", "FNOForecaster", "FNOEnsemble", "fno_ensemble"]

HEADS = ("gaussian",)
BACKBONES = ("uqdyn", "neuralop")


class FNO2d(nn.Module):
    r"""A Fourier neural operator on periodic 2-D grids (Li et al., ICLR 2021).

    A pointwise lifting to ``width`` channels, ``depth`` Fourier layers
    :math:`v \mapsto \sigma(K v + W v)` (:class:`SpectralConv2d` ``K`` plus a pointwise
    linear ``W``; no activation after the last one) and a pointwise projection with one
    hidden layer of ``2 * width`` channels. Every part is either pointwise or defined on
    physical wavenumbers, so the same weights map fields at any resolution that resolves
    ``modes`` (no positional embedding: the map commutes with periodic shifts).

    Parameters
    ----------
    in_channels, out_channels : int
    modes : int or (modes_y, modes_x)
        Wavenumbers kept per axis by each Fourier layer (``|k| <= modes - 1``).
    width : int
        Channels of the Fourier layers.
    depth : int
        Number of Fourier layers (>= 1).

    Examples
    --------
    >>> import torch
    >>> net = FNO2d(1, 2, modes=4, width=8, depth=2)
    >>> net(torch.randn(3, 1, 16, 16)).shape
    torch.Size([3, 2, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        modes: int | tuple[int, int] = 12,
        width: int = 32,
        depth: int = 4,
    ) -> None:
        super().__init__()
        in_channels = as_int(in_channels, "in_channels", minimum=1)
        out_channels = as_int(out_channels, "out_channels", minimum=1)
        width = as_int(width, "width", minimum=1)
        depth = as_int(depth, "depth", minimum=1)
        self.lifting = nn.Conv2d(in_channels, width, 1)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, modes) for _ in range(depth))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(depth))
        self.projection = nn.Sequential(
            nn.Conv2d(width, 2 * width, 1), nn.GELU(), nn.Conv2d(2 * width, out_channels, 1)
        )

    def forward(self, x: Tensor, film: Tensor | None = None) -> Tensor:
        """``(batch, out_channels, H, W)`` for ``x`` of shape ``(batch, in_channels, H, W)``.

        ``film``: optional ``(batch, depth, 2, width)`` per-layer FiLM conditioning; layer
        ``i``'s output ``v`` becomes ``v * (1 + film[:, i, 0]) + film[:, i, 1]`` (per channel).
        """
        v = self.lifting(x)
        last = len(self.spectral) - 1
        for index, (spectral, pointwise) in enumerate(
            zip(self.spectral, self.pointwise, strict=True)
        ):
            v = spectral(v) + pointwise(v)
            if film is not None:
                scale, shift = film[:, index, 0, :, None, None], film[:, index, 1, :, None, None]
                v = v * (1.0 + scale) + shift
            if index < last:
                v = F.gelu(v)
        return cast(Tensor, self.projection(v))


def _neuralop_fno(
    in_channels: int, out_channels: int, modes: tuple[int, int], width: int, depth: int
) -> nn.Module:
    try:
        from neuralop.models import FNO
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backbone='neuralop' needs the neuraloperator package: pip install "
            "'uqdyn[operator]' (or pip install neuraloperator)"
        ) from error
    my, mx = modes
    # neuralop counts all kept modes per axis, centred on k = 0 (and halves the last axis):
    # 2 m - 1 keeps |k_y| <= m - 1 and k_x = 0..m - 1, the convention of SpectralConv2d.
    return cast(
        nn.Module,
        FNO(
            n_modes=(2 * my - 1, 2 * mx - 1),
            in_channels=in_channels,
            out_channels=out_channels,
            hidden_channels=width,
            n_layers=depth,
            positional_embedding=None,
        ),
    )


class FNOForecaster(nn.Module):
    r"""A probabilistic Fourier neural operator: a field to the Normal of the next field.

    The backbone maps ``inputs`` of shape ``(batch, in_channels, H, W)`` to
    ``2 * out_channels`` channels: a mean :math:`\mu` (added to the inputs when
    ``residual``) and a scale :math:`\sigma = \operatorname{softplus}(s) +` ``min_scale``
    per pixel and channel. The forecast is :class:`~uqdyn.predictive.Normal` ``(mu, sigma)``
    of shape ``(batch, out_channels, H, W)``, and :meth:`loss` the Gaussian negative
    log-likelihood averaged over the observed target entries,

    .. math::

        L = \frac{1}{|O|} \sum_{i \in O} \Big[\log \sigma_i
            + \frac{(y_i - \mu_i)^2}{2 \sigma_i^2} + \tfrac12 \log 2\pi\Big],

    so unobserved entries (``mask`` false, any value, NaN included) never change it. The
    operator is resolution-free: weights fitted on 32 x 32 grids forecast 64 x 64 grids of
    the same periodic domain (every layer is pointwise or acts on physical wavenumbers).

    It follows the training contract: ``uqdyn.train.fit(model, batches, steps=..., lr=...)``
    trains it on :class:`FieldPairBatch` batches with its own :meth:`loss` and validates
    it with :meth:`predict_batch`. Fields are best standardised to order one.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the forecast field.
    modes : int or (modes_y, modes_x)
        Wavenumbers kept per axis by each Fourier layer (``|k| <= modes - 1``). Default 12.
    width : int
        Channels of the Fourier layers. Default 32.
    depth : int
        Number of Fourier layers. Default 4.
    head : {"gaussian"}
        The predictive head; ``"gaussian"`` (mean and softplus scale, a Normal) is the only
        one so far.
    residual : bool, optional
        Forecast the mean as ``inputs + backbone``; default (``None``): when
        ``in_channels == out_channels``.
    min_scale : float
        Floor of the predicted standard deviation (in the fields' units). Default ``1e-4``.
    backbone : {"uqdyn", "neuralop"}
        ``"uqdyn"`` (default): :class:`FNO2d`, in any floating dtype. ``"neuralop"``: the
        ``neuralop.models.FNO`` of the neuraloperator package (``pip install
        'uqdyn[operator]'``), same wavenumber convention, float32 only.
    seed : int
        Seed of the initial weights (built under :func:`uqdyn.seeded`). Default 0.

    Examples
    --------
    >>> import torch
    >>> model = FNOForecaster(1, 1, modes=4, width=8, depth=2)
    >>> model.predict(torch.randn(3, 1, 16, 16)).batch_shape
    torch.Size([3, 1, 16, 16])
    >>> model.predict(torch.randn(3, 1, 32, 32)).batch_shape  # same weights, finer grid
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
        head: str = "gaussian",
        residual: bool | None = None,
        min_scale: float = 1e-4,
        backbone: str = "uqdyn",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        modes_pair = _modes_pair(modes)
        width = as_int(width, "width", minimum=1)
        depth = as_int(depth, "depth", minimum=1)
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
        if residual is None:
            residual = self.in_channels == self.out_channels
        elif not isinstance(residual, bool):
            raise TypeError(f"residual must be a bool or None, got {type(residual).__name__}")
        if residual and self.in_channels != self.out_channels:
            raise ValueError(
                f"residual=True needs in_channels == out_channels, got {self.in_channels} and "
                f"{self.out_channels}"
            )
        self.head = head
        self.residual = residual
        self.min_scale = as_float(min_scale, "min_scale", nonnegative=True)
        self.modes = modes_pair
        self.backbone_name = backbone
        outputs = 2 * self.out_channels
        with seeded(seed):
            if backbone == "uqdyn":
                self.backbone: nn.Module = FNO2d(
                    self.in_channels, outputs, modes=modes_pair, width=width, depth=depth
                )
            else:
                self.backbone = _neuralop_fno(self.in_channels, outputs, modes_pair, width, depth)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        """torch's state dict: tensors only (loads with ``torch.load(weights_only=True)``).

        neuralop's ``BaseModel.state_dict`` adds a ``"_metadata"`` entry (its constructor
        arguments, functions and classes among them) to the state dict of every module that
        holds it, which uqdyn's checkpoints reject; it is dropped here.
        """
        state = super().state_dict(*args, **kwargs)
        state.pop("_metadata", None)
        return state

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # Module.to(dtype) casts complex parameters to that dtype too: .to(torch.float32)
        # would silently drop the imaginary parts of neuralop's spectral weights. Refuse
        # such conversions (.to(device), .float(), .double(), .cuda() keep complex tensors).
        if self.backbone_name == "neuralop":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probe = fn(torch.zeros((), dtype=torch.complex64))
            if not probe.is_complex():
                raise TypeError(
                    "backbone='neuralop' holds complex spectral weights that this conversion "
                    f"would cast to {probe.dtype}, dropping their imaginary parts; convert the "
                    "device only (.to(device)) and feed float32 fields"
                )
        return super()._apply(fn, recurse)

    def _dtype(self) -> torch.dtype:
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def _check_dtype(self, inputs: Tensor) -> None:
        if self.backbone_name == "neuralop" and inputs.dtype != torch.float32:
            raise TypeError(
                f"backbone='neuralop' computes in float32 only, got inputs of {inputs.dtype}; "
                "use backbone='uqdyn' for other dtypes"
            )

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """``(loc, scale)`` of the next field, each ``(batch, out_channels, H, W)``.

        ``inputs``: ``(batch, in_channels, H, W)`` (not checked here; see :meth:`predict`).
        """
        raw = self.backbone(inputs)
        loc, scale = raw[:, : self.out_channels], raw[:, self.out_channels :]
        if self.residual:
            loc = inputs + loc
        return loc, F.softplus(scale) + self.min_scale

    def predict(self, inputs: Tensor) -> Normal:
        """The forecast of the next field, a Normal of batch shape ``(batch, out_channels, H, W)``.

        ``inputs``: a finite ``(batch, in_channels, H, W)`` tensor of the model's dtype.
        """
        inputs = check_fields(inputs, self.in_channels, self._dtype())
        self._check_dtype(inputs)
        loc, scale = self(inputs)
        return Normal(loc, scale)

    def _checked(self, batch: Any) -> tuple[Tensor, Tensor, Tensor | None]:
        inputs, targets, observed = check_batch(
            batch, self.in_channels, self.out_channels, self._dtype()
        )
        self._check_dtype(inputs)
        return inputs, targets, observed

    def loss(self, batch: FieldPairBatch) -> Tensor:
        """Gaussian negative log-likelihood per observed target entry, a ``()`` tensor."""
        inputs, targets, observed = self._checked(batch)
        loc, scale = self(inputs)
        return gaussian_nll(loc, scale, targets, observed)

    def predict_batch(self, batch: FieldPairBatch) -> tuple[Normal, Tensor, Tensor | None]:
        """``(forecast, targets, mask)``: a Normal, the targets and the ``(batch, C, H, W)`` mask."""
        inputs, targets, observed = self._checked(batch)
        loc, scale = self(inputs)
        return Normal(loc, scale), targets, observed


def gaussian_nll(loc: Tensor, scale: Tensor, targets: Tensor, observed: Tensor | None) -> Tensor:
    """Mean Gaussian negative log-likelihood over the ``observed`` entries (all when ``None``).

    Unobserved targets are replaced before the arithmetic, so NaN there reaches neither the
    loss nor its gradient.
    """
    if observed is not None:
        targets = torch.where(observed, targets, loc.detach())
    z = (targets - loc) / scale
    nll = scale.log() + 0.5 * z.square() + LOG_SQRT_2PI
    if observed is None:
        return nll.mean()
    return nll[observed].mean()


class FNOEnsemble(nn.Module):
    """A deep ensemble of :class:`FNOForecaster`; forecasts are a GaussianMixture.

    On a :class:`FieldPairBatch`, :meth:`loss` is the sum of the members' losses (each member
    gets the gradient of its own loss, so one :func:`uqdyn.train.fit` trains them all) and
    :meth:`predict_batch` the equally weighted mixture of the members' Normals
    (Lakshminarayanan et al. 2017): :class:`~uqdyn.predictive.GaussianMixture` with the
    members on the first axis, batch shape ``(batch, out_channels, H, W)``.

    Parameters
    ----------
    members : sequence of FNOForecaster
        At least one, all with the same ``in_channels`` and ``out_channels``. Build them with
        different seeds, e.g. with :func:`fno_ensemble`.

    Examples
    --------
    >>> import torch
    >>> ens = fno_ensemble(3, 1, 1, modes=4, width=8, depth=1)
    >>> ens.predict(torch.randn(2, 1, 16, 16)).loc.shape
    torch.Size([3, 2, 1, 16, 16])
    """

    def __init__(self, members: Sequence[FNOForecaster]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("members must hold at least one FNOForecaster, got none")
        first = members[0]
        for index, member in enumerate(members):
            if not isinstance(member, FNOForecaster):
                raise TypeError(
                    f"members[{index}] must be an FNOForecaster, got {type(member).__name__}"
                )
            if (member.in_channels, member.out_channels) != (first.in_channels, first.out_channels):
                raise ValueError(
                    f"members[{index}] maps {member.in_channels} to {member.out_channels} "
                    f"channels, expected {first.in_channels} to {first.out_channels} like "
                    "members[0]"
                )
        self.members = nn.ModuleList(members)
        self.in_channels = first.in_channels
        self.out_channels = first.out_channels

    def __len__(self) -> int:
        return len(self.members)

    def _members(self) -> list[FNOForecaster]:
        return [cast(FNOForecaster, m) for m in self.members]

    def _mixture(self, inputs: Tensor) -> GaussianMixture:
        locs, scales = zip(*(m(inputs) for m in self._members()), strict=True)
        weights = torch.ones(len(locs), dtype=inputs.dtype, device=inputs.device)
        return GaussianMixture(weights, torch.stack(locs), torch.stack(scales))

    def predict(self, inputs: Tensor) -> GaussianMixture:
        """The mixture forecast for ``inputs`` of shape ``(batch, in_channels, H, W)``."""
        first = self._members()[0]
        inputs = check_fields(inputs, self.in_channels, first._dtype())
        for member in self._members():
            member._check_dtype(inputs)
        return self._mixture(inputs)

    def loss(self, batch: FieldPairBatch) -> Tensor:
        """Sum of the members' negative log-likelihoods, a ``()`` tensor."""
        first = self._members()[0]
        inputs, targets, observed = first._checked(batch)
        total = inputs.new_zeros(())
        for member in self._members():
            member._check_dtype(inputs)
            loc, scale = member(inputs)
            total = total + gaussian_nll(loc, scale, targets, observed)
        return total

    def predict_batch(self, batch: FieldPairBatch) -> tuple[GaussianMixture, Tensor, Tensor | None]:
        """``(mixture, targets, mask)`` with the mask of shape ``(batch, C, H, W)`` or ``None``."""
        first = self._members()[0]
        inputs, targets, observed = first._checked(batch)
        for member in self._members():
            member._check_dtype(inputs)
        return self._mixture(inputs), targets, observed


def fno_ensemble(
    members: int, in_channels: int, out_channels: int, *, seed: int = 0, **options: Any
) -> FNOEnsemble:
    """An :class:`FNOEnsemble` of ``members`` forecasters seeded ``seed, seed + 1, ...``.

    ``options`` are the keyword options of :class:`FNOForecaster` (``modes``, ``width``,
    ``depth``, ...), the same for every member.
    """
    count = as_int(members, "members", minimum=1)
    seed = as_int(seed, "seed", minimum=0)
    return FNOEnsemble(
        [FNOForecaster(in_channels, out_channels, seed=seed + i, **options) for i in range(count)]
    )
