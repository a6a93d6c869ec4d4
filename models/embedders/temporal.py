"""The ``temporal`` embedder: a small EEGNet-like convolutional network on the raw window.

The window ``(C, L)`` is read as one plane ``C x L`` and goes through

1. ``filters`` temporal filters of ``kernel`` samples (a learned filter bank),
2. ``depth_multiplier`` spatial filters per temporal filter, each spanning all
   channels (depthwise over the filter bank), then ELU and average pooling by 4,
3. a separable convolution (depthwise in time, then pointwise) to ``separable``
   feature maps, ELU,
4. statistics pooling over time: the mean and the log standard deviation of
   each feature map, so the output does not depend on where in the window a
   pattern falls,
5. a linear map to ``dim`` values, L2-normalised.

This is the layout of EEGNet (Lawhern et al., 2018) with its classifier
replaced by statistics pooling and an embedding; it has about ten thousand
weights. Inputs are divided by per-channel scales measured on the training
windows, so amplitude, which differs between people, is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .signal_input import scaled_windows


@dataclass(frozen=True)
class TemporalConfig:
    """Architecture of the ``temporal`` embedder; stored in the checkpoint."""

    n_channels: int
    window: int = 800
    filters: int = 16
    kernel: int = 64  # 0.32 s at 200 Hz
    depth_multiplier: int = 2
    separable: int = 64
    separable_kernel: int = 16
    dim: int = 64
    dropout: float = 0.25

    def __post_init__(self) -> None:
        sizes = (self.n_channels, self.window, self.filters, self.kernel, self.depth_multiplier)
        if min((*sizes, self.separable, self.separable_kernel, self.dim)) < 1:
            raise ValueError("every size of the temporal embedder must be positive")
        if self.window < 4 * self.separable_kernel:
            raise ValueError(f"a window of {self.window} samples is too short for the pooled convolutions")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TemporalConfig:
        return cls(**data)


class TemporalEmbedder(nn.Module):
    """Window ``(B, C, L)`` -> unit vector ``(B, dim)``."""

    name = "temporal"
    conv_part = "features"  # the convolutional part, which reads :meth:`conv_input`

    def __init__(self, config: TemporalConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        spatial = c.filters * c.depth_multiplier
        self.register_buffer("input_scale", torch.ones(c.n_channels))
        self.features = nn.Sequential(
            nn.Conv2d(1, c.filters, (1, c.kernel), padding=(0, c.kernel // 2), bias=False),
            nn.BatchNorm2d(c.filters),
            nn.Conv2d(c.filters, spatial, (c.n_channels, 1), groups=c.filters, bias=False),
            nn.BatchNorm2d(spatial),
            nn.ELU(),
            nn.AvgPool2d((1, 4)),
            nn.Dropout(c.dropout),
            nn.Conv2d(
                spatial,
                spatial,
                (1, c.separable_kernel),
                padding=(0, c.separable_kernel // 2),
                groups=spatial,
                bias=False,
            ),
            nn.Conv2d(spatial, c.separable, 1, bias=False),
            nn.BatchNorm2d(c.separable),
            nn.ELU(),
            nn.Dropout(c.dropout),
        )
        self.out = nn.Linear(2 * c.separable, c.dim)

    @property
    def dim(self) -> int:
        return self.config.dim

    def conv_input(self, x: torch.Tensor) -> torch.Tensor:
        """Windows ``(B, C, L)`` as the convolutional part reads them: scaled, ``(B, 1, C, L)``."""
        return scaled_windows(x, self.input_scale, self.config.window, self.name)[:, None]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The statistics-pooled features ``(B, 2 * separable)`` of windows ``(B, C, L)``."""
        maps = self.features(self.conv_input(x)).squeeze(2)  # (B, separable, T)
        spread = maps.var(dim=2, unbiased=False).add(1e-6).log().mul(0.5)
        return torch.cat([maps.mean(dim=2), spread], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.out(self.pooled(x)), dim=1)
