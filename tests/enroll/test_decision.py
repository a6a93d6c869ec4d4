from __future__ import annotations

import numpy as np
import pytest
from neuroauth.enroll.decision import DecisionMachine, DecisionParams, DecisionTargets, State
from neuroauth.enroll.decision_calibration import DecisionGrid, calibrate_decision

# owner N(2, 1), impostor N(0, 1): LLR(s) = 2 (s - 1), clipped to +-2
PARAMS = DecisionParams(
    unlock_level=4.0,
    lock_level=-4.0,
    bound=8.0,
    llr_clip=2.0,
    gap_seconds=3.0,
    owner_mean=2.0,
    owner_std=1.0,
    impostor_mean=0.0,
    impostor_std=1.0,
)
OWNER, IMPOSTOR = 2.0, 0.0  # scores worth LLR +2 and -2


def feed(machine: DecisionMachine, scores, start: float = 0.0):
    return [machine.update(start + i, s) for i, s in enumerate(scores)]


def test_llr_of_equal_deviations_is_linear_and_clipped():
    np.testing.assert_allclose(PARAMS.llr(np.array([1.0, 1.5, 0.5, 9.0, -9.0])), [0, 1, -1, 2, -2])


def test_unlock_then_lock_at_the_levels():
    machine = DecisionMachine(PARAMS, start_time=0.0)
    assert machine.state is State.UNKNOWN and machine.evidence == 0.0
    first, second = feed(machine, [OWNER, OWNER])
    assert first.state is State.UNKNOWN and not first.changed and first.evidence == 2.0
    assert second.state is State.OWNER and second.changed and second.previous is State.UNKNOWN
    assert second.since == 1.0 and second.score == OWNER and second.llr == 2.0
    feed(machine, [OWNER] * 5, start=2.0)
    assert machine.evidence == 8.0  # bounded
    # from +8, six impostor windows reach -4: 6, 4, 2, 0, -2, -4
    decisions = feed(machine, [IMPOSTOR] * 6, start=10.0)
    assert [d.state for d in decisions] == [State.OWNER] * 5 + [State.IMPOSTOR]
    assert decisions[-1].changed and decisions[-1].since == 15.0 and machine.evidence == -4.0


def sign_changes(decisions) -> int:
    evidence = np.array([d.evidence for d in decisions])
    return int((np.diff(np.sign(evidence)) != 0).sum())


def test_scores_wobbling_between_the_levels_do_not_flap():
    machine = DecisionMachine(PARAMS)
    feed(machine, [IMPOSTOR, IMPOSTOR])
    assert machine.state is State.IMPOSTOR and machine.evidence == -4.0
    # LLRs +2, +2, +1, then -2/+2 alternating: the evidence swings between -1 and +1
    decisions = feed(machine, [2.0, 2.0, 1.5] + [IMPOSTOR, OWNER] * 30, start=2.0)
    assert sign_changes(decisions) >= 50
    assert all(d.state is State.IMPOSTOR and not d.changed for d in decisions)
    # the same wobble once unlocked keeps OWNER
    feed(machine, [OWNER] * 5, start=100.0)
    assert machine.state is State.OWNER and machine.evidence == 8.0
    decisions = feed(machine, [IMPOSTOR] * 4 + [1.5] + [IMPOSTOR, OWNER] * 30, start=200.0)
    assert sign_changes(decisions) >= 50
    assert all(d.state is State.OWNER and not d.changed for d in decisions)


def test_quality_failure_gives_no_signal_then_evidence_starts_afresh():
    machine = DecisionMachine(PARAMS)
    feed(machine, [OWNER] * 6)
    assert machine.state is State.OWNER and machine.evidence == 8.0
    d = machine.no_signal(6.0, "channel T7 is flat")
    assert d.state is State.NO_SIGNAL and d.changed and d.previous is State.OWNER
    assert d.reason == "channel T7 is flat" and d.evidence == 0.0 and d.is_locked
    d = machine.update(7.0, OWNER)
    assert d.state is State.UNKNOWN and d.previous is State.NO_SIGNAL and d.changed and d.evidence == 2.0
    d = machine.update(8.0, OWNER)
    assert d.state is State.OWNER


def test_a_gap_gives_no_signal_on_tick():
    machine = DecisionMachine(PARAMS)
    feed(machine, [OWNER] * 3, start=8.0)  # last window at t = 10
    assert machine.state is State.OWNER
    d = machine.tick(12.5)
    assert d.state is State.OWNER and not d.changed
    d = machine.tick(13.0)
    assert d.state is State.NO_SIGNAL and d.changed and d.since == 13.0 and machine.evidence == 0.0
    assert "3.0 s" in d.reason
    assert not machine.tick(30.0).changed
    assert machine.update(31.0, OWNER).state is State.UNKNOWN


def test_a_stream_that_never_delivers_reaches_no_signal():
    machine = DecisionMachine(PARAMS, start_time=100.0)
    assert machine.tick(102.0).state is State.UNKNOWN
    assert machine.tick(103.0).state is State.NO_SIGNAL


def test_non_finite_score_counts_as_no_signal():
    machine = DecisionMachine(PARAMS)
    feed(machine, [OWNER] * 3)
    d = machine.update(3.0, float("nan"))
    assert d.state is State.NO_SIGNAL and machine.evidence == 0.0


def test_locked_in_every_state_but_owner():
    machine = DecisionMachine(PARAMS)
    seen = {machine.state: machine.is_locked}
    for score in [OWNER, OWNER, IMPOSTOR, IMPOSTOR, IMPOSTOR, IMPOSTOR]:
        d = machine.update(0.0, score)
        seen[d.state] = machine.is_locked
        assert d.is_locked == machine.is_locked
    machine.no_signal(0.0, "clipped")
    seen[machine.state] = machine.is_locked
    assert seen == {State.UNKNOWN: True, State.OWNER: False, State.IMPOSTOR: True, State.NO_SIGNAL: True}


def test_llr_never_rewards_a_score_below_every_impostor():
    # a wide owner Gaussian would, unclamped, win again far in the low tail
    params = DecisionParams(
        6.0, -3.0, 12.0, 3.0, 3.0, owner_mean=2.0, owner_std=3.0, impostor_mean=0.0, impostor_std=0.5
    )
    scores = np.linspace(-50, 50, 2001)
    llr = params.llr(scores)
    assert (np.diff(llr) >= -1e-12).all()
    assert llr[0] == llr.min() < 0 and llr[-1] == 3.0
    # a narrow owner Gaussian: very high scores still count for the owner
    narrow = DecisionParams(
        6.0, -3.0, 12.0, 3.0, 3.0, owner_mean=2.0, owner_std=0.3, impostor_mean=0.0, impostor_std=1.0
    )
    assert (np.diff(narrow.llr(scores)) >= -1e-12).all() and narrow.llr(50.0) == 3.0


@pytest.mark.parametrize(
    "changes",
    [
        dict(lock_level=1.0),
        dict(unlock_level=0.0),
        dict(bound=3.0),
        dict(owner_mean=-1.0),
        dict(owner_std=0.0),
    ],
)
def test_inconsistent_parameters_are_refused(changes):
    values = PARAMS.to_dict() | changes
    with pytest.raises(ValueError):
        DecisionParams(**values)


def test_params_round_trip_through_a_dict():
    assert DecisionParams.from_dict(PARAMS.to_dict()) == PARAMS
    with pytest.raises(ValueError, match="exactly the keys"):
        DecisionParams.from_dict(PARAMS.to_dict() | {"extra": 1.0})


def gaussian_sequences(rng, mean, count, length):
    return [rng.normal(mean, 1.0, length) for _ in range(count)]


def test_calibration_figures_agree_with_the_machine():
    rng = np.random.default_rng(0)
    owner = gaussian_sequences(rng, 0.8, 6, 60)
    impostors = gaussian_sequences(rng, 0.0, 8, 50)
    grid = DecisionGrid(unlock=(2.0,), lock=(1.0,), bound=(3.0,))
    result = calibrate_decision(owner, impostors, 1.0, DecisionTargets(), llr_clip=2.0, grid=grid)
    params = result.params
    assert (params.unlock_level, params.lock_level, params.bound) == (4.0, -2.0, 6.0)

    lockouts = 0
    for seq in owner:
        machine = DecisionMachine(params)
        lockouts += sum(d.changed and d.state is State.IMPOSTOR for d in feed(machine, seq))
    times = []
    for seq in impostors:
        machine = DecisionMachine(params)
        feed(machine, [50.0] * 3)  # saturate: OWNER with A = +bound
        assert machine.state is State.OWNER and machine.evidence == params.bound
        decisions = feed(machine, seq)
        locked = [i for i, d in enumerate(decisions) if d.state is State.IMPOSTOR]
        times.append(locked[0] + 1.0 if locked else np.inf)
    chosen = result.record["chosen"]
    assert chosen["false_lockouts"] == lockouts
    assert chosen["false_lockouts_per_hour"] == pytest.approx(lockouts / (360 / 3600))
    assert chosen["median_time_to_lock_s"] == pytest.approx(np.median(times))
    assert chosen["never_locked"] == int(np.isinf(times).sum())


def test_separated_scores_meet_reachable_targets():
    rng = np.random.default_rng(1)
    owner = gaussian_sequences(rng, 3.0, 6, 60)
    impostors = gaussian_sequences(rng, 0.0, 20, 120)
    targets = DecisionTargets(false_lockouts_per_hour=1.0, time_to_lock_s=10.0)
    result = calibrate_decision(owner, impostors, 1.0, targets)
    chosen = result.record["chosen"]
    assert result.meets_targets and result.record["meets_targets"]
    assert chosen["false_lockouts"] == 0 and chosen["median_time_to_lock_s"] <= 10.0
    # the shortest median time to lock among the settings without false lock-outs
    feasible = [g for g in result.record["grid"] if g["false_lockouts"] == 0]
    assert chosen["median_time_to_lock_s"] == min(g["median_time_to_lock_s"] for g in feasible)
    assert len(result.record["grid"]) == len(DecisionGrid().settings(3.0))


def test_impossible_targets_are_reported_as_not_met():
    rng = np.random.default_rng(2)
    owner = gaussian_sequences(rng, 3.0, 6, 60)
    impostors = gaussian_sequences(rng, 0.0, 20, 120)
    result = calibrate_decision(owner, impostors, 1.0, DecisionTargets(time_to_lock_s=0.5))
    assert not result.meets_targets and result.record["meets_targets"] is False
    assert result.record["chosen"]["median_time_to_lock_s"] > 0.5


def test_when_no_setting_avoids_lockouts_the_fewest_win():
    rng = np.random.default_rng(3)
    owner = gaussian_sequences(rng, 0.3, 10, 200)  # barely above the impostors: lock-outs everywhere
    impostors = gaussian_sequences(rng, 0.0, 10, 100)
    grid = DecisionGrid(unlock=(1.0, 2.0), lock=(0.5, 1.0), bound=(2.0,))
    targets = DecisionTargets(false_lockouts_per_hour=1.0)  # one lock-out in these 0.56 h is too many
    result = calibrate_decision(owner, impostors, 1.0, targets, llr_clip=1.0, grid=grid)
    counts = [g["false_lockouts"] for g in result.record["grid"]]
    assert min(counts) > 0
    assert not result.meets_targets
    assert result.record["chosen"]["false_lockouts"] == min(counts)
