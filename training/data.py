"""Recordings from disk: corpora, channel picking by name, resampling.

A **corpus** is one directory of recordings from one lab: every person has a
recording per *state* (a mental or recording condition), named
``<person><suffix>.<ext>``. How a corpus pairs its files is described once:

- a ``corpus.toml`` in the directory (see :func:`read_manifest`), or
- the rules this loader knows for the shared corpora, recognised by the
  directory's name: ``eegmat`` (``_1`` rest, ``_2`` mental arithmetic) and
  ``mumtaz`` (``_EC`` eyes closed, ``_EO`` eyes open), or
- for any other directory, the suffixes given (``--enroll-suffix`` /
  ``--probe-suffix``, default ``_1`` and ``_2``): an enrollment and a probe state.

A data directory may hold one corpus, or several as sub-directories (the shared
``data/`` folder holds ``eegmat/`` and ``mumtaz/``). A person is named
``<corpus>/<person>`` so that corpora never mix people up. People with a
recording of one state only still serve as training classes, cohort and
impostors. Rate and channel labels come from each file; labels are matched to
the montage by name with their reference suffix removed (``EEG T3-LE`` is T7).
Any format MNE reads by extension (EDF, BDF, BrainVision, FIF, ...) is accepted.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, MontageError
from ..models.montage import resolve_montage
from ..models.preprocess import SignalSpec, filter_and_scale, resample
from ..recordings import EXTENSIONS, read_raw

log = logging.getLogger(__name__)

MANIFEST = "corpus.toml"


@dataclass(frozen=True)
class StateSpec:
    """One recording condition of a corpus.

    ``enroll_seconds``: how much of this state's recording, from its start, the
    several-state enrollment protocol enrolls from (0: none, the whole recording is probe).
    """

    name: str
    suffix: str
    enroll_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.name or not self.suffix:
            raise ValueError(f"a corpus state needs a name and a file-name suffix, got {self}")
        if self.enroll_seconds < 0:
            raise ValueError(f"state {self.name!r}: enroll_seconds must be >= 0, got {self.enroll_seconds}")


#: The corpora this loader knows by their directory's name (see ../shared/data/README.md).
KNOWN_CORPORA: dict[str, tuple[StateSpec, ...]] = {
    # EEGMAT: 182 s at rest, then 62 s of serial subtraction; 20 s of the task leave 38 s to probe
    "eegmat": (StateSpec("rest", "_1", 60.0), StateSpec("arithmetic", "_2", 20.0)),
    # Mumtaz: 180 s of each, eyes closed and eyes open
    "mumtaz": (StateSpec("eyes-closed", "_EC", 60.0), StateSpec("eyes-open", "_EO", 60.0)),
}


def plain_states(enroll_suffix: str = "_1", probe_suffix: str = "_2") -> tuple[StateSpec, ...]:
    """A directory of enrollment and probe recordings: enroll from the first, probe with the whole second."""
    if enroll_suffix == probe_suffix:
        raise DataError(
            f"the enrollment and probe suffixes are both {enroll_suffix!r}; give two different ones"
        )
    return (StateSpec("enroll", enroll_suffix, 60.0), StateSpec("probe", probe_suffix, 0.0))


@dataclass(frozen=True)
class Corpus:
    """A directory of recordings from one lab and how its files pair up into states."""

    name: str
    directory: Path
    states: tuple[StateSpec, ...]

    def __post_init__(self) -> None:
        if not self.states:
            raise DataError(f"corpus {self.name} ({self.directory}) describes no state")
        suffixes = [s.suffix for s in self.states]
        if len(set(suffixes)) != len(suffixes) or len({s.name for s in self.states}) != len(self.states):
            raise DataError(f"corpus {self.name} ({self.directory}) names a state or a suffix twice")

    def describe(self) -> dict:
        return {
            "name": self.name,
            "directory": str(self.directory),
            "states": [
                {"name": s.name, "suffix": s.suffix, "enroll_seconds": s.enroll_seconds} for s in self.states
            ],
        }


def read_manifest(path: Path) -> Corpus:
    """A ``corpus.toml``::

    name = "mylab"                  # optional; default: the directory's name
    [[state]]
    name = "rest"
    suffix = "_rest"
    enroll_seconds = 60              # optional; default 60
    [[state]]
    name = "task"
    suffix = "_task"
    enroll_seconds = 20
    """
    try:
        data = tomllib.loads(path.read_text())
        states = tuple(
            StateSpec(str(s["name"]), str(s["suffix"]), float(s.get("enroll_seconds", 60.0)))
            for s in data["state"]
        )
        unknown = set(data) - {"name", "state"}
        if unknown:
            raise KeyError(f"unknown key(s) {sorted(unknown)}")
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"{path} does not describe a corpus ({exc.__class__.__name__}: {exc}); it needs [[state]] "
            "tables, each with a name and a suffix (see `neuroauth train --help`)"
        ) from None
    return Corpus(str(data.get("name", path.parent.name)), path.parent, states)


def _holds_recordings(directory: Path) -> bool:
    return any(p.suffix.lower() in EXTENSIONS for p in directory.iterdir() if p.is_file())


def find_corpora(
    directories: Sequence[str | Path], enroll_suffix: str | None = None, probe_suffix: str | None = None
) -> list[Corpus]:
    """The corpora under ``directories``: each one a corpus, or a folder of corpora.

    Suffixes, when given, describe every directory that has no ``corpus.toml``
    (they override the known rules); otherwise a known corpus name gives its
    rules and anything else the plain ``_1`` / ``_2`` pairing.
    """
    explicit = enroll_suffix is not None or probe_suffix is not None
    corpora: list[Corpus] = []
    for given in directories:
        directory = Path(given)
        if not directory.is_dir():
            raise DataError(f"data directory {directory} does not exist")
        if (directory / MANIFEST).is_file() or _holds_recordings(directory):
            members = [directory]
        else:
            members = sorted(
                d
                for d in directory.iterdir()
                if d.is_dir() and ((d / MANIFEST).is_file() or _holds_recordings(d))
            )
            if not members:
                raise DataError(
                    f"{directory} holds no recordings ({', '.join(EXTENSIONS)}) and no folder of them"
                )
        for d in members:
            if (d / MANIFEST).is_file():
                corpora.append(read_manifest(d / MANIFEST))
            elif explicit:
                corpora.append(Corpus(d.name, d, plain_states(enroll_suffix or "_1", probe_suffix or "_2")))
            else:
                corpora.append(Corpus(d.name, d, KNOWN_CORPORA.get(d.name.lower(), plain_states())))
    names = [c.name for c in corpora]
    if len(set(names)) != len(names):
        raise DataError(f"two corpora share a name ({', '.join(names)}); give each its own folder name")
    return corpora


@dataclass
class Recording:
    """One recording, its montage channels resampled to the model rate (volts)."""

    subject: str
    path: Path
    volts: np.ndarray  # (C, N) float64 at spec.sfreq
    spec: SignalSpec
    state: str = ""

    def preprocessed(self, volts: np.ndarray | None = None) -> np.ndarray:
        """Filtered and scaled signal in model units (of ``volts`` when given, e.g. with noise)."""
        return filter_and_scale(self.volts if volts is None else volts, self.spec)

    @property
    def seconds(self) -> float:
        return self.volts.shape[1] / self.spec.sfreq


@dataclass
class Session:
    """A person's recording files in one corpus, one per state (None where the state is missing)."""

    subject: str  # <corpus>/<person>
    corpus: Corpus
    paths: tuple[Path | None, ...]  # in the order of corpus.states

    @property
    def enroll(self) -> Path | None:
        return self.paths[0]

    @property
    def probe(self) -> Path | None:
        return self.paths[1] if len(self.paths) > 1 else None

    @property
    def complete(self) -> bool:
        return all(p is not None for p in self.paths)


def load_recording(
    path: str | Path, montage: Sequence[str], spec: SignalSpec, subject: str = "", state: str = ""
) -> Recording:
    """Read ``path``, pick ``montage`` by name (aliases allowed) and resample to ``spec.sfreq``."""
    path = Path(path)
    raw = read_raw(path)
    picks = resolve_montage(montage, raw.ch_names)
    if picks and isinstance(picks[0], str):
        raise MontageError(str(path), list(picks), list(raw.ch_names))
    volts = raw.get_data(picks=list(picks)).astype(np.float64)  # (C, N), volts
    if not np.isfinite(volts).all():
        raise DataError(f"{path} contains NaN or infinite samples; clean or crop the recording")
    sfreq = float(raw.info["sfreq"])
    if volts.shape[1] < spec.window * sfreq / spec.sfreq:
        raise DataError(
            f"{path} lasts {volts.shape[1] / sfreq:.1f} s, shorter than one "
            f"{spec.window_seconds:.1f} s window"
        )
    return Recording(
        subject=subject or path.stem,
        path=path,
        volts=resample(volts, sfreq, spec.sfreq),
        spec=spec,
        state=state,
    )


def corpus_sessions(corpus: Corpus) -> list[Session]:
    """Every person of ``corpus`` with at least one recording, sorted by name."""
    found: dict[str, list[Path | None]] = {}
    for path in sorted(corpus.directory.iterdir()):
        if path.suffix.lower() not in EXTENSIONS:
            continue
        for i, state in enumerate(corpus.states):
            if path.stem.endswith(state.suffix) and len(path.stem) > len(state.suffix):
                person = path.stem[: -len(state.suffix)]
                found.setdefault(person, [None] * len(corpus.states))[i] = path
    return [
        Session(f"{corpus.name}/{person}", corpus, tuple(paths)) for person, paths in sorted(found.items())
    ]


def find_sessions(
    directories: str | Path | Sequence[str | Path],
    enroll_suffix: str | None = None,
    probe_suffix: str | None = None,
    subjects: Sequence[str] | None = None,
    complete_only: bool = False,
) -> list[Session]:
    """Every person of the corpora under ``directories`` (see :func:`find_corpora`), sorted.

    ``subjects`` picks people by ``<corpus>/<person>`` or by ``<person>`` alone;
    ``complete_only`` keeps the people with a recording of every state.
    """
    if isinstance(directories, (str, Path)):
        directories = [directories]
    corpora = find_corpora(directories, enroll_suffix, probe_suffix)
    sessions = [s for c in corpora for s in corpus_sessions(c)]
    if complete_only:
        sessions = [s for s in sessions if s.complete]
    if subjects is not None:
        wanted = set(subjects)
        sessions = [s for s in sessions if s.subject in wanted or s.subject.split("/", 1)[1] in wanted]
        absent = wanted - {s.subject for s in sessions} - {s.subject.split("/", 1)[1] for s in sessions}
        if absent:
            raise DataError(
                f"{', '.join(map(str, directories))} has no recordings of subject(s) "
                f"{', '.join(sorted(absent))}"
            )
    if not any(s.complete for s in sessions):
        states = "; ".join(
            f"{c.name}: " + " and ".join(f"<person>{s.suffix}.<ext>" for s in c.states) for c in corpora
        )
        raise DataError(
            f"{', '.join(map(str, directories))} holds no person with a recording of every state ({states}); "
            "rename the files, pass --enroll-suffix / --probe-suffix, or describe the corpus in a "
            f"{MANIFEST}"
        )
    return sessions


@dataclass
class SubjectData:
    """One person's recordings, loaded: one per state of their corpus (None where missing)."""

    subject: str
    recordings: tuple[Recording | None, ...]
    corpus: Corpus

    @property
    def enroll(self) -> Recording | None:
        return self.recordings[0]

    @property
    def probe(self) -> Recording | None:
        return self.recordings[1] if len(self.recordings) > 1 else None

    @property
    def complete(self) -> bool:
        return len(self.recordings) >= 2 and all(r is not None for r in self.recordings)

    def present(self) -> list[Recording]:
        """The recordings this person has, in state order."""
        return [r for r in self.recordings if r is not None]


def load_sessions(sessions: Sequence[Session], montage: Sequence[str], spec: SignalSpec) -> list[SubjectData]:
    out = []
    for session in sessions:
        recordings = tuple(
            None if path is None else load_recording(path, montage, spec, session.subject, state.name)
            for path, state in zip(session.paths, session.corpus.states, strict=True)
        )
        out.append(SubjectData(session.subject, recordings, session.corpus))
    corpora = sorted({s.corpus.name for s in sessions})
    log.info(
        "loaded %d people of %s (%d channels at %.0f Hz)",
        len(out),
        ", ".join(corpora),
        len(montage),
        spec.sfreq,
    )
    return out
