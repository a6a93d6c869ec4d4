"""The ``fused`` embedder: the spectral embedder and a learned one, their cosines mixed.

For a window, the spectral embedder gives the unit vector ``s`` and a learned
embedder working on the signal (``resnet`` or ``temporal``) the unit vector
``m``. The output is ``[sqrt(w) s, sqrt(1 - w) m]`` (:func:`fuse_vectors`), so
the cosine of two outputs is ``w cos(s) + (1 - w) cos(m)``: score-level fusion
with the spectral weight ``w`` (``fuse``), carried by the vectors themselves so
that enrollment, the template and the decision treat it as any embedder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .resnet import ResNetConfig, ResNetEmbedder
from .spectral import SpectralConfig, SpectralEmbedder
from .spectral_metric import fuse_vectors
from .temporal import TemporalConfig, TemporalEmbedder

LEARNED: dict[str, tuple[type, type]] = {
    "resnet": (ResNetEmbedder, ResNetConfig),
    "temporal": (TemporalEmbedder, TemporalConfig),
}


@dataclass(frozen=True)
class FusedConfig:
    """The two parts' settings and the fusion weight; stored in the checkpoint."""

    spectral: SpectralConfig
    learned_name: str
    learned: ResNetConfig | TemporalConfig
    fuse: float = 0.5  # weight of the spectral cosine

    def __post_init__(self) -> None:
        if self.learned_name not in LEARNED:
            raise ValueError(f"learned embedder {self.learned_name!r} is not one of {sorted(LEARNED)}")
        if not isinstance(self.learned, LEARNED[self.learned_name][1]):
            raise ValueError(f"the learned config does not belong to a {self.learned_name} embedder")
        if not 0.0 <= self.fuse <= 1.0:
            raise ValueError(f"fuse must lie in [0, 1], got {self.fuse}")
        if self.spectral.n_channels != self.learned.n_channels:
            raise ValueError("the spectral and the learned part must read the same channels")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FusedConfig:
        data = dict(data)
        data["spectral"] = SpectralConfig.from_dict(data["spectral"])
        data["learned"] = LEARNED[data["learned_name"]][1].from_dict(data["learned"])
        return cls(**data)


class FusedEmbedder(nn.Module):
    """Window ``(B, C, L)`` -> unit vector ``(B, spectral dim + learned dim)``."""

    name = "fused"

    def __init__(
        self, config: FusedConfig, spectral: SpectralEmbedder | None = None, learned: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.spectral = spectral if spectral is not None else SpectralEmbedder(config.spectral)
        embedder_cls = LEARNED[config.learned_name][0]
        self.learned = learned if learned is not None else embedder_cls(config.learned)
        if self.spectral.config != config.spectral or self.learned.config != config.learned:
            raise ValueError("the embedders given do not match the config")

    @property
    def dim(self) -> int:
        return self.spectral.dim + self.learned.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fuse_vectors(self.spectral(x), self.learned(x), self.config.fuse)
