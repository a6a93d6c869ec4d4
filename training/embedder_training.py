"""Stage 2: fit the spectral embedder, its settings chosen by cross-validation.

Each corpus is standardised by its own statistics before the projection is
fitted (:func:`~neuroauth.training.wccn.fit_projection`), so the projection
learns how people differ within a recording site; the embedder keeps the pooled
statistics for a site that has none of its own.

The settings (feature groups, PCA dimension, WCCN shrinkage) are chosen on the
training people only, by the figure that predicts a new headset when there are
several corpora: fit on all corpora but one, run the verification protocol on
that one, standardised with the fitted pool's statistics as a site of one user
is (every corpus in turn). With one corpus: repeated random half splits of its
people. The protocol enrolls every state (:func:`~neuroauth.training.protocol.state_plans`)
and scores a window by its cosine to the nearest state. The setting with the
lowest mean window EER is then fitted on everyone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from ..metrics import eer
from ..models.embedders.spectral import FEATURE_GROUPS, SpectralConfig, SpectralEmbedder, SpectralFeatures
from ..models.preprocess import SignalSpec
from .data import SubjectData
from .protocol import ENROLL_SECONDS, embed, state_plans, windows_of
from .wccn import (
    Projection,
    apply_projection,
    fit_projection,
    principal_axes,
    shrunk_scales,
    standardise_by_domain,
    within_class_eigen,
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
    """Feature vectors of every window (1 s hop) of a person's denoised recordings."""

    subject: str
    recordings: list[np.ndarray]  # per recording the person has, in state order: (W, F)
    complete: bool  # a recording of every state of the corpus
    enroll_seconds: tuple[float, ...]  # per recording: its state's enrollment part (StateSpec)
    window_seconds: float
    corpus: str = ""

    @property
    def n_windows(self) -> int:
        return sum(len(r) for r in self.recordings)

    # the two-recording view the embedder study uses: enroll from the first 60 s of the first
    # recording, probe with the whole second one

    @property
    def enroll(self) -> np.ndarray:
        return self.recordings[0]

    @property
    def probe(self) -> np.ndarray:
        return self.recordings[1]

    @property
    def n_enroll(self) -> int:
        return state_plans([ENROLL_SECONDS], self.window_seconds)[0].enroll.stop


def window_features(
    subject: str,
    recordings: Sequence[np.ndarray],
    extractor: SpectralFeatures,
    spec: SignalSpec,
    enroll_seconds: Sequence[float] = (ENROLL_SECONDS, 0.0),
    corpus: str = "",
    complete: bool | None = None,
) -> SubjectWindows:
    """Features of all windows of a person's recordings, in model units ``(C, N)`` each (denoised).

    ``enroll_seconds`` per recording: its state's enrollment part (the default: a plain enrollment and
    probe recording); ``complete``: a recording of every state (default: two or more recordings).
    """
    feats = [embed(extractor, windows_of(x, spec.sfreq, spec.window)) for x in recordings]
    complete = len(feats) >= 2 if complete is None else complete
    return SubjectWindows(
        subject, feats, complete, tuple(enroll_seconds[: len(feats)]), spec.window_seconds, corpus
    )


def person_features(
    d: SubjectData, recordings: Sequence[np.ndarray], extractor: SpectralFeatures, spec: SignalSpec
) -> SubjectWindows:
    """:func:`window_features` of ``d``'s recordings, given in the order of :meth:`SubjectData.present`."""
    states = [s for s, r in zip(d.corpus.states, d.recordings, strict=True) if r is not None]
    return window_features(
        d.subject, recordings, extractor, spec, [s.enroll_seconds for s in states], d.corpus.name, d.complete
    )


def group_columns(extractor: SpectralFeatures, groups: Sequence[str]) -> np.ndarray:
    """Column indices of ``groups`` in the output of an extractor computing every group."""
    slices = extractor.group_slices()
    return np.concatenate([np.arange(s.start, s.stop) for g, s in slices.items() if g in groups])


def labelled_features(
    data: Sequence[SubjectWindows], columns: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns ``columns`` of every window of ``data``, the index of its person and its corpus."""
    feats = np.concatenate([np.concatenate(d.recordings)[:, columns] for d in data])
    labels = np.concatenate([np.full(d.n_windows, i) for i, d in enumerate(data)])
    domains = np.concatenate([np.full(d.n_windows, d.corpus, dtype=object) for d in data])
    return feats, labels, domains


def state_templates(d: SubjectWindows, project, window_seconds: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """A complete person's per-state centroids ``(K, D)`` and per-state probe embeddings, by the
    protocol's cut; ``project`` maps feature rows to unit embeddings."""
    centroids, probes = [], []
    for x, plan in zip(d.recordings, state_plans(d.enroll_seconds, window_seconds), strict=True):
        if len(x[plan.enroll]):
            e = project(x[plan.enroll])
            mean = e.mean(axis=0)
            centroids.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        probes.append(project(x[plan.probe]))
    return np.stack(centroids), probes


def protocol_eer(held: Sequence[SubjectWindows], project, window_seconds: float) -> float:
    """Window EER of the held-out people: every probe window against every template (nearest state)."""
    made = [state_templates(d, project, window_seconds) for d in held]
    templates = [t for t, _ in made]
    genuine, impostor = [], []
    for i, (_, probes) in enumerate(made):
        x = np.concatenate(probes)
        if not len(x):
            continue
        scores = np.stack([(x @ t.T).max(axis=1) for t in templates], axis=1)  # (W, n)
        genuine.append(scores[:, i])
        impostor.append(np.delete(scores, i, axis=1).ravel())
    return eer(np.concatenate(genuine), np.concatenate(impostor))


def inner_splits(
    data: Sequence[SubjectWindows], splits: int, rng: np.random.Generator
) -> tuple[str, list[tuple[list[SubjectWindows], list[SubjectWindows]]]]:
    """``(kind, [(fit, held), ...])``: leave one corpus out when at least two corpora have four
    complete people each, else random halves of the complete people (people with one recording
    are always fitted on)."""
    complete = [d for d in data if d.complete]
    corpora = sorted({d.corpus for d in complete})
    sizes = {c: sum(d.corpus == c for d in complete) for c in corpora}
    if len(corpora) >= 2 and min(sizes.values()) >= 4:
        return "leave-one-corpus-out", [
            ([d for d in data if d.corpus != c], [d for d in complete if d.corpus == c]) for c in corpora
        ]
    n = len(complete)
    if n < 4:
        raise ValueError(f"cross-validation needs at least 4 training people with every recording, got {n}")
    single = [d for d in data if not d.complete]
    out = []
    for _ in range(splits):
        order = rng.permutation(n)
        out.append(([complete[i] for i in order[: n // 2]] + single, [complete[i] for i in order[n // 2 :]]))
    return "random halves", out


def cross_validate(
    data: Sequence[SubjectWindows],
    extractor: SpectralFeatures,
    search: SpectralSearch,
    seed: int,
    progress: bool = True,
) -> tuple[str, list[dict]]:
    """How the settings were judged, and the mean and spread of the window EER of every setting."""
    kind, folds = inner_splits(data, search.splits, np.random.default_rng(seed))
    window_seconds = extractor.config.window / extractor.config.sfreq
    results: dict[tuple, list[float]] = {}
    for fit, held in tqdm(folds, desc="embedder CV", unit="split", disable=not progress):
        for groups in search.feature_sets:
            columns = group_columns(extractor, groups)
            feats, labels, domains = labelled_features(fit, columns)
            z, mean, scale = standardise_by_domain(feats, domains)
            axes = principal_axes(z, max(search.pca_dims))  # identity if no PCA is searched
            for dim in search.pca_dims:
                basis = principal_axes(z, 0) if dim <= 0 else axes[:, :dim]
                evals, evecs = within_class_eigen(z @ basis, labels)
                rotated = basis @ evecs  # cosine ignores the final rotation back
                for shrinkage in search.shrinkages:
                    projection = Projection(mean, scale, rotated * shrunk_scales(evals, shrinkage))

                    def project(x, columns=columns, projection=projection):
                        return apply_projection(x[:, columns], projection)

                    value = protocol_eer(held, project, window_seconds)
                    results.setdefault((groups, dim, shrinkage), []).append(value)
    return kind, [
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


@dataclass
class SpectralFit:
    """The fitted spectral embedder, and the choice behind it."""

    embedder: SpectralEmbedder
    report: dict  # the search, its grid and the chosen setting
    columns: np.ndarray  # the chosen feature groups' columns of a full extractor's output
    projection: Projection  # pooled z-score and the projection matrix
    pca_dim: int
    shrinkage: float


def fit_spectral(
    data: Sequence[SubjectWindows],
    spec: SignalSpec,
    n_channels: int,
    search: SpectralSearch,
    seed: int,
    progress: bool = True,
) -> SpectralFit:
    """Choose settings by cross-validation, then fit on every person of ``data``."""
    extractor = SpectralFeatures(SpectralConfig(n_channels=n_channels, sfreq=spec.sfreq, window=spec.window))
    kind, grid = cross_validate(data, extractor, search, seed, progress)
    best = min(grid, key=lambda r: (r["eer_mean"], r["eer_std"]))
    log.info(
        "chosen spectral setting %s (CV window EER %.3f +- %.3f)", best, best["eer_mean"], best["eer_std"]
    )
    columns = group_columns(extractor, best["features"])
    feats, labels, domains = labelled_features(data, columns)
    projection = fit_projection(feats, labels, best["pca_dim"], best["shrinkage"], domains)
    config = SpectralConfig(
        n_channels=n_channels,
        sfreq=spec.sfreq,
        window=spec.window,
        features=tuple(best["features"]),
        shrinkage=best["shrinkage"],
    )
    report = {"search": asdict(search), "judged_by": kind, "grid": grid, "chosen": best}
    return SpectralFit(
        spectral_embedder(projection, config), report, columns, projection, best["pca_dim"], best["shrinkage"]
    )


def spectral_embedder(projection: Projection, config: SpectralConfig) -> SpectralEmbedder:
    """The spectral embedder of ``config`` holding ``projection`` (its PCA dimension taken from it)."""
    embedder = SpectralEmbedder(replace(config, pca_dim=projection.matrix.shape[1]))
    embedder.mean.copy_(torch.as_tensor(projection.mean, dtype=torch.float32))
    embedder.scale.copy_(torch.as_tensor(projection.scale, dtype=torch.float32))
    embedder.projection.copy_(torch.as_tensor(projection.matrix, dtype=torch.float32))
    return embedder.eval()
