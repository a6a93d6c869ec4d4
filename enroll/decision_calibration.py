"""Calibrating the decision over time: its levels chosen by simulating it on real score sequences.

Offline only: enrollment calls it, the daemon never does. The simulation makes the
same transitions as :meth:`neuroauth.enroll.decision.DecisionMachine.update`,
vectorised over every candidate setting at once.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .decision import DecisionParams, DecisionTargets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecisionGrid:
    """Candidate levels, as multiples of ``llr_clip`` (the most evidence one window can add)."""

    unlock: tuple[float, ...] = (2.0, 4.0, 8.0)
    lock: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)  # lock_level = -multiple * llr_clip
    bound: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0)

    def settings(self, llr_clip: float) -> list[tuple[float, float, float]]:
        """``(unlock_level, lock_level, bound)`` for every combination where both levels are reachable."""
        return [
            (u * llr_clip, -k * llr_clip, b * llr_clip)
            for u in self.unlock
            for k in self.lock
            for b in self.bound
            if b >= u and b >= k
        ]


@dataclass(frozen=True)
class DecisionCalibration:
    """The chosen parameters and the figures the simulation measured (``record`` is JSON-ready)."""

    params: DecisionParams
    meets_targets: bool
    record: dict = field(default_factory=dict)


_OWNER, _IMPOSTOR, _OTHER = 2, 3, 1


@dataclass(frozen=True)
class _Run:
    """What ``G`` simulated machines did over one sequence; every field ``(G,)``."""

    locks: np.ndarray  # entries into IMPOSTOR
    unlocks: np.ndarray  # entries into OWNER
    first_lock: np.ndarray  # index of the window that first gave IMPOSTOR, -1 if none
    first_unlock: np.ndarray  # index of the window that first gave OWNER, -1 if none
    in_owner: np.ndarray  # windows after which the state was OWNER


def _simulate(
    llr: np.ndarray, unlock: np.ndarray, lock: np.ndarray, bound: np.ndarray, start_owner: bool
) -> _Run:
    """Run ``G`` machines (one per setting) over one sequence of clipped LLRs ``(T,)``.

    Starts in UNKNOWN with A = 0, or (``start_owner``) in OWNER with A = +bound. The
    same transitions as :meth:`DecisionMachine.update`, vectorised over settings.
    """
    g = len(unlock)
    state = np.full(g, _OWNER if start_owner else _OTHER)
    evidence = bound.copy() if start_owner else np.zeros(g)
    locks = np.zeros(g, dtype=np.int64)
    unlocks = np.zeros(g, dtype=np.int64)
    in_owner = np.zeros(g, dtype=np.int64)
    first_lock = np.full(g, -1)
    first_unlock = np.full(g, -1)
    for t, value in enumerate(llr):
        evidence = np.clip(evidence + value, -bound, bound)
        to_owner = (evidence >= unlock) & (state != _OWNER)
        to_impostor = (evidence <= lock) & (state != _IMPOSTOR)
        state = np.where(to_owner, _OWNER, np.where(to_impostor, _IMPOSTOR, state))
        locks += to_impostor
        unlocks += to_owner
        in_owner += state == _OWNER
        first_lock = np.where(to_impostor & (first_lock < 0), t, first_lock)
        first_unlock = np.where(to_owner & (first_unlock < 0), t, first_unlock)
    return _Run(locks, unlocks, first_lock, first_unlock, in_owner)


def _seconds_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass(frozen=True)
class _Measured:
    """What every setting of the grid did over all sequences; array fields are ``(G,)``."""

    unlock: np.ndarray
    lock: np.ndarray
    bound: np.ndarray
    false_lockouts: np.ndarray
    per_hour: np.ndarray  # false lock-outs per hour of owner EEG
    owner_share: np.ndarray  # share of owner windows spent in OWNER
    median_lock: np.ndarray  # seconds, inf when most sequences never lock
    p95_lock: np.ndarray
    never_locked: np.ndarray
    median_unlock: np.ndarray
    impostor_unlocks: np.ndarray
    impostor_unlocks_per_hour: np.ndarray
    impostor_unlocked_share: np.ndarray  # impostor windows spent in OWNER, before the first lock too

    def figures(self, i: int) -> dict:
        return {
            "unlock_level": float(self.unlock[i]),
            "lock_level": float(self.lock[i]),
            "bound": float(self.bound[i]),
            "false_lockouts": int(self.false_lockouts[i]),
            "false_lockouts_per_hour": float(self.per_hour[i]),
            "median_time_to_lock_s": _seconds_or_none(self.median_lock[i]),
            "p95_time_to_lock_s": _seconds_or_none(self.p95_lock[i]),
            "never_locked": int(self.never_locked[i]),
            "median_time_to_unlock_s": _seconds_or_none(self.median_unlock[i]),
            "owner_unlocked_share": float(self.owner_share[i]),
            "impostor_unlocks_per_hour": float(self.impostor_unlocks_per_hour[i]),
            "impostor_unlocked_share": float(self.impostor_unlocked_share[i]),
        }


def _measure(
    owner_llrs: list[np.ndarray],
    impostor_llrs: list[np.ndarray],
    settings: list[tuple[float, float, float]],
    hop_seconds: float,
) -> _Measured:
    """Run every setting over every sequence of clipped LLRs and gather the figures."""
    unlock, lock, bound = (np.array(col, dtype=np.float64) for col in zip(*settings, strict=True))
    g = len(settings)
    false_lockouts = np.zeros(g, dtype=np.int64)
    owner_unlocked = np.zeros(g, dtype=np.int64)
    unlock_times = []
    for llr in owner_llrs:
        run = _simulate(llr, unlock, lock, bound, start_owner=False)
        false_lockouts += run.locks
        owner_unlocked += run.in_owner
        unlock_times.append(np.where(run.first_unlock >= 0, (run.first_unlock + 1) * hop_seconds, np.inf))
    impostor_unlocks = np.zeros(g, dtype=np.int64)
    impostor_unlocked = np.zeros(g, dtype=np.int64)
    lock_times = []
    for llr in impostor_llrs:
        run = _simulate(llr, unlock, lock, bound, start_owner=True)
        impostor_unlocks += run.unlocks
        impostor_unlocked += run.in_owner
        lock_times.append(np.where(run.first_lock >= 0, (run.first_lock + 1) * hop_seconds, np.inf))
    owner_windows = sum(len(x) for x in owner_llrs)
    impostor_windows = sum(len(x) for x in impostor_llrs)
    lock_matrix = np.stack(lock_times)  # (sequences, G)
    return _Measured(
        unlock=unlock,
        lock=lock,
        bound=bound,
        false_lockouts=false_lockouts,
        per_hour=false_lockouts / (owner_windows * hop_seconds / 3600.0),
        owner_share=owner_unlocked / owner_windows,
        median_lock=np.median(lock_matrix, axis=0),
        p95_lock=np.percentile(lock_matrix, 95, axis=0, method="higher"),
        never_locked=(~np.isfinite(lock_matrix)).sum(axis=0),
        median_unlock=np.median(np.stack(unlock_times), axis=0),
        impostor_unlocks=impostor_unlocks,
        impostor_unlocks_per_hour=impostor_unlocks / (impostor_windows * hop_seconds / 3600.0),
        impostor_unlocked_share=impostor_unlocked / impostor_windows,
    )


def _worst(per_site: list[_Measured]) -> _Measured:
    """Every setting's figures at its worst site: the most false lock-outs, the slowest lock, the
    owner unlocked least; counts summed over sites."""
    first = per_site[0]

    def stack(name):
        return np.stack([getattr(m, name) for m in per_site])

    return _Measured(
        unlock=first.unlock,
        lock=first.lock,
        bound=first.bound,
        false_lockouts=stack("false_lockouts").sum(0),
        per_hour=stack("per_hour").max(0),
        owner_share=stack("owner_share").min(0),
        median_lock=stack("median_lock").max(0),
        p95_lock=stack("p95_lock").max(0),
        never_locked=stack("never_locked").sum(0),
        median_unlock=stack("median_unlock").max(0),
        impostor_unlocks=stack("impostor_unlocks").sum(0),
        impostor_unlocks_per_hour=stack("impostor_unlocks_per_hour").max(0),
        impostor_unlocked_share=stack("impostor_unlocked_share").max(0),
    )


def _choose(m: _Measured, targets: DecisionTargets) -> int:
    """The setting :func:`calibrate_decision` describes: the owner unlocked longest among those
    meeting both targets; else the quickest lock within the false lock-out target; else the
    fewest false lock-outs."""
    safe = m.per_hour <= targets.false_lockouts_per_hour
    both = safe & (m.median_lock <= targets.time_to_lock_s)
    if both.any():  # then the fewest impostor re-unlocks, the quickest lock
        candidates = np.flatnonzero(both)

        def key(i):
            return (-m.owner_share[i], m.impostor_unlocks[i], m.median_lock[i], m.p95_lock[i], -m.unlock[i])
    elif safe.any():
        candidates = np.flatnonzero(safe)

        def key(i):
            return (m.median_lock[i], m.impostor_unlocks[i], -m.owner_share[i], m.p95_lock[i], -m.unlock[i])
    else:
        candidates = np.arange(len(m.unlock))

        def key(i):
            return (m.per_hour[i], m.median_lock[i], m.impostor_unlocks[i], -m.owner_share[i], -m.unlock[i])

    return int(min(candidates, key=key))


def calibrate_decision(
    owner_sequences: list[np.ndarray],
    impostor_sequences: list[np.ndarray],
    hop_seconds: float,
    targets: DecisionTargets,
    *,
    llr_clip: float = 3.0,
    gap_seconds: float = 3.0,
    grid: DecisionGrid | None = None,
    owner_sites: Sequence[str] | None = None,
    impostor_sites: Sequence[str] | None = None,
) -> DecisionCalibration:
    """Choose the levels by simulating the machine on fused-score sequences in time order.

    ``owner_sequences``: the owner's held-out fused scores, one array per contiguous
    stretch; each starts like a session, in UNKNOWN with A = 0. A false lock-out is an
    entry into IMPOSTOR. ``impostor_sequences``: fused scores of other people's
    recordings, each started in OWNER with A = +bound (someone else puts the headset
    on after the owner wore it long enough to saturate the evidence, the slowest case).
    Time to lock counts windows from the first impostor window, times the hop.

    The Gaussians are the mean and deviation of the pooled owner and impostor scores.
    Among the settings that meet both targets (false lock-outs per hour of owner data,
    median time to lock), the one that keeps the owner unlocked longest wins: a setting
    that never lets the owner in meets both targets and is useless. When none meets
    both, the shortest median time to lock among those within the false lock-out
    target; when none is within that either, the fewest false lock-outs. In both
    cases ``meets_targets`` is False.

    With the recording site of every sequence (``owner_sites``, ``impostor_sites``), each
    setting is judged by its figures at its worst site: a headset is another site, and
    the promise should hold wherever it is worn, not on an average that one easy site
    flatters (people of one corpus can be told apart more easily than those of another).
    """
    owner_sequences = [np.asarray(s, dtype=np.float64) for s in owner_sequences if len(s)]
    impostor_sequences = [np.asarray(s, dtype=np.float64) for s in impostor_sequences if len(s)]
    if not owner_sequences or not impostor_sequences:
        raise ValueError("calibrating the decision needs owner and impostor score sequences")
    owner_all = np.concatenate(owner_sequences)
    impostor_all = np.concatenate(impostor_sequences)
    gaussians = {
        "owner_mean": float(owner_all.mean()),
        "owner_std": max(float(owner_all.std()), 1e-3),
        "impostor_mean": float(impostor_all.mean()),
        "impostor_std": max(float(impostor_all.std()), 1e-3),
    }
    settings = (grid or DecisionGrid()).settings(llr_clip)
    # any valid setting serves to evaluate the LLR: it does not depend on the levels
    llr = DecisionParams(*settings[0], llr_clip, gap_seconds, **gaussians).llr
    owner_llrs, impostor_llrs = [llr(s) for s in owner_sequences], [llr(s) for s in impostor_sequences]
    pooled = _measure(owner_llrs, impostor_llrs, settings, hop_seconds)
    by_site = {}
    if owner_sites is not None and impostor_sites is not None:
        for site in sorted(set(owner_sites) & set(impostor_sites)):
            by_site[site] = _measure(
                [x for x, s in zip(owner_llrs, owner_sites, strict=True) if s == site],
                [x for x, s in zip(impostor_llrs, impostor_sites, strict=True) if s == site],
                settings,
                hop_seconds,
            )
    measured = _worst(list(by_site.values())) if len(by_site) > 1 else pooled
    best = _choose(measured, targets)
    meets = bool(
        measured.per_hour[best] <= targets.false_lockouts_per_hour
        and measured.median_lock[best] <= targets.time_to_lock_s
    )
    params = DecisionParams(*settings[best], llr_clip, gap_seconds, **gaussians)
    record = {
        "targets": targets.to_dict(),
        "meets_targets": meets,
        "chosen": measured.figures(best),
        "judged_on": f"the worst of {len(by_site)} sites" if len(by_site) > 1 else "all sequences pooled",
        "chosen_by_site": {site: m.figures(best) for site, m in by_site.items()},
        "chosen_pooled": pooled.figures(best),
        "owner_sequences": len(owner_sequences),
        "owner_windows": len(owner_all),
        "owner_hours": len(owner_all) * hop_seconds / 3600.0,
        "impostor_sequences": len(impostor_sequences),
        "impostor_windows": len(impostor_all),
        "hop_seconds": hop_seconds,
        "start": "owner sequences from UNKNOWN with A = 0; impostor sequences from OWNER with A = +bound",
        "grid": [measured.figures(i) for i in range(len(settings))],
    }
    return DecisionCalibration(params=params, meets_targets=meets, record=record)
