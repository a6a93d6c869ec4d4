"""The quality gate refuses what cannot be EEG and passes real EEG."""

from __future__ import annotations

import numpy as np
import pytest
from neuroauth.models.montage import MONTAGE_10_20
from neuroauth.models.preprocess import Preprocessor, SignalSpec, sliding_windows
from neuroauth.models.quality import QualityConfig, QualityGate, bad_samples
from neuroauth.training.data import load_recording

NAMES = ("T7", "F8", "Cz", "P4")


def eeg_like(seed: int = 0) -> np.ndarray:
    """4 channels x 800 samples of 10 Hz rhythm plus noise, about 20 uV (volts)."""
    rng = np.random.default_rng(seed)
    t = np.arange(800) / 200
    rhythm = np.sin(2 * np.pi * 10 * t + rng.uniform(0, 6, (4, 1)))
    return 20e-6 * rhythm + 5e-6 * rng.standard_normal((4, 800))


def test_clean_window_passes():
    raw = eeg_like()
    assert QualityGate(channel_names=NAMES).check(raw, raw * 1e6) == ()


def test_flat_channel_is_named():
    raw = eeg_like()
    raw[2] = 3e-3  # a constant offset: the electrode is off
    (problem,) = QualityGate(channel_names=NAMES).check(raw, raw * 0)
    assert problem.startswith("channel Cz flat")


def test_clipped_channel_is_named():
    raw = eeg_like()
    raw[1] = np.clip(raw[1] * 3, -30e-6, 30e-6)  # the amplifier saturates on both rails
    problems = QualityGate(channel_names=NAMES).check(raw, raw * 1e6)
    assert len(problems) == 1 and problems[0].startswith("channel F8 clipped")
    # a short excursion to the extremes is not clipping
    assert QualityGate(channel_names=NAMES).check(eeg_like(1), eeg_like(1) * 1e6) == ()


def test_large_filtered_amplitude_is_an_artefact():
    raw = eeg_like()
    filtered = raw * 1e6
    filtered[3, 400] = 800.0
    (problem,) = QualityGate(channel_names=NAMES).check(raw, filtered)
    assert problem.startswith("channel P4 at 800 uV")


def test_non_finite_window():
    raw = eeg_like()
    raw[0, 5] = np.nan
    assert QualityGate().check(raw, raw) == ("non-finite samples",)


def test_bad_samples_marks_time_steps():
    x = np.zeros((3, 6))
    x[0, 1], x[2, 3], x[1, 5] = np.nan, -np.inf, 0.5
    assert bad_samples(x, QualityConfig()).tolist() == [False, True, False, True, False, True]


@pytest.mark.parametrize("role", ["_1", "_2"])
def test_every_window_of_the_bundled_recordings_passes(bundled_dir, role):
    """Real EEG, 19 channels, every window at a 1 s hop: the gate refuses none."""
    spec = SignalSpec()
    gate = QualityGate(channel_names=MONTAGE_10_20)
    n = 0
    for path in sorted(bundled_dir.glob(f"*{role}.edf")):
        rec = load_recording(path, MONTAGE_10_20, SignalSpec(sfreq=200.0))
        raw, filtered = Preprocessor(spec, spec.sfreq, 19).stages(rec.volts)
        for w in sliding_windows(np.concatenate([raw, filtered]), 800, 200):
            assert gate.check(w[:19], w[19:] * spec.scale_uv) == ()
            n += 1
    assert n > 200
