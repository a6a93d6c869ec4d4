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

# A checkpoint's configuration is data read from a file: a denoiser beyond these sizes is none this
# project trains (the shipped one has about 30,000 weights and keeps 1,440 past values per channel),
# and building it would exhaust memory, so its configuration is refused first.
MAX_WEIGHTS = 2**25
MAX_HISTORY = 2**20  # past values kept per channel while streaming


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

    def __post_init__(self) -> None:
        sizes = {
            name: getattr(self, name)
            for name in ("residual_channels", "skip_channels", "kernel_size", "n_blocks", "d_state", "d_conv")
        }
        sizes.update({"expand": self.expand, **{f"dilations[{i}]": d for i, d in enumerate(self.dilations)}})
        wrong = {k: v for k, v in sizes.items() if not isinstance(v, int) or isinstance(v, bool) or v < 1}
        if wrong or not self.dilations:
            raise ValueError(f"denoiser sizes must be positive integers, got {wrong or 'no dilations'}")
        r, s, k = self.residual_channels, self.skip_channels, self.kernel_size
        weights = self.n_layers * (2 * r * r * k + r * r + s * r) + s * s
        history = r * (self.receptive_field - 1)
        if self.use_mamba:
            inner = self.expand * r
            weights += inner * (3 * r + self.d_conv + 3 * self.d_state + 2 * math.ceil(r / 16))
            history += inner * (self.d_conv + self.d_state)
        if weights > MAX_WEIGHTS or history > MAX_HISTORY:
            raise ValueError(
                f"a denoiser of {weights:,} weights keeping {history:,} past values per channel is beyond "
                f"any this project trains (at most {MAX_WEIGHTS:,} and {MAX_HISTORY:,})"
            )

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


def _pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 ``Conv1d`` applied to channels-last ``x (N, L, C_in)`` as one matrix product."""
    return F.linear(x, conv.weight[..., 0], conv.bias)  # (N, L, C_out)


class GatedLayer(nn.Module):
    """One WaveNet layer: dilated causal conv, tanh x sigmoid gate, residual and skip.

    The layers work channels-last, ``(N, L, R)``: the dilated convolution is one
    matrix product over the ``kernel_size`` delayed copies of the input stacked
    side by side, and each 1x1 convolution is one matrix product too. On short
    chunks this costs a fraction of a ``Conv1d`` call. The parameters keep the
    shapes and names of ``Conv1d`` modules.
    """

    def __init__(self, residual: int, skip: int, kernel_size: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(residual, 2 * residual, kernel_size, dilation=dilation)
        self.res = nn.Conv1d(residual, residual, 1)
        self.skip = nn.Conv1d(residual, skip, 1)
        self.dilation = dilation
        self.left_pad = (kernel_size - 1) * dilation  # past samples each output needs

    def forward(self, padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``padded (N, left_pad + L, R)``: the input with its ``left_pad`` past samples in front.

        Returns the residual output ``(N, L, R)`` and half the gated activation ``(N, L, R)``;
        the skip projections of all layers are applied together by the denoiser, with their
        weights doubled. A step over a whole hop costs a pass over its ``(N, L, R)`` tensors
        for every elementwise operation, so the constants are folded into the weights by
        powers of two, which leaves every result bit for bit as without the folding:
        ``tanh(f) = 2 sigmoid(2f) - 1`` with the filter half's weights doubled, and
        ``tanh(f) sigmoid(g) = 2 (sigmoid(2f) - 1/2) sigmoid(g)`` with the residual weights doubled.
        """
        length = padded.shape[1] - self.left_pad
        starts = range(0, self.left_pad + 1, self.dilation)  # oldest tap first, as the kernel is ordered
        taps = torch.cat([padded[:, k : k + length] for k in starts], dim=-1)  # (N, L, K*R)
        weight = self.conv.weight.permute(0, 2, 1).flatten(1)  # (2R, K*R)
        doubling = self._doubling(weight)  # (2R, 1): 2 for the filter half, 1 for the gate
        gates = F.linear(taps, weight * doubling, self.conv.bias * doubling[:, 0]).sigmoid_()  # (N, L, 2R)
        s_filt, s_gate = gates.chunk(2, dim=-1)  # sigmoid(2 filt), sigmoid(gate): (N, L, R) each
        half_gated = (s_filt - 0.5).mul_(s_gate)  # tanh(filt) * sigmoid(gate) / 2, contiguous: (N, L, R)
        h = padded[:, self.left_pad :]  # (N, L, R)
        out = F.linear(half_gated, 2 * self.res.weight[..., 0], self.res.bias).add_(h).mul_(math.sqrt(0.5))
        return out, half_gated  # (N, L, R) each

    @staticmethod
    def _doubling(weight: torch.Tensor) -> torch.Tensor:
        """``(2R, 1)``: 2 for the rows of the filter half of the conv's outputs, 1 for the gate's."""
        half = weight.shape[0] // 2
        return torch.cat([weight.new_full((half, 1), 2.0), weight.new_ones(weight.shape[0] - half, 1)])


class MambaResidual(nn.Module):
    """``h + Mamba(LayerNorm(h))`` over time; LayerNorm acts per sample, so it is causal."""

    def __init__(self, channels: int, config: DenoiserConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(channels, d_state=config.d_state, d_conv=config.d_conv, expand=config.expand)

    def forward(self, h: torch.Tensor, state: MambaState | None = None):
        """``h (N, L, R)``; with ``state``, returns the new state too."""
        if state is None:
            return h + self.mamba(self.norm(h))
        out, state = self.mamba.step(self.norm(h), state)
        return h + out, state


@dataclass
class DenoiserState:
    """Streaming state: per layer the last conv inputs, and the Mamba block's state.

    Row ``n`` of every tensor is one sequence (one channel of one stream); a
    state for ``B`` streams of ``C`` channels has ``B * C`` rows, stream by stream.
    """

    caches: list[torch.Tensor]  # per layer (N, left_pad, R)
    mamba: MambaState | None

    @classmethod
    def cat(cls, states: list[DenoiserState]) -> DenoiserState:
        """One state for several streams, in the given order (the batch of a joint step)."""
        caches = [torch.cat(layer, dim=0) for layer in zip(*(s.caches for s in states), strict=True)]
        mamba = None
        if states[0].mamba is not None:
            mamba = MambaState(
                torch.cat([s.mamba.conv_state for s in states], dim=0),
                torch.cat([s.mamba.ssm_state for s in states], dim=0),
            )
        return cls(caches, mamba)

    def split(self, rows: int) -> list[DenoiserState]:
        """The inverse of :meth:`cat` for streams of ``rows`` sequences each."""
        caches = [c.split(rows, dim=0) for c in self.caches]
        n = len(caches[0]) if caches else 0
        if self.mamba is not None:
            conv, ssm = self.mamba.conv_state.split(rows, dim=0), self.mamba.ssm_state.split(rows, dim=0)
            n = len(conv)
        return [
            DenoiserState(
                [c[i] for c in caches], MambaState(conv[i], ssm[i]) if self.mamba is not None else None
            )
            for i in range(n)
        ]


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
            torch.zeros(n, layer.left_pad, self.config.residual_channels, device=device, dtype=dtype)
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
        flat = x.reshape(b * c, length, 1)  # (N, L, 1) with N = B*C, channels-last
        h = _pointwise(self.inp, flat)  # (N, L, R)
        new_caches: list[torch.Tensor] = []
        new_mamba = None
        half_gated = []
        for i, layer in enumerate(self.layers):
            if state is None:
                padded = F.pad(h, (0, 0, layer.left_pad, 0))  # (N, pad + L, R), zeros in the past
            else:
                padded = torch.cat([state.caches[i], h], dim=1)  # (N, pad + L, R)
                new_caches.append(padded[:, padded.shape[1] - layer.left_pad :])
            h, g = layer(padded)
            half_gated.append(g)
            if self.mamba is not None and i == self.mamba_after:
                if state is None:
                    h = self.mamba(h)
                else:
                    h, new_mamba = self.mamba(h, state.mamba)
        # the sum of every layer's skip projection, as one matrix product over all of them; the
        # weights doubled as the activations are halved (see GatedLayer.forward)
        skip_weight = 2 * torch.cat([layer.skip.weight[..., 0] for layer in self.layers], dim=1)  # (S, n*R)
        skip_bias = sum(layer.skip.bias for layer in self.layers)  # (S,)
        skips = F.linear(torch.cat(half_gated, dim=-1), skip_weight, skip_bias)  # (N, L, S)
        head = F.relu(skips)
        head = F.relu(_pointwise(self.head[1], head))
        out = flat + _pointwise(self.head[3], head)  # (N, L, 1)
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
