"""Fitting the ``spectral-metric`` embedder: an MLP trained by metric learning on
the whitened vectors of a fitted spectral embedder.

Its loss and fusion weight are chosen by random half splits of the training
subjects (:mod:`.fusion`): on each split the spectral part and the MLP are fitted
on one half and the fused EER is measured on the other.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import torch

from ...models.embedders.spectral import SpectralEmbedder, SpectralFeatures
from ...models.embedders.spectral_metric import SpectralMetricConfig, SpectralMetricEmbedder
from ..embedder_training import SubjectWindows, group_columns
from .fusion import best_row, choose_weight, fit_spectral_part, fusion_eers, half_splits, spectral_vectors
from .metric_learning import LOSSES, FeatureSampler, MetricTraining, train_metric

log = logging.getLogger(__name__)


class _Head(torch.nn.Module):
    def __init__(self, embedder: SpectralMetricEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.embedder.learned(s)


def _train_head(
    spectral: SpectralEmbedder,
    data: Sequence[SubjectWindows],
    columns: np.ndarray,
    config: SpectralMetricConfig,
    training: MetricTraining,
) -> tuple[SpectralMetricEmbedder, dict]:
    torch.manual_seed(training.seed)
    embedder = SpectralMetricEmbedder(config, spectral)
    vectors = [spectral_vectors(spectral, np.concatenate([d.enroll, d.probe]), columns) for d in data]
    record = train_metric(_Head(embedder), FeatureSampler(vectors), len(data), config.dim, training, False)
    return embedder.eval(), record


def _pairs(embedder: SpectralMetricEmbedder, held: Sequence[SubjectWindows], columns):
    def both(features):
        s = spectral_vectors(embedder.spectral, features, columns)
        with torch.no_grad():
            return s, embedder.learned(torch.as_tensor(s)).numpy()

    enroll = [both(d.enroll[: d.n_enroll]) for d in held]
    probe = [both(d.probe) for d in held]
    spectral = [(e[0], p[0]) for e, p in zip(enroll, probe, strict=True)]
    learned = [(e[1], p[1]) for e, p in zip(enroll, probe, strict=True)]
    return spectral, learned


def fit_spectral_metric(
    data: Sequence[SubjectWindows],
    extractor: SpectralFeatures,
    spectral: SpectralEmbedder,
    training: MetricTraining,
    splits: int = 4,
) -> tuple[SpectralMetricEmbedder, dict]:
    """Choose the loss and fusion weight by random half splits of ``data``'s subjects, then fit the
    MLP on all of them on top of ``spectral``, the spectral embedder already fitted on them.

    ``data`` holds the features of every group (as ``extractor`` computes them);
    on each split the spectral part is refitted, with ``spectral``'s groups, PCA
    dimension and shrinkage, on the fitting half.
    """
    spectral_config = spectral.config
    columns = group_columns(extractor, spectral_config.features)
    base = SpectralMetricConfig(spectral=spectral_config)
    grids: dict[str, dict[float, list[float]]] = {loss: {} for loss in LOSSES}
    for fit, held in half_splits(len(data), splits, training.seed):
        fitting, held_out = [data[i] for i in fit], [data[i] for i in held]
        part = fit_spectral_part(fitting, columns, spectral_config)
        for loss in LOSSES:
            config = dataclasses.replace(base, spectral=part.config)
            embedder, _ = _train_head(part, fitting, columns, config, _with(training, loss))
            eers = fusion_eers(*_pairs(embedder, held_out, columns), [d.subject for d in held_out])
            for fuse, eer in eers.items():
                grids[loss].setdefault(fuse, []).append(eer)
    table = [row | {"loss": loss} for loss, grid in grids.items() for row in choose_weight(grid)[0]]
    best = best_row(table)
    log.info("spectral-metric: chose %s (CV window EER %.3f)", best, best["eer_mean"])
    config = SpectralMetricConfig(spectral=spectral_config, fuse=best["fuse"])
    embedder, record = _train_head(spectral, data, columns, config, _with(training, best["loss"]))
    return embedder, {"grid": table, "chosen": best, "training": dataclasses.asdict(training)} | record


def _with(training: MetricTraining, loss: str) -> MetricTraining:
    return dataclasses.replace(training, loss=loss)
