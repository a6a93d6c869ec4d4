"""Synthetic embeddings for the enrolment tests: one cluster per person, windows correlated in time."""

from __future__ import annotations

import numpy as np
import pytest
from neuroauth.enroll.calibration import enrol
from neuroauth.enroll.decision import DecisionParams
from neuroauth.enroll.ocsvm import fit_ocsvm
from neuroauth.enroll.scoring import FusionStats
from neuroauth.enroll.template import Template, Threshold
from neuroauth.models.cohort import Cohort

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
    """An owner (enrolment and a later probe recording), a cohort, and people outside the cohort."""

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


@pytest.fixture(scope="session")
def make_recording():
    return recording


@pytest.fixture(scope="session")
def people() -> People:
    return People()


@pytest.fixture(scope="session")
def enrolled(people) -> Template:
    return enrol(people.owner, people.cohort, user="alice", checkpoint_identity="ckpt-a", embedder="spectral")


@pytest.fixture
def make_template():
    """Build a small, valid template quickly (no calibration) for file and store tests."""

    def make(user: str = "alice", identity: str = "ckpt-a", dim: int = 8, seed: int = 0) -> Template:
        rng = np.random.default_rng(seed)
        x = unit_rows(rng.standard_normal((40, dim)))
        centroid = x.mean(axis=0) / np.linalg.norm(x.mean(axis=0))
        return Template(
            user=user,
            checkpoint_identity=identity,
            embedder="spectral",
            dim=dim,
            centroid=centroid,
            svm=fit_ocsvm(x, nu=0.1, gamma=1.5),
            fusion=FusionStats(cosine_mean=0.1, cosine_std=0.2, svm_mean=-0.3, svm_std=0.4),
            threshold=Threshold(policy="target-far", value=1.25, target_far=0.01, far=0.0098, frr=0.12),
            decision=DecisionParams(
                unlock_level=6.0,
                lock_level=-3.0,
                bound=12.0,
                llr_clip=3.0,
                gap_seconds=3.0,
                owner_mean=2.5,
                owner_std=1.1,
                impostor_mean=0.0,
                impostor_std=0.9,
            ),
            created="2024-05-01T12:00:00+00:00",
            n_windows=40,
            calibration={"note": "hand-made", "nested": {"values": [1, 2.5, None]}, "meets_targets": False},
        )

    return make
