"""The ``spectral-metric`` embedder: the spectral embedder with a learned metric beside it.

The WCCN-whitened spectral vector ``s`` (unit length, see :mod:`.spectral`) goes
through a small MLP trained by metric learning on the training subjects, giving
a second unit vector ``m``. The output is ``[sqrt(w) s, sqrt(1 - w) m]``, itself
of unit length, so the cosine of two outputs is ``w cos(s) + (1 - w) cos(m)``:
a fusion of the linear and the learned score with weight ``w`` (``fuse``). With
``w = 1`` it scores exactly as the spectral embedder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .spectral import SpectralConfig, SpectralEmbedder


@dataclass(frozen=True)
class SpectralMetricConfig:
    """The spectral part's settings and the MLP's; stored in the checkpoint."""

    spectral: SpectralConfig
    hidden: int = 256
    dim: int = 64
    dropout: float = 0.1
    fuse: float = 0.5  # weight of the spectral cosine in the fused score

    def __post_init__(self) -> None:
        if not 0.0 <= self.fuse <= 1.0:
            raise ValueError(f"fuse must lie in [0, 1], got {self.fuse}")
        if self.hidden < 1 or self.dim < 1:
            raise ValueError("hidden and dim must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpectralMetricConfig:
        data = dict(data)
        data["spectral"] = SpectralConfig.from_dict(data["spectral"])
        return cls(**data)


def metric_head(n_in: int, hidden: int, dim: int, dropout: float) -> nn.Sequential:
    """The MLP of the learned metric: Linear-BN-ReLU-Dropout-Linear."""
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.BatchNorm1d(hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, dim),
    )


def fuse_vectors(s: torch.Tensor, m: torch.Tensor, w: float) -> torch.Tensor:
    """``[sqrt(w) s, sqrt(1 - w) m]``: cosines of the results are ``w cos(s) + (1 - w) cos(m)``."""
    return torch.cat([math.sqrt(w) * s, math.sqrt(1.0 - w) * m], dim=1)


class SpectralMetricEmbedder(nn.Module):
    """Window ``(B, C, L)`` -> unit vector ``(B, spectral dim + dim)``."""

    name = "spectral-metric"

    def __init__(self, config: SpectralMetricConfig, spectral: SpectralEmbedder | None = None) -> None:
        super().__init__()
        self.config = config
        self.spectral = spectral if spectral is not None else SpectralEmbedder(config.spectral)
        if self.spectral.config != config.spectral:
            raise ValueError("the spectral embedder given does not match config.spectral")
        self.head = metric_head(self.spectral.dim, config.hidden, config.dim, config.dropout)

    @property
    def dim(self) -> int:
        return self.spectral.dim + self.config.dim

    def learned(self, s: torch.Tensor) -> torch.Tensor:
        """The learned unit vector of whitened spectral vectors ``s``."""
        return F.normalize(self.head(s), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.spectral(x)
        return fuse_vectors(s, self.learned(s), self.config.fuse)
