"""The background cohort of a checkpoint: every window of its training people, embedded.

The windows are cut at the protocol's 1 s hop from the start of each denoised
recording, exactly as the streaming engine cuts a live stream, so a template
scores cohort windows the way it will score an impostor at the headset. For the
spectral embedder, the windows are 4 s apart and embedded as the shipped embedder
embeds them (:func:`.train.spectral_cohort`).
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
    """Embeddings by ``model``'s own embedder of every window of every recording of ``data``."""
    spec = model.spec
    embeddings, subject, recording = [], [], []
    for i, d in enumerate(tqdm(data, desc="cohort", unit="person", disable=not progress)):
        for r, rec in enumerate(d.present()):
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


def rebuild_cohort(model: NeuroAuthModel, data: Sequence[SubjectData], progress: bool = True) -> None:
    """Give ``model`` the cohort of ``data`` and, for the spectral embedder, calibration sequences
    cross-fitted on ``data`` with the embedder's own settings."""
    if model.embedder_name != "spectral":
        model.cohort = build_cohort(model, data, progress)
        return
    from .crossfit import CrossFit, crossfit_sequences
    from .embedder_training import SpectralFit, group_columns, person_features
    from .train import DenoisedRecordings, spectral_cohort
    from .wccn import Projection

    embedder = model.embedder
    extractor_full = type(embedder.features)(
        type(embedder.config)(n_channels=len(model.montage), sfreq=model.spec.sfreq, window=model.spec.window)
    )
    denoised = DenoisedRecordings(model.denoiser, model.spec)
    windows = [person_features(d, denoised(d), extractor_full, model.spec) for d in data]
    columns = group_columns(extractor_full, embedder.config.features)
    projection = Projection(
        embedder.mean.numpy().astype(np.float64),
        embedder.scale.numpy().astype(np.float64),
        embedder.projection.numpy().astype(np.float64),
    )
    fitted = SpectralFit(
        embedder, {}, columns, projection, embedder.config.pca_dim, embedder.config.shrinkage
    )
    model.cohort = spectral_cohort(windows, fitted)
    settings = CrossFit(**model.meta.get("crossfit", {}))
    model.calibration = crossfit_sequences(
        windows, columns, fitted.pca_dim, fitted.shrinkage, settings, progress=progress
    )
