"""Signal pre-processing, defined once for the offline and the streaming path.

Every stage is causal and keeps its own state, so a recording processed in
one call and the same recording fed chunk by chunk give the same samples:

    raw (headset rate, volts) -> resample to the model rate (polyphase FIR)
        -> band-pass + notch (IIR, second-order sections) -> divide by a fixed scale

The normalisation is a fixed scale, not a statistic of the signal: it needs
nothing from the future of a stream and keeps the absolute amplitude, which
differs between people and is part of what identifies them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
from scipy import signal

MAX_RATE = 20_000.0  # Hz
MAX_FILTER_ORDER = 16
MAX_WINDOW = 2**16  # samples
MAX_UPSAMPLING = 100  # output samples per input sample: 2 Hz into a 200 Hz model, far below any EEG rate
SCALE_UV_RANGE = (0.01, 1e4)  # microvolts per model unit: the gate's +-0.2 V stays far inside float32


@dataclass(frozen=True)
class SignalSpec:
    """What the model expects of its input; stored in every checkpoint."""

    sfreq: float = 200.0
    window: int = 800
    band: tuple[float, float] = (0.5, 45.0)
    notch: tuple[float, ...] = (50.0, 60.0)
    filter_order: int = 4
    scale_uv: float = 10.0

    def __post_init__(self) -> None:
        # a checkpoint's configuration is data read from a file: sizes beyond these are no model's
        if not 0 < self.sfreq <= MAX_RATE or not 1 <= self.filter_order <= MAX_FILTER_ORDER:
            raise ValueError(
                f"a rate of {self.sfreq} Hz and a filter of order {self.filter_order} are beyond any model's "
                f"(at most {MAX_RATE:g} Hz and order {MAX_FILTER_ORDER})"
            )
        if self.window > MAX_WINDOW:
            raise ValueError(f"window of {self.window} samples is too long; use at most {MAX_WINDOW}")
        low, high = self.band
        if not 0 < low < high < self.sfreq / 2:
            raise ValueError(f"band {self.band} must satisfy 0 < low < high < Nyquist ({self.sfreq / 2} Hz)")
        if self.window < 16:
            raise ValueError(f"window of {self.window} samples is too short; use at least 16")
        low_uv, high_uv = SCALE_UV_RANGE
        if not low_uv <= self.scale_uv <= high_uv:
            raise ValueError(
                f"scale_uv must lie in [{low_uv:g}, {high_uv:g}] microvolts per model unit, "
                f"got {self.scale_uv}"
            )

    @property
    def window_seconds(self) -> float:
        return self.window / self.sfreq

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SignalSpec:
        return cls(
            sfreq=float(data["sfreq"]),
            window=int(data["window"]),
            band=tuple(float(v) for v in data["band"]),
            notch=tuple(float(v) for v in data["notch"]),
            filter_order=int(data["filter_order"]),
            scale_uv=float(data["scale_uv"]),
        )


class Resampler:
    """Causal polyphase FIR resampling from ``in_rate`` to ``out_rate``, chunk by chunk.

    Output sample ``m`` sits at upsampled time ``m * down`` and is computed from
    input samples up to that time only. Before the first sample the history is
    the first sample repeated, so a stream starts without a step transient.
    """

    def __init__(self, in_rate: float, out_rate: float, n_channels: int) -> None:
        factor = out_rate / in_rate if in_rate > 0 else float("nan")
        ratio = Fraction(factor).limit_denominator(1000) if 0 < factor <= MAX_UPSAMPLING else Fraction(0)
        if ratio == 0:  # none, or more outputs per input than a chunk holds (a rate near 0: infinitely many)
            raise ValueError(
                f"resampling {in_rate:g} Hz to {out_rate:g} Hz takes a factor of {factor:g}; the input rate "
                f"must lie between 1/{MAX_UPSAMPLING} and 1000 times the output rate"
            )
        if abs(float(ratio) - factor) > 1e-9:
            raise ValueError(f"cannot resample {in_rate} Hz to {out_rate} Hz by a rational factor")
        self.up, self.down = ratio.numerator, ratio.denominator
        self.in_rate, self.out_rate = float(in_rate), float(out_rate)
        self.n_channels = n_channels
        self._history: np.ndarray | None = None  # (C, Q - 1) last inputs
        self._n_in = 0
        self._n_out = 0
        if self.up == self.down == 1:  # same rate: a pass-through with no delay
            self.n_taps = self.n_phase_taps = 1
            return
        n_taps = 20 * max(self.up, self.down) + 1
        self.n_taps = n_taps
        taps = signal.firwin(n_taps, 1.0 / max(self.up, self.down), window=("kaiser", 5.0))
        self.n_phase_taps = -(-n_taps // self.up)  # taps per polyphase branch
        padded = np.zeros(self.up * self.n_phase_taps)
        padded[:n_taps] = taps * self.up
        self._phases = padded.reshape(self.n_phase_taps, self.up).T  # (up, Q)

    @property
    def state_bytes(self) -> int:
        return 0 if self._history is None else self._history.nbytes

    @property
    def delay_seconds(self) -> float:
        """Group delay of the anti-alias filter."""
        return (self.n_taps - 1) / 2 / (self.in_rate * self.up)

    def process(self, x: np.ndarray) -> np.ndarray:
        """Resample a chunk ``(C, N)``; returns ``(C, M)`` with M possibly 0."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] != self.n_channels:
            raise ValueError(f"expected a ({self.n_channels}, N) chunk, got shape {x.shape}")
        if self.up == self.down == 1:
            return x.copy()
        q = self.n_phase_taps
        if self._history is None:
            if x.shape[1] == 0:
                return np.zeros((self.n_channels, 0))
            self._history = np.repeat(x[:, :1], q - 1, axis=1)
        buffer = np.concatenate([self._history, x], axis=1)  # (C, Q-1+N)
        n_total = self._n_in + x.shape[1]
        # outputs whose upsampled time m*down falls before n_total*up
        m_end = -(-n_total * self.up // self.down)
        m = np.arange(self._n_out, m_end)
        j = m * self.down
        base = j // self.up - self._n_in + (q - 1)  # index of newest input in buffer
        phase = j % self.up
        gather = base[:, None] - np.arange(q)[None, :]  # (M, Q)
        taps = self._phases[phase]  # (M, Q)
        out = np.einsum("cmq,mq->cm", buffer[:, gather], taps)
        self._history = buffer[:, buffer.shape[1] - (q - 1) :]
        self._n_in = n_total
        self._n_out = m_end
        return out


def design_filter(spec: SignalSpec) -> np.ndarray:
    """Second-order sections of the band-pass and the mains notches below Nyquist."""
    sections = [signal.butter(spec.filter_order, spec.band, btype="band", fs=spec.sfreq, output="sos")]
    for mains in spec.notch:
        if mains < spec.sfreq / 2:
            b, a = signal.iirnotch(mains, Q=30.0, fs=spec.sfreq)
            sections.append(signal.tf2sos(b, a))
    return np.concatenate(sections, axis=0)


class CausalFilter:
    """An IIR filter whose state carries across chunks; starts in steady state."""

    def __init__(self, sos: np.ndarray, n_channels: int) -> None:
        self.sos = sos
        self.n_channels = n_channels
        self._zi_unit = signal.sosfilt_zi(sos)  # (S, 2)
        self._state: np.ndarray | None = None  # (S, C, 2)

    @property
    def state_bytes(self) -> int:
        return 0 if self._state is None else self._state.nbytes

    def process(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[1] == 0:
            return x.copy()
        if self._state is None:
            self._state = self._zi_unit[:, None, :] * x[None, :, 0, None]
        out, self._state = signal.sosfilt(self.sos, x, axis=1, zi=self._state)
        return out


class Preprocessor:
    """Resample, filter and scale one stream, chunk by chunk, in model units."""

    def __init__(self, spec: SignalSpec, in_rate: float, n_channels: int) -> None:
        self.spec = spec
        self.resampler = Resampler(in_rate, spec.sfreq, n_channels)
        self.filter = CausalFilter(design_filter(spec), n_channels)
        self._gain = 1.0 / (spec.scale_uv * 1e-6)

    def process(self, volts: np.ndarray) -> np.ndarray:
        """``(C, N)`` volts at the input rate -> ``(C, M)`` float64 in model units."""
        return self.stages(volts)[1]

    def stages(self, volts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(C, N)`` volts -> the resampled raw signal (volts) and the filtered one (model units)."""
        raw = self.resampler.process(volts)  # (C, M)
        return raw, self.filter.process(raw) * self._gain


def resample(volts: np.ndarray, in_rate: float, out_rate: float) -> np.ndarray:
    """Resample a whole recording with the same causal resampler the stream uses."""
    return Resampler(in_rate, out_rate, volts.shape[0]).process(volts)


def filter_and_scale(x: np.ndarray, spec: SignalSpec) -> np.ndarray:
    """Filter and scale a whole recording already at the model rate (volts in)."""
    return CausalFilter(design_filter(spec), x.shape[0]).process(x) / (spec.scale_uv * 1e-6)


def preprocess(volts: np.ndarray, in_rate: float, spec: SignalSpec) -> np.ndarray:
    """The whole pre-processing of a recording in one call; equals chunked processing."""
    return Preprocessor(spec, in_rate, volts.shape[0]).process(volts)


def sliding_windows(x: np.ndarray, window: int, hop: int, start: int = 0, stop: int | None = None):
    """Windows ``(W, C, window)`` of ``x (C, N)`` starting at ``start, start+hop, ...``.

    Only windows that end at or before ``stop`` (default: the end) are returned.
    The result is a read-only view; copy it before writing.
    """
    stop = x.shape[1] if stop is None else min(stop, x.shape[1])
    if stop - start < window:
        return np.zeros((0, x.shape[0], window), dtype=x.dtype)
    views = np.lib.stride_tricks.sliding_window_view(x[:, start:stop], window, axis=1)
    return views[:, ::hop].transpose(1, 0, 2)
