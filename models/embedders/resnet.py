"""The ``resnet`` embedder: a torchvision ResNet-18 or -34 over the window read as an image.

A window ``(C, 800)`` is reshaped to ``C`` planes of 25 x 32 samples (each row
is 32 consecutive samples, 160 ms at 200 Hz), so EEG channels play the part of
colour planes. The network is adapted to that small input as ResNets for CIFAR
are: the first convolution is 3 x 3 with stride 1 and there is no max-pool, so
the 25 x 32 grid is only reduced by the three strided stages (to 4 x 4). The
classifier is replaced by a head FC-ReLU-Dropout-FC-BatchNorm, and the output
is L2-normalised: cosine similarity compares windows, as for every embedder.

Inputs are divided by per-channel scales measured on the training windows, so
amplitude, which differs between people, is kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .signal_input import scaled_windows

ROWS, COLUMNS = 25, 32


@dataclass(frozen=True)
class ResNetConfig:
    """Architecture of the ``resnet`` embedder; stored in the checkpoint."""

    n_channels: int
    depth: int = 18
    dim: int = 128
    hidden: int = 256
    dropout: float = 0.3
    window: int = ROWS * COLUMNS

    def __post_init__(self) -> None:
        if self.depth not in (18, 34):
            raise ValueError(f"resnet depth must be 18 or 34, got {self.depth}")
        if self.window != ROWS * COLUMNS:
            raise ValueError(f"the resnet embedder reads {ROWS * COLUMNS}-sample windows, not {self.window}")
        if self.n_channels < 1 or self.dim < 1 or self.hidden < 1:
            raise ValueError("n_channels, dim and hidden must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ResNetConfig:
        return cls(**data)


def _backbone(config: ResNetConfig) -> nn.Module:
    from torchvision.models import resnet18, resnet34

    net = (resnet18 if config.depth == 18 else resnet34)(weights=None)
    net.conv1 = nn.Conv2d(config.n_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()  # global-average-pooled 512 features out
    return net


class ResNetEmbedder(nn.Module):
    """Window ``(B, C, 800)`` -> unit vector ``(B, dim)``."""

    name = "resnet"
    conv_part = "backbone"  # the convolutional part, which reads :meth:`conv_input`

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("input_scale", torch.ones(config.n_channels))
        self.backbone = _backbone(config)
        self.head = nn.Sequential(
            nn.Linear(512, config.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Linear(config.hidden, config.dim),
            nn.BatchNorm1d(config.dim),
        )

    @property
    def dim(self) -> int:
        return self.config.dim

    def conv_input(self, x: torch.Tensor) -> torch.Tensor:
        """Windows ``(B, C, 800)`` as the backbone reads them: scaled, one 25 x 32 plane per channel."""
        x = scaled_windows(x, self.input_scale, self.config.window, self.name)
        return x.reshape(x.shape[0], self.config.n_channels, ROWS, COLUMNS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(self.conv_input(x))), dim=1)
