from __future__ import annotations

import numpy as np
import pytest
from neuroauth.enroll.calibration import OwnerWindows, SvmSearch, _folds, choose_threshold, enroll
from neuroauth.enroll.decision import DecisionMachine, DecisionTargets, State
from neuroauth.enroll.store import TemplateStore
from neuroauth.models.cohort import Cohort
from synthetic_people import enroll_windows, sequences_of

from neuroauth.errors import CheckpointError, DataError
from neuroauth.metrics import auroc


def test_folds_never_train_on_windows_overlapping_the_held_out_block():
    for n, k in [(30, 5), (181, 5), (64, 4)]:
        folds = _folds([n], k, gap=3)
        held = np.concatenate([f.test for f in folds])
        np.testing.assert_array_equal(held, np.arange(n))  # every window held out once, in order
        for f in folds:
            assert np.all(np.diff(f.test) == 1)
            distance = np.abs(f.train[:, None] - f.test[None, :]).min()
            assert distance == 4  # 4 s windows every 1 s: 4 apart is the first without overlap
            assert len(f.train) == n - len(f.test) - 3 * (int(f.test[0] > 0) + int(f.test[-1] < n - 1))


def test_folds_hold_out_a_block_of_every_state():
    folds = _folds([57, 17], 5, gap=3)
    held = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(np.sort(held), np.arange(74))
    for f in folds:
        assert (f.test < 57).any() and (f.test >= 57).any()  # both states in every held-out part
        for a, b in [(0, 57), (57, 74)]:
            test, train = f.test[(f.test >= a) & (f.test < b)], f.train[(f.train >= a) & (f.train < b)]
            assert np.abs(train[:, None] - test[None, :]).min() >= 4  # no overlap within a state
        assert len(set(f.train) & set(f.test)) == 0


def test_template_separates_the_owner_from_other_people(people, enrolled):
    probe = enrolled.score(people.owner_probe)  # a later recording, never seen at enrollment
    strangers = np.concatenate([enrolled.score(s).fused for s in people.strangers])  # not in the cohort
    assert auroc(probe.fused, strangers) > 0.97
    assert np.mean(probe.fused >= enrolled.threshold.value) > 0.5
    assert np.mean(strangers >= enrolled.threshold.value) < 0.05
    # fusion is z-normalised against the cohort: its windows score about 0 with unit spread
    cohort = enrolled.score(people.cohort.embeddings).fused
    assert abs(cohort.mean()) < 1e-6
    assert probe.cosine.shape == probe.svm.shape == probe.fused.shape == (120,)


def test_calibration_record(people, enrolled):
    search = enrolled.calibration["svm_search"]
    assert len(search["grid"]) == len(SvmSearch().nu) * len(SvmSearch().gamma_multiples)
    best = min(search["grid"], key=lambda g: g["eer"])
    assert (enrolled.svm.nu, enrolled.svm.gamma) == (best["nu"], best["gamma"])
    assert search["chosen"]["eer"] == best["eer"]
    assert enrolled.calibration["window_eer"]["held_out_owner_windows"] == 180
    assert enrolled.n_windows == 180 and enrolled.dim == 64
    threshold = enrolled.threshold
    assert threshold.policy == "target-far" and threshold.target_far == 0.01 and threshold.far <= 0.01
    assert enrolled.decision.owner_mean > enrolled.decision.impostor_mean
    assert enrolled.states == ("rest",) and enrolled.centroids.shape == (1, 64)


def test_decision_meets_reachable_targets_and_works_on_new_data(people, enrolled):
    record = enrolled.calibration["decision"]
    chosen, targets = record["chosen"], record["targets"]
    assert record["meets_targets"] is True
    assert chosen["false_lockouts_per_hour"] <= targets["false_lockouts_per_hour"]
    assert chosen["median_time_to_lock_s"] <= targets["time_to_lock_s"]
    # calibrated on the sequences: 12 owners, 12 x 11 impostor recordings
    assert record["owner_sequences"] == 12 and record["impostor_sequences"] == 12 * 11
    assert record["sequences"] == people.sequences.record

    machine = DecisionMachine(enrolled.decision)
    decisions = [machine.update(float(t), s) for t, s in enumerate(enrolled.score(people.owner_probe).fused)]
    assert decisions[-1].state is State.OWNER
    assert not any(d.state is State.IMPOSTOR for d in decisions)
    # a stranger puts the headset on: locked well within the target
    stranger = enrolled.score(people.strangers[0]).fused
    decisions = [machine.update(200.0 + t, s) for t, s in enumerate(stranger)]
    first_lock = next(i for i, d in enumerate(decisions) if d.state is State.IMPOSTOR)
    assert first_lock + 1 <= targets["time_to_lock_s"]


def test_impossible_targets_are_flagged(people):
    template = enroll_windows(people, people.owner, targets=DecisionTargets(time_to_lock_s=0.5))
    record = template.calibration["decision"]
    assert record["meets_targets"] is False
    assert record["chosen"]["median_time_to_lock_s"] > 0.5
    assert record["targets"]["time_to_lock_s"] == 0.5


@pytest.mark.parametrize("policy", ["eer", "youden"])
def test_other_threshold_policies(people, enrolled, policy):
    template = enroll_windows(people, people.owner, policy=policy)
    th = template.threshold
    assert th.policy == policy and th.target_far is None
    assert th.value < enrolled.threshold.value  # a 1 % false-accept target is the strictest here
    if policy == "eer":
        assert abs(th.far - th.frr) < 0.05


def test_threshold_policies_on_known_scores():
    rng = np.random.default_rng(0)
    genuine, impostor = rng.normal(2, 1, 2000), rng.normal(0, 1, 20000)
    far_rule = choose_threshold(genuine, impostor, "target-far", 0.05)
    assert far_rule.far <= 0.05 and far_rule.far > 0.049
    assert far_rule.value == pytest.approx(1.645, abs=0.05)  # the 95th percentile of N(0, 1)
    eer_rule = choose_threshold(genuine, impostor, "eer", 0.05)
    assert eer_rule.value == pytest.approx(1.0, abs=0.08) and abs(eer_rule.far - eer_rule.frr) < 0.01
    youden = choose_threshold(genuine, impostor, "youden", 0.05)
    j = [1 - t.frr - t.far for t in (far_rule, eer_rule, youden)]
    assert j[2] >= max(j[:2])


def test_enrolled_template_survives_the_store(tmp_path, enrolled, people):
    store = TemplateStore(tmp_path)
    store.save(enrolled)
    loaded = store.load("alice", expected_identity="ckpt-a")
    assert loaded.calibration == enrolled.calibration
    np.testing.assert_array_equal(
        loaded.score(people.owner_probe).fused, enrolled.score(people.owner_probe).fused
    )


def test_too_few_owner_windows_are_refused(people):
    with pytest.raises(DataError, match=r"only 29 enrollment window.*at least 30.*Record longer"):
        enroll_windows(people, people.owner[:29])
    two = OwnerWindows(("eyes-open", "eyes-closed"), (people.owner[:60], people.owner[60:69]))
    with pytest.raises(
        DataError, match=r"only 9 window\(s\) of 'alice' in the 'eyes-closed' phase.*at least 10"
    ):
        enroll(
            two, people.cohort, people.sequences, user="alice", checkpoint_identity="c", embedder="spectral"
        )


def test_a_checkpoint_without_calibration_sequences_is_refused(people):
    with pytest.raises(CheckpointError, match=r"no score sequences of unseen people.*neuroauth cohort"):
        enroll(
            OwnerWindows.single(people.owner),
            people.cohort,
            None,
            user="a",
            checkpoint_identity="c",
            embedder="spectral",
        )


def test_an_empty_cohort_is_refused(people):
    c = people.cohort
    empty = Cohort(c.embeddings[:0], c.subject[:0], c.recording[:0], c.subjects, c.hop_seconds)
    with pytest.raises(CheckpointError, match="cohort is empty"):
        enroll_windows(people, people.owner, cohort=empty)


def test_a_cohort_of_another_dimension_is_refused(people):
    with pytest.raises(CheckpointError, match=r"32-d but the checkpoint's cohort is 64-d"):
        enroll_windows(people, people.owner[:, :32])


def test_an_owner_unlike_their_own_held_out_windows_is_refused(people, make_recording):
    # five stretches around centres that sum to zero: each held-out stretch points away from the rest
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((4, 64))
    centres = np.concatenate([centres, -centres.sum(axis=0, keepdims=True)])
    owner = np.concatenate([make_recording(rng, c, 36, spread=0.3) for c in centres])
    with pytest.raises(DataError, match=r"180 enrollment windows of 'x' score no higher than other people"):
        enroll_windows(people, owner, user="x")


def test_decision_is_calibrated_on_the_sequences_not_the_enrollment(people):
    """Unseen people's later EEG scores lower than the enrollment's held-out windows: the decision's
    owner model follows the calibration sequences, whatever the owner's enrollment says."""
    rng = np.random.default_rng(5)
    drifted = people.cohort.embeddings.copy()
    second = people.cohort.recording == 1
    # every cohort person's second recording drifts away from their first
    moved = drifted[second] + 0.08 * rng.standard_normal((second.sum(), drifted.shape[1]))
    drifted[second] = moved / np.linalg.norm(moved, axis=1, keepdims=True)
    c = people.cohort
    drifting_sequences = sequences_of(
        Cohort(drifted.astype(np.float32), c.subject, c.recording, c.subjects, 1.0)
    )
    steady = enroll_windows(people, people.owner)
    drifting = enroll(
        OwnerWindows.single(people.owner),
        c,
        drifting_sequences,
        user="alice",
        checkpoint_identity="c",
        embedder="spectral",
    )
    assert len(drifting_sequences.owner_sequences()) == 12
    assert drifting.decision.owner_mean < steady.decision.owner_mean
    # the held-out windows of the enrollment are the same in both: the difference is the sequences
    assert drifting.calibration["window_eer"] == steady.calibration["window_eer"]


def test_a_template_per_state_scores_each_state_against_its_own_centroid(people, make_recording):
    rng = np.random.default_rng(11)
    closed = people.owner_centre + 3.0 * rng.standard_normal(64)  # the owner with eyes closed: elsewhere
    owner = OwnerWindows(("eyes-open", "eyes-closed"), (people.owner[:90], make_recording(rng, closed, 90)))
    both = enroll(owner, people.cohort, people.sequences, user="alice", checkpoint_identity="c", embedder="s")
    open_only = enroll_windows(people, people.owner[:90])
    assert both.states == ("eyes-open", "eyes-closed") and both.centroids.shape == (2, 64)
    later_closed = make_recording(rng, closed, 60)
    assert both.score(later_closed).cosine.mean() > open_only.score(later_closed).cosine.mean() + 0.2
    # the nearest state's centroid: the eyes-open windows score as well as against eyes open alone
    probe = people.owner_probe
    np.testing.assert_allclose(
        both.score(probe).cosine, np.maximum(probe @ both.centroids[0], probe @ both.centroids[1])
    )
    assert both.calibration["states"] == {"eyes-open": 90, "eyes-closed": 90}
