from __future__ import annotations

import shutil

import pytest
from neuroauth.models.montage import MONTAGE_10_20
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.data import find_sessions, load_recording

from neuroauth.errors import DataError, MontageError


def test_bundled_sessions_are_found(bundled_dir):
    sessions = find_sessions(bundled_dir)
    assert [s.subject for s in sessions] == ["Subject00", "Subject03", "Subject06", "Subject08", "Subject09"]
    assert sessions[0].enrol.name == "Subject00_1.edf"


def test_load_picks_montage_by_alias_and_resamples(bundled_dir):
    rec = load_recording(bundled_dir / "Subject00_2.edf", ("t7", "EEG F8", "CZ", "P4"), SignalSpec())
    assert rec.volts.shape == (4, 62 * 200)
    assert 1e-6 < rec.volts.std() < 1e-4  # microvolt-range EEG, in volts
    full = load_recording(bundled_dir / "Subject00_2.edf", MONTAGE_10_20, SignalSpec())
    assert full.volts.shape[0] == 19


def test_missing_channels_are_named(bundled_dir):
    with pytest.raises(MontageError, match=r"lacks the channel\(s\) Oz, AF3"):
        load_recording(bundled_dir / "Subject00_2.edf", ("Cz", "Oz", "AF3"), SignalSpec())


def test_other_file_names_through_suffix_options(bundled_dir, tmp_path):
    for name in ("A_rest.edf", "A_task.edf", "B_rest.edf", "B_task.edf"):
        shutil.copy(bundled_dir / "Subject00_2.edf", tmp_path / name)
    sessions = find_sessions(tmp_path, enrol_suffix="_rest", probe_suffix="_task")
    assert [(s.subject, s.probe.name) for s in sessions] == [("A", "A_task.edf"), ("B", "B_task.edf")]
    with pytest.raises(DataError, match="--enrol-suffix"):
        find_sessions(tmp_path)


def test_a_truncated_recording_is_refused_with_its_name(bundled_dir, tmp_path):
    data = (bundled_dir / "Subject00_2.edf").read_bytes()
    bad = tmp_path / "bad_2.edf"
    bad.write_bytes(data[:300])
    with pytest.raises(DataError, match=r"bad_2\.edf"):
        load_recording(bad, ("Cz",), SignalSpec())
