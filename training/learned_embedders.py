"""Fitting the learned embedders on denoised training recordings.

- :func:`fit_resnet`: the ``resnet`` embedder, trained end to end on augmented
  raw windows (:mod:`.metric_learning`).
- :func:`fit_spectral_metric`: the ``spectral-metric`` embedder, an MLP trained
  on the whitened vectors of an already fitted spectral embedder, its fusion
  weight and loss chosen by cross-validation over the training subjects.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence

import numpy as np
import torch

from ..models.embedders.resnet import ResNetConfig, ResNetEmbedder
from ..models.embedders.spectral import SpectralConfig, SpectralEmbedder, SpectralFeatures
from ..models.embedders.spectral_metric import SpectralMetricConfig, SpectralMetricEmbedder, fuse_vectors
from .embedder_training import SubjectWindows, group_columns, labelled_features, spectral_embedder
from .metric_learning import LOSSES, FeatureSampler, MetricTraining, RawWindowSampler, train_metric
from .protocol import embed, score, verification_metrics
from .wccn import fit_projection

log = logging.getLogger(__name__)

FUSE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
_RESNET = re.compile(r"resnet(18|34)-(" + "|".join(LOSSES) + r")")


def check_embedder(name: str) -> str:
    """``name`` if it names an embedder training can fit, else a ValueError listing the forms."""
    if name in ("spectral", "spectral-metric") or _RESNET.fullmatch(name):
        return name
    raise ValueError(
        f"unknown embedder {name!r}; use spectral, spectral-metric or resnet18|resnet34-{'|'.join(LOSSES)}"
    )


def resnet_candidate(name: str) -> tuple[int, str]:
    """Depth and loss of a ``resnet<depth>-<loss>`` name."""
    depth, loss = _RESNET.fullmatch(check_embedder(name)).groups()
    return int(depth), loss


def fit_resnet(
    recordings: Sequence[Sequence[np.ndarray]],
    n_channels: int,
    depth: int,
    training: MetricTraining,
    progress: bool = True,
) -> tuple[ResNetEmbedder, dict]:
    """Train a ``resnet`` embedder on each subject's denoised recordings ``(C, N)``."""
    torch.manual_seed(training.seed)  # the initial weights too, so that a fit can be repeated
    net = ResNetEmbedder(ResNetConfig(n_channels=n_channels, depth=depth))
    scale = np.concatenate([r for rs in recordings for r in rs], axis=1).std(axis=1)
    net.input_scale.copy_(torch.as_tensor(np.maximum(scale, 1e-6), dtype=torch.float32))
    sampler = RawWindowSampler(recordings, net.config.window)
    record = train_metric(net, sampler, len(recordings), net.dim, training, progress)
    return net.eval(), record | {"training": dataclasses.asdict(training)}


class _Head(torch.nn.Module):
    def __init__(self, embedder: SpectralMetricEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.embedder.learned(s)


def _whitened(spectral: SpectralEmbedder, features: np.ndarray, columns: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return spectral.project(torch.as_tensor(features[:, columns], dtype=torch.float32)).numpy()


def _train_head(
    spectral: SpectralEmbedder,
    data: Sequence[SubjectWindows],
    columns: np.ndarray,
    config: SpectralMetricConfig,
    training: MetricTraining,
) -> tuple[SpectralMetricEmbedder, dict]:
    torch.manual_seed(training.seed)
    embedder = SpectralMetricEmbedder(config, spectral)
    vectors = [_whitened(spectral, np.concatenate([d.enrol, d.probe]), columns) for d in data]
    record = train_metric(_Head(embedder), FeatureSampler(vectors), len(data), config.dim, training, False)
    return embedder.eval(), record


def _fused_eer(
    embedder: SpectralMetricEmbedder, held: Sequence[SubjectWindows], columns, fuse: float
) -> float:
    def vectors(features):
        s = torch.as_tensor(_whitened(embedder.spectral, features, columns))
        with torch.no_grad():
            return fuse_vectors(s, embedder.learned(s), fuse).numpy()

    enrolments = [vectors(d.enrol[: d.n_enrol]) for d in held]
    probes = [vectors(d.probe) for d in held]
    return verification_metrics(score(enrolments, probes, [d.subject for d in held]), ())["window_eer"]


def fit_spectral_metric(
    data: Sequence[SubjectWindows],
    extractor: SpectralFeatures,
    spectral_config: SpectralConfig,
    training: MetricTraining,
    splits: int = 4,
) -> tuple[SpectralMetricEmbedder, dict]:
    """Choose the loss and fusion weight by random half splits of ``data``'s subjects, then fit on all.

    ``data`` holds the features of every group (as ``extractor`` computes them);
    the spectral part uses the groups, PCA dimension and shrinkage of
    ``spectral_config`` and is refitted on each split's fitting half.
    """
    columns = group_columns(extractor, spectral_config.features)
    n = len(data)
    if n < 4:
        raise ValueError(f"choosing the fusion weight needs at least 4 training subjects, got {n}")

    def projection_of(subset):
        feats, labels = labelled_features(subset, columns)
        return fit_projection(feats, labels, spectral_config.pca_dim, spectral_config.shrinkage)

    base = SpectralMetricConfig(spectral=spectral_config)
    rng = np.random.default_rng(training.seed)
    grid: dict[tuple[str, float], list[float]] = {}
    for _ in range(splits):
        order = rng.permutation(n)
        fit = [data[i] for i in order[: n // 2]]
        held = [data[i] for i in order[n // 2 :]]
        spectral = spectral_embedder(projection_of(fit), spectral_config)
        for loss in LOSSES:
            embedder, _ = _train_head(
                spectral,
                fit,
                columns,
                dataclasses.replace(base, spectral=spectral.config),
                _with(training, loss),
            )
            for fuse in FUSE_WEIGHTS:
                grid.setdefault((loss, fuse), []).append(_fused_eer(embedder, held, columns, fuse))
    table = [
        {"loss": loss, "fuse": fuse, "eer_mean": float(np.mean(v)), "eer_std": float(np.std(v))}
        for (loss, fuse), v in grid.items()
    ]
    best = min(table, key=lambda r: (r["eer_mean"], r["eer_std"]))
    log.info("spectral-metric: chose %s (CV window EER %.3f)", best, best["eer_mean"])
    spectral = spectral_embedder(projection_of(data), spectral_config)
    config = SpectralMetricConfig(spectral=spectral.config, fuse=best["fuse"])
    embedder, record = _train_head(spectral, data, columns, config, _with(training, best["loss"]))
    return embedder, {"grid": table, "chosen": best, "training": dataclasses.asdict(training)} | record


def _with(training: MetricTraining, loss: str) -> MetricTraining:
    return dataclasses.replace(training, loss=loss)


def embed_cost_ms(embedder: torch.nn.Module, n_channels: int, window: int, batch: int = 64) -> dict:
    """Milliseconds per window when embedding one window alone and ``batch`` at once (median of 5)."""
    from ..bench import median_ms

    embedder.eval()
    costs = {}
    for size in (1, batch):
        x = np.random.default_rng(0).standard_normal((size, n_channels, window))
        per_call = median_ms(lambda x=x: embed(embedder, x), repeats=5, warmup=1)
        costs["single" if size == 1 else f"batch_{batch}"] = per_call / size
    return costs
