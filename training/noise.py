"""Seeded, SNR-controlled synthesis of the artefacts a live EEG headset adds.

The denoiser is trained on pairs ``(clean + noise, clean)`` and evaluated per
noise type, so every generator here is:

* pure numpy/scipy, float64, shaped ``(n_channels, n_samples)``;
* driven only by the :class:`numpy.random.Generator` it is given (same seed,
  same output; the global random state is never touched);
* of unit-ish scale (overall RMS 1): its level is set afterwards by
  :func:`add_noise` from the requested signal-to-noise ratio.

Noise types (:data:`NOISE_TYPES`):

``gaussian``
    White sensor/amplifier noise, independent per channel.
``powerline``
    Mains at 50 or 60 Hz plus its harmonics below Nyquist, with amplitudes that
    decrease with harmonic order, a random phase per channel, a slight common
    amplitude modulation and a per-channel gain.
``emg``
    Bursts of muscle activity: 20-80 Hz band-limited noise gated by smooth
    bursts of 0.2-2 s, independent per channel.
``blink``
    Eye blinks: smooth 200-400 ms pulses, about 10-20 per minute, the same
    waveform on every channel with a per-channel gain in [0.2, 1].
``drift``
    Baseline wander: low-passed random walk below about 0.5 Hz plus a slow
    linear trend, independent per channel.
``pop``
    Electrode pops: sudden steps that decay exponentially (time constant
    0.1-1 s), a few per minute, each on one random channel with a random sign.

:func:`add_noise` also accepts ``"mixed"``: a randomly weighted sum of two or
three distinct types.

Every generator guarantees that each channel carries some noise (at least one
burst, blink or pop per channel where the artefact is intermittent), because
:func:`add_noise` sets the SNR of every channel exactly and cannot scale a
channel whose noise is identically zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import signal

__all__ = [
    "GENERATORS",
    "MIXED",
    "NOISE_TYPES",
    "add_noise",
    "available_types",
    "channel_power",
    "make_blink",
    "make_drift",
    "make_emg",
    "make_gaussian",
    "make_noise",
    "make_pop",
    "make_powerline",
    "measure_snr_db",
]

NOISE_TYPES: tuple[str, ...] = ("gaussian", "powerline", "emg", "blink", "drift", "pop")
"""The single noise types, in a fixed order (use it to loop over evaluations)."""

MIXED = "mixed"
"""The extra ``kind`` of :func:`add_noise`: a random sum of 2-3 single types."""

MAINS_CHOICES: tuple[float, ...] = (50.0, 60.0)
EMG_BAND_HZ: tuple[float, float] = (20.0, 80.0)
EMG_BURST_S: tuple[float, float] = (0.2, 2.0)
BLINK_DURATION_S: tuple[float, float] = (0.2, 0.4)
BLINK_RATE_PER_MIN: tuple[float, float] = (10.0, 20.0)
DRIFT_CUTOFF_HZ: tuple[float, float] = (0.1, 0.5)
POP_TAU_S: tuple[float, float] = (0.1, 1.0)
POP_RATE_PER_MIN: tuple[float, float] = (2.0, 6.0)

# Upper EMG band edge never closer to Nyquist than this fraction of it.
_NYQUIST_MARGIN = 0.9
# The EMG band must keep at least this ratio between its edges to be meaningful.
_MIN_EMG_BAND_RATIO = 1.5


# --------------------------------------------------------------------------- helpers


def _check_args(n_channels: int, n_samples: int, sfreq: float, rng: object) -> None:
    if isinstance(n_channels, bool) or not isinstance(n_channels, (int, np.integer)):
        raise TypeError(f"n_channels must be an int, got {type(n_channels).__name__}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_channels < 1 or n_samples < 1:
        raise ValueError(
            f"need at least one channel and one sample, got n_channels={n_channels}, n_samples={n_samples}"
        )
    if not (isinstance(sfreq, (int, float, np.integer, np.floating)) and math.isfinite(sfreq)):
        raise ValueError(f"sfreq must be a finite number of Hz, got {sfreq!r}")
    if sfreq <= 0:
        raise ValueError(f"sfreq must be positive, got {sfreq!r} Hz")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), "
            f"got {type(rng).__name__}"
        )


def _unit_rms(x: np.ndarray) -> np.ndarray:
    """Scale ``x`` to an overall RMS of 1, keeping the ratios between channels."""
    rms = math.sqrt(float(np.mean(np.square(x))))
    return x / rms if rms > 0 else x


def _n_events(rate_per_min: float, duration_s: float, rng: np.random.Generator) -> int:
    """Poisson count of events over ``duration_s``, at least one."""
    return max(1, int(rng.poisson(rate_per_min * duration_s / 60.0)))


def _tukey_envelope(t: np.ndarray, start: float, stop: float, ramp: float) -> np.ndarray:
    """A 0..1 envelope on ``t``: raised-cosine ramps of ``ramp`` s at both ends."""
    env = np.zeros_like(t)
    inside = (t > start) & (t < stop)
    ti = t[inside]
    up = np.clip((ti - start) / ramp, 0.0, 1.0)
    down = np.clip((stop - ti) / ramp, 0.0, 1.0)
    env[inside] = 0.5 * (1.0 - np.cos(np.pi * np.minimum(up, down)))
    return env


def _emg_band(sfreq: float) -> tuple[float, float]:
    low, high = EMG_BAND_HZ
    high = min(high, _NYQUIST_MARGIN * sfreq / 2.0)
    if high < _MIN_EMG_BAND_RATIO * low:
        raise ValueError(
            f"emg noise needs a sampling rate above "
            f"{2 * _MIN_EMG_BAND_RATIO * low / _NYQUIST_MARGIN:.1f} Hz to hold its "
            f"{low:g}-{EMG_BAND_HZ[1]:g} Hz band, got sfreq={sfreq:g} Hz"
        )
    return low, high


def _mains_options(sfreq: float) -> tuple[float, ...]:
    return tuple(f for f in MAINS_CHOICES if f < sfreq / 2.0)


def available_types(sfreq: float) -> tuple[str, ...]:
    """The noise types that can be synthesised at ``sfreq`` Hz.

    ``powerline`` needs the mains frequency below Nyquist and ``emg`` needs room
    for its band; the other types work at any rate.
    """
    out = []
    for kind in NOISE_TYPES:
        if kind == "powerline" and not _mains_options(sfreq):
            continue
        if kind == "emg":
            try:
                _emg_band(sfreq)
            except ValueError:
                continue
        out.append(kind)
    return tuple(out)


# --------------------------------------------------------------------------- generators


def make_gaussian(n_channels: int, n_samples: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """White Gaussian noise, independent per channel, unit variance."""
    _check_args(n_channels, n_samples, sfreq, rng)
    return rng.standard_normal((n_channels, n_samples))


def make_powerline(
    n_channels: int,
    n_samples: int,
    sfreq: float,
    rng: np.random.Generator,
    *,
    mains_hz: float | None = None,
) -> np.ndarray:
    """Mains interference: the fundamental and its harmonics strictly below Nyquist.

    ``mains_hz`` defaults to 50 or 60 Hz at random (among those below Nyquist).
    Harmonic amplitudes decrease with order (each 0.2-0.6 of the previous), every
    channel has its own phase per harmonic and a gain in [0.5, 1.5], and a slow
    (0.05-0.5 Hz) amplitude modulation of 2-10 % is common to all channels.
    """
    _check_args(n_channels, n_samples, sfreq, rng)
    nyquist = sfreq / 2.0
    if mains_hz is None:
        options = _mains_options(sfreq)
        if not options:
            raise ValueError(
                f"powerline noise needs sfreq above {2 * min(MAINS_CHOICES):g} Hz so that "
                f"mains lies below Nyquist, got sfreq={sfreq:g} Hz"
            )
        mains = float(options[int(rng.integers(len(options)))])
    else:
        mains = float(mains_hz)
        if not (math.isfinite(mains) and 0 < mains < nyquist):
            raise ValueError(
                f"mains_hz must be positive and below Nyquist ({nyquist:g} Hz), got {mains_hz!r}"
            )

    n_harm = 1
    while (n_harm + 1) * mains < nyquist:  # every harmonic strictly below Nyquist
        n_harm += 1
    amps = np.cumprod(np.concatenate([[1.0], rng.uniform(0.2, 0.6, size=n_harm - 1)]))
    phases = rng.uniform(0.0, 2.0 * np.pi, size=(n_channels, n_harm))
    gains = rng.uniform(0.5, 1.5, size=n_channels)
    mod_depth = rng.uniform(0.02, 0.10)
    mod_hz = rng.uniform(0.05, 0.5)
    mod_phase = rng.uniform(0.0, 2.0 * np.pi)

    t = np.arange(n_samples) / sfreq
    out = np.zeros((n_channels, n_samples))
    for k in range(n_harm):
        freq = (k + 1) * mains
        out += amps[k] * np.sin(2.0 * np.pi * freq * t[None, :] + phases[:, k : k + 1])
    envelope = 1.0 + mod_depth * np.sin(2.0 * np.pi * mod_hz * t + mod_phase)
    out *= envelope[None, :] * gains[:, None]
    return _unit_rms(out)


def make_emg(n_channels: int, n_samples: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Muscle bursts: 20-80 Hz noise gated by smooth random bursts, per channel.

    The carrier is white noise through a zero-phase 4th-order Butterworth
    band-pass (upper edge clipped to 90 % of Nyquist). Each channel gets its own
    bursts (2-10 per minute, at least one, centred inside the signal) lasting
    0.2-2 s with raised-cosine on/off ramps and amplitudes in [0.5, 1.5].
    """
    _check_args(n_channels, n_samples, sfreq, rng)
    low, high = _emg_band(sfreq)
    sos = signal.butter(4, [low, high], btype="bandpass", fs=sfreq, output="sos")
    margin = max(int(sfreq) + 1, 64)  # let the filter transients die out
    white = rng.standard_normal((n_channels, n_samples + 2 * margin))
    carrier = signal.sosfiltfilt(sos, white, axis=-1)[:, margin : margin + n_samples]

    duration = n_samples / sfreq
    t = np.arange(n_samples) / sfreq
    gate = np.zeros((n_channels, n_samples))
    for ch in range(n_channels):
        rate = rng.uniform(2.0, 10.0)
        for _ in range(_n_events(rate, duration, rng)):
            centre = int(rng.integers(n_samples)) / sfreq
            length = rng.uniform(*EMG_BURST_S)
            ramp = length * rng.uniform(0.1, 0.3)
            amp = rng.uniform(0.5, 1.5)
            env = _tukey_envelope(t, centre - length / 2, centre + length / 2, ramp)
            gate[ch] = np.maximum(gate[ch], amp * env)
    return _unit_rms(carrier * gate)


def _blink_pulse(tau: np.ndarray, duration: float, rise: float) -> np.ndarray:
    """Asymmetric raised cosine: rises over ``rise * duration``, falls over the rest.

    ``tau`` is time relative to the peak; the pulse is 1 at ``tau == 0``.
    """
    t_up = rise * duration
    t_down = duration - t_up
    out = np.zeros_like(tau)
    up = (tau > -t_up) & (tau <= 0)
    down = (tau > 0) & (tau < t_down)
    out[up] = 0.5 * (1.0 + np.cos(np.pi * tau[up] / t_up))
    out[down] = 0.5 * (1.0 + np.cos(np.pi * tau[down] / t_down))
    return out


def make_blink(n_channels: int, n_samples: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Eye blinks: smooth 200-400 ms pulses shared by all channels with own gains.

    About 10-20 blinks a minute (Poisson, at least one, each peaking inside the
    signal); each is an asymmetric raised cosine (faster rise than fall) of
    amplitude 0.7-1.3. Channel gains are uniform in [0.2, 1], as a stand-in for
    distance from the eyes.
    """
    _check_args(n_channels, n_samples, sfreq, rng)
    duration = n_samples / sfreq
    t = np.arange(n_samples) / sfreq
    waveform = np.zeros(n_samples)
    rate = rng.uniform(*BLINK_RATE_PER_MIN)
    for _ in range(_n_events(rate, duration, rng)):
        peak = int(rng.integers(n_samples)) / sfreq
        length = rng.uniform(*BLINK_DURATION_S)
        rise = rng.uniform(0.3, 0.5)
        amp = rng.uniform(0.7, 1.3)
        waveform += amp * _blink_pulse(t - peak, length, rise)
    gains = rng.uniform(0.2, 1.0, size=n_channels)
    return _unit_rms(gains[:, None] * waveform[None, :])


def make_drift(n_channels: int, n_samples: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Baseline wander: a low-passed random walk below ~0.5 Hz plus a linear trend.

    The wander is synthesised in the frequency domain on twice the length (so it
    does not wrap around) with a random-walk (1/f amplitude) spectrum levelled
    off below ``fc / 4`` and cut by a 4th-order Butterworth-shaped low-pass at
    ``fc`` in [0.1, 0.5] Hz. Each channel adds a linear trend whose end-to-end
    change is Gaussian with standard deviation 1.5 times the wander's RMS.
    """
    _check_args(n_channels, n_samples, sfreq, rng)
    n_ext = 2 * n_samples
    freqs = np.fft.rfftfreq(n_ext, d=1.0 / sfreq)
    cutoff = rng.uniform(*DRIFT_CUTOFF_HZ)
    shape = 1.0 / np.sqrt(freqs**2 + (cutoff / 4.0) ** 2)
    shape /= np.sqrt(1.0 + (freqs / cutoff) ** 8)
    spectrum = rng.standard_normal((n_channels, freqs.size)) + 1j * rng.standard_normal(
        (n_channels, freqs.size)
    )
    wander = np.fft.irfft(spectrum * shape[None, :], n=n_ext, axis=-1)[:, :n_samples]
    rms = np.sqrt(np.mean(np.square(wander), axis=-1, keepdims=True))
    wander = wander / np.where(rms > 0, rms, 1.0)

    ramp = np.linspace(-0.5, 0.5, n_samples) if n_samples > 1 else np.zeros(1)
    change = 1.5 * rng.standard_normal(n_channels)
    return _unit_rms(wander + change[:, None] * ramp[None, :])


def make_pop(n_channels: int, n_samples: int, sfreq: float, rng: np.random.Generator) -> np.ndarray:
    """Electrode pops: sudden steps decaying exponentially, each on one channel.

    Pops arrive at 2-6 per minute per channel on average (Poisson), each on a
    channel drawn at random, with a random sign, amplitude in [0.5, 1.5] and
    decay time constant in [0.1, 1] s. Any channel left without a pop gets one,
    so that every channel carries some noise (see the module notes).
    """
    _check_args(n_channels, n_samples, sfreq, rng)
    duration = n_samples / sfreq
    rate = rng.uniform(*POP_RATE_PER_MIN)
    n_pops = max(1, int(rng.poisson(rate * n_channels * duration / 60.0)))
    channels = [int(ch) for ch in rng.integers(n_channels, size=n_pops)]
    hit = set(channels)
    channels += [ch for ch in range(n_channels) if ch not in hit]

    t = np.arange(n_samples) / sfreq
    out = np.zeros((n_channels, n_samples))
    for ch in channels:
        onset = int(rng.integers(n_samples))
        tau = rng.uniform(*POP_TAU_S)
        amp = rng.uniform(0.5, 1.5) * (1.0 if rng.random() < 0.5 else -1.0)
        out[ch, onset:] += amp * np.exp(-(t[onset:] - t[onset]) / tau)
    return _unit_rms(out)


GENERATORS: dict[str, Callable[[int, int, float, np.random.Generator], np.ndarray]] = {
    "gaussian": make_gaussian,
    "powerline": make_powerline,
    "emg": make_emg,
    "blink": make_blink,
    "drift": make_drift,
    "pop": make_pop,
}
"""Noise type name -> generator, in the order of :data:`NOISE_TYPES`."""


# --------------------------------------------------------------------------- mixing


def _unknown_kind(kind: object) -> ValueError:
    valid = ", ".join((*NOISE_TYPES, MIXED))
    return ValueError(f"unknown noise kind {kind!r}; valid kinds are: {valid}")


def make_noise(
    kind: str, n_channels: int, n_samples: int, sfreq: float, rng: np.random.Generator
) -> np.ndarray:
    """Unscaled noise of type ``kind`` (one of :data:`NOISE_TYPES` or ``"mixed"``).

    ``"mixed"`` picks two or three distinct types among those available at
    ``sfreq`` (see :func:`available_types`), brings each to unit RMS and sums
    them with weights drawn uniformly in [0.5, 1].
    """
    if kind in GENERATORS:
        return GENERATORS[kind](n_channels, n_samples, sfreq, rng)
    if kind != MIXED:
        raise _unknown_kind(kind)
    _check_args(n_channels, n_samples, sfreq, rng)
    pool = available_types(sfreq)
    n_parts = min(int(rng.integers(2, 4)), len(pool))
    picks = rng.choice(len(pool), size=n_parts, replace=False)
    out = np.zeros((n_channels, n_samples))
    for idx in sorted(int(i) for i in picks):
        part = GENERATORS[pool[idx]](n_channels, n_samples, sfreq, rng)
        out += rng.uniform(0.5, 1.0) * _unit_rms(part)
    return out


# --------------------------------------------------------------------------- SNR


def channel_power(x: np.ndarray) -> np.ndarray:
    """Per-channel power (mean of squares over the last axis)."""
    return np.mean(np.square(np.asarray(x, dtype=np.float64)), axis=-1)


def measure_snr_db(clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Per-channel ``10 * log10(power(clean) / power(noise))`` in dB.

    Channels without noise give ``+inf``; channels without signal and noise
    give ``nan``.
    """
    p_clean = channel_power(clean)
    p_noise = channel_power(noise)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(p_clean / p_noise)


def add_noise(
    clean: np.ndarray,
    sfreq: float,
    kind: str,
    snr_db: float,
    rng: np.random.Generator,
    measure: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Add noise of type ``kind`` to ``clean`` at ``snr_db`` dB on every channel.

    ``measure``, when given, is a linear map (such as the causal band-pass the
    stream applies) through which both powers are measured, so the SNR holds
    where that map's output goes (e.g. at the denoiser's input) rather than on
    the raw signal.

    The noise is scaled per channel so that
    ``10 * log10(power(clean_ch) / power(noise_ch)) == snr_db`` (power is the
    mean of squares). Channels whose clean power is zero get no noise. Note
    that per-channel scaling overrides the relative channel gains a generator
    drew (e.g. blink gains); what survives is the waveform shape and timing.

    Returns ``(clean + noise, noise)`` as new float64 arrays; ``clean`` is not
    modified.

    Raises ``ValueError`` for an unknown ``kind``, a non-finite ``snr_db``, or a
    ``clean`` that is not a finite 2-D array.
    """
    if not (isinstance(kind, str) and (kind in GENERATORS or kind == MIXED)):
        raise _unknown_kind(kind)
    try:
        snr = float(snr_db)
    except (TypeError, ValueError):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db!r}") from None
    if not math.isfinite(snr):
        raise ValueError(f"snr_db must be a finite number of dB, got {snr_db!r}")
    x = np.asarray(clean, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"clean must be shaped (n_channels, n_samples), got an array of shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("clean contains NaN or infinite values; clean them before adding noise")

    n_channels, n_samples = x.shape
    raw = make_noise(kind, n_channels, n_samples, sfreq, rng)

    p_clean = channel_power(x if measure is None else measure(x))
    p_noise = channel_power(raw if measure is None else measure(raw))
    has_signal = p_clean > 0
    silent = has_signal & ~(p_noise > 0)
    if np.any(silent):  # the generators guarantee noise on every channel
        raise RuntimeError(
            f"{kind} noise came out zero on channel(s) {np.flatnonzero(silent).tolist()}; "
            "this is a bug in neuroauth.training.noise"
        )
    scale = np.zeros(n_channels)
    target = p_clean[has_signal] / 10.0 ** (snr / 10.0)
    scale[has_signal] = np.sqrt(target / p_noise[has_signal])
    noise = raw * scale[:, None]
    return x + noise, noise
