"""The classic baseline every report shows beside ours.

Log Welch PSD (1-40 Hz) per channel of the pre-processed window (no
denoiser), z-scored with statistics of the training data, compared by cosine
to the subject's mean enrollment feature.
"""

from __future__ import annotations

import numpy as np
import torch

from ..models.embedders.spectral import SpectralConfig, SpectralFeatures
from .wccn import zscore_stats


def psd_extractor(n_channels: int, sfreq: float, window: int) -> SpectralFeatures:
    return SpectralFeatures(
        SpectralConfig(n_channels=n_channels, sfreq=sfreq, window=window, features=("psd",))
    )


class BaselinePSD(torch.nn.Module):
    """``window -> (log PSD - mean) / scale``; the statistics come from training data."""

    def __init__(self, extractor: SpectralFeatures, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.extractor = extractor
        self.register_buffer("mean", mean.float())
        self.register_buffer("scale", scale.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.extractor(x) - self.mean) / self.scale


def baseline_stats(features: np.ndarray) -> dict[str, torch.Tensor]:
    """Training statistics stored in the checkpoint under ``baseline.``."""
    mean, scale = zscore_stats(features)
    return {"mean": torch.as_tensor(mean), "scale": torch.as_tensor(scale)}
