"""Tests of neuroauth.training.noise: SNR control, reproducibility and spectra."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from neuroauth.training import noise as nz
from scipy import signal

FS = 250.0
ALL_KINDS = (*nz.NOISE_TYPES, nz.MIXED)


def _clean(n_channels: int = 4, n_samples: int = 2500, seed: int = 123) -> np.ndarray:
    """A stand-in EEG: channels of different power, alpha rhythm plus 1/f-ish noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / FS
    walk = np.cumsum(rng.standard_normal((n_channels, n_samples)), axis=-1) * 0.05
    alpha = np.sin(2 * np.pi * 10 * t)[None, :]
    gains = np.linspace(0.5, 20.0, n_channels)[:, None]
    return gains * (alpha + walk - walk.mean(axis=-1, keepdims=True))


def _band_fraction(f: np.ndarray, psd: np.ndarray, lo: float, hi: float) -> np.ndarray:
    band = (f >= lo) & (f <= hi)
    return psd[..., band].sum(axis=-1) / psd.sum(axis=-1)


# --------------------------------------------------------------------------- API basics


def test_noise_types_are_the_six_documented_ones():
    assert nz.NOISE_TYPES == ("gaussian", "powerline", "emg", "blink", "drift", "pop")
    assert tuple(nz.GENERATORS) == nz.NOISE_TYPES


@pytest.mark.parametrize("kind", nz.NOISE_TYPES)
def test_generator_shape_dtype_and_scale(kind):
    out = nz.GENERATORS[kind](3, 1000, FS, np.random.default_rng(0))
    assert out.shape == (3, 1000)
    assert out.dtype == np.float64
    assert np.all(np.isfinite(out))
    assert np.sqrt(np.mean(out**2)) == pytest.approx(1.0, rel=0.5)
    # every channel carries noise, otherwise add_noise could not set its SNR
    assert np.all(nz.channel_power(out) > 0)


# --------------------------------------------------------------------------- SNR control


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("snr_db", [-10.0, 0.0, 7.5, 30.0])
def test_add_noise_hits_requested_snr_per_channel(kind, snr_db):
    clean = _clean()
    before = clean.copy()
    noisy, noise = nz.add_noise(clean, FS, kind, snr_db, np.random.default_rng(7))
    achieved = 10 * np.log10(np.mean(clean**2, axis=-1) / np.mean(noise**2, axis=-1))
    np.testing.assert_allclose(achieved, snr_db, rtol=0, atol=1e-6)
    np.testing.assert_allclose(nz.measure_snr_db(clean, noise), snr_db, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(noisy, clean + noise)
    np.testing.assert_array_equal(clean, before)  # input left untouched
    assert noisy.dtype == np.float64 and noise.dtype == np.float64


def test_zero_power_channel_stays_clean():
    clean = _clean(n_channels=3)
    clean[1] = 0.0
    noisy, noise = nz.add_noise(clean, FS, "gaussian", 5.0, np.random.default_rng(1))
    np.testing.assert_array_equal(noise[1], 0.0)
    np.testing.assert_array_equal(noisy[1], 0.0)
    snr = nz.measure_snr_db(clean, noise)
    np.testing.assert_allclose(snr[[0, 2]], 5.0, atol=1e-6)


def test_unknown_kind_raises_naming_it_and_the_valid_ones():
    with pytest.raises(ValueError, match="thunder") as info:
        nz.add_noise(_clean(), FS, "thunder", 0.0, np.random.default_rng(0))
    for kind in ALL_KINDS:
        assert kind in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_snr_raises(bad):
    with pytest.raises(ValueError, match="snr_db"):
        nz.add_noise(_clean(), FS, "gaussian", bad, np.random.default_rng(0))


def test_bad_clean_shape_raises():
    with pytest.raises(ValueError, match="n_channels, n_samples"):
        nz.add_noise(np.ones(100), FS, "gaussian", 0.0, np.random.default_rng(0))


def test_rng_must_be_a_generator():
    with pytest.raises(TypeError, match="Generator"):
        nz.make_gaussian(2, 100, FS, 0)


# --------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_same_output_different_seed_different(kind):
    clean = _clean()
    np.random.seed(1)  # the global state must not matter
    a_noisy, a_noise = nz.add_noise(clean, FS, kind, 3.0, np.random.default_rng(42))
    np.random.seed(2)
    _ = np.random.random(10)
    b_noisy, b_noise = nz.add_noise(clean, FS, kind, 3.0, np.random.default_rng(42))
    _, c_noise = nz.add_noise(clean, FS, kind, 3.0, np.random.default_rng(43))
    np.testing.assert_array_equal(a_noisy, b_noisy)
    np.testing.assert_array_equal(a_noise, b_noise)
    assert not np.allclose(a_noise, c_noise)


# --------------------------------------------------------------------------- spectra and shapes


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_powerline_peaks_at_mains_and_second_harmonic(mains):
    fs = 500.0
    x = nz.make_powerline(3, int(10 * fs), fs, np.random.default_rng(3), mains_hz=mains)
    f, psd = signal.welch(x, fs, nperseg=1000)  # 0.5 Hz resolution
    for ch_psd in psd:
        assert f[np.argmax(ch_psd)] == pytest.approx(mains)
        second = np.argmin(np.abs(f - 2 * mains))
        assert 2 * mains < fs / 2
        # a local peak well above the floor around it
        near = (np.abs(f - 2 * mains) > 3) & (np.abs(f - 2 * mains) < 15)
        assert ch_psd[second] > 1e3 * np.median(ch_psd[near])
        assert ch_psd[second] < ch_psd[np.argmax(ch_psd)]  # decreasing with order


def test_powerline_random_mains_is_50_or_60():
    fs = 500.0
    seen = set()
    for seed in range(12):
        x = nz.make_powerline(2, int(4 * fs), fs, np.random.default_rng(seed))
        f, psd = signal.welch(x[0], fs, nperseg=1000)
        peak = f[np.argmax(psd)]
        assert peak in (50.0, 60.0)
        seen.add(peak)
    assert seen == {50.0, 60.0}


@pytest.mark.parametrize("mains", [50.0, 60.0])
def test_powerline_has_nothing_at_or_above_nyquist_harmonic(mains):
    fs = 200.0  # 2nd harmonic of 50 Hz is exactly Nyquist: it must be left out
    x = nz.make_powerline(3, int(10 * fs), fs, np.random.default_rng(5), mains_hz=mains)
    f, psd = signal.welch(x, fs, nperseg=400)
    assert np.all(_band_fraction(f, psd, 95.0, 100.0) < 1e-8)
    assert np.all(_band_fraction(f, psd, mains - 1, mains + 1) > 0.99)


def test_powerline_rejects_mains_at_or_above_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        nz.make_powerline(1, 100, 100.0, np.random.default_rng(0), mains_hz=50.0)
    with pytest.raises(ValueError, match="sfreq"):
        nz.make_powerline(1, 100, 100.0, np.random.default_rng(0))


def test_powerline_is_common_across_channels_with_own_gain_and_phase():
    x = nz.make_powerline(4, 2000, FS, np.random.default_rng(9), mains_hz=50.0)
    rms = np.sqrt(np.mean(x**2, axis=-1))
    assert rms.max() / rms.min() > 1.05  # per-channel gain
    assert not np.allclose(x[0] / rms[0], x[1] / rms[1])  # per-channel phase


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_emg_power_concentrated_in_20_80_hz_and_bursty(seed):
    x = nz.make_emg(4, int(60 * FS), FS, np.random.default_rng(seed))
    # whole-record periodogram: Welch would drop a burst cut by the window end
    f, psd = signal.periodogram(x, FS)
    assert np.all(_band_fraction(f, psd, 20.0, 80.0) > 0.9)
    # steep band edges: almost nothing far outside the band
    far_outside = 1 - _band_fraction(f, psd, 10.0, 100.0)
    assert np.all(far_outside < 0.002)
    # gated: long silent stretches between bursts, bursts present on every channel
    silent = np.mean(x == 0.0, axis=-1)
    assert np.all(silent > 0.2) and np.all(silent < 1.0)
    # independent per channel
    corr = np.corrcoef(x)
    assert np.max(np.abs(corr[np.triu_indices(4, 1)])) < 0.2


def test_emg_upper_edge_clipped_below_nyquist():
    fs = 100.0
    x = nz.make_emg(2, int(30 * fs), fs, np.random.default_rng(0))
    f, psd = signal.periodogram(x, fs)
    assert np.all(_band_fraction(f, psd, 15.0, 48.0) > 0.9)
    with pytest.raises(ValueError, match="sfreq"):
        nz.make_emg(2, 500, 50.0, np.random.default_rng(0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drift_power_below_1_hz(seed):
    n = int(60 * FS)
    x = nz.make_drift(4, n, FS, np.random.default_rng(seed))
    power = np.abs(np.fft.rfft(x, axis=-1)) ** 2
    f = np.fft.rfftfreq(n, 1 / FS)
    assert np.all(_band_fraction(f, power, 0.0, 1.0) > 0.95)
    # channels wander independently
    assert not np.allclose(x[0], x[1])


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_spectrum_is_flat(seed):
    x = nz.make_gaussian(4, int(60 * FS), FS, np.random.default_rng(seed))
    f, psd = signal.welch(x, FS, nperseg=256)
    mean_psd = psd.mean(axis=0)
    edges = [1.0, 30.0, 60.0, 90.0, 120.0]
    bands = [mean_psd[(f >= lo) & (f < hi)].mean() for lo, hi in itertools.pairwise(edges)]
    assert max(bands) / min(bands) < 1.15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blink_common_across_channels_and_low_frequency(seed):
    n = int(120 * FS)
    x = nz.make_blink(5, n, FS, np.random.default_rng(seed))
    corr = np.corrcoef(x)
    assert np.min(corr) > 0.95
    f, psd = signal.welch(x, FS, nperseg=2048, detrend=False)
    assert np.all(_band_fraction(f, psd, 0.0, 5.0) > 0.8)
    # gains in [0.2, 1] relative to each other
    rms = np.sqrt(np.mean(x**2, axis=-1))
    assert rms.max() / rms.min() <= 5.0 + 1e-9
    # pulses: runs of non-zero samples lasting 200-400 ms, about 10-20 a minute
    active = np.concatenate([[False], np.abs(x[0]) > 0, [False]]).astype(int)
    starts = np.flatnonzero(np.diff(active) == 1)
    stops = np.flatnonzero(np.diff(active) == -1)
    inside = (starts > 0) & (stops < n)  # drop runs cut by the window edges
    lengths = (stops - starts)[inside] / FS
    assert 0.19 <= np.median(lengths) <= 0.41
    assert 5 <= len(starts) / (n / FS / 60) <= 30  # per minute, allowing merged blinks


@pytest.mark.parametrize("seed", range(6))
def test_pop_has_step_onsets_and_exponential_decay(seed):
    x = nz.make_pop(1, int(10 * FS), FS, np.random.default_rng(seed))[0]
    jump = np.diff(x)
    i = int(np.argmax(np.abs(jump)))
    # a step: one sample moves a large share of the peak excursion ...
    assert abs(jump[i]) > 0.3 * np.max(np.abs(x))
    # ... far more than the typical sample-to-sample change
    assert abs(jump[i]) > 50 * np.median(np.abs(jump))
    # then the deflection decays exponentially with a time constant of 0.1-1 s
    onset = i + 1
    m = 5
    if onset + m >= x.size:
        pytest.skip("onset too close to the end for this seed")
    step_before = x[i]
    ratio = (x[onset + m] - step_before) / (x[onset] - step_before)
    tau = -m / FS / np.log(ratio)
    assert 0.09 < tau < 1.1


def test_pop_signs_random_and_every_channel_hit():
    signs = set()
    for seed in range(10):
        x = nz.make_pop(6, int(30 * FS), FS, np.random.default_rng(seed))
        assert np.all(nz.channel_power(x) > 0)
        jumps = np.diff(x, axis=-1)
        big = jumps[np.abs(jumps) > 0.2 * np.abs(x).max()]
        signs.update(np.sign(big).tolist())
    assert signs == {-1.0, 1.0}
