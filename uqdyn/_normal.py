"""Standard normal density, distribution and quantile functions shared by the package.

All functions are elementwise on tensors of any shape and keep dtype and device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["SQRT2", "LOG_SQRT_2PI", "std_normal_pdf", "std_normal_cdf", "std_normal_ppf"]

SQRT2 = math.sqrt(2.0)
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def std_normal_pdf(z: Tensor) -> Tensor:
    """``phi(z) = exp(-z^2 / 2) / sqrt(2 pi)``, elementwise."""
    return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI


def std_normal_cdf(z: Tensor) -> Tensor:
    """``Phi(z)`` through ``erfc``, accurate in the lower tail; elementwise."""
    return 0.5 * torch.erfc(-z / SQRT2)


def std_normal_ppf(p: Tensor) -> Tensor:
    """``Phi^{-1}(p)`` for ``p`` in ``(0, 1)``; elementwise.

    Through ``torch.special.ndtri``, accurate in both tails (``2p - 1`` in ``erfinv`` would
    round ``p = 1e-10`` to ``-1`` in float32 and give ``-inf``); half precision is computed
    in float32.
    """
    if p.dtype in (torch.float32, torch.float64):
        return torch.special.ndtri(p)
    return torch.special.ndtri(p.float()).to(p.dtype)
