"""What the embedders that read the signal itself share: checking and scaling their input."""

from __future__ import annotations

import torch


def scaled_windows(x: torch.Tensor, input_scale: torch.Tensor, window: int, name: str) -> torch.Tensor:
    """Windows ``(B, C, window)`` divided by their per-channel scales, or a ValueError naming the shape."""
    n_channels = len(input_scale)
    if x.ndim != 3 or x.shape[1] != n_channels or x.shape[2] != window:
        raise ValueError(
            f"{name} embedder expects windows (batch, {n_channels}, {window}), got {tuple(x.shape)}"
        )
    return x.float() / input_scale[:, None]
