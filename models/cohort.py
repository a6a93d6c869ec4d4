"""The background cohort: embeddings of people other than the owner, shipped in the checkpoint.

Enrollment needs impostors to calibrate against: the one-class SVM's ``nu`` and
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
    recording: np.ndarray  # (M,) int64: 0 = enrollment recording, 1 = probe recording
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

    @classmethod
    def of_people(cls, windows: dict[str, np.ndarray], hop_seconds: float) -> Cohort:
        """A cohort of enrollment windows ``{person: (n, D)}`` (recording 0 for every row)."""
        names = tuple(windows)
        if not names or any(len(np.atleast_2d(w)) == 0 for w in windows.values()):
            raise ValueError("a cohort needs at least one person, each with at least one window")
        return cls(
            embeddings=np.concatenate([np.asarray(w, dtype=np.float32) for w in windows.values()]),
            subject=np.concatenate(
                [np.full(len(w), i, dtype=np.int64) for i, w in enumerate(windows.values())]
            ),
            recording=np.zeros(sum(len(w) for w in windows.values()), dtype=np.int64),
            subjects=names,
            hop_seconds=float(hop_seconds),
        )

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


@dataclass(frozen=True)
class ScoreSequences:
    """Fused-score sequences, in time order, of people the checkpoint's embedder never trained on.

    Enrollment calibrates the decision over time on them: each *owner* sequence is
    a person's own EEG after their enrollment (another part of a recording, another
    state), scored by their template; each *impostor* sequence is someone else's
    EEG scored by that template. The scores come from embedders fitted without
    those people (cross-fitting), so they show what a new owner will meet, not the
    flattering scores of people the model has learned.
    """

    values: np.ndarray  # (T,) float32: every sequence, one after the other
    lengths: np.ndarray  # (S,) int64
    owner: np.ndarray  # (S,) bool: the template's own person, else an impostor
    site: np.ndarray  # (S,) int64: the sequence's recording site (corpus), an index into record["sites"]
    record: dict  # JSON-ready: how they were made (people, folds, protocol, sites)

    def __post_init__(self) -> None:
        if self.site.shape != self.owner.shape or int(self.site.max(initial=0)) >= len(
            self.record.get("sites", [""])
        ):
            raise ValueError("every score sequence needs a site of record['sites']")
        if self.lengths.shape != self.owner.shape or int(self.lengths.sum()) != len(self.values):
            raise ValueError(
                f"score sequences disagree: {len(self.values)} values, lengths summing to "
                f"{int(self.lengths.sum())}, {len(self.owner)} owner flags"
            )
        if (self.lengths < 1).any() or not np.isfinite(self.values).all():
            raise ValueError("score sequences must be non-empty and finite")

    def _split(self, wanted: bool) -> tuple[list[np.ndarray], list[str]]:
        ends = np.cumsum(self.lengths)
        starts = ends - self.lengths
        sites = self.record.get("sites", [""])
        kept = [
            (a, b, s)
            for a, b, o, s in zip(starts, ends, self.owner, self.site, strict=True)
            if bool(o) == wanted
        ]
        return [self.values[a:b].astype(np.float64) for a, b, _ in kept], [sites[s] for _, _, s in kept]

    def owner_sequences(self) -> list[np.ndarray]:
        return self._split(True)[0]

    def impostor_sequences(self) -> list[np.ndarray]:
        return self._split(False)[0]

    def owner_sites(self) -> list[str]:
        return self._split(True)[1]

    def impostor_sites(self) -> list[str]:
        return self._split(False)[1]

    @classmethod
    def from_lists(
        cls,
        owners: list[np.ndarray],
        impostors: list[np.ndarray],
        record: dict,
        owner_sites: list[str] | None = None,
        impostor_sites: list[str] | None = None,
    ) -> ScoreSequences:
        seqs = [*owners, *impostors]
        labels = [*(owner_sites or [""] * len(owners)), *(impostor_sites or [""] * len(impostors))]
        names = sorted(set(labels))
        return cls(
            values=np.concatenate(seqs).astype(np.float32),
            lengths=np.array([len(s) for s in seqs], dtype=np.int64),
            owner=np.array([True] * len(owners) + [False] * len(impostors)),
            site=np.array([names.index(label) for label in labels], dtype=np.int64),
            record=record | {"sites": names},
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "values": torch.from_numpy(np.ascontiguousarray(self.values, dtype=np.float32)),
            "lengths": torch.from_numpy(self.lengths.astype(np.int64)),
            "owner": torch.from_numpy(self.owner.astype(np.bool_)),
            **({"site": torch.from_numpy(self.site.astype(np.int64))} if "sites" in self.record else {}),
        }

    def config(self) -> dict:
        return self.record

    @classmethod
    def from_parts(cls, tensors: dict[str, torch.Tensor], config: dict) -> ScoreSequences:
        return cls(
            values=tensors["values"].numpy().astype(np.float32),
            lengths=tensors["lengths"].numpy().astype(np.int64),
            owner=tensors["owner"].numpy().astype(bool),
            # sequences recorded without their sites are all of one
            site=tensors["site"].numpy().astype(np.int64)
            if "site" in tensors
            else np.zeros(len(tensors["owner"]), int),
            record=dict(config),
        )
