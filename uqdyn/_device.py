"""The one interpretation of a ``device=`` argument at uqdyn's entry points."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; otherwise ``torch.device(device)``.

    A CUDA request without a GPU, or anything torch cannot parse, raises ``ValueError`` naming
    ``device``; a bare ``"cuda"`` resolves to the current CUDA device.
    """
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device={device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or a torch.device"
        ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} but CUDA is not available; use 'auto' or 'cpu'")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved
