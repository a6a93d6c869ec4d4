"""The signal-quality gate: which samples and windows are fit to be scored.

Two levels, both cheap and stateless:

- **Samples** (:func:`bad_samples`): a sample that is NaN, infinite or beyond any
  EEG front-end's input range cannot be filtered without poisoning the filter and
  denoiser state for seconds after it. The streaming engine restarts a stream at
  such samples instead of feeding them on.
- **Windows** (:meth:`QualityGate.check`): a window is refused when a channel is
  flat (an electrode off or shorted), clipped (the amplifier at its rail), or so
  large after filtering that it is an artefact rather than EEG. The checks look at
  the resampled raw signal (flat, clipped) and at the filtered signal (amplitude).

A refused window is never embedded or scored: the decision over time treats it
as no signal, which counts as locked.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gate, in microvolts."""

    max_abs_volts: float = 0.2  # a raw sample beyond +-200 mV is no EEG amplifier's output
    flat_uv: float = 0.5  # peak-to-peak below this over a window: a flat channel
    clip_fraction: float = 0.05  # share of a window's samples at its extreme values: clipped
    # how near its extremes, as a share of the window's span, a sample counts as at them: the
    # resampler's anti-alias filter rings around a clipped stretch and lifts the extremes above
    # the rail by about 1.5 % of the span, so a tighter tolerance misses the rail's samples
    clip_tolerance: float = 0.02
    max_filtered_uv: float = 500.0  # filtered amplitude above this: artefact or garbage

    def __post_init__(self) -> None:
        if not 0 < self.clip_tolerance < 0.5:
            raise ValueError(f"clip_tolerance {self.clip_tolerance} must be within (0, 0.5) of the span")
        if not 0 < self.clip_fraction < 1:
            raise ValueError(f"clip_fraction {self.clip_fraction} must be within (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


def bad_samples(volts: np.ndarray, config: QualityConfig) -> np.ndarray:
    """Per time step of ``volts (C, N)``: True where any channel is non-finite or out of range."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(volts) <= config.max_abs_volts).all(axis=0)  # NaN compares False


class QualityGate:
    """Window checks; :meth:`check` returns the problems found (empty when the window is fit)."""

    def __init__(self, config: QualityConfig | None = None, channel_names: tuple[str, ...] = ()) -> None:
        self.config = config or QualityConfig()
        self.channel_names = channel_names

    def _name(self, c: int) -> str:
        return self.channel_names[c] if c < len(self.channel_names) else f"#{c}"

    def check(self, raw_volts: np.ndarray, filtered_uv: np.ndarray) -> tuple[str, ...]:
        """Problems of one window: ``raw_volts (C, L)`` resampled raw, ``filtered_uv (C, L)`` filtered."""
        cfg = self.config
        problems = []
        if not np.isfinite(raw_volts).all():
            return ("non-finite samples",)
        raw_uv = raw_volts * 1e6
        high, low = raw_uv.max(axis=1), raw_uv.min(axis=1)  # (C,)
        span = high - low
        for c in np.flatnonzero(span < cfg.flat_uv):
            problems.append(f"channel {self._name(c)} flat ({span[c]:.2g} uV peak to peak)")
        # clipped: many samples sit within clip_tolerance of the span from the channel's extremes
        tol = cfg.clip_tolerance * span[:, None]
        at_edge = ((raw_uv >= high[:, None] - tol) | (raw_uv <= low[:, None] + tol)).mean(axis=1)
        for c in np.flatnonzero((at_edge > cfg.clip_fraction) & (span >= cfg.flat_uv)):
            share = 100 * at_edge[c]
            problems.append(f"channel {self._name(c)} clipped ({share:.0f} % of samples at its limits)")
        peak = np.abs(filtered_uv).max(axis=1)
        for c in np.flatnonzero(peak > cfg.max_filtered_uv):
            problems.append(f"channel {self._name(c)} at {peak[c]:.0f} uV after filtering (artefact)")
        return tuple(problems)
