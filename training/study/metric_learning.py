"""Metric learning of an embedder on the windows of the training subjects.

Each step draws ``per_batch`` subjects and ``per_subject`` examples of each
(the P x K batches metric losses need), asks a *sampler* for the inputs, and
minimises one of two losses from pytorch-metric-learning:

- ``arcface``: additive angular margin over one learned centre per subject;
- ``multisimilarity``: the multi-similarity loss on the pairs its miner keeps,
  the hard positives and hard negatives of the batch.

The sampler carries the augmentation: for raw windows, random crops of the
recordings (time shift), amplitude scaling and noise jitter
(:class:`RawWindowSampler`); for feature vectors, jitter
(:class:`FeatureSampler`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..training_state import load_state, restore_rng, rng_state, save_state

log = logging.getLogger(__name__)

LOSSES = ("arcface", "multisimilarity")
SAVE_SECONDS = 60.0  # how often, at least, a resumable training saves its state


@dataclass(frozen=True)
class MetricTraining:
    """How an embedder is trained; recorded beside its results."""

    loss: str = "multisimilarity"
    steps: int = 400
    per_batch: int = 8  # subjects per batch
    per_subject: int = 8  # examples per subject
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r} is not one of {LOSSES}")
        if self.steps < 1 or self.per_batch < 2 or self.per_subject < 2:
            raise ValueError("steps >= 1, per_batch >= 2 and per_subject >= 2 are needed")


Sampler = Callable[[np.ndarray, np.random.Generator], torch.Tensor]


def random_crop(recordings: Sequence[np.ndarray], length: int, rng: np.random.Generator) -> np.ndarray:
    """``length`` samples ``(C, length)`` cut at a random place of one of ``recordings``, drawn at random."""
    x = recordings[rng.integers(len(recordings))]
    start = rng.integers(x.shape[1] - length + 1)
    return x[:, start : start + length]


def gain_and_jitter(
    windows: np.ndarray, gain: tuple[float, float], jitter: float, rng: np.random.Generator
) -> torch.Tensor:
    """``windows (..., C, L)`` with each channel of each window scaled by a random gain in ``gain``,
    then Gaussian noise of ``jitter`` x the channel's spread added."""
    scale = rng.uniform(*gain, size=(*windows.shape[:-1], 1))
    noise = rng.standard_normal(windows.shape) * jitter * windows.std(axis=-1, keepdims=True)
    return torch.as_tensor(windows * scale + noise, dtype=torch.float32)


class RawWindowSampler:
    """Augmented windows ``(B, C, L)`` cut at random offsets from each subject's recordings."""

    def __init__(
        self,
        recordings: Sequence[Sequence[np.ndarray]],  # per subject: recordings (C, N) in model units
        window: int,
        amplitude: tuple[float, float] = (0.9, 1.1),
        jitter: float = 0.05,
    ) -> None:
        self.recordings = [[r for r in rs if r.shape[1] >= window] for rs in recordings]
        if not all(self.recordings):
            raise ValueError(f"every subject needs a recording of at least {window} samples")
        self.window = window
        self.amplitude = amplitude
        self.jitter = jitter

    def __call__(self, subjects: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        batch = np.stack([random_crop(self.recordings[s], self.window, rng) for s in subjects])
        return gain_and_jitter(batch, self.amplitude, self.jitter, rng)


class FeatureSampler:
    """Feature vectors of each subject's windows, with Gaussian jitter of ``jitter`` x their spread."""

    def __init__(self, features: Sequence[np.ndarray], jitter: float = 0.1) -> None:
        self.features = [np.asarray(f, dtype=np.float32) for f in features]
        self.scale = np.concatenate(self.features).std(axis=0)
        self.jitter = jitter

    def __call__(self, subjects: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        rows = [f[rng.integers(len(f))] for f in (self.features[s] for s in subjects)]
        x = np.stack(rows)
        x = x + rng.standard_normal(x.shape).astype(np.float32) * self.jitter * self.scale
        return torch.as_tensor(x)


def _loss(kind: str, n_classes: int, dim: int):
    from pytorch_metric_learning import losses, miners

    if kind == "arcface":
        return losses.ArcFaceLoss(num_classes=n_classes, embedding_size=dim), None
    miner = miners.MultiSimilarityMiner(epsilon=0.1)  # keeps the hard positive and negative pairs
    return losses.MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5), miner


def train_metric(
    net: nn.Module,
    sampler: Sampler,
    n_subjects: int,
    dim: int,
    options: MetricTraining,
    progress: bool = True,
    auxiliary: Callable[[], torch.Tensor] | None = None,
    slower: tuple[nn.Module, float] | None = None,
    state_path: Path | None = None,
    save_seconds: float | None = None,
    context: dict | None = None,
) -> dict:
    """Train ``net`` (inputs -> embeddings of ``dim``) in place; returns the loss curve and time.

    ``auxiliary``, called after each forward pass, gives a term added to the
    metric loss (its values are recorded too); ``slower = (part, factor)``
    trains the parameters of ``part``, a submodule of ``net``, at ``factor``
    times the learning rate. With ``state_path``, the whole training state is
    saved there at least every ``save_seconds`` (default :data:`SAVE_SECONDS`) and after the last step, and a
    state found there (of the same settings and starting weights) is continued:
    the result is the one an uninterrupted run gives. ``context`` holds the
    settings outside ``options`` that shape the training (of the sampler, of
    ``auxiliary``): a saved state is continued only under the same. The caller
    removes the file once it has kept what was trained.
    """
    if n_subjects < 2:
        raise ValueError("metric learning needs at least two subjects")
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    loss_fn, miner = _loss(options.loss, n_subjects, dim)
    slow = {id(p) for p in slower[0].parameters()} if slower else set()
    fast = [p for p in net.parameters() if id(p) not in slow] + list(loss_fn.parameters())
    groups = [{"params": fast, "lr": options.lr}]
    if slower:
        groups.append({"params": list(slower[0].parameters()), "lr": options.lr * slower[1]})
    optimiser = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=[g["lr"] for g in groups], total_steps=options.steps
    )
    per_batch = min(options.per_batch, n_subjects)
    save_seconds = SAVE_SECONDS if save_seconds is None else save_seconds
    first, curve, elapsed = 0, [], 0.0
    fingerprint = _fingerprint(net, loss_fn, options, n_subjects, slower[1] if slower else None, context)
    saved = load_state(state_path, fingerprint)
    if saved is not None:
        net.load_state_dict(saved["net"])
        loss_fn.load_state_dict(saved["loss"])
        optimiser.load_state_dict(saved["optimiser"])
        schedule.load_state_dict(saved["schedule"])
        restore_rng(rng, saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        first, curve, elapsed = int(saved["step"]), json.loads(saved["curve"]), float(saved["seconds"])
        log.info("resumed metric training at step %d of %d from %s", first, options.steps, state_path)
    net.train()
    started = time.time() - elapsed
    last_save = time.monotonic()
    steps = range(first, options.steps)
    bar = tqdm(
        steps, desc=f"metric ({options.loss})", total=options.steps, initial=first, disable=not progress
    )
    for step in bar:
        chosen = rng.choice(n_subjects, size=per_batch, replace=False)
        subjects = np.repeat(chosen, options.per_subject)
        labels = torch.as_tensor(subjects)
        embeddings = net(sampler(subjects, rng))
        pairs = miner(embeddings, labels) if miner is not None else None
        loss = loss_fn(embeddings, labels, pairs)
        extra = auxiliary() if auxiliary is not None else None
        optimiser.zero_grad()
        (loss if extra is None else loss + extra).backward()
        optimiser.step()
        schedule.step()
        if step % 20 == 0 or step == options.steps - 1:
            curve.append([step, loss.item()] + ([] if extra is None else [extra.item()]))
        last = step == options.steps - 1
        if state_path is not None and (last or time.monotonic() - last_save >= save_seconds):
            state = {
                "net": net.state_dict(),
                "loss": loss_fn.state_dict(),
                "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": rng_state(rng),
                "torch_rng": torch.get_rng_state(),
                "step": step + 1,
                "curve": json.dumps(curve),
                "seconds": time.time() - started,
            }
            save_state(state_path, fingerprint, state)
            last_save = time.monotonic()
    net.eval()
    seconds = time.time() - started
    log.info("metric training (%s, %d steps) took %.0f s", options.loss, options.steps, seconds)
    return {"loss_curve": curve, "seconds": round(seconds, 1)}


def _fingerprint(
    net: nn.Module,
    loss_fn: nn.Module,
    options: MetricTraining,
    n_subjects: int,
    slower: float | None,
    context: dict | None,
) -> str:
    """What a saved state belongs to: the settings and the starting weights (which carry the
    input scale fitted to the data, and for joint training the starting denoiser)."""
    settings = {"options": asdict(options), "subjects": n_subjects, "slower": slower, "context": context}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for prefix, module in (("net", net), ("loss", loss_fn)):
        for name, tensor in module.state_dict().items():
            digest.update(f"{prefix}.{name}".encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
