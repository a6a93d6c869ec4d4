"""``neuroauth evaluate --continuous``: the whole system on replayed sessions.

For every subject of the data (the *owner*):

1. enrol as the offline protocol does, from the windows of the first 60 s of its
   enrolment recording, run through the streaming engine; the template is
   calibrated against the checkpoint's cohort *without* any subject of the data,
   so neither the owner nor the impostors of the replay are seen in calibration;
2. replay a session for every other subject (the *impostor*): the owner's probe
   recording, then the impostor's probe recording, as one uninterrupted stream,
   as if someone else put the headset on. All of an owner's sessions run as
   parallel streams of one engine;
3. drive the decision machine with every window and record the timeline.

Figures:

- ``time_to_unlock_s``: from the start of the owner's recording (the first window
  needs 4 s of EEG) to the first OWNER state;
- ``time_to_lock_s``: from the takeover to the first locked state, over the
  sessions in which the owner was unlocked at the takeover (the others are
  counted in ``sessions_locked_at_takeover``);
- ``false_lockouts_per_hour``: changes from OWNER to a locked state during owner
  EEG, per hour of owner EEG (each owner recording counted once);
- ``window_eer``: fused window scores, owner windows against windows wholly of
  the impostor, with each owner's own template;
- ``impostor_unlocks_per_hour``: changes to OWNER during impostor EEG after the
  first lock, per hour of impostor EEG.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..enroll.calibration import MIN_OWNER_WINDOWS, enrol
from ..enroll.collect import collect_windows, require_enough
from ..enroll.decision import DecisionMachine, DecisionTargets, State
from ..enroll.template import Template
from ..errors import CheckpointError
from ..models.checkpoint import NeuroAuthModel
from ..models.streaming import EngineConfig, StreamingEngine
from .data import SubjectData
from .metrics import eer
from .protocol import ENROL_SECONDS

log = logging.getLogger(__name__)

MIN_COHORT_SUBJECTS = 4
CHUNK_SECONDS = 1.0
# Recordings replayed here carry exact timestamps: the delivered-rate check has nothing to find.
EXACT_TIMESTAMPS = EngineConfig(rate_tolerance=None)


@dataclass
class Session:
    """One owner-then-impostor replay: a row per window."""

    owner: str
    impostor: str
    takeover: float  # seconds from the session start to the first impostor sample
    times: list[float] = field(default_factory=list)  # window end, seconds from the session start
    scores: list[float | None] = field(default_factory=list)  # fused score (None: refused window)
    states: list[str] = field(default_factory=list)

    def first(self, after: float, wanted) -> float | None:
        """Seconds from ``after`` to the first window at or after it whose state satisfies ``wanted``."""
        for t, s in zip(self.times, self.states, strict=True):
            if t >= after and wanted(s):
                return t - after
        return None


def _chunks(volts: np.ndarray, sfreq: float, seconds: float):
    step = round(seconds * sfreq)
    for i in range(0, volts.shape[1], step):
        yield volts[:, i : i + step], np.arange(i, min(i + step, volts.shape[1])) / sfreq


def enrol_subject(model: NeuroAuthModel, d: SubjectData, cohort, targets: DecisionTargets) -> Template:
    """The protocol's enrolment: windows ending within the first 60 s of the enrolment recording."""
    spec = model.spec
    volts = d.enrol.volts[:, : round(ENROL_SECONDS * spec.sfreq)]
    chunks = _chunks(volts, spec.sfreq, CHUNK_SECONDS)
    collected = collect_windows(model, model.montage, spec.sfreq, chunks, EXACT_TIMESTAMPS)
    owner = require_enough(collected, MIN_OWNER_WINDOWS, f"{d.enrol.path}")
    return enrol(
        owner,
        cohort,
        user=d.subject,
        checkpoint_identity=model.identity(),
        embedder=model.embedder_name,
        targets=targets,
    )


def replay_sessions(
    model: NeuroAuthModel, template: Template, owner: SubjectData, impostors
) -> list[Session]:
    """Every owner-then-impostor session of one owner, as parallel streams of one engine."""
    spec = model.spec
    engine = StreamingEngine(model, EXACT_TIMESTAMPS)
    takeover = owner.probe.volts.shape[1]
    data, machines, sessions = {}, {}, {}
    for imp in impostors:
        key = imp.subject
        data[key] = np.concatenate([owner.probe.volts, imp.probe.volts], axis=1)
        engine.add_stream(key, model.montage, spec.sfreq)
        machines[key] = DecisionMachine(template.decision, start_time=0.0)
        sessions[key] = Session(owner.subject, key, takeover / spec.sfreq)
    step = round(CHUNK_SECONDS * spec.sfreq)
    longest = max(v.shape[1] for v in data.values())
    for i in range(0, longest, step):
        for key, v in data.items():
            if i < v.shape[1]:
                engine.push(key, v[:, i : i + step], np.arange(i, min(i + step, v.shape[1])) / spec.sfreq)
        result = engine.advance()
        for r in result.restarts:  # none on clean recordings; kept so that a bad file shows
            machines[r.stream].no_signal(r.timestamp, r.reason)
        for w in result.windows:
            machine, s = machines[w.stream], sessions[w.stream]
            if w.ok:
                score = float(template.score(w.embedding[None]).fused[0])
                decision = machine.update(w.timestamp, score)
            else:
                score, decision = None, machine.no_signal(w.timestamp, "; ".join(w.problems))
            s.times.append(w.timestamp + 1 / spec.sfreq)  # the window ends after its last sample
            s.scores.append(score)
            s.states.append(decision.state.value)
    return list(sessions.values())


def _summary(values: Sequence[float]) -> dict:
    if not values:
        return {"median": None, "p95": None, "n": 0}
    return {
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "mean": float(np.mean(values)),
        "n": len(values),
    }


def session_figures(sessions: Sequence[Session], window_seconds: float) -> dict:
    """Raw per-session figures; :func:`summarise` turns them into the report."""
    unlocked = State.OWNER.value
    out = {
        "time_to_unlock_s": [],
        "owners_never_unlocked": [],
        "time_to_lock_s": [],
        "time_to_impostor_s": [],
        "sessions_locked_at_takeover": 0,
        "sessions_never_locked": 0,
        "false_lockouts": 0,
        "owner_seconds": 0.0,
        "impostor_unlocks": 0,
        "impostor_seconds": 0.0,
        "genuine_scores": [],
        "impostor_scores": [],
        "owner_unlocked_seconds": 0.0,
    }
    by_owner: dict[str, list[Session]] = {}
    for s in sessions:
        by_owner.setdefault(s.owner, []).append(s)
    for owner, group in by_owner.items():
        first = group[0]  # the owner's part is the same computation in every session: count it once
        t_unlock = first.first(0.0, lambda st: st == unlocked)
        if t_unlock is None or t_unlock > first.takeover:
            out["owners_never_unlocked"].append(owner)
        else:
            out["time_to_unlock_s"].append(t_unlock)
        out["owner_seconds"] += first.takeover
        previous = None
        for t, st, score in zip(first.times, first.states, first.scores, strict=True):
            if t > first.takeover:
                break
            if previous == unlocked and st != unlocked:
                out["false_lockouts"] += 1
            if st == unlocked:
                out["owner_unlocked_seconds"] += 1.0  # one window per hop of 1 s
            if score is not None:
                out["genuine_scores"].append(score)
            previous = st
        for s in group:
            at_takeover = [st for t, st in zip(s.times, s.states, strict=True) if t <= s.takeover]
            if not at_takeover or at_takeover[-1] != unlocked:
                out["sessions_locked_at_takeover"] += 1
            else:
                t_lock = s.first(s.takeover, lambda st: st != unlocked)
                if t_lock is None:
                    out["sessions_never_locked"] += 1
                else:
                    out["time_to_lock_s"].append(t_lock)
            t_imp = s.first(s.takeover, lambda st: st == State.IMPOSTOR.value)
            if t_imp is not None:
                out["time_to_impostor_s"].append(t_imp)
            end = s.times[-1] if s.times else s.takeover
            out["impostor_seconds"] += end - s.takeover
            locked_once, previous = False, None
            for t, st, score in zip(s.times, s.states, s.scores, strict=True):
                if t - window_seconds >= s.takeover and score is not None:
                    out["impostor_scores"].append(score)
                if t < s.takeover:
                    previous = st
                    continue
                locked_once |= st != unlocked
                if locked_once and st == unlocked and previous != unlocked:
                    out["impostor_unlocks"] += 1
                previous = st
    return out


def pool(figures: Sequence[dict]) -> dict:
    """Raw figures of several evaluations (folds) as one: lists joined, counts and seconds added."""
    out = {}
    for key, value in figures[0].items():
        parts = [f[key] for f in figures]
        out[key] = [v for p in parts for v in p] if isinstance(value, list) else sum(parts)
    return out


def summarise(figures: dict) -> dict:
    hours = figures["owner_seconds"] / 3600
    impostor_hours = figures["impostor_seconds"] / 3600
    genuine, impostor = figures["genuine_scores"], figures["impostor_scores"]
    return {
        "time_to_lock_s": _summary(figures["time_to_lock_s"]),
        "time_to_unlock_s": _summary(figures["time_to_unlock_s"]),
        "time_to_impostor_state_s": _summary(figures["time_to_impostor_s"]),
        "false_lockouts_per_hour": figures["false_lockouts"] / hours if hours else None,
        "false_lockouts": figures["false_lockouts"],
        "owner_hours": hours,
        "owner_unlocked_share": figures["owner_unlocked_seconds"] / figures["owner_seconds"]
        if figures["owner_seconds"]
        else None,
        "owners_never_unlocked": sorted(figures["owners_never_unlocked"]),
        "sessions_locked_at_takeover": figures["sessions_locked_at_takeover"],
        "sessions_never_locked": figures["sessions_never_locked"],
        "impostor_unlocks_per_hour": figures["impostor_unlocks"] / impostor_hours if impostor_hours else None,
        "impostor_hours": impostor_hours,
        "window_eer": eer(np.array(genuine), np.array(impostor)) if genuine and impostor else None,
        "n_genuine_windows": len(genuine),
        "n_impostor_windows": len(impostor),
    }


def evaluate_continuous(
    model: NeuroAuthModel,
    data: Sequence[SubjectData],
    targets: DecisionTargets | None = None,
    progress: bool = True,
) -> tuple[dict, list[Session], dict]:
    """The report, every session, and the raw figures (for pooling over folds)."""
    if len(data) < 2:
        raise ValueError("continuous evaluation needs at least two subjects: an owner and an impostor")
    if model.cohort is None:
        raise CheckpointError("the checkpoint carries no cohort; add one with `neuroauth cohort`")
    started = time.time()
    targets = targets or DecisionTargets()
    subjects = {d.subject for d in data}
    cohort = model.cohort.without(subjects)
    remaining = sorted(set(cohort.subjects[i] for i in np.unique(cohort.subject)))
    if len(remaining) < MIN_COHORT_SUBJECTS:
        raise CheckpointError(
            f"without the {len(subjects)} subjects evaluated, the checkpoint's cohort keeps "
            f"{len(remaining)} subject(s); calibration needs at least {MIN_COHORT_SUBJECTS} other people. "
            "Evaluate fewer subjects, or a checkpoint trained on other people (`neuroauth crossval "
            "--continuous`)."
        )
    sessions, calibration = [], {}
    for d in tqdm(data, desc="continuous", unit="owner", disable=not progress):
        template = enrol_subject(model, d, cohort, targets)
        calibration[d.subject] = template.calibration.get("decision", {})
        sessions += replay_sessions(model, template, d, [i for i in data if i.subject != d.subject])
    figures = session_figures(sessions, model.spec.window_seconds)
    report = summarise(figures)
    report["subjects"] = [d.subject for d in data]
    report["seen_in_training"] = sorted(subjects & set(model.meta.get("training_subjects", [])))
    report["cohort_subjects"] = remaining
    report["targets"] = targets.to_dict()
    report["templates_meeting_targets"] = sum(bool(c.get("meets_targets")) for c in calibration.values())
    report["checkpoint"] = {"identity": model.identity(), "embedder": model.embedder_name}
    report["seconds"] = round(time.time() - started, 1)
    return report, sessions, figures


def plot_session(session: Session, path: Path) -> Path:
    """Score and state over time for one session, the takeover marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"OWNER": "#2e7d32", "UNKNOWN": "#9e9e9e", "IMPOSTOR": "#c62828", "NO_SIGNAL": "#212121"}
    fig, (ax, band) = plt.subplots(
        2, 1, figsize=(10, 4.5), sharex=True, gridspec_kw={"height_ratios": [4, 1]}
    )
    t = np.array(session.times)
    scores = np.array([np.nan if s is None else s for s in session.scores])
    ax.plot(t, scores, ".-", lw=1, ms=3, color="#1565c0", label="fused window score")
    for a in (ax, band):
        a.axvline(session.takeover, color="k", lw=1, ls="--")
    ax.text(session.takeover, ax.get_ylim()[1], f" {session.impostor} takes over", va="top", fontsize=8)
    ax.set_ylabel("fused score")
    ax.set_title(f"owner {session.owner}, then impostor {session.impostor}")
    ax.legend(loc="lower left", fontsize=8)
    for i, state in enumerate(session.states):
        start = t[i] - 1.0
        band.axvspan(start, t[i], color=colours[state], lw=0)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    band.legend(handles, list(colours), ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.6))
    band.set_yticks([])
    band.set_xlabel("seconds from the start of the session")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
