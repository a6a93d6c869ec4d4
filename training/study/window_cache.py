"""Spectral features of every window of every recording, computed once and kept on disk.

The transfer study compares normalisations, enrollments and score rules that all
start from the same feature vectors; denoising a corpus takes minutes, fitting a
projection seconds. A cache file holds, per person and state, the features of
every window (1 s hop from the recording's start) of the denoised recording and
of the recording without the denoiser, for one montage and one denoiser.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...atomic import atomic_write
from ...models.checkpoint import NeuroAuthModel
from ...models.embedders.spectral import SpectralConfig, SpectralFeatures
from ..data import SubjectData
from ..protocol import denoise, embed, windows_of

log = logging.getLogger(__name__)


@dataclass
class PersonFeatures:
    """Window features of one person, per state of their corpus (None where the state is missing)."""

    subject: str
    corpus: str
    states: tuple[str, ...]
    enroll_seconds: tuple[float, ...]
    denoised: list[np.ndarray | None]  # per state: (W, F) float32
    raw: list[np.ndarray | None]  # per state: (W, F) float32, without the denoiser

    @property
    def complete(self) -> bool:
        return all(x is not None for x in self.denoised)


def extractor_for(model: NeuroAuthModel) -> SpectralFeatures:
    spec = model.spec
    return SpectralFeatures(
        SpectralConfig(n_channels=len(model.montage), sfreq=spec.sfreq, window=spec.window)
    )


def compute(
    model: NeuroAuthModel, data: Sequence[SubjectData], progress: bool = True
) -> list[PersonFeatures]:
    """Features of every window of ``data``, denoised by ``model``'s denoiser and without it."""
    extractor = extractor_for(model)
    spec = model.spec
    out = []
    for d in tqdm(data, desc="features", unit="person", disable=not progress):
        denoised, raw = [], []
        for rec in d.recordings:
            if rec is None:
                denoised.append(None)
                raw.append(None)
                continue
            x = rec.preprocessed()
            raw.append(embed(extractor, windows_of(x, spec.sfreq, spec.window)).astype(np.float32))
            y = denoise(model, x)
            denoised.append(embed(extractor, windows_of(y, spec.sfreq, spec.window)).astype(np.float32))
        out.append(
            PersonFeatures(
                d.subject,
                d.corpus.name,
                tuple(s.name for s in d.corpus.states),
                tuple(s.enroll_seconds for s in d.corpus.states),
                denoised,
                raw,
            )
        )
    return out


def save(people: Sequence[PersonFeatures], path: Path, meta: dict) -> None:
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, p in enumerate(people):
        index.append(
            {
                "subject": p.subject,
                "corpus": p.corpus,
                "states": list(p.states),
                "enroll_seconds": list(p.enroll_seconds),
            }
        )
        for s, (d, r) in enumerate(zip(p.denoised, p.raw, strict=True)):
            if d is not None:
                arrays[f"d{i}_{s}"] = d
                arrays[f"r{i}_{s}"] = r
    import json

    arrays["index"] = np.array(json.dumps({"people": index, "meta": meta}))
    atomic_write(path, lambda handle: np.savez_compressed(handle, **arrays))


def load(path: Path) -> tuple[list[PersonFeatures], dict]:
    import json

    with np.load(path) as z:
        header = json.loads(str(z["index"]))
        people = []
        for i, p in enumerate(header["people"]):
            n = len(p["states"])
            people.append(
                PersonFeatures(
                    p["subject"],
                    p["corpus"],
                    tuple(p["states"]),
                    tuple(p["enroll_seconds"]),
                    [z.get(f"d{i}_{s}") for s in range(n)],
                    [z.get(f"r{i}_{s}") for s in range(n)],
                )
            )
    return people, header["meta"]
