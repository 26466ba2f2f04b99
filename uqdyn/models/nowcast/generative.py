r"""A generative ensemble precipitation nowcaster trained with the fair CRPS.

:class:`GenerativeNowcaster` maps the last ``n_input`` radar frames and a random latent
field to all ``leads`` future frames at once; members of the ensemble differ only by their
latent draw. The network is :class:`~uqdyn.models.motion.networks.PeriodicUNet`; its input
channels are

* the ``n_input`` frames in the learning space :math:`v = \log(1 + R / 0.1)` (``R`` in
  mm/h, so a dry pixel is exactly ``v = 0``), unobserved (NaN) pixels set to 0;
* the ``n_input`` observed masks (1 observed, 0 not);
* ``latent_channels`` standard-normal fields drawn at ``1 / latent_scale`` of the grid and
  upsampled bilinearly, so each member's perturbation is spatially coherent over about
  ``latent_scale`` pixels (per-pixel independent noise would give the salt-and-pepper
  members a per-pixel score cannot tell from realistic ones).

The output is the last frame (filled) plus the network's per-lead increment, in the
learning space, and back in mm/h :math:`R = \max(0.1\,(e^{v} - 1), 0)`: every ``v <= 0``
is exactly dry, so members have exact zeros where they forecast no rain, as radar fields
do.

**The loss** is a strictly proper score of the ensemble, estimated with ``m`` members per
batch (``members_per_batch``) by the fair CRPS (Ferro 2014),

.. math::
    \mathrm{CRPS}_\mathrm{fair}(x_{1:m}, y) = \frac1m \sum_i |x_i - y|
    - \frac{1}{2m(m-1)} \sum_{i \ne j} |x_i - x_j|,

unbiased for the CRPS of the distribution the members are drawn from, so already two
members give an unbiased gradient of a proper score (the plain empirical CRPS would reward
an under-dispersed ensemble at small ``m``). The scores compare the members' *rain*
levels: a member value ``v <= 0`` is dry whatever its size, so in the learning space the
members enter censored at 0 (``max(v, 0)``, with a slope of ``0.01`` below 0 so that a
pixel where every member is dry still gets a small gradient); the score is then the CRPS of
``log(1 + R / 0.1)``, proper for the rain forecast, and it costs nothing to forecast a dry
pixel with every member, which gives the exact zeros. Three terms, all over observed
target pixels only (NaN targets are left out):

1. the pixel-wise fair CRPS in the learning space (the main term: the log-like transform
   keeps light and heavy rain on comparable scales, so the network learns where rain will
   be, not only the few heaviest cells);
2. ``pool_weight`` times the fair CRPS of the fields average-pooled over
   ``pool_scales`` x ``pool_scales`` windows (in the learning space; a window counts when
   at least half of it is observed, members and target averaged over the same observed
   pixels). A pixel-wise score only sees marginals; the CRPS of area averages also sees
   how errors are correlated in space, so it rewards members with the right spatial
   structure (independent pixel noise averages out and gives too narrow pooled
   ensembles);
3. ``rain_weight`` times the pixel-wise fair CRPS in mm/h, the score nowcasts are
   judged by, so that the heavy-rain tail is not neglected.

Each term is proper, so their sum is proper: the true predictive distribution minimises it;
the weights only change what a finite network trades off first.

References
----------
C. A. T. Ferro, "Fair scores for ensemble forecasts", QJRMS 140 (2014).
T. Gneiting and A. E. Raftery, "Strictly proper scoring rules, prediction, and estimation",
JASA 102 (2007).
L. Pacchiardi, R. Adewoyin, P. Dueben and R. Dutta, "Probabilistic forecasting with
generative networks via scoring rule minimization", JMLR 25 (2024) (patched scores for
spatial structure).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqdyn._checks import as_float, as_int
from uqdyn.models.motion.networks import PeriodicUNet
from uqdyn.predictive import Ensemble

__all__ = ["GenerativeNowcaster", "fair_crps", "fit_generative_nowcaster"]

#: Offset (mm/h) of the learning space ``v = log(1 + R / OFFSET)``.
OFFSET = 0.1
#: Slope below 0 of the censored learning value in the loss (see the module docs).
_LEAK = 0.01
#: Largest learning-space value back-transformed (about 3.3e3 mm/h); keeps rain finite.
_V_MAX = 10.4


def _to_learning(rain: Tensor) -> Tensor:
    """``log(1 + R / 0.1)`` of rain in mm/h (NaN stays NaN, negative rain counts as 0)."""
    return torch.log1p(rain.clamp_min(0.0) / OFFSET)


def _to_rain(v: Tensor) -> Tensor:
    """Rain in mm/h from learning values: ``max(0.1 (e^v - 1), 0)``, exactly 0 for v <= 0."""
    return (OFFSET * torch.expm1(v.clamp(max=_V_MAX))).clamp_min(0.0)


def fair_crps(members: Tensor, target: Tensor) -> Tensor:
    r"""Fair CRPS of an ensemble at every point, differentiable in the members.

    .. math::
        \frac1m \sum_i |x_i - y| - \frac{1}{m(m-1)} \sum_i (2i - m - 1)\, x_{(i)}

    with :math:`x_{(1)} \le \dots \le x_{(m)}` the sorted members (the second sum is
    :math:`\sum_{i<j} |x_i - x_j|`); equal to
    ``uqdyn.scoring.crps_ensemble(target, members, member_dim=0, estimator="fair")``.

    Parameters
    ----------
    members : Tensor, shape (m, *shape)
        ``m >= 2`` members, member axis first.
    target : Tensor, shape (*shape)
        The observations (NaN gives NaN at that point).

    Returns
    -------
    Tensor, shape (*shape)

    Examples
    --------
    >>> import torch
    >>> fair_crps(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0]))
    tensor([0.])
    """
    if not isinstance(members, Tensor) or not isinstance(target, Tensor):
        raise TypeError(
            f"members and target are {type(members).__name__} and {type(target).__name__}; "
            "expected torch.Tensors"
        )
    m = members.shape[0] if members.dim() else 0
    if m < 2 or tuple(members.shape[1:]) != tuple(target.shape):
        raise ValueError(
            f"members has shape {tuple(members.shape)} and target {tuple(target.shape)}; "
            "expected members (m, *target.shape) with m >= 2"
        )
    skill = (members - target).abs().mean(0)
    ranked = torch.sort(members, dim=0).values
    ranks = torch.arange(1, m + 1, device=members.device, dtype=members.dtype)
    coef = (2.0 * ranks - m - 1.0).reshape((m,) + (1,) * target.dim())
    return skill - (coef * ranked).sum(0) / (m * (m - 1))


def _check_rain(value: Any, name: str, frames: int | None, min_size: int) -> Tensor:
    """A (batch, time, H, W) floating tensor, NaN allowed, +-inf refused."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} is a {type(value).__name__}; expected a torch.Tensor")
    if value.dim() != 4:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)}; expected (batch, time, height, width) "
            "rain in mm/h"
        )
    if not value.is_floating_point():
        raise TypeError(f"{name} has dtype {value.dtype}; expected float32 or float64")
    if frames is not None and value.shape[1] != frames:
        raise ValueError(
            f"{name} has shape {tuple(value.shape)} with {value.shape[1]} frames; expected "
            f"{frames} frames (batch, {frames}, height, width)"
        )
    h, w = value.shape[-2:]
    if h % min_size or w % min_size or h == 0 or w == 0:
        raise ValueError(
            f"{name} has a {h} x {w} grid; expected height and width that are positive "
            f"multiples of {min_size} (the network pools {min_size.bit_length() - 1} times)"
        )
    if bool(torch.isinf(value).any()):
        raise ValueError(
            f"{name} holds {int(torch.isinf(value).sum())} infinite values; expected finite "
            "rain in mm/h (NaN marks a pixel that was not observed)"
        )
    return value


def _pooled(x: Tensor, weight: Tensor, scale: int) -> Tensor:
    """Weighted average over ``scale x scale`` windows of ``(..., H, W)`` fields."""
    lead = x.shape[:-2]
    num = F.avg_pool2d((x * weight).reshape(-1, 1, *x.shape[-2:]), scale)
    den = F.avg_pool2d(weight.expand_as(x).reshape(-1, 1, *x.shape[-2:]), scale)
    out = num / den.clamp_min(1e-12)
    return out.reshape(*lead, *out.shape[-2:])


class GenerativeNowcaster(nn.Module):
    r"""Conditional generator of precipitation nowcast ensembles (see the module docs).

    Parameters
    ----------
    n_input : int
        Input frames per forecast (e.g. 5 five-minute radar frames).
    leads : int
        Frames generated at once (e.g. 12, one hour); :meth:`nowcast` rolls out further
        autoregressively.
    hidden : int
        Channels of the first U-Net level (level ``l`` has ``hidden * 2**l``). Default 16.
    depth : int
        U-Net pooling levels; grids must have height and width divisible by ``2**depth``.
    latent_channels : int
        Channels of the latent field. Default 4.
    latent_scale : int
        The latent is drawn on a grid ``latent_scale`` times coarser (rounded up) and
        upsampled bilinearly. Default 4.
    members_per_batch : int
        Members ``m >= 2`` drawn per sample in :meth:`loss` (the fair CRPS needs two).
    predict_members : int
        Members of the :class:`~uqdyn.predictive.Ensemble` of :meth:`predict_batch`.
    pool_scales : sequence of int
        Window sizes of the pooled CRPS term (e.g. ``(4, 8)``); empty for none.
    pool_weight : float
        Weight of each pooled term.
    rain_weight : float
        Weight of the pixel-wise CRPS in mm/h.

    Examples
    --------
    >>> import torch, uqdyn
    >>> with uqdyn.seeded(0):
    ...     model = GenerativeNowcaster(3, 2, hidden=4, depth=1)
    >>> rain = torch.rand(2, 3, 8, 8)
    >>> tuple(model.nowcast(rain, steps=4, members=5, seed=1).members.shape)
    (5, 2, 4, 8, 8)
    """

    def __init__(
        self,
        n_input: int,
        leads: int,
        *,
        hidden: int = 16,
        depth: int = 2,
        latent_channels: int = 4,
        latent_scale: int = 4,
        members_per_batch: int = 4,
        predict_members: int = 8,
        pool_scales: Sequence[int] = (4, 8),
        pool_weight: float = 1.0,
        rain_weight: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_input = as_int(n_input, "n_input", minimum=1)
        self.leads = as_int(leads, "leads", minimum=1)
        self.depth = as_int(depth, "depth", minimum=0)
        self.latent_channels = as_int(latent_channels, "latent_channels", minimum=1)
        self.latent_scale = as_int(latent_scale, "latent_scale", minimum=1)
        self.members_per_batch = as_int(members_per_batch, "members_per_batch", minimum=2)
        self.predict_members = as_int(predict_members, "predict_members", minimum=1)
        if isinstance(pool_scales, (str, bytes)) or not isinstance(pool_scales, Sequence):
            raise TypeError(
                f"pool_scales is a {type(pool_scales).__name__}; expected a sequence of ints"
            )
        self.pool_scales = tuple(
            as_int(s, f"pool_scales[{i}]", minimum=2) for i, s in enumerate(pool_scales)
        )
        self.pool_weight = as_float(pool_weight, "pool_weight", nonnegative=True)
        self.rain_weight = as_float(rain_weight, "rain_weight", nonnegative=True)
        self.net = PeriodicUNet(
            2 * self.n_input + self.latent_channels,
            self.leads,
            width=as_int(hidden, "hidden", minimum=1),
            depth=self.depth,
            head_scale=0.1,
        )
        #: The :class:`~uqdyn.train.FitResult` of :func:`fit_generative_nowcaster`, if any.
        self.fit_result: Any = None

    # ------------------------------------------------------------------ generation
    def _dtype(self) -> torch.dtype:
        return self.net.head.weight.dtype

    def _generate(
        self, values: Tensor, observed: Tensor, members: int, generator: torch.Generator | None
    ) -> Tensor:
        """Learning-space members ``(members, B, leads, H, W)`` from filled inputs.

        ``values`` ``(B, n_input, H, W)`` learning-space frames with 0 where not observed,
        ``observed`` their masks as 0/1 of the same dtype.
        """
        b, _, h, w = values.shape
        cond = torch.cat([values, observed], dim=1)
        cond = cond.unsqueeze(0).expand(members, -1, -1, -1, -1).reshape(members * b, -1, h, w)
        s = self.latent_scale
        coarse = (members * b, self.latent_channels, -(-h // s), -(-w // s))
        z = torch.randn(coarse, generator=generator, device=values.device, dtype=values.dtype)
        if s > 1:
            z = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
        out, _ = self.net(torch.cat([cond, z], dim=1))
        out = values[:, -1:].repeat(members, 1, 1, 1) + out
        return out.reshape(members, b, self.leads, h, w)

    def _prepare(self, rain: Tensor) -> tuple[Tensor, Tensor]:
        dtype = self._dtype()
        device = self.net.head.weight.device
        rain = rain.to(device=device, dtype=dtype)
        observed = ~torch.isnan(rain)
        values = torch.where(observed, _to_learning(rain), torch.zeros_like(rain))
        return values, observed.to(dtype)

    def nowcast(self, inputs: Tensor, steps: int, members: int, *, seed: int = 0) -> Ensemble:
        """Ensemble nowcast of the next ``steps`` frames.

        Up to ``leads`` frames come from one pass; longer nowcasts repeat it, each member
        continuing from its own last ``n_input`` frames with a new latent draw.

        Parameters
        ----------
        inputs : Tensor, shape (batch, n_input, H, W)
            Measured rain in mm/h, float32 or float64; NaN where not observed.
        steps : int
            Frames to forecast, >= 1.
        members : int
            Ensemble members, >= 1.
        seed : int
            Seed of the latent draws (a local generator; the global RNG is untouched).

        Returns
        -------
        Ensemble
            Members ``(members, batch, steps, H, W)`` in mm/h, finite, >= 0 (exactly 0 where
            dry), in the dtype and on the device of ``inputs``.
        """
        _check_rain(inputs, "inputs", self.n_input, 2**self.depth)
        steps = as_int(steps, "steps", minimum=1)
        members = as_int(members, "members", minimum=1)
        seed = as_int(seed, "seed", minimum=0)
        values, observed = self._prepare(inputs)
        generator = torch.Generator(device=values.device).manual_seed(seed)
        b, _, h, w = values.shape
        with torch.no_grad():
            out = self._generate(values, observed, members, generator)
            frames = [out]
            done = self.leads
            if done < steps:
                # each member continues from its own trajectory: (members * B, ...) rows
                hist_v = values.repeat(members, 1, 1, 1)
                hist_m = observed.repeat(members, 1, 1, 1)
                traj_v = torch.cat([hist_v, out.reshape(members * b, self.leads, h, w)], 1)
                traj_m = torch.cat([hist_m, torch.ones_like(traj_v[:, hist_v.shape[1] :])], 1)
                while done < steps:
                    v = traj_v[:, -self.n_input :]
                    m = traj_m[:, -self.n_input :]
                    # rain below the floor is dry: continue from what the members show
                    nxt = self._generate(v.clamp_min(0.0), m, 1, generator)[0]
                    frames.append(nxt.reshape(members, b, self.leads, h, w))
                    traj_v = torch.cat([traj_v, nxt], 1)
                    traj_m = torch.cat([traj_m, torch.ones_like(nxt)], 1)
                    done += self.leads
            rain = _to_rain(torch.cat(frames, dim=2)[:, :, :steps])
        return Ensemble(rain.to(device=inputs.device, dtype=inputs.dtype), estimator="fair")

    # ------------------------------------------------------------------ contract
    def _check_batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(
                f"batch is a {type(batch).__name__}; expected (inputs, targets) tensors of "
                f"shapes (B, {self.n_input}, H, W) and (B, {self.leads}, H, W)"
            )
        inputs = _check_rain(batch[0], "batch[0] (inputs)", self.n_input, 2**self.depth)
        targets = _check_rain(batch[1], "batch[1] (targets)", self.leads, 2**self.depth)
        if inputs.shape[0] != targets.shape[0] or inputs.shape[-2:] != targets.shape[-2:]:
            raise ValueError(
                f"batch has inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)}; "
                "expected the same batch size and grid"
            )
        return inputs, targets

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """Proper-score loss of a batch (module docs: pixel, pooled and rain-space CRPS).

        Parameters
        ----------
        batch : (inputs, targets)
            ``inputs (B, n_input, H, W)`` and ``targets (B, leads, H, W)``, rain in mm/h,
            NaN where not observed (NaN targets are left out). The latents come from
            torch's global RNG (seeded by :func:`uqdyn.train.fit`).

        Returns
        -------
        Tensor, shape ()
        """
        inputs, targets = self._check_batch(batch)
        values, observed = self._prepare(inputs)
        target_rain = targets.to(values)
        keep = ~torch.isnan(target_rain)
        if not bool(keep.any()):
            raise ValueError("batch[1] (targets) is all NaN; expected some observed pixels")
        target_v = torch.where(keep, _to_learning(target_rain), torch.zeros_like(target_rain))
        weight = keep.to(values.dtype)
        count = weight.sum()
        raw = self._generate(values, observed, self.members_per_batch, None)
        sample = torch.where(raw > 0, raw, _LEAK * raw)  # censored at dry, see module docs
        total = (fair_crps(sample, target_v) * weight).sum() / count
        for scale in self.pool_scales:
            if scale > min(values.shape[-2:]):
                continue
            frac = F.avg_pool2d(weight.reshape(-1, 1, *weight.shape[-2:]), scale)
            valid = (frac >= 0.5).reshape(*weight.shape[:-2], *frac.shape[-2:]).to(values)
            pooled = fair_crps(_pooled(sample, weight, scale), _pooled(target_v, weight, scale))
            term = (pooled * valid).sum() / valid.sum().clamp_min(1.0)
            total = total + self.pool_weight * term
        if self.rain_weight > 0:
            rain = fair_crps(_to_rain(raw), torch.where(keep, target_rain, 0.0))
            total = total + self.rain_weight * (rain * weight).sum() / count
        return total

    def predict_batch(self, batch: tuple[Tensor, Tensor]) -> tuple[Ensemble, Tensor, Tensor]:
        """``(Ensemble, targets, observed)`` for validation by :func:`uqdyn.train.fit`.

        The Ensemble has ``predict_members`` members ``(M, B, leads, H, W)`` in mm/h (fixed
        seed 0, fair CRPS estimator); ``targets (B, leads, H, W)`` and the boolean mask
        ``observed`` of the same shape (NaN targets are masked out).
        """
        inputs, targets = self._check_batch(batch)
        ens = self.nowcast(inputs, self.leads, self.predict_members, seed=0)
        return ens, targets, ~torch.isnan(targets)


def _window_sampler(
    rain: Tensor, n_input: int, leads: int, batch_size: int, augment: bool
) -> Callable[[torch.Generator], tuple[Tensor, Tensor]]:
    """``generator -> (inputs, targets)``: random sequences, random start and symmetry."""
    n, time = rain.shape[:2]
    starts = time - n_input - leads + 1

    def draw(generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(n, (batch_size,), generator=generator)
        t0 = torch.randint(starts, (batch_size,), generator=generator)
        offsets = torch.arange(n_input + leads)
        window = rain[idx[:, None], t0[:, None] + offsets[None, :]]
        if augment:  # the rain physics has no preferred direction on the grid
            k = int(torch.randint(4, (), generator=generator))
            window = torch.rot90(window, k, dims=(-2, -1))
            if bool(torch.randint(2, (), generator=generator)):
                window = window.flip(-1)
        return window[:, :n_input].contiguous(), window[:, n_input:].contiguous()

    return draw


def fit_generative_nowcaster(
    sequences: Any,
    *,
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 1e-3,
    members_per_batch: int = 4,
    seed: int = 0,
    hidden: int = 16,
    device: str | torch.device | None = None,
    leads: int | None = None,
    augment: bool = True,
    val_sequences: Any = None,
    progress: bool = False,
    **options: Any,
) -> GenerativeNowcaster:
    """Train a :class:`GenerativeNowcaster` on radar sequences with :func:`uqdyn.train.fit`.

    Parameters
    ----------
    sequences : RadarSequences
        Anything with ``rain (n, time, H, W)`` (mm/h, NaN where not observed) and
        ``n_input``; the model learns ``leads`` frames after each window of ``n_input``.
    steps, batch_size, lr :
        Optimisation steps, sequences per batch, Adam learning rate (cosine schedule).
    members_per_batch : int
        Members per sample in the fair-CRPS loss (>= 2).
    seed : int
        Seeds the initial weights and :func:`uqdyn.train.fit` (batches and latents).
    hidden : int
        First-level width of the U-Net.
    device :
        Training device; ``None`` picks CUDA when available, else the CPU.
    leads : int, optional
        Frames generated at once; default all frames after the inputs.
    augment : bool
        Rotate by multiples of 90 degrees and mirror each batch (random, seeded).
    val_sequences : RadarSequences, optional
        Validated (loss and CRPS) every ``steps // 10`` steps; the best state is kept.
    progress : bool
        Show training progress.
    **options :
        Further :class:`GenerativeNowcaster` arguments (``depth``, ``latent_channels``, ...).

    Returns
    -------
    GenerativeNowcaster
        The trained model (on ``device``); ``model.fit_result`` holds the
        :class:`~uqdyn.train.FitResult`.
    """
    from uqdyn import seeded
    from uqdyn.train import fit

    rain, n_input = _sequence_rain(sequences, "sequences")
    leads = rain.shape[1] - n_input if leads is None else as_int(leads, "leads", minimum=1)
    if leads < 1 or n_input + leads > rain.shape[1]:
        raise ValueError(
            f"sequences have {rain.shape[1]} frames with n_input={n_input}; expected at "
            f"least n_input + leads = {n_input + max(leads, 1)}"
        )
    batch_size = as_int(batch_size, "batch_size", minimum=1)
    with seeded(as_int(seed, "seed", minimum=0)):
        model = GenerativeNowcaster(
            n_input, leads, hidden=hidden, members_per_batch=members_per_batch, **options
        )
    val: dict[str, Any] = {}
    if val_sequences is not None:
        v_rain, v_in = _sequence_rain(val_sequences, "val_sequences")
        if v_in != n_input:
            raise ValueError(f"val_sequences has n_input={v_in}; expected {n_input}")
        chunks = v_rain[:, : n_input + leads].split(batch_size)
        val = {
            "val_data": [(c[:, :n_input], c[:, n_input:]) for c in chunks],
            "val_every": max(1, steps // 10),
            "restore_best": True,
            "monitor": "val_crps",
        }
    result = fit(
        model,
        _window_sampler(rain, n_input, leads, batch_size, bool(augment)),
        steps=steps,
        lr=lr,
        scheduler="cosine",
        grad_clip=1.0,
        seed=seed,
        device="auto" if device is None else device,
        progress=progress,
        **val,
    )
    model.fit_result = result
    return model


def _sequence_rain(sequences: Any, name: str) -> tuple[Tensor, int]:
    rain = getattr(sequences, "rain", None)
    n_input = getattr(sequences, "n_input", None)
    if not isinstance(rain, Tensor) or n_input is None:
        raise TypeError(
            f"{name} is a {type(sequences).__name__}; expected RadarSequences (with rain "
            "(n, time, H, W) and n_input)"
        )
    if rain.dim() != 4 or not rain.is_floating_point():
        raise ValueError(
            f"{name}.rain has shape {tuple(rain.shape)} and dtype {rain.dtype}; expected "
            "floating (n, time, height, width)"
        )
    return rain, as_int(n_input, f"{name}.n_input", minimum=1)
