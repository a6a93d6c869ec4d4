"""What the embedders that read the signal itself share: checking and scaling their input,
and measuring the scale."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def scaled_windows(x: torch.Tensor, input_scale: torch.Tensor, window: int, name: str) -> torch.Tensor:
    """Windows ``(B, C, window)`` divided by their per-channel scales, or a ValueError naming the shape."""
    n_channels = len(input_scale)
    if x.ndim != 3 or x.shape[1] != n_channels or x.shape[2] != window:
        raise ValueError(
            f"{name} embedder expects windows (batch, {n_channels}, {window}), got {tuple(x.shape)}"
        )
    return x.float() / input_scale[:, None]


def set_input_scale(net: nn.Module, recordings: Sequence[Sequence[np.ndarray]]) -> None:
    """Set ``net.input_scale`` to the per-channel spread of the recordings ``(C, N)`` it is trained on."""
    scale = np.concatenate([r for rs in recordings for r in rs], axis=1).std(axis=1)
    net.input_scale.copy_(torch.as_tensor(np.maximum(scale, 1e-6), dtype=torch.float32))
