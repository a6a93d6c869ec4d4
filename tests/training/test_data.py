from __future__ import annotations

import shutil

import pytest
from neuroauth.models.montage import MONTAGE_10_20
from neuroauth.models.preprocess import SignalSpec
from neuroauth.training.data import KNOWN_CORPORA, find_corpora, find_sessions, load_recording, load_sessions

from neuroauth.errors import DataError, MontageError


def test_bundled_sessions_are_found_by_the_rules_known_for_eegmat(bundled_dir):
    sessions = find_sessions(bundled_dir)
    names = ["Subject00", "Subject03", "Subject06", "Subject08", "Subject09"]
    assert [s.subject for s in sessions] == [f"eegmat/{n}" for n in names]
    assert sessions[0].enroll.name == "Subject00_1.edf" and sessions[0].probe.name == "Subject00_2.edf"
    assert sessions[0].corpus.states == KNOWN_CORPORA["eegmat"]
    assert [s.name for s in sessions[0].corpus.states] == ["rest", "arithmetic"]
    assert [s.subject for s in find_sessions(bundled_dir, subjects=["Subject03", "eegmat/Subject06"])] == [
        "eegmat/Subject03",
        "eegmat/Subject06",
    ]
    with pytest.raises(DataError, match=r"no recordings of subject.*Subject99"):
        find_sessions(bundled_dir, subjects=["Subject99"])


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
    sessions = find_sessions(tmp_path, enroll_suffix="_rest", probe_suffix="_task")
    corpus = tmp_path.name
    assert [(s.subject, s.probe.name) for s in sessions] == [
        (f"{corpus}/A", "A_task.edf"),
        (f"{corpus}/B", "B_task.edf"),
    ]
    assert [s.enroll_seconds for s in sessions[0].corpus.states] == [60.0, 0.0]  # the whole probe is probe
    with pytest.raises(DataError, match="--enroll-suffix"):
        find_sessions(tmp_path)


def _corpus(folder, names, source):
    folder.mkdir(parents=True)
    for name in names:
        shutil.copy(source, folder / name)


def test_a_folder_of_corpora_pairs_each_by_its_manifest_or_known_rules(bundled_dir, tmp_path):
    source = bundled_dir / "Subject00_2.edf"
    _corpus(tmp_path / "data" / "mumtaz", ["H01_EC.edf", "H01_EO.edf", "H02_EO.edf", "M03_EC.edf"], source)
    _corpus(
        tmp_path / "data" / "lab", ["p1_open.edf", "p1_closed.edf", "p2_open.edf", "p2_closed.edf"], source
    )
    (tmp_path / "data" / "lab" / "corpus.toml").write_text(
        'name = "mylab"\n[[state]]\nname = "eyes-open"\nsuffix = "_open"\nenroll_seconds = 30\n'
        '[[state]]\nname = "eyes-closed"\nsuffix = "_closed"\n'
    )
    corpora = find_corpora([tmp_path / "data"])
    assert [c.name for c in corpora] == ["mylab", "mumtaz"]
    assert [(s.name, s.suffix, s.enroll_seconds) for s in corpora[0].states] == [
        ("eyes-open", "_open", 30.0),
        ("eyes-closed", "_closed", 60.0),
    ]
    assert corpora[1].states == KNOWN_CORPORA["mumtaz"]
    sessions = find_sessions([tmp_path / "data"])
    assert [(s.subject, s.complete) for s in sessions] == [
        ("mylab/p1", True),
        ("mylab/p2", True),
        ("mumtaz/H01", True),
        ("mumtaz/H02", False),  # one recording: a training class, cohort and impostor
        ("mumtaz/M03", False),
    ]
    data = load_sessions(sessions, ("Cz", "P4"), SignalSpec())
    h02 = data[3]
    assert (
        h02.enroll is None
        and h02.probe.state == "eyes-open"
        and [r.state for r in h02.present()] == ["eyes-open"]
    )
    assert [s.subject for s in find_sessions([tmp_path / "data"], complete_only=True)] == [
        "mylab/p1",
        "mylab/p2",
        "mumtaz/H01",
    ]


def test_a_bad_manifest_is_refused_with_its_fix(bundled_dir, tmp_path):
    _corpus(tmp_path / "lab", ["p1_a.edf"], bundled_dir / "Subject00_2.edf")
    (tmp_path / "lab" / "corpus.toml").write_text("[[state]]\nname = 'a'\n")
    with pytest.raises(DataError, match=r"corpus\.toml does not describe a corpus.*suffix"):
        find_corpora([tmp_path / "lab"])
    with pytest.raises(DataError, match="does not exist"):
        find_corpora([tmp_path / "absent"])


def test_reference_suffixes_and_old_names_are_matched_to_the_montage(tmp_path):
    import mne
    import numpy as np

    names = ["EEG T3-LE", "EEG F8-LE", "EEG Cz-LE", "EEG P4-LE", "EEG A2-A1"]
    raw = mne.io.RawArray(
        np.random.default_rng(0).normal(0, 2e-5, (5, 256 * 10)),
        mne.create_info(names, 256.0, "eeg"),
        verbose="error",
    )
    raw.save(tmp_path / "H01_EC.fif", verbose="error")
    rec = load_recording(tmp_path / "H01_EC.fif", ("T7", "F8", "Cz", "P4"), SignalSpec())
    assert rec.volts.shape == (4, 2000)  # 256 Hz resampled to 200 Hz
    np.testing.assert_allclose(rec.volts.std(axis=1), 2e-5, rtol=0.2)


def test_a_truncated_recording_is_refused_with_its_name(bundled_dir, tmp_path):
    data = (bundled_dir / "Subject00_2.edf").read_bytes()
    bad = tmp_path / "bad_2.edf"
    bad.write_bytes(data[:300])
    with pytest.raises(DataError, match=r"bad_2\.edf"):
        load_recording(bad, ("Cz",), SignalSpec())
