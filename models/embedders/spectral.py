"""The ``spectral`` embedder: spectral features of a window, whitened against
within-person variability (WCCN), L2-normalised.

Features of one window ``(C, L)``, from a Welch estimate (Hann segments of
``nperseg`` samples, half overlap):

- ``psd``: log power spectral density per channel, ``fmin``..``fmax`` Hz;
- ``bandpower``: log absolute and log relative power per channel and band;
- ``coherence``: per band and channel pair, the magnitude and the imaginary
  part of the coherency ``S_ij / sqrt(S_ii S_jj)`` (the imaginary part ignores
  zero-lag coupling such as volume conduction).

The learned part is one linear map ``W``: features are z-scored with training
statistics, projected on their leading principal components, then multiplied
by the inverse square root of the within-subject covariance shrunk toward a
scaled identity. Directions along which one person's windows vary a lot are
damped; cosine similarity of the results compares people.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

MAX_CHANNELS = 512  # as the daemon's inlet: no headset has more
MAX_WINDOW = 2**16  # samples
MAX_WEIGHTS = 2**25  # of the projection: far beyond any fitted one, far below what would exhaust memory

BANDS: tuple[tuple[float, float], ...] = ((1.0, 4.0), (4.0, 8.0), (8.0, 13.0), (13.0, 30.0), (30.0, 40.0))
FEATURE_GROUPS: tuple[str, ...] = ("psd", "bandpower", "coherence")


@dataclass(frozen=True)
class SpectralConfig:
    """Feature and projection settings; stored in the checkpoint."""

    n_channels: int
    sfreq: float = 200.0
    window: int = 800
    nperseg: int = 200
    fmin: float = 1.0
    fmax: float = 40.0
    bands: tuple[tuple[float, float], ...] = BANDS
    features: tuple[str, ...] = FEATURE_GROUPS
    pca_dim: int = 64
    shrinkage: float = 0.5

    def __post_init__(self) -> None:
        sizes = {
            "n_channels": self.n_channels,
            "window": self.window,
            "nperseg": self.nperseg,
            "pca_dim": self.pca_dim,
        }
        wrong = {k: v for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if wrong or self.n_channels > MAX_CHANNELS or self.window > MAX_WINDOW:
            raise ValueError(
                f"spectral sizes must be positive integers, at most {MAX_CHANNELS} channels and a window of "
                f"{MAX_WINDOW} samples, got {wrong or sizes}"
            )
        if not self.bands or not all(len(band) == 2 and band[0] < band[1] for band in self.bands):
            raise ValueError(f"bands must be one or more (low, high) pairs, low below high; got {self.bands}")
        unknown = set(self.features) - set(FEATURE_GROUPS)
        if unknown or not self.features:
            raise ValueError(f"features {self.features} must be a non-empty subset of {FEATURE_GROUPS}")
        if "coherence" in self.features and self.n_channels < 2:
            raise ValueError("coherence features need at least 2 channels")
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {self.shrinkage}")
        if self.nperseg > self.window:
            raise ValueError(f"nperseg {self.nperseg} exceeds the window of {self.window} samples")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpectralConfig:
        data = dict(data)
        data["bands"] = tuple(tuple(float(v) for v in band) for band in data["bands"])
        data["features"] = tuple(data["features"])
        return cls(**data)


class SpectralFeatures(nn.Module):
    """Window ``(B, C, L)`` -> feature vector ``(B, F)``; no learned parameters."""

    def __init__(self, config: SpectralConfig) -> None:
        super().__init__()
        self.config = config
        freqs = torch.fft.rfftfreq(config.nperseg, d=1.0 / config.sfreq)
        self.register_buffer("taper", torch.hann_window(config.nperseg, periodic=False), persistent=False)
        keep = (freqs >= config.fmin) & (freqs <= config.fmax)
        self.register_buffer("psd_bins", keep.nonzero().squeeze(1), persistent=False)
        masks = torch.stack([(freqs >= lo) & (freqs < hi) for lo, hi in config.bands]).float()
        if (masks.sum(1) == 0).any():
            raise ValueError(f"a band of {config.bands} holds no frequency bin at nperseg={config.nperseg}")
        self.register_buffer("band_masks", masks, persistent=False)  # (K, Fq)
        pairs = torch.triu_indices(config.n_channels, config.n_channels, offset=1)
        self.register_buffer("pairs", pairs, persistent=False)  # (2, P)

    def group_slices(self) -> dict[str, slice]:
        """Where each feature group of ``config.features`` sits in the output vector."""
        c, k = self.config.n_channels, len(self.config.bands)
        sizes = {
            "psd": c * len(self.psd_bins),
            "bandpower": 2 * c * k,
            "coherence": 2 * k * self.pairs.shape[1],
        }
        slices, start = {}, 0
        for group in self.config.features:
            slices[group] = slice(start, start + sizes[group])
            start += sizes[group]
        return slices

    @property
    def n_features(self) -> int:
        return max(s.stop for s in self.group_slices().values())

    def spectra(self, x: torch.Tensor) -> torch.Tensor:
        """Short-time Fourier coefficients ``(B, C, Fq, T)`` of Hann segments, half overlap."""
        step = self.config.nperseg // 2
        frames = x.unfold(-1, self.config.nperseg, step)  # (B, C, T, nperseg)
        frames = frames - frames.mean(-1, keepdim=True)
        return torch.fft.rfft(frames * self.taper, dim=-1).transpose(-1, -2)  # (B, C, Fq, T)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.n_channels or x.shape[2] != cfg.window:
            raise ValueError(
                f"spectral embedder expects windows (batch, {cfg.n_channels}, {cfg.window}), "
                f"got {tuple(x.shape)}"
            )
        spec = self.spectra(x.float())
        power = spec.abs().pow(2).mean(-1)  # (B, C, Fq)
        eps = 1e-10
        parts = []
        if "psd" in cfg.features:
            parts.append(torch.log(power[..., self.psd_bins] + eps).flatten(1))
        if "bandpower" in cfg.features:
            band = power @ self.band_masks.T  # (B, C, K)
            total = power[..., self.psd_bins].sum(-1, keepdim=True)  # (B, C, 1)
            parts.append(torch.log(band + eps).flatten(1))
            parts.append(torch.log(band / (total + eps) + eps).flatten(1))
        if "coherence" in cfg.features:
            i, j = self.pairs
            cross = (spec[:, i] * spec[:, j].conj()).mean(-1)  # (B, P, Fq)
            masks = self.band_masks.to(cross.dtype)
            s_ij = cross @ masks.T  # (B, P, K)
            s_ii = (power[:, i] @ self.band_masks.T, power[:, j] @ self.band_masks.T)
            coherency = s_ij / torch.sqrt(s_ii[0] * s_ii[1] + eps)
            parts.append(coherency.abs().flatten(1))
            parts.append(coherency.imag.flatten(1))
        return torch.cat(parts, dim=1)


class SpectralEmbedder(nn.Module):
    """Features -> z-score -> ``W`` (PCA then WCCN) -> unit vector ``(B, D)``."""

    name = "spectral"

    def __init__(self, config: SpectralConfig) -> None:
        super().__init__()
        self.config = config
        self.features = SpectralFeatures(config)
        n = self.features.n_features
        if n * config.pca_dim > MAX_WEIGHTS:  # a configuration read from a checkpoint is data
            raise ValueError(
                f"a projection of {n} features to {config.pca_dim} dimensions is beyond any fitted one "
                f"(at most {MAX_WEIGHTS:,} weights)"
            )
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("scale", torch.ones(n))
        self.register_buffer("projection", torch.eye(n, config.pca_dim))  # (F, D)

    @property
    def dim(self) -> int:
        return self.config.pca_dim

    def project(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.mean) / self.scale  # (B, F)
        return F.normalize(z @ self.projection, dim=1)  # (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))
