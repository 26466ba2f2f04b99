"""Fused GPU kernels for the ensemble CRPS (Triton), used when the inputs live on CUDA.

Both kernels read the forecasts once and write one value per point, with no ``N x M``
temporaries. With ``skill = sum_m |x_m - y| / M`` and the pair sum
``P = sum_{i<j} |x_i - x_j| = sum_i x_(i) (2 i - M + 1)`` (0-based ranks of the sorted
members), every estimator is ``CRPS = skill - c * P`` with the factor ``c`` of
:func:`spread_factor`.

- Up to 64 members: one point per thread, members held in registers, all ``M (M - 1) / 2``
  pairs summed directly (arithmetic, no sorting network).
- More members: a tile of points x members, centred on the observations, is sorted per row
  in registers (bitonic network) and ``P`` is formed from the sorted values (pair
  differences do not change under the shift; centring keeps float32 accurate far from zero).
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["crps_ensemble_fused", "spread_factor", "triton_available"]


def spread_factor(m: int, estimator: str, alpha: float) -> float:
    """Factor ``c`` with ``CRPS = skill - c * sum_i x_(i) (2i - M + 1)``.

    ``nrg``: ``1 / M^2``; ``fair`` and ``pwm``: ``1 / (M (M - 1))`` (zero spread for
    ``M = 1``); ``afair``: ``alpha`` times the fair factor plus ``1 - alpha`` times nrg.
    """
    nrg = 1.0 / (m * m)
    fair = 1.0 / (m * (m - 1)) if m > 1 else 0.0
    if estimator == "nrg":
        return nrg
    if estimator in ("fair", "pwm"):
        return fair
    if estimator == "afair":
        return alpha * fair + (1.0 - alpha) * nrg
    raise ValueError(f"estimator={estimator!r}; expected 'nrg', 'fair', 'pwm' or 'afair'")


@functools.cache
def triton_available() -> bool:
    """True when Triton imports and a CUDA device is present."""
    if not torch.cuda.is_available():
        return False
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # pragma: no cover - depends on the installation
        return False
    return True


@functools.cache
def _kernels():  # pragma: no cover - compiled and run on CUDA only
    import triton
    import triton.language as tl

    @triton.jit
    def pairwise_kernel(
        obs_ptr,
        fc_ptr,
        out_ptr,
        coef_ptr,
        n_rows,
        stride_row,
        M: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        # One point per thread: the M members stay in registers and every pair is
        # visited once (the repeated loads below are the same addresses and are merged by
        # the compiler), so the score costs one read of the input.
        rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        ok = rows < n_rows
        base = fc_ptr + rows * stride_row
        y = tl.load(obs_ptr + rows, mask=ok, other=0.0)
        skill = tl.zeros([BLOCK_N], dtype=y.dtype)
        pairs = tl.zeros([BLOCK_N], dtype=y.dtype)
        for i in tl.static_range(M):
            xi = tl.load(base + i, mask=ok, other=0.0)
            skill += tl.abs(xi - y)
            for j in tl.static_range(i):
                pairs += tl.abs(xi - tl.load(base + j, mask=ok, other=0.0))
        c = tl.load(coef_ptr)
        tl.store(out_ptr + rows, skill / M - c * pairs, mask=ok)

    @triton.jit
    def sorted_kernel(
        obs_ptr,
        fc_ptr,
        out_ptr,
        coef_ptr,
        n_rows,
        n_members,
        stride_row,
        BLOCK_N: tl.constexpr,
        BLOCK_M: tl.constexpr,
    ):
        # Large ensembles: sort each row in registers (bitonic network), then
        # sum_{i<j} |x_i - x_j| = sum_i x_(i) (2 i - M + 1).
        rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
        cols = tl.arange(0, BLOCK_M)
        row_ok = rows < n_rows
        col_ok = cols < n_members
        ok = row_ok[:, None] & col_ok[None, :]
        x = tl.load(
            fc_ptr + rows[:, None] * stride_row + cols[None, :], mask=ok, other=float("inf")
        )
        y = tl.load(obs_ptr + rows, mask=row_ok, other=0.0)
        # centred on the observation (exact for members within a factor 2 of it), so the
        # rank-weighted sum below does not lose the digits of values far from zero
        d = x - y[:, None]
        skill = tl.sum(tl.where(ok, tl.abs(d), 0.0), axis=1)
        xs = tl.sort(d, dim=1)
        rank_coef = tl.where(col_ok, 2 * cols - n_members + 1, 0).to(x.dtype)
        pairs = tl.sum(tl.where(col_ok[None, :], xs, 0.0) * rank_coef[None, :], axis=1)
        c = tl.load(coef_ptr)
        tl.store(out_ptr + rows, skill / n_members - c * pairs, mask=row_ok)

    return pairwise_kernel, sorted_kernel


#: Largest ensemble handled by the fully unrolled pairwise kernel.
PAIRWISE_MAX_MEMBERS = 64


def _block_sizes(m: int) -> tuple[int, int]:
    """Tile of the sorting kernel: (points per program, members padded to a power of 2)."""
    block_m = 1
    while block_m < m:
        block_m *= 2
    return max(1, min(16, 8192 // block_m)), block_m


def crps_ensemble_fused(
    obs: Tensor, forecasts: Tensor, estimator: str, alpha: float
) -> Tensor | None:
    """Fused ensemble CRPS on CUDA, or ``None`` when this path does not apply.

    Parameters
    ----------
    obs:
        Observations, shape ``(N,)``.
    forecasts:
        Members, shape ``(N, M)`` (members last).
    estimator, alpha:
        As in :func:`uqdyn.scoring.crps_ensemble`.

    Returns
    -------
    Tensor of shape ``(N,)`` with the CRPS, or ``None`` when the inputs are not CUDA float
    tensors, need gradients, have more than 1024 members, or Triton is unavailable (the
    caller then uses the torch path).
    """
    if not (forecasts.is_cuda and obs.is_cuda) or not triton_available():
        return None
    if forecasts.dtype not in (torch.float32, torch.float64) or obs.dtype != forecasts.dtype:
        return None
    if forecasts.requires_grad or obs.requires_grad or forecasts.dim() != 2:
        return None
    n, m = forecasts.shape
    if m < 1 or m > 1024 or obs.shape != (n,):
        return None
    if forecasts.stride(1) != 1:
        forecasts = forecasts.contiguous()
    obs = obs.contiguous()
    out = torch.empty(n, device=forecasts.device, dtype=forecasts.dtype)
    if n == 0:
        return out
    coef = torch.tensor(
        [spread_factor(m, estimator, alpha)], device=forecasts.device, dtype=forecasts.dtype
    )
    pairwise, sorted_ = _kernels()
    if m <= PAIRWISE_MAX_MEMBERS:
        block_n = 128
        grid = ((n + block_n - 1) // block_n,)
        pairwise[grid](
            obs, forecasts, out, coef, n, forecasts.stride(0), M=m, BLOCK_N=block_n, num_warps=4
        )
    else:
        block_n, block_m = _block_sizes(m)
        grid = ((n + block_n - 1) // block_n,)
        sorted_[grid](
            obs,
            forecasts,
            out,
            coef,
            n,
            m,
            forecasts.stride(0),
            BLOCK_N=block_n,
            BLOCK_M=block_m,
            num_warps=8,
        )
    return out
