"""`neuroauth enroll` from a bundled recording, end to end, and its refusals."""

from __future__ import annotations

import stat

import pytest
from neuroauth.enroll.store import TemplateStore
from neuroauth.models.checkpoint import load_checkpoint

from neuroauth.paths import BUNDLED_DATA, SHIPPED_CHECKPOINT, main


def test_enrol_from_a_bundled_recording(tmp_path, capsys):
    templates = tmp_path / "templates"
    recording = BUNDLED_DATA / "Subject03_1.edf"
    argv = ["enroll", "--user", "ana", "--from-file", str(recording), "--templates-dir", str(templates)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "57 windows accepted, 0 refused" in out
    assert "left out of the cohort: Subject03" in out  # the shipped cohort holds this recording
    path = templates / "ana.template.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    template = TemplateStore(templates).load(
        "ana", expected_identity=load_checkpoint(SHIPPED_CHECKPOINT).identity()
    )
    assert template.n_windows == 57
    assert template.calibration["cohort"]["subjects"] == 21
    # a second enrolment of the same user needs --replace; the first template stays
    before = path.read_bytes()
    assert main(argv) == 2
    assert "--replace" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main([*argv, "--replace"]) == 0


def test_too_short_a_recording_is_refused_with_the_count(tmp_path, capsys):
    argv = [
        "enroll",
        "--user",
        "bo",
        "--from-file",
        str(BUNDLED_DATA / "Subject06_1.edf"),
        "--duration",
        "20",
    ]
    assert main([*argv, "--templates-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gave 17 usable windows" in err and "at least 30" in err
    assert not (tmp_path / "bo.template.json").exists()


@pytest.mark.parametrize("user", ["../evil", ".hidden", "a b"])
def test_unsafe_user_names_are_refused(tmp_path, user, capsys):
    argv = ["enroll", "--user", user, "--from-file", str(BUNDLED_DATA / "Subject06_1.edf")]
    assert main([*argv, "--templates-dir", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_enrol_takes_directory_and_targets_from_the_daemon_configuration(tmp_path, capsys):
    templates = tmp_path / "state" / "templates"
    config = tmp_path / "neuroauthd.toml"
    config.write_text(
        f'[templates]\ndirectory = "{templates}"\n'
        "[decision]\nfalse_lockouts_per_hour = 2.0\ntime_to_lock_s = 20.0\n"
        '[[headsets]]\ndevice = "desk"\nuser = "cy"\n'
    )
    recording = BUNDLED_DATA / "Subject08_1.edf"
    assert main(["enroll", "--user", "cy", "--from-file", str(recording), "--config", str(config)]) == 0
    template = TemplateStore(templates).load("cy")
    assert template.calibration["decision"]["targets"] == {
        "false_lockouts_per_hour": 2.0,
        "time_to_lock_s": 20.0,
    }
    # a flag wins over the configuration
    argv = ["enroll", "--user", "cy", "--from-file", str(recording), "--config", str(config), "--replace"]
    assert main([*argv, "--time-to-lock", "7"]) == 0
    assert TemplateStore(templates).load("cy").calibration["decision"]["targets"]["time_to_lock_s"] == 7.0
