"""``neuroauth bench``: what the streaming engine costs on this machine.

Figures (all with the given checkpoint, by default the shipped 4-channel model,
streams of its channels at its own rate, 200 Hz, fed one hop at a time):

- ``hop_latency_ms`` (``p50``, ``p99``): one stream, from pushing a hop of samples
  to holding the window's embedding (``push`` + ``advance``).
- ``streams_realtime``: the most streams one engine serves in real time: every
  hop of every stream processed within the hop's duration, at the 95th
  percentile of the hops measured.
- ``recurrent_vs_recompute``: a recurrent denoiser step over 100 new samples
  against one pass over the whole 800-sample window, one stream (median times);
  ``recurrent_vs_recompute_detail`` adds 200-sample steps, 64 streams batched, and
  the tensor operations each call makes from Python (``python_tensor_calls_*``):
  their count, not the samples, sets the cost of a small step.
- ``stream_equivalence_max_abs_err``: the largest difference between the denoiser
  fed a real recording in chunks of 1, 7, 100, 800 and random sizes and one
  ``forward`` over it, with the shipped denoiser (Mamba) and a denoiser without
  Mamba (random weights).
- ``memory_per_stream_mb``: resident memory added per stream, 256 streams warmed up in a
  fresh process (``state_per_stream_mb``: the part that is the stream's own state and
  buffers).
- ``hop_breakdown_ms``: the parts of one stream's hop, each timed alone.

Run it on a quiet machine: other work on the cores shows in every figure.

``neuroauth bench --daemon`` measures the whole daemon instead, as an operator runs it
(LSL outlets, mosquitto, ``neuroauthd``, a score subscriber) at one to many headsets:
:mod:`neuroauth.bench_daemon`.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

from .models.checkpoint import NeuroAuthModel, load_checkpoint
from .models.denoiser import CausalDenoiser, DenoiserConfig
from .models.preprocess import Preprocessor
from .models.quality import QualityGate
from .models.streaming import StreamingEngine


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 5) -> float:
    """Median wall time of ``fn`` in milliseconds, over ``repeats`` calls after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _signal(model: NeuroAuthModel, seconds: float, seed: int) -> np.ndarray:
    """EEG-sized noise in volts ``(C, N)`` at the model rate (the cost does not depend on content)."""
    rng = np.random.default_rng(seed)
    return 20e-6 * rng.standard_normal((len(model.montage), round(seconds * model.spec.sfreq)))


def _engine_with(model: NeuroAuthModel, n_streams: int) -> tuple[StreamingEngine, np.ndarray]:
    engine = StreamingEngine(model)
    for i in range(n_streams):
        engine.add_stream(f"s{i}", model.montage, model.spec.sfreq)
    return engine, _signal(model, 30, 0)


def _run_hops(engine: StreamingEngine, data: np.ndarray, hop: int, start: int, n_hops: int) -> list[float]:
    """Seconds per hop for every stream of ``engine`` (push each stream's hop, then advance)."""
    sfreq = engine.model.spec.sfreq
    times = []
    for k in range(start, start + n_hops):
        i = (k * hop) % (data.shape[1] - hop)
        chunk, ts = data[:, i : i + hop], (k * hop + np.arange(hop)) / sfreq
        t0 = time.perf_counter()
        for key in engine.streams:
            engine.push(key, chunk, ts)
        result = engine.advance()
        times.append(time.perf_counter() - t0)
        if k * hop >= engine.window + 2 * hop and len(result.windows) != len(engine.streams):
            raise RuntimeError("a stream produced no window for its hop; the benchmark is broken")
    return times


def hop_latency(model: NeuroAuthModel, hops: int = 300) -> dict:
    engine, data = _engine_with(model, 1)
    hop = engine.hop
    warm = engine.window // hop + 2  # until the first window is out (its rate confirmed)
    _run_hops(engine, data, hop, 0, warm + 10)
    times = np.array(_run_hops(engine, data, hop, warm + 10, hops)) * 1e3
    p50, p99 = np.percentile(times, [50, 99])
    return {"p50": round(float(p50), 2), "p99": round(float(p99), 2)}


def serves_realtime(model: NeuroAuthModel, n_streams: int, hops: int = 12) -> tuple[bool, float]:
    """Whether ``n_streams`` keep up, and the 95th percentile of seconds per hop."""
    engine, data = _engine_with(model, n_streams)
    warm = engine.window // engine.hop + 2
    _run_hops(engine, data, engine.hop, 0, warm)
    p95 = float(np.percentile(_run_hops(engine, data, engine.hop, warm, hops), 95))
    return p95 < engine.config.hop_seconds, p95


def largest_passing(passes: Callable[[int], bool], start: int = 8, limit: int = 4096) -> int:
    """The largest ``n`` with ``passes(n)``, for a test that passes up to some count: doubling
    from ``start``, then bisection to within about 6 %. 0 if even ``start`` fails."""
    lo, hi = 0, start
    while hi <= limit and passes(hi):
        lo, hi = hi, hi * 2
    while hi - lo > max(1, lo // 16):
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if passes(mid) else (lo, mid)
    return lo


def streams_realtime(model: NeuroAuthModel) -> tuple[int, dict[int, float]]:
    """The most streams that keep up, and the p95 of milliseconds per hop seen at each count."""
    seen: dict[int, float] = {}

    def passes(n: int) -> bool:
        good, seen[n] = serves_realtime(model, n)
        return good

    best = largest_passing(passes)
    return best, {n: round(t * 1e3, 1) for n, t in sorted(seen.items())}


class _TensorCalls(TorchFunctionMode):
    """Counts the tensor operations called from Python (attribute reads such as ``.shape`` aside)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") != "__get__"
        return func(*args, **(kwargs or {}))


def _tensor_calls(fn: Callable[[], object]) -> int:
    with _TensorCalls() as calls:
        fn()
    return calls.count


@torch.inference_mode()
def recurrent_vs_recompute(model: NeuroAuthModel) -> tuple[float, dict]:
    net, c, window = model.denoiser, len(model.montage), model.spec.window
    detail = {}
    for batch in (1, 64):
        full = torch.randn(batch, c, window)
        recompute = median_ms(lambda full=full: net(full), 30 if batch == 1 else 5)
        detail[f"recompute_window_ms_{batch}_streams"] = round(recompute, 3)
        for n in (100, 200):
            state, x = net.allocate_state(batch, c), torch.randn(batch, c, n)
            step = median_ms(lambda x=x, state=state: net.step(x, state), 50 if batch == 1 else 5)
            detail[f"step_{n}_ms_{batch}_streams"] = round(step, 3)
            detail[f"ratio_{n}_{batch}_streams"] = round(step / recompute, 4)
            detail[f"target_{n}"] = round(1.2 * n / window, 4)
    state, x, full = net.allocate_state(1, c), torch.randn(1, c, 100), torch.randn(1, c, window)
    detail["python_tensor_calls_step_100"] = _tensor_calls(lambda: net.step(x, state))
    detail["python_tensor_calls_recompute_window"] = _tensor_calls(lambda: net(full))
    return detail["ratio_100_1_streams"], detail


@torch.inference_mode()
def stream_equivalence(model: NeuroAuthModel, recording: np.ndarray) -> dict:
    """Max abs difference of chunked ``step`` against ``forward`` over ``recording (C, N)``."""
    no_mamba = CausalDenoiser(DenoiserConfig(use_mamba=False))
    torch.nn.init.normal_(no_mamba.head[-1].weight, std=0.1)  # not the identity it starts as
    x = torch.as_tensor(recording, dtype=torch.float32)[None]  # (1, C, N)
    rng = np.random.default_rng(0)
    out = {}
    for name, net in (("mamba", model.denoiser), ("no_mamba", no_mamba.eval())):
        whole = net(x)
        worst = 0.0
        for sizes in ([1], [7], [100], [800], rng.integers(1, 400, size=4096).tolist()):
            state, parts, i, k = net.allocate_state(1, x.shape[1]), [], 0, 0
            while i < x.shape[-1]:
                y, state = net.step(x[..., i : i + sizes[k % len(sizes)]], state)
                parts.append(y)
                i, k = i + y.shape[-1], k + 1
            worst = max(worst, (torch.cat(parts, -1) - whole).abs().max().item())
        out[name] = worst
    return out


def _rss_mb() -> float:
    from .daemon.memory import resident_mb

    mb = resident_mb()
    if not mb:
        raise RuntimeError("no resident memory in /proc/self/statm; memory_per_stream_mb needs Linux")
    return mb


def memory_per_stream(model: NeuroAuthModel, n_streams: int = 256) -> tuple[float, float]:
    """Resident memory added per stream (state and its share of the working memory), and the
    bytes of the state itself, in MB, with ``n_streams`` streams warmed up.

    Run it in a fresh process (:func:`memory_per_stream_fresh`): memory that earlier work
    freed but the allocator kept is reused by the streams and hides their cost.
    """
    engine, data = _engine_with(model, 0)
    _run_hops(engine, data, engine.hop, 0, 1)  # the allocator warmed up with no streams
    gc.collect()
    before = _rss_mb()
    for i in range(n_streams):
        engine.add_stream(f"s{i}", model.montage, model.spec.sfreq)
    _run_hops(engine, data, engine.hop, 0, engine.window // engine.hop + 2)
    gc.collect()
    return (_rss_mb() - before) / n_streams, engine.state_bytes() / n_streams / 2**20


def _memory_in_child(checkpoint: Path, n_streams: int) -> tuple[float, float]:
    from .daemon.memory import limit_malloc_arenas

    limit_malloc_arenas()  # the allocator as neuroauthd sets it up
    return memory_per_stream(load_checkpoint(checkpoint), n_streams)


def memory_per_stream_fresh(checkpoint: Path, n_streams: int = 256) -> tuple[float, float]:
    """:func:`memory_per_stream` in a new Python process that has done nothing else, its malloc
    arenas capped as in ``neuroauthd``."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return pool.submit(_memory_in_child, checkpoint, n_streams).result()


@torch.inference_mode()
def hop_breakdown(model: NeuroAuthModel) -> dict:
    c, hop, sfreq = len(model.montage), round(model.spec.sfreq), model.spec.sfreq
    chunk = _signal(model, 1, 1)
    pre = Preprocessor(model.spec, sfreq, c)
    state, x = model.denoiser.allocate_state(1, c), torch.randn(1, c, hop)
    window = torch.randn(1, c, model.spec.window)
    gate, raw = QualityGate(), _signal(model, model.spec.window / sfreq, 2)
    return {
        "preprocess": round(median_ms(lambda: pre.stages(chunk), 100), 3),
        "denoiser_step": round(median_ms(lambda: model.denoiser.step(x, state), 100), 3),
        "quality_gate": round(median_ms(lambda: gate.check(raw, raw * 1e6), 100), 3),
        "embedder": round(median_ms(lambda: model.embedder(window), 100), 3),
    }


def real_recording(data_dir: Path, model: NeuroAuthModel, seconds: float = 60.0) -> np.ndarray:
    """The first ``seconds`` of a probe recording of ``data_dir``, pre-processed for ``model``."""
    from .training.data import find_sessions, load_recording

    rec = load_recording(find_sessions(data_dir)[0].probe, model.montage, model.spec)
    return rec.preprocessed()[:, : round(seconds * model.spec.sfreq)]


def run(checkpoint: Path, data_dir: Path, progress: Callable[[str], None] = print) -> dict:
    """Every figure; a probe recording of ``data_dir`` is the real EEG of the equivalence check."""
    model = load_checkpoint(checkpoint)
    progress("hop latency, one stream ...")
    latency = hop_latency(model)
    progress("recurrent step against recompute ...")
    ratio, ratio_detail = recurrent_vs_recompute(model)
    progress("streaming equivalence on real EEG ...")
    equivalence = stream_equivalence(model, real_recording(data_dir, model))
    progress("memory per stream ...")
    memory, state = memory_per_stream_fresh(checkpoint)
    progress("hop breakdown ...")
    breakdown = hop_breakdown(model)
    progress("streams served in real time (doubling, then bisection) ...")
    n_realtime, p95_by_count = streams_realtime(model)
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "checkpoint": {"file": checkpoint.name, "identity": model.identity(), "channels": len(model.montage)},
        "hop_seconds": 1.0,
        "hop_latency_ms": latency,
        "streams_realtime": n_realtime,
        "hop_p95_ms_by_streams": p95_by_count,
        "recurrent_vs_recompute": ratio,
        "recurrent_vs_recompute_detail": ratio_detail,
        "stream_equivalence_max_abs_err": max(equivalence.values()),
        "stream_equivalence_detail": equivalence,
        "memory_per_stream_mb": round(memory, 3),
        "state_per_stream_mb": round(state, 3),
        "hop_breakdown_ms": breakdown,
    }


def register(subparsers) -> None:
    from . import bench_daemon
    from .paths import BUNDLED_DATA

    p = subparsers.add_parser(
        "bench",
        help="measure the streaming engine here (latency, streams, memory), or --daemon the whole daemon",
    )
    p.add_argument(
        "--checkpoint", type=Path, help="model to measure (default: shipped 4-ch; with --daemon, --montage's)"
    )
    p.add_argument("--data", type=Path, default=BUNDLED_DATA, help="recordings for the equivalence check")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.add_argument(
        "--daemon",
        action="store_true",
        help="measure neuroauthd as a process serving 1 to N headsets over real LSL and MQTT instead",
    )
    bench_daemon.add_arguments(p.add_argument_group("with --daemon"), with_common=False)
    p.set_defaults(run=cmd_bench)


def cmd_bench(args) -> int:
    import json
    import sys

    from .atomic import atomic_write_text
    from .paths import SHIPPED_CHECKPOINT

    if args.daemon:
        from .bench_daemon import run_from_args

        return run_from_args(args)
    daemon_only = [f"--{name}" for name in ("montage", "plot", "work") if getattr(args, name) is not None]
    if daemon_only:
        raise ValueError(f"{', '.join(daemon_only)}: only with --daemon (the whole-daemon benchmark); add it")
    checkpoint = args.checkpoint or SHIPPED_CHECKPOINT
    result = run(checkpoint, args.data, progress=lambda text: print(text, file=sys.stderr))
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")
        print(f"figures written to {args.json}", file=sys.stderr)
    return 0
