"""Building blocks of the neural-process family: MLPs, masked aggregation and attention.

Every block works on padded point sets ``(batch, points, features)`` with a boolean mask
``(batch, points)`` (``True`` = a real point) so that padded points never influence a result.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__: list[str] = []


class _MLP(nn.Module):
    """``depth`` linear layers of width ``width`` with ReLU between them (none after the last).

    Maps ``(..., in_dim)`` to ``(..., out_dim)``.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth={depth}; expected at least one layer")
        layers: list[nn.Module] = []
        dims = [in_dim] + [width] * (depth - 1) + [out_dim]
        for i in range(depth):
            layers.append(nn.Linear(dims[i], dims[i + 1]))
            if i < depth - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def _masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``h (B, N, D)`` over the real points of ``mask (B, N)``; ``(B, D)``.

    A task without real points aggregates to the zero vector.
    """
    weights = mask.to(h.dtype).unsqueeze(-1)
    total = (h * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp_min(1.0)
    return total / count


def _bounded_scale(raw: Tensor, min_std: float) -> Tensor:
    """Standard deviation bounded below: ``min_std + (1 - min_std) * softplus(raw)``."""
    return min_std + (1.0 - min_std) * F.softplus(raw)


class _MaskedMultiheadAttention(nn.Module):
    """Scaled dot-product multi-head attention whose padded keys get weight exactly zero.

    ``forward(queries (B, Nq, Dq), keys (B, Nk, Dk), values (B, Nk, Dv), key_mask (B, Nk))``
    returns ``(B, Nq, dim)``. A query whose task has no real key attends to nothing and gets
    the zero vector before the output projection (Vaswani et al., 2017).
    """

    def __init__(self, query_dim: int, key_dim: int, value_dim: int, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim={dim} is not divisible by num_heads={heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q = nn.Linear(query_dim, dim, bias=False)
        self.to_k = nn.Linear(key_dim, dim, bias=False)
        self.to_v = nn.Linear(value_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def _split(self, t: Tensor) -> Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor) -> Tensor:
        q = self._split(self.to_q(queries))
        k = self._split(self.to_k(keys))
        v = self._split(self.to_v(values))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # (B, H, Nq, Nk)
        keep = key_mask[:, None, None, :]
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1) * keep.to(scores.dtype)
        out = (weights @ v).transpose(1, 2)
        out = out.reshape(queries.shape[0], queries.shape[1], self.heads * self.head_dim)
        return self.to_out(out)


class _AttentionBlock(nn.Module):
    """Attention with a residual connection, layer norm and a position-wise MLP.

    ``out = LN(h + MLP(h))`` with ``h = LN(Q + attention(Q, K, V))``, where ``Q`` is the
    query representation (as in the attention of Kim et al., 2019, and of transformers).
    """

    def __init__(self, query_dim: int, key_dim: int, value_dim: int, dim: int, heads: int):
        super().__init__()
        self.attention = _MaskedMultiheadAttention(query_dim, key_dim, value_dim, dim, heads)
        self.query_proj = nn.Linear(query_dim, dim) if query_dim != dim else nn.Identity()
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = _MLP(dim, dim, dim, 2)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor) -> Tensor:
        h = self.norm1(self.query_proj(queries) + self.attention(queries, keys, values, key_mask))
        return self.norm2(h + self.mlp(h))
