"""Enrolling an owner: guided phases of EEG through the engine, one template out.

A person's EEG changes with their state, and a template from one state judges
the others harshly; enrollment therefore records several short phases (by
default eyes open at rest, eyes closed, and a mental task), keeps each phase's
windows apart and gives the template one centroid per phase. Each phase comes
from a source of its own (a live stream read for the phase's length, or one
recording per phase) and runs through the daemon's engine, so the template is
made from exactly the windows the daemon will score.

:func:`enroll_owner` is the use case the ``neuroauth enroll`` command and the
demo both call; what to show the wearer is left to the caller (``on_phase``,
``on_window``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CheckpointError, DataError
from ..models.checkpoint import NeuroAuthModel
from ..models.streaming import EngineConfig
from .calibration import MIN_STATE_WINDOWS, OwnerWindows
from .collect import Collected, collect_windows, require_enough
from .decision import DecisionTargets
from .site import MIN_SITE_PEOPLE, Site, enroll_at_site
from .sources import Source
from .store import TemplateStore
from .template import Template, validate_user

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One state the owner is enrolled in, and what the wearer is asked to do."""

    state: str
    title: str
    instructions: str
    seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.state or self.seconds <= 0:
            raise ValueError(f"an enrollment phase needs a state name and a positive length, got {self}")


PHASES: dict[str, Phase] = {
    p.state: p
    for p in (
        Phase(
            "eyes-open",
            "Eyes open, at rest",
            "Sit comfortably and still. Keep your eyes open, look at one point in front of you, "
            "relax your face and jaw.",
        ),
        Phase(
            "eyes-closed",
            "Eyes closed, at rest",
            "Close your eyes. Stay still and relaxed, but awake.",
        ),
        Phase(
            "task",
            "A mental task",
            "Eyes open. In your head, count backwards from 1000 in steps of seven: 1000, 993, 986, ... "
            "Start again at 1000 if you lose count.",
        ),
        Phase("rest", "At rest", "Sit comfortably and still, relaxed, eyes open."),
        Phase(
            "arithmetic",
            "Mental arithmetic",
            "Eyes open. Subtract seven again and again from a four-digit number, in your head.",
        ),
    )
}
DEFAULT_PHASES: tuple[str, ...] = ("eyes-open", "eyes-closed", "task")


def phases_named(names: Sequence[str], seconds: Sequence[float] = ()) -> list[Phase]:
    """The phases of ``names`` (known ones with their instructions); ``seconds``: one length for
    every phase, or one per phase (default: each phase's own)."""
    if len(set(names)) != len(names) or not names:
        raise DataError(f"enrollment phases must be distinct and at least one, got {list(names)}")
    if len(seconds) not in (0, 1, len(names)):
        raise DataError(
            f"{len(seconds)} phase lengths for {len(names)} phases ({', '.join(names)}); give one length "
            "for every phase or one per phase"
        )
    out = []
    for i, name in enumerate(names):
        phase = PHASES.get(name) or Phase(
            name, name, "Follow the instructions you were given for this phase."
        )
        length = seconds[0] if len(seconds) == 1 else seconds[i] if seconds else phase.seconds
        out.append(dataclasses.replace(phase, seconds=float(length)))
    return out


def collect_phase(
    model: NeuroAuthModel,
    phase: Phase,
    source: Source,
    hop_seconds: float,
    on_window: Callable[[Collected], None] | None = None,
) -> Collected:
    """Run one phase's source through the engine; refuse a phase with too few good windows."""
    # a live stream's rate is checked from its timestamps; a file's timestamps are made from its rate
    rate_tolerance = None if source.exact_timestamps else EngineConfig().rate_tolerance
    config = EngineConfig(hop_seconds=hop_seconds, rate_tolerance=rate_tolerance)
    collected = collect_windows(model, source.channel_names, source.sfreq, source.chunks, config, on_window)
    require_enough(collected, MIN_STATE_WINDOWS, f"the {phase.state!r} phase ({source.description})")
    return collected


def enroll_owner(
    model: NeuroAuthModel,
    phases: Sequence[tuple[Phase, Callable[[], Source]]],
    store: TemplateStore,
    *,
    user: str,
    targets: DecisionTargets,
    policy: str = "target-far",
    target_far: float = 0.01,
    hop_seconds: float | None = None,
    replace: bool = False,
    min_site_people: int = MIN_SITE_PEOPLE,
    on_phase: Callable[[int, Phase], None] | None = None,
    on_source: Callable[[Phase, Source], None] | None = None,
    on_window: Callable[[Phase, Collected], None] | None = None,
    on_collected: Callable[[Phase, Collected], None] | None = None,
) -> tuple[Template, Path]:
    """Record every phase, make ``user``'s template and write it to ``store``.

    ``phases``: each phase with a function opening its source when the phase begins
    (a live stream is opened only once the wearer is ready). ``on_phase`` is called
    before a phase's source is opened (to show its instructions), ``on_source`` once it
    is. Nothing is written when a phase fails; an existing template stays unless ``replace``.
    The template is normalised against the other people enrolled in ``store`` once there
    are ``min_site_people`` of them, else against the checkpoint's cohort (:mod:`.site`).
    """
    validate_user(user)
    if store.path(user).exists() and not replace:
        raise DataError(f"{user} already has a template ({store.path(user)}); pass --replace to enroll again")
    if model.cohort is None:
        raise CheckpointError(
            "the checkpoint carries no background cohort to calibrate against; add one with "
            "`neuroauth cohort --checkpoint ... --data DIR --out ...`"
        )
    hop = hop_seconds if hop_seconds is not None else EngineConfig().hop_seconds
    states, windows, sources, streams = [], [], [], []
    for i, (phase, open_source) in enumerate(phases):
        if on_phase is not None:
            on_phase(i, phase)
        source = open_source()
        if source.stream is not None:
            streams.append(source.stream)
            if source.stream != streams[0]:
                raise DataError(
                    f"the {phase.state!r} phase comes from {source.description}, another stream than the "
                    f"first live phase ({streams[0]}); enroll every phase from the owner's headset"
                )
        if on_source is not None:
            on_source(phase, source)
        collected = collect_phase(
            model,
            phase,
            source,
            hop,
            None if on_window is None else lambda c, phase=phase: on_window(phase, c),
        )
        if on_collected is not None:
            on_collected(phase, collected)
        states.append(phase.state)
        windows.append(collected.matrix())
        sources.append(
            {"phase": phase.state, "source": source.description, "seconds": round(source.seconds, 1)}
        )
    template = enroll_at_site(
        OwnerWindows(tuple(states), tuple(windows)),
        Site.read(store, model.identity()),
        model,
        user=user,
        min_people=min_site_people,
        policy=policy,
        target_far=target_far,
        targets=targets,
        hop_seconds=hop,
    )
    template.calibration["sources"] = sources  # which stream or file each phase came from
    # the daemon refuses another stream for this owner; enrolled from recordings, it cannot tell
    template = dataclasses.replace(template, stream=streams[0] if streams else None)
    return template, store.save(template)
