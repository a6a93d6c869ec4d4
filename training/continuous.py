"""``neuroauth evaluate --continuous``: the whole decision path on owner-then-impostor sessions.

For every person with every recording (the *owner*):

1. enroll as the protocol does (:mod:`.evaluate`): each state's enrollment part,
   through :func:`neuroauth.enroll.calibration.enroll`, against the checkpoint's
   cohort *without* any person evaluated, its decision tuned on the checkpoint's
   calibration sequences of people its embedder never trained on;
2. the owner wears the headset: the probe part of each of their states, one after
   the other; then, for every other person (the *impostor*), that person's probe
   parts, as if someone else put the headset on;
3. every window's fused score drives the decision machine; a window the quality
   gate refuses is no signal, as in the daemon.

The windows are the protocol's, cut from each recording offline; the engine's are
the same samples (the recurrent denoiser equals the whole-recording pass, see
``neuroauth bench``). A stitched session has no windows straddling the takeover:
the impostor's first window ends one window length after it, as the first window
wholly of the impostor does in the daemon.

Figures:

- ``time_to_unlock_s``: from the start of the owner's stream (the first window
  needs 4 s of EEG) to the first OWNER state;
- ``time_to_lock_s``: from the takeover to the first locked state, over the
  sessions in which the owner was unlocked at the takeover (the others are
  counted in ``sessions_locked_at_takeover``);
- ``false_lockouts_per_hour``: changes from OWNER to a locked state during owner
  EEG, per hour of owner EEG (each owner counted once);
- ``window_eer``: fused window scores, owner windows against impostor windows,
  with each owner's own template;
- ``impostor_unlocks_per_hour``: changes to OWNER during impostor EEG after the
  first lock, per hour of impostor EEG;
- ``promised``: what each template's calibration said it would do (false
  lock-outs per hour, median time to lock), averaged over owners.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..enroll.calibration import OwnerWindows, enroll
from ..enroll.decision import DecisionMachine, DecisionParams, DecisionTargets, State
from ..enroll.decision_calibration import calibrate_decision
from ..enroll.template import Template
from ..errors import CheckpointError
from ..metrics import eer
from ..models.checkpoint import NeuroAuthModel
from ..models.cohort import Cohort
from .data import SubjectData
from .evaluate import PersonWindows, embedded_people
from .protocol import HOP_SECONDS

log = logging.getLogger(__name__)

MIN_COHORT_SUBJECTS = 4


@dataclass
class Session:
    """One owner-then-impostor stream: a row per window."""

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


def enroll_person(model: NeuroAuthModel, person: PersonWindows, cohort, targets: DecisionTargets) -> Template:
    """The protocol's enrollment: every state's enrollment part."""
    kept = [(s, e) for s, e in zip(person.states, person.enroll["states"], strict=True) if len(e)]
    return enroll(
        OwnerWindows(tuple(s for s, _ in kept), tuple(e for _, e in kept)),
        cohort,
        model.calibration,
        user=person.subject.replace("/", "."),
        checkpoint_identity=model.identity(),
        embedder=model.embedder_name,
        targets=targets,
    )


def site_cohort(people: Sequence[PersonWindows], owner: str, n: int, hop_seconds: float) -> Cohort:
    """The enrollment windows of ``n`` other people enrolled at the owner's site (every one when
    fewer), drawn at random for each owner (seeded by the owner's name): the people a site's
    templates are normalised against (:mod:`neuroauth.enroll.site`)."""
    others = sorted(p.subject for p in people if p.subject != owner and p.enrolled)
    if n < len(others):
        rng = np.random.default_rng(zlib.crc32(owner.encode()))
        others = sorted(rng.choice(others, size=n, replace=False).tolist())
    by_subject = {p.subject: p for p in people}
    return Cohort.of_people(
        {s: np.concatenate([e for e in by_subject[s].enroll["states"] if len(e)]) for s in others},
        hop_seconds,
    )


def _stream(template: Template, person: PersonWindows) -> list[float | None]:
    """``person``'s probe windows, state after state, as fused scores (None where refused)."""
    out: list[float | None] = []
    for x, ok in zip(person.probes, person.probe_ok, strict=True):
        if not len(x):
            continue
        fused = template.score(x).fused
        out += [float(f) if good else None for f, good in zip(fused, ok, strict=True)]
    return out


def run_session(
    decision: DecisionParams, owner: str, impostor: str, owner_scores, impostor_scores, window_seconds: float
) -> Session:
    """Drive the decision machine over the owner's windows, then the impostor's."""
    machine = DecisionMachine(decision, start_time=0.0)
    takeover = window_seconds + (len(owner_scores) - 1) * HOP_SECONDS  # the owner's last window ends here
    session = Session(owner, impostor, takeover)
    times = [window_seconds + i * HOP_SECONDS for i in range(len(owner_scores))]
    times += [takeover + window_seconds + j * HOP_SECONDS for j in range(len(impostor_scores))]
    for t, score in zip(times, [*owner_scores, *impostor_scores], strict=True):
        decision = machine.update(t, score) if score is not None else machine.no_signal(t, "quality gate")
        session.times.append(t)
        session.scores.append(score)
        session.states.append(decision.state.value)
    return session


OPERATING_LOCKOUTS = (0.5, 1.0, 2.0, 4.0, 8.0)  # false lock-outs per hour asked of the calibration


def operating_points(model: NeuroAuthModel, scores: dict, window_seconds: float) -> dict:
    """The same sessions under the decision levels the calibration chooses for other false
    lock-out targets (time to lock 10 s): what each target promises and what it gives. The levels
    depend on the calibration sequences and the targets only, so one choice serves every owner."""
    sequences = model.calibration
    out = {}
    for lockouts in OPERATING_LOCKOUTS:
        decision = calibrate_decision(
            sequences.owner_sequences(),
            sequences.impostor_sequences(),
            sequences.record.get("hop_seconds", HOP_SECONDS),
            DecisionTargets(false_lockouts_per_hour=lockouts),
            owner_sites=sequences.owner_sites(),
            impostor_sites=sequences.impostor_sites(),
        )
        sessions = [
            run_session(decision.params, owner, impostor, own, theirs, window_seconds)
            for (owner, impostor), (own, theirs) in scores.items()
        ]
        measured = summarise(session_figures(sessions, window_seconds))
        out[f"{lockouts:g}"] = {
            "promised": {
                k: decision.record["chosen"][k] for k in ("false_lockouts_per_hour", "median_time_to_lock_s")
            },
            "levels": {k: decision.record["chosen"][k] for k in ("unlock_level", "lock_level", "bound")},
            **{
                k: measured[k]
                for k in (
                    "false_lockouts_per_hour",
                    "owner_unlocked_share",
                    "owners_never_unlocked_count",
                    "time_to_lock_s",
                    "sessions_never_locked",
                    "sessions_never_locked_share",
                    "impostor_unlocks_per_hour",
                )
            },
        }
    return out


def never_locked_share(never_locked: int, locked: int) -> float | None:
    """Of the takeovers that found the headset unlocked, the share never locked by the session's end."""
    return never_locked / (never_locked + locked) if never_locked + locked else None


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
    out["owners"] = len(by_owner)
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
        "owners_never_unlocked_count": len(figures["owners_never_unlocked"]),
        "sessions_locked_at_takeover": figures["sessions_locked_at_takeover"],
        "sessions_never_locked": figures["sessions_never_locked"],
        "sessions_never_locked_share": never_locked_share(
            figures["sessions_never_locked"], len(figures["time_to_lock_s"])
        ),
        "impostor_unlocks_per_hour": figures["impostor_unlocks"] / impostor_hours if impostor_hours else None,
        "owners": figures["owners"],
        "impostor_hours": impostor_hours,
        "window_eer": eer(np.array(genuine), np.array(impostor)) if genuine and impostor else None,
        "n_genuine_windows": len(genuine),
        "n_impostor_windows": len(impostor),
        "promised": _promised(figures.get("promised", [])),
    }


def _promised(chosen: Sequence[dict]) -> dict:
    """What the templates' calibrations promised, averaged over owners."""
    if not chosen:
        return {}
    lock = [c["median_time_to_lock_s"] for c in chosen if c["median_time_to_lock_s"] is not None]
    return {
        "false_lockouts_per_hour": float(np.mean([c["false_lockouts_per_hour"] for c in chosen])),
        "median_time_to_lock_s": float(np.mean(lock)) if lock else None,
        "owner_unlocked_share": float(np.mean([c["owner_unlocked_share"] for c in chosen])),
        "templates": len(chosen),
    }


def evaluate_continuous(
    model: NeuroAuthModel,
    data: Sequence[SubjectData],
    targets: DecisionTargets | None = None,
    progress: bool = True,
    embedded: dict[str, list[PersonWindows]] | None = None,
    site_people: int = 0,
) -> tuple[dict, list[Session], dict]:
    """The report, every session, and the raw figures (for pooling over splits).

    ``site_people``: each owner's template is normalised against the enrollment windows of
    that many other people of the evaluated data (the owner's site) instead of the
    checkpoint's cohort; the report then also gives the figures of the takeovers by
    people outside that group (``strangers``), when there are any.
    """
    owners = [d for d in data if d.complete]
    if len(owners) < 1 or len(data) < 2:
        raise ValueError("continuous evaluation needs an owner with every recording and another person")
    if model.cohort is None:
        raise CheckpointError("the checkpoint carries no cohort; add one with `neuroauth cohort`")
    started = time.time()
    targets = targets or DecisionTargets()
    subjects = {d.subject for d in data}
    cohort = model.cohort.without(subjects)
    remaining = sorted(set(cohort.subjects[i] for i in np.unique(cohort.subject)))
    if len(remaining) < MIN_COHORT_SUBJECTS:
        raise CheckpointError(
            f"without the {len(subjects)} people evaluated, the checkpoint's cohort keeps "
            f"{len(remaining)}; calibration needs at least {MIN_COHORT_SUBJECTS} other people. "
            "Evaluate fewer people, or a checkpoint trained on other people (`neuroauth crossval`)."
        )
    if embedded is None or not any(len(ok) for p in embedded["ours"] for ok in p.probe_ok):
        embedded = embedded_people(model, data, progress, gate=True)
    people = {p.subject: p for p in embedded["ours"]}
    window_seconds = model.spec.window_seconds
    sessions, promised, scores, normalised_against = [], [], {}, {}
    for d in tqdm(owners, desc="continuous", unit="owner", disable=not progress):
        against = cohort
        if site_people:
            against = site_cohort(list(people.values()), d.subject, site_people, cohort.hop_seconds)
            normalised_against[d.subject] = set(against.subjects)
        template = enroll_person(model, people[d.subject], against, targets)
        promised.append(template.calibration["decision"]["chosen"])
        own = _stream(template, people[d.subject])
        for other in data:
            if other.subject != d.subject:
                theirs = _stream(template, people[other.subject])
                scores[(d.subject, other.subject)] = (own, theirs)
                sessions.append(
                    run_session(template.decision, d.subject, other.subject, own, theirs, window_seconds)
                )
    figures = session_figures(sessions, window_seconds)
    figures["promised"] = promised
    report = summarise(figures)
    report["operating_points"] = operating_points(model, scores, window_seconds)
    if site_people:
        strangers = [s for s in sessions if s.impostor not in normalised_against[s.owner]]
        report["site_people"] = int(np.mean([len(v) for v in normalised_against.values()]))
        if strangers:
            report["strangers"] = summarise(session_figures(strangers, window_seconds))
    report["subjects"] = [d.subject for d in data]
    report["seen_in_training"] = sorted(subjects & set(model.meta.get("training_subjects", [])))
    report["cohort_subjects"] = remaining
    report["targets"] = targets.to_dict()
    report["checkpoint"] = {"identity": model.identity(), "embedder": model.embedder_name}
    report["seconds"] = round(time.time() - started, 1)
    return report, sessions, figures


def site_reports(
    model: NeuroAuthModel,
    data: Sequence[SubjectData],
    targets: DecisionTargets | None,
    embedded: dict[str, list[PersonWindows]],
    site_people: Sequence[int],
    progress: bool = True,
) -> dict[str, dict]:
    """The continuous report with the templates normalised against each of ``site_people`` other
    people of ``data``, keyed by that number (``all`` for one at least the number of people)."""
    return {
        ("all" if n >= len(data) else str(n)): evaluate_continuous(
            model, data, targets, progress, embedded, site_people=n
        )[0]
        for n in site_people
    }


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
