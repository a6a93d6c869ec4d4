"""Recordings from disk: channel picking by name, resampling, sessions of a data set.

A data directory holds two recordings per subject, named
``<subject><enrol_suffix>.<ext>`` (enrolment) and ``<subject><probe_suffix>.<ext>``
(probe); the shared EEGMAT copy uses ``Subject00_1.edf`` and ``Subject00_2.edf``.
Any format MNE reads by extension (EDF, BDF, BrainVision, FIF, ...) is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mne
import numpy as np

from ..errors import DataError, MontageError
from ..models.montage import resolve_montage
from ..models.preprocess import SignalSpec, filter_and_scale, resample

log = logging.getLogger(__name__)

EXTENSIONS: tuple[str, ...] = (".edf", ".bdf", ".gdf", ".vhdr", ".fif", ".set", ".cnt")


@dataclass
class Recording:
    """One recording, its montage channels resampled to the model rate (volts)."""

    subject: str
    path: Path
    volts: np.ndarray  # (C, N) float64 at spec.sfreq
    spec: SignalSpec

    def preprocessed(self, volts: np.ndarray | None = None) -> np.ndarray:
        """Filtered and scaled signal in model units (of ``volts`` when given, e.g. with noise)."""
        return filter_and_scale(self.volts if volts is None else volts, self.spec)


@dataclass
class Session:
    """A subject's enrolment and probe recordings."""

    subject: str
    enrol: Path
    probe: Path


def read_raw(path: Path) -> mne.io.BaseRaw:
    if path.suffix.lower() not in EXTENSIONS:
        raise DataError(f"{path} has an extension NeuroAuth does not read; use one of {EXTENSIONS}")
    try:
        return mne.io.read_raw(path, preload=False, verbose="error")
    except (ValueError, OSError, RuntimeError) as exc:
        raise DataError(f"{path} could not be read as EEG ({exc}); check that the file is complete") from None


def load_recording(
    path: str | Path, montage: Sequence[str], spec: SignalSpec, subject: str = ""
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
        subject=subject or path.stem, path=path, volts=resample(volts, sfreq, spec.sfreq), spec=spec
    )


def find_sessions(
    directory: str | Path,
    enrol_suffix: str = "_1",
    probe_suffix: str = "_2",
    subjects: Sequence[str] | None = None,
) -> list[Session]:
    """Every subject of ``directory`` with both an enrolment and a probe recording, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"data directory {directory} does not exist")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in EXTENSIONS:
            continue
        for role, suffix in (("enrol", enrol_suffix), ("probe", probe_suffix)):
            if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
                found.setdefault(path.stem[: -len(suffix)], {})[role] = path
    sessions = [
        Session(subject, roles["enrol"], roles["probe"])
        for subject, roles in sorted(found.items())
        if "enrol" in roles and "probe" in roles
    ]
    if subjects is not None:
        wanted = set(subjects)
        sessions = [s for s in sessions if s.subject in wanted]
        absent = wanted - {s.subject for s in sessions}
        if absent:
            raise DataError(f"{directory} has no complete session for subject(s) {', '.join(sorted(absent))}")
    if not sessions:
        raise DataError(
            f"{directory} holds no pair of recordings named <subject>{enrol_suffix}.<ext> and "
            f"<subject>{probe_suffix}.<ext>; rename them or pass --enrol-suffix / --probe-suffix"
        )
    return sessions


@dataclass
class SubjectData:
    """Both recordings of one subject, loaded."""

    subject: str
    enrol: Recording
    probe: Recording


def load_sessions(sessions: Sequence[Session], montage: Sequence[str], spec: SignalSpec) -> list[SubjectData]:
    out = []
    for session in sessions:
        enrol = load_recording(session.enrol, montage, spec, session.subject)
        probe = load_recording(session.probe, montage, spec, session.subject)
        out.append(SubjectData(session.subject, enrol, probe))
    log.info("loaded %d subjects (%d channels at %.0f Hz)", len(out), len(montage), spec.sfreq)
    return out
