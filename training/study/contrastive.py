"""Contrastive self-supervised pre-training of a window encoder (no labels).

Each step cuts ``batch`` windows at random places in the recordings and makes
two views of each: the crop moved by up to ``shift`` samples either way, every
channel scaled by its own random gain, and Gaussian jitter added. An encoder
followed by a small projection head maps both views; the NT-Xent loss
(normalised temperature-scaled cross entropy, as in SimCLR, Chen et al. 2020)
pulls the two views of a window together and pushes the other ``2 batch - 2``
views away. The projection head is dropped afterwards; the encoder keeps what
stays the same across the views: the slowly varying traits of the recording,
which include who is wearing the headset.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .metric_learning import gain_and_jitter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastiveTraining:
    """How the encoder is pre-trained; recorded beside its results."""

    steps: int = 300
    batch: int = 128  # windows per step, two views each
    temperature: float = 0.1
    shift: int = 100  # samples either way between the two views (0.5 s at 200 Hz)
    gain: tuple[float, float] = (0.8, 1.25)
    jitter: float = 0.1  # noise standard deviation as a fraction of the window's
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 2:
            raise ValueError("steps >= 1 and batch >= 2 are needed")
        if self.temperature <= 0 or self.shift < 0:
            raise ValueError("temperature must be positive and shift not negative")


class ViewPairs:
    """Two augmented views ``(2, B, C, L)`` of ``B`` windows cut from unlabelled recordings."""

    def __init__(self, recordings: Sequence[np.ndarray], window: int, training: ContrastiveTraining) -> None:
        span = window + 2 * training.shift
        self.recordings = [r for r in recordings if r.shape[1] >= span]
        if not self.recordings:
            raise ValueError(f"contrastive pre-training needs a recording of at least {span} samples")
        self.window = window
        self.training = training

    def __call__(self, rng: np.random.Generator) -> torch.Tensor:
        t, w = self.training, self.window
        views = np.empty((2, t.batch, self.recordings[0].shape[0], w), dtype=np.float32)
        for i in range(t.batch):
            x = self.recordings[rng.integers(len(self.recordings))]
            centre = rng.integers(t.shift, x.shape[1] - w - t.shift + 1)
            for v in range(2):
                start = centre + rng.integers(-t.shift, t.shift + 1)
                views[v, i] = x[:, start : start + w]
        return gain_and_jitter(views, t.gain, t.jitter, rng)


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of projections ``(2, B, D)``: view ``v`` of window ``i`` has view ``1 - v`` as positive."""
    n = z.shape[1]
    z = F.normalize(z.reshape(2 * n, -1), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, partner)


def pretrain_contrastive(
    encoder: nn.Module,
    recordings: Sequence[np.ndarray],
    window: int,
    training: ContrastiveTraining,
    progress: bool = True,
) -> dict:
    """Pre-train ``encoder`` (windows -> ``encoder.dim`` values) in place; returns the loss curve and time."""
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    pairs = ViewPairs(recordings, window, training)
    head = nn.Sequential(nn.Linear(encoder.dim, 128), nn.ReLU(inplace=True), nn.Linear(128, 64))
    params = list(encoder.parameters()) + list(head.parameters())
    optimiser = torch.optim.AdamW(params, lr=training.lr, weight_decay=training.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=training.lr, total_steps=training.steps)
    encoder.train()
    started = time.time()
    curve = []
    for step in tqdm(range(training.steps), desc="contrastive", disable=not progress):
        views = pairs(rng)
        z = head(encoder(views.flatten(0, 1))).reshape(2, training.batch, -1)
        loss = nt_xent(z, training.temperature)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 20 == 0 or step == training.steps - 1:
            curve.append([step, loss.item()])
    encoder.eval()
    seconds = time.time() - started
    log.info("contrastive pre-training (%d steps) took %.0f s", training.steps, seconds)
    return {"loss_curve": curve, "seconds": round(seconds, 1)}
