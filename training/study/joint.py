"""Joint training: the denoiser fine-tuned together with the temporal embedder.

Stage 1 teaches the denoiser to recover clean EEG, and nothing in its loss asks
it to keep what tells one person from another. Here the stage-1 denoiser and a
new temporal embedder are trained as one network: each P x K metric-learning
batch is cut from the training subjects' recordings *before* denoising, half of
the windows get synthetic noise (any type, as in stage 1), the denoiser cleans
them and the embedder embeds its output. The loss is the metric loss of the
embeddings plus ``denoise_weight`` times the denoiser's stage-1 loss (negative
SI-SNR against the clean crop), so the denoiser may move towards keeping
identity but is held to denoising; its learning rate is a fraction of the
embedder's.

Each window is cut with ``warmup`` samples in front, which the denoiser reads
for context and which are then dropped, as the stage-1 loss drops them.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...models.denoiser import CausalDenoiser
from ...models.embedders.signal_input import set_input_scale
from ...models.embedders.temporal import TemporalConfig, TemporalEmbedder
from ...models.preprocess import SignalSpec, design_filter
from ..denoiser_training import NOISY_KINDS, denoising_loss, validate, with_noise
from .metric_learning import MetricTraining, random_crop, train_metric

Recordings = Sequence[Sequence[np.ndarray]]  # per subject: preprocessed recordings (C, N), not denoised


@dataclass(frozen=True)
class JointTraining:
    """How the denoiser is fine-tuned beside the embedder; recorded beside the results."""

    denoise_weight: float = 0.05  # per dB of SI-SNR: 10 dB weigh 0.5 against the metric loss
    denoiser_lr_scale: float = 0.2  # the denoiser's learning rate, as a fraction of the embedder's
    noisy_fraction: float = 0.5  # of the windows of a batch that get synthetic noise
    snr_db: tuple[float, float] = (-10.0, 10.0)
    warmup: int = 160  # samples of context in front of each window, not scored

    def __post_init__(self) -> None:
        if self.denoise_weight < 0 or self.denoiser_lr_scale < 0:
            raise ValueError("denoise_weight and denoiser_lr_scale must not be negative")
        if not 0.0 <= self.noisy_fraction <= 1.0:
            raise ValueError(f"noisy_fraction must lie in [0, 1], got {self.noisy_fraction}")
        if self.warmup < 0:
            raise ValueError(f"warmup must not be negative, got {self.warmup}")


class NoisyWindowSampler:
    """Pairs (noisy, clean) of windows with their warm-up, cut at random from each subject's recordings.

    Returns ``(B, 2, C, warmup + window)``: index 0 is the denoiser's input, index 1
    the clean crop. Each channel is scaled by its own random gain in ``amplitude``,
    the same in both halves of a pair; the noise is added after.
    """

    def __init__(
        self,
        recordings: Recordings,
        spec: SignalSpec,
        joint: JointTraining,
        amplitude: tuple[float, float] = (0.9, 1.1),
    ) -> None:
        self.length = joint.warmup + spec.window
        self.recordings = [[r for r in rs if r.shape[1] >= self.length] for rs in recordings]
        if not all(self.recordings):
            raise ValueError(f"every subject needs a recording of at least {self.length} samples")
        self.spec, self.joint, self.amplitude = spec, joint, amplitude
        self.sos = design_filter(spec)
        self.kinds = NOISY_KINDS

    def __call__(self, subjects: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        pairs = []
        for s in subjects:
            crop = random_crop(self.recordings[s], self.length, rng)
            clean = crop * rng.uniform(*self.amplitude, size=(crop.shape[0], 1))
            noisy = clean
            if rng.random() < self.joint.noisy_fraction:
                kind = self.kinds[rng.integers(len(self.kinds))]
                noisy = with_noise(clean, kind, self.spec.sfreq, self.sos, self.joint.snr_db, rng)
            pairs.append(np.stack([noisy, clean]))
        return torch.as_tensor(np.stack(pairs), dtype=torch.float32)


class DenoisedEmbedder(nn.Module):
    """The denoiser followed by the embedder, trained as one; keeps the denoising loss of its last batch."""

    def __init__(self, denoiser: CausalDenoiser, embedder: nn.Module, warmup: int) -> None:
        super().__init__()
        self.denoiser, self.embedder, self.warmup = denoiser, embedder, warmup
        self.denoising_loss = torch.zeros(())

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        noisy, clean = pairs[:, 0], pairs[:, 1]
        out = self.denoiser(noisy)
        self.denoising_loss = denoising_loss(out, clean, self.warmup)
        return self.embedder(out[..., self.warmup :])


def fit_joint(
    denoiser: CausalDenoiser,
    recordings: Recordings,
    config: TemporalConfig,
    spec: SignalSpec,
    metric: MetricTraining,
    joint: JointTraining,
    progress: bool = True,
    state_path: Path | None = None,
) -> tuple[CausalDenoiser, TemporalEmbedder, dict]:
    """A copy of ``denoiser`` and a new temporal embedder, trained together on the raw recordings.

    ``denoiser`` itself is left untouched. The record holds the loss curves
    (metric loss, then denoising loss) and the denoiser's SI-SNR gain before
    and after, on a fixed batch of the training subjects' noisy windows (the
    windows it was trained on are drawn from the same recordings). With
    ``state_path``, the training state is saved there as it goes and continued
    (:func:`.metric_learning.train_metric`).
    """
    torch.manual_seed(metric.seed)
    tuned = copy.deepcopy(denoiser)
    embedder = TemporalEmbedder(config)
    set_input_scale(embedder, recordings)
    sampler = NoisyWindowSampler(recordings, spec, dataclasses.replace(joint, noisy_fraction=1.0))
    check_rng = np.random.default_rng(metric.seed + 1)
    check = sampler(check_rng.integers(len(recordings), size=64), check_rng)
    before = validate(tuned, (check[:, 0], check[:, 1]), joint.warmup)["improvement_db"]

    frozen = joint.denoiser_lr_scale == 0.0
    tuned.requires_grad_(not frozen)  # a fixed denoiser: no gradient is computed through it
    net = DenoisedEmbedder(tuned, embedder, joint.warmup)
    record = train_metric(
        net,
        NoisyWindowSampler(recordings, spec, joint),
        len(recordings),
        embedder.dim,
        metric,
        progress,
        auxiliary=lambda: joint.denoise_weight * net.denoising_loss,
        slower=None if frozen else (tuned, joint.denoiser_lr_scale),
        state_path=state_path,
        context={"joint": dataclasses.asdict(joint)},
    )
    tuned.requires_grad_(True)
    after = validate(tuned, (check[:, 0], check[:, 1]), joint.warmup)["improvement_db"]
    record["si_snr_gain_db"] = {"before": before, "after": after}
    record["training"] = dataclasses.asdict(metric)
    record["joint"] = dataclasses.asdict(joint)
    return tuned.eval(), embedder.eval(), record
