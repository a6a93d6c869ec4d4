"""`neuroauth enroll` from a bundled recording, end to end, and its refusals."""

from __future__ import annotations

import stat

import pytest
from neuroauth.enroll.store import TemplateStore
from neuroauth.models.checkpoint import load_checkpoint

from neuroauth.cli import main
from neuroauth.paths import BUNDLED_DATA, SHIPPED_CHECKPOINT


def test_enroll_in_two_phases_from_a_recording_each(tmp_path, capsys):
    templates = tmp_path / "templates"
    rest, task = BUNDLED_DATA / "Subject03_1.edf", BUNDLED_DATA / "Subject03_2.edf"
    argv = ["enroll", "--user", "ana", "--phases", "rest,arithmetic", "--from-file", str(rest), str(task)]
    argv += ["--templates-dir", str(templates)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "phase 1 of 2: At rest" in out and "phase 2 of 2: Mental arithmetic" in out
    assert out.count("57 windows accepted, 0 refused") == 2  # 60 s of each
    assert "left out of the cohort: eegmat/Subject03" in out  # the shipped cohort holds these recordings
    assert f"signed with the installation key {tmp_path / 'template.key'}" in out
    path = templates / "ana.template.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    template = TemplateStore(templates).load(
        "ana", expected_identity=load_checkpoint(SHIPPED_CHECKPOINT).identity()
    )
    assert template.states == ("rest", "arithmetic") and template.n_windows == 2 * 57
    assert template.calibration["states"] == {"rest": 57, "arithmetic": 57}
    # a second enrollment of the same user needs --replace; the first template stays
    before = path.read_bytes()
    assert main(argv) == 2
    assert "--replace" in capsys.readouterr().err
    assert path.read_bytes() == before
    assert main([*argv, "--replace"]) == 0


def test_one_recording_is_one_phase_and_a_recording_per_phase_is_checked(tmp_path, capsys):
    one = ["enroll", "--user", "ana", "--from-file", str(BUNDLED_DATA / "Subject03_1.edf")]
    assert main([*one, "--templates-dir", str(tmp_path)]) == 0
    assert TemplateStore(tmp_path).load("ana").states == ("rest",)
    capsys.readouterr()
    three = [*one, "--phases", "eyes-open,eyes-closed,task", "--templates-dir", str(tmp_path), "--replace"]
    assert main(three) == 2
    err = capsys.readouterr().err
    assert "--from-file gives 1 recording(s) for 3 phase(s) (eyes-open, eyes-closed, task)" in err


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
    assert "only 17 enrollment window(s) of 'bo'" in err and "at least 30" in err
    assert not (tmp_path / "bo.template.json").exists()
    # a phase below its own minimum is refused with its name, before any template is made
    argv = ["enroll", "--user", "bo", "--phases", "rest,arithmetic", "--from-file"]
    argv += [str(BUNDLED_DATA / "Subject06_1.edf"), str(BUNDLED_DATA / "Subject06_2.edf"), "--duration", "12"]
    assert main([*argv, "--templates-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "the 'rest' phase" in err and "gave 9 usable windows" in err and "at least 10" in err
    assert not (tmp_path / "bo.template.json").exists()


@pytest.mark.parametrize("user", ["../evil", ".hidden", "a b"])
def test_unsafe_user_names_are_refused(tmp_path, user, capsys):
    argv = ["enroll", "--user", user, "--from-file", str(BUNDLED_DATA / "Subject06_1.edf")]
    assert main([*argv, "--templates-dir", str(tmp_path)]) == 2
    assert list(tmp_path.iterdir()) == []


def test_enroll_takes_directory_and_targets_from_the_daemon_configuration(tmp_path, capsys):
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


def test_once_the_site_is_large_enough_enrollment_normalises_against_it(tmp_path, capsys):
    templates = ["--templates-dir", str(tmp_path / "templates")]
    first = ["enroll", "--user", "ana", "--from-file", str(BUNDLED_DATA / "Subject03_1.edf"), *templates]
    assert main([*first, "--min-site-people", "1"]) == 0  # nobody else yet: the training people
    second = ["enroll", "--user", "ben", "--from-file", str(BUNDLED_DATA / "Subject06_1.edf"), *templates]
    capsys.readouterr()
    assert main([*second, "--min-site-people", "1"]) == 0
    out = capsys.readouterr().out
    assert "ben's template is normalised against the 1 other people enrolled here" in out
    assert "normalised against   the 1 other people enrolled here" in out  # the template's account
    store = TemplateStore(tmp_path / "templates")
    assert store.load("ana").calibration["cohort"]["against"] == "training"
    ben = store.load("ben").calibration["cohort"]
    assert ben["against"] == "site" and ben["site_people"] == ["ana"]
    renormalise = ["templates", "--dir", str(store.directory), "renormalise", "--min-site-people", "1"]
    assert main(renormalise) == 0
    assert store.load("ana").calibration["cohort"]["site_people"] == ["ben"]
