"""Synthetic embeddings for the enrollment tests: one cluster per person, windows correlated in time."""

from __future__ import annotations

import numpy as np
from neuroauth.enroll.calibration import OwnerWindows, SvmSearch, enroll
from neuroauth.enroll.template import Template
from neuroauth.models.cohort import Cohort, ScoreSequences
from neuroauth.training.crossfit import HeldPerson, held_sequences

DIM = 64
SPREAD = 2.0  # noise relative to the distance between a person's centre and the origin


def unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recording(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = SPREAD) -> np.ndarray:
    """``n`` unit windows around ``centre``; AR(1) noise, as overlapping windows are correlated."""
    noise = np.empty((n, len(centre)))
    state = rng.standard_normal(len(centre))
    for i in range(n):
        state = 0.75 * state + np.sqrt(1 - 0.75**2) * rng.standard_normal(len(centre))
        noise[i] = state
    return unit_rows(centre / np.linalg.norm(centre) + spread * noise / np.sqrt(len(centre)))


class People:
    """An owner (enrollment and a later probe recording), a cohort, and people outside the cohort."""

    def __init__(self, seed: int = 0, subjects: int = 12, per_recording: int = 100) -> None:
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.owner_centre = rng.standard_normal(DIM)
        self.owner = recording(rng, self.owner_centre, 180)
        self.owner_probe = recording(rng, self.owner_centre, 120)
        embeddings, subject, rec = [], [], []
        for s in range(subjects):
            centre = rng.standard_normal(DIM)
            for r in (0, 1):
                embeddings.append(recording(rng, centre, per_recording))
                subject += [s] * per_recording
                rec += [r] * per_recording
        self.cohort = Cohort(
            embeddings=np.concatenate(embeddings).astype(np.float32),
            subject=np.array(subject, dtype=np.int64),
            recording=np.array(rec, dtype=np.int64),
            subjects=tuple(f"s{i:02d}" for i in range(subjects)),
            hop_seconds=1.0,
        )
        self.strangers = [recording(rng, rng.standard_normal(DIM), 120) for _ in range(4)]
        self.sequences = sequences_of(self.cohort)


def sequences_of(cohort: Cohort) -> ScoreSequences:
    """Calibration sequences of the cohort's own people: each enrolled from the first 60 windows of
    their first recording, probed with their second; the other people are the impostors."""
    held = []
    for _, r, windows in cohort.sequences():
        if r == 0:
            held.append(HeldPerson("synthetic", [windows[:60].astype(np.float64)], []))
        else:
            held[-1].probes.append(windows.astype(np.float64))
    made = held_sequences(held, cohort.embeddings, SvmSearch())
    return ScoreSequences.from_lists(
        made.owners,
        made.impostors,
        {"people": len(held), "hop_seconds": 1.0},
        made.owner_sites,
        made.impostor_sites,
    )


def enroll_windows(people: People, owner: np.ndarray, cohort: Cohort | None = None, **kwargs) -> Template:
    """``owner (n, D)`` enrolled as one state against ``people``'s cohort and sequences."""
    kwargs = {"user": "alice", "checkpoint_identity": "ckpt-a", "embedder": "spectral"} | kwargs
    return enroll(OwnerWindows.single(owner), cohort or people.cohort, people.sequences, **kwargs)
