"""Every embedder training can fit, by name, on the recordings of the training subjects
(denoised, or before denoising for one trained with the denoiser).

Names (:func:`check_embedder`):

- ``spectral``: the spectral embedder with WCCN (:mod:`.embedder_training`);
- ``spectral-metric``: an MLP on its whitened vectors (:mod:`.spectral_metric_training`);
- ``resnet18-<loss>``, ``resnet34-<loss>``: a ResNet trained end to end by
  metric learning on augmented windows (:mod:`.metric_learning`);
- ``temporal-<loss>``, ``temporal-ssl``, ``temporal-ssl-<loss>``: the small
  temporal network, trained by metric learning, by contrastive self-supervised
  pre-training (:mod:`.contrastive`), or by both in that order;
- ``temporal-joint-<loss>``: the temporal network trained by metric learning
  together with the denoiser, which it replaces (:mod:`.joint`); see
  :func:`trains_denoiser`;
- any ResNet or temporal name followed by ``+spectral``: that embedder fused with
  the spectral one, the weight chosen on the training subjects (:mod:`.fusion`).

``<loss>`` is ``arcface`` or ``multisimilarity``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...models.denoiser import CausalDenoiser
from ...models.embedders.resnet import ResNetConfig, ResNetEmbedder
from ...models.embedders.signal_input import set_input_scale
from ...models.embedders.spectral import SpectralEmbedder, SpectralFeatures
from ...models.embedders.temporal import TemporalConfig, TemporalEmbedder
from ...models.preprocess import SignalSpec
from ..embedder_registry import EmbedderFit, FitRequest, FitResult, register
from ..embedder_training import SubjectWindows
from ..noise import NOISE_TYPES
from ..protocol import embed
from .contrastive import ContrastiveTraining, pretrain_contrastive
from .fusion import NoisyProbes, Recordings, fit_fused
from .joint import JointTraining, fit_joint
from .metric_learning import LOSSES, MetricTraining, RawWindowSampler, train_metric
from .spectral_metric_training import fit_spectral_metric

_LOSS = "|".join(LOSSES)
_NAME = re.compile(
    rf"(?:resnet(?P<depth>18|34)-(?P<loss>{_LOSS})"
    rf"|temporal(?P<ssl>-ssl)?(?:-(?P<tloss>{_LOSS}))?)(?P<fused>\+spectral)?"
    rf"|temporal-joint-(?P<jloss>{_LOSS})"
)
FORMS = (
    f"spectral, spectral-metric, resnet18|resnet34-({_LOSS}), temporal-ssl, temporal[-ssl]-({_LOSS}), "
    f"temporal-joint-({_LOSS}), or a resnet or temporal name other than joint followed by +spectral"
)


@dataclass(frozen=True)
class LearnedTraining:
    """How the learned embedders are trained; recorded beside their results."""

    resnet: MetricTraining = field(default_factory=MetricTraining)
    metric: MetricTraining = field(default_factory=MetricTraining)  # spectral-metric MLP, temporal network
    contrastive: ContrastiveTraining = field(default_factory=ContrastiveTraining)
    fusion_splits: int = 2  # half splits choosing a fusion weight (each trains the learned part once)
    fusion_noise: tuple[str, ...] = ()  # noise types the fusion weight is also chosen under (0 dB probes)
    joint: JointTraining = field(default_factory=JointTraining)  # temporal-joint: the denoiser's part

    def __post_init__(self) -> None:
        if self.fusion_splits < 1:
            raise ValueError(f"fusion_splits must be at least 1, got {self.fusion_splits}")
        unknown = sorted(set(self.fusion_noise) - set(NOISE_TYPES))
        if unknown:
            raise ValueError(f"unknown fusion noise types {unknown}; known: {', '.join(NOISE_TYPES)}")


def _learned(match: re.Match | None) -> bool:
    return match is not None and bool(match["depth"] or match["ssl"] or match["tloss"] or match["jloss"])


def check_embedder(name: str) -> str:
    """``name`` if it names an embedder training can fit, else a ValueError listing the forms."""
    if name in ("spectral", "spectral-metric") or _learned(_NAME.fullmatch(name)):
        return name
    raise ValueError(f"unknown embedder {name!r}; use {FORMS}")


def needs_signal(name: str) -> bool:
    """Whether ``name`` is trained on the denoised signal (and not only on spectral features)."""
    return check_embedder(name) not in ("spectral", "spectral-metric")


def uses_spectral(name: str) -> bool:
    """Whether ``name`` is or contains the spectral embedder, so that training must fit that first."""
    match = _NAME.fullmatch(check_embedder(name))
    return match is None or match["fused"] is not None


def needs_noisy_probes(name: str, training: LearnedTraining) -> bool:
    """Whether fitting ``name`` needs the training subjects' noisy probes (a fusion weight chosen
    under noise, see :func:`fit_embedder`)."""
    match = _NAME.fullmatch(check_embedder(name))
    return match is not None and match["fused"] is not None and bool(training.fusion_noise)


def trains_denoiser(name: str) -> bool:
    """Whether ``name`` comes with its own denoiser, fitted by :func:`fit_with_denoiser`."""
    match = _NAME.fullmatch(check_embedder(name))
    return match is not None and match["jloss"] is not None


def fit_resnet(
    recordings: Recordings,
    n_channels: int,
    depth: int,
    training: MetricTraining,
    progress: bool = True,
    state_path: Path | None = None,
) -> tuple[ResNetEmbedder, dict]:
    """Train a ``resnet`` embedder on each subject's denoised recordings ``(C, N)``; ``state_path``
    as for :func:`.metric_learning.train_metric`."""
    torch.manual_seed(training.seed)  # the initial weights too, so that a fit can be repeated
    net = ResNetEmbedder(ResNetConfig(n_channels=n_channels, depth=depth))
    set_input_scale(net, recordings)
    sampler = RawWindowSampler(recordings, net.config.window)
    record = train_metric(net, sampler, len(recordings), net.dim, training, progress, state_path=state_path)
    return net.eval(), record | {"training": dataclasses.asdict(training)}


def fit_temporal(
    recordings: Recordings,
    config: TemporalConfig,
    contrastive: ContrastiveTraining | None,
    metric: MetricTraining | None,
    progress: bool = True,
    state_path: Path | None = None,
) -> tuple[TemporalEmbedder, dict]:
    """Train a ``temporal`` embedder: contrastive pre-training, metric learning, or both in that order.

    With ``state_path``, the metric learning saves its state there and continues
    it (:func:`.metric_learning.train_metric`); the pre-training, which repeats
    exactly, is run again."""
    if contrastive is None and metric is None:
        raise ValueError("the temporal embedder needs contrastive pre-training, metric learning or both")
    torch.manual_seed((metric or contrastive).seed)
    net = TemporalEmbedder(config)
    set_input_scale(net, recordings)
    record = {}
    if contrastive is not None:  # no labels: every recording of the training subjects
        unlabelled = [r for rs in recordings for r in rs]
        record["contrastive"] = pretrain_contrastive(net, unlabelled, config.window, contrastive, progress)
        record["contrastive"]["training"] = dataclasses.asdict(contrastive)
    if metric is not None:
        sampler = RawWindowSampler(recordings, config.window)
        record["metric"] = train_metric(
            net, sampler, len(recordings), net.dim, metric, progress, state_path=state_path
        )
        record["metric"]["training"] = dataclasses.asdict(metric)
    return net.eval(), record


def fit_embedder(
    name: str,
    spectral: SpectralEmbedder | None,
    windows: Sequence[SubjectWindows],
    recordings: Recordings | None,
    extractor: SpectralFeatures,
    spec: SignalSpec,
    training: LearnedTraining,
    progress: bool = True,
    noisy: NoisyProbes | None = None,
    state_path: Path | None = None,
) -> tuple[nn.Module, dict]:
    """The embedder ``name`` fitted on the training subjects, and the record of its fitting.

    ``spectral`` is the spectral embedder already fitted on them (None for a
    name that does not use it, see :func:`uses_spectral`); ``windows``
    holds the features of their windows, ``recordings`` (for the embedders
    that read the signal, see :func:`needs_signal`) their denoised recordings,
    and ``noisy`` (see :func:`needs_noisy_probes`) their probe recordings under
    each of ``training.fusion_noise``, denoised; subject by subject in the same order.
    With ``state_path``, a ``resnet`` or ``temporal`` embedder saves the state of
    its metric learning there and continues it; ``spectral-metric`` and a
    ``+spectral`` fusion, which train several times, do not use it.
    """
    if uses_spectral(name) and spectral is None:
        raise ValueError(f"the {name} embedder is built on the fitted spectral embedder; none was given")
    if name == "spectral":
        return spectral, {}
    if trains_denoiser(name):
        raise ValueError(f"the {name} embedder is trained with the denoiser; fit it with fit_with_denoiser")
    if name == "spectral-metric":
        return fit_spectral_metric(windows, extractor, spectral, training.metric)
    if recordings is None:
        raise ValueError(f"the {name} embedder is trained on the denoised recordings; none were given")
    match = _NAME.fullmatch(name)
    n_channels = extractor.config.n_channels

    def fit_learned(subset: Recordings, state_path: Path | None = None) -> tuple[nn.Module, dict]:
        if match["depth"]:
            resnet = dataclasses.replace(training.resnet, loss=match["loss"])
            return fit_resnet(subset, n_channels, int(match["depth"]), resnet, progress, state_path)
        config = TemporalConfig(n_channels=n_channels, window=spec.window)
        contrastive = training.contrastive if match["ssl"] else None
        metric = dataclasses.replace(training.metric, loss=match["tloss"]) if match["tloss"] else None
        return fit_temporal(subset, config, contrastive, metric, progress, state_path)

    if not match["fused"]:
        return fit_learned(recordings, state_path)
    if needs_noisy_probes(name, training) and (
        noisy is None or any(set(n) != set(training.fusion_noise) for n in noisy)
    ):
        raise ValueError(
            f"choosing the {name} fusion weight under {', '.join(training.fusion_noise)} noise needs "
            "the training subjects' probes under exactly that noise"
        )
    noisy = noisy if training.fusion_noise else None
    splits, seed = training.fusion_splits, training.metric.seed
    return fit_fused(windows, recordings, extractor, spectral, fit_learned, spec, splits, seed, noisy)


def fit_with_denoiser(
    name: str,
    denoiser: CausalDenoiser,
    recordings: Recordings,
    spec: SignalSpec,
    training: LearnedTraining,
    progress: bool = True,
    state_path: Path | None = None,
) -> tuple[CausalDenoiser, nn.Module, dict]:
    """A new denoiser and the embedder ``name`` (see :func:`trains_denoiser`), trained together.

    ``recordings`` holds each training subject's preprocessed recordings, before
    any denoising; ``denoiser`` (the stage-1 one) is the starting point and is
    left untouched. ``state_path`` as for :func:`.metric_learning.train_metric`.
    """
    if not trains_denoiser(name):
        raise ValueError(f"the {name} embedder does not train the denoiser; fit it with fit_embedder")
    metric = dataclasses.replace(training.metric, loss=_NAME.fullmatch(name)["jloss"])
    config = TemporalConfig(n_channels=recordings[0][0].shape[0], window=spec.window)
    return fit_joint(denoiser, recordings, config, spec, metric, training.joint, progress, state_path)


def embed_cost_ms(embedder: torch.nn.Module, n_channels: int, window: int, batch: int = 64) -> dict:
    """Milliseconds per window when embedding one window alone and ``batch`` at once (median of 5)."""
    from ...bench import median_ms

    embedder.eval()
    costs = {}
    for size in (1, batch):
        x = np.random.default_rng(0).standard_normal((size, n_channels, window))
        per_call = median_ms(lambda x=x: embed(embedder, x), repeats=5, warmup=1)
        costs["single" if size == 1 else f"batch_{batch}"] = per_call / size
    return costs


def _resolve(name: str) -> EmbedderFit | None:
    """The trainer's view of a learned embedder name (see :mod:`..embedder_registry`)."""
    try:
        check_embedder(name)
    except ValueError:
        return None
    if name == "spectral":
        return None

    def fit(request: FitRequest) -> FitResult:
        training = request.settings or LearnedTraining()
        if trains_denoiser(name):
            denoiser, embedder, record = fit_with_denoiser(
                name,
                request.denoiser,
                request.raw,
                request.spec,
                training,
                request.progress,
                request.state_path,
            )
            return FitResult(embedder, record, denoiser)
        noisy = request.noisy(training.fusion_noise) if needs_noisy_probes(name, training) else None
        embedder, record = fit_embedder(
            name,
            request.spectral,
            request.windows,
            request.denoised,
            request.extractor,
            request.spec,
            training,
            request.progress,
            noisy,
            request.state_path,
        )
        return FitResult(embedder, record)

    return EmbedderFit(
        fit,
        uses_spectral=uses_spectral(name),
        needs_signal=needs_signal(name),
        trains_denoiser=trains_denoiser(name),
    )


register(_resolve)
