"""The continuous evaluation: its bookkeeping on scripted sessions, and a real replay."""

from __future__ import annotations

import pytest
from neuroauth.enroll.decision import DecisionTargets
from neuroauth.models.checkpoint import load_checkpoint
from neuroauth.training.continuous import (
    Session,
    evaluate_continuous,
    plot_session,
    pool,
    run_session,
    session_figures,
)
from neuroauth.training.data import find_sessions, load_sessions

from neuroauth.errors import CheckpointError


def scripted(owner, impostor, states, takeover=5.0):
    times = [float(t) for t in range(4, 4 + len(states))]
    scores = [1.0 if t <= takeover else -1.0 for t in times]
    return Session(owner, impostor, takeover, times, scores, list(states))


def test_figures_of_scripted_sessions():
    o, u, i, n = "OWNER", "UNKNOWN", "IMPOSTOR", "NO_SIGNAL"
    sessions = [
        # unlocks at 5 s, locks 2 s after the takeover at 6 s, then lets the impostor in at 10 s
        scripted("a", "b", [u, o, o, o, i, i, o, i], takeover=6.0),
        # the same owner part; this impostor is never locked
        scripted("a", "c", [u, o, o, o, o, o, o, o], takeover=6.0),
        # an owner locked out once (OWNER -> NO_SIGNAL), unlocked at the takeover, locked 1 s later
        scripted("b", "a", [o, n, o, o, i, i], takeover=7.0),
        # an owner who never unlocks: locked at the takeover already
        scripted("c", "a", [u, u, u, i], takeover=6.0),
    ]
    f = session_figures(sessions, window_seconds=4.0)
    assert f["time_to_unlock_s"] == [5.0, 4.0]
    assert f["owners_never_unlocked"] == ["c"]
    assert f["time_to_lock_s"] == [2.0, 1.0]
    assert f["sessions_never_locked"] == 1
    assert f["sessions_locked_at_takeover"] == 1
    assert f["false_lockouts"] == 1  # "a"'s owner part is counted once, not once per session
    assert f["owner_seconds"] == 6.0 + 7.0 + 6.0
    assert f["impostor_unlocks"] == 1
    joined = pool([f, f])
    assert joined["time_to_lock_s"] == [2.0, 1.0, 2.0, 1.0] and joined["false_lockouts"] == 2


def test_a_stitched_session_times_the_impostor_from_the_takeover_as_a_live_stream_would():
    from factories import make_template

    template = make_template()
    owner = [3.0] * 20 + [None] + [3.0] * 9  # a window the quality gate refused
    session = run_session(template.decision, "a", "b", owner, [-3.0] * 15, window_seconds=4.0)
    assert session.takeover == 4.0 + 29  # the owner's last window ends there
    assert (
        session.times[:2] == [4.0, 5.0] and session.times[30] == session.takeover + 4.0
    )  # first wholly theirs
    assert session.states[20] == "NO_SIGNAL" and session.scores[20] is None
    f = session_figures([session], window_seconds=4.0)
    assert f["owner_seconds"] == session.takeover and f["false_lockouts"] == 1  # the refused window
    assert f["time_to_lock_s"] and f["time_to_lock_s"][0] >= 4.0


@pytest.fixture(scope="module")
def three_subjects(bundled_dir):
    from neuroauth.paths import SHIPPED_CHECKPOINT

    model = load_checkpoint(SHIPPED_CHECKPOINT)
    return model, load_sessions(find_sessions(bundled_dir)[:3], model.montage, model.spec)


def test_replay_of_bundled_sessions_locks_every_impostor(three_subjects, tmp_path):
    model, data = three_subjects
    report, sessions, _ = evaluate_continuous(model, data, DecisionTargets(), progress=False)
    assert len(sessions) == 3 * 2
    assert report["cohort_subjects"] and not set(report["cohort_subjects"]) & set(report["subjects"])
    assert report["seen_in_training"] == report["subjects"]  # the shipped model knows them
    assert report["sessions_never_locked"] == 0  # every takeover locked within the impostor's EEG
    assert report["time_to_lock_s"]["n"] + report["sessions_locked_at_takeover"] == 6
    assert report["time_to_lock_s"]["p95"] < 62 - 24  # the arithmetic recording's probe part
    assert report["promised"]["templates"] == 3 and report["promised"]["false_lockouts_per_hour"] <= 2.0
    assert report["owner_unlocked_share"] > 0.5 and not report["owners_never_unlocked"]
    assert 0.0 <= report["window_eer"] < 0.2
    png = plot_session(sessions[0], tmp_path / "session.png")
    assert png.stat().st_size > 10_000


def test_a_cohort_of_only_evaluated_people_is_refused(three_subjects):
    model, data = three_subjects
    cohort = model.cohort
    model.cohort = cohort.without(set(cohort.subjects) - {d.subject for d in data})
    try:
        with pytest.raises(CheckpointError, match="cohort keeps 0; calibration needs at least 4"):
            evaluate_continuous(model, data, progress=False)
    finally:
        model.cohort = cohort


def test_normalised_against_the_site_the_takeovers_by_strangers_are_reported_apart(three_subjects):
    from neuroauth.training.continuous import site_reports
    from neuroauth.training.evaluate import embedded_people

    model, data = three_subjects
    embedded = embedded_people(model, data, progress=False, gate=True)
    reports = site_reports(model, data, DecisionTargets(), embedded, (1, 5), progress=False)
    assert sorted(reports) == ["1", "all"]
    one, every = reports["1"], reports["all"]
    assert one["site_people"] == 1 and every["site_people"] == 2
    strangers = one[
        "strangers"
    ]  # each owner's other impostor: not the one the template was normalised against
    assert strangers["owners"] == 3
    assert (
        strangers["time_to_lock_s"]["n"]
        + strangers["sessions_locked_at_takeover"]
        + strangers["sessions_never_locked"]
        == 3
    )
    assert "strangers" not in every  # every impostor is one of the people normalised against


def test_a_site_cohort_is_drawn_per_owner_from_the_other_people(three_subjects):
    from neuroauth.training.continuous import site_cohort
    from neuroauth.training.evaluate import embedded_people

    model, data = three_subjects
    people = embedded_people(model, data, progress=False, gate=True)["ours"]
    owner = people[0].subject
    one = site_cohort(people, owner, 1, 1.0)
    assert len(one.subjects) == 1 and owner not in one.subjects
    assert one.subjects == site_cohort(people, owner, 1, 1.0).subjects  # the same draw every time
    every = site_cohort(people, owner, 10, 1.0)
    assert set(every.subjects) == {p.subject for p in people} - {owner}
    assert len(every.embeddings) == sum(len(e) for p in people[1:] for e in p.enroll["states"])
