"""Stage 1: train the causal denoiser to recover clean EEG from EEG plus synthetic noise.

Examples are single-channel crops of the training recordings. Noise of a random
type is added to the raw crop and goes through the causal band-pass and notch
the stream applies; by linearity the filtered noisy crop is the filtered clean
recording (cut at the crop) plus the noise filtered from rest, which is what a
stream sees when the noise begins at the crop's start. The noise is scaled to a
random SNR measured there, at the denoiser's input. The loss is the negative SI-SNR over the crop after a
warm-up that gives the convolutions and the filter their context, capped at
``SI_SNR_CAP_DB`` per example: an example that is already nearly clean (a crop
without noise, or mains hum the notch has removed) would otherwise reward the
identity map with unbounded decibels and drown the examples with real noise.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import signal
from tqdm.auto import tqdm

from ..models.denoiser import CausalDenoiser, DenoiserConfig, si_snr
from ..models.preprocess import SignalSpec, design_filter
from .data import Recording
from .noise import MIXED, NOISE_TYPES, make_noise
from .training_state import load_state, restore_rng, rng_state, save_state

log = logging.getLogger(__name__)

NOISY_KINDS: tuple[str, ...] = (*NOISE_TYPES, MIXED)
TRAINING_KINDS: tuple[str, ...] = (*NOISY_KINDS, "none")
SI_SNR_CAP_DB = 30.0


@dataclass(frozen=True)
class DenoiserTraining:
    """Settings of stage 1; recorded in the checkpoint."""

    steps: int = 2000
    batch: int = 32
    crop: int = 800
    warmup: int = 160
    lr: float = 2e-3
    snr_db: tuple[float, float] = (-10.0, 10.0)
    val_every: int = 100
    val_examples: int = 256


class CropSampler:
    """Draws (noisy, clean) single-channel crops in model units from recordings."""

    def __init__(self, recordings: Sequence[Recording], spec: SignalSpec, settings: DenoiserTraining) -> None:
        self.spec, self.settings = spec, settings
        self.sos = design_filter(spec)
        self.clean = [r.preprocessed() for r in recordings if r.volts.shape[1] > settings.crop]
        if not self.clean:
            raise ValueError(f"no recording is longer than a training crop of {settings.crop} samples")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        crop = self.settings.crop
        noisy = np.empty((n, 1, crop), dtype=np.float32)
        clean = np.empty((n, 1, crop), dtype=np.float32)
        for b in range(n):
            r = int(rng.integers(len(self.clean)))
            ch = int(rng.integers(self.clean[r].shape[0]))
            start = int(rng.integers(self.clean[r].shape[1] - crop))
            kind = TRAINING_KINDS[int(rng.integers(len(TRAINING_KINDS)))]
            target = self.clean[r][ch : ch + 1, start : start + crop]
            clean[b] = target
            noisy[b] = target
            if kind != "none":
                noisy[b] = with_noise(target, kind, self.spec.sfreq, self.sos, self.settings.snr_db, rng)
        return noisy, clean


def with_noise(
    clean: np.ndarray,
    kind: str,
    sfreq: float,
    sos: np.ndarray,
    snr_db: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """``clean (C, N)`` plus noise of ``kind`` that went through the stream's filter ``sos``.

    The noise is scaled to an SNR drawn uniformly from ``snr_db``, measured over
    all channels of the crop.
    """
    noise = signal.sosfilt(sos, make_noise(kind, clean.shape[0], clean.shape[1], sfreq, rng), axis=1)
    snr = rng.uniform(*snr_db)
    gain = np.sqrt(np.mean(clean**2) / (np.mean(noise**2) * 10 ** (snr / 10)))
    return clean + gain * noise


def denoising_loss(out: torch.Tensor, clean: torch.Tensor, warmup: int) -> torch.Tensor:
    """Stage 1's loss on denoised crops: the negative SI-SNR after ``warmup`` samples, in dB, each
    crop's capped at :data:`SI_SNR_CAP_DB`, averaged."""
    return -si_snr(out[..., warmup:], clean[..., warmup:]).clamp(max=SI_SNR_CAP_DB).mean()


def loss_fn(net: CausalDenoiser, noisy: torch.Tensor, clean: torch.Tensor, warmup: int) -> torch.Tensor:
    return denoising_loss(net(noisy), clean, warmup)


@torch.no_grad()
def validate(net: CausalDenoiser, val: tuple[torch.Tensor, torch.Tensor], warmup: int) -> dict:
    net.eval()
    noisy, clean = val
    out = torch.cat([net(noisy[i : i + 64]) for i in range(0, len(noisy), 64)])
    net.train()
    before = si_snr(noisy[..., warmup:], clean[..., warmup:]).clamp(max=SI_SNR_CAP_DB).mean().item()
    after = si_snr(out[..., warmup:], clean[..., warmup:]).clamp(max=SI_SNR_CAP_DB).mean().item()
    return {"si_snr_in_db": before, "si_snr_out_db": after, "improvement_db": after - before}


def train_denoiser(
    train: Sequence[Recording],
    val: Sequence[Recording],
    spec: SignalSpec,
    config: DenoiserConfig,
    settings: DenoiserTraining,
    seed: int,
    resume_path: Path | None = None,
    device: torch.device | None = None,
    progress: bool = True,
) -> tuple[CausalDenoiser, dict]:
    """Train and return the denoiser with the best validation SI-SNR, and its history.

    With ``resume_path``, the state is saved there every ``val_every`` steps and
    training continues from it when it exists and was made with the same settings.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = CausalDenoiser(config).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, settings.steps) / settings.steps))
    )
    sampler = CropSampler(train, spec, settings)
    val_rng = np.random.default_rng(seed + 1)
    val_batch = tuple(
        torch.from_numpy(a).to(device)
        for a in CropSampler(val, spec, settings).sample(settings.val_examples, val_rng)
    )
    fingerprint = json.dumps(
        {
            "config": config.to_dict(),
            "settings": asdict(settings),
            "seed": seed,
            "spec": spec.to_dict(),
            "train": sorted(str(r.path) for r in train),
            "val": sorted(str(r.path) for r in val),
        },
        sort_keys=True,
    )
    step, history = 0, []
    best = {"improvement_db": -math.inf, "state": None, "step": 0}
    saved = load_state(resume_path, fingerprint, "delete it to start afresh, or pass --no-resume")
    if saved is not None:
        net.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        restore_rng(rng, saved["rng"])
        torch.set_rng_state(saved["torch_rng"])
        step, history = int(saved["step"]), json.loads(saved["history"])
        best = {
            "improvement_db": float(saved["best_improvement"]),
            "state": saved["best_state"],
            "step": int(saved["best_step"]),
        }
        log.info("resumed denoiser training at step %d from %s", step, resume_path)

    net.train()
    bar = tqdm(total=settings.steps, initial=step, desc="denoiser", unit="step", disable=not progress)
    while step < settings.steps:
        noisy, clean = (torch.from_numpy(a).to(device) for a in sampler.sample(settings.batch, rng))
        loss = loss_fn(net, noisy, clean, settings.warmup)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        bar.set_postfix(si_snr=f"{-loss.item():.2f}dB")
        if step % settings.val_every == 0 or step == settings.steps:
            result = validate(net, val_batch, settings.warmup) | {
                "step": step,
                "train_si_snr_db": -loss.item(),
            }
            history.append(result)
            bar.write(
                f"step {step}: validation SI-SNR {result['si_snr_in_db']:.2f} -> "
                f"{result['si_snr_out_db']:.2f} dB ({result['improvement_db']:+.2f})"
            )
            if result["improvement_db"] > best["improvement_db"]:
                best = {
                    "improvement_db": result["improvement_db"],
                    "step": step,
                    "state": {k: v.detach().clone() for k, v in net.state_dict().items()},
                }
            if resume_path is not None:
                save_state(
                    resume_path,
                    fingerprint,
                    {
                        "model": net.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "rng": rng_state(rng),
                        "torch_rng": torch.get_rng_state(),
                        "step": step,
                        "history": json.dumps(history),
                        "best_improvement": best["improvement_db"],
                        "best_state": best["state"],
                        "best_step": best["step"],
                    },
                )
    bar.close()
    if best["state"] is not None:
        net.load_state_dict(best["state"])
    net.eval()
    return net, {"history": history, "best_step": best["step"], "best_improvement_db": best["improvement_db"]}
