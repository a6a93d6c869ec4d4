"""The background cohort: embeddings of people other than the owner, shipped in the checkpoint.

Enrolment needs impostors to calibrate against: the one-class SVM's ``nu`` and
``gamma`` are chosen by EER against them, the score thresholds are set to a
false-accept target on them, and the decision over time is tuned on their
score sequences. The cohort holds, for every training subject, the embedding of
every window (1 s hop) of both recordings, in time order, made by the same
denoiser and embedder as the checkpoint, so a template scores cohort windows
exactly as it will score a live impostor.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Cohort:
    """Cohort embeddings ``(M, D)`` with, per row, its subject and recording; time-ordered."""

    embeddings: np.ndarray  # (M, D) float32, unit vectors
    subject: np.ndarray  # (M,) int64: index into ``subjects``
    recording: np.ndarray  # (M,) int64: 0 = enrolment recording, 1 = probe recording
    subjects: tuple[str, ...]
    hop_seconds: float

    def __post_init__(self) -> None:
        m = len(self.embeddings)
        if self.embeddings.ndim != 2 or self.subject.shape != (m,) or self.recording.shape != (m,):
            raise ValueError(
                f"cohort arrays disagree: embeddings {self.embeddings.shape}, subject "
                f"{self.subject.shape}, recording {self.recording.shape}"
            )
        if m and (self.subject.min() < 0 or self.subject.max() >= len(self.subjects)):
            raise ValueError(f"cohort subject indices must lie in [0, {len(self.subjects)})")

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    def sequences(self) -> Iterator[tuple[str, int, np.ndarray]]:
        """``(subject, recording, embeddings (n, D))`` for each recording, windows in time order."""
        for s, name in enumerate(self.subjects):
            for r in (0, 1):
                rows = (self.subject == s) & (self.recording == r)
                if rows.any():
                    yield name, r, self.embeddings[rows]

    def without(self, subjects: set[str]) -> Cohort:
        """The cohort minus the windows of ``subjects`` (e.g. the owner, when in the cohort)."""
        keep = ~np.isin(self.subject, [i for i, s in enumerate(self.subjects) if s in subjects])
        return Cohort(
            self.embeddings[keep], self.subject[keep], self.recording[keep], self.subjects, self.hop_seconds
        )

    # -- checkpoint storage: plain tensors (embeddings in float16, half the size) and a JSON-ready dict

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "embeddings": torch.from_numpy(np.ascontiguousarray(self.embeddings, dtype=np.float16)),
            "subject": torch.from_numpy(self.subject.astype(np.int64)),
            "recording": torch.from_numpy(self.recording.astype(np.int64)),
        }

    def config(self) -> dict:
        return {"subjects": list(self.subjects), "hop_seconds": self.hop_seconds}

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], config: dict) -> Cohort:
        return cls(
            embeddings=tensors["embeddings"].float().numpy(),
            subject=tensors["subject"].numpy().astype(np.int64),
            recording=tensors["recording"].numpy().astype(np.int64),
            subjects=tuple(str(s) for s in config["subjects"]),
            hop_seconds=float(config["hop_seconds"]),
        )
