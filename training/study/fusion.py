"""Fusing a learned embedder with the spectral one, its weight chosen on training subjects only.

The weight ``w`` of the spectral cosine (:mod:`..models.embedders.fused`) is
chosen by random half splits of the training subjects: on each split the
spectral projection and the learned embedder are fitted on one half, and the
fused window EER of the other half is measured for every weight of
:data:`FUSE_WEIGHTS`, on its clean probes and, when noisy probes are given, on
its probes under each noise type (every condition counting alike). The weight
with the lowest mean EER wins; the learned
embedder is then fitted on all training subjects and joined to the spectral
embedder already fitted on them. At a weight of 1 the learned part would not
count: the spectral embedder is returned alone, and the learned one is not
trained on all subjects; at a weight of 0, the learned embedder alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from ...models.embedders.fused import FusedConfig, FusedEmbedder
from ...models.embedders.spectral import SpectralConfig, SpectralEmbedder, SpectralFeatures
from ...models.embedders.spectral_metric import fuse_vectors
from ...models.preprocess import SignalSpec
from ..embedder_training import SubjectWindows, group_columns, labelled_features, spectral_embedder
from ..evaluate import Scores, verification_metrics
from ..protocol import embed, windows_of
from ..wccn import fit_projection

log = logging.getLogger(__name__)

FUSE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0)

Pairs = Sequence[tuple[np.ndarray, np.ndarray]]  # per subject: (enrollment vectors, probe vectors)
Recordings = Sequence[Sequence[np.ndarray]]  # per subject: denoised recordings (C, N)
NoisyProbes = Sequence[Mapping[str, np.ndarray]]  # per subject: noise type -> denoised noisy probe (C, N)
CLEAN = "clean"


def mean_template_scores(
    enrollments: Sequence[np.ndarray], probes: Sequence[np.ndarray], subjects: Sequence[str]
) -> Scores:
    """Cosine of every probe window to every person's normalised mean enrollment vector, one state."""
    templates = np.stack([e.mean(axis=0) for e in enrollments])
    templates /= np.maximum(np.linalg.norm(templates, axis=1, keepdims=True), 1e-12)
    unit = [p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) for p in probes]
    per_probe = [[u @ templates.T] for u in unit]
    return Scores(list(subjects), list(range(len(subjects))), per_probe)


def half_splits(n: int, splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``splits`` random splits of ``n`` subjects into a fitting half and a held half."""
    if n < 4:
        raise ValueError(f"choosing by cross-validation needs at least 4 training subjects, got {n}")
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n) for _ in range(splits)]
    return [(order[: n // 2], order[n // 2 :]) for order in orders]


def fit_spectral_part(data: Sequence[SubjectWindows], columns: np.ndarray, config: SpectralConfig):
    """A spectral embedder with ``config``'s settings fitted on ``data`` only."""
    feats, labels, domains = labelled_features(data, columns)
    return spectral_embedder(fit_projection(feats, labels, config.pca_dim, config.shrinkage, domains), config)


def spectral_vectors(spectral: SpectralEmbedder, features: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """The spectral embedder's unit vectors of precomputed window features (all groups)."""
    with torch.no_grad():
        return spectral.project(torch.as_tensor(features[:, columns], dtype=torch.float32)).numpy()


def fusion_eers(spectral: Pairs, learned: Pairs, subjects: Sequence[str], weights=FUSE_WEIGHTS) -> dict:
    """Window EER of the fused vectors for each spectral weight."""
    out = {}
    for w in weights:

        def fused(a, b, w=w):
            return fuse_vectors(torch.as_tensor(a), torch.as_tensor(b), w).numpy()

        enrollments = [fused(s[0], m[0]) for s, m in zip(spectral, learned, strict=True)]
        probes = [fused(s[1], m[1]) for s, m in zip(spectral, learned, strict=True)]
        scores = mean_template_scores(enrollments, probes, list(subjects))
        out[w] = verification_metrics(scores, smoothing=())["window_eer"]
    return out


def best_row(table: Sequence[dict]) -> dict:
    """The row of lowest mean EER, then lowest spread; on a tie, the higher spectral weight
    (the cheaper and better-understood part)."""
    return min(table, key=lambda r: (r["eer_mean"], r["eer_std"], -r["fuse"]))


def choose_weight(grid: dict[float, list[float]]) -> tuple[list[dict], dict]:
    """The table of mean and spread of the EER per weight, and its best row (:func:`best_row`)."""
    table = [{"fuse": w, "eer_mean": float(np.mean(v)), "eer_std": float(np.std(v))} for w, v in grid.items()]
    return table, best_row(table)


def _noise_kinds(noisy: NoisyProbes | None, n_subjects: int) -> list[str]:
    if not noisy:
        return []
    kinds = sorted(noisy[0])
    if len(noisy) != n_subjects or any(sorted(n) != kinds for n in noisy):
        raise ValueError(
            f"noisy probes given for {len(noisy)} subjects with noise types {[sorted(n) for n in noisy]}; "
            f"need one entry per training subject ({n_subjects}), each with the same noise types "
            "(build them with evaluate.noisy_probes)"
        )
    return kinds


def fit_fused(
    windows: Sequence[SubjectWindows],
    recordings: Recordings,
    extractor: SpectralFeatures,
    spectral: SpectralEmbedder,
    fit_learned: Callable[[Recordings], tuple[nn.Module, dict]],
    spec: SignalSpec,
    splits: int,
    seed: int,
    noisy: NoisyProbes | None = None,
) -> tuple[nn.Module, dict]:
    """``spectral`` (fitted on all of ``windows``) fused with the embedder ``fit_learned`` trains:
    a :class:`FusedEmbedder`, or one part alone at a weight of 1 or 0.

    ``windows``, ``recordings`` and ``noisy`` hold the same subjects in the same
    order: the features of every window (1 s hop), the denoised recordings they
    come from, and optionally each subject's probe recording under noise, denoised.
    """
    columns = group_columns(extractor, spectral.config.features)
    kinds = _noise_kinds(noisy, len(windows))

    def windows_in(recording):
        return windows_of(recording, spec.sfreq, spec.window)

    # per subject and condition: the probe's spectral features and the recording they come from
    probes = [
        {CLEAN: (d.probe, probe)}
        | {k: (embed(extractor, windows_in(noisy[i][k])), noisy[i][k]) for k in kinds}
        for i, (d, (_, probe)) in enumerate(zip(windows, recordings, strict=True))
    ]
    conditions = [CLEAN, *kinds]
    grid = {c: {w: [] for w in FUSE_WEIGHTS} for c in conditions}
    for fit, held in half_splits(len(windows), splits, seed):
        part = fit_spectral_part([windows[i] for i in fit], columns, spectral.config)
        learned, _ = fit_learned([recordings[i] for i in fit])
        pairs = {c: ([], []) for c in conditions}  # spectral and learned (enrollment, probe) pairs
        for i in held:
            d, enroll = windows[i], recordings[i][0]
            s_enroll = spectral_vectors(part, d.enroll[: d.n_enroll], columns)
            m_enroll = embed(learned, windows_in(enroll)[: d.n_enroll])
            for c in conditions:
                features, recording = probes[i][c]
                pairs[c][0].append((s_enroll, spectral_vectors(part, features, columns)))
                pairs[c][1].append((m_enroll, embed(learned, windows_in(recording))))
        held_subjects = [windows[i].subject for i in held]
        for c, (s_pairs, m_pairs) in pairs.items():
            for w, eer in fusion_eers(s_pairs, m_pairs, held_subjects, FUSE_WEIGHTS).items():
                grid[c][w].append(eer)
    overall = {w: list(np.mean([grid[c][w] for c in conditions], axis=0)) for w in FUSE_WEIGHTS}
    table, best = choose_weight(overall)
    record = {"grid": table, "chosen": best, "noise": kinds}
    if kinds:
        record["conditions"] = {c: choose_weight(grid[c])[0] for c in conditions}
    log.info("fusion: spectral weight %.2f (CV window EER %.3f)", best["fuse"], best["eer_mean"])
    if best["fuse"] == 1.0:  # the learned part would not count: it is neither trained nor shipped
        return spectral, record | {"learned": None}
    learned, learned_record = fit_learned(recordings)
    if best["fuse"] == 0.0:  # nor would the spectral part
        return learned, record | {"learned": learned_record}
    config = FusedConfig(spectral.config, learned.name, learned.config, fuse=best["fuse"])
    return FusedEmbedder(config, spectral, learned), record | {"learned": learned_record}
