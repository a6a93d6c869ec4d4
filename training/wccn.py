"""Fitting the spectral embedder's projection: z-score, PCA, shrunk WCCN."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Projection:
    """``embedding = normalize(((f - mean) / scale) @ matrix)``."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    matrix: np.ndarray  # (F, D)


def zscore_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-8] = 1.0
    return mean, scale


def within_class_covariance(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average over classes of each class's covariance, every class weighted equally."""
    classes = np.unique(labels)
    cov = np.zeros((z.shape[1], z.shape[1]))
    for label in classes:
        member = z[labels == label]
        centred = member - member.mean(axis=0)
        cov += centred.T @ centred / max(len(member) - 1, 1)
    return cov / len(classes)


def standardise_by_domain(
    features: np.ndarray, domains: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-scores of ``features``, each domain (corpus, recording site) by its own statistics;
    and the statistics of all of them pooled, for a site that has none of its own."""
    features = np.asarray(features, dtype=np.float64)
    mean, scale = zscore_stats(features)
    if domains is None or len(np.unique(domains)) < 2:
        return (features - mean) / scale, mean, scale
    z = np.empty_like(features)
    for d in np.unique(domains):
        rows = domains == d
        m, s = zscore_stats(features[rows])
        z[rows] = (features[rows] - m) / s
    return z, mean, scale


def fit_projection(
    features: np.ndarray, labels: np.ndarray, dim: int, shrinkage: float, domains: np.ndarray | None = None
) -> Projection:
    """Fit the z-score, a ``dim``-component PCA and the shrunk WCCN whitening.

    With ``domains`` (the corpus of each row), each corpus is standardised by its own
    statistics before PCA and WCCN, so that the projection learns how people differ
    within a recording site, not how sites differ; the stored z-score is the pooled one.
    ``shrinkage`` blends the within-class covariance ``Sw`` with a scaled
    identity of the same trace: ``(1 - a) Sw + a tr(Sw)/d I``; ``a = 1`` keeps
    plain PCA, ``a = 0`` is full WCCN.
    """
    if len(np.unique(labels)) < 2:
        raise ValueError("fitting the projection needs windows of at least two subjects")
    z, mean, scale = standardise_by_domain(features, domains)
    basis = principal_axes(z, dim)
    return Projection(mean=mean, scale=scale, matrix=basis @ wccn_whitening(z @ basis, labels, shrinkage))


def principal_axes(z: np.ndarray, dim: int) -> np.ndarray:
    """The ``dim`` leading principal axes ``(F, dim)`` of centred rows of ``z``.

    ``dim`` 0 (or at least the feature count) keeps every feature: the identity.
    """
    if dim <= 0 or dim >= z.shape[1]:
        return np.eye(z.shape[1])
    dim = min(dim, z.shape[0] - 1)
    _, _, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    return vt[:dim].T


def within_class_eigen(reduced: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and eigenvectors of the within-class covariance.

    Shrinking toward a scaled identity keeps the eigenvectors and maps each
    eigenvalue ``l`` to ``(1 - a) l + a tr/d``, so one decomposition serves
    every shrinkage (see :func:`shrunk_inverse_sqrt`).
    """
    return np.linalg.eigh(within_class_covariance(reduced, labels))


def shrunk_scales(evals: np.ndarray, shrinkage: float) -> np.ndarray:
    """``((1 - a) l + a mean(l)) ** -1/2`` per eigenvalue ``l``."""
    shrunk = (1.0 - shrinkage) * evals + shrinkage * evals.mean()
    return np.maximum(shrunk, 1e-12 * shrunk.max()) ** -0.5


def wccn_whitening(reduced: np.ndarray, labels: np.ndarray, shrinkage: float) -> np.ndarray:
    """Inverse square root ``(D, D)`` of the shrunk within-class covariance."""
    evals, evecs = within_class_eigen(reduced, labels)
    return (evecs * shrunk_scales(evals, shrinkage)) @ evecs.T


def apply_projection(features: np.ndarray, projection: Projection) -> np.ndarray:
    out = ((features - projection.mean) / projection.scale) @ projection.matrix
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
