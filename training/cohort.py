"""The background cohort of a checkpoint: every window of the training subjects, embedded.

The windows are cut at the protocol's 1 s hop from the start of each denoised
recording, exactly as the streaming engine cuts a live stream, so a template
scores cohort windows the way it will score an impostor at the headset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from ..models.checkpoint import NeuroAuthModel
from ..models.cohort import Cohort
from .data import SubjectData
from .protocol import HOP_SECONDS, denoise, embed, windows_of


def build_cohort(model: NeuroAuthModel, data: Sequence[SubjectData], progress: bool = True) -> Cohort:
    """Embeddings of every window of both recordings of every subject of ``data``."""
    spec = model.spec
    embeddings, subject, recording = [], [], []
    for i, d in enumerate(tqdm(data, desc="cohort", unit="subject", disable=not progress)):
        for r, rec in enumerate((d.enrol, d.probe)):
            e = embed(model.embedder, windows_of(denoise(model, rec.preprocessed()), spec.sfreq, spec.window))
            embeddings.append(e.astype(np.float32))
            subject.append(np.full(len(e), i))
            recording.append(np.full(len(e), r))
    return Cohort(
        embeddings=np.concatenate(embeddings),
        subject=np.concatenate(subject).astype(np.int64),
        recording=np.concatenate(recording).astype(np.int64),
        subjects=tuple(d.subject for d in data),
        hop_seconds=HOP_SECONDS,
    )
