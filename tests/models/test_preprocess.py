from __future__ import annotations

import numpy as np
import pytest
from neuroauth.models.preprocess import Preprocessor, Resampler, SignalSpec, preprocess, sliding_windows


@pytest.mark.parametrize("rate", [500.0, 250.0, 256.0, 200.0])
def test_chunked_preprocessing_equals_one_shot(rate):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, int(rate * 7) + 3)) * 2e-5
    whole = preprocess(x, rate, SignalSpec())
    stream = Preprocessor(SignalSpec(), rate, 3)
    parts, i = [], 0
    while i < x.shape[1]:
        n = int(rng.integers(1, 257))
        parts.append(stream.process(x[:, i : i + n]))
        i += n
    chunked = np.concatenate(parts, axis=1)
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-9)


def test_resampler_keeps_an_in_band_sine_with_its_stated_delay():
    fs_in, fs_out, f = 500.0, 200.0, 10.0
    t = np.arange(5000) / fs_in
    r = Resampler(fs_in, fs_out, 1)
    y = r.process(np.sin(2 * np.pi * f * t)[None])[0]
    t_out = np.arange(len(y)) / fs_out
    expected = np.sin(2 * np.pi * f * (t_out - r.delay_seconds))
    assert len(y) == 2000
    assert np.abs(y[200:] - expected[200:]).max() < 2e-3


def test_filter_removes_drift_and_mains_and_scales_to_model_units():
    spec = SignalSpec()
    t = np.arange(int(20 * spec.sfreq)) / spec.sfreq
    alpha = 10e-6 * np.sin(2 * np.pi * 10 * t)
    junk = 50e-6 * np.sin(2 * np.pi * 50 * t) + 200e-6 * t / t[-1]
    out = preprocess((alpha + junk)[None], spec.sfreq, spec)[0]
    tail = slice(len(t) // 2, None)
    # 10 uV at the model's 10 uV scale is amplitude 1
    assert abs(np.std(out[tail]) - np.std(alpha[tail]) / 10e-6) < 0.05


def test_sliding_windows_respects_stop():
    x = np.arange(20.0)[None]
    w = sliding_windows(x, 8, 4, stop=16)
    assert w.shape == (3, 1, 8)
    assert w[-1, 0, -1] == 15.0


def test_signal_spec_rejects_a_band_above_nyquist():
    with pytest.raises(ValueError, match="Nyquist"):
        SignalSpec(band=(1.0, 120.0))
