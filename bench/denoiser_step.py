"""Where one recurrent denoiser step spends its time, by batch size.

    python bench/denoiser_step.py [--batches 1,8,32,128] [--json OUT] [--profile]

The daemon steps the denoiser once a hop for every slot of streams whose windows end
together, from one thread. This times that step, for each shipped checkpoint and each
batch of streams, on one hop of samples from a state that has already seen some:

- ``step_ms``: ``denoiser.step`` alone, median over repetitions, and per stream;
- ``engine_ms``: what the engine adds around it each hop, joining the streams' states
  into one and splitting the result (:class:`DenoiserState` ``cat`` / ``split``);
- with ``--profile``, the operators that take the most time (torch.profiler, self CPU).

Run with one torch thread, as the daemon does. The figures depend on the machine and
what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.models.denoiser import CausalDenoiser, DenoiserState
from torch.profiler import ProfilerActivity, profile

from neuroauth.paths import ASSETS

CHECKPOINTS = ("neuroauth-4ch.pt", "neuroauth-19ch.pt")
HOP = 200  # samples: one 1 s hop at the model's 200 Hz


def _median_ms(fn: Callable[[], object], budget_s: float = 1.5, min_repeats: int = 5) -> float:
    """Median wall time of ``fn`` in ms over as many calls as fit in ``budget_s`` (at least a few)."""
    fn()  # warm-up
    times = []
    deadline = time.perf_counter() + budget_s
    while len(times) < min_repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(1e3 * statistics.median(times), 3)


def _warm_state(net: CausalDenoiser, batch: int, channels: int, x: torch.Tensor) -> DenoiserState:
    """A state after one hop of input: a step from it runs what the daemon runs in steady state."""
    return net.step(x, net.allocate_state(batch, channels))[1]


def _profile(net: CausalDenoiser, batch: int, channels: int, top: int = 12) -> list[dict]:
    """The operators with the most self CPU time over a few steps, per step."""
    x = torch.randn(batch, channels, HOP)  # (B, C, L)
    state = _warm_state(net, batch, channels, x)
    net.step(x, state)  # warm-up
    steps = 5
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            net.step(x, state)
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    return [
        {
            "op": e.key,
            "calls_per_step": e.count // steps,
            "self_ms_per_step": round(e.self_cpu_time_total / 1e3 / steps, 3),
        }
        for e in rows
    ]


def _by_batch(net: CausalDenoiser, batch: int, channels: int) -> dict:
    """The step's time for ``batch`` streams, and the engine's joining and splitting of their states."""
    x = torch.randn(batch, channels, HOP)  # (B, C, L): model units, about unit variance
    state = _warm_state(net, batch, channels, x)
    step = _median_ms(lambda: net.step(x, state))
    singles = state.split(channels)
    return {
        "streams": batch,
        "step_ms": step,
        "step_ms_per_stream": round(step / batch, 3),
        "engine_ms": _median_ms(lambda: DenoiserState.cat(singles).split(channels)),
    }


@torch.inference_mode()
def measure(path: Path, batches: list[int], with_profile: bool) -> dict:
    model = load_checkpoint(path).eval()
    net = model.denoiser
    channels = len(model.montage)
    results = []
    for batch in batches:
        row = _by_batch(net, batch, channels)
        if with_profile:
            row["profile"] = _profile(net, batch, channels)
        results.append(row)
        step = row["step_ms"]
        print(
            f"{path.name} {batch:4d} streams: step {step:8.2f} ms ({step / batch:.3f} per stream)", flush=True
        )
    return {"checkpoint": path.name, "channels": channels, "hop_samples": HOP, "by_batch": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,8,32,128", help="streams per step, comma-separated")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--profile", action="store_true", help="add the top operators per batch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the daemon uses 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    paths = [ASSETS / "checkpoints" / name for name in CHECKPOINTS]
    report = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "checkpoints": [measure(p, batches, args.profile) for p in paths if p.exists()],
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
