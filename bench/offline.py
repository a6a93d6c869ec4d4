"""Offline speed on this machine: denoiser training throughput and inference cost per window.

    python bench/offline.py [--json OUT] [--checkpoint FILE ...]

- ``train_windows_per_s``: 800-sample single-channel training crops per second
  through forward + backward + optimiser step (the stage-1 loop, data synthesis
  included), with and without the Mamba block.
- ``infer_ms_per_window``: for each checkpoint, one 4 s window of all its channels
  through the denoiser (whole-window pass) and the embedder, batch of 1,
  median over repetitions.

Numbers depend on the machine and its load; run on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.denoiser import CausalDenoiser, DenoiserConfig
from neuroauth.models.montage import DEFAULT_MONTAGE
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.data import find_sessions, load_sessions
from neuroauth.training.denoiser_training import CropSampler, DenoiserTraining, loss_fn

from neuroauth.cli import ASSETS


def train_throughput(use_mamba: bool, steps: int = 30) -> float:
    spec, settings = SignalSpec(), DenoiserTraining()
    data = load_sessions(find_sessions(ASSETS / "eegmat")[:2], DEFAULT_MONTAGE, spec)
    sampler = CropSampler([d.enroll for d in data], spec, settings)
    net = CausalDenoiser(DenoiserConfig(use_mamba=use_mamba))
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr)
    rng = np.random.default_rng(0)

    def one_step():
        noisy, clean = (torch.from_numpy(a) for a in sampler.sample(settings.batch, rng))
        loss = loss_fn(net, noisy, clean, settings.warmup)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        one_step()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    return steps * settings.batch / (time.perf_counter() - start)


@torch.no_grad()
def inference_ms(path: Path, repeats: int = 50) -> dict:
    model = load_checkpoint(path)
    x = torch.randn(1, len(model.montage), model.spec.window)
    timings = {"denoiser": [], "embedder": []}
    for i in range(repeats + 5):
        t0 = time.perf_counter()
        y = model.denoiser(x)
        t1 = time.perf_counter()
        model.embedder(y)
        t2 = time.perf_counter()
        if i >= 5:
            timings["denoiser"].append((t1 - t0) * 1e3)
            timings["embedder"].append((t2 - t1) * 1e3)
    out = {k: round(statistics.median(v), 2) for k, v in timings.items()}
    out["total"] = round(out["denoiser"] + out["embedder"], 2)
    out["channels"] = len(model.montage)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--checkpoint", type=Path, nargs="*", default=sorted((ASSETS / "checkpoints").glob("*.pt"))
    )
    args = parser.parse_args()
    result = {
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "train_windows_per_s": {
            "with_mamba": round(train_throughput(True), 1),
            "without_mamba": round(train_throughput(False), 1),
        },
        "infer_ms_per_window": {p.name: inference_ms(p) for p in args.checkpoint},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
