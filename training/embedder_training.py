"""Stage 2: fit the spectral embedder, its settings chosen by cross-validation.

The settings (feature groups, PCA dimension, WCCN shrinkage) are chosen by
repeated random half splits of the training subjects: fit on one half,
run the verification protocol on the other, keep the setting with the lowest
mean window EER. Only training subjects take part; the chosen setting is then
fitted on all of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..models.embedders.spectral import FEATURE_GROUPS, SpectralConfig, SpectralEmbedder, SpectralFeatures
from ..models.preprocess import SignalSpec
from .protocol import ENROL_SECONDS, embed, score, verification_metrics, windows_of
from .wccn import (
    Projection,
    apply_projection,
    fit_projection,
    principal_axes,
    shrunk_scales,
    within_class_eigen,
    zscore_stats,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpectralSearch:
    """The grid searched by cross-validation; recorded in the checkpoint."""

    feature_sets: tuple[tuple[str, ...], ...] = (
        ("psd", "bandpower"),
        ("bandpower", "coherence"),
        FEATURE_GROUPS,
    )
    pca_dims: tuple[int, ...] = (64, 128, 256, 0)  # 0: no PCA, whiten every feature
    shrinkages: tuple[float, ...] = (0.02, 0.05, 0.2, 0.5)
    splits: int = 6


@dataclass
class SubjectWindows:
    """Feature vectors of every window (1 s hop) of a subject's two denoised recordings."""

    subject: str
    enrol: np.ndarray  # (W1, F) windows of the enrolment recording
    probe: np.ndarray  # (W2, F) windows of the probe recording
    n_enrol: int  # windows within the first ENROL_SECONDS of the enrolment recording


def window_features(
    subject: str, enrol: np.ndarray, probe: np.ndarray, extractor: SpectralFeatures, spec: SignalSpec
) -> SubjectWindows:
    """Features of all windows of two recordings in model units ``(C, N)``."""
    e = embed(extractor, windows_of(enrol, spec.sfreq, spec.window))
    p = embed(extractor, windows_of(probe, spec.sfreq, spec.window))
    n_enrol = len(windows_of(enrol, spec.sfreq, spec.window, ENROL_SECONDS))
    return SubjectWindows(subject, e, p, n_enrol)


def group_columns(extractor: SpectralFeatures, groups: Sequence[str]) -> np.ndarray:
    """Column indices of ``groups`` in the output of an extractor computing every group."""
    slices = extractor.group_slices()
    return np.concatenate([np.arange(s.start, s.stop) for g, s in slices.items() if g in groups])


def labelled_features(data: Sequence[SubjectWindows], columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns ``columns`` of every window of ``data`` and the index of its subject."""
    feats = np.concatenate([np.concatenate([d.enrol, d.probe])[:, columns] for d in data])
    labels = np.concatenate([np.full(len(d.enrol) + len(d.probe), i) for i, d in enumerate(data)])
    return feats, labels


def _protocol_eer(data: Sequence[SubjectWindows], columns, mean, scale, matrix) -> float:
    projection = Projection(mean=mean, scale=scale, matrix=matrix)
    enrolments = [apply_projection(d.enrol[: d.n_enrol, columns], projection) for d in data]
    probes = [apply_projection(d.probe[:, columns], projection) for d in data]
    return verification_metrics(score(enrolments, probes, [d.subject for d in data]), smoothing=())[
        "window_eer"
    ]


def cross_validate(
    data: Sequence[SubjectWindows],
    extractor: SpectralFeatures,
    search: SpectralSearch,
    seed: int,
    progress: bool = True,
) -> list[dict]:
    """Mean and spread of the window EER of every setting over random half splits."""
    rng = np.random.default_rng(seed)
    n = len(data)
    if n < 4:
        raise ValueError(f"cross-validation needs at least 4 training subjects, got {n}")
    results: dict[tuple, list[float]] = {}
    for _ in tqdm(range(search.splits), desc="embedder CV", unit="split", disable=not progress):
        order = rng.permutation(n)
        fit = [data[i] for i in order[: n // 2]]
        held = [data[i] for i in order[n // 2 :]]
        for groups in search.feature_sets:
            columns = group_columns(extractor, groups)
            feats, labels = labelled_features(fit, columns)
            mean, scale = zscore_stats(feats)
            z = (feats - mean) / scale
            axes = principal_axes(z, max(search.pca_dims))  # identity if no PCA is searched
            for dim in search.pca_dims:
                basis = principal_axes(z, 0) if dim <= 0 else axes[:, :dim]
                evals, evecs = within_class_eigen(z @ basis, labels)
                rotated = basis @ evecs  # cosine ignores the final rotation back
                for shrinkage in search.shrinkages:
                    matrix = rotated * shrunk_scales(evals, shrinkage)
                    value = _protocol_eer(held, columns, mean, scale, matrix)
                    results.setdefault((groups, dim, shrinkage), []).append(value)
    return [
        {
            "features": list(groups),
            "pca_dim": dim,
            "shrinkage": shrinkage,
            "eer_mean": float(np.mean(v)),
            "eer_std": float(np.std(v)),
            "folds": len(v),
        }
        for (groups, dim, shrinkage), v in results.items()
    ]


def fit_spectral(
    data: Sequence[SubjectWindows],
    spec: SignalSpec,
    n_channels: int,
    search: SpectralSearch,
    seed: int,
    progress: bool = True,
) -> tuple[SpectralEmbedder, dict]:
    """Choose settings by cross-validation, then fit on every subject of ``data``."""
    extractor = SpectralFeatures(SpectralConfig(n_channels=n_channels, sfreq=spec.sfreq, window=spec.window))
    grid = cross_validate(data, extractor, search, seed, progress)
    best = min(grid, key=lambda r: (r["eer_mean"], r["eer_std"]))
    log.info(
        "chosen spectral setting %s (CV window EER %.3f +- %.3f)", best, best["eer_mean"], best["eer_std"]
    )
    columns = group_columns(extractor, best["features"])
    feats, labels = labelled_features(data, columns)
    projection = fit_projection(feats, labels, best["pca_dim"], best["shrinkage"])
    config = SpectralConfig(
        n_channels=n_channels,
        sfreq=spec.sfreq,
        window=spec.window,
        features=tuple(best["features"]),
        shrinkage=best["shrinkage"],
    )
    report = {"search": asdict(search), "grid": grid, "chosen": best}
    return spectral_embedder(projection, config), report


def spectral_embedder(projection: Projection, config: SpectralConfig) -> SpectralEmbedder:
    """The spectral embedder of ``config`` holding ``projection`` (its PCA dimension taken from it)."""
    embedder = SpectralEmbedder(replace(config, pca_dim=projection.matrix.shape[1]))
    embedder.mean.copy_(torch.as_tensor(projection.mean, dtype=torch.float32))
    embedder.scale.copy_(torch.as_tensor(projection.scale, dtype=torch.float32))
    embedder.projection.copy_(torch.as_tensor(projection.matrix, dtype=torch.float32))
    return embedder.eval()
