"""The causal denoiser: a gated WaveNet with a Mamba block at its midpoint.

The network works on one EEG channel at a time (the channels of a window are
folded into the batch), so one trained denoiser serves any montage. Every
convolution pads on the left only, and the Mamba block is a causal recurrence,
so the output at time t depends on the input up to t and nothing after it.

    x (B, C, L) -> fold channels -> 1x1 conv -> 12 gated dilated conv layers
                   (3 blocks x dilations 1, 2, 4, 8; Mamba after layer 6)
               -> sum of skips -> ReLU, 1x1, ReLU, 1x1 -> + x  -> (B, C, L)

The head's last layer starts at zero, so an untrained denoiser is the identity.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .ssm import Mamba, MambaState


@dataclass(frozen=True)
class DenoiserConfig:
    """Architecture hyper-parameters; stored in the checkpoint."""

    residual_channels: int = 16
    skip_channels: int = 32
    kernel_size: int = 3
    n_blocks: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8)
    use_mamba: bool = True
    d_state: int = 8
    d_conv: int = 4
    expand: int = 1

    @property
    def n_layers(self) -> int:
        return self.n_blocks * len(self.dilations)

    @property
    def receptive_field(self) -> int:
        """Samples of the past seen by the convolutions alone (Mamba sees all of it)."""
        return 1 + self.n_blocks * sum(self.dilations) * (self.kernel_size - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DenoiserConfig:
        data = dict(data)
        data["dilations"] = tuple(int(d) for d in data["dilations"])
        return cls(**data)


class CausalConv1d(nn.Conv1d):
    """A dilated Conv1d that pads ``(kernel_size - 1) * dilation`` on the left only.

    In streaming, ``cache`` holds the last ``left_pad`` inputs in place of the padding.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
        self.left_pad = (kernel_size - 1) * dilation

    def forward(self, x: torch.Tensor, cache: torch.Tensor | None = None) -> torch.Tensor:
        if cache is None:
            return super().forward(F.pad(x, (self.left_pad, 0)))  # (B, C_out, L)
        return super().forward(torch.cat([cache, x], dim=-1))  # (B, C_out, L)


class GatedLayer(nn.Module):
    """One WaveNet layer: dilated causal conv, tanh x sigmoid gate, residual and skip."""

    def __init__(self, residual: int, skip: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = CausalConv1d(residual, 2 * residual, kernel_size, dilation)
        self.res = nn.Conv1d(residual, residual, 1)
        self.skip = nn.Conv1d(residual, skip, 1)

    def forward(
        self, h: torch.Tensor, cache: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        filt, gate = self.conv(h, cache).chunk(2, dim=1)  # (N, R, L) each
        g = torch.tanh(filt) * torch.sigmoid(gate)
        return (h + self.res(g)) * math.sqrt(0.5), self.skip(g)


class MambaResidual(nn.Module):
    """``h + Mamba(LayerNorm(h))`` over time; LayerNorm acts per sample, so it is causal."""

    def __init__(self, channels: int, config: DenoiserConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(channels, d_state=config.d_state, d_conv=config.d_conv, expand=config.expand)

    def forward(self, h: torch.Tensor, state: MambaState | None = None):
        seq = self.norm(h.transpose(1, 2))  # (N, L, R)
        if state is None:
            return h + self.mamba(seq).transpose(1, 2)
        out, state = self.mamba.step(seq, state)
        return h + out.transpose(1, 2), state


@dataclass
class DenoiserState:
    """Streaming state: per layer the last conv inputs, and the Mamba block's state."""

    caches: list[torch.Tensor]  # per layer (N, R, left_pad)
    mamba: MambaState | None


class CausalDenoiser(nn.Module):
    """Channel-independent causal denoiser; ``forward`` maps (B, C, L) to (B, C, L)."""

    def __init__(self, config: DenoiserConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DenoiserConfig()
        r, s = config.residual_channels, config.skip_channels
        self.inp = nn.Conv1d(1, r, 1)
        self.layers = nn.ModuleList(
            GatedLayer(r, s, config.kernel_size, d) for _ in range(config.n_blocks) for d in config.dilations
        )
        self.mamba_after = config.n_layers // 2 - 1  # index of the layer Mamba follows
        self.mamba = MambaResidual(r, config) if config.use_mamba else None
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(s, s, 1), nn.ReLU(), nn.Conv1d(s, 1, 1))
        nn.init.zeros_(self.head[-1].weight)
        nn.init.zeros_(self.head[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Denoise whole sequences ``(B, C, L)``, every one starting from silence."""
        return self._run(x, None)[0]

    def allocate_state(
        self,
        batch: int,
        n_channels: int,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> DenoiserState:
        """Zeroed streaming state for ``batch`` streams of ``n_channels`` channels."""
        p = next(self.parameters())
        device, dtype = device or p.device, dtype or p.dtype
        n = batch * n_channels
        caches = [
            torch.zeros(n, self.config.residual_channels, layer.conv.left_pad, device=device, dtype=dtype)
            for layer in self.layers
        ]
        mamba = self.mamba.mamba.allocate_state(n, device=device, dtype=dtype) if self.mamba else None
        return DenoiserState(caches, mamba)

    def step(self, x: torch.Tensor, state: DenoiserState) -> tuple[torch.Tensor, DenoiserState]:
        """Denoise the next chunk ``(B, C, T)`` of streams, any ``T >= 1``, continuing ``state``.

        Feeding a sequence chunk by chunk gives the output of one ``forward`` over it.
        """
        return self._run(x, state)

    def _run(self, x: torch.Tensor, state: DenoiserState | None) -> tuple[torch.Tensor, DenoiserState | None]:
        if x.ndim != 3:
            raise ValueError(f"denoiser input must be (batch, channels, time), got {tuple(x.shape)}")
        b, c, length = x.shape
        flat = x.reshape(b * c, 1, length)  # (N, 1, L) with N = B*C
        h = self.inp(flat)  # (N, R, L)
        new_caches: list[torch.Tensor] = []
        new_mamba = None
        skips = 0
        for i, layer in enumerate(self.layers):
            cache = None
            if state is not None:
                cache = state.caches[i]
                keep = cache.shape[-1]
                new_caches.append(torch.cat([cache, h], dim=-1)[..., -keep:] if keep else cache)
            h, skip = layer(h, cache)
            skips = skips + skip  # (N, S, L)
            if self.mamba is not None and i == self.mamba_after:
                if state is None:
                    h = self.mamba(h)
                else:
                    h, new_mamba = self.mamba(h, state.mamba)
        out = flat + self.head(skips)  # (N, 1, L)
        new_state = DenoiserState(new_caches, new_mamba) if state is not None else None
        return out.reshape(b, c, length), new_state


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale-invariant SNR in dB over the last axis: ``10 log10(|s|^2 / |e|^2)``.

    Both signals are made zero-mean; ``s`` is the projection of the estimate on
    the reference and ``e`` the rest of the estimate.
    """
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    reference = reference - reference.mean(dim=-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))
