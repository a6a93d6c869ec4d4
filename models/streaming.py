"""The streaming engine: live EEG streams in, one embedding per stream and hop out.

Each stream is advanced incrementally; nothing is recomputed over the window::

    push(volts, timestamps)   pick the model's channels by name; refuse bad samples
                              and broken timestamps (the stream restarts); queue
    advance()                 for every stream with new samples:
        resample + band-pass + notch      (Preprocessor, filter state carried)
        denoiser.step(new samples)        one batched call for all streams, state carried
        ring buffer of the last samples   raw, filtered and denoised
        every hop: the last ``window`` samples -> quality gate -> embedder
                                          (one batched call for every window due)

Streams whose new samples have the same length are denoised in one call, of at most
``max_batch_rows`` sequences (streams times channels): a step's cost per stream is least
while its tensors stay in the processor's caches, and grows beyond that.

The denoiser runs in whole *units* of ``gcd(window, hop)`` samples (with the default
800-sample window and 1 s hop at 200 Hz, one hop). Every window boundary is a
multiple of the unit, so a window is produced in the same ``advance`` as its
last sample arrives, and streams at one rate step together in one batch.

Restart policy. A stream restarts (its filters, denoiser state and buffers are
cleared, samples not yet processed are discarded, and no window follows until a
full window of new samples has been processed) when:

- a sample is NaN, infinite or beyond the gate's range: the stream restarts after it;
- the timestamps step back by more than 10 ms, skip more than ``max_gap_seconds``, or
  stand still over more than ``max_gap_seconds`` of samples (a clock that stepped back,
  as it reaches the engine through an inlet that keeps timestamps ascending; the
  samples that stand still beyond that limit are dropped until the clock moves again);
- over ``RATE_CHECK_SECONDS`` of timestamps, the samples arrive at a rate more than
  ``rate_tolerance`` away from the rate the stream announced (a headset streaming
  250 Hz as 500 Hz would otherwise be read at the wrong frequencies). Until the
  rate has been confirmed once after a (re)start, windows that come due are
  withheld, so no window of such a stream is ever embedded;
- the queue of samples not yet processed exceeds ``max_backlog_seconds`` (the
  caller fell behind, or a burst arrived after a long silence): the oldest
  samples are dropped so that the newest ``max_backlog_seconds`` are kept.

Every restart is logged at WARNING and reported by the next :meth:`advance` as a
:class:`Restart`, so the decision over time can go to NO_SIGNAL.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import MontageError, StreamError
from .checkpoint import NeuroAuthModel
from .denoiser import DenoiserState
from .montage import resolve_montage
from .preprocess import Preprocessor
from .quality import QualityConfig, QualityGate, bad_samples

log = logging.getLogger(__name__)

BACKWARD_TOLERANCE_S = 0.010  # LSL clock corrections move timestamps by a few ms
RATE_CHECK_SECONDS = 4.5  # span of timestamps over which the delivered rate is measured


@dataclass(frozen=True)
class EngineConfig:
    """How windows are cut and when a stream restarts."""

    hop_seconds: float = 1.0
    max_backlog_seconds: float = 8.0
    max_gap_seconds: float = 0.25
    max_batch_rows: int = 64  # streams x channels per denoiser call (at least one stream): fits the caches
    rate_tolerance: float | None = 0.05  # relative; None: trust the announced rate (fast replays)
    quality: QualityConfig = field(default_factory=QualityConfig)

    def __post_init__(self) -> None:
        if self.hop_seconds <= 0:
            raise ValueError(f"hop_seconds must be positive, got {self.hop_seconds}")
        if self.max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be at least 1, got {self.max_batch_rows}")
        if self.max_backlog_seconds <= 0 or self.max_gap_seconds <= 0:
            raise ValueError("max_backlog_seconds and max_gap_seconds must be positive")


@dataclass
class Window:
    """One window of one stream: its embedding, or the reasons it was refused."""

    stream: str
    timestamp: float  # LSL time of the window's last input sample
    end: int  # model-rate samples of the stream up to the window's end, since its last (re)start
    embedding: np.ndarray | None  # (D,) unit vector; None when refused by the quality gate
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.embedding is not None


@dataclass
class Restart:
    """A stream was restarted; no window follows until a full window of new samples."""

    stream: str
    timestamp: float  # LSL time of the sample at which the stream broke off
    reason: str


@dataclass
class Advance:
    """What one :meth:`StreamingEngine.advance` produced, windows in time order per stream."""

    windows: list[Window]
    restarts: list[Restart]


class _Ring:
    """The last ``capacity`` columns of a ``(rows, n)`` signal written chunk by chunk."""

    def __init__(self, rows: int, capacity: int) -> None:
        self.buf = np.zeros((rows, capacity), dtype=np.float32)
        self.count = 0  # columns written in all

    def write(self, x: np.ndarray) -> None:
        n, cap = x.shape[1], self.buf.shape[1]
        if n > cap:
            raise ValueError(f"chunk of {n} samples exceeds the ring's {cap}")
        idx = (self.count + np.arange(n)) % cap
        self.buf[:, idx] = x
        self.count += n

    def read(self, end: int, n: int) -> np.ndarray:
        """Columns ``[end - n, end)`` of the signal (all must still be held)."""
        if end > self.count or end - n < self.count - self.buf.shape[1] or end - n < 0:
            raise IndexError(f"samples [{end - n}, {end}) are not held (written {self.count})")
        return self.buf[:, np.arange(end - n, end) % self.buf.shape[1]]


class _Stream:
    """Per-stream state; the engine's lock guards every access."""

    def __init__(
        self, key: str, picks: list[int], n_inputs: int, sfreq: float, offset: int, engine: StreamingEngine
    ) -> None:
        self.key = key
        self.offset = offset  # its windows end at window + offset + k * hop model-rate samples
        self.picks = picks  # index of each model channel among the stream's channels
        self.n_inputs = n_inputs
        self.sfreq = sfreq
        self.engine = engine
        self.gate = QualityGate(engine.config.quality, tuple(engine.model.montage))
        self.last_timestamp: float | None = None
        self.still_run = 0  # samples since the timestamps last advanced (across restarts)
        self.restarts = 0
        self.reset()

    def reset(self) -> None:
        engine = self.engine
        c = len(self.picks)
        self.pre = Preprocessor(engine.model.spec, self.sfreq, c)  # raises if the rate cannot be resampled
        self.up, self.down = self.pre.resampler.up, self.pre.resampler.down
        self.state: DenoiserState = engine.model.denoiser.allocate_state(1, c)
        self.ring = _Ring(3 * c, engine.ring_capacity)  # raw volts, filtered and denoised model units
        self.carry = np.zeros((2 * c, 0))  # resampled raw + filtered, fewer than a unit
        self.pending: deque[np.ndarray] = deque()  # (C, n) input chunks not yet preprocessed
        self.n_pending = 0
        self.n_pushed = 0  # input samples queued since the restart
        self.anchors: deque[tuple[int, np.ndarray]] = deque()  # (first input index, timestamps)
        self.rate_since: tuple[float, int] | None = None  # (first timestamp, samples since) of the rate check
        self.rate_confirmed = engine.config.rate_tolerance is None

    def state_bytes(self) -> int:
        arrays = [self.ring.buf, self.carry, *self.pending, *(ts for _, ts in self.anchors)]
        tensors = list(self.state.caches)
        if self.state.mamba is not None:
            tensors += [self.state.mamba.conv_state, self.state.mamba.ssm_state]
        return (
            sum(a.nbytes for a in arrays)
            + sum(t.numel() * t.element_size() for t in tensors)
            + self.pre.resampler.state_bytes
            + self.pre.filter.state_bytes
        )

    def timestamp_of(self, out_index: int) -> float:
        """LSL time of model-rate sample ``out_index`` (input position ``index * down / up``)."""
        pos = out_index * self.down / self.up
        i = math.floor(pos)
        for first, ts in reversed(self.anchors):
            if first <= i:
                k = min(i - first, len(ts) - 1)
                return float(ts[k] + (pos - first - k) / self.sfreq)
        first, ts = self.anchors[0]
        return float(ts[0] - (first - pos) / self.sfreq)

    def prune_anchors(self) -> None:
        """Drop timestamps older than any window still to come can end on."""
        oldest_needed = math.floor(self.ring.count * self.down / self.up) - 1
        while len(self.anchors) > 1 and self.anchors[1][0] <= oldest_needed:
            self.anchors.popleft()


class StreamingEngine:
    """Many streams, one model: batched incremental denoising and embedding.

    Thread-safe: :meth:`push` may run on an event loop while :meth:`advance`
    runs in a worker thread.
    """

    def __init__(self, model: NeuroAuthModel, config: EngineConfig | None = None) -> None:
        self.model = model.eval()
        self.config = config = config or EngineConfig()
        spec = model.spec
        hop = config.hop_seconds * spec.sfreq
        if abs(hop - round(hop)) > 1e-9:
            raise ValueError(
                f"hop of {config.hop_seconds} s is not a whole number of samples at {spec.sfreq} Hz"
            )
        self.hop = round(hop)
        self.window = spec.window
        self.max_backlog_out = math.ceil(config.max_backlog_seconds * spec.sfreq)
        self.ring_capacity = self.window + self.max_backlog_out + 2 * self.hop
        self.n_channels = len(model.montage)
        self.device = next(model.denoiser.parameters()).device
        self._streams: dict[str, _Stream] = {}
        self._restarts: list[Restart] = []
        self._lock = threading.Lock()

    # -- streams joining and leaving

    def add_stream(
        self, key: str, channel_names: Sequence[str], sfreq: float, offset_seconds: float = 0.0
    ) -> None:
        """Register a stream by its channel labels and rate; raises with the stream named.

        Its first window ends ``offset_seconds`` (modulo a hop) after a window's worth of samples, and
        one every hop after that: streams that start together with offsets spread over the hop have
        their windows, and the engine's work, spread over it too instead of all at once.
        """
        picks = resolve_montage(self.model.montage, channel_names)
        if picks and isinstance(picks[0], str):
            raise MontageError(f"stream {key!r}", list(picks), list(channel_names))
        if not sfreq > 0:
            raise StreamError(
                f"stream {key!r} announces a rate of {sfreq} Hz; the engine needs the nominal rate "
                "of a regularly sampled stream"
            )
        try:
            offset = round(offset_seconds * self.model.spec.sfreq) % self.hop
            stream = _Stream(key, list(picks), len(channel_names), float(sfreq), offset, self)
        except ValueError as exc:
            raise StreamError(
                f"stream {key!r}: {exc}; the headset's rate needs a simple ratio to "
                f"{self.model.spec.sfreq:g} Hz (e.g. 250, 256, 500 Hz)"
            ) from None
        with self._lock:
            if key in self._streams:
                raise StreamError(f"stream {key!r} is already being served; remove it first")
            self._streams[key] = stream

    def remove_stream(self, key: str) -> None:
        with self._lock:
            self._streams.pop(key, None)

    @property
    def streams(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def pending_samples(self) -> dict[str, int]:
        """Per stream, the input samples queued and not yet processed (bounded by the backlog)."""
        with self._lock:
            return {key: s.n_pending for key, s in self._streams.items()}

    def samples_until_window(self, key: str) -> int:
        """Input samples stream ``key`` still needs before its next window is complete (0: it comes
        at the next :meth:`advance`); the reader's clue to when the stream next needs reading."""
        with self._lock:
            s = self._streams.get(key)
            if s is None:
                raise StreamError(f"stream {key!r} is not registered; call add_stream first")
            resampled = -(-s.n_pushed * s.up // s.down)  # as _due counts them
            missing = self._next_end(s) - resampled  # model-rate samples
            return max(0, -(-missing * s.down // s.up))

    def state_bytes(self) -> int:
        """Bytes held by the streams' own state: buffers, filter and denoiser state."""
        with self._lock:
            return sum(s.state_bytes() for s in self._streams.values())

    # -- samples in

    def push(self, key: str, volts: np.ndarray, timestamps: np.ndarray) -> None:
        """Queue a chunk ``(C_in, N)`` in volts with its LSL timestamps ``(N,)``."""
        volts = np.asarray(volts, dtype=np.float64)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        with self._lock:
            s = self._streams.get(key)
            if s is None:
                raise StreamError(f"stream {key!r} is not registered; call add_stream first")
            if volts.ndim != 2 or volts.shape[0] != s.n_inputs or timestamps.shape != volts.shape[1:]:
                raise StreamError(
                    f"stream {key!r} sent a chunk of shape {volts.shape} with {timestamps.shape} "
                    f"timestamps; expected ({s.n_inputs}, N) and (N,)"
                )
            if volts.shape[1] == 0:
                return
            volts = volts[s.picks]
            start, reasons = self._breaks(s, volts, timestamps)
            if reasons:
                self._restart(s, float(timestamps[max(start - 1, 0)]), "; ".join(reasons))
            s.last_timestamp = float(timestamps[-1])
            if start < volts.shape[1]:
                s.pending.append(volts[:, start:])
                s.anchors.append((s.n_pushed, timestamps[start:]))
                s.n_pushed += volts.shape[1] - start
                s.n_pending += volts.shape[1] - start
                self._check_rate(s, timestamps[start:])
            self._limit_backlog(s)

    def _check_rate(self, s: _Stream, ts: np.ndarray) -> None:
        """Restart a stream whose samples come at another rate than it announced."""
        if self.config.rate_tolerance is None:
            return
        first, count = s.rate_since if s.rate_since is not None else (float(ts[0]), 0)
        count += len(ts)
        span = float(ts[-1]) - first
        s.rate_since = (first, count)
        if span < RATE_CHECK_SECONDS:
            return
        delivered = (count - 1) / span
        if abs(delivered / s.sfreq - 1.0) > self.config.rate_tolerance:
            self._restart(
                s,
                float(ts[-1]),
                f"samples arrive at {delivered:.1f} Hz but the stream announces {s.sfreq:g} Hz; "
                "fix the headset's rate setting or its LSL app",
            )
        else:
            s.rate_since = (float(ts[-1]), 1)
            s.rate_confirmed = True

    def _breaks(self, s: _Stream, volts: np.ndarray, ts: np.ndarray) -> tuple[int, list[str]]:
        """Index after the chunk's last break (0 if none) and the reasons of its breaks."""
        reasons, start = [], 0
        bad = np.flatnonzero(bad_samples(volts, self.config.quality))
        if len(bad):
            reasons.append(
                f"{len(bad)} sample(s) NaN, infinite or beyond +-{self.config.quality.max_abs_volts:g} V"
            )
            start = int(bad[-1]) + 1
        previous = s.last_timestamp if s.last_timestamp is not None else ts[0] - 1.0 / s.sfreq
        steps = np.diff(np.concatenate([[previous], ts]))  # steps[i]: from the sample before i to i
        back = np.flatnonzero(steps < -BACKWARD_TOLERANCE_S)
        gaps = np.flatnonzero(steps > 1.0 / s.sfreq + self.config.max_gap_seconds)
        # samples since the timestamps last advanced, at each sample (carried across chunks): a run
        # longer than max_gap_seconds restarts the stream once, where it crosses the limit, and every
        # sample of it beyond the limit is dropped (its timestamp is not its own)
        index = np.arange(len(steps))
        moved = np.maximum.accumulate(np.where(steps > 0, index, -1))
        run = index - moved + np.where(moved < 0, s.still_run, 0)
        s.still_run = int(run[-1])
        limit = self.config.max_gap_seconds * s.sfreq
        stuck = np.flatnonzero(run > limit)
        crossed = bool(len(stuck)) and bool(np.any(run[stuck] - 1 <= limit))
        if len(back):
            reasons.append(f"timestamps stepped back by {-steps[back].min():.3f} s")
        if len(gaps):
            reasons.append(f"a gap of {steps[gaps].max():.3f} s in the timestamps")
        if crossed:
            reasons.append(
                f"timestamps stood still over {self.config.max_gap_seconds:g} s of samples "
                "(the clock stepped back)"
            )
        if len(back) or len(gaps):
            start = max(start, int(max(np.concatenate([back, gaps]))))
        if len(stuck):
            start = max(start, int(stuck[-1]) + 1)
        return start, reasons

    def _limit_backlog(self, s: _Stream) -> None:
        limit = math.ceil(self.config.max_backlog_seconds * s.sfreq)
        if s.n_pending <= limit:
            return
        volts = np.concatenate(list(s.pending), axis=1)[:, -limit:]
        ts = np.concatenate([t for _, t in s.anchors])[-s.n_pending :][-limit:]
        dropped = s.n_pending - limit
        self._restart(
            s,
            float(ts[0]),
            f"{s.n_pending / s.sfreq:.1f} s of samples waiting exceed the backlog of "
            f"{self.config.max_backlog_seconds:g} s; the oldest {dropped / s.sfreq:.1f} s were dropped",
        )
        s.pending.append(volts)
        s.anchors.append((0, ts))
        s.n_pushed = s.n_pending = limit
        s.last_timestamp = float(ts[-1])

    def _restart(self, s: _Stream, timestamp: float, reason: str) -> None:
        log.warning("stream %s restarts: %s", s.key, reason)
        s.restarts += 1
        s.reset()
        self._restarts.append(Restart(s.key, timestamp, reason))

    # -- the batched step

    @torch.inference_mode()
    def advance(self) -> Advance:
        """Process every stream's queued samples; return the windows that came due."""
        with self._lock:
            restarts, self._restarts = self._restarts, []
            groups: dict[int, list[_Stream]] = {}
            for s in self._streams.values():
                if not self._due(s):
                    continue  # pre-processing waits for a unit: small chunks cost as much as large ones
                self._preprocess(s)
                need = self._next_end(s) - s.ring.count  # samples to step to its next window's end
                if s.carry.shape[1] >= need:
                    n = need + (s.carry.shape[1] - need) // self.hop * self.hop  # and any further hops
                    groups.setdefault(n, []).append(s)
            due: list[tuple[_Stream, int, np.ndarray]] = []  # (stream, end, window (3C, L))
            size = max(1, self.config.max_batch_rows // self.n_channels)  # streams per call
            for n, members in groups.items():
                for i in range(0, len(members), size):
                    due.extend(self._step(n, members[i : i + size]))
            windows = self._embed(due)
            for s in self._streams.values():
                s.prune_anchors()
        return Advance(windows, restarts)

    def _next_end(self, s: _Stream, after: int | None = None) -> int:
        """The first end of a window of ``s`` beyond model-rate sample ``after`` (default: all stepped)."""
        first = max(self.window + s.offset, (s.ring.count if after is None else after) + 1)
        return first + (-(first - self.window - s.offset)) % self.hop

    def _due(self, s: _Stream) -> bool:
        """Whether ``s`` has the samples its next window needs, counting its queued input as if resampled
        (rounded up: a stream is never kept waiting, at worst pre-processed a little early)."""
        resampled = -(-s.n_pushed * s.up // s.down)  # model-rate samples its input makes, rounded up
        return resampled >= self._next_end(s)

    def _preprocess(self, s: _Stream) -> None:
        if not s.pending:
            return
        volts = np.concatenate(list(s.pending), axis=1)
        s.pending.clear()
        s.n_pending = 0
        raw, filtered = s.pre.stages(volts)  # (C, M) each: volts, model units
        s.carry = np.concatenate([s.carry, np.concatenate([raw, filtered])], axis=1)

    def _step(self, n: int, members: list[_Stream]) -> list[tuple[_Stream, int, np.ndarray]]:
        c = self.n_channels
        x = torch.from_numpy(np.stack([s.carry[c:, :n] for s in members])).float()  # (B, C, n)
        y, state = self.model.denoiser.step(x.to(self.device), DenoiserState.cat([s.state for s in members]))
        y = y.cpu().numpy()  # (B, C, n)
        due = []
        for s, st, out in zip(members, state.split(c), y, strict=True):
            s.state = st
            start = s.ring.count
            s.ring.write(np.concatenate([s.carry[:, :n], out]))
            s.carry = s.carry[:, n:]
            first = self._next_end(s, after=start)
            if not s.rate_confirmed:
                continue  # windows of a stream whose rate is not yet confirmed are withheld
            for end in range(first, s.ring.count + 1, self.hop):
                due.append((s, end, s.ring.read(end, self.window)))
        return due

    def _embed(self, due: list[tuple[_Stream, int, np.ndarray]]) -> list[Window]:
        c, scale = self.n_channels, self.model.spec.scale_uv
        windows, good = [], []
        for s, end, w in due:
            problems = s.gate.check(w[:c], w[c : 2 * c] * scale)
            windows.append(Window(s.key, s.timestamp_of(end - 1), end, None, problems))
            if not problems:
                good.append((len(windows) - 1, w[2 * c :]))
        if good:
            batch = torch.from_numpy(np.stack([w for _, w in good])).to(self.device)  # (K, C, L)
            embeddings = self.model.embedder(batch).cpu().numpy()  # (K, D)
            for (i, _), e in zip(good, embeddings, strict=True):
                windows[i].embedding = e
        return windows
